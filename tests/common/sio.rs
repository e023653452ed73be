//! Helpers for black-box tests of the Socket.IO layer: a [`Halley`] server on an ephemeral
//! loopback port, a raw WebSocket client that answers Engine.IO pings from its own task (so a
//! test that is busy with another client never times out by accident), polling helpers, and
//! channels that carry what the server-side handlers saw back to the test.
//!
//! Every wait is under the [`GUARD`](super::GUARD) hang guard; nothing sleeps.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use halley::server::{self, ServerConfig};
use halley::socketio::{Builder, DisconnectReason, Event, Namespace, Socket};
use halley::Halley;
use hyper::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{request, within, Handshake, Reply};

/// A builder with the timings most tests use: pingInterval 300 ms, pingTimeout 200 ms.
pub fn builder() -> Builder {
    Halley::builder()
        .ping_interval(std::time::Duration::from_millis(300))
        .ping_timeout(std::time::Duration::from_millis(200))
}

/// A running Halley server on 127.0.0.1:<ephemeral>. Dropping it shuts the server down.
pub struct SioServer {
    pub addr: SocketAddr,
    pub io: Halley,
    shutdown: Option<oneshot::Sender<()>>,
}

impl SioServer {
    /// Serves `io` (its handlers already declared, or declared later: they are read per
    /// connection).
    pub async fn start(io: Halley) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            io.router(),
            ServerConfig::default(),
            async move {
                let _ = rx.await;
            },
        ));
        SioServer {
            addr,
            io,
            shutdown: Some(tx),
        }
    }

    /// Opens a WebSocket session whose client answers pings.
    pub async fn ws(&self) -> WsClient {
        WsClient::open(self.addr, true).await
    }

    /// Opens a WebSocket session whose client never answers pings.
    pub async fn ws_without_pongs(&self) -> WsClient {
        WsClient::open(self.addr, false).await
    }

    /// Opens a polling session and returns its Engine.IO sid.
    pub async fn polling_open(&self) -> String {
        let reply = self.polling_request(Method::GET, None, Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK, "polling handshake: {reply:?}");
        Handshake::parse(reply.text()).sid
    }

    /// POSTs an Engine.IO payload on polling session `sid`, asserting `200 ok`.
    pub async fn post(&self, sid: &str, body: impl Into<Bytes>) {
        let reply = self
            .polling_request(Method::POST, Some(sid), body.into())
            .await;
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "ok"),
            "POST: {reply:?}"
        );
    }

    /// Long-polls session `sid` until the answer holds something other than pings (each ping
    /// is answered with a POSTed pong), and returns those packets, as written on the wire.
    pub async fn poll(&self, sid: &str) -> Vec<String> {
        loop {
            let reply = self
                .polling_request(Method::GET, Some(sid), Bytes::new())
                .await;
            assert_eq!(reply.status, StatusCode::OK, "GET: {reply:?}");
            let mut packets = Vec::new();
            for packet in reply.text().split('\x1e') {
                if packet == "2" {
                    self.post(sid, "3").await;
                } else {
                    packets.push(packet.to_owned());
                }
            }
            if !packets.is_empty() {
                return packets;
            }
        }
    }

    async fn polling_request(&self, method: Method, sid: Option<&str>, body: Bytes) -> Reply {
        let mut path = "/socket.io/?EIO=4&transport=polling".to_owned();
        if let Some(sid) = sid {
            path.push_str("&sid=");
            path.push_str(sid);
        }
        let headers: &[(&str, &str)] = if method == Method::POST {
            &[("content-type", "text/plain;charset=UTF-8")]
        } else {
            &[]
        };
        request(self.addr, method, &path, headers, body).await
    }
}

impl Drop for SioServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What the server sent, pings aside.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
    /// The server closed the WebSocket (with its close frame, if any), or the stream ended.
    Closed(Option<CloseFrame>),
}

enum Command {
    Send(WsMessage),
    Close,
}

