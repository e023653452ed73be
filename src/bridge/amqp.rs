//! The RabbitMQ bridge (lapin): with the cluster link (`cluster`) and the shared log (`log`),
//! the only modules that see AMQP types.
//!
//! Inbound, it consumes a named queue (the seed's `socket.io`) and/or server-named queues bound
//! to exchanges, maps each delivery to an emit ([`super::mapping`]), queues it into every local
//! target outbox, and only then acks it. A message that cannot be mapped, or names a namespace
//! nobody serves, is rejected without requeue (the queue's dead-letter exchange gets it, if any),
//! logged and counted: it never stalls the queue.
//!
//! Outbound, client events that no handler takes are published to an exchange (routing key =
//! event name, body = JSON array of the arguments, headers naming namespace, socket, transport,
//! remote address and, when enabled, the handshake's Cookie). A client event sent with an ack is
//! published with `reply_to`/`correlation_id`; the backend's reply answers the ack.
//!
//! Nothing a client or the broker sends may stop the bridge: an event whose name cannot be a
//! routing key (an AMQP short string: at most 255 bytes) is refused before it is queued, and so
//! is an event that would take the outbound queue past its count or byte bound, or whose
//! headers (a huge forwarded Cookie) would not fit in one AMQP frame; each refusal is
//! counted ([`Refusal`]) and answers the client's ack, if it asked for one, with
//! `{"error": "..."}`. Every name that becomes a short string is checked first, so that lapin's
//! `From<&str>` (which panics beyond 255 bytes) is never reached with one it could refuse.
//!
//! Order: the work queue (`--amqp-queue`) is declared with `x-single-active-consumer`, so
//! that of several nodes consuming it one at a time gets its messages, in queue order, and the
//! next takes over (unacked messages first, in order) when that one's connection is gone. Its
//! cost: one node does the queue's work, whatever the cluster's size (the others only relay
//! what it forwards). A queue that exists is used as it is; when it cannot be confirmed to
//! have a single active consumer, a warning says so at start, and `/healthz` shows it
//! (`queue_order`). A message redelivered after a failover, whose `message_id` the cluster saw
//! already, is acked and dropped (`duplicates`).
//!
//! A lost connection is retried with exponential backoff and jitter; sockets keep being served
//! meanwhile, and [`BridgeStats`] (shown on `/healthz`) says where the bridge stands. Should the
//! connection loop end anyway (a panic), [`super::supervise`] runs it again; the outbound queue
//! outlives it, so events queued meanwhile are published by the next one.
//!
//! Shutdown: [`BridgeStats::stop_consuming`] cancels the consumers before any session closes.
//! The delivery in hand finishes (it is queued for every target, then acked); deliveries the
//! broker had already sent are handed back at once (`basic.recover` with requeue), for another
//! node. Client events go on being published until the process ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRecoverOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde::Serialize;
use serde_json::json;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::mapping::{self, Defaults, Target};
use crate::socketio::{AckSender, Event, Halley, Socket};

/// An exchange binding to consume: `exchange` (a topic exchange, declared durable if missing)
/// with a routing `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub pattern: String,
}

impl std::str::FromStr for Binding {
    type Err = String;

    /// `EXCHANGE:PATTERN`, e.g. `events:news.#`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((exchange, pattern)) if !exchange.is_empty() && !pattern.is_empty() => {
                Ok(Binding {
                    exchange: check_name(exchange)?,
                    pattern: check_name(pattern)?,
                })
            }
            _ => Err(format!("expected EXCHANGE:PATTERN, got {s:?}")),
        }
    }
}

/// The longest AMQP short string (queue, exchange and header names, routing keys), in bytes.
pub const SHORT_STRING_MAX: usize = 255;

/// A name that AMQP carries as a short string; `what` names it in the refusal.
fn short(name: &str, what: &'static str) -> Result<ShortString, SessionError> {
    ShortString::try_new(name).map_err(|_| SessionError::Name(what))
}

/// For the configuration: a queue or exchange name fits an AMQP short string.
pub fn check_name(name: &str) -> Result<String, String> {
    if name.len() > SHORT_STRING_MAX {
        return Err(format!(
            "an AMQP name has at most {SHORT_STRING_MAX} bytes, this one has {}",
            name.len()
        ));
    }
    Ok(name.to_owned())
}

/// For the configuration: an `amqp://` URL that lapin can use without panicking (its virtual
/// host becomes a short string).
pub fn check_url(url: &str) -> Result<String, String> {
    let uri: lapin::uri::AMQPUri = url.parse()?;
    if uri.vhost.len() > SHORT_STRING_MAX {
        return Err(format!(
            "the virtual host has at most {SHORT_STRING_MAX} bytes"
        ));
    }
    Ok(url.to_owned())
}

