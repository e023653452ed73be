//! Cluster envelopes: what the nodes of a cluster say to each other, and how a receiver knows
//! that a node of its cluster said it, lately and once. Pure: bytes and `now` in, messages and
//! verdicts out; the link that carries them over RabbitMQ is `cluster.rs`.
//!
//! On the wire an envelope is `<64 hex digits>\n<JSON>`: an HMAC-SHA256, keyed with the
//! cluster's shared secret, over a domain tag and every byte of the JSON. The JSON holds all a
//! receiver acts on: the sender's node name and per-process instance id, a sequence number, the
//! sender's clock, and the message with all its fields (the reply queue of a `fetch` too: no
//! AMQP property is read). So a publisher without the secret can neither say anything nor
//! change a byte of what a node said.
//!
//! Two checks, kept apart on purpose:
//! - [`open`]: authenticity (the MAC, compared in constant time), then the JSON and the node
//!   name. All a replayable log (a stream read from an offset) could ask of an envelope.
//! - [`Freshness`]: for live traffic only, drops an envelope stamped more than [`WINDOW`] away
//!   from the receiver's clock, or one whose sequence number was seen already from the same
//!   sender instance: a captured envelope published again is ignored.
//!
//! An instance id is random per process, so a node restarted under the same name starts a new
//! sequence without waiting for anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::socketio::adapter::{RemoteOp, Selection, SocketInfo};

/// Length of a node name, which is also the prefix of every session id it hands out.
pub const NODE_NAME_LEN: usize = 6;

/// Whether `name` can be a node name.
pub fn valid_node_name(name: &str) -> bool {
    name.len() == NODE_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The shortest secret accepted, in bytes. Envelopes can be read by anyone with read access to
/// the exchange, so a secret can be guessed offline against a captured one at any speed: it
/// must carry at least 128 bits, and a hex string (`openssl rand -hex 16` or more) carries 4
/// bits per byte.
pub const MIN_SECRET_LEN: usize = 32;

/// How far an envelope's timestamp may be from the receiver's clock, either way. The nodes'
/// clocks must agree within it (NTP keeps them within milliseconds); an envelope held longer
/// than this (a partition) is dropped, which for live operations is what a late one deserves.
pub const WINDOW: Duration = Duration::from_secs(30);

const ENVELOPE_DOMAIN: &[u8] = b"halley-cluster-v1\n";
const MAC_HEX_LEN: usize = 64;

/// The cluster's shared secret, ready to key HMAC-SHA256. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Key(Hmac<Sha256>);

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster secret must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`), got {0}")]
pub struct ShortSecret(pub usize);

impl Key {
    pub fn new(secret: &[u8]) -> Result<Key, ShortSecret> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(ShortSecret(secret.len()));
        }
        // HMAC takes keys of any length; the length was checked above anyway.
        Hmac::<Sha256>::new_from_slice(secret)
            .map(Key)
            .map_err(|_| ShortSecret(secret.len()))
    }

    /// The MAC over `domain` and `parts`, in hex.
    pub(crate) fn sign(&self, domain: &[u8], parts: &[&[u8]]) -> String {
        let mut mac = self.0.clone();
        mac.update(domain);
        for part in parts {
            mac.update(part);
        }
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `tag` (hex) is the MAC over `domain` and `parts`; compared in constant time.
    pub(crate) fn verify(&self, domain: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        let Some(tag) = unhex::<32>(tag) else {
            return false;
        };
        let mut mac = self.0.clone();
        mac.update(domain);
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&tag).is_ok()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Who sent an envelope, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The sender's node name.
    pub node: String,
    /// Random per sender process: a restart under the same name is a new instance.
    pub instance: u64,
    /// Increases by one with every envelope the instance sends, whoever it goes to.
    pub seq: u64,
    /// The sender's clock, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// Sent on connecting and with every heartbeat: where other nodes forward HTTP requests for
    /// the sender's sessions, and its queue.
    Hello { addr: SocketAddr, queue: String },
    /// A broadcast operation for every node to apply to its own sockets.
    Op { op: RemoteOp },
    /// A cross-node socket query; answers go to the queue `reply_to`.
    Fetch {
        request: u64,
        to: Selection,
        reply_to: String,
    },
    /// One node's answer to a `fetch`, for the node that asked (`for_node`): an answer
    /// replayed into another node's queue is not taken for one of its own.
    Sockets {
        request: u64,
        for_node: String,
        sockets: Vec<SocketInfo>,
    },
}

/// An authentic envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub stamp: Stamp,
    pub message: Message,
}

#[derive(Serialize)]
struct SignedRef<'a> {
    #[serde(flatten)]
    stamp: &'a Stamp,
    #[serde(flatten)]
    message: &'a Message,
}

#[derive(Deserialize)]
struct Signed {
    #[serde(flatten)]
    stamp: Stamp,
    #[serde(flatten)]
    message: Message,
}

/// Why an envelope was dropped. Each has its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No MAC, or not the MAC of these bytes under this cluster's secret.
    BadMac,
    /// Authentic, but not an envelope this node understands (a newer version, a bug).
    Malformed,
    /// Authentic, but the sender's name is not a node name.
    BadNodeName,
    /// Stamped more than [`WINDOW`] away from the receiver's clock.
    Stale,
    /// Seen already from the same sender instance.
    Replayed,
}

impl Rejection {
    /// The `reason` label of `halley_cluster_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::BadMac => "bad_mac",
            Rejection::Malformed => "malformed",
            Rejection::BadNodeName => "bad_node_name",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
        }
    }
}

