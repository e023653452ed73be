//! The auth hook: before a socket connects, forward what the browser presented (its Cookie
//! header, its `auth` payload) to an application URL, and let the answer decide.
//!
//! Request: `POST <url>` with JSON
//! `{"namespace", "socket", "auth", "cookie", "remote_address", "user_agent", "origin"}`.
//! Answer (200, JSON): `{"allow": true, "user": "...", "rooms": [...], "data": {...}}` connects the
//! socket, joins the rooms and stores `{user, rooms, data}` as `socket.data()`;
//! `{"allow": false, "message": "...", "data": ...}` refuses it with that CONNECT_ERROR. Any other
//! status, a timeout or an unreachable service refuses with "authentication unavailable": a
//! broken auth service must not open the door. Rooms beyond the server's room limits refuse the
//! socket too (CONNECT_ERROR "too many rooms" / "room name too long", logged as a warning): a
//! socket silently missing some of the rooms it was granted would miss their messages.
//!
//! The service is asked through a pool of keep-alive connections, at most `concurrency` checks
//! at once: a check beyond waits for a free slot, within the same timeout. How often one client
//! may be refused is bounded by the Socket.IO layer (`max_auth_attempts`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::engine::IpRange;
use crate::socketio::{ConnectError, Halley, Socket};

/// Largest answer read from the auth service.
const MAX_ANSWER: usize = 64 * 1024;

/// How long an idle pooled connection to the auth service is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where, how long and how much to ask.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `http://host:port/path` (plain HTTP: the service is expected beside Halley).
    pub url: Uri,
    /// How long a check may take, waiting for a free slot included.
    pub timeout: Duration,
    /// Checks in flight at once, at most (and pooled connections kept).
    pub concurrency: usize,
}

impl AuthConfig {
    /// `url` with the defaults: 5 s, 64 checks at once.
    pub fn new(url: Uri) -> Self {
        AuthConfig {
            url,
            timeout: Duration::from_secs(5),
            concurrency: 64,
        }
    }
}

/// How a check ended: the label of `halley_auth_checks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed = 0,
    Refused = 1,
    /// The service failed: unreachable, another status, an unreadable answer.
    Error = 2,
    /// No answer within the timeout.
    Timeout = 3,
    /// No free slot within the timeout (`concurrency` checks were in flight all along).
    Busy = 4,
    /// The answer granted more rooms, or longer names, than the room limits allow.
    RoomLimits = 5,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Allowed,
        Outcome::Refused,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Busy,
        Outcome::RoomLimits,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Busy => "busy",
            Outcome::RoomLimits => "room_limits",
        }
    }
}

/// The hook's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthStats {
    checks: [AtomicU64; Outcome::ALL.len()],
    in_flight: AtomicU64,
    waiting: AtomicU64,
}

impl AuthStats {
    pub fn checks(&self, outcome: Outcome) -> u64 {
        self.checks[outcome as usize].load(Ordering::Relaxed)
    }

    /// Requests to the service under way now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Checks waiting for a free slot now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    fn count(&self, outcome: Outcome) {
        self.checks[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

/// What every check shares: the settings, the connection pool and the slots.
struct Hook {
    config: AuthConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    slots: Semaphore,
    stats: Arc<AuthStats>,
    /// Behind a reverse proxy the peer is the proxy: report the client it names.
    trusted: Arc<[IpRange]>,
}

/// Counts a check in a state for as long as it is in it (a timeout may drop it mid-way).
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Installs the hook on every namespace of `io`; returns its counters.
pub fn install(io: &Halley, config: AuthConfig) -> Arc<AuthStats> {
    // No slot at all would refuse every socket: one at least.
    let concurrency = config.concurrency.max(1);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(concurrency)
        .build(connector);
    let stats = Arc::new(AuthStats::default());
    let hook = Arc::new(Hook {
        slots: Semaphore::new(concurrency),
        config,
        client,
        stats: Arc::clone(&stats),
        trusted: io.engine().config().trusted_proxies.clone().into(),
    });
    io.connect_hook(move |socket| {
        let hook = Arc::clone(&hook);
        async move { hook.check(&socket).await }
    });
    stats
}

impl Hook {
    async fn check(&self, socket: &Arc<Socket>) -> Result<(), ConnectError> {
        let (outcome, verdict) = self.verdict(socket).await;
        self.stats.count(outcome);
        verdict
    }

    async fn verdict(&self, socket: &Arc<Socket>) -> (Outcome, Result<(), ConnectError>) {
        let unavailable = || Err(ConnectError::new("authentication unavailable"));
        let url = &self.config.url;
        let mut asking = false;
        let asked = async {
            let waiting = Counted::enter(&self.stats.waiting);
            // The semaphore is never closed, so `acquire` only ever waits.
            let _slot = self.slots.acquire().await;
            drop(waiting);
            asking = true;
            let _counted = Counted::enter(&self.stats.in_flight);
            self.ask(socket).await
        };
        let answer = match tokio::time::timeout(self.config.timeout, asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::warn!(%error, %url, "auth hook failed");
                return (Outcome::Error, unavailable());
            }
            Err(_) if !asking => {
                tracing::warn!(%url, "auth hook busy: no free slot within the timeout");
                return (Outcome::Busy, unavailable());
            }
            Err(_) => {
                tracing::warn!(%url, "auth hook timed out");
                return (Outcome::Timeout, unavailable());
            }
        };
        if !answer.allow {
            let mut refusal =
                ConnectError::new(answer.message.unwrap_or_else(|| "not authorized".into()));
            refusal.data = answer.data;
            return (Outcome::Refused, Err(refusal));
        }
        for room in &answer.rooms {
            if let Err(error) = socket.join(room.as_str()) {
                tracing::warn!(%url, %error, rooms = answer.rooms.len(), "auth hook granted rooms beyond the room limits; socket refused");
                return (Outcome::RoomLimits, Err(ConnectError::new(error.message())));
            }
        }
        socket.set_data(json!({
            "user": answer.user,
            "rooms": answer.rooms,
            "data": answer.data,
        }));
        (Outcome::Allowed, Ok(()))
    }

    async fn ask(&self, socket: &Socket) -> Result<Answer, AskError> {
        let url = &self.config.url;
        if url.scheme_str() != Some("http") || url.host().is_none() {
            return Err(AskError::BadUrl);
        }
        let handshake = socket.handshake();
        let header =
            |name: header::HeaderName| handshake.headers.get(name.as_str()).map(str::to_owned);
        let body = json!({
            "namespace": socket.ns(),
            "socket": socket.id(),
            "auth": socket.auth_json(),
            "cookie": header(header::COOKIE),
            "remote_address": handshake.client_ip(&self.trusted).to_string(),
            "user_agent": header(header::USER_AGENT),
            "origin": header(header::ORIGIN),
        });
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| AskError::BadUrl)?;
        let response = self.client.request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(AskError::Status(response.status()));
        }
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| AskError::Answer(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| AskError::Answer(e.to_string()))
    }
}

/// Why asking failed.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("auth url needs an http://host:port")]
    BadUrl,
    #[error("request: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("answer: {0}")]
    Answer(String),
}
