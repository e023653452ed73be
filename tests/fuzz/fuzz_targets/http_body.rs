//! An upstream polling POST body as `polling::post` decodes it, then the responses that would
//! echo its packets back.
//!
//! Input: one selector byte, then the body. `f` selects `application/x-www-form-urlencoded`
//! (JSONP polling and old IE's forever-frame clients post a hidden form whose `d` field is the
//! payload, newlines escaped: `framing::form_payload`); anything else is `text/plain` (an XHR
//! payload, `packet::decode_payload` directly).
//!
//! Beyond "no panic":
//! - the form decoder's output is bounded (at most 3 bytes per body byte: lossy UTF-8 turns one
//!   stray byte into U+FFFD), so the body limit still bounds what reaches the payload decoder;
//! - the form decoder inverts the engine.io client's escaping (`\n` → `\\n`, then LF → `\n`) for
//!   every string that escaping can represent unambiguously (no backslash right before a LF);
//! - whatever packets were accepted, echoed back through JSONP, forever-frame, SSE and
//!   xhr-streaming framing, stay inside their string literal: no raw `<`, `>`, U+2028, U+2029 or
//!   control character, one line for SSE and xhr-streaming, and the literal parses back (JSON)
//!   to exactly the payload.
#![no_main]

use bytes::{Bytes, BytesMut};
use halley_engine::framing::{self, form_payload};
use halley_engine::packet::{decode_payload, encode_payload, Frame};
use halley_engine::Packet;
use libfuzzer_sys::fuzz_target;

/// `EngineConfig::default().max_payload`: `read_body` refuses anything larger before decoding.
const MAX_PAYLOAD: usize = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if body.len() > MAX_PAYLOAD {
        return;
    }
    let form = selector == b'f';
    let payload = if form {
        let Some(payload) = form_payload(body) else {
            return;
        };
        assert!(
            payload.len() <= 3 * body.len(),
            "form decoding expanded the body"
        );
        Bytes::from(payload)
    } else {
        Bytes::copy_from_slice(body)
    };
    if let Ok(text) = std::str::from_utf8(body) {
        escaping_round_trip(text);
    }
    let Ok(packets) = decode_payload(payload) else {
        return;
    };
    echo(&packets);
});

/// The engine.io client's JSONP escaping: a literal backslash-n is sent as backslash + LF, then
/// every LF as backslash-n, so a textarea turning LF into CRLF cannot change the payload.
fn client_escape(s: &str) -> String {
    s.replace("\\n", "\\\n").replace('\n', "\\n")
}

fn escaping_round_trip(s: &str) {
    // `\` + LF and a literal `\n` both escape to `\\n`: no decoder can tell them apart.
    if s.contains("\\\n") {
        return;
    }
    let escaped: String = form_urlencoded::byte_serialize(client_escape(s).as_bytes()).collect();
    for body in [
        format!("d={escaped}"),
        format!("t=Nx1&b64=1&d={escaped}&d=ignored"),
    ] {
        assert_eq!(
            form_payload(body.as_bytes()).as_deref(),
            Some(s),
            "form body {body:?}"
        );
    }
}

/// Frames every response transport would send back for `packets`, and checks each one.
fn echo(packets: &[Packet]) {
    let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
    let mut raw = BytesMut::new();
    encode_payload(&frames, &mut raw);
    let payload = std::str::from_utf8(&raw).expect("encoded payload is UTF-8");

    let jsonp = framing::jsonp("12", &frames);
    let inner = strip(&jsonp, "___eio[12](", ");");
    check_js_literal(inner, payload);

    let html = framing::html_frame(&frames);
    let inner = strip(&html, "<script>p(", ");</script>\n");
    check_js_literal(inner, payload);

    let sse = framing::sse_frame(&frames);
    let inner = strip(&sse, "data: ", "\n\n");
    assert!(!inner.contains(['\n', '\r']), "SSE event split");
    assert_eq!(parse_literal(inner), payload);

    let xhr = framing::xhr_streaming_frame(&frames);
    let inner = strip(&xhr, "", "\n");
    assert!(!inner.contains(['\n', '\r']), "xhr-streaming line split");
    assert_eq!(parse_literal(inner), payload);
}

fn strip<'a>(bytes: &'a Bytes, prefix: &str, suffix: &str) -> &'a str {
    let text = std::str::from_utf8(bytes).expect("framed response is UTF-8");
    text.strip_prefix(prefix)
        .and_then(|t| t.strip_suffix(suffix))
        .unwrap_or_else(|| panic!("framing {text:?}"))
}

/// A string literal safe inside `<script>` and in a pre-ES2019 engine.
fn check_js_literal(literal: &str, payload: &str) {
    for c in literal.chars() {
        assert!(
            !matches!(
                c,
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}'
            ),
            "raw {c:?} in a script literal"
        );
    }
    assert_eq!(parse_literal(literal), payload);
}

fn parse_literal(literal: &str) -> String {
    assert!(literal.starts_with('"') && literal.ends_with('"') && literal.len() >= 2);
    serde_json::from_str::<String>(literal)
        .unwrap_or_else(|e| panic!("literal {literal:?} is not a JSON string: {e}"))
}
