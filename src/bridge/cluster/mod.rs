//! The cluster link: several Halley nodes share rooms and broadcasts through RabbitMQ.
//!
//! Each node binds its own exclusive queue to one fanout exchange (`halley.cluster` unless
//! configured). Everything a node says goes to that exchange as one JSON envelope naming the
//! sender; every node (the sender too, which skips its own) receives it:
//!
//! - `hello`, every `heartbeat` (2 s): the node's name, its queue, and the address other nodes
//!   forward HTTP requests for its sessions to. A node not heard from for three heartbeats is
//!   dropped from the membership: cross-node queries stop waiting for it, and its sessions are
//!   no longer forwarded to. An address outside the peer allowlist (`--cluster-peers`) is
//!   refused: the node is not added, and no request is ever forwarded there.
//! - `op`: a broadcast operation ([`RemoteOp`]: emit, join, leave, disconnect) that each node
//!   applies to its own sockets. Each socket lives on one node, so each gets it once.
//! - `fetch` / `sockets`: a cross-node socket query and its answers, the answers sent straight
//!   to the asking node's queue. Nodes that do not answer within `request_timeout` (1 s) are
//!   left out of the result: a dead node's sockets disappear from queries at once, and the
//!   query never takes longer than that.
//!
//! Session ids start with the owning node's name ([`NODE_NAME_LEN`] characters), so a node that
//! receives an HTTP request for another node's session knows where to forward it: no sticky
//! sessions needed behind a load balancer ([`Cluster`] is the engine's `Locator`).
//!
//! Envelopes are sealed and opened by [`super::envelope`]: HMAC-SHA256 with the cluster's
//! secret, a per-instance sequence and a timestamp. Anything unsigned, altered, stale, replayed
//! or from a name that is no node name is dropped and counted ([`ClusterStats`]), before any of
//! it is read. Envelopes are stamped when they are published, not when they are queued, so a
//! sender's sequence follows the order of its one publishing channel.
//!
//! The link reconnects with backoff after a broker loss; local traffic goes on meanwhile, and
//! operations published while it is down wait in a bounded queue (then are dropped, counted).
//! Every node's queue went with the broker, and the nodes come back one by one: until each
//! node known before the loss has said hello again (its queue is bound: it says so only
//! then), or has been silent for [`Cluster::rejoin_bound`] and is dropped as gone, a publish
//! that waits for the broker's confirm (`POST /publish`, a work-queue message) is refused, not
//! confirmed while some node's clients would miss it. One published and not confirmed when the
//! connection went is answered "maybe delivered": the broker may have routed it.
//! Should the link's task end anyway (a panic), [`super::supervise`] runs it again; the queue
//! outlives it, and `/readyz` answers 503 until the link is back.

//! # Layout
//! - [`config`]: the options, node names and the peer allowlist, pure.
//! - `membership`: the other nodes and the queries waiting for them, pure, time an input.
//! - `link`: the RabbitMQ connection that carries the envelopes.
//! - Here: [`Cluster`], this node's end (the socket.io layer's adapter and the engine's
//!   session locator), which reads each envelope and acts on it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::Method;
use tokio::sync::{mpsc, oneshot};

pub mod config;
mod link;
mod membership;

pub use super::envelope::{valid_node_name, NODE_NAME_LEN};
pub use config::{amqp_name, default_peers, random_node_name, ClusterConfig};

use super::envelope::{self, Freshness, Message, Rejection, Stamp};
use super::forward_mark;
use super::latency::now_ms;
use crate::socketio::adapter::{Adapter, BoxFuture, RemoteOp, Selection, SocketInfo};
use crate::socketio::Halley;
use link::{Outbox, Outgoing, Route};
use membership::{Fetches, Heard, Members};

/// Operations waiting for the broker (during a reconnect, say) before new ones are dropped.
const OUTBOX: usize = 10_000;
/// The longest a live node's link sleeps before its next connection attempt: the reconnect
/// backoff's 10 s cap, times its jitter's 1.5 (`crate::bridge::amqp::backoff`).
const RECONNECT_MAX: Duration = Duration::from_secs(15);

