//! Connection state recovery (Socket.IO ≥ 4.6's `connectionStateRecovery`), the pure part: one
//! namespace's log of the events it sent and the sessions that dropped without meaning to.
//! Time is an input (`now`); nothing here locks, spawns or sends.
//!
//! The wire contract, as socket.io's `SessionAwareAdapter` and socket.io-client have it:
//! - the CONNECT reply carries a private session id, `{"sid":..,"pid":..}`;
//! - every EVENT sent without an ack id and not volatile gets its *offset* appended as its last
//!   argument (`42["news",{..},"<offset>"]`) and is kept here, with the rooms it was addressed to;
//! - a socket that leaves for a recoverable reason (the connection closed, failed, timed out, or
//!   the server closed it; never a deliberate namespace disconnect) is kept here: id, pid,
//!   rooms, data;
//! - a CONNECT whose auth has string `pid` and `offset` naming a kept session gets that session
//!   back (same id, rooms, data) and every kept event after the offset that its rooms would have
//!   received, in order, before the CONNECT reply;
//! - socket.io-client sends its `pid` without an offset until it has received a logged event.
//!   socket.io then gives a fresh session, and the client loses what was sent while it was
//!   away. Halley keeps where each session started (`since`, the next log position when it
//!   connected) and replays from there instead.
//!
//! Offsets are `<tag>.<seq>` in hex: `seq` counts this namespace's logged events and `tag` is
//! random per namespace log, so an offset from another namespace, another process, or an
//! application string that socket.io-client mistook for an offset (it takes any trailing string
//! argument) is not found rather than misread.
//!
//! In a cluster with a shared log (a RabbitMQ stream, see `crate::bridge::log`), every node
//! keeps the same store: events are appended at the position the log gave them
//! ([`Store::append_at`], offsets then have gaps, the other namespaces' records), the tag is the
//! cluster's, and kept sessions come from every node's session records
//! ([`Store::record`]), each with the node that holds it and whether it is live there. A
//! client may then come back through any node. A session live on this very node is not
//! restored (its socket is here); one live on another node is (that node died, or has not seen
//! the connection drop yet: it closes its copy when the record of the restore reaches it).
//!
//! Bounds, per namespace: events older than the window, past `max_packets`, or past `max_bytes`
//! are dropped oldest first; sessions older than the window or past `max_sessions` likewise. A
//! restore that would need a dropped event (or more than the client's outbox can take) is
//! refused, and the client gets a fresh session (`recovered` false): recovery may fail, but it
//! never claims success with a gap.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::engine::sid::Sid;
use crate::engine::Frame;
use serde_json::Value;

/// Connection state recovery settings. The window and `skip_middlewares` default to socket.io's
/// (2 minutes, true); socket.io bounds its log by time only, Halley also by count and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryConfig {
    /// How long a session that dropped stays restorable, and how long events are kept.
    pub max_disconnection: Duration,
    /// Whether a recovered socket skips the connect middlewares and hooks (it passed them
    /// when it first connected, and its `data` is restored).
    pub skip_middlewares: bool,
    /// The most events one namespace keeps.
    pub max_packets: usize,
    /// The most bytes of events (frames and addressing) one namespace keeps.
    pub max_bytes: usize,
    /// The most dropped sessions one namespace keeps.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection: Duration::from_secs(120),
            skip_middlewares: true,
            max_packets: 50_000,
            max_bytes: 32 * 1024 * 1024,
            max_sessions: 50_000,
        }
    }
}

/// Whom a logged event was sent to: socket.io's broadcast options.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Target {
    /// Rooms addressed; none means the whole namespace.
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    /// A socket left out (`socket.broadcast`), like an `except` of its own room.
    pub exclude: Option<Sid>,
}

impl Target {
    /// Whether a socket `id` in `rooms` would have received it.
    fn reaches(&self, id: &Sid, rooms: &[String]) -> bool {
        let included = self.rooms.is_empty() || rooms.iter().any(|r| self.rooms.contains(r));
        let excluded =
            self.exclude.as_ref() == Some(id) || rooms.iter().any(|r| self.except.contains(r));
        included && !excluded
    }

