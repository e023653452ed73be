//! Pure parsers and encoders for the framings of Halley's legacy HTTP transports (the wire
//! format of `transports/src/framing.rs`, golden bytes in `fixtures/transports/`):
//!
//! | transport | GET response | POST body (what this client sends) |
//! |---|---|---|
//! | `polling` + `j=N` (JSONP) | `___eio[N]("<js-escaped payload>");` | form `d=<payload>` |
//! | `iframe`, `htmlfile` | a ≥ 1 KiB HTML prelude line, then `<script>p("<js-escaped>");</script>\n` per flush | `text/plain` |
//! | `sse` | a `:` comment line of padding, then `data: "<json-escaped>"\n\n` per flush | `text/plain` |
//! | `xhr-streaming` | 2048 spaces + `\n`, then `"<json-escaped>"\n` per flush | `text/plain` |
//!
//! Every escaped payload is a JSON string literal (the JS escaping only adds `\uXXXX` escapes,
//! which JSON reads too), and none contains a raw newline, so the streams are read line by line.

/// A JSON string literal (quotes included, nothing around it) → its string.
pub fn string_literal(literal: &[u8]) -> Result<String, String> {
    if literal.first() != Some(&b'"') || literal.last() != Some(&b'"') || literal.len() < 2 {
        return Err(format!("not a string literal: {}", show(literal)));
    }
    serde_json::from_slice::<String>(literal)
        .map_err(|e| format!("bad string literal ({e}): {}", show(literal)))
}

/// The payload of a JSONP polling response `___eio[<index>]("…");`.
pub fn jsonp(body: &[u8], index: &str) -> Result<String, String> {
    let inner = body
        .strip_prefix(b"___eio[")
        .and_then(|rest| rest.strip_prefix(index.as_bytes()))
        .and_then(|rest| rest.strip_prefix(b"]("))
        .and_then(|rest| rest.strip_suffix(b");"))
        .ok_or_else(|| format!("not a JSONP response for ___eio[{index}]: {}", show(body)))?;
    string_literal(inner)
}

/// How a streaming transport frames its payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    Sse,
    XhrStreaming,
    /// `iframe` and `htmlfile` (the forever frame).
    Html,
}

impl StreamFraming {
    /// One line of the stream, without its `\n`: `Some(payload)` for a frame, `None` for the
    /// prelude, padding and the blank lines between SSE events, `Err` for anything else.
    pub fn line(self, line: &[u8]) -> Result<Option<String>, String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            StreamFraming::Sse => {
                if line.is_empty() || line.starts_with(b":") {
                    Ok(None)
                } else if let Some(literal) = line.strip_prefix(b"data: ") {
                    string_literal(literal).map(Some)
                } else {
                    Err(format!("sse: unexpected line {}", show(line)))
                }
            }
            StreamFraming::XhrStreaming => {
                if line.iter().all(|&b| b == b' ') {
                    Ok(None)
                } else if line.starts_with(b"\"") {
                    string_literal(line).map(Some)
                } else {
                    Err(format!("xhr-streaming: unexpected line {}", show(line)))
                }
            }
            StreamFraming::Html => {
                if let Some(inner) = line
                    .strip_prefix(b"<script>p(")
                    .and_then(|rest| rest.strip_suffix(b");</script>"))
                {
                    string_literal(inner).map(Some)
                } else if line.starts_with(b"<!DOCTYPE html>") && contains(line, b"parent.___eio[")
                {
                    Ok(None)
                } else {
                    Err(format!("html: unexpected line {}", show(line)))
                }
            }
        }
    }
}

/// Splits the complete lines off the front of `buf`, giving each payload they carry to `f`;
/// leaves an incomplete last line in `buf`. Returns how many payloads there were.
pub fn drain_lines(
    framing: StreamFraming,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(String) -> Result<(), String>,
) -> Result<usize, String> {
    let mut start = 0;
    let mut payloads = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl];
        start += nl + 1;
        if let Some(payload) = framing.line(line)? {
            payloads += 1;
            f(payload)?;
        }
    }
    buf.drain(..start);
    Ok(payloads)
}

