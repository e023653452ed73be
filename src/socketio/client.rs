//! One Engine.IO connection as Socket.IO sees it: the namespaces it joined, and the binary
//! packet being reassembled. Implements the engine's [`Handler`]: decode, validate, dispatch.
//!
//! Protocol violations close the whole connection (as socket.io does), with the reason logged;
//! an unknown namespace only gets a CONNECT_ERROR. A CONNECT carrying `pid` and `offset` may
//! recover a dropped session (connection state recovery, [`super::recovery`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{CloseReason, Handler, Message};
use bytes::Bytes;
use serde_json::{json, Value};

use super::limits::ConnectRefusal;
use super::ns::ConnectError;
use super::packet::{self, Packet, PacketKind};
use super::socket::{AckReply, DisconnectReason, Event, Socket};
use super::IoShared;

type Conn = Arc<crate::engine::Socket>;

/// A packet waiting for its binary attachments.
struct Partial {
    packet: Packet,
    binary: Vec<Bytes>,
}

/// Per-connection Socket.IO state, stored in the engine session.
pub(crate) struct Client {
    sockets: Mutex<HashMap<String, Arc<Socket>>>,
    /// Namespaces whose CONNECT waits for asynchronous hooks.
    connecting: Mutex<HashSet<String>>,
    partial: Mutex<Option<Partial>>,
    ever_connected: AtomicBool,
    /// The connect-timeout task, cancelled by the first CONNECT so that it does not stay
    /// parked (with its timer) for the life of every connection.
    connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
    /// CONNECTs the connect hooks refused on this connection (bounded by `max_auth_attempts`).
    hook_refusals: AtomicUsize,
    /// The only namespace it may join, when its page's origin is confined to one (see
    /// [`super::Confinement`]).
    confined_to: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    pub(crate) fn forget(&self, socket: &Socket) {
        let mut sockets = lock(&self.sockets);
        if sockets
            .get(socket.ns())
            .is_some_and(|s| s.sid() == socket.sid())
        {
            sockets.remove(socket.ns());
        }
    }

    fn socket(&self, ns: &str) -> Option<Arc<Socket>> {
        lock(&self.sockets).get(ns).cloned()
    }

    fn close_all(&self, reason: DisconnectReason) {
        let sockets: Vec<_> = lock(&self.sockets).drain().map(|(_, s)| s).collect();
        for socket in sockets {
            socket.close(reason);
        }
    }
}

/// Why a packet closes the connection.
#[derive(Debug, thiserror::Error)]
enum Violation {
    #[error(transparent)]
    Decode(#[from] packet::DecodeError),
    #[error("binary attachment without a pending packet")]
    UnexpectedBinary,
    #[error("text packet while {0} attachments are pending")]
    UnexpectedText(usize),
    #[error("{0:?} for namespace {1} before CONNECT")]
    NotConnected(PacketKind, String),
    #[error("second CONNECT for namespace {0}")]
    AlreadyConnected(String),
    #[error("CONNECT_ERROR from a client")]
    ClientConnectError,
    #[error("illegal attachments: a placeholder names no attachment")]
    IllegalAttachments,
}

impl Handler for IoShared {
    fn on_open(&self, conn: &Conn) {
        let confined_to = self
            .confinement
            .get()
            .filter(|c| c.confines(&conn.handshake().headers))
            .map(|c| c.ns.clone());
        let client = Arc::new(Client {
            confined_to,
            sockets: Mutex::default(),
            connecting: Mutex::default(),
            partial: Mutex::default(),
            ever_connected: AtomicBool::new(false),
            connect_timer: Mutex::default(),
            hook_refusals: AtomicUsize::new(0),
        });
        if conn.set_ext(Arc::clone(&client)).is_err() {
            return;
        }
        // A connection that joins no namespace in time is closed (socket.io's connectTimeout).
        let weak = Arc::downgrade(conn);
        let timeout = self.config.connect_timeout;
        let timer = Arc::clone(&client);
        let task = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(conn) = weak.upgrade() {
                if !timer.ever_connected.load(Ordering::Acquire) {
                    tracing::debug!(sid = %conn.sid(), "no namespace joined in time, closing");
                    conn.close(CloseReason::ServerClose);
                }
            }
        });
        *lock(&client.connect_timer) = Some(task.abort_handle());
    }

    fn on_message(&self, conn: &Conn, message: Message) {
        let Some(client) = conn.ext::<Arc<Client>>() else {
            return;
        };
        let _span = tracing::debug_span!("socketio", sid = %conn.sid()).entered();
        if let Err(violation) = self.receive(conn, client, message) {
            tracing::debug!(sid = %conn.sid(), %violation, "socket.io protocol violation, closing");
            client.close_all(DisconnectReason::ParseError);
            conn.close(CloseReason::ProtocolError);
        }
    }

    fn on_close(&self, conn: &Conn, reason: CloseReason) {
        if let Some(client) = conn.ext::<Arc<Client>>() {
            client.close_all(match reason {
                CloseReason::ClientClose | CloseReason::TransportClose => {
                    DisconnectReason::TransportClose
                }
                CloseReason::PingTimeout => DisconnectReason::PingTimeout,
                CloseReason::ProtocolError => DisconnectReason::TransportError,
                CloseReason::ServerShutdown => DisconnectReason::ServerShuttingDown,
                CloseReason::ServerClose | CloseReason::OutboxFull => {
                    DisconnectReason::ForcedServerClose
                }
            });
        }
    }
}

