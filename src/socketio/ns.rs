//! Namespaces: the connect handler and middlewares, namespace-wide event handlers, the sockets
//! connected, and the room index (room → socket ids) that broadcasts read.
//!
//! The index is the only place rooms live besides each socket's own set; both change together in
//! [`Socket::join`](super::Socket::join) / `leave` / `close`. Map guards are never held while
//! calling a handler or sending.
//!
//! With connection state recovery on, the namespace also owns its recovery log
//! ([`super::recovery`]). Logged events are encoded with their offset and delivered under the
//! log's lock, and a restored socket is registered, replayed and answered under it too: so every
//! client sees logged events in offset order, and a restore gets each event either in its replay
//! or live, never both and never neither. Nothing under that lock calls application code or
//! waits (pushing into an outbox never blocks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::engine::sid::Sid;
use crate::engine::Frame;
use bytes::Bytes;
use dashmap::DashMap;
use serde_json::Value;

use super::adapter::{Adapter, LogRecord, Selection, SharedLog};
use super::broadcast::BroadcastOperator;
use super::limits::RoomLimits;
use super::observe::{watcher, Observer, ObserverSlot};
use super::packet::{self, OpenEvent};
use super::recovery::{Persisted, RecoveryConfig, SessionState, Store, Target};
use super::socket::{Event, EventHandler, Socket};
use super::ConnectHook;

pub(crate) type ConnectHandler = Arc<dyn Fn(&Arc<Socket>) + Send + Sync>;
/// What handles events that no socket or namespace handler takes (the AMQP bridge forwards
/// them); shared by every namespace of a server.
pub(crate) type Fallback = Arc<RwLock<Option<UnhandledHandler>>>;
pub(crate) type UnhandledHandler = Arc<dyn Fn(&Arc<Socket>, &str, Event) + Send + Sync>;
type Middleware = Arc<dyn Fn(&Arc<Socket>) -> Result<(), ConnectError> + Send + Sync>;

/// A refusal from a connect middleware, sent to the client as CONNECT_ERROR
/// `{"message": ..., "data": ...}` (`data` omitted when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("message".into(), Value::from(self.message.as_str()));
        if let Some(data) = &self.data {
            obj.insert("data".into(), data.clone());
        }
        Value::Object(obj)
    }
}

/// A namespace's recovery log, and the most frames one replay may queue (half the client's
/// outbox, so live traffic still fits behind it).
pub(crate) struct Recovery {
    store: Mutex<Store>,
    replay_limit: usize,
}

impl Recovery {
    /// A namespace's log; with a cluster's shared `log`, following it from position `floor`.
    pub(crate) fn new(
        config: RecoveryConfig,
        max_outbox: usize,
        log: Option<(&dyn SharedLog, u64)>,
    ) -> Self {
        // The tag only tells this log's offsets from others': a clock fallback is good enough.
        let tag = getrandom::u32().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        });
        let mut store = Store::new(config, tag);
        if let Some((log, floor)) = log {
            store.share(log.tag(), floor, log.node());
        }
        Recovery {
            store: Mutex::new(store),
            replay_limit: (max_outbox / 2).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Every `Store` method leaves it consistent before anything that could panic.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Socket.IO namespace.
pub struct Namespace {
    path: String,
    on_connect: RwLock<ConnectHandler>,
    middlewares: RwLock<Vec<Middleware>>,
    handlers: RwLock<HashMap<String, EventHandler>>,
    fallback: Fallback,
    sockets: DashMap<Sid, Arc<Socket>>,
    rooms: DashMap<String, HashSet<Sid>>,
    recovery: Option<Recovery>,
    adapter: AdapterSlot,
    log: LogSlot,
    limits: Arc<RoomLimits>,
    observer: ObserverSlot,
    /// This namespace's own asynchronous connect checks, run after its middlewares.
    hooks: RwLock<Vec<ConnectHook>>,
    /// Whether the server-wide connect hooks ([`super::Halley::connect_hook`]) skip it.
    own_hooks_only: std::sync::atomic::AtomicBool,
}

/// What every namespace of a server shares: the cluster's adapter and log slots, the room
/// limits, the observer slot.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) adapter: AdapterSlot,
    pub(crate) log: LogSlot,
    pub(crate) limits: Arc<RoomLimits>,
    pub(crate) observer: ObserverSlot,
}

