//! The hyper-facing entry of the Engine.IO layer: parse a request, check it in the order the
//! reference server does, and dispatch it to a transport.
//!
//! Errors become responses in one place, [`EngineError::into_response`]; every response then gets
//! the common headers (no caching, no sniffing, CORS) in [`Engine::handle`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{self, Admission, IpRange};
use crate::forward::{self, Locator};
use crate::framing::Framing;
use crate::origin;
pub use crate::origin::Cors;
use crate::packet::{Packet, Str};
use crate::registry::Registry;
use crate::session::{CloseReason, Session, SessionConfig, TransportKind};
use crate::sid::Sid;
use crate::socket::{self, Handshake, Headers, Message, Socket};
use crate::stats::EngineStats;
use crate::{framing, polling, streaming, websocket};

/// The body of every response the engine produces.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A complete (non-streaming) response body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

/// What the layer above (Socket.IO, or an echo app) is told about sessions. Calls come from the
/// transports' tasks; they must not block.
pub trait Handler: Send + Sync + 'static {
    /// A session opened. Nothing it sends reaches the client before the handshake.
    fn on_open(&self, socket: &Arc<Socket>);
    /// A message arrived, in order.
    fn on_message(&self, socket: &Arc<Socket>, message: Message);
    /// The session ended; called once, after which the session accepts nothing.
    fn on_close(&self, socket: &Arc<Socket>, reason: CloseReason);
}

/// Engine.IO settings. The defaults are the reference server's.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The path served, with its trailing slash (`/engine.io/`, `/socket.io/`).
    pub path: String,
    pub session: SessionConfig,
    /// The largest POST body or WebSocket message accepted, in bytes (advertised as `maxPayload`).
    pub max_payload: usize,
    /// How long a POST's body may take to arrive once its headers have: a client that stops
    /// sending mid-body is answered 408 and its session closed, rather than holding the
    /// request for as long as the session lives (which a WebSocket upgrade keeps alive).
    pub body_read_timeout: Duration,
    /// Which pages may connect (WebSocket, POST, script-like GETs: see [`crate::origin`]) and
    /// read responses cross-origin.
    pub cors: Cors,
    /// The transports offered; all by default, since reaching old browsers is the point.
    pub transports: Vec<TransportKind>,
    /// Whether `polling` may be answered as JSONP (`j=N`).
    pub jsonp: bool,
    /// Bytes after which a streaming response ends (the client reopens it), so the browser's
    /// memory for one response stays bounded.
    pub stream_limit: usize,
    /// Packets per long-polling response at most; the rest wait for the next poll.
    /// python-engineio's client refuses a payload of more than 16 packets, so that is the default.
    pub max_poll_packets: usize,
    /// tungstenite's read buffer per WebSocket connection, held for the connection's life.
    /// Small (128 bytes) so idle connections stay cheap: the socket itself is read in 8 KiB
    /// chunks through a stack buffer, and tungstenite takes its pieces from that in memory.
    pub ws_read_buffer: usize,
    /// Sessions held at once, at most; a handshake beyond is refused with 503 (WebSocket
    /// handshakes before the upgrade). Lingering sessions (closed, their close packet not yet
    /// read) count until they are gone.
    pub max_sessions: usize,
    /// Sessions one client address holds at once, at most (IPv6: one /64); 503 beyond. See
    /// [`crate::admission`] for the address a request counts against.
    pub max_sessions_per_ip: usize,
    /// Peers whose `X-Forwarded-For` names the client, and whose `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` name the public origin (reverse proxies); loopback by default.
    pub trusted_proxies: Vec<IpRange>,
    /// Put before every session id: a cluster node's name, so that every node can tell which
    /// one owns a session. Empty outside a cluster.
    pub sid_prefix: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: "/engine.io/".into(),
            session: SessionConfig::default(),
            max_payload: 1_000_000,
            body_read_timeout: Duration::from_secs(30),
            cors: Cors::default(),
            transports: TransportKind::ALL.to_vec(),
            jsonp: true,
            stream_limit: 128 * 1024,
            max_poll_packets: 16,
            ws_read_buffer: 128,
            max_sessions: 100_000,
            max_sessions_per_ip: 1_000,
            trusted_proxies: IpRange::LOOPBACK.to_vec(),
            sid_prefix: String::new(),
        }
    }
}

