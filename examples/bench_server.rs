//! The benchmark app (the same behaviour is written for each peer under `benches/peers/`):
//! namespace `/`: `message` → `message-back` with the same arguments to the sender and, when
//! the client asked for an ack, an ack with the same arguments; `bcast` → `tick` with the same
//! arguments to every socket in `/`. Default heartbeat (pingInterval 25 s, pingTimeout 20 s) and
//! limits (maxHttpBufferSize 1e6).
//!
//! `GET /metrics`: the engine's Prometheus counters.
//!
//! Run: `cargo run --release --example bench_server` (PORT overrides 8092; PORT=0 picks a free
//! port; HALLEY_WS_WRITE_INTERVAL_MS sets the WebSocket write hold, as `--ws-write-interval`
//! does for the binary). The first line on stdout is `listening on http://127.0.0.1:<port>`.

use std::sync::Arc;

use halley::server;
use halley::socketio::{Event, Halley, Socket};

/// The `halley` binary's allocator and memory trimmer (`halley::memory`).
#[global_allocator]
static ALLOCATOR: halley::memory::Allocator = halley::memory::Allocator;

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    halley::memory::init(std::time::Duration::from_secs(10))?;
    halley::memory::runtime()?.block_on(run())
}

async fn run() -> std::io::Result<()> {
    let mut builder = Halley::builder();
    // For measuring the write hold (`--ws-write-interval` of the binary); unset: the default.
    if let Ok(value) = std::env::var("HALLEY_WS_WRITE_INTERVAL_MS") {
        let ms = value.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("HALLEY_WS_WRITE_INTERVAL_MS: {value:?} is not a number of milliseconds"),
            )
        })?;
        builder = builder.ws_write_interval(std::time::Duration::from_millis(ms));
    }
    let io = builder.build();
    let root = io.ns("/", |_| {});
    root.on("message", |socket: &Arc<Socket>, event: Event| {
        let (args, binary) = (event.args, event.binary);
        match event.ack {
            Some(ack) => {
                let _ = socket.emit_args("message-back", args.clone(), binary.clone());
                let _ = ack.send(args, binary);
            }
            None => {
                let _ = socket.emit_args("message-back", args, binary);
            }
        }
    });
    let all = Arc::clone(&root);
    root.on("bcast", move |_socket: &Arc<Socket>, event: Event| {
        let _ = all.broadcast().emit_args("tick", event.args, event.binary);
    });
    // The engine's counters, for the overload runs (`benches/overload.sh`): every packet
    // dropped and every client disconnected for not keeping up is counted there.
    let metrics = Arc::new(halley::metrics::Metrics::new(
        io.engine().clone(),
        None,
        Arc::new(halley::bridge::Latency::default()),
    ));
    let router = io.router().endpoint("/metrics", move |_, _| {
        std::future::ready(metrics.response())
    });
    server::serve_from_env(router, "127.0.0.1", 8092).await
}
