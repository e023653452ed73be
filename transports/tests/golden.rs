//! Golden bytes: the codec's output must equal the fixtures in `fixtures/engineio/`, and the
//! fixtures must decode to the packets they stand for.

use bytes::{Bytes, BytesMut};
use halley_engine::packet::{decode_payload, encode_payload, DecodeError, Frame};
use halley_engine::{Packet, Str};

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/../fixtures/engineio/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}")))
}

fn text(s: &str) -> Str {
    Str::from(s)
}

/// Asserts `packets` encode to exactly the fixture `name`, and the fixture decodes back.
fn assert_golden(name: &str, packets: &[Packet]) {
    let golden = fixture(name);
    let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
    let mut out = BytesMut::new();
    encode_payload(&frames, &mut out);
    assert_eq!(
        &out[..],
        &golden[..],
        "{name}: encoder output differs from the golden bytes"
    );
    assert_eq!(
        decode_payload(golden).as_deref(),
        Ok(packets),
        "{name}: golden bytes decode differently"
    );
}

#[test]
fn mixed_payload_matches_golden_bytes() {
    assert_golden(
        "payload-mixed.bin",
        &[
            Packet::Message(text("hello")),
            Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Packet::Ping(text("probe")),
        ],
    );
}

#[test]
fn utf8_text_payload_matches_golden_bytes() {
    assert_golden(
        "payload-text.bin",
        &[
            Packet::Message(text("hello")),
            Packet::Message(text("héllo wörld €😀")),
            Packet::Message(text("")),
        ],
    );
}

#[test]
fn binary_padding_forms_match_golden_bytes() {
    assert_golden(
        "payload-binary-padding.bin",
        &[
            Packet::Binary(Bytes::from_static(&[0])),
            Packet::Binary(Bytes::from_static(&[0, 1])),
            Packet::Binary(Bytes::from_static(&[0, 1, 2])),
        ],
    );
}

#[test]
fn message_frame_helper_matches_packet_encoding() {
    let golden = fixture("payload-mixed.bin");
    let frames = [
        Frame::message("hello"),
        Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        Packet::Ping(text("probe")).encode(),
    ];
    let mut out = BytesMut::new();
    encode_payload(&frames, &mut out);
    assert_eq!(&out[..], &golden[..]);
}

#[test]
fn invalid_utf8_fixture_is_refused() {
    assert_eq!(
        decode_payload(fixture("invalid-utf8.bin")),
        Err(DecodeError::InvalidUtf8)
    );
}

#[test]
fn truncated_base64_fixture_is_refused() {
    assert_eq!(
        decode_payload(fixture("truncated-base64.bin")),
        Err(DecodeError::InvalidBase64)
    );
}
