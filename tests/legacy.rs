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

use bytes::Bytes;
use halley::engine::{Cors, EngineConfig};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::legacy::*;
use common::*;

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
