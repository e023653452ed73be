//! The bridge's connection: one broker session after another, with backoff. A session
//! declares and consumes the configured queues and bindings, then relays both ways until the
//! connection fails, a consumer is cancelled, or shutdown stops consumption.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRecoverOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::sync::mpsc;

use super::config::{check_url, redact, AmqpConfig};
use super::delivery::handle_delivery;
use super::outbound::{publish, Destination, Outbound, OutboundQueue};
use super::replies::{answer, Pending};
use super::stats::{BridgeStats, Consuming};
use crate::bridge::latency::Latency;
use crate::bridge::Reach;
use crate::socketio::Halley;

/// A name that AMQP carries as a short string; `what` names it in the refusal.
fn short(name: &str, what: &'static str) -> Result<ShortString, SessionError> {
    ShortString::try_new(name).map_err(|_| SessionError::Name(what))
}

/// The bridge's connection loop: one broker session after another, with backoff between them.
/// It never returns; a panic in it ends this run, and the supervisor starts another.
pub(super) async fn run(
    io: Halley,
    config: AmqpConfig,
    stats: Arc<BridgeStats>,
    latency: Arc<Latency>,
    queue: OutboundQueue,
) {
    // Held for the whole run; a run that panics releases it as it unwinds.
    let mut outbound = queue.lock().await;
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let error = match session(&io, &config, &stats, &latency, &mut outbound).await {
            Ok(()) => "connection closed".to_owned(),
            Err(error) => error.to_string(),
        };
        stats.connected.store(false, Ordering::Release);
        tracing::warn!(%error, "amqp bridge disconnected; retrying");
        stats.set_error(error);
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

/// A random consumer tag or correlation id: `prefix` (a constant of a few bytes) and 16 hex
/// digits, far below the short string's 255 bytes.
pub(super) fn tag(prefix: &'static str) -> ShortString {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    ShortString::from(format!("{prefix}-{:016x}", u64::from_le_bytes(r)))
}

/// Why a broker session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("queue {0:?} does not exist (and is not to be declared)")]
    MissingQueue(String),
    #[error("the broker cancelled a consumer (queue deleted?)")]
    ConsumerCancelled,
    /// Only through the library: `halley` checks its options.
    #[error("the {0} is longer than an AMQP short string (255 bytes)")]
    Name(&'static str),
    #[error("invalid AMQP URL: {0}")]
    Url(String),
}

/// One connection's life: declare, consume, publish, until something fails.
async fn session(
    io: &Halley,
    config: &AmqpConfig,
    stats: &Arc<BridgeStats>,
    latency: &Latency,
    outbound: &mut mpsc::Receiver<Outbound>,
) -> Result<(), SessionError> {
    // Every configured name is checked before lapin sees it (it panics on an over-long one).
    check_url(&config.url).map_err(SessionError::Url)?;
    let queue_name = config
        .queue
        .as_deref()
        .map(|q| short(q, "queue name"))
        .transpose()?;
    let publish_exchange = config
        .publish_exchange
        .as_deref()
        .map(|e| short(e, "publish exchange name"))
        .transpose()?;
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let frame_max = usize::try_from(conn.configuration().frame_max()).unwrap_or(usize::MAX);
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;

    // Each consumer with the reach of its messages: the work queue's go to the whole cluster
    // (one node takes each), a binding's stay local (every node has its own binding). None
    // once shutdown asked to stop consuming (a reconnect during shutdown only publishes).
    let mut consumers: Vec<(Reach, Consumer)> = Vec::new();
    let mut draining = stats.drain.requested.subscribe();
    let stopping = *draining.borrow_and_update();
    if let Some(queue) = queue_name.as_ref().filter(|_| !stopping) {
        // A queue that exists is used as it is (it may carry a dead-letter exchange or other
        // arguments that a plain declare would conflict with); a missing one is declared durable,
        // with a single active consumer.
        // The check runs on a throwaway channel: a failed passive declare closes its channel.
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let probe = conn.create_channel().await?;
        let exists = probe
            .queue_declare(queue.clone(), passive, FieldTable::default())
            .await
            .is_ok();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let order = if exists {
            // Declaring it again as Halley would succeeds only if it has a single active
            // consumer (and no argument this declaration lacks). The probe channel is still
            // open (its passive declare succeeded); a refusal closes it.
            match probe
                .queue_declare(queue.clone(), durable, ordered_queue_arguments())
                .await
            {
                Ok(_) => {
                    let _ = probe.close(200, "checked".into()).await;
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        } else {
            if config.queue_passive {
                return Err(SessionError::MissingQueue(queue.as_str().to_owned()));
            }
            channel
                .queue_declare(queue.clone(), durable, ordered_queue_arguments())
                .await?;
            Ok(())
        };
        stats.set_queue_order(queue.as_str(), order);
        consumers.push((
            Reach::Cluster,
            consume(&channel, queue.clone(), false).await?,
        ));
    }
    for binding in config.bindings.iter().filter(|_| !stopping) {
        let exchange = short(&binding.exchange, "binding's exchange name")?;
        let pattern = short(&binding.pattern, "binding's pattern")?;
        declare_exchange(&channel, exchange.clone(), ExchangeKind::Topic).await?;
        let queue = declare_private_queue(&channel).await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange,
                pattern,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumers.push((
            Reach::Local,
            consume(&channel, queue.name().clone(), false).await?,
        ));
    }

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    if let Some(exchange) = &publish_exchange {
        declare_exchange(&publisher, exchange.clone(), ExchangeKind::Topic).await?;
    }
    let reply_queue = declare_private_queue(&channel).await?;
    let mut replies = consume(&channel, reply_queue.name().clone(), true).await?;
    let pending: Arc<Pending> = Arc::default();

    stats.connected.store(true, Ordering::Release);
    stats.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(url = %redact(&config.url), "amqp bridge connected");

    // Each consumer ends with a `None`: one the broker cancels (its queue deleted, say) ends the
    // session, so that the reconnect declares and consumes everything again instead of going on
    // without that queue.
    let tags: Vec<ShortString> = consumers.iter().map(|(_, c)| c.tag()).collect();
    let mut inbound =
        futures_util::stream::select_all(consumers.into_iter().map(|(reach, consumer)| {
            consumer
                .map(move |delivery| Some((reach, delivery)))
                .chain(futures_util::stream::once(std::future::ready(None)))
        }));
    let _consuming = Consuming(&stats.drain.consuming);
    stats.drain.consuming.send_replace(!inbound.is_empty());
    loop {
        tokio::select! {
            // Checked first: once shutdown asks, no further delivery is handled.
            biased;
            true = async { draining.wait_for(|stop| *stop).await.is_ok() }, if !inbound.is_empty() => {
                for tag in &tags {
                    let _ = channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                }
                // What the broker sent before the cancel is unacked: back to the queue now, for
                // another node, rather than when this connection closes at exit (the replies'
                // consumer on this channel acks nothing, so nothing else is requeued).
                inbound = futures_util::stream::SelectAll::new();
                let requeue = BasicRecoverOptions { requeue: true };
                if let Err(error) = channel.basic_recover(requeue).await {
                    tracing::warn!(%error, "could not requeue prefetched deliveries; they return at exit");
                }
                stats.drain.consuming.send_replace(false);
                tracing::info!("amqp consumers cancelled for shutdown");
            }
            delivery = inbound.next(), if !inbound.is_empty() => match delivery {
                Some(Some((reach, delivery))) => handle_delivery(io, config, stats, latency, reach, delivery?).await?,
                Some(None) | None => return Err(SessionError::ConsumerCancelled),
            },
            reply = replies.next() => match reply {
                Some(reply) => answer(&pending, reply?),
                None => return Ok(()),
            },
            Some(out) = outbound.recv(), if publish_exchange.is_some() => {
                if let Some(exchange) = &publish_exchange {
                    let to = Destination { exchange, reply_queue: reply_queue.name(), frame_max };
                    publish(&publisher, config, stats, &pending, &to, out).await?;
                }
            }
        }
    }
}

/// The work queue's declaration: one consumer at a time gets its messages, so that they reach
/// the browsers in the order they were published however many nodes consume it.
fn ordered_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    arguments
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
    name: ShortString,
    kind: ExchangeKind,
) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name, kind, options, FieldTable::default())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::amqp::config::{check_name, Binding};

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
    fn over_long_names_are_refused_before_lapin_sees_them() {
        assert!(check_name(&"q".repeat(255)).is_ok());
        assert!(check_name(&"q".repeat(256)).is_err());
        let long = format!("{}:#", "e".repeat(256));
        assert!(long.parse::<Binding>().is_err());
        let long = format!("events:{}", "p".repeat(256));
        assert!(long.parse::<Binding>().is_err());
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let vhost = format!("amqp://127.0.0.1:5672/{}", "v".repeat(256));
        assert!(check_url(&vhost).is_err());
        assert!(check_url("not a url").is_err());
        assert!(matches!(
            short(&"x".repeat(256), "queue name"),
            Err(SessionError::Name("queue name"))
        ));
    }
}
