//! Configuration from the command line, the environment (`HALLEY_*`) and an optional TOML file,
//! with the defaults a production deployment starts from. Every option is listed by
//! `halley --help`.
//!
//! Precedence, highest first: command line, environment, config file, default. The file uses
//! the long option names as keys (`ping-interval = 30000`, `cors-origin = ["https://a.example"]`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use halley_transports::Cors;

use crate::server::ServerConfig;
use crate::socketio::Builder;

/// Halley: a comet server speaking Socket.IO to every browser, IE6 to today's.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// TOML file with default values for any option below (keys are the long option names).
    #[arg(long, env = "HALLEY_CONFIG")]
    pub config: Option<PathBuf>,

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

    /// Namespaces served besides `/` (repeat, or comma-separate), for backends that publish to
    /// them without any Rust code.
    #[arg(long = "namespace", env = "HALLEY_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Bearer token required by `POST /publish`; without one, only loopback clients may publish.
    #[arg(long, env = "HALLEY_PUBLISH_TOKEN")]
    pub publish_token: Option<String>,

    /// Auth hook: `http://host:port/path` asked (POST, JSON) before any socket connects; see the
    /// README for the request and the answer.
    #[arg(long, env = "HALLEY_AUTH_URL")]
    pub auth_url: Option<hyper::Uri>,

    /// Milliseconds the auth hook may take before the socket is refused.
    #[arg(long, env = "HALLEY_AUTH_TIMEOUT", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub auth_timeout: u64,

    /// Rooms browsers may join with the `subscribe` event (`*` wildcards; repeat, or
    /// comma-separate). Rooms the auth hook grants are allowed too.
    #[arg(
        long = "subscribe-pattern",
        env = "HALLEY_SUBSCRIBE_PATTERNS",
        value_delimiter = ','
    )]
    pub subscribe_patterns: Vec<String>,

    /// RabbitMQ URL (`amqp://user:pass@host:5672/vhost`); enables the AMQP bridge.
    #[arg(long, env = "HALLEY_AMQP_URL")]
    pub amqp_url: Option<String>,

    /// Queue to consume (declared durable unless --amqp-queue-passive), e.g. `socket.io`.
    #[arg(long, env = "HALLEY_AMQP_QUEUE")]
    pub amqp_queue: Option<String>,

    /// The queue exists already: check it instead of declaring it.
    #[arg(long, env = "HALLEY_AMQP_QUEUE_PASSIVE")]
    pub amqp_queue_passive: bool,

    /// Consume an exchange through a private queue: `EXCHANGE:PATTERN` (repeat, or
    /// comma-separate), e.g. `events:news.#`.
    #[arg(long = "amqp-bind", env = "HALLEY_AMQP_BIND", value_delimiter = ',')]
    pub amqp_bind: Vec<crate::bridge::amqp::Binding>,

    /// Unacknowledged deliveries in flight.
    #[arg(long, env = "HALLEY_AMQP_PREFETCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub amqp_prefetch: u16,

    /// Exchange (topic) that receives client events no handler takes; routing key = event name.
    #[arg(long, env = "HALLEY_AMQP_PUBLISH_EXCHANGE")]
    pub amqp_publish_exchange: Option<String>,

    /// Forward the handshake's Cookie header with each published client event (`x-cookie`).
    #[arg(long, env = "HALLEY_AMQP_FORWARD_COOKIE")]
    pub amqp_forward_cookie: bool,

    /// Milliseconds a client ack waits for the backend's reply.
    #[arg(long, env = "HALLEY_AMQP_REPLY_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub amqp_reply_timeout: u64,

    /// Event emitted for a backend message without an `x-event` header.
    #[arg(long, env = "HALLEY_DEFAULT_EVENT", default_value = "news")]
    pub default_event: String,

    /// Namespace for a backend message without an `x-namespace` header.
    #[arg(long, env = "HALLEY_DEFAULT_NAMESPACE", default_value = "/")]
    pub default_namespace: String,

    /// Serve the live transport comparison page at `/` and its `/demo` namespace.
    #[arg(long, env = "HALLEY_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "HALLEY_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// Parses `args` (the program name first) and the environment, filling in from the config
    /// file for options given in neither. Must run before other threads exist: it sets
    /// environment variables. Errors come back as one line naming the option.
    pub fn load(args: Vec<OsString>) -> Result<Config, clap::Error> {
        let file =
            config_path(&args).or_else(|| std::env::var_os("HALLEY_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            apply_file(&path).map_err(|message| {
                Config::command().error(clap::error::ErrorKind::InvalidValue, message)
            })?;
        }
        Config::try_parse_from(args)
    }

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

    /// The AMQP bridge settings, when a broker is configured.
    pub fn amqp(&self) -> Option<crate::bridge::amqp::AmqpConfig> {
        let url = self.amqp_url.clone()?;
        Some(crate::bridge::amqp::AmqpConfig {
            url,
            queue: self.amqp_queue.clone(),
            queue_passive: self.amqp_queue_passive,
            bindings: self.amqp_bind.clone(),
            prefetch: self.amqp_prefetch,
            defaults: crate::bridge::mapping::Defaults {
                event: self.default_event.clone(),
                namespace: self.default_namespace.clone(),
            },
            publish_exchange: self.amqp_publish_exchange.clone(),
            forward_cookie: self.amqp_forward_cookie,
            reply_timeout: Duration::from_millis(self.amqp_reply_timeout),
        })
    }

    /// The auth hook settings, when a URL is configured.
    pub fn auth(&self) -> Option<crate::bridge::auth::AuthConfig> {
        Some(crate::bridge::auth::AuthConfig {
            url: self.auth_url.clone()?,
            timeout: Duration::from_millis(self.auth_timeout),
        })
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            ..ServerConfig::default()
        }
    }
}

/// The `--config` value on the command line, if any.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_str()?;
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Sets the environment variable of every option the file names, unless the environment already
/// has it: so the command line beats the environment, which beats the file.
fn apply_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("config file {}: {}", path.display(), e.message()))?;
    let command = Config::command();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| format!("config file {}: unknown option `{key}`", path.display()))?;
        let Some(env) = arg.get_env() else { continue };
        if std::env::var_os(env).is_some() {
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    _ => Err(format!(
                        "config file {}: `{key}` must list strings",
                        path.display()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => {
                return Err(format!(
                    "config file {}: `{key}` has an unsupported type",
                    path.display()
                ))
            }
        };
        std::env::set_var(env, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_is_found_in_either_form() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["halley", "--config", "a.toml"])),
            Some("a.toml".into())
        );
        assert_eq!(
            config_path(&args(&["halley", "--config=b.toml"])),
            Some("b.toml".into())
        );
        assert_eq!(config_path(&args(&["halley", "--listen", "x"])), None);
    }

    #[test]
    fn every_option_has_an_environment_variable() {
        for arg in Config::command().get_arguments() {
            if arg.get_long().is_some() && arg.get_id() != "help" && arg.get_id() != "version" {
                assert!(arg.get_env().is_some(), "--{:?} has no env", arg.get_long());
            }
        }
    }
}
