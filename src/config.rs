//! Command-line and environment configuration (`HALLEY_*` variables), with the defaults a
//! production deployment starts from. Every option is listed by `halley --help`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use halley_transports::Cors;

use crate::server::ServerConfig;
use crate::socketio::Builder;

/// Halley: a comet server speaking Socket.IO to every browser, IE6 to today's.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HALLEY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Path of the Socket.IO endpoint.
    #[arg(long, env = "HALLEY_PATH", default_value = "/socket.io/")]
    pub path: String,

    /// Milliseconds between server pings.
    #[arg(long, env = "HALLEY_PING_INTERVAL", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_interval: u64,

    /// Milliseconds a client has to answer a ping.
    #[arg(long, env = "HALLEY_PING_TIMEOUT", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ping_timeout: u64,

    /// Milliseconds a new connection has to join a namespace.
    #[arg(long, env = "HALLEY_CONNECT_TIMEOUT", default_value_t = 45_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,

    /// Largest message or POST body accepted, in bytes.
    #[arg(long, env = "HALLEY_MAX_PAYLOAD", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub max_payload: u64,

    /// Packets queued per client before the overflow policy applies (volatile dropped, others
    /// disconnect the client).
    #[arg(long, env = "HALLEY_MAX_OUTBOX", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_outbox: u64,

    /// Origins allowed to connect cross-origin (repeat, or comma-separate); `*` allows any
    /// origin without credentials. Default: same origin only.
    #[arg(
        long = "cors-origin",
        env = "HALLEY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Seconds a graceful shutdown may take before the process exits anyway.
    #[arg(long, env = "HALLEY_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "HALLEY_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// The Socket.IO server builder these options describe.
    pub fn builder(&self) -> Builder {
        let cors = match self.cors_origins.as_slice() {
            [] => Cors::SameOrigin,
            origins if origins.iter().any(|o| o == "*") => Cors::AnyOrigin,
            origins => Cors::Origins(origins.to_vec()),
        };
        crate::Halley::builder()
            .path(&self.path)
            .ping_interval(Duration::from_millis(self.ping_interval))
            .ping_timeout(Duration::from_millis(self.ping_timeout))
            .connect_timeout(Duration::from_millis(self.connect_timeout))
            .max_payload(self.max_payload as usize)
            .max_outbox(self.max_outbox as usize)
            .cors(cors)
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            ..ServerConfig::default()
        }
    }
}
