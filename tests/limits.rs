//! Black-box tests of every limit Halley puts on what one client may hold or send, against a
//! real server on 127.0.0.1:0: sessions in total and per client address, the header read
//! timeout (slowloris), the upgrade timeout, the connect timeout, maxPayload on every transport,
//! binary attachments per packet, namespaces per connection, the auth payload, and the outbox
//! (backpressure). Rooms per socket and the auth hook's bounds are in `socketio.rs` and
//! `bridge.rs`.
//!
//! Each test configures its limit small or short and checks the behaviour beyond it; each would
//! fail if its limit were removed. Waits are on responses, frames and closes, under the hang
//! guard of `common::within`; where the server acts on a timer, the test waits for what the
//! timer causes (a close), never for a fixed time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halley::engine::{
    CloseReason, EngineConfig, Frame, Handler, IpRange, Message, Refusal, SessionConfig, Socket,
};
use halley::server::ServerConfig;
use hyper::{Method, StatusCode};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::sio::{self, SioServer};
use common::*;
use halley::socketio::limits::ConnectRefusal;

fn engine_config() -> EngineConfig {
    long_heartbeat_config()
}

/// A polling handshake with `headers`, as a reply (not asserted).
async fn handshake_with(server: &TestServer, headers: &[(&str, &str)]) -> Reply {
    server
        .request(
            Method::GET,
            "EIO=4&transport=polling",
            headers,
            Bytes::new(),
        )
        .await
}

