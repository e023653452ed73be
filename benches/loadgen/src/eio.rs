//! Minimal Engine.IO v4 / Socket.IO v5 clients for the namespace `/`: over WebSocket
//! (tokio-tungstenite) and over HTTP long-polling (hyper 1, one keep-alive connection per client).
//! Each TCP connection can be bound to a chosen loopback source address first, so that more
//! clients than one address's ephemeral ports can connect.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port`, for the Host header and the WebSocket URL.
    pub authority: String,
    /// The Engine.IO path with its trailing slash, `/socket.io/`.
    pub path: String,
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

/// A long-polling session: one HTTP/1.1 keep-alive connection, used strictly in turn (GET,
/// then the POSTs its answer calls for, then the next GET), so one socket per client suffices.
pub struct Polling {
    send: SendRequest<Full<Bytes>>,
    /// The request target up to and including `sid=`.
    uri: String,
    authority: String,
}

impl Polling {
    async fn request(&mut self, post: Option<&'static str>) -> Result<Bytes, String> {
        self.send.ready().await.map_err(|e| format!("http: {e}"))?;
        let req = hyper::Request::builder()
            .method(if post.is_some() { "POST" } else { "GET" })
            .uri(&self.uri)
            .header("host", &self.authority)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(Full::new(Bytes::from_static(
                post.unwrap_or_default().as_bytes(),
            )))
            .map_err(|e| format!("http request: {e}"))?;
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("http: {e}"))?;
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

    /// One long-poll: the packets of the payload, pings answered. Returns the number of packets
    /// that were neither pings nor noops.
    pub async fn poll_once(&mut self) -> Result<usize, String> {
        let body = self.request(None).await?;
        let mut pings = 0;
        let mut other = 0;
        for packet in body.split(|&b| b == 0x1e) {
            let text = std::str::from_utf8(packet).map_err(|_| "eio: binary payload")?;
            if control(text)? {
                pings += 1;
            } else if text != "6" {
                other += 1;
            }
        }
        for _ in 0..pings {
            let ok = self.request(Some("3")).await?;
            if &ok[..] != b"ok" {
                return Err(format!(
                    "eio: POST answered {:?}",
                    String::from_utf8_lossy(&ok)
                ));
            }
        }
        Ok(other)
    }
}

/// Opens a polling session and connects the namespace `/`.
pub async fn polling_connect(target: &Target, source: Option<IpAddr>) -> Result<Polling, String> {
    let stream = tcp_connect(target, source).await?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    let mut polling = Polling {
        send,
        uri: format!("{}?EIO=4&transport=polling", target.path),
        authority: target.authority.clone(),
    };
    let open = polling.request(None).await?;
    let open = std::str::from_utf8(&open).map_err(|_| "eio: open packet not UTF-8")?;
    let json = open.strip_prefix('0').ok_or_else(|| {
        format!(
            "eio: expected open packet, got {:?}",
            &open[..open.len().min(40)]
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("eio: open packet: {e}"))?;
    let sid = json["sid"].as_str().ok_or("eio: open packet without sid")?;
    polling.uri.push_str("&sid=");
    polling.uri.push_str(sid);
    let ok = polling.request(Some("40")).await?;
    if &ok[..] != b"ok" {
        return Err(format!(
            "eio: POST answered {:?}",
            String::from_utf8_lossy(&ok)
        ));
    }
    loop {
        let body = polling.request(None).await?;
        let mut connected = false;
        for packet in body.split(|&b| b == 0x1e) {
            let text = std::str::from_utf8(packet).map_err(|_| "eio: binary payload")?;
            if text.starts_with("40") {
                connected = true;
            } else if control(text)? {
                let _ = polling.request(Some("3")).await?;
            }
        }
        if connected {
            return Ok(polling);
        }
    }
}

/// Bounds a connect attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
