//! Rooms for browsers in no-code mode: the `subscribe` / `unsubscribe` convention.
//!
//! A client emits `subscribe` with a room name (or an array of names), optionally with an ack;
//! it joins each room that is allowed, either by a configured pattern (`*` matches any run of
//! characters: `news.*`, `user-*`) or because the auth hook's answer listed it for this socket.
//! The ack gets `{"ok": true, "rooms": [joined...]}` or, when nothing was allowed,
//! `{"ok": false, "error": "not allowed", "rooms": []}`. A room beyond the server's room limits
//! stops the request there: `{"ok": false, "error": "too many rooms", "limit": 128, "rooms":
//! [joined before it...]}` (or `"room name too long"` with the limit in bytes); the rooms named
//! after it are not tried. `unsubscribe` leaves the rooms named and acks `{"ok": true, "rooms":
//! [left...]}`. A socket's own id room cannot be left this way.
//!
//! A room named like a socket id is never joined this way, whatever the patterns say: it is
//! another socket's private room, and joining it would show that socket's messages to the
//! joiner. The name's shape decides ([`Sid::has_shape`]), not a lookup, because the socket may
//! live on another node or connect later.

use std::sync::Arc;

use crate::engine::sid::Sid;
use serde_json::{json, Value};

use crate::socketio::{Event, Namespace, Socket};

/// Which rooms a client may subscribe to by itself.
#[derive(Debug, Clone, Default)]
pub struct SubscribePolicy {
    pub patterns: Vec<String>,
}

impl SubscribePolicy {
    /// Whether `room` may be joined, `granted` being the socket's data (the auth hook's answer).
    fn allows(&self, granted: &Value, room: &str) -> bool {
        if room.is_empty() || Sid::has_shape(room) {
            return false;
        }
        let by_hook = granted["rooms"]
            .as_array()
            .is_some_and(|rooms| rooms.iter().any(|r| r == room));
        by_hook || self.patterns.iter().any(|p| glob(p, room))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn rooms_of(event: &Event) -> Vec<String> {
    match event.args.first() {
        Some(Value::String(room)) => vec![room.clone()],
        Some(Value::Array(rooms)) => rooms
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Installs the `subscribe` / `unsubscribe` handlers on `ns`.
pub fn install(ns: &Namespace, policy: SubscribePolicy) {
    let policy = Arc::new(policy);
    ns.on("subscribe", move |socket: &Arc<Socket>, event: Event| {
        // Read once: a request may name many rooms.
        let granted = socket.data();
        let mut joined = Vec::new();
        let mut refused = None;
        for room in rooms_of(&event) {
            if !policy.allows(&granted, &room) {
                continue;
            }
            match socket.join(room.as_str()) {
                Ok(()) => joined.push(room),
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        let reply = match refused {
            Some(error) => json!({
                "ok": false,
                "error": error.message(),
                "limit": error.limit(),
                "rooms": joined,
            }),
            None if joined.is_empty() => {
                json!({ "ok": false, "error": "not allowed", "rooms": [] })
            }
            None => json!({ "ok": true, "rooms": joined }),
        };
        if let Some(ack) = event.ack {
            let _ = ack.send_data(&reply);
        }
    });
    ns.on("unsubscribe", |socket: &Arc<Socket>, event: Event| {
        let left: Vec<String> = rooms_of(&event)
            .into_iter()
            .filter(|room| room != socket.id())
            .collect();
        for room in &left {
            socket.leave(room);
        }
        if let Some(ack) = event.ack {
            let _ = ack.send_data(&json!({ "ok": true, "rooms": left }));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_star_runs() {
        assert!(glob("news.*", "news.sport"));
        assert!(glob("news.*", "news."));
        assert!(!glob("news.*", "weather.today"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
        assert!(glob("user-*-inbox", "user-42-inbox"));
    }
}
