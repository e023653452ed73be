//! The legacy-transport client of `tests/legacy.rs`: expected framing for each way an old
//! browser reads a session (JSONP, forever-frame, SSE, xhr-streaming), a streaming response
//! read chunk by chunk ([`Stream`]) and one session read through a legacy transport
//! ([`Client`]). Expected bytes are written here, independently of the server's encoders.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use halley::engine::framing;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode};

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures and expected framing
// ---------------------------------------------------------------------------------------------

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The open packet `server` must send for `sid`: the golden file (made with the suite's
/// configuration), with this server's timings and limit.
pub fn open_packet(server: &TestServer, sid: &str) -> String {
    let config = server.engine.config();
    String::from_utf8(fixture("engineio/handshake-polling.txt"))
        .expect("UTF-8 fixture")
        .replace("<sid>", sid)
        .replace(
            r#""pingInterval":300,"#,
            &format!(
                r#""pingInterval":{},"#,
                config.session.ping_interval.as_millis()
            ),
        )
        .replace(
            r#""pingTimeout":200,"#,
            &format!(
                r#""pingTimeout":{},"#,
                config.session.ping_timeout.as_millis()
            ),
        )
        .replace(
            r#""maxPayload":1000000}"#,
            &format!(r#""maxPayload":{}}}"#, config.max_payload),
        )
}

/// The hostile text message of the fixtures without its record separator (a raw `\x1e` in a
/// POST body would split the payload in two packets).
pub fn hostile_text() -> String {
    String::from_utf8(fixture("transports/hostile-message.txt"))
        .expect("UTF-8 fixture")
        .replace('\x1e', "")
}

/// `s` as a JSON string literal, escaped the way the transports promise: like JSON, plus the two
/// line separators (which end a string in pre-ES2019 engines).
pub fn json_literal(s: &str) -> String {
    serde_json::to_string(s)
        .expect("a string serializes")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `s` as a JavaScript string literal safe inside an HTML `<script>`: additionally `<`, `>`, `&`
/// and `/` as `\uXXXX`. (serde_json never writes `\/`, so replacing `/` cannot break an escape.)
pub fn js_literal(s: &str) -> String {
    json_literal(s)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('/', "\\u002f")
}

/// Percent-encodes every byte but the unreserved ones, as a form submission would.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn show(bytes: &[u8]) -> String {
    pub const MAX: usize = 400;
    let text = String::from_utf8_lossy(bytes);
    if text.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{:?}… ({} bytes)", &text[..cut], bytes.len())
    } else {
        format!("{text:?}")
    }
}

#[track_caller]
pub fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let at = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: bytes differ at offset {at}\n  actual:   {}\n  expected: {}",
            show(actual),
            show(expected)
        );
    }
}

/// One of the legacy ways to read a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `polling` answered as a script: `___eio[j]("…");`.
    Jsonp,
    Iframe,
    Htmlfile,
    Sse,
    XhrStreaming,
}

pub use Kind::*;

