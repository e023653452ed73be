//! Property tests of the Socket.IO packet codec: no input can panic the decoder, and what the
//! encoder writes decodes back to the same packet.

use bytes::Bytes;
use halley::engine::Frame;
use halley::socketio::packet::{decode, encode_args, PacketKind};
use proptest::prelude::*;
use serde_json::Value;

fn text(frame: &Frame) -> &str {
    match frame {
        Frame::Text(s) => s.as_str(),
        Frame::Binary(_) => panic!("binary frame"),
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_arbitrary_text(s in ".{0,64}") {
        let _ = decode(&s, 10);
    }

    #[test]
    fn decode_never_panics_on_packet_shaped_text(
        kind in "[0-9a]",
        attachments in "([0-9]{1,3}-)?",
        ns in "(/[a-z,]{0,6},?)?",
        id in "[0-9]{0,22}",
        payload in "(\\[.{0,10}\\]|\\{.{0,10}\\}|\".{0,6}\"|.{0,8})",
    ) {
        let _ = decode(&format!("{kind}{attachments}{ns}{id}{payload}"), 10);
    }

    #[test]
    fn events_round_trip(
        ns in "(/|/[a-z]{1,8})",
        event in "[a-z][a-z ]{0,10}",
        id in proptest::option::of(0u64..u64::MAX),
        args in prop::collection::vec(json_value(), 0..4),
        attachments in 0usize..3,
    ) {
        prop_assume!(!halley::socketio::packet::RESERVED_EVENTS.contains(&event.as_str()));
        let binary: Vec<Bytes> = (0..attachments).map(|i| Bytes::from(vec![i as u8; 3])).collect();
        let frames = encode_args(&ns, Some(&event), id, &args, &binary);
        prop_assert_eq!(frames.len(), 1 + attachments);
        // Strip the Engine.IO message type.
        let packet = decode(&text(&frames[0])[1..], 10).unwrap();
        let kind = if attachments > 0 { PacketKind::BinaryEvent } else { PacketKind::Event };
        prop_assert_eq!(packet.kind, kind);
        prop_assert_eq!(packet.ns, ns);
        prop_assert_eq!(packet.id, id);
        prop_assert_eq!(packet.attachments, attachments);
        let mut expected = vec![Value::from(event)];
        expected.extend(args);
        prop_assert_eq!(packet.data, Some(Value::Array(expected)));
    }
}
