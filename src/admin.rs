//! The admin listener: `POST /publish`, `POST /sockets`, `/metrics` and the detailed `/healthz`
//! and `/readyz`, on an address of their own (`--admin-listen`, loopback by default) that the
//! public reverse proxy never reaches. The public listener serves none of them, only a
//! status-only `/healthz` and `/readyz` for load balancers.
//!
//! Why a listener of its own rather than "the peer is loopback": behind a reverse proxy on the
//! same host every request arrives from 127.0.0.1, so a loopback check lets the whole internet
//! in. An address the proxy does not forward to cannot be reached through it at all.
//!
//! What a browser could still do to a loopback address, every request passes [`AdminGuard`]
//! first (in this order, each refusal counted in `halley_admin_refused_total{reason}`):
//! - `host`: without a token, the `Host` header must be an IP address or `localhost`. A page
//!   that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) sends its own name.
//! - `origin`: the engine's origin policy, same origin only: a request whose `Origin` (browsers
//!   send one with every cross-origin request and every POST), `Referer` or `Sec-Fetch-Site`
//!   shows a page from elsewhere is refused; there are no admin pages, so in practice any page
//!   is.
//! - `token`: with `--admin-token`, `Authorization: Bearer <token>` (compared in constant time).
//! - `content_type`: a POST must be `application/json`, which a page can only send after a CORS
//!   preflight that this listener never grants (a `text/plain` form post cannot pass).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::engine::{origin, Body, Cors};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde_json::json;

use crate::bridge::amqp::BridgeStats;
use crate::bridge::cluster::Cluster;
use crate::bridge::latency::Latency;
use crate::bridge::log::LogLink;
use crate::bridge::{health, http, publish, sockets};
use crate::metrics::{labelled, Metrics};
use crate::server::Router;
use crate::socketio::Halley;

/// Why the admin listener refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No token configured and a `Host` that is a name other than `localhost`.
    Host,
    /// An `Origin` other than the admin address itself.
    Origin,
    /// A token is configured and the request does not carry it.
    Token,
    /// A POST that is not `application/json`.
    ContentType,
}

impl AdminRefusal {
    pub const ALL: [AdminRefusal; 4] = [
        AdminRefusal::Host,
        AdminRefusal::Origin,
        AdminRefusal::Token,
        AdminRefusal::ContentType,
    ];

    /// The reason's name, as in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRefusal::Host => "host",
            AdminRefusal::Origin => "origin",
            AdminRefusal::Token => "token",
            AdminRefusal::ContentType => "content_type",
        }
    }

    fn response(self) -> Response<Body> {
        let (status, message) = match self {
            AdminRefusal::Host => (
                StatusCode::FORBIDDEN,
                "Host must be an IP address or localhost (DNS rebinding guard); \
                 set --admin-token to reach the admin listener by name",
            ),
            AdminRefusal::Origin => (
                StatusCode::FORBIDDEN,
                "requests from web pages (a foreign Origin) are refused",
            ),
            AdminRefusal::Token => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            ),
            AdminRefusal::ContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ),
        };
        let mut res = http::error(status, message);
        if self == AdminRefusal::Token {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// Refusals of the admin listener, by reason (for `/metrics`).
#[derive(Debug, Default)]
pub struct AdminStats {
    refused: [AtomicU64; AdminRefusal::ALL.len()],
}

impl AdminStats {
    pub fn refused(&self, reason: AdminRefusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }
}

/// The checks every admin request passes before its endpoint runs (see the module docs).
#[derive(Debug, Default)]
pub struct AdminGuard {
    /// Required bearer token; `None`: the listener's address is the only protection, so it
    /// must be loopback (`Config` refuses anything else).
    pub token: Option<String>,
    pub stats: AdminStats,
}

impl AdminGuard {
    pub fn new(token: Option<String>) -> Self {
        AdminGuard {
            token,
            stats: AdminStats::default(),
        }
    }

    /// Whether `req` may reach an admin endpoint.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), AdminRefusal> {
        let headers = req.headers();
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if self.token.is_none() && host.is_some_and(|host| !host_is_address(host)) {
            return Err(AdminRefusal::Host);
        }
        // The engine's origin policy, same origin only and no proxy trusted (the admin
        // listener is never proxied): a page may not make the request, a tool may.
        let unproxied = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        if origin::check(
            origin::Kind::Post,
            headers,
            unproxied,
            &Cors::SameOrigin,
            &[],
        )
        .is_err()
        {
            return Err(AdminRefusal::Origin);
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
                return Err(AdminRefusal::Token);
            }
        }
        if req.method() == Method::POST && !is_json(headers) {
            return Err(AdminRefusal::ContentType);
        }
        Ok(())
    }

    /// [`Self::check`], counted and turned into the refusal's response.
    fn refusal<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        let reason = self.check(req).err()?;
        self.stats.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(reason = reason.as_str(), path = %req.uri().path(), "admin request refused");
        Some(reason.response())
    }
}

// Here rather than in `crate::metrics`, which sits below this module and may not name the guard;
// callers still write `Metrics::with_admin`.
impl Metrics {
    /// Adds the admin listener's refusals (`halley_admin_refused_total{reason}`).
    pub fn with_admin(self, admin: Arc<AdminGuard>) -> Self {
        self.with_collector(AdminCollect(admin))
    }
}

#[derive(Debug)]
struct AdminCollect(Arc<AdminGuard>);

