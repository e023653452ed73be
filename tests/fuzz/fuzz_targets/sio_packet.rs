//! The Socket.IO v5 decoder (`halley::socketio::packet::decode`) on the text of an Engine.IO
//! message, as the server's client handler calls it (default `max_attachments`, 10).
//!
//! Beyond "no panic":
//! - limits: at most `max_attachments` attachments, and only binary kinds announce any;
//! - shape: the namespace starts with `/` and holds no `,`; the payload fits the packet kind;
//! - round trip: the project's encoders (`encode`, `encode_args`) write the decoded packet back
//!   as text that decodes to the same packet (numbers compared to within a few ULP: serde_json's
//!   default float parsing is not correctly rounded), byte-identical on a second pass when no
//!   float is involved (key order and compact form kept, as the echo tests expect);
//! - `placeholders_valid` terminates on whatever payload was accepted.
#![no_main]

use bytes::Bytes;
use halley_engine::Frame;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

// The decoder's own source file, compiled into this target rather than through the `halley`
// crate: depending on `halley` instruments its whole dependency tree (AMQP client, CLI, metrics)
// and more than doubles the build, while `packet.rs` only needs `bytes`, `serde_json`,
// `thiserror` and `halley_engine`, all dependencies here too (serde_json with the root's
// features). Its unit tests are `#[cfg(test)]` and stay out.
// `packet.rs` names the Engine.IO crate `crate::engine`, as inside `halley`.
use halley_engine as engine;

#[path = "../../../src/socketio/packet.rs"]
#[allow(dead_code)]
mod packet;

use packet::{decode, encode, encode_args, placeholders_valid, Packet, PacketKind};

/// `SocketIoConfig::default().max_attachments`.
const MAX_ATTACHMENTS: usize = 10;

fuzz_target!(|data: &[u8]| {
    // The Engine.IO layer only hands over text messages that are valid UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = decode(text, MAX_ATTACHMENTS) else {
        return;
    };
    check_shape(&packet);
    if let Some(data) = &packet.data {
        let _ = placeholders_valid(data, packet.attachments);
    }
    round_trip(&packet);
});

fn check_shape(p: &Packet) {
    let binary = matches!(p.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck);
    assert!(p.attachments <= MAX_ATTACHMENTS, "attachment limit");
    assert!(
        binary || p.attachments == 0,
        "{:?} with attachments",
        p.kind
    );
    assert!(p.ns.starts_with('/'), "namespace {:?}", p.ns);
    assert!(!p.ns.contains(','), "namespace {:?}", p.ns);
    let ok = match (p.kind, &p.data) {
        (PacketKind::Connect, None | Some(Value::Object(_))) => true,
        (PacketKind::Disconnect, None) => true,
        (PacketKind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(a))) => {
            matches!(a.first(), Some(Value::String(_) | Value::Number(_)))
        }
        (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(_))) => true,
        _ => false,
    };
    assert!(ok, "{:?} accepted with payload {:?}", p.kind, p.data);
}

/// The Socket.IO text of an Engine.IO text frame (after the `4` message digit).
fn sio_text(frame: &Frame) -> &str {
    let Frame::Text(s) = frame else {
        panic!("first frame of a packet is binary");
    };
    s.as_str()
        .strip_prefix('4')
        .expect("socket.io frame is an engine.io message")
}

fn round_trip(p: &Packet) {
    // 1. `encode`, which writes no attachment count (0) for binary kinds.
    let frame = encode(p.kind, &p.ns, p.id, p.data.as_ref());
    let first = sio_text(&frame).to_owned();
    let again = decode(&first, MAX_ATTACHMENTS)
        .unwrap_or_else(|e| panic!("re-encoded {first:?} refused: {e}"));
    assert_same(p, &again, 0);
    if !p.data.as_ref().is_some_and(has_float) {
        let second = encode(again.kind, &again.ns, again.id, again.data.as_ref());
        assert_eq!(sio_text(&second), first, "encoding is not stable");
    }

    // 2. `encode_args`, the path every emit and ack takes, with the attachments as frames.
    let Some(Value::Array(args)) = &p.data else {
        return;
    };
    let binary: Vec<Bytes> = vec![Bytes::new(); p.attachments];
    let frames = match (p.kind, args.split_first()) {
        (PacketKind::Event | PacketKind::BinaryEvent, Some((Value::String(name), rest))) => {
            encode_args(&p.ns, Some(name), p.id, rest, &binary)
        }
        (PacketKind::Ack | PacketKind::BinaryAck, _) => {
            encode_args(&p.ns, None, p.id, args, &binary)
        }
        _ => return,
    };
    assert_eq!(frames.len(), 1 + p.attachments, "one frame per attachment");
    assert!(frames[1..].iter().all(Frame::is_binary));
    let text = sio_text(&frames[0]);
    let again = decode(text, MAX_ATTACHMENTS)
        .unwrap_or_else(|e| panic!("encode_args output {text:?} refused: {e}"));
    // `encode_args` picks the binary kind from the attachments: a `50-` event comes back plain.
    let expected_kind = match (p.kind, p.attachments) {
        (PacketKind::BinaryEvent, 0) => PacketKind::Event,
        (PacketKind::BinaryAck, 0) => PacketKind::Ack,
        (kind, _) => kind,
    };
    assert_eq!(again.kind, expected_kind);
    assert_same(p, &again, p.attachments);
}

fn assert_same(p: &Packet, again: &Packet, attachments: usize) {
    assert_eq!(again.ns, p.ns);
    assert_eq!(again.id, p.id);
    assert_eq!(again.attachments, attachments);
    match (&p.data, &again.data) {
        (None, None) => {}
        (Some(a), Some(b)) => assert!(same_value(a, b), "payload changed: {a} vs {b}"),
        (a, b) => panic!("payload presence changed: {a:?} vs {b:?}"),
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) else {
                return false;
            };
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_value(vx, vy))
        }
        _ => a == b,
    }
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}
