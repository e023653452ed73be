//! Bridges between backends and browsers: RabbitMQ (AMQP 0-9-1) and an HTTP publish API.
//!
//! # Layout
//! - [`mapping`]: a backend message (content type, routing headers, body) → an emit, pure.
//! - [`amqp`]: the RabbitMQ bridge: consume queues and exchange bindings, publish unhandled
//!   client events (refusing names AMQP cannot carry, and events beyond the outbound queue's
//!   count and byte bounds), answer client acks from replies, reconnect with backoff; one file
//!   per concern (config, stats, connection, delivery, outbound, replies).
//! - [`latency`]: the publish-to-delivery histogram both inbound paths record into, and the
//!   wall clock producers' stamps and cluster envelopes are compared with.
//! - [`http`]: JSON request bodies and answers, shared by the endpoints below.
//! - [`publish`]: `POST /publish`, the HTTP inbound path; [`sockets`]: `POST /sockets`, acting
//!   on selected sockets cluster-wide (both served by `crate::admin`, whose guard authorizes
//!   them).
//! - [`health`]: `/healthz` and `/readyz` from the broker links' state (detailed on the admin
//!   listener, status-only on the public one).
//! - [`auth`]: the auth hook: the handshake's Cookie and auth payload, asked of an application
//!   URL before a socket connects.
//! - [`subscribe`]: the `subscribe` / `unsubscribe` convention for browsers in no-code mode.
//! - [`envelope`]: what cluster nodes say to each other, signed with the cluster's secret, and
//!   the freshness check for live traffic; pure.
//! - [`forward_mark`]: the signed `x-halley-forwarded` value of a forwarded request; pure.
//! - [`cluster`]: the cluster link over RabbitMQ: membership (pure, apart from the lapin IO
//!   that carries it), broadcasts, cross-node queries, the engine's session locator.
//! - [`log`]: the shared log on a RabbitMQ stream that connection state recovery goes through
//!   in a cluster, so that a client recovers through any node.
//! - `confirmed`: one message the cluster link or the shared log publishes with a confirm:
//!   refused while the connection closes or once withdrawn, else published, then confirmed
//!   or "maybe delivered"; both links' one way of answering a waiting publisher, counted.
//! - [`supervise`]: runs the bridge's and the cluster link's tasks again when they end or
//!   panic, with backoff; knows nothing of brokers.
//!
//! Both inbound paths end in [`deliver`], which queues the emit into every local target outbox
//! before it returns: an AMQP message is acked only after that. It hands the emit to the
//! Socket.IO layer's one broadcast path
//! ([`BroadcastOperator::emit_confirmed`](crate::socketio::BroadcastOperator::emit_confirmed)),
//! which makes the cluster's copy. What goes to the other nodes
//! waits for the broker's confirm through a [`Confirm`], which tells a publisher refused
//! ([`Unconfirmed::NotDelivered`]) from one the broker may have served anyway
//! ([`Unconfirmed::MaybeDelivered`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub mod amqp;
pub mod auth;
pub mod cluster;
mod confirmed;
pub mod envelope;
pub mod forward_mark;
pub mod health;
pub mod http;
pub mod latency;
pub mod log;
pub mod mapping;
pub mod publish;
pub mod sockets;
pub mod subscribe;
pub mod supervise;

use crate::socketio::adapter::Selection;
use crate::socketio::{BroadcastOperator, ConfirmError, EmitError, Halley};
use mapping::Emit;

// `halley::bridge::Latency` and friends, as the tests and library callers name them.
pub use latency::{now_ms, Latency, Source};

/// Why an emit could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("namespace {0:?} is not served")]
    UnknownNamespace(String),
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error(transparent)]
    Malformed(#[from] mapping::Refusal),
    /// Delivered to this node's sockets, but the cluster did not confirm it. With
    /// `maybe_delivered`, it was published and the confirm never came: the other nodes may
    /// have it or not, and a retry should carry the same id.
    #[error("delivered to {local} local sockets, {}: {reason}", match maybe_delivered {
        true => "the other nodes may have it or not",
        false => "but not to the cluster",
    })]
    Cluster {
        local: usize,
        reason: String,
        maybe_delivered: bool,
    },
}

impl DeliverError {
    fn unconfirmed(local: usize, reason: String) -> DeliverError {
        let (reason, maybe_delivered) = match Unconfirmed::from_reason(reason) {
            Unconfirmed::NotDelivered(reason) => (reason, false),
            Unconfirmed::MaybeDelivered(reason) => (reason, true),
        };
        DeliverError::Cluster {
            local,
            reason,
            maybe_delivered,
        }
    }
}

