//! Minimal Engine.IO v4 / Socket.IO v5 clients for the namespace `/`: over WebSocket
//! (tokio-tungstenite), HTTP long-polling and JSONP (hyper 1, one keep-alive connection per
//! client), and Halley's streaming transports (`sse`, `xhr-streaming`, `iframe`, `htmlfile`: a
//! streaming GET plus a keep-alive connection for POSTs; framings in [`crate::frames`]).
//! Each TCP connection can be bound to a chosen loopback source address first, so that more
//! clients than one address's ephemeral ports can connect.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::frames::{self, StreamFraming};

pub type Ws = WebSocketStream<TcpStream>;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port`, for the Host header and the WebSocket URL.
    pub authority: String,
    /// The Engine.IO path with its trailing slash, `/socket.io/`.
    pub path: String,
    /// `--poll-via`: where a long-polling client sends every request after its handshake.
    pub poll_via: Option<Arc<Target>>,
}

impl Target {
    /// From `http://host:port` or `ws://host:port` (any path in the URL is ignored: see `path`).
    pub async fn resolve(url: &str, path: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| format!("{url}: only http:// or ws:// URLs"))?;
        let authority = rest.split('/').next().unwrap_or(rest).to_string();
        let with_port = if authority.contains(':') {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{with_port}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{with_port}: no IPv4 address"))?;
        let mut path = path.to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(Self {
            addr,
            authority,
            path,
            poll_via: None,
        })
    }
}

/// A TCP connection to the target, from `source` (port chosen by the kernel) when given.
pub async fn tcp_connect(target: &Target, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source {
        bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sets IP_BIND_ADDRESS_NO_PORT (Linux ≥ 4.2): `bind(ip, 0)` then leaves the port to
/// `connect`, which picks it per 4-tuple and may reuse ports in TIME_WAIT. Without it, `bind`
/// must find a port free of every socket on that address, TIME_WAIT ones included, which makes
/// connects crawl after a previous run of tens of thousands of clients. Best effort.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd, and a pointer to a c_int that outlives the call, with its size.
    #[allow(unsafe_code)]
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn ws_config() -> WebSocketConfig {
    // tungstenite's defaults (128 KiB read and write buffers) would cost 256 KiB per client.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20))
}

/// The next text message, or an error when the connection ends. WebSocket pings are answered
/// by tungstenite itself.
pub async fn next_text(ws: &mut Ws) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes, String> {
    loop {
        match ws.next().await {
            None => return Err("ws: closed".into()),
            Some(Err(e)) => return Err(format!("ws: {e}")),
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(_))) => return Err("ws: close frame".into()),
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: impl Into<String>) -> Result<(), String> {
    ws.send(Message::text(text.into()))
        .await
        .map_err(|e| format!("ws send: {e}"))
}

/// What an Engine.IO text packet asks of a client that only wants to stay connected: `Ok(true)`
/// when it was a ping (answer `3`), `Err` when the server closed the session or the namespace.
pub fn control(text: &str) -> Result<bool, String> {
    match text.as_bytes().first() {
        Some(b'2') => Ok(text.len() == 1),
        Some(b'1') => Err("eio: close packet".into()),
        _ if text.starts_with("41") => Err("sio: disconnect packet".into()),
        _ if text.starts_with("44") => Err(format!("sio: connect_error {text}")),
        _ => Ok(false),
    }
}

/// Opens a WebSocket session and connects the namespace `/`: reads `0{...}`, sends `40`, waits
/// for `40{"sid":...}` (answering pings meanwhile).
pub async fn ws_connect(target: &Target, source: Option<IpAddr>) -> Result<Ws, String> {
    let stream = tcp_connect(target, source).await?;
    let url = format!(
        "ws://{}{}?EIO=4&transport=websocket",
        target.authority, target.path
    );
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config()))
            .await
            .map_err(|e| format!("ws handshake: {e}"))?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!(
            "eio: expected open packet, got {:?}",
            &open[..open.len().min(40)]
        ));
    }
    send_text(&mut ws, "40").await?;
    loop {
        let text = next_text(&mut ws).await?;
        if text.starts_with("40") {
            return Ok(ws);
        }
        if control(&text)? {
            send_text(&mut ws, "3").await?;
        }
    }
}

