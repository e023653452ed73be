//! `soak`: a population of clients on mixed transports joining and leaving for a long time while
//! a broadcaster emits `bcast` (the bench app answers with `tick` to every socket); checks that
//! connected clients lose no message and that the server's memory comes back once they leave.
//!
//! Phases:
//! 1. **Warm-up**: `--clients` clients connect (transports drawn from `--mix`), stay
//!    `--warmup-hold` seconds once all are in, then all leave (each clean or dropped, see below);
//!    or, with `--warmup-churn S`, S seconds of the churn below, everyone leaving at its end.
//!    After `--reap` seconds (longer than the server's pingInterval + pingTimeout, so that it has
//!    closed the sessions of dropped long-polling clients too) the server's RSS is the
//!    **warmed-up baseline**.
//! 2. **Churn** for `--duration` seconds: `--clients` slots, each running one client after
//!    another. A client lives a random time in [`--life-min`, `--life-max`] seconds, then leaves:
//!    cleanly (Socket.IO DISCONNECT and Engine.IO close, then its connections closed) or, for a
//!    `--drop-fraction` of them, by just closing its TCP connections. At the end of the window
//!    every client still connected leaves.
//! 3. After `--reap` seconds more, the server's RSS is the **final** reading, compared with the
//!    baseline (`final_within_10pct`: final ≤ 1.1 × baseline).
//!
//! The broadcaster (a WebSocket client) emits `42["bcast",<µs>,<seq>]` at `--rate` per second
//! throughout. Each client records the seqs of the ticks it gets (a bitmap, [`SeqSet`]); when it
//! leaves, [`account`] counts the seqs it missed: `lost` = those between the first and the last
//! it got (the messages a connected client lost), and `lost_edges` = those sent more than
//! `--grace` seconds after it connected and before it left, outside that range (a late first
//! tick or an early last one; sensitive to latency above `--grace`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::eio::{self, Session, Target, Transport};
use crate::hist::Hist;
use crate::{
    base_json, cap_clients, merge, now_us, procfs, round3, setup, tick, Common, ServerProbe, Stats,
};

#[derive(Args, Clone)]
pub struct SoakArgs {
    /// Transports and their weights, `name=weight,…`.
    #[arg(
        long,
        default_value = "websocket=35,polling=15,sse=15,xhr-streaming=10,jsonp=5,iframe=10,htmlfile=10"
    )]
    mix: String,
    /// Shortest client life, seconds.
    #[arg(long, default_value_t = 5.0)]
    life_min: f64,
    /// Longest client life, seconds.
    #[arg(long, default_value_t = 60.0)]
    life_max: f64,
    /// Fraction of the leaving clients that just close their TCP connections.
    #[arg(long, default_value_t = 0.2)]
    drop_fraction: f64,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds the warm-up population stays connected once every client is in.
    #[arg(long, default_value_t = 10.0)]
    warmup_hold: f64,
    /// Warm up with this many seconds of the same churn instead (clients with random lives),
    /// everyone leaving at the end: a baseline that has seen the churn's allocation pattern.
    /// 0: the population connects at once, stays `--warmup-hold` s, and leaves.
    #[arg(long, default_value_t = 0.0)]
    warmup_churn: f64,
    /// Seconds after everyone left before reading the server's RSS: longer than pingInterval +
    /// pingTimeout (25 + 20 s by default), after which the server has closed the sessions of
    /// dropped long-polling clients.
    #[arg(long, default_value_t = 50.0)]
    reap: f64,
    /// Seconds after a client connects and before it leaves during which a broadcast may be
    /// missed without counting in `lost_edges`.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    /// Seconds between the RSS samples kept in the result (sampled every second).
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// Random seed (0: from the clock).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

// --- loss accounting ----------------------------------------------------------------------

/// The seqs one client received: a bitmap from the first one (moved down when an earlier seq
/// comes later).
#[derive(Debug, Default)]
pub struct SeqSet {
    /// The seq of bit 0 of `words[0]`, a multiple of 64.
    base: u64,
    words: Vec<u64>,
    min: u64,
    max: u64,
    count: u64,
    duplicates: u64,
}

