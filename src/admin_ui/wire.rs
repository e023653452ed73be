//! What the Admin UI reads, as JSON: a socket as it lists it, its transport's name, the
//! timestamps it parses, and `server_stats`. Pure: no IO, no state.

use std::net::IpAddr;

use crate::engine::stats::EngineStats;
use crate::engine::stats::CLOSE_REASONS;
use crate::engine::TransportKind;
use serde_json::{json, Map, Value};

use crate::socketio::Socket;

/// Request headers shown to the UI with their value hidden: the users' session cookies and
/// credentials are not the operator's to copy (upstream shows them).
const HIDDEN_HEADERS: [&str; 3] = ["cookie", "authorization", "proxy-authorization"];

/// The name of the transport a socket's connection uses now: Engine.IO's, with JSONP told
/// apart from XHR polling (the UI shows names it does not know as they are).
pub fn transport_name(socket: &Socket) -> &'static str {
    match socket.transport() {
        TransportKind::Polling if is_jsonp(&socket.handshake().query) => "jsonp",
        kind => kind.name(),
    }
}

fn is_jsonp(query: &str) -> bool {
    crate::engine::handshake::Query::parse(query).j.is_some()
}

/// A socket as the UI lists it (upstream's `SerializedSocket`, fields in its order).
/// `address` is the client's as Halley counts it (behind a `trusted` proxy, the one its
/// `X-Forwarded-For` names).
/// `path` is the engine's, for the handshake's `url`.
pub fn socket(socket: &Socket, address: IpAddr, path: &str) -> Value {
    let handshake = socket.handshake();
    let mut headers = Map::new();
    for (name, value) in handshake.headers.iter() {
        let value = if HIDDEN_HEADERS.contains(&name) {
            "(hidden)".into()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        match headers.get_mut(name) {
            Some(Value::String(first)) => {
                first.push_str(", ");
                first.push_str(&value);
            }
            _ => {
                headers.insert(name.to_owned(), Value::String(value));
            }
        }
    }
    let mut query = Map::new();
    for (key, value) in form_urlencoded::parse(handshake.query.as_bytes()) {
        let value = Value::String(value.into_owned());
        match query.get_mut(key.as_ref()) {
            Some(Value::Array(list)) => list.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                query.insert(key.into_owned(), value);
            }
        }
    }
    let issued = socket.issued();
    let url = format!("{path}?{}", handshake.query);
    let data = match socket.data() {
        Value::Null => json!({}),
        data => data,
    };
    json!({
        "id": socket.id(),
        "clientId": client_id(socket.connection_id()),
        "transport": transport_name(socket),
        "nsp": socket.ns(),
        "data": data,
        "handshake": {
            "address": address.to_canonical().to_string(),
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": false,
            "time": js_date(issued),
            "url": url,
            "xdomain": handshake.headers.get("origin").is_some(),
        },
        "rooms": socket.rooms(),
    })
}