    fn cost(&self) -> usize {
        self.rooms
            .iter()
            .chain(&self.except)
            .map(|r| r.len() + 24)
            .sum::<usize>()
            + self.exclude.as_ref().map_or(0, |s| s.as_str().len())
    }
}

/// A socket's state kept across a dropped connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Persisted {
    pub id: Sid,
    pub pid: Sid,
    /// Every room, its own included.
    pub rooms: Vec<String>,
    pub data: Value,
    /// The first log position the socket was connected for: a client that comes back with its
    /// `pid` but no offset (it had received no logged event yet) is replayed from here.
    pub since: u64,
}

struct Logged {
    seq: u64,
    at: Instant,
    target: Target,
    frames: Vec<Frame>,
    cost: usize,
}

struct Kept {
    session: Persisted,
    /// When it dropped (or, while live, when it was last refreshed).
    at: Instant,
    /// The node holding it, in a cluster with a shared log.
    owner: Option<String>,
    /// Connected on `owner` (shared log only); a live session does not expire.
    live: bool,
}

/// What a session record of the shared log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Connected on the node that wrote it (connected, restored, or its rooms changed).
    Live,
    /// Its connection dropped without meaning to: restorable for the window.
    Dropped,
    /// It left for good (a deliberate disconnect).
    Gone,
}

/// Fixed bookkeeping counted per logged event besides its bytes.
const OVERHEAD: usize = 96;

/// How far past this node's read position of a shared log a client's offset may be (the
/// client read it on a node further on). A forged offset further still is not found; one
/// within only makes its own session skip events.
const AHEAD: u64 = 100_000;

/// One namespace's log and dropped sessions.
pub(crate) struct Store {
    config: RecoveryConfig,
    tag: u32,
    next_seq: u64,
    /// Every event from this sequence number on is still here.
    floor: u64,
    /// This node's name, once the store follows a shared log.
    me: Option<String>,
    packets: VecDeque<Logged>,
    bytes: usize,
    sessions: HashMap<Sid, Kept>,
    /// Sessions by time kept, oldest first; entries of sessions since restored or re-kept are
    /// stale and skipped.
    order: VecDeque<(Instant, Sid)>,
    sweeper: bool,
}

impl Store {
    pub fn new(config: RecoveryConfig, tag: u32) -> Self {
        Store {
            config,
            tag,
            next_seq: 0,
            floor: 0,
            me: None,
            packets: VecDeque::new(),
            bytes: 0,
            sessions: HashMap::new(),
            order: VecDeque::new(),
            sweeper: false,
        }
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// Follows a shared log from now on: offsets carry the cluster's `tag`, events are
    /// appended at the log's positions, complete from `floor` on; `me` names this node. What
    /// was kept before is dropped (its offsets were this process's own).
    pub fn share(&mut self, tag: u32, floor: u64, me: &str) {
        self.tag = tag;
        self.packets.clear();
        self.bytes = 0;
        self.next_seq = floor;
        self.floor = floor;
        self.me = Some(me.to_owned());
    }

    /// The shared log skipped to `floor` (it was created again, or dropped what this node had
    /// not read yet): events before it may be missing here.
    pub fn raise_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
        self.next_seq = self.next_seq.max(floor);
    }

    fn offset(&self, seq: u64) -> String {
        format!("{:08x}.{seq:x}", self.tag)
    }

    /// The sequence number of an offset this store issued, if `offset` is one. Following a
    /// shared log, an offset up to [`AHEAD`] positions past what this node has read is taken
    /// too: another node issued it, and this one has not read that far yet.
    fn parse_offset(&self, offset: &str) -> Option<u64> {
        let (_, seq) = offset.split_once('.')?;
        let seq = u64::from_str_radix(seq, 16).ok()?;
        let reach = match self.me {
            Some(_) => self.next_seq.saturating_add(AHEAD),
            None => self.next_seq,
        };
        (seq < reach && self.offset(seq) == offset).then_some(seq)
    }

    /// The position the next logged event gets: a socket connected now receives every event
    /// from this one on.
    pub fn next_position(&self) -> u64 {
        self.next_seq
    }

    /// The offset the next logged event gets.
    pub fn next_offset(&self) -> String {
        self.offset(self.next_seq)
    }

