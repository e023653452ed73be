//! The server side of the official Socket.IO Admin UI (`@socket.io/admin-ui` 0.5.1), for the
//! UI unchanged: its namespace (`/admin` by default) with the UI's login, the events it reads
//! (`config`, `all_sockets`, `server_stats`, `socket_connected`, `socket_updated`,
//! `socket_disconnected`, `room_joined`, `room_left`, `event_received`, `event_sent`) and the
//! actions it sends (`_disconnect`, `join`, `leave`). The protocol's facts are in
//! `docs/NOTES-admin-ui-protocol.md`; this is Halley's own implementation of them.
//!
//! # Layout
//! - [`auth`]: credentials (plain or bcrypt), login sessions, failed logins per address.
//! - [`wire`]: the JSON the UI reads, pure.
//! - this file: the namespace, its login hook, the actions, the observer that turns socket
//!   and room changes into events, and the ticker behind `server_stats` and transport upgrades.
//!
//! # Where and who
//! The UI is a browser page that connects like any client, so its namespace is on the public
//! listener. Its origin (`--admin-ui-origin`, e.g. `https://admin.socket.io`) is added to the
//! engine's origin list, which the engine checks per request, before any namespace is known;
//! the Socket.IO layer then confines every session opened from that origin (its `Origin`, or
//! for a script-like GET its `Referer`) to the UI's namespace: a CONNECT to any other namespace
//! gets `Invalid namespace`, as if it did not exist (see [`crate::socketio::Confinement`]). The
//! UI opens its own Engine.IO connection (`forceNew`), so nothing of the application shares it.
//! An origin also listed in `--cors-origin` is an application origin and is not confined.
//!
//! A login is the CONNECT's `auth` `{username, password}` or `{sessionId}` (a session id a
//! previous login handed out, sent as the `session` event right after the CONNECT reply).
//! Anything else gets CONNECT_ERROR `{"message":"invalid credentials"}` and nothing more; an
//! address that failed [`auth::MAX_FAILURES`] times within a minute is refused unheard. The
//! server-wide connect hooks (the application's auth hook) do not apply to this namespace.
//!
//! # Cost
//! Nothing is tracked per socket while no UI watches: each socket or room change costs the
//! Socket.IO layer one atomic load (see [`crate::socketio::observe`]). `server_stats` reads the
//! engine's counters every 2 s. In production mode the UI gets `server_stats` only.

pub mod auth;
pub mod wire;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::engine::{Cors, IpRange, TransportKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use serde_json::{json, Value};

use crate::metrics::{labelled, Metrics};
use crate::socketio::observe::Observer;
use crate::socketio::{
    BroadcastOperator, Confinement, ConnectError, DisconnectReason, Event, Halley, Namespace,
    Socket,
};
use auth::{Credentials, Limiter, LoginStats, Sessions};

/// What the UI is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every socket, room and (with `events`) event, live.
    #[default]
    Development,
    /// `server_stats` only: the UI shows its dashboard and servers.
    Production,
}

/// The Admin UI's settings (`--admin-ui*` options).
#[derive(Debug, Clone)]
pub struct AdminUiConfig {
    /// The UI's namespace (default `/admin`); an application namespace of the same name is
    /// refused at start.
    pub namespace: String,
    /// Who may log in; `None` refuses every login unless `open`.
    pub credentials: Option<Credentials>,
    /// No login at all (`--admin-ui-no-auth`).
    pub open: bool,
    /// No actions: the UI may look, not disconnect or move sockets.
    pub readonly: bool,
    pub mode: Mode,
    /// Report events (`event_received`, `event_sent`) too, in development mode: one UI
    /// event per delivery, so off by default.
    pub events: bool,
    /// Origins the UI is served from (`scheme://host[:port]`), confined to its namespace.
    pub origins: Vec<String>,
    /// The origins the application allows (`--cors-origin`), which are never confined.
    pub app_cors: Cors,
    /// How this server is named on the UI's Servers page (default: the cluster node's name,
    /// else the host name).
    pub server_id: Option<String>,
}