impl SeqSet {
    /// Adds `seq`; false when it was there already (counted in `duplicates`).
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.count == 0 {
            self.base = seq & !63;
            self.min = seq;
            self.max = seq;
        } else if seq < self.base {
            let base = seq & !63;
            let words = ((self.base - base) / 64) as usize;
            self.words.splice(0..0, std::iter::repeat_n(0, words));
            self.base = base;
        }
        let offset = seq - self.base;
        let (word, bit) = ((offset / 64) as usize, 1u64 << (offset % 64));
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        self.words[word] |= bit;
        self.count += 1;
        self.min = self.min.min(seq);
        self.max = self.max.max(seq);
        true
    }

    pub fn contains(&self, seq: u64) -> bool {
        if self.count == 0 || seq < self.base {
            return false;
        }
        let offset = seq - self.base;
        self.words
            .get((offset / 64) as usize)
            .is_some_and(|w| w & (1 << (offset % 64)) != 0)
    }

    /// The first and last seq received.
    pub fn range(&self) -> Option<(u64, u64)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// Seqs between the first and the last received that were not.
    pub fn missing_in_range(&self) -> u64 {
        self.range()
            .map_or(0, |(first, last)| last - first + 1 - self.count)
    }
}

/// One client's deliveries, when it left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub received: u64,
    /// Missing between its first and last received seq.
    pub in_range: u64,
    /// Missing outside that range, though sent more than `grace` after it connected and before
    /// it left.
    pub edges: u64,
    pub duplicates: u64,
}

/// The loss of a client that connected at `from` and stopped reading at `to` (µs), given the
/// send time of every broadcast so far (`stamps[seq]`, ascending).
pub fn account(set: &SeqSet, stamps: &[u64], from: u64, to: u64, grace: u64) -> Loss {
    // The seqs it must have got whatever the latency: [lo, hi).
    let lo = stamps.partition_point(|&s| s < from.saturating_add(grace)) as u64;
    let hi = stamps.partition_point(|&s| s <= to.saturating_sub(grace)) as u64;
    let edges = match set.range() {
        None => hi.saturating_sub(lo),
        Some((first, last)) => {
            let below = first.min(hi).saturating_sub(lo);
            let above = hi.saturating_sub((last + 1).max(lo));
            below + above
        }
    };
    Loss {
        received: set.count,
        in_range: set.missing_in_range(),
        edges,
        duplicates: set.duplicates,
    }
}

/// `name=weight,…` → the transports and their weights.
pub fn parse_mix(spec: &str) -> Result<Vec<(Transport, u64)>, String> {
    use clap::ValueEnum;
    let mut mix = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let transport = Transport::from_str(name.trim(), true)
            .map_err(|_| format!("--mix: unknown transport {name:?}"))?;
        let weight: u64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("--mix: bad weight in {part:?}"))?;
        if weight > 0 {
            mix.push((transport, weight));
        }
    }
    if mix.is_empty() {
        return Err("--mix: no transport with a weight above 0".into());
    }
    Ok(mix)
}

/// splitmix64 over an atomic counter: good enough for lifetimes and transport draws, and shared
/// by every task without a lock.
struct Rng(AtomicU64);

impl Rng {
    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick(&self, mix: &[(Transport, u64)]) -> Transport {
        let total: u64 = mix.iter().map(|m| m.1).sum();
        let mut x = self.next() % total.max(1);
        for &(transport, weight) in mix {
            if x < weight {
                return transport;
            }
            x -= weight;
        }
        mix[0].0
    }
}

// --- shared state -------------------------------------------------------------------------

/// Per-transport totals.
#[derive(Default)]
struct PerTransport {
    clients: AtomicU64,
    deliveries: AtomicU64,
    lost: AtomicU64,
    lost_edges: AtomicU64,
    clients_with_loss: AtomicU64,
    latency_us: Hist,
}