/// What the bridge connects to and how it maps messages.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// A queue to consume (the seed's `socket.io`).
    pub queue: Option<String>,
    /// The queue exists already: check it, do not declare it.
    pub queue_passive: bool,
    /// Exchange bindings to consume through a private queue.
    pub bindings: Vec<Binding>,
    /// Unacked deliveries in flight.
    pub prefetch: u16,
    pub defaults: Defaults,
    /// Where unhandled client events are published (a topic exchange, declared durable).
    pub publish_exchange: Option<String>,
    /// Forward the handshake's Cookie header with each published event.
    pub forward_cookie: bool,
    /// How long a client ack waits for the backend's reply.
    pub reply_timeout: Duration,
    /// Bytes of client events (bodies, routing keys, headers) waiting for the broker, at most;
    /// beyond, events are refused (with [`OUTBOUND_QUEUE`] as the bound on their count).
    pub outbound_max_bytes: usize,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: "amqp://127.0.0.1:5672/%2f".into(),
            queue: None,
            queue_passive: false,
            bindings: Vec::new(),
            prefetch: 256,
            defaults: Defaults::default(),
            publish_exchange: None,
            forward_cookie: false,
            reply_timeout: Duration::from_secs(10),
            outbound_max_bytes: 16 << 20,
        }
    }
}

/// Counters and state of the bridge, for `/healthz` and metrics.
#[derive(Debug, Default)]
pub struct BridgeStats {
    connected: AtomicBool,
    pub consumed: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    /// Deliveries dropped (and acked) because their `message_id` was delivered already.
    pub duplicates: AtomicU64,
    pub published: AtomicU64,
    /// Client events queued for the broker that it did not take (nacked, or the connection was
    /// lost before the confirm).
    pub publish_dropped: AtomicU64,
    /// Client events refused before they were queued, by [`Refusal`].
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Bytes of client events in the outbound queue now (see [`AmqpConfig::outbound_max_bytes`]).
    outbound_bytes: AtomicU64,
    pub connects: AtomicU64,
    /// Times the bridge's task ended or panicked and was started again.
    pub restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// What the work queue's declaration says of its order (see the module docs).
    queue_order: Mutex<Option<QueueOrder>>,
    drain: Drain,
}

/// Consumption's stop switch for shutdown: `requested` once it must stop, `consuming` while a
/// session has consumers whose deliveries it handles.
#[derive(Debug)]
struct Drain {
    requested: watch::Sender<bool>,
    consuming: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            requested: watch::channel(false).0,
            consuming: watch::channel(false).0,
        }
    }
}

/// Says "not consuming" when a session ends, however it ends.
struct Consuming<'a>(&'a watch::Sender<bool>);

impl Drop for Consuming<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// Why a client event was not published, as the `reason` label of
/// `halley_amqp_publish_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The event name is over 255 bytes: no routing key can carry it.
    EventName,
    /// The outbound queue holds [`OUTBOUND_QUEUE`] events already.
    BacklogFull,
    /// The event would take the outbound queue past `outbound_max_bytes`.
    BacklogBytes,
    /// Its headers (a huge forwarded Cookie) do not fit in one frame of the broker's
    /// negotiated `frame_max`: RabbitMQ would close the whole connection over it.
    Headers,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::EventName,
        Refusal::BacklogFull,
        Refusal::BacklogBytes,
        Refusal::Headers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::EventName => "event_name",
            Refusal::BacklogFull => "backlog_full",
            Refusal::BacklogBytes => "backlog_bytes",
            Refusal::Headers => "headers",
        }
    }

    /// What the client's ack is told.
    fn message(self) -> &'static str {
        match self {
            Refusal::EventName => "event name too long for AMQP (max 255 bytes)",
            Refusal::BacklogFull | Refusal::BacklogBytes => {
                "server busy: the event was not published (AMQP backlog full)"
            }
            Refusal::Headers => "event headers too large for the AMQP broker (the Cookie?)",
        }
    }
}

#[derive(Serialize)]
pub struct StatsSnapshot {
    pub connected: bool,
    pub consumed: u64,
    pub acked: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub published: u64,
    pub publish_dropped: u64,
    pub publish_refused: std::collections::BTreeMap<&'static str, u64>,
    pub outbound_bytes: u64,
    pub connects: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// `single-active-consumer`, `not-guaranteed`, or null (no work queue, not connected yet).
    pub queue_order: Option<&'static str>,
}

/// Whether the work queue hands its messages to one consumer at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueOrder {
    SingleActiveConsumer,
    NotGuaranteed,
}

impl QueueOrder {
    fn as_str(self) -> &'static str {
        match self {
            QueueOrder::SingleActiveConsumer => "single-active-consumer",
            QueueOrder::NotGuaranteed => "not-guaranteed",
        }
    }
}

