//! Broadcasts: select sockets by rooms, encode the packet once, share its bytes.
//!
//! Fan-out cost per recipient is one `Bytes` clone per frame and one outbox push; nothing is
//! re-encoded per socket.

use std::sync::Arc;

use bytes::Bytes;
use halley_transports::sid::Sid;
use serde::Serialize;
use serde_json::Value;

use super::ns::Namespace;
use super::packet;
use super::socket::{check_event, EmitError, Socket};

/// Selects recipients in one namespace: `to` rooms (all sockets when none), minus `except`
/// rooms; `volatile` packets are dropped for clients whose outbox is full.
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    rooms: Vec<String>,
    except: Vec<String>,
    exclude: Option<Sid>,
    volatile: bool,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            rooms: Vec::new(),
            except: Vec::new(),
            exclude: None,
            volatile: false,
        }
    }

    pub(crate) fn excluding(mut self, id: Sid) -> Self {
        self.exclude = Some(id);
        self
    }

    /// Adds a target room (a socket id names that socket's own room).
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.rooms.push(room.into());
        self
    }

    /// Excludes the sockets of `room`.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.except.push(room.into());
        self
    }

    /// Drops the packet for clients whose outbox is full instead of disconnecting them.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// The selected sockets.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.ns
            .select(&self.rooms, &self.except, self.exclude.as_ref())
    }

    /// Emits `event` with one argument to every selected socket; returns how many it reached.
    pub fn emit(&self, event: &str, data: &impl Serialize) -> Result<usize, EmitError> {
        self.emit_args(event, vec![serde_json::to_value(data)?], Vec::new())
    }

    /// Emits `event` with these arguments and binary attachments; returns how many sockets
    /// had it queued.
    pub fn emit_args(
        &self,
        event: &str,
        args: Vec<Value>,
        binary: Vec<Bytes>,
    ) -> Result<usize, EmitError> {
        check_event(event)?;
        let frames = packet::encode_args(self.ns.path(), Some(event), None, &args, &binary);
        let sent = self
            .sockets()
            .iter()
            .filter(|socket| socket.push(&frames, self.volatile).is_ok())
            .count();
        Ok(sent)
    }

    /// Makes every selected socket join `room`.
    pub fn join(&self, room: &str) {
        for socket in self.sockets() {
            socket.join(room);
        }
    }

    /// Makes every selected socket leave `room`.
    pub fn leave(&self, room: &str) {
        for socket in self.sockets() {
            socket.leave(room);
        }
    }

    /// Disconnects every selected socket from the namespace.
    pub fn disconnect(&self) {
        for socket in self.sockets() {
            socket.disconnect();
        }
    }
}
