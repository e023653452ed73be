//! The AMQP scenarios: messages from RabbitMQ to WebSocket clients through Halley's bridge
//! (`amqp`), and the same publishing to a plain lapin consumer (`amqp-ceiling`).
//!
//! Both publish `--messages` messages to `--queue` on the default exchange, as fast as the
//! broker's publisher confirms allow with `--publish-window` publishes unconfirmed at once (or
//! paced at `--rate`). Each body is JSON `[<send time, µs since the epoch>,<seq>]`
//! (`application/json`, header `x-event`, and `x-published-at` in ms for Halley's own latency
//! histogram), so Halley emits `42["<event>",[<stamp>,<seq>]]` to every socket of `/`.
//!
//! `amqp`: Halley is the real binary started with `--amqp-url … --amqp-queue <queue>`; the load
//! generator waits for its `/readyz`, connects N WebSocket receivers, purges the queue, then
//! publishes. A message counts as consumed when every receiver got it: `messages_per_s` is those
//! messages over the time from the first delivery to the last message complete.
//!
//! `amqp-ceiling`: the same publish loop, consumed by a lapin consumer in this process (prefetch
//! as Halley's default, a manual ack per message, one at a time like Halley's bridge).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use hyper::Method;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::PublisherConfirm;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

use crate::hist::Hist;
use crate::{
    base_json, cap_clients, eio, merge, now_us, procfs, round3, setup, Common, ServerProbe,
};

#[derive(Args, Clone)]
pub struct AmqpArgs {
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// The queue Halley consumes (its --amqp-queue); declared durable like Halley does, and
    /// purged before publishing. Not the seed's `socket.io`, so that a benchmark never purges
    /// the queue of a test run on the same broker.
    #[arg(long, default_value = "halley-bench")]
    queue: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Publishes awaiting their broker confirm at once (1: each waits for its confirm).
    #[arg(long, default_value_t = 64)]
    publish_window: usize,
    /// Messages per second; 0 publishes as fast as the confirms allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The event name (header `x-event`).
    #[arg(long, default_value = "tick")]
    event: String,
    /// After the last confirm, wait for the deliveries still under way until none came for
    /// this many seconds.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
}

/// Where each message got to.
struct Fanin {
    receivers: u32,
    /// Receivers that got message `seq` so far.
    per_message: Box<[AtomicU32]>,
    delivered: AtomicU64,
    completed: AtomicU64,
    /// Deliveries whose seq was out of range, or that came to a receiver twice or more.
    unexpected: AtomicU64,
    unparsed: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    last_complete_us: AtomicU64,
    /// Publish → delivery, every delivery.
    latency_us: Hist,
    /// Publish → its last receiver, every message.
    complete_latency_us: Hist,
}

impl Fanin {
    fn new(messages: u64, receivers: u64) -> Self {
        Self {
            receivers: receivers.min(u64::from(u32::MAX)) as u32,
            per_message: (0..messages).map(|_| AtomicU32::new(0)).collect(),
            delivered: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
            last_complete_us: AtomicU64::new(0),
            latency_us: Hist::default(),
            complete_latency_us: Hist::default(),
        }
    }

    fn record(&self, stamp: u64, seq: u64) {
        let now = now_us();
        let Some(count) = self.per_message.get(seq as usize) else {
            self.unexpected.fetch_add(1, Relaxed);
            return;
        };
        let seen = count.fetch_add(1, Relaxed) + 1;
        if seen > self.receivers {
            self.unexpected.fetch_add(1, Relaxed);
            return;
        }
        let latency = now.saturating_sub(stamp);
        self.latency_us.record(latency);
        self.delivered.fetch_add(1, Relaxed);
        self.first_us.fetch_min(now, Relaxed);
        self.last_us.fetch_max(now, Relaxed);
        if seen == self.receivers {
            self.completed.fetch_add(1, Relaxed);
            self.last_complete_us.fetch_max(now, Relaxed);
            self.complete_latency_us.record(latency);
        }
    }