/// The transports a client can use.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    /// Long-polling (XHR framing): `GET` waits for a payload, `POST` sends one.
    Polling,
    /// Long-polling answered as scripts (`polling` with `j=N`); form POSTs.
    Jsonp,
    /// Server-sent events (Halley): one streaming GET, POSTs on a second connection.
    Sse,
    /// One streaming XHR GET (Halley), POSTs on a second connection.
    XhrStreaming,
    /// The forever frame (Halley), POSTs on a second connection.
    Iframe,
    /// The forever frame in an ActiveX `htmlfile` (Halley); the same bytes as `iframe`.
    Htmlfile,
}

impl Transport {
    /// TCP connections one client holds.
    pub fn connections(self) -> u64 {
        match self {
            Transport::Websocket | Transport::Polling | Transport::Jsonp => 1,
            _ => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Polling => "polling",
            Transport::Jsonp => "jsonp",
            Transport::Sse => "sse",
            Transport::XhrStreaming => "xhr-streaming",
            Transport::Iframe => "iframe",
            Transport::Htmlfile => "htmlfile",
        }
    }
}

/// The callback index the JSONP and forever-frame clients send (`j`); any 1-6 digits do.
const CALLBACK_INDEX: &str = "0";

/// HTTP requests sent by the HTTP clients (long-poll GETs, POSTs, stream GETs), for requests/s.
pub static HTTP_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// New connections an HTTP client opened because the server had closed its keep-alive one
/// (Halley closes a connection idle for `--header-read-timeout`, 10 s, e.g. a streaming
/// client's POST connection between pings).
pub static HTTP_RECONNECTS: AtomicU64 = AtomicU64::new(0);
/// Streams that the server ended (after `stream_limit` bytes) and the client reopened.
pub static STREAM_REOPENS: AtomicU64 = AtomicU64::new(0);

type Sender = SendRequest<Full<Bytes>>;

/// An HTTP/1.1 client on one keep-alive connection, reopened when the server has closed it.
/// Dropping it ends the connection at once (see [`Http::abort`]).
pub struct Http {
    send: Sender,
    target: Target,
    source: Option<IpAddr>,
    /// A duplicate of the connection's socket, to shut it down whatever hyper's connection
    /// task is doing (waiting for a long-poll answer, say).
    socket: Option<OwnedFd>,
}

impl Http {
    pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Self, String> {
        let (send, socket) = Self::handshake(target, source).await?;
        Ok(Self {
            send,
            target: target.clone(),
            source,
            socket,
        })
    }

    async fn handshake(
        target: &Target,
        source: Option<IpAddr>,
    ) -> Result<(Sender, Option<OwnedFd>), String> {
        let stream = tcp_connect(target, source).await?;
        let socket = stream.as_fd().try_clone_to_owned().ok();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(conn);
        Ok((send, socket))
    }

    async fn reconnect(&mut self) -> Result<(), String> {
        let (send, socket) = Self::handshake(&self.target, self.source).await?;
        self.send = send;
        self.socket = socket;
        HTTP_RECONNECTS.fetch_add(1, Relaxed);
        Ok(())
    }

    /// A new connection from the same source to the same server (for a request that must not
    /// wait for the one in flight on this one, as a browser opens a second connection).
    pub async fn another(&self) -> Result<Self, String> {
        Self::connect(&self.target, self.source).await
    }

