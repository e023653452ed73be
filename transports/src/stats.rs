//! Engine counters, per transport: plain atomics updated on the hot paths, read by whoever
//! exports metrics (the `halley` crate renders them for Prometheus at scrape time). Nothing here
//! allocates or locks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::admission::Refusal;
use crate::origin;
use crate::session::{CloseReason, TransportKind};

/// Counters of one transport.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Sessions opened with this transport.
    pub handshakes: AtomicU64,
    /// Sessions using this transport now.
    pub sessions: AtomicI64,
    /// Sessions that upgraded from this transport to WebSocket.
    pub upgrades: AtomicU64,
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Ping round trips, bucketed by [`RTT_BUCKETS_MS`] (one extra slot for +Inf).
    pub rtt_buckets: [AtomicU64; RTT_BUCKETS_MS.len() + 1],
    pub rtt_sum_micros: AtomicU64,
}

/// Upper bounds of the ping round-trip histogram, in milliseconds.
pub const RTT_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000];

/// Every close reason, for iteration.
pub const CLOSE_REASONS: [CloseReason; 7] = [
    CloseReason::ClientClose,
    CloseReason::PingTimeout,
    CloseReason::ProtocolError,
    CloseReason::TransportClose,
    CloseReason::ServerClose,
    CloseReason::ServerShutdown,
    CloseReason::OutboxFull,
];

/// Why a client gave up a transport before the one it opened a session with (it reports them in
/// the handshake's `tried` parameter).
/// `skipped`: not tried, because a stream before it timed out (a buffering proxy holds them all).
pub const FALLBACK_REASONS: [&str; 4] = ["timeout", "error", "unsupported", "skipped"];

/// Why the server's own HTTP/1.1 layer refused a request head (`h1::HeadError::as_str`):
/// unparseable, framing a proxy could read differently, too large, another HTTP version, or
/// begun and not finished within the header read timeout.
pub const HTTP_REFUSALS: [&str; 5] = ["malformed", "framing", "too_large", "version", "timeout"];

/// All counters of one engine.
#[derive(Debug, Default)]
pub struct EngineStats {
    transports: [TransportStats; 6],
    /// Fallbacks clients reported, by transport given up and [`FALLBACK_REASONS`].
    fallbacks: [[AtomicU64; FALLBACK_REASONS.len()]; 6],
    /// Volatile packets dropped because an outbox was full: new ones that found it full, and
    /// queued ones dropped to make room for a packet that may not be dropped.
    pub outbox_dropped: AtomicU64,
    closes: [AtomicU64; 7],
    /// Handshakes refused by a session limit, by [`Refusal::ALL`].
    refusals: [AtomicU64; 2],
    /// Requests refused by the origin policy, by [`origin::Kind::ALL`].
    origin_refusals: [AtomicU64; 3],
    /// HTTP connections cut because the client stopped reading a response (counted by the
    /// server hosting the engine).
    pub write_timeouts: AtomicU64,
    /// POSTs whose body did not arrive within the body read timeout.
    pub body_timeouts: AtomicU64,
    /// Request heads the own HTTP/1.1 layer refused, by [`HTTP_REFUSALS`] (counted by the
    /// server hosting the engine).
    http_refusals: [AtomicU64; HTTP_REFUSALS.len()],
    /// Requests refused because they carried a forward mark no node of the cluster made for
    /// them (or any mark, outside a cluster).
    pub forward_refused: AtomicU64,
    /// TCP connections opened to other nodes to forward requests to them (kept alive and
    /// reused: see [`crate::forward`]).
    pub forward_connections: AtomicU64,
}

fn index(t: TransportKind) -> usize {
    TransportKind::ALL
        .iter()
        .position(|&k| k == t)
        .unwrap_or_default()
}

fn refusal_index(limit: Refusal) -> usize {
    Refusal::ALL
        .iter()
        .position(|&r| r == limit)
        .unwrap_or_default()
}

fn origin_index(kind: origin::Kind) -> usize {
    origin::Kind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or_default()
}

impl EngineStats {
    pub fn transport(&self, t: TransportKind) -> &TransportStats {
        &self.transports[index(t)]
    }

    /// Sessions closed for `reason` so far.
    pub fn closes(&self, reason: CloseReason) -> u64 {
        let i = CLOSE_REASONS
            .iter()
            .position(|&r| r == reason)
            .unwrap_or_default();
        self.closes[i].load(Ordering::Relaxed)
    }

    /// Handshakes refused so far because of `limit`.
    pub fn refusals(&self, limit: Refusal) -> u64 {
        self.refusals[refusal_index(limit)].load(Ordering::Relaxed)
    }

