//! A Socket.IO socket: one client connected to one namespace.
//!
//! It sends through its Engine.IO connection, keeps its rooms (mirrored in the namespace's room
//! index), its own event handlers if any were set, and the acks it awaits. It leaves its
//! namespace in exactly one place, [`Socket::close`], with a [`DisconnectReason`]; with
//! connection state recovery on, a recoverable reason keeps its state for the window first.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::engine::sid::Sid;
use crate::engine::{Frame, Handshake, PushError, TransportKind};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::oneshot;

use super::broadcast::BroadcastOperator;
use super::limits::JoinError;
use super::ns::Namespace;
use super::packet::{self, PacketKind, RESERVED_EVENTS};
use super::recovery::{Persisted, SessionState, Target};

/// Why a socket left its namespace; the strings are Socket.IO's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client left the namespace (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The server called [`Socket::disconnect`].
    ServerNamespaceDisconnect,
    /// The connection closed (the client went away or closed it).
    TransportClose,
    /// The connection failed or broke the Engine.IO protocol.
    TransportError,
    /// The client sent a packet that is not valid Socket.IO.
    ParseError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The server is shutting down.
    ServerShuttingDown,
    /// The server closed the whole connection.
    ForcedServerClose,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::ParseError => "parse error",
            Self::PingTimeout => "ping timeout",
            Self::ServerShuttingDown => "server shutting down",
            Self::ForcedServerClose => "forced server close",
        }
    }

    /// Whether connection state recovery keeps the socket's state: the connection went away
    /// without the client or the application meaning to (socket.io's
    /// `RECOVERABLE_DISCONNECT_REASONS`).
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            Self::TransportClose
                | Self::TransportError
                | Self::PingTimeout
                | Self::ServerShuttingDown
                | Self::ForcedServerClose
        )
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an emit did not go out.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("\"{0}\" is a reserved event name")]
    Reserved(String),
    #[error("the socket is disconnected")]
    Disconnected,
    /// The client's outbox was full: a volatile packet was dropped, any other closed the
    /// connection (see the outbox policy in the README).
    #[error("the client's outbox is full")]
    OutboxFull,
    #[error("data could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Why an awaited ack did not arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the event name is reserved")]
    Reserved,
    #[error("no ack within the timeout")]
    Timeout,
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
}

/// The arguments of an ack, binary attachments beside (placeholders stay in `args`).
#[derive(Debug, Clone, PartialEq)]
pub struct AckReply {
    pub args: Vec<Value>,
    pub binary: Vec<Bytes>,
}

/// An event received from a client.
#[derive(Debug)]
pub struct Event {
    /// The arguments after the event name; binary ones are placeholders
    /// `{"_placeholder":true,"num":N}` for `binary[N]`.
    pub args: Vec<Value>,
    pub binary: Vec<Bytes>,
    /// Present when the client awaits an acknowledgement.
    pub ack: Option<AckSender>,
}

/// Answers a client's ack, once.
#[derive(Debug)]
pub struct AckSender {
    socket: Arc<Socket>,
    id: u64,
}

impl AckSender {
    /// Acknowledges with these arguments (and binary attachments for their placeholders).
    pub fn send(self, args: Vec<Value>, binary: Vec<Bytes>) -> Result<(), EmitError> {
        let frames =
            packet::encode_args(self.socket.ns.path(), None, Some(self.id), &args, &binary);
        self.socket.push(&frames, false)
    }

    /// Acknowledges with one argument.
    pub fn send_data(self, data: &impl Serialize) -> Result<(), EmitError> {
        let value = serde_json::to_value(data)?;
        self.send(vec![value], Vec::new())
    }
}

pub(crate) type EventHandler = Arc<dyn Fn(&Arc<Socket>, Event) + Send + Sync>;
type DisconnectHandler = Box<dyn FnOnce(&Arc<Socket>, DisconnectReason) + Send>;

