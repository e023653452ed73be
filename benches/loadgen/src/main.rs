//! halley-loadgen: a Socket.IO v5 / Engine.IO v4 load generator for the benchmark app
//! (`examples/bench_server.rs` and its peers under `benches/peers/`).
//!
//! Scenarios (one JSON line of results per run on stdout; progress on stderr):
//! - `s1`: idle memory and CPU: N connected clients (WebSocket or polling); server RSS per
//!   connection and server CPU per idle second, from /proc/<pid>.
//! - `s1`, `s2` take `--transport`: `websocket`, `polling`, `jsonp`, or Halley's streaming
//!   transports `sse`, `xhr-streaming`, `iframe`, `htmlfile`.
//! - `s2`: broadcast fan-out to N receivers: one extra WebSocket client emits `bcast` with its
//!   send time (µs since the epoch) at `--rate` per second, or closed-loop at saturation with
//!   `--rate 0` (`--window` broadcasts in flight, each until every receiver has it); the
//!   receivers record arrival − stamp of every `tick`.
//! - `s3`: echo with acks: C clients each emit `message` with an ack id and wait for the ack
//!   before the next (the `message-back` event that also arrives is ignored); `--no-ack`: emit
//!   without an ack id and wait for `message-back` instead.
//! - `s2 --publish-via http`: the broadcasts are `POST /publish` requests to the first server
//!   instead (for a cluster of Halley nodes, `--url` listing them all: receivers round-robin).
//! - `amqp`: messages from RabbitMQ through Halley's AMQP bridge to N WebSocket clients;
//!   `amqp-ceiling`: the same publishing to a plain lapin consumer (see `amqp.rs`).
//! - `soak`: a population of clients on mixed transports joining and leaving for a long time
//!   under broadcasts: messages lost, errors, server memory (see `soak.rs`).

mod amqp;
mod eio;
mod frames;
mod hist;
mod procfs;
mod soak;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use eio::{Session, Target, Transport, Ws};
use hist::Hist;

#[derive(Parser)]
#[command(version, about = "Socket.IO / Engine.IO load generator for Halley")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Idle memory and CPU with N connected clients.
    S1 {
        #[command(flatten)]
        common: Common,
        /// Transport of the idle clients.
        #[arg(long, value_enum, default_value_t = Transport::Websocket)]
        transport: Transport,
    },
    /// Broadcast fan-out to N receivers (the broadcaster is a WebSocket client).
    S2 {
        #[command(flatten)]
        common: Common,
        /// Transport of the receivers.
        #[arg(long, value_enum, default_value_t = Transport::Websocket)]
        transport: Transport,
        /// Broadcasts per second; 0 = saturation (closed loop, `--window` broadcasts in flight;
        /// see `--complete`).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Broadcasts in flight at saturation (`--rate 0`).
        #[arg(long, default_value_t = 4)]
        window: u64,
        /// At saturation, when a broadcast stops being in flight: `all`, once every receiver
        /// has it (the default: the loop runs at the pace the slowest receiver is served);
        /// `own`, once the broadcaster's own copy is back (a server that answers the sender
        /// first admits broadcasts faster than it delivers them, and queues grow).
        #[arg(long, value_enum, default_value_t = Complete::All)]
        complete: Complete,
        /// Seconds to wait after the last broadcast for the deliveries still under way.
        #[arg(long, default_value_t = 5.0)]
        drain: f64,
        /// How the broadcasts are sent: `ws`, a WebSocket client emitting `bcast` (the bench
        /// app); `http`, `POST /publish` `{"event":"tick","data":[µs,seq]}` to the first
        /// `--url` (Halley's binary; one WebSocket monitor per server acknowledges each
        /// broadcast at saturation), `--window` connections.
        #[arg(long, value_enum, default_value_t = PublishVia::Ws)]
        publish_via: PublishVia,
        /// Where `--publish-via http` POSTs: the first server's admin listener
        /// (`http://127.0.0.1:9080`; the public listener does not serve `/publish`). Default:
        /// the first `--url`.
        #[arg(long)]
        publish_url: Option<String>,
    },
    /// Echo with acks: C WebSocket clients each emit `message` with an ack id and wait for the
    /// ack before sending the next.
    S3 {
        #[command(flatten)]
        common: Common,
        /// Emit without an ack id and wait for the `message-back` event instead of the ack.
        #[arg(long)]
        no_ack: bool,
    },
    /// RabbitMQ → Halley's AMQP bridge → N WebSocket clients: messages/s, latency, lost.
    Amqp {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        amqp: amqp::AmqpArgs,
    },
    /// RabbitMQ → a plain lapin consumer (the ceiling for `amqp`): messages/s, latency.
    AmqpCeiling {
        #[command(flatten)]
        amqp: amqp::AmqpArgs,
        /// Unacked deliveries in flight (Halley's --amqp-prefetch default).
        #[arg(long, default_value_t = 256)]
        prefetch: u16,
    },
    /// Deletes an exchange (a benchmark cluster's `--cluster-exchange`, once its nodes are gone).
    AmqpDeleteExchange {
        /// The broker.
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        #[arg(long)]
        exchange: String,
    },
    /// Soak: a population of clients on mixed transports joining and leaving under broadcasts
    /// (`--duration`: seconds of churn, default 600); lost messages, errors, server memory.
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        soak: soak::SoakArgs,
    },
}

