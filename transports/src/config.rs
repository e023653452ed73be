//! [`EngineConfig`]: the Engine.IO settings, with the reference server's defaults.

use std::time::Duration;

use crate::admission::IpRange;
use crate::origin::Cors;
use crate::session::{SessionConfig, TransportKind};

/// Engine.IO settings. The defaults are the reference server's.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The path served, with its trailing slash (`/engine.io/`, `/socket.io/`).
    pub path: String,
    pub session: SessionConfig,
    /// The largest POST body or WebSocket message accepted, in bytes (advertised as `maxPayload`).
    pub max_payload: usize,
    /// How long a POST's body may take to arrive once its headers have: a client that stops
    /// sending mid-body is answered 408 and its session closed, rather than holding the
    /// request for as long as the session lives (which a WebSocket upgrade keeps alive).
    pub body_read_timeout: Duration,
    /// Which pages may connect (WebSocket, POST, script-like GETs: see [`crate::origin`]) and
    /// read responses cross-origin.
    pub cors: Cors,
    /// The transports offered; all by default, since reaching old browsers is the point.
    pub transports: Vec<TransportKind>,
    /// Whether `polling` may be answered as JSONP (`j=N`).
    pub jsonp: bool,
    /// Bytes after which a streaming response ends (the client reopens it), so the browser's
    /// memory for one response stays bounded.
    pub stream_limit: usize,
    /// Packets per long-polling response at most; the rest wait for the next poll.
    /// python-engineio's client refuses a payload of more than 16 packets, so that is the default.
    pub max_poll_packets: usize,
    /// tungstenite's read buffer per WebSocket connection, held for the connection's life.
    /// Small (128 bytes) so idle connections stay cheap: the socket itself is read in 8 KiB
    /// chunks through a stack buffer, and tungstenite takes its pieces from that in memory.
    pub ws_read_buffer: usize,
    /// How soon after a write a WebSocket connection writes again, at the earliest: frames
    /// queued meanwhile wait and go together, in one write. A connection that wrote nothing
    /// for this long writes at once, so only a client receiving faster than one frame per
    /// interval waits, by less than the interval. Under a steady feed this turns one syscall
    /// (and one TCP segment) per message into one per interval, which is most of a delivery's
    /// cost (`benches/NOTES.md`). Answers to what the client sent (acks, replies) are never
    /// held. Zero: every frame is written as soon as it is queued.
    pub ws_write_interval: Duration,
    /// Sessions held at once, at most; a handshake beyond is refused with 503 (WebSocket
    /// handshakes before the upgrade). Lingering sessions (closed, their close packet not yet
    /// read) count until they are gone.
    pub max_sessions: usize,
    /// Sessions one client address holds at once, at most (IPv6: one /64); 503 beyond. See
    /// [`crate::admission`] for the address a request counts against.
    pub max_sessions_per_ip: usize,
    /// Peers whose `X-Forwarded-For` names the client, and whose `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` name the public origin (reverse proxies); loopback by default.
    pub trusted_proxies: Vec<IpRange>,
    /// Put before every session id: a cluster node's name, so that every node can tell which
    /// one owns a session. Empty outside a cluster.
    pub sid_prefix: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: "/engine.io/".into(),
            session: SessionConfig::default(),
            max_payload: 1_000_000,
            body_read_timeout: Duration::from_secs(30),
            cors: Cors::default(),
            transports: TransportKind::ALL.to_vec(),
            jsonp: true,
            stream_limit: 128 * 1024,
            max_poll_packets: 16,
            ws_read_buffer: 128,
            ws_write_interval: Duration::from_millis(5),
            max_sessions: 100_000,
            max_sessions_per_ip: 1_000,
            trusted_proxies: IpRange::LOOPBACK.to_vec(),
            sid_prefix: String::new(),
        }
    }
}

impl EngineConfig {
    pub fn enabled(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }
}