/// The UI groups sockets into clients by this: the first 12 characters of the Engine.IO
/// session id, as upstream does.
pub fn client_id(connection: &str) -> &str {
    connection.get(..12).unwrap_or(connection)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ms` (since the Unix epoch) as JavaScript's `Date.prototype.toISOString` writes it, which
/// is how a `Date` reaches the UI through JSON: `2026-12-06T08:21:41.123Z`.
pub fn iso(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// `ms` as JavaScript's `Date.prototype.toString` writes it in UTC, the handshake's `time`:
/// `Sun Dec 06 2026 08:21:41 GMT+0000 (Coordinated Universal Time)`.
pub fn js_date(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms / 1000;
    let (y, mo, d, h, mi, s) = civil(secs);
    let weekday = DAYS[((secs / 86_400) % 7) as usize];
    let month = MONTHS[(mo - 1) as usize];
    format!("{weekday} {month} {d:02} {y:04} {h:02}:{mi:02}:{s:02} GMT+0000 (Coordinated Universal Time)")
}

/// Year, month, day, hour, minute, second of `secs` since the Unix epoch (UTC), by Howard
/// Hinnant's days-from-civil inverse.
fn civil(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The engine's running totals that `server_stats` reports the growth of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    connections: u64,
    closes: [u64; CLOSE_REASONS.len()],
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Totals {
    pub fn of(stats: &EngineStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let mut totals = Totals::default();
        for kind in TransportKind::ALL {
            let t = stats.transport(kind);
            totals.connections += t.handshakes.load(Relaxed);
            totals.packets_in += t.packets_in.load(Relaxed);
            totals.packets_out += t.packets_out.load(Relaxed);
            totals.bytes_in += t.bytes_in.load(Relaxed);
            totals.bytes_out += t.bytes_out.load(Relaxed);
        }
        for (slot, reason) in totals.closes.iter_mut().zip(CLOSE_REASONS) {
            *slot = stats.closes(reason);
        }
        totals
    }

    /// `aggregatedEvents`: what grew since `before`, stamped with the second of `now_ms`.
    pub fn since(&self, before: &Totals, now_ms: u64) -> Vec<Value> {
        let timestamp = now_ms / 1000 * 1000;
        let mut events = Vec::new();
        let mut add = |kind: &str, sub: Option<&str>, count: u64| {
            if count > 0 {
                let mut event = json!({ "timestamp": timestamp, "type": kind });
                if let Some(sub) = sub {
                    event["subType"] = Value::from(sub);
                }
                event["count"] = Value::from(count);
                events.push(event);
            }
        };
        add(
            "rawConnection",
            None,
            self.connections.saturating_sub(before.connections),
        );
        for (i, reason) in CLOSE_REASONS.iter().enumerate() {
            add(
                "rawDisconnection",
                Some(reason.as_str()),
                self.closes[i].saturating_sub(before.closes[i]),
            );
        }
        add(
            "packetsIn",
            None,
            self.packets_in.saturating_sub(before.packets_in),
        );
        add(
            "packetsOut",
            None,
            self.packets_out.saturating_sub(before.packets_out),
        );
        add(
            "bytesIn",
            None,
            self.bytes_in.saturating_sub(before.bytes_in),
        );
        add(
            "bytesOut",
            None,
            self.bytes_out.saturating_sub(before.bytes_out),
        );
        events
    }
}

/// Engine.IO connections open now, and those of them on an HTTP transport: the UI's
/// dashboard counts the rest as WebSocket, so every HTTP transport (polling, JSONP,
/// forever-frames, SSE, XHR streaming) counts as polling there.
pub fn clients(stats: &EngineStats) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut all = 0;
    let mut http = 0;
    for kind in TransportKind::ALL {
        let open = stats.transport(kind).sessions.load(Relaxed).max(0) as u64;
        all += open;
        if kind != TransportKind::WebSocket {
            http += open;
        }
    }
    (all, http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_javascript_writes_them() {
        // new Date(1796545301123).toISOString() and .toString() with TZ=UTC.
        assert_eq!(iso(1_796_545_301_123), "2026-12-06T08:21:41.123Z");
        assert_eq!(
            js_date(1_796_545_301_123),
            "Sun Dec 06 2026 08:21:41 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn client_ids_are_the_first_twelve_characters() {
        assert_eq!(client_id("abcdefghijklmnop"), "abcdefghijkl");
        assert_eq!(client_id("short"), "short");
    }

    #[test]
    fn aggregated_events_name_what_grew() {
        let before = Totals::default();
        let after = Totals {
            connections: 2,
            bytes_in: 10,
            closes: [0, 1, 0, 0, 0, 0, 0],
            ..Totals::default()
        };
        let events = after.since(&before, 1_796_545_301_123);
        assert_eq!(
            events,
            vec![
                json!({"timestamp": 1_796_545_301_000_u64, "type": "rawConnection", "count": 2}),
                json!({"timestamp": 1_796_545_301_000_u64, "type": "rawDisconnection", "subType": "ping timeout", "count": 1}),
                json!({"timestamp": 1_796_545_301_000_u64, "type": "bytesIn", "count": 10}),
            ]
        );
    }
}
