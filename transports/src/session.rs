//! The Engine.IO session state machine, sans IO.
//!
//! Time is an input: every method that depends on it takes `now`, and [`Session::poll_timeout`]
//! says when [`Session::handle_timeout`] must next be called. The session owns the bounded
//! outbox and decides who may read it: at most one receiver is attached at a time, and one
//! upstream request at a time. It never blocks, never sleeps and never touches a socket; the
//! socket, the session driver (`lifecycle.rs`) and the transports do that.
//!
//! Each kind of receiver takes the outbox in one way: a long poll with [`Session::long_poll`],
//! a stream with [`Session::stream_chunk`], a WebSocket with [`Session::drain`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::packet::{Frame, Packet};

/// The transports of an Engine.IO session. JSONP is `Polling` answered as a script (the
/// reference server names it `polling` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Polling,
    WebSocket,
    /// Forever-frame in a hidden `<iframe>`.
    Iframe,
    /// Forever-frame in an `ActiveXObject("htmlfile")` document (IE's busy cursor stays off).
    Htmlfile,
    Sse,
    XhrStreaming,
}

impl TransportKind {
    pub const ALL: [TransportKind; 6] = [
        TransportKind::WebSocket,
        TransportKind::Htmlfile,
        TransportKind::Iframe,
        TransportKind::Sse,
        TransportKind::XhrStreaming,
        TransportKind::Polling,
    ];

    /// The name used in the `transport` query parameter.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::WebSocket => "websocket",
            TransportKind::Iframe => "iframe",
            TransportKind::Htmlfile => "htmlfile",
            TransportKind::Sse => "sse",
            TransportKind::XhrStreaming => "xhr-streaming",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        TransportKind::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether its receiver is one long response written in chunks.
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            TransportKind::Iframe
                | TransportKind::Htmlfile
                | TransportKind::Sse
                | TransportKind::XhrStreaming
        )
    }
}

/// Why a session ended. Exactly one is recorded, by the first close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet.
    ClientClose,
    /// No pong within pingTimeout.
    PingTimeout,
    /// The client broke the protocol (bad packet, overlapping requests, ...).
    ProtocolError,
    /// The underlying connection closed or failed.
    TransportClose,
    /// The server application closed the session.
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
    /// The outbox was full with a packet that may not be dropped.
    OutboxFull,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client close",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::TransportClose => "transport close",
            CloseReason::ServerClose => "server close",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::OutboxFull => "outbox full",
        }
    }

    /// The packet a parked polling receiver gets when the session ends this way: a noop when
    /// the client asked to close (it knows), a close packet when the server ends it.
    fn final_packet(self) -> Packet {
        match self {
            CloseReason::ClientClose => Packet::Noop,
            _ => Packet::Close,
        }
    }
}

/// Session timings and limits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upgrade_timeout: Duration,
    /// Packets the outbox holds before the overflow policy applies.
    pub max_outbox: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_outbox: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A WebSocket probe answered `3probe`; the upgrade completes when it sends `5`.
    Upgrading {
        deadline: Instant,
    },
    Closed(CloseReason),
}

/// A request's place in the order of syncs with an upgrade probe ([`Session::sync_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTicket(u64);

/// A token naming the receiver currently attached; detaching with a stale token is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverId(u64);

/// Why a receiver or an upstream request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("session is closed")]
    Closed,
    #[error("session uses another transport")]
    TransportMismatch,
    /// A second concurrent receiver (or upstream request): the session has been closed.
    #[error("overlapping request")]
    Overlap,
    /// An upstream request while another is still being read, on a resumable session: the
    /// first may be a broken one the client gave up on. Wait for it to end.
    #[error("another upstream request is in progress")]
    Busy,
    /// An `ack` beyond what was sent: the session has been closed.
    #[error("acknowledged frames that were never sent")]
    BadAck,
}

/// What a pushed frame met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("session is closed")]
    Closed,
    /// The outbox was full and the frame was volatile: it was dropped, the session lives on.
    #[error("outbox full, volatile frame dropped")]
    Dropped,
    /// The outbox was full: the session has been closed with [`CloseReason::OutboxFull`].
    #[error("outbox full, session closed")]
    Overflow,
}

/// What an inbound packet means for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Nothing for the application (noop, a late pong).
    None,
    /// The pong to the last ping, after this round trip.
    Pong(Duration),
    /// A message for the application.
    Message(Packet),
    /// The client closed the session.
    Closed,
    /// The heartbeat deadline had passed when the packet arrived: the session closed (ping
    /// timeout) instead of taking it.
    TimedOut,
}

/// Why an inbound packet was refused; the session is closed with `ProtocolError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid heartbeat direction")]
    ClientPing,
    #[error("unexpected {0:?} packet")]
    Unexpected(crate::packet::PacketType),
}

/// One Engine.IO session.
#[derive(Debug)]
pub struct Session {
    transport: TransportKind,
    state: State,
    config: SessionConfig,
    outbox: VecDeque<Frame>,
    /// The volatile packets wholly queued, oldest first, as (position of their first frame
    /// counted from the session's first frame, frames): what may be dropped to make room.
    volatile: VecDeque<(u64, usize)>,
    /// Frames taken from the front of the outbox so far (turns a position into an index).
    taken: u64,
    /// Volatile packets dropped from the queue since [`Self::take_evicted`] last ran.
    evicted: usize,
    receiver: Option<ReceiverId>,
    next_receiver: u64,
    posting: bool,
    /// The final packet of a closed session was read by a receiver.
    final_read: bool,
    /// When the next ping is due. Deadlines derive from this nominal time, not from when the
    /// driver happened to run: see [`Self::handle_timeout`].
    next_ping: Instant,
    ping_sent: Instant,
    pong_deadline: Option<Instant>,
    /// A WebSocket connection is probing this session for an upgrade (from its HTTP upgrade
    /// request until the probe ends, either way): HTTP requests first sync with it.
    probe: bool,
    /// Syncs asked of the probe, and the last one it completed (see [`Self::sync_probe`]).
    probe_asked: u64,
    probe_synced: u64,
    /// Engine.IO-level resume, for clients that ask for it (see [`Resume`]).
    resume: Option<Resume>,
    /// The last long poll's stamp and answer, kept until the client shows it got them (see
    /// [`Self::attach_long_poll`]).
    last_answer: Option<LastAnswer>,
}

/// What a long poll stamped `stamp` answered: the frames it took from the outbox.
#[derive(Debug)]
struct LastAnswer {
    stamp: u64,
    frames: Vec<Frame>,
}

/// What a resumable session keeps so that no frame is lost with a broken HTTP response.
///
/// Halley's own client asks for it with an `ack` parameter on its handshake. Every frame taken
/// from the outbox has a position (the handshake is 0). Each poll response and stream chunk
/// then ends with a marker, a noop packet whose data is `p<n>` (the client has everything
/// before position `n` once it has read this far) or, in the last chunk of a stream that ends
/// cleanly, `e<n>`. A stream that stops without `e` was cut. Frames written but not yet
/// confirmed are retained; the client confirms with `ack=<n>` on each request, and a receiver
/// that opens with `ack=n` first gets the retained frames from `n` on again: every frame
/// written to a connection that broke is delivered later, exactly once and in order. Upstream,
/// a POST says with `seq=<k>` which position its first packet has, so a POST repeated after a
/// lost response is not applied twice.
///
/// Retained frames count against `max_outbox`; a stream ends (and its client reopens it,
/// confirming) once a quarter of the outbox is unconfirmed, and every request confirms, so an
/// idle client keeps nothing after its next pong.
#[derive(Debug, Default)]
struct Resume {
    retained: VecDeque<Frame>,
    /// Upstream packets applied so far.
    inbound: u64,
}