/// How s2's broadcasts are sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum PublishVia {
    /// A WebSocket client emitting `bcast` (the bench app answers with `tick` to all).
    Ws,
    /// `POST /publish` to the first server (Halley's binary; through the cluster to the others).
    Http,
}

#[derive(Args)]
struct Common {
    /// The server, http://host:port; or several, comma-separated (the nodes of a cluster):
    /// clients are spread over them round-robin, broadcasts go to the first.
    #[arg(long, default_value = "http://127.0.0.1:8092")]
    url: String,
    /// The Engine.IO path.
    #[arg(long, default_value = "/socket.io/")]
    path: String,
    /// Clients (capped below this process's open-files limit).
    #[arg(long, default_value_t = 1000)]
    clients: u64,
    /// Measurement window in seconds (s1: the idle CPU window; s2: broadcasting; s3: echoing).
    #[arg(long)]
    duration: Option<f64>,
    /// The server's pid, for RSS and CPU time from /proc; several (comma-separated or repeated)
    /// for a cluster: RSS and CPU are summed over them.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Loopback source addresses to bind clients to, round-robin (e.g. 127.0.0.1,127.0.0.2):
    /// each address has its own ~28k ephemeral ports. Empty: the kernel picks.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<Ipv4Addr>,
    /// Connection attempts in flight at once. Keep it under the server's listen backlog (128
    /// for a listener from std/tokio `bind`), or overflowed SYNs come back after a 1 s retry.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Long-polling clients (`polling`, `jsonp`) open their session on their `--url` server,
    /// then send every later request (the namespace CONNECT included) here: another node of
    /// a Halley cluster, which forwards each one to the session's owner.
    #[arg(long)]
    poll_via: Option<String>,
    /// Seconds to let the server settle after the last connect, before measuring.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

/// Counters shared by every client task.
#[derive(Default)]
struct Stats {
    attempted: AtomicU64,
    connected: AtomicU64,
    connect_errors: AtomicU64,
    /// Clients that lost their connection after connecting.
    dropped: AtomicU64,
    /// Connect (TCP + handshake + namespace) times, µs.
    connect_us: Hist,
    /// Error message → count (at most `MAX_ERROR_KINDS` kinds kept).
    errors: Mutex<BTreeMap<String, u64>>,
}

const MAX_ERROR_KINDS: usize = 20;

impl Stats {
    fn error(&self, what: &str, e: &str) {
        let key = format!("{what}: {e}");
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let len = errors.len();
        if let Some(n) = errors.get_mut(&key) {
            *n += 1;
        } else if len < MAX_ERROR_KINDS {
            errors.insert(key, 1);
        } else {
            *errors.entry("(other kinds)".into()).or_default() += 1;
        }
    }

    fn json(&self) -> Value {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        json!({
            "connected": self.connected.load(Relaxed),
            "connect_errors": self.connect_errors.load(Relaxed),
            "dropped": self.dropped.load(Relaxed),
            "connect": self.connect_us.summary_ms(),
            "errors": *errors,
        })
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the scenario's clients: connects `n` clients at most `concurrency` at a time, each then
/// running `run` until it returns (an `Err` counts as a drop) or the process ends.
struct Clients {
    /// The servers (one, or a cluster's nodes); client `i` connects to `targets[i % len]`.
    targets: Vec<Arc<Target>>,
    sources: Vec<IpAddr>,
    concurrency: usize,
    stats: Arc<Stats>,
}

impl Clients {
    fn source(&self, i: u64) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i as usize % self.sources.len()])
    }

    fn target(&self, i: u64) -> Arc<Target> {
        Arc::clone(&self.targets[i as usize % self.targets.len()])
    }

    /// Connects `n` clients with `connect`, then runs `run` on each; returns when every connect
    /// attempt has finished, with the seconds the attempts took.
    async fn spawn<C, CF, T, R, RF>(&self, n: u64, connect: C, run: R) -> f64
    where
        C: Fn(Arc<Target>, Option<IpAddr>) -> CF + Clone + Send + 'static,
        CF: Future<Output = Result<T, String>> + Send + 'static,
        T: Send + 'static,
        R: Fn(T, u64) -> RF + Clone + Send + 'static,
        RF: Future<Output = Result<(), String>> + Send + 'static,
    {
        let semaphore = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let start = Instant::now();
        let base = self.stats.attempted.load(Relaxed);
        for i in 0..n {
            let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                break;
            };
            let (connect, run) = (connect.clone(), run.clone());
            let (target, source, stats) = (self.target(i), self.source(i), Arc::clone(&self.stats));
            tokio::spawn(async move {
                let t0 = Instant::now();
                let result = tokio::time::timeout(eio::CONNECT_TIMEOUT, connect(target, source))
                    .await
                    .unwrap_or_else(|_| Err("connect timed out".into()));
                drop(permit);
                let client = match result {
                    Ok(client) => {
                        stats.connect_us.record(t0.elapsed().as_micros() as u64);
                        stats.connected.fetch_add(1, Relaxed);
                        stats.attempted.fetch_add(1, Relaxed);
                        client
                    }
                    Err(e) => {
                        stats.connect_errors.fetch_add(1, Relaxed);
                        stats.error("connect", &e);
                        stats.attempted.fetch_add(1, Relaxed);
                        return;
                    }
                };
                if let Err(e) = run(client, i).await {
                    stats.dropped.fetch_add(1, Relaxed);
                    stats.error("run", &e);
                }
            });
        }
        while self.stats.attempted.load(Relaxed) < base + n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed().as_secs_f64()
    }
}

