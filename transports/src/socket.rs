//! [`Socket`]: one Engine.IO session as the rest of the server sees it.
//!
//! It wraps the pure [`Session`] in a mutex and adds the two wake-ups the IO side needs: one for
//! the attached receiver (frames queued, session closed, upgrade under way) and one for the
//! session's timer driver. The mutex is a plain `std` one, held only for a few field updates:
//! never across an `.await`, and never while calling into the application. The receiver side's
//! waiters are kept under that same lock ([`Socket::wait_until`]), so that a frame costs its
//! recipient one lock, not a second one for a wake-up list of its own.
//!
//! What the application is told about sessions is the [`Handler`] it gives the engine. A session
//! ends in exactly one place, `lifecycle::drive`, which tells it once.

use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::handshake::Handshake;
use crate::packet::{Frame, Packet, Str};
use crate::session::{CloseReason, PushError, Session, TransportKind};
use crate::sid::Sid;
use crate::stats::EngineStats;

/// A message from the client, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Str),
    Binary(Bytes),
}

impl Message {
    pub(crate) fn from_packet(packet: Packet) -> Option<Self> {
        match packet {
            Packet::Message(s) => Some(Message::Text(s)),
            Packet::Binary(b) => Some(Message::Binary(b)),
            _ => None,
        }
    }
}

/// What the layer above (Socket.IO, or an echo app) is told about sessions. Calls come from the
/// transports' tasks; they must not block.
pub trait Handler: Send + Sync + 'static {
    /// A session opened. Nothing it sends reaches the client before the handshake.
    fn on_open(&self, socket: &Arc<Socket>);
    /// A message arrived, in order.
    fn on_message(&self, socket: &Arc<Socket>, message: Message);
    /// The session ended; called once, after which the session accepts nothing.
    fn on_close(&self, socket: &Arc<Socket>, reason: CloseReason);
}

/// One Engine.IO session: send to it, close it, read what it was opened with.
pub struct Socket {
    sid: Sid,
    handshake: Handshake,
    /// The address the session counts against in the session limits.
    client: Option<IpAddr>,
    stats: Arc<EngineStats>,
    session: Mutex<Guarded>,
    driver_wake: Notify,
    ext: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("sid", &self.sid).finish()
    }
}

impl Socket {
    pub(crate) fn new(
        sid: Sid,
        handshake: Handshake,
        client: Option<IpAddr>,
        session: Session,
        stats: Arc<EngineStats>,
    ) -> Self {
        Socket {
            sid,
            handshake,
            client,
            stats,
            session: Mutex::new(Guarded {
                session,
                waiters: Waiters::default(),
            }),
            driver_wake: Notify::new(),
            ext: OnceLock::new(),
        }
    }

    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    pub fn transport(&self) -> TransportKind {
        self.lock().transport()
    }

    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// Whether a receiver is attached: a long poll parked, a stream or a WebSocket open.
    pub fn has_receiver(&self) -> bool {
        self.lock().has_receiver()
    }

    /// Per-session state of the layer above, set once (usually in `on_open`).
    pub fn set_ext<T: Any + Send + Sync>(&self, value: T) -> Result<(), T> {
        self.ext.set(Box::new(value)).map_err(|b| {
            *b.downcast::<T>()
                .unwrap_or_else(|_| unreachable!("the box was made from a T just above"))
        })
    }