/// A position the client claimed that the session never reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("acknowledged frames that were never sent")]
    AheadOfSent,
    #[error("upstream packets out of sequence")]
    UpstreamGap,
}

impl Session {
    /// A new session whose outbox starts with the handshake packet `open`.
    pub fn new(transport: TransportKind, config: SessionConfig, open: Frame, now: Instant) -> Self {
        let next_ping = now + config.ping_interval;
        Session {
            transport,
            state: State::Open,
            config,
            outbox: VecDeque::from([open]),
            volatile: VecDeque::new(),
            taken: 0,
            evicted: 0,
            receiver: None,
            next_receiver: 0,
            posting: false,
            final_read: false,
            next_ping,
            ping_sent: now,
            pong_deadline: None,
            probe: false,
            probe_asked: 0,
            probe_synced: 0,
            resume: None,
            last_answer: None,
        }
    }

    /// Keeps what a client needs to resume after a broken response or connection (see
    /// [`Resume`]).
    pub fn enable_resume(&mut self) {
        self.resume = Some(Resume::default());
    }

    /// Whether a receiver (a long poll, a stream, a WebSocket) is attached now.
    pub fn has_receiver(&self) -> bool {
        self.receiver.is_some()
    }

    /// Whether `id` is the receiver attached now.
    pub fn is_receiver(&self, id: ReceiverId) -> bool {
        self.receiver == Some(id)
    }

    /// Upstream packets applied so far (resumable sessions; 0 otherwise).
    pub fn upstream_received(&self) -> u64 {
        self.resume.as_ref().map_or(0, |r| r.inbound)
    }

    pub fn is_resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// Frames written but not yet confirmed by a resuming client.
    pub fn retained(&self) -> usize {
        self.resume.as_ref().map_or(0, |r| r.retained.len())
    }

    /// The client has every frame before position `ack`: they need not be kept. Refused
    /// (the session is then closed) when `ack` is beyond what was sent; an older `ack` than
    /// one seen before confirms nothing more.
    pub fn acknowledge(&mut self, ack: u64) -> Result<(), ResumeError> {
        let taken = self.taken;
        let Some(resume) = &mut self.resume else {
            return Ok(());
        };
        if ack > taken {
            self.close(CloseReason::ProtocolError);
            return Err(ResumeError::AheadOfSent);
        }
        let first = taken - resume.retained.len() as u64;
        let confirmed = ack.saturating_sub(first) as usize;
        resume
            .retained
            .drain(..confirmed.min(resume.retained.len()));
        Ok(())
    }

    /// Confirms `ack`, then puts the frames from `ack` on back in front of the outbox, to be
    /// written again: the client did not get them.
    fn rewind(&mut self, ack: u64) -> Result<(), ResumeError> {
        self.acknowledge(ack)?;
        if let Some(resume) = &mut self.resume {
            let lost = std::mem::take(&mut resume.retained);
            self.taken -= lost.len() as u64;
            for frame in lost.into_iter().rev() {
                self.outbox.push_front(frame);
            }
        }
        Ok(())
    }

    /// Where an upstream payload of `count` packets whose first has position `seq` starts to
    /// be new: how many of its packets were applied already (a POST repeated after its
    /// response was lost). `seq` past the packets applied so far is a gap, and refused.
    pub fn admit_upstream(&mut self, seq: Option<u64>, count: usize) -> Result<usize, ResumeError> {
        let Some(resume) = &mut self.resume else {
            return Ok(0);
        };
        let seq = seq.unwrap_or(resume.inbound);
        if seq > resume.inbound {
            self.close(CloseReason::ProtocolError);
            return Err(ResumeError::UpstreamGap);
        }
        let end = seq + count as u64;
        let seen = (resume.inbound - seq).min(count as u64) as usize;
        resume.inbound = resume.inbound.max(end);
        Ok(seen)
    }