impl PerTransport {
    fn json(&self) -> Value {
        let latency = self.latency_us.summary_ms();
        json!({
            "clients": self.clients.load(Relaxed),
            "deliveries": self.deliveries.load(Relaxed),
            "lost": self.lost.load(Relaxed),
            "lost_edges": self.lost_edges.load(Relaxed),
            "clients_with_loss": self.clients_with_loss.load(Relaxed),
            "latency_p50_ms": latency["p50_ms"],
            "latency_p99_ms": latency["p99_ms"],
            "latency_max_ms": latency["max_ms"],
        })
    }
}

/// How a client ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// Left cleanly (41, close).
    Clean,
    /// Closed its connections without a word.
    Drop,
    /// Its session ended before it meant to leave (an error: the server closed it, say).
    Error,
}

struct Soak {
    args: SoakArgs,
    mix: Vec<(Transport, u64)>,
    rng: Rng,
    stats: Arc<Stats>,
    targets: Vec<Arc<Target>>,
    sources: Vec<IpAddr>,
    connects: Semaphore,
    /// Send time of each broadcast, µs (`stamps[seq]`).
    stamps: Mutex<Vec<u64>>,
    /// Broadcasts sent (a tick with a seq at or above this is unexpected).
    sent: AtomicU64,
    /// Clients connected now.
    connected_now: AtomicI64,
    /// Clients created so far (for the source address and server round-robin).
    created: AtomicU64,
    latency_us: Hist,
    per_transport: Vec<PerTransport>,
    clean_leaves: AtomicU64,
    tcp_drops: AtomicU64,
    ended_by_error: AtomicU64,
    leave_errors: AtomicU64,
    unexpected: AtomicU64,
    duplicates: AtomicU64,
    loss_examples: Mutex<Vec<Value>>,
}

const TRANSPORTS: [Transport; 7] = [
    Transport::Websocket,
    Transport::Polling,
    Transport::Sse,
    Transport::XhrStreaming,
    Transport::Jsonp,
    Transport::Iframe,
    Transport::Htmlfile,
];

fn transport_index(t: Transport) -> usize {
    TRANSPORTS.iter().position(|&x| x == t).unwrap_or(0)
}

const LOSS_EXAMPLES: usize = 10;

