//! Publish-to-delivery latency: the histogram the bridges record into when a backend message
//! sits in every target outbox, read by `/metrics`, and the wall clock producers' stamps are
//! compared with. Recording touches two atomics and allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Upper bounds of the publish latency histogram, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/// Publish-to-delivery latency, per source: from the time a producer stamped on a message
/// (AMQP header `x-published-at` or property `timestamp`, HTTP field `publishedAt`; ms since the
/// epoch) to the moment it sat in every target outbox. Unstamped messages are not counted.
#[derive(Debug, Default)]
pub struct Latency {
    /// `[amqp, http]` × buckets (+Inf last).
    buckets: [[AtomicU64; LATENCY_BUCKETS_MS.len() + 1]; 2],
    sum_ms: [AtomicU64; 2],
}

/// Where a backend message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Amqp = 0,
    Http = 1,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Amqp, Source::Http];

    pub fn name(self) -> &'static str {
        match self {
            Source::Amqp => "amqp",
            Source::Http => "http",
        }
    }
}

/// Milliseconds since the Unix epoch, now: what producers stamp messages with, and cluster
/// envelopes and forward marks are stamped with.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Latency {
    /// Records a message stamped `published_at` (ms since the epoch) delivered now. A stamp
    /// from a clock ahead of this one counts as zero.
    pub fn record(&self, source: Source, published_at: u64) {
        let ms = now_ms().saturating_sub(published_at);
        let i = source as usize;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i][bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ms[i].fetch_add(ms, Ordering::Relaxed);
    }

    /// Each bucket's own `(le seconds, count)`, ending with +Inf (what the Prometheus encoder
    /// takes: it accumulates them), the total count, and the sum in seconds.
    pub fn histogram(&self, source: Source) -> (Vec<(f64, u64)>, u64, f64) {
        let i = source as usize;
        let bounds = LATENCY_BUCKETS_MS
            .iter()
            .map(|&le| le as f64 / 1000.0)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets[i])
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        (
            buckets,
            count,
            self.sum_ms[i].load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_bucketed_and_future_stamps_count_as_zero() {
        let latency = Latency::default();
        latency.record(Source::Http, now_ms() + 60_000);
        latency.record(Source::Http, now_ms().saturating_sub(30_000));
        let (buckets, count, sum) = latency.histogram(Source::Http);
        assert_eq!(
            buckets[0],
            (0.001, 1),
            "the future stamp lands in the first bucket"
        );
        assert_eq!(
            buckets.last().copied(),
            Some((f64::INFINITY, 1)),
            "30 s is past the last bound"
        );
        assert_eq!(count, 2);
        assert!(sum >= 30.0);
        assert_eq!(latency.histogram(Source::Amqp).1, 0);
    }
}