    pub fn ext<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.ext.get()?.downcast_ref()
    }

    /// Queues a text message.
    pub fn send_text(&self, text: &str) -> Result<(), PushError> {
        self.send(Frame::message(text), false)
    }

    /// Queues a binary message.
    pub fn send_binary(&self, data: Bytes) -> Result<(), PushError> {
        self.send(Frame::Binary(data), false)
    }

    /// Queues an encoded frame. `volatile` frames are dropped, rather than closing the session,
    /// when the outbox is full, and queued ones are dropped to make room for others (see
    /// [`Session::push`]).
    pub fn send(&self, frame: Frame, volatile: bool) -> Result<(), PushError> {
        self.send_all(std::slice::from_ref(&frame), volatile)
    }

    /// Queues frames that travel together, all or none.
    pub fn send_all(&self, frames: &[Frame], volatile: bool) -> Result<(), PushError> {
        let (result, evicted) = {
            let mut guarded = self.guarded();
            let result = guarded.session.push_all(frames, volatile);
            if result.is_ok() {
                guarded.waiters.wake();
            }
            (result, guarded.session.take_evicted())
        };
        if evicted > 0 {
            self.stats
                .outbox_dropped
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
        match result {
            Ok(()) => {}
            Err(PushError::Overflow) => self.wake_all(),
            Err(PushError::Dropped) => {
                self.stats.outbox_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(PushError::Closed) => {}
        }
        result
    }

    /// Closes the session; the client is told when its transport allows it (a polling client
    /// gets a close packet, a WebSocket a close frame).
    pub fn close(&self, reason: CloseReason) {
        if self.lock().close(reason) {
            self.wake_all();
        }
    }

    pub(crate) fn lock(&self) -> SessionGuard<'_> {
        SessionGuard(self.guarded())
    }

    fn guarded(&self) -> MutexGuard<'_, Guarded> {
        // A panic while holding this lock can only come from a bug in `Session`; the state is
        // still consistent enough to close, so keep going rather than poison every request.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the receiver side and the driver. Takes the session lock: never call it (or
    /// [`Socket::wake_receiver`]) while a guard from [`Socket::lock`] is alive, such as in the
    /// same statement as `socket.lock().…`.
    pub(crate) fn wake_all(&self) {
        self.guarded().waiters.wake();
        self.driver_wake.notify_waiters();
    }

    /// The driver's wake-up (see [`crate::lifecycle::drive`]).
    pub(crate) fn driver_wake(&self) -> &Notify {
        &self.driver_wake
    }

    /// The address the session counts against in the session limits.
    pub(crate) fn client(&self) -> Option<IpAddr> {
        self.client
    }

    pub(crate) fn wake_receiver(&self) {
        self.guarded().waiters.wake();
    }

    /// How many tasks wait on the receiver side.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.guarded().waiters.list.len()
    }

    /// Waits until `check` (run under the session lock) returns a value. `check` runs again
    /// after every wake-up of the receiver side.
    pub(crate) fn wait_until<T, F>(&self, check: F) -> WaitUntil<'_, F>
    where
        F: FnMut(&mut Session) -> Option<T> + Unpin,
    {
        WaitUntil {
            socket: self,
            check,
            parked: None,
        }
    }

    /// Orders an HTTP request after the frames an upgrade probe of this session has received
    /// (see [`Session::sync_probe`]): returns at once when no probe is on, else when the probe
    /// has read its connection dry.
    pub(crate) async fn sync_probe(&self) {
        let Some(ticket) = self.lock().sync_probe() else {
            return;
        };
        // The probe waits on the receiver side's wake-up too.
        self.wake_receiver();
        self.wait_until(|session| session.probe_synced(ticket).then_some(()))
            .await;
    }

    /// Hands inbound packets to the session, and messages to the application, in order.
    /// Stops at the first packet that closes the session; with why, unless the client closed
    /// it.
    pub(crate) fn receive(
        self: &Arc<Self>,
        handler: &dyn Handler,
        packets: impl IntoIterator<Item = Packet>,
    ) -> Result<(), CloseReason> {
        use crate::session::Inbound;
        for packet in packets {
            let size = match &packet {
                Packet::Message(s) | Packet::Ping(s) | Packet::Pong(s) | Packet::Open(s) => {
                    1 + s.len()
                }
                Packet::Binary(b) => b.len(),
                _ => 1,
            };
            let (transport, result) = {
                let mut session = self.lock();
                (
                    session.transport(),
                    session.on_packet(packet, Instant::now()),
                )
            };
            self.stats.received(transport, size);
            match result {
                Ok(Inbound::None) => {}
                Ok(Inbound::Pong(rtt)) => {
                    self.stats.ping_rtt(transport, rtt);
                    // The driver sleeps until the pong deadline; the next ping is due a
                    // pingInterval after this pong, which may be sooner.
                    self.driver_wake.notify_waiters();
                }
                Ok(Inbound::Message(packet)) => {
                    if let Some(msg) = Message::from_packet(packet) {
                        handler.on_message(self, msg);
                    }
                }
                Ok(Inbound::Closed) => {
                    self.wake_all();
                    return Ok(());
                }
                Ok(Inbound::TimedOut) => {
                    self.wake_all();
                    return Err(CloseReason::PingTimeout);
                }
                Err(error) => {
                    tracing::debug!(sid = %self.sid, %error, "protocol error, closing");
                    self.wake_all();
                    return Err(CloseReason::ProtocolError);
                }
            }
        }
        Ok(())
    }
}

