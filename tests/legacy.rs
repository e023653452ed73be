//! Black-box tests of the legacy transports: JSONP polling (`polling` + `j`), the forever-frame
//! (`iframe`, `htmlfile`), `sse` and `xhr-streaming`, against a real Halley server on
//! 127.0.0.1:0 with the echo handler, spoken to over raw HTTP/1.1 exactly as an old browser would.
//!
//! Streaming responses are read chunk by chunk as they arrive (see [`Stream`]). The server writes
//! one HTTP chunk per framed unit (a prelude, then one unit per batch of packets); hyper's client
//! never merges two wire chunks into one body frame, but may split one when a read stops mid-chunk,
//! so [`Stream`] reassembles units by their terminator and asserts that every unit ends exactly
//! where a chunk ends (nothing of a next unit rides in the same chunk).
//!
//! Expected bytes are written here, independently of the server's encoders, except the
//! forever-frame prelude for callback indexes other than the fixture's `7`, which is compared
//! against `framing::html_prelude` (itself checked against the fixture by `framing_golden.rs`).
//!
//! Timings are the conformance suite's (pingInterval 300 ms, pingTimeout 200 ms); waits are on
//! responses and chunks, under the hang guard of `common::within`. Outside the heartbeat tests,
//! a ping that comes while a test waits for something else is answered and set aside (after its
//! unit's framing is checked), so a slow machine cannot turn an exchange into a timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use halley::engine::{framing, Cors, EngineConfig};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;