/// A raw Socket.IO client over WebSocket. A task owns the socket: it answers each Engine.IO
/// ping `2` with `3` (unless built without pongs), counts the pings, and hands every other
/// frame to the test in order.
pub struct WsClient {
    /// The Engine.IO open packet.
    pub open: Handshake,
    frames: mpsc::UnboundedReceiver<Frame>,
    commands: mpsc::UnboundedSender<Command>,
    pings: watch::Receiver<u64>,
}

impl WsClient {
    pub async fn open(addr: SocketAddr, pong: bool) -> Self {
        Self::open_with(addr, pong, &[]).await
    }

    /// [`Self::open`] with more headers on the opening request.
    pub async fn open_with(addr: SocketAddr, pong: bool, headers: &[(&str, &str)]) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let mut request = url.as_str().into_client_request().expect("a valid URL");
        for (name, value) in headers {
            request.headers_mut().append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                hyper::header::HeaderValue::from_str(value).expect("header value"),
            );
        }
        let (mut ws, _) = within(
            "websocket connect",
            tokio_tungstenite::connect_async(request),
        )
        .await
        .unwrap_or_else(|e| panic!("websocket connect to {url} failed: {e}"));
        let open = match within("the open packet", ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => Handshake::parse(text.as_str()),
            other => panic!("expected the open packet, got {other:?}"),
        };
        let (frame_tx, frames) = mpsc::unbounded_channel();
        let (commands, mut command_rx) = mpsc::unbounded_channel();
        let (ping_tx, pings) = watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    incoming = ws.next() => match incoming {
                        Some(Ok(WsMessage::Text(text))) if text.as_str() == "2" => {
                            if pong {
                                let _ = ws.send(WsMessage::text("3")).await;
                            }
                            ping_tx.send_modify(|n| *n += 1);
                        }
                        Some(Ok(WsMessage::Text(text))) => {
                            let _ = frame_tx.send(Frame::Text(text.as_str().to_owned()));
                        }
                        Some(Ok(WsMessage::Binary(data))) => {
                            let _ = frame_tx.send(Frame::Binary(data));
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let _ = frame_tx.send(Frame::Closed(frame));
                            break;
                        }
                        Some(Ok(_)) => {}
                        None | Some(Err(_)) => {
                            let _ = frame_tx.send(Frame::Closed(None));
                            break;
                        }
                    },
                    command = command_rx.recv() => match command {
                        Some(Command::Send(message)) => {
                            let _ = ws.send(message).await;
                        }
                        Some(Command::Close) => {
                            // Keep reading: the server's answering close frame ends the loop.
                            let _ = ws.close(None).await;
                        }
                        None => {
                            let _ = ws.close(None).await;
                            break;
                        }
                    },
                }
            }
        });
        WsClient {
            open,
            frames,
            commands,
            pings,
        }
    }

    /// Sends a text frame.
    pub fn send(&self, text: &str) {
        let _ = self.commands.send(Command::Send(WsMessage::text(text)));
    }

    /// Sends a binary frame.
    pub fn send_binary(&self, data: &[u8]) {
        let _ = self
            .commands
            .send(Command::Send(WsMessage::binary(Bytes::copy_from_slice(
                data,
            ))));
    }

    /// Closes the WebSocket from the client side.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// The next frame (pings aside).
    pub async fn recv(&mut self) -> Frame {
        within("a frame from the server", self.frames.recv())
            .await
            .unwrap_or(Frame::Closed(None))
    }

    /// The next frame, which must be text.
    #[track_caller]
    pub fn text(&mut self) -> impl std::future::Future<Output = String> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.recv().await {
                Frame::Text(text) => text,
                other => panic!("expected a text frame at {caller}, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be binary.
    pub async fn binary(&mut self) -> Bytes {
        match self.recv().await {
            Frame::Binary(data) => data,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// Asserts the server closes the WebSocket before sending anything else.
    pub async fn expect_close(&mut self) {
        match self.recv().await {
            Frame::Closed(_) => {}
            other => panic!("expected the server to close the WebSocket, got {other:?}"),
        }
    }

    /// Waits for an Engine.IO ping that arrives after this call.
    pub async fn next_ping(&mut self) {
        self.pings.borrow_and_update();
        within("an Engine.IO ping", self.pings.changed())
            .await
            .expect("the client task ended before a ping");
    }

    /// Joins namespace `ns` (`/` or `/name`) with an optional auth payload (JSON text), asserts
    /// the CONNECT answer and returns the Socket.IO sid it carries.
    pub async fn connect(&mut self, ns: &str, auth: Option<&str>) -> String {
        let prefix = if ns == "/" {
            "40".to_owned()
        } else {
            format!("40{ns},")
        };
        self.send(&format!("{prefix}{}", auth.unwrap_or("")));
        let reply = self.text().await;
        let json = reply
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("expected a CONNECT answer for {ns}, got {reply:?}"));
        let json: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("CONNECT answer {reply:?} is not JSON: {e}"));
        json["sid"]
            .as_str()
            .unwrap_or_else(|| panic!("CONNECT answer without a sid: {reply:?}"))
            .to_owned()
    }
}

/// A channel from server-side handlers to the test.
pub struct Rx<T>(mpsc::UnboundedReceiver<T>);

impl<T> Rx<T> {
    /// The next value, under the hang guard.
    pub async fn next(&mut self, what: &str) -> T {
        within(what, self.0.recv())
            .await
            .unwrap_or_else(|| panic!("channel closed while waiting for {what}"))
    }

    /// A value already sent, if any (to check that something did *not* happen, after an
    /// event that would have followed it).
    pub fn try_next(&mut self) -> Option<T> {
        self.0.try_recv().ok()
    }
}

pub fn channel<T>() -> (mpsc::UnboundedSender<T>, Rx<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Rx(rx))
}