impl Collector for AdminCollect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        labelled(
            &mut encoder,
            "halley_admin_refused",
            "Admin listener requests refused, by reason (host, origin, token, content_type)",
            "reason",
            AdminRefusal::ALL.map(|reason| (reason.as_str(), self.0.stats.refused(reason))),
        )
    }
}

/// Whether a `Host` header names an IP address or `localhost` (with or without a port): what a
/// client that dialled the address itself sends, and what a DNS-rebound page cannot.
fn host_is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<IpAddr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Compares without an early exit, so response timing does not reveal the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the admin endpoints act on.
pub struct AdminState {
    pub io: Halley,
    pub guard: Arc<AdminGuard>,
    pub latency: Arc<Latency>,
    pub amqp: Option<Arc<BridgeStats>>,
    pub cluster: Option<Arc<Cluster>>,
    /// The cluster's shared recovery log, with `--cluster` and `--recovery-window`.
    pub log: Option<Arc<LogLink>>,
    pub metrics: Arc<Metrics>,
}

/// The admin listener's router: every endpoint behind the guard, nothing else.
pub fn router(state: AdminState) -> Router {
    let AdminState {
        io,
        guard,
        latency,
        amqp,
        cluster,
        log,
        metrics,
    } = state;
    let (io_p, io_s, io_r, io_h) = (io.clone(), io.clone(), io.clone(), io);
    let (amqp_h, amqp_r) = (amqp.clone(), amqp);
    let (cluster_h, cluster_r) = (cluster.clone(), cluster);
    let (log_h, log_r) = (log.clone(), log);
    Router::without_engine()
        .guard(move |req| guard.refusal(req))
        .endpoint("/publish", move |req, _| {
            publish::handle(io_p.clone(), Arc::clone(&latency), req)
        })
        .endpoint("/sockets", move |req, _| {
            sockets::sockets(io_s.clone(), req)
        })
        .endpoint("/healthz", move |_, _| {
            std::future::ready(health::healthz(
                &io_h,
                amqp_h.as_deref(),
                cluster_h.as_deref(),
                log_h.as_deref(),
            ))
        })
        .endpoint("/readyz", move |_, _| {
            std::future::ready(health::readyz_with_log(
                &io_r,
                amqp_r.as_deref(),
                cluster_r.as_deref(),
                log_r.as_deref(),
                true,
            ))
        })
        .endpoint("/metrics", move |_, _| {
            std::future::ready(metrics.response())
        })
}

/// The public listener's `/healthz`: alive, nothing more (counts, node names and errors are on
/// the admin listener).
pub fn public_healthz() -> Response<Body> {
    http::json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Whether `addr` may serve the admin endpoints without a token: loopback only.
pub fn needs_token(addr: SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().method(method).uri("/publish");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn token_comparison_needs_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn hosts_that_name_an_address_pass_without_a_token() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:9080",
            "localhost:9080",
            "LOCALHOST",
            "[::1]:9080",
            "[::1]",
        ] {
            assert!(host_is_address(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9080",
            "127.0.0.1.evil.example",
            "[evil]:1",
            "localhost.evil:9080",
            "",
        ] {
            assert!(!host_is_address(host), "{host}");
        }
    }

    #[test]
    fn dns_rebinding_forms_and_foreign_origins_are_refused() {
        let guard = AdminGuard::default();
        let ok = [("host", "127.0.0.1:9080"), JSON];
        assert_eq!(guard.check(&request(Method::POST, &ok)), Ok(()));
        // A rebound name, even with a matching Origin.
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[
                    ("host", "evil.example:9080"),
                    ("origin", "http://evil.example:9080"),
                    JSON
                ]
            )),
            Err(AdminRefusal::Host)
        );
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[
                    ("host", "127.0.0.1:9080"),
                    ("origin", "https://evil.example"),
                    JSON
                ]
            )),
            Err(AdminRefusal::Origin)
        );
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[("host", "127.0.0.1:9080"), ("origin", "null"), JSON]
            )),
            Err(AdminRefusal::Origin)
        );
        // The simple-request form post a page can send without a preflight.
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[("host", "127.0.0.1:9080"), ("content-type", "text/plain")]
            )),
            Err(AdminRefusal::ContentType)
        );
        assert_eq!(
            guard.check(&request(Method::GET, &[("host", "127.0.0.1:9080")])),
            Ok(()),
            "a scrape needs no content type"
        );
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[
                    ("host", "127.0.0.1"),
                    ("content-type", "application/json; charset=utf-8")
                ]
            )),
            Ok(())
        );
    }

    #[test]
    fn a_token_is_required_when_set_and_lets_names_through() {
        let guard = AdminGuard::new(Some("s3cret".into()));
        let host = ("host", "halley-admin.internal:9080");
        assert_eq!(
            guard.check(&request(Method::POST, &[host, JSON])),
            Err(AdminRefusal::Token)
        );
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[host, JSON, ("authorization", "Bearer wrong")]
            )),
            Err(AdminRefusal::Token)
        );
        assert_eq!(
            guard.check(&request(
                Method::POST,
                &[host, JSON, ("authorization", "Bearer s3cret")]
            )),
            Ok(())
        );
    }

    #[test]
    fn only_loopback_admin_addresses_go_without_a_token() {
        assert!(!needs_token("127.0.0.1:9080".parse().unwrap()));
        assert!(!needs_token("[::1]:9080".parse().unwrap()));
        assert!(needs_token("0.0.0.0:9080".parse().unwrap()));
        assert!(needs_token("10.0.0.1:9080".parse().unwrap()));
    }
}