impl BridgeStats {
    /// Stops consuming, for shutdown: the consumers are cancelled and no delivery is handled
    /// after this returns (those the broker sent meanwhile stay unacked, and are requeued when
    /// the connection closes). Returns at once when no session is consuming (the broker is
    /// away), and waits at most `limit` for the delivery in hand.
    pub async fn stop_consuming(&self, limit: Duration) {
        self.drain.requested.send_replace(true);
        let mut consuming = self.drain.consuming.subscribe();
        let stopped = consuming.wait_for(|consuming| !*consuming);
        if tokio::time::timeout(limit, stopped).await.is_err() {
            tracing::warn!("amqp consumers not stopped in time; shutting down anyway");
        }
    }

    /// Whether a session is consuming now.
    pub fn consuming(&self) -> bool {
        *self.drain.consuming.borrow()
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Client events refused so far, by reason.
    pub fn refused(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed)))
    }

    /// Bytes of client events waiting in the outbound queue.
    pub fn outbound_bytes(&self) -> u64 {
        self.outbound_bytes.load(Ordering::Relaxed)
    }

    /// Records what the work queue's declaration said of its order; warns, once per process,
    /// when order is not guaranteed (`refused` is the broker's answer to the check).
    fn set_queue_order(&self, queue: &str, refused: Result<(), String>) {
        let order = match &refused {
            Ok(()) => QueueOrder::SingleActiveConsumer,
            Err(_) => QueueOrder::NotGuaranteed,
        };
        let before = self
            .queue_order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(order);
        if let (Err(answer), false) = (refused, before == Some(order)) {
            tracing::warn!(
                queue,
                broker = %answer,
                "the work queue exists without x-single-active-consumer=true (or with arguments \
                 that keep it from being checked): several nodes consuming it may deliver its \
                 messages out of publish order. Declare it with x-single-active-consumer=true \
                 (keeping its other arguments) to keep the order"
            );
        }
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            connected: self.connected(),
            consumed: n(&self.consumed),
            acked: n(&self.acked),
            rejected: n(&self.rejected),
            duplicates: n(&self.duplicates),
            published: n(&self.published),
            publish_dropped: n(&self.publish_dropped),
            publish_refused: self.refused().collect(),
            outbound_bytes: self.outbound_bytes(),
            connects: n(&self.connects),
            restarts: n(&self.restarts),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            queue_order: self
                .queue_order
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(QueueOrder::as_str),
        }
    }

    /// Counts `refusal` and tells the client's ack, if any.
    fn refuse(&self, refusal: Refusal, event: &str, ack: Option<AckSender>) {
        // `Refusal::ALL` lists the variants in declaration order, one counter each.
        if let Some(n) = self.refused.get(refusal as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        // Debug, not warn: a client can cause this at will, and the counter is the signal.
        tracing::debug!(
            reason = refusal.as_str(),
            event = if event.len() <= 64 {
                event
            } else {
                event.get(..64).unwrap_or("(long name)")
            },
            "client event not published"
        );
        if let Some(ack) = ack {
            let _ = ack.send(vec![json!({ "error": refusal.message() })], Vec::new());
        }
    }
}

/// A client event on its way to the broker, checked and encoded: publishing it cannot fail
/// on its content.
struct Outbound {
    routing_key: ShortString,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    ack: Option<AckSender>,
    /// Its share of the byte bound, given back when the event leaves the queue (or is dropped).
    _reserved: Reservation,
}

/// Bytes an event holds in the outbound queue; released on drop, whatever its fate.
struct Reservation {
    stats: Arc<BridgeStats>,
    bytes: u64,
}