/// A fresh random instance id: two processes never share a sequence.
fn random_instance() -> u64 {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    u64::from_le_bytes(raw)
}

/// Counters for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// Operations dropped: the outbox was full, or the broker refused them.
    pub dropped: AtomicU64,
    /// Confirmed publishes refused unpublished: their publisher stopped waiting, too little
    /// time was left to wait for the confirm, or not every node was bound again yet.
    pub withdrawn: AtomicU64,
    /// Confirmed publishes published whose confirm never came (the connection went first):
    /// answered "maybe delivered".
    pub maybe_delivered: AtomicU64,
    /// Times the link's task ended or panicked and was started again.
    pub restarts: AtomicU64,
    /// Authentic envelopes that could not be read.
    pub malformed: AtomicU64,
    /// Envelopes refused, by [`REJECTION_REASONS`].
    rejected: [AtomicU64; REJECTION_REASONS.len()],
}

/// Why an envelope was refused, as the `reason` label of `halley_cluster_rejected_total`:
/// no valid MAC; a sender name that is no node name; stamped outside the freshness window;
/// seen already; a hello advertising an address outside `--cluster-peers`; a fetch whose reply
/// queue is no AMQP queue name. (Refused forward marks are the engine's count, `forward_mark`.)
pub const REJECTION_REASONS: [&str; 6] = [
    "bad_mac",
    "bad_node_name",
    "stale",
    "replayed",
    "advertise",
    "reply_to",
];

impl ClusterStats {
    fn reject(&self, reason: &'static str) {
        if let Some(i) = REJECTION_REASONS.iter().position(|&r| r == reason) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Envelopes refused so far, by reason.
    pub fn rejected(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REJECTION_REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(&reason, n)| (reason, n.load(Ordering::Relaxed)))
    }
}

/// This node's end of the cluster: the socket.io layer's [`Adapter`] and the engine's
/// session locator.
pub struct Cluster {
    config: ClusterConfig,
    io: OnceLock<Halley>,
    members: Mutex<Members>,
    /// This node's queue on the current broker connection (answers to its queries go there).
    queue: Mutex<Option<String>>,
    fetches: Arc<Mutex<Fetches>>,
    next_request: AtomicU64,
    outbox: mpsc::Sender<Outgoing>,
    stats: ClusterStats,
    /// Random per process: see [`Stamp::instance`].
    instance: u64,
    /// The last sequence number this instance stamped.
    seq: AtomicU64,
    freshness: Mutex<Freshness>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Starts the link (under [`super::supervise`]) and installs it as `io`'s adapter.
    pub fn spawn(io: &Halley, config: ClusterConfig) -> Arc<Cluster> {
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let cluster = Arc::new(Cluster {
            config,
            io: OnceLock::new(),
            members: Mutex::default(),
            queue: Mutex::default(),
            fetches: Arc::default(),
            next_request: AtomicU64::new(1),
            outbox,
            stats: ClusterStats::default(),
            instance: random_instance(),
            seq: AtomicU64::new(0),
            freshness: Mutex::default(),
        });
        if !cluster.peer_allowed(cluster.config.advertise.ip()) {
            tracing::warn!(
                advertise = %cluster.config.advertise,
                "this node's advertise address is outside --cluster-peers: nodes with the same \
                 allowlist will ignore it"
            );
        }
        let _ = cluster.io.set(io.clone());
        io.set_adapter(Arc::clone(&cluster) as Arc<dyn Adapter>);
        io.engine().set_locator(Arc::clone(&cluster) as _);
        let (Some(exchange), Ok(_)) = (
            amqp_name(&cluster.config.exchange),
            super::amqp::check_url(&cluster.config.url),
        ) else {
            // `halley` checks its options; this guards other callers of `Cluster::spawn`.
            tracing::error!(
                exchange = %cluster.config.exchange,
                "invalid cluster exchange name or broker URL: no cluster link"
            );
            return cluster;
        };
        let outbox: Outbox = Arc::new(tokio::sync::Mutex::new(rx));
        let (down, task) = (Arc::clone(&cluster), Arc::clone(&cluster));
        tokio::spawn(super::supervise::supervise(
            "cluster link",
            move |_reason| {
                down.stats.connected.store(false, Ordering::Release);
                down.stats.restarts.fetch_add(1, Ordering::Relaxed);
                *lock(&down.queue) = None;
            },
            move || link::run(Arc::clone(&task), exchange.clone(), Arc::clone(&outbox)),
        ));
        cluster
    }