    fn json(&self, messages: u64) -> Value {
        let first = self.first_us.load(Relaxed);
        let last = self.last_us.load(Relaxed);
        let last_complete = self.last_complete_us.load(Relaxed);
        let delivered = self.delivered.load(Relaxed);
        let completed = self.completed.load(Relaxed);
        let span = |end: u64| (end.saturating_sub(first) as f64 / 1e6).max(1e-6);
        let expected = messages * u64::from(self.receivers);
        json!({
            "expected": expected,
            "delivered": delivered,
            "lost": expected.saturating_sub(delivered),
            "messages_completed": completed,
            "messages_lost": messages.saturating_sub(completed),
            "unexpected": self.unexpected.load(Relaxed),
            "unparsed": self.unparsed.load(Relaxed),
            "delivery_secs": (delivered > 0).then(|| round3(span(last))),
            "messages_per_s": (completed > 0).then(|| round3(completed as f64 / span(last_complete))),
            "deliveries_per_s": (delivered > 0).then(|| round3(delivered as f64 / span(last))),
            "latency": self.latency_us.summary_ms(),
            "message_latency": self.complete_latency_us.summary_ms(),
        })
    }
}

/// The stamp and seq of `42["<event>",[<stamp>,<seq>]]`.
fn message_stamp(text: &str, prefix: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(prefix)?;
    let (stamp, rest) = rest.split_once(',')?;
    let seq = rest.strip_suffix("]]")?;
    Some((stamp.parse().ok()?, seq.parse().ok()?))
}

/// The packet prefix of the event: `42["tick",[`.
fn packet_prefix(event: &str) -> String {
    format!("42[{},[", serde_json::to_string(event).unwrap_or_default())
}

async fn broker(url: &str) -> Result<Connection, String> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("amqp connect {url}: {e}"))
}

/// Declares the queue (durable with a single active consumer, as Halley does when it is
/// missing) and empties it; checks it
/// has `consumers` consumers (Halley's bridge: 1; none before the ceiling's own), since another
/// consumer would take a share of the messages. Returns how many messages were purged.
async fn fresh_queue(channel: &Channel, queue: &str, consumers: u32) -> Result<u32, String> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    let declared = channel
        .queue_declare(queue.into(), durable, arguments)
        .await
        .map_err(|e| format!("queue.declare {queue}: {e}"))?;
    if declared.consumer_count() != consumers {
        return Err(format!(
            "queue {queue} has {} consumers, expected {consumers} (another Halley or benchmark \
             on it? see --queue)",
            declared.consumer_count()
        ));
    }
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .map_err(|e| format!("queue.purge {queue}: {e}"))
}

/// What the publisher did.
struct Published {
    sent: u64,
    nacked: u64,
    secs: f64,
    start_us: u64,
    error: Option<String>,
}

/// Publishes `args.messages` messages with confirms, `publish_window` in flight.
async fn publish(channel: &Channel, args: &AmqpArgs) -> Published {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-event".into(),
        AMQPValue::LongString(args.event.as_str().into()),
    );
    let routing_key = ShortString::from(args.queue.as_str());
    let start = Instant::now();
    let start_us = now_us();
    let mut out = Published {
        sent: 0,
        nacked: 0,
        secs: 0.0,
        start_us,
        error: None,
    };
    let mut in_flight: std::collections::VecDeque<PublisherConfirm> =
        std::collections::VecDeque::new();
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let result: Result<(), String> = async {
        for seq in 0..args.messages {
            if let Some(interval) = interval {
                let at = start + interval.mul_f64(seq as f64);
                tokio::time::sleep_until(at.into()).await;
            }
            while in_flight.len() >= args.publish_window.max(1) {
                if let Some(confirm) = in_flight.pop_front() {
                    let confirmation = confirm.await.map_err(|e| format!("confirm: {e}"))?;
                    if !confirmation.is_ack() {
                        out.nacked += 1;
                    }
                }
            }
            let stamp = now_us();
            let mut h = headers.clone();
            h.insert(
                "x-published-at".into(),
                AMQPValue::LongLongInt((stamp / 1000) as i64),
            );
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_headers(h);
            let body = format!("[{stamp},{seq}]");
            let confirm = channel
                .basic_publish(
                    "".into(),
                    routing_key.clone(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                )
                .await
                .map_err(|e| format!("basic.publish: {e}"))?;
            in_flight.push_back(confirm);
            out.sent += 1;
        }
        while let Some(confirm) = in_flight.pop_front() {
            let confirmation = confirm.await.map_err(|e| format!("confirm: {e}"))?;
            if !confirmation.is_ack() {
                out.nacked += 1;
            }
        }
        Ok(())
    }
    .await;
    out.error = result.err();
    out.secs = start.elapsed().as_secs_f64();
    out
}