    /// Logs an event (its frames already carry [`Store::next_offset`]).
    pub fn append(&mut self, target: Target, frames: Vec<Frame>, now: Instant) {
        self.append_at(self.next_seq, target, frames, now);
    }

    /// The offset of the shared log's position `seq`.
    pub fn offset_at(&self, seq: u64) -> String {
        self.offset(seq)
    }

    /// Logs an event at the shared log's position `seq` (its frames carry
    /// [`Store::offset_at`]). Positions only grow; an older one is not logged.
    pub fn append_at(&mut self, seq: u64, target: Target, frames: Vec<Frame>, now: Instant) {
        if seq < self.next_seq {
            return;
        }
        let bytes: usize = frames.iter().map(frame_len).sum();
        let cost = bytes + target.cost() + OVERHEAD;
        self.packets.push_back(Logged {
            seq,
            at: now,
            target,
            frames,
            cost,
        });
        self.next_seq = seq + 1;
        self.bytes += cost;
        self.expire(now);
        while self.packets.len() > self.config.max_packets || self.bytes > self.config.max_bytes {
            self.pop_packet();
        }
    }

    fn pop_packet(&mut self) {
        if let Some(p) = self.packets.pop_front() {
            self.bytes -= p.cost;
            self.floor = self.floor.max(p.seq + 1);
        }
    }

    /// Keeps a dropped socket's state.
    pub fn persist(&mut self, session: Persisted, now: Instant) {
        self.keep(session, None, false, now);
    }

    /// Applies a session record of the shared log, written by node `owner`. Returns the id of
    /// a socket live on this node that another node has just restored: the caller closes it.
    pub fn record(
        &mut self,
        session: Persisted,
        state: SessionState,
        owner: &str,
        now: Instant,
    ) -> Option<Sid> {
        let current = self.sessions.get(&session.pid);
        let held_by_other = current.is_some_and(|k| k.owner.as_deref() != Some(owner));
        match state {
            SessionState::Live => {
                let taken_from_me = current
                    .filter(|k| k.live && held_by_other && k.owner == self.me)
                    .map(|k| k.session.id.clone());
                self.keep(session, Some(owner.to_owned()), true, now);
                taken_from_me
            }
            // A drop or a departure from a node that no longer holds it (another node
            // restored it since) changes nothing.
            SessionState::Dropped if !held_by_other => {
                self.keep(session, Some(owner.to_owned()), false, now);
                None
            }
            SessionState::Gone if !held_by_other => {
                self.sessions.remove(&session.pid);
                None
            }
            SessionState::Dropped | SessionState::Gone => None,
        }
    }

    /// Node `node` left the cluster: the sessions live there dropped now.
    pub fn node_left(&mut self, node: &str, now: Instant) {
        let dropped: Vec<Sid> = self
            .sessions
            .iter()
            .filter(|(_, k)| k.live && k.owner.as_deref() == Some(node))
            .map(|(pid, _)| pid.clone())
            .collect();
        for pid in dropped {
            if let Some(kept) = self.sessions.get_mut(&pid) {
                kept.live = false;
                kept.at = now;
                self.order.push_back((now, pid));
            }
        }
    }

    fn keep(&mut self, session: Persisted, owner: Option<String>, live: bool, now: Instant) {
        self.expire(now);
        self.order.push_back((now, session.pid.clone()));
        self.sessions.insert(
            session.pid.clone(),
            Kept {
                session,
                at: now,
                owner,
                live,
            },
        );
        while self.sessions.len() > self.config.max_sessions {
            self.pop_session();
        }
        if self.order.len() > 2 * self.sessions.len() + 16 {
            let sessions = &self.sessions;
            self.order
                .retain(|(at, pid)| sessions.get(pid).is_some_and(|k| k.at == *at));
        }
    }

    /// Drops the oldest kept session (stale order entries on the way).
    fn pop_session(&mut self) {
        while let Some((at, pid)) = self.order.pop_front() {
            if self.sessions.get(&pid).is_some_and(|k| k.at == at) {
                self.sessions.remove(&pid);
                return;
            }
        }
    }