/// The cluster adapter, once installed; shared by every namespace of a server.
pub(crate) type AdapterSlot = Arc<OnceLock<Arc<dyn Adapter>>>;
/// The cluster's shared log, once installed; shared likewise.
pub(crate) type LogSlot = Arc<OnceLock<Arc<dyn SharedLog>>>;

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("path", &self.path)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(
        path: String,
        on_connect: ConnectHandler,
        fallback: Fallback,
        recovery: Option<Recovery>,
        shared: Shared,
    ) -> Arc<Self> {
        let Shared {
            adapter,
            log,
            limits,
            observer,
        } = shared;
        Arc::new(Namespace {
            path,
            on_connect: RwLock::new(on_connect),
            fallback,
            middlewares: RwLock::default(),
            handlers: RwLock::default(),
            sockets: DashMap::new(),
            rooms: DashMap::new(),
            recovery,
            adapter,
            log,
            limits,
            observer,
            hooks: RwLock::default(),
            own_hooks_only: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The observer, when one is installed.
    pub(crate) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.get()
    }

    /// The observer, when one is installed and watching.
    pub(crate) fn watcher(&self) -> Option<&Arc<dyn Observer>> {
        watcher(&self.observer)
    }

    /// Adds an asynchronous connect check for this namespace only, run after its middlewares
    /// (and after the server-wide hooks, unless [`Namespace::own_hooks_only`]). The CONNECT
    /// reply waits for it; an `Err` refuses the socket with CONNECT_ERROR, and counts towards
    /// the connection's `max_auth_attempts`.
    pub fn connect_hook<F, Fut>(&self, hook: F) -> &Self
    where
        F: Fn(Arc<Socket>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        let hook: ConnectHook = Arc::new(move |socket| Box::pin(hook(socket)));
        self.hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
        self
    }

    /// Makes the server-wide connect hooks (an application's auth hook) skip this namespace:
    /// it authenticates its sockets itself (the Admin UI's namespace).
    pub fn own_hooks_only(&self) -> &Self {
        self.own_hooks_only
            .store(true, std::sync::atomic::Ordering::Release);
        self
    }

    /// The connect hooks a socket of this namespace passes: the server's `global` ones (unless
    /// it has its own only), then its own.
    pub(crate) fn hooks(&self, global: Vec<ConnectHook>) -> Vec<ConnectHook> {
        let mut hooks = if self
            .own_hooks_only
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Vec::new()
        } else {
            global
        };
        hooks.extend(
            self.hooks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        hooks
    }

    /// The room bounds its sockets are held to.
    pub(crate) fn room_limits(&self) -> &RoomLimits {
        &self.limits
    }

    /// The cluster adapter, when this server is part of a cluster.
    pub(crate) fn adapter(&self) -> Option<&Arc<dyn Adapter>> {
        self.adapter.get()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Adds a connect middleware: it runs before the socket connects, in the order added, and
    /// may refuse the connection. It may read `socket.auth()` and `socket.handshake()`, and join
    /// rooms.
    pub fn middleware(
        &self,
        f: impl Fn(&Arc<Socket>) -> Result<(), ConnectError> + Send + Sync + 'static,
    ) -> &Self {
        self.middlewares
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(f));
        self
    }

    /// Handles `event` for every socket of the namespace (one handler shared by all sockets).
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static,
    ) -> &Self {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event.to_owned(), Arc::new(handler));
        self
    }

    pub(crate) fn fallback(&self) -> Option<UnhandledHandler> {
        self.fallback
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn handler(&self, event: &str) -> Option<EventHandler> {
        self.handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(event)
            .cloned()
    }

    pub(crate) fn run_middlewares(&self, socket: &Arc<Socket>) -> Result<(), ConnectError> {
        let middlewares = self
            .middlewares
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        middlewares.iter().try_for_each(|m| m(socket))
    }

    /// Registers a socket that passed the middlewares; it joins its own room.
    pub(crate) fn add(&self, socket: &Arc<Socket>) {
        self.sockets
            .insert(socket.sid().clone(), Arc::clone(socket));
        socket.enter_own_room();
    }

    pub(crate) fn connected(&self, socket: &Arc<Socket>) {
        let on_connect = Arc::clone(&self.on_connect.read().unwrap_or_else(|e| e.into_inner()));
        on_connect(socket);
    }

    pub(crate) fn set_on_connect(&self, on_connect: ConnectHandler) {
        *self.on_connect.write().unwrap_or_else(|e| e.into_inner()) = on_connect;
    }

    pub(crate) fn remove(&self, id: &Sid) {
        self.sockets.remove(id);
    }

    pub(crate) fn index_join(&self, room: &str, id: &Sid) {
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .insert(id.clone());
    }

    pub(crate) fn index_leave(&self, room: &str, id: &Sid) {
        if let Some(mut members) = self.rooms.get_mut(room) {
            members.remove(id);
        }
        self.rooms.remove_if(room, |_, members| members.is_empty());
    }

    /// The connected socket `id`, if any.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.sockets.get(id).map(|s| Arc::clone(s.value()))
    }

    /// Number of connected sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The sockets selected by rooms (all when `rooms` is empty), minus `except` rooms and the
    /// `exclude`d socket.
    pub(crate) fn select(
        &self,
        rooms: &[String],
        except: &[String],
        exclude: Option<&Sid>,
    ) -> Vec<Arc<Socket>> {
        let mut excluded: HashSet<Sid> = HashSet::new();
        for room in except {
            if let Some(members) = self.rooms.get(room) {
                excluded.extend(members.iter().cloned());
            }
            if let Some(own) = self.sockets.get(room.as_str()) {
                if own.value().in_own_room() {
                    excluded.insert(own.key().clone());
                }
            }
        }
        excluded.extend(exclude.cloned());
        let keep = |id: &Sid| !excluded.contains(id);
        if rooms.is_empty() {
            return self
                .sockets
                .iter()
                .filter(|e| keep(e.key()))
                .map(|e| Arc::clone(e.value()))
                .collect();
        }
        let mut ids: HashSet<Sid> = HashSet::new();
        for room in rooms {
            if let Some(members) = self.rooms.get(room) {
                ids.extend(members.iter().filter(|id| keep(id)).cloned());
            }
            // A socket's own room, which has no index entry.
            if let Some(own) = self.sockets.get(room.as_str()) {
                if own.value().in_own_room() && keep(own.key()) {
                    ids.insert(own.key().clone());
                }
            }
        }
        ids.iter()
            .filter_map(|id| self.socket(id.as_str()))
            .collect()
    }

    /// A broadcast to every socket of the namespace.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(self))
    }

    /// A broadcast to `room`.
    pub fn to(self: &Arc<Self>, room: impl Into<String>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// The recovery settings, when connection state recovery is on.
    pub(crate) fn recovery_config(&self) -> Option<RecoveryConfig> {
        Some(self.recovery.as_ref()?.lock().config().clone())
    }

    pub(crate) fn recovers(&self) -> bool {
        self.recovery.is_some()
    }

    /// The cluster's shared log, when this namespace recovers connections through it.
    pub(crate) fn shared_log(&self) -> Option<&Arc<dyn SharedLog>> {
        self.recovery.as_ref()?;
        self.log.get()
    }

    /// Follows the shared log from position `floor` (see [`Store::share`]).
    pub(crate) fn share_log(&self, log: &dyn SharedLog, floor: u64) {
        if let Some(recovery) = &self.recovery {
            recovery.lock().share(log.tag(), floor, log.node());
        }
    }

    /// The shared log skipped to `floor`: events before it may be missing here.
    pub(crate) fn raise_floor(&self, floor: u64) {
        if let Some(recovery) = &self.recovery {
            recovery.lock().raise_floor(floor);
        }
    }

    /// Delivers a logged event read from the shared log at `position` to this node's sockets
    /// that `to` selects, with that position as its offset; returns how many had it queued.
    pub(crate) fn deliver_logged(
        self: &Arc<Self>,
        position: u64,
        to: &Selection,
        event: &str,
        args: &[Value],
        binary: &[Bytes],
    ) -> usize {
        let Some(recovery) = &self.recovery else {
            return 0;
        };
        let exclude = to.exclude.as_deref().and_then(Sid::parse);
        let target = Target {
            rooms: to.rooms.clone(),
            except: to.except.clone(),
            exclude: exclude.clone(),
        };
        let open = OpenEvent::new(&self.path, event, args, binary);
        let mut store = recovery.lock();
        let frames = open.close(&store.offset_at(position));
        store.append_at(position, target, frames.clone(), Instant::now());
        let sent = self
            .select(&to.rooms, &to.except, exclude.as_ref())
            .iter()
            .filter(|socket| socket.receives(position) && socket.push(&frames, false).is_ok())
            .count();
        let sweep = store.claim_sweeper();
        drop(store);
        if sweep {
            self.start_sweeper();
        }
        sent
    }

    /// Writes a socket's state to the shared log (applied here at once; the other nodes apply
    /// it when they read it). Without a shared log, a drop keeps it in this node's store.
    pub(crate) fn record_session(self: &Arc<Self>, session: Persisted, state: SessionState) {
        let Some(log) = self.shared_log() else {
            if state == SessionState::Dropped {
                self.persist(session);
            }
            return;
        };
        let record = LogRecord::Session {
            ns: self.path.clone(),
            node: log.node().to_owned(),
            state,
            id: session.id.as_str().to_owned(),
            pid: session.pid.as_str().to_owned(),
            rooms: session.rooms.clone(),
            data: session.data.clone(),
            since: session.since,
        };
        let node = log.node().to_owned();
        log.append(record);
        self.apply_session(session, state, &node);
    }

    /// Applies a session record of node `node` (see [`Store::record`]); a socket of this node
    /// that another node has restored is closed here.
    pub(crate) fn apply_session(
        self: &Arc<Self>,
        session: Persisted,
        state: SessionState,
        node: &str,
    ) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        let mut store = recovery.lock();
        let taken = store.record(session, state, node, Instant::now());
        let sweep = store.claim_sweeper();
        drop(store);
        if sweep {
            self.start_sweeper();
        }
        if let Some(socket) = taken.and_then(|id| self.socket(id.as_str())) {
            tracing::debug!(
                id = socket.id(),
                node,
                "session restored on another node: closing it here"
            );
            socket.taken_elsewhere();
        }
    }

    /// Node `node` left the cluster: its live sessions dropped now.
    pub(crate) fn node_left(&self, node: &str) {
        if let Some(recovery) = &self.recovery {
            recovery.lock().node_left(node, Instant::now());
        }
    }

    /// Sends EVENT `event` through `deliver`. With recovery on and a `target` (an event without
    /// an ack id, not volatile), the event gets the next offset as its last argument and is
    /// logged for `target`, and `deliver` runs under the log's lock.
    pub(crate) fn send_event<R>(
        self: &Arc<Self>,
        event: &str,
        args: &[Value],
        binary: &[Bytes],
        target: Option<Target>,
        deliver: impl FnOnce(&[Frame]) -> R,
    ) -> R {
        let (Some(recovery), Some(target)) = (&self.recovery, target) else {
            return deliver(&packet::encode_args(
                &self.path,
                Some(event),
                None,
                args,
                binary,
            ));
        };
        let open = OpenEvent::new(&self.path, event, args, binary);
        let mut store = recovery.lock();
        let frames = open.close(&store.next_offset());
        store.append(target, frames.clone(), Instant::now());
        let result = deliver(&frames);
        let sweep = store.claim_sweeper();
        drop(store);
        if sweep {
            self.start_sweeper();
        }
        result
    }

    /// Keeps the state of a socket that dropped, for the recovery window.
    pub(crate) fn persist(self: &Arc<Self>, session: Persisted) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        let mut store = recovery.lock();
        store.persist(session, Instant::now());
        let sweep = store.claim_sweeper();
        drop(store);
        if sweep {
            self.start_sweeper();
        }
    }

    /// Takes the kept session `pid` when every event after `offset` (without one: since the
    /// session started) can be replayed; returns it with the position to replay from.
    pub(crate) fn take_session(&self, pid: &str, offset: Option<&str>) -> Option<(Persisted, u64)> {
        let recovery = self.recovery.as_ref()?;
        recovery
            .lock()
            .take(pid, offset, recovery.replay_limit, Instant::now())
    }

    /// Runs `connect` with the frames of every event socket `id` in `rooms` missed from
    /// position `from` on, under the log's lock (see the module docs). Returns false, without
    /// running it, when some of them can no longer be replayed (dropped from the log since the
    /// session was taken, while middlewares or hooks ran).
    pub(crate) fn replay(
        &self,
        id: &Sid,
        rooms: &[String],
        from: u64,
        connect: impl FnOnce(Vec<Frame>),
    ) -> bool {
        let Some(recovery) = &self.recovery else {
            return false;
        };
        let store = recovery.lock();
        match store.missed(id, rooms, from, recovery.replay_limit) {
            Some(missed) => {
                connect(missed);
                true
            }
            None => false,
        }
    }

    /// Runs `connect` (which registers a fresh socket) under the log's lock, with the position
    /// of the next logged event: the socket receives every event from there on. Without
    /// recovery, runs it with 0.
    pub(crate) fn admit(&self, connect: impl FnOnce(u64)) {
        match &self.recovery {
            Some(recovery) => {
                let store = recovery.lock();
                connect(store.next_position());
            }
            None => connect(0),
        }
    }

    /// Expires the log and kept sessions while they hold anything (lookups expire them too;
    /// this releases the memory of a namespace that went quiet).
    fn start_sweeper(self: &Arc<Self>) {
        let Some(recovery) = &self.recovery else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // An emit from outside the runtime: the next call from inside starts it.
            recovery.lock().sweeper_stopped();
            return;
        };
        let every = recovery
            .lock()
            .config()
            .max_disconnection
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let ns = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(ns) = ns.upgrade() else { return };
                let Some(recovery) = &ns.recovery else { return };
                if !recovery.lock().sweep(Instant::now()) {
                    return;
                }
            }
        });
    }
}
