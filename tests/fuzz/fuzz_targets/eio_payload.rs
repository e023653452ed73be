//! The Engine.IO v4 codec on untrusted bytes: a polling payload (`decode_payload`, packets joined
//! by `\x1e`, binary as `b<base64>`) and, when the bytes are UTF-8, a WebSocket text frame
//! (`decode_text`).
//!
//! Beyond "no panic":
//! - every decoded string is valid UTF-8 (`Str::as_str` trusts that without checking);
//! - a payload decodes to exactly one packet per `\x1e`-separated piece;
//! - re-encoding what was decoded decodes to the same packets, and gives back the very input
//!   bytes unless a data-less packet (`1`, `5`, `6`) carried trailing data the codec drops;
//! - `Frame::payload_len` predicts the encoded length exactly.
#![no_main]

use bytes::{Bytes, BytesMut};
use halley_engine::packet::{decode_payload, decode_text, encode_payload, Frame, SEPARATOR};
use halley_engine::{Packet, Str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(text) = Str::from_utf8(body.clone()) {
        websocket_text(text);
    }
    payload(data, body);
});

/// A WebSocket text frame: one packet, no separator handling.
fn websocket_text(text: Str) {
    let Ok(packet) = decode_text(text.clone()) else {
        return;
    };
    check_utf8(&packet);
    assert!(
        !matches!(packet, Packet::Binary(_)),
        "text frame decoded as binary"
    );
    let Frame::Text(encoded) = packet.encode() else {
        panic!("text packet {packet:?} encoded as a binary frame");
    };
    assert_eq!(decode_text(encoded.clone()).as_ref(), Ok(&packet));
    if !drops_data(text.as_bytes()) {
        assert_eq!(encoded.as_bytes(), text.as_bytes(), "text frame round trip");
    }
}

/// A polling POST body.
fn payload(data: &[u8], body: Bytes) {
    let Ok(packets) = decode_payload(body) else {
        return;
    };
    let pieces = data.split(|&b| b == SEPARATOR).count();
    assert_eq!(packets.len(), pieces, "one packet per piece");
    packets.iter().for_each(check_utf8);

    let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
    let mut out = BytesMut::new();
    encode_payload(&frames, &mut out);
    let predicted = frames.iter().map(Frame::payload_len).sum::<usize>() + frames.len() - 1;
    assert_eq!(
        out.len(),
        predicted,
        "payload_len disagrees with encode_payload"
    );
    let out = out.freeze();
    assert_eq!(
        decode_payload(out.clone()).as_ref(),
        Ok(&packets),
        "re-encoded payload decodes differently"
    );
    if !data.split(|&b| b == SEPARATOR).any(drops_data) {
        assert_eq!(&out[..], data, "payload round trip");
    }
}

/// Whether decoding `piece` legitimately loses bytes: close, upgrade and noop carry no data, so
/// anything after their type digit is ignored.
fn drops_data(piece: &[u8]) -> bool {
    matches!(piece.first(), Some(b'1' | b'5' | b'6')) && piece.len() > 1
}

fn check_utf8(packet: &Packet) {
    let s = match packet {
        Packet::Open(s) | Packet::Ping(s) | Packet::Pong(s) | Packet::Message(s) => s,
        Packet::Binary(_) | Packet::Close | Packet::Upgrade | Packet::Noop => return,
    };
    assert!(
        std::str::from_utf8(s.as_bytes()).is_ok(),
        "Str holds invalid UTF-8"
    );
    assert_eq!(s.as_str().len(), s.len());
}
