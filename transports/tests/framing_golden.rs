//! The legacy transports' framing against the hand-written bytes in `fixtures/transports/`.

use bytes::Bytes;
use halley_engine::framing;
use halley_engine::packet::Frame;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/transports/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hostile() -> String {
    String::from_utf8(fixture("hostile-message.txt")).unwrap()
}

fn frames() -> Vec<Frame> {
    vec![
        Frame::message("hello"),
        Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        Frame::message(&hostile()),
    ]
}

#[test]
fn jsonp_frame_matches_fixture() {
    assert_eq!(
        &framing::jsonp("42", &frames())[..],
        &fixture("jsonp-frame.js")[..]
    );
}

#[test]
fn html_prelude_and_frame_match_fixtures() {
    assert_eq!(
        &framing::html_prelude("7")[..],
        &fixture("html-prelude.html")[..]
    );
    assert_eq!(
        &framing::html_frame(&frames())[..],
        &fixture("html-frame.html")[..]
    );
}

#[test]
fn sse_prelude_and_frame_match_fixtures() {
    assert_eq!(&framing::sse_prelude()[..], &fixture("sse-prelude.txt")[..]);
    assert_eq!(
        &framing::sse_frame(&frames())[..],
        &fixture("sse-frame.txt")[..]
    );
}

#[test]
fn xhr_streaming_prelude_and_frame_match_fixtures() {
    assert_eq!(
        &framing::xhr_streaming_prelude()[..],
        &fixture("xhr-streaming-prelude.txt")[..]
    );
    assert_eq!(
        &framing::xhr_streaming_frame(&frames())[..],
        &fixture("xhr-streaming-frame.txt")[..]
    );
}

/// The string inside every frame is exactly the payload: nothing was lost to the escaping, and
/// the hostile message arrives intact. (Its raw `\x1e` would split an Engine.IO payload; the
/// Socket.IO layer never sends one, since JSON writes it as `\u001e`.)
#[test]
fn every_frame_carries_the_payload_intact() {
    let expected = format!("4hello\x1ebAQIDBA==\x1e4{}", hostile());
    let inner = |bytes: Vec<u8>, start: &str, end: &str| -> String {
        let text = String::from_utf8(bytes).unwrap();
        let literal = text.strip_prefix(start).unwrap().strip_suffix(end).unwrap();
        serde_json::from_str(literal).unwrap()
    };
    assert_eq!(
        inner(fixture("jsonp-frame.js"), "___eio[42](", ");"),
        expected
    );
    assert_eq!(
        inner(fixture("html-frame.html"), "<script>p(", ");</script>\n"),
        expected
    );
    assert_eq!(inner(fixture("sse-frame.txt"), "data: ", "\n\n"), expected);
    assert_eq!(
        inner(fixture("xhr-streaming-frame.txt"), "", "\n"),
        expected
    );
}

/// Nothing in a script-embedded frame can end the script, open a comment, or end the string
/// early in an old engine.
#[test]
fn script_frames_hold_no_breakout_sequence() {
    for name in ["jsonp-frame.js", "html-frame.html"] {
        let text = String::from_utf8(fixture(name)).unwrap();
        let body = text.trim_end_matches('\n');
        let body = body.strip_suffix("</script>").unwrap_or(body);
        for bad in ["</", "<!--", "\u{2028}", "\u{2029}", "\x1e"] {
            assert!(!body.contains(bad), "{name} contains {bad:?}");
        }
    }
}
