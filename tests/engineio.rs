//! Black-box tests of the Engine.IO v4 server: a real Halley server per test on 127.0.0.1:0,
//! spoken to over HTTP/1.1 and WebSocket exactly as a client would.
//!
//! Most tests use the public conformance suite's settings (pingInterval 300 ms, pingTimeout
//! 200 ms, maxPayload 1,000,000, CORS for any origin); they finish their exchanges well inside
//! one ping interval. Waits are on responses and frames, under a hang guard (`within`).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use halley::bridge::{now_ms, Latency, Source};
use halley::engine::{Cors, EngineConfig};
use hyper::{Method, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use common::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/engineio/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A parked long-poll has no event a client can observe, so tests that need "GET parked, then
/// X" give the GET this long to reach the server. It is far below the 300 ms ping interval.
async fn let_the_get_park() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn start() -> TestServer {
    TestServer::start(suite_config()).await
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_handshake_returns_open_packet_with_reference_keys() {
    let server = start().await;
    let reply = server.get("EIO=4&transport=polling").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

    let open = Handshake::parse(reply.text());
    assert_eq!(
        open.keys(),
        [
            "sid",
            "upgrades",
            "pingInterval",
            "pingTimeout",
            "maxPayload"
        ]
    );
    assert!(!open.sid.is_empty());
    assert_eq!(open.json["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open.json["pingInterval"], 300);
    assert_eq!(open.json["pingTimeout"], 200);
    assert_eq!(open.json["maxPayload"], 1_000_000);
    // Byte for byte, the golden packet.
    assert_eq!(
        open.raw.replace(&open.sid, "<sid>"),
        fixture("handshake-polling.txt")
    );
    // The session exists: a poll on it is accepted (it answers the first ping).
    let next = server.poll(&open.sid).await;
    assert_eq!((next.status, next.text()), (StatusCode::OK, "2"));
}

#[tokio::test]
async fn handshakes_give_distinct_session_ids() {
    let server = start().await;
    let a = server.handshake().await;
    let b = server.handshake().await;
    assert_ne!(a.sid, b.sid);
}

#[tokio::test]
async fn handshake_without_or_with_wrong_eio_is_unsupported_protocol_version() {
    let server = start().await;
    for query in [
        "transport=polling",
        "EIO=3&transport=polling",
        "EIO=5&transport=polling",
        "EIO=abc&transport=polling",
    ] {
        let reply = server.get(query).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            reply.text(),
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
            "{query}"
        );
    }
}

#[tokio::test]
async fn handshake_without_or_with_unknown_transport_is_transport_unknown() {
    let server = start().await;
    for query in ["EIO=4", "EIO=4&transport=", "EIO=4&transport=flashsocket"] {
        let reply = server.get(query).await;
        reply.assert_error(0);
        assert_eq!(reply.error().1, "Transport unknown", "{query}");
    }
}

#[tokio::test]
async fn handshake_with_post_or_put_is_bad_handshake_method() {
    let server = start().await;
    for method in [Method::POST, Method::PUT] {
        let reply = server
            .request(method.clone(), "EIO=4&transport=polling", &[], "4hello")
            .await;
        reply.assert_error(2);
        assert_eq!(reply.error().1, "Bad handshake method", "{method}");
    }
}

#[tokio::test]
async fn unknown_sid_is_session_id_unknown() {
    let server = start().await;
    let reply = server.poll("doesnotexist").await;
    reply.assert_error(1);
    assert_eq!(reply.error().1, "Session ID unknown");
    let reply = server.post("doesnotexist", "4hello").await;
    reply.assert_error(1);
}

#[tokio::test]
async fn websocket_transport_on_plain_get_is_bad_request() {
    let server = start().await;
    let reply = server.get("EIO=4&transport=websocket").await;
    reply.assert_error(3);
}

#[tokio::test]
async fn websocket_handshake_sends_open_packet_without_upgrades() {
    let server = start().await;
    let (_ws, open) = server.ws_handshake().await;
    assert_eq!(
        open.keys(),
        [
            "sid",
            "upgrades",
            "pingInterval",
            "pingTimeout",
            "maxPayload"
        ]
    );
    assert_eq!(open.json["upgrades"], serde_json::json!([]));
    assert_eq!(
        open.raw.replace(&open.sid, "<sid>"),
        fixture("handshake-websocket.txt")
    );
}

/// Connecting a WebSocket to `query` must fail with an HTTP 400 carrying Engine.IO `code`.
async fn assert_ws_refused(server: &TestServer, query: &str, code: u64) {
    let result = within(
        "websocket connect",
        tokio_tungstenite::connect_async(server.ws_url(query)),
    )
    .await;
    match result {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
            let body = response.body().as_deref().unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(body).expect("JSON error body");
            assert_eq!(json["code"], code, "{query}");
        }
        Err(other) => panic!("{query}: expected an HTTP 400, got {other}"),
        Ok(_) => panic!("{query}: websocket accepted"),
    }
}

#[tokio::test]
async fn websocket_with_invalid_eio_is_refused() {
    let server = start().await;
    assert_ws_refused(&server, "transport=websocket", 5).await;
    assert_ws_refused(&server, "EIO=3&transport=websocket", 5).await;
}

#[tokio::test]
async fn websocket_with_unknown_transport_is_refused() {
    let server = start().await;
    assert_ws_refused(&server, "EIO=4&transport=flashsocket", 0).await;
    assert_ws_refused(&server, "EIO=4", 0).await;
}

// ---------------------------------------------------------------------------------------------
// Polling messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_post_is_answered_ok_and_message_is_echoed_on_next_get() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let post = server.post(&sid, "4hello").await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(post.text(), "ok");
    let content_type = post.header("content-type").expect("content-type");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(post.header("cache-control"), Some("no-store"));

    let get = server.poll(&sid).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "4hello");
}