/// A WebSocket client that only stays connected: answers pings until the connection ends.
async fn ws_idle(mut ws: Ws) -> Result<(), String> {
    loop {
        let text = eio::next_text(&mut ws).await?;
        if eio::control(&text)? {
            eio::send_text(&mut ws, "3").await?;
        }
    }
}

/// Caps `wanted` clients of `per_client` connections each (plus `extra` connections) below
/// the open-files limit.
fn cap_clients(wanted: u64, per_client: u64, extra: u64) -> (u64, Option<u64>) {
    let limit = procfs::nofile_limit().unwrap_or(1024);
    // stdio, the runtime's epoll and eventfd, /proc reads, and some headroom.
    let max = limit.saturating_sub(64 + extra) / per_client.max(1);
    if wanted > max {
        eprintln!("loadgen: open-files limit {limit}: capping {wanted} clients to {max}");
        (max, Some(wanted))
    } else {
        (wanted, None)
    }
}

/// The server's process, or a cluster's: readings summed over the pids (None when there is no
/// pid, or one of them can't be read).
struct ServerProbe {
    pids: Vec<u32>,
}

impl ServerProbe {
    fn new(common: &Common) -> Self {
        Self {
            pids: common.pid.clone(),
        }
    }

    fn sum<T: std::iter::Sum<T>>(&self, read: impl Fn(Option<u32>) -> Option<T>) -> Option<T> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&p| read(Some(p))).sum()
    }

    fn rss(&self) -> Option<u64> {
        self.sum(procfs::rss_kib)
    }
    fn hwm(&self) -> Option<u64> {
        self.sum(procfs::hwm_kib)
    }
    fn cpu(&self) -> Option<f64> {
        self.sum(procfs::cpu_secs)
    }
    fn fds(&self) -> Option<u64> {
        self.sum(procfs::fd_count)
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::S1 { common, transport } => s1(common, transport).await,
        Scenario::S2 {
            common,
            transport,
            rate,
            window,
            complete,
            drain,
            publish_via,
            publish_url,
        } => {
            s2(
                common,
                transport,
                rate,
                window,
                complete,
                drain,
                (publish_via, publish_url),
            )
            .await
        }
        Scenario::S3 { common, no_ack } => s3(common, !no_ack).await,
        Scenario::Amqp { common, amqp } => amqp::run(common, amqp).await,
        Scenario::AmqpCeiling { amqp, prefetch } => amqp::ceiling(amqp, prefetch).await,
        Scenario::AmqpDeleteExchange { amqp_url, exchange } => {
            amqp::delete_exchange(&amqp_url, &exchange).await
        }
        Scenario::Soak { common, soak } => soak::run(common, soak).await,
    };
    let code = match result {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            println!("{}", json!({ "error": e }));
            1
        }
    };
    // The client tasks are still running; don't wait for them.
    std::process::exit(code);
}

