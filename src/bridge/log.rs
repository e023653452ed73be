//! The shared log: connection state recovery across the nodes of a cluster, on a RabbitMQ
//! stream.
//!
//! With `--cluster` and `--recovery-window`, every node appends what recovery needs to one
//! stream queue (`halley.recovery` unless configured) and reads all of it back, in the
//! stream's order, from its own consumer:
//!
//! - each logged event (a broadcast that is not volatile and wants no ack): every node, the
//!   writer too, delivers it to its own sockets when it reads it, and the record's position in
//!   the stream is the event's offset. So the offsets a client holds mean the same on every
//!   node, and every client sees the cluster's events in one order;
//! - each session change (connected, rooms changed, dropped, gone), written by the node that
//!   holds the socket. Every node thus knows every restorable session, and a client that comes
//!   back through another node, also after its node was killed, gets its session and the
//!   events it missed there ([`Halley::apply_log`], [`crate::socketio::recovery`]).
//!
//! RabbitMQ keeps the stream replicated, ordered and replayable: a node that starts reads it
//! from `now − window`, and one that lost its connection resumes at the next position it has
//! not applied. Retention (`x-max-age`, twice the window, and `x-max-length-bytes`) bounds it.
//! Records are signed with the cluster's secret (HMAC-SHA256 over the record); anything else
//! on the stream is dropped and counted, before any of it is read. They carry no freshness
//! stamp: reading old records again is what a log is for, and each node applies a position
//! once.
//!
//! A record appended while the broker is away waits in a bounded outbox ([`OUTBOX`] records;
//! beyond, it is dropped and counted) and is appended when the broker is back. `POST /publish`
//! and work-queue messages wait for the broker's confirm, at most [`CONFIRM_TIMEOUT`]: without
//! it the publisher is refused (503, or the message goes back to its queue) and the record is
//! withdrawn if it is still waiting, so that nothing refused is delivered later. A record is
//! withdrawn too when less than a second of its wait is left (its confirm would come too
//! late); one published whose confirm never came (the connection went first) is answered
//! "maybe delivered" (504): the stream may have it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;

use super::envelope::Key;
use super::{confirmed, Confirm, Unconfirmed};
use crate::socketio::adapter::{BoxFuture, LogRecord, SharedLog};
use crate::socketio::Halley;

/// Records waiting for the broker before new ones are refused.
const OUTBOX: usize = 10_000;
/// Deliveries the broker may send ahead of this node's acks (a stream consumer needs one).
const PREFETCH: u16 = 1000;
/// How long a confirmed append waits for the broker.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
const DOMAIN: &[u8] = b"halley-log-v1\n";
const MAC_HEX_LEN: usize = 64;

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub url: String,
    /// The stream queue every node appends to and reads.
    pub stream: String,
    /// This node's name (its session records carry it).
    pub node: String,
    pub key: Key,
    /// The recovery window: how far back a starting node reads.
    pub window: Duration,
    /// The stream's size bound, in bytes.
    pub max_bytes: u64,
}

/// Counters of the shared log, for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct LogStats {
    pub connected: AtomicBool,
    /// Records the broker confirmed.
    pub appended: AtomicU64,
    /// Records read and applied.
    pub applied: AtomicU64,
    /// Records refused: unsigned, altered, or not a record.
    pub rejected: AtomicU64,
    /// Records not appended (outbox full, broker refused or lost them).
    pub dropped: AtomicU64,
    /// Records not appended because their publisher stopped waiting (and was refused), or
    /// would have stopped before the confirm could come.
    pub withdrawn: AtomicU64,
    /// Confirmed records published whose confirm never came (the connection went first):
    /// answered "maybe delivered".
    pub maybe_delivered: AtomicU64,
    pub restarts: AtomicU64,
}

