//! Properties of the payload codec: decoding never panics, whatever the bytes, and every list
//! of packets the server can send survives an encode → decode round trip.

use bytes::{Bytes, BytesMut};
use halley_engine::packet::{decode_payload, decode_text, encode_payload, Frame, SEPARATOR};
use halley_engine::{Packet, Str};
use proptest::prelude::*;

/// Text that may appear in a payload packet: any char but the record separator.
fn payload_text() -> impl Strategy<Value = String> {
    "[^\u{1e}]{0,40}"
}

/// Any packet that can travel in a polling payload.
fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        4 => payload_text().prop_map(|s| Packet::Message(Str::from(s))),
        3 => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Packet::Binary(Bytes::from(b))),
        1 => payload_text().prop_map(|s| Packet::Ping(Str::from(s))),
        1 => payload_text().prop_map(|s| Packet::Pong(Str::from(s))),
        1 => payload_text().prop_map(|s| Packet::Open(Str::from(s))),
        1 => Just(Packet::Close),
        1 => Just(Packet::Upgrade),
        1 => Just(Packet::Noop),
    ]
}

fn encode(packets: &[Packet]) -> (Vec<Frame>, Bytes) {
    let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
    let mut out = BytesMut::new();
    encode_payload(&frames, &mut out);
    (frames, out.freeze())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_payload_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = decode_payload(Bytes::from(bytes));
    }

    #[test]
    fn decode_payload_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = decode_payload(Bytes::from(text));
    }

    #[test]
    fn decode_payload_never_panics_on_separator_heavy_input(
        pieces in proptest::collection::vec("[0-9b]?[A-Za-z0-9+/=\u{e9}]{0,8}", 0..8),
    ) {
        let body = pieces.join("\u{1e}");
        let _ = decode_payload(Bytes::from(body));
    }

    #[test]
    fn decode_text_never_panics(text in any::<String>()) {
        let _ = decode_text(Str::from(text));
    }

    #[test]
    fn decode_text_reads_message_packets(text in any::<String>()) {
        let frame = Frame::message(&text);
        let Frame::Text(encoded) = frame else { unreachable!("a message frame is text") };
        prop_assert_eq!(decode_text(encoded), Ok(Packet::Message(Str::from(text))));
    }

    #[test]
    fn text_messages_round_trip_through_a_payload(
        texts in proptest::collection::vec(payload_text(), 1..12),
    ) {
        let frames: Vec<Frame> = texts.iter().map(|t| Frame::message(t)).collect();
        let mut out = BytesMut::new();
        encode_payload(&frames, &mut out);
        let decoded = decode_payload(out.freeze()).expect("an encoded payload decodes");
        let expected: Vec<Packet> =
            texts.into_iter().map(|t| Packet::Message(Str::from(t))).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn mixed_packets_round_trip_through_a_payload(
        packets in proptest::collection::vec(packet(), 1..12),
    ) {
        let (_, body) = encode(&packets);
        prop_assert_eq!(decode_payload(body), Ok(packets));
    }

    #[test]
    fn encoded_payload_length_matches_frame_sizes(
        packets in proptest::collection::vec(packet(), 1..12),
    ) {
        let (frames, body) = encode(&packets);
        let separators = frames.len() - 1;
        let expected: usize = frames.iter().map(Frame::payload_len).sum::<usize>() + separators;
        prop_assert_eq!(body.len(), expected);
        prop_assert_eq!(body.iter().filter(|&&b| b == SEPARATOR).count(), separators);
    }
}
