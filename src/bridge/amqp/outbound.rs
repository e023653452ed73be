//! Client events on their way to the broker: checked and encoded on the client's task
//! ([`outbound`]), admitted against the queue's count and byte bounds, then published by the
//! connection with a reply queue and correlation id when the client asked for an ack.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::json;
use tokio::sync::mpsc;

use super::config::AmqpConfig;
use super::connection::tag;
use super::replies::Pending;
use super::stats::{BridgeStats, Refusal};
use crate::socketio::{AckSender, Event, Socket};

/// A client event on its way to the broker, checked and encoded: publishing it cannot fail
/// on its content.
pub(super) struct Outbound {
    routing_key: ShortString,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    pub(super) ack: Option<AckSender>,
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
/// bound, [`AmqpConfig::outbound_max_bytes`](super::AmqpConfig::outbound_max_bytes), usually comes first).
pub const OUTBOUND_QUEUE: usize = 10_000;

/// The outbound queue's receiving end. It belongs to the bridge, not to one run of its task: a
/// restarted task takes it up with the events queued meanwhile.
pub(super) type OutboundQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Outbound>>>;

/// A client event checked but not yet admitted to the queue.
pub(super) struct Unreserved {
    routing_key: ShortString,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    ack: Option<AckSender>,
}

pub(super) type Refused = (Refusal, Option<AckSender>);

impl Unreserved {
    /// Its size against the byte bound: what it keeps in memory until published.
    fn bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.body.len() + self.routing_key.as_str().len() + headers) as u64
    }

    pub(super) fn reserve(self, stats: &Arc<BridgeStats>, max: u64) -> Result<Outbound, Refused> {
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

/// Checks and encodes a client event no handler took, on the client's task.
pub(super) fn outbound(
    socket: &Arc<Socket>,
    name: &str,
    event: Event,
    forward_cookie: bool,
    trusted: &[crate::engine::IpRange],
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

/// Where client events go on this connection.
pub(super) struct Destination<'a> {
    pub(super) exchange: &'a ShortString,
    pub(super) reply_queue: &'a ShortString,
    /// The negotiated largest frame: the properties (headers included) must fit in one.
    pub(super) frame_max: usize,
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
pub(super) async fn publish(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
