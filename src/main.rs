//! The `halley` binary: configuration → logging → serve until SIGINT/SIGTERM.

use clap::Parser;
use halley::config::Config;
use halley::server;

const INDEX_HTML: &str = include_str!("index.html");

#[tokio::main]
async fn main() {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("halley: cannot listen on {}: {error}", config.listen);
            std::process::exit(1);
        }
    };
    let io = config.builder().build();
    io.ns("/", |socket| {
        tracing::debug!(id = socket.id(), "connected");
    });
    let router = io
        .router()
        .page("/", "text/html; charset=utf-8", INDEX_HTML);
    match listener.local_addr() {
        Ok(addr) => tracing::info!("halley listening on http://{addr}"),
        Err(_) => tracing::info!("halley listening"),
    }
    server::serve(listener, router, config.server(), server::shutdown_signal()).await;
}
