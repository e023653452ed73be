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

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use halley_transports::IpRange;
use hyper::header::HeaderValue;
use hyper::Method;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, oneshot};

use super::envelope::{self, Freshness, Key, Message, Rejection, Stamp};
use super::forward_mark;
use super::{Confirm, Unconfirmed};
use crate::socketio::adapter::{Adapter, BoxFuture, RemoteOp, Selection, SocketInfo};
use crate::socketio::Halley;

pub use super::envelope::{valid_node_name, NODE_NAME_LEN};

/// Operations waiting for the broker (during a reconnect, say) before new ones are dropped.
const OUTBOX: usize = 10_000;
/// The longest a live node's link sleeps before its next connection attempt: the reconnect
/// backoff's 10 s cap, times its jitter's 1.5 (`super::amqp::backoff`).
const RECONNECT_MAX: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    /// The fanout exchange every node binds its queue to.
    pub exchange: String,
    /// This node's name: [`NODE_NAME_LEN`] characters of `[A-Za-z0-9]`, unique in the cluster.
    pub node: String,
    /// Where other nodes forward HTTP requests for this node's sessions.
    pub advertise: SocketAddr,
    pub heartbeat: Duration,
    /// How long a cross-node query waits for the other nodes' answers.
    pub request_timeout: Duration,
    /// The cluster's shared secret: signs and checks envelopes and forward marks.
    pub key: Key,
    /// Addresses other nodes may advertise: requests are forwarded nowhere else.
    pub peers: Vec<IpRange>,
}

impl ClusterConfig {
    pub fn new(url: String, advertise: SocketAddr, key: Key) -> Self {
        ClusterConfig {
            url,
            exchange: "halley.cluster".into(),
            node: random_node_name(),
            advertise,
            heartbeat: Duration::from_secs(2),
            request_timeout: Duration::from_secs(1),
            key,
            peers: default_peers(),
        }
    }
}

/// Where nodes may be by default: loopback and the private ranges (RFC 1918, IPv6 ULA). Not
/// public addresses, and not link-local ones (169.254.169.254 is a cloud's metadata service):
/// a node that forwarded a session's requests, cookies included, to an address a forged or
/// mistaken hello named would hand them to whoever is there.
pub fn default_peers() -> Vec<IpRange> {
    [
        "127.0.0.0/8",
        "::1",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    .iter()
    .filter_map(|range| range.parse().ok())
    .collect()
}

/// A fresh random node name.
pub fn random_node_name() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; NODE_NAME_LEN];
    let _ = getrandom::fill(&mut raw);
    raw.iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A fresh random instance id: two processes never share a sequence.
fn random_instance() -> u64 {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    u64::from_le_bytes(raw)
}

/// Milliseconds since the Unix epoch, as envelopes and forward marks are stamped.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A queue or exchange name as AMQP carries it: at most 255 bytes (lapin panics on more), and
/// the characters RabbitMQ itself uses in the names it generates.
pub fn amqp_name(name: &str) -> Option<ShortString> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:".contains(&b);
    if name.is_empty() || !name.bytes().all(allowed) {
        return None;
    }
    ShortString::try_new(name).ok()
}

/// Where an outgoing envelope goes.
enum Route {
    /// Every node, through the fanout exchange.
    All,
    /// One node's queue, through the default exchange.
    Queue(String),
}

struct Outgoing {
    /// Sealed when published: see the module docs.
    message: Message,
    route: Route,
    confirm: Option<Confirm>,
}

struct Member {
    addr: SocketAddr,
    seen: Instant,
    /// Not heard from since this node's link came back: its queue may not be bound yet.
    rejoining: bool,
}

