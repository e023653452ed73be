//! The server's own HTTP/1.1 layer (`engine::h1`) on a real listener, as a client (or an
//! attacker behind a proxy) meets it: request smuggling refused, pipelining, keep-alive across
//! methods, HTTP/1.0, `Expect: 100-continue`, bodies arriving in pieces, and what it hands to
//! hyper (chunked uploads, WebSocket handshakes).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use halley::engine::EngineConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` on a new connection and reads until the server closes it, as text.
async fn exchange_text(addr: SocketAddr, request: &[u8]) -> String {
    String::from_utf8_lossy(&exchange(addr, request).await).into_owned()
}

/// Reads one response (head and a `Content-Length` body) from `tcp`, leaving it open.
async fn read_response(tcp: &mut TcpStream, seen: &mut Vec<u8>) -> String {
    within("one response", async {
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().expect("length"));
                if seen.len() >= end + 4 + length {
                    let whole: Vec<u8> = seen.drain(..end + 4 + length).collect();
                    return String::from_utf8_lossy(&whole).into_owned();
                }
            }
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
}

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.").count()
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_nothing_behind_it_is_read() {
    let server = TestServer::start(suite_config()).await;
    let addr = server.addr;
    let sid = server.handshake().await.sid;
    let post = format!("POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: a");
    // Each would let a proxy and the server disagree on where the next request starts; the
    // request smuggled behind it must never be answered.
    let smuggled = "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: a\r\n\r\n";
    for framing in [
        "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n4abc",
        "\r\nContent-Length: 4, 5\r\n\r\n4abc",
        "\r\nContent-Length: +4\r\n\r\n4abc",
        "\r\nContent-Length: 4\r\nX-Fold: a\r\n b\r\n\r\n4abc",
        "\r\nContent-Length: 4\r\nX-Cr: a\rb\r\n\r\n4abc",
        "\r\nContent-Length : 4\r\n\r\n4abc",
        "\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange_text(addr, format!("{post}{framing}{smuggled}").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{framing:?}: {answer}");
        assert_eq!(responses(&answer), 1, "{framing:?}: {answer}");
    }
    let answer = exchange_text(
        addr,
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    // Nothing of the above reached the session.
    assert_eq!(server.engine.session_count(), 1);
    let handshakes = server
        .engine
        .stats()
        .transport(halley::engine::TransportKind::Polling)
        .handshakes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(handshakes, 1, "the smuggled handshakes were never served");
    // Each refusal is counted once the connection is let go, after the client read its answer.
    let stats = server.engine.stats();
    // Obs-fold, the bare CR and the space before a colon are not HTTP at all (malformed); the
    // other seven are well-formed heads whose framing is ambiguous.
    eventually("ten refusals counted", || {
        stats.http_refusals("framing") == 7 && stats.http_refusals("malformed") == 3
    })
    .await;
    let metrics = halley::metrics::Metrics::new(
        server.engine.clone(),
        None,
        std::sync::Arc::new(halley::bridge::Latency::default()),
    )
    .render();
    for line in [
        r#"halley_http_refused_total{reason="framing"} 7"#,
        r#"halley_http_refused_total{reason="malformed"} 3"#,
        r#"halley_http_refused_total{reason="timeout"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = TestServer::start(suite_config()).await;
    let get = |n: usize| {
        format!("GET /engine.io/?EIO=4&transport=polling&n={n} HTTP/1.1\r\nHost: a\r\n\r\n")
    };
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(format!("{}{}{}", get(1), get(2), get(3)).as_bytes())
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut sids = Vec::new();
    for _ in 0..3 {
        let response = read_response(&mut tcp, &mut seen).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        sids.push(sid_in(response.as_bytes()).expect("an open packet"));
    }
    sids.dedup();
    assert_eq!(sids.len(), 3, "three sessions, one per request");
    assert_eq!(server.engine.session_count(), 3);
}

#[tokio::test]
async fn one_connection_carries_gets_and_posts_in_turn() {
    let server = TestServer::start(suite_config()).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut seen = Vec::new();
    let sid = open_raw_on(&mut tcp, server.addr, "EIO=4&transport=polling").await;
    seen.clear();
    let path = format!("/engine.io/?EIO=4&transport=polling&sid={sid}");
    for text in ["one", "two"] {
        let body = format!("4{text}");
        let post = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(post.as_bytes()).await.expect("post");
        let response = read_response(&mut tcp, &mut seen).await;
        assert!(
            response.starts_with("HTTP/1.1 200 ") && response.ends_with("ok"),
            "{response}"
        );
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .expect("get");
        let response = read_response(&mut tcp, &mut seen).await;
        assert!(
            response.ends_with(&format!("\r\n\r\n4{text}")),
            "echoed: {response}"
        );
    }
}

#[tokio::test]
async fn a_body_in_pieces_reaches_the_engine_and_100_continue_is_sent() {
    let server = TestServer::start(suite_config()).await;
    let sid = server.handshake().await.sid;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: a\r\n\
         Content-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let mut seen = Vec::new();
    let interim = read_response(&mut tcp, &mut seen).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    // None of the body existed when the head was answered 100: it reaches the engine streamed,
    // here in two writes.
    tcp.write_all(b"4piece").await.expect("first piece");
    tcp.write_all(b"-wise").await.expect("second piece");
    let response = read_response(&mut tcp, &mut seen).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert_eq!(server.poll(&sid).await.text(), "4piece-wise");
}

#[tokio::test]
async fn a_chunked_upload_is_served_through_hyper() {
    let server = TestServer::start(suite_config()).await;
    let sid = server.handshake().await.sid;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let post = format!(
        "POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: a\r\n\
         Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n4ch\r\n4\r\nunky\r\n0\r\n\r\n"
    );
    tcp.write_all(post.as_bytes()).await.expect("post");
    let mut seen = Vec::new();
    let response = read_response(&mut tcp, &mut seen).await;
    assert!(
        response.starts_with("HTTP/1.1 200 ") && response.ends_with("ok"),
        "{response}"
    );
    assert_eq!(server.poll(&sid).await.text(), "4chunky");
}

#[tokio::test]
async fn http_10_is_answered_in_kind_and_closed() {
    let server = TestServer::start(suite_config()).await;
    let answer = exchange_text(
        server.addr,
        b"GET /engine.io/?EIO=4&transport=polling HTTP/1.0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(sid_in(answer.as_bytes()).is_some(), "{answer}");
}

#[tokio::test]
async fn an_oversized_head_gets_431_and_a_silent_one_is_closed() {
    let server = TestServer::start_full(
        suite_config(),
        std::sync::Arc::new(Echo),
        halley::server::ServerConfig {
            header_read_timeout: Duration::from_millis(300),
            max_header_bytes: 8192,
            ..Default::default()
        },
    )
    .await;
    let big = format!(
        "GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let answer = exchange_text(server.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // Half a head, then nothing: closed at the read timeout, unanswered.
    let answer = exchange_text(server.addr, b"GET /engine.io/?EIO=4 HTTP/1.1\r\nHo").await;
    assert_eq!(answer, "");
    // A keep-alive connection that stays idle is closed at the same timeout, not refused.
    let idle = exchange_text(server.addr, b"").await;
    assert_eq!(idle, "");
    let answer = exchange_text(server.addr, b"GET / HTTP/2.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 505 "), "{answer}");
    let stats = server.engine.stats();
    eventually("each refusal counted under its reason", || {
        [("too_large", 1), ("timeout", 1), ("version", 1)]
            .iter()
            .all(|&(reason, n)| stats.http_refusals(reason) == n)
    })
    .await;
    assert_eq!(stats.http_refusals("malformed"), 0);
    assert_eq!(stats.http_refusals("framing"), 0);
}

#[tokio::test]
async fn a_parked_poll_whose_client_left_is_let_go() {
    let server = TestServer::start(EngineConfig {
        ..long_heartbeat_config()
    })
    .await;
    let sid = server.handshake().await.sid;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let get =
        format!("GET /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: a\r\n\r\n");
    tcp.write_all(get.as_bytes()).await.expect("get");
    let socket = server.engine.socket(&sid).expect("the session");
    eventually("the poll to park", || socket.has_receiver()).await;
    drop(tcp);
    // The server noticed the close and dropped the poll: what is sent now waits for the next.
    eventually("the abandoned poll to be let go", || !socket.has_receiver()).await;
    socket.send_text("hello").expect("send");
    assert_eq!(server.poll(&sid).await.text(), "4hello");
    assert!(!socket.is_closed(), "the session lives on");
}