#[tokio::test]
async fn polling_parked_get_is_released_by_a_message() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let (get, post) = tokio::join!(server.poll(&sid), async {
        let_the_get_park().await;
        server.post(&sid, "4wake up").await
    });
    assert_eq!(post.text(), "ok");
    // Released by the echo, long before the first ping would have released it.
    assert_eq!((get.status, get.text()), (StatusCode::OK, "4wake up"));
}

#[tokio::test]
async fn polling_several_packets_are_echoed_in_one_payload_in_order() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    assert_eq!(server.post(&sid, "4a\x1e4b\x1e4c").await.text(), "ok");
    let get = server.poll(&sid).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "4a\x1e4b\x1e4c");
}

#[tokio::test]
async fn polling_text_and_binary_are_echoed_byte_for_byte() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let payload = "4hello\x1ebAQIDBA==";
    assert_eq!(server.post(&sid, payload).await.status, StatusCode::OK);
    let get = server.poll(&sid).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(&get.body[..], payload.as_bytes());
}

#[tokio::test]
async fn polling_utf8_message_is_echoed_intact() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let payload = "4héllo wörld €😀\u{2028}";
    assert_eq!(server.post(&sid, payload).await.status, StatusCode::OK);
    assert_eq!(server.poll(&sid).await.text(), payload);
}

/// POSTs `body`, expects 400, then expects the session to be gone.
async fn assert_bad_payload_closes_session(body: &'static [u8]) {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let post = server.post(&sid, Bytes::from_static(body)).await;
    assert_eq!(post.status, StatusCode::BAD_REQUEST, "{body:?}");
    server.poll(&sid).await.assert_error(1);
}

#[tokio::test]
async fn polling_invalid_packet_is_refused_and_closes_session() {
    assert_bad_payload_closes_session(b"abc").await;
}

#[tokio::test]
async fn polling_invalid_utf8_is_refused_and_closes_session() {
    assert_bad_payload_closes_session(b"4\xff\xfe").await;
}

#[tokio::test]
async fn polling_truncated_base64_is_refused_and_closes_session() {
    // `AQIDBA==` cut mid-quantum. (`bAQID` would be valid: `AQID` is a whole quantum.)
    assert_bad_payload_closes_session(b"bAQIDB").await;
}

#[tokio::test]
async fn polling_empty_packet_in_payload_is_refused_and_closes_session() {
    assert_bad_payload_closes_session(b"4a\x1e\x1e4b").await;
}

#[tokio::test]
async fn polling_client_ping_is_refused_and_closes_session() {
    assert_bad_payload_closes_session(b"2").await;
}