impl Kind {
    pub fn transport(self) -> &'static str {
        match self {
            Jsonp => "polling",
            Iframe => "iframe",
            Htmlfile => "htmlfile",
            Sse => "sse",
            XhrStreaming => "xhr-streaming",
        }
    }

    /// Whether requests of this kind carry the callback index `j`.
    pub fn uses_index(self) -> bool {
        matches!(self, Jsonp | Iframe | Htmlfile)
    }

    pub fn is_streaming(self) -> bool {
        self != Jsonp
    }

    /// Whether the payload is written as a script-safe JS literal (else as plain JSON).
    pub fn js_escaped(self) -> bool {
        matches!(self, Jsonp | Iframe | Htmlfile)
    }

    pub fn query(self, j: &str, sid: Option<&str>) -> String {
        let mut query = format!("EIO=4&transport={}", self.transport());
        if self.uses_index() {
            query.push_str(&format!("&j={j}"));
        }
        if let Some(sid) = sid {
            query.push_str(&format!("&sid={sid}"));
        }
        query
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Jsonp => "application/javascript; charset=UTF-8",
            Iframe | Htmlfile => "text/html; charset=UTF-8",
            Sse => "text/event-stream; charset=UTF-8",
            XhrStreaming => "text/plain; charset=UTF-8",
        }
    }

    /// The first chunk of a stream.
    pub fn prelude(self, j: &str) -> Vec<u8> {
        match self {
            Jsonp => panic!("JSONP has no prelude"),
            Iframe | Htmlfile if j == "7" => fixture("transports/html-prelude.html"),
            Iframe | Htmlfile => framing::html_prelude(j).to_vec(),
            Sse => fixture("transports/sse-prelude.txt"),
            XhrStreaming => fixture("transports/xhr-streaming-prelude.txt"),
        }
    }

    /// What comes before and after the string literal in one framed unit.
    pub fn affixes(self, j: &str) -> (String, &'static str) {
        match self {
            Jsonp => (format!("___eio[{j}]("), ");"),
            Iframe | Htmlfile => ("<script>p(".to_owned(), ");</script>\n"),
            Sse => ("data: ".to_owned(), "\n\n"),
            XhrStreaming => (String::new(), "\n"),
        }
    }

    /// How a unit ends; it cannot occur earlier in the unit (string literals escape newlines,
    /// and a script-safe literal cannot contain `</`).
    pub fn terminator(self) -> &'static [u8] {
        match self {
            Jsonp => b");",
            Iframe | Htmlfile => b"</script>\n",
            Sse => b"\n\n",
            XhrStreaming => b"\n",
        }
    }

    /// The framed unit carrying the Engine.IO payload `payload`.
    pub fn frame(self, j: &str, payload: &str) -> Vec<u8> {
        let (prefix, suffix) = self.affixes(j);
        let literal = if self.js_escaped() {
            js_literal(payload)
        } else {
            json_literal(payload)
        };
        format!("{prefix}{literal}{suffix}").into_bytes()
    }

    /// The string literal inside a framed unit.
    #[track_caller]
    pub fn literal(self, j: &str, unit: &[u8]) -> String {
        let (prefix, suffix) = self.affixes(j);
        let text = std::str::from_utf8(unit).expect("a framed unit is UTF-8");
        text.strip_prefix(prefix.as_str())
            .and_then(|t| t.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("{self:?}: not a framed unit: {}", show(unit)))
            .to_owned()
    }

    /// The Engine.IO payload a framed unit carries.
    #[track_caller]
    pub fn unframe(self, j: &str, unit: &[u8]) -> String {
        let literal = self.literal(j, unit);
        serde_json::from_str(&literal)
            .unwrap_or_else(|e| panic!("{self:?}: not a JSON string literal ({e}): {literal}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a response chunk by chunk
// ---------------------------------------------------------------------------------------------

/// A response whose body is read as it arrives.
pub struct Stream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Incoming,
    /// Bytes received and not yet consumed.
    pub pending: BytesMut,
    pub ended: bool,
    /// Kept so the connection is not wound down while the body is read.
    pub _sender: SendRequest<Empty<Bytes>>,
}

impl Stream {
    /// Sends a GET for `path_and_query` over a fresh connection and returns once the response
    /// head has arrived.
    pub async fn get(addr: SocketAddr, path_and_query: &str, headers: &[(&str, &str)]) -> Stream {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path_and_query)
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let map = req.headers_mut();
        map.insert(HOST, HeaderValue::from_str(&addr.to_string()).unwrap());
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        within("a response head", async move {
            let mut sender = connect(addr).await;
            let res = sender.send_request(req).await.expect("send request");
            let (parts, body) = res.into_parts();
            Stream {
                status: parts.status,
                headers: parts.headers,
                body,
                pending: BytesMut::new(),
                ended: false,
                _sender: sender,
            }
        })
        .await
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is ASCII"))
    }

    /// The next body frame's data as hyper hands it over; `None` once the response has ended.
    pub async fn chunk(&mut self) -> Option<Bytes> {
        while !self.ended {
            match within("the next chunk of the response", self.body.frame()).await {
                None => self.ended = true,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Some(data),
                    // Empty data or trailers: nothing to read.
                    _ => {}
                },
                Some(Err(error)) => panic!("response body failed: {error}"),
            }
        }
        None
    }

    /// Asserts the next chunk is exactly `expected`.
    pub async fn expect_chunk(&mut self, expected: &[u8], what: &str) {
        assert!(self.pending.is_empty(), "unread bytes before {what}");
        while self.pending.len() < expected.len() {
            let Some(data) = self.chunk().await else {
                panic!("the response ended inside {what}: {}", show(&self.pending));
            };
            self.pending.extend_from_slice(&data);
        }
        // Frames never span two wire chunks: anything past `expected` was in the same chunk.
        assert_bytes(&self.pending, expected, what);
        self.pending.clear();
    }

    /// The next framed unit (ending with `terminator`), or `None` if the response ended cleanly
    /// before one began. Asserts that the unit ends where its chunk ends.
    pub async fn next_unit(&mut self, terminator: &[u8]) -> Option<Bytes> {
        loop {
            if let Some(pos) = find(&self.pending, terminator) {
                let end = pos + terminator.len();
                assert_eq!(
                    end,
                    self.pending.len(),
                    "a chunk carries more than one framed unit: {}",
                    show(&self.pending)
                );
                return Some(self.pending.split().freeze());
            }
            match self.chunk().await {
                Some(data) => self.pending.extend_from_slice(&data),
                None => {
                    assert!(
                        self.pending.is_empty(),
                        "the response ended inside a unit: {}",
                        show(&self.pending)
                    );
                    return None;
                }
            }
        }
    }

    /// Asserts the response ends now, with nothing more in it.
    pub async fn expect_end(&mut self) {
        assert!(self.pending.is_empty(), "unread: {}", show(&self.pending));
        if let Some(data) = self.chunk().await {
            panic!("expected the response to end, got {}", show(&data));
        }
    }

    /// The rest of the body, until the response ends.
    pub async fn rest(&mut self) -> Bytes {
        let mut out = std::mem::take(&mut self.pending);
        while let Some(data) = self.chunk().await {
            out.extend_from_slice(&data);
        }
        out.freeze()
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A GET that must be refused with `status` and Engine.IO error `code`; returns the response
/// head and body. A 200 fails at once, without waiting on a stream that never ends.
pub async fn expect_refused(
    server: &TestServer,
    query: &str,
    headers: &[(&str, &str)],
    status: StatusCode,
    code: u64,
) -> (HeaderMap, Bytes) {
    let mut res = Stream::get(server.addr, &server.path(query), headers).await;
    assert_eq!(
        res.status, status,
        "GET ?{query} with {headers:?}: {:?}",
        res.headers
    );
    let body = res.rest().await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET ?{query}: error body is not JSON ({e}): {}",
            show(&body)
        )
    });
    assert_eq!(json["code"], code, "GET ?{query} with {headers:?}: {json}");
    (res.headers, body)
}

