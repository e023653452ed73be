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

use crate::engine::{Cors, IpRange};
use clap::{CommandFactory, Parser};

use crate::server::ServerConfig;
use crate::socketio::{Builder, Halley};

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

    /// Address of the admin listener: `POST /publish`, `POST /sockets`, `/metrics` and the
    /// detailed `/healthz`. Keep it off the public proxy; an address other than loopback needs
    /// --admin-token.
    #[arg(long, env = "HALLEY_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    pub admin_listen: SocketAddr,

    /// Bearer token required by every admin endpoint (`Authorization: Bearer <token>`); without
    /// one the admin listener must be on loopback. Prefer the environment or the config file
    /// to the command line, where `ps` shows it.
    #[arg(long, env = "HALLEY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

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

    /// Sessions held at once, at most; handshakes beyond are answered 503.
    #[arg(long, env = "HALLEY_MAX_SESSIONS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,

    /// Sessions one client address (IPv6: one /64) holds at once, at most; 503 beyond. Behind
    /// a reverse proxy, list it in --trusted-proxy so that clients are told apart.
    #[arg(long, env = "HALLEY_MAX_SESSIONS_PER_IP", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions_per_ip: u64,

    /// Reverse proxies (addresses or CIDR ranges; repeat, or comma-separate) whose
    /// X-Forwarded-For names the client for --max-sessions-per-ip, and whose X-Forwarded-Host
    /// and X-Forwarded-Proto name the public origin for the origin policy.
    #[arg(
        long = "trusted-proxy",
        env = "HALLEY_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_values_t = IpRange::LOOPBACK
    )]
    pub trusted_proxies: Vec<IpRange>,

    /// Namespaces one connection may join at once; a CONNECT beyond gets CONNECT_ERROR.
    #[arg(long, env = "HALLEY_MAX_NAMESPACES", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_namespaces: u64,

    /// Largest auth payload of a Socket.IO CONNECT, in bytes of JSON; beyond, CONNECT_ERROR
    /// "auth payload too large" (the connection stays).
    #[arg(long, env = "HALLEY_MAX_AUTH_PAYLOAD", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(2..=1_073_741_824))]
    pub max_auth_payload: u64,

    /// Rooms one socket may be in, its own id room aside; joins beyond are refused ("too many
    /// rooms").
    #[arg(long, env = "HALLEY_MAX_ROOMS", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rooms: u64,

    /// Longest room name a socket may join, in bytes; longer ones are refused ("room name too
    /// long").
    #[arg(long, env = "HALLEY_MAX_ROOM_NAME", default_value_t = 255, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_room_name: u64,

    /// CONNECTs the auth hook may refuse on one connection; the next gets CONNECT_ERROR "too
    /// many authentication attempts" and the connection is closed.
    #[arg(long, env = "HALLEY_MAX_AUTH_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_auth_attempts: u64,

    /// Binary attachments one Socket.IO packet may announce; more closes the connection.
    #[arg(long, env = "HALLEY_MAX_ATTACHMENTS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_attachments: u64,

    /// Milliseconds a WebSocket has to complete an upgrade (`2probe` … `5`) from its connection.
    #[arg(long, env = "HALLEY_UPGRADE_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub upgrade_timeout: u64,

    /// Milliseconds a client has to send a request's headers (slowloris guard); also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, env = "HALLEY_HEADER_READ_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,

    /// Milliseconds a POST's body may take to arrive once its headers have; beyond, 408 and
    /// the session is closed.
    #[arg(long, env = "HALLEY_BODY_READ_TIMEOUT", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout: u64,

    /// Milliseconds after a WebSocket write before the next one: frames queued meanwhile go
    /// together (one syscall instead of one per message under a steady feed). 0: write each
    /// frame at once.
    #[arg(long, env = "HALLEY_WS_WRITE_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub ws_write_interval: u64,

    /// Largest request head (request line and headers) in bytes; larger ones get 431. Each
    /// session keeps its handshake's headers, so this bounds them.
    #[arg(long, env = "HALLEY_MAX_HEADER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(8192..=16_777_216))]
    pub max_header_bytes: u64,

    /// Milliseconds a write may wait for a client to read before its connection is closed.
    #[arg(long, env = "HALLEY_WRITE_TIMEOUT", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,

    /// Connection state recovery: milliseconds a client whose connection dropped has to come
    /// back and get its socket (id, rooms, data) and the events it missed. Off by default, as
    /// in Socket.IO; when on, events carry their offset as a last argument.
    #[arg(long, env = "HALLEY_RECOVERY_WINDOW", value_parser = clap::value_parser!(u64).range(1..))]
    pub recovery_window: Option<u64>,

    /// Origins allowed besides the server's own (repeat, or comma-separate): they may open
    /// WebSockets, POST, read script-like GETs and read with CORS. `*` allows any origin (CORS
    /// without credentials). Default: same origin only.
    #[arg(
        long = "cors-origin",
        env = "HALLEY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Milliseconds between passes that hand memory freed by departed clients back to the OS;
    /// also turns transparent huge pages off for the process (0: neither; the allocator then
    /// keeps what it freed until it allocates again).
    #[arg(long, env = "HALLEY_MEMORY_TRIM_INTERVAL", default_value_t = 10_000)]
    pub memory_trim_interval: u64,

    /// Seconds a graceful shutdown may take before the process exits anyway.
    #[arg(long, env = "HALLEY_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// Namespaces served besides `/` (repeat, or comma-separate), for backends that publish to
    /// them without any Rust code.
    #[arg(long = "namespace", env = "HALLEY_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Auth hook: `http://host:port/path` asked (POST, JSON) before any socket connects; see the
    /// README for the request and the answer.
    #[arg(long, env = "HALLEY_AUTH_URL")]
    pub auth_url: Option<hyper::Uri>,

    /// Milliseconds the auth hook may take before the socket is refused, waiting for a free
    /// slot (--auth-concurrency) included.
    #[arg(long, env = "HALLEY_AUTH_TIMEOUT", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub auth_timeout: u64,

    /// Auth hook checks in flight at once (over pooled keep-alive connections); checks beyond
    /// wait for a slot, within --auth-timeout.
    #[arg(long, env = "HALLEY_AUTH_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub auth_concurrency: u64,

    /// Rooms browsers may join with the `subscribe` event (`*` wildcards; repeat, or
    /// comma-separate). Rooms the auth hook grants are allowed too.
    #[arg(
        long = "subscribe-pattern",
        env = "HALLEY_SUBSCRIBE_PATTERNS",
        value_delimiter = ','
    )]
    pub subscribe_patterns: Vec<String>,

    /// RabbitMQ URL (`amqp://user:pass@host:5672/vhost`); enables the AMQP bridge.
    /// (Checked by [`Config::check_amqp_url`], not by clap, whose error would echo the
    /// password.)
    #[arg(long, env = "HALLEY_AMQP_URL")]
    pub amqp_url: Option<String>,

    /// Queue to consume (declared durable unless --amqp-queue-passive), e.g. `socket.io`.
    #[arg(long, env = "HALLEY_AMQP_QUEUE", value_parser = crate::bridge::amqp::check_name)]
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
    #[arg(long, env = "HALLEY_AMQP_PUBLISH_EXCHANGE", value_parser = crate::bridge::amqp::check_name)]
    pub amqp_publish_exchange: Option<String>,

    /// Forward the handshake's Cookie header with each published client event (`x-cookie`).
    #[arg(long, env = "HALLEY_AMQP_FORWARD_COOKIE")]
    pub amqp_forward_cookie: bool,

    /// Milliseconds a client ack waits for the backend's reply.
    #[arg(long, env = "HALLEY_AMQP_REPLY_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub amqp_reply_timeout: u64,

    /// Bytes of client events waiting to be published (while the broker is slow or away), at
    /// most; events beyond are refused (the client's ack gets an error) and counted. The queue
    /// also holds 10,000 events at most.
    #[arg(long, env = "HALLEY_AMQP_OUTBOUND_MAX_BYTES", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub amqp_outbound_max_bytes: u64,

    /// Join the cluster of Halley nodes sharing this RabbitMQ (needs --amqp-url): broadcasts,
    /// room operations and publishes reach the sockets of every node, and requests for another
    /// node's session are forwarded to it (no sticky sessions needed).
    #[arg(long, env = "HALLEY_CLUSTER")]
    pub cluster: bool,

    /// This node's name in the cluster, the prefix of its session ids: 6 letters or digits,
    /// unique in the cluster (default: random).
    #[arg(long, env = "HALLEY_NODE_NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,

    /// Address the other nodes forward requests for this node's sessions to (default: the
    /// listen address; required when that is every address, 0.0.0.0 or [::]).
    #[arg(long, env = "HALLEY_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<SocketAddr>,

    /// Fanout exchange the nodes share.
    #[arg(
        long,
        env = "HALLEY_CLUSTER_EXCHANGE",
        default_value = "halley.cluster",
        value_parser = parse_exchange
    )]
    pub cluster_exchange: String,

    /// Secret the nodes share (at least 32 bytes, e.g. `openssl rand -hex 32`): every cluster
    /// message and every forwarded request is authenticated with it. Required with --cluster;
    /// give it through the environment or the config file, not the command line (`ps` shows
    /// that).
    #[arg(long, env = "HALLEY_CLUSTER_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub cluster_secret: Option<Secret>,

    /// Addresses (or CIDR ranges; repeat, or comma-separate) other nodes may advertise: a node
    /// announcing any other address is ignored, and requests are forwarded nowhere else.
    /// Default: loopback and private ranges (10/8, 172.16/12, 192.168/16, fc00::/7).
    #[arg(
        long = "cluster-peers",
        env = "HALLEY_CLUSTER_PEERS",
        value_delimiter = ',',
        default_values_t = crate::bridge::cluster::default_peers()
    )]
    pub cluster_peers: Vec<IpRange>,

    /// Stream queue the nodes share for connection state recovery (with --cluster and
    /// --recovery-window): logged events and sessions go through it, so a client recovers
    /// through any node.
    #[arg(
        long,
        env = "HALLEY_CLUSTER_STREAM",
        default_value = "halley.recovery",
        value_parser = parse_exchange
    )]
    pub cluster_stream: String,

    /// Bytes the recovery stream keeps at most (besides twice the recovery window).
    #[arg(long, env = "HALLEY_CLUSTER_STREAM_MAX_BYTES", default_value_t = 512 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub cluster_stream_max_bytes: u64,

    /// Milliseconds between cluster heartbeats; a node silent for three is dropped.
    #[arg(long, env = "HALLEY_CLUSTER_HEARTBEAT", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..))]
    pub cluster_heartbeat: u64,

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

    /// Serve the official Socket.IO Admin UI's server side (`@socket.io/admin-ui` 0.5.1) on the
    /// public listener, in its own namespace (--admin-ui-namespace). Needs --admin-ui-auth, or
    /// --admin-ui-no-auth to leave it open.
    #[arg(long, env = "HALLEY_ADMIN_UI")]
    pub admin_ui: bool,

    /// The Admin UI's login, USER:PASSWORD; the password may be a bcrypt hash (`$2a$`, `$2b$`,
    /// `$2y$`, e.g. from `htpasswd -nbBC 10 USER PASSWORD`). Prefer the environment or the
    /// config file to the command line, where `ps` shows it.
    #[arg(long, env = "HALLEY_ADMIN_UI_AUTH", value_parser = parse_secret)]
    pub admin_ui_auth: Option<Secret>,

    /// Leave the Admin UI open to anyone who reaches it: no login.
    #[arg(
        long,
        env = "HALLEY_ADMIN_UI_NO_AUTH",
        conflicts_with = "admin_ui_auth"
    )]
    pub admin_ui_no_auth: bool,

    /// Origins the Admin UI is served from (repeat, or comma-separate), e.g.
    /// https://admin.socket.io: they may reach the engine, and sessions they open may join
    /// the Admin UI's namespace only. Not needed when the UI is served from this server's own
    /// origin.
    #[arg(
        long = "admin-ui-origin",
        env = "HALLEY_ADMIN_UI_ORIGINS",
        value_delimiter = ','
    )]
    pub admin_ui_origins: Vec<String>,

    /// The Admin UI's namespace; an application namespace of the same name refuses the start.
    #[arg(long, env = "HALLEY_ADMIN_UI_NAMESPACE", default_value = "/admin")]
    pub admin_ui_namespace: String,

    /// The Admin UI may look, not act: no disconnect, join or leave.
    #[arg(long, env = "HALLEY_ADMIN_UI_READONLY")]
    pub admin_ui_readonly: bool,

    /// The Admin UI's mode: `development` (every socket and room, live) or `production`
    /// (server statistics only).
    #[arg(long, env = "HALLEY_ADMIN_UI_MODE", default_value = "development", value_parser = ["development", "production"])]
    pub admin_ui_mode: String,

    /// Report every event received and sent to the Admin UI too (development mode): one UI
    /// event per delivery, so off by default.
    #[arg(long, env = "HALLEY_ADMIN_UI_EVENTS")]
    pub admin_ui_events: bool,

    /// This server's name on the Admin UI's Servers page (default: the cluster node's name,
    /// else the host name).
    #[arg(long, env = "HALLEY_ADMIN_UI_SERVER_ID")]
    pub admin_ui_server_id: Option<String>,
}

