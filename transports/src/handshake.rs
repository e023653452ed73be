//! What a request says and what a handshake is answered: the query parameters the engine reads
//! ([`Query`]), what a session keeps of its opening request ([`Handshake`]), and the open
//! packet (`handshake_packet`). Pure: no IO, no session.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::admission::{self, IpRange};
use crate::config::EngineConfig;
use crate::headers::Headers;
use crate::packet::{Packet, Str};
use crate::session::TransportKind;
use crate::sid::Sid;

/// The query parameters the engine reads, borrowed from the request URI.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub eio: Option<&'a str>,
    pub transport: Option<&'a str>,
    pub sid: Option<&'a str>,
    /// The JSONP / forever-frame callback index.
    pub j: Option<&'a str>,
    /// Transports the client gave up before this handshake: `name:reason,...`.
    pub tried: Option<&'a str>,
    /// A resuming client's confirmed position (see [`Session`](crate::session::Session)'s
    /// resume); on a handshake, the request to resume at all.
    pub ack: Option<&'a str>,
    /// The position of a resuming client's first upstream packet in this POST.
    pub seq: Option<&'a str>,
    /// The `document.domain` of a forever frame's page, when it relaxed it.
    pub domain: Option<&'a str>,
    /// The cache-buster clients put on every HTTP request, unique per request: a GET that
    /// carries the previous one's is that GET retried by a proxy.
    pub t: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Reads `EIO`, `transport`, `sid`, `j`, `tried`, `ack`, `seq`, `domain` and `t`; anything
    /// else is ignored.
    /// Values are taken verbatim: every valid value is plain ASCII, so an encoded one is invalid.
    pub fn parse(query: &'a str) -> Self {
        let mut out = Query::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "EIO" => out.eio = Some(value),
                "transport" => out.transport = Some(value),
                "sid" => out.sid = Some(value),
                "j" => out.j = Some(value),
                "tried" => out.tried = Some(value),
                "ack" => out.ack = Some(value),
                "seq" => out.seq = Some(value),
                "domain" => out.domain = Some(value),
                "t" => out.t = Some(value),
                _ => {}
            }
        }
        out
    }

    /// The request's stamp (`t`) as a 64-bit FNV-1a hash, so a session keeps 8 bytes of it
    /// whatever its length. A collision could only make a client's own GET look retried.
    pub fn stamp(&self) -> Option<u64> {
        let t = self.t.filter(|t| !t.is_empty())?;
        Some(t.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        }))
    }
}

/// What the client's opening request carried, kept for the application (auth, cookies, logs).
#[derive(Debug, Clone)]
pub struct Handshake {
    pub remote_addr: SocketAddr,
    pub headers: Headers,
    /// The raw query string of the opening request.
    pub query: String,
}

impl Handshake {
    /// The client's IP address: the peer's, or, when the peer is one of the `trusted` proxies,
    /// the client its `X-Forwarded-For` names (the rule of [`crate::admission`]); the proxy's
    /// own when it names none.
    pub fn client_ip(&self, trusted: &[IpRange]) -> IpAddr {
        admission::real_client(self.remote_addr.ip(), &self.headers, trusted)
            .unwrap_or_else(|| self.remote_addr.ip().to_canonical())
    }
}

/// The open packet: the session's id and the settings a client must know, as JSON.
pub(crate) fn handshake_packet(
    config: &EngineConfig,
    sid: &Sid,
    transport: TransportKind,
) -> Packet {
    // Field order is the wire order the reference server uses.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Open<'a> {
        sid: &'a str,
        upgrades: &'a [&'a str],
        ping_interval: u128,
        ping_timeout: u128,
        max_payload: usize,
    }
    let upgrades: &[&str] =
        if transport != TransportKind::WebSocket && config.enabled(TransportKind::WebSocket) {
            &["websocket"]
        } else {
            &[]
        };
    let json = serde_json::to_string(&Open {
        sid: sid.as_str(),
        upgrades,
        ping_interval: config.session.ping_interval.as_millis(),
        ping_timeout: config.session.ping_timeout.as_millis(),
        max_payload: config.max_payload,
    })
    .unwrap_or_default();
    Packet::Open(Str::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_reads_known_keys_only() {
        let q = Query::parse("EIO=4&transport=polling&t=Nx1&sid=abc");
        assert_eq!(q.eio, Some("4"));
        assert_eq!(q.transport, Some("polling"));
        assert_eq!(q.sid, Some("abc"));
        assert_eq!(Query::parse(""), Query::default());
        assert_eq!(Query::parse("EIO").eio, Some(""));
    }

    #[test]
    fn handshake_json_has_reference_key_order() {
        let config = EngineConfig::default();
        let sid = Sid::random().unwrap();
        let Packet::Open(json) = handshake_packet(&config, &sid, TransportKind::Polling) else {
            unreachable!()
        };
        assert_eq!(
            json.as_str(),
            format!(
                r#"{{"sid":"{sid}","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
            )
        );
        let Packet::Open(json) = handshake_packet(&config, &sid, TransportKind::WebSocket) else {
            unreachable!()
        };
        assert!(json.contains(r#""upgrades":[]"#));
    }
}