/// What the session's mutex guards: the session, and the tasks waiting for it to change.
struct Guarded {
    session: Session,
    waiters: Waiters,
}

/// The session under its lock (the waiters are the socket's business).
pub(crate) struct SessionGuard<'a>(MutexGuard<'a, Guarded>);

impl Deref for SessionGuard<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.0.session
    }
}

impl DerefMut for SessionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.0.session
    }
}

/// The tasks waiting for a session's receiver side to change, each under the id its
/// [`WaitUntil`] keeps. Almost always one (the attached receiver), so the list starts with room
/// for exactly one.
#[derive(Default)]
struct Waiters {
    list: Vec<(u64, Waker)>,
    next_id: u64,
}

impl Waiters {
    /// Registers `waker` under `id`, or under a new id written there if `id` is not (or no
    /// longer) registered.
    fn park(&mut self, id: &mut Option<u64>, waker: &Waker) {
        if let Some(entry) = id.and_then(|id| self.list.iter_mut().find(|(i, _)| *i == id)) {
            if !entry.1.will_wake(waker) {
                entry.1 = waker.clone();
            }
            return;
        }
        let new = self.next_id;
        self.next_id += 1;
        if self.list.capacity() == 0 {
            self.list.reserve_exact(1);
        }
        self.list.push((new, waker.clone()));
        *id = Some(new);
    }

    fn unpark(&mut self, id: u64) {
        if let Some(at) = self.list.iter().position(|(i, _)| *i == id) {
            self.list.swap_remove(at);
        }
    }

    /// Wakes every waiter, and forgets them: each registers again if it still waits. Under the
    /// session lock: a tokio waker only schedules its task, it never runs code here.
    fn wake(&mut self) {
        for (_, waker) in self.list.drain(..) {
            waker.wake();
        }
    }
}

/// [`Socket::wait_until`]'s future. Its registration is undone when it completes or is dropped,
/// so that a task that stopped waiting is not woken for nothing.
pub(crate) struct WaitUntil<'a, F> {
    socket: &'a Socket,
    check: F,
    parked: Option<u64>,
}

impl<T, F> Future for WaitUntil<'_, F>
where
    F: FnMut(&mut Session) -> Option<T> + Unpin,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let mut guarded = this.socket.guarded();
        let Guarded { session, waiters } = &mut *guarded;
        if let Some(value) = (this.check)(session) {
            if let Some(id) = this.parked.take() {
                waiters.unpark(id);
            }
            return Poll::Ready(value);
        }
        // Under the lock the check ran under: whatever changes the session next finds it.
        waiters.park(&mut this.parked, cx.waker());
        Poll::Pending
    }
}

impl<F> Drop for WaitUntil<'_, F> {
    fn drop(&mut self) {
        if let Some(id) = self.parked.take() {
            self.socket.guarded().waiters.unpark(id);
        }
    }
}
