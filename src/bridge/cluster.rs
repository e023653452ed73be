//! The cluster link: several Halley nodes share rooms and broadcasts through RabbitMQ.
//!
//! Each node binds its own exclusive queue to one fanout exchange (`halley.cluster` unless
//! configured). Everything a node says goes to that exchange as one JSON envelope naming the
//! sender; every node (the sender too, which skips its own) receives it:
//!
//! - `hello`, every `heartbeat` (2 s): the node's name, its queue, and the address other nodes
//!   forward HTTP requests for its sessions to. A node not heard from for three heartbeats is
//!   dropped from the membership: cross-node queries stop waiting for it, and its sessions are
//!   no longer forwarded to.
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
//! The link reconnects with backoff after a broker loss; local traffic goes on meanwhile, and
//! operations published while it is down wait in a bounded queue (then are dropped, counted).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::socketio::adapter::{Adapter, BoxFuture, RemoteOp, Selection, SocketInfo};
use crate::socketio::Halley;

/// Length of a node name, which is also the prefix of every session id it hands out.
pub const NODE_NAME_LEN: usize = 6;

/// Operations waiting for the broker (during a reconnect, say) before new ones are dropped.
const OUTBOX: usize = 10_000;

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
}

impl ClusterConfig {
    pub fn new(url: String, advertise: SocketAddr) -> Self {
        ClusterConfig {
            url,
            exchange: "halley.cluster".into(),
            node: random_node_name(),
            advertise,
            heartbeat: Duration::from_secs(2),
            request_timeout: Duration::from_secs(1),
        }
    }
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

/// Whether `name` can be a node name.
pub fn valid_node_name(name: &str) -> bool {
    name.len() == NODE_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One message between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    message: Message,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    Hello {
        addr: SocketAddr,
        queue: String,
    },
    Op {
        op: RemoteOp,
    },
    Fetch {
        request: u64,
        to: Selection,
        reply_to: String,
    },
    Sockets {
        request: u64,
        sockets: Vec<SocketInfo>,
    },
}

/// Where an outgoing envelope goes.
enum Route {
    /// Every node, through the fanout exchange.
    All,
    /// One node's queue, through the default exchange.
    Queue(String),
}

struct Outgoing {
    body: Vec<u8>,
    route: Route,
    confirmed: Option<oneshot::Sender<Result<(), String>>>,
}

struct Member {
    addr: SocketAddr,
    seen: Instant,
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
    pub malformed: AtomicU64,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Starts the link and installs it as `io`'s adapter.
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
        });
        let _ = cluster.io.set(io.clone());
        io.set_adapter(Arc::clone(&cluster) as Arc<dyn Adapter>);
        io.engine().set_locator(Arc::clone(&cluster) as _);
        tokio::spawn(run(Arc::clone(&cluster), rx));
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

    fn envelope(&self, message: Message) -> Vec<u8> {
        let envelope = Envelope {
            node: self.config.node.clone(),
            message,
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    fn send(&self, message: Message, route: Route) {
        let out = Outgoing {
            body: self.envelope(message),
            route,
            confirmed: None,
        };
        if self.outbox.try_send(out).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster outbox full: an operation for the other nodes was dropped");
        }
    }

    /// Handles one envelope from the cluster queue.
    fn receive(&self, body: &[u8]) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "malformed cluster message ignored");
                return;
            }
        };
        if envelope.node == self.config.node {
            return;
        }
        let Some(io) = self.io.get() else { return };
        match envelope.message {
            Message::Hello { addr, .. } => {
                let member = Member {
                    addr,
                    seen: Instant::now(),
                };
                if lock(&self.members)
                    .insert(envelope.node.clone(), member)
                    .is_none()
                {
                    tracing::info!(node = %envelope.node, %addr, "cluster node joined");
                }
            }
            Message::Op { op } => io.apply_remote(op),
            Message::Fetch {
                request,
                to,
                reply_to,
            } => {
                let sockets = io.local_sockets(&to);
                self.send(
                    Message::Sockets { request, sockets },
                    Route::Queue(reply_to),
                );
            }
            Message::Sockets { request, sockets } => {
                let mut fetches = lock(&self.fetches);
                if let Some(fetch) = fetches.get_mut(&request) {
                    fetch.waiting.remove(&envelope.node);
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

    /// Forgets nodes not heard from for three heartbeats, and stops waiting for their answers.
    fn prune(&self) {
        let limit = self.config.heartbeat * 3;
        let gone: Vec<String> = {
            let mut members = lock(&self.members);
            let gone: Vec<String> = members
                .iter()
                .filter(|(_, m)| m.seen.elapsed() > limit)
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

    fn hello(&self, queue: &str) -> Vec<u8> {
        self.envelope(Message::Hello {
            addr: self.config.advertise,
            queue: queue.to_owned(),
        })
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
}

impl Adapter for Cluster {
    fn publish(&self, op: RemoteOp) {
        self.send(Message::Op { op }, Route::All);
    }

    /// Waits until the broker has it (publisher confirm), at most five request timeouts.
    fn publish_confirmed(&self, op: RemoteOp) -> BoxFuture<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let out = Outgoing {
            body: self.envelope(Message::Op { op }),
            route: Route::All,
            confirmed: Some(tx),
        };
        let outbox = self.outbox.clone();
        let limit = self.config.request_timeout * 5;
        Box::pin(async move {
            let confirmed = async {
                outbox
                    .send(out)
                    .await
                    .map_err(|_| "cluster link stopped".to_owned())?;
                rx.await
                    .map_err(|_| "cluster connection lost before the confirm".to_owned())?
            };
            match tokio::time::timeout(limit, confirmed).await {
                Ok(result) => result,
                Err(_) => Err(format!("no broker confirm within {limit:?}")),
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

/// Keeps the link up: one broker session after another, with backoff between them.
async fn run(cluster: Arc<Cluster>, mut outbox: mpsc::Receiver<Outgoing>) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let error = match session(&cluster, &mut outbox).await {
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
    outbox: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), lapin::Error> {
    let config = &cluster.config;
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    super::amqp::declare_exchange(&channel, &config.exchange, ExchangeKind::Fanout).await?;
    let queue = super::amqp::declare_private_queue(&channel).await?;
    channel
        .queue_bind(
            queue.name().clone(),
            config.exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Cluster messages are live traffic: a node that was away has no sockets that missed them.
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            format!("halley-cluster-{}", config.node).as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
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
                let hello = Outgoing { body: cluster.hello(&queue_name), route: Route::All, confirmed: None };
                publish(cluster, &publisher, hello).await?;
            }
        }
    }
}

async fn publish(
    cluster: &Arc<Cluster>,
    publisher: &lapin::Channel,
    out: Outgoing,
) -> Result<(), lapin::Error> {
    let (exchange, routing_key) = match &out.route {
        Route::All => (cluster.config.exchange.as_str(), ""),
        Route::Queue(queue) => ("", queue.as_str()),
    };
    let sent = publisher
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &out.body,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await;
    let confirm = match sent {
        Ok(confirm) => confirm,
        Err(error) => {
            cluster.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(tx) = out.confirmed {
                let _ = tx.send(Err(error.to_string()));
            }
            return Err(error);
        }
    };
    let cluster = Arc::clone(cluster);
    let confirmed = out.confirmed;
    tokio::spawn(async move {
        let result = match confirm.await {
            Ok(confirmation) if confirmation.is_ack() => {
                cluster.stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(_) => Err("the broker refused the message".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        if result.is_err() {
            cluster.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(tx) = confirmed {
            let _ = tx.send(result);
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
    fn envelopes_are_tagged_json() {
        let envelope = Envelope {
            node: "AbCd12".into(),
            message: Message::Fetch {
                request: 7,
                to: Selection {
                    ns: "/".into(),
                    rooms: vec!["r".into()],
                    ..Selection::default()
                },
                reply_to: "amq.gen-1".into(),
            },
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(
            text,
            r#"{"node":"AbCd12","kind":"fetch","request":7,"to":{"ns":"/","rooms":["r"]},"reply_to":"amq.gen-1"}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.message, Message::Fetch { request: 7, .. }));
    }
}