    /// The marker that ends a response of a resumable session (see [`Resume`]).
    fn marker(&self, end: bool) -> Option<Frame> {
        self.resume.as_ref()?;
        let tag = if end { 'e' } else { 'p' };
        Some(Frame::Text(crate::packet::Str::from(format!(
            "6{tag}{}",
            self.taken
        ))))
    }

    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.state {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_upgrading(&self) -> bool {
        matches!(self.state, State::Upgrading { .. })
    }

    /// Queues a frame for the client. When the outbox is full (`max_outbox` frames), volatile
    /// packets go first: a new volatile frame is dropped, and any other frame makes room by
    /// dropping the oldest queued volatile packets. If that is not enough room, the session is
    /// closed ([`CloseReason::OutboxFull`]): losing the frame silently would break the delivery
    /// promise, and queueing it would let a client that stopped reading grow memory without
    /// bound.
    pub fn push(&mut self, frame: Frame, volatile: bool) -> Result<(), PushError> {
        self.push_all(std::slice::from_ref(&frame), volatile)
    }

    /// Queues frames that must travel together (a Socket.IO packet and its binary
    /// attachments): all of them or none, and a volatile group is dropped whole.
    pub fn push_all(&mut self, frames: &[Frame], volatile: bool) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed);
        }
        let held = self.outbox.len() + self.retained();
        let excess = (held + frames.len()).saturating_sub(self.config.max_outbox);
        if excess > 0 {
            if volatile {
                return Err(PushError::Dropped);
            }
            if !self.evict_volatile(excess) {
                self.close(CloseReason::OutboxFull);
                return Err(PushError::Overflow);
            }
        }
        if volatile && !frames.is_empty() {
            let position = self.taken + self.outbox.len() as u64;
            self.volatile.push_back((position, frames.len()));
        }
        self.outbox.extend(frames.iter().cloned());
        Ok(())
    }

    /// Drops the oldest queued volatile packets until `frames` frames are free; false (and
    /// nothing dropped) if all of them would not free as many.
    fn evict_volatile(&mut self, frames: usize) -> bool {
        let mut freed = 0;
        let mut groups = 0;
        for &(_, len) in &self.volatile {
            if freed >= frames {
                break;
            }
            freed += len;
            groups += 1;
        }
        if freed < frames {
            return false;
        }
        let taken = self.taken;
        let doomed = self.volatile.range(..groups);
        let mut doomed = doomed
            .map(|&(at, len)| (at - taken, at - taken + len as u64))
            .peekable();
        let mut index = 0u64;
        self.outbox.retain(|_| {
            let i = index;
            index += 1;
            while doomed.next_if(|&(_, end)| end <= i).is_some() {}
            !doomed.peek().is_some_and(|&(start, _)| start <= i)
        });
        self.volatile.drain(..groups);
        // Every dropped packet was queued before those that remain.
        for (at, _) in &mut self.volatile {
            *at -= freed as u64;
        }
        self.evicted += groups;
        true
    }

    /// Volatile packets dropped from the queue (to make room) since the last call.
    pub fn take_evicted(&mut self) -> usize {
        std::mem::take(&mut self.evicted)
    }

    /// Counts `n` frames taken from the front: a volatile packet partly or wholly on its way
    /// can no longer be dropped.
    fn took(&mut self, n: usize) {
        self.taken += n as u64;
        while self
            .volatile
            .front()
            .is_some_and(|&(at, _)| at < self.taken)
        {
            self.volatile.pop_front();
        }
    }

    pub fn has_outbound(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Frames queued, not yet taken.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Takes every queued frame, in order: what a WebSocket writes (no packet limit, no
    /// markers; the connection says when it is replaced or closed).
    pub fn drain(&mut self) -> VecDeque<Frame> {
        self.took(self.outbox.len());
        let frames = std::mem::take(&mut self.outbox);
        if let Some(resume) = &mut self.resume {
            resume.retained.extend(frames.iter().cloned());
        }
        frames
    }

    /// Takes at most `max` queued frames (at least one, if any is queued), in order.
    fn drain_at_most(&mut self, max: usize, out: &mut Vec<Frame>) {
        let n = max.max(1).min(self.outbox.len());
        self.took(n);
        let from = out.len();
        out.extend(self.outbox.drain(..n));
        if let Some(resume) = &mut self.resume {
            resume.retained.extend(out[from..].iter().cloned());
        }
    }

    /// Attaches a receiver of `kind`, arriving at `now`. A polling receiver that finds another
    /// attached closes the session: the protocol forbids concurrent GETs. On a resumable
    /// session the newcomer replaces it instead (the old one's connection may be broken without
    /// the server knowing yet), and `ack` says what the client got: the frames after it are
    /// written again.
    pub fn attach(
        &mut self,
        kind: TransportKind,
        now: Instant,
        ack: Option<u64>,
    ) -> Result<ReceiverId, AttachError> {
        self.expire(now);
        let resuming = self.resume.is_some();
        if self.is_closed() && !(self.awaits_final_read() && (resuming || self.receiver.is_none()))
        {
            return Err(AttachError::Closed);
        }
        if kind != self.transport {
            return Err(AttachError::TransportMismatch);
        }
        if self.receiver.is_some() && !resuming {
            self.close(CloseReason::ProtocolError);
            return Err(AttachError::Overlap);
        }
        if let Some(ack) = ack {
            self.rewind(ack).map_err(|_| AttachError::BadAck)?;
        }
        self.next_receiver += 1;
        let id = ReceiverId(self.next_receiver);
        self.receiver = Some(id);
        Ok(id)
    }

    /// Attaches a long-poll GET stamped `stamp` (its `t` query parameter, which clients make
    /// unique per request), as [`Self::attach`] does. A GET with the stamp of the previous one is
    /// that GET sent again by a reverse proxy whose first attempt failed before any answer
    /// reached the proxy (nginx's default `proxy_next_upstream error` retries such a GET on the
    /// next upstream, which in a cluster forwards it here again). The first attempt may have
    /// been answered here all the same, through a node that died before passing the answer on:
    /// the frames it took go back in front of the outbox, and the retry replaces the first
    /// attempt if that still waits (it answers a noop to nobody) instead of overlapping it. Any
    /// other GET shows that the client got the previous answer, which is then forgotten; one
    /// without a stamp keeps nothing. Resumable sessions confirm positions instead (`ack`).
    pub fn attach_long_poll(
        &mut self,
        now: Instant,
        ack: Option<u64>,
        stamp: Option<u64>,
    ) -> Result<ReceiverId, AttachError> {
        if self.resume.is_none() {
            let last = self.last_answer.take();
            if let Some(stamp) = stamp {
                if let Some(last) = last.filter(|last| last.stamp == stamp) {
                    self.taken -= last.frames.len() as u64;
                    for frame in last.frames.into_iter().rev() {
                        self.outbox.push_front(frame);
                    }
                    self.receiver = None;
                }
                self.last_answer = Some(LastAnswer {
                    stamp,
                    frames: Vec::new(),
                });
            }
        }
        self.attach(TransportKind::Polling, now, ack)
    }

    /// Whether this closed session should stay reachable until an HTTP receiver has read its
    /// final packet: when the server closed it and no receiver was there to say so, the
    /// client's next poll must learn it was closed rather than find an unknown session
    /// (engine.io holds a force-closed polling session the same way). Likewise when the client
    /// closed it by POST: its poll may be on its way, sent before the close but run after it
    /// on another worker, and must get the noop it gets when it runs first, not a 400.
    pub fn awaits_final_read(&self) -> bool {
        let waits = match self.state {
            State::Closed(
                CloseReason::ServerClose | CloseReason::OutboxFull | CloseReason::ClientClose,
            ) => true,
            // Shutdown, while frames are queued: a client between two polls gets them (and the
            // close) on its next poll. With nothing queued it would only learn of the close,
            // which a 400 tells it as well, and shutdown need not wait for it.
            State::Closed(CloseReason::ServerShutdown) => self.has_outbound(),
            _ => false,
        };
        // A resuming client may have lost the final response: what it has not confirmed is
        // kept for it too (it is told the close again with them).
        let unconfirmed =
            self.retained() > 0 && !matches!(self.state, State::Closed(CloseReason::ClientClose));
        waits && self.transport != TransportKind::WebSocket && (!self.final_read || unconfirmed)
    }

    pub fn detach(&mut self, id: ReceiverId) {
        if self.receiver == Some(id) {
            self.receiver = None;
        }
    }

    /// Whether an attached polling receiver should answer now: it has frames, the session
    /// ended, or an upgrade is under way (it must let the client's poll return, with a noop
    /// if nothing else).
    fn receiver_ready(&self) -> bool {
        self.has_outbound() || self.state != State::Open
    }

    /// The frames a polling receiver answers with when [`Self::receiver_ready`].
    fn take_poll_response(&mut self, max_packets: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        self.drain_at_most(max_packets, &mut frames);
        if let Some(last) = &mut self.last_answer {
            last.frames.clone_from(&frames);
        }
        frames.extend(self.marker(false));
        match self.state {
            // The close packet follows whatever was still queued, once all of it is out.
            State::Closed(reason) if self.outbox.is_empty() => {
                self.final_read = true;
                frames.push(reason.final_packet().encode());
            }
            State::Upgrading { .. } if frames.is_empty() => frames.push(Packet::Noop.encode()),
            _ => {}
        }
        frames
    }

    /// What the polling receiver `id` answers now, or `None` to keep waiting. A receiver that
    /// lost its place (the session upgraded under it, or a resuming client replaced it)
    /// answers a noop and leaves the outbox to the new one.
    pub fn long_poll(&mut self, id: ReceiverId, max_packets: usize) -> Option<Vec<Frame>> {
        if self.receiver != Some(id) && !self.is_closed() {
            return Some(vec![Packet::Noop.encode()]);
        }
        self.receiver_ready()
            .then(|| self.take_poll_response(max_packets))
    }

    /// What the streaming receiver `id` writes next, or `None` to keep waiting; `true` with the
    /// frames when the stream must end after them. Unlike a poll, a stream keeps flowing while
    /// an upgrade is probed; when the upgrade completes it ends with a noop, and when the
    /// session closes it ends with the final packet. It also ends once the frames reach
    /// `budget` payload bytes (the stream's size limit: the client reopens it), and on a
    /// resumable session once a quarter of the outbox waits to be confirmed.
    pub fn stream_chunk(&mut self, id: ReceiverId, budget: usize) -> Option<(Vec<Frame>, bool)> {
        if let State::Closed(reason) = self.state {
            let mut frames: Vec<Frame> = self.drain().into();
            frames.extend(self.marker(true));
            frames.push(reason.final_packet().encode());
            self.final_read = true;
            return Some((frames, true));
        }
        if self.receiver != Some(id) {
            let end = self.marker(true).unwrap_or_else(|| Packet::Noop.encode());
            return Some((vec![end], true));
        }
        if !self.has_outbound() {
            return None;
        }
        let mut frames: Vec<Frame> = self.drain().into();
        let end = payload_size(&frames) >= budget
            || (self.resume.is_some() && self.retained() >= (self.config.max_outbox / 4).max(1));
        frames.extend(self.marker(end));
        Some((frames, end))
    }

    /// Starts an upstream request (polling POST) arriving at `now`. Overlapping ones close the
    /// session, except on a resumable one, where the later one waits ([`AttachError::Busy`]).
    /// `ack` confirms frames, as on a receiver.
    pub fn begin_post(
        &mut self,
        kind: TransportKind,
        now: Instant,
        ack: Option<u64>,
    ) -> Result<(), AttachError> {
        self.expire(now);
        if self.is_closed() {
            return Err(AttachError::Closed);
        }
        if kind != self.transport {
            return Err(AttachError::TransportMismatch);
        }
        if self.posting {
            if self.resume.is_some() {
                return Err(AttachError::Busy);
            }
            self.close(CloseReason::ProtocolError);
            return Err(AttachError::Overlap);
        }
        if let Some(ack) = ack {
            self.acknowledge(ack).map_err(|_| AttachError::BadAck)?;
        }
        self.posting = true;
        Ok(())
    }

    pub fn end_post(&mut self) {
        self.posting = false;
    }

    /// Handles a packet received on the session's current transport at `now`.
    pub fn on_packet(&mut self, packet: Packet, now: Instant) -> Result<Inbound, ProtocolError> {
        if self.is_closed() {
            return Ok(Inbound::None);
        }
        if self.expire(now) {
            // A pong after the deadline is too late, whether or not the driver has run yet.
            return Ok(Inbound::TimedOut);
        }
        match packet {
            Packet::Pong(_) => {
                if self.pong_deadline.take().is_none() {
                    return Ok(Inbound::None);
                }
                self.next_ping = now + self.config.ping_interval;
                Ok(Inbound::Pong(now.saturating_duration_since(self.ping_sent)))
            }
            Packet::Message(_) | Packet::Binary(_) => Ok(Inbound::Message(packet)),
            Packet::Close => {
                self.close(CloseReason::ClientClose);
                Ok(Inbound::Closed)
            }
            Packet::Noop => Ok(Inbound::None),
            Packet::Ping(_) => {
                self.close(CloseReason::ProtocolError);
                Err(ProtocolError::ClientPing)
            }
            Packet::Open(_) | Packet::Upgrade => {
                let kind = packet.packet_type();
                self.close(CloseReason::ProtocolError);
                Err(ProtocolError::Unexpected(kind))
            }
        }
    }

    /// When the session times out without a pong: the deadline of the ping sent, or else of
    /// the ping due next.
    fn heartbeat_deadline(&self) -> Instant {
        self.pong_deadline
            .unwrap_or(self.next_ping + self.config.ping_timeout)
    }

    /// Closes the session (ping timeout) if its heartbeat deadline passed by `now`, and says
    /// so. Every input runs this first: the driver closes a timed-out session too, but on its
    /// own worker and timer tick, and a request the client sent after the deadline must find
    /// the session closed whichever of the two runs first.
    fn expire(&mut self, now: Instant) -> bool {
        if self.is_closed() || now < self.heartbeat_deadline() {
            return false;
        }
        self.close(CloseReason::PingTimeout);
        true
    }

    /// A WebSocket connection for this session was accepted to probe it for an upgrade; it
    /// probes until [`Self::end_probe`]. One at a time, as engine.io allows: false (the
    /// connection is to be closed) when the session cannot upgrade or another probe is on.
    pub fn begin_probe(&mut self) -> bool {
        if self.probe || !self.can_upgrade() {
            return false;
        }
        self.probe = true;
        true
    }

    /// The probing connection finished, whichever way (upgraded, refused, gone).
    pub fn end_probe(&mut self) {
        self.probe = false;
    }

    /// Orders an HTTP request on this session after the probe's frames. The client may have
    /// sent `2probe` and `5` before this request, on another connection whose task has not
    /// read them yet; if the request ran first, it would be served by polling although the
    /// client had already left it. So while a probe is on, the request takes a ticket and
    /// waits ([`Self::probe_synced`]) until the probe has read all its connection holds
    /// ([`Self::complete_probe_sync`]). `None`: no probe, go ahead.
    pub fn sync_probe(&mut self) -> Option<ProbeTicket> {
        if !self.probe {
            return None;
        }
        self.probe_asked += 1;
        Some(ProbeTicket(self.probe_asked))
    }

    /// Whether a request holding `ticket` may go on: the probe read its connection dry after
    /// the ticket was taken, or ended, or the session closed.
    pub fn probe_synced(&self, ticket: ProbeTicket) -> bool {
        !self.probe || self.probe_synced >= ticket.0 || self.is_closed()
    }

    /// The newest ticket the probe has yet to honour, if any: the probe should read its
    /// connection until it would block, then complete it.
    pub fn probe_sync_wanted(&self) -> Option<ProbeTicket> {
        (self.probe && self.probe_asked > self.probe_synced)
            .then_some(ProbeTicket(self.probe_asked))
    }

    /// The probe read everything its connection held after `ticket` was taken (it took the
    /// ticket from [`Self::probe_sync_wanted`] before reading, so a later one stays wanted).
    pub fn complete_probe_sync(&mut self, ticket: ProbeTicket) {
        self.probe_synced = self.probe_synced.max(ticket.0);
    }

    /// Whether a WebSocket may probe this session for an upgrade.
    pub fn can_upgrade(&self) -> bool {
        self.transport != TransportKind::WebSocket && self.state == State::Open
    }

    /// A WebSocket probe (`2probe`) arrived: the polling receiver is released with a noop.
    pub fn begin_upgrade(&mut self, now: Instant) -> bool {
        if !self.can_upgrade() {
            return false;
        }
        self.state = State::Upgrading {
            deadline: now + self.config.upgrade_timeout,
        };
        true
    }

    /// The probing WebSocket sent `5`: it becomes the session's transport. Any polling receiver
    /// still attached is detached (it answers with what it has, or a noop). A resuming client
    /// stops reading its HTTP transport before it sends `5<ack>`: the frames after `ack` go
    /// out again, first, on the WebSocket, which resumes the same way if it breaks.
    pub fn finish_upgrade(&mut self, ack: Option<u64>) -> bool {
        if !self.is_upgrading() {
            return false;
        }
        if let Some(ack) = ack {
            if self.rewind(ack).is_err() {
                return false;
            }
        }
        self.state = State::Open;
        self.transport = TransportKind::WebSocket;
        self.last_answer = None;
        self.receiver = None;
        true
    }

    /// The probe failed or timed out: the session stays on polling.
    pub fn cancel_upgrade(&mut self) {
        if self.is_upgrading() {
            self.state = State::Open;
        }
    }

    /// Closes the session. Returns false if it was already closed (the first reason stands).
    pub fn close(&mut self, reason: CloseReason) -> bool {
        if self.is_closed() {
            return false;
        }
        self.state = State::Closed(reason);
        true
    }

    /// When [`Self::handle_timeout`] must next run; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.pong_deadline.unwrap_or(self.next_ping);
        match self.state {
            State::Closed(_) => None,
            State::Upgrading { deadline } => Some(heartbeat.min(deadline)),
            State::Open => Some(heartbeat),
        }
    }

    /// Runs the timers due at `now`: ping timeout closes, ping interval queues a ping, an
    /// expired upgrade is cancelled. Returns what happened, for the driver to act on.
    pub fn handle_timeout(&mut self, now: Instant) -> Timeout {
        let mut out = Timeout::default();
        if self.is_closed() {
            return out;
        }
        if let State::Upgrading { deadline } = self.state {
            if now >= deadline {
                self.cancel_upgrade();
                out.upgrade_expired = true;
            }
        }
        match self.pong_deadline {
            Some(deadline) if now >= deadline => {
                self.close(CloseReason::PingTimeout);
                out.closed = true;
            }
            Some(_) => {}
            None if now >= self.next_ping => {
                // Heartbeats bypass the outbox limit: they are what detects a dead peer.
                self.outbox
                    .push_back(Packet::Ping(Default::default()).encode());
                // Counted from when the ping was due, not from when this runs: the deadline must
                // not depend on how late the driver's worker woke, since requests on other
                // workers judge it too (`expire`).
                let deadline = self.heartbeat_deadline();
                self.pong_deadline = Some(deadline);
                self.ping_sent = now;
                out.pinged = true;
                if now >= deadline {
                    self.close(CloseReason::PingTimeout);
                    out.closed = true;
                }
            }
            None => {}
        }
        out
    }
}

