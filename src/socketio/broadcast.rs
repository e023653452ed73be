//! Broadcasts: select sockets by rooms, encode the packet once, share its bytes; and in a
//! cluster, the one place where an operation's copy for the other nodes is made
//! ([`BroadcastOperator`]) and the one place where another node's copy is applied
//! ([`Halley::apply_remote`]).
//!
//! Fan-out cost per recipient is one `Bytes` clone per frame and one outbox push; nothing is
//! re-encoded per socket. With connection state recovery on, an event that is not volatile is
//! logged with its offset before it fans out (see [`super::recovery`]).
//!
//! In a cluster, every operation also goes to the other nodes through the [`Adapter`]
//! (unless made [`local`](BroadcastOperator::local)), as a [`RemoteOp`] naming the same
//! [`Selection`]; each node applies it to its own sockets and never forwards it again. With a
//! shared log, an emit goes through the log instead, and every node delivers it from there.
//! A selection from elsewhere (another node's operation, a backend message, an admin request)
//! becomes an operator in one way: [`BroadcastOperator::selecting`].

use std::sync::Arc;

use crate::engine::sid::Sid;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::adapter::{Adapter, LogRecord, RemoteOp, Selection, SharedLog, SocketInfo};
use super::ns::Namespace;
use super::recovery::Target;
use super::socket::{check_event, EmitError, Socket};
use super::Halley;

