//! Bridges between backends and browsers: RabbitMQ (AMQP 0-9-1) and an HTTP publish API.
//!
//! # Layout
//! - [`mapping`]: a backend message (content type, routing headers, body) → an emit, pure.
//! - [`amqp`]: the RabbitMQ bridge: consume queues and exchange bindings, publish unhandled
//!   client events (refusing names AMQP cannot carry, and events beyond the outbound queue's
//!   count and byte bounds), answer client acks from replies, reconnect with backoff.
//! - [`publish`]: the answers of `POST /publish`, `POST /sockets`, `/healthz` and `/readyz`
//!   (served by `crate::admin`, whose guard authorizes them; the public listener gets the
//!   status-only health answers).
//! - [`auth`]: the auth hook: the handshake's Cookie and auth payload, asked of an application
//!   URL before a socket connects.
//! - [`subscribe`]: the `subscribe` / `unsubscribe` convention for browsers in no-code mode.
//! - [`envelope`]: what cluster nodes say to each other, signed with the cluster's secret, and
//!   the freshness check for live traffic; pure.
//! - [`forward_mark`]: the signed `x-halley-forwarded` value of a forwarded request; pure.
//! - [`cluster`]: the cluster link over RabbitMQ: membership, broadcasts, cross-node queries,
//!   the engine's session locator.
//! - [`log`]: the shared log on a RabbitMQ stream that connection state recovery goes through
//!   in a cluster, so that a client recovers through any node.
//! - [`supervise`]: runs the bridge's and the cluster link's tasks again when they end or
//!   panic, with backoff; knows nothing of brokers.
//!
//! Both inbound paths end in [`deliver`], which queues the emit into every local target outbox
//! before it returns: an AMQP message is acked only after that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod amqp;
pub mod auth;
pub mod cluster;
pub mod envelope;
pub mod forward_mark;
pub mod log;
pub mod mapping;
pub mod publish;
pub mod subscribe;
pub mod supervise;

use crate::socketio::adapter::RemoteOp;
use crate::socketio::{EmitError, Halley};
use mapping::Emit;

/// Upper bounds of the publish latency histogram, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/// Publish-to-delivery latency, per source: from the time a producer stamped on a message
/// (AMQP header `x-published-at` or property `timestamp`, HTTP field `publishedAt`; ms since the
/// epoch) to the moment it sat in every target outbox. Unstamped messages are not counted.
#[derive(Debug, Default)]
pub struct Latency {
    /// `[amqp, http]` × buckets (+Inf last).
    buckets: [[AtomicU64; LATENCY_BUCKETS_MS.len() + 1]; 2],
    sum_ms: [AtomicU64; 2],
}

/// Where a backend message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Amqp = 0,
    Http = 1,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Amqp, Source::Http];

    pub fn name(self) -> &'static str {
        match self {
            Source::Amqp => "amqp",
            Source::Http => "http",
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Latency {
    /// Records a message stamped `published_at` (ms since the epoch) delivered now. A stamp
    /// from a clock ahead of this one counts as zero.
    pub fn record(&self, source: Source, published_at: u64) {
        let ms = now_ms().saturating_sub(published_at);
        let i = source as usize;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i][bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ms[i].fetch_add(ms, Ordering::Relaxed);
    }

    /// Each bucket's own `(le seconds, count)`, ending with +Inf (what the Prometheus encoder
    /// takes: it accumulates them), the total count, and the sum in seconds.
    pub fn histogram(&self, source: Source) -> (Vec<(f64, u64)>, u64, f64) {
        let i = source as usize;
        let bounds = LATENCY_BUCKETS_MS
            .iter()
            .map(|&le| le as f64 / 1000.0)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets[i])
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        (
            buckets,
            count,
            self.sum_ms[i].load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

/// Why an emit could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("namespace {0:?} is not served")]
    UnknownNamespace(String),
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error(transparent)]
    Malformed(#[from] mapping::Refusal),
    /// Delivered to this node's sockets, but the cluster did not take it.
    #[error("delivered to {local} local sockets, but not to the cluster: {reason}")]
    Cluster { local: usize, reason: String },
}

/// Who a backend message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every node: delivered here, then handed to the cluster, waiting for the broker's
    /// confirm (a work-queue message, an HTTP publish).
    Cluster,
    /// This node only (every node receives the message itself, e.g. from its own binding).
    Local,
}

/// What [`deliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Queued into this many local sockets' outboxes (and handed to the cluster).
    Sockets(usize),
    /// Its id was seen lately: delivered already, dropped now (see
    /// [`crate::socketio::dedupe`]).
    Duplicate,
}