impl EngineConfig {
    pub fn enabled(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }
}

/// An Engine.IO protocol error answered to an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("Transport unknown")]
    UnknownTransport,
    #[error("Session ID unknown")]
    UnknownSid,
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    #[error("Bad request")]
    BadRequest,
    #[error("Forbidden")]
    Forbidden,
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    #[error("Payload too large")]
    PayloadTooLarge,
    #[error("Request body timeout")]
    BodyTimeout,
    #[error("Service unavailable")]
    Unavailable,
}

impl EngineError {
    /// The Engine.IO error code (engine.io `Server.errors`).
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest
            | EngineError::PayloadTooLarge
            | EngineError::BodyTimeout
            | EngineError::Unavailable => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            EngineError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            EngineError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct ErrorBody {
            code: u8,
            message: String,
        }
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code(),
            message: self.to_string(),
        })
        .unwrap_or_default();
        let mut res = Response::new(full(body));
        *res.status_mut() = self.status();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

/// The query parameters the engine reads, borrowed from the request URI.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub eio: Option<&'a str>,
    pub transport: Option<&'a str>,
    pub sid: Option<&'a str>,
    /// The JSONP / forever-frame callback index.
    pub j: Option<&'a str>,
    /// Transports the client gave up before this handshake: `name:reason,...`.
    pub tried: Option<&'a str>,
    /// A resuming client's confirmed position (see [`Session`](crate::session::Session)'s
    /// resume); on a handshake, the request to resume at all.
    pub ack: Option<&'a str>,
    /// The position of a resuming client's first upstream packet in this POST.
    pub seq: Option<&'a str>,
    /// The `document.domain` of a forever frame's page, when it relaxed it.
    pub domain: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Reads `EIO`, `transport`, `sid`, `j`, `tried`, `ack`, `seq` and `domain`; anything else (the `t` cache-buster) is ignored.
    /// Values are taken verbatim: every valid value is plain ASCII, so an encoded one is invalid.
    pub fn parse(query: &'a str) -> Self {
        let mut out = Query::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "EIO" => out.eio = Some(value),
                "transport" => out.transport = Some(value),
                "sid" => out.sid = Some(value),
                "j" => out.j = Some(value),
                "tried" => out.tried = Some(value),
                "ack" => out.ack = Some(value),
                "seq" => out.seq = Some(value),
                "domain" => out.domain = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// State shared by every request and task of one engine.
pub(crate) struct Shared {
    pub config: EngineConfig,
    pub registry: Registry,
    pub handler: Arc<dyn Handler>,
    pub tasks: TaskTracker,
    pub stats: Arc<EngineStats>,
    pub admission: Admission,
    pub locator: OnceLock<Arc<dyn Locator>>,
    /// Connections to the nodes that `locator` forwards to.
    pub forward_pool: forward::Pool,
}

/// The Engine.IO server: hand it every request under its path.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.shared.config.path)
            .field("sessions", &self.shared.registry.len())
            .finish()
    }
}

impl Engine {
    pub fn new(config: EngineConfig, handler: Arc<dyn Handler>) -> Self {
        let stats = Arc::<EngineStats>::default();
        Engine {
            shared: Arc::new(Shared {
                config,
                registry: Registry::default(),
                handler,
                tasks: TaskTracker::new(),
                forward_pool: forward::Pool::new(Arc::clone(&stats)),
                stats,
                admission: Admission::default(),
                locator: OnceLock::new(),
            }),
        }
    }

    /// Joins a cluster: requests for sessions that `locator` places on another node are
    /// forwarded there (see [`crate::forward`]). Set once; later calls are ignored.
    pub fn set_locator(&self, locator: Arc<dyn Locator>) {
        let _ = self.shared.locator.set(locator);
    }

    /// The node that owns the session this request names, when that is another node.
    fn owner_elsewhere<B>(&self, req: &Request<B>) -> Option<(SocketAddr, &dyn Locator)> {
        let locator = self.shared.locator.get()?;
        if forward::is_forwarded(req) {
            return None;
        }
        let sid = Query::parse(req.uri().query()?).sid?;
        if self.shared.registry.get(sid).is_some() {
            return None;
        }
        Some((locator.owner(sid)?, locator.as_ref()))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Whether `path` belongs to this engine.
    pub fn matches(&self, path: &str) -> bool {
        let prefix = &self.shared.config.path;
        path.starts_with(prefix.as_str()) || path == prefix.trim_end_matches('/')
    }

    /// The live session `sid`, if any.
    pub fn socket(&self, sid: &str) -> Option<Arc<Socket>> {
        self.shared.registry.get(sid)
    }

    /// The engine's counters (per transport), for metrics.
    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    /// Whether [`Self::shutdown`] has begun: no new session is opened from then on.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.tasks.is_closed()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.shared.registry.len()
    }