fn small_payload_config() -> EngineConfig {
    EngineConfig {
        max_payload: 100,
        ..suite_config()
    }
}

#[tokio::test]
async fn polling_oversize_post_is_413_and_session_stays_usable() {
    let server = TestServer::start(small_payload_config()).await;
    let open = server.handshake().await;
    assert_eq!(open.json["maxPayload"], 100);
    let big = format!("4{}", "x".repeat(200));
    let post = server.post(&open.sid, big).await;
    assert_eq!(post.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(server.post(&open.sid, "4hello").await.text(), "ok");
    let get = server.poll(&open.sid).await;
    assert_eq!((get.status, get.text()), (StatusCode::OK, "4hello"));
}

#[tokio::test]
async fn polling_oversize_chunked_post_without_length_is_413() {
    let server = TestServer::start(small_payload_config()).await;
    let sid = server.handshake().await.sid;
    // Two chunks and no Content-Length: the limit must hold while reading, not only up front.
    let chunks = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(format!(
            "4{}",
            "x".repeat(80)
        )))),
        Ok(hyper::body::Frame::data(Bytes::from("y".repeat(80)))),
    ]);
    let req = hyper::Request::post(server.path(&format!("EIO=4&transport=polling&sid={sid}")))
        .header("host", server.addr.to_string())
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let reply = send(server.addr, req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(server.post(&sid, "4still").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4still");
}

#[tokio::test]
async fn polling_concurrent_gets_close_session_first_get_gets_close_packet() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    // Whichever GET the server sees first parks; the other overlaps it.
    let (a, b) = tokio::join!(server.poll(&sid), server.poll(&sid));
    let (parked, second) = if a.status == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!((parked.status, parked.text()), (StatusCode::OK, "1"));
    second.assert_error(3);
    server.poll(&sid).await.assert_error(1);
}

// A reverse proxy retries a GET whose upstream died before answering (nginx's default
// `proxy_next_upstream error`), with the same query. Behind a cluster the first attempt may
// have been answered by the session's node through the node that died: the client never got
// those frames. Clients stamp every request (`t`), so a GET with the stamp of the last one is
// that retry, and it gets the last answer again.

/// A long-poll GET on `sid` stamped `t`.
async fn poll_stamped(server: &TestServer, sid: &str, t: &str) -> Reply {
    server
        .get(&format!("EIO=4&transport=polling&sid={sid}&t={t}"))
        .await
}