    /// Ends the TCP connection now (`shutdown(SHUT_RDWR)`: the server reads EOF), as a client
    /// that goes away without a word. Dropping the `Http` does the same.
    pub fn abort(&mut self) {
        if let Some(socket) = self.socket.take() {
            // SAFETY: a socket this struct owns (a dup of hyper's), valid until `socket` drops.
            #[allow(unsafe_code)]
            unsafe {
                libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn send(
        &mut self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let mut retried = false;
        loop {
            if self.send.ready().await.is_err() {
                self.reconnect().await?;
            }
            let mut req = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(HOST, &self.target.authority);
            if let Some(content_type) = content_type {
                req = req.header(CONTENT_TYPE, content_type);
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| format!("http request: {e}"))?;
            HTTP_REQUESTS.fetch_add(1, Relaxed);
            match self.send.send_request(req).await {
                Ok(res) => return Ok(res),
                // The server closed the idle connection as the request went out: once more (as
                // browsers retry a request that failed on a reused keep-alive connection).
                Err(e) if !retried && stale_connection(&e) => {
                    retried = true;
                    self.reconnect().await?;
                }
                Err(e) => return Err(format!("http: {e}")),
            }
        }
    }

    /// A request whose whole body is read; an error for a status other than 2xx.
    pub async fn request(
        &mut self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let res = self.send(method, uri, content_type, body).await?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("http body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "http {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            ));
        }
        Ok(body)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Whether a request failed because the server had closed (or was closing) the keep-alive
/// connection it went out on: cancelled, no answer, or reset / broken pipe while writing.
fn stale_connection(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = err.source();
    }
    false
}

/// Gives the packets of `payload` other than pings and noops to `f`; returns how many pings
/// there were (each wants a `3`), or an error when the server closed the session.
fn packets(payload: &str, f: &mut impl FnMut(&str)) -> Result<usize, String> {
    let mut pings = 0;
    for packet in payload.split('\x1e') {
        if control(packet)? {
            pings += 1;
        } else if packet != "6" {
            f(packet);
        }
    }
    Ok(pings)
}

/// The sid of an open packet `0{"sid":…}`.
fn open_sid(payload: &str) -> Result<String, String> {
    let json = payload.strip_prefix('0').ok_or_else(|| {
        format!(
            "eio: expected open packet, got {:?}",
            &payload[..payload.len().min(40)]
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("eio: open packet: {e}"))?;
    json["sid"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "eio: open packet without sid".into())
}

fn check_ok(answer: &[u8]) -> Result<(), String> {
    if answer == b"ok" {
        Ok(())
    } else {
        Err(format!(
            "eio: POST answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        ))
    }
}

/// A long-polling session: one HTTP/1.1 keep-alive connection, used strictly in turn (GET,
/// then the POSTs its answer calls for, then the next GET), so one socket per client suffices.
/// With a callback index it is JSONP: answers are `___eio[j]("…");`, POSTs forms `d=…`.
pub struct Polling {
    http: Http,
    /// The request target, with `sid=` once known.
    uri: String,
    jsonp: Option<&'static str>,
}

impl Polling {
    async fn get(&mut self) -> Result<String, String> {
        let body = self
            .http
            .request(Method::GET, &self.uri, None, Bytes::new())
            .await?;
        match self.jsonp {
            Some(j) => frames::jsonp(&body, j),
            None => String::from_utf8(body.into()).map_err(|_| "eio: binary payload".into()),
        }
    }

    async fn post(&mut self, payload: &str) -> Result<(), String> {
        Self::post_on(&mut self.http, &self.uri, self.jsonp, payload).await
    }

    async fn post_on(
        http: &mut Http,
        uri: &str,
        jsonp: Option<&'static str>,
        payload: &str,
    ) -> Result<(), String> {
        let (content_type, body) = match jsonp {
            Some(_) => (
                "application/x-www-form-urlencoded",
                Bytes::from(frames::form_body(payload)),
            ),
            None => (
                "text/plain;charset=UTF-8",
                Bytes::copy_from_slice(payload.as_bytes()),
            ),
        };
        let answer = http
            .request(Method::POST, uri, Some(content_type), body)
            .await?;
        check_ok(&answer)
    }

    /// One long-poll: each packet of the payload but pings and noops to `f`, then the pings
    /// answered.
    pub async fn recv(&mut self, f: &mut impl FnMut(&str)) -> Result<(), String> {
        let payload = self.get().await?;
        let pings = packets(&payload, f)?;
        for _ in 0..pings {
            self.post("3").await?;
        }
        Ok(())
    }

    /// Opens a session (JSONP with `jsonp`) and sends the namespace CONNECT `40`.
    async fn open(
        target: &Target,
        source: Option<IpAddr>,
        jsonp: Option<&'static str>,
    ) -> Result<Self, String> {
        let mut uri = format!("{}?EIO=4&transport=polling", target.path);
        if let Some(j) = jsonp {
            uri.push_str("&j=");
            uri.push_str(j);
        }
        let mut polling = Polling {
            http: Http::connect(target, source).await?,
            uri,
            jsonp,
        };
        let open = polling.get().await?;
        let sid = open_sid(&open)?;
        if let Some(via) = &target.poll_via {
            // Another node of the cluster: it forwards each request to the session's owner.
            polling.http = Http::connect(via, source).await?;
        }
        polling.uri.push_str("&sid=");
        polling.uri.push_str(&sid);
        polling.post("40").await?;
        Ok(polling)
    }
}

/// A streaming session (`sse`, `xhr-streaming`, `iframe`, `htmlfile`): one long GET that
/// carries framed payloads (reopened with the sid when the server ends it), and POSTs on a
/// second keep-alive connection.
pub struct Streaming {
    framing: StreamFraming,
    get: Http,
    /// The open stream; `None` between its end and the reopen.
    body: Option<Incoming>,
    /// Bytes of the stream not yet parsed (an incomplete line).
    buf: Vec<u8>,
    post: Http,
    /// The request target, with `sid=` once known.
    uri: String,
    sid_known: bool,
}

impl Streaming {
    async fn open(
        target: &Target,
        source: Option<IpAddr>,
        transport: Transport,
    ) -> Result<Self, String> {
        let framing = match transport {
            Transport::Sse => StreamFraming::Sse,
            Transport::XhrStreaming => StreamFraming::XhrStreaming,
            _ => StreamFraming::Html,
        };
        let mut uri = format!("{}?EIO=4&transport={}", target.path, transport.name());
        if framing == StreamFraming::Html {
            uri.push_str("&j=");
            uri.push_str(CALLBACK_INDEX);
        }
        let mut stream = Streaming {
            framing,
            get: Http::connect(target, source).await?,
            body: None,
            buf: Vec::new(),
            post: Http::connect(target, source).await?,
            uri,
            sid_known: false,
        };
        stream.reopen().await?;
        let mut open = None;
        stream
            .read_units(|payload| {
                open.get_or_insert(payload);
                Ok(())
            })
            .await?;
        let sid = open_sid(open.as_deref().unwrap_or_default())?;
        stream.uri.push_str("&sid=");
        stream.uri.push_str(&sid);
        stream.sid_known = true;
        stream.send("40").await?;
        Ok(stream)
    }

    /// GETs the stream.
    async fn reopen(&mut self) -> Result<(), String> {
        let res = self
            .get
            .send(Method::GET, &self.uri, None, Bytes::new())
            .await?;
        if res.status() != hyper::StatusCode::OK {
            let status = res.status();
            let body = res.into_body().collect().await.map(|b| b.to_bytes());
            let body = body.unwrap_or_default();
            return Err(format!(
                "stream GET {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            ));
        }
        self.body = Some(res.into_body());
        Ok(())
    }

    /// Reads the stream until at least one framed payload came, giving each to `each`;
    /// reopens the stream when the server ends it.
    async fn read_units(
        &mut self,
        mut each: impl FnMut(String) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            if frames::drain_lines(self.framing, &mut self.buf, &mut each)? > 0 {
                return Ok(());
            }
            let Some(body) = self.body.as_mut() else {
                self.reopen().await?;
                continue;
            };
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("stream: {e}")),
                None => {
                    self.body = None;
                    if !self.buf.is_empty() {
                        return Err("stream: ended inside a frame".into());
                    }
                    if !self.sid_known {
                        return Err("stream: ended before the open packet".into());
                    }
                    STREAM_REOPENS.fetch_add(1, Relaxed);
                }
            }
        }
    }

    async fn send(&mut self, payload: &str) -> Result<(), String> {
        let answer = self
            .post
            .request(
                Method::POST,
                &self.uri,
                Some("text/plain;charset=UTF-8"),
                Bytes::copy_from_slice(payload.as_bytes()),
            )
            .await?;
        check_ok(&answer)
    }

    /// The next framed payloads: each packet but pings and noops to `f`, then the pings
    /// answered.
    pub async fn recv(&mut self, f: &mut impl FnMut(&str)) -> Result<(), String> {
        let mut pings = 0;
        self.read_units(|payload| {
            pings += packets(&payload, f)?;
            Ok(())
        })
        .await?;
        for _ in 0..pings {
            self.send("3").await?;
        }
        Ok(())
    }
}

/// A client session on any transport, connected to the namespace `/`.
pub enum Session {
    Ws(Ws),
    Polling(Polling),
    Streaming(Box<Streaming>),
}

impl Session {
    /// Opens a session on `transport` and connects the namespace `/` (sends `40`, waits for
    /// `40{"sid":…}`, answering pings meanwhile).
    pub async fn connect(
        transport: Transport,
        target: &Target,
        source: Option<IpAddr>,
    ) -> Result<Self, String> {
        let mut session = match transport {
            Transport::Websocket => return ws_connect(target, source).await.map(Session::Ws),
            Transport::Polling => Session::Polling(Polling::open(target, source, None).await?),
            Transport::Jsonp => {
                Session::Polling(Polling::open(target, source, Some(CALLBACK_INDEX)).await?)
            }
            _ => Session::Streaming(Box::new(Streaming::open(target, source, transport).await?)),
        };
        let mut connected = false;
        while !connected {
            session
                .recv(&mut |packet| connected |= packet.starts_with("40"))
                .await?;
        }
        Ok(session)
    }

    /// Waits for the next message (WebSocket), poll answer or stream unit; gives each packet
    /// but pings and noops to `f`, and answers the pings.
    pub async fn recv(&mut self, f: &mut impl FnMut(&str)) -> Result<(), String> {
        match self {
            Session::Ws(ws) => {
                let text = next_text(ws).await?;
                if control(&text)? {
                    send_text(ws, "3").await
                } else {
                    if &*text != "6" {
                        f(&text);
                    }
                    Ok(())
                }
            }
            Session::Polling(polling) => polling.recv(f).await,
            Session::Streaming(stream) => stream.recv(f).await,
        }
    }

    /// Leaves. `clean`: as a client's `socket.disconnect()` does, the Socket.IO DISCONNECT
    /// `41` then the end of the Engine.IO session (WebSocket: a close frame, answered by the
    /// server's; HTTP transports: the close packet `1`, POSTed on a new connection for
    /// long-polling since the keep-alive one may hold a pending GET), then the connections
    /// closed. Otherwise the connections are just closed (shut down), without a word.
    pub async fn leave(self, clean: bool) -> Result<(), String> {
        if !clean {
            return Ok(());
        }
        match self {
            Session::Ws(mut ws) => {
                send_text(&mut ws, "41").await?;
                ws.close(None).await.map_err(|e| format!("ws close: {e}"))?;
                // The server's close frame ends the closing handshake.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                Ok(())
            }
            Session::Polling(polling) => {
                let mut http = polling.http.another().await?;
                Polling::post_on(&mut http, &polling.uri, polling.jsonp, "41\x1e1").await
            }
            Session::Streaming(mut stream) => stream.send("41\x1e1").await,
        }
    }
}

/// Bounds a connect attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
