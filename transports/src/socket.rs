//! [`Socket`]: one Engine.IO session as the rest of the server sees it.
//!
//! It wraps the pure [`Session`] in a mutex and adds the two wake-ups the IO side needs: one for
//! the attached receiver (frames queued, session closed, upgrade under way) and one for the
//! session's timer driver. The mutex is a plain `std` one, held only for a few field updates:
//! never across an `.await`, and never while calling into the application.
//!
//! A session ends in exactly one place: [`drive`] notices the close (whoever caused it),
//! removes the session from the registry and tells the application, once.

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use hyper::HeaderMap;
use tokio::sync::Notify;

use crate::engine::Shared;
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

/// What the client's opening request carried, kept for the application (auth, cookies, logs).
#[derive(Debug, Clone)]
pub struct Handshake {
    pub remote_addr: SocketAddr,
    pub headers: Headers,
    /// The raw query string of the opening request.
    pub query: String,
}

impl Handshake {
    /// The client's IP address: the peer's, or, when the peer is one of the `trusted` proxies,
    /// the client its `X-Forwarded-For` names (the rule of [`crate::admission`]); the proxy's
    /// own when it names none.
    pub fn client_ip(&self, trusted: &[crate::admission::IpRange]) -> std::net::IpAddr {
        crate::admission::real_client(self.remote_addr.ip(), &self.headers, trusted)
            .unwrap_or_else(|| self.remote_addr.ip().to_canonical())
    }
}

/// The opening request's headers, kept for the session's life in one compact allocation.
///
/// A `HeaderMap` costs about 100 bytes per slot on top of the bytes themselves (600 bytes for
/// a handful of headers, 2 KB for a browser's); every session keeps these, so they are stored
/// as `name:value\n` lines (HTTP forbids newlines in both, and `:` in names) and looked up by
/// a scan: reads are rare (auth hook, cookie forwarding), sessions are many.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    raw: Box<[u8]>,
}

impl Headers {
    /// Copies `map` (names are lowercase, as hyper gives them).
    pub fn from_map(map: &HeaderMap) -> Self {
        let mut raw = Vec::with_capacity(
            map.iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 2)
                .sum(),
        );
        for (name, value) in map {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(b':');
            raw.extend_from_slice(value.as_bytes());
            raw.push(b'\n');
        }
        Headers {
            raw: raw.into_boxed_slice(),
        }
    }

    /// Every `(name, value)` pair, in the request's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = std::str::from_utf8(&line[..colon]).ok()?;
                Some((name, &line[colon + 1..]))
            })
    }

    /// Every value of the header `name` (any case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The first value of the header `name` (any case), if it is text.
    pub fn get(&self, name: &str) -> Option<&str> {
        let value = self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?.1;
        std::str::from_utf8(value).ok()
    }

    /// A `HeaderMap` of the same headers.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.iter() {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                hyper::header::HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// One Engine.IO session: send to it, close it, read what it was opened with.