/// Why an emit that waits for the cluster's confirm ([`BroadcastOperator::emit_confirmed`])
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// Queued for `local` sockets of this node, and not confirmed by the cluster (its adapter
    /// or shared log says why in `reason`).
    #[error("queued for {local} local sockets, not confirmed by the cluster: {reason}")]
    Unconfirmed { local: usize, reason: String },
}

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

    /// The operator for `to` in `ns` (the namespace `to.ns` names).
    pub(crate) fn selecting(ns: Arc<Namespace>, to: Selection) -> Self {
        let Selection {
            rooms,
            mut except,
            exclude,
            ..
        } = to;
        // A socket id is also the name of that socket's own room.
        except.extend(exclude);
        BroadcastOperator {
            ns,
            rooms,
            except,
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

    /// The cluster's adapter, unless this operator is local or there is no cluster.
    fn cluster(&self) -> Option<&Arc<dyn Adapter>> {
        match self.local {
            true => None,
            false => self.ns.adapter(),
        }
    }

    /// Hands `op` to the cluster, unless this operator is local or there is no cluster.
    fn tell_cluster(&self, op: impl FnOnce(Selection) -> RemoteOp) {
        if let Some(adapter) = self.cluster() {
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
                details: self.ns.observer().and_then(|o| o.describe(socket)),
            })
            .collect()
    }

    /// The selected sockets on every node of the cluster (this node's alone without one, or
    /// when [`local`](Self::local)). Nodes that do not answer in time are left out.
    pub async fn fetch_sockets(&self) -> Vec<SocketInfo> {
        let mut sockets = self.local_sockets();
        if let Some(adapter) = self.cluster() {
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
        let sent = self.send_here(event, &args, &binary);
        self.tell_cluster(|to| self.remote_emit(to, event, args, binary, None));
        Ok(sent)
    }

    /// Emits like [`emit_args`](Self::emit_args), and waits until the other nodes have it for
    /// sure: the adapter's or the shared log's confirm. `id` is the backend message's, carried
    /// so that every node drops a copy it delivered already. Answers how many of this node's
    /// sockets it was (or, through the shared log, will be) queued for.
    pub async fn emit_confirmed(
        &self,
        event: &str,
        args: Vec<Value>,
        binary: Vec<Bytes>,
        id: Option<String>,
    ) -> Result<usize, ConfirmError> {
        if let Some(log) = self.shared_log() {
            // Every node, this one too, delivers it when it reads it from the log: until the
            // log has it, no socket here does.
            let targets = self.sockets().len();
            let record = self.log_record(event, args, binary, id);
            log.append_confirmed(record)
                .await
                .map_err(|reason| ConfirmError::Unconfirmed { local: 0, reason })?;
            return Ok(targets);
        }
        check_event(event)?;
        let sent = self.send_here(event, &args, &binary);
        let Some(adapter) = self.cluster() else {
            return Ok(sent);
        };
        let op = self.remote_emit(self.selection(), event, args, binary, id);
        adapter
            .publish_confirmed(op)
            .await
            .map_err(|reason| ConfirmError::Unconfirmed {
                local: sent,
                reason,
            })?;
        Ok(sent)
    }

    /// Queues the event into this node's selected sockets, logged for recovery when it must
    /// be; answers how many took it.
    fn send_here(&self, event: &str, args: &[Value], binary: &[Bytes]) -> usize {
        let logged = !self.volatile && self.ns.recovers() && self.ns.shared_log().is_none();
        let target = logged.then(|| Target {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            exclude: self.exclude.clone(),
        });
        let observer = self.ns.watcher().filter(|o| o.watching_events());
        self.ns.send_event(event, args, binary, target, |frames| {
            self.sockets()
                .iter()
                .filter(|socket| socket.push(frames, self.volatile).is_ok())
                .inspect(|socket| {
                    if let Some(observer) = observer {
                        observer.event_sent(socket, event, args);
                    }
                })
                .count()
        })
    }

    /// This emit as the other nodes of a cluster are told it.
    fn remote_emit(
        &self,
        to: Selection,
        event: &str,
        args: Vec<Value>,
        binary: Vec<Bytes>,
        id: Option<String>,
    ) -> RemoteOp {
        RemoteOp::Emit {
            to,
            event: event.to_owned(),
            args,
            binary,
            volatile: self.volatile,
            id,
        }
    }

    /// This emit as a record of the cluster's shared log.
    fn log_record(
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
    fn shared_log(&self) -> Option<&Arc<dyn SharedLog>> {
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
        self.tell_cluster(|to| RemoteOp::Disconnect { to, close: false });
    }

    /// Closes the whole connection of every selected socket (Socket.IO's
    /// `disconnectSockets(true)`): each leaves its namespace (the client is told), the
    /// connection's other namespaces with "forced server close".
    pub fn disconnect_connections(&self) {
        for socket in self.sockets() {
            socket.close_connection();
        }
        self.tell_cluster(|to| RemoteOp::Disconnect { to, close: true });
    }
}

impl Halley {
    /// The operator for `to`, when this node serves its namespace.
    fn select(&self, to: Selection) -> Option<BroadcastOperator> {
        let ns = self.of(&to.ns)?;
        Some(BroadcastOperator::selecting(ns, to))
    }

    /// Applies an operation another node published, to this node's sockets only. An emit
    /// carrying a backend message id seen already is dropped.
    pub fn apply_remote(&self, op: RemoteOp) {
        let here = |to: Selection| self.select(to).map(BroadcastOperator::local);
        match op {
            RemoteOp::Emit {
                to,
                event,
                args,
                binary,
                volatile,
                id,
            } => {
                if id.is_some_and(|id| !self.first_delivery(&id)) {
                    tracing::debug!("remote emit of a message delivered already: dropped");
                    return;
                }
                if let Some(op) = here(to) {
                    let op = if volatile { op.volatile() } else { op };
                    if let Err(error) = op.emit_args(&event, args, binary) {
                        tracing::debug!(%error, "remote emit refused");
                    }
                }
            }
            RemoteOp::Join { to, room } => here(to).map_or((), |op| op.join(&room)),
            RemoteOp::Leave { to, room } => here(to).map_or((), |op| op.leave(&room)),
            RemoteOp::Disconnect { to, close: false } => here(to).map_or((), |op| op.disconnect()),
            RemoteOp::Disconnect { to, close: true } => {
                here(to).map_or((), |op| op.disconnect_connections())
            }
        }
    }

    /// This node's sockets that `to` selects.
    pub fn local_sockets(&self, to: &Selection) -> Vec<SocketInfo> {
        self.select(to.clone())
            .map(|op| op.local().local_sockets())
            .unwrap_or_default()
    }
}