#[tokio::test]
async fn polling_get_retried_with_the_same_stamp_gets_the_lost_answer_again() {
    let server = TestServer::start(long_heartbeat_config()).await;
    let sid = server.handshake().await.sid;
    assert_eq!(server.post(&sid, "4a\x1e4b").await.text(), "ok");
    assert_eq!(poll_stamped(&server, &sid, "s1").await.text(), "4a\x1e4b");
    // The proxy lost that answer and sends the same GET again: the frames come again, with
    // what was queued since.
    assert_eq!(server.post(&sid, "4c").await.text(), "ok");
    assert_eq!(
        poll_stamped(&server, &sid, "s1").await.text(),
        "4a\x1e4b\x1e4c"
    );
    // A new stamp: the client got the last answer, nothing is sent twice.
    assert_eq!(server.post(&sid, "4d").await.text(), "ok");
    assert_eq!(poll_stamped(&server, &sid, "s2").await.text(), "4d");
    assert_eq!(server.post(&sid, "4e").await.text(), "ok");
    assert_eq!(poll_stamped(&server, &sid, "s3").await.text(), "4e");
    // Without a stamp nothing is kept or repeated.
    assert_eq!(server.post(&sid, "4f").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4f");
    assert_eq!(server.post(&sid, "4g").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4g");
}

#[tokio::test]
async fn polling_get_retried_while_the_first_attempt_is_parked_replaces_it() {
    let server = TestServer::start(long_heartbeat_config()).await;
    let sid = server.handshake().await.sid;
    // The first attempt parks (the server has not noticed its connection is gone); the retry,
    // same stamp, takes its place instead of closing the session as an overlap.
    let (first, retry) = tokio::join!(poll_stamped(&server, &sid, "s1"), async {
        let_the_get_park().await;
        let (retry, post) = tokio::join!(poll_stamped(&server, &sid, "s1"), async {
            let_the_get_park().await;
            server.post(&sid, "4wake").await
        });
        assert_eq!(post.text(), "ok");
        retry
    });
    assert_eq!((first.status, first.text()), (StatusCode::OK, "6"));
    assert_eq!((retry.status, retry.text()), (StatusCode::OK, "4wake"));
    // A GET with another stamp while one is parked is still an overlap.
    let (a, b) = tokio::join!(poll_stamped(&server, &sid, "s2"), async {
        let_the_get_park().await;
        poll_stamped(&server, &sid, "s3").await
    });
    assert_eq!((a.status, a.text()), (StatusCode::OK, "1"));
    b.assert_error(3);
}

// ---------------------------------------------------------------------------------------------
// WebSocket messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_text_message_is_echoed() {
    let server = start().await;
    let (mut ws, _) = server.ws_handshake().await;
    ws_send(&mut ws, "4hello").await;
    assert_eq!(ws_text(&mut ws).await, "4hello");
    ws_send(&mut ws, "4héllo €😀").await;
    assert_eq!(ws_text(&mut ws).await, "4héllo €😀");
}

#[tokio::test]
async fn websocket_binary_message_is_echoed_as_binary_frame() {
    let server = start().await;
    let (mut ws, _) = server.ws_handshake().await;
    let data = Bytes::from_static(&[0, 1, 2, 3, 0xff]);
    within("send", ws.send(WsMessage::Binary(data.clone())))
        .await
        .unwrap();
    assert_eq!(ws_binary(&mut ws).await, data);
}

/// The server reads the socket in 8 KiB chunks and hands tungstenite small pieces: a message
/// many chunks long, and a burst of small ones in one segment, arrive whole and in order.
#[tokio::test]
async fn websocket_large_messages_and_bursts_arrive_intact() {
    let server = start().await;
    let (mut ws, _) = server.ws_handshake().await;
    let text: String = (0..600_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    ws_send(&mut ws, &format!("4{text}")).await;
    assert_eq!(ws_text(&mut ws).await, format!("4{text}"));
    let data: Bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    within("send", ws.send(WsMessage::Binary(data.clone())))
        .await
        .unwrap();
    assert_eq!(ws_binary(&mut ws).await, data);
    for i in 0..500 {
        within("feed", ws.feed(WsMessage::text(format!("4m{i}"))))
            .await
            .unwrap();
    }
    within("flush", ws.flush()).await.unwrap();
    for i in 0..500 {
        assert_eq!(ws_text(&mut ws).await, format!("4m{i}"));
    }
}

#[tokio::test]
async fn websocket_invalid_packet_closes_socket() {
    let server = start().await;
    let (mut ws, open) = server.ws_handshake().await;
    ws_send(&mut ws, "abc").await;
    ws_expect_close_frame(&mut ws).await;
    // The session is gone too.
    server.poll(&open.sid).await.assert_error(1);
}

#[tokio::test]
async fn websocket_oversize_message_closes_connection() {
    let server = TestServer::start(small_payload_config()).await;
    let (mut ws, open) = server.ws_handshake().await;
    ws_send(&mut ws, &format!("4{}", "x".repeat(200))).await;
    let frame = ws_expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    server.poll(&open.sid).await.assert_error(1);
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_heartbeat_pings_after_interval_and_pongs_keep_session_alive() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    // Three rounds last well past pingInterval + pingTimeout: only the pongs keep it open.
    for round in 0..3 {
        let asked = Instant::now();
        let get = server.poll(&sid).await;
        assert_eq!(
            (get.status, get.text()),
            (StatusCode::OK, "2"),
            "round {round}"
        );
        assert!(
            asked.elapsed() >= Duration::from_millis(200),
            "round {round}: ping after {:?}, before the 300 ms interval",
            asked.elapsed()
        );
        assert_eq!(server.post(&sid, "3").await.text(), "ok", "round {round}");
    }
}

#[tokio::test]
async fn polling_without_pong_session_times_out_and_parked_get_gets_close() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let ping = server.poll(&sid).await;
    assert_eq!((ping.status, ping.text()), (StatusCode::OK, "2"));
    // No pong: this GET parks and is released by the timeout's close packet.
    let close = server.poll(&sid).await;
    assert_eq!((close.status, close.text()), (StatusCode::OK, "1"));
    server.poll(&sid).await.assert_error(1);
}

#[tokio::test]
async fn websocket_heartbeat_pings_and_pongs_keep_session_alive() {
    let server = start().await;
    let (mut ws, _) = server.ws_handshake().await;
    for _ in 0..3 {
        assert_eq!(ws_text(&mut ws).await, "2");
        ws_send(&mut ws, "3").await;
    }
    // Still open and serving.
    ws_send(&mut ws, "4alive").await;
    assert_eq!(ws_text(&mut ws).await, "4alive");
}

#[tokio::test]
async fn next_ping_follows_the_pong_by_ping_interval_even_when_ping_timeout_is_longer() {
    // pingTimeout far above pingInterval: the next ping is due a pingInterval after the pong,
    // not when the pong deadline would have expired.
    let mut config = suite_config();
    config.session.ping_interval = Duration::from_millis(100);
    config.session.ping_timeout = Duration::from_secs(3);
    let server = TestServer::start(config).await;
    let (mut ws, _) = server.ws_handshake().await;
    assert_eq!(ws_text(&mut ws).await, "2");
    for round in 0..3 {
        ws_send(&mut ws, "3").await;
        let ponged = Instant::now();
        assert_eq!(ws_text(&mut ws).await, "2", "round {round}");
        let gap = ponged.elapsed();
        assert!(
            gap >= Duration::from_millis(80) && gap < Duration::from_millis(1500),
            "round {round}: ping {gap:?} after the pong, pingInterval is 100 ms"
        );
    }
}

#[tokio::test]
async fn histogram_buckets_are_cumulative_and_end_at_the_count() {
    let server = start().await;
    let (mut ws, _) = server.ws_handshake().await;
    for _ in 0..2 {
        assert_eq!(ws_text(&mut ws).await, "2");
        ws_send(&mut ws, "3").await;
    }
    // Once this echo is back, the pongs before it have been read (and counted).
    ws_send(&mut ws, "4after").await;
    loop {
        match ws_text(&mut ws).await.as_str() {
            "4after" => break,
            "2" => ws_send(&mut ws, "3").await,
            other => panic!("unexpected {other}"),
        }
    }
    let latency = std::sync::Arc::new(Latency::default());
    latency.record(Source::Http, now_ms());
    latency.record(Source::Http, now_ms().saturating_sub(3000));
    let text = halley::metrics::Metrics::new(server.engine.clone(), None, latency).render();
    let value = |series: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len() + 1..].parse().expect("an integer")
    };
    let count = value("halley_ping_rtt_seconds_count{transport=\"websocket\"}");
    assert!(count >= 2, "{count} RTT samples");
    let mut previous = 0;
    for le in [
        "0.001", "0.002", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1.0", "5.0",
    ] {
        let bucket = value(&format!(
            "halley_ping_rtt_seconds_bucket{{le=\"{le}\",transport=\"websocket\"}}"
        ));
        assert!(
            bucket >= previous && bucket <= count,
            "le={le}: {bucket}\n{text}"
        );
        previous = bucket;
    }
    let inf = value("halley_ping_rtt_seconds_bucket{le=\"+Inf\",transport=\"websocket\"}");
    assert_eq!(inf, count, "+Inf bucket = count\n{text}");

    let http = |le: &str| {
        value(&format!(
            "halley_publish_latency_seconds_bucket{{le=\"{le}\",source=\"http\"}}"
        ))
    };
    assert_eq!(
        value("halley_publish_latency_seconds_count{source=\"http\"}"),
        2
    );
    assert_eq!(
        (http("1.0"), http("5.0"), http("+Inf")),
        (1, 2, 2),
        "{text}"
    );
}

