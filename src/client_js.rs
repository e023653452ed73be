//! The browser client, served at `<path>socket.io.js` (so pages written for Socket.IO load it
//! unchanged) and at `/halley.js`.
//!
//! The client is plain ES3 in `client-js/src/`, one file per concern and per transport,
//! concatenated here in a fixed order at compile time: no bundler, no build step.

/// The served script.
pub const SCRIPT: &str = concat!(
    include_str!("../client-js/src/head.js"),
    include_str!("../client-js/src/tail.js"),
);

/// Its content type.
pub const CONTENT_TYPE: &str = "application/javascript; charset=UTF-8";