impl IoShared {
    fn receive(&self, conn: &Conn, client: &Client, message: Message) -> Result<(), Violation> {
        let complete = {
            let mut partial = lock(&client.partial);
            match (message, partial.as_mut()) {
                (Message::Text(text), None) => {
                    let packet = packet::decode(&text, self.config.max_attachments)?;
                    if packet.attachments > 0 {
                        *partial = Some(Partial {
                            binary: Vec::with_capacity(packet.attachments),
                            packet,
                        });
                        return Ok(());
                    }
                    (packet, Vec::new())
                }
                (Message::Text(_), Some(p)) => {
                    return Err(Violation::UnexpectedText(
                        p.packet.attachments - p.binary.len(),
                    ))
                }
                (Message::Binary(_), None) => return Err(Violation::UnexpectedBinary),
                (Message::Binary(data), Some(p)) => {
                    p.binary.push(data);
                    if p.binary.len() < p.packet.attachments {
                        return Ok(());
                    }
                    let p = partial.take().expect("matched Some above");
                    (p.packet, p.binary)
                }
            }
        };
        let (packet, binary) = complete;
        if let Some(data) = packet.data.as_ref().filter(|_| packet.attachments > 0) {
            if !packet::placeholders_valid(data, binary.len()) {
                return Err(Violation::IllegalAttachments);
            }
        }
        self.handle(conn, client, packet, binary)
    }

    fn handle(
        &self,
        conn: &Conn,
        client: &Client,
        packet: Packet,
        binary: Vec<Bytes>,
    ) -> Result<(), Violation> {
        let Packet {
            kind,
            ns,
            id,
            data,
            data_len,
            ..
        } = packet;
        match kind {
            PacketKind::Connect => self.connect(
                conn,
                client,
                ns,
                data.unwrap_or_else(|| json!({})),
                data_len,
            ),
            PacketKind::Disconnect => {
                let socket = client
                    .socket(&ns)
                    .ok_or(Violation::NotConnected(kind, ns))?;
                socket.close(DisconnectReason::ClientNamespaceDisconnect);
                Ok(())
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let socket = client
                    .socket(&ns)
                    .ok_or(Violation::NotConnected(kind, ns))?;
                let mut args = match data {
                    Some(Value::Array(args)) => args,
                    _ => unreachable!("the decoder only accepts arrays for events"),
                };
                let name = match args.remove(0) {
                    Value::String(name) => name,
                    other => other.to_string(),
                };
                let ack = id.map(|id| socket.ack_sender(id));
                socket.dispatch(&name, Event { args, binary, ack });
                Ok(())
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let socket = client
                    .socket(&ns)
                    .ok_or(Violation::NotConnected(kind, ns))?;
                let args = match data {
                    Some(Value::Array(args)) => args,
                    _ => unreachable!("the decoder only accepts arrays for acks"),
                };
                if let Some(id) = id {
                    socket.resolve_ack(id, AckReply { args, binary });
                }
                Ok(())
            }
            PacketKind::ConnectError => Err(Violation::ClientConnectError),
        }
    }