/// An event a recorded namespace received.
#[derive(Debug)]
pub struct Received {
    pub socket: Arc<Socket>,
    pub name: String,
    pub event: Event,
}

/// A socket that left its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Left {
    pub id: String,
    pub ns: String,
    pub reason: DisconnectReason,
}

/// What a recorded namespace saw.
pub struct Probe {
    /// Sockets, as the connect handler got them.
    pub connected: Rx<Arc<Socket>>,
    /// Sockets that left, with the reason.
    pub left: Rx<Left>,
    /// Events received, for the names given to [`record`].
    pub events: Rx<Received>,
}

/// Declares namespace `path` with a connect handler that reports each socket and its
/// disconnection, and namespace handlers for `events` that report what they receive (acks
/// included: the test answers them).
pub fn record(io: &Halley, path: &str, events: &[&str]) -> (Arc<Namespace>, Probe) {
    let (socket_tx, connected) = channel();
    let (left_tx, left) = channel();
    let (event_tx, received) = channel();
    let ns = io.ns(path, move |socket| {
        let left_tx = left_tx.clone();
        socket.on_disconnect(move |socket, reason| {
            let _ = left_tx.send(Left {
                id: socket.id().to_owned(),
                ns: socket.ns().to_owned(),
                reason,
            });
        });
        let _ = socket_tx.send(Arc::clone(socket));
    });
    for name in events {
        let event_tx = event_tx.clone();
        let name_owned = (*name).to_owned();
        ns.on(name, move |socket, event| {
            let _ = event_tx.send(Received {
                socket: Arc::clone(socket),
                name: name_owned.clone(),
                event,
            });
        });
    }
    (
        ns,
        Probe {
            connected,
            left,
            events: received,
        },
    )
}

/// `{"_placeholder":true,"num":n}`.
pub fn placeholder(n: u64) -> serde_json::Value {
    serde_json::json!({ "_placeholder": true, "num": n })
}
