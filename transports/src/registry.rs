//! The one sid → session map every transport shares.
//!
//! Lookups clone the `Arc` out and drop the map guard at once: a guard is never held across an
//! `.await` or while calling into a session, so no request can stall a shard of the map.

use std::sync::Arc;

use dashmap::DashMap;

use crate::sid::Sid;
use crate::socket::Socket;

#[derive(Default)]
pub struct Registry {
    sessions: DashMap<Sid, Arc<Socket>>,
}

impl Registry {
    pub fn get(&self, sid: &str) -> Option<Arc<Socket>> {
        self.sessions
            .get(sid)
            .map(|entry| Arc::clone(entry.value()))
    }

    pub(crate) fn insert(&self, socket: Arc<Socket>) {
        self.sessions.insert(socket.sid().clone(), socket);
    }

    pub(crate) fn remove(&self, sid: &Sid) {
        self.sessions.remove(sid);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A snapshot of every live session.
    pub fn all(&self) -> Vec<Arc<Socket>> {
        self.sessions
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect()
    }
}
