//! The Socket.IO v5 layer and the API applications program against.
//!
//! # Layout
//! - [`packet`]: the Socket.IO packet codec, pure.
//! - `client`: one Engine.IO connection as Socket.IO sees it (namespaces joined, binary
//!   reassembly); implements the engine's `Handler`.
//! - [`ns`]: namespaces, their middlewares and handlers, sockets, and the room index.
//! - [`socket`]: one client in one namespace: emit, acks, rooms, disconnect.
//! - [`broadcast`]: room selection and fan-out, encoding once.
//!
//! ```no_run
//! use halley::socketio::Halley;
//! use serde_json::json;
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = Halley::builder().build();
//! io.ns("/", |socket| {
//!     let _ = socket.emit("news", &json!({ "hello": "world" }));
//!     socket.on("my other event", |_socket, event| println!("{:?}", event.args));
//! });
//! io.to("room").emit("tick", &42).ok();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! halley::server::serve(listener, io.router(), Default::default(), halley::server::shutdown_signal()).await;
//! # Ok(()) }
//! ```

pub mod broadcast;
mod client;
pub mod ns;
pub mod packet;
pub mod socket;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use halley_transports::{Cors, Engine, EngineConfig, TransportKind};
use serde::Serialize;

pub use broadcast::BroadcastOperator;
pub use ns::{ConnectError, Namespace};
pub use socket::{AckError, AckReply, AckSender, DisconnectReason, EmitError, Event, Socket};

use crate::client_js;
use crate::server::Router;
use ns::{ConnectHandler, Fallback};

/// Socket.IO settings beyond the engine's.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// How long a new connection may take to join a namespace before it is closed.
    pub connect_timeout: Duration,
    /// The most binary attachments one packet may announce.
    pub max_attachments: usize,
    /// How long [`Socket::emit_with_ack`] waits.
    pub ack_timeout: Duration,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// An asynchronous connect check run for every namespace after its own middlewares.
pub type ConnectHook = Arc<
    dyn Fn(
            Arc<Socket>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ConnectError>> + Send>>
        + Send
        + Sync,
>;

/// State shared by the engine handler and the [`Halley`] handle.
pub(crate) struct IoShared {
    config: SocketIoConfig,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    dynamic: RwLock<Vec<(Predicate, ConnectHandler)>>,
    fallback: Fallback,
    hooks: RwLock<Vec<ConnectHook>>,
}

impl IoShared {
    fn hooks(&self) -> Vec<ConnectHook> {
        self.hooks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The namespace `path`, created on first use when a dynamic pattern accepts it.
    fn namespace(&self, path: &str) -> Option<Arc<Namespace>> {
        if let Some(ns) = self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Some(Arc::clone(ns));
        }
        let on_connect = self
            .dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(accepts, _)| accepts(path))
            .map(|(_, on_connect)| Arc::clone(on_connect))?;
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let ns = namespaces.entry(path.to_owned()).or_insert_with(|| {
            Namespace::new(path.to_owned(), on_connect, Arc::clone(&self.fallback))
        });
        Some(Arc::clone(ns))
    }
}

/// Builds a [`Halley`] server.
#[derive(Debug, Clone)]
pub struct Builder {
    engine: EngineConfig,
    socketio: SocketIoConfig,
}

impl Builder {
    /// The path served (default `/socket.io/`).
    pub fn path(mut self, path: &str) -> Self {
        let mut path = path.to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        self.engine.path = path;
        self
    }

    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.engine.session.ping_interval = d;
        self
    }

    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.engine.session.ping_timeout = d;
        self
    }

    pub fn upgrade_timeout(mut self, d: Duration) -> Self {
        self.engine.session.upgrade_timeout = d;
        self
    }

    /// The largest message or POST body accepted, in bytes (default 1,000,000).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.engine.max_payload = bytes;
        self
    }

    /// Packets a client's outbox holds before the overflow policy applies.
    pub fn max_outbox(mut self, packets: usize) -> Self {
        self.engine.session.max_outbox = packets;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.socketio.connect_timeout = d;
        self
    }

    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.socketio.ack_timeout = d;
        self
    }

    pub fn max_attachments(mut self, n: usize) -> Self {
        self.socketio.max_attachments = n;
        self
    }

    pub fn cors(mut self, cors: Cors) -> Self {
        self.engine.cors = cors;
        self
    }

    /// The transports offered (all by default).
    pub fn transports(mut self, transports: &[TransportKind]) -> Self {
        self.engine.transports = transports.to_vec();
        self
    }

    /// Bytes after which a streaming response ends and the client reopens it (default 128 KiB).
    pub fn stream_limit(mut self, bytes: usize) -> Self {
        self.engine.stream_limit = bytes;
        self
    }

    /// Replaces the whole engine configuration.
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    pub fn build(self) -> Halley {
        let shared = Arc::new(IoShared {
            config: self.socketio,
            namespaces: RwLock::default(),
            dynamic: RwLock::default(),
            fallback: Fallback::default(),
            hooks: RwLock::default(),
        });
        let engine = Engine::new(self.engine, Arc::clone(&shared) as _);
        Halley { shared, engine }
    }
}