    pub fn name(&self) -> &str {
        &self.config.node
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The other nodes heard from lately, by name.
    pub fn members(&self) -> Vec<String> {
        lock(&self.members).names()
    }

    /// Where the session `sid` lives, when that is another (live) node.
    pub fn owner(&self, sid: &str) -> Option<SocketAddr> {
        let name = sid.get(..NODE_NAME_LEN)?;
        if name == self.config.node {
            return None;
        }
        lock(&self.members).addr(name)
    }

    fn peer_allowed(&self, ip: IpAddr) -> bool {
        self.config.peers.iter().any(|range| range.contains(ip))
    }

    /// `message`, signed and stamped with the next sequence number.
    fn seal(&self, message: &Message) -> Vec<u8> {
        let stamp = Stamp {
            node: self.config.node.clone(),
            instance: self.instance,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            ts: now_ms(),
        };
        envelope::seal(&self.config.key, &stamp, message)
    }

    fn reject(&self, reason: &'static str, node: &str) {
        self.stats.reject(reason);
        tracing::warn!(reason, node, "cluster message refused");
    }

    /// How long a node known before this node's link went may stay silent after it is back
    /// before it is dropped as gone: a live node's link comes back within [`RECONNECT_MAX`]
    /// of the broker, and says hello at once; three heartbeats more for the connection and
    /// for a node already back to say hello again.
    pub fn rejoin_bound(&self) -> Duration {
        RECONNECT_MAX + self.config.heartbeat * 3
    }

    /// The nodes known before this node's link went that have not said hello since it is
    /// back: their queues may not be bound to the exchange yet.
    pub fn rejoining(&self) -> Vec<String> {
        lock(&self.members).rejoining()
    }

    /// The link is back (its queue bound, listening): every known node must say hello again
    /// before a confirmed publish may go. Their silence while the link was down does not
    /// count against them.
    fn relisten(&self) {
        lock(&self.members).relisten(Instant::now());
    }

    fn send(&self, message: Message, route: Route) {
        let out = Outgoing {
            message,
            route,
            confirm: None,
        };
        if self.outbox.try_send(out).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster outbox full: an operation for the other nodes was dropped");
        }
    }

    /// Handles one envelope from the cluster queue.
    fn receive(&self, body: &[u8]) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let opened = envelope::open(&self.config.key, body).and_then(|envelope| {
            if envelope.stamp.node == self.config.node {
                // Own envelopes come back through the fanout: not a replay, just skipped.
                return Ok(None);
            }
            lock(&self.freshness).check(&envelope.stamp, now_ms())?;
            Ok(Some(envelope))
        });
        let envelope = match opened {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return,
            Err(Rejection::Malformed) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("malformed cluster message ignored");
                return;
            }
            Err(rejection) => return self.reject(rejection.as_str(), ""),
        };
        let node = envelope.stamp.node;
        let Some(io) = self.io.get() else { return };
        match envelope.message {
            Message::Hello { addr, .. } => {
                if !self.peer_allowed(addr.ip()) {
                    return self.reject("advertise", &node);
                }
                match lock(&self.members).hello(node.clone(), addr, Instant::now()) {
                    Heard::Joined => tracing::info!(%node, %addr, "cluster node joined"),
                    Heard::Rebound => tracing::info!(%node, "cluster node bound again"),
                    Heard::Known => {}
                }
            }
            Message::Op { op } => io.apply_remote(op),
            Message::Fetch {
                request,
                to,
                reply_to,
            } => {
                if amqp_name(&reply_to).is_none() {
                    return self.reject("reply_to", &node);
                }
                let sockets = io.local_sockets(&to);
                self.send(
                    Message::Sockets {
                        request,
                        for_node: node,
                        sockets,
                    },
                    Route::Queue(reply_to),
                );
            }
            Message::Sockets {
                request,
                for_node,
                sockets,
            } => {
                if for_node != self.config.node {
                    return self.reject("replayed", &node);
                }
                lock(&self.fetches).answer(request, &node, sockets);
            }
        }
    }

    /// Forgets nodes not heard from for three heartbeats (or, since this node's link came
    /// back, for [`Cluster::rejoin_bound`]), and stops waiting for their answers.
    fn prune(&self) {
        let (limit, rejoin) = (self.config.heartbeat * 3, self.rejoin_bound());
        let gone = lock(&self.members).prune(Instant::now(), limit, rejoin);
        if gone.is_empty() {
            return;
        }
        tracing::warn!(nodes = ?gone, "cluster nodes left (no heartbeat)");
        if let Some(io) = self.io.get() {
            for name in &gone {
                io.node_left(name);
            }
        }
        lock(&self.fetches).forget(&gone);
    }

    fn hello(&self, queue: &str) -> Message {
        Message::Hello {
            addr: self.config.advertise,
            queue: queue.to_owned(),
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.config.node)
            .field("members", &self.members())
            .finish()
    }
}