impl Reservation {
    /// `bytes` more in the queue, unless that takes it past `max`. Admission checks the sum
    /// after adding, so concurrent senders can only err on the side of refusing.
    fn take(stats: &Arc<BridgeStats>, bytes: u64, max: u64) -> Option<Reservation> {
        let before = stats.outbound_bytes.fetch_add(bytes, Ordering::AcqRel);
        let reservation = Reservation {
            stats: Arc::clone(stats),
            bytes,
        };
        // Over the bound: the reservation's drop gives the bytes back at once.
        (before.saturating_add(bytes) <= max).then_some(reservation)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.stats
            .outbound_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Client events waiting for the bridge; beyond this they are refused and counted (the byte
/// bound, [`AmqpConfig::outbound_max_bytes`], usually comes first).
pub const OUTBOUND_QUEUE: usize = 10_000;

/// The outbound queue's receiving end. It belongs to the bridge, not to one run of its task: a
/// restarted task takes it up with the events queued meanwhile.
type OutboundQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Outbound>>>;

/// Starts the bridge for `io`: forwards unhandled events (when a publish exchange is set) and
/// runs the connection loop in the background, under [`super::supervise`]. Returns its stats.
pub fn spawn(io: Halley, config: AmqpConfig, latency: Arc<super::Latency>) -> Arc<BridgeStats> {
    let stats = Arc::new(BridgeStats::default());
    let (tx, rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    if config.publish_exchange.is_some() {
        let forward_cookie = config.forward_cookie;
        let max_bytes = u64::try_from(config.outbound_max_bytes).unwrap_or(u64::MAX);
        let hook_stats = Arc::clone(&stats);
        // Behind a reverse proxy the peer is the proxy: report the client it names.
        let trusted = io.engine().config().trusted_proxies.clone();
        io.on_unhandled(move |socket, name, event| {
            let checked = outbound(socket, name, event, forward_cookie, &trusted)
                .and_then(|pending| pending.reserve(&hook_stats, max_bytes));
            match checked {
                Ok(out) => {
                    if let Err(full) = tx.try_send(out) {
                        let ack = full.into_inner().ack;
                        hook_stats.refuse(Refusal::BacklogFull, name, ack);
                    }
                }
                Err((refusal, ack)) => hook_stats.refuse(refusal, name, ack),
            }
        });
    }
    let queue: OutboundQueue = Arc::new(tokio::sync::Mutex::new(rx));
    let down_stats = Arc::clone(&stats);
    let task_stats = Arc::clone(&stats);
    tokio::spawn(super::supervise::supervise(
        "amqp bridge",
        move |reason| {
            down_stats.connected.store(false, Ordering::Release);
            down_stats.restarts.fetch_add(1, Ordering::Relaxed);
            down_stats.set_error(format!("bridge task {reason}"));
        },
        move || {
            run(
                io.clone(),
                config.clone(),
                Arc::clone(&task_stats),
                Arc::clone(&latency),
                Arc::clone(&queue),
            )
        },
    ));
    stats
}

/// A client event checked but not yet admitted to the queue.
struct Unreserved {
    routing_key: ShortString,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    ack: Option<AckSender>,
}

type Refused = (Refusal, Option<AckSender>);

impl Unreserved {
    /// Its size against the byte bound: what it keeps in memory until published.
    fn bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.body.len() + self.routing_key.as_str().len() + headers) as u64
    }

    fn reserve(self, stats: &Arc<BridgeStats>, max: u64) -> Result<Outbound, Refused> {
        match Reservation::take(stats, self.bytes(), max) {
            Some(reserved) => Ok(Outbound {
                routing_key: self.routing_key,
                body: self.body,
                headers: self.headers,
                ack: self.ack,
                _reserved: reserved,
            }),
            None => Err((Refusal::BacklogBytes, self.ack)),
        }
    }
}

fn outbound(
    socket: &Arc<Socket>,
    name: &str,
    event: Event,
    forward_cookie: bool,
    trusted: &[halley_transports::IpRange],
) -> Result<Unreserved, Refused> {
    // The routing key is the event name: a client's name over 255 bytes would make lapin panic.
    let Ok(routing_key) = ShortString::try_new(name) else {
        return Err((Refusal::EventName, event.ack));
    };
    let handshake = socket.handshake();
    let mut headers = vec![
        ("x-namespace", socket.ns().to_owned()),
        ("x-socket", socket.id().to_owned()),
        ("x-transport", socket.transport().name().to_owned()),
        ("x-remote-address", handshake.client_ip(trusted).to_string()),
    ];
    if let Some(user) = socket.data()["user"].as_str() {
        headers.push(("x-user", user.to_owned()));
    }
    if forward_cookie {
        if let Some(cookie) = handshake.headers.get(hyper::header::COOKIE.as_str()) {
            headers.push(("x-cookie", cookie.to_owned()));
        }
    }
    if !event.binary.is_empty() {
        // Attachments are not forwarded (their placeholders stay in the JSON); say so.
        headers.push(("x-dropped-attachments", event.binary.len().to_string()));
    }
    // Encoded here, on the client's task: the byte bound counts what is really held, and the
    // bridge's one task does not pay for every client's serialization. (A `Vec<Value>` always
    // serializes: its map keys are strings.)
    let body = serde_json::to_vec(&event.args).unwrap_or_default();
    Ok(Unreserved {
        routing_key,
        body,
        headers,
        ack: event.ack,
    })
}

/// The bridge's connection loop: one broker session after another, with backoff between them.
/// It never returns; a panic in it ends this run, and the supervisor starts another.
async fn run(
    io: Halley,
    config: AmqpConfig,
    stats: Arc<BridgeStats>,
    latency: Arc<super::Latency>,
    queue: OutboundQueue,
) {
    // Held for the whole run; a run that panics releases it as it unwinds.
    let mut outbound = queue.lock().await;
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let error = match session(&io, &config, &stats, &latency, &mut outbound).await {
            Ok(()) => "connection closed".to_owned(),
            Err(error) => error.to_string(),
        };
        stats.connected.store(false, Ordering::Release);
        tracing::warn!(%error, "amqp bridge disconnected; retrying");
        stats.set_error(error);
        // A session that lived a while starts the backoff over.
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        tokio::time::sleep(backoff(failures)).await;
        failures = failures.saturating_add(1);
    }
}

/// 200 ms doubling up to 10 s, times a random factor in [0.5, 1.5) so that many nodes do not
/// reconnect in lockstep after a broker restart.
pub(crate) fn backoff(failures: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << failures.min(6)).min(10_000);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let factor = 0.5 + f64::from(u16::from_le_bytes(r)) / 65536.0;
    Duration::from_millis((base as f64 * factor) as u64)
}

