//! Broadcasts: select sockets by rooms, encode the packet once, share its bytes.
//!
//! Fan-out cost per recipient is one `Bytes` clone per frame and one outbox push; nothing is
//! re-encoded per socket. With connection state recovery on, an event that is not volatile is
//! logged with its offset before it fans out (see [`super::recovery`]).
//!
//! In a cluster, every operation also goes to the other nodes through the [`Adapter`]
//! (unless made [`local`](BroadcastOperator::local)); each node applies it to its own sockets.
//!
//! [`Adapter`]: super::adapter::Adapter

use std::sync::Arc;

use bytes::Bytes;
use halley_transports::sid::Sid;
use serde::Serialize;
use serde_json::Value;

use super::adapter::{LogRecord, RemoteOp, Selection, SharedLog, SocketInfo};
use super::ns::Namespace;
use super::recovery::Target;
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
    local: bool,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            rooms: Vec::new(),
            except: Vec::new(),
            exclude: None,
            volatile: false,
            local: false,
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

    /// Acts on this node's sockets only (in a cluster, the other nodes are not told).
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// What this operator selects, as the other nodes of a cluster are told.
    pub fn selection(&self) -> Selection {
        Selection {
            ns: self.ns.path().to_owned(),
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            exclude: self.exclude.as_ref().map(|id| id.as_str().to_owned()),
        }
    }

    /// Hands `op` to the cluster, unless this operator is local or there is no cluster.
    fn tell_cluster(&self, op: impl FnOnce(Selection) -> RemoteOp) {
        if self.local {
            return;
        }
        if let Some(adapter) = self.ns.adapter() {
            adapter.publish(op(self.selection()));
        }
    }

    /// This node's selected sockets, as cross-node queries report them.
    pub fn local_sockets(&self) -> Vec<SocketInfo> {
        let node = self
            .ns
            .adapter()
            .map(|a| a.node().to_owned())
            .unwrap_or_default();
        self.sockets()
            .iter()
            .map(|socket| SocketInfo {
                id: socket.id().to_owned(),
                ns: socket.ns().to_owned(),
                rooms: socket.rooms(),
                node: node.clone(),
            })
            .collect()
    }

    /// The selected sockets on every node of the cluster (this node's alone without one, or
    /// when [`local`](Self::local)). Nodes that do not answer in time are left out.
    pub async fn fetch_sockets(&self) -> Vec<SocketInfo> {
        let mut sockets = self.local_sockets();
        if let (false, Some(adapter)) = (self.local, self.ns.adapter()) {
            sockets.extend(adapter.fetch_sockets(self.selection()).await);
        }
        sockets
    }

    /// The selected sockets of this node.
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
        if let Some(log) = self.shared_log() {
            // Through the cluster's shared log: every node, this one too, delivers it when it
            // reads it back, at the position the log gave it.
            log.append(self.log_record(event, args, binary, None));
            return Ok(self.sockets().len());
        }
        let logged = !self.volatile && self.ns.recovers() && self.ns.shared_log().is_none();
        let target = logged.then(|| Target {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            exclude: self.exclude.clone(),
        });
        let sent = self.ns.send_event(event, &args, &binary, target, |frames| {
            self.sockets()
                .iter()
                .filter(|socket| socket.push(frames, self.volatile).is_ok())
                .count()
        });
        self.tell_cluster(|to| RemoteOp::Emit {
            to,
            event: event.to_owned(),
            args,
            binary,
            volatile: self.volatile,
            id: None,
        });
        Ok(sent)
    }

    /// This emit as a record of the cluster's shared log.
    pub fn log_record(
        &self,
        event: &str,
        args: Vec<Value>,
        binary: Vec<Bytes>,
        id: Option<String>,
    ) -> LogRecord {
        LogRecord::Emit {
            to: self.selection(),
            event: event.to_owned(),
            args,
            binary,
            id,
        }
    }

    /// The cluster's shared log, when an emit through this operator goes through it (not
    /// volatile, not local, recovery on, a log installed).
    pub fn shared_log(&self) -> Option<&Arc<dyn SharedLog>> {
        match (self.volatile, self.local) {
            (false, false) => self.ns.shared_log(),
            _ => None,
        }
    }

    /// Makes every selected socket join `room`; a socket at its room limits stays out (counted
    /// in the metrics, logged at debug level).
    pub fn join(&self, room: &str) {
        for socket in self.sockets() {
            if let Err(error) = socket.join(room) {
                tracing::debug!(id = socket.id(), room, %error, "join refused");
            }
        }
        self.tell_cluster(|to| RemoteOp::Join {
            to,
            room: room.to_owned(),
        });
    }

    /// Makes every selected socket leave `room`.
    pub fn leave(&self, room: &str) {
        for socket in self.sockets() {
            socket.leave(room);
        }
        self.tell_cluster(|to| RemoteOp::Leave {
            to,
            room: room.to_owned(),
        });
    }

    /// Disconnects every selected socket from the namespace.
    pub fn disconnect(&self) {
        for socket in self.sockets() {
            socket.disconnect();
        }
        self.tell_cluster(|to| RemoteOp::Disconnect { to });
    }
}