#[track_caller]
fn assert_unavailable(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(
        reply.text(),
        r#"{"code":3,"message":"Service unavailable"}"#
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

/// A WebSocket handshake with `headers` that must be refused with an HTTP status.
async fn ws_refused(server: &TestServer, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = server
        .ws_url("EIO=4&transport=websocket")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    match within(
        "websocket connect",
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Err(tungstenite::Error::Http(response)) => response.status(),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|(_, r)| r)),
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions in total and per client address
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_sessions_refuses_handshakes_with_503_until_a_session_ends() {
    let server = TestServer::start(EngineConfig {
        max_sessions: 3,
        ..engine_config()
    })
    .await;
    server.handshake().await;
    server.handshake().await;
    let (mut ws, _) = server.ws_handshake().await;

    assert_unavailable(&server.get("EIO=4&transport=polling").await);
    assert_unavailable(&server.get("EIO=4&transport=sse").await);
    // A WebSocket handshake is refused before the upgrade, with the same status.
    assert_eq!(
        ws_refused(&server, &[]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let stats = server.engine.stats();
    assert_eq!(stats.refusals(Refusal::Total), 3);
    assert_eq!(stats.refusals(Refusal::PerAddress), 0);

    // A session that ends gives its place back.
    ws_send(&mut ws, "1").await;
    eventually("the closed session to leave", || {
        server.engine.session_count() == 2
    })
    .await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn max_sessions_per_ip_counts_the_client_a_trusted_proxy_names() {
    // Loopback is a trusted proxy by default, as nginx on the same host would be.
    let server = TestServer::start(EngineConfig {
        max_sessions_per_ip: 2,
        ..engine_config()
    })
    .await;
    let alice = [("x-forwarded-for", "198.51.100.1")];
    // A client prepending an address of its choice is still counted as itself.
    let alice_spoofing = [("x-forwarded-for", "10.1.1.1, 198.51.100.1")];
    let bob = [("x-forwarded-for", "198.51.100.2")];
    assert_eq!(handshake_with(&server, &alice).await.status, StatusCode::OK);
    assert_eq!(
        handshake_with(&server, &alice_spoofing).await.status,
        StatusCode::OK
    );
    assert_unavailable(&handshake_with(&server, &alice).await);
    assert_unavailable(&handshake_with(&server, &alice_spoofing).await);
    assert_eq!(
        ws_refused(&server, &alice).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(handshake_with(&server, &bob).await.status, StatusCode::OK);
    // IPv6 clients are counted per /64.
    let carol = [("x-forwarded-for", "2001:db8:1:2::a")];
    let carol_again = [("x-forwarded-for", "2001:db8:1:2::b")];
    assert_eq!(handshake_with(&server, &carol).await.status, StatusCode::OK);
    assert_eq!(
        handshake_with(&server, &carol_again).await.status,
        StatusCode::OK
    );
    assert_unavailable(&handshake_with(&server, &carol).await);
    assert_eq!(server.engine.stats().refusals(Refusal::PerAddress), 4);
    // The proxy itself, naming no client, is held to the total only.
    for _ in 0..3 {
        assert_eq!(handshake_with(&server, &[]).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn max_sessions_per_ip_ignores_forwarded_addresses_from_untrusted_peers() {
    let server = TestServer::start(EngineConfig {
        max_sessions_per_ip: 2,
        trusted_proxies: Vec::new(),
        ..engine_config()
    })
    .await;
    let first = [("x-forwarded-for", "198.51.100.1")];
    let second = [("x-forwarded-for", "198.51.100.2")];
    assert_eq!(handshake_with(&server, &first).await.status, StatusCode::OK);
    assert_eq!(
        handshake_with(&server, &second).await.status,
        StatusCode::OK
    );
    // Both counted as 127.0.0.1, whatever they said.
    assert_unavailable(&handshake_with(&server, &[("x-forwarded-for", "198.51.100.3")]).await);
    assert_eq!(
        ws_refused(&server, &[]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.engine.stats().refusals(Refusal::PerAddress), 2);
}

#[tokio::test]
async fn session_limits_are_options_of_the_socketio_builder() {
    let io = sio::builder()
        .max_sessions(1)
        .max_sessions_per_ip(1)
        .trusted_proxies(&["192.0.2.0/24".parse::<IpRange>().unwrap()])
        .build();
    let config = io.engine().config();
    assert_eq!((config.max_sessions, config.max_sessions_per_ip), (1, 1));
    let server = SioServer::start(io).await;
    server.polling_open().await;
    let reply = request(
        server.addr,
        Method::GET,
        "/socket.io/?EIO=4&transport=polling",
        &[],
        Bytes::new(),
    )
    .await;
    assert_unavailable(&reply);
}

// ---------------------------------------------------------------------------------------------
// Timeouts: header read (slowloris), upgrade, connect
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn header_read_timeout_closes_a_connection_that_dribbles_its_headers() {
    let server = TestServer::start_full(
        engine_config(),
        Arc::new(Echo),
        ServerConfig {
            header_read_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        },
    )
    .await;
    // At 40 ms a byte this request would take over 10 s to send.
    let request = format!(
        "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\n\r\n",
        server.addr,
        "a".repeat(200)
    );
    let (sent, received) =
        dribble(server.addr, request.as_bytes(), Duration::from_millis(40)).await;
    assert!(sent < request.len(), "the whole request got through");
    let received = String::from_utf8_lossy(&received);
    assert!(!received.contains("200 OK"), "{received}");
    assert_eq!(server.engine.session_count(), 0);
    assert_healthy(&server).await;
}

#[tokio::test]
async fn upgrade_timeout_closes_a_probe_that_does_not_finish_and_polling_goes_on() {
    let server = TestServer::start(EngineConfig {
        session: SessionConfig {
            upgrade_timeout: Duration::from_millis(300),
            ..engine_config().session
        },
        ..engine_config()
    })
    .await;
    let sid = server.handshake().await.sid;
    let query = format!("EIO=4&transport=websocket&sid={sid}");

    // A probe that never says anything.
    let mut silent = server.ws(&query).await;
    ws_expect_close(&mut silent).await;

    // A probe that stops after `2probe`.
    let mut stalled = server.ws(&query).await;
    ws_send(&mut stalled, "2probe").await;
    assert_eq!(ws_text(&mut stalled).await, "3probe");
    ws_expect_close(&mut stalled).await;

    // The session stayed on polling.
    assert_eq!(server.post(&sid, "4still").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4still");
}

#[tokio::test]
async fn connect_timeout_closes_a_connection_that_joins_no_namespace() {
    let io = sio::builder()
        .connect_timeout(Duration::from_millis(300))
        .build();
    let (_, mut probe) = sio::record(&io, "/", &["hi"]);
    let server = SioServer::start(io).await;
    let mut idle = server.ws().await;
    let mut joined = server.ws().await;
    joined.connect("/", None).await;
    probe.connected.next("the connection that joined").await;

    idle.expect_close().await;
    // The timer was for the idle connection only.
    joined.send(r#"42["hi"]"#);
    let event = probe.events.next("an event after the timeout").await;
    assert_eq!(event.name, "hi");
}

// ---------------------------------------------------------------------------------------------
// maxPayload, on every transport
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_payload_applies_to_the_posts_of_every_http_transport_and_to_websocket_messages() {
    let server = TestServer::start(EngineConfig {
        max_payload: 100,
        ..engine_config()
    })
    .await;
    let big = format!("4{}", "x".repeat(150));
    for (transport, j) in [
        ("polling", None),
        ("polling", Some("1")),
        ("iframe", Some("2")),
        ("htmlfile", Some("3")),
        ("sse", None),
        ("xhr-streaming", None),
    ] {
        let mut query = format!("EIO=4&transport={transport}");
        if let Some(j) = j {
            query.push_str(&format!("&j={j}"));
        }
        let (sid, _receiver) = open_raw(server.addr, &query).await;
        let query = format!("{query}&sid={sid}");
        let post = |content_type: &'static str, body: String| {
            let query = query.clone();
            let server = &server;
            async move {
                server
                    .request(
                        Method::POST,
                        &query,
                        &[("content-type", content_type)],
                        body,
                    )
                    .await
            }
        };
        let what = format!("{transport} j={j:?}");
        let text = "text/plain;charset=UTF-8";
        let form = "application/x-www-form-urlencoded";
        let reply = post(text, big.clone()).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
        assert_eq!(reply.error(), (3, "Payload too large".to_owned()), "{what}");
        // The hidden-form POST of JSONP and old IE: the limit is on the body as sent.
        let reply = post(form, format!("d={big}")).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{what} form");
        // Within the limit, both are taken, and the session lives on.
        assert_eq!(post(text, "4small".into()).await.text(), "ok", "{what}");
        assert_eq!(post(form, "d=4small".into()).await.text(), "ok", "{what}");
    }

    let (mut ws, open) = server.ws_handshake().await;
    ws_send(&mut ws, "4fits").await;
    assert_eq!(ws_text(&mut ws).await, "4fits");
    ws_send(&mut ws, &big).await;
    let frame = ws_expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    server.poll(&open.sid).await.assert_error(1);
}

// ---------------------------------------------------------------------------------------------
// Socket.IO: binary attachments per packet, namespaces per connection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_attachments_closes_a_connection_that_announces_more() {
    let io = sio::builder().max_attachments(2).build();
    let (_, mut probe) = sio::record(&io, "/", &["up"]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let ph = |n| sio::placeholder(n).to_string();

    client.send(&format!(r#"452-["up",{},{}]"#, ph(0), ph(1)));
    client.send_binary(b"a");
    client.send_binary(b"b");
    let event = probe.events.next("the event with two attachments").await;
    assert_eq!(event.event.binary.len(), 2);

    client.send(&format!(r#"453-["up",{},{},{}]"#, ph(0), ph(1), ph(2)));
    client.expect_close().await;
    assert!(probe.events.try_next().is_none());
}

#[tokio::test]
async fn max_namespaces_answers_connect_error_beyond_it_and_keeps_the_connection() {
    let io = sio::builder().max_namespaces(2).build();
    for ns in ["/", "/a", "/b"] {
        io.ns(ns, |_| {});
    }
    io.dynamic_ns(|path| path.starts_with("/dyn-"), |_| {});
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/a", None).await;

    client.send("40/b,");
    assert_eq!(
        client.text().await,
        r#"44/b,{"message":"too many namespaces"}"#
    );
    // Refused before the lookup: no dynamic namespace is created for it.
    client.send("40/dyn-1,");
    assert_eq!(
        client.text().await,
        r#"44/dyn-1,{"message":"too many namespaces"}"#
    );
    assert!(server.io.of("/dyn-1").is_none());

    // Leaving one makes room.
    client.send("41/a,");
    client.connect("/b", None).await;
}

#[tokio::test]
async fn an_auth_payload_over_the_limit_gets_connect_error_and_the_connection_stays() {
    let io = sio::builder().max_auth_payload(64).build();
    io.dynamic_ns(|path| path.starts_with("/dyn-"), |_| {});
    let (ns, _probe) = sio::record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;

    // 65 bytes of JSON: one too many.
    let over = format!(r#"{{"token":"{}"}}"#, "x".repeat(53));
    assert_eq!(over.len(), 65);
    client.send(&format!("40{over}"));
    assert_eq!(
        client.text().await,
        r#"44{"message":"auth payload too large"}"#
    );
    // Refused before the lookup: no dynamic namespace is created for it.
    client.send(&format!("40/dyn-1,{over}"));
    assert_eq!(
        client.text().await,
        r#"44/dyn-1,{"message":"auth payload too large"}"#
    );
    assert!(io.of("/dyn-1").is_none());
    assert_eq!(ns.len(), 0);
    assert_eq!(
        io.stats()
            .connects_refused(ConnectRefusal::AuthPayloadTooLarge),
        2
    );

    // The connection stays, and 64 bytes are welcome, kept as they came.
    let exact = format!(r#"{{"token":"{}"}}"#, "x".repeat(52));
    let id = client.connect("/", Some(&exact)).await;
    let socket = ns.socket(&id).unwrap();
    assert_eq!(socket.auth_json().get(), exact);
    assert_eq!(socket.auth()["token"].as_str().map(str::len), Some(52));
}

// ---------------------------------------------------------------------------------------------
// The outbox (backpressure)
// ---------------------------------------------------------------------------------------------

/// On `v<n>` queues n volatile messages, on `d<n>` n others; each is named by its kind and a
/// running number.
struct Pusher(AtomicUsize);

impl Handler for Pusher {
    fn on_open(&self, _socket: &Arc<Socket>) {}

    fn on_message(&self, socket: &Arc<Socket>, message: Message) {
        let Message::Text(text) = message else { return };
        let (kind, n) = text.split_at(1);
        let volatile = kind == "v";
        for _ in 0..n.parse::<usize>().unwrap_or(0) {
            let i = self.0.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send(Frame::message(&format!("{kind}{i}")), volatile);
        }
    }

    fn on_close(&self, _socket: &Arc<Socket>, _reason: CloseReason) {}
}

#[tokio::test]
async fn full_outbox_drops_volatile_packets_first_then_disconnects_with_a_reason() {
    let server = TestServer::start_with(
        EngineConfig {
            session: SessionConfig {
                max_outbox: 4,
                ..engine_config().session
            },
            ..engine_config()
        },
        Arc::new(Pusher(AtomicUsize::new(0))),
    )
    .await;
    let sid = server.handshake().await.sid;
    let stats = server.engine.stats();

    // A client that does not poll: four volatile messages fill its outbox, a fifth is dropped.
    assert_eq!(server.post(&sid, "4v5").await.text(), "ok");
    assert_eq!(stats.outbox_dropped.load(Ordering::Relaxed), 1);
    // Three others make room by dropping the oldest volatile ones.
    assert_eq!(server.post(&sid, "4d3").await.text(), "ok");
    assert_eq!(stats.outbox_dropped.load(Ordering::Relaxed), 4);
    assert_eq!(server.poll(&sid).await.text(), "4v3\x1e4d5\x1e4d6\x1e4d7");

    // With nothing volatile left to drop, a full outbox disconnects the client, which learns
    // it on its next poll, after what was queued.
    assert_eq!(server.post(&sid, "4d5").await.text(), "ok");
    assert_eq!(
        server.poll(&sid).await.text(),
        "4d8\x1e4d9\x1e4d10\x1e4d11\x1e1"
    );
    server.poll(&sid).await.assert_error(1);
    assert_eq!(stats.closes(CloseReason::OutboxFull), 1);

    let metrics = halley::metrics::Metrics::new(
        server.engine.clone(),
        None,
        Arc::new(halley::bridge::Latency::default()),
    )
    .render();
    for line in [
        "halley_outbox_dropped_total 4",
        r#"halley_session_closes_total{reason="outbox full"} 1"#,
        r#"halley_handshakes_refused_total{limit="max_sessions"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}
