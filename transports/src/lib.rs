//! Engine.IO v4 for Halley: everything below Socket.IO.
//!
//! # Layout
//!
//! Bottom-up: a module imports only modules of the groups above its own, never the other way
//! (the workspace's `tests/layering.rs` holds the same table and fails on an import that
//! climbs, or a cycle).
//!
//! 1. Pure codecs and ids: bytes in, bytes out.
//!    - [`packet`]: the packet and payload codec.
//!    - [`sid`]: random session ids.
//!    - [`headers`]: a session's opening request headers, kept compact for its life.
//! 2. Pure protocol state.
//!    - [`session`]: the session state machine (time is an input): outbox, receivers,
//!      heartbeat, upgrade, resume.
//!    - [`framing`]: the bytes of JSONP, forever-frame (`iframe`, `htmlfile`), SSE and
//!      xhr-streaming.
//!    - [`admission`]: the session limits (total, per client address) and which address a
//!      handshake counts against (trusted proxies, `X-Forwarded-For`).
//! 3. Origin policy.
//!    - [`origin`]: whether the page behind a WebSocket handshake, a POST or a script-like GET
//!      may make it (`Origin`, `Referer`, `Sec-Fetch-Site`, the public origin a trusted proxy
//!      names), pure.
//! 4. Settings, counters, HTTP pieces.
//!    - [`config`]: [`EngineConfig`], the settings, with the reference server's defaults.
//!    - [`stats`]: per-transport counters (atomics) for metrics.
//!    - [`http`]: the response body, [`EngineError`] and its one conversion to a response, the
//!      headers every response gets (no caching, no sniffing, CORS).
//! 5. HTTP/1 connection.
//!    - [`h1`]: the server's own HTTP/1.1 connection, for parked requests (long polls,
//!      streams): no buffer held while a request waits; WebSocket handshakes, chunked uploads
//!      and large bodies are handed to hyper with the bytes read.
//! 6. Handshake.
//!    - [`handshake`]: the query a request carries, what a session keeps of its opening
//!      request, the open packet.
//! 7. Socket.
//!    - [`socket`]: a session as the IO side sees it (lock, wake-ups), and the [`Handler`] the
//!      application gives the engine.
//! 8. Registry.
//!    - [`registry`]: the one sid → session map every transport shares.
//! 9. Shared state and session lifecycle.
//!    - `lifecycle`: the state every request and task shares; a session opened, its timers
//!      driven, and the one place it ends.
//! 10. Transports, each its IO and quirks only.
//!    - `transport`: the module that holds them, nothing else.
//!    - `transport::polling`: XHR and JSONP long-polling, and every upstream POST.
//!    - `transport::forward` (public as [`forward`]): a request for a session of another node
//!      of a cluster, passed to that node over pooled keep-alive connections, with the mark
//!      that vouches for it.
//! 11. Transports that use `transport::polling` (streaming its refusals; the WebSocket probe's
//!     tests, its long poll).
//!     - `transport::streaming`: the four streaming receivers.
//!     - `transport::websocket`: a WebSocket opening a session, probing one to upgrade it, or
//!       resuming one.
//! 12. Dispatch.
//!     - [`engine`]: the hyper-facing entry: parse a request, check it, dispatch it to a
//!       transport.
//!
//! ```no_run
//! use std::sync::Arc;
//! use halley_engine::{Engine, EngineConfig, Handler, Message, Socket, CloseReason};
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
pub mod h1;
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