// ---------------------------------------------------------------------------------------------
// A legacy client
// ---------------------------------------------------------------------------------------------

/// One session read through a legacy transport: the open stream for the streaming kinds, a GET
/// per read for JSONP.
pub struct Client<'a> {
    pub server: &'a TestServer,
    pub kind: Kind,
    pub j: String,
    /// The headers of the opening response.
    pub head: HeaderMap,
    pub open: Handshake,
    pub stream: Option<Stream>,
    /// Whether [`Client::expect`] and [`Client::next_data`] answer the server's pings (they
    /// may arrive, alone or in front of what a test waits for, once an exchange outlasts the
    /// ping interval); off where the heartbeat is under test.
    pub answer_pings: bool,
}

impl<'a> Client<'a> {
    /// Opens a session on `kind` with callback index `j` and checks every byte of the answer:
    /// status, headers, prelude, and the framed open packet.
    pub async fn open(server: &'a TestServer, kind: Kind, j: &str) -> Client<'a> {
        Self::open_with(server, kind, j, &[]).await
    }

    pub async fn open_with(
        server: &'a TestServer,
        kind: Kind,
        j: &str,
        headers: &[(&str, &str)],
    ) -> Client<'a> {
        let query = kind.query(j, None);
        let mut res = Stream::get(server.addr, &server.path(&query), headers).await;
        assert_eq!(res.status, StatusCode::OK, "{kind:?} handshake");
        assert_eq!(res.header("content-type"), Some(kind.content_type()));
        assert_eq!(res.header("cache-control"), Some("no-store"));
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        let unit = if kind.is_streaming() {
            res.expect_chunk(&kind.prelude(j), "the prelude").await;
            res.next_unit(kind.terminator())
                .await
                .expect("the open packet")
        } else {
            res.rest().await
        };
        let open = Handshake::parse(&kind.unframe(j, &unit));
        assert_bytes(
            &unit,
            &kind.frame(j, &open_packet(server, &open.sid)),
            "the framed open packet",
        );
        assert_eq!(open.json["upgrades"], serde_json::json!(["websocket"]));
        Client {
            server,
            kind,
            j: j.to_owned(),
            head: res.headers.clone(),
            open,
            stream: kind.is_streaming().then_some(res),
            answer_pings: true,
        }
    }