// ---------------------------------------------------------------------------------------------
// Fixtures and expected framing
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The open packet `server` must send for `sid`: the golden file (made with the suite's
/// configuration), with this server's timings and limit.
fn open_packet(server: &TestServer, sid: &str) -> String {
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
fn hostile_text() -> String {
    String::from_utf8(fixture("transports/hostile-message.txt"))
        .expect("UTF-8 fixture")
        .replace('\x1e', "")
}

/// `s` as a JSON string literal, escaped the way the transports promise: like JSON, plus the two
/// line separators (which end a string in pre-ES2019 engines).
fn json_literal(s: &str) -> String {
    serde_json::to_string(s)
        .expect("a string serializes")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `s` as a JavaScript string literal safe inside an HTML `<script>`: additionally `<`, `>`, `&`
/// and `/` as `\uXXXX`. (serde_json never writes `\/`, so replacing `/` cannot break an escape.)
fn js_literal(s: &str) -> String {
    json_literal(s)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('/', "\\u002f")
}

/// Percent-encodes every byte but the unreserved ones, as a form submission would.
fn form_encode(s: &str) -> String {
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

fn show(bytes: &[u8]) -> String {
    const MAX: usize = 400;
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
fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
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
enum Kind {
    /// `polling` answered as a script: `___eio[j]("…");`.
    Jsonp,
    Iframe,
    Htmlfile,
    Sse,
    XhrStreaming,
}

use Kind::*;

impl Kind {
    fn transport(self) -> &'static str {
        match self {
            Jsonp => "polling",
            Iframe => "iframe",
            Htmlfile => "htmlfile",
            Sse => "sse",
            XhrStreaming => "xhr-streaming",
        }
    }

    /// Whether requests of this kind carry the callback index `j`.
    fn uses_index(self) -> bool {
        matches!(self, Jsonp | Iframe | Htmlfile)
    }

    fn is_streaming(self) -> bool {
        self != Jsonp
    }

    /// Whether the payload is written as a script-safe JS literal (else as plain JSON).
    fn js_escaped(self) -> bool {
        matches!(self, Jsonp | Iframe | Htmlfile)
    }

    fn query(self, j: &str, sid: Option<&str>) -> String {
        let mut query = format!("EIO=4&transport={}", self.transport());
        if self.uses_index() {
            query.push_str(&format!("&j={j}"));
        }
        if let Some(sid) = sid {
            query.push_str(&format!("&sid={sid}"));
        }
        query
    }

    fn content_type(self) -> &'static str {
        match self {
            Jsonp => "application/javascript; charset=UTF-8",
            Iframe | Htmlfile => "text/html; charset=UTF-8",
            Sse => "text/event-stream; charset=UTF-8",
            XhrStreaming => "text/plain; charset=UTF-8",
        }
    }

    /// The first chunk of a stream.
    fn prelude(self, j: &str) -> Vec<u8> {
        match self {
            Jsonp => panic!("JSONP has no prelude"),
            Iframe | Htmlfile if j == "7" => fixture("transports/html-prelude.html"),
            Iframe | Htmlfile => framing::html_prelude(j).to_vec(),
            Sse => fixture("transports/sse-prelude.txt"),
            XhrStreaming => fixture("transports/xhr-streaming-prelude.txt"),
        }
    }

    /// What comes before and after the string literal in one framed unit.
    fn affixes(self, j: &str) -> (String, &'static str) {
        match self {
            Jsonp => (format!("___eio[{j}]("), ");"),
            Iframe | Htmlfile => ("<script>p(".to_owned(), ");</script>\n"),
            Sse => ("data: ".to_owned(), "\n\n"),
            XhrStreaming => (String::new(), "\n"),
        }
    }

    /// How a unit ends; it cannot occur earlier in the unit (string literals escape newlines,
    /// and a script-safe literal cannot contain `</`).
    fn terminator(self) -> &'static [u8] {
        match self {
            Jsonp => b");",
            Iframe | Htmlfile => b"</script>\n",
            Sse => b"\n\n",
            XhrStreaming => b"\n",
        }
    }

    /// The framed unit carrying the Engine.IO payload `payload`.
    fn frame(self, j: &str, payload: &str) -> Vec<u8> {
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
    fn literal(self, j: &str, unit: &[u8]) -> String {
        let (prefix, suffix) = self.affixes(j);
        let text = std::str::from_utf8(unit).expect("a framed unit is UTF-8");
        text.strip_prefix(prefix.as_str())
            .and_then(|t| t.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("{self:?}: not a framed unit: {}", show(unit)))
            .to_owned()
    }

    /// The Engine.IO payload a framed unit carries.
    #[track_caller]
    fn unframe(self, j: &str, unit: &[u8]) -> String {
        let literal = self.literal(j, unit);
        serde_json::from_str(&literal)
            .unwrap_or_else(|e| panic!("{self:?}: not a JSON string literal ({e}): {literal}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a response chunk by chunk
// ---------------------------------------------------------------------------------------------

/// A response whose body is read as it arrives.
struct Stream {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    /// Bytes received and not yet consumed.
    pending: BytesMut,
    ended: bool,
    /// Kept so the connection is not wound down while the body is read.
    _sender: SendRequest<Empty<Bytes>>,
}

impl Stream {
    /// Sends a GET for `path_and_query` over a fresh connection and returns once the response
    /// head has arrived.
    async fn get(addr: SocketAddr, path_and_query: &str, headers: &[(&str, &str)]) -> Stream {
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
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .expect("http1 handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
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

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is ASCII"))
    }

    /// The next body frame's data as hyper hands it over; `None` once the response has ended.
    async fn chunk(&mut self) -> Option<Bytes> {
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
    async fn expect_chunk(&mut self, expected: &[u8], what: &str) {
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
    async fn next_unit(&mut self, terminator: &[u8]) -> Option<Bytes> {
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
    async fn expect_end(&mut self) {
        assert!(self.pending.is_empty(), "unread: {}", show(&self.pending));
        if let Some(data) = self.chunk().await {
            panic!("expected the response to end, got {}", show(&data));
        }
    }

    /// The rest of the body, until the response ends.
    async fn rest(&mut self) -> Bytes {
        let mut out = std::mem::take(&mut self.pending);
        while let Some(data) = self.chunk().await {
            out.extend_from_slice(&data);
        }
        out.freeze()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A GET that must be refused with `status` and Engine.IO error `code`; returns the response
/// head and body. A 200 fails at once, without waiting on a stream that never ends.
async fn expect_refused(
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
struct Client<'a> {
    server: &'a TestServer,
    kind: Kind,
    j: String,
    /// The headers of the opening response.
    head: HeaderMap,
    open: Handshake,
    stream: Option<Stream>,
    /// Whether [`Client::expect`] and [`Client::next_data`] answer the server's pings (they
    /// may arrive, alone or in front of what a test waits for, once an exchange outlasts the
    /// ping interval); off where the heartbeat is under test.
    answer_pings: bool,
}

impl<'a> Client<'a> {
    /// Opens a session on `kind` with callback index `j` and checks every byte of the answer:
    /// status, headers, prelude, and the framed open packet.
    async fn open(server: &'a TestServer, kind: Kind, j: &str) -> Client<'a> {
        Self::open_with(server, kind, j, &[]).await
    }

    async fn open_with(
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

    fn sid(&self) -> &str {
        &self.open.sid
    }

    /// The query of this session's requests.
    fn query(&self) -> String {
        self.kind.query(&self.j, Some(&self.open.sid))
    }

    /// The next framed unit: the next chunk of the stream, or the body of the next JSONP GET.
    async fn next_unit(&mut self) -> Bytes {
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
    async fn next_data(&mut self) -> (Bytes, String) {
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
    async fn expect(&mut self, payload: &str) {
        let (unit, actual) = self.next_data().await;
        assert_eq!(actual, payload, "{:?}: {}", self.kind, show(&unit));
    }

    /// Streaming: asserts the stream ended. JSONP: nothing (every response ends by itself).
    async fn expect_ended(&mut self) {
        if let Some(stream) = &mut self.stream {
            stream.expect_end().await;
        }
    }

    /// Streaming: opens the next GET of the session, as a client does when a stream ends.
    async fn reopen(&mut self) {
        let kind = self.kind;
        let mut res = Stream::get(self.server.addr, &self.server.path(&self.query()), &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{kind:?} reopen");
        assert_eq!(res.header("content-type"), Some(kind.content_type()));
        res.expect_chunk(&kind.prelude(&self.j), "the prelude of a reopened stream")
            .await;
        self.stream = Some(res);
    }

    async fn post(&self, content_type: &str, body: impl Into<Bytes>) -> Reply {
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
    async fn send(&self, payload: &str) {
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
    async fn send_form(&self, body: &str) {
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
async fn ws_expect(ws: &mut Ws, expected: &str) {
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

async fn start() -> TestServer {
    TestServer::start(suite_config()).await
}

/// A parked long-poll has no event a client can observe, so a JSONP test that needs "GET parked,
/// then X" gives the GET this long to reach the server; it is far below the 300 ms ping interval.
async fn let_the_get_park() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

// ---------------------------------------------------------------------------------------------
// Per-transport scenarios (instantiated for each kind at the end of the file)
// ---------------------------------------------------------------------------------------------

/// Handshake without sid: status, headers, prelude and the framed open packet, byte for byte
/// (all checked by `Client::open`), for the fixture's callback index and others.
async fn handshake(kind: Kind) {
    let server = start().await;
    let indexes: &[&str] = if kind.uses_index() {
        &["7", "0", "42", "999999"]
    } else {
        &["7"]
    };
    let mut sids = Vec::new();
    for j in indexes {
        let client = Client::open(&server, kind, j).await;
        assert_eq!(
            client.open.json["pingInterval"], 300,
            "{kind:?} j={j}: {:?}",
            client.open.raw
        );
        if let Some(stream) = &client.stream {
            // Streams must not be buffered by a reverse proxy.
            assert_eq!(stream.header("x-accel-buffering"), Some("no"));
        }
        sids.push(client.open.sid.clone());
    }
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), indexes.len(), "session ids are distinct");
}

/// Messages both ways: text/plain POSTs and hidden-form POSTs (with the JSONP newline rules),
/// echoed framed on the stream (or the next JSONP GET), byte for byte.
async fn messages(kind: Kind) {
    let server = start().await;
    let mut client = Client::open(&server, kind, "3").await;

    client.send("4hello").await;
    client.expect("4hello").await;

    // A binary message travels as base64 and comes back the same way.
    client.send("bAQIDBA==").await;
    client.expect("bAQIDBA==").await;

    // A form: a real newline is sent as `\n` (two characters)…
    client.send_form("d=4line%20one%5Cnline%20two").await;
    client.expect("4line one\nline two").await;
    // …a literal backslash-n as `\\n`…
    client.send_form("d=4back%5C%5Cnslash").await;
    client.expect("4back\\nslash").await;
    // …and `+` is a space, percent escapes are UTF-8.
    client.send_form("d=4h%C3%A9llo+w%C3%B6rld+%E2%82%AC").await;
    client.expect("4héllo wörld €").await;
}

/// Heartbeat: a `2` arrives framed after the ping interval, a pong keeps the session, and
/// without one the session ends with a framed `1`.
async fn heartbeat(kind: Kind) {
    let server = start().await;
    // Each interval starts after this instant (the session is created, or the pong handled,
    // while the request that follows is served), so the ping cannot come sooner than 300 ms
    // after it: timers never fire early.
    let mut asked = Instant::now();
    let mut client = Client::open(&server, kind, "5").await;
    client.answer_pings = false;
    for round in 0..2 {
        client.expect("2").await;
        assert!(
            asked.elapsed() >= Duration::from_millis(300),
            "{kind:?} round {round}: ping after {:?}, before the 300 ms interval",
            asked.elapsed()
        );
        if round == 0 {
            asked = Instant::now();
            client.send("3").await;
        }
    }
    // No pong for the second ping: the session times out and says so.
    client.expect("1").await;
    client.expect_ended().await;
    expect_refused(&server, &client.query(), &[], StatusCode::BAD_REQUEST, 1).await;
}

/// Client close: POST `1`; the reader gets a framed noop and ends; the sid is gone.
async fn client_close(kind: Kind) {
    let server = start().await;
    let mut client = Client::open(&server, kind, "1").await;
    if kind.is_streaming() {
        // The stream is attached as soon as its head arrived.
        client.send("1").await;
        client.expect("6").await;
        client.expect_ended().await;
    } else {
        let query = client.query();
        let (get, ()) = tokio::join!(server.get(&query), async {
            let_the_get_park().await;
            client.send("1").await;
        });
        assert_eq!(get.status, StatusCode::OK, "{get:?}");
        assert_bytes(&get.body, &kind.frame("1", "6"), "the released JSONP GET");
    }
    expect_refused(&server, &client.query(), &[], StatusCode::BAD_REQUEST, 1).await;
}

/// Upgrade: a WebSocket probes the session and takes it over; the legacy reader ends with a
/// framed noop and the old transport is refused afterwards.
async fn upgrade(kind: Kind) {
    let server = start().await;
    let mut client = Client::open(&server, kind, "2").await;
    let mut ws = server
        .ws(&format!("EIO=4&transport=websocket&sid={}", client.sid()))
        .await;
    if kind.is_streaming() {
        ws_send(&mut ws, "2probe").await;
        assert_eq!(ws_text(&mut ws).await, "3probe");
        // The stream keeps flowing while the upgrade is probed.
        client.send("4during the probe").await;
        client.expect("4during the probe").await;
        ws_send(&mut ws, "5").await;
        client.expect("6").await;
        client.expect_ended().await;
    } else {
        // The poll is released with a noop whether it parked before or after the probe.
        let query = client.query();
        let (get, ()) = tokio::join!(server.get(&query), async {
            ws_send(&mut ws, "2probe").await;
            assert_eq!(ws_text(&mut ws).await, "3probe");
        });
        assert_eq!(get.status, StatusCode::OK, "{get:?}");
        assert_bytes(&get.body, &kind.frame("2", "6"), "the released JSONP GET");
        ws_send(&mut ws, "5").await;
    }
    ws_send(&mut ws, "4x").await;
    ws_expect(&mut ws, "4x").await;
    // The old transport is over for this session (the query carries a valid `j`, so the 400
    // is the transport's).
    expect_refused(&server, &client.query(), &[], StatusCode::BAD_REQUEST, 3).await;
    ws_send(&mut ws, "4still here").await;
    ws_expect(&mut ws, "4still here").await;
}

/// Overlap: a second concurrent reader for the same sid is refused and closes the session;
/// the first reader ends with a framed close packet.
async fn overlapping_reader(kind: Kind) {
    let server = start().await;
    let mut client = Client::open(&server, kind, "4").await;
    if kind.is_streaming() {
        expect_refused(&server, &client.query(), &[], StatusCode::BAD_REQUEST, 3).await;
        client.expect("1").await;
        client.expect_ended().await;
    } else {
        // Whichever GET the server sees first parks; the other overlaps it.
        let query = client.query();
        let (a, b) = tokio::join!(server.get(&query), server.get(&query));
        let (parked, second) = if a.status == StatusCode::OK {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(parked.status, StatusCode::OK, "{parked:?}");
        assert_bytes(&parked.body, &kind.frame("4", "1"), "the parked JSONP GET");
        second.assert_error(3);
    }
    expect_refused(&server, &client.query(), &[], StatusCode::BAD_REQUEST, 1).await;
}

/// A Socket.IO-level hostile message through the echo, as text/plain and as a form: the framed
/// echo decodes back to exactly the text, and nothing in it can break out of a script.
async fn hostile_message(kind: Kind) {
    let server = start().await;
    let mut client = Client::open(&server, kind, "6").await;
    let message = format!("4{}", hostile_text());
    for how in ["text/plain", "form"] {
        if how == "form" {
            // Form bodies carry a backslash before `n` as `\\n`; the fixture has no `\n`.
            assert!(!message.contains("\\n"));
            client
                .send_form(&format!("d={}", form_encode(&message)))
                .await;
        } else {
            client.send(&message).await;
        }
        // Framed byte for byte as the independent escaper here would (checked by `next_data`),
        // and decodes back to exactly the text.
        let (unit, payload) = client.next_data().await;
        assert_eq!(payload, message, "{kind:?} {how}: {}", show(&unit));
        let literal = kind.literal(&client.j, &unit);
        for bad in ["\u{2028}", "\u{2029}", "\n", "\r", "\x1e"] {
            assert!(
                !literal.contains(bad),
                "{kind:?} {how}: {bad:?} in {literal}"
            );
        }
        if kind.js_escaped() {
            let framed = std::str::from_utf8(&unit).unwrap();
            for bad in ["</", "<!--", "<", ">"] {
                assert!(
                    !literal.contains(bad),
                    "{kind:?} {how}: {bad:?} in {literal}"
                );
            }
            // The only `</` of the whole unit is the frame's own closing tag.
            let own = usize::from(kind != Jsonp);
            assert_eq!(
                framed.matches("</").count(),
                own,
                "{kind:?} {how}: {framed}"
            );
            assert!(!framed.contains("<!--"), "{kind:?} {how}: {framed}");
        }
    }
}

fn origins_config() -> EngineConfig {
    EngineConfig {
        cors: Cors::Origins(vec!["http://good.test".into()]),
        ..suite_config()
    }
}

/// With a list of allowed origins, a script-like GET must show where it comes from, and be
/// from there or from this server itself.
async fn allowed_origins(kind: Kind) {
    let server = TestServer::start(origins_config()).await;
    let host = server.addr.to_string();
    let same_referer = format!("http://{host}/x");
    let same_origin = format!("http://{host}");
    let query = kind.query("1", None);
    let refused: &[&[(&str, &str)]] = &[
        &[("origin", "http://evil.test")],
        &[("referer", "http://evil.test/page")],
        &[],
        // The Origin is what counts when both are sent.
        &[
            ("origin", "http://evil.test"),
            ("referer", "http://good.test/x"),
        ],
        // Look-alikes of the allowed origin.
        &[("referer", "http://good.test@evil.test/x")],
        &[("referer", "http://good.test.evil.test/x")],
        &[("referer", "http://evil.test/http://good.test/")],
        &[("origin", "http://good.test.evil.test")],
        &[("origin", "https://good.test")],
    ];
    for headers in refused {
        let (_, body) = expect_refused(&server, &query, headers, StatusCode::FORBIDDEN, 4).await;
        assert_eq!(&body[..], br#"{"code":4,"message":"Forbidden"}"#);
    }
    let allowed: &[&[(&str, &str)]] = &[
        &[("referer", "http://good.test/x")],
        &[("origin", "http://good.test")],
        &[("referer", same_referer.as_str())],
        &[("origin", same_origin.as_str())],
    ];
    for headers in allowed {
        let mut client = Client::open_with(&server, kind, "1", headers).await;
        // An allowed Origin also gets the CORS grant (SSE and xhr-streaming need it to read).
        let grant = client
            .head
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap());
        match headers {
            [("origin", "http://good.test")] => {
                assert_eq!(grant, Some("http://good.test"));
                assert_eq!(
                    client.head.get("access-control-allow-credentials").unwrap(),
                    "true"
                );
            }
            _ => assert_eq!(grant, None, "{headers:?}"),
        }
        // Reads with the sid are checked too: an allowed client keeps reading, a foreign page
        // is refused (and does not disturb the session).
        let query = client.query();
        let foreign = [("referer", "http://evil.test/page")];
        expect_refused(&server, &query, &foreign, StatusCode::FORBIDDEN, 4).await;
        client.send("4still open").await;
        if kind.is_streaming() {
            client.expect("4still open").await;
        } else {
            let reply = server
                .request(Method::GET, &query, headers, Bytes::new())
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{headers:?}: {reply:?}");
            assert_bytes(
                &reply.body,
                &kind.frame("1", "4still open"),
                "JSONP echo to an allowed page",
            );
        }
    }
}

/// With the default same-origin policy: a foreign page is refused, a request that names no page
/// (privacy proxies strip both headers) and a same-origin one are served.
async fn same_origin_default(kind: Kind) {
    let config = EngineConfig {
        cors: Cors::SameOrigin,
        ..suite_config()
    };
    let server = TestServer::start(config).await;
    let query = kind.query("1", None);
    for headers in [
        [("referer", "http://evil.test/page")],
        [("origin", "http://evil.test")],
    ] {
        expect_refused(&server, &query, &headers, StatusCode::FORBIDDEN, 4).await;
    }
    Client::open(&server, kind, "1").await;
    let same = format!("http://{}/x", server.addr);
    Client::open_with(&server, kind, "1", &[("referer", &same)]).await;
}

/// Stream-limit rollover: with `stream_limit` 4096 the stream ends after the chunk whose payload
/// crosses the limit, the client reopens with its sid, and every echoed message arrives exactly once
/// and in order across the reopens, including those queued while no stream was open.
async fn stream_limit_rollover(kind: Kind) {
    const LIMIT: usize = 4096;
    const TOTAL: usize = 200;
    const BATCH: usize = 10;
    let server = TestServer::start(EngineConfig {
        stream_limit: LIMIT,
        ..suite_config()
    })
    .await;
    let mut client = Client::open(&server, kind, "8").await;
    let message = |i: usize| format!("4m{i:04}-{}", "x".repeat(50));
    let post_batch = |from: usize| {
        (from..from + BATCH)
            .map(message)
            .collect::<Vec<_>>()
            .join("\x1e")
    };
    // The limit counts payload bytes (each packet and its separator), not the framing: the
    // open packet counts toward the first stream (the prelude does not).
    let mut sent = client.open.raw.len() + 1;
    let mut received: Vec<usize> = Vec::new();
    let mut posted = 0;
    let mut ends = 0;
    // Units in a row that brought no message while some were outstanding. The echoes of a POST
    // are queued before it is answered `ok`, so at most one ping queued just before can come
    // first; more means a message was lost (and pongs would otherwise keep the loop alive).
    let mut stalled = 0;
    let whole_exchange = async {
        while received.len() < TOTAL {
            if received.len() == posted && posted < TOTAL {
                client.send(&post_batch(posted)).await;
                posted += BATCH;
            }
            let stream = client.stream.as_mut().expect("a stream");
            let Some(unit) = stream.next_unit(kind.terminator()).await else {
                panic!(
                    "{kind:?}: the stream ended after {sent} bytes, under the {LIMIT}-byte limit"
                );
            };
            let payload = kind.unframe("8", &unit);
            sent += payload.split('\x1e').map(|p| p.len() + 1).sum::<usize>();
            let before = received.len();
            let mut pinged = false;
            for packet in payload.split('\x1e') {
                if packet == "2" {
                    pinged = true;
                    continue;
                }
                let n: usize = packet
                    .get(2..6)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{kind:?}: unexpected packet {packet:?}"));
                assert_eq!(packet, message(n), "{kind:?}: message {n} intact");
                received.push(n);
            }
            stalled = if received.len() == before {
                stalled + 1
            } else {
                0
            };
            assert!(
                stalled < 2,
                "{kind:?}: no message in two units; posted {posted}, received {received:?}"
            );
            if pinged {
                client.send("3").await;
            }
            if sent >= LIMIT {
                // The chunk that crossed the limit was the stream's last.
                client.expect_ended().await;
                ends += 1;
                if received.len() == posted && posted < TOTAL {
                    // Echoes queued while no stream is open wait for the next one.
                    client.send(&post_batch(posted)).await;
                    posted += BATCH;
                }
                client.reopen().await;
                sent = 0;
            }
        }
    };
    // A hang guard over the whole exchange, which takes well under a second.
    if tokio::time::timeout(Duration::from_secs(30), whole_exchange)
        .await
        .is_err()
    {
        panic!("{kind:?}: the rollover exchange did not finish within 30 s");
    }
    assert_eq!(
        received,
        (0..TOTAL).collect::<Vec<_>>(),
        "{kind:?}: every message exactly once, in order"
    );
    assert!(ends >= 2, "{kind:?}: only {ends} rollovers");
}

macro_rules! per_transport {
    ($module:ident, $kind:ident, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::$kind).await
                }
            )*
        }
    };
}

per_transport!(
    jsonp,
    Jsonp,
    [
        handshake,
        messages,
        heartbeat,
        client_close,
        upgrade,
        overlapping_reader,
        hostile_message,
        allowed_origins,
        same_origin_default,
    ]
);
per_transport!(
    iframe,
    Iframe,
    [
        handshake,
        messages,
        heartbeat,
        client_close,
        upgrade,
        overlapping_reader,
        hostile_message,
        allowed_origins,
        same_origin_default,
        stream_limit_rollover,
    ]
);
per_transport!(
    htmlfile,
    Htmlfile,
    [
        handshake,
        messages,
        heartbeat,
        client_close,
        upgrade,
        overlapping_reader,
        hostile_message,
        allowed_origins,
        same_origin_default,
        stream_limit_rollover,
    ]
);
per_transport!(
    sse,
    Sse,
    [
        handshake,
        messages,
        heartbeat,
        client_close,
        upgrade,
        overlapping_reader,
        hostile_message,
        allowed_origins,
        same_origin_default,
        stream_limit_rollover,
    ]
);
per_transport!(
    xhr_streaming,
    XhrStreaming,
    [
        handshake,
        messages,
        heartbeat,
        client_close,
        upgrade,
        overlapping_reader,
        hostile_message,
        allowed_origins,
        same_origin_default,
        stream_limit_rollover,
    ]
);

// ---------------------------------------------------------------------------------------------
// Across transports
// ---------------------------------------------------------------------------------------------

/// A session is read only through the transport it was opened with; asking through another is
/// a bad request that leaves the session alone.
#[tokio::test]
async fn transport_mismatch_is_refused_and_session_stays() {
    let server = start().await;
    let mut client = Client::open(&server, Sse, "1").await;
    let sid = client.sid().to_owned();
    for query in [
        format!("EIO=4&transport=xhr-streaming&sid={sid}"),
        format!("EIO=4&transport=iframe&j=1&sid={sid}"),
        format!("EIO=4&transport=htmlfile&j=1&sid={sid}"),
        format!("EIO=4&transport=polling&j=1&sid={sid}"),
        format!("EIO=4&transport=polling&sid={sid}"),
    ] {
        expect_refused(&server, &query, &[], StatusCode::BAD_REQUEST, 3).await;
    }
    let post = server
        .request(
            Method::POST,
            &format!("EIO=4&transport=xhr-streaming&sid={sid}"),
            &[("content-type", "text/plain;charset=UTF-8")],
            "4wrong way",
        )
        .await;
    post.assert_error(3);
    // The SSE stream is still the session's reader.
    client.send("4still sse").await;
    client.expect("4still sse").await;
}

/// Plain XHR polling is readable cross-origin only through CORS, so no Origin / Referer check
/// applies to it, even with a list of allowed origins.
#[tokio::test]
async fn xhr_polling_is_not_subject_to_the_script_origin_check() {
    let server = TestServer::start(origins_config()).await;
    for headers in [
        &[("origin", "http://evil.test")][..],
        &[("referer", "http://evil.test/page")][..],
        &[][..],
    ] {
        let reply = server
            .request(
                Method::GET,
                "EIO=4&transport=polling",
                headers,
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{headers:?}: {reply:?}");
        let open = Handshake::parse(reply.text());
        // No CORS grant for the foreign page, though.
        assert_eq!(reply.header("access-control-allow-origin"), None);
        let poll = server
            .request(
                Method::GET,
                &format!("EIO=4&transport=polling&sid={}", open.sid),
                headers,
                Bytes::new(),
            )
            .await;
        assert_eq!((poll.status, poll.text()), (StatusCode::OK, "2"));
    }
}

// ---------------------------------------------------------------------------------------------
// Security: the callback index, header injection, IE's XSS filter
// ---------------------------------------------------------------------------------------------

const BAD_REQUEST_BODY: &[u8] = br#"{"code":3,"message":"Bad request"}"#;

/// An invalid `j` is refused before anything else, on every transport, with or without a sid,
/// and never reflected.
#[tokio::test]
async fn invalid_callback_index_is_refused_and_not_reflected() {
    // Some eighty requests precede the check that the JSONP session is still there; with the
    // suite's 500 ms ping-to-close budget nobody answers in between, so this one test gets a
    // ping interval long enough not to matter (the heartbeat is not what it is about).
    let server = TestServer::start(EngineConfig {
        session: halley::engine::SessionConfig {
            ping_interval: Duration::from_secs(60),
            ..suite_config().session
        },
        ..suite_config()
    })
    .await;
    let jsonp = Client::open(&server, Jsonp, "1").await;
    let sid = jsonp.sid().to_owned();
    for j in [
        "1a",
        "",
        "1234567",
        "%3Cscript%3E",
        "-1",
        "1%20",
        "0x1",
        "%31",
    ] {
        for transport in ["polling", "iframe", "htmlfile", "sse", "xhr-streaming"] {
            for with_sid in [false, true] {
                let mut query = format!("EIO=4&transport={transport}&j={j}");
                if with_sid {
                    query.push_str(&format!("&sid={sid}"));
                }
                let (headers, body) =
                    expect_refused(&server, &query, &[], StatusCode::BAD_REQUEST, 3).await;
                assert_bytes(&body, BAD_REQUEST_BODY, &query);
                assert_eq!(
                    headers.get("content-type").map(|v| v.as_bytes()),
                    Some(&b"application/json"[..])
                );
                for reflected in [j, "script", "<", "%3C"] {
                    if !reflected.is_empty() {
                        assert!(find(&body, reflected.as_bytes()).is_none(), "{query}");
                    }
                }
            }
        }
    }
    // The JSONP session was not touched by any of that.
    let mut jsonp = jsonp;
    jsonp.send("4fine").await;
    jsonp.expect("4fine").await;
}

/// A raw `<script>` in the query (no browser sends it unencoded) is refused before it reaches
/// the engine, and not reflected.
#[tokio::test]
async fn raw_script_tag_in_callback_index_is_refused_and_not_reflected() {
    let server = start().await;
    for transport in ["polling", "iframe", "htmlfile"] {
        let (head, body) = raw_get(
            server.addr,
            &format!("/engine.io/?EIO=4&transport={transport}&j=<script>"),
            &[],
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(find(&body, b"script").is_none(), "{}", show(&body));
        assert!(!head.to_ascii_lowercase().contains("script"), "{head}");
    }
}

#[tokio::test]
async fn forever_frame_without_callback_index_is_refused() {
    let server = start().await;
    for transport in ["iframe", "htmlfile"] {
        let (_, body) = expect_refused(
            &server,
            &format!("EIO=4&transport={transport}"),
            &[],
            StatusCode::BAD_REQUEST,
            3,
        )
        .await;
        assert_bytes(&body, BAD_REQUEST_BODY, transport);
        // Nor can an open forever-frame session be read without one.
        let kind = if transport == "iframe" {
            Iframe
        } else {
            Htmlfile
        };
        let client = Client::open(&server, kind, "1").await;
        expect_refused(
            &server,
            &format!("EIO=4&transport={transport}&sid={}", client.sid()),
            &[],
            StatusCode::BAD_REQUEST,
            3,
        )
        .await;
    }
}

/// Sends a GET over a raw TCP connection (`Connection: close`) and returns the response head
/// and body bytes as received.
async fn raw_get(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let mut request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let response = within("a raw HTTP response", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("read");
        response
    })
    .await;
    let split = find(&response, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", show(&response)));
    let head = String::from_utf8(response[..split].to_vec()).expect("ASCII head");
    (head, response[split + 4..].to_vec())
}

/// Encoded CR/LF in `j` or `sid` never make it into a response header (nor anywhere else).
#[tokio::test]
async fn crlf_in_query_values_never_reaches_response_headers() {
    let server = start().await;
    let injections = [
        "%0d%0aSet-Cookie:%20evil=1",
        "%0D%0AX-Injected:%20evil",
        "%0aX-Injected:%20evil",
        "%0d%0a%0d%0a%3Cscript%3Eevil%3C/script%3E",
    ];
    for injection in injections {
        for query in [
            format!("EIO=4&transport=polling&j=1{injection}"),
            format!("EIO=4&transport=iframe&j=1{injection}"),
            format!("EIO=4&transport=polling&sid=abc{injection}"),
            format!("EIO=4&transport=polling&j=1&sid=abc{injection}"),
            format!("EIO=4&transport=sse&sid=abc{injection}"),
            format!("EIO=4&transport=htmlfile&j=1&sid=abc{injection}"),
        ] {
            let (head, body) = raw_get(server.addr, &format!("/engine.io/?{query}"), &[]).await;
            assert!(head.starts_with("HTTP/1.1 400 "), "{query}: {head}");
            let lower = head.to_ascii_lowercase();
            for bad in [
                "evil",
                "set-cookie",
                "x-injected",
                "%0d",
                "%0a",
                "\n\n",
                "\r\r",
            ] {
                assert!(!lower.contains(bad), "{query}: {bad:?} in {head:?}");
            }
            // Every head line is `name: value` with a known name.
            for line in head.split("\r\n").skip(1) {
                let (name, _) = line
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("{query}: odd head line {line:?}"));
                assert!(
                    [
                        "content-type",
                        "content-length",
                        "cache-control",
                        "x-content-type-options",
                        "access-control-allow-origin",
                        "date",
                        "connection",
                    ]
                    .contains(&name.to_ascii_lowercase().as_str()),
                    "{query}: unexpected header {line:?}"
                );
            }
            assert!(find(&body, b"evil").is_none(), "{query}: {}", show(&body));
        }
    }
}

const MSIE_6: &str = "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)";
const IE_11: &str = "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// IE's XSS filter would mangle a JSONP response that reflects request data: MSIE and Trident
/// get `X-XSS-Protection: 0`, others no such header.
#[tokio::test]
async fn jsonp_for_msie_disables_the_xss_filter() {
    let server = start().await;
    for (agent, expected) in [(MSIE_6, Some("0")), (IE_11, Some("0")), (FIREFOX, None)] {
        let headers = [("user-agent", agent)];
        let open = server
            .request(Method::GET, &Jsonp.query("9", None), &headers, Bytes::new())
            .await;
        assert_eq!(open.status, StatusCode::OK, "{open:?}");
        assert_eq!(open.header("content-type"), Some(Jsonp.content_type()));
        assert_eq!(open.header("x-xss-protection"), expected, "{agent}");
        let sid = Handshake::parse(&Jsonp.unframe("9", &open.body)).sid;
        let poll = server
            .request(
                Method::GET,
                &Jsonp.query("9", Some(&sid)),
                &headers,
                Bytes::new(),
            )
            .await;
        assert_bytes(&poll.body, &Jsonp.frame("9", "2"), "the JSONP ping");
        assert_eq!(poll.header("x-xss-protection"), expected, "{agent}");

        // The forever-frame is IE's streaming transport: same header.
        let stream = Stream::get(
            server.addr,
            &server.path(&Htmlfile.query("9", None)),
            &headers,
        )
        .await;
        assert_eq!(stream.status, StatusCode::OK);
        assert_eq!(stream.header("x-xss-protection"), expected, "{agent}");
    }
}