/// The wire form of `message` from `stamp`.
pub fn seal(key: &Key, stamp: &Stamp, message: &Message) -> Vec<u8> {
    // Plain data with string keys: serializing it cannot fail.
    let json = serde_json::to_vec(&SignedRef { stamp, message }).unwrap_or_default();
    let mac = key.sign(ENVELOPE_DOMAIN, &[&json]);
    let mut out = Vec::with_capacity(MAC_HEX_LEN + 1 + json.len());
    out.extend_from_slice(mac.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&json);
    out
}

/// The envelope in `body`, if the cluster's secret vouches for every byte of it.
pub fn open(key: &Key, body: &[u8]) -> Result<Envelope, Rejection> {
    let (tag, json) = match (body.get(..MAC_HEX_LEN), body.get(MAC_HEX_LEN)) {
        (Some(tag), Some(b'\n')) => (tag, &body[MAC_HEX_LEN + 1..]),
        _ => return Err(Rejection::BadMac),
    };
    if !key.verify(ENVELOPE_DOMAIN, &[json], tag) {
        return Err(Rejection::BadMac);
    }
    let signed: Signed = serde_json::from_slice(json).map_err(|_| Rejection::Malformed)?;
    if !valid_node_name(&signed.stamp.node) {
        return Err(Rejection::BadNodeName);
    }
    Ok(Envelope {
        stamp: signed.stamp,
        message: signed.message,
    })
}

/// Sender instances remembered at most; beyond, the one heard from least recently is forgotten.
/// Only authentic envelopes create entries, so only the cluster's own nodes fill it.
const MAX_INSTANCES: usize = 4096;

/// Sequence numbers accepted below the highest seen (once each), for envelopes that overtook
/// each other between the sender's channel and this node's queue.
const REORDER: u64 = 64;

/// The receiving half of the live check: per sender instance, the highest sequence number seen
/// and which of the [`REORDER`] below it were seen too (a sliding window, as IPsec keeps).
#[derive(Debug, Default)]
pub struct Freshness {
    seen: HashMap<(String, u64), Seen>,
    /// When this node's queue was last bound (ms since the epoch): nothing published before
    /// it can have reached the queue, so an envelope stamped earlier is a replay however new
    /// its sender instance or sequence number looks here.
    listening_since: u64,
}

