//! The cluster link's IO: one RabbitMQ connection after another, binding this node's queue to
//! the cluster's fanout exchange, then relaying envelopes both ways (received ones to
//! [`Cluster::receive`], queued ones sealed and published with their confirms) and saying
//! hello on every heartbeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions, QueueBindOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;

use super::{amqp_name, lock, Cluster};
use crate::bridge::envelope::Message;
use crate::bridge::latency::now_ms;
use crate::bridge::{amqp, confirmed, Confirm, Unconfirmed};

/// Where an outgoing envelope goes.
pub(super) enum Route {
    /// Every node, through the fanout exchange.
    All,
    /// One node's queue, through the default exchange.
    Queue(String),
}

pub(super) struct Outgoing {
    /// Sealed when published: see the module docs.
    pub(super) message: Message,
    pub(super) route: Route,
    pub(super) confirm: Option<Confirm>,
}

/// The outbox's receiving end. It belongs to the link, not to one run of its task: a restarted
/// task takes it up with the operations queued meanwhile.
pub(super) type Outbox = Arc<tokio::sync::Mutex<mpsc::Receiver<Outgoing>>>;

/// Keeps the link up: one broker session after another, with backoff between them. It never
/// returns; a panic in it ends this run, and the supervisor starts another.
pub(super) async fn run(cluster: Arc<Cluster>, exchange: ShortString, outbox: Outbox) {
    // Held for the whole run; a run that panics releases it as it unwinds.
    let mut outbox = outbox.lock().await;
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let error = match session(&cluster, &exchange, &mut outbox).await {
            Ok(()) => "connection closed".to_owned(),
            Err(error) => error.to_string(),
        };
        cluster.stats.connected.store(false, Ordering::Release);
        *lock(&cluster.queue) = None;
        tracing::warn!(%error, "cluster link disconnected; retrying");
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        tokio::time::sleep(amqp::backoff(failures)).await;
        failures = failures.saturating_add(1);
    }
}

/// One broker connection: declare the exchange and this node's queue, then relay both ways.
async fn session(
    cluster: &Arc<Cluster>,
    exchange: &ShortString,
    outbox: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), lapin::Error> {
    let config = &cluster.config;
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    amqp::declare_exchange(&channel, exchange.clone(), ExchangeKind::Fanout).await?;
    let queue = amqp::declare_private_queue(&channel).await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.clone(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Cluster messages are live traffic: a node that was away has no sockets that missed them.
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            // A node name is 6 characters when `halley` sets it; a library caller's longer one
            // gets a tag the broker picks (an empty tag asks for one) instead of a panic.
            ShortString::try_new(format!("halley-cluster-{}", config.node)).unwrap_or_default(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    // From now on every envelope published reaches this queue; none from before may count.
    lock(&cluster.freshness).listening_from(now_ms());
    cluster.relisten();
    let queue_name = queue.name().as_str().to_owned();
    *lock(&cluster.queue) = Some(queue_name.clone());
    cluster.stats.connected.store(true, Ordering::Release);
    tracing::info!(node = %config.node, "cluster link connected");

    let mut heartbeat = tokio::time::interval(config.heartbeat);
    loop {
        tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(delivery) => cluster.receive(&delivery?.data),
                None => return Ok(()),
            },
            Some(out) = outbox.recv() => publish(cluster, &publisher, out).await?,
            _ = heartbeat.tick() => {
                cluster.prune();
                let hello = Outgoing { message: cluster.hello(&queue_name), route: Route::All, confirm: None };
                publish(cluster, &publisher, hello).await?;
            }
        }
    }
}

/// Publishes one envelope. A confirmed one is answered exactly once: refused unpublished
/// (withdrawn, or a node not bound again yet), confirmed, or maybe delivered (published, and
/// the confirm did not come).
async fn publish(
    cluster: &Arc<Cluster>,
    publisher: &lapin::Channel,
    out: Outgoing,
) -> Result<(), lapin::Error> {
    let names = match &out.route {
        Route::All => amqp_name(&cluster.config.exchange).map(|e| (e, ShortString::default())),
        Route::Queue(queue) => amqp_name(queue).map(|q| (ShortString::default(), q)),
    };
    let Some((exchange, routing_key)) = names else {
        // Checked on receipt and at start already: this is the last line against a panic.
        cluster.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(confirm) = out.confirm {
            confirm.refuse("invalid exchange or queue name".to_owned());
        }
        return Ok(());
    };
    // Confirmed while a node's queue is not bound again, it would be lost for that node's
    // clients: the publisher must hear no.
    let hold = match (&out.confirm, &out.route) {
        (Some(_), Route::All) => {
            let rejoining = cluster.rejoining();
            (!rejoining.is_empty()).then(|| {
                format!(
                    "cluster rejoining: not every member is bound yet (waiting for {})",
                    rejoining.join(", ")
                )
            })
        }
        _ => None,
    };
    let send = confirmed::Publish {
        exchange,
        routing_key,
        confirm: out.confirm,
        verb: ("publish", "published"),
        // One node's queue failed to take it; the others may have.
        nack: || Unconfirmed::MaybeDelivered("the broker refused the message (nack)".to_owned()),
        hold,
    };
    let message = out.message;
    confirmed::publish(cluster, publisher, send, || cluster.seal(&message)).await
}

impl confirmed::Link for Cluster {
    fn counters(&self) -> confirmed::Counters<'_> {
        confirmed::Counters {
            confirmed: &self.stats.published,
            dropped: &self.stats.dropped,
            withdrawn: &self.stats.withdrawn,
            maybe_delivered: &self.stats.maybe_delivered,
        }
    }
}
