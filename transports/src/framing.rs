//! Byte framing of the HTTP transports other than plain long-polling, pure.
//!
//! Each transport carries the same thing, an Engine.IO payload (packets joined by `\x1e`,
//! binary as `b<base64>`), wrapped for what the browser can read:
//!
//! | transport | prelude | per flush |
//! |---|---|---|
//! | JSONP polling | – | `___eio[N]("<js-escaped payload>");` |
//! | `iframe`, `htmlfile` | ≥ 1 KiB HTML binding `p = parent.___eio[N]` | `<script>p("<js-escaped>");</script>` |
//! | `sse` | a 2 KiB comment | `data: "<json-escaped>"` + blank line |
//! | `xhr-streaming` | 2 KiB of spaces + `\n` | `"<json-escaped>"\n` |
//!
//! "JS-escaped" is a JSON string literal in which `<`, `>`, `&`, `/`, U+2028 and U+2029 are also
//! written as `\uXXXX`: nothing inside can close the script element (`</script>`), open an HTML
//! comment (`<!--`), or end the string in a pre-ES2019 engine (the two line separators), and every
//! escape is still valid JSON and ES3.

use bytes::{BufMut, Bytes, BytesMut};

use crate::packet::{encode_payload, Frame};

/// Appends `s` as a JSON string literal (quotes included). With `js`, also escapes the
/// characters that matter inside an HTML `<script>` or an old JavaScript engine.
pub fn write_string_literal(out: &mut BytesMut, s: &str, js: bool) {
    out.reserve(s.len() + 2);
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '<' if js => Some(b"\\u003c"),
            '>' if js => Some(b"\\u003e"),
            '&' if js => Some(b"\\u0026"),
            '/' if js => Some(b"\\u002f"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.put_slice(&bytes[start..i]);
        match escape {
            Some(esc) => out.put_slice(esc),
            None => {
                // Other control characters, the record separator among them.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let b = c as u8;
                out.put_slice(b"\\u00");
                out.put_u8(HEX[usize::from(b >> 4)]);
                out.put_u8(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + c.len_utf8();
    }
    out.put_slice(&bytes[start..]);
    out.put_u8(b'"');
}

/// The payload of `frames` as text (it is ASCII-safe UTF-8: binary frames are base64).
fn payload_text(frames: &[Frame]) -> String {
    let mut raw = BytesMut::new();
    encode_payload(frames, &mut raw);
    // Text frames are UTF-8 and binary ones become ASCII base64, so this cannot fail.
    String::from_utf8(raw.to_vec()).unwrap_or_default()
}

/// A valid JSONP/forever-frame callback index: 1 to 6 ASCII digits.
pub fn valid_index(j: &str) -> bool {
    (1..=6).contains(&j.len()) && j.bytes().all(|b| b.is_ascii_digit())
}

/// JSONP polling: one script per response.
pub fn jsonp(index: &str, frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"___eio[");
    out.put_slice(index.as_bytes());
    out.put_slice(b"](");
    write_string_literal(&mut out, &payload_text(frames), true);
    out.put_slice(b");");
    out.freeze()
}

/// How many bytes the forever-frame prelude has at least: Safari and old IE render nothing of a
/// streaming HTML document (and run none of its scripts) before about 1 KiB has arrived.
pub const HTML_PRELUDE_MIN: usize = 1024;

/// The forever-frame document's head: binds `p` to the client's callback, then pads.
pub fn html_prelude(index: &str) -> Bytes {
    html_prelude_in(index, None)
}

/// A host name a page may have set `document.domain` to: 1 to 253 letters, digits, dots and
/// dashes (so it can be written into a script as is).
pub fn valid_domain(domain: &str) -> bool {
    (1..=253).contains(&domain.len())
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// [`html_prelude`] for a page that relaxed `document.domain` to `domain` (checked with
/// [`valid_domain`]): the frame sets the same before it reaches its parent.
pub fn html_prelude_in(index: &str, domain: Option<&str>) -> Bytes {
    let mut out = BytesMut::with_capacity(HTML_PRELUDE_MIN + 64);
    out.put_slice(b"<!DOCTYPE html><html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\"></head><body><script>");
    if let Some(domain) = domain.filter(|d| valid_domain(d)) {
        out.put_slice(b"document.domain=\"");
        out.put_slice(domain.as_bytes());
        out.put_slice(b"\";");
    }
    out.put_slice(b"var p=parent.___eio[");
    out.put_slice(index.as_bytes());
    out.put_slice(b"];</script>");
    let pad = HTML_PRELUDE_MIN.saturating_sub(out.len());
    out.put_bytes(b' ', pad);
    out.put_u8(b'\n');
    out.freeze()
}

/// One forever-frame flush: a script calling `p` with the payload.
pub fn html_frame(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"<script>p(");
    write_string_literal(&mut out, &payload_text(frames), true);
    out.put_slice(b");</script>\n");
    out.freeze()
}

/// Bytes of padding before the first frame of `xhr-streaming` and `sse`: some proxies and
/// antivirus filters hold back the first 2 KiB of a response, and IE's XHR fires no progress
/// before then.
pub const STREAM_PADDING: usize = 2048;

/// The SSE prelude: one comment line of padding.
pub fn sse_prelude() -> Bytes {
    let mut out = BytesMut::with_capacity(STREAM_PADDING + 4);
    out.put_u8(b':');
    out.put_bytes(b' ', STREAM_PADDING);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// One SSE event: the payload as a JSON string on one `data:` line (the string escapes every
/// newline, so the event cannot be split).
pub fn sse_frame(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"data: ");
    write_string_literal(&mut out, &payload_text(frames), false);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The xhr-streaming prelude: padding, then a newline.
pub fn xhr_streaming_prelude() -> Bytes {
    let mut out = BytesMut::with_capacity(STREAM_PADDING + 1);
    out.put_bytes(b' ', STREAM_PADDING);
    out.put_u8(b'\n');
    out.freeze()
}

/// One xhr-streaming line: the payload as a JSON string.
pub fn xhr_streaming_frame(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    write_string_literal(&mut out, &payload_text(frames), false);
    out.put_u8(b'\n');
    out.freeze()
}

/// Extracts the `d` field of an `application/x-www-form-urlencoded` body and undoes the
/// engine.io JSONP newline escaping: the client writes a real newline as `\n` (two characters)
/// and a literal backslash-n as `\\n`, because browsers turn a textarea's LF into CRLF.
pub fn form_payload(body: &[u8]) -> Option<String> {
    let d = form_urlencoded::parse(body)
        .find(|(key, _)| key == "d")
        .map(|(_, value)| value.into_owned())?;
    let mut out = String::with_capacity(d.len());
    let mut rest = d.as_str();
    while let Some(pos) = rest.find("\\n") {
        if rest[..pos].ends_with('\\') {
            // `\\n` → a literal backslash followed by `n`.
            out.push_str(&rest[..pos - 1]);
            out.push_str("\\n");
        } else {
            out.push_str(&rest[..pos]);
            out.push('\n');
        }
        rest = &rest[pos + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// How a GET's answer is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    Xhr,
    Jsonp(String),
    /// The callback index, and the `document.domain` the page set, if any.
    Html(String, Option<String>),
    Sse,
    XhrStreaming,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(s: &str, js: bool) -> String {
        let mut out = BytesMut::new();
        write_string_literal(&mut out, s, js);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn js_literal_cannot_close_a_script_or_a_string() {
        let hostile = "</script><script>alert(1)</script><!--\u{2028}\u{2029}\"'\\\x1e😀&>";
        let lit = literal(hostile, true);
        for bad in ["<", ">", "\u{2028}", "\u{2029}", "</", "\x1e"] {
            assert!(!lit.contains(bad), "{bad:?} in {lit}");
        }
        assert_eq!(
            lit,
            r#""\u003c\u002fscript\u003e\u003cscript\u003ealert(1)\u003c\u002fscript\u003e\u003c!--\u2028\u2029\"'\\\u001e😀\u0026\u003e""#
        );
        // Still JSON for the same string.
        assert_eq!(serde_json::from_str::<String>(&lit).unwrap(), hostile);
    }

    #[test]
    fn json_literal_matches_serde_for_plain_text() {
        for s in ["", "4hello", "a\"b\\c\nd\re\tf\x1eg\u{1}", "😀 é"] {
            assert_eq!(literal(s, false), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn index_is_one_to_six_digits() {
        assert!(valid_index("0"));
        assert!(valid_index("123456"));
        for bad in ["", "1234567", "1a", "-1", "1 ", "٣"] {
            assert!(!valid_index(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_relaxed_document_domain_is_set_by_the_frame_and_nothing_else_gets_in() {
        let p = html_prelude_in("3", Some("example.com"));
        let text = std::str::from_utf8(&p).unwrap();
        assert!(text.contains("<script>document.domain=\"example.com\";var p=parent.___eio[3];"));
        assert!(p.len() > HTML_PRELUDE_MIN);
        for bad in ["", "a\"b", "x</script>", "a b", "é.com", &"a".repeat(254)] {
            assert!(!valid_domain(bad), "{bad:?}");
            assert_eq!(html_prelude_in("3", Some(bad)), html_prelude("3"));
        }
    }

    #[test]
    fn html_prelude_is_padded_past_one_kib() {
        let p = html_prelude("3");
        assert!(p.len() > HTML_PRELUDE_MIN);
        assert!(std::str::from_utf8(&p)
            .unwrap()
            .contains("var p=parent.___eio[3];"));
    }

    #[test]
    fn form_payload_undoes_newline_escaping() {
        // d = `4a\nb\\nc` as the client escapes it: a real LF, then a literal backslash-n.
        let body = b"d=4a%5Cnb%5C%5Cnc";
        assert_eq!(form_payload(body).unwrap(), "4a\nb\\nc");
        assert_eq!(
            form_payload(b"d=4hello+world%1E4x").unwrap(),
            "4hello world\x1e4x"
        );
        assert_eq!(form_payload(b"x=1"), None);
    }
}