/// How far a sender's clock may be behind this node's for [`Freshness::listening_from`]: an
/// envelope stamped more than this before the queue was bound is refused.
pub const BIND_SKEW: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
struct Seen {
    highest: u64,
    /// Bit `i`: `highest - i` was seen.
    bits: u64,
    /// The receiver's clock when it last accepted one, in ms.
    at: u64,
}

impl Freshness {
    /// Accepts `stamp` at `now` (ms since the epoch) unless it is stale or a replay; an accepted
    /// stamp is remembered.
    pub fn check(&mut self, stamp: &Stamp, now: u64) -> Result<(), Rejection> {
        let window = WINDOW.as_millis() as u64;
        if stamp.ts.saturating_add(window) < now || stamp.ts > now.saturating_add(window) {
            return Err(Rejection::Stale);
        }
        let skew = BIND_SKEW.as_millis() as u64;
        if stamp.ts.saturating_add(skew) < self.listening_since {
            return Err(Rejection::Replayed);
        }
        let key = (stamp.node.clone(), stamp.instance);
        if let Some(seen) = self.seen.get_mut(&key) {
            if stamp.seq > seen.highest {
                let shift = stamp.seq - seen.highest;
                seen.bits = if shift >= 64 { 0 } else { seen.bits << shift } | 1;
                seen.highest = stamp.seq;
            } else {
                let back = seen.highest - stamp.seq;
                if back >= REORDER || seen.bits & (1 << back) != 0 {
                    return Err(Rejection::Replayed);
                }
                seen.bits |= 1 << back;
            }
            seen.at = now;
            return Ok(());
        }
        self.forget_idle(now);
        // The first envelope heard from an instance: whatever it sent before went by unseen (it
        // was sent before this node listened, or while it was away), so none of it may be
        // taken later.
        self.seen.insert(
            key,
            Seen {
                highest: stamp.seq,
                bits: u64::MAX,
                at: now,
            },
        );
        Ok(())
    }

    /// Records that this node's queue was bound at `now` (ms since the epoch): at start, and
    /// again after every reconnect (envelopes published while the link was down never reached
    /// the new queue, so none of them may be taken later).
    pub fn listening_from(&mut self, now: u64) {
        self.listening_since = now;
    }

    /// Sender instances remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets instances silent for four windows (a live node says hello every heartbeat, so
    /// those are gone: anything they sent is stale by now), then the least recent one while
    /// the table is full. Runs only when a new instance appears, which is rare.
    fn forget_idle(&mut self, now: u64) {
        let idle = 4 * WINDOW.as_millis() as u64;
        self.seen
            .retain(|_, seen| seen.at.saturating_add(idle) >= now);
        while self.seen.len() >= MAX_INSTANCES {
            let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, seen)| seen.at)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            self.seen.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000_000;