#[tokio::test]
async fn websocket_without_pong_is_closed_by_server() {
    let server = start().await;
    let (mut ws, _) = server.ws_handshake().await;
    assert_eq!(ws_text(&mut ws).await, "2");
    ws_expect_close_frame(&mut ws).await;
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_close_packet_releases_parked_get_with_noop_and_ends_session() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let (get, post) = tokio::join!(server.poll(&sid), async {
        let_the_get_park().await;
        server.post(&sid, "1").await
    });
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!((get.status, get.text()), (StatusCode::OK, "6"));
    server.poll(&sid).await.assert_error(1);
}

/// The conformance suites send the poll and the close POST at once; the server may run the POST
/// first. The poll was sent before the close and gets the same noop as when it runs first; the
/// one after it finds the session gone.
#[tokio::test]
async fn polling_poll_that_runs_after_a_close_post_still_gets_its_noop() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    assert_eq!(server.post(&sid, "1").await.text(), "ok");
    let get = server.poll(&sid).await;
    assert_eq!((get.status, get.text()), (StatusCode::OK, "6"));
    server.poll(&sid).await.assert_error(1);
}

#[tokio::test]
async fn a_session_lingering_for_a_final_poll_does_not_hold_up_shutdown() {
    // A heartbeat far longer than the shutdown deadline: only shutdown can end the linger.
    let server = TestServer::start(long_heartbeat_config()).await;
    let sid = server.handshake().await.sid;
    // The client closes, and its final poll never comes: the session waits for it.
    assert_eq!(server.post(&sid, "1").await.text(), "ok");
    assert!(server.engine.socket(&sid).is_some(), "lingering");
    let done = server
        .engine
        .shutdown(Instant::now() + Duration::from_secs(4))
        .await;
    assert!(done, "every session ended before the deadline");
    assert!(server.engine.socket(&sid).is_none());
}

