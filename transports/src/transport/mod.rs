//! The transports, each its IO and its quirks only: the session decides who may read and when
//! ([`crate::session`]), and the socket wakes whoever waits ([`crate::socket`]).
//!
//! - [`polling`]: XHR and JSONP long-polling, and the upstream POSTs of every HTTP transport.
//! - [`forward`]: a request for a session of another node, passed to that node.
//! - [`streaming`]: the four streaming receivers (`iframe`, `htmlfile`, `sse`, `xhr-streaming`).
//! - [`websocket`]: a WebSocket connection, opening a session or probing one to upgrade it.

pub mod forward;
pub(crate) mod polling;
pub(crate) mod streaming;
pub(crate) mod websocket;