/// The bytes `frames` take in an Engine.IO payload (with their separators).
pub fn payload_size(frames: &[Frame]) -> usize {
    frames.iter().map(|f| f.payload_len() + 1).sum()
}

/// The effects of [`Session::handle_timeout`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    pub pinged: bool,
    pub closed: bool,
    pub upgrade_expired: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Str;
    use bytes::Bytes;

    fn config() -> SessionConfig {
        SessionConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            upgrade_timeout: Duration::from_millis(1000),
            max_outbox: 3,
        }
    }

    fn new_session(now: Instant) -> Session {
        Session::new(
            TransportKind::Polling,
            config(),
            Packet::Open(Str::from("{}")).encode(),
            now,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn resumable(now: Instant, kind: TransportKind, max_outbox: usize) -> Session {
        let mut s = Session::new(
            kind,
            SessionConfig {
                max_outbox,
                ..config()
            },
            Packet::Open(Str::from("{}")).encode(),
            now,
        );
        s.enable_resume();
        s
    }

    fn marker(text: &str) -> Frame {
        Frame::Text(Str::from(text))
    }

    #[test]
    fn a_lost_poll_response_is_answered_again_to_the_next_poll() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Polling, 16);
        let id = s.attach(TransportKind::Polling, t0, None).unwrap();
        assert_eq!(s.long_poll(id, 16).unwrap().last(), Some(&marker("6p1")));
        s.detach(id);
        s.push(Frame::message("a"), false).unwrap();
        s.push(Frame::message("b"), false).unwrap();
        let id = s.attach(TransportKind::Polling, t0, Some(1)).unwrap();
        let lost = s.long_poll(id, 16).unwrap();
        assert_eq!(
            lost,
            vec![Frame::message("a"), Frame::message("b"), marker("6p3")]
        );
        assert_eq!(s.retained(), 2);
        // The response never arrived: the client polls again from where it was.
        let id = s.attach(TransportKind::Polling, t0, Some(1)).unwrap();
        assert_eq!(s.long_poll(id, 16).unwrap(), lost);
        // This one did.
        let id = s.attach(TransportKind::Polling, t0, Some(3)).unwrap();
        assert_eq!(s.retained(), 0);
        assert_eq!(s.long_poll(id, 16), None);
    }

    #[test]
    fn a_resuming_receiver_replaces_a_broken_one_instead_of_closing_the_session() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::XhrStreaming, 16);
        let old = s.attach(TransportKind::XhrStreaming, t0, None).unwrap();
        let (frames, end) = s.stream_chunk(old, usize::MAX).unwrap();
        assert_eq!((frames.len(), end), (2, false));
        s.push(Frame::message("a"), false).unwrap();
        assert_eq!(
            s.stream_chunk(old, usize::MAX),
            Some((vec![Frame::message("a"), marker("6p2")], false))
        );
        // The connection broke after `a` was written; the client read only the handshake.
        let new = s.attach(TransportKind::XhrStreaming, t0, Some(1)).unwrap();
        assert!(!s.is_closed());
        assert_eq!(
            s.stream_chunk(old, usize::MAX).map(|(_, end)| end),
            Some(true)
        );
        assert_eq!(
            s.stream_chunk(new, usize::MAX),
            Some((vec![Frame::message("a"), marker("6p2")], false))
        );
    }

    #[test]
    fn a_stream_ends_cleanly_at_its_budget_and_when_a_quarter_of_the_outbox_is_unconfirmed() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Sse, 16);
        let id = s.attach(TransportKind::Sse, t0, None).unwrap();
        s.push(Frame::message("0123456789"), false).unwrap();
        assert_eq!(
            s.stream_chunk(id, 10),
            Some((
                vec![
                    Packet::Open(Str::from("{}")).encode(),
                    Frame::message("0123456789"),
                    marker("6e2")
                ],
                true
            ))
        );
        let id = s.attach(TransportKind::Sse, t0, Some(2)).unwrap();
        for n in 0..3 {
            s.push(Frame::message(&n.to_string()), false).unwrap();
            assert_eq!(
                s.stream_chunk(id, usize::MAX).map(|(_, end)| end),
                Some(false)
            );
        }
        s.push(Frame::message("3"), false).unwrap();
        assert_eq!(
            s.stream_chunk(id, usize::MAX),
            Some((vec![Frame::message("3"), marker("6e6")], true)),
            "4 of 16 unconfirmed: the client must reopen, confirming"
        );
    }

    #[test]
    fn unconfirmed_frames_count_against_the_outbox() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Polling, 3);
        let id = s.attach(TransportKind::Polling, t0, None).unwrap();
        s.push(Frame::message("a"), false).unwrap();
        s.long_poll(id, 16).unwrap();
        s.detach(id);
        s.push(Frame::message("b"), false).unwrap();
        assert_eq!(s.push(Frame::message("c"), false), Err(PushError::Overflow));

        let mut s = resumable(t0, TransportKind::Polling, 3);
        let id = s.attach(TransportKind::Polling, t0, None).unwrap();
        s.push(Frame::message("a"), false).unwrap();
        s.long_poll(id, 16).unwrap();
        s.detach(id);
        s.begin_post(TransportKind::Polling, t0, Some(2)).unwrap();
        assert_eq!(s.retained(), 0, "a POST confirms too");
        s.end_post();
        s.push(Frame::message("b"), false).unwrap();
        s.push(Frame::message("c"), false).unwrap();
    }

    #[test]
    fn an_ack_beyond_what_was_sent_closes_the_session() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Polling, 16);
        assert_eq!(
            s.attach(TransportKind::Polling, t0, Some(1)),
            Err(AttachError::BadAck)
        );
        assert_eq!(s.close_reason(), Some(CloseReason::ProtocolError));
    }

    #[test]
    fn a_repeated_post_is_applied_once_and_a_gap_is_refused() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Polling, 16);
        assert_eq!(s.admit_upstream(Some(0), 2), Ok(0));
        assert_eq!(s.admit_upstream(Some(0), 2), Ok(2), "the same POST again");
        assert_eq!(s.admit_upstream(Some(1), 3), Ok(1), "partly new");
        assert_eq!(s.admit_upstream(None, 1), Ok(0));
        assert_eq!(s.admit_upstream(Some(9), 1), Err(ResumeError::UpstreamGap));
        assert!(s.is_closed());
        // Without resume every POST is new.
        let mut plain = new_session(t0);
        assert_eq!(plain.admit_upstream(Some(5), 2), Ok(0));
    }

    #[test]
    fn an_upgrade_writes_again_what_the_stream_did_not_deliver() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Iframe, 16);
        let id = s.attach(TransportKind::Iframe, t0, None).unwrap();
        s.stream_chunk(id, usize::MAX).unwrap();
        assert!(s.begin_upgrade(t0));
        s.push(Frame::message("a"), false).unwrap();
        s.stream_chunk(id, usize::MAX).unwrap();
        // The client stopped reading after the handshake, then sent `51`.
        assert!(s.finish_upgrade(Some(1)));
        assert_eq!(Vec::from(s.drain()), vec![Frame::message("a")]);
        assert_eq!(
            s.retained(),
            1,
            "kept until the client confirms it on the WebSocket"
        );
    }

    #[test]
    fn a_server_closed_resumable_session_waits_until_its_last_frames_are_confirmed() {
        let t0 = Instant::now();
        let mut s = resumable(t0, TransportKind::Polling, 16);
        let id = s.attach(TransportKind::Polling, t0, None).unwrap();
        s.long_poll(id, 16).unwrap();
        s.detach(id);
        s.push(Frame::message("bye"), false).unwrap();
        s.close(CloseReason::ServerClose);
        let id = s.attach(TransportKind::Polling, t0, Some(1)).unwrap();
        let last = s.long_poll(id, 16).unwrap();
        assert_eq!(
            last,
            vec![Frame::message("bye"), marker("6p2"), Packet::Close.encode()]
        );
        s.detach(id);
        assert!(s.awaits_final_read(), "the answer may be lost");
        let id = s.attach(TransportKind::Polling, t0, Some(1)).unwrap();
        assert_eq!(s.long_poll(id, 16).unwrap(), last);
        s.detach(id);
        s.acknowledge(2).unwrap();
        assert!(!s.awaits_final_read());
    }

    #[test]
    fn first_frame_is_the_handshake() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        let frames = s.take_poll_response(usize::MAX);
        assert_eq!(frames, vec![Frame::Text(Str::from("0{}"))]);
        assert!(!s.receiver_ready());
    }

    #[test]
    fn pings_after_interval_and_closes_without_pong() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        assert_eq!(s.poll_timeout(), Some(t0 + ms(300)));
        assert_eq!(s.handle_timeout(t0 + ms(299)), Timeout::default());
        assert!(s.handle_timeout(t0 + ms(300)).pinged);
        assert_eq!(
            s.take_poll_response(100),
            vec![Packet::Ping(Str::default()).encode()]
        );
        assert_eq!(s.poll_timeout(), Some(t0 + ms(500)));
        assert!(s.handle_timeout(t0 + ms(500)).closed);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn pong_deadline_counts_from_when_the_ping_was_due_not_from_a_late_driver() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        // The driver's worker woke 40 ms late: the deadline is where it would have been.
        assert!(s.handle_timeout(t0 + ms(340)).pinged);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(500)));
    }

    #[test]
    fn poll_after_the_pong_deadline_finds_the_session_closed_before_the_driver_runs() {
        // The client waits pingInterval + pingTimeout, then polls; the driver, on another
        // worker, may not have run since the ping (or at all). The request is judged at its
        // arrival, so the outcome does not depend on which runs first.
        for driver_pinged in [true, false] {
            let t0 = Instant::now();
            let mut s = new_session(t0);
            s.drain();
            if driver_pinged {
                s.handle_timeout(t0 + ms(300));
            }
            assert_eq!(
                s.attach(TransportKind::Polling, t0 + ms(500), None),
                Err(AttachError::Closed),
                "driver pinged: {driver_pinged}"
            );
            assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
        }
        // Just before the deadline, the poll is served (with the ping).
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        s.handle_timeout(t0 + ms(300));
        let id = s
            .attach(TransportKind::Polling, t0 + ms(499), None)
            .unwrap();
        assert_eq!(
            s.long_poll(id, 16),
            Some(vec![Packet::Ping(Str::default()).encode()])
        );
    }

    #[test]
    fn post_or_pong_after_the_pong_deadline_is_too_late_before_the_driver_runs() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.handle_timeout(t0 + ms(300));
        assert_eq!(
            s.begin_post(TransportKind::Polling, t0 + ms(500), None),
            Err(AttachError::Closed)
        );
        let mut s = new_session(t0);
        s.handle_timeout(t0 + ms(300));
        assert_eq!(
            s.on_packet(Packet::Pong(Str::default()), t0 + ms(500)),
            Ok(Inbound::TimedOut)
        );
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
        // The driver then finds it closed, and has nothing left to do.
        assert_eq!(s.handle_timeout(t0 + ms(501)), Timeout::default());
    }

    #[test]
    fn a_driver_later_than_the_whole_heartbeat_pings_and_times_out_at_once() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        let t = s.handle_timeout(t0 + ms(520));
        assert!(t.pinged && t.closed);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
    }

    #[test]
    fn pong_schedules_next_ping_from_its_arrival() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.handle_timeout(t0 + ms(300));
        assert_eq!(
            s.on_packet(Packet::Pong(Str::default()), t0 + ms(350)),
            Ok(Inbound::Pong(ms(50)))
        );
        // A pong nobody asked for is ignored.
        assert_eq!(
            s.on_packet(Packet::Pong(Str::default()), t0 + ms(360)),
            Ok(Inbound::None)
        );
        assert_eq!(s.poll_timeout(), Some(t0 + ms(650)));
        assert!(!s.handle_timeout(t0 + ms(500)).closed);
    }

    #[test]
    fn second_receiver_closes_session() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        let first = s.attach(TransportKind::Polling, t0, None).unwrap();
        assert_eq!(
            s.attach(TransportKind::Polling, t0, None),
            Err(AttachError::Overlap)
        );
        assert_eq!(s.close_reason(), Some(CloseReason::ProtocolError));
        s.drain();
        // The parked receiver is released with a close packet.
        assert!(s.receiver_ready());
        assert_eq!(s.take_poll_response(100), vec![Packet::Close.encode()]);
        s.detach(first);
    }

    #[test]
    fn overlapping_posts_close_session() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.begin_post(TransportKind::Polling, t0, None).unwrap();
        assert_eq!(
            s.begin_post(TransportKind::Polling, t0, None),
            Err(AttachError::Overlap)
        );
        assert!(s.is_closed());
    }

    #[test]
    fn client_close_releases_receiver_with_noop() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        s.attach(TransportKind::Polling, t0, None).unwrap();
        assert_eq!(s.on_packet(Packet::Close, t0), Ok(Inbound::Closed));
        assert_eq!(s.take_poll_response(100), vec![Packet::Noop.encode()]);
    }

    #[test]
    fn a_session_closed_by_shutdown_keeps_its_frames_for_the_next_poll() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        for n in 0..3 {
            s.push(Frame::message(&n.to_string()), false).unwrap();
        }
        s.close(CloseReason::ServerShutdown);
        assert!(s.awaits_final_read());
        let id = s
            .attach(TransportKind::Polling, t0, None)
            .expect("the next poll");
        assert_eq!(s.long_poll(id, 2).map(|f| f.len()), Some(2));
        s.detach(id);
        assert!(
            s.awaits_final_read(),
            "a frame and the close are still to be read"
        );
        let id = s
            .attach(TransportKind::Polling, t0, None)
            .expect("one more poll");
        let last = s.long_poll(id, 2).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last.last(), Some(&Packet::Close.encode()));
        assert!(!s.awaits_final_read());

        let mut idle = new_session(t0);
        idle.drain();
        idle.close(CloseReason::ServerShutdown);
        assert!(
            !idle.awaits_final_read(),
            "nothing to deliver, nothing to wait for"
        );
    }

    #[test]
    fn close_post_and_concurrent_poll_give_the_same_answers_in_either_order() {
        // The client sends a poll and a close POST at once; they run on two workers.
        let poll_first = {
            let t0 = Instant::now();
            let mut s = new_session(t0);
            s.drain();
            let id = s.attach(TransportKind::Polling, t0, None).unwrap();
            s.begin_post(TransportKind::Polling, t0, None).unwrap();
            assert_eq!(s.on_packet(Packet::Close, t0), Ok(Inbound::Closed));
            s.end_post();
            let answer = s.long_poll(id, 16);
            s.detach(id);
            (answer, s.attach(TransportKind::Polling, t0, None))
        };
        let close_first = {
            let t0 = Instant::now();
            let mut s = new_session(t0);
            s.drain();
            s.begin_post(TransportKind::Polling, t0, None).unwrap();
            assert_eq!(s.on_packet(Packet::Close, t0), Ok(Inbound::Closed));
            s.end_post();
            // The poll was on its way: it still gets the noop, and only it.
            assert!(s.awaits_final_read());
            let id = s.attach(TransportKind::Polling, t0, None).unwrap();
            let answer = s.long_poll(id, 16);
            assert!(!s.awaits_final_read());
            s.detach(id);
            (answer, s.attach(TransportKind::Polling, t0, None))
        };
        assert_eq!(poll_first, close_first);
        assert_eq!(
            close_first,
            (Some(vec![Packet::Noop.encode()]), Err(AttachError::Closed))
        );
    }

    #[test]
    fn request_during_a_probe_is_ordered_after_the_frames_the_probe_holds() {
        // `2probe` and `5` wait unread in the probe's connection when the client's next poll
        // runs: it must wait for the probe, and then find the session upgraded.
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        assert!(s.begin_probe());
        assert!(!s.begin_probe(), "one probe at a time");
        let ticket = s.sync_probe().expect("a probe is on");
        assert!(!s.probe_synced(ticket));
        // The probe takes the ticket it honours before reading its connection.
        let wanted = s.probe_sync_wanted().expect("the probe is asked to sync");
        // A request arriving while the probe reads needs another pass of the probe.
        let later = s.sync_probe().unwrap();
        assert!(s.begin_upgrade(t0));
        assert!(s.finish_upgrade(None));
        s.complete_probe_sync(wanted);
        assert!(s.probe_synced(ticket));
        assert!(!s.probe_synced(later));
        assert_eq!(s.probe_sync_wanted(), Some(later));
        s.end_probe();
        assert!(s.probe_synced(later));
        assert_eq!(s.probe_sync_wanted(), None);
        assert_eq!(
            s.attach(TransportKind::Polling, t0, None),
            Err(AttachError::TransportMismatch)
        );
        assert_eq!(s.sync_probe(), None, "no probe, no wait");
    }

    #[test]
    fn no_probe_on_a_session_that_cannot_upgrade() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.begin_upgrade(t0);
        assert!(!s.begin_probe());
        assert_eq!(s.sync_probe(), None);
    }

    #[test]
    fn server_closed_session_waits_for_its_close_packet_to_be_read() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        s.push(Frame::message("bye"), false).unwrap();
        s.close(CloseReason::ServerClose);
        assert!(s.awaits_final_read());
        s.push(Frame::message("unsent"), false).unwrap_err();
        let id = s
            .attach(TransportKind::Polling, t0, None)
            .expect("one more poll may read the close");
        assert_eq!(
            s.long_poll(id, 16),
            Some(vec![Frame::message("bye"), Packet::Close.encode()])
        );
        assert!(!s.awaits_final_read());
        s.detach(id);
        assert_eq!(
            s.attach(TransportKind::Polling, t0, None),
            Err(AttachError::Closed)
        );
    }

    #[test]
    fn client_ping_is_a_protocol_error() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        assert_eq!(
            s.on_packet(Packet::Ping(Str::default()), t0),
            Err(ProtocolError::ClientPing)
        );
        assert_eq!(s.close_reason(), Some(CloseReason::ProtocolError));
    }

    #[test]
    fn upgrade_releases_poll_with_noop_then_switches_transport() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        s.attach(TransportKind::Polling, t0, None).unwrap();
        assert!(!s.receiver_ready());
        assert!(s.begin_upgrade(t0));
        assert!(s.receiver_ready());
        assert_eq!(s.take_poll_response(100), vec![Packet::Noop.encode()]);
        assert!(s.finish_upgrade(None));
        assert_eq!(s.transport(), TransportKind::WebSocket);
        assert_eq!(
            s.attach(TransportKind::Polling, t0, None),
            Err(AttachError::TransportMismatch)
        );
        assert!(!s.is_closed());
        assert!(s.attach(TransportKind::WebSocket, t0, None).is_ok());
        assert!(!s.can_upgrade());
    }

    #[test]
    fn upgrade_expires_and_session_stays_on_polling() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.begin_upgrade(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(300)));
        let t = s.handle_timeout(t0 + ms(1000));
        assert!(t.upgrade_expired);
        assert!(!s.is_upgrading());
        assert_eq!(s.transport(), TransportKind::Polling);
        assert!(!s.finish_upgrade(None));
    }

    #[test]
    fn stream_keeps_flowing_during_probe_and_ends_with_noop_after_upgrade() {
        let t0 = Instant::now();
        let mut s = Session::new(
            TransportKind::Sse,
            config(),
            Packet::Open(Str::from("{}")).encode(),
            t0,
        );
        let id = s.attach(TransportKind::Sse, t0, None).unwrap();
        assert_eq!(
            s.stream_chunk(id, usize::MAX)
                .map(|(f, end)| (f.len(), end)),
            Some((1, false))
        );
        assert!(s.begin_upgrade(t0));
        assert_eq!(s.stream_chunk(id, usize::MAX), None);
        s.push(Frame::message("a"), false).unwrap();
        assert_eq!(
            s.stream_chunk(id, usize::MAX),
            Some((vec![Frame::message("a")], false))
        );
        assert!(s.finish_upgrade(None));
        assert_eq!(
            s.stream_chunk(id, usize::MAX),
            Some((vec![Packet::Noop.encode()], true))
        );
    }

    #[test]
    fn stream_ends_with_close_packet_when_session_closes() {
        let t0 = Instant::now();
        let mut s = Session::new(
            TransportKind::XhrStreaming,
            config(),
            Packet::Open(Str::from("{}")).encode(),
            t0,
        );
        s.drain();
        let id = s.attach(TransportKind::XhrStreaming, t0, None).unwrap();
        s.push(Frame::message("last"), false).unwrap();
        s.close(CloseReason::ServerShutdown);
        assert_eq!(
            s.stream_chunk(id, usize::MAX),
            Some((vec![Frame::message("last"), Packet::Close.encode()], true))
        );
    }

    #[test]
    fn transport_names_round_trip() {
        for t in TransportKind::ALL {
            assert_eq!(TransportKind::from_name(t.name()), Some(t));
        }
        assert_eq!(TransportKind::from_name("flashsocket"), None);
    }

    #[test]
    fn full_outbox_drops_queued_volatile_packets_first_oldest_first() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        s.push(Frame::message("v1"), true).unwrap();
        s.push_all(&[Frame::message("v2"), Frame::Binary(Bytes::new())], true)
            .unwrap();
        // Full: a non-volatile frame drops the oldest volatile packet.
        s.push(Frame::message("a"), false).unwrap();
        assert_eq!(s.take_evicted(), 1);
        // Two more frames: the next volatile packet is dropped whole (both of its frames).
        s.push(Frame::message("b"), false).unwrap();
        assert_eq!(s.take_evicted(), 1);
        assert_eq!(s.take_evicted(), 0);
        assert_eq!(
            Vec::from(s.drain()),
            vec![Frame::message("a"), Frame::message("b")]
        );
        assert!(!s.is_closed());
    }

    #[test]
    fn volatile_packet_on_its_way_is_not_dropped() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        s.push(Frame::message("x"), false).unwrap();
        s.push_all(&[Frame::message("v"), Frame::Binary(Bytes::new())], true)
            .unwrap();
        let mut out = Vec::new();
        s.drain_at_most(2, &mut out);
        assert_eq!(out, vec![Frame::message("x"), Frame::message("v")]);
        // Its attachment is still queued, and must follow it: only a later volatile packet
        // may go.
        s.push(Frame::message("w"), true).unwrap();
        s.push(Frame::message("y"), false).unwrap();
        s.push(Frame::message("z"), false).unwrap();
        assert_eq!(s.take_evicted(), 1);
        assert_eq!(
            Vec::from(s.drain()),
            vec![
                Frame::Binary(Bytes::new()),
                Frame::message("y"),
                Frame::message("z")
            ]
        );
        // Nothing volatile left to drop: full means closed.
        for text in ["1", "2", "3"] {
            s.push(Frame::message(text), false).unwrap();
        }
        assert_eq!(s.push(Frame::message("4"), false), Err(PushError::Overflow));
        assert_eq!(s.close_reason(), Some(CloseReason::OutboxFull));
    }

    #[test]
    fn full_outbox_drops_volatile_and_closes_otherwise() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.push(Frame::message("a"), false).unwrap();
        s.push(Frame::message("b"), false).unwrap();
        assert_eq!(s.push(Frame::message("c"), true), Err(PushError::Dropped));
        assert!(!s.is_closed());
        assert_eq!(s.push(Frame::message("c"), false), Err(PushError::Overflow));
        assert_eq!(s.close_reason(), Some(CloseReason::OutboxFull));
        assert_eq!(s.push(Frame::message("d"), false), Err(PushError::Closed));
    }

    #[test]
    fn poll_response_takes_at_most_the_packet_limit() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        for text in ["a", "b", "c"] {
            s.push(Frame::message(text), false).unwrap();
        }
        assert_eq!(
            s.take_poll_response(2),
            vec![Frame::message("a"), Frame::message("b")]
        );
        assert_eq!(s.take_poll_response(2), vec![Frame::message("c")]);
        s.push(Frame::message("d"), false).unwrap();
        assert_eq!(s.take_poll_response(0), vec![Frame::message("d")]);
    }

    #[test]
    fn a_long_poll_with_the_previous_stamp_gets_the_previous_answer_again() {
        let t0 = Instant::now();
        let mut s = new_session(t0);
        s.drain();
        let msg = Frame::message;
        s.push(msg("a"), false).unwrap();
        let first = s.attach_long_poll(t0, None, Some(1)).unwrap();
        assert_eq!(s.long_poll(first, 10), Some(vec![msg("a")]));
        s.detach(first);
        // Retried: "a" again, and what came since, in order; positions as if sent once.
        s.push(msg("b"), false).unwrap();
        let retry = s.attach_long_poll(t0, None, Some(1)).unwrap();
        assert_eq!(s.long_poll(retry, 10), Some(vec![msg("a"), msg("b")]));
        s.detach(retry);
        assert_eq!(s.taken, 3, "the handshake, a and b");
        // A new stamp: the answer arrived; nothing again.
        s.push(msg("c"), false).unwrap();
        let next = s.attach_long_poll(t0, None, Some(2)).unwrap();
        assert_eq!(s.long_poll(next, 10), Some(vec![msg("c")]));
        s.detach(next);
        // A retry while the first attempt still waits replaces it, without an overlap.
        let waiting = s.attach_long_poll(t0, None, Some(3)).unwrap();
        assert_eq!(s.long_poll(waiting, 10), None);
        let retry = s.attach_long_poll(t0, None, Some(3)).unwrap();
        assert!(!s.is_closed());
        assert_eq!(s.long_poll(waiting, 10), Some(vec![Packet::Noop.encode()]));
        s.push(msg("d"), false).unwrap();
        assert_eq!(s.long_poll(retry, 10), Some(vec![msg("d")]));
        s.detach(retry);
        // Without stamps nothing is repeated, and another stamp while one waits overlaps.
        s.push(msg("e"), false).unwrap();
        let plain = s.attach_long_poll(t0, None, None).unwrap();
        assert_eq!(s.long_poll(plain, 10), Some(vec![msg("e")]));
        s.detach(plain);
        let waiting = s.attach_long_poll(t0, None, None).unwrap();
        assert_eq!(s.long_poll(waiting, 10), None);
        assert_eq!(
            s.attach_long_poll(t0, None, None),
            Err(AttachError::Overlap)
        );
    }
}
