//! Shared helpers for Halley's black-box integration tests: a real server on an ephemeral
//! loopback port, a tiny HTTP/1.1 client (hyper's connection API, one connection per request),
//! and WebSocket helpers over tokio-tungstenite. Submodules: [`binary`] (binary attachments),
//! [`sio`] (a Socket.IO client over WebSocket) and [`legacy`] (an old browser's JSONP,
//! forever-frame, SSE and xhr-streaming reads).
//!
//! Every await that depends on the server is wrapped in [`within`], a generous hang guard: a
//! broken server fails the test instead of hanging it. Nothing here sleeps to wait for an event.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use halley::engine::{
    CloseReason, Cors, Engine, EngineConfig, Handler, Message, SessionConfig, Socket,
};
use halley::server::{self, Router, ServerConfig};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The hang guard for any single await on the server.
pub const GUARD: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`GUARD`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {GUARD:?} waiting for {what}"),
    }
}

/// Sends every message back: text as text, binary as binary.
pub struct Echo;

impl Handler for Echo {
    fn on_open(&self, _socket: &Arc<Socket>) {}

    fn on_message(&self, socket: &Arc<Socket>, message: Message) {
        let _ = match message {
            Message::Text(text) => socket.send_text(&text),
            Message::Binary(data) => socket.send_binary(data),
        };
    }

    fn on_close(&self, _socket: &Arc<Socket>, _reason: CloseReason) {}
}

/// The configuration of the public conformance suite's reference server: path `/engine.io/`,
/// pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1,000,000, CORS for any origin.
pub fn suite_config() -> EngineConfig {
    EngineConfig {
        path: "/engine.io/".into(),
        session: SessionConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            ..SessionConfig::default()
        },
        max_payload: 1_000_000,
        cors: Cors::AnyOrigin,
        ..EngineConfig::default()
    }
}

/// The suite's settings with a heartbeat far longer than any test, so that only what a test
/// does ends a session.
#[allow(dead_code)] // Not every test binary uses it.
pub fn long_heartbeat_config() -> EngineConfig {
    EngineConfig {
        session: SessionConfig {
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(60),
            ..SessionConfig::default()
        },
        ..suite_config()
    }
}

/// A running server on 127.0.0.1:<ephemeral>. Dropping it shuts the server down.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl TestServer {
    /// Starts an echo server with `config`.
    pub async fn start(config: EngineConfig) -> Self {
        Self::start_with(config, Arc::new(Echo)).await
    }

    /// Starts a server with `config` and `handler`.
    pub async fn start_with(config: EngineConfig, handler: Arc<dyn Handler>) -> Self {
        Self::start_full(config, handler, ServerConfig::default()).await
    }

    /// Starts a server with `config`, `handler` and the listener's own settings (timeouts).
    pub async fn start_full(
        config: EngineConfig,
        handler: Arc<dyn Handler>,
        server_config: ServerConfig,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let engine = Engine::new(config, handler);
        let router = Router::new(engine.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let join = tokio::spawn(server::serve(listener, router, server_config, shutdown));
        TestServer {
            addr,
            engine,
            shutdown: Mutex::new(Some(tx)),
            join: Mutex::new(Some(join)),
        }
    }

    /// Resolves the shutdown future given to `serve`, without waiting for it to return.
    pub fn trigger_shutdown(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Takes the handle of the `serve` task, to await its return.
    pub fn take_join(&self) -> JoinHandle<()> {
        self.join
            .lock()
            .unwrap()
            .take()
            .expect("serve task already taken")
    }

    /// `/engine.io/?<query>`.
    pub fn path(&self, query: &str) -> String {
        format!("/engine.io/?{query}")
    }

    /// `ws://<addr>/engine.io/?<query>`.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/engine.io/?{query}", self.addr)
    }

    /// A request to the engine path with `query`.
    pub async fn request(
        &self,
        method: Method,
        query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        request(self.addr, method, &self.path(query), headers, body).await
    }

    /// A plain GET with `query`.
    pub async fn get(&self, query: &str) -> Reply {
        self.request(Method::GET, query, &[], Bytes::new()).await
    }

    /// Opens a polling session: asserts a 200 open packet and returns it.
    pub async fn handshake(&self) -> Handshake {
        let reply = self.get("EIO=4&transport=polling").await;
        assert_eq!(reply.status, StatusCode::OK, "handshake: {reply:?}");
        Handshake::parse(reply.text())
    }

    /// A long-poll GET on session `sid`.
    pub async fn poll(&self, sid: &str) -> Reply {
        self.get(&format!("EIO=4&transport=polling&sid={sid}"))
            .await
    }

    /// A POST of `body` on session `sid`.
    pub async fn post(&self, sid: &str, body: impl Into<Bytes>) -> Reply {
        self.request(
            Method::POST,
            &format!("EIO=4&transport=polling&sid={sid}"),
            &[("content-type", "text/plain;charset=UTF-8")],
            body,
        )
        .await
    }

    /// Opens a WebSocket with `query`, asserting the upgrade succeeds.
    pub async fn ws(&self, query: &str) -> Ws {
        let url = self.ws_url(query);
        match within("websocket connect", tokio_tungstenite::connect_async(&url)).await {
            Ok((ws, response)) => {
                assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
                ws
            }
            Err(error) => panic!("websocket connect to {url} failed: {error}"),
        }
    }

    /// Opens a WebSocket session (handshake over WebSocket) and reads its open packet.
    pub async fn ws_handshake(&self) -> (Ws, Handshake) {
        let mut ws = self.ws("EIO=4&transport=websocket").await;
        let open = ws_text(&mut ws).await;
        (ws, Handshake::parse(&open))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// A parsed open packet.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The whole packet, `0{...}`.
    pub raw: String,
    pub sid: String,
    pub json: serde_json::Map<String, serde_json::Value>,
}

impl Handshake {
    pub fn parse(packet: &str) -> Self {
        let json = packet
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("not an open packet: {packet:?}"));
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("open packet JSON {json:?}: {e}"));
        let sid = json
            .get("sid")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("open packet without a string sid: {packet:?}"))
            .to_owned();
        Handshake {
            raw: packet.to_owned(),
            sid,
            json,
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        self.json.keys().map(String::as_str).collect()
    }
}