    pub(crate) fn refused(&self, limit: Refusal) {
        self.refusals[refusal_index(limit)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `kind` refused so far by the origin policy.
    pub fn origin_refusals(&self, kind: origin::Kind) -> u64 {
        self.origin_refusals[origin_index(kind)].load(Ordering::Relaxed)
    }

    pub(crate) fn origin_refused(&self, kind: origin::Kind) {
        self.origin_refusals[origin_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// Request heads refused so far for `reason` (one of [`HTTP_REFUSALS`]).
    pub fn http_refusals(&self, reason: &str) -> u64 {
        HTTP_REFUSALS
            .iter()
            .position(|&r| r == reason)
            .map_or(0, |i| self.http_refusals[i].load(Ordering::Relaxed))
    }

    /// Counts a request head refused for `reason`; anything not in [`HTTP_REFUSALS`] is ignored.
    pub fn http_refused(&self, reason: &str) {
        if let Some(i) = HTTP_REFUSALS.iter().position(|&r| r == reason) {
            self.http_refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fallbacks reported away from `t` for `reason` (one of [`FALLBACK_REASONS`]).
    pub fn fallbacks(&self, t: TransportKind, reason: &str) -> u64 {
        FALLBACK_REASONS
            .iter()
            .position(|&r| r == reason)
            .map_or(0, |i| self.fallbacks[index(t)][i].load(Ordering::Relaxed))
    }

    /// Counts a handshake's `tried` report: `name:reason` pairs, comma-separated. Anything not
    /// a known transport and reason is ignored, and at most 8 pairs are read.
    /// (Public only for the fuzz targets in `tests/fuzz/`.)
    #[doc(hidden)]
    pub fn fallback_report(&self, tried: &str) {
        for pair in tried.split(',').take(8) {
            let Some((name, reason)) = pair.split_once(':') else {
                continue;
            };
            let (Some(t), Some(r)) = (
                TransportKind::from_name(name),
                FALLBACK_REASONS.iter().position(|&known| known == reason),
            ) else {
                continue;
            };
            self.fallbacks[index(t)][r].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn opened(&self, t: TransportKind) {
        let s = self.transport(t);
        s.handshakes.fetch_add(1, Ordering::Relaxed);
        s.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, t: TransportKind, reason: CloseReason) {
        self.transport(t).sessions.fetch_sub(1, Ordering::Relaxed);
        let i = CLOSE_REASONS
            .iter()
            .position(|&r| r == reason)
            .unwrap_or_default();
        self.closes[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upgraded(&self, from: TransportKind) {
        let s = self.transport(from);
        s.upgrades.fetch_add(1, Ordering::Relaxed);
        s.sessions.fetch_sub(1, Ordering::Relaxed);
        self.transport(TransportKind::WebSocket)
            .sessions
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, t: TransportKind, bytes: usize) {
        let s = self.transport(t);
        s.packets_in.fetch_add(1, Ordering::Relaxed);
        s.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, t: TransportKind, packets: usize, bytes: usize) {
        let s = self.transport(t);
        s.packets_out.fetch_add(packets as u64, Ordering::Relaxed);
        s.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn ping_rtt(&self, t: TransportKind, rtt: Duration) {
        let s = self.transport(t);
        let micros = rtt.as_micros() as u64;
        let bucket = RTT_BUCKETS_MS
            .iter()
            .position(|&le| micros <= le * 1000)
            .unwrap_or(RTT_BUCKETS_MS.len());
        s.rtt_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.rtt_sum_micros
            .fetch_add(rtt.as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_moves_a_session_between_transports() {
        let stats = EngineStats::default();
        stats.opened(TransportKind::Sse);
        stats.upgraded(TransportKind::Sse);
        let sse = stats.transport(TransportKind::Sse);
        assert_eq!(sse.sessions.load(Ordering::Relaxed), 0);
        assert_eq!(sse.upgrades.load(Ordering::Relaxed), 1);
        let ws = stats.transport(TransportKind::WebSocket);
        assert_eq!(ws.sessions.load(Ordering::Relaxed), 1);
        stats.closed(TransportKind::WebSocket, CloseReason::PingTimeout);
        assert_eq!(ws.sessions.load(Ordering::Relaxed), 0);
        assert_eq!(stats.closes(CloseReason::PingTimeout), 1);
    }

    #[test]
    fn fallback_reports_count_known_pairs_only() {
        let stats = EngineStats::default();
        stats.fallback_report(
            "websocket:timeout,sse:error,bogus:timeout,sse:weird,htmlfile:unsupported",
        );
        assert_eq!(stats.fallbacks(TransportKind::WebSocket, "timeout"), 1);
        assert_eq!(stats.fallbacks(TransportKind::Sse, "error"), 1);
        assert_eq!(stats.fallbacks(TransportKind::Htmlfile, "unsupported"), 1);
        assert_eq!(stats.fallbacks(TransportKind::Sse, "weird"), 0);
    }

    #[test]
    fn rtt_lands_in_its_bucket() {
        let stats = EngineStats::default();
        stats.ping_rtt(TransportKind::Polling, Duration::from_micros(1500));
        stats.ping_rtt(TransportKind::Polling, Duration::from_secs(9));
        let p = stats.transport(TransportKind::Polling);
        assert_eq!(p.rtt_buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(
            p.rtt_buckets[RTT_BUCKETS_MS.len()].load(Ordering::Relaxed),
            1
        );
        assert_eq!(p.rtt_sum_micros.load(Ordering::Relaxed), 9_001_500);
    }
}