    /// Serves one request for this engine's path.
    pub async fn handle(&self, req: Request<Incoming>, remote_addr: SocketAddr) -> Response<Body> {
        // Only a node of the cluster may say it forwarded a request.
        let remote_addr = match forward::inbound(self.shared.locator.get(), &req, remote_addr) {
            Ok(addr) => addr,
            Err(error) => {
                self.shared
                    .stats
                    .forward_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote_addr, "request with a forged forward mark refused");
                return error.into_response();
            }
        };
        // Before forwarding: the node a browser reached is the one that can judge its origin (a
        // request forwarded by an authenticated node, verified just above, is not judged again).
        if let Err(error) = self.check_origin(&req, remote_addr) {
            let mut res = error.into_response();
            common_headers(res.headers_mut(), is_msie(req.headers()));
            return res;
        }
        if let Some((owner, locator)) = self.owner_elsewhere(&req) {
            // The owner answers with its own headers (CORS included).
            // Boxed, like the POST below: a parked GET's future (hyper keeps it per connection)
            // must not reserve room for the rarer, larger paths.
            let pool = &self.shared.forward_pool;
            return Box::pin(pool.forward(req, owner, remote_addr, locator))
                .await
                .unwrap_or_else(EngineError::into_response);
        }
        // Kept only where an allowlist echoes it back, and copied: a header value from hyper is
        // a slice of the connection's read buffer, and a parked GET would keep that alive.
        let origin = match self.shared.config.cors {
            Cors::Origins(_) => req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()),
            Cors::AnyOrigin | Cors::SameOrigin => None,
        };
        let msie = is_msie(req.headers());
        let mut res = if req.method() == Method::OPTIONS {
            preflight(req.headers())
        } else {
            match self.dispatch(req, remote_addr).await {
                Ok(res) => res,
                Err(error) => {
                    tracing::debug!(%error, "engine.io request refused");
                    error.into_response()
                }
            }
        };
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            common_headers(res.headers_mut(), msie);
            self.cors_headers(res.headers_mut(), origin.as_ref());
        }
        res
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        remote_addr: SocketAddr,
    ) -> Result<Response<Body>, EngineError> {
        let query_string = req.uri().query().unwrap_or("").to_owned();
        let query = Query::parse(&query_string);
        let config = &self.shared.config;
        let transport = query
            .transport
            .and_then(TransportKind::from_name)
            .filter(|&t| config.enabled(t))
            .ok_or(EngineError::UnknownTransport)?;
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            // engine.io refuses origins with characters no browser sends (header injection).
            if origin
                .as_bytes()
                .iter()
                .any(|&b| !(0x21..0x7f).contains(&b))
            {
                return Err(EngineError::BadRequest);
            }
        }
        // The callback index is reflected into scripts: digits only, or nothing is answered.
        let index = match query.j {
            Some(j) if !framing::valid_index(j) => return Err(EngineError::BadRequest),
            Some(_) if transport == TransportKind::Polling && !config.jsonp => {
                return Err(EngineError::UnknownTransport)
            }
            j => j,
        };
        let framing = match (transport, index) {
            (TransportKind::Polling, None) => Framing::Xhr,
            (TransportKind::Polling, Some(j)) => Framing::Jsonp(j.to_owned()),
            (TransportKind::Iframe | TransportKind::Htmlfile, Some(j)) => {
                let domain = match query.domain {
                    Some(d) if !framing::valid_domain(d) => return Err(EngineError::BadRequest),
                    d => d.map(str::to_owned),
                };
                Framing::Html(j.to_owned(), domain)
            }
            (TransportKind::Iframe | TransportKind::Htmlfile, None) => {
                return Err(EngineError::BadRequest)
            }
            (TransportKind::Sse, _) => Framing::Sse,
            (TransportKind::XhrStreaming, _) => Framing::XhrStreaming,
            (TransportKind::WebSocket, _) => Framing::Xhr,
        };
        let position = |value: Option<&str>| match value {
            None => Ok(None),
            Some(v) if (1..=19).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().map(Some).map_err(|_| EngineError::BadRequest)
            }
            Some(_) => Err(EngineError::BadRequest),
        };
        let (ack, seq) = (position(query.ack)?, position(query.seq)?);
        let upgrade = websocket::is_upgrade_request(&req);
        // A WebSocket opening handshake is a GET (RFC 6455); the origin policy classifies
        // requests by method, so no other method may reach an upgrade.
        if upgrade && req.method() != Method::GET {
            return Err(EngineError::BadRequest);
        }
        if transport == TransportKind::WebSocket && !upgrade {
            return Err(EngineError::BadRequest);
        }
        if let Some(sid) = query.sid {
            let Some(socket) = self.shared.registry.get(sid) else {
                let resuming_get = ack.is_some() && !upgrade && req.method() == Method::GET;
                return if resuming_get {
                    Ok(gone(&framing))
                } else {
                    Err(EngineError::UnknownSid)
                };
            };
            if upgrade {
                let resumes = {
                    let session = socket.lock();
                    session.is_resumable() && session.transport() == TransportKind::WebSocket
                };
                if resumes {
                    let target = websocket::Target::Resume(socket, ack);
                    return websocket::accept(&self.shared, req, target);
                }
                // Taken before the 101 goes out, so before the client can send anything that
                // must be ordered after the probe's frames.
                let probe = websocket::Probe::claim(socket);
                return websocket::accept(&self.shared, req, websocket::Target::Upgrade(probe));
            }
            return match *req.method() {
                Method::GET => {
                    // A GET may park for the whole heartbeat: it keeps nothing of its request.
                    drop(req);
                    receive(&self.shared, &socket, transport, &framing, ack).await
                }
                Method::POST => {
                    let at = polling::Upstream { ack, seq };
                    Box::pin(polling::post(&self.shared, &socket, transport, at, req)).await
                }
                _ => Err(EngineError::BadRequest),
            };
        }
        if req.method() != Method::GET {
            return Err(EngineError::BadHandshakeMethod);
        }
        if query.eio != Some("4") {
            return Err(EngineError::UnsupportedProtocolVersion);
        }
        if let Some(tried) = query.tried {
            self.shared.stats.fallback_report(tried);
        }
        let handshake = Handshake {
            remote_addr,
            headers: Headers::from_map(req.headers()),
            query: query_string.clone(),
        };
        if transport == TransportKind::WebSocket {
            // Refused with a status while that is still possible; `open` decides for good.
            let client = client_of(config, &handshake);
            self.shared
                .admission
                .check(client, config.max_sessions, config.max_sessions_per_ip)
                .map_err(|limit| refused(&self.shared, limit, client))?;
            // Shutting down: 503 while a status can still say so, as for HTTP handshakes.
            if self.shared.tasks.is_closed() {
                return Err(EngineError::Unavailable);
            }
            return websocket::accept(
                &self.shared,
                req,
                websocket::Target::Open(handshake, ack.is_some()),
            );
        }
        drop(req);
        let socket = open(&self.shared, transport, handshake, ack.is_some())?;
        receive(&self.shared, &socket, transport, &framing, None).await
    }

    /// Applies the origin policy ([`crate::origin`]) to a request: refusals are counted and
    /// logged here, and only here.
    fn check_origin<B>(
        &self,
        req: &Request<B>,
        remote_addr: SocketAddr,
    ) -> Result<(), EngineError> {
        // Another node checked it when the browser's request reached it; here the peer is that
        // node, and the public origin its proxy named may not be readable any more. The mark
        // was verified (`forward::inbound`) before this runs: nobody without the cluster's
        // secret gets past it.
        if self.shared.locator.get().is_some() && forward::is_forwarded(req) {
            return Ok(());
        }
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let Some(kind) = origin::Kind::of(
            req.method(),
            query.transport.and_then(TransportKind::from_name),
            query.j.is_some(),
            websocket::is_upgrade_request(req),
        ) else {
            return Ok(());
        };
        let config = &self.shared.config;
        origin::check(
            kind,
            req.headers(),
            remote_addr.ip(),
            &config.cors,
            &config.trusted_proxies,
        )
        .map_err(|reason| {
            self.shared.stats.origin_refused(kind);
            tracing::debug!(
                kind = kind.as_str(),
                reason = reason.as_str(),
                origin = ?req.headers().get(header::ORIGIN),
                referer = ?req.headers().get(header::REFERER),
                peer = %remote_addr,
                "request refused by the origin policy"
            );
            EngineError::Forbidden
        })
    }

    /// Closes every session (polling clients get a close packet, WebSockets a close frame) and
    /// waits, at most until `deadline`, for their tasks to finish. Returns whether all did.
    pub async fn shutdown(&self, deadline: Instant) -> bool {
        self.shared.tasks.close();
        for socket in self.shared.registry.all() {
            socket.close(CloseReason::ServerShutdown);
            // One closed earlier may be lingering for a final poll: it checks again, now
            // that shutdown has begun.
            socket.wake_all();
        }
        tokio::time::timeout_at(deadline.into(), self.shared.tasks.wait())
            .await
            .is_ok()
    }

    fn cors_headers(&self, headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
        match (&self.shared.config.cors, origin) {
            (Cors::AnyOrigin, _) => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            (Cors::Origins(_), Some(origin)) => {
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
                if origin::listed(&self.shared.config.cors, origin.as_bytes()) {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Serves a receiving GET on `transport`, framed as asked.
pub(crate) async fn receive(
    shared: &Arc<Shared>,
    socket: &Arc<Socket>,
    transport: TransportKind,
    framing: &Framing,
    ack: Option<u64>,
) -> Result<Response<Body>, EngineError> {
    socket.sync_probe().await;
    let received = if transport.is_streaming() {
        streaming::attach(shared, socket, transport, framing, ack)
    } else {
        polling::poll(shared, socket, framing, ack).await
    };
    match received {
        Err(EngineError::UnknownSid) if ack.is_some() => Ok(gone(framing)),
        received => received,
    }
}

/// The answer to a resuming client's GET on a session that is gone, where it could not read an
/// error status: a close packet in the transport's own framing. (XHR polling reads the 400.)
fn gone(framing: &Framing) -> Response<Body> {
    match framing {
        Framing::Xhr => EngineError::UnknownSid.into_response(),
        Framing::Jsonp(index) => polling::jsonp_response(index, &[Packet::Close.encode()]),
        _ => streaming::gone(framing),
    }
}

/// Creates, registers and starts a session, and tells the application. `resumable`: the
/// client asked for Engine.IO-level resume (HTTP transports only).
pub(crate) fn open(
    shared: &Arc<Shared>,
    transport: TransportKind,
    handshake: Handshake,
    resumable: bool,
) -> Result<Arc<Socket>, EngineError> {
    if shared.tasks.is_closed() {
        return Err(EngineError::Unavailable);
    }
    let sid = Sid::random_with_prefix(&shared.config.sid_prefix).map_err(|error| {
        tracing::error!(%error, "no entropy for a session id");
        EngineError::Unavailable
    })?;
    let config = &shared.config;
    let client = client_of(config, &handshake);
    // The place is given back where the session ends, in `socket::drive`.
    shared
        .admission
        .admit(client, config.max_sessions, config.max_sessions_per_ip)
        .map_err(|limit| refused(shared, limit, client))?;
    let open = handshake_packet(&shared.config, &sid, transport);
    let mut session = Session::new(
        transport,
        shared.config.session.clone(),
        open.encode(),
        Instant::now(),
    );
    if resumable {
        session.enable_resume();
    }
    let socket = Arc::new(Socket::new(
        sid,
        handshake,
        client,
        session,
        Arc::clone(&shared.stats),
    ));
    shared.stats.opened(transport);
    shared.registry.insert(Arc::clone(&socket));
    // Debug level: an enabled span takes a slot in the subscriber's registry for the session's
    // life, and the registry keeps every slot it grew to (a per-session map each); at `info`,
    // that was the memory a soak's churn left behind. Events that matter name the sid.
    let driver = socket::drive(Arc::clone(&socket), Arc::clone(shared)).instrument(
        tracing::debug_span!("session", sid = %socket.sid(), transport = transport.name()),
    );
    shared.tasks.spawn(driver);
    // Shutdown closes the tracker, then every session in the registry: one that passed the
    // check above but was registered after that sweep is closed here instead.
    if shared.tasks.is_closed() {
        socket.close(CloseReason::ServerShutdown);
    }
    tracing::debug!(sid = %socket.sid(), transport = transport.name(), "session opened");
    shared.handler.on_open(&socket);
    Ok(socket)
}

/// The address a handshake counts against for `max_sessions_per_ip`.
fn client_of(config: &EngineConfig, handshake: &Handshake) -> Option<std::net::IpAddr> {
    admission::client_address(
        handshake.remote_addr.ip(),
        &handshake.headers,
        &config.trusted_proxies,
    )
}

/// A handshake refused by a session limit: counted, logged, answered 503.
fn refused(
    shared: &Shared,
    limit: admission::Refusal,
    client: Option<std::net::IpAddr>,
) -> EngineError {
    shared.stats.refused(limit);
    tracing::debug!(limit = limit.as_str(), client = ?client, "handshake refused");
    EngineError::Unavailable
}

fn handshake_packet(config: &EngineConfig, sid: &Sid, transport: TransportKind) -> Packet {
    // Field order is the wire order the reference server uses.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Open<'a> {
        sid: &'a str,
        upgrades: &'a [&'a str],
        ping_interval: u128,
        ping_timeout: u128,
        max_payload: usize,
    }
    let upgrades: &[&str] =
        if transport != TransportKind::WebSocket && config.enabled(TransportKind::WebSocket) {
            &["websocket"]
        } else {
            &[]
        };
    let json = serde_json::to_string(&Open {
        sid: sid.as_str(),
        upgrades,
        ping_interval: config.session.ping_interval.as_millis(),
        ping_timeout: config.session.ping_timeout.as_millis(),
        max_payload: config.max_payload,
    })
    .unwrap_or_default();
    Packet::Open(Str::from(json))
}

fn common_headers(headers: &mut HeaderMap, msie: bool) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if msie {
        // IE8+'s XSS filter mangles responses that echo request data ("Internet Explorer has
        // modified this page"); engine.io and socket.io send this for MSIE and Trident.
        headers.insert(header::X_XSS_PROTECTION, HeaderValue::from_static("0"));
    }
}

fn is_msie(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|ua| ua.to_str().ok())
        .is_some_and(|ua| ua.contains(";MSIE") || ua.contains("MSIE ") || ua.contains("Trident/"))
}