/// The servers of `--url`.
fn urls(common: &Common) -> Vec<&str> {
    common
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

async fn setup(common: &Common) -> Result<Clients, String> {
    TIME_WAIT_AT_START.get_or_init(procfs::tcp_time_wait);
    let poll_via = match &common.poll_via {
        Some(url) => Some(Arc::new(Target::resolve(url, &common.path).await?)),
        None => None,
    };
    let mut targets = Vec::new();
    for url in urls(common) {
        let mut target = Target::resolve(url, &common.path).await?;
        target.poll_via = poll_via.clone();
        targets.push(Arc::new(target));
    }
    if targets.is_empty() {
        return Err("--url: no server".into());
    }
    Ok(Clients {
        targets,
        sources: common.sources.iter().map(|&ip| IpAddr::V4(ip)).collect(),
        concurrency: common.concurrency,
        stats: Arc::new(Stats::default()),
    })
}

static TIME_WAIT_AT_START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

fn base_json(scenario: &str, common: &Common, clients: u64, capped_from: Option<u64>) -> Value {
    json!({
        "scenario": scenario,
        "url": common.url,
        "clients": clients,
        "clients_capped_from": capped_from,
        "sources": common.sources.len().max(1),
        "nodes": urls(common).len(),
        "poll_via": common.poll_via,
        "server_pid": common.pid.first(),
        "server_pids": common.pid,
        "loadgen_rss_kib": procfs::rss_kib(None),
        "tcp_time_wait_at_start": TIME_WAIT_AT_START.get().copied().flatten(),
        "loadgen_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

async fn s1(common: Common, transport: Transport) -> Result<Value, String> {
    let (n, capped_from) = cap_clients(common.clients, transport.connections(), 0);
    let duration = common.duration.unwrap_or(30.0);
    let clients = setup(&common).await?;
    let server = ServerProbe::new(&common);
    let rss_before = server.rss();
    let cpu_start = server.cpu();

    eprintln!("s1: connecting {n} {transport:?} clients");
    let connect_secs = match transport {
        Transport::Websocket => {
            clients
                .spawn(
                    n,
                    |t, src| async move { eio::ws_connect(&t, src).await },
                    |ws, _| ws_idle(ws),
                )
                .await
        }
        _ => {
            clients
                .spawn(
                    n,
                    move |t, src| async move { Session::connect(transport, &t, src).await },
                    |mut session: Session, _| async move {
                        loop {
                            session.recv(&mut |_| {}).await?;
                        }
                    },
                )
                .await
        }
    };
    let cpu_connected = server.cpu();
    let connected = clients.stats.connected.load(Relaxed);
    eprintln!("s1: {connected} connected in {connect_secs:.2}s; settling");
    tokio::time::sleep(Duration::from_secs_f64(common.settle)).await;

    let rss_connected = server.rss();
    let self_cpu0 = procfs::cpu_secs(None);
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    eprintln!("s1: idle window of {duration}s");
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    let cpu1 = server.cpu();
    let window = t0.elapsed().as_secs_f64();
    let self_cpu1 = procfs::cpu_secs(None);
    let rss_end = server.rss();

    let mut out = base_json("s1", &common, n, capped_from);
    merge(
        &mut out,
        json!({
            "transport": transport.name(),
            "connections_per_client": transport.connections(),
            "http_reconnects": eio::HTTP_RECONNECTS.load(Relaxed),
            "stream_reopens": eio::STREAM_REOPENS.load(Relaxed),
            "connect_secs": round3(connect_secs),
            "connects_per_s": round3(connected as f64 / connect_secs.max(1e-9)),
            "server_cpu_connect_s": cpu_start.zip(cpu_connected).map(|(a, b)| round3(b - a)),
            "server_rss_before_kib": rss_before,
            "server_rss_connected_kib": rss_connected,
            "server_rss_end_kib": rss_end,
            "server_rss_per_conn_bytes": rss_before.zip(rss_connected).filter(|_| connected > 0)
                .map(|(a, b)| ((b as f64 - a as f64) * 1024.0 / connected as f64).round()),
            "server_hwm_kib": server.hwm(),
            "idle_window_s": round3(window),
            "server_cpu_idle_s_per_s": cpu0.zip(cpu1).map(|(a, b)| ((b - a) / window * 1e5).round() / 1e5),
            "loadgen_cpu_idle_s_per_s": self_cpu0.zip(self_cpu1).map(|(a, b)| ((b - a) / window * 1e5).round() / 1e5),
        }),
    );
    merge(&mut out, clients.stats.json());
    Ok(out)
}

/// Deliveries of `tick`, for s2.
/// When a saturation broadcast stops being in flight (`s2 --complete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Complete {
    All,
    Own,
}

/// Slots counting the receivers that have each broadcast, by `seq % COMPLETION_SLOTS` (a slot
/// is cleared before its broadcast is sent; the window is far smaller than the ring).
const COMPLETION_SLOTS: usize = 4096;

struct Fanout {
    latency_us: Hist,
    /// Receivers that have broadcast `seq`, in slot `seq % COMPLETION_SLOTS`.
    have: Vec<AtomicU64>,
    /// Receivers connected when broadcasting began: a broadcast all of them have is complete.
    receivers: AtomicU64,
    /// Broadcasts complete so far, and a wake-up for the broadcaster at each.
    completed: AtomicU64,
    completion: tokio::sync::Notify,
    delivered: AtomicU64,
    bad: AtomicU64,
    last_us: AtomicU64,
    /// Receivers and deliveries per server (receiver `i` is on server `i % servers`).
    receivers_by_node: Vec<AtomicU64>,
    delivered_by_node: Vec<AtomicU64>,
}

impl Fanout {
    fn new(nodes: usize) -> Self {
        Self {
            latency_us: Hist::default(),
            have: (0..COMPLETION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            receivers: AtomicU64::new(u64::MAX),
            completed: AtomicU64::new(0),
            completion: tokio::sync::Notify::new(),
            delivered: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            receivers_by_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            delivered_by_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts a receiver's copy of broadcast `seq`; the last receiver completes it.
    fn received(&self, seq: u64) {
        let have = self.have[seq as usize % COMPLETION_SLOTS].fetch_add(1, Relaxed) + 1;
        if have == self.receivers.load(Relaxed) {
            self.completed.fetch_add(1, Relaxed);
            self.completion.notify_one();
        }
    }

    /// Clears broadcast `seq`'s slot (before it is sent).
    fn clear(&self, seq: u64) {
        self.have[seq as usize % COMPLETION_SLOTS].store(0, Relaxed);
    }

    fn counts(v: &[AtomicU64]) -> Vec<u64> {
        v.iter().map(|c| c.load(Relaxed)).collect()
    }
}

/// The packet prefix of a tick.
const TICK: &str = "42[\"tick\",";

/// Parses a tick: `42["tick",<stamp µs>,<seq>]` (the bench app's answer to `bcast`) or
/// `42["tick",[<stamp µs>,<seq>]]` (an HTTP publish or AMQP message whose data is `[µs, seq]`);
/// returns (stamp, seq).
fn tick(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(TICK)?;
    let rest = rest.strip_prefix('[').unwrap_or(rest);
    let (stamp, rest) = rest.split_once(',')?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((stamp.parse().ok()?, rest[..end].parse().ok()?))
}

/// s2's broadcaster: a WebSocket client emitting `bcast`, or `POST /publish` requests.
enum Broadcaster {
    Ws(Box<Ws>),
    Http(HttpBroadcaster),
}

/// `--publish-via http`: `window` keep-alive connections POSTing to the first server, and a
/// WebSocket monitor on every server whose ticks acknowledge the broadcasts (a broadcast is
/// done when every monitor got it).
struct HttpBroadcaster {
    posters: Vec<eio::Http>,
    monitors: Arc<Monitors>,
}

/// Ticks seen by each monitor.
struct Monitors {
    ticks: Vec<AtomicU64>,
    notify: tokio::sync::Notify,
}

impl Monitors {
    /// Broadcasts every monitor has seen (by count: each sees each broadcast once).
    fn done(&self) -> u64 {
        self.ticks
            .iter()
            .map(|c| c.load(Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// What the POSTs did.
#[derive(Default)]
struct PostStats {
    ok: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// POST → its answer (Halley answers once the local delivery is done and the broker has
    /// confirmed the cluster message).
    rtt_us: Hist,
}

impl HttpBroadcaster {
    async fn connect(
        clients: &Clients,
        publish_to: &Target,
        first_source: u64,
        window: u64,
    ) -> Result<Self, String> {
        let nodes = clients.targets.len();
        let monitors = Arc::new(Monitors {
            ticks: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            notify: tokio::sync::Notify::new(),
        });
        for k in 0..nodes {
            let source = clients.source(first_source + k as u64);
            let mut ws = eio::ws_connect(&clients.targets[k], source)
                .await
                .map_err(|e| format!("monitor on server {k}: {e}"))?;
            let m = Arc::clone(&monitors);
            tokio::spawn(async move {
                while let Ok(text) = eio::next_text(&mut ws).await {
                    if text.starts_with(TICK) {
                        m.ticks[k].fetch_add(1, Relaxed);
                        m.notify.notify_one();
                    } else {
                        match eio::control(&text) {
                            Ok(true) => {
                                if eio::send_text(&mut ws, "3").await.is_err() {
                                    break;
                                }
                            }
                            Ok(false) => {}
                            Err(_) => break,
                        }
                    }
                }
            });
        }
        let mut posters = Vec::new();
        for k in 0..window.max(1) {
            let source = clients.source(first_source + nodes as u64 + k);
            posters.push(
                eio::Http::connect(publish_to, source)
                    .await
                    .map_err(|e| format!("publisher: {e}"))?,
            );
        }
        Ok(Self { posters, monitors })
    }

    /// Broadcasts at `rate` per second, or at saturation (`rate` 0) with `window` broadcasts
    /// not yet seen by every monitor, until `deadline`. Returns how many were sent.
    async fn run(
        self,
        rate: f64,
        window: u64,
        deadline: tokio::time::Instant,
        stats: Arc<PostStats>,
    ) -> (u64, Arc<Monitors>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<u64>(self.posters.len());
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = Vec::new();
        for mut http in self.posters {
            let (rx, stats) = (Arc::clone(&rx), Arc::clone(&stats));
            workers.push(tokio::spawn(async move {
                loop {
                    let Some(seq) = rx.lock().await.recv().await else {
                        break;
                    };
                    let stamp = now_us();
                    let body = format!("{{\"event\":\"tick\",\"data\":[{stamp},{seq}]}}");
                    let t0 = Instant::now();
                    let result = http
                        .request(
                            hyper::Method::POST,
                            "/publish",
                            Some("application/json"),
                            bytes::Bytes::from(body),
                        )
                        .await;
                    stats.rtt_us.record(t0.elapsed().as_micros() as u64);
                    match result {
                        Ok(_) => stats.ok.fetch_add(1, Relaxed),
                        Err(e) => {
                            *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            stats.errors.fetch_add(1, Relaxed)
                        }
                    };
                }
            }));
        }
        let monitors = self.monitors;
        let mut sent: u64 = 0;
        if rate > 0.0 {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            loop {
                let at = interval.tick().await;
                if at >= deadline || tx.send(sent).await.is_err() {
                    break;
                }
                sent += 1;
            }
        } else {
            'send: loop {
                while sent.saturating_sub(monitors.done()) < window.max(1) {
                    if tokio::time::Instant::now() >= deadline || tx.send(sent).await.is_err() {
                        break 'send;
                    }
                    sent += 1;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = monitors.notify.notified() => {}
                }
            }
        }
        drop(tx);
        for worker in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        (sent, monitors)
    }
}

async fn s2(
    common: Common,
    transport: Transport,
    rate: f64,
    window: u64,
    complete: Complete,
    drain: f64,
    (publish_via, publish_url): (PublishVia, Option<String>),
) -> Result<Value, String> {
    let nodes = urls(&common).len().max(1);
    let extra = match publish_via {
        PublishVia::Ws => 1,
        PublishVia::Http => nodes as u64 + window.max(1),
    };
    let (n, capped_from) = cap_clients(common.clients, transport.connections(), extra);
    let duration = common.duration.unwrap_or(10.0);
    let clients = setup(&common).await?;
    let server = ServerProbe::new(&common);
    let fanout = Arc::new(Fanout::new(clients.targets.len()));

    eprintln!(
        "s2: connecting {n} {} receivers to {} server(s)",
        transport.name(),
        clients.targets.len()
    );
    let f = Arc::clone(&fanout);
    let connect_secs = clients
        .spawn(
            n,
            move |t, src| async move { Session::connect(transport, &t, src).await },
            move |mut session: Session, i| {
                let f = Arc::clone(&f);
                async move {
                    let node = i as usize % f.receivers_by_node.len();
                    f.receivers_by_node[node].fetch_add(1, Relaxed);
                    let mut on_packet = |text: &str| {
                        if text.starts_with(TICK) {
                            let now = now_us();
                            match tick(text) {
                                Some((stamp, seq)) => {
                                    f.latency_us.record(now.saturating_sub(stamp));
                                    f.received(seq);
                                    f.delivered.fetch_add(1, Relaxed);
                                    f.delivered_by_node[node].fetch_add(1, Relaxed);
                                    f.last_us.fetch_max(now, Relaxed);
                                }
                                None => {
                                    f.bad.fetch_add(1, Relaxed);
                                }
                            }
                        }
                    };
                    loop {
                        session.recv(&mut on_packet).await?;
                    }
                }
            },
        )
        .await;
    let receivers = clients.stats.connected.load(Relaxed);
    eprintln!("s2: {receivers} receivers in {connect_secs:.2}s; settling");
    let broadcaster = match publish_via {
        PublishVia::Ws => Broadcaster::Ws(Box::new(
            eio::ws_connect(&clients.targets[0], clients.source(n))
                .await
                .map_err(|e| format!("broadcaster: {e}"))?,
        )),
        PublishVia::Http => {
            let publish_to = match &publish_url {
                Some(url) => Arc::new(Target::resolve(url, &common.path).await?),
                None => Arc::clone(&clients.targets[0]),
            };
            Broadcaster::Http(HttpBroadcaster::connect(&clients, &publish_to, n, window).await?)
        }
    };
    tokio::time::sleep(Duration::from_secs_f64(common.settle)).await;
    fanout.receivers.store(receivers, Relaxed);

    let rss0 = server.rss();
    let cpu0 = server.cpu();
    let self_cpu0 = procfs::cpu_secs(None);
    let requests0 = eio::HTTP_REQUESTS.load(Relaxed);
    let start_us = now_us();
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + Duration::from_secs_f64(duration));
    let mut sent: u64 = 0;
    let mut own: u64 = 0;
    let mut broadcaster_error: Option<String> = None;
    let mut http_out: Option<(Arc<PostStats>, Arc<Monitors>)> = None;
    eprintln!(
        "s2: broadcasting for {duration}s at {} via {publish_via:?}",
        if rate > 0.0 {
            format!("{rate}/s")
        } else {
            format!("saturation, window {window}, complete when {complete:?}")
        }
    );
    match broadcaster {
        Broadcaster::Ws(mut bws) => {
            let bcast = |seq: u64| format!("42[\"bcast\",{},{seq}]", now_us());
            let result: Result<(), String> = async {
                if rate > 0.0 {
                    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                    loop {
                        tokio::select! {
                            at = interval.tick() => {
                                if at >= deadline { break; }
                                eio::send_text(&mut bws, bcast(sent)).await?;
                                sent += 1;
                            }
                            text = eio::next_text(&mut bws) => {
                                let text = text?;
                                if text.starts_with(TICK) { own += 1; }
                                else if eio::control(&text)? { eio::send_text(&mut bws, "3").await?; }
                            }
                        }
                    }
                } else {
                    // `window` broadcasts in flight; one leaves the window once every receiver
                    // has it (`all`), or once the broadcaster's own copy is back (`own`).
                    let mut acknowledged = 0;
                    while tokio::time::Instant::now() < deadline {
                        while sent < window.max(1) + acknowledged {
                            fanout.clear(sent);
                            eio::send_text(&mut bws, bcast(sent)).await?;
                            sent += 1;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => break,
                            () = fanout.completion.notified(), if complete == Complete::All => {
                                acknowledged = fanout.completed.load(Relaxed);
                            }
                            text = eio::next_text(&mut bws) => {
                                let text = text?;
                                if text.starts_with(TICK) {
                                    own += 1;
                                    if complete == Complete::Own { acknowledged = own; }
                                } else if eio::control(&text)? {
                                    eio::send_text(&mut bws, "3").await?;
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                broadcaster_error = Some(e);
            }
            // Keep the broadcaster's connection alive (and read) while the deliveries drain.
            tokio::spawn(async move {
                let _ = ws_idle(*bws).await;
            });
        }
        Broadcaster::Http(http) => {
            let stats = Arc::new(PostStats::default());
            let (n_sent, monitors) = http.run(rate, window, deadline, Arc::clone(&stats)).await;
            sent = n_sent;
            own = monitors.done();
            broadcaster_error = stats
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            http_out = Some((stats, monitors));
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    let expected = sent * receivers;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(drain);
    while fanout.delivered.load(Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = server.cpu();
    let self_cpu1 = procfs::cpu_secs(None);
    let wall = start.elapsed().as_secs_f64();
    let rss1 = server.rss();
    let requests = eio::HTTP_REQUESTS.load(Relaxed) - requests0;
    let delivered = fanout.delivered.load(Relaxed);
    let last_us = fanout.last_us.load(Relaxed);
    let delivery_secs = (last_us.saturating_sub(start_us) as f64 / 1e6).max(1e-9);

    let http = transport != Transport::Websocket;
    let mut out = base_json("s2", &common, n, capped_from);
    merge(
        &mut out,
        json!({
            "transport": transport.name(),
            "connections_per_client": transport.connections(),
            "requests": http.then_some(requests),
            "requests_per_s": http.then(|| round3(requests as f64 / wall)),
            "http_reconnects": http.then(|| eio::HTTP_RECONNECTS.load(Relaxed)),
            "stream_reopens": http.then(|| eio::STREAM_REOPENS.load(Relaxed)),
            "rate": if rate > 0.0 { json!(rate) } else { json!("saturation") },
            "window": (rate <= 0.0 || publish_via == PublishVia::Http).then_some(window),
            "complete": (rate <= 0.0 && publish_via == PublishVia::Ws).then(|| format!("{complete:?}").to_lowercase()),
            "publish_via": match publish_via { PublishVia::Ws => "ws", PublishVia::Http => "http" },
            "connect_secs": round3(connect_secs),
            "connects_per_s": round3(receivers as f64 / connect_secs.max(1e-9)),
            "receivers": receivers,
            "receivers_by_node": Fanout::counts(&fanout.receivers_by_node),
            "broadcasts_sent": sent,
            "broadcasts_per_s": round3(sent as f64 / send_secs),
            "broadcaster_own_ticks": own,
            "broadcaster_error": broadcaster_error,
            "expected": expected,
            "delivered": delivered,
            "delivered_by_node": Fanout::counts(&fanout.delivered_by_node),
            "lost": expected.saturating_sub(delivered),
            "unparsed_ticks": fanout.bad.load(Relaxed),
            "send_secs": round3(send_secs),
            "deliveries_per_s": round3(delivered as f64 / delivery_secs),
            "latency": fanout.latency_us.summary_ms(),
            "server_rss_start_kib": rss0,
            "server_rss_end_kib": rss1,
            "server_cpu_s_per_s": cpu0.zip(cpu1).map(|(a, b)| round3((b - a) / wall)),
            // The server's CPU over the whole measurement (idle heartbeats included, a few
            // µs a second) per message delivered.
            "server_cpu_us_per_delivery": cpu0
                .zip(cpu1)
                .map(|(a, b)| round3((b - a) * 1e6 / delivered.max(1) as f64)),
            "loadgen_cpu_s_per_s": self_cpu0.zip(self_cpu1).map(|(a, b)| round3((b - a) / wall)),
        }),
    );
    if let Some((stats, monitors)) = http_out {
        merge(
            &mut out,
            json!({
                "publish_ok": stats.ok.load(Relaxed),
                "publish_errors": stats.errors.load(Relaxed),
                "publish_rtt": stats.rtt_us.summary_ms(),
                "monitor_ticks": Fanout::counts(&monitors.ticks),
            }),
        );
    }
    merge(&mut out, clients.stats.json());
    Ok(out)
}

/// Echo results, for s3.
#[derive(Default)]
struct Echo {
    rtt_us: Hist,
    round_trips: AtomicU64,
    mismatched: AtomicU64,
    /// `message-back` events that arrived while waiting for acks (ack mode).
    message_backs: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
}

/// One s3 round trip: the packet to send, and the reply that completes it and its prefix.
fn s3_round(seq: u64, ack: bool) -> (String, String, &'static str) {
    if ack {
        // Socket.IO v5 EVENT with an ack id, `42<id>[...]`, answered by ACK `43<id>[...]`.
        (
            format!("42{seq}[\"message\",{seq}]"),
            format!("43{seq}[{seq}]"),
            "43",
        )
    } else {
        (
            format!("42[\"message\",{seq}]"),
            format!("42[\"message-back\",{seq}]"),
            "42[\"message-back\",",
        )
    }
}

async fn s3(common: Common, ack: bool) -> Result<Value, String> {
    let (n, capped_from) = cap_clients(common.clients, 1, 0);
    let duration = common.duration.unwrap_or(10.0);
    let clients = setup(&common).await?;
    let server = ServerProbe::new(&common);
    let echo = Arc::new(Echo::default());
    // The clients wait for the start signal, then echo until the deadline it carries.
    let (go_tx, go_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);

    eprintln!("s3: connecting {n} clients");
    let e = Arc::clone(&echo);
    let connect_secs = clients
        .spawn(
            n,
            |t, src| async move { eio::ws_connect(&t, src).await },
            move |mut ws: Ws, _| {
                let echo = Arc::clone(&e);
                let mut go = go_rx.clone();
                async move {
                    // Stay responsive to pings while waiting for the start.
                    let deadline = loop {
                        if let Some(deadline) = *go.borrow_and_update() {
                            break deadline;
                        }
                        tokio::select! {
                            changed = go.changed() => { if changed.is_err() { return Ok(()); } }
                            text = eio::next_text(&mut ws) => {
                                if eio::control(&text?)? { eio::send_text(&mut ws, "3").await?; }
                            }
                        }
                    };
                    echo.started.fetch_add(1, Relaxed);
                    let mut seq: u64 = 0;
                    let result: Result<(), String> = async {
                        while Instant::now() < deadline {
                            let t0 = Instant::now();
                            let (packet, expect, reply) = s3_round(seq, ack);
                            eio::send_text(&mut ws, packet).await?;
                            loop {
                                let text = eio::next_text(&mut ws).await?;
                                if text.starts_with(reply) {
                                    if *text != *expect {
                                        echo.mismatched.fetch_add(1, Relaxed);
                                    }
                                    break;
                                }
                                if ack && text.starts_with("42[\"message-back\",") {
                                    echo.message_backs.fetch_add(1, Relaxed);
                                } else if eio::control(&text)? {
                                    eio::send_text(&mut ws, "3").await?;
                                }
                            }
                            echo.rtt_us.record(t0.elapsed().as_micros() as u64);
                            echo.round_trips.fetch_add(1, Relaxed);
                            seq += 1;
                        }
                        Ok(())
                    }
                    .await;
                    echo.finished.fetch_add(1, Relaxed);
                    result?;
                    // Stay connected (idle) until the process ends.
                    ws_idle(ws).await
                }
            },
        )
        .await;
    let connected = clients.stats.connected.load(Relaxed);
    eprintln!("s3: {connected} connected in {connect_secs:.2}s; settling");
    tokio::time::sleep(Duration::from_secs_f64(common.settle)).await;

    let cpu0 = server.cpu();
    let self_cpu0 = procfs::cpu_secs(None);
    let start = Instant::now();
    let _ = go_tx.send(Some(start + Duration::from_secs_f64(duration)));
    eprintln!(
        "s3: echoing for {duration}s, waiting for {}",
        if ack { "acks" } else { "message-back" }
    );
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    // Wait for the round trips in flight at the deadline (bounded).
    let limit = Instant::now() + Duration::from_secs(5);
    while echo.finished.load(Relaxed) < echo.started.load(Relaxed) && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = server.cpu();
    let self_cpu1 = procfs::cpu_secs(None);
    let round_trips = echo.round_trips.load(Relaxed);

    let mut out = base_json("s3", &common, n, capped_from);
    merge(
        &mut out,
        json!({
            "connect_secs": round3(connect_secs),
            "connects_per_s": round3(connected as f64 / connect_secs.max(1e-9)),
            "duration_s": round3(wall),
            "mode": if ack { "ack" } else { "message-back" },
            "round_trips": round_trips,
            "round_trips_per_s": round3(round_trips as f64 / wall),
            "acks_per_s": ack.then(|| round3(round_trips as f64 / wall)),
            "message_backs_seen": ack.then(|| echo.message_backs.load(Relaxed)),
            "mismatched": echo.mismatched.load(Relaxed),
            "rtt": echo.rtt_us.summary_ms(),
            "server_rss_kib": server.rss(),
            "server_cpu_s_per_s": cpu0.zip(cpu1).map(|(a, b)| round3((b - a) / wall)),
            "loadgen_cpu_s_per_s": self_cpu0.zip(self_cpu1).map(|(a, b)| round3((b - a) / wall)),
        }),
    );
    merge(&mut out, clients.stats.json());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ticks() {
        assert_eq!(
            tick("42[\"tick\",1700000000000000,5]"),
            Some((1_700_000_000_000_000, 5))
        );
        assert_eq!(
            tick("42[\"tick\",[1700000000000000,6]]"),
            Some((1_700_000_000_000_000, 6))
        );
        assert_eq!(tick("42[\"tick\",\"x\"]"), None);
        assert_eq!(tick("42[\"tick\",1]"), None);
        assert_eq!(tick("42[\"tick\",[1,x]]"), None);
        assert_eq!(tick("42[\"tock\",1,2]"), None);
    }

    #[test]
    fn s3_packets() {
        assert_eq!(
            s3_round(7, true),
            ("427[\"message\",7]".into(), "437[7]".into(), "43")
        );
        let (send, expect, reply) = s3_round(7, false);
        assert_eq!(send, "42[\"message\",7]");
        assert_eq!(expect, "42[\"message-back\",7]");
        assert!(expect.starts_with(reply));
    }

    #[test]
    fn control_packets() {
        assert_eq!(eio::control("2"), Ok(true));
        assert_eq!(eio::control("40{\"sid\":\"x\"}"), Ok(false));
        assert!(eio::control("1").is_err());
        assert!(eio::control("41").is_err());
    }
}