    /// Drops what is older than the window: socket.io's rule, `disconnectedAt +
    /// maxDisconnectionDuration < now` (and `emittedAt` for events).
    pub fn expire(&mut self, now: Instant) {
        let window = self.config.max_disconnection;
        let old = |at: Instant| at + window < now;
        while self.packets.front().is_some_and(|p| old(p.at)) {
            self.pop_packet();
        }
        while let Some((at, _)) = self.order.front() {
            if !old(*at) {
                break;
            }
            let (at, pid) = self.order.pop_front().expect("front exists");
            match self.sessions.get_mut(&pid) {
                // Live elsewhere: not expired, refreshed (so the session bound still sees it).
                Some(kept) if kept.at == at && kept.live => {
                    kept.at = now;
                    self.order.push_back((now, pid));
                }
                Some(kept) if kept.at == at => {
                    self.sessions.remove(&pid);
                }
                _ => {}
            }
        }
    }

    /// Takes the session `pid` if it is kept, and if every event after `offset` is still here
    /// and fits in `limit` frames. Returns it with the position to replay from. Without an
    /// offset (socket.io-client sends none until it has received a logged event), the replay
    /// starts where the session started. A session whose offset fails stays kept (the client
    /// may hold a better one), as in socket.io.
    pub fn take(
        &mut self,
        pid: &str,
        offset: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> Option<(Persisted, u64)> {
        self.expire(now);
        let kept = self.sessions.get(pid)?;
        if kept.live && kept.owner == self.me {
            // Its socket is connected here.
            return None;
        }
        let from = match offset {
            Some(offset) => self.parse_offset(offset)? + 1,
            None => kept.session.since,
        };
        self.missed(&kept.session.id, &kept.session.rooms, from, limit)?;
        let kept = self.sessions.remove(pid)?;
        Some((kept.session, from))
    }

    /// The frames of every event from position `from` on that socket `id` in `rooms` would have
    /// received, in order; `None` if one of them may have been dropped, or if they exceed
    /// `limit` frames.
    pub fn missed(
        &self,
        id: &Sid,
        rooms: &[String],
        from: u64,
        limit: usize,
    ) -> Option<Vec<Frame>> {
        // Every event from `from` on must still be here (an offset's own event may be gone).
        // Past what a shared log's reader has read, there is nothing to replay yet: the socket
        // gets those positions live (see `Socket::receives`).
        if (from > self.next_seq && self.me.is_none()) || from < self.floor {
            return None;
        }
        let mut frames = Vec::new();
        let start = self.packets.partition_point(|p| p.seq < from);
        for p in self.packets.iter().skip(start) {
            if p.target.reaches(id, rooms) {
                if frames.len() + p.frames.len() > limit {
                    return None;
                }
                frames.extend(p.frames.iter().cloned());
            }
        }
        Some(frames)
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty() && self.sessions.is_empty()
    }

    /// Whether a sweeper should be started now (none runs and there is something to expire);
    /// the caller starts one, or calls [`Store::sweeper_stopped`].
    pub fn claim_sweeper(&mut self) -> bool {
        let claim = !self.sweeper && !self.is_empty();
        self.sweeper |= claim;
        claim
    }

    pub fn sweeper_stopped(&mut self) {
        self.sweeper = false;
    }

    /// One sweep; whether the sweeper should keep running.
    pub fn sweep(&mut self, now: Instant) -> bool {
        self.expire(now);
        if self.is_empty() {
            self.sweeper = false;
        }
        self.sweeper
    }
}

fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Text(s) => s.len(),
        Frame::Binary(b) => b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(window_ms: u64) -> RecoveryConfig {
        RecoveryConfig {
            max_disconnection: Duration::from_millis(window_ms),
            ..RecoveryConfig::default()
        }
    }

    fn sid() -> Sid {
        Sid::random().unwrap()
    }

    fn frame(text: &str) -> Vec<Frame> {
        vec![Frame::message(text)]
    }