fn publish_json(p: &Published, args: &AmqpArgs) -> Value {
    json!({
        "queue": args.queue,
        "messages": args.messages,
        "publish_window": args.publish_window,
        "publish_rate": if args.rate > 0.0 { json!(args.rate) } else { json!("confirms") },
        "published": p.sent,
        "nacked": p.nacked,
        "publish_secs": round3(p.secs),
        "published_per_s": round3(p.sent as f64 / p.secs.max(1e-9)),
        "publisher_error": p.error,
    })
}

/// Waits until Halley's bridge is connected to the broker (`/readyz` answers 200).
async fn wait_ready(target: &eio::Target) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match eio::Http::connect(target, None).await {
            Ok(mut http) => match http
                .request(Method::GET, "/readyz", None, Bytes::new())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("halley's /readyz not ready after 30 s: {last}"))
}

/// Waits after publishing until every delivery came, or none came for `drain` seconds (the
/// consumer may work through a backlog long after the last publish).
async fn drain(fanin: &Fanin, expected: u64, drain: f64) {
    let quiet = Duration::from_secs_f64(drain);
    let mut seen = fanin.delivered.load(Relaxed);
    let mut deadline = Instant::now() + quiet;
    while seen < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = fanin.delivered.load(Relaxed);
        if now > seen {
            seen = now;
            deadline = Instant::now() + quiet;
        }
    }
}

/// `amqp`: RabbitMQ → Halley → N WebSocket clients.
pub async fn run(common: Common, args: AmqpArgs) -> Result<Value, String> {
    let (n, capped_from) = cap_clients(common.clients, 1, 8);
    let clients = setup(&common).await?;
    let server = ServerProbe::new(&common);
    wait_ready(&clients.targets[0]).await?;
    let fanin = Arc::new(Fanin::new(args.messages, n));
    let prefix = packet_prefix(&args.event);

    eprintln!("amqp: connecting {n} receivers");
    let f = Arc::clone(&fanin);
    let connect_secs = clients
        .spawn(
            n,
            |t, src| async move { eio::ws_connect(&t, src).await },
            move |mut ws: eio::Ws, _| {
                let (f, prefix) = (Arc::clone(&f), prefix.clone());
                async move {
                    loop {
                        let text = eio::next_text(&mut ws).await?;
                        if text.starts_with(prefix.as_str()) {
                            match message_stamp(&text, &prefix) {
                                Some((stamp, seq)) => f.record(stamp, seq),
                                None => {
                                    f.unparsed.fetch_add(1, Relaxed);
                                }
                            }
                        } else if eio::control(&text)? {
                            eio::send_text(&mut ws, "3").await?;
                        }
                    }
                }
            },
        )
        .await;
    let receivers = clients.stats.connected.load(Relaxed);
    eprintln!("amqp: {receivers} receivers in {connect_secs:.2}s; settling");
    if receivers < n {
        // A message completes when all `n` got it; fewer receivers would complete none.
        return Err(format!(
            "only {receivers} of {n} receivers connected: {}",
            clients.stats.json()["errors"]
        ));
    }
    let conn = broker(&args.amqp_url).await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    let purged = fresh_queue(&channel, &args.queue, 1).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("confirm.select: {e}"))?;
    tokio::time::sleep(Duration::from_secs_f64(common.settle)).await;

    let cpu0 = server.cpu();
    let self_cpu0 = procfs::cpu_secs(None);
    let rss0 = server.rss();
    eprintln!(
        "amqp: publishing {} messages to {} (window {})",
        args.messages, args.queue, args.publish_window
    );
    let start = Instant::now();
    let published = publish(&channel, &args).await;
    drain(&fanin, published.sent * n, args.drain).await;
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = server.cpu();
    let self_cpu1 = procfs::cpu_secs(None);
    let _ = conn.close(200, "done".into()).await;

    let mut out = base_json("amqp", &common, n, capped_from);
    merge(&mut out, publish_json(&published, &args));
    merge(&mut out, fanin.json(published.sent));
    merge(
        &mut out,
        json!({
            "receivers": receivers,
            "purged_at_start": purged,
            "connect_secs": round3(connect_secs),
            "first_delivery_after_s": fanin_first_after(&fanin, published.start_us),
            "wall_secs": round3(wall),
            "server_rss_start_kib": rss0,
            "server_rss_end_kib": server.rss(),
            "server_cpu_s_per_s": cpu0.zip(cpu1).map(|(a, b)| round3((b - a) / wall)),
            "loadgen_cpu_s_per_s": self_cpu0.zip(self_cpu1).map(|(a, b)| round3((b - a) / wall)),
        }),
    );
    merge(&mut out, clients.stats.json());
    Ok(out)
}