/// A random consumer tag or correlation id: `prefix` (a constant of a few bytes) and 16 hex
/// digits, far below the short string's 255 bytes.
fn tag(prefix: &'static str) -> ShortString {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    ShortString::from(format!("{prefix}-{:016x}", u64::from_le_bytes(r)))
}

/// Client acks waiting for the backend's reply, by correlation id. It lives as long as the
/// session whose reply queue the backend answers to: when that ends (connection lost, or the
/// task panicking), no reply can come any more, and each ack still waiting is told so.
#[derive(Default)]
struct Pending(Mutex<HashMap<String, AckSender>>);

impl Pending {
    fn insert(&self, id: String, ack: AckSender) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, ack);
    }

    fn remove(&self, id: &str) -> Option<AckSender> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let acks = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, ack) in acks.drain() {
            let error = "the connection to the backend was lost before it replied";
            let _ = ack.send(vec![json!({ "error": error })], Vec::new());
        }
    }
}

/// Why a broker session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("queue {0:?} does not exist (and is not to be declared)")]
    MissingQueue(String),
    #[error("the broker cancelled a consumer (queue deleted?)")]
    ConsumerCancelled,
    /// Only through the library: `halley` checks its options.
    #[error("the {0} is longer than an AMQP short string (255 bytes)")]
    Name(&'static str),
    #[error("invalid AMQP URL: {0}")]
    Url(String),
}

