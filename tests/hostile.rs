//! Hostile clients against a real server on 127.0.0.1:0: headers dribbled byte by byte,
//! half-open connections, clients that never read, ten thousand handshakes that never poll,
//! invalid UTF-8, floods of tiny packets, a 100 MB WebSocket frame, script injection through
//! every value the server reflects, CRLF injection into headers.
//!
//! Each test checks the specific outcome, then that the server is still healthy: a fresh client
//! connects and gets its message echoed. Timers are configured short; where the server acts on
//! one (reaping sessions, cutting connections), the test polls for the effect under the hang
//! guard rather than sleeping.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use halley::engine::{CloseReason, Cors, EngineConfig, Frame, Handler, Message, Socket};
use halley::server::ServerConfig;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use common::sio::{self, SioServer};
use common::*;

/// The suite's heartbeat (300 ms + 200 ms), and everything else as shipped.
fn config() -> EngineConfig {
    suite_config()
}

fn short_timeouts() -> ServerConfig {
    ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes it; returns the
/// response head and body as received (empty head if nothing came).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let response = exchange(addr, request).await;
    let split = find(&response, b"\r\n\r\n").unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    (head, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads `tcp` to its end (EOF or reset), under the hang guard; returns the bytes read.
async fn drain(tcp: &mut TcpStream, what: &str) -> usize {
    within(what, async {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Slow and silent connections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn headers_dribbled_byte_by_byte_are_parsed_and_slow_dribblers_are_cut_off() {
    let server = TestServer::start_full(config(), Arc::new(Echo), short_timeouts()).await;
    let addr = server.addr;

    // A whole request in one-byte segments, as fast as they go: served normally.
    let request = format!(
        "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let response = within("a response to a dribbled request", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        for byte in request.as_bytes() {
            tcp.write_all(std::slice::from_ref(byte))
                .await
                .expect("write");
            tcp.flush().await.expect("flush");
        }
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("read");
        String::from_utf8(response).expect("UTF-8 response")
    })
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains(r#"0{"sid":""#), "{response}");

    // Two hundred slow dribblers at once: each is cut off at the header read timeout, and none
    // keeps a fresh client out meanwhile.
    let slow = format!(
        "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(100)
    );
    let dribblers: Vec<_> = (0..200)
        .map(|_| {
            let slow = slow.clone();
            tokio::spawn(
                async move { dribble(addr, slow.as_bytes(), Duration::from_millis(50)).await },
            )
        })
        .collect();
    assert_healthy(&server).await;
    for dribbler in dribblers {
        let (sent, received) = dribbler.await.expect("dribbler");
        assert!(sent < slow.len(), "a slow request got through");
        assert!(!String::from_utf8_lossy(&received).contains("200 OK"));
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn half_open_connections_are_closed() {
    let server = TestServer::start_full(config(), Arc::new(Echo), short_timeouts()).await;
    let addr = server.addr;

    // Connected, and never a byte: closed at the header read timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        drain(&mut silent, "a silent connection to be closed").await,
        0
    );

    // A POST whose body stops halfway holds its connection only while its session lives; the
    // session ends on the heartbeat, since its client answers no ping.
    let sid = server.handshake().await.sid;
    let head = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1000\r\n\r\n4partial"
    );
    let (head, body) = raw_exchange(addr, head.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body, br#"{"code":1,"message":"Session ID unknown"}"#);

    // A WebSocket client that vanished without closing: the heartbeat ends its session and
    // the server closes the connection.
    let (ws, _) = server.ws_handshake().await;
    let mut tcp = match ws.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("ws:// is plain TCP"),
    };
    drain(&mut tcp, "the server to close a vanished WebSocket").await;
    eventually("every session to be reaped", || {
        server.engine.session_count() == 0
    })
    .await;
    assert_eq!(server.engine.stats().closes(CloseReason::PingTimeout), 2);
    assert_healthy(&server).await;
}

/// On `flood`, queues 200 messages of 64 KiB (one buffer, shared): about 13 MB to write.
/// Echoes anything else.
struct Flood;

const FLOOD_FRAMES: usize = 200;
const FLOOD_BYTES: usize = FLOOD_FRAMES * 64 * 1024;

impl Handler for Flood {
    fn on_open(&self, _socket: &Arc<Socket>) {}

    fn on_message(&self, socket: &Arc<Socket>, message: Message) {
        if message != Message::Text("flood".into()) {
            return Echo.on_message(socket, message);
        }
        let big = Frame::message(&"x".repeat(64 * 1024));
        for _ in 0..FLOOD_FRAMES {
            let _ = socket.send(big.clone(), false);
        }
    }

    fn on_close(&self, _socket: &Arc<Socket>, _reason: CloseReason) {}
}

/// A connection that reads through a small receive buffer, so that it fills at once.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_cut_off_at_the_write_timeout() {
    let server = TestServer::start_full(
        EngineConfig {
            // One stream takes the whole flood: what ends it must be the write timeout.
            stream_limit: 64 << 20,
            ..long_heartbeat_config()
        },
        Arc::new(Flood),
        short_timeouts(),
    )
    .await;
    let addr = server.addr;
    let stats = server.engine.stats();

    // An xhr-streaming client that stops reading its stream.
    let mut stream = small_window(addr).await;
    let sid = open_raw_on(&mut stream, addr, "EIO=4&transport=xhr-streaming").await;
    let post = server
        .request(
            Method::POST,
            &format!("EIO=4&transport=xhr-streaming&sid={sid}"),
            &[("content-type", "text/plain;charset=UTF-8")],
            "4flood",
        )
        .await;
    assert_eq!(post.text(), "ok");
    eventually("the stalled stream to be cut", || {
        stats
            .write_timeouts
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    let read = drain(&mut stream, "the cut stream to end").await;
    assert!(read < FLOOD_BYTES, "read {read} bytes: the whole flood");

    // A WebSocket client that stops reading.
    let tcp = small_window(addr).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(server.ws_url("EIO=4&transport=websocket"), tcp)
            .await
            .expect("websocket handshake");
    let open = match ws.next().await {
        Some(Ok(WsMessage::Text(text))) => Handshake::parse(text.as_str()),
        other => panic!("expected the open packet, got {other:?}"),
    };
    ws.send(WsMessage::text("4flood")).await.expect("send");
    eventually("the stalled WebSocket's session to end", || {
        server.engine.socket(&open.sid).is_none()
    })
    .await;
    assert_eq!(stats.closes(CloseReason::TransportClose), 1);
    let mut tcp = ws.into_inner();
    let read = drain(&mut tcp, "the stalled WebSocket to end").await;
    assert!(read < FLOOD_BYTES, "read {read} bytes: the whole flood");
    assert_healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_handshakes_that_never_poll_are_reaped_on_time() {
    const CONNECTIONS: usize = 50;
    const EACH: usize = 200;
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("http1 handshake");
                tokio::spawn(conn);
                let mut opened = 0;
                for _ in 0..EACH {
                    let req = Request::get("/engine.io/?EIO=4&transport=polling")
                        .header("host", addr.to_string())
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let res = sender.send_request(req).await.expect("handshake");
                    let ok = res.status() == StatusCode::OK;
                    let body = res.into_body().collect().await.expect("body").to_bytes();
                    if ok && body.starts_with(b"0{\"sid\":") {
                        opened += 1;
                    }
                }
                opened
            })
        })
        .collect();
    // A volume, not a single exchange: a hang guard of its own, for slow machines.
    let all = async {
        let mut opened = 0;
        for task in tasks {
            opened += task.await.expect("handshake task");
        }
        opened
    };
    let opened = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("ten thousand handshakes within 30 s");
    assert_eq!(opened, CONNECTIONS * EACH);

    // None of them answers its first ping: all are gone a heartbeat (500 ms) after the last.
    eventually("ten thousand idle sessions to be reaped", || {
        server.engine.session_count() == 0
    })
    .await;
    let stats = server.engine.stats();
    assert_eq!(
        stats.closes(CloseReason::PingTimeout),
        (CONNECTIONS * EACH) as u64
    );
    let metrics = halley::metrics::Metrics::new(
        server.engine.clone(),
        None,
        Arc::new(halley::bridge::Latency::default()),
    )
    .render();
    for line in [
        r#"halley_sessions{transport="polling"} 0"#.to_owned(),
        format!(
            r#"halley_handshakes_total{{transport="polling"}} {}"#,
            CONNECTIONS * EACH
        ),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn request_heads_over_the_limit_get_431_and_a_big_cookie_under_it_passes() {
    let server = TestServer::start(config()).await;
    let limit = ServerConfig::default().max_header_bytes;
    // What a session would keep for its life: a head over the limit is refused. (hyper checks
    // the limit while a head is incomplete, so one read past it may still complete a head:
    // the bound holds to within one read.)
    let head = |cookie: usize| {
        format!(
            "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: c={}\r\n\r\n",
            server.addr,
            "x".repeat(cookie)
        )
    };
    let (answer, _) = raw_exchange(server.addr, head(2 * limit).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A browser's large cookie jar (40 KiB) still opens a session.
    let (answer, body) = raw_exchange(server.addr, head(40 * 1024).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(sid_in(&body).is_some(), "{body:?}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_post_whose_body_stops_arriving_gets_408_and_ends_its_session() {
    let server = TestServer::start(EngineConfig {
        body_read_timeout: Duration::from_millis(300),
        ..long_heartbeat_config()
    })
    .await;
    let sid = server.handshake().await.sid;
    // The heartbeat is far longer than the test: only the body's deadline can end this POST.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n4partial",
        server.addr
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    within("an answer to the stalled POST", async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    eventually("the session to end", || {
        server.engine.socket(&sid).is_none()
    })
    .await;
    assert_eq!(
        server.engine.stats().closes(CloseReason::ProtocolError),
        1,
        "closed as a broken upstream"
    );
    let metrics = halley::metrics::Metrics::new(
        server.engine.clone(),
        None,
        Arc::new(halley::bridge::Latency::default()),
    )
    .render();
    assert!(
        metrics.lines().any(|l| l == "halley_body_timeouts_total 1"),
        "{metrics}"
    );
    assert_healthy(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Malformed and oversized input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_is_refused_or_replaced_never_passed_on() {
    let server = TestServer::start(long_heartbeat_config()).await;

    // A polling payload that is not UTF-8: refused, and the session closed.
    let sid = server.handshake().await.sid;
    let reply = server.post(&sid, &b"4ok\x1e4\xff\xfe"[..]).await;
    reply.assert_error(3);
    server.poll(&sid).await.assert_error(1);

    // A JSONP form field is percent-decoded as the reference server does it: invalid
    // sequences become U+FFFD.
    let jsonp = server.get("EIO=4&transport=polling&j=0").await;
    let sid = sid_in(&jsonp.body).expect("a JSONP open packet");
    let query = format!("EIO=4&transport=polling&j=0&sid={sid}");
    let reply = server
        .request(
            Method::POST,
            &query,
            &[("content-type", "application/x-www-form-urlencoded")],
            "d=4%FF%FEok",
        )
        .await;
    assert_eq!(reply.text(), "ok");
    assert_eq!(
        server.get(&query).await.text(),
        "___eio[0](\"4\u{fffd}\u{fffd}ok\");"
    );

    // A WebSocket text frame that is not UTF-8: closed with 1007.
    let (mut ws, open) = server.ws_handshake().await;
    let frame = WsFrame::message(
        Bytes::from_static(b"4\xc3\x28"),
        OpCode::Data(Data::Text),
        true,
    );
    within("send", ws.send(WsMessage::Frame(frame)))
        .await
        .expect("send");
    let close = ws_expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Invalid);
    server.poll(&open.sid).await.assert_error(1);

    // In the query and in headers.
    server
        .get("EIO=4&transport=polling&sid=%FF%FE")
        .await
        .assert_error(1);
    server.get("EIO=4&transport=%FF").await.assert_error(0);
    let (head, _) = raw_exchange(
        server.addr,
        b"GET /engine.io/?EIO=4&transport=polling&sid=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    let (head, body) = raw_exchange(
        server.addr,
        b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nOrigin: http://\xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body, br#"{"code":3,"message":"Bad request"}"#);
    assert_healthy(&server).await;
}

#[tokio::test]
async fn floods_of_tiny_packets_are_served_in_order_or_hit_the_outbox_limit() {
    let server = TestServer::start(long_heartbeat_config()).await;

    // Ten thousand tiny WebSocket messages: every echo comes back, in order.
    let (ws, _) = server.ws_handshake().await;
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..10_000 {
            sink.send(WsMessage::text(format!("4{i}")))
                .await
                .expect("send");
        }
        sink
    });
    within("ten thousand echoes", async {
        for i in 0..10_000 {
            match stream.next().await {
                Some(Ok(WsMessage::Text(text))) => assert_eq!(text.as_str(), format!("4{i}")),
                other => panic!("echo {i}: got {other:?}"),
            }
        }
    })
    .await;
    let _ = sender.await;

    // A hundred thousand noops in one POST: taken, and the session goes on.
    let sid = server.handshake().await.sid;
    let noops = vec!["6"; 100_000].join("\x1e");
    assert_eq!(server.post(&sid, noops).await.text(), "ok");
    assert_eq!(server.post(&sid, "4after").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4after");

    // Twenty thousand messages whose echoes the client does not read: the outbox limit (4096)
    // ends the session, with its reason, instead of queueing them all.
    let sid = server.handshake().await.sid;
    let messages = vec!["4m"; 20_000].join("\x1e");
    assert_eq!(server.post(&sid, messages).await.text(), "ok");
    assert_eq!(server.engine.stats().closes(CloseReason::OutboxFull), 1);
    assert_healthy(&server).await;
}

/// Reads one server frame (unmasked) from `tcp`: opcode and payload.
async fn read_ws_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.ok()?;
    let len = match head[1] & 0x7f {
        126 => u64::from(tcp.read_u16().await.ok()?),
        127 => tcp.read_u64().await.ok()?,
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0f, payload))
}

#[tokio::test]
async fn hundred_megabyte_websocket_frame_is_refused_with_1009_before_it_arrives() {
    let server = TestServer::start(long_heartbeat_config()).await;
    let addr = server.addr;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let upgrade = format!(
        "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.expect("write");
    let head = within("the 101", async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.expect("read"));
        }
        String::from_utf8(head).expect("ASCII head")
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let (opcode, open) = within("the open packet", read_ws_frame(&mut tcp))
        .await
        .expect("a frame");
    assert_eq!(opcode, 1);
    assert!(open.starts_with(b"0{\"sid\""));

    // A binary frame announcing 100 MB (masked, as from a client), and its first 64 KiB.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(100u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat(0u8).take(64 * 1024));
    let _ = tcp.write_all(&frame).await;
    let close = within("the close frame", async {
        loop {
            match read_ws_frame(&mut tcp).await {
                Some((8, payload)) => return payload,
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    })
    .await;
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
    eventually("the session to end", || server.engine.session_count() == 0).await;

    // Over HTTP the same size is refused from its Content-Length, before any of it is read.
    let sid = server.handshake().await.sid;
    let post = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n4xxxx",
        100u64 << 20
    );
    let (head, _) = raw_exchange(addr, post.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    assert_healthy(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Injection through reflected values
// ---------------------------------------------------------------------------------------------

/// Everything that could end a script or a string literal in one: what a browser would run.
const HOSTILE: &str = "</script><script>alert(1)</script><!-- \u{2028}\u{2029}&amp;'\"\\";

/// Asserts `text` (a script the browser runs) carries none of the bytes that could end the
/// script or the literal early.
#[track_caller]
fn assert_inert(text: &str, what: &str) {
    for bad in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
        assert!(!text.contains(bad), "{what}: raw {bad:?} in {text:?}");
    }
}

/// Form-encodes `s` as the value of `d`, every byte but the unreserved ones percent-encoded.
fn form(s: &str) -> String {
    let mut out = String::from("d=");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A streaming GET read as its chunks arrive.
async fn stream_get(addr: SocketAddr, path: &str) -> hyper::body::Incoming {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = within("a streaming response", sender.send_request(req))
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body()
}

#[tokio::test]
async fn script_injection_through_reflected_values_is_escaped() {
    // No heartbeat to answer while the test reads.
    let io = sio::builder()
        .ping_interval(Duration::from_secs(60))
        .ping_timeout(Duration::from_secs(60))
        .build();
    io.ns("/", |socket| {
        socket.on("echo", |socket, event| {
            let _ = socket.emit("echo", &event.args.first());
        });
    });
    let server = SioServer::start(io).await;
    let addr = server.addr;
    let hostile_json = serde_json::to_string(HOSTILE).unwrap();
    let events = [
        // An event's data, echoed.
        format!(r#"42["echo",{hostile_json}]"#),
        // A namespace, reflected in CONNECT_ERROR.
        format!("40/{HOSTILE},"),
    ];

    // JSONP: every response is a script.
    let base = "/socket.io/?EIO=4&transport=polling&j=0";
    let open = request(addr, Method::GET, base, &[], Bytes::new()).await;
    let sid = sid_in(&open.body).expect("a JSONP open packet");
    let path = format!("{base}&sid={sid}");
    let post = |body: String| {
        let path = path.clone();
        async move {
            let content_type = [("content-type", "application/x-www-form-urlencoded")];
            let reply = request(addr, Method::POST, &path, &content_type, body).await;
            assert_eq!(reply.text(), "ok");
        }
    };
    post(form("40")).await;
    let mut scripts = String::new();
    for event in &events {
        post(form(event)).await;
    }
    while !(scripts.contains("alert(1)") && scripts.contains("Invalid namespace")) {
        let reply = request(addr, Method::GET, &path, &[], Bytes::new()).await;
        let text = reply.text();
        assert!(
            text.starts_with("___eio[0](\"") && text.ends_with("\");"),
            "{text}"
        );
        assert_inert(text, "JSONP");
        scripts.push_str(text);
    }

    // The forever-frame: after its prelude, every chunk is `<script>p("…");</script>`.
    let hpath = "/socket.io/?EIO=4&transport=htmlfile&j=1";
    let mut body = stream_get(addr, hpath).await;
    let mut chunks = Vec::new();
    let mut sid = None;
    while sid.is_none() {
        let chunk = within("the htmlfile open packet", body.frame())
            .await
            .expect("the stream ended")
            .expect("chunk")
            .into_data()
            .unwrap_or_default();
        sid = sid_in(&chunk);
        chunks.push(chunk);
    }
    let sid = sid.unwrap();
    let hpath = format!("{hpath}&sid={sid}");
    for payload in ["40".to_owned(), events[0].clone(), events[1].clone()] {
        let reply = request(
            addr,
            Method::POST,
            &hpath,
            &[("content-type", "text/plain;charset=UTF-8")],
            payload,
        )
        .await;
        assert_eq!(reply.text(), "ok");
    }
    let mut seen = String::new();
    let mut pending = String::new();
    const END: &str = ");</script>\n";
    while !(seen.contains("alert(1)") && seen.contains("Invalid namespace")) {
        let chunk = within("htmlfile frames", body.frame())
            .await
            .expect("the stream ended")
            .expect("chunk")
            .into_data()
            .unwrap_or_default();
        pending.push_str(std::str::from_utf8(&chunk).expect("UTF-8 chunk"));
        while let Some(end) = pending.find(END) {
            let unit: String = pending.drain(..end + END.len()).collect();
            let inner = unit
                .strip_prefix("<script>p(")
                .and_then(|t| t.strip_suffix(END))
                .unwrap_or_else(|| panic!("not one script call: {unit:?}"));
            assert_inert(inner, "htmlfile");
            seen.push_str(inner);
        }
    }

    // Error answers reflect nothing from the request.
    for query in [
        format!("EIO=4&transport=polling&sid={}", "%3Cscript%3E"),
        "EIO=4&transport=polling&j=%3Cscript%3E".to_owned(),
        "EIO=%3Cscript%3E&transport=polling".to_owned(),
        "EIO=4&transport=%3Cscript%3E".to_owned(),
        "EIO=4&transport=htmlfile".to_owned(),
    ] {
        let reply = request(
            addr,
            Method::GET,
            &format!("/socket.io/?{query}"),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_inert(reply.text(), &query);
        assert!(!reply.text().contains("script"), "{query}");
    }
    let mut client = server.ws().await;
    client.connect("/", None).await;
}

/// Asserts a response head is a status line and `name: value` lines, none of them planted.
#[track_caller]
fn assert_unsplit(head: &str, what: &str) {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 "), "{what}: {head:?}");
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{what}: odd head line {line:?}"));
        let name = name.to_ascii_lowercase();
        assert!(
            !["x-injected", "set-cookie", "location"].contains(&name.as_str()),
            "{what}: planted header {line:?}"
        );
        assert!(!value.contains('\r') && !value.contains('\n'), "{what}");
    }
    assert!(
        !head.to_ascii_lowercase().contains("\r\nx-injected"),
        "{what}"
    );
}

#[tokio::test]
async fn crlf_injection_never_splits_a_response_head() {
    let server = TestServer::start(EngineConfig {
        cors: Cors::Origins(vec!["https://app.example".into()]),
        ..long_heartbeat_config()
    })
    .await;
    let addr = server.addr;
    let sid = server.handshake().await.sid;
    let injections = [
        "%0d%0aX-Injected:%20evil",
        "%0D%0ASet-Cookie:%20evil=1",
        "%0aX-Injected:%20evil",
        "%0d%0a%0d%0a%3Cscript%3Eevil",
    ];
    // Every query value, on handshakes and on an open session.
    for injection in injections {
        for query in [
            format!("EIO=4{injection}&transport=polling"),
            format!("EIO=4&transport=polling{injection}"),
            format!("EIO=4&transport=polling&sid={sid}{injection}"),
            format!("EIO=4&transport=polling&j=1{injection}"),
            format!("EIO=4&transport=polling&tried=sse:error{injection}"),
            format!("EIO=4&transport=polling&t=x{injection}"),
            format!("EIO=4&transport=sse&sid={sid}{injection}"),
            format!("EIO=4&transport=htmlfile&j=1{injection}"),
        ] {
            let request = format!(
                "GET /engine.io/?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let (head, body) = raw_exchange(addr, request.as_bytes()).await;
            assert_unsplit(&head, &query);
            assert!(find(&body, b"evil").is_none(), "{query}: reflected");
        }
    }
    // Reflected headers: Origin (CORS) and Access-Control-Request-Headers (preflight). A CR or
    // LF cannot be in a header value; what a client can send stays one line.
    for (method, name, value) in [
        ("GET", "Origin", "https://app.example%0d%0aX-Injected: evil"),
        (
            "OPTIONS",
            "Access-Control-Request-Headers",
            "x-a%0d%0aX-Injected: evil",
        ),
        (
            "OPTIONS",
            "Access-Control-Request-Headers",
            "x-a\rX-Injected: evil",
        ),
        ("GET", "Origin", "https://app.example\rX-Injected: evil"),
        ("GET", "Origin", "https://app.example\nX-Injected: evil"),
        (
            "OPTIONS",
            "Access-Control-Request-Headers",
            "x-a\nX-Injected: evil",
        ),
    ] {
        let request = format!(
            "{method} /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {addr}\r\n\
             {name}: {value}\r\nConnection: close\r\n\r\n"
        );
        let (head, _) = raw_exchange(addr, request.as_bytes()).await;
        let what = format!("{method} {name}: {value:?}");
        assert_unsplit(&head, &what);
        if value.contains('%') && name == "Origin" {
            // Not an allowed origin (nor one a browser could send): refused, not echoed.
            assert!(head.starts_with("HTTP/1.1 400 "), "{what}: {head}");
            assert!(!head
                .to_ascii_lowercase()
                .contains("access-control-allow-origin"));
        }
    }
    // The path, outside the engine.
    let (head, body) = raw_exchange(
        addr,
        format!(
            "GET /%0d%0aX-Injected:%20evil HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert_unsplit(&head, "path");
    assert!(find(&body, b"evil").is_none());
    assert_healthy(&server).await;
}
