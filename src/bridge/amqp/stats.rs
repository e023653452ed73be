//! Where the bridge stands, for `/healthz` and `/metrics`: counters, the last error, the work
//! queue's order, the refusals of client events, and the stop switch shutdown pulls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::socketio::AckSender;

/// Counters and state of the bridge, for `/healthz` and metrics.
#[derive(Debug, Default)]
pub struct BridgeStats {
    pub(super) connected: AtomicBool,
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
    pub(super) refused: [AtomicU64; Refusal::ALL.len()],
    /// Bytes of client events in the outbound queue now (see [`AmqpConfig::outbound_max_bytes`](super::AmqpConfig::outbound_max_bytes)).
    pub(super) outbound_bytes: AtomicU64,
    pub connects: AtomicU64,
    /// Times the bridge's task ended or panicked and was started again.
    pub restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// What the work queue's declaration says of its order (see the module docs).
    queue_order: Mutex<Option<QueueOrder>>,
    pub(super) drain: Drain,
}

/// Consumption's stop switch for shutdown: `requested` once it must stop, `consuming` while a
/// session has consumers whose deliveries it handles.
#[derive(Debug)]
pub(super) struct Drain {
    pub(super) requested: watch::Sender<bool>,
    pub(super) consuming: watch::Sender<bool>,
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
pub(super) struct Consuming<'a>(pub(super) &'a watch::Sender<bool>);

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
    /// The outbound queue holds [`OUTBOUND_QUEUE`](super::OUTBOUND_QUEUE) events already.
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
    pub(super) fn set_queue_order(&self, queue: &str, refused: Result<(), String>) {
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

    pub(super) fn set_error(&self, error: String) {
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
    pub(super) fn refuse(&self, refusal: Refusal, event: &str, ack: Option<AckSender>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
