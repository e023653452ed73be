//! The reference server of the public Socket.IO conformance test-suite
//! (socketio/socket.io-protocol, `test-suite/`): port 3000, path `/socket.io/`, pingInterval
//! 300 ms, pingTimeout 200 ms, maxPayload 1,000,000, connectTimeout 1000 ms; namespaces `/` and
//! `/custom` each emit `auth` with the client's auth payload on connect, answer `message` with
//! `message-back` (same arguments) and `message-with-ack` with an ack of the same arguments.
//! Every transport stays enabled.
//!
//! Run: `cargo run --release --example socketio_suite` (PORT overrides the port; PORT=0 picks a
//! free one; PING_TIMEOUT_MS overrides the 200 ms pingTimeout for clients whose pongs cannot be
//! that quick, such as form POSTs in a loaded browser). The first line on stdout is `listening on http://127.0.0.1:<port>`.

use std::sync::Arc;
use std::time::Duration;

use halley::engine::Cors;
use halley::server;
use halley::socketio::{Event, Halley, Socket};

fn on_connect(socket: &Arc<Socket>) {
    let _ = socket.emit("auth", &socket.auth());
}

fn message(socket: &Arc<Socket>, event: Event) {
    let _ = socket.emit_args("message-back", event.args, event.binary);
}

fn message_with_ack(_socket: &Arc<Socket>, event: Event) {
    if let Some(ack) = event.ack {
        let _ = ack.send(event.args, event.binary);
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let ping_timeout = match std::env::var("PING_TIMEOUT_MS") {
        Ok(ms) => ms.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PING_TIMEOUT_MS must be a number of milliseconds, got {ms:?}"),
            )
        })?,
        Err(_) => 200,
    };
    let io = Halley::builder()
        .path("/socket.io/")
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(ping_timeout))
        .max_payload(1_000_000)
        .connect_timeout(Duration::from_millis(1000))
        .cors(Cors::AnyOrigin)
        .build();
    for path in ["/", "/custom"] {
        io.ns(path, on_connect)
            .on("message", message)
            .on("message-with-ack", message_with_ack);
    }
    server::serve_from_env(io.router(), "127.0.0.1", 3000).await?;
    Ok(())
}