    fn connect(
        &self,
        conn: &Conn,
        client: &Client,
        ns: String,
        auth: Value,
        auth_len: usize,
    ) -> Result<(), Violation> {
        if client.socket(&ns).is_some() || lock(&client.connecting).contains(&ns) {
            return Err(Violation::AlreadyConnected(ns));
        }
        if client.confined_to.as_ref().is_some_and(|only| *only != ns) {
            // A page of the Admin UI's origin: the application's namespaces do not exist for it.
            tracing::debug!(sid = %conn.sid(), ns, "CONNECT from a confined origin refused");
            let error = json!({ "message": "Invalid namespace" });
            let _ = conn.send(
                packet::encode(PacketKind::ConnectError, &ns, None, Some(&error)),
                false,
            );
            return Ok(());
        }
        // Checked before the namespace is looked up, so that they create no dynamic namespace.
        let joined = lock(&client.sockets).len();
        let joining = lock(&client.connecting).len();
        if joined + joining >= self.config.max_namespaces {
            self.refuse_by_limit(conn, &ns, ConnectRefusal::TooManyNamespaces);
            return Ok(());
        }
        if auth_len > self.config.max_auth_payload {
            self.refuse_by_limit(conn, &ns, ConnectRefusal::AuthPayloadTooLarge);
            return Ok(());
        }
        // The socket keeps the text; the `Value` is read here (recovery's `pid` and `offset`)
        // and dropped.
        let auth_text = match serde_json::value::to_raw_value(&auth) {
            Ok(text) => text,
            Err(error) => {
                // A `Value` always serializes; should it not, the CONNECT is refused, not lost.
                tracing::error!(%error, "auth payload not serializable");
                self.refuse_by_limit(conn, &ns, ConnectRefusal::AuthPayloadTooLarge);
                return Ok(());
            }
        };
        let Some(namespace) = self.namespace(&ns) else {
            let error = json!({ "message": "Invalid namespace" });
            let _ = conn.send(
                packet::encode(PacketKind::ConnectError, &ns, None, Some(&error)),
                false,
            );
            return Ok(());
        };
        let recovery = namespace.recovery_config();
        // socket.io restores only when both are strings. socket.io-client sends no offset until
        // it has received a logged event: such a session is replayed from where it started. A
        // non-string offset is a fresh session.
        let restored = recovery.as_ref().and_then(|_| {
            let pid = auth.get("pid")?.as_str()?;
            let offset = match auth.get("offset") {
                None | Some(Value::Null) => None,
                Some(offset) => Some(offset.as_str()?),
            };
            namespace.take_session(pid, offset)
        });
        let ack_timeout = self.config.ack_timeout;
        let socket = match restored {
            Some((session, after)) => Socket::restored(
                namespace,
                Arc::clone(conn),
                auth_text,
                ack_timeout,
                session,
                after,
            ),
            None => match Socket::new(namespace, Arc::clone(conn), auth_text, ack_timeout) {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::error!(%error, "no entropy for a socket id");
                    conn.close(CloseReason::ServerClose);
                    return Ok(());
                }
            },
        };
        // A recovered socket passed the middlewares and hooks when it first connected.
        if socket.recovered() && recovery.is_some_and(|r| r.skip_middlewares) {
            establish(conn, client, socket);
            return Ok(());
        }
        if let Err(refusal) = socket.namespace().run_middlewares(&socket) {
            refuse(conn, &socket, &refusal);
            return Ok(());
        }
        let hooks = socket.namespace().hooks(self.hooks());
        if hooks.is_empty() {
            establish(conn, client, socket);
            return Ok(());
        }
        // Each hook run may cost an authentication service a request: a client that keeps
        // failing is stopped, and its connection closed, rather than left to guess forever.
        if client.hook_refusals.load(Ordering::Acquire) >= self.config.max_auth_attempts {
            socket.abandon();
            self.refuse_by_limit(conn, &ns, ConnectRefusal::TooManyAuthAttempts);
            tracing::debug!(sid = %conn.sid(), "too many authentication attempts, closing");
            conn.close(CloseReason::ServerClose);
            return Ok(());
        }
        // Asynchronous hooks (an auth service): the CONNECT reply waits for them, and a second
        // CONNECT for this namespace meanwhile is a violation like any other.
        lock(&client.connecting).insert(ns.clone());
        let conn = Arc::clone(conn);
        tokio::spawn(async move {
            let mut verdict = Ok(());
            for hook in hooks {
                verdict = hook(Arc::clone(&socket)).await;
                if verdict.is_err() {
                    break;
                }
            }
            let Some(client) = conn.ext::<Arc<Client>>() else {
                return;
            };
            lock(&client.connecting).remove(&ns);
            match verdict {
                Err(refusal) => {
                    client.hook_refusals.fetch_add(1, Ordering::AcqRel);
                    refuse(&conn, &socket, &refusal)
                }
                Ok(()) if conn.is_closed() => {
                    // A recovered session whose new connection dropped meanwhile stays
                    // recoverable, as its first connection was.
                    if socket.recovered() {
                        socket.persist();
                    }
                    socket.abandon();
                }
                Ok(()) => establish(&conn, client, socket),
            }
        });
        Ok(())
    }

    /// Answers a CONNECT to `ns` that a limit refuses, and counts it.
    fn refuse_by_limit(&self, conn: &Conn, ns: &str, reason: ConnectRefusal) {
        self.limits.stats.count_connect(reason);
        let error = json!({ "message": reason.message() });
        let _ = conn.send(
            packet::encode(PacketKind::ConnectError, ns, None, Some(&error)),
            false,
        );
    }
}

