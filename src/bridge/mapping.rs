//! From a backend message (AMQP delivery or HTTP publish) to an emit, pure.
//!
//! The content type decides the argument: `application/json` → the parsed JSON value,
//! `text/plain` → the body as a string, anything else → one binary attachment. Headers choose
//! the target (`x-event`, `x-namespace`, `x-room` — one or several —, `x-socket`), falling back to
//! the configured defaults. A message that cannot be mapped is refused with a reason; the caller
//! rejects it without requeue and counts it.

use bytes::Bytes;
use serde_json::Value;

/// The routing headers of a message, already read out of the transport's own types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub event: Option<String>,
    pub namespace: Option<String>,
    pub rooms: Vec<String>,
    pub socket: Option<String>,
}

/// Defaults for what a message's headers leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub event: String,
    pub namespace: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            // The seed's app emits what arrives on its queue as `news`.
            event: "news".into(),
            namespace: "/".into(),
        }
    }
}

/// An emit decided from a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    pub namespace: String,
    pub event: String,
    /// Rooms to reach (a socket id is a room too); empty with no `socket` = the whole namespace.
    pub rooms: Vec<String>,
    pub args: Vec<Value>,
    pub binary: Vec<Bytes>,
    /// The message's id, unique per message (AMQP `message_id`): a message with an id seen
    /// lately is dropped as a redelivery.
    pub id: Option<String>,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    #[error("text/plain body is not valid UTF-8")]
    BadUtf8,
    #[error("event name {0:?} is reserved or empty")]
    BadEvent(String),
    #[error("namespace {0:?} must start with '/'")]
    BadNamespace(String),
}

/// The argument a body of `content_type` carries.
pub fn argument(content_type: Option<&str>, body: Bytes) -> Result<(Value, Vec<Bytes>), Refusal> {
    let essence = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match essence.as_str() {
        "application/json" => serde_json::from_slice(&body)
            .map(|v| (v, Vec::new()))
            .map_err(|e| Refusal::BadJson(e.to_string())),
        "text/plain" => String::from_utf8(body.to_vec())
            .map(|s| (Value::String(s), Vec::new()))
            .map_err(|_| Refusal::BadUtf8),
        _ => Ok((crate::socketio::packet::placeholder(0), vec![body])),
    }
}

/// Maps a message to an emit.
pub fn map(
    defaults: &Defaults,
    target: Target,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<Emit, Refusal> {
    let event = target.event.unwrap_or_else(|| defaults.event.clone());
    if event.is_empty() || crate::socketio::packet::RESERVED_EVENTS.contains(&event.as_str()) {
        return Err(Refusal::BadEvent(event));
    }
    let namespace = target
        .namespace
        .unwrap_or_else(|| defaults.namespace.clone());
    if !namespace.starts_with('/') {
        return Err(Refusal::BadNamespace(namespace));
    }
    let (arg, binary) = argument(content_type, body)?;
    let mut rooms = target.rooms;
    rooms.extend(target.socket);
    Ok(Emit {
        namespace,
        event,
        rooms,
        args: vec![arg],
        binary,
        id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn seed_messages_map_to_news_on_root() {
        // producter.py publishes json.dumps(...) under both content types.
        let text = map(
            &Defaults::default(),
            Target::default(),
            Some("text/plain"),
            body("\"text 1\""),
        )
        .unwrap();
        assert_eq!(text.event, "news");
        assert_eq!(text.namespace, "/");
        assert_eq!(text.args, vec![json!("\"text 1\"")]);
        let obj = map(
            &Defaults::default(),
            Target::default(),
            Some("application/json"),
            body(r#"{"no": 1, "some": "Message", "\u6bd4\u5982": "\u4e2d\u6587\u4fe1\u606f"}"#),
        )
        .unwrap();
        assert_eq!(
            obj.args,
            vec![json!({"no": 1, "some": "Message", "比如": "中文信息"})]
        );
        assert!(obj.rooms.is_empty());
    }

    #[test]
    fn headers_choose_target() {
        let target = Target {
            event: Some("tick".into()),
            namespace: Some("/chat".into()),
            rooms: vec!["a".into(), "b".into()],
            socket: Some("sock1".into()),
        };
        let emit = map(
            &Defaults::default(),
            target,
            Some("application/json; charset=utf-8"),
            body("[1]"),
        )
        .unwrap();
        assert_eq!(
            (emit.event.as_str(), emit.namespace.as_str()),
            ("tick", "/chat")
        );
        assert_eq!(emit.rooms, vec!["a", "b", "sock1"]);
        assert_eq!(emit.args, vec![json!([1])]);
    }

    #[test]
    fn other_content_types_are_binary() {
        let emit = map(
            &Defaults::default(),
            Target::default(),
            Some("application/octet-stream"),
            body("\x00\x01"),
        )
        .unwrap();
        assert_eq!(emit.args, vec![json!({"_placeholder": true, "num": 0})]);
        assert_eq!(emit.binary, vec![body("\x00\x01")]);
        let none = map(&Defaults::default(), Target::default(), None, body("x")).unwrap();
        assert_eq!(none.binary.len(), 1);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let d = Defaults::default();
        assert!(matches!(
            map(
                &d,
                Target::default(),
                Some("application/json"),
                body("{nope")
            ),
            Err(Refusal::BadJson(_))
        ));
        assert_eq!(
            map(
                &d,
                Target::default(),
                Some("text/plain"),
                Bytes::from_static(b"\xff")
            ),
            Err(Refusal::BadUtf8)
        );
        let reserved = Target {
            event: Some("connect".into()),
            ..Target::default()
        };
        assert!(matches!(
            map(&d, reserved, Some("text/plain"), body("x")),
            Err(Refusal::BadEvent(_))
        ));
        let bad_ns = Target {
            namespace: Some("chat".into()),
            ..Target::default()
        };
        assert!(matches!(
            map(&d, bad_ns, Some("text/plain"), body("x")),
            Err(Refusal::BadNamespace(_))
        ));
    }
}