impl Default for AdminUiConfig {
    fn default() -> Self {
        AdminUiConfig {
            namespace: "/admin".into(),
            credentials: None,
            open: false,
            readonly: false,
            mode: Mode::Development,
            events: false,
            origins: Vec::new(),
            app_cors: Cors::SameOrigin,
            server_id: None,
        }
    }
}

impl AdminUiConfig {
    /// The engine's origin policy: the application's, plus the UI's origins.
    pub fn engine_cors(&self) -> Cors {
        match (&self.app_cors, self.origins.is_empty()) {
            (cors, true) | (cors @ Cors::AnyOrigin, false) => cors.clone(),
            (Cors::SameOrigin, false) => Cors::Origins(self.origins.clone()),
            (Cors::Origins(app), false) => {
                Cors::Origins(app.iter().chain(&self.origins).cloned().collect())
            }
        }
    }

    /// `supportedFeatures`, in upstream's order.
    fn features(&self) -> Vec<&'static str> {
        let mut features = Vec::new();
        if !self.readonly {
            // No `EMIT`: the 0.5.1 UI never sends it, and it is not served.
            features.extend([
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
            ]);
        }
        features.push("AGGREGATED_EVENTS");
        if self.mode == Mode::Development {
            features.push("ALL_EVENTS");
        }
        features
    }
}

/// Why the UI could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the Admin UI's namespace {0} is an application namespace already: name it otherwise with --admin-ui-namespace")]
    Clash(String),
    #[error("the Admin UI's namespace must start with `/`, got {0:?}")]
    BadName(String),
}

