//! What the Socket.IO layer tells an [`Observer`] (the Admin UI, `crate::admin_ui`): sockets
//! connecting and leaving, rooms joined and left, a socket's data set, events received and sent.
//!
//! Cost first: with no observer installed a hook is one `OnceLock` load; with one installed and
//! nobody watching, one more atomic load behind [`Observer::watching`]. Nothing is built (no
//! room list, no JSON) before both say yes. Hooks run on the thread that made the change, with no
//! map guard of this layer held, and must not block.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::socket::{DisconnectReason, Socket};

/// Told of every change of sockets and rooms, in every namespace.
pub trait Observer: Send + Sync + 'static {
    /// Whether anyone watches now; every other method is called only when this says yes.
    fn watching(&self) -> bool;
    /// Whether events are reported too ([`Observer::event_received`], [`Observer::event_sent`]),
    /// asked only while [`Observer::watching`].
    fn watching_events(&self) -> bool {
        false
    }
    /// A socket connected (registered in its namespace, before its connect handler ran).
    fn socket_connected(&self, socket: &Arc<Socket>);
    /// A socket left its namespace; `rooms` are those it was in, its own id room included.
    fn socket_disconnected(&self, socket: &Socket, reason: DisconnectReason, rooms: &[String]);
    /// A connected socket joined `room` (it was not in it).
    fn room_joined(&self, socket: &Socket, room: &str);
    /// A connected socket left `room` (it was in it).
    fn room_left(&self, socket: &Socket, room: &str);
    /// A connected socket's data was set.
    fn data_set(&self, _socket: &Socket, _data: &Value) {}
    /// A socket received `event` with `args` (binary ones as placeholders).
    fn event_received(&self, _socket: &Socket, _event: &str, _args: &[Value]) {}
    /// `event` was queued for `socket`.
    fn event_sent(&self, _socket: &Socket, _event: &str, _args: &[Value]) {}
    /// What a cross-node socket query reports of `socket` beside its id and rooms
    /// ([`super::adapter::SocketInfo::details`]), asked whether watching or not.
    fn describe(&self, _socket: &Arc<Socket>) -> Option<Value> {
        None
    }
}

/// The observer, once installed; shared by every namespace of a server.
pub(crate) type ObserverSlot = Arc<OnceLock<Arc<dyn Observer>>>;

/// The installed observer when it watches: the one check every hook starts with.
pub(crate) fn watcher(slot: &ObserverSlot) -> Option<&Arc<dyn Observer>> {
    slot.get().filter(|observer| observer.watching())
}