/// Sends CONNECT_ERROR and undoes what middlewares did.
fn refuse(conn: &Conn, socket: &Socket, refusal: &ConnectError) {
    socket.abandon();
    let frame = packet::encode(
        PacketKind::ConnectError,
        socket.ns(),
        None,
        Some(&refusal.to_json()),
    );
    let _ = conn.send(frame, false);
}

/// Connects a socket that passed every middleware: registers it, answers CONNECT (after
/// replaying what a recovered socket missed), runs the namespace's connect handler.
fn establish(conn: &Conn, client: &Client, socket: Arc<Socket>) {
    let mut reply = serde_json::Map::new();
    reply.insert("sid".into(), Value::from(socket.id()));
    if let Some(pid) = socket.pid() {
        reply.insert("pid".into(), Value::from(pid.as_str()));
    }
    let reply = packet::encode(
        PacketKind::Connect,
        socket.ns(),
        None,
        Some(&Value::Object(reply)),
    );
    let register = |missed: &[crate::engine::Frame]| {
        if !client.ever_connected.swap(true, Ordering::AcqRel) {
            if let Some(timer) = lock(&client.connect_timer).take() {
                timer.abort();
            }
        }
        socket.set_connected();
        lock(&client.sockets).insert(socket.ns().to_owned(), Arc::clone(&socket));
        socket.namespace().add(&socket);
        // The missed events go before the CONNECT reply, as socket.io sends them; the client
        // holds them until it has connected.
        if !missed.is_empty() {
            let _ = conn.send_all(missed, false);
        }
        let _ = conn.send(reply.clone(), false);
    };
    match socket.restore_from() {
        None => socket.namespace().admit(|since| {
            socket.connected_since(since);
            register(&[]);
        }),
        Some(from) => {
            let replayed =
                socket
                    .namespace()
                    .replay(socket.sid(), &socket.rooms(), from, |missed| {
                        register(&missed)
                    });
            if !replayed {
                // Events it missed left the log while its middlewares or hooks ran. Claiming a
                // recovery now would hide the gap: end the connection, and the client's next
                // CONNECT (its session is taken) gets a fresh one.
                tracing::debug!(sid = %conn.sid(), id = socket.id(), "recovery came too late, closing");
                socket.abandon();
                conn.close(CloseReason::ServerClose);
                return;
            }
        }
    }
    socket.record_live();
    if let Some(observer) = socket.namespace().watcher() {
        observer.socket_connected(&socket);
    }
    tracing::debug!(
        sid = %conn.sid(),
        id = socket.id(),
        ns = socket.ns(),
        recovered = socket.recovered(),
        "socket connected"
    );
    socket.namespace().connected(&socket);
}