/// The Admin UI served by one node.
pub struct AdminUi {
    config: AdminUiConfig,
    io: Halley,
    ns: OnceLock<Weak<Namespace>>,
    /// Authenticated UI sockets connected here.
    watchers: AtomicUsize,
    /// UI sockets connected to any node of the cluster, this one's included, as last counted.
    cluster_watchers: AtomicUsize,
    sessions: Sessions,
    limiter: Limiter,
    stats: LoginStats,
    /// Session ids handed out by logins whose CONNECT reply is still to go, by socket id.
    pending_sessions: Mutex<Vec<(String, String)>>,
    /// Sockets on an HTTP transport while the UI watches: an upgrade is reported when seen.
    upgrading: Mutex<Vec<(Weak<Socket>, &'static str)>>,
    server_id: String,
    started: Instant,
    /// Changes emitted in the current second: (its start, count).
    burst: Mutex<(Instant, u32)>,
    /// Changes were left out: a snapshot is due.
    snapshot_due: std::sync::atomic::AtomicBool,
    last_snapshot: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for AdminUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUi")
            .field("namespace", &self.config.namespace)
            .field("watchers", &self.watchers.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How often `server_stats` goes out (upstream's period).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Changes one node reports per second, at most, one by one; beyond, a snapshot.
const BURST: u32 = 1000;
/// How often transports are looked at for upgrades while the UI watches.
const UPGRADES_EVERY: Duration = Duration::from_millis(500);

/// Serves the Admin UI on `io`: its namespace, login, actions and events. Install it after the
/// application's namespaces (a clash is refused); needs a Tokio runtime (the stats ticker).
pub fn install(io: &Halley, config: AdminUiConfig) -> Result<Arc<AdminUi>, InstallError> {
    let name = config.namespace.clone();
    if !name.starts_with('/') {
        return Err(InstallError::BadName(name));
    }
    if io.serves(&name) {
        return Err(InstallError::Clash(name));
    }
    let server_id = config.server_id.clone().unwrap_or_else(hostname);
    let ui = Arc::new(AdminUi {
        io: io.clone(),
        ns: OnceLock::new(),
        watchers: AtomicUsize::new(0),
        cluster_watchers: AtomicUsize::new(0),
        sessions: Sessions::default(),
        limiter: Limiter::default(),
        stats: LoginStats::default(),
        pending_sessions: Mutex::default(),
        upgrading: Mutex::default(),
        server_id,
        started: Instant::now(),
        burst: Mutex::new((Instant::now(), 0)),
        snapshot_due: std::sync::atomic::AtomicBool::new(false),
        last_snapshot: Mutex::new(None),
        config,
    });
    let weak = Arc::downgrade(&ui);
    let ns = io.ns(&name, move |socket| {
        if let Some(ui) = weak.upgrade() {
            ui.welcome(socket);
        }
    });
    let _ = ui.ns.set(Arc::downgrade(&ns));
    ns.own_hooks_only();
    let weak = Arc::downgrade(&ui);
    ns.connect_hook(move |socket| {
        let ui = weak.upgrade();
        async move {
            match ui {
                Some(ui) => ui.login(&socket).await,
                None => Err(ConnectError::new("invalid credentials")),
            }
        }
    });
    if !ui.config.readonly {
        // `_join`/`_leave`: the names some servers and older notes use; the 0.5.1 UI sends
        // `join`/`leave` (only `disconnect` is reserved, hence `_disconnect`).
        for action in ["_disconnect", "join", "leave", "_join", "_leave"] {
            let weak = Arc::downgrade(&ui);
            ns.on(action, move |_socket, event| {
                if let Some(ui) = weak.upgrade() {
                    ui.act(action, &event);
                }
            });
        }
    }
    if !ui.config.origins.is_empty() {
        io.confine(Confinement {
            origins: ui.config.origins.clone(),
            app: ui.config.app_cors.clone(),
            ns: name,
        });
    }
    io.set_observer(Arc::clone(&ui) as Arc<dyn Observer>);
    tokio::spawn(tick(Arc::downgrade(&ui)));
    tokio::spawn(count_watchers(Arc::downgrade(&ui)));
    Ok(ui)
}

/// The host's name, as upstream's default `serverId`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "halley".into())
}

/// `server_stats` every 2 s, upgrades every 500 ms, for as long as the UI is installed.
async fn tick(ui: Weak<AdminUi>) {
    let mut totals = match ui.upgrade() {
        Some(ui) => wire::Totals::of(ui.io.engine().stats()),
        None => return,
    };
    let mut every = tokio::time::interval(UPGRADES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_stats = (STATS_EVERY.as_millis() / UPGRADES_EVERY.as_millis()) as u32;
    let mut n: u32 = 0;
    loop {
        every.tick().await;
        let Some(ui) = ui.upgrade() else { return };
        ui.report_upgrades();
        ui.send_snapshot();
        n += 1;
        if n % per_stats == 0 {
            let now = wire::Totals::of(ui.io.engine().stats());
            ui.emit_stats(now.since(&totals, wire::now_ms()));
            totals = now;
        }
    }
}

/// Counts the UI sockets of the whole cluster every 2 s: a node reports its sockets' changes
/// while a UI watches on any node (through the cluster, like every admin namespace emit).
/// Without a cluster this counts this node's only.
async fn count_watchers(ui: Weak<AdminUi>) {
    let mut every = tokio::time::interval(STATS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(ns) = ui.upgrade().and_then(|ui| ui.ns()) else {
            return;
        };
        let count = ns.broadcast().fetch_sockets().await.len();
        let Some(ui) = ui.upgrade() else { return };
        ui.cluster_watchers.store(count, Ordering::Relaxed);
    }
}

impl AdminUi {
    /// Authenticated UI sockets connected to this node now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Login outcomes (also in `/metrics`, through [`Metrics::with_admin_ui`]).
    pub fn login_stats(&self) -> &LoginStats {
        &self.stats
    }

    fn ns(&self) -> Option<Arc<Namespace>> {
        self.ns.get()?.upgrade()
    }

    /// Emits to every UI socket of this node and, in a cluster, of every node.
    fn emit(&self, event: &str, args: Vec<Value>) {
        if let Some(ns) = self.ns() {
            if let Err(error) = ns.broadcast().emit_args(event, args, Vec::new()) {
                tracing::debug!(%error, event, "admin UI event not sent");
            }
        }
    }

    /// Emits one change (a socket or room event), unless this node's changes passed
    /// [`BURST`] in the last second: then the UIs get a fresh `all_sockets` instead, at the
    /// next tick (at most one per [`STATS_EVERY`]), which the UI takes as its whole state. A UI
    /// reads about one frame per change; a crowd connecting or leaving at once would fill its
    /// outbox and cost its connection.
    fn emit_change(&self, event: &str, args: Vec<Value>) {
        let now = Instant::now();
        let within = {
            let mut window = self.burst.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(window.0) >= Duration::from_secs(1) {
                *window = (now, 0);
            }
            window.1 += 1;
            window.1 <= BURST
        };
        if within {
            self.emit(event, args);
        } else {
            self.snapshot_due.store(true, Ordering::Release);
        }
    }

    /// Sends every UI a fresh `all_sockets` when a burst of changes was left out.
    fn send_snapshot(self: &Arc<Self>) {
        let mut last = self.last_snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < STATS_EVERY)
            || !self.snapshot_due.swap(false, Ordering::AcqRel)
        {
            return;
        }
        *last = Some(Instant::now());
        let ui = Arc::clone(self);
        tokio::spawn(async move {
            let all = ui.all_sockets().await;
            ui.emit("all_sockets", vec![all]);
        });
    }

    fn emit_stats(&self, aggregated: Vec<Value>) {
        let engine = self.io.engine();
        let (clients, polling) = wire::clients(engine.stats());
        let namespaces: Vec<Value> = self
            .io
            .namespaces()
            .iter()
            .map(|ns| json!({ "name": ns.path(), "socketsCount": ns.len() }))
            .collect();
        let stats = json!({
            "serverId": self.server_id,
            "hostname": hostname(),
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": clients,
            "pollingClientsCount": polling,
            "aggregatedEvents": aggregated,
            "namespaces": namespaces,
        });
        self.emit("server_stats", vec![stats]);
    }

    /// Checks a UI socket's login: its session id, or user and password.
    async fn login(self: Arc<Self>, socket: &Arc<Socket>) -> Result<(), ConnectError> {
        let refused = || ConnectError::new("invalid credentials");
        if self.config.open {
            LoginStats::count(&self.stats.accepted);
            return Ok(());
        }
        let ip = self.client_ip(socket);
        if self.limiter.blocked(ip) {
            LoginStats::count(&self.stats.limited);
            return Err(ConnectError::new(
                "too many failed logins from this address: try again in a minute",
            ));
        }
        let auth = socket.auth();
        let session = auth.get("sessionId").and_then(Value::as_str);
        if session.is_some_and(|id| self.sessions.valid(id)) {
            LoginStats::count(&self.stats.accepted);
            return Ok(());
        }
        let user = auth.get("username").and_then(Value::as_str);
        let password = auth.get("password").and_then(Value::as_str);
        let verdict = match (&self.config.credentials, user, password) {
            (Some(credentials), Some(user), Some(password)) => {
                let (credentials, user, password) =
                    (credentials.clone(), user.to_owned(), password.to_owned());
                tokio::task::spawn_blocking(move || credentials.check_blocking(&user, &password))
                    .await
                    .unwrap_or(false)
            }
            _ => false,
        };
        if !verdict {
            self.limiter.failed(ip);
            LoginStats::count(&self.stats.refused);
            tracing::info!(%ip, ns = socket.ns(), "admin UI login refused");
            return Err(refused());
        }
        LoginStats::count(&self.stats.accepted);
        if let Some(id) = self.sessions.open() {
            self.pending_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((socket.id().to_owned(), id));
        }
        Ok(())
    }

    fn client_ip(&self, socket: &Socket) -> IpAddr {
        let trusted: &[IpRange] = &self.io.engine().config().trusted_proxies;
        socket.handshake().client_ip(trusted)
    }

    /// A UI socket connected: its session id, `config`, and in development mode every socket.
    fn welcome(self: &Arc<Self>, socket: &Arc<Socket>) {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        let ui = Arc::downgrade(self);
        socket.on_disconnect(move |_, _| {
            if let Some(ui) = ui.upgrade() {
                ui.watchers.fetch_sub(1, Ordering::AcqRel);
            }
        });
        let session = {
            let mut pending = self
                .pending_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let at = pending.iter().position(|(id, _)| id == socket.id());
            at.map(|at| pending.swap_remove(at).1)
        };
        if let Some(session) = session {
            let _ = socket.emit("session", &session);
        }
        let _ = socket.emit(
            "config",
            &json!({ "supportedFeatures": self.config.features() }),
        );
        if self.config.mode == Mode::Development {
            self.track_upgrades();
            let (ui, socket) = (Arc::clone(self), Arc::clone(socket));
            tokio::spawn(async move {
                let all = ui.all_sockets().await;
                let _ = socket.emit_args("all_sockets", vec![all], Vec::new());
            });
        }
    }

    /// Every socket of every node of the cluster, as the UI lists them (a node that does not
    /// answer in the cluster's request timeout is left out).
    async fn all_sockets(&self) -> Value {
        let mut list = Vec::new();
        for ns in self.io.namespaces() {
            let sockets = ns.broadcast().fetch_sockets().await;
            list.extend(sockets.into_iter().filter_map(|info| info.details));
        }
        Value::Array(list)
    }

    /// Watches this node's sockets on an HTTP transport for their upgrade from now on.
    fn track_upgrades(&self) {
        let mut upgrading = Vec::new();
        for ns in self.io.namespaces() {
            for socket in ns.broadcast().local().sockets() {
                if socket.transport() != TransportKind::WebSocket {
                    upgrading.push((Arc::downgrade(&socket), wire::transport_name(&socket)));
                }
            }
        }
        self.upgrading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(upgrading);
    }

    fn describe_socket(&self, socket: &Socket) -> Value {
        let config = self.io.engine().config();
        let ip = socket.handshake().client_ip(&config.trusted_proxies);
        wire::socket(socket, ip, &config.path)
    }

    /// Sends `socket_updated` for every watched socket whose transport changed.
    fn report_upgrades(&self) {
        let mut changed = Vec::new();
        {
            let mut upgrading = self.upgrading.lock().unwrap_or_else(|e| e.into_inner());
            if !self.watching() {
                upgrading.clear();
                return;
            }
            upgrading.retain_mut(|(weak, name)| {
                let Some(socket) = weak.upgrade().filter(|s| s.connected()) else {
                    return false;
                };
                let now = wire::transport_name(&socket);
                if now != *name {
                    changed
                        .push(json!({ "id": socket.id(), "nsp": socket.ns(), "transport": now }));
                    *name = now;
                }
                socket.transport() != TransportKind::WebSocket
            });
        }
        for update in changed {
            self.emit_change("socket_updated", vec![update]);
        }
    }

    /// Runs one of the UI's actions: `_disconnect(nsp, close, filter?)`, `join(nsp, room,
    /// filter?)`, `leave(nsp, room, filter?)`. The filter is a room (the UI names one socket by
    /// its own id room); a malformed call, or one for a namespace this server does not serve,
    /// does nothing.
    fn act(&self, action: &str, event: &Event) {
        let args = &event.args;
        let Some(nsp) = args.first().and_then(Value::as_str) else {
            return;
        };
        let filter = args.get(2).and_then(Value::as_str);
        let Some(ns) = self.io.of(nsp) else {
            tracing::debug!(action, nsp, "admin UI action for a namespace not served");
            return;
        };
        let op: BroadcastOperator = match filter {
            Some(room) => ns.to(room),
            None => ns.broadcast(),
        };
        tracing::info!(action, nsp, ?filter, "admin UI action");
        match (action, args.get(1)) {
            ("_disconnect", Some(Value::Bool(true))) => op.disconnect_connections(),
            ("_disconnect", Some(Value::Bool(false))) => op.disconnect(),
            ("join" | "_join", Some(Value::String(room))) => op.join(room),
            ("leave" | "_leave", Some(Value::String(room))) => op.leave(room),
            _ => tracing::debug!(action, "malformed admin UI action"),
        }
    }

    fn is_admin(&self, socket: &Socket) -> bool {
        socket.ns() == self.config.namespace
    }
}

impl Observer for AdminUi {
    fn watching(&self) -> bool {
        self.config.mode == Mode::Development
            && (self.watchers.load(Ordering::Relaxed) > 0
                || self.cluster_watchers.load(Ordering::Relaxed) > 0)
    }

    fn watching_events(&self) -> bool {
        self.config.events
    }

    fn socket_connected(&self, socket: &Arc<Socket>) {
        let transport = wire::transport_name(socket);
        if socket.transport() != TransportKind::WebSocket {
            self.upgrading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Arc::downgrade(socket), transport));
        }
        let serialized = self.describe_socket(socket);
        self.emit_change(
            "socket_connected",
            vec![serialized, Value::from(wire::iso(wire::now_ms()))],
        );
    }

    fn socket_disconnected(&self, socket: &Socket, reason: DisconnectReason, rooms: &[String]) {
        let now = Value::from(wire::iso(wire::now_ms()));
        self.emit_change(
            "socket_disconnected",
            vec![
                Value::from(socket.ns()),
                Value::from(socket.id()),
                Value::from(reason.as_str()),
                now.clone(),
            ],
        );
        // The UI drops a room's socket on these only, its own id room included.
        for room in rooms {
            self.emit_change(
                "room_left",
                vec![
                    Value::from(socket.ns()),
                    Value::from(room.as_str()),
                    Value::from(socket.id()),
                    now.clone(),
                ],
            );
        }
    }

    fn room_joined(&self, socket: &Socket, room: &str) {
        self.emit_change(
            "room_joined",
            vec![
                Value::from(socket.ns()),
                Value::from(room),
                Value::from(socket.id()),
                Value::from(wire::iso(wire::now_ms())),
            ],
        );
    }

    fn room_left(&self, socket: &Socket, room: &str) {
        self.emit_change(
            "room_left",
            vec![
                Value::from(socket.ns()),
                Value::from(room),
                Value::from(socket.id()),
                Value::from(wire::iso(wire::now_ms())),
            ],
        );
    }

    fn data_set(&self, socket: &Socket, data: &Value) {
        let data = match data {
            Value::Null => json!({}),
            data => data.clone(),
        };
        self.emit_change(
            "socket_updated",
            vec![json!({ "id": socket.id(), "nsp": socket.ns(), "data": data })],
        );
    }

    fn event_received(&self, socket: &Socket, event: &str, args: &[Value]) {
        if !self.is_admin(socket) {
            self.emit_event("event_received", socket, event, args);
        }
    }

    fn event_sent(&self, socket: &Socket, event: &str, args: &[Value]) {
        if !self.is_admin(socket) {
            self.emit_event("event_sent", socket, event, args);
        }
    }

    fn describe(&self, socket: &Arc<Socket>) -> Option<Value> {
        Some(self.describe_socket(socket))
    }
}

impl AdminUi {
    fn emit_event(&self, kind: &str, socket: &Socket, event: &str, args: &[Value]) {
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(Value::from(event));
        all.extend(args.iter().cloned());
        self.emit_change(
            kind,
            vec![
                Value::from(socket.ns()),
                Value::from(socket.id()),
                Value::Array(all),
                Value::from(wire::iso(wire::now_ms())),
            ],
        );
    }
}

impl Metrics {
    /// Adds the Admin UI's logins (`halley_admin_ui_logins_total{outcome}`) and its watchers
    /// (`halley_admin_ui_watchers`).
    pub fn with_admin_ui(self, ui: Arc<AdminUi>) -> Self {
        self.with_collector(AdminUiCollect(ui))
    }
}

#[derive(Debug)]
struct AdminUiCollect(Arc<AdminUi>);

impl Collector for AdminUiCollect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.0.stats;
        labelled(
            &mut encoder,
            "halley_admin_ui_logins",
            "Admin UI logins, by outcome (accepted; refused: wrong credentials or session; \
             limited: refused unheard after too many failures from the address)",
            "outcome",
            [
                ("accepted", stats.accepted.load(Ordering::Relaxed)),
                ("refused", stats.refused.load(Ordering::Relaxed)),
                ("limited", stats.limited.load(Ordering::Relaxed)),
            ],
        )?;
        let mut m = encoder.encode_descriptor(
            "halley_admin_ui_watchers",
            "Admin UI sockets connected to this node",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(self.0.watchers() as i64))
    }
}