/// One client in one namespace.
pub struct Socket {
    id: Sid,
    /// The private session id of connection state recovery (none when it is off).
    pid: Option<Sid>,
    /// Where the replay of a recovered socket starts (the first log position it missed).
    restore_from: Option<u64>,
    /// The first log position it was connected for (set when it is registered; kept across
    /// restores), for a client that comes back with its `pid` and no offset.
    since: AtomicU64,
    ns: Arc<Namespace>,
    conn: Arc<crate::engine::Socket>,
    /// As JSON text: a parsed `Value` would cost several times its text for the socket's life
    /// (dozens of bytes per array element), and it is rarely read.
    auth: Box<RawValue>,
    ack_timeout: Duration,
    connected: AtomicBool,
    /// Whether it is in its own room (named by its id). That room has no entry in the
    /// namespace's index: `select` finds the socket by id (saving an entry and a set per socket).
    own_room: AtomicBool,
    rooms: Mutex<HashSet<String>>,
    handlers: Mutex<HashMap<String, EventHandler>>,
    on_disconnect: Mutex<Vec<DisconnectHandler>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<AckReply>>>,
    next_ack: AtomicU64,
    data: Mutex<Value>,
    /// When it was made, in milliseconds since the Unix epoch (its handshake's `issued`).
    issued: u64,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("ns", &self.ns.path())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // These maps stay consistent across a panicking user handler (none runs under the lock).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Socket {
    /// A new socket (with a private session id when the namespace recovers connections).
    pub(crate) fn new(
        ns: Arc<Namespace>,
        conn: Arc<crate::engine::Socket>,
        auth: Box<RawValue>,
        ack_timeout: Duration,
    ) -> Result<Arc<Self>, getrandom::Error> {
        let pid = if ns.recovers() {
            Some(Sid::random()?)
        } else {
            None
        };
        Ok(Arc::new(Self::build(
            Sid::random()?,
            pid,
            None,
            ns,
            conn,
            auth,
            ack_timeout,
        )))
    }

    /// The socket of a recovered session: its id, private id, rooms and data; the events it
    /// missed from log position `from` on are replayed when it connects.
    pub(crate) fn restored(
        ns: Arc<Namespace>,
        conn: Arc<crate::engine::Socket>,
        auth: Box<RawValue>,
        ack_timeout: Duration,
        session: Persisted,
        from: u64,
    ) -> Arc<Self> {
        let Persisted {
            id,
            pid,
            rooms,
            data,
            since,
        } = session;
        let socket = Arc::new(Self::build(
            id,
            Some(pid),
            Some(from),
            ns,
            conn,
            auth,
            ack_timeout,
        ));
        // Joined now, as socket.io does, so middlewares see them. Broadcasts do not reach the
        // socket before it is registered in the namespace. They were within the limits when
        // kept; a room refused now (the limits were lowered by a restart) is left out.
        for room in rooms {
            if let Err(error) = socket.join(room) {
                tracing::debug!(id = %socket.id, %error, "recovered room left out");
            }
        }
        socket.set_data(data);
        socket.since.store(since, Ordering::Relaxed);
        socket
    }