    fn texts(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                // Without the Engine.IO `4` that `Frame::message` adds.
                Frame::Text(s) => s.as_str()[1..].to_owned(),
                Frame::Binary(b) => format!("<{} bytes>", b.len()),
            })
            .collect()
    }

    fn to(rooms: &[&str]) -> Target {
        Target {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            ..Target::default()
        }
    }

    fn session(id: &Sid, pid: &Sid, rooms: &[&str]) -> Persisted {
        let mut all: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        all.push(id.as_str().to_owned());
        Persisted {
            id: id.clone(),
            pid: pid.clone(),
            rooms: all,
            data: json!({"user": 7}),
            since: 0,
        }
    }

    /// Logs `text` to `target` and returns its offset.
    fn log(store: &mut Store, target: Target, text: &str, now: Instant) -> String {
        let offset = store.next_offset();
        store.append(target, frame(text), now);
        offset
    }

    #[test]
    fn offsets_are_tagged_hex_sequence_numbers_and_only_issued_ones_parse() {
        let mut store = Store::new(config(1000), 0xab);
        let t = Instant::now();
        assert_eq!(store.next_offset(), "000000ab.0");
        assert_eq!(store.parse_offset("000000ab.0"), None, "not issued yet");
        log(&mut store, Target::default(), "a", t);
        assert_eq!(store.parse_offset("000000ab.0"), Some(0));
        for bogus in [
            "000000ac.0",
            "ab.0",
            "000000ab.00",
            "000000ab.+0",
            "000000ab.1",
            "",
            "0",
        ] {
            assert_eq!(store.parse_offset(bogus), None, "{bogus:?}");
        }
    }

    #[test]
    fn take_returns_the_session_and_replays_what_its_rooms_missed_in_order() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid, other) = (sid(), sid(), sid());
        let offset = log(&mut store, Target::default(), "seen", t);
        store.persist(session(&id, &pid, &["r"]), t);
        log(&mut store, Target::default(), "all", t);
        log(&mut store, to(&["r"]), "room r", t);
        log(&mut store, to(&["x"]), "room x", t);
        log(&mut store, to(&[id.as_str()]), "to the socket", t);
        log(&mut store, to(&[other.as_str()]), "to another socket", t);
        let except = Target {
            except: vec!["r".into()],
            ..Target::default()
        };
        log(&mut store, except, "except r", t);
        let excluded = Target {
            exclude: Some(id.clone()),
            ..Target::default()
        };
        log(&mut store, excluded, "broadcast by it", t);
        log(&mut store, to(&["x", "r"]), "rooms x and r", t);

        let (restored, after) = store.take(pid.as_str(), Some(&offset), 100, t).unwrap();
        assert_eq!(restored, session(&id, &pid, &["r"]));
        let missed = store.missed(&id, &restored.rooms, after, 100).unwrap();
        assert_eq!(
            texts(&missed),
            ["all", "room r", "to the socket", "rooms x and r"]
        );
        // Taken: a second restore with the same pid fails.
        assert!(store.take(pid.as_str(), Some(&offset), 100, t).is_none());
    }

    #[test]
    fn a_pid_without_offset_replays_from_where_the_session_started() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        log(&mut store, Target::default(), "before", t);
        let since = store.next_position();
        log(&mut store, to(&["other"]), "not for it", t);
        log(&mut store, Target::default(), "while away", t);
        store.persist(
            Persisted {
                since,
                ..session(&id, &pid, &[])
            },
            t,
        );
        let (s, from) = store.take(pid.as_str(), None, 100, t).unwrap();
        assert_eq!(from, since);
        assert_eq!(
            texts(&store.missed(&s.id, &s.rooms, from, 100).unwrap()),
            ["while away"]
        );
        // Once the session's start left the log, a pid alone is not enough.
        let (id2, pid2) = (sid(), sid());
        let mut small = Store::new(
            RecoveryConfig {
                max_packets: 1,
                ..config(1000)
            },
            1,
        );
        let since = small.next_position();
        log(&mut small, Target::default(), "a", t);
        log(&mut small, Target::default(), "b", t);
        small.persist(
            Persisted {
                since,
                ..session(&id2, &pid2, &[])
            },
            t,
        );
        assert!(small.take(pid2.as_str(), None, 100, t).is_none());
    }

    #[test]
    fn binary_events_replay_with_their_attachments() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let offset = log(&mut store, Target::default(), "seen", t);
        store.persist(session(&id, &pid, &[]), t);
        let frames = vec![
            Frame::message("451-[\"b\",{\"_placeholder\":true,\"num\":0},\"o\"]"),
            Frame::Binary(bytes::Bytes::from_static(&[1, 2, 3])),
        ];
        store.append(Target::default(), frames.clone(), t);
        let (s, after) = store.take(pid.as_str(), Some(&offset), 100, t).unwrap();
        assert_eq!(store.missed(&s.id, &s.rooms, after, 100).unwrap(), frames);
    }

    #[test]
    fn sessions_and_events_expire_after_the_window() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let offset = log(&mut store, Target::default(), "seen", t);
        store.persist(session(&id, &pid, &[]), t);
        let late = t + Duration::from_millis(1001);
        assert!(store.take(pid.as_str(), Some(&offset), 100, late).is_none());
        assert!(store.is_empty(), "the sweep dropped both");

        // At the window's edge exactly, still restorable (socket.io compares with `<`).
        let mut store = Store::new(config(1000), 1);
        let offset = log(&mut store, Target::default(), "seen", t);
        store.persist(session(&id, &pid, &[]), t);
        assert!(store
            .take(
                pid.as_str(),
                Some(&offset),
                100,
                t + Duration::from_millis(1000)
            )
            .is_some());
    }

    #[test]
    fn a_lost_event_after_the_offset_refuses_the_restore_but_a_lost_offset_alone_does_not() {
        let mut store = Store::new(
            RecoveryConfig {
                max_packets: 2,
                ..config(1000)
            },
            1,
        );
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let o0 = log(&mut store, Target::default(), "0", t);
        let o1 = log(&mut store, Target::default(), "1", t);
        store.persist(session(&id, &pid, &[]), t);
        log(&mut store, Target::default(), "2", t);
        log(&mut store, Target::default(), "3", t);
        // Events 0 and 1 are gone: from offset 0, event 1 would be missing.
        assert!(store.take(pid.as_str(), Some(&o0), 100, t).is_none());
        // From offset 1 (itself gone) nothing is missing.
        let (s, after) = store.take(pid.as_str(), Some(&o1), 100, t).unwrap();
        assert_eq!(
            texts(&store.missed(&s.id, &s.rooms, after, 100).unwrap()),
            ["2", "3"]
        );
    }

    #[test]
    fn a_quiet_namespace_still_restores_after_its_events_expired() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let offset = log(&mut store, Target::default(), "seen", t);
        let later = t + Duration::from_millis(900);
        store.persist(session(&id, &pid, &[]), later);
        // The event has expired, the session has not, and nothing came after the event.
        let (s, after) = store
            .take(
                pid.as_str(),
                Some(&offset),
                100,
                later + Duration::from_millis(500),
            )
            .unwrap();
        assert_eq!(store.missed(&s.id, &s.rooms, after, 100), Some(vec![]));
    }

    #[test]
    fn the_log_is_bounded_by_bytes() {
        let mut store = Store::new(
            RecoveryConfig {
                max_bytes: 3 * (OVERHEAD + 101),
                ..config(1000)
            },
            1,
        );
        let t = Instant::now();
        // 101 bytes a frame, the `4` included.
        for _ in 0..10 {
            log(&mut store, Target::default(), &"x".repeat(100), t);
        }
        assert_eq!(store.packets.len(), 3);
        assert_eq!(store.bytes, 3 * (OVERHEAD + 101));
        // One event larger than the whole budget is not kept at all.
        log(
            &mut store,
            Target::default(),
            &"y".repeat(4 * (OVERHEAD + 100)),
            t,
        );
        assert!(store.packets.is_empty());
        assert_eq!(store.bytes, 0);
    }

    #[test]
    fn a_replay_larger_than_the_limit_is_refused() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let offset = log(&mut store, Target::default(), "seen", t);
        store.persist(session(&id, &pid, &[]), t);
        for i in 0..5 {
            log(&mut store, Target::default(), &i.to_string(), t);
        }
        assert!(store.take(pid.as_str(), Some(&offset), 4, t).is_none());
        assert!(store.take(pid.as_str(), Some(&offset), 5, t).is_some());
    }

    #[test]
    fn sessions_are_bounded_oldest_first_and_a_bad_offset_keeps_the_session() {
        let mut store = Store::new(
            RecoveryConfig {
                max_sessions: 2,
                ..config(1000)
            },
            1,
        );
        let t = Instant::now();
        let offset = log(&mut store, Target::default(), "seen", t);
        let ids: Vec<(Sid, Sid)> = (0..3).map(|_| (sid(), sid())).collect();
        for (i, (id, pid)) in ids.iter().enumerate() {
            store.persist(session(id, pid, &[]), t + Duration::from_millis(i as u64));
        }
        assert!(store
            .take(ids[0].1.as_str(), Some(&offset), 10, t)
            .is_none());
        assert!(store.take(ids[1].1.as_str(), Some("nope"), 10, t).is_none());
        assert!(store
            .take(ids[1].1.as_str(), Some(&offset), 10, t)
            .is_some());
        assert!(store
            .take(ids[2].1.as_str(), Some(&offset), 10, t)
            .is_some());
    }

    #[test]
    fn a_session_kept_again_after_a_restore_expires_from_its_latest_drop() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let offset = log(&mut store, Target::default(), "seen", t);
        store.persist(session(&id, &pid, &[]), t);
        assert!(store.take(pid.as_str(), Some(&offset), 10, t).is_some());
        let again = t + Duration::from_millis(800);
        store.persist(session(&id, &pid, &[]), again);
        // The first drop's order entry is stale: its expiry must not drop the second one.
        let check = t + Duration::from_millis(1500);
        store.expire(check);
        assert_eq!(store.sessions.len(), 1);
        assert_eq!(store.order.len(), 1);
    }

    /// A store following a shared log, as node `me`, complete from position 10.
    fn shared(me: &str) -> Store {
        let mut store = Store::new(config(1000), 1);
        store.share(0x5eed, 10, me);
        store
    }

    #[test]
    fn a_shared_store_numbers_events_by_log_position_and_replays_across_gaps() {
        let mut store = shared("nodeaa");
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        store.append_at(12, Target::default(), frame("a"), t);
        assert_eq!(store.offset_at(12), "00005eed.c");
        store.record(session(&id, &pid, &[]), SessionState::Dropped, "nodebb", t);
        // Positions 13 and 14 were other namespaces' records or sessions: not gaps.
        store.append_at(15, Target::default(), frame("b"), t);
        store.append_at(17, to(&["r"]), frame("c"), t);
        store.append_at(16, Target::default(), frame("older"), t);
        let (s, after) = store
            .take(pid.as_str(), Some("00005eed.c"), 100, t)
            .unwrap();
        assert_eq!(after, 13, "replayed from the position after the offset's");
        assert_eq!(
            texts(&store.missed(&s.id, &s.rooms, after, 100).unwrap()),
            ["b"],
            "the older position is not logged, room r is not its"
        );
    }

    #[test]
    fn a_shared_store_refuses_offsets_before_what_it_read_or_after_it() {
        let mut store = shared("nodeaa");
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        store.append_at(12, Target::default(), frame("a"), t);
        store.record(session(&id, &pid, &[]), SessionState::Dropped, "nodebb", t);
        // Issued by the cluster before this node read the log: events between may be missing.
        assert!(store
            .take(pid.as_str(), Some("00005eed.5"), 100, t)
            .is_none());
        // Further than any node can be ahead of this one.
        let far = store.offset_at(13 + AHEAD);
        assert!(store.take(pid.as_str(), Some(&far), 100, t).is_none());
        // The log skipped to 30: position 12 is no longer a safe start.
        store.raise_floor(30);
        assert!(store
            .take(pid.as_str(), Some("00005eed.c"), 100, t)
            .is_none());
        store.append_at(31, Target::default(), frame("b"), t);
        let (s, after) = store
            .take(pid.as_str(), Some("00005eed.1f"), 100, t)
            .unwrap();
        assert_eq!(store.missed(&s.id, &s.rooms, after, 100), Some(vec![]));
    }

    #[test]
    fn an_offset_another_node_issued_past_what_this_one_read_restores_with_nothing_to_replay() {
        let mut store = shared("nodeaa");
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        store.append_at(12, Target::default(), frame("a"), t);
        store.record(session(&id, &pid, &[]), SessionState::Dropped, "nodebb", t);
        // The client read position 0x20 on nodebb; this node has read up to 12.
        let (s, from) = store
            .take(pid.as_str(), Some("00005eed.20"), 100, t)
            .unwrap();
        assert_eq!(
            from, 0x21,
            "the socket skips positions up to its offset when they come"
        );
        assert_eq!(store.missed(&s.id, &s.rooms, from, 100), Some(vec![]));
        // Without a shared log, an offset not issued yet is not found.
        let mut local = Store::new(config(1000), 1);
        let offset = log(&mut local, Target::default(), "a", t);
        local.persist(session(&id, &pid, &[]), t);
        let ahead = offset.replace(".0", ".1");
        assert!(local.take(pid.as_str(), Some(&ahead), 100, t).is_none());
        assert!(local.take(pid.as_str(), Some(&offset), 100, t).is_some());
    }

    #[test]
    fn a_session_live_on_another_node_is_restored_here_and_that_node_is_told() {
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        // Node aa holds it live; node bb reads that record.
        let mut bb = shared("nodebb");
        bb.append_at(12, Target::default(), frame("a"), t);
        assert_eq!(
            bb.record(session(&id, &pid, &[]), SessionState::Live, "nodeaa", t),
            None
        );
        let (restored, _) = bb.take(pid.as_str(), Some("00005eed.c"), 100, t).unwrap();
        assert_eq!(restored.id, id);
        // Node aa reads bb's record of the restore: its live copy is to be closed.
        let mut aa = shared("nodeaa");
        aa.record(session(&id, &pid, &[]), SessionState::Live, "nodeaa", t);
        assert_eq!(
            aa.record(session(&id, &pid, &[]), SessionState::Live, "nodebb", t),
            Some(id.clone())
        );
        // aa's late drop record changes nothing: bb holds it now.
        aa.record(session(&id, &pid, &[]), SessionState::Dropped, "nodeaa", t);
        aa.record(session(&id, &pid, &[]), SessionState::Gone, "nodeaa", t);
        aa.append_at(12, Target::default(), frame("a"), t);
        let kept = aa.sessions.get(pid.as_str()).unwrap();
        assert!(kept.live && kept.owner.as_deref() == Some("nodebb"));
    }

    #[test]
    fn a_session_live_on_this_node_is_not_restored_and_one_of_a_node_that_left_expires() {
        let t = Instant::now();
        let (id, pid) = (sid(), sid());
        let mut store = shared("nodeaa");
        store.append_at(12, Target::default(), frame("a"), t);
        store.record(session(&id, &pid, &[]), SessionState::Live, "nodeaa", t);
        assert!(store
            .take(pid.as_str(), Some("00005eed.c"), 100, t)
            .is_none());

        let (id2, pid2) = (sid(), sid());
        store.record(session(&id2, &pid2, &[]), SessionState::Live, "nodebb", t);
        // Live elsewhere: it outlives the window...
        let later = t + Duration::from_millis(1500);
        store.expire(later);
        assert!(store.sessions.contains_key(pid2.as_str()));
        // ...until its node leaves: then the window runs from there.
        store.node_left("nodebb", later);
        store.expire(later + Duration::from_millis(1001));
        assert!(!store.sessions.contains_key(pid2.as_str()));
        // A deliberate disconnect forgets it at once.
        let (id3, pid3) = (sid(), sid());
        store.record(session(&id3, &pid3, &[]), SessionState::Live, "nodebb", t);
        store.record(session(&id3, &pid3, &[]), SessionState::Gone, "nodebb", t);
        assert!(!store.sessions.contains_key(pid3.as_str()));
    }

    #[test]
    fn the_sweeper_is_claimed_once_and_stops_when_empty() {
        let mut store = Store::new(config(1000), 1);
        let t = Instant::now();
        assert!(!store.claim_sweeper(), "nothing to sweep");
        log(&mut store, Target::default(), "a", t);
        assert!(store.claim_sweeper());
        assert!(!store.claim_sweeper());
        assert!(store.sweep(t));
        assert!(!store.sweep(t + Duration::from_secs(2)));
        assert!(!store.claim_sweeper(), "empty again");
        log(
            &mut store,
            Target::default(),
            "b",
            t + Duration::from_secs(3),
        );
        assert!(store.claim_sweeper(), "a new sweeper for new entries");
    }
}