#[tokio::test]
async fn websocket_close_packet_makes_server_close_promptly() {
    let server = start().await;
    let (mut ws, open) = server.ws_handshake().await;
    ws_send(&mut ws, "1").await;
    // The close must come before the first ping (300 ms): it answers the packet, not a timeout.
    ws_expect_close_frame(&mut ws).await;
    server.poll(&open.sid).await.assert_error(1);
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let server = start().await;
    let open = server.handshake().await;
    let sid = open.sid;
    let upgrade_query = format!("EIO=4&transport=websocket&sid={sid}");
    let mut ws = server.ws(&upgrade_query).await;

    // The poll is released with a noop whether it parked before or after the probe.
    let (get, ()) = tokio::join!(server.poll(&sid), async {
        ws_send(&mut ws, "2probe").await;
        assert_eq!(ws_text(&mut ws).await, "3probe");
    });
    assert_eq!((get.status, get.text()), (StatusCode::OK, "6"));

    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "4hello").await;
    assert_eq!(ws_text(&mut ws).await, "4hello");

    // Polling is over for this session.
    server.poll(&sid).await.assert_error(3);

    // A second WebSocket for the upgraded session is accepted, then closed.
    let mut second = server.ws(&upgrade_query).await;
    ws_expect_close_frame(&mut second).await;

    // The upgraded transport is unaffected.
    ws_send(&mut ws, "4still here").await;
    assert_eq!(ws_text(&mut ws).await, "4still here");
}

/// The suites' "ignores HTTP requests with same sid after upgrade": `2probe` and `5` are sent
/// without waiting for `3probe`, then a poll on another connection. Whichever the server runs
/// first, the poll is ordered after the probe's frames and refused.
#[tokio::test]
async fn poll_sent_after_the_upgrade_frames_is_refused() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    // Without Nagle, as the suites' `ws` client: with it, `5` would wait for the ACK of
    // `2probe` (which rides on `3probe`) and really reach the server after the poll.
    let url = server.ws_url(&format!("EIO=4&transport=websocket&sid={sid}"));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap();
    ws_send(&mut ws, "2probe").await;
    ws_send(&mut ws, "5").await;
    server.poll(&sid).await.assert_error(3);
    assert_eq!(ws_text(&mut ws).await, "3probe");
    ws_send(&mut ws, "4hello").await;
    assert_eq!(ws_text(&mut ws).await, "4hello");
}

#[tokio::test]
async fn upgrade_probe_with_wrong_first_packet_is_closed_and_polling_continues() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let mut ws = server
        .ws(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await;
    ws_send(&mut ws, "4hello").await;
    ws_expect_close_frame(&mut ws).await;

    assert_eq!(server.post(&sid, "4on polling").await.text(), "ok");
    let get = server.poll(&sid).await;
    assert_eq!((get.status, get.text()), (StatusCode::OK, "4on polling"));
}

