//! One delivery from a consumed queue: its headers and properties read into an emit
//! ([`crate::bridge::mapping`]), delivered, then acked, dropped as a duplicate, requeued (the
//! cluster did not confirm it) or rejected (it cannot be mapped).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use super::config::AmqpConfig;
use super::stats::BridgeStats;
use crate::bridge::latency::{Latency, Source};
use crate::bridge::mapping::{self, Target};
use crate::bridge::{deliver, DeliverError, Delivered, Reach};
use crate::socketio::Halley;

pub(super) async fn handle_delivery(
    io: &Halley,
    config: &AmqpConfig,
    stats: &BridgeStats,
    latency: &Latency,
    reach: Reach,
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
        Ok(emit) => deliver(io, mapping::Emit { id, ..emit }, reach).await,
        Err(refusal) => Err(refusal.into()),
    };
    match delivered {
        Ok(Delivered::Duplicate) => {
            // Delivered before (by this node or the consumer before a failover): done.
            delivery.acker.ack(BasicAckOptions::default()).await?;
            stats.acked.fetch_add(1, Ordering::Relaxed);
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                redelivered = delivery.redelivered,
                "amqp message delivered already: dropped"
            );
        }
        Ok(Delivered::Sockets(sockets)) => {
            if let Some(at) = published_at {
                latency.record(Source::Amqp, at);
            }
            // Acked only now: the emit sits in every target outbox.
            delivery.acker.ack(BasicAckOptions::default()).await?;
            stats.acked.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sockets, "amqp message delivered");
        }
        Err(error @ DeliverError::Cluster { .. }) => {
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
}
