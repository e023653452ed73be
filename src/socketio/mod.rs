//! The Socket.IO v5 layer and the API applications program against.
//!
//! # Layout
//! - [`packet`]: the Socket.IO packet codec, pure.
//! - `client`: one Engine.IO connection as Socket.IO sees it (namespaces joined, binary
//!   reassembly); implements the engine's `Handler`.
//! - [`ns`]: namespaces, their middlewares and handlers, sockets, and the room index.
//! - [`socket`]: one client in one namespace: emit, acks, rooms, disconnect.
//! - [`limits`]: what one client may make the server keep (rooms, auth payload, connect-hook
//!   attempts), the errors that report it, and the refusal counters.
//! - [`broadcast`]: room selection and fan-out, encoding once; the cluster copy of every
//!   operation made, and another node's applied.
//! - [`adapter`]: the cluster seam: broadcasts and room operations carried to other nodes,
//!   and the shared log that recovery in a cluster goes through.
//! - [`observe`]: the [`observe::Observer`] told of sockets and rooms changing (the Admin UI),
//!   at the cost of one atomic load per change while nobody watches.
//! - [`recovery`]: connection state recovery's log of sent events and dropped sessions, pure.
//! - [`dedupe`]: the ids of the backend messages delivered lately, so that a redelivered one
//!   is dropped.
//!
//! ```no_run
//! use halley::socketio::Halley;
//! use serde_json::json;
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = Halley::builder().build();
//! io.ns("/", |socket| {
//!     let _ = socket.emit("news", &json!({ "hello": "world" }));
//!     socket.on("my other event", |_socket, event| println!("{:?}", event.args));
//! });
//! io.to("room").emit("tick", &42).ok();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! halley::server::serve(listener, io.router(), Default::default(), halley::server::shutdown_signal()).await;
//! # Ok(()) }
//! ```

pub mod adapter;
pub mod broadcast;
mod client;
pub mod dedupe;
pub mod limits;
pub mod ns;
pub mod observe;
pub mod packet;
pub mod recovery;
pub mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use crate::engine::sid::Sid;
use crate::engine::{Cors, Engine, EngineConfig, IpRange, TransportKind};
use serde::Serialize;

pub use broadcast::{BroadcastOperator, ConfirmError};
pub use limits::JoinError;
pub use ns::{ConnectError, Namespace};
pub use recovery::RecoveryConfig;
pub use socket::{AckError, AckReply, AckSender, DisconnectReason, EmitError, Event, Socket};

use adapter::{Adapter, LogRecord, SharedLog};
use limits::{RoomLimits, Stats};
use ns::{AdapterSlot, ConnectHandler, Fallback, LogSlot, Recovery};
use recovery::Persisted;