/// Why a confirmed publish to the other nodes failed, as its publisher must hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unconfirmed {
    /// Never published (withdrawn, refused by the link), or refused by the broker's only
    /// queue: no other node delivers it.
    NotDelivered(String),
    /// Published, and the confirm never came (the connection dropped first, or time ran out):
    /// the broker may have routed it, so other nodes may deliver it or not.
    MaybeDelivered(String),
}

/// How [`Unconfirmed::MaybeDelivered`] travels in the `String` error of
/// [`crate::socketio::adapter::Adapter::publish_confirmed`] and
/// [`crate::socketio::adapter::SharedLog::append_confirmed`].
const MAYBE_DELIVERED: &str = "maybe delivered: ";

impl Unconfirmed {
    /// The adapter traits' error string.
    pub(crate) fn into_reason(self) -> String {
        match self {
            Unconfirmed::NotDelivered(reason) => reason,
            Unconfirmed::MaybeDelivered(reason) => format!("{MAYBE_DELIVERED}{reason}"),
        }
    }

    /// Back from the adapter traits' error string.
    pub(crate) fn from_reason(reason: String) -> Unconfirmed {
        match reason.strip_prefix(MAYBE_DELIVERED) {
            Some(rest) => Unconfirmed::MaybeDelivered(rest.to_owned()),
            None => Unconfirmed::NotDelivered(reason),
        }
    }
}

/// What became of a confirmed publish: whichever of its publisher (at its deadline) and its
/// link (about to publish it) moves first decides, once.
const WAITING: u8 = 0;
const PUBLISHED: u8 = 1;
const WITHDRAWN: u8 = 2;

/// The publish's state, shared by the link's [`Confirm`] and the publisher's [`Waiter`].
#[derive(Debug)]
struct Ticket {
    deadline: Instant,
    /// Less than this left of the deadline, the link withdraws the publish instead.
    margin: Duration,
    state: AtomicU8,
}

impl Ticket {
    /// Moves the state from [`WAITING`]; answers the state it was in.
    fn settle(&self, to: u8) -> u8 {
        match self
            .state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => WAITING,
            Err(was) => was,
        }
    }
}

/// The link's end of a confirmed publish (it travels in the link's outbox with the message).
#[derive(Debug)]
pub(crate) struct Confirm {
    ticket: Arc<Ticket>,
    verdict: oneshot::Sender<Result<(), Unconfirmed>>,
}

/// The publisher's end of a confirmed publish.
#[derive(Debug)]
pub(crate) struct Waiter {
    ticket: Arc<Ticket>,
    verdict: oneshot::Receiver<Result<(), Unconfirmed>>,
}

/// A confirmed publish whose publisher waits at most `limit`. The link withdraws it when less
/// than a fifth of `limit` is left (1 s of 5 s): a confirm takes milliseconds on a healthy
/// link, and one published at the last moment would be confirmed after its publisher was told
/// it failed.
pub(crate) fn confirm(limit: Duration) -> (Confirm, Waiter) {
    let ticket = Arc::new(Ticket {
        deadline: Instant::now() + limit,
        margin: limit / 5,
        state: AtomicU8::new(WAITING),
    });
    let (tx, rx) = oneshot::channel();
    (
        Confirm {
            ticket: Arc::clone(&ticket),
            verdict: tx,
        },
        Waiter {
            ticket,
            verdict: rx,
        },
    )
}

impl Confirm {
    /// The link, about to publish: `Ok` when it may, the publisher still waiting with enough
    /// time left; else it is withdrawn, and this says why (the caller refuses it and counts).
    pub(crate) fn take(&self, now: Instant) -> Result<(), String> {
        let ticket = &self.ticket;
        if ticket.deadline.saturating_duration_since(now) < ticket.margin {
            ticket.settle(WITHDRAWN);
            return Err(format!(
                "withdrawn unpublished: less than {:?} was left before the confirm deadline",
                ticket.margin
            ));
        }
        match ticket.settle(PUBLISHED) {
            WAITING => Ok(()),
            _ => Err("withdrawn unpublished: its publisher stopped waiting".to_owned()),
        }
    }

    /// The link refuses it unpublished (the caller counts it).
    pub(crate) fn refuse(self, reason: String) {
        self.ticket.settle(WITHDRAWN);
        self.answer(Err(Unconfirmed::NotDelivered(reason)));
    }

    /// The verdict, when the publisher still waits for it.
    pub(crate) fn answer(self, verdict: Result<(), Unconfirmed>) {
        let _ = self.verdict.send(verdict);
    }

    /// The publisher's deadline: the link waits for the broker's confirm until then.
    pub(crate) fn deadline(&self) -> Instant {
        self.ticket.deadline
    }
}