pub struct Socket {
    sid: Sid,
    handshake: Handshake,
    /// The address the session counts against in the session limits.
    client: Option<IpAddr>,
    stats: Arc<EngineStats>,
    session: Mutex<Session>,
    receiver_wake: Notify,
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
            session: Mutex::new(session),
            receiver_wake: Notify::new(),
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
            let mut session = self.lock();
            let result = session.push_all(frames, volatile);
            (result, session.take_evicted())
        };
        if evicted > 0 {
            self.stats
                .outbox_dropped
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
        match result {
            Ok(()) => self.receiver_wake.notify_waiters(),
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding this lock can only come from a bug in `Session`; the state is
        // still consistent enough to close, so keep going rather than poison every request.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wake_all(&self) {
        self.receiver_wake.notify_waiters();
        self.driver_wake.notify_waiters();
    }

    pub(crate) fn wake_receiver(&self) {
        self.receiver_wake.notify_waiters();
    }

    /// Waits until `check` (run under the session lock) returns a value. `check` runs again
    /// after every wake-up of the receiver side.
    pub(crate) async fn wait_until<T>(
        &self,
        mut check: impl FnMut(&mut Session) -> Option<T>,
    ) -> T {
        loop {
            let notified = self.receiver_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check(&mut self.lock()) {
                return value;
            }
            notified.await;
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
        self.receiver_wake.notify_waiters();
        self.wait_until(|session| session.probe_synced(ticket).then_some(()))
            .await;
    }

    /// Hands inbound packets to the session, and messages to the application, in order.
    /// Stops at the first packet that closes the session; with why, unless the client closed
    /// it.
    pub(crate) fn receive(
        self: &Arc<Self>,
        shared: &Shared,
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
                        shared.handler.on_message(self, msg);
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

/// Runs a session's timers until it closes, then ends it: out of the registry, and the
/// application told, exactly once.
pub(crate) async fn drive(socket: Arc<Socket>, shared: Arc<Shared>) {
    let reason = loop {
        let notified = socket.driver_wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (timeout, deadline, reason) = {
            let mut session = socket.lock();
            let timeout = session.handle_timeout(Instant::now());
            (timeout, session.poll_timeout(), session.close_reason())
        };
        if timeout.pinged || timeout.closed || timeout.upgrade_expired {
            socket.wake_receiver();
        }
        if let Some(reason) = reason {
            break reason;
        }
        let Some(deadline) = deadline else { continue };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = &mut notified => {}
        }
    };
    // Boxed: a live session's task (one per session) holds only the loop above.
    Box::pin(end(socket, shared, reason)).await;
}

/// How long, once shutdown began, a closed polling session with frames still queued waits for
/// its client's next poll.
pub const SHUTDOWN_POLL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Ends a closed session: tells the application, lets a force-closed HTTP session linger for
/// its final read, and frees its place.
async fn end(socket: Arc<Socket>, shared: Arc<Shared>, reason: CloseReason) {
    shared.stats.closed(socket.transport(), reason);
    tracing::debug!(sid = %socket.sid, reason = reason.as_str(), "session closed");
    shared.handler.on_close(&socket, reason);
    // A force-closed HTTP session stays reachable until a poll has read its close packet, or
    // a heartbeat period has passed (the client is gone). Once shutdown begins (whenever the
    // session closed), only frames still queued are worth waiting for, and briefly: a live
    // polling client is back within a round trip (it polls again as soon as a poll returns),
    // and one that has not come back within `SHUTDOWN_POLL_WAIT` is taken for gone, so that
    // the process need not wait out the grace period for clients that left without saying so.
    let linger = shared.config.session.ping_interval + shared.config.session.ping_timeout;
    let mut deadline = tokio::time::Instant::now() + linger.min(std::time::Duration::from_secs(30));
    loop {
        let notified = socket.driver_wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let session = socket.lock();
            if !session.awaits_final_read() {
                break;
            }
            if shared.tasks.is_closed() {
                if !session.has_outbound() {
                    break;
                }
                deadline = deadline.min(tokio::time::Instant::now() + SHUTDOWN_POLL_WAIT);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut notified => {}
        }
    }
    // Its place first: once the registry no longer shows it, a new session may take it.
    shared.admission.release(socket.client);
    shared.registry.remove(&socket.sid);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderValue, COOKIE, USER_AGENT};

    #[test]
    fn headers_keep_every_value_in_order_and_find_them_in_any_case() {
        let mut map = HeaderMap::new();
        map.append(COOKIE, HeaderValue::from_static("a=1"));
        map.append(
            USER_AGENT,
            HeaderValue::from_static("Mozilla/4.0 (MSIE 6.0: x)"),
        );
        map.append(COOKIE, HeaderValue::from_static("b=2"));
        map.append("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let headers = Headers::from_map(&map);
        assert_eq!(headers.get("Cookie"), Some("a=1"));
        assert_eq!(
            headers.get_all("cookie").collect::<Vec<_>>(),
            [b"a=1".as_slice(), b"b=2"]
        );
        assert_eq!(headers.get("user-agent"), Some("Mozilla/4.0 (MSIE 6.0: x)"));
        assert_eq!(headers.get("x-latin"), None, "not text");
        assert_eq!(
            headers.get_all("x-latin").next(),
            Some(b"caf\xe9".as_slice())
        );
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.to_map(), map);
        assert_eq!(Headers::default().iter().count(), 0);
    }
}
