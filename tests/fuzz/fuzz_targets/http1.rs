//! The server's own HTTP/1.1 layer (`h1::serve`) on untrusted bytes: whatever a client sends
//! on one connection, through a service that reads each request's body in full and answers
//! with its length (streamed, in two chunks, for a path starting `/s`).
//!
//! Beyond "no panic", no hang:
//! - the output is a sequence of well-formed responses: one per request the service saw, in
//!   order, plus at most one refusal (4xx/505), which ends the connection;
//! - every request the service saw had an unambiguous framing: no `Transfer-Encoding`, every
//!   `Content-Length` value the same, and its body exactly that long;
//! - a request handed over to hyper (upgrade, chunked, large) is given back byte for byte, from
//!   its request line on;
//! - `parse_head` agrees with itself on a prefix: the head it found parses to the same length
//!   when given alone.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use halley_engine::h1::{self, parse_head, Served};
use halley_engine::http::{Body, HttpRequest};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Method, Response};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the service saw of one request.
struct Seen {
    method: Method,
    body_len: Option<usize>,
    declared: Option<u64>,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((len, _))) = parse_head(data) {
        assert!(len <= data.len());
        match parse_head(&data[..len]) {
            Ok(Some((again, _))) => {
                assert_eq!(again, len, "a head's length depends on what follows")
            }
            other => panic!(
                "a complete head no longer parses alone: {:?}",
                other.map(|o| o.map(|h| h.0))
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(connection(data));
});

async fn connection(data: &[u8]) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let limits = h1::Limits {
        max_head: 2048,
        max_body: 1024,
        read_timeout: Duration::from_secs(10),
    };
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let log = Arc::clone(&seen);
    let serving = async {
        let served = h1::serve(server, &limits, &mut stop, move |req: HttpRequest| {
            let log = Arc::clone(&log);
            async move { answer(req, &log).await }
        })
        .await;
        // Handed over: what hyper would read, to the end of the input (the connection is
        // dropped after, which ends the client's read).
        match served {
            Ok(Served::Handoff(mut rewound)) => {
                let mut rest = Vec::new();
                let _ = rewound.read_to_end(&mut rest).await;
                Some(rest)
            }
            _ => None,
        }
    };
    let input = data.to_vec();
    let talking = async move {
        client
            .write_all(&input)
            .await
            .expect("the duplex takes the input");
        client.shutdown().await.expect("half-close");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        out
    };
    // Paused time: a stalled read ends at the timeout at once rather than after 10 s.
    let (served, out) = tokio::join!(serving, talking);
    let seen = seen.lock().expect("lock");
    for s in seen.iter() {
        if let (Some(len), Some(declared)) = (s.body_len, s.declared) {
            assert_eq!(
                len as u64, declared,
                "a body of another length than declared"
            );
        }
    }
    if let Some(rest) = served {
        assert!(
            data.ends_with(&rest),
            "handed over bytes that were not the input's tail"
        );
        assert!(
            matches!(parse_head(&rest), Ok(Some(_))),
            "handed over no complete head"
        );
    }
    check_responses(&out, &seen);
}

async fn answer(req: HttpRequest, log: &Mutex<Vec<Seen>>) -> Response<Body> {
    let headers = req.headers();
    assert!(
        !headers.contains_key(TRANSFER_ENCODING),
        "a chunked request reached the service"
    );
    let lengths: Vec<u64> = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.to_str().expect("digits").split(','))
        .map(|v| v.trim().parse().expect("digits"))
        .collect();
    assert!(
        lengths.windows(2).all(|w| w[0] == w[1]),
        "differing lengths reached the service"
    );
    let method = req.method().clone();
    let streamed = req.uri().path().starts_with("/s");
    let index = {
        let mut log = log.lock().expect("lock");
        log.push(Seen {
            method,
            body_len: None,
            declared: lengths.first().copied(),
        });
        log.len() - 1
    };
    let body = req.into_body().collect().await.map(|c| c.to_bytes());
    let len = body.as_ref().map_or(0, Bytes::len);
    if body.is_ok() {
        log.lock().expect("lock")[index].body_len = Some(len);
    }
    let text = Bytes::from(format!("len={len}"));
    let body: Body = if streamed {
        let (a, b) = text.split_at(text.len() / 2);
        let frames = vec![
            Ok(Frame::data(Bytes::copy_from_slice(a))),
            Ok(Frame::data(Bytes::copy_from_slice(b))),
        ];
        StreamBody::new(stream::iter(frames)).boxed_unsync()
    } else {
        Full::new(text).boxed_unsync()
    };
    Response::new(body)
}

/// Parses the responses in `out`: one per request seen, then at most one refusal.
fn check_responses(out: &[u8], seen: &[Seen]) {
    let mut rest = out;
    let mut finals = 0;
    let mut refused = false;
    while !rest.is_empty() {
        assert!(!refused, "bytes after a refusal");
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        let len = match res.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!(
                "not a response: {other:?} in {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let code = res.code.expect("status");
        let find = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let length = find("content-length").map(|v| v.parse::<usize>().expect("length"));
        let chunked = find("transfer-encoding").is_some_and(|v| v == "chunked");
        rest = &rest[len..];
        if code == 100 {
            continue;
        }
        if code >= 400 {
            assert_eq!(length, Some(0), "a refusal with a body");
            refused = true;
            continue;
        }
        assert_eq!(code, 200);
        let request = seen
            .get(finals)
            .expect("a response to a request never seen");
        finals += 1;
        if request.method == Method::HEAD {
            continue;
        }
        if chunked {
            loop {
                let line_end = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("chunk size line");
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).expect("hex"), 16)
                        .expect("hex size");
                rest = &rest[line_end + 2..];
                assert!(rest.len() >= size + 2, "a chunk cut short");
                assert_eq!(&rest[size..size + 2], b"\r\n");
                rest = &rest[size + 2..];
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            assert!(rest.len() >= length, "a body cut short");
            rest = &rest[length..];
        } else {
            // Delimited by the close (HTTP/1.0, no known length): nothing may follow it.
            let closes = find("connection").is_some_and(|v| v == "close");
            assert!(closes, "a body with no length, no chunks, and no close");
            rest = &[];
        }
    }
    // A request whose response the client never got: only the last one, when the client's
    // half-close came first (its body cut short, or the connection closed mid-stream).
    assert!(
        finals + 1 >= seen.len(),
        "{} requests seen, {finals} answered",
        seen.len()
    );
}
