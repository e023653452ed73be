//! One message a link (the cluster link, the shared log) publishes on a channel in confirm
//! mode, from its outbox: the steps both take, so that a publisher waiting for the broker's
//! confirm is answered exactly once, the same way on both. Refused unpublished when the
//! connection is closing or the publish is withdrawn ([`Confirm::take`]); else published, and
//! confirmed, or "maybe delivered" when the confirm does not come (the broker may have routed
//! it). Every outcome is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::BasicProperties;

use super::{Confirm, Unconfirmed};

/// A link's counters of what it publishes.
pub(crate) struct Counters<'a> {
    /// Published and confirmed.
    pub confirmed: &'a AtomicU64,
    /// Not confirmed, whatever the reason (withdrawals aside).
    pub dropped: &'a AtomicU64,
    /// Withdrawn unpublished, its publisher refused.
    pub withdrawn: &'a AtomicU64,
    /// Answered "maybe delivered".
    pub maybe_delivered: &'a AtomicU64,
}

/// A link that publishes confirmed messages: where its counters are.
pub(crate) trait Link: Send + Sync + 'static {
    fn counters(&self) -> Counters<'_>;
}

/// One message to publish.
pub(crate) struct Publish {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    /// Its publisher's end, when it waits for the confirm.
    pub confirm: Option<Confirm>,
    /// What publishing it is called in the answers (`publish`, `append`), and its participle.
    pub verb: (&'static str, &'static str),
    /// What the publisher hears when the broker refuses it (nack).
    pub nack: fn() -> Unconfirmed,
    /// Why it may not be confirmed now, time left or not (the cluster rejoining).
    pub hold: Option<String>,
}

/// Publishes `out`, whose bytes `body` makes (only once it is sure to go: the cluster stamps
/// an envelope as it seals it), on `publisher`, and waits for the confirm in a task of its own
/// (until the publisher's deadline, when one waits). An error is the channel's: the link's
/// session ends with it, and what waits in the outbox goes on the next connection.
pub(crate) async fn publish<L: Link>(
    link: &Arc<L>,
    publisher: &lapin::Channel,
    out: Publish,
    body: impl FnOnce() -> Vec<u8>,
) -> Result<(), lapin::Error> {
    let counters = link.counters();
    let (verb, done) = out.verb;
    if !publisher.status().connected() {
        // The broker is closing the connection: nothing sent now would arrive.
        counters.dropped.fetch_add(1, Ordering::Relaxed);
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
        // Its publisher was told it failed (no confirm in time, a 503), or will be before the
        // confirm could come: publishing it would deliver what was refused, and a retry would
        // show it twice.
        let taken = match out.hold {
            None => confirm.take(Instant::now()),
            Some(reason) => Err(reason),
        };
        if let Err(reason) = taken {
            counters.withdrawn.fetch_add(1, Ordering::Relaxed);
            if let Some(confirm) = out.confirm {
                confirm.refuse(reason);
            }
            return Ok(());
        }
    }
    let body = body();
    let sent = publisher
        .basic_publish(
            out.exchange,
            out.routing_key,
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type("text/plain".into()),
        )
        .await;
    let confirm = match sent {
        Ok(confirm) => confirm,
        Err(error) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(confirm) = out.confirm {
                // Its frames may have been written, in part or whole, before the error.
                counters.maybe_delivered.fetch_add(1, Ordering::Relaxed);
                confirm.answer(Err(Unconfirmed::MaybeDelivered(format!(
                    "the {verb} failed as it was sent: {error}"
                ))));
            }
            return Err(error);
        }
    };
    let link = Arc::clone(link);
    let (waiting, nack) = (out.confirm, out.nack);
    tokio::spawn(async move {
        let waited = match &waiting {
            Some(c) => tokio::time::timeout_at(c.deadline().into(), confirm).await,
            None => Ok(confirm.await),
        };
        let counters = link.counters();
        let result = match waited {
            Ok(Ok(confirmation)) if confirmation.is_ack() => {
                counters.confirmed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Ok(_)) => Err(nack()),
            // The broker may have routed it before the connection went.
            Ok(Err(error)) => Err(Unconfirmed::MaybeDelivered(format!(
                "the connection to the broker closed after the {verb}, before its confirm: {error}"
            ))),
            Err(_) => Err(Unconfirmed::MaybeDelivered(format!(
                "{done}, but the broker's confirm did not come in time"
            ))),
        };
        if result.is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(confirm) = waiting {
            if matches!(result, Err(Unconfirmed::MaybeDelivered(_))) {
                counters.maybe_delivered.fetch_add(1, Ordering::Relaxed);
            }
            confirm.answer(result);
        }
    });
    Ok(())
}