impl Waiter {
    /// The link's verdict, or at the deadline what the publisher can say without it: nothing
    /// was published (it is withdrawn now), or it was and may have been delivered. The error
    /// is [`Unconfirmed::into_reason`]'s, as the adapter traits carry it.
    pub(crate) async fn wait(self) -> Result<(), String> {
        let Waiter { ticket, verdict } = self;
        let deadline = tokio::time::Instant::from_std(ticket.deadline);
        let verdict = match tokio::time::timeout_at(deadline, verdict).await {
            Ok(Ok(verdict)) => verdict,
            // Time is up, or the link dropped the publish without a word (a panic).
            _ => Err(give_up(&ticket)),
        };
        verdict.map_err(Unconfirmed::into_reason)
    }
}

/// The publisher's verdict without the link's: whether the link had published it.
fn give_up(ticket: &Ticket) -> Unconfirmed {
    match ticket.settle(WITHDRAWN) {
        PUBLISHED => Unconfirmed::MaybeDelivered(
            "published, but the broker's confirm did not come in time".to_owned(),
        ),
        _ => {
            Unconfirmed::NotDelivered("no broker confirm in time: withdrawn unpublished".to_owned())
        }
    }
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
    let Emit {
        namespace,
        event,
        rooms,
        args,
        binary,
        id,
    } = emit;
    let ns = io
        .of(&namespace)
        .ok_or_else(|| DeliverError::UnknownNamespace(namespace.clone()))?;
    if let Some(id) = &id {
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
    let to = Selection {
        ns: namespace,
        rooms,
        ..Selection::default()
    };
    let op = BroadcastOperator::selecting(ns, to);
    let delivered = match reach {
        Reach::Cluster => op
            .emit_confirmed(&event, args, binary, id.clone())
            .await
            .map_err(DeliverError::from),
        Reach::Local => op
            .local()
            .emit_args(&event, args, binary)
            .map_err(DeliverError::from),
    };
    if let (Err(_), Some(id)) = (&delivered, &id) {
        // It comes again (a requeue, the publisher's retry): not as a duplicate.
        io.forget_delivery(id);
    }
    delivered.map(Delivered::Sockets)
}

impl From<ConfirmError> for DeliverError {
    fn from(error: ConfirmError) -> DeliverError {
        match error {
            ConfirmError::Emit(error) => DeliverError::Emit(error),
            ConfirmError::Unconfirmed { local, reason } => DeliverError::unconfirmed(local, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_with_less_than_a_fifth_of_its_wait_left_is_withdrawn_not_published() {
        let (confirm, waiter) = super::confirm(Duration::from_secs(5));
        let late = Instant::now() + Duration::from_millis(4_500);
        let reason = confirm.take(late).unwrap_err();
        assert!(reason.contains("withdrawn unpublished"), "{reason}");
        assert!(matches!(
            give_up(&waiter.ticket),
            Unconfirmed::NotDelivered(_)
        ));
    }

    #[test]
    fn a_publish_the_link_took_may_have_been_delivered_when_its_publisher_gives_up() {
        let (confirm, waiter) = super::confirm(Duration::from_secs(5));
        assert_eq!(confirm.take(Instant::now()), Ok(()));
        assert!(matches!(
            give_up(&waiter.ticket),
            Unconfirmed::MaybeDelivered(_)
        ));
    }

    #[test]
    fn a_publish_whose_publisher_gave_up_is_not_published() {
        let (confirm, waiter) = super::confirm(Duration::from_secs(5));
        assert!(matches!(
            give_up(&waiter.ticket),
            Unconfirmed::NotDelivered(_)
        ));
        let reason = confirm.take(Instant::now()).unwrap_err();
        assert!(reason.contains("stopped waiting"), "{reason}");
    }

    #[tokio::test]
    async fn the_publisher_hears_the_links_verdict_through_the_adapters_string() {
        let (confirm, waiter) = super::confirm(Duration::from_secs(5));
        confirm.take(Instant::now()).unwrap();
        confirm.answer(Err(Unconfirmed::MaybeDelivered("reset".into())));
        let reason = waiter.wait().await.unwrap_err();
        assert_eq!(
            Unconfirmed::from_reason(reason),
            Unconfirmed::MaybeDelivered("reset".into())
        );
        let (confirm, waiter) = super::confirm(Duration::from_secs(5));
        confirm.refuse("cluster rejoining".into());
        let reason = waiter.wait().await.unwrap_err();
        assert_eq!(
            Unconfirmed::from_reason(reason),
            Unconfirmed::NotDelivered("cluster rejoining".into())
        );
        let (confirm, waiter) = super::confirm(Duration::from_secs(5));
        confirm.answer(Ok(()));
        assert_eq!(waiter.wait().await, Ok(()));
    }
}
