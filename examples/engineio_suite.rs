//! The reference server of the public Engine.IO conformance test-suite
//! (socketio/engine.io-protocol, `test-suite/`): an echo server on port 3000, path `/engine.io/`,
//! pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1,000,000 bytes, CORS for any origin.
//!
//! Run: `cargo run --release --example engineio_suite` (PORT overrides the port; PORT=0 picks
//! a free one). The first line on stdout is `listening on http://127.0.0.1:<port>`.

use std::sync::Arc;
use std::time::Duration;

use halley::engine::{
    CloseReason, Cors, Engine, EngineConfig, Handler, Message, SessionConfig, Socket,
};
use halley::server::{self, Router};

/// Sends every message back, text as text and binary as binary.
struct Echo;

impl Handler for Echo {
    fn on_open(&self, _socket: &Arc<Socket>) {}

    fn on_message(&self, socket: &Arc<Socket>, message: Message) {
        let _ = match message {
            Message::Text(text) => socket.send_text(&text),
            Message::Binary(data) => socket.send_binary(data),
        };
    }

    fn on_close(&self, _socket: &Arc<Socket>, _reason: CloseReason) {}
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let config = EngineConfig {
        path: "/engine.io/".into(),
        session: SessionConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            ..SessionConfig::default()
        },
        max_payload: 1_000_000,
        cors: Cors::AnyOrigin,
        ..EngineConfig::default()
    };
    let router = Router::new(Engine::new(config, Arc::new(Echo)));
    server::serve_from_env(router, "127.0.0.1", 3000).await?;
    Ok(())
}
