//! The benchmark app of `examples/bench_server.rs` (`message` → `message-back`, `bcast` →
//! `tick` to every socket of `/`) with the Admin UI installed (`halley::admin_ui`, open: no
//! login, development mode), for the "Admin UI" section of BENCHMARKS.md: the same load with
//! the UI installed and nobody watching, or with a UI connected, against `bench_server`.
//! `ADMIN_UI_EVENTS=1` also reports every event (`event_received`/`event_sent`).
//!
//! Run: `cargo run --release --example bench_admin_ui` (PORT overrides 8092; PORT=0 picks a
//! free port). The first line on stdout is `listening on http://127.0.0.1:<port>`.

use std::sync::Arc;

use halley::admin_ui::{self, AdminUiConfig};
use halley::server;
use halley::socketio::{Event, Halley, Socket};

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
    let io = Halley::builder().build();
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
    let config = AdminUiConfig {
        open: true,
        events: std::env::var_os("ADMIN_UI_EVENTS").is_some_and(|v| v == "1"),
        ..AdminUiConfig::default()
    };
    if let Err(error) = admin_ui::install(&io, config) {
        eprintln!("bench_admin_ui: {error}");
        std::process::exit(2);
    }
    server::serve_from_env(io.router(), "127.0.0.1", 8092).await
}