/// One connection's life: declare, consume, publish, until something fails.
async fn session(
    io: &Halley,
    config: &AmqpConfig,
    stats: &Arc<BridgeStats>,
    latency: &super::Latency,
    outbound: &mut mpsc::Receiver<Outbound>,
) -> Result<(), SessionError> {
    // Every configured name is checked before lapin sees it (it panics on an over-long one).
    check_url(&config.url).map_err(SessionError::Url)?;
    let queue_name = config
        .queue
        .as_deref()
        .map(|q| short(q, "queue name"))
        .transpose()?;
    let publish_exchange = config
        .publish_exchange
        .as_deref()
        .map(|e| short(e, "publish exchange name"))
        .transpose()?;
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let frame_max = usize::try_from(conn.configuration().frame_max()).unwrap_or(usize::MAX);
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;

    // Each consumer with the reach of its messages: the work queue's go to the whole cluster
    // (one node takes each), a binding's stay local (every node has its own binding). None
    // once shutdown asked to stop consuming (a reconnect during shutdown only publishes).
    let mut consumers: Vec<(super::Reach, Consumer)> = Vec::new();
    let mut draining = stats.drain.requested.subscribe();
    let stopping = *draining.borrow_and_update();
    if let Some(queue) = queue_name.as_ref().filter(|_| !stopping) {
        // A queue that exists is used as it is (it may carry a dead-letter exchange or other
        // arguments that a plain declare would conflict with); a missing one is declared durable,
        // with a single active consumer.
        // The check runs on a throwaway channel: a failed passive declare closes its channel.
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let probe = conn.create_channel().await?;
        let exists = probe
            .queue_declare(queue.clone(), passive, FieldTable::default())
            .await
            .is_ok();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let order = if exists {
            // Declaring it again as Halley would succeeds only if it has a single active
            // consumer (and no argument this declaration lacks). The probe channel is still
            // open (its passive declare succeeded); a refusal closes it.
            match probe
                .queue_declare(queue.clone(), durable, ordered_queue_arguments())
                .await
            {
                Ok(_) => {
                    let _ = probe.close(200, "checked".into()).await;
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        } else {
            if config.queue_passive {
                return Err(SessionError::MissingQueue(queue.as_str().to_owned()));
            }
            channel
                .queue_declare(queue.clone(), durable, ordered_queue_arguments())
                .await?;
            Ok(())
        };
        stats.set_queue_order(queue.as_str(), order);
        consumers.push((
            super::Reach::Cluster,
            consume(&channel, queue.clone(), false).await?,
        ));
    }
    for binding in config.bindings.iter().filter(|_| !stopping) {
        let exchange = short(&binding.exchange, "binding's exchange name")?;
        let pattern = short(&binding.pattern, "binding's pattern")?;
        declare_exchange(&channel, exchange.clone(), ExchangeKind::Topic).await?;
        let queue = declare_private_queue(&channel).await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange,
                pattern,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumers.push((
            super::Reach::Local,
            consume(&channel, queue.name().clone(), false).await?,
        ));
    }

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    if let Some(exchange) = &publish_exchange {
        declare_exchange(&publisher, exchange.clone(), ExchangeKind::Topic).await?;
    }
    let reply_queue = declare_private_queue(&channel).await?;
    let mut replies = consume(&channel, reply_queue.name().clone(), true).await?;
    let pending: Arc<Pending> = Arc::default();

    stats.connected.store(true, Ordering::Release);
    stats.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(url = %redact(&config.url), "amqp bridge connected");

    // Each consumer ends with a `None`: one the broker cancels (its queue deleted, say) ends the
    // session, so that the reconnect declares and consumes everything again instead of going on
    // without that queue.
    let tags: Vec<ShortString> = consumers.iter().map(|(_, c)| c.tag()).collect();
    let mut inbound =
        futures_util::stream::select_all(consumers.into_iter().map(|(reach, consumer)| {
            consumer
                .map(move |delivery| Some((reach, delivery)))
                .chain(futures_util::stream::once(std::future::ready(None)))
        }));
    let _consuming = Consuming(&stats.drain.consuming);
    stats.drain.consuming.send_replace(!inbound.is_empty());
    loop {
        tokio::select! {
            // Checked first: once shutdown asks, no further delivery is handled.
            biased;
            true = async { draining.wait_for(|stop| *stop).await.is_ok() }, if !inbound.is_empty() => {
                for tag in &tags {
                    let _ = channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                }
                // What the broker sent before the cancel is unacked: back to the queue now, for
                // another node, rather than when this connection closes at exit (the replies'
                // consumer on this channel acks nothing, so nothing else is requeued).
                inbound = futures_util::stream::SelectAll::new();
                let requeue = BasicRecoverOptions { requeue: true };
                if let Err(error) = channel.basic_recover(requeue).await {
                    tracing::warn!(%error, "could not requeue prefetched deliveries; they return at exit");
                }
                stats.drain.consuming.send_replace(false);
                tracing::info!("amqp consumers cancelled for shutdown");
            }
            delivery = inbound.next(), if !inbound.is_empty() => match delivery {
                Some(Some((reach, delivery))) => handle_delivery(io, config, stats, latency, reach, delivery?).await?,
                Some(None) | None => return Err(SessionError::ConsumerCancelled),
            },
            reply = replies.next() => match reply {
                Some(reply) => answer(&pending, reply?),
                None => return Ok(()),
            },
            Some(out) = outbound.recv(), if publish_exchange.is_some() => {
                if let Some(exchange) = &publish_exchange {
                    let to = Destination { exchange, reply_queue: reply_queue.name(), frame_max };
                    publish(&publisher, config, stats, &pending, &to, out).await?;
                }
            }
        }
    }
}

/// The work queue's declaration: one consumer at a time gets its messages, so that they reach
/// the browsers in the order they were published however many nodes consume it.
fn ordered_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    arguments
}

async fn consume(
    channel: &lapin::Channel,
    queue: ShortString,
    no_ack: bool,
) -> Result<Consumer, lapin::Error> {
    let options = BasicConsumeOptions {
        no_ack,
        ..BasicConsumeOptions::default()
    };
    channel
        .basic_consume(queue, tag("halley"), options, FieldTable::default())
        .await
}

/// Declares the durable exchange `name` of `kind` (a no-op when it exists alike).
pub(crate) async fn declare_exchange(
    channel: &lapin::Channel,
    name: ShortString,
    kind: ExchangeKind,
) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name, kind, options, FieldTable::default())
        .await
}

/// A server-named queue that lives as long as this connection (exclusive, auto-delete).
pub(crate) async fn declare_private_queue(
    channel: &lapin::Channel,
) -> Result<lapin::Queue, lapin::Error> {
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
}