impl Soak {
    /// One client: connects (at most `--concurrency` at once), reads ticks until `life` is over
    /// or `stop` turns true, leaves (cleanly or not, drawn), and adds its loss to the totals.
    /// Returns whether it connected.
    async fn client(&self, life: Option<Duration>, mut stop: watch::Receiver<bool>) -> bool {
        let n = self.created.fetch_add(1, Relaxed);
        let transport = self.rng.pick(&self.mix);
        let clean = self.rng.unit() >= self.args.drop_fraction;
        let target = Arc::clone(&self.targets[n as usize % self.targets.len()]);
        let source =
            (!self.sources.is_empty()).then(|| self.sources[n as usize % self.sources.len()]);
        let name = transport.name();

        let t0 = Instant::now();
        let connected = {
            let _permit = self.connects.acquire().await;
            tokio::time::timeout(
                eio::CONNECT_TIMEOUT,
                Session::connect(transport, &target, source),
            )
            .await
            .unwrap_or_else(|_| Err("connect timed out".into()))
        };
        self.stats.attempted.fetch_add(1, Relaxed);
        let mut session = match connected {
            Ok(session) => session,
            Err(e) => {
                self.stats.connect_errors.fetch_add(1, Relaxed);
                self.stats.error(&format!("connect {name}"), &e);
                return false;
            }
        };
        self.stats
            .connect_us
            .record(t0.elapsed().as_micros() as u64);
        self.stats.connected.fetch_add(1, Relaxed);
        self.connected_now.fetch_add(1, Relaxed);
        let per = &self.per_transport[transport_index(transport)];
        per.clients.fetch_add(1, Relaxed);
        let from = now_us();
        let leave_at = life.map(|life| tokio::time::Instant::now() + life);

        let mut set = SeqSet::default();
        let mut on_packet = |text: &str| {
            let Some((stamp, seq)) = tick(text) else {
                return;
            };
            if seq >= self.sent.load(Relaxed) {
                self.unexpected.fetch_add(1, Relaxed);
                return;
            }
            if set.insert(seq) {
                let latency = now_us().saturating_sub(stamp);
                self.latency_us.record(latency);
                per.latency_us.record(latency);
                per.deliveries.fetch_add(1, Relaxed);
            }
        };
        let ended: Result<(), String> = loop {
            let sleep = async {
                match leave_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = session.recv(&mut on_packet) => {
                    if let Err(e) = result { break Err(e); }
                }
                _ = sleep => break Ok(()),
                _ = stopped(&mut stop) => break Ok(()),
            }
        };
        let to = now_us();
        let end = match ended {
            Err(e) => {
                self.stats.dropped.fetch_add(1, Relaxed);
                self.stats.error(&format!("run {name}"), &e);
                self.ended_by_error.fetch_add(1, Relaxed);
                drop(session);
                End::Error
            }
            Ok(()) if clean => {
                // Long-polling leaves on a new connection: take a connect slot.
                let _permit = match transport {
                    Transport::Polling | Transport::Jsonp => Some(self.connects.acquire().await),
                    _ => None,
                };
                let left = tokio::time::timeout(Duration::from_secs(10), session.leave(true))
                    .await
                    .unwrap_or_else(|_| Err("leave timed out".into()));
                if let Err(e) = left {
                    self.leave_errors.fetch_add(1, Relaxed);
                    self.stats.error(&format!("leave {name}"), &e);
                }
                self.clean_leaves.fetch_add(1, Relaxed);
                End::Clean
            }
            Ok(()) => {
                let _ = session.leave(false).await;
                self.tcp_drops.fetch_add(1, Relaxed);
                End::Drop
            }
        };
        self.connected_now.fetch_sub(1, Relaxed);

        let grace = (self.args.grace * 1e6) as u64;
        let loss = {
            let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            account(&set, &stamps, from, to, grace)
        };
        per.lost.fetch_add(loss.in_range, Relaxed);
        per.lost_edges.fetch_add(loss.edges, Relaxed);
        self.duplicates.fetch_add(loss.duplicates, Relaxed);
        if loss.in_range + loss.edges > 0 {
            per.clients_with_loss.fetch_add(1, Relaxed);
            let mut examples = self.loss_examples.lock().unwrap_or_else(|p| p.into_inner());
            if examples.len() < LOSS_EXAMPLES {
                examples.push(json!({
                    "transport": name,
                    "range": set.range(),
                    "received": loss.received,
                    "lost": loss.in_range,
                    "lost_edges": loss.edges,
                    "first_missing": set.range().and_then(|(a, b)| (a..=b).find(|&s| !set.contains(s))),
                    "lived_s": round3(to.saturating_sub(from) as f64 / 1e6),
                    "end": format!("{end:?}").to_lowercase(),
                }));
            }
        }
        true
    }