/// [`LogStats`] at one moment, with the link's stream, outbox and read position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogSnapshot {
    pub stream: String,
    pub connected: bool,
    /// Records waiting for the broker.
    pub outbox: usize,
    /// The outbox's bound: beyond it, records are dropped.
    pub outbox_max: usize,
    /// See [`LogLink::next_position`].
    pub next_position: Option<u64>,
    pub appended: u64,
    pub applied: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub withdrawn: u64,
    pub maybe_delivered: u64,
    pub restarts: u64,
}

struct Outgoing {
    body: Vec<u8>,
    confirm: Option<Confirm>,
}

/// The shared log of one node: installed as the server's [`SharedLog`].
pub struct LogLink {
    config: LogConfig,
    tag: u32,
    outbox: mpsc::Sender<Outgoing>,
    stats: Arc<LogStats>,
    /// The next position to read after a reconnect (`u64::MAX`: none read yet).
    resume: AtomicU64,
}

impl std::fmt::Debug for LogLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLink")
            .field("stream", &self.config.stream)
            .finish()
    }
}

/// The offsets' tag: the same on every node of the cluster (from the stream's name and the
/// secret), different for another stream.
fn tag_of(key: &Key, stream: &str) -> u32 {
    let mac = key.sign(DOMAIN, &[b"tag\n", stream.as_bytes()]);
    u32::from_str_radix(&mac[..8], 16).unwrap_or(0)
}

/// A record's wire form: its MAC in hex, a newline, its JSON.
pub fn seal(key: &Key, record: &LogRecord) -> Vec<u8> {
    // Plain data with string keys: serializing it cannot fail.
    let json = serde_json::to_vec(record).unwrap_or_default();
    let mac = key.sign(DOMAIN, &[&json]);
    let mut out = Vec::with_capacity(MAC_HEX_LEN + 1 + json.len());
    out.extend_from_slice(mac.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&json);
    out
}

/// The record in `body`, if the cluster's secret vouches for every byte of it.
pub fn open(key: &Key, body: &[u8]) -> Option<LogRecord> {
    let (Some(mac), Some(b'\n')) = (body.get(..MAC_HEX_LEN), body.get(MAC_HEX_LEN)) else {
        return None;
    };
    let json = &body[MAC_HEX_LEN + 1..];
    if !key.verify(DOMAIN, &[json], mac) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

impl LogLink {
    /// Starts the link (under [`super::supervise`]) and installs it as `io`'s shared log.
    pub fn spawn(io: &Halley, config: LogConfig) -> Arc<LogLink> {
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let link = Arc::new(LogLink {
            tag: tag_of(&config.key, &config.stream),
            config,
            outbox,
            stats: Arc::default(),
            resume: AtomicU64::new(u64::MAX),
        });
        io.set_shared_log(Arc::clone(&link) as Arc<dyn SharedLog>);
        let outbox = Arc::new(tokio::sync::Mutex::new(rx));
        let (down, task, io) = (Arc::clone(&link), Arc::clone(&link), io.clone());
        tokio::spawn(super::supervise::supervise(
            "shared log",
            move |_reason| {
                down.stats.connected.store(false, Ordering::Release);
                down.stats.restarts.fetch_add(1, Ordering::Relaxed);
            },
            move || run(Arc::clone(&task), io.clone(), Arc::clone(&outbox)),
        ));
        link
    }

    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// The stream queue this node appends to and reads.
    pub fn stream(&self) -> &str {
        &self.config.stream
    }

    /// Records waiting in the outbox for the broker (at most [`OUTBOX`]).
    pub fn outbox_len(&self) -> usize {
        self.outbox.max_capacity() - self.outbox.capacity()
    }

    /// The stream position this node reads next: every record before it was applied or
    /// rejected. `None` until it has read one.
    pub fn next_position(&self) -> Option<u64> {
        match self.resume.load(Ordering::Acquire) {
            u64::MAX => None,
            next => Some(next),
        }
    }

    /// The link's state and counters, for `/healthz` and `/metrics`.
    pub fn snapshot(&self) -> LogSnapshot {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let stats = &self.stats;
        LogSnapshot {
            stream: self.config.stream.clone(),
            connected: stats.connected.load(Ordering::Acquire),
            outbox: self.outbox_len(),
            outbox_max: self.outbox.max_capacity(),
            next_position: self.next_position(),
            appended: n(&stats.appended),
            applied: n(&stats.applied),
            rejected: n(&stats.rejected),
            dropped: n(&stats.dropped),
            withdrawn: n(&stats.withdrawn),
            maybe_delivered: n(&stats.maybe_delivered),
            restarts: n(&stats.restarts),
        }
    }

    /// Queues `record`, with `confirm` when its publisher waits for the broker's. False when
    /// the outbox is full.
    fn queue(&self, record: &LogRecord, confirm: Option<Confirm>) -> bool {
        let out = Outgoing {
            body: seal(&self.config.key, record),
            confirm,
        };
        match self.outbox.try_send(out) {
            Ok(()) => true,
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("shared log outbox full: a record is dropped");
                false
            }
        }
    }
}