impl crate::engine::forward::Locator for Cluster {
    fn owner(&self, sid: &str) -> Option<SocketAddr> {
        Cluster::owner(self, sid)
    }

    fn sign_forward(&self, method: &Method, target: &str, client: IpAddr) -> Option<HeaderValue> {
        let mark = forward_mark::sign(
            &self.config.key,
            &self.config.node,
            method.as_str(),
            target,
            client,
            now_ms(),
        );
        HeaderValue::from_str(&mark).ok()
    }

    fn verify_forward(&self, method: &Method, target: &str, mark: &HeaderValue) -> Option<IpAddr> {
        let vouched = forward_mark::verify(
            &self.config.key,
            method.as_str(),
            target,
            mark.as_bytes(),
            now_ms(),
        )?;
        Some(vouched.client)
    }
}

impl Adapter for Cluster {
    fn publish(&self, op: RemoteOp) {
        self.send(Message::Op { op }, Route::All);
    }

    /// Waits until the broker has it (publisher confirm), at most five request timeouts.
    /// Refused while a node known before a broker loss may not be bound again yet.
    fn publish_confirmed(&self, op: RemoteOp) -> BoxFuture<Result<(), String>> {
        let limit = self.config.request_timeout * 5;
        let (confirm, waiter) = super::confirm(limit);
        let out = Outgoing {
            message: Message::Op { op },
            route: Route::All,
            confirm: Some(confirm),
        };
        let outbox = self.outbox.clone();
        Box::pin(async move {
            match tokio::time::timeout(limit, outbox.send(out)).await {
                Ok(Ok(())) => waiter.wait().await,
                Ok(Err(_)) => Err("cluster link stopped".to_owned()),
                // Never queued, so never published.
                Err(_) => Err(format!("the cluster outbox stayed full for {limit:?}")),
            }
        })
    }

    fn fetch_sockets(&self, to: Selection) -> BoxFuture<Vec<SocketInfo>> {
        let waiting = lock(&self.members).waiting();
        let queue = lock(&self.queue).clone();
        let (Some(reply_to), false) = (queue, waiting.is_empty()) else {
            return Box::pin(std::future::ready(Vec::new()));
        };
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        lock(&self.fetches).start(request, waiting, done);
        self.send(
            Message::Fetch {
                request,
                to,
                reply_to,
            },
            Route::All,
        );
        let limit = self.config.request_timeout;
        let fetches = Arc::clone(&self.fetches);
        Box::pin(async move {
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(sockets)) => sockets,
                // Time is up: what arrived so far, without the nodes that did not answer.
                _ => lock(&fetches).give_up(request),
            }
        })
    }

    fn node(&self) -> &str {
        &self.config.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_node_rejoins_within_the_bound_whatever_its_backoff() {
        for failures in 0..20 {
            assert!(super::super::amqp::backoff(failures) <= RECONNECT_MAX);
        }
    }
}