    fn totals(&self) -> Value {
        let sum = |f: fn(&PerTransport) -> &AtomicU64| -> u64 {
            self.per_transport.iter().map(|p| f(p).load(Relaxed)).sum()
        };
        let by_transport: BTreeMap<&str, Value> = TRANSPORTS
            .iter()
            .zip(&self.per_transport)
            .filter(|(_, p)| p.clients.load(Relaxed) > 0)
            .map(|(t, p)| (t.name(), p.json()))
            .collect();
        json!({
            "clients_connected_total": self.stats.connected.load(Relaxed),
            "deliveries": sum(|p| &p.deliveries),
            "lost": sum(|p| &p.lost),
            "lost_edges": sum(|p| &p.lost_edges),
            "clients_with_loss": sum(|p| &p.clients_with_loss),
            "duplicates": self.duplicates.load(Relaxed),
            "unexpected": self.unexpected.load(Relaxed),
            "clean_leaves": self.clean_leaves.load(Relaxed),
            "tcp_drops": self.tcp_drops.load(Relaxed),
            "ended_by_error": self.ended_by_error.load(Relaxed),
            "leave_errors": self.leave_errors.load(Relaxed),
            "latency": self.latency_us.summary_ms(),
            "transports": by_transport,
            "loss_examples": *self.loss_examples.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it at once.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// The broadcaster: `42["bcast",<µs>,<seq>]` at `rate` until `stop`; its own ticks and pings
/// read meanwhile. Returns its error, if any, and its own ticks.
async fn broadcast(
    soak: Arc<Soak>,
    mut ws: eio::Ws,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) -> (Option<String>, u64) {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut own = 0;
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let stamp = now_us();
                    let seq = {
                        let mut stamps = soak.stamps.lock().unwrap_or_else(|p| p.into_inner());
                        stamps.push(stamp);
                        let seq = stamps.len() as u64 - 1;
                        soak.sent.store(seq + 1, Relaxed);
                        seq
                    };
                    eio::send_text(&mut ws, format!("42[\"bcast\",{stamp},{seq}]")).await?;
                }
                text = eio::next_text(&mut ws) => {
                    let text = text?;
                    if tick(&text).is_some() {
                        own += 1;
                    } else if eio::control(&text)? {
                        eio::send_text(&mut ws, "3").await?;
                    }
                }
                _ = stopped(&mut stop) => break,
            }
        }
        Ok(())
    }
    .await;
    (result.err(), own)
}