async fn handle_delivery(
    io: &Halley,
    config: &AmqpConfig,
    stats: &BridgeStats,
    latency: &super::Latency,
    reach: super::Reach,
    delivery: lapin::message::Delivery,
) -> Result<(), lapin::Error> {
    stats.consumed.fetch_add(1, Ordering::Relaxed);
    let published_at = published_at(&delivery.properties);
    let target = target(delivery.properties.headers().as_ref());
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|ct| ct.as_str().to_owned());
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .filter(|id| !id.is_empty());
    let body = Bytes::from(delivery.data);
    let delivered = match mapping::map(&config.defaults, target, content_type.as_deref(), body) {
        Ok(emit) => super::deliver(io, mapping::Emit { id, ..emit }, reach).await,
        Err(refusal) => Err(refusal.into()),
    };
    match delivered {
        Ok(super::Delivered::Duplicate) => {
            // Delivered before (by this node or the consumer before a failover): done.
            delivery.acker.ack(BasicAckOptions::default()).await?;
            stats.acked.fetch_add(1, Ordering::Relaxed);
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                redelivered = delivery.redelivered,
                "amqp message delivered already: dropped"
            );
        }
        Ok(super::Delivered::Sockets(sockets)) => {
            if let Some(at) = published_at {
                latency.record(super::Source::Amqp, at);
            }
            // Acked only now: the emit sits in every target outbox.
            delivery.acker.ack(BasicAckOptions::default()).await?;
            stats.acked.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sockets, "amqp message delivered");
        }
        Err(error @ super::DeliverError::Cluster { .. }) => {
            // Back to the queue: the other nodes must get it (this node's sockets may get it
            // twice; nothing is lost).
            tracing::warn!(%error, "amqp message not confirmed by the cluster; requeued");
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await?;
        }
        Err(reason) => {
            tracing::warn!(%reason, routing_key = %delivery.routing_key, "amqp message rejected");
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The producer's publish time in ms since the epoch: header `x-published-at` (ms), else the
/// `timestamp` property (seconds).
fn published_at(properties: &BasicProperties) -> Option<u64> {
    let header = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-published-at"))
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(u64::from(*n)),
            AMQPValue::Timestamp(n) => Some(*n),
            other => text(other).and_then(|s| s.trim().parse().ok()),
        });
    header.or_else(|| properties.timestamp().map(|secs| secs.saturating_mul(1000)))
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads the routing headers; values of the wrong type are ignored (defaults apply).
fn target(headers: Option<&FieldTable>) -> Target {
    let Some(headers) = headers else {
        return Target::default();
    };
    let get = |key: &str| headers.inner().get(key);
    let rooms = match get("x-room") {
        Some(AMQPValue::FieldArray(items)) => items.as_slice().iter().filter_map(text).collect(),
        Some(value) => text(value).into_iter().collect(),
        None => Vec::new(),
    };
    Target {
        event: get("x-event").and_then(text),
        namespace: get("x-namespace").and_then(text),
        rooms,
        socket: get("x-socket").and_then(text),
    }
}

/// Where client events go on this connection.
struct Destination<'a> {
    exchange: &'a ShortString,
    reply_queue: &'a ShortString,
    /// The negotiated largest frame: the properties (headers included) must fit in one.
    frame_max: usize,
}

/// Room in a content header frame for all but the headers table: frame header and end, class,
/// weight, body size, property flags, content type, and reply_to and correlation_id (short
/// strings, 256 bytes each at most).
const PROPERTIES_OVERHEAD: usize = 1024;

/// The encoded size of a headers table of long strings: per entry, the key's length byte and
/// bytes, the type byte, the value's 4 length bytes and bytes; and the table's 4 length bytes.
fn headers_size(headers: &[(&'static str, String)]) -> usize {
    4 + headers
        .iter()
        .map(|(k, v)| 1 + k.len() + 1 + 4 + v.len())
        .sum::<usize>()
}

/// Publishes one client event, checked already (see [`Outbound`]) but for the frame size the
/// broker chose; fails only when the channel does.
async fn publish(
    publisher: &lapin::Channel,
    config: &AmqpConfig,
    stats: &Arc<BridgeStats>,
    pending: &Arc<Pending>,
    to: &Destination<'_>,
    out: Outbound,
) -> Result<(), lapin::Error> {
    if headers_size(&out.headers).saturating_add(PROPERTIES_OVERHEAD) > to.frame_max {
        // RabbitMQ answers a header frame over frame_max by closing the connection, which would
        // cost every other client's events and acks.
        stats.refuse(Refusal::Headers, out.routing_key.as_str(), out.ack);
        return Ok(());
    }
    let mut headers = FieldTable::default();
    for (key, value) in out.headers {
        // The keys are this file's constants (`x-namespace`, …), all far below 255 bytes.
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers);
    let mut correlation = None;
    if let Some(ack) = out.ack {
        let id = tag("ack");
        properties = properties
            .with_reply_to(to.reply_queue.clone())
            .with_correlation_id(id.clone());
        let key = id.as_str().to_owned();
        pending.insert(key.clone(), ack);
        correlation = Some(key.clone());
        // Weak: the session's end, not this timer, decides when the map goes (see `Pending`).
        let pending = Arc::downgrade(pending);
        let timeout = config.reply_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            // Dropping the sender leaves the client's own ack timeout to fire.
            if let Some(pending) = pending.upgrade() {
                drop(pending.remove(&key));
            }
        });
    }
    let confirm = publisher
        .basic_publish(
            to.exchange.clone(),
            out.routing_key,
            BasicPublishOptions::default(),
            &out.body,
            properties,
        )
        .await?;
    // Counted once the broker confirms it: a nack, or a channel lost first, is a drop, and an
    // ack waiting for a reply that cannot come is told so.
    let stats = Arc::clone(stats);
    let pending = Arc::downgrade(pending);
    tokio::spawn(async move {
        match confirm.await {
            Ok(confirmation) if confirmation.is_ack() => {
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("the broker did not confirm a published client event");
                let ack = correlation
                    .zip(pending.upgrade())
                    .and_then(|(key, pending)| pending.remove(&key));
                if let Some(ack) = ack {
                    let error = "the broker did not take the event";
                    let _ = ack.send(vec![json!({ "error": error })], Vec::new());
                }
            }
        }
    });
    Ok(())
}