fn preflight(request: &HeaderMap) -> Response<Body> {
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let headers = res.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if let Some(requested) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}

/// How long a closing WebSocket waits for its close frame to be written.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_reads_known_keys_only() {
        let q = Query::parse("EIO=4&transport=polling&t=Nx1&sid=abc");
        assert_eq!(q.eio, Some("4"));
        assert_eq!(q.transport, Some("polling"));
        assert_eq!(q.sid, Some("abc"));
        assert_eq!(Query::parse(""), Query::default());
        assert_eq!(Query::parse("EIO").eio, Some(""));
    }

    #[test]
    fn error_codes_and_messages_match_the_reference() {
        let cases = [
            (EngineError::UnknownTransport, 0, "Transport unknown", 400),
            (EngineError::UnknownSid, 1, "Session ID unknown", 400),
            (
                EngineError::BadHandshakeMethod,
                2,
                "Bad handshake method",
                400,
            ),
            (EngineError::BadRequest, 3, "Bad request", 400),
            (EngineError::Forbidden, 4, "Forbidden", 403),
            (
                EngineError::UnsupportedProtocolVersion,
                5,
                "Unsupported protocol version",
                400,
            ),
            (EngineError::PayloadTooLarge, 3, "Payload too large", 413),
            (EngineError::BodyTimeout, 3, "Request body timeout", 408),
            (EngineError::Unavailable, 3, "Service unavailable", 503),
        ];
        for (error, code, message, status) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), message);
            assert_eq!(error.status().as_u16(), status);
        }
    }

    #[test]
    fn handshake_json_has_reference_key_order() {
        let config = EngineConfig::default();
        let sid = Sid::random().unwrap();
        let Packet::Open(json) = handshake_packet(&config, &sid, TransportKind::Polling) else {
            unreachable!()
        };
        assert_eq!(
            json.as_str(),
            format!(
                r#"{{"sid":"{sid}","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
            )
        );
        let Packet::Open(json) = handshake_packet(&config, &sid, TransportKind::WebSocket) else {
            unreachable!()
        };
        assert!(json.contains(r#""upgrades":[]"#));
    }
}