    pub fn sid(&self) -> &str {
        &self.open.sid
    }

    /// The query of this session's requests.
    pub fn query(&self) -> String {
        self.kind.query(&self.j, Some(&self.open.sid))
    }

    /// The next framed unit: the next chunk of the stream, or the body of the next JSONP GET.
    pub async fn next_unit(&mut self) -> Bytes {
        let kind = self.kind;
        match &mut self.stream {
            Some(stream) => stream
                .next_unit(kind.terminator())
                .await
                .unwrap_or_else(|| panic!("{kind:?}: the stream ended")),
            None => {
                let reply = self.server.get(&self.query()).await;
                assert_eq!(reply.status, StatusCode::OK, "JSONP GET: {reply:?}");
                assert_eq!(reply.header("content-type"), Some(kind.content_type()));
                reply.body
            }
        }
    }

    /// The next unit that carries more than pings, and its payload without them. Every unit
    /// read is checked to be framed byte for byte; pings are answered (best effort: the session
    /// may be closing) unless `answer_pings` is off, in which case they are returned like any
    /// other payload.
    pub async fn next_data(&mut self) -> (Bytes, String) {
        loop {
            let unit = self.next_unit().await;
            let payload = self.kind.unframe(&self.j, &unit);
            assert_bytes(
                &unit,
                &self.kind.frame(&self.j, &payload),
                &format!("{:?} framing of {payload:?}", self.kind),
            );
            if !self.answer_pings {
                return (unit, payload);
            }
            let packets: Vec<&str> = payload.split('\x1e').collect();
            if !packets.contains(&"2") {
                return (unit, payload);
            }
            let _ = self.post("text/plain;charset=UTF-8", "3").await;
            let rest: Vec<&str> = packets.into_iter().filter(|p| *p != "2").collect();
            if !rest.is_empty() {
                return (unit, rest.join("\x1e"));
            }
        }
    }

    /// Asserts the next unit carries exactly `payload`, framed byte for byte (pings answered
    /// and set aside, see [`Client::next_data`]; without one riding along, the unit is exactly
    /// `kind.frame(j, payload)`).
    pub async fn expect(&mut self, payload: &str) {
        let (unit, actual) = self.next_data().await;
        assert_eq!(actual, payload, "{:?}: {}", self.kind, show(&unit));
    }

    /// Streaming: asserts the stream ended. JSONP: nothing (every response ends by itself).
    pub async fn expect_ended(&mut self) {
        if let Some(stream) = &mut self.stream {
            stream.expect_end().await;
        }
    }

    /// Streaming: opens the next GET of the session, as a client does when a stream ends.
    pub async fn reopen(&mut self) {
        let kind = self.kind;
        let mut res = Stream::get(self.server.addr, &self.server.path(&self.query()), &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{kind:?} reopen");
        assert_eq!(res.header("content-type"), Some(kind.content_type()));
        res.expect_chunk(&kind.prelude(&self.j), "the prelude of a reopened stream")
            .await;
        self.stream = Some(res);
    }

    pub async fn post(&self, content_type: &str, body: impl Into<Bytes>) -> Reply {
        self.server
            .request(
                Method::POST,
                &self.query(),
                &[("content-type", content_type)],
                body,
            )
            .await
    }

    /// POSTs `payload` as `text/plain`, asserting `ok`.
    pub async fn send(&self, payload: &str) {
        let reply = self
            .post("text/plain;charset=UTF-8", payload.to_owned())
            .await;
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "ok"),
            "POST {payload:?}"
        );
    }

    /// POSTs a hidden-form body (`d=…`, already urlencoded), asserting `ok`.
    pub async fn send_form(&self, body: &str) {
        let reply = self
            .post("application/x-www-form-urlencoded", body.to_owned())
            .await;
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "ok"),
            "form POST {body:?}"
        );
    }
}

/// The next WebSocket text that is not a ping; pings are answered.
pub async fn ws_expect(ws: &mut Ws, expected: &str) {
    loop {
        let text = ws_text(ws).await;
        if text == "2" {
            ws_send(ws, "3").await;
            continue;
        }
        assert_eq!(text, expected);
        return;
    }
}