fn fanin_first_after(fanin: &Fanin, start_us: u64) -> Option<f64> {
    let first = fanin.first_us.load(Relaxed);
    (first != u64::MAX).then(|| round3(first.saturating_sub(start_us) as f64 / 1e6))
}

/// `amqp-ceiling`: RabbitMQ → a plain lapin consumer.
pub async fn ceiling(args: AmqpArgs, prefetch: u16) -> Result<Value, String> {
    let conn = broker(&args.amqp_url).await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    let purged = fresh_queue(&channel, &args.queue, 0).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("confirm.select: {e}"))?;

    // The consumer: its own connection, as Halley's bridge has.
    let consumer_conn = broker(&args.amqp_url).await?;
    let consumer_channel = consumer_conn
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    consumer_channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| format!("basic.qos: {e}"))?;
    let mut consumer = consumer_channel
        .basic_consume(
            args.queue.as_str().into(),
            "halley-loadgen-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("basic.consume: {e}"))?;
    let fanin = Arc::new(Fanin::new(args.messages, 1));
    let f = Arc::clone(&fanin);
    let consuming = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(|e| format!("delivery: {e}"))?;
            match serde_json::from_slice::<(u64, u64)>(&delivery.data) {
                Ok((stamp, seq)) => f.record(stamp, seq),
                Err(_) => {
                    f.unparsed.fetch_add(1, Relaxed);
                }
            }
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| format!("basic.ack: {e}"))?;
        }
        Ok::<(), String>(())
    });

    let self_cpu0 = procfs::cpu_secs(None);
    eprintln!(
        "amqp-ceiling: publishing {} messages to {} (window {}, consumer prefetch {prefetch})",
        args.messages, args.queue, args.publish_window
    );
    let start = Instant::now();
    let published = publish(&channel, &args).await;
    drain(&fanin, published.sent, args.drain).await;
    let wall = start.elapsed().as_secs_f64();
    let self_cpu1 = procfs::cpu_secs(None);
    consuming.abort();
    let consumer_error = match consuming.await {
        Ok(Err(e)) => Some(e),
        _ => None,
    };
    let _ = consumer_conn.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;

    let mut out = json!({
        "scenario": "amqp-ceiling",
        "receivers": 1,
        "prefetch": prefetch,
        "purged_at_start": purged,
        "consumer_error": consumer_error,
        "first_delivery_after_s": fanin_first_after(&fanin, published.start_us),
        "wall_secs": round3(wall),
        "loadgen_rss_kib": procfs::rss_kib(None),
        "loadgen_cpu_s_per_s": self_cpu0.zip(self_cpu1).map(|(a, b)| round3((b - a) / wall)),
    });
    merge(&mut out, publish_json(&published, &args));
    merge(&mut out, fanin.json(published.sent));
    Ok(out)
}

/// `amqp-delete-exchange`: removes a benchmark cluster's exchange once its nodes are gone
/// (each run of `run.sh`'s s7 uses a fresh one; Halley declares them durable).
pub async fn delete_exchange(url: &str, exchange: &str) -> Result<Value, String> {
    let conn = broker(url).await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await
        .map_err(|e| format!("exchange.delete {exchange}: {e}"))?;
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({ "deleted_exchange": exchange }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bridge_packets() {
        let prefix = packet_prefix("tick");
        assert_eq!(prefix, "42[\"tick\",[");
        assert_eq!(
            message_stamp("42[\"tick\",[1700000000000000,42]]", &prefix),
            Some((1_700_000_000_000_000, 42))
        );
        assert_eq!(message_stamp("42[\"tick\",[1,2],3]", &prefix), None);
        assert_eq!(message_stamp("42[\"tock\",[1,2]]", &prefix), None);
    }

    #[test]
    fn a_message_completes_when_every_receiver_got_it() {
        let fanin = Fanin::new(2, 3);
        for _ in 0..3 {
            fanin.record(now_us(), 0);
        }
        fanin.record(now_us(), 1);
        fanin.record(now_us(), 7);
        fanin.record(now_us(), 0);
        let out = fanin.json(2);
        assert_eq!(out["messages_completed"], 1);
        assert_eq!(out["delivered"], 4);
        assert_eq!(out["unexpected"], 2);
        assert_eq!(out["lost"], 2);
    }
}
