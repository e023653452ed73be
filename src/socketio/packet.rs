//! The Socket.IO v5 packet codec, pure: a decoded packet from the text of an Engine.IO message,
//! and the Engine.IO frames of an encoded one.
//!
//! Wire format (socket.io-protocol Readme):
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`, the namespace written only
//! when it is not `/`, binary attachments sent as the Engine.IO binary messages that follow,
//! and `{"_placeholder":true,"num":N}` where each one sat in the payload. The decoder is strict
//! like socket.io-parser's: anything it would reject is an error, and the caller closes the
//! connection.

use crate::engine::{Frame, Str};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// Socket.IO packet types, with their wire digit as discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketKind {
    fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// Event names a client may not send: they are the server's own lifecycle events.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A Socket.IO packet. `data` keeps binary placeholders as they are on the wire; the binary
/// attachments travel beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketKind,
    pub ns: String,
    pub id: Option<u64>,
    /// Number of binary attachments announced (binary kinds only).
    pub attachments: usize,
    pub data: Option<Value>,
    /// Bytes of the JSON payload as received (0 without one): what a limit on it measures.
    pub data_len: usize,
}

/// Why a packet was refused. Any of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("illegal attachments")]
    IllegalAttachments,
    #[error("too many attachments ({0})")]
    TooManyAttachments(usize),
    #[error("invalid ack id")]
    InvalidAckId,
    #[error("invalid payload: {0}")]
    InvalidJson(String),
    #[error("invalid payload for {0:?}")]
    InvalidPayload(PacketKind),
}

/// Decodes the text of an Engine.IO message as a Socket.IO packet.
pub fn decode(text: &str, max_attachments: usize) -> Result<Packet, DecodeError> {
    let bytes = text.as_bytes();
    let first = *bytes.first().ok_or(DecodeError::Empty)?;
    let kind = PacketKind::from_digit(first).ok_or(DecodeError::UnknownType)?;
    let mut i = 1;

    let mut attachments = 0;
    if kind.is_binary() {
        let digits = count_digits(&bytes[i..]);
        if digits == 0 || bytes.get(i + digits) != Some(&b'-') {
            return Err(DecodeError::IllegalAttachments);
        }
        attachments = text[i..i + digits]
            .parse::<usize>()
            .map_err(|_| DecodeError::IllegalAttachments)?;
        if attachments > max_attachments {
            return Err(DecodeError::TooManyAttachments(attachments));
        }
        i += digits + 1;
    }

    let mut ns = "/";
    if bytes.get(i) == Some(&b'/') {
        let end = bytes[i..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |p| i + p);
        ns = &text[i..end];
        i = (end + 1).min(bytes.len());
    }

    let mut id = None;
    let digits = count_digits(&bytes[i..]);
    if digits > 0 {
        id = Some(
            text[i..i + digits]
                .parse::<u64>()
                .map_err(|_| DecodeError::InvalidAckId)?,
        );
        i += digits;
    }

    let rest = &text[i..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Value>(rest)
                .map_err(|e| DecodeError::InvalidJson(e.to_string()))?,
        )
    };

    let valid = match (kind, &data) {
        (PacketKind::Connect, None | Some(Value::Object(_))) => true,
        (PacketKind::Disconnect, None) => true,
        (PacketKind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(args))) => {
            match args.first() {
                Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                Some(Value::Number(_)) => true,
                _ => false,
            }
        }
        (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(_))) => true,
        _ => false,
    };
    if !valid {
        return Err(DecodeError::InvalidPayload(kind));
    }
    Ok(Packet {
        kind,
        ns: ns.to_owned(),
        id,
        attachments,
        data,
        data_len: rest.len(),
    })
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Writes the header of a packet (after the Engine.IO `4`): type, attachments, namespace, id.
fn write_header(
    out: &mut BytesMut,
    kind: PacketKind,
    ns: &str,
    attachments: usize,
    id: Option<u64>,
) {
    out.put_u8(b'4');
    out.put_u8(b'0' + kind as u8);
    if kind.is_binary() {
        out.put_slice(attachments.to_string().as_bytes());
        out.put_u8(b'-');
    }
    if ns != "/" {
        out.put_slice(ns.as_bytes());
        out.put_u8(b',');
    }
    if let Some(id) = id {
        out.put_slice(id.to_string().as_bytes());
    }
}

fn finish(out: BytesMut) -> Frame {
    // Built from `str` pieces and serde_json output, which is UTF-8.
    Frame::Text(Str::from_utf8(out.freeze()).unwrap_or_default())
}

/// Encodes a packet whose payload is `data` (or none) into its Engine.IO text frame.
pub fn encode(kind: PacketKind, ns: &str, id: Option<u64>, data: Option<&Value>) -> Frame {
    let mut out = BytesMut::with_capacity(64);
    write_header(&mut out, kind, ns, 0, id);
    if let Some(data) = data {
        write_json(&mut out, data);
    }
    finish(out)
}

/// Writes an EVENT (or ACK when `event` is `None`) up to its last argument: the array is left
/// open.
fn write_open_args(
    ns: &str,
    event: Option<&str>,
    id: Option<u64>,
    args: &[Value],
    attachments: usize,
) -> BytesMut {
    let kind = match (event.is_some(), attachments == 0) {
        (true, true) => PacketKind::Event,
        (true, false) => PacketKind::BinaryEvent,
        (false, true) => PacketKind::Ack,
        (false, false) => PacketKind::BinaryAck,
    };
    let mut out = BytesMut::with_capacity(64);
    write_header(&mut out, kind, ns, attachments, id);
    out.put_u8(b'[');
    let mut first = true;
    if let Some(event) = event {
        write_json(&mut out, &Value::from(event));
        first = false;
    }
    for arg in args {
        if !first {
            out.put_u8(b',');
        }
        first = false;
        write_json(&mut out, arg);
    }
    out
}

fn with_attachments(text: BytesMut, binary: &[Bytes]) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + binary.len());
    frames.push(finish(text));
    frames.extend(binary.iter().cloned().map(Frame::Binary));
    frames
}

/// Encodes an EVENT (or ACK when `event` is `None`) with `args`, and its binary attachments as
/// the frames that follow. Returns every frame of the packet, in order.
pub fn encode_args(
    ns: &str,
    event: Option<&str>,
    id: Option<u64>,
    args: &[Value],
    binary: &[Bytes],
) -> Vec<Frame> {
    let mut out = write_open_args(ns, event, id, args, binary.len());
    out.put_u8(b']');
    with_attachments(out, binary)
}

/// An EVENT encoded but for one last string argument, the offset connection state recovery
/// appends (socket.io's `SessionAwareAdapter` pushes it onto the arguments, so old clients see
/// one more argument and recovering clients read it back as their position). The arguments are
/// serialized once, outside any lock; [`OpenEvent::close`] only copies them.
#[derive(Debug, Clone)]
pub struct OpenEvent {
    head: BytesMut,
    binary: Vec<Bytes>,
}

impl OpenEvent {
    pub fn new(ns: &str, event: &str, args: &[Value], binary: &[Bytes]) -> Self {
        OpenEvent {
            head: write_open_args(ns, Some(event), None, args, binary.len()),
            binary: binary.to_vec(),
        }
    }

    /// The packet's frames with `last` as its last argument.
    pub fn close(&self, last: &str) -> Vec<Frame> {
        let mut out = BytesMut::with_capacity(self.head.len() + last.len() + 4);
        out.extend_from_slice(&self.head);
        out.put_u8(b',');
        write_json(&mut out, &Value::from(last));
        out.put_u8(b']');
        with_attachments(out, &self.binary)
    }
}

fn write_json(out: &mut BytesMut, value: &Value) {
    // Serializing a `Value` into memory cannot fail: its maps have string keys.
    let _ = serde_json::to_writer(out.writer(), value);
}

/// Whether every binary placeholder in `value` names an attachment below `count` (and as
/// socket.io-parser requires, is well formed).
pub fn placeholders_valid(value: &Value, count: usize) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|v| placeholders_valid(v, count)),
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => map
            .get("num")
            .and_then(Value::as_u64)
            .is_some_and(|n| n < count as u64),
        Value::Object(map) => map.values().all(|v| placeholders_valid(v, count)),
        _ => true,
    }
}

/// The placeholder that stands for binary attachment `num` in a payload.
pub fn placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(frame: &Frame) -> &str {
        match frame {
            Frame::Text(s) => s.as_str(),
            Frame::Binary(_) => panic!("binary frame"),
        }
    }

    #[test]
    fn decodes_the_readme_examples() {
        let p = decode("0/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}", 10).unwrap();
        assert_eq!((p.kind, p.ns.as_str()), (PacketKind::Connect, "/admin"));
        let p = decode("2[\"foo\"]", 10).unwrap();
        assert_eq!(
            (p.kind, p.ns.as_str(), p.id),
            (PacketKind::Event, "/", None)
        );
        let p = decode("212[\"foo\"]", 10).unwrap();
        assert_eq!(p.id, Some(12));
        let p = decode("3/admin,13[\"bar\"]", 10).unwrap();
        assert_eq!(
            (p.kind, p.ns.as_str(), p.id),
            (PacketKind::Ack, "/admin", Some(13))
        );
        let p = decode("52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", 10).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.ns.as_str()),
            (PacketKind::BinaryEvent, 2, "/admin")
        );
        let p = decode("61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]", 10).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (PacketKind::BinaryAck, 1, Some(15))
        );
        assert_eq!(decode("1", 10).unwrap().kind, PacketKind::Disconnect);
        assert_eq!(decode("1/admin,", 10).unwrap().ns, "/admin");
        assert_eq!(decode("0/custom", 10).unwrap().ns, "/custom");
    }

    #[test]
    fn rejects_what_socket_io_parser_rejects() {
        assert_eq!(decode("", 10), Err(DecodeError::Empty));
        assert_eq!(decode("abc", 10), Err(DecodeError::UnknownType));
        assert_eq!(decode("7", 10), Err(DecodeError::UnknownType));
        assert!(matches!(
            decode("2{}", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("2abc[\"x\"]", 10),
            Err(DecodeError::InvalidJson(_))
        ));
        assert!(matches!(
            decode("2", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("2[]", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("2[\"connect\"]", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("2[true]", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("1{}", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("0[]", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("3{}", 10),
            Err(DecodeError::InvalidPayload(_))
        ));
        assert_eq!(decode("5[\"x\"]", 10), Err(DecodeError::IllegalAttachments));
        assert_eq!(
            decode("52[\"x\"]", 10),
            Err(DecodeError::IllegalAttachments)
        );
        assert_eq!(
            decode("511-[\"x\"]", 10),
            Err(DecodeError::TooManyAttachments(11))
        );
        assert_eq!(
            decode("299999999999999999999[\"x\"]", 10),
            Err(DecodeError::InvalidAckId)
        );
    }

    #[test]
    fn accepts_numeric_event_names_and_string_connect_errors() {
        assert!(decode("2[1,2]", 10).is_ok());
        assert!(decode("4\"nope\"", 10).is_ok());
        assert!(decode("4{\"message\":\"x\"}", 10).is_ok());
    }

    #[test]
    fn placeholders_must_name_an_existing_attachment() {
        let ok = json!(["ev", {"a": [placeholder(0)]}, placeholder(1)]);
        assert!(placeholders_valid(&ok, 2));
        assert!(!placeholders_valid(&ok, 1));
        assert!(!placeholders_valid(
            &json!([{"_placeholder": true, "num": "0"}]),
            1
        ));
        assert!(!placeholders_valid(&json!([{"_placeholder": true}]), 1));
        assert!(placeholders_valid(
            &json!([{"_placeholder": false, "num": 9}]),
            0
        ));
    }

    #[test]
    fn encodes_with_namespace_only_when_not_root() {
        let sid = json!({"sid": "abc"});
        assert_eq!(
            text(&encode(PacketKind::Connect, "/", None, Some(&sid))),
            "40{\"sid\":\"abc\"}"
        );
        assert_eq!(
            text(&encode(PacketKind::Connect, "/custom", None, Some(&sid))),
            "40/custom,{\"sid\":\"abc\"}"
        );
        assert_eq!(
            text(&encode(PacketKind::Disconnect, "/admin", None, None)),
            "41/admin,"
        );
        let err = json!({"message": "Invalid namespace"});
        assert_eq!(
            text(&encode(
                PacketKind::ConnectError,
                "/random",
                None,
                Some(&err)
            )),
            "44/random,{\"message\":\"Invalid namespace\"}"
        );
    }

    #[test]
    fn echo_keeps_key_order_and_compact_form() {
        let p = decode(
            "2[\"message\",1,\"2\",{\"3\":[true],\"a\":{\"z\":1,\"b\":2}}]",
            10,
        )
        .unwrap();
        let Some(Value::Array(mut args)) = p.data else {
            unreachable!()
        };
        args.remove(0);
        let frames = encode_args("/", Some("message-back"), None, &args, &[]);
        assert_eq!(
            text(&frames[0]),
            "42[\"message-back\",1,\"2\",{\"3\":[true],\"a\":{\"z\":1,\"b\":2}}]"
        );
    }

    #[test]
    fn encodes_binary_event_and_ack_with_attachments() {
        let args = vec![placeholder(0), placeholder(1)];
        let bins = [
            Bytes::from_static(&[1, 2, 3]),
            Bytes::from_static(&[4, 5, 6]),
        ];
        let frames = encode_args("/", Some("message-back"), None, &args, &bins);
        assert_eq!(
            text(&frames[0]),
            "452-[\"message-back\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
        );
        assert_eq!(frames[1], Frame::Binary(bins[0].clone()));
        assert_eq!(frames[2], Frame::Binary(bins[1].clone()));
        let frames = encode_args("/custom", None, Some(789), &args, &bins);
        assert_eq!(
            text(&frames[0]),
            "462-/custom,789[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
        );
        let frames = encode_args("/", None, Some(456), &[json!(1)], &[]);
        assert_eq!(text(&frames[0]), "43456[1]");
    }

    #[test]
    fn open_event_appends_its_last_argument_after_placeholders() {
        let open = OpenEvent::new("/", "tick", &[json!(1)], &[]);
        assert_eq!(text(&open.close("ab.1")[0]), "42[\"tick\",1,\"ab.1\"]");
        let open = OpenEvent::new("/chat", "none", &[], &[]);
        assert_eq!(text(&open.close("x")[0]), "42/chat,[\"none\",\"x\"]");
        let bin = Bytes::from_static(&[7]);
        let open = OpenEvent::new("/", "bin", &[placeholder(0)], std::slice::from_ref(&bin));
        let frames = open.close("o");
        assert_eq!(
            text(&frames[0]),
            "451-[\"bin\",{\"_placeholder\":true,\"num\":0},\"o\"]"
        );
        assert_eq!(frames[1], Frame::Binary(bin));
    }
}
