//! Namespaces: the connect handler and middlewares, namespace-wide event handlers, the sockets
//! connected, and the room index (room → socket ids) that broadcasts read.
//!
//! The index is the only place rooms live besides each socket's own set; both change together in
//! [`Socket::join`](super::Socket::join) / `leave` / `close`. Map guards are never held while
//! calling a handler or sending.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use halley_transports::sid::Sid;
use serde_json::Value;

use super::broadcast::BroadcastOperator;
use super::socket::{Event, EventHandler, Socket};

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

/// A Socket.IO namespace.
pub struct Namespace {
    path: String,
    on_connect: RwLock<ConnectHandler>,
    middlewares: RwLock<Vec<Middleware>>,
    handlers: RwLock<HashMap<String, EventHandler>>,
    fallback: Fallback,
    sockets: DashMap<Sid, Arc<Socket>>,
    rooms: DashMap<String, HashSet<Sid>>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("path", &self.path)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(path: String, on_connect: ConnectHandler, fallback: Fallback) -> Arc<Self> {
        Arc::new(Namespace {
            path,
            on_connect: RwLock::new(on_connect),
            fallback,
            middlewares: RwLock::default(),
            handlers: RwLock::default(),
            sockets: DashMap::new(),
            rooms: DashMap::new(),
        })
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
        socket.join(socket.id());
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
}