/// Answers a client's ack from the backend's reply: a JSON array is the ack's arguments, any
/// other JSON value or text is its one argument. The correlation id came from the broker
/// already parsed as a short string: it is only looked up, never converted.
fn answer(pending: &Pending, reply: lapin::message::Delivery) {
    let Some(id) = reply.properties.correlation_id().as_ref() else {
        return;
    };
    let Some(ack) = pending.remove(id.as_str()) else {
        return;
    };
    let args = match serde_json::from_slice::<Value>(&reply.data) {
        Ok(Value::Array(args)) => args,
        Ok(value) => vec![value],
        Err(_) => vec![Value::String(
            String::from_utf8_lossy(&reply.data).into_owned(),
        )],
    };
    let _ = ack.send(args, Vec::new());
}

/// `url` with its password replaced by `***`, for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    #[test]
    fn headers_map_to_target() {
        let mut h = FieldTable::default();
        h.insert("x-event".into(), AMQPValue::LongString("tick".into()));
        h.insert("x-namespace".into(), AMQPValue::ShortString("/chat".into()));
        let mut rooms = FieldArray::default();
        rooms.push(AMQPValue::LongString("a".into()));
        rooms.push(AMQPValue::LongString("b".into()));
        h.insert("x-room".into(), AMQPValue::FieldArray(rooms));
        h.insert("x-socket".into(), AMQPValue::LongLongInt(5));
        let t = target(Some(&h));
        assert_eq!(t.event.as_deref(), Some("tick"));
        assert_eq!(t.namespace.as_deref(), Some("/chat"));
        assert_eq!(t.rooms, vec!["a", "b"]);
        assert_eq!(t.socket, None);
        assert_eq!(target(None), Target::default());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 0..20 {
            let d = backoff(failures);
            assert!(d <= Duration::from_millis(15_000), "{d:?}");
            assert!(d >= Duration::from_millis(100), "{d:?}");
        }
        assert!(backoff(0) < Duration::from_millis(301));
    }

    #[test]
    fn binding_parses_exchange_and_pattern() {
        assert_eq!(
            "events:news.#".parse::<Binding>(),
            Ok(Binding {
                exchange: "events".into(),
                pattern: "news.#".into()
            })
        );
        assert!("events".parse::<Binding>().is_err());
        assert!(":x".parse::<Binding>().is_err());
    }

    #[test]
    fn the_byte_bound_admits_up_to_max_and_gives_bytes_back_on_drop() {
        let stats = Arc::new(BridgeStats::default());
        let a = Reservation::take(&stats, 60, 100).expect("60 of 100");
        assert!(Reservation::take(&stats, 41, 100).is_none(), "101 > 100");
        assert_eq!(
            stats.outbound_bytes(),
            60,
            "a refused reservation gives its bytes back"
        );
        let b = Reservation::take(&stats, 40, 100).expect("exactly 100");
        drop(a);
        assert_eq!(stats.outbound_bytes(), 40);
        drop(b);
        assert_eq!(stats.outbound_bytes(), 0);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let stats = BridgeStats::default();
        stats.refuse(Refusal::EventName, &"é".repeat(200), None);
        stats.refuse(Refusal::BacklogBytes, "x", None);
        stats.refuse(Refusal::BacklogBytes, "x", None);
        let refused: Vec<_> = stats.refused().collect();
        assert_eq!(
            refused,
            [
                ("event_name", 1),
                ("backlog_full", 0),
                ("backlog_bytes", 2),
                ("headers", 0)
            ]
        );
        assert_eq!(stats.snapshot().publish_refused["backlog_bytes"], 2);
    }

    #[test]
    fn over_long_names_are_refused_before_lapin_sees_them() {
        assert!(check_name(&"q".repeat(255)).is_ok());
        assert!(check_name(&"q".repeat(256)).is_err());
        let long = format!("{}:#", "e".repeat(256));
        assert!(long.parse::<Binding>().is_err());
        let long = format!("events:{}", "p".repeat(256));
        assert!(long.parse::<Binding>().is_err());
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let vhost = format!("amqp://127.0.0.1:5672/{}", "v".repeat(256));
        assert!(check_url(&vhost).is_err());
        assert!(check_url("not a url").is_err());
        assert!(matches!(
            short(&"x".repeat(256), "queue name"),
            Err(SessionError::Name("queue name"))
        ));
    }

    #[test]
    fn redact_hides_password() {
        assert_eq!(
            redact("amqp://guest:secret@localhost:5672/%2f"),
            "amqp://guest:***@localhost:5672/%2f"
        );
        assert_eq!(redact("amqp://localhost"), "amqp://localhost");
    }
}