impl SharedLog for LogLink {
    fn append(&self, record: LogRecord) {
        let _ = self.queue(&record, None);
    }

    fn append_confirmed(&self, record: LogRecord) -> BoxFuture<Result<(), String>> {
        let (confirm, waiter) = super::confirm(CONFIRM_TIMEOUT);
        let queued = self.queue(&record, Some(confirm));
        Box::pin(async move {
            match queued {
                true => waiter.wait().await,
                false => Err("the shared log's outbox is full".to_owned()),
            }
        })
    }

    fn tag(&self) -> u32 {
        self.tag
    }

    fn node(&self) -> &str {
        &self.config.node
    }
}

type Outbox = Arc<tokio::sync::Mutex<mpsc::Receiver<Outgoing>>>;

/// Keeps the link up: one broker session after another, with backoff between them.
async fn run(link: Arc<LogLink>, io: Halley, outbox: Outbox) {
    let mut outbox = outbox.lock().await;
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let error = match session(&link, &io, &mut outbox).await {
            Ok(()) => "connection closed".to_owned(),
            Err(error) => error.to_string(),
        };
        link.stats.connected.store(false, Ordering::Release);
        tracing::warn!(%error, "shared log disconnected; retrying");
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        tokio::time::sleep(super::amqp::backoff(failures)).await;
        failures = failures.saturating_add(1);
    }
}

fn stream_arguments(config: &LogConfig) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    let age = (config.window.as_secs() * 2).max(60);
    arguments.insert(
        "x-max-age".into(),
        AMQPValue::LongString(format!("{age}s").into()),
    );
    arguments.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(config.max_bytes).unwrap_or(i64::MAX)),
    );
    // Retention drops whole segments: small ones keep the stream near its bounds.
    arguments.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(8 * 1024 * 1024),
    );
    arguments
}

/// Where to start reading: the next unread position after a reconnect, else `now − window`.
fn start_at(link: &LogLink) -> AMQPValue {
    match link.resume.load(Ordering::Acquire) {
        u64::MAX => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            AMQPValue::Timestamp(now.saturating_sub(link.config.window.as_secs()))
        }
        next => AMQPValue::LongLongInt(i64::try_from(next).unwrap_or(i64::MAX)),
    }
}

