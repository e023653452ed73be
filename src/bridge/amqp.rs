//! The RabbitMQ bridge (lapin): the only module that sees AMQP types.
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
//! A lost connection is retried with exponential backoff and jitter; sockets keep being served
//! meanwhile, and [`BridgeStats`] (shown on `/healthz`) says where the bridge stands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

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
                    exchange: exchange.into(),
                    pattern: pattern.into(),
                })
            }
            _ => Err(format!("expected EXCHANGE:PATTERN, got {s:?}")),
        }
    }
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
    pub published: AtomicU64,
    /// Client events that could not be published (broker down, queue full, publish failed).
    pub publish_dropped: AtomicU64,
    pub connects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Serialize)]
pub struct StatsSnapshot {
    pub connected: bool,
    pub consumed: u64,
    pub acked: u64,
    pub rejected: u64,
    pub published: u64,
    pub publish_dropped: u64,
    pub connects: u64,
    pub last_error: Option<String>,
}

impl BridgeStats {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            connected: self.connected(),
            consumed: n(&self.consumed),
            acked: n(&self.acked),
            rejected: n(&self.rejected),
            published: n(&self.published),
            publish_dropped: n(&self.publish_dropped),
            connects: n(&self.connects),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A client event on its way to the broker.
struct Outbound {
    event: String,
    args: Vec<Value>,
    headers: Vec<(&'static str, String)>,
    ack: Option<AckSender>,
}

/// Client events waiting for the bridge; beyond this they are dropped and counted.
const OUTBOUND_QUEUE: usize = 10_000;

/// Starts the bridge for `io`: forwards unhandled events (when a publish exchange is set) and
/// runs the connection loop in the background. Returns its stats.
pub fn spawn(io: Halley, config: AmqpConfig, latency: Arc<super::Latency>) -> Arc<BridgeStats> {
    let stats = Arc::new(BridgeStats::default());
    let (tx, rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    if config.publish_exchange.is_some() {
        let forward_cookie = config.forward_cookie;
        let hook_stats = Arc::clone(&stats);
        // Behind a reverse proxy the peer is the proxy: report the client it names.
        let trusted = io.engine().config().trusted_proxies.clone();
        io.on_unhandled(move |socket, name, event| {
            let outbound = outbound(socket, name, event, forward_cookie, &trusted);
            if tx.try_send(outbound).is_err() {
                hook_stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    event = name,
                    "amqp bridge backlog full, client event dropped"
                );
            }
        });
    }
    tokio::spawn(run(io, config, Arc::clone(&stats), latency, rx));
    stats
}

fn outbound(
    socket: &Arc<Socket>,
    name: &str,
    event: Event,
    forward_cookie: bool,
    trusted: &[halley_transports::IpRange],
) -> Outbound {
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
    Outbound {
        event: name.to_owned(),
        args: event.args,
        headers,
        ack: event.ack,
    }
}

async fn run(
    io: Halley,
    config: AmqpConfig,
    stats: Arc<BridgeStats>,
    latency: Arc<super::Latency>,
    mut outbound: mpsc::Receiver<Outbound>,
) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let error = match session(&io, &config, &stats, &latency, &mut outbound).await {
            Ok(()) => "connection closed".to_owned(),
            Err(error) => error.to_string(),
        };
        stats.connected.store(false, Ordering::Release);
        tracing::warn!(%error, "amqp bridge disconnected; retrying");
        *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
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

fn tag(prefix: &str) -> ShortString {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    ShortString::from(format!("{prefix}-{:016x}", u64::from_le_bytes(r)))
}

type Pending = Arc<Mutex<HashMap<String, AckSender>>>;

/// Why a broker session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("queue {0:?} does not exist (and is not to be declared)")]
    MissingQueue(String),
    #[error("the broker cancelled a consumer (queue deleted?)")]
    ConsumerCancelled,
}

/// One connection's life: declare, consume, publish, until something fails.
async fn session(
    io: &Halley,
    config: &AmqpConfig,
    stats: &Arc<BridgeStats>,
    latency: &super::Latency,
    outbound: &mut mpsc::Receiver<Outbound>,
) -> Result<(), SessionError> {
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;

    // Each consumer with the reach of its messages: the work queue's go to the whole cluster
    // (one node takes each), a binding's stay local (every node has its own binding).
    let mut consumers: Vec<(super::Reach, Consumer)> = Vec::new();
    if let Some(queue) = &config.queue {
        // A queue that exists is used as it is (it may carry a dead-letter exchange or other
        // arguments that a plain declare would conflict with); a missing one is declared durable.
        // The check runs on a throwaway channel: a failed passive declare closes its channel.
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let probe = conn.create_channel().await?;
        let exists = probe
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .is_ok();
        if !exists {
            if config.queue_passive {
                return Err(SessionError::MissingQueue(queue.clone()));
            }
            let durable = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.as_str().into(), durable, FieldTable::default())
                .await?;
        }
        consumers.push((
            super::Reach::Cluster,
            consume(&channel, queue.as_str().into(), false).await?,
        ));
    }
    for binding in &config.bindings {
        declare_exchange(&channel, &binding.exchange, ExchangeKind::Topic).await?;
        let queue = declare_private_queue(&channel).await?;
        channel
            .queue_bind(
                queue.name().clone(),
                binding.exchange.as_str().into(),
                binding.pattern.as_str().into(),
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
    if let Some(exchange) = &config.publish_exchange {
        declare_exchange(&publisher, exchange, ExchangeKind::Topic).await?;
    }
    let reply_queue = declare_private_queue(&channel).await?;
    let mut replies = consume(&channel, reply_queue.name().clone(), true).await?;
    let pending: Pending = Arc::default();

    stats.connected.store(true, Ordering::Release);
    stats.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(url = %redact(&config.url), "amqp bridge connected");

    // Each consumer ends with a `None`: one the broker cancels (its queue deleted, say) ends the
    // session, so that the reconnect declares and consumes everything again instead of going on
    // without that queue.
    let mut inbound =
        futures_util::stream::select_all(consumers.into_iter().map(|(reach, consumer)| {
            consumer
                .map(move |delivery| Some((reach, delivery)))
                .chain(futures_util::stream::once(std::future::ready(None)))
        }));
    loop {
        tokio::select! {
            delivery = inbound.next(), if !inbound.is_empty() => match delivery {
                Some(Some((reach, delivery))) => handle_delivery(io, config, stats, latency, reach, delivery?).await?,
                Some(None) | None => return Err(SessionError::ConsumerCancelled),
            },
            reply = replies.next() => match reply {
                Some(reply) => answer(&pending, reply?),
                None => return Ok(()),
            },
            Some(out) = outbound.recv() => {
                publish(&publisher, config, stats, &pending, reply_queue.name(), out).await?;
            }
        }
    }
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
    name: &str,
    kind: ExchangeKind,
) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
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
    let body = Bytes::from(delivery.data);
    let delivered = match mapping::map(&config.defaults, target, content_type.as_deref(), body) {
        Ok(emit) => super::deliver(io, emit, reach).await,
        Err(refusal) => Err(refusal.into()),
    };
    match delivered {
        Ok(sockets) => {
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

async fn publish(
    publisher: &lapin::Channel,
    config: &AmqpConfig,
    stats: &Arc<BridgeStats>,
    pending: &Pending,
    reply_queue: &ShortString,
    out: Outbound,
) -> Result<(), lapin::Error> {
    let Some(exchange) = &config.publish_exchange else {
        return Ok(());
    };
    let mut headers = FieldTable::default();
    for (key, value) in out.headers {
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    let body = serde_json::to_vec(&out.args).unwrap_or_default();
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers);
    if let Some(ack) = out.ack {
        let id = tag("ack");
        properties = properties
            .with_reply_to(reply_queue.clone())
            .with_correlation_id(id.clone());
        let key = id.as_str().to_owned();
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), ack);
        let pending = Arc::clone(pending);
        let timeout = config.reply_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            // Dropping the sender leaves the client's own ack timeout to fire.
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
    }
    let confirm = publisher
        .basic_publish(
            exchange.as_str().into(),
            out.event.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await?;
    // Counted once the broker confirms it: a nack, or a channel lost first, is a drop.
    let stats = Arc::clone(stats);
    tokio::spawn(async move {
        match confirm.await {
            Ok(confirmation) if confirmation.is_ack() => {
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("the broker did not confirm a published client event");
            }
        }
    });
    Ok(())
}

/// Answers a client's ack from the backend's reply: a JSON array is the ack's arguments, any
/// other JSON value or text is its one argument.
fn answer(pending: &Pending, reply: lapin::message::Delivery) {
    let Some(id) = reply.properties.correlation_id().as_ref() else {
        return;
    };
    let Some(ack) = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id.as_str())
    else {
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

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
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
    fn redact_hides_password() {
        assert_eq!(
            redact("amqp://guest:secret@localhost:5672/%2f"),
            "amqp://guest:***@localhost:5672/%2f"
        );
        assert_eq!(redact("amqp://localhost"), "amqp://localhost");
    }
}
