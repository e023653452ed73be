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

//! # Layout
//! - [`config`]: the options and the name checks, pure.
//! - [`stats`]: counters and state for `/healthz` and `/metrics`, and shutdown's stop switch.
//! - `connection`: the connection loop and one broker session: declare, consume, relay.
//! - `delivery`: one consumed message mapped, delivered, then acked, requeued or rejected.
//! - `outbound`: client events checked, bounded and published.
//! - `replies`: client acks answered from the backend's replies.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

pub mod config;
mod connection;
mod delivery;
mod outbound;
mod replies;
pub mod stats;

pub use config::{check_name, check_url, redact, AmqpConfig, Binding, SHORT_STRING_MAX};
pub(crate) use connection::{backoff, declare_exchange, declare_private_queue};
pub use outbound::OUTBOUND_QUEUE;
pub use stats::{BridgeStats, Refusal, StatsSnapshot};

use super::latency::Latency;
use crate::socketio::Halley;
use connection::run;
use outbound::{outbound, Outbound, OutboundQueue};

/// Starts the bridge for `io`: forwards unhandled events (when a publish exchange is set) and
/// runs the connection loop in the background, under [`super::supervise`]. Returns its stats.
pub fn spawn(io: Halley, config: AmqpConfig, latency: Arc<Latency>) -> Arc<BridgeStats> {
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
