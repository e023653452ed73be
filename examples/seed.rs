//! The seed's `app.js` (the 2012 write-up Halley grew from), in Rust: serve `index.html`
//! unchanged at `/`, emit `news` `{hello: 'world, for everyone!'}` to every client that connects,
//! and log `my other event` and `private message` with their arguments.
//!
//! Run: `cargo run --release --example seed`, then open http://localhost:8080 (PORT overrides
//! the port). The page loads `/socket.io/socket.io.js` and calls `io.connect('/')`.

use std::sync::Arc;

use halley::server;
use halley::socketio::{Event, Halley, Socket};
use serde_json::json;

const INDEX_HTML: &str = include_str!("../fixtures/seed/index.html");

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> std::io::Result<()> {
    let io = Halley::builder().build();
    io.ns("/", |socket| {
        let _ = socket.emit("news", &json!({ "hello": "world, for everyone!" }));
    })
    .on("my other event", |socket: &Arc<Socket>, event: Event| {
        tracing::info!(id = socket.id(), args = ?event.args, "my other event");
    })
    .on("private message", |socket: &Arc<Socket>, event: Event| {
        let from = event.args.first().cloned().unwrap_or_default();
        let msg = event.args.get(1).cloned().unwrap_or_default();
        tracing::info!(
            id = socket.id(),
            "I received a private message by {from} saying {msg}"
        );
    });
    let router = io
        .router()
        .page("/", "text/html; charset=utf-8", INDEX_HTML);
    server::serve_from_env(router, "0.0.0.0", 8080).await?;
    Ok(())
}