/// Socket.IO settings beyond the engine's.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// How long a new connection may take to join a namespace before it is closed.
    pub connect_timeout: Duration,
    /// The most binary attachments one packet may announce; a packet announcing more closes
    /// the connection.
    pub max_attachments: usize,
    /// The most namespaces one connection may join at once; a CONNECT beyond is answered
    /// CONNECT_ERROR `{"message":"too many namespaces"}` and the connection stays.
    pub max_namespaces: usize,
    /// How long [`Socket::emit_with_ack`] waits.
    pub ack_timeout: Duration,
    /// Connection state recovery; off (`None`) by default, as in socket.io.
    pub recovery: Option<RecoveryConfig>,
    /// The largest auth payload of a CONNECT, in bytes of JSON as sent; a CONNECT beyond is
    /// answered CONNECT_ERROR `{"message":"auth payload too large"}` and the connection stays.
    pub max_auth_payload: usize,
    /// Rooms one socket may be in, its own id room aside; [`Socket::join`] refuses more.
    pub max_rooms: usize,
    /// The longest room name [`Socket::join`] accepts, in bytes.
    pub max_room_name: usize,
    /// CONNECTs that connect hooks refused, at most, on one connection: the next CONNECT that
    /// needs the hooks is answered CONNECT_ERROR `{"message":"too many authentication
    /// attempts"}` and the connection is closed.
    pub max_auth_attempts: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            max_namespaces: 32,
            ack_timeout: Duration::from_secs(10),
            recovery: None,
            // socket.io-client sends `{}`, a token or a recovery `pid` and `offset`: tens of
            // bytes; a JWT with generous claims fits in 8 KiB several times over.
            max_auth_payload: 8 * 1024,
            // Centrifugo's `client_channel_limit`.
            max_rooms: 128,
            // An AMQP short string, the longest a bridge can carry as a routing key.
            max_room_name: 255,
            max_auth_attempts: 10,
        }
    }
}

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// An asynchronous connect check run for every namespace after its own middlewares.
pub type ConnectHook = Arc<
    dyn Fn(
            Arc<Socket>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ConnectError>> + Send>>
        + Send
        + Sync,
>;

/// State shared by the engine handler and the [`Halley`] handle.
pub(crate) struct IoShared {
    config: SocketIoConfig,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    dynamic: RwLock<Vec<(Predicate, ConnectHandler)>>,
    fallback: Fallback,
    hooks: RwLock<Vec<ConnectHook>>,
    /// The engine's outbox length, which bounds a recovery replay.
    max_outbox: usize,
    adapter: AdapterSlot,
    log: LogSlot,
    /// The shared log's next position to apply ([`NO_POSITION`] before the first record).
    log_next: AtomicU64,
    /// The room bounds, and the counters of every limit's refusals.
    limits: Arc<RoomLimits>,
    /// Ids of the backend messages delivered lately.
    seen: dedupe::Seen,
    observer: observe::ObserverSlot,
    /// Origins whose sessions may join one namespace only (the Admin UI's).
    confinement: OnceLock<Confinement>,
}

/// Sessions opened by a page of one of `origins` (and not of an origin the application
/// allows, `app`) may join namespace `ns` only: the Admin UI's origin reaches the engine like
/// an allowed one, and nothing else (see `crate::admin_ui`).
#[derive(Debug, Clone)]
pub struct Confinement {
    pub origins: Vec<String>,
    pub app: Cors,
    pub ns: String,
}

impl Confinement {
    /// Whether a session whose opening request carried `headers` is confined: its page (its
    /// `Origin`, else its `Referer`'s origin) is one of `origins` and not allowed by `app`.
    pub fn confines(&self, headers: &crate::engine::headers::Headers) -> bool {
        let page = match headers.get("origin") {
            Some(origin) => origin.to_owned(),
            None => match headers.get("referer").and_then(origin_of_url) {
                Some(origin) => origin,
                None => return false,
            },
        };
        let listed = |cors: &Cors| match cors {
            Cors::AnyOrigin => true,
            cors => crate::engine::origin::listed(cors, page.as_bytes()),
        };
        listed(&Cors::Origins(self.origins.clone())) && !listed(&self.app)
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// No record of the shared log applied yet.
const NO_POSITION: u64 = u64::MAX;

impl IoShared {
    /// A new namespace's recovery log, when recovery is on.
    fn recovery(&self) -> Option<Recovery> {
        let config = self.config.recovery.clone()?;
        // A namespace made now has read nothing of the log before its next position.
        let next = match self.log_next.load(Ordering::Acquire) {
            NO_POSITION => 0,
            next => next,
        };
        let log = self.log.get().map(|log| (&**log, next));
        Some(Recovery::new(config, self.max_outbox, log))
    }

    /// What a new namespace shares with the others.
    fn slots(&self) -> ns::Shared {
        ns::Shared {
            adapter: Arc::clone(&self.adapter),
            log: Arc::clone(&self.log),
            limits: Arc::clone(&self.limits),
            observer: Arc::clone(&self.observer),
        }
    }

    fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn hooks(&self) -> Vec<ConnectHook> {
        self.hooks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The namespace `path`, created on first use when a dynamic pattern accepts it.
    fn namespace(&self, path: &str) -> Option<Arc<Namespace>> {
        if let Some(ns) = self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Some(Arc::clone(ns));
        }
        let on_connect = self
            .dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(accepts, _)| accepts(path))
            .map(|(_, on_connect)| Arc::clone(on_connect))?;
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let ns = namespaces.entry(path.to_owned()).or_insert_with(|| {
            Namespace::new(
                path.to_owned(),
                on_connect,
                Arc::clone(&self.fallback),
                self.recovery(),
                self.slots(),
            )
        });
        Some(Arc::clone(ns))
    }
}

/// Builds a [`Halley`] server.
#[derive(Debug, Clone)]
pub struct Builder {
    engine: EngineConfig,
    socketio: SocketIoConfig,
}

impl Builder {
    /// The path served (default `/socket.io/`).
    pub fn path(mut self, path: &str) -> Self {
        let mut path = path.to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        self.engine.path = path;
        self
    }

    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.engine.session.ping_interval = d;
        self
    }

    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.engine.session.ping_timeout = d;
        self
    }

    pub fn upgrade_timeout(mut self, d: Duration) -> Self {
        self.engine.session.upgrade_timeout = d;
        self
    }

    /// How long a POST's body may take to arrive (default 30 s): 408 and the session closed
    /// beyond.
    pub fn body_read_timeout(mut self, d: Duration) -> Self {
        self.engine.body_read_timeout = d;
        self
    }

    /// How soon after a WebSocket write the next one may go (default 5 ms): frames queued
    /// meanwhile are written together. Zero writes every frame at once. See
    /// [`EngineConfig::ws_write_interval`].
    pub fn ws_write_interval(mut self, d: Duration) -> Self {
        self.engine.ws_write_interval = d;
        self
    }

    /// The largest message or POST body accepted, in bytes (default 1,000,000).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.engine.max_payload = bytes;
        self
    }

    /// Packets a client's outbox holds before the overflow policy applies.
    pub fn max_outbox(mut self, packets: usize) -> Self {
        self.engine.session.max_outbox = packets;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.socketio.connect_timeout = d;
        self
    }

    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.socketio.ack_timeout = d;
        self
    }

    /// The most binary attachments one packet may announce (default 10).
    pub fn max_attachments(mut self, n: usize) -> Self {
        self.socketio.max_attachments = n;
        self
    }

    /// Names this node in a cluster: every session id it hands out starts with `name`, so that
    /// any node can tell where a session lives (see `crate::bridge::cluster`).
    pub fn node_name(mut self, name: &str) -> Self {
        self.engine.sid_prefix = name.to_owned();
        self
    }

    /// The most namespaces one connection may join at once (default 32).
    pub fn max_namespaces(mut self, n: usize) -> Self {
        self.socketio.max_namespaces = n;
        self
    }

    /// The largest auth payload a CONNECT may carry, in bytes of JSON (default 8 KiB).
    pub fn max_auth_payload(mut self, bytes: usize) -> Self {
        self.socketio.max_auth_payload = bytes;
        self
    }

    /// Rooms one socket may be in, its own id room aside (default 128).
    pub fn max_rooms(mut self, n: usize) -> Self {
        self.socketio.max_rooms = n;
        self
    }

    /// The longest room name a socket may join, in bytes (default 255).
    pub fn max_room_name(mut self, bytes: usize) -> Self {
        self.socketio.max_room_name = bytes;
        self
    }

    /// CONNECTs refused by connect hooks (the auth hook) one connection may make before the
    /// next is refused without asking and the connection closed (default 10).
    pub fn max_auth_attempts(mut self, n: usize) -> Self {
        self.socketio.max_auth_attempts = n;
        self
    }

    /// Sessions held at once, at most (default 100,000); handshakes beyond get 503.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.engine.max_sessions = n;
        self
    }

    /// Sessions one client address (IPv6: one /64) holds at once, at most (default 1,000).
    pub fn max_sessions_per_ip(mut self, n: usize) -> Self {
        self.engine.max_sessions_per_ip = n;
        self
    }

    /// Peers whose `X-Forwarded-For` names the client, for `max_sessions_per_ip` (default:
    /// loopback, a proxy on the same host).
    pub fn trusted_proxies(mut self, proxies: &[IpRange]) -> Self {
        self.engine.trusted_proxies = proxies.to_vec();
        self
    }

    /// Turns on connection state recovery (socket.io's `connectionStateRecovery`): a client
    /// whose connection drops (closed, failed, ping timeout, closed by the server; not a
    /// deliberate namespace disconnect) and that reconnects within `max_disconnection` gets its
    /// socket back, with the same id, rooms and data, and the events it missed;
    /// [`Socket::recovered`] tells. `skip_middlewares` lets a recovered socket skip the connect
    /// middlewares and hooks (socket.io's default: true). The CONNECT reply then carries a
    /// `pid`, and every event without an ack that is not volatile carries its offset as its
    /// last argument. Per-namespace bounds: [`Builder::recovery_limits`].
    pub fn connection_state_recovery(
        mut self,
        max_disconnection: Duration,
        skip_middlewares: bool,
    ) -> Self {
        let recovery = self.socketio.recovery.get_or_insert_with(Default::default);
        recovery.max_disconnection = max_disconnection;
        recovery.skip_middlewares = skip_middlewares;
        self
    }

    /// What one namespace keeps for recovery: at most `max_packets` events and `max_bytes` of
    /// them (defaults 50,000 and 32 MiB), and `max_sessions` dropped sessions (50,000). Turns
    /// recovery on with socket.io's defaults if it was off.
    pub fn recovery_limits(
        mut self,
        max_packets: usize,
        max_bytes: usize,
        max_sessions: usize,
    ) -> Self {
        let recovery = self.socketio.recovery.get_or_insert_with(Default::default);
        recovery.max_packets = max_packets;
        recovery.max_bytes = max_bytes;
        recovery.max_sessions = max_sessions;
        self
    }

    pub fn cors(mut self, cors: Cors) -> Self {
        self.engine.cors = cors;
        self
    }

    /// The transports offered (all by default).
    pub fn transports(mut self, transports: &[TransportKind]) -> Self {
        self.engine.transports = transports.to_vec();
        self
    }

    /// Bytes after which a streaming response ends and the client reopens it (default 128 KiB).
    pub fn stream_limit(mut self, bytes: usize) -> Self {
        self.engine.stream_limit = bytes;
        self
    }

    /// Replaces the whole engine configuration.
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    pub fn build(self) -> Halley {
        let limits = Arc::new(RoomLimits {
            max_rooms: self.socketio.max_rooms,
            max_room_name: self.socketio.max_room_name,
            stats: Arc::new(Stats::default()),
        });
        let shared = Arc::new(IoShared {
            config: self.socketio,
            namespaces: RwLock::default(),
            dynamic: RwLock::default(),
            fallback: Fallback::default(),
            hooks: RwLock::default(),
            max_outbox: self.engine.session.max_outbox,
            adapter: AdapterSlot::default(),
            log: LogSlot::default(),
            log_next: AtomicU64::new(NO_POSITION),
            limits,
            seen: dedupe::Seen::default(),
            observer: observe::ObserverSlot::default(),
            confinement: OnceLock::new(),
        });
        let engine = Engine::new(self.engine, Arc::clone(&shared) as _);
        Halley { shared, engine }
    }
}

