//! Halley: a comet server that speaks Socket.IO to every browser, IE6 to today's.
//!
//! # Layout
//! Layers only look down, bottom first: the Engine.IO crate (`halley-engine`, re-exported
//! as [`engine`]) → [`socketio`] → [`bridge`] → the server and the binary ([`server`],
//! [`admin`], [`metrics`], [`demo`], [`config`], [`memory`], [`client_js`]).
//!
//! - [`admin`]: the admin listener (`/publish`, `/sockets`, `/metrics`, detailed health) and the
//!   guard every admin request passes.
//! - [`socketio`]: the Socket.IO v5 layer and the application API ([`socketio::Halley`]).
//! - [`bridge`]: the RabbitMQ bridge, the cluster link (membership, signed envelopes, forwarding
//!   marks) and its shared recovery log (a RabbitMQ stream), the HTTP publish API, health
//!   endpoints.
//! - [`client_js`]: the ES3 browser client, concatenated from `client-js/src/`.
//! - [`config`]: command-line and environment options.
//! - [`demo`]: the live transport comparison page and its `/demo` namespace.
//! - [`memory`]: the binaries' allocator and the trimmer that returns freed memory to the OS.
//! - [`metrics`]: Prometheus metrics, rendered at scrape time from atomic counters.
//! - [`server`]: the listener, hyper HTTP/1.1 with upgrades, routing, graceful shutdown.
//! - The Engine.IO layer (packets, sessions, transports) is the `halley-engine` crate,
//!   re-exported as [`engine`].

pub mod admin;
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