/// A Socket.IO server: namespaces, broadcasts, and the engine that carries them.
#[derive(Clone)]
pub struct Halley {
    shared: Arc<IoShared>,
    engine: Engine,
}

impl Halley {
    pub fn builder() -> Builder {
        Builder {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                ..EngineConfig::default()
            },
            socketio: SocketIoConfig::default(),
        }
    }

    /// Declares the namespace `path` and returns it, to add middlewares and namespace-wide
    /// handlers. Declaring it again replaces its connect handler and keeps everything else
    /// (sockets, rooms, middlewares, handlers).
    pub fn ns(
        &self,
        path: &str,
        on_connect: impl Fn(&Arc<Socket>) + Send + Sync + 'static,
    ) -> Arc<Namespace> {
        let on_connect: ConnectHandler = Arc::new(on_connect);
        let mut namespaces = self
            .shared
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = namespaces.get(path) {
            ns.set_on_connect(on_connect);
            return Arc::clone(ns);
        }
        let ns = Namespace::new(
            path.to_owned(),
            on_connect,
            Arc::clone(&self.shared.fallback),
        );
        namespaces.insert(path.to_owned(), Arc::clone(&ns));
        ns
    }

    /// Accepts namespaces created on demand: the first CONNECT to a path that `accepts` creates
    /// it, with `on_connect` as its handler.
    pub fn dynamic_ns(
        &self,
        accepts: impl Fn(&str) -> bool + Send + Sync + 'static,
        on_connect: impl Fn(&Arc<Socket>) + Send + Sync + 'static,
    ) {
        self.shared
            .dynamic
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((Arc::new(accepts), Arc::new(on_connect)));
    }

    /// Adds an asynchronous connect check, run for a socket of any namespace after that
    /// namespace's middlewares (an authentication service, say). The CONNECT reply waits for it;
    /// an `Err` refuses the socket with CONNECT_ERROR.
    pub fn connect_hook<F, Fut>(&self, hook: F)
    where
        F: Fn(Arc<Socket>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        let hook: ConnectHook = Arc::new(move |socket| Box::pin(hook(socket)));
        self.shared
            .hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Handles events that no socket or namespace handler takes, in every namespace (the AMQP
    /// bridge forwards them to the backend). Replaces the previous one.
    pub fn on_unhandled(
        &self,
        handler: impl Fn(&Arc<Socket>, &str, Event) + Send + Sync + 'static,
    ) {
        *self
            .shared
            .fallback
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    }

    /// The namespace `path`, if declared (or created dynamically).
    pub fn of(&self, path: &str) -> Option<Arc<Namespace>> {
        self.shared
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    fn root(&self) -> BroadcastOperator {
        match self.of("/") {
            Some(ns) => ns.broadcast(),
            // Broadcasting on an undeclared root namespace reaches nobody.
            None => Namespace::new(
                "/".into(),
                Arc::new(|_: &Arc<Socket>| {}),
                Fallback::default(),
            )
            .broadcast(),
        }
    }

    /// A broadcast to every socket of the root namespace (narrow it with `to` / `except`).
    pub fn broadcast(&self) -> BroadcastOperator {
        self.root()
    }

    /// A broadcast to `room` in the root namespace.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.root().to(room)
    }

    /// Emits to every socket of the root namespace.
    pub fn emit(&self, event: &str, data: &impl Serialize) -> Result<usize, EmitError> {
        self.root().emit(event, data)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A router serving this server's path and the browser client (at `<path>socket.io.js`
    /// and `/halley.js`), to hand to [`crate::server::serve`].
    pub fn router(&self) -> Router {
        let script = bytes::Bytes::from_static(client_js::SCRIPT.as_bytes());
        let path = format!("{}socket.io.js", self.engine.config().path);
        Router::new(self.engine.clone())
            .page(&path, client_js::CONTENT_TYPE, script.clone())
            .page("/halley.js", client_js::CONTENT_TYPE, script)
    }
}