/// A Socket.IO server: namespaces, broadcasts, and the engine that carries them.
#[derive(Clone)]
pub struct Halley {
    shared: Arc<IoShared>,
    engine: Engine,
}

impl Halley {
    pub fn builder() -> Builder {
        Builder {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                ..EngineConfig::default()
            },
            socketio: SocketIoConfig::default(),
        }
    }

    /// Declares the namespace `path` and returns it, to add middlewares and namespace-wide
    /// handlers. Declaring it again replaces its connect handler and keeps everything else
    /// (sockets, rooms, middlewares, handlers).
    pub fn ns(
        &self,
        path: &str,
        on_connect: impl Fn(&Arc<Socket>) + Send + Sync + 'static,
    ) -> Arc<Namespace> {
        let on_connect: ConnectHandler = Arc::new(on_connect);
        let mut namespaces = self
            .shared
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = namespaces.get(path) {
            ns.set_on_connect(on_connect);
            return Arc::clone(ns);
        }
        let ns = Namespace::new(
            path.to_owned(),
            on_connect,
            Arc::clone(&self.shared.fallback),
            self.shared.recovery(),
            self.shared.slots(),
        );
        namespaces.insert(path.to_owned(), Arc::clone(&ns));
        ns
    }

    /// Accepts namespaces created on demand: the first CONNECT to a path that `accepts` creates
    /// it, with `on_connect` as its handler.
    pub fn dynamic_ns(
        &self,
        accepts: impl Fn(&str) -> bool + Send + Sync + 'static,
        on_connect: impl Fn(&Arc<Socket>) + Send + Sync + 'static,
    ) {
        self.shared
            .dynamic
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((Arc::new(accepts), Arc::new(on_connect)));
    }

    /// Adds an asynchronous connect check, run for a socket of any namespace after that
    /// namespace's middlewares (an authentication service, say). The CONNECT reply waits for it;
    /// an `Err` refuses the socket with CONNECT_ERROR.
    pub fn connect_hook<F, Fut>(&self, hook: F)
    where
        F: Fn(Arc<Socket>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        let hook: ConnectHook = Arc::new(move |socket| Box::pin(hook(socket)));
        self.shared
            .hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Handles events that no socket or namespace handler takes, in every namespace (the AMQP
    /// bridge forwards them to the backend). Replaces the previous one.
    pub fn on_unhandled(
        &self,
        handler: impl Fn(&Arc<Socket>, &str, Event) + Send + Sync + 'static,
    ) {
        *self
            .shared
            .fallback
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    }

    /// Whether a CONNECT to `path` would find a namespace: declared, created already, or
    /// accepted by a dynamic pattern (without creating it).
    pub fn serves(&self, path: &str) -> bool {
        self.of(path).is_some()
            || self
                .shared
                .dynamic
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(accepts, _)| accepts(path))
    }

    /// Every namespace served now (declared, or created dynamically), by path.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        let mut all = self.shared.namespaces();
        all.sort_by(|a, b| a.path().cmp(b.path()));
        all
    }

    /// Installs the observer told of every socket and room change (see [`observe`]). Set
    /// once; later calls are ignored.
    pub fn set_observer(&self, observer: Arc<dyn observe::Observer>) {
        let _ = self.shared.observer.set(observer);
    }

    /// Confines the sessions opened from some origins to one namespace (see [`Confinement`]).
    /// Set once, before serving; later calls are ignored.
    pub fn confine(&self, confinement: Confinement) {
        let _ = self.shared.confinement.set(confinement);
    }

    /// The namespace `path`, if declared (or created dynamically).
    pub fn of(&self, path: &str) -> Option<Arc<Namespace>> {
        self.shared
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    fn root(&self) -> BroadcastOperator {
        match self.of("/") {
            Some(ns) => ns.broadcast(),
            // Broadcasting on an undeclared root namespace reaches nobody.
            None => Namespace::new(
                "/".into(),
                Arc::new(|_: &Arc<Socket>| {}),
                Fallback::default(),
                None,
                self.shared.slots(),
            )
            .broadcast(),
        }
    }

    /// A broadcast to every socket of the root namespace (narrow it with `to` / `except`).
    pub fn broadcast(&self) -> BroadcastOperator {
        self.root()
    }

    /// A broadcast to `room` in the root namespace.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.root().to(room)
    }

    /// Emits to every socket of the root namespace.
    pub fn emit(&self, event: &str, data: &impl Serialize) -> Result<usize, EmitError> {
        self.root().emit(event, data)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The Socket.IO settings it was built with.
    pub fn config(&self) -> &SocketIoConfig {
        &self.shared.config
    }

    /// Refusals by the Socket.IO layer's limits (rooms, CONNECTs), for `/metrics`.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.limits.stats
    }

    /// Joins a cluster: from now on every broadcast and room operation is also handed to
    /// `adapter` for the other nodes. Set once; later calls are ignored.
    pub fn set_adapter(&self, adapter: Arc<dyn Adapter>) {
        let _ = self.shared.adapter.set(adapter);
    }

    /// Installs a cluster's shared log: with connection state recovery on, logged events and
    /// sessions go through it from now on (see [`SharedLog`]), so that a client may recover
    /// through any node. Set once, before serving; later calls are ignored.
    pub fn set_shared_log(&self, log: Arc<dyn SharedLog>) {
        if self.shared.log.set(Arc::clone(&log)).is_err() {
            return;
        }
        for ns in self.shared.namespaces() {
            ns.share_log(&*log, 0);
        }
    }

    /// Whether a shared log is installed and recovery is on (emits go through the log).
    pub fn logs_shared(&self) -> bool {
        self.shared.config.recovery.is_some() && self.shared.log.get().is_some()
    }

    /// Applies the shared log's record at `position`, in log order: an event is delivered to
    /// this node's sockets (unless its backend id came earlier in the log), another node's
    /// session record updates what may be restored here. A position at or before one applied
    /// already is ignored; one past the next expected means the log skipped (retention, or it
    /// was created again), and events before it may be missing here.
    pub fn apply_log(&self, position: u64, record: LogRecord) {
        let next = self.shared.log_next.load(Ordering::Acquire);
        if next != NO_POSITION && position < next {
            return;
        }
        self.shared.log_next.store(position + 1, Ordering::Release);
        if next != position {
            for ns in self.shared.namespaces() {
                ns.raise_floor(position);
            }
        }
        match record {
            LogRecord::Emit {
                to,
                event,
                args,
                binary,
                id,
            } => {
                if id.is_some_and(|id| !self.first_delivery(&id)) {
                    tracing::debug!(
                        position,
                        "logged emit of a message delivered already: dropped"
                    );
                    return;
                }
                if let Some(ns) = self.of(&to.ns) {
                    ns.deliver_logged(position, &to, &event, &args, &binary);
                }
            }
            LogRecord::Session {
                ns,
                node,
                state,
                id,
                pid,
                rooms,
                data,
                since,
            } => {
                let Some(log) = self.shared.log.get() else {
                    return;
                };
                if node == log.node() {
                    // Applied when this node wrote it.
                    return;
                }
                let (Some(id), Some(pid), Some(ns)) =
                    (Sid::parse(&id), Sid::parse(&pid), self.of(&ns))
                else {
                    tracing::debug!(
                        position,
                        "session record for no socket of this node's namespaces"
                    );
                    return;
                };
                ns.apply_session(
                    Persisted {
                        id,
                        pid,
                        rooms,
                        data,
                        since,
                    },
                    state,
                    &node,
                );
            }
        }
    }

    /// Node `node` left the cluster: the sessions live there are dropped from now on (and
    /// expire after the recovery window).
    pub fn node_left(&self, node: &str) {
        for ns in self.shared.namespaces() {
            ns.node_left(node);
        }
    }

    /// Whether the backend message `id` was delivered lately, without counting or
    /// remembering it.
    pub fn delivered_already(&self, id: &str) -> bool {
        self.shared.seen.contains(id)
    }

    /// Whether the backend message `id` is delivered for the first time (it is remembered
    /// from now on); `false` for a duplicate, which is counted. See [`dedupe`].
    pub fn first_delivery(&self, id: &str) -> bool {
        let first = self.shared.seen.first(id);
        if !first {
            self.shared.limits.stats.count_duplicate();
        }
        first
    }

    /// Forgets the backend message `id`: its delivery failed and it will come again.
    pub fn forget_delivery(&self, id: &str) {
        self.shared.seen.forget(id);
    }
}