/// Queues `emit` into the outbox of every socket it targets on this node and, in a cluster
/// with [`Reach::Cluster`], hands it to the other nodes and waits for the broker to confirm.
/// An emit whose id was delivered lately is dropped.
pub async fn deliver(io: &Halley, emit: Emit, reach: Reach) -> Result<Delivered, DeliverError> {
    let ns = io
        .of(&emit.namespace)
        .ok_or_else(|| DeliverError::UnknownNamespace(emit.namespace.clone()))?;
    if let Some(id) = &emit.id {
        let duplicate = if reach == Reach::Cluster && io.logs_shared() {
            // Through the shared log, the log's order decides which copy every node delivers
            // (`Halley::apply_log`); a copy delivered already is not even appended.
            let seen = io.delivered_already(id);
            if seen {
                io.stats().count_duplicate();
            }
            seen
        } else {
            !io.first_delivery(id)
        };
        if duplicate {
            return Ok(Delivered::Duplicate);
        }
    }
    let id = emit.id.clone();
    let delivered = deliver_once(ns, emit, reach).await;
    if let (Err(_), Some(id)) = (&delivered, &id) {
        // It comes again (a requeue, the publisher's retry): not as a duplicate.
        io.forget_delivery(id);
    }
    delivered.map(Delivered::Sockets)
}

async fn deliver_once(
    ns: std::sync::Arc<crate::socketio::Namespace>,
    emit: Emit,
    reach: Reach,
) -> Result<usize, DeliverError> {
    let mut op = ns.broadcast();
    for room in emit.rooms {
        op = op.to(room);
    }
    if let (Reach::Cluster, Some(log)) = (reach, op.shared_log()) {
        // Every node, this one too, delivers it when it reads it from the log.
        let targets = op.sockets().len();
        let record = op.log_record(&emit.event, emit.args, emit.binary, emit.id);
        log.append_confirmed(record)
            .await
            .map_err(|reason| DeliverError::Cluster { local: 0, reason })?;
        return Ok(targets);
    }
    let op = op.local();
    let adapter = match reach {
        Reach::Cluster => ns.adapter().cloned(),
        Reach::Local => None,
    };
    let Some(adapter) = adapter else {
        return Ok(op.emit_args(&emit.event, emit.args, emit.binary)?);
    };
    let remote = RemoteOp::Emit {
        to: op.selection(),
        event: emit.event.clone(),
        args: emit.args.clone(),
        binary: emit.binary.clone(),
        volatile: false,
        id: emit.id,
    };
    let local = op.emit_args(&emit.event, emit.args, emit.binary)?;
    adapter
        .publish_confirmed(remote)
        .await
        .map_err(|reason| DeliverError::Cluster { local, reason })?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_bucketed_and_future_stamps_count_as_zero() {
        let latency = Latency::default();
        latency.record(Source::Http, now_ms() + 60_000);
        latency.record(Source::Http, now_ms().saturating_sub(30_000));
        let (buckets, count, sum) = latency.histogram(Source::Http);
        assert_eq!(
            buckets[0],
            (0.001, 1),
            "the future stamp lands in the first bucket"
        );
        assert_eq!(
            buckets.last().copied(),
            Some((f64::INFINITY, 1)),
            "30 s is past the last bound"
        );
        assert_eq!(count, 2);
        assert!(sum >= 30.0);
        assert_eq!(latency.histogram(Source::Amqp).1, 0);
    }
}