/// Runs `population` slots, each running one client after another (random lives) for `secs`;
/// then those still connected leave. Returns the seconds it took, and the server's RSS just
/// before the end (everyone still in).
async fn churn(
    soak: &Arc<Soak>,
    server: &Arc<ServerProbe>,
    population: u64,
    secs: f64,
) -> (f64, Option<u64>) {
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (stop_tx, stop) = watch::channel(false);
    let timer = {
        let server = Arc::clone(server);
        tokio::spawn(async move {
            tokio::time::sleep_until(end).await;
            let rss = server.rss();
            let _ = stop_tx.send(true);
            rss
        })
    };
    let mut slots = Vec::new();
    for _ in 0..population {
        let (soak, stop) = (Arc::clone(soak), stop.clone());
        slots.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < end {
                let (min, max) = (soak.args.life_min, soak.args.life_max);
                let life = Duration::from_secs_f64(min + (max - min) * soak.rng.unit());
                if !soak.client(Some(life), stop.clone()).await {
                    // A failed connect: back off a little before the next one.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    for slot in slots {
        let _ = slot.await;
    }
    let rss = timer.await.ok().flatten();
    (start.elapsed().as_secs_f64(), rss)
}

/// One RSS reading.
#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    rss_kib: Option<u64>,
    fds: Option<u64>,
    clients: i64,
}

pub async fn run(common: Common, args: SoakArgs) -> Result<Value, String> {
    let mix = parse_mix(&args.mix)?;
    if !(args.life_min > 0.0 && args.life_max >= args.life_min) {
        return Err("--life-min must be > 0 and ≤ --life-max".into());
    }
    let per_client = mix.iter().map(|m| m.0.connections()).max().unwrap_or(1);
    let (population, capped_from) = cap_clients(common.clients, per_client, 16);
    let churn_secs = common.duration.unwrap_or(600.0);
    let clients = setup(&common).await?;
    let server = Arc::new(ServerProbe::new(&common));
    let seed = if args.seed != 0 { args.seed } else { now_us() };
    let soak = Arc::new(Soak {
        mix: mix.clone(),
        rng: Rng(AtomicU64::new(seed)),
        stats: Arc::clone(&clients.stats),
        targets: clients.targets.clone(),
        sources: clients.sources.clone(),
        connects: Semaphore::new(common.concurrency.max(1)),
        stamps: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        connected_now: AtomicI64::new(0),
        created: AtomicU64::new(0),
        latency_us: Hist::default(),
        per_transport: TRANSPORTS.iter().map(|_| PerTransport::default()).collect(),
        clean_leaves: AtomicU64::new(0),
        tcp_drops: AtomicU64::new(0),
        ended_by_error: AtomicU64::new(0),
        leave_errors: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        loss_examples: Mutex::new(Vec::new()),
        args: args.clone(),
    });
    let start = Instant::now();
    // Ends the soak when the server is gone (its /proc entry vanished), instead of running on
    // against a closed port.
    let gone = {
        let server = Arc::clone(&server);
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !server.pids.is_empty() && server.rss().is_none() {
                    return;
                }
            }
        }
    };
    let soak_run = async {
        let cpu0 = server.cpu();
        let self_cpu0 = procfs::cpu_secs(None);
        let rss_start = server.rss();
        let fds_start = server.fds();

        // RSS, open fds and connected clients, every second.
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        {
            let (samples, server, soak) =
                (Arc::clone(&samples), Arc::clone(&server), Arc::clone(&soak));
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    let sample = Sample {
                        t: start.elapsed().as_secs_f64(),
                        rss_kib: server.rss(),
                        fds: server.fds(),
                        clients: soak.connected_now.load(Relaxed),
                    };
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                }
            });
        }
        let phases: Mutex<Vec<(&str, f64)>> = Mutex::default();
        let phase = |name: &'static str| {
            let t = round3(start.elapsed().as_secs_f64());
            eprintln!("soak: [{t:>7.1}s] {name}");
            phases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name, t));
        };

        let (stop_broadcast, broadcast_stop) = watch::channel(false);
        let bws = eio::ws_connect(&clients.targets[0], clients.source(u64::MAX / 2))
            .await
            .map_err(|e| format!("broadcaster: {e}"))?;
        let broadcaster =
            tokio::spawn(broadcast(Arc::clone(&soak), bws, args.rate, broadcast_stop));
        eprintln!(
            "soak: {population} clients ({}), lives {}–{} s, {:.0} % dropped, {} broadcasts/s",
            args.mix,
            args.life_min,
            args.life_max,
            args.drop_fraction * 100.0,
            args.rate
        );

        // 1. Warm-up: everyone in (at once, or through a churn), everyone out.
        phase("warmup_start");
        let rss_warm_connected = if args.warmup_churn > 0.0 {
            churn(&soak, &server, population, args.warmup_churn).await.1
        } else {
            let (warm_stop_tx, warm_stop) = watch::channel(false);
            let mut warm = Vec::new();
            for _ in 0..population {
                let (soak, stop) = (Arc::clone(&soak), warm_stop.clone());
                warm.push(tokio::spawn(async move { soak.client(None, stop).await }));
            }
            while soak.stats.attempted.load(Relaxed) < population {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            phase("warmup_connected");
            tokio::time::sleep(Duration::from_secs_f64(args.warmup_hold)).await;
            let rss = server.rss();
            let _ = warm_stop_tx.send(true);
            for task in warm {
                let _ = task.await;
            }
            rss
        };
        phase("warmup_left");
        tokio::time::sleep(Duration::from_secs_f64(args.reap)).await;
        let baseline = server.rss();
        let fds_baseline = server.fds();
        phase("baseline");

        // 2. Churn.
        phase("churn_start");
        let (churn_wall, rss_churn_end) = churn(&soak, &server, population, churn_secs).await;
        phase("churn_left");
        tokio::time::sleep(Duration::from_secs_f64(args.reap)).await;
        let final_rss = server.rss();
        let fds_final = server.fds();
        phase("final");

        let _ = stop_broadcast.send(true);
        let (broadcaster_error, own_ticks) = match broadcaster.await {
            Ok(result) => result,
            Err(e) => (Some(format!("broadcaster task: {e}")), 0),
        };
        let wall = start.elapsed().as_secs_f64();
        let cpu1 = server.cpu();
        let self_cpu1 = procfs::cpu_secs(None);

        let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let peak = samples.iter().filter_map(|s| s.rss_kib).max();
        let every = args.sample_every.max(1.0);
        let mut kept: Vec<Value> = Vec::new();
        let mut next_t = 0.0;
        for s in &samples {
            if s.t >= next_t {
                kept.push(json!([round3(s.t), s.rss_kib, s.fds, s.clients]));
                next_t = s.t + every - 0.5;
            }
        }
        let within = baseline
            .zip(final_rss)
            .map(|(b, f)| (f as f64) <= b as f64 * 1.10);
        let sent = soak.sent.load(Relaxed);
        let totals = soak.totals();

        let mut out = base_json("soak", &common, population, capped_from);
        merge(
            &mut out,
            json!({
                "population": population,
                "mix": mix.iter().map(|(t, w)| (t.name(), *w)).collect::<BTreeMap<_, _>>(),
                "life_s": [args.life_min, args.life_max],
                "drop_fraction": args.drop_fraction,
                "rate": args.rate,
                "churn_s": churn_secs,
                "churn_wall_s": round3(churn_wall),
                "warmup_hold_s": args.warmup_hold,
            "warmup_churn_s": args.warmup_churn,
                "reap_s": args.reap,
                "grace_s": args.grace,
                "seed": seed,
                "wall_s": round3(wall),
                "broadcasts_sent": sent,
                "broadcaster_own_ticks": own_ticks,
                "broadcaster_error": broadcaster_error,
                "memory": {
                    "rss_start_kib": rss_start,
                    "rss_warmup_connected_kib": rss_warm_connected,
                "rss_churn_end_kib": rss_churn_end,
                    "baseline_kib": baseline,
                    "peak_kib": peak,
                    "final_kib": final_rss,
                    "final_vs_baseline": baseline.zip(final_rss).filter(|(b, _)| *b > 0)
                        .map(|(b, f)| round3(f as f64 / b as f64)),
                    "final_within_10pct": within,
                    "server_hwm_kib": server.hwm(),
                    "fds_start": fds_start,
                    "fds_baseline": fds_baseline,
                    "fds_final": fds_final,
                },
                "rss_samples_columns": ["t_s", "rss_kib", "server_fds", "clients"],
                "rss_samples": kept,
                "phases": phases.lock().unwrap_or_else(|p| p.into_inner())
                    .iter().map(|(n, t)| (n.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
                "server_cpu_s_per_s": cpu0.zip(cpu1).map(|(a, b)| round3((b - a) / wall)),
                "loadgen_cpu_s_per_s": self_cpu0.zip(self_cpu1).map(|(a, b)| round3((b - a) / wall)),
                "http_reconnects": eio::HTTP_RECONNECTS.load(Relaxed),
                "stream_reopens": eio::STREAM_REOPENS.load(Relaxed),
            }),
        );
        merge(&mut out, totals);
        merge(&mut out, clients.stats.json());
        let checks = json!({
            "no_loss": out["lost"] == 0,
            "memory_within_10pct": within,
            "no_client_errors": out["errors"].as_object().is_some_and(|e| e.is_empty()),
            "broadcaster_ok": out["broadcaster_error"].is_null(),
        });
        merge(&mut out, json!({ "checks": checks }));
        Ok(out)
    };
    tokio::select! {
        result = soak_run => result,
        _ = gone => Err(format!(
            "the server (pid {:?}) exited {:.0} s into the soak",
            server.pids,
            start.elapsed().as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: &[u64]) -> SeqSet {
        let mut s = SeqSet::default();
        for &q in seqs {
            s.insert(q);
        }
        s
    }

    #[test]
    fn seq_set_counts_gaps_and_duplicates() {
        let s = set(&[10, 11, 13, 14, 14, 70, 200]);
        assert_eq!(s.range(), Some((10, 200)));
        assert_eq!(s.count, 6);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.missing_in_range(), 191 - 6);
        assert!(s.contains(13) && s.contains(200) && !s.contains(12) && !s.contains(9));
        assert_eq!(SeqSet::default().missing_in_range(), 0);
        assert_eq!(set(&[5]).missing_in_range(), 0);
    }

    #[test]
    fn seq_set_moves_down_for_an_earlier_seq() {
        let s = set(&[130, 131, 2, 1]);
        assert_eq!(s.range(), Some((1, 131)));
        assert!(s.contains(1) && s.contains(2) && s.contains(130) && s.contains(131));
        assert!(!s.contains(0) && !s.contains(3) && !s.contains(129));
        assert_eq!(s.missing_in_range(), 131 - 4);
    }

    /// Broadcasts every 100 ms from t = 1,000 µs: seq k at 1,000 + 100,000 k.
    fn stamps(n: u64) -> Vec<u64> {
        (0..n).map(|k| 1_000 + 100_000 * k).collect()
    }

    #[test]
    fn a_client_that_got_everything_lost_nothing() {
        let stamps = stamps(100);
        // Connected at 0.5 s, left at 5 s: seqs 5..=49 sent in between.
        let s = set(&(5..50).collect::<Vec<_>>());
        let loss = account(&s, &stamps, 500_000, 5_000_000, 1_000_000);
        assert_eq!(
            loss,
            Loss {
                received: 45,
                in_range: 0,
                edges: 0,
                duplicates: 0
            }
        );
    }

    #[test]
    fn gaps_inside_the_range_are_lost() {
        let stamps = stamps(100);
        let got: Vec<u64> = (5..50).filter(|s| s % 10 != 0).collect();
        let loss = account(&set(&got), &stamps, 500_000, 5_000_000, 1_000_000);
        // 10, 20, 30, 40 missing between the first (5) and the last (49).
        assert_eq!(loss.in_range, 4);
        assert_eq!(loss.edges, 0);
    }

    #[test]
    fn edges_count_only_outside_the_grace() {
        let stamps = stamps(100);
        // Connected at 0.5 s, left at 5 s, grace 1 s: seqs sent in [1.5 s, 4 s] are 15..=39.
        // It got 20..=30 only: 15..=19 and 31..=39 missed at the edges; 5..=14 and 40..=49 are
        // within the grace and don't count.
        let s = set(&(20..=30).collect::<Vec<_>>());
        let loss = account(&s, &stamps, 500_000, 5_000_000, 1_000_000);
        assert_eq!(loss.in_range, 0);
        assert_eq!(loss.edges, 5 + 9);
        // Nothing at all: the whole window.
        let loss = account(&SeqSet::default(), &stamps, 500_000, 5_000_000, 1_000_000);
        assert_eq!(loss.edges, 25);
        // A life shorter than twice the grace expects nothing.
        let loss = account(&SeqSet::default(), &stamps, 500_000, 2_000_000, 1_000_000);
        assert_eq!(loss.edges, 0);
    }

    #[test]
    fn a_range_beyond_the_window_has_no_negative_edges() {
        let stamps = stamps(100);
        // Got 0..=60 though the window is 15..=39: nothing missing anywhere.
        let s = set(&(0..=60).collect::<Vec<_>>());
        let loss = account(&s, &stamps, 500_000, 5_000_000, 1_000_000);
        assert_eq!((loss.in_range, loss.edges), (0, 0));
        // Got only 45..=60, after the window: all of it counts at the edges.
        let s = set(&(45..=60).collect::<Vec<_>>());
        let loss = account(&s, &stamps, 500_000, 5_000_000, 1_000_000);
        assert_eq!((loss.in_range, loss.edges), (0, 25));
    }

    #[test]
    fn mixes() {
        let mix = parse_mix("websocket=3, polling=1,sse=0,xhr-streaming").unwrap();
        assert_eq!(
            mix,
            vec![
                (Transport::Websocket, 3),
                (Transport::Polling, 1),
                (Transport::XhrStreaming, 1)
            ]
        );
        assert!(parse_mix("carrier-pigeon=1").is_err());
        assert!(parse_mix("websocket=x").is_err());
        assert!(parse_mix("websocket=0").is_err());
        let rng = Rng(AtomicU64::new(42));
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            match rng.pick(&mix[..2]) {
                Transport::Websocket => counts[0] += 1,
                _ => counts[1] += 1,
            }
        }
        assert!((2800..3200).contains(&counts[0]), "{counts:?}");
        let u = rng.unit();
        assert!((0.0..1.0).contains(&u));
    }
}