/// A secret option's value: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Checked in [`Config::cluster`], so that a refused value is never echoed in the error.
fn parse_secret(secret: &str) -> Result<Secret, String> {
    Ok(Secret(secret.to_owned()))
}

fn parse_exchange(name: &str) -> Result<String, String> {
    match crate::bridge::cluster::amqp_name(name) {
        Some(_) => Ok(name.to_owned()),
        None => Err(format!(
            "expected 1 to 255 letters, digits or `-_.:`, got {} bytes",
            name.len()
        )),
    }
}

fn parse_node_name(name: &str) -> Result<String, String> {
    if crate::bridge::cluster::valid_node_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "expected {} letters or digits, got {name:?}",
            crate::bridge::cluster::NODE_NAME_LEN
        ))
    }
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

    /// The application's origin policy (`--cors-origin`).
    fn app_cors(&self) -> Cors {
        match self.cors_origins.as_slice() {
            [] => Cors::SameOrigin,
            origins if origins.iter().any(|o| o == "*") => Cors::AnyOrigin,
            origins => Cors::Origins(origins.to_vec()),
        }
    }

    /// The Admin UI's settings, when `--admin-ui` is on; `server_id` names this server when
    /// --admin-ui-server-id does not (a cluster node's name). Fails on malformed credentials,
    /// without repeating them (checked here, not by clap, whose error would echo the value).
    pub fn admin_ui(
        &self,
        server_id: Option<&str>,
    ) -> Result<Option<crate::admin_ui::AdminUiConfig>, String> {
        if !self.admin_ui {
            return Ok(None);
        }
        let credentials = match &self.admin_ui_auth {
            Some(auth) => Some(
                crate::admin_ui::auth::Credentials::parse(auth.expose())
                    .map_err(|e| format!("--admin-ui-auth: {e}"))?,
            ),
            None => None,
        };
        Ok(Some(crate::admin_ui::AdminUiConfig {
            namespace: self.admin_ui_namespace.clone(),
            credentials,
            open: self.admin_ui_no_auth,
            readonly: self.admin_ui_readonly,
            mode: match self.admin_ui_mode.as_str() {
                "production" => crate::admin_ui::Mode::Production,
                _ => crate::admin_ui::Mode::Development,
            },
            events: self.admin_ui_events,
            origins: self.admin_ui_origins.clone(),
            app_cors: self.app_cors(),
            server_id: self
                .admin_ui_server_id
                .clone()
                .or_else(|| server_id.map(str::to_owned)),
        }))
    }

    /// The Socket.IO server builder these options describe.
    pub fn builder(&self) -> Builder {
        let cors = match self.admin_ui(None) {
            Ok(Some(ui)) => ui.engine_cors(),
            // `halley` checks the Admin UI's options before building.
            Ok(None) | Err(_) => self.app_cors(),
        };
        let builder = Halley::builder()
            .path(&self.path)
            .ping_interval(Duration::from_millis(self.ping_interval))
            .ping_timeout(Duration::from_millis(self.ping_timeout))
            .connect_timeout(Duration::from_millis(self.connect_timeout))
            .max_payload(self.max_payload as usize)
            .max_outbox(self.max_outbox as usize)
            .max_sessions(self.max_sessions as usize)
            .max_sessions_per_ip(self.max_sessions_per_ip as usize)
            .trusted_proxies(&self.trusted_proxies)
            .max_namespaces(self.max_namespaces as usize)
            .max_attachments(self.max_attachments as usize)
            .max_auth_payload(self.max_auth_payload as usize)
            .max_rooms(self.max_rooms as usize)
            .max_room_name(self.max_room_name as usize)
            .max_auth_attempts(self.max_auth_attempts as usize)
            .upgrade_timeout(Duration::from_millis(self.upgrade_timeout))
            .body_read_timeout(Duration::from_millis(self.body_read_timeout))
            .ws_write_interval(Duration::from_millis(self.ws_write_interval))
            .cors(cors);
        match self.recovery_window {
            Some(ms) => builder.connection_state_recovery(Duration::from_millis(ms), true),
            None => builder,
        }
    }

    /// The cluster link's settings, when clustering is on; `listening` is the bound address.
    /// Fails when clustering is on without a broker.
    pub fn cluster(
        &self,
        listening: SocketAddr,
    ) -> Result<Option<crate::bridge::cluster::ClusterConfig>, String> {
        if !self.cluster {
            return Ok(None);
        }
        let url = self
            .amqp_url
            .clone()
            .ok_or("--cluster needs --amqp-url (the nodes meet on RabbitMQ)")?;
        let secret = self.cluster_secret.as_ref().ok_or(
            "--cluster needs --cluster-secret (HALLEY_CLUSTER_SECRET), the secret the nodes share",
        )?;
        let key = crate::bridge::envelope::Key::new(secret.expose().as_bytes())
            .map_err(|e| format!("--cluster-secret: {e}"))?;
        // Listening on every address says nothing of the one other hosts reach this node at:
        // guessing (127.0.0.1, say) would make every node forward others' requests to itself.
        let advertise = match self.cluster_advertise {
            Some(addr) if addr.ip().is_unspecified() || addr.port() == 0 => {
                return Err(format!(
                    "--cluster-advertise {addr}: give the address and port other nodes reach \
                     this one at, e.g. 10.0.0.1:8080"
                ))
            }
            Some(addr) => addr,
            None if listening.ip().is_unspecified() => {
                return Err(format!(
                    "--cluster with --listen {listening} (every address) needs \
                     --cluster-advertise (HALLEY_CLUSTER_ADVERTISE): the address other nodes \
                     forward this node's requests to, e.g. 10.0.0.1:{port}; or listen on that \
                     address",
                    port = listening.port()
                ))
            }
            None => listening,
        };
        let mut config = crate::bridge::cluster::ClusterConfig::new(url, advertise, key);
        config.peers = self.cluster_peers.clone();
        if let Some(name) = &self.node_name {
            config.node = name.clone();
        }
        config.exchange = self.cluster_exchange.clone();
        config.heartbeat = Duration::from_millis(self.cluster_heartbeat);
        Ok(Some(config))
    }

    /// The shared recovery log's settings: in a cluster with connection state recovery on.
    pub fn shared_log(
        &self,
        cluster: &crate::bridge::cluster::ClusterConfig,
    ) -> Option<crate::bridge::log::LogConfig> {
        let window = self.recovery_window?;
        Some(crate::bridge::log::LogConfig {
            url: cluster.url.clone(),
            stream: self.cluster_stream.clone(),
            node: cluster.node.clone(),
            key: cluster.key.clone(),
            window: Duration::from_millis(window),
            max_bytes: self.cluster_stream_max_bytes,
        })
    }

    /// The AMQP bridge settings, when a broker is configured.
    /// Whether `--amqp-url` is one lapin can use; the error names the URL with its password
    /// hidden (it would otherwise end up in a terminal or the journal).
    pub fn check_amqp_url(&self) -> Result<(), String> {
        let Some(url) = &self.amqp_url else {
            return Ok(());
        };
        crate::bridge::amqp::check_url(url)
            .map(drop)
            .map_err(|error| format!("--amqp-url {}: {error}", crate::bridge::amqp::redact(url)))
    }

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
            outbound_max_bytes: usize::try_from(self.amqp_outbound_max_bytes).unwrap_or(usize::MAX),
        })
    }

    /// The auth hook settings, when a URL is configured.
    pub fn auth(&self) -> Option<crate::bridge::auth::AuthConfig> {
        Some(crate::bridge::auth::AuthConfig {
            url: self.auth_url.clone()?,
            timeout: Duration::from_millis(self.auth_timeout),
            concurrency: self.auth_concurrency as usize,
        })
    }

    /// The admin listener's token, checked against its address: without a token only loopback
    /// may serve the admin endpoints.
    pub fn admin(&self) -> Result<Option<String>, String> {
        let token = self.admin_token.clone().filter(|t| !t.is_empty());
        if token.is_none() && crate::admin::needs_token(self.admin_listen) {
            return Err(format!(
                "--admin-listen {} is not a loopback address: set --admin-token (HALLEY_ADMIN_TOKEN), \
                 or the admin endpoints would be open to anyone who reaches it",
                self.admin_listen
            ));
        }
        Ok(token)
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            header_read_timeout: Duration::from_millis(self.header_read_timeout),
            write_timeout: Duration::from_millis(self.write_timeout),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            max_header_bytes: self.max_header_bytes as usize,
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
    fn limits_have_safe_defaults_and_reach_the_builder() {
        let config = Config::try_parse_from(["halley"]).unwrap();
        assert_eq!(config.max_sessions, 100_000);
        assert_eq!(config.max_sessions_per_ip, 1_000);
        assert_eq!(config.trusted_proxies, IpRange::LOOPBACK.to_vec());
        assert_eq!(config.max_namespaces, 32);
        assert_eq!(config.server().header_read_timeout, Duration::from_secs(10));
        let io = config.builder().build();
        let socketio = io.config();
        assert_eq!(socketio.max_auth_payload, 8192);
        assert_eq!((socketio.max_rooms, socketio.max_room_name), (128, 255));
        assert_eq!(socketio.max_auth_attempts, 10);
        assert!(config.auth().is_none());
        let config = Config::try_parse_from([
            "halley",
            "--auth-url=http://127.0.0.1:9000/auth",
            "--max-auth-payload=100",
            "--max-rooms=3",
            "--max-room-name=4",
            "--max-auth-attempts=5",
        ])
        .unwrap();
        assert_eq!(config.auth().unwrap().concurrency, 64);
        let io = config.builder().build();
        let socketio = io.config();
        assert_eq!(socketio.max_auth_payload, 100);
        assert_eq!((socketio.max_rooms, socketio.max_room_name), (3, 4));
        assert_eq!(socketio.max_auth_attempts, 5);
        let config = Config::try_parse_from([
            "halley",
            "--max-sessions=5",
            "--max-sessions-per-ip=2",
            "--trusted-proxy=10.0.0.0/8,192.0.2.1",
            "--upgrade-timeout=700",
            "--header-read-timeout=800",
            "--write-timeout=900",
        ])
        .unwrap();
        let io = config.builder().build();
        let engine = io.engine().config();
        assert_eq!((engine.max_sessions, engine.max_sessions_per_ip), (5, 2));
        assert_eq!(
            engine.trusted_proxies,
            vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.1".parse().unwrap()]
        );
        assert_eq!(engine.session.upgrade_timeout, Duration::from_millis(700));
        let server = config.server();
        assert_eq!(server.header_read_timeout, Duration::from_millis(800));
        assert_eq!(server.write_timeout, Duration::from_millis(900));
        assert!(Config::try_parse_from(["halley", "--trusted-proxy=nginx"]).is_err());
    }

    #[test]
    fn the_admin_listener_is_loopback_unless_a_token_protects_it() {
        let config = Config::try_parse_from(["halley"]).unwrap();
        assert_eq!(config.admin_listen, "127.0.0.1:9080".parse().unwrap());
        assert_eq!(config.admin(), Ok(None));
        let open = Config::try_parse_from(["halley", "--admin-listen=0.0.0.0:9080"]).unwrap();
        assert!(open.admin().unwrap_err().contains("--admin-token"));
        let empty =
            Config::try_parse_from(["halley", "--admin-listen=0.0.0.0:9080", "--admin-token="])
                .unwrap();
        assert!(empty.admin().is_err(), "an empty token is no token");
        let guarded =
            Config::try_parse_from(["halley", "--admin-listen=0.0.0.0:9080", "--admin-token=t0k"])
                .unwrap();
        assert_eq!(guarded.admin(), Ok(Some("t0k".into())));
    }

    #[test]
    fn a_cluster_needs_a_long_enough_secret() {
        let listening: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let base = ["halley", "--cluster", "--amqp-url=amqp://localhost"];
        let config = Config::try_parse_from(base).unwrap();
        let error = config.cluster(listening).unwrap_err();
        assert!(error.contains("--cluster-secret"), "{error}");
        let short = Config::try_parse_from(base.iter().copied().chain(["--cluster-secret=short"]));
        let error = short.unwrap().cluster(listening).unwrap_err();
        assert!(
            error.starts_with("--cluster-secret:") && error.contains("at least 32 bytes"),
            "{error}"
        );
        assert!(!error.contains("short"), "the value is not echoed: {error}");
        let secret = "0123456789abcdef0123456789abcdef";
        let config = Config::try_parse_from(base.iter().copied().chain([
            "--cluster-secret",
            secret,
            "--cluster-peers=10.1.0.0/16",
        ]))
        .unwrap();
        assert!(!format!("{config:?}").contains(secret));
        let cluster = config.cluster(listening).unwrap().unwrap();
        assert_eq!(cluster.peers, vec!["10.1.0.0/16".parse().unwrap()]);
        let config = Config::try_parse_from(["halley"]).unwrap();
        assert_eq!(
            config.cluster_peers,
            crate::bridge::cluster::default_peers()
        );
        assert!(Config::try_parse_from(["halley", "--cluster-peers=169.254.0.0/16x"]).is_err());
    }

    #[test]
    fn a_cluster_listening_on_every_address_needs_an_advertise_address() {
        let base = [
            "halley",
            "--cluster",
            "--amqp-url=amqp://localhost",
            "--cluster-secret=0123456789abcdef0123456789abcdef",
        ];
        let config = Config::try_parse_from(base).unwrap();
        let every: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let error = config.cluster(every).unwrap_err();
        assert!(
            error.contains("--cluster-advertise") && error.contains("0.0.0.0:8080"),
            "{error}"
        );
        let error = config.cluster("[::]:8080".parse().unwrap()).unwrap_err();
        assert!(error.contains("--cluster-advertise"), "{error}");
        let one = config.cluster("10.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(one.unwrap().advertise, "10.0.0.1:8080".parse().unwrap());
        let advertised = Config::try_parse_from(
            base.iter()
                .copied()
                .chain(["--cluster-advertise=10.0.0.2:8080"]),
        )
        .unwrap();
        let cluster = advertised.cluster(every).unwrap().unwrap();
        assert_eq!(cluster.advertise, "10.0.0.2:8080".parse().unwrap());
        for bad in ["0.0.0.0:8080", "10.0.0.2:0"] {
            let config = Config::try_parse_from(
                base.iter()
                    .copied()
                    .chain([format!("--cluster-advertise={bad}").as_str()]),
            )
            .unwrap();
            let error = config.cluster(every).unwrap_err();
            assert!(error.starts_with("--cluster-advertise"), "{bad}: {error}");
        }
    }

    #[test]
    fn cluster_exchange_names_fit_an_amqp_short_string() {
        let long = format!("--cluster-exchange={}", "x".repeat(256));
        assert!(Config::try_parse_from(["halley", long.as_str()]).is_err());
        assert!(Config::try_parse_from(["halley", "--cluster-exchange=a b"]).is_err());
        assert!(Config::try_parse_from(["halley", "--cluster-exchange=halley.c-1"]).is_ok());
    }

    #[test]
    fn amqp_names_fit_short_strings_and_the_outbound_queue_is_bounded() {
        let base = ["halley", "--amqp-url=amqp://127.0.0.1:5672/%2f"];
        let config = Config::try_parse_from(base).unwrap();
        let amqp = config.amqp().unwrap();
        assert_eq!(amqp.outbound_max_bytes, 16 << 20);
        let config = Config::try_parse_from(
            base.iter()
                .copied()
                .chain(["--amqp-outbound-max-bytes=4096"]),
        )
        .unwrap();
        assert_eq!(config.amqp().unwrap().outbound_max_bytes, 4096);
        assert!(Config::try_parse_from(
            base.iter().copied().chain(["--amqp-outbound-max-bytes=0"])
        )
        .is_err());
        let long = "q".repeat(256);
        for option in ["--amqp-queue", "--amqp-publish-exchange"] {
            let arg = format!("{option}={long}");
            assert!(
                Config::try_parse_from(base.iter().copied().chain([arg.as_str()])).is_err(),
                "{option}"
            );
        }
        let bind = format!("--amqp-bind=events:{long}");
        assert!(Config::try_parse_from(base.iter().copied().chain([bind.as_str()])).is_err());
        let vhost = format!("--amqp-url=amqp://127.0.0.1:5672/{long}");
        let config = Config::try_parse_from(["halley", vhost.as_str()]).unwrap();
        assert!(config.check_amqp_url().is_err());
        let bad = Config::try_parse_from(["halley", "--amqp-url=amqp://admin:S3cret@rabbit:x/v"])
            .unwrap();
        let error = bad.check_amqp_url().unwrap_err();
        assert!(
            !error.contains("S3cret"),
            "the password is not echoed: {error}"
        );
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
