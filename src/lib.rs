//! Halley: a comet server that speaks Socket.IO to every browser, IE6 to today's.
//!
//! # Layout
//!
//! Bottom-up, by group: a top-level module and the files of its folder are one group, whose
//! files import one another freely; a group imports only groups of the layers listed before
//! its own, never the other way (the workspace's `tests/layering.rs` holds the same table and
//! fails on an import that climbs, or a cycle).
//!
//! 1. The Engine.IO layer.
//!    - [`engine`]: packets, sessions, transports: the `halley-engine` crate, re-exported.
//! 2. Socket.IO.
//!    - [`socketio`]: the Socket.IO v5 layer and the application API ([`socketio::Halley`]).
//! 3. Bridges.
//!    - [`bridge`]: the RabbitMQ bridge, the cluster link (membership, signed envelopes,
//!      forwarding marks) and its shared recovery log (a RabbitMQ stream), the HTTP publish
//!      API, health endpoints.
//! 4. Self-contained pieces, importing nothing of the crate.
//!    - [`client_js`]: the ES3 browser client, concatenated from `client-js/src/`.
//!    - [`memory`]: the binaries' allocator and the trimmer that returns freed memory to the OS.
//! 5. Metrics.
//!    - [`metrics`]: Prometheus metrics, rendered at scrape time from atomic counters.
//! 6. HTTP server.
//!    - [`server`]: the listener (the own HTTP/1.1 layer, hyper for upgrades), routing,
//!      graceful shutdown.
//! 7. Admin listener.
//!    - [`admin`]: the admin listener (`/publish`, `/sockets`, `/metrics`, detailed health), the
//!      guard every admin request passes, and its refusals' metrics (`Metrics::with_admin`).
//! 8. Admin UI.
//!    - [`admin_ui`]: the server side of the official Socket.IO Admin UI: its namespace,
//!      login, actions, and the events its observer turns socket and room changes into.
//! 9. Demo.
//!    - [`demo`]: the live transport comparison page and its `/demo` namespace.
//! 10. Options.
//!    - [`config`]: command-line and environment options.
//!
//! The binary (`src/main.rs`) is a crate of its own, on top: it uses this one as `halley`.

pub mod admin;
pub mod admin_ui;
pub mod bridge;
pub mod client_js;
pub mod config;
pub mod demo;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod socketio;

pub use socketio::Halley;

pub use halley_engine as engine;