/// The stream position of a delivery (RabbitMQ's `x-stream-offset` header).
fn position(delivery: &lapin::message::Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// One broker connection: declare the stream, read it from where this node stands, append.
async fn session(
    link: &Arc<LogLink>,
    io: &Halley,
    outbox: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), lapin::Error> {
    let config = &link.config;
    let stream = ShortString::try_new(config.stream.clone()).unwrap_or_default();
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(stream.clone(), durable, stream_arguments(config))
        .await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), start_at(link));
    let mut consumer = channel
        .basic_consume(
            stream.clone(),
            ShortString::try_new(format!("halley-log-{}", config.node)).unwrap_or_default(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await?;
    link.stats.connected.store(true, Ordering::Release);
    tracing::info!(stream = %config.stream, "shared log connected");

    loop {
        tokio::select! {
            delivery = consumer.next() => {
                let Some(delivery) = delivery else { return Ok(()) };
                let delivery = delivery?;
                let tag = delivery.delivery_tag;
                match (position(&delivery), open(&config.key, &delivery.data)) {
                    (Some(at), Some(record)) => {
                        io.apply_log(at, record);
                        link.resume.store(at + 1, Ordering::Release);
                        link.stats.applied.fetch_add(1, Ordering::Relaxed);
                    }
                    (at, _) => {
                        if let Some(at) = at {
                            link.resume.store(at + 1, Ordering::Release);
                        }
                        link.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(position = ?at, "a record on the shared log is not the cluster's: dropped");
                    }
                }
                // Acks only pace the broker's credit: a stream keeps every record anyway.
                channel.basic_ack(tag, BasicAckOptions::default()).await?;
            }
            Some(out) = outbox.recv() => publish(link, &publisher, &stream, out).await?,
        }
    }
}

/// Appends one record. A confirmed one is answered exactly once: withdrawn unpublished,
/// confirmed, or maybe delivered (published, and the confirm did not come).
async fn publish(
    link: &Arc<LogLink>,
    publisher: &lapin::Channel,
    stream: &ShortString,
    out: Outgoing,
) -> Result<(), lapin::Error> {
    let append = confirmed::Publish {
        exchange: ShortString::default(),
        routing_key: stream.clone(),
        confirm: out.confirm,
        verb: ("append", "appended"),
        // The stream is one queue, and it did not take the record.
        nack: || Unconfirmed::NotDelivered("the broker refused the record (nack)".to_owned()),
        hold: None,
    };
    confirmed::publish(link, publisher, append, || out.body).await
}

impl confirmed::Link for LogLink {
    fn counters(&self) -> confirmed::Counters<'_> {
        confirmed::Counters {
            confirmed: &self.stats.appended,
            dropped: &self.stats.dropped,
            withdrawn: &self.stats.withdrawn,
            maybe_delivered: &self.stats.maybe_delivered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socketio::adapter::{Selection, SessionState};
    use serde_json::json;

    fn key(secret: &str) -> Key {
        Key::new(secret.repeat(32).as_bytes()).unwrap()
    }

    #[test]
    fn a_sealed_record_opens_with_the_same_key_only_and_not_altered() {
        let record = LogRecord::Emit {
            to: Selection {
                ns: "/".into(),
                rooms: vec!["r".into()],
                ..Selection::default()
            },
            event: "news".into(),
            args: vec![json!({"seq": 1})],
            binary: Vec::new(),
            id: Some("m-1".into()),
        };
        let body = seal(&key("a"), &record);
        assert_eq!(open(&key("a"), &body), Some(record));
        assert_eq!(open(&key("b"), &body), None);
        let mut altered = body.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key("a"), &altered), None);
        assert_eq!(open(&key("a"), b"{}"), None);
    }

    #[test]
    fn session_records_round_trip_and_the_tag_is_the_same_on_every_node() {
        let record = LogRecord::Session {
            ns: "/".into(),
            node: "node01".into(),
            state: SessionState::Dropped,
            id: "i".into(),
            pid: "p".into(),
            rooms: vec!["r".into()],
            data: json!(null),
            since: 12,
        };
        assert_eq!(open(&key("a"), &seal(&key("a"), &record)), Some(record));
        assert_eq!(tag_of(&key("a"), "s"), tag_of(&key("a"), "s"));
        assert_ne!(tag_of(&key("a"), "s"), tag_of(&key("a"), "t"));
    }
}