#[tokio::test]
async fn upgrade_aborted_after_probe_is_closed_and_polling_continues() {
    let server = start().await;
    let sid = server.handshake().await.sid;
    let mut ws = server
        .ws(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await;
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    // Anything but `5` now aborts the upgrade.
    ws_send(&mut ws, "4not an upgrade").await;
    ws_expect_close_frame(&mut ws).await;

    assert_eq!(server.post(&sid, "4on polling").await.text(), "ok");
    let get = server.poll(&sid).await;
    assert_eq!((get.status, get.text()), (StatusCode::OK, "4on polling"));
    // Back to plain polling: an empty poll parks until the heartbeat (no upgrade noop).
    let get = server.poll(&sid).await;
    assert_eq!((get.status, get.text()), (StatusCode::OK, "2"));
    assert_eq!(server.post(&sid, "3").await.text(), "ok");

    // And the session can still be upgraded by a new probe.
    let mut ws = server
        .ws(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await;
    let (get, ()) = tokio::join!(server.poll(&sid), async {
        ws_send(&mut ws, "2probe").await;
        assert_eq!(ws_text(&mut ws).await, "3probe");
    });
    assert_eq!((get.status, get.text()), (StatusCode::OK, "6"));
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "4upgraded").await;
    assert_eq!(ws_text(&mut ws).await, "4upgraded");
}

// ---------------------------------------------------------------------------------------------
// HTTP headers
// ---------------------------------------------------------------------------------------------

fn cors_config() -> EngineConfig {
    EngineConfig {
        cors: Cors::Origins(vec!["http://allowed.test".into()]),
        ..suite_config()
    }
}

#[tokio::test]
async fn cors_allowed_origin_is_echoed_with_credentials() {
    let server = TestServer::start(cors_config()).await;
    let reply = server
        .request(
            Method::GET,
            "EIO=4&transport=polling",
            &[("origin", "http://allowed.test")],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://allowed.test")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
}

#[tokio::test]
async fn cors_other_origin_gets_no_allow_origin() {
    let server = TestServer::start(cors_config()).await;
    let reply = server
        .request(
            Method::GET,
            "EIO=4&transport=polling",
            &[("origin", "http://evil.test")],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(reply.header("access-control-allow-credentials"), None);
}

#[tokio::test]
async fn cors_preflight_is_204_with_allowed_methods() {
    let server = TestServer::start(cors_config()).await;
    let reply = server
        .request(
            Method::OPTIONS,
            "EIO=4&transport=polling",
            &[
                ("origin", "http://allowed.test"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let methods = reply
        .header("access-control-allow-methods")
        .expect("allow-methods");
    for method in ["GET", "POST"] {
        assert!(methods.contains(method), "{methods}");
    }
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://allowed.test")
    );
}

#[tokio::test]
async fn msie_user_agent_gets_xss_protection_disabled() {
    let server = start().await;
    let msie = server
        .request(
            Method::GET,
            "EIO=4&transport=polling",
            &[(
                "user-agent",
                "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0)",
            )],
            Bytes::new(),
        )
        .await;
    assert_eq!(msie.status, StatusCode::OK);
    assert_eq!(msie.header("x-xss-protection"), Some("0"));

    let other = server
        .request(
            Method::GET,
            "EIO=4&transport=polling",
            &[(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
            )],
            Bytes::new(),
        )
        .await;
    assert_eq!(other.header("x-xss-protection"), None);
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn graceful_shutdown_closes_polling_and_websocket_clients_and_serve_returns() {
    let server = start().await;
    let addr = server.addr;
    let serve = server.take_join();
    let sid = server.handshake().await.sid;
    let (mut ws, _) = server.ws_handshake().await;

    let (get, ()) = tokio::join!(server.poll(&sid), async {
        let_the_get_park().await;
        server.trigger_shutdown();
    });
    assert_eq!((get.status, get.text()), (StatusCode::OK, "1"));
    let frame = ws_expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away);
    within("serve to return", serve)
        .await
        .expect("serve task panicked");
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
