//! The browser client, served at `<path>socket.io.js` (so pages written for Socket.IO load it
//! unchanged) and at `/halley.js`.
//!
//! The client is plain ES3 in `client-js/src/`, one file per concern and per transport,
//! concatenated here in a fixed order at compile time: no bundler, no build step.

/// The served script.
pub const SCRIPT: &str = concat!(
    include_str!("../client-js/src/head.js"),
    include_str!("../client-js/src/util.js"),
    include_str!("../client-js/src/json.js"),
    include_str!("../client-js/src/emitter.js"),
    include_str!("../client-js/src/parser.js"),
    include_str!("../client-js/src/xhr.js"),
    include_str!("../client-js/src/transport.js"),
    include_str!("../client-js/src/transports/http.js"),
    include_str!("../client-js/src/transports/polling.js"),
    include_str!("../client-js/src/transports/jsonp.js"),
    include_str!("../client-js/src/transports/stream.js"),
    include_str!("../client-js/src/transports/xhr-streaming.js"),
    include_str!("../client-js/src/transports/sse.js"),
    include_str!("../client-js/src/transports/iframe.js"),
    include_str!("../client-js/src/transports/htmlfile.js"),
    include_str!("../client-js/src/transports/websocket.js"),
    include_str!("../client-js/src/engine.js"),
    include_str!("../client-js/src/manager.js"),
    include_str!("../client-js/src/socket.js"),
    include_str!("../client-js/src/index.js"),
    include_str!("../client-js/src/tail.js"),
);

/// Its content type.
pub const CONTENT_TYPE: &str = "application/javascript; charset=UTF-8";
