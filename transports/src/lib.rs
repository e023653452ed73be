//! Engine.IO v4 for Halley: everything below Socket.IO.
//!
//! # Layout
//! - [`packet`]: the packet and payload codec, pure (bytes in, bytes out).
//! - [`session`]: the session state machine, pure (time is an input): outbox, receivers,
//!   heartbeat, upgrade.
//! - [`sid`]: random session ids.
//! - [`registry`]: the one sid → session map every transport shares.
//! - [`admission`]: the session limits (total, per client address) and which address a
//!   handshake counts against (trusted proxies, `X-Forwarded-For`).
//! - [`origin`]: the origin policy: whether the page behind a WebSocket handshake, a POST
//!   or a script-like GET may make it (`Origin`, `Referer`, `Sec-Fetch-Site`, the public
//!   origin a trusted proxy names), pure.
//! - [`stats`]: per-transport counters (atomics) for metrics.
//! - [`socket`]: a session as the IO side sees it: lock, wake-ups, the timer driver, the one
//!   place a session ends.
//! - [`framing`]: the bytes of JSONP, forever-frame (`iframe`, `htmlfile`), SSE and
//!   xhr-streaming, pure.
//! - `polling` (XHR and JSONP, and every upstream POST), `streaming` (the four streaming
//!   receivers), `websocket`: the transports, each its IO and quirks only.
//! - [`forward`]: a request for a session of another node of a cluster, passed to that node
//!   over pooled keep-alive connections, with the mark that vouches for it.
//! - [`engine`]: the hyper-facing entry: parse a request, dispatch it, turn errors into
//!   responses.
//!
//! ```no_run
//! use std::sync::Arc;
//! use halley_transports::{Engine, EngineConfig, Handler, Message, Socket, CloseReason};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_open(&self, _socket: &Arc<Socket>) {}
//!     fn on_message(&self, socket: &Arc<Socket>, message: Message) {
//!         let _ = match message {
//!             Message::Text(text) => socket.send_text(&text),
//!             Message::Binary(data) => socket.send_binary(data),
//!         };
//!     }
//!     fn on_close(&self, _socket: &Arc<Socket>, _reason: CloseReason) {}
//! }
//! let engine = Engine::new(EngineConfig::default(), Arc::new(Echo));
//! ```

pub mod admission;
pub mod config;
pub mod engine;
pub mod framing;
pub mod handshake;
pub mod headers;
pub mod http;
mod lifecycle;
pub mod origin;
pub mod packet;
pub mod registry;
pub mod session;
pub mod sid;
pub mod socket;
pub mod stats;
mod transport;

pub use admission::{IpRange, Refusal};
pub use config::EngineConfig;
pub use engine::Engine;
pub use handshake::Handshake;
pub use headers::Headers;
pub use http::{full, Body, EngineError};
pub use origin::Cors;
pub use packet::{Frame, Packet, Str};
pub use session::{CloseReason, PushError, SessionConfig, TransportKind};
pub use socket::{Handler, Message, Socket};
pub use transport::forward;