/// An HTTP response, body read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("response body is UTF-8")
    }

    /// A header as a string, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is ASCII"))
    }

    /// The Engine.IO error `(code, message)` of a JSON error body.
    pub fn error(&self) -> (u64, String) {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {self:?}"));
        let code = v["code"].as_u64().expect("numeric code");
        let message = v["message"].as_str().expect("string message").to_owned();
        (code, message)
    }

    /// Asserts a 400 with Engine.IO error `code`.
    #[track_caller]
    pub fn assert_error(&self, code: u64) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{self:?}");
        assert_eq!(self.error().0, code, "{self:?}");
    }
}

/// A fresh HTTP/1.1 connection to `addr`, driven by a task of its own until it closes.
pub async fn connect<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends `req` over a fresh connection to `addr` and reads the whole response.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async move {
        let mut sender = connect(addr).await;
        let res = sender.send_request(req).await.expect("send request");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("read body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    within("an HTTP response", exchange).await
}

/// A request with `headers` and `body` to `path_and_query` on `addr`.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(Full::new(body.into()))
        .expect("valid request");
    let map = req.headers_mut();
    map.insert(HOST, HeaderValue::from_str(&addr.to_string()).unwrap());
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    send(addr, req).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next WebSocket message other than a protocol-level ping or pong; `None` when the
/// stream ended.
pub async fn ws_next(ws: &mut Ws) -> Option<Result<WsMessage, tungstenite::Error>> {
    within("a websocket message", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await
}

/// The next message, which must be a text frame.
pub async fn ws_text(ws: &mut Ws) -> String {
    match ws_next(ws).await {
        Some(Ok(WsMessage::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next message, which must be a binary frame.
pub async fn ws_binary(ws: &mut Ws) -> Bytes {
    match ws_next(ws).await {
        Some(Ok(WsMessage::Binary(data))) => data,
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

/// Sends a text frame.
pub async fn ws_send(ws: &mut Ws, text: &str) {
    within("a websocket send", ws.send(WsMessage::text(text)))
        .await
        .expect("websocket send");
}

/// Asserts the server closes the WebSocket before sending any other data frame, and returns
/// its close frame (`None` if the connection ended without one).
pub async fn ws_expect_close(ws: &mut Ws) -> Option<CloseFrame> {
    match ws_next(ws).await {
        Some(Ok(WsMessage::Close(frame))) => frame,
        None | Some(Err(_)) => None,
        Some(Ok(other)) => panic!("expected the server to close, got {other:?}"),
    }
}

/// Asserts the server closes the WebSocket with a close frame (not just a dropped
/// connection), before any other data frame.
pub async fn ws_expect_close_frame(ws: &mut Ws) {
    match ws_next(ws).await {
        Some(Ok(WsMessage::Close(_))) => {}
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Polls `condition` until it holds, under the hang guard: for what the server does on a timer
/// (reaping sessions, cutting connections), where there is no event to wait on.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Asserts the server still serves: a fresh polling session echoes a message.
pub async fn assert_healthy(server: &TestServer) {
    let sid = server.handshake().await.sid;
    assert_eq!(server.post(&sid, "4alive").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4alive");
}

/// Sends `request` one byte every `pace` until the server closes the connection; returns how
/// many bytes were sent and what the server wrote.
pub async fn dribble(addr: SocketAddr, request: &[u8], pace: Duration) -> (usize, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(pace);
    within("the server to close a dribbling connection", async {
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick(), if sent < request.len() => {
                    if tcp.write_all(&request[sent..=sent]).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
        }
    })
    .await;
    (sent, received)
}

/// Writes `request` on a new connection and reads until the server closes it (or resets it),
/// under the hang guard: every byte the server answered.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    within("the server to answer and close", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.write_all(request).await;
        let mut response = Vec::new();
        let _ = tcp.read_to_end(&mut response).await;
        response
    })
    .await
}

/// Opens an Engine.IO session with a GET of `/engine.io/?<query>` over `tcp` and returns its
/// sid, leaving the connection open (a streaming transport's receiver stays attached).
pub async fn open_raw_on(tcp: &mut TcpStream, addr: SocketAddr, query: &str) -> String {
    let head = format!("GET /engine.io/?{query} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    within("the open packet", async {
        loop {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the open packet: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
            if let Some(sid) = sid_in(&seen) {
                return sid;
            }
        }
    })
    .await
}

/// [`open_raw_on`] a new connection.
pub async fn open_raw(addr: SocketAddr, query: &str) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let sid = open_raw_on(&mut tcp, addr, query).await;
    (sid, tcp)
}

/// The session id of an open packet, however it is framed (as JSON, or inside a JSON string).
pub fn sid_in(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let rest = &text[text.find("sid")? + 3..];
    let rest = rest.trim_start_matches(['\\', '"', ':']);
    let sid: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (sid.len() == 22).then_some(sid)
}

pub mod binary;
pub mod legacy;
pub mod sio;