struct Fetch {
    waiting: HashSet<String>,
    sockets: Vec<SocketInfo>,
    done: Option<oneshot::Sender<Vec<SocketInfo>>>,
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
    members: Mutex<HashMap<String, Member>>,
    /// This node's queue on the current broker connection (answers to its queries go there).
    queue: Mutex<Option<String>>,
    fetches: Arc<Mutex<HashMap<u64, Fetch>>>,
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
            move || run(Arc::clone(&task), exchange.clone(), Arc::clone(&outbox)),
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
        let mut names: Vec<String> = lock(&self.members).keys().cloned().collect();
        names.sort();
        names
    }

    /// Where the session `sid` lives, when that is another (live) node.
    pub fn owner(&self, sid: &str) -> Option<SocketAddr> {
        let name = sid.get(..NODE_NAME_LEN)?;
        if name == self.config.node {
            return None;
        }
        lock(&self.members).get(name).map(|m| m.addr)
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
        let mut names: Vec<String> = lock(&self.members)
            .iter()
            .filter(|(_, m)| m.rejoining)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The link is back (its queue bound, listening): every known node must say hello again
    /// before a confirmed publish may go. Their silence while the link was down does not
    /// count against them.
    fn relisten(&self) {
        let now = Instant::now();
        for member in lock(&self.members).values_mut() {
            member.rejoining = true;
            member.seen = now;
        }
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
                let member = Member {
                    addr,
                    seen: Instant::now(),
                    rejoining: false,
                };
                match lock(&self.members).insert(node.clone(), member) {
                    None => tracing::info!(%node, %addr, "cluster node joined"),
                    Some(was) if was.rejoining => tracing::info!(%node, "cluster node bound again"),
                    Some(_) => {}
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
                let mut fetches = lock(&self.fetches);
                if let Some(fetch) = fetches.get_mut(&request) {
                    fetch.waiting.remove(&node);
                    fetch.sockets.extend(sockets);
                    if fetch.waiting.is_empty() {
                        if let Some(fetch) = fetches.remove(&request) {
                            let _ = fetch.done.map(|done| done.send(fetch.sockets));
                        }
                    }
                }
            }
        }
    }

    /// Forgets nodes not heard from for three heartbeats (or, since this node's link came
    /// back, for [`Cluster::rejoin_bound`]), and stops waiting for their answers.
    fn prune(&self) {
        let (limit, rejoin) = (self.config.heartbeat * 3, self.rejoin_bound());
        let gone: Vec<String> = {
            let mut members = lock(&self.members);
            let gone: Vec<String> = members
                .iter()
                .filter(|(_, m)| m.seen.elapsed() > if m.rejoining { rejoin } else { limit })
                .map(|(name, _)| name.clone())
                .collect();
            for name in &gone {
                members.remove(name);
            }
            gone
        };
        if gone.is_empty() {
            return;
        }
        tracing::warn!(nodes = ?gone, "cluster nodes left (no heartbeat)");
        if let Some(io) = self.io.get() {
            for name in &gone {
                io.node_left(name);
            }
        }
        let mut fetches = lock(&self.fetches);
        let finished: Vec<u64> = fetches
            .iter_mut()
            .filter_map(|(id, fetch)| {
                for name in &gone {
                    fetch.waiting.remove(name);
                }
                fetch.waiting.is_empty().then_some(*id)
            })
            .collect();
        for id in finished {
            if let Some(fetch) = fetches.remove(&id) {
                let _ = fetch.done.map(|done| done.send(fetch.sockets));
            }
        }
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

impl halley_transports::forward::Locator for Cluster {
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
        let waiting: HashSet<String> = lock(&self.members).keys().cloned().collect();
        let queue = lock(&self.queue).clone();
        let (Some(reply_to), false) = (queue, waiting.is_empty()) else {
            return Box::pin(std::future::ready(Vec::new()));
        };
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        lock(&self.fetches).insert(
            request,
            Fetch {
                waiting,
                sockets: Vec::new(),
                done: Some(done),
            },
        );
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
                _ => lock(&fetches)
                    .remove(&request)
                    .map(|fetch| fetch.sockets)
                    .unwrap_or_default(),
            }
        })
    }

    fn node(&self) -> &str {
        &self.config.node
    }
}

/// The outbox's receiving end. It belongs to the link, not to one run of its task: a restarted
/// task takes it up with the operations queued meanwhile.
type Outbox = Arc<tokio::sync::Mutex<mpsc::Receiver<Outgoing>>>;

/// Keeps the link up: one broker session after another, with backoff between them. It never
/// returns; a panic in it ends this run, and the supervisor starts another.
async fn run(cluster: Arc<Cluster>, exchange: ShortString, outbox: Outbox) {
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
        tokio::time::sleep(super::amqp::backoff(failures)).await;
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
    super::amqp::declare_exchange(&channel, exchange.clone(), ExchangeKind::Fanout).await?;
    let queue = super::amqp::declare_private_queue(&channel).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_six_alphanumerics() {
        let a = random_node_name();
        assert!(valid_node_name(&a), "{a}");
        assert_ne!(a, random_node_name());
        assert!(!valid_node_name("abc"));
        assert!(!valid_node_name("abc-ef"));
    }

    #[test]
    fn default_peers_are_loopback_and_private_ranges_only() {
        let peers = default_peers();
        assert_eq!(peers.len(), 6);
        let allowed = |ip: &str| peers.iter().any(|r| r.contains(ip.parse().unwrap()));
        for ip in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.31.255.1",
            "192.168.1.1",
            "fd00::1",
        ] {
            assert!(allowed(ip), "{ip}");
        }
        for ip in [
            "169.254.169.254",
            "fe80::1",
            "8.8.8.8",
            "172.32.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::",
            "2001:db8::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!allowed(ip), "{ip}");
        }
    }

    #[test]
    fn a_live_node_rejoins_within_the_bound_whatever_its_backoff() {
        for failures in 0..20 {
            assert!(super::super::amqp::backoff(failures) <= RECONNECT_MAX);
        }
    }

    #[test]
    fn amqp_names_are_short_strings_of_plain_characters() {
        assert!(amqp_name("amq.gen-JzTY20BRgKO-HjmUJj0wLg").is_some());
        assert!(amqp_name("halley.cluster").is_some());
        assert!(amqp_name(&"q".repeat(255)).is_some());
        assert!(amqp_name(&"q".repeat(256)).is_none());
        assert!(amqp_name("").is_none());
        assert!(amqp_name("a b").is_none());
        assert!(amqp_name("é").is_none());
    }
}
