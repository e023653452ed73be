//! The hyper-facing entry of the Engine.IO layer: parse a request, check it in the order the
//! reference server does, and dispatch it to a transport (or to the node that owns its
//! session).
//!
//! It only dispatches: the settings, errors, headers, sessions and transports it dispatches to
//! live below it (the Layout in `lib.rs`), and nothing imports from here. Errors become
//! responses in one place, [`EngineError::into_response`]; every response then gets the common
//! headers (no caching, no sniffing, CORS) in [`Engine::handle`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::framing::{self, Framing};
use crate::handshake::Handshake;
use crate::headers::Headers;
use crate::http::{
    common_headers, cors_headers, is_msie, is_upgrade_request, preflight, HttpRequest,
};
use crate::lifecycle::{client_of, open, refused, Shared};
use crate::origin;
use crate::packet::Packet;
use crate::registry::Registry;
use crate::session::{CloseReason, TransportKind};
use crate::socket::Socket;
use crate::stats::EngineStats;
use crate::transport::forward::{self, Locator};
use crate::transport::{polling, streaming, websocket};

// The paths these had when this file held them.
pub use crate::config::EngineConfig;
pub use crate::handshake::Query;
pub use crate::http::{full, Body, EngineError};
pub use crate::origin::Cors;
pub use crate::socket::Handler;

/// The Engine.IO server: hand it every request under its path.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    forwarding: Arc<Forwarding>,
}

/// The answer to a request, on its way ([`Engine::handle`]).
pub type Handling = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

fn answered(res: Response<Body>) -> Handling {
    Box::pin(std::future::ready(res))
}

/// A cluster node's way to the others (see [`crate::forward`]).
struct Forwarding {
    locator: OnceLock<Arc<dyn Locator>>,
    /// Connections to the nodes that `locator` forwards to.
    pool: forward::Pool,
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
                stats: Arc::clone(&stats),
                admission: Admission::default(),
            }),
            forwarding: Arc::new(Forwarding {
                locator: OnceLock::new(),
                pool: forward::Pool::new(stats),
            }),
        }
    }

    /// Joins a cluster: requests for sessions that `locator` places on another node are
    /// forwarded there (see [`crate::forward`]). Set once; later calls are ignored.
    pub fn set_locator(&self, locator: Arc<dyn Locator>) {
        let _ = self.forwarding.locator.set(locator);
    }

    /// The node that owns the session this request names, when that is another node.
    fn owner_elsewhere<B>(&self, req: &Request<B>) -> Option<(SocketAddr, &dyn Locator)> {
        let locator = self.forwarding.locator.get()?;
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
    ///
    /// The checks run now; the future returned owns what it needs (the engine's shared state
    /// and the request, once): a parked GET's future is all its connection keeps while it
    /// waits.
    pub fn handle(&self, req: HttpRequest, remote_addr: SocketAddr) -> Handling {
        // Only a node of the cluster may say it forwarded a request.
        let remote_addr = match forward::inbound(self.forwarding.locator.get(), &req, remote_addr) {
            Ok(addr) => addr,
            Err(error) => {
                self.shared
                    .stats
                    .forward_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote_addr, "request with a forged forward mark refused");
                return answered(error.into_response());
            }
        };
        // Before forwarding: the node a browser reached is the one that can judge its origin (a
        // request forwarded by an authenticated node, verified just above, is not judged again).
        if let Err(error) = self.check_origin(&req, remote_addr) {
            let mut res = error.into_response();
            common_headers(res.headers_mut(), is_msie(req.headers()));
            return answered(res);
        }
        if let Some((owner, _)) = self.owner_elsewhere(&req) {
            // The owner answers with its own headers (CORS included).
            let forwarding = Arc::clone(&self.forwarding);
            return Box::pin(async move {
                let Some(locator) = forwarding.locator.get() else {
                    return EngineError::Unavailable.into_response();
                };
                let pool = &forwarding.pool;
                pool.forward(req, owner, remote_addr, locator.as_ref())
                    .await
                    .unwrap_or_else(EngineError::into_response)
            });
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
        let shared = Arc::clone(&self.shared);
        let finish = move |mut res: Response<Body>| {
            if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                common_headers(res.headers_mut(), msie);
                cors_headers(res.headers_mut(), &shared.config.cors, origin.as_ref());
            }
            res
        };
        if req.method() == Method::OPTIONS {
            return answered(finish(preflight(req.headers())));
        }
        // Made before the block, so the block holds the request once (inside it).
        let dispatching = self.clone().dispatch(req, remote_addr);
        Box::pin(async move {
            finish(match dispatching.await {
                Ok(res) => res,
                Err(error) => {
                    tracing::debug!(%error, "engine.io request refused");
                    error.into_response()
                }
            })
        })
    }

    async fn dispatch(
        self,
        req: HttpRequest,
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
        let upgrade = is_upgrade_request(&req);
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
                    let stamp = query.stamp();
                    drop(req);
                    receive(&self.shared, &socket, transport, &framing, ack, stamp).await
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
        receive(&self.shared, &socket, transport, &framing, None, None).await
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
        if self.forwarding.locator.get().is_some() && forward::is_forwarded(req) {
            return Ok(());
        }
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let Some(kind) = origin::Kind::of(
            req.method(),
            query.transport.and_then(TransportKind::from_name),
            query.j.is_some(),
            is_upgrade_request(req),
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
}

/// Serves a receiving GET on `transport`, framed as asked.
pub(crate) async fn receive(
    shared: &Arc<Shared>,
    socket: &Arc<Socket>,
    transport: TransportKind,
    framing: &Framing,
    ack: Option<u64>,
    stamp: Option<u64>,
) -> Result<Response<Body>, EngineError> {
    socket.sync_probe().await;
    let received = if transport.is_streaming() {
        streaming::attach(shared, socket, transport, framing, ack)
    } else {
        polling::long_poll(shared, socket, framing, ack, stamp).await
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