    fn key() -> Key {
        Key::new(SECRET).unwrap()
    }

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            node: "AbCd12".into(),
            instance: 42,
            seq,
            ts: NOW,
        }
    }

    fn fetch() -> Message {
        Message::Fetch {
            request: 7,
            to: Selection {
                ns: "/".into(),
                rooms: vec!["r".into()],
                ..Selection::default()
            },
            reply_to: "amq.gen-1".into(),
        }
    }

    #[test]
    fn envelopes_from_before_the_queue_was_bound_are_replays() {
        let mut freshness = Freshness::default();
        let bound = 1_000_000;
        freshness.listening_from(bound);
        let stamp = |ts, seq| Stamp {
            node: "nodeA1".into(),
            instance: 7,
            seq,
            ts,
        };
        // Captured before this node listened, replayed to it: never seen here, still refused.
        assert_eq!(
            freshness.check(&stamp(bound - 10_000, 3), bound + 1_000),
            Err(Rejection::Replayed)
        );
        // A sender whose clock is a little behind is heard; what it sent before the first
        // envelope heard from it went by unseen, and may not come later.
        assert_eq!(
            freshness.check(&stamp(bound - 2_000, 4), bound + 1_000),
            Ok(())
        );
        assert_eq!(
            freshness.check(&stamp(bound + 500, 5), bound + 1_000),
            Ok(())
        );
    }

    #[test]
    fn sealed_envelopes_open_with_the_same_secret() {
        let body = seal(&key(), &stamp(3), &fetch());
        let text = std::str::from_utf8(&body).unwrap();
        let (mac, json) = text.split_once('\n').unwrap();
        assert_eq!(mac.len(), 64);
        assert_eq!(
            json,
            r#"{"node":"AbCd12","instance":42,"seq":3,"ts":1700000000000,"kind":"fetch","request":7,"to":{"ns":"/","rooms":["r"]},"reply_to":"amq.gen-1"}"#
        );
        let envelope = open(&key(), &body).unwrap();
        assert_eq!(envelope.stamp, stamp(3));
        assert_eq!(envelope.message, fetch());
    }

    #[test]
    fn another_secret_does_not_open_an_envelope() {
        let other = Key::new(b"fedcba9876543210fedcba9876543210").unwrap();
        let body = seal(&other, &stamp(1), &fetch());
        assert_eq!(open(&key(), &body), Err(Rejection::BadMac));
    }

    #[test]
    fn unsigned_envelopes_are_refused() {
        let unsigned = br#"{"node":"AbCd12","kind":"op","op":{"op":"disconnect","to":{"ns":"/"}}}"#;
        assert_eq!(open(&key(), unsigned), Err(Rejection::BadMac));
        assert_eq!(open(&key(), b""), Err(Rejection::BadMac));
        let mut no_mac = vec![b'0'; 64];
        no_mac.push(b'\n');
        no_mac.extend_from_slice(unsigned);
        assert_eq!(open(&key(), &no_mac), Err(Rejection::BadMac));
    }

    #[test]
    fn every_altered_byte_breaks_the_mac() {
        let body = seal(&key(), &stamp(1), &fetch());
        for i in 0..body.len() {
            let mut altered = body.clone();
            altered[i] ^= 0x01;
            assert!(open(&key(), &altered).is_err(), "byte {i} altered");
        }
        // A reply queue swapped for another of the same length.
        let swapped = String::from_utf8(body.clone())
            .unwrap()
            .replace("amq.gen-1", "amq.gen-2");
        assert_eq!(open(&key(), swapped.as_bytes()), Err(Rejection::BadMac));
        // Uppercase hex is not what a node sends: refused rather than normalized.
        let upper = String::from_utf8(body).unwrap();
        let (mac, json) = upper.split_once('\n').unwrap();
        let upper = format!("{}\n{json}", mac.to_uppercase());
        assert_eq!(open(&key(), upper.as_bytes()), Err(Rejection::BadMac));
    }

    #[test]
    fn authentic_envelopes_with_bad_node_names_are_refused() {
        for node in ["abc", "abc-ef", "AbCd123", "", "ÀbCd1"] {
            let mut s = stamp(1);
            s.node = node.into();
            let body = seal(&key(), &s, &fetch());
            assert_eq!(open(&key(), &body), Err(Rejection::BadNodeName), "{node:?}");
        }
    }

    #[test]
    fn authentic_nonsense_is_malformed() {
        let json = br#"{"node":"AbCd12","kind":"teleport"}"#;
        let mac = key().sign(ENVELOPE_DOMAIN, &[json]);
        let body = [mac.as_bytes(), b"\n", json].concat();
        assert_eq!(open(&key(), &body), Err(Rejection::Malformed));
    }

    #[test]
    fn secrets_shorter_than_the_minimum_are_refused() {
        assert_eq!(Key::new(b"short").unwrap_err(), ShortSecret(5));
        assert!(Key::new(&SECRET[..MIN_SECRET_LEN - 1]).is_err());
        assert!(Key::new(SECRET).is_ok());
        assert_eq!(format!("{:?}", key()), "Key(..)");
    }

    #[test]
    fn stale_and_future_envelopes_are_refused() {
        let window = WINDOW.as_millis() as u64;
        let mut fresh = Freshness::default();
        let at = |ts: u64, seq: u64| Stamp { ts, ..stamp(seq) };
        assert_eq!(
            fresh.check(&at(NOW - window - 1, 1), NOW),
            Err(Rejection::Stale)
        );
        assert_eq!(
            fresh.check(&at(NOW + window + 1, 2), NOW),
            Err(Rejection::Stale)
        );
        assert_eq!(fresh.check(&at(NOW - window, 3), NOW), Ok(()));
        assert_eq!(fresh.check(&at(NOW + window, 4), NOW), Ok(()));
        assert_eq!(fresh.check(&at(0, 5), u64::MAX), Err(Rejection::Stale));
        assert_eq!(fresh.check(&at(u64::MAX, 6), 0), Err(Rejection::Stale));
    }

    #[test]
    fn a_replayed_envelope_is_refused() {
        let mut fresh = Freshness::default();
        assert_eq!(fresh.check(&stamp(1), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(1), NOW), Err(Rejection::Replayed));
        assert_eq!(fresh.check(&stamp(2), NOW + 5), Ok(()));
        assert_eq!(fresh.check(&stamp(1), NOW + 5), Err(Rejection::Replayed));
        assert_eq!(fresh.check(&stamp(2), NOW + 5), Err(Rejection::Replayed));
    }

    #[test]
    fn envelopes_that_overtook_each_other_are_accepted_once() {
        let mut fresh = Freshness::default();
        assert_eq!(fresh.check(&stamp(10), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(12), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(11), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(11), NOW), Err(Rejection::Replayed));
        assert_eq!(fresh.check(&stamp(12 + REORDER), NOW), Ok(()));
        // 12 is now REORDER below the highest: too old to tell apart from a replay.
        assert_eq!(fresh.check(&stamp(13), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(12), NOW), Err(Rejection::Replayed));
        assert_eq!(fresh.check(&stamp(1000), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(999), NOW), Ok(()));
        assert_eq!(fresh.check(&stamp(13), NOW), Err(Rejection::Replayed));
    }

    #[test]
    fn a_restarted_node_is_a_new_instance() {
        let mut fresh = Freshness::default();
        assert_eq!(fresh.check(&stamp(500), NOW), Ok(()));
        let restarted = Stamp {
            instance: 43,
            ..stamp(1)
        };
        assert_eq!(fresh.check(&restarted, NOW), Ok(()));
        assert_eq!(fresh.check(&restarted, NOW), Err(Rejection::Replayed));
        // The old instance's envelopes are still replays.
        assert_eq!(fresh.check(&stamp(500), NOW), Err(Rejection::Replayed));
        assert_eq!(fresh.len(), 2);
    }

    #[test]
    fn silent_instances_are_forgotten_and_the_table_is_bounded() {
        let mut fresh = Freshness::default();
        let window = WINDOW.as_millis() as u64;
        assert_eq!(fresh.check(&stamp(1), NOW), Ok(()));
        let later = NOW + 4 * window + 1;
        let other = Stamp {
            instance: 7,
            ts: later,
            ..stamp(1)
        };
        assert_eq!(fresh.check(&other, later), Ok(()));
        assert_eq!(fresh.len(), 1, "the silent instance was forgotten");
        for i in 0..(MAX_INSTANCES as u64 + 10) {
            let s = Stamp {
                instance: 1000 + i,
                ts: later,
                ..stamp(1)
            };
            assert_eq!(fresh.check(&s, later + i), Ok(()));
        }
        assert_eq!(fresh.len(), MAX_INSTANCES);
    }
}
