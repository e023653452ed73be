//! The cluster link's IO: one RabbitMQ connection after another, binding this node's queue to
//! the cluster's fanout exchange, then relaying envelopes both ways (received ones to
//! [`Cluster::receive`], queued ones sealed and published with their confirms) and saying
//! hello on every heartbeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;

use super::{amqp_name, lock, Cluster};
use crate::bridge::envelope::Message;
use crate::bridge::latency::now_ms;
use crate::bridge::{amqp, Confirm, Unconfirmed};

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
    let stats = &cluster.stats;
    let names = match &out.route {
        Route::All => amqp_name(&cluster.config.exchange).map(|e| (e, ShortString::default())),
        Route::Queue(queue) => amqp_name(queue).map(|q| (ShortString::default(), q)),
    };
    let Some((exchange, routing_key)) = names else {
        // Checked on receipt and at start already: this is the last line against a panic.
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(confirm) = out.confirm {
            confirm.refuse("invalid exchange or queue name".to_owned());
        }
        return Ok(());
    };
    if !publisher.status().connected() {
        // The broker is closing the connection: nothing sent now would arrive. The session
        // ends, and what waits in the outbox goes on the next connection.
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(confirm) = out.confirm {
            confirm.refuse("the connection to the broker is closing".to_owned());
        }
        return Err(lapin::ErrorKind::InvalidChannelState(
            lapin::ChannelState::Closing,
            "basic.publish",
        )
        .into());
    }
    if let Some(confirm) = &out.confirm {
        let rejoining = match out.route {
            Route::All => cluster.rejoining(),
            Route::Queue(_) => Vec::new(),
        };
        let taken = match rejoining.is_empty() {
            true => confirm.take(Instant::now()),
            // Confirmed, it would be lost for the clients of a node whose queue is not bound
            // yet: the publisher must hear no.
            false => Err(format!(
                "cluster rejoining: not every member is bound yet (waiting for {})",
                rejoining.join(", ")
            )),
        };
        if let Err(reason) = taken {
            stats.withdrawn.fetch_add(1, Ordering::Relaxed);
            if let Some(confirm) = out.confirm {
                confirm.refuse(reason);
            }
            return Ok(());
        }
    }
    let body = cluster.seal(&out.message);
    let sent = publisher
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type("text/plain".into()),
        )
        .await;
    let confirm = match sent {
        Ok(confirm) => confirm,
        Err(error) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(confirm) = out.confirm {
                // Its frames may have been written, in part or whole, before the error.
                stats.maybe_delivered.fetch_add(1, Ordering::Relaxed);
                confirm.answer(Err(Unconfirmed::MaybeDelivered(format!(
                    "the publish failed as it was sent: {error}"
                ))));
            }
            return Err(error);
        }
    };
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        let waited = match &out.confirm {
            Some(c) => tokio::time::timeout_at(c.deadline().into(), confirm).await,
            None => Ok(confirm.await),
        };
        let stats = &cluster.stats;
        let result = match waited {
            Ok(Ok(confirmation)) if confirmation.is_ack() => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // One node's queue failed to take it; the others may have.
            Ok(Ok(_)) => Err(Unconfirmed::MaybeDelivered(
                "the broker refused the message (nack)".to_owned(),
            )),
            // The broker may have routed it before the connection went.
            Ok(Err(error)) => Err(Unconfirmed::MaybeDelivered(format!(
                "the connection to the broker closed after the publish, before its confirm: {error}"
            ))),
            Err(_) => Err(Unconfirmed::MaybeDelivered(
                "published, but the broker's confirm did not come in time".to_owned(),
            )),
        };
        if result.is_err() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(confirm) = out.confirm {
            if result.is_err() {
                stats.maybe_delivered.fetch_add(1, Ordering::Relaxed);
            }
            confirm.answer(result);
        }
    });
    Ok(())
}