    fn build(
        id: Sid,
        pid: Option<Sid>,
        restore_from: Option<u64>,
        ns: Arc<Namespace>,
        conn: Arc<crate::engine::Socket>,
        auth: Box<RawValue>,
        ack_timeout: Duration,
    ) -> Self {
        Socket {
            id,
            pid,
            restore_from,
            since: AtomicU64::new(0),
            ns,
            conn,
            auth,
            ack_timeout,
            connected: AtomicBool::new(false),
            own_room: AtomicBool::new(false),
            rooms: Mutex::new(HashSet::new()),
            handlers: Mutex::new(HashMap::new()),
            on_disconnect: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(0),
            data: Mutex::new(Value::Null),
            issued: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// When the socket was made (its CONNECT arrived), in milliseconds since the Unix epoch.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The Engine.IO session id of its connection (shared by the sockets multiplexed on it).
    pub fn connection_id(&self) -> &str {
        self.conn.sid().as_str()
    }

    /// The socket id (distinct from the Engine.IO session id, and the name of its own room).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    pub(crate) fn sid(&self) -> &Sid {
        &self.id
    }

    pub(crate) fn pid(&self) -> Option<&Sid> {
        self.pid.as_ref()
    }

    /// Whether this socket is a session recovered after its connection dropped (connection
    /// state recovery): same id, rooms and data as before, and the events it missed were
    /// replayed before it connected.
    pub fn recovered(&self) -> bool {
        self.restore_from.is_some()
    }

    pub(crate) fn restore_from(&self) -> Option<u64> {
        self.restore_from
    }

    /// Whether an event at shared-log position `position` is for it: a socket restored on a
    /// node that had not read as far as the client's offset skips what the client has.
    pub(crate) fn receives(&self, position: u64) -> bool {
        self.restore_from.map_or(true, |from| position >= from)
    }

    /// Records the log position from which a fresh socket receives events (see `since`).
    pub(crate) fn connected_since(&self, position: u64) {
        self.since.store(position, Ordering::Relaxed);
    }

    /// The namespace path.
    pub fn ns(&self) -> &str {
        self.ns.path()
    }

    pub(crate) fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// The `auth` object the client connected with (`{}` if none), parsed anew on each call
    /// (the socket keeps it as text, at most `max_auth_payload` bytes).
    pub fn auth(&self) -> Value {
        // It was a JSON object when it arrived, and `RawValue` holds valid JSON.
        serde_json::from_str(self.auth.get()).unwrap_or(Value::Null)
    }

    /// The `auth` object as the JSON text it is kept in.
    pub fn auth_json(&self) -> &RawValue {
        &self.auth
    }

    /// Application data attached to the socket (Socket.IO's `socket.data`), `null` until set.
    /// The auth hook stores what the authentication service answered here.
    pub fn data(&self) -> Value {
        lock(&self.data).clone()
    }

    pub fn set_data(&self, data: Value) {
        if let Some(observer) = self.connected().then(|| self.ns.watcher()).flatten() {
            observer.data_set(self, &data);
        }
        *lock(&self.data) = data;
    }

    /// What the connection's opening request carried: remote address, headers, query.
    pub fn handshake(&self) -> &Handshake {
        self.conn.handshake()
    }

    /// The transport the connection uses now.
    pub fn transport(&self) -> TransportKind {
        self.conn.transport()
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    /// Handles `event` from this socket's client. A socket handler takes precedence over the
    /// namespace's handler for the same event.
    pub fn on(&self, event: &str, handler: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static) {
        lock(&self.handlers).insert(event.to_owned(), Arc::new(handler));
    }

    /// Runs `handler` once when the socket leaves its namespace, with the reason.
    pub fn on_disconnect(
        &self,
        handler: impl FnOnce(&Arc<Socket>, DisconnectReason) + Send + 'static,
    ) {
        lock(&self.on_disconnect).push(Box::new(handler));
    }

    /// Emits `event` with one argument. With connection state recovery on, the event is
    /// logged and carries its offset as a last argument, like every broadcast.
    pub fn emit(&self, event: &str, data: &impl Serialize) -> Result<(), EmitError> {
        self.emit_args(event, vec![serde_json::to_value(data)?], Vec::new())
    }

    /// Emits `event` with these arguments and binary attachments (placeholders in `args`).
    pub fn emit_args(
        &self,
        event: &str,
        args: Vec<Value>,
        binary: Vec<Bytes>,
    ) -> Result<(), EmitError> {
        self.send_event(event, &args, &binary, false)
    }

    /// Emits `event` with one argument, dropped rather than queued when the client's outbox is
    /// full (for data that is stale by the time it would arrive). Never logged for recovery.
    pub fn emit_volatile(&self, event: &str, data: &impl Serialize) -> Result<(), EmitError> {
        self.send_event(event, &[serde_json::to_value(data)?], &[], true)
    }

    fn send_event(
        &self,
        event: &str,
        args: &[Value],
        binary: &[Bytes],
        volatile: bool,
    ) -> Result<(), EmitError> {
        check_event(event)?;
        if !self.connected() {
            return Err(EmitError::Disconnected);
        }
        // socket.io logs a socket's own emits as a broadcast to its room. With a cluster's
        // shared log, only broadcasts are logged (they take the log's order, which a direct
        // emit's reply must not wait for): a direct emit carries no offset.
        let logged = !volatile && self.ns.recovers() && self.ns.shared_log().is_none();
        let target = logged.then(|| Target {
            rooms: vec![self.id.as_str().to_owned()],
            ..Target::default()
        });
        let sent = self.ns.send_event(event, args, binary, target, |frames| {
            self.push(frames, volatile)
        });
        if let Some(observer) = self.ns.watcher().filter(|o| o.watching_events()) {
            if sent.is_ok() {
                observer.event_sent(self, event, args);
            }
        }
        sent
    }

    /// Emits `event` and waits for the client's ack, at most the configured ack timeout.
    pub fn emit_with_ack(
        self: &Arc<Self>,
        event: &str,
        args: Vec<Value>,
        binary: Vec<Bytes>,
    ) -> impl Future<Output = Result<AckReply, AckError>> + Send + 'static {
        let reserved = check_event(event).is_err();
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent = !reserved && {
            lock(&self.acks).insert(id, tx);
            let frames = packet::encode_args(self.ns(), Some(event), Some(id), &args, &binary);
            self.push(&frames, false).is_ok()
        };
        let socket = Arc::clone(self);
        async move {
            if reserved {
                return Err(AckError::Reserved);
            }
            if !sent {
                lock(&socket.acks).remove(&id);
                return Err(AckError::Disconnected);
            }
            match tokio::time::timeout(socket.ack_timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(AckError::Disconnected),
                Err(_) => {
                    lock(&socket.acks).remove(&id);
                    Err(AckError::Timeout)
                }
            }
        }
    }

    pub(crate) fn push(&self, frames: &[Frame], volatile: bool) -> Result<(), EmitError> {
        if !self.connected() {
            return Err(EmitError::Disconnected);
        }
        self.conn.send_all(frames, volatile).map_err(|e| match e {
            PushError::Closed => EmitError::Disconnected,
            PushError::Dropped | PushError::Overflow => EmitError::OutboxFull,
        })
    }

    /// Joins `room` (in this namespace), unless that would take the socket past the server's
    /// room limits ([`Builder::max_rooms`](super::Builder::max_rooms),
    /// [`Builder::max_room_name`](super::Builder::max_room_name)): then it stays out and the
    /// refusal is counted. Its own id room is always allowed and does not count; joining a room
    /// it is in already succeeds.
    pub fn join(&self, room: impl Into<String>) -> Result<(), JoinError> {
        let room = room.into();
        if room == self.id.as_str() {
            self.enter_own_room();
            return Ok(());
        }
        {
            let mut rooms = lock(&self.rooms);
            if rooms.contains(&room) {
                return Ok(());
            }
            self.ns.room_limits().check(rooms.len(), &room)?;
            rooms.insert(room.clone());
        }
        self.ns.index_join(&room, &self.id);
        self.rooms_changed();
        if let Some(observer) = self.connected().then(|| self.ns.watcher()).flatten() {
            observer.room_joined(self, &room);
        }
        Ok(())
    }

    /// Tells the cluster's shared log the rooms of a connected socket changed.
    fn rooms_changed(&self) {
        if self.connected() && self.ns.shared_log().is_some() {
            if let Some(session) = self.session() {
                self.ns.record_session(session, SessionState::Live);
            }
        }
    }

    pub(crate) fn enter_own_room(&self) {
        self.own_room.store(true, Ordering::Release);
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        if room == self.id.as_str() {
            self.own_room.store(false, Ordering::Release);
            return;
        }
        if lock(&self.rooms).remove(room) {
            self.ns.index_leave(room, &self.id);
            self.rooms_changed();
            if let Some(observer) = self.connected().then(|| self.ns.watcher()).flatten() {
                observer.room_left(self, room);
            }
        }
    }

    /// Whether it is in the room named by its id (from joining its namespace until it leaves).
    pub(crate) fn in_own_room(&self) -> bool {
        self.own_room.load(Ordering::Acquire)
    }

    /// The rooms this socket is in, its own room included.
    pub fn rooms(&self) -> Vec<String> {
        let rooms = lock(&self.rooms);
        let mut all = Vec::with_capacity(rooms.len() + 1);
        if self.in_own_room() {
            all.push(self.id.as_str().to_owned());
        }
        all.extend(rooms.iter().cloned());
        all
    }

    /// A broadcast to `room`, excluding this socket.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// A broadcast to every socket of the namespace but this one.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(&self.ns)).excluding(self.id.clone())
    }