/// An `application/x-www-form-urlencoded` body `d=<payload>`, the payload escaped as the
/// engine.io JSONP client does before percent-encoding (browsers turn a textarea's LF into
/// CRLF): a literal backslash-n becomes `\\n`, a real newline `\n`.
pub fn form_body(payload: &str) -> String {
    let escaped = payload.replace("\\n", "\\\n").replace('\n', "\\n");
    let mut out = String::with_capacity(escaped.len() + 2);
    out.push_str("d=");
    for b in escaped.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.*".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../fixtures/transports/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The payload every frame fixture carries: `hello`, binary 01 02 03 04, the hostile text.
    fn fixture_payload() -> String {
        let hostile = String::from_utf8(fixture("hostile-message.txt")).unwrap();
        format!("4hello\x1ebAQIDBA==\x1e4{hostile}")
    }

    #[test]
    fn jsonp_unescapes_the_golden_response() {
        let body = fixture("jsonp-frame.js");
        assert_eq!(jsonp(&body, "42").unwrap(), fixture_payload());
        assert!(jsonp(&body, "4").is_err(), "another callback index");
        assert!(jsonp(b"___eio[0](\"4a\")", "0").is_err(), "no `;`");
        assert!(jsonp(b"___eio[0](4);", "0").is_err(), "no string");
        assert_eq!(jsonp(b"___eio[0](\"2\");", "0").unwrap(), "2");
        // Surrogate pairs and the escapes of the script-safe literal.
        assert_eq!(
            jsonp(br#"___eio[7]("\ud83d\ude00\u003c\u002f\u2028\"\\");"#, "7").unwrap(),
            "😀</\u{2028}\"\\"
        );
    }

    #[test]
    fn stream_frames_of_the_golden_files() {
        let cases = [
            (StreamFraming::Sse, "sse-prelude.txt", "sse-frame.txt"),
            (
                StreamFraming::XhrStreaming,
                "xhr-streaming-prelude.txt",
                "xhr-streaming-frame.txt",
            ),
            (StreamFraming::Html, "html-prelude.html", "html-frame.html"),
        ];
        for (framing, prelude, frame) in cases {
            // A stream: the prelude, two frames, the end of a third one still to come.
            let mut stream = fixture(prelude);
            stream.extend(fixture(frame));
            stream.extend(fixture(frame));
            let partial = &fixture(frame)[..20];
            stream.extend_from_slice(partial);
            let mut got = Vec::new();
            let n = drain_lines(framing, &mut stream, |p| {
                got.push(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(n, 2, "{framing:?}");
            assert_eq!(
                got,
                vec![fixture_payload(), fixture_payload()],
                "{framing:?}"
            );
            assert_eq!(stream, partial, "{framing:?}: the incomplete line stays");
        }
    }

    #[test]
    fn stream_frames_arriving_byte_by_byte() {
        let mut all = fixture("sse-prelude.txt");
        all.extend(b"data: \"2\"\n\ndata: \"42[\\\"tick\\\",1,2]\\u001e6\"\n\n");
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in &all {
            buf.push(b);
            drain_lines(StreamFraming::Sse, &mut buf, |p| {
                got.push(p);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, vec!["2".to_string(), "42[\"tick\",1,2]\x1e6".into()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn unexpected_lines_are_errors() {
        assert!(StreamFraming::Sse.line(b"event: x").is_err());
        assert!(StreamFraming::Sse.line(b"data: 42").is_err());
        assert!(StreamFraming::XhrStreaming.line(b"42[\"a\"]").is_err());
        assert!(StreamFraming::Html
            .line(b"<script>q(\"4\");</script>")
            .is_err());
        assert!(StreamFraming::Html.line(b"<p>").is_err());
        assert_eq!(
            StreamFraming::Sse.line(b"data: \"3\"\r"),
            Ok(Some("3".into()))
        );
    }

    #[test]
    fn form_bodies_escape_newlines_like_the_jsonp_client() {
        assert_eq!(form_body("40"), "d=40");
        assert_eq!(form_body("3"), "d=3");
        // A real LF as `\n`, a literal backslash-n as `\\n` (then percent-encoded).
        assert_eq!(form_body("4a\nb\\nc"), "d=4a%5Cnb%5C%5Cnc");
        assert_eq!(form_body("4h é\x1e"), "d=4h+%C3%A9%1E");
    }
}