    /// Makes the socket leave its namespace; the client is told (`41`). The connection stays
    /// open for its other namespaces.
    pub fn disconnect(self: &Arc<Self>) {
        if self.connected() {
            let frame = packet::encode(PacketKind::Disconnect, self.ns(), None, None);
            let _ = self.conn.send(frame, false);
        }
        self.close(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Its recoverable state (when its namespace recovers connections).
    fn session(&self) -> Option<Persisted> {
        Some(Persisted {
            id: self.id.clone(),
            pid: self.pid.clone()?,
            rooms: self.rooms(),
            data: self.data(),
            since: self.since.load(Ordering::Relaxed),
        })
    }

    /// Keeps the socket's id, rooms and data for connection state recovery (when its namespace
    /// recovers connections): in this node's store, or in the cluster's shared log.
    pub(crate) fn persist(self: &Arc<Self>) {
        if let Some(session) = self.session() {
            self.ns.record_session(session, SessionState::Dropped);
        }
    }

    /// Writes that it is connected here to the cluster's shared log (if there is one).
    pub(crate) fn record_live(self: &Arc<Self>) {
        if self.ns.shared_log().is_some() {
            if let Some(session) = self.session() {
                self.ns.record_session(session, SessionState::Live);
            }
        }
    }

    /// Another node restored this socket's session (its client came back there before this
    /// node saw the connection drop): this copy goes, and its connection with it.
    pub(crate) fn taken_elsewhere(self: &Arc<Self>) {
        self.close(DisconnectReason::ForcedServerClose);
        self.conn.close(crate::engine::CloseReason::ServerClose);
    }

    /// Undoes what connect middlewares did (rooms joined) for a socket that was refused.
    pub(crate) fn abandon(&self) {
        self.own_room.store(false, Ordering::Release);
        let rooms = std::mem::take(&mut *lock(&self.rooms));
        for room in &rooms {
            self.ns.index_leave(room, &self.id);
        }
    }

    /// Closes the client's whole connection (Socket.IO's `socket.disconnect(true)`): this socket
    /// leaves with "server namespace disconnect" (the client is told), the connection's other
    /// namespaces with "forced server close", and the client may reconnect.
    pub fn close_connection(self: &Arc<Self>) {
        self.disconnect();
        self.conn.close(crate::engine::CloseReason::ServerClose);
    }

    /// Leaves the namespace: rooms, namespace index, client map, pending acks, then the
    /// disconnect handlers. Runs once; later calls do nothing.
    pub(crate) fn close(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        if reason.is_recoverable() {
            self.persist();
        } else if let (Some(session), Some(_)) = (self.session(), self.ns.shared_log()) {
            self.ns.record_session(session, SessionState::Gone);
        }
        if let Some(observer) = self.ns.watcher() {
            observer.socket_disconnected(self, reason, &self.rooms());
        }
        self.abandon();
        self.ns.remove(&self.id);
        if let Some(client) = self.conn.ext::<Arc<super::client::Client>>() {
            client.forget(self);
        }
        // Dropping the senders tells every pending ack future that the socket is gone.
        lock(&self.acks).clear();
        lock(&self.handlers).clear();
        let handlers = std::mem::take(&mut *lock(&self.on_disconnect));
        tracing::debug!(id = %self.id, ns = self.ns(), %reason, "socket disconnected");
        for handler in handlers {
            handler(self, reason);
        }
    }

    /// Runs the handler for an event from the client.
    pub(crate) fn dispatch(self: &Arc<Self>, name: &str, event: Event) {
        let _span = tracing::debug_span!("event", ns = self.ns(), socket = %self.id, event = name)
            .entered();
        if let Some(observer) = self.ns.watcher().filter(|o| o.watching_events()) {
            observer.event_received(self, name, &event.args);
        }
        let handler = lock(&self.handlers).get(name).cloned();
        if let Some(handler) = handler.or_else(|| self.ns.handler(name)) {
            return handler(self, event);
        }
        match self.ns.fallback() {
            Some(fallback) => fallback(self, name, event),
            None => tracing::debug!(id = %self.id, ns = self.ns(), event = name, "no handler"),
        }
    }

    pub(crate) fn resolve_ack(&self, id: u64, reply: AckReply) {
        if let Some(tx) = lock(&self.acks).remove(&id) {
            let _ = tx.send(reply);
        }
    }

    pub(crate) fn ack_sender(self: &Arc<Self>, id: u64) -> AckSender {
        AckSender {
            socket: Arc::clone(self),
            id,
        }
    }
}

pub(crate) fn check_event(event: &str) -> Result<(), EmitError> {
    if RESERVED_EVENTS.contains(&event) {
        return Err(EmitError::Reserved(event.to_owned()));
    }
    Ok(())
}
