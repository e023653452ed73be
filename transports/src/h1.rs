//! A small HTTP/1.1 server connection for the requests a comet server keeps open: long polls,
//! streams, and the short requests around them. hyper holds two 8 KiB buffers for every
//! connection whatever it is doing; a connection here holds none while its request is parked.
//! It reads a head into a buffer that is freed as soon as the head is parsed, reads a
//! `Content-Length` body in full, and writes each response piece from a buffer of its own size.
//!
//! What it does not serve it hands over, before reading any of it, with the bytes it read
//! ([`Served::Handoff`]): WebSocket handshakes (any request with `Upgrade`), chunked uploads,
//! and bodies larger than [`Limits::max_body`]. The server gives those to hyper, which then
//! keeps the connection.
//!
//! Strict where smuggling lives (RFC 9112 §6.3, §11.2): `Transfer-Encoding` together with
//! `Content-Length`, `Content-Length` values that differ or are not digits, `Transfer-Encoding`
//! on HTTP/1.0 or without `chunked` last, obs-fold, a bare CR and whitespace before a header's
//! colon are answered 400 and the connection is closed, since where the next request starts is
//! no longer known.

use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};

use crate::http::{Body, HttpRequest, RequestBody};

/// Headers a request may carry; more is answered 431.
const MAX_HEADERS: usize = 100;

/// What a connection may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of a request head (request line and headers): 431 beyond.
    pub max_head: usize,
    /// The largest body read here; a larger one is handed to hyper, which streams it.
    pub max_body: usize,
    /// Time for a request head (from the end of the previous response, or the accept) and for
    /// its body to arrive.
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_body: 1 << 20,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// How a body follows a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (0 without the header).
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// The request asks to switch protocols (`Upgrade`).
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// A request head refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request head")]
    Malformed,
    #[error("ambiguous message framing")]
    Framing,
    #[error("request head too large")]
    TooLarge,
    #[error("HTTP version not supported")]
    Version,
    /// Begun and not finished within the read timeout (closed unanswered, as hyper does).
    #[error("request head not finished in time")]
    Timeout,
}

impl HeadError {
    pub const ALL: [HeadError; 5] = [
        HeadError::Malformed,
        HeadError::Framing,
        HeadError::TooLarge,
        HeadError::Version,
        HeadError::Timeout,
    ];

    /// The answer to a head refused this way; `None` when the connection is closed unanswered.
    fn status(self) -> Option<StatusCode> {
        match self {
            HeadError::Malformed | HeadError::Framing => Some(StatusCode::BAD_REQUEST),
            HeadError::TooLarge => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            HeadError::Version => Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            HeadError::Timeout => None,
        }
    }

    /// The reason's label in metrics (one of [`crate::stats::HTTP_REFUSALS`]).
    pub fn as_str(self) -> &'static str {
        match self {
            HeadError::Malformed => "malformed",
            HeadError::Framing => "framing",
            HeadError::TooLarge => "too_large",
            HeadError::Version => "version",
            HeadError::Timeout => "timeout",
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// head and the bytes it took.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        // 505 only for a request line that names another HTTP version ("GET /a b HTTP/1.1"
        // is malformed).
        Err(httparse::Error::Version) if names_http_version(buf) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HeadError::Malformed);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
    let uri = Uri::try_from(path).map_err(|_| HeadError::Malformed)?;
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| HeadError::Malformed)?;
        headers.append(name, value);
    }
    let framing = framing(&headers, version)?;
    let keep_alive = if version == Version::HTTP_11 {
        !has_token(&headers, &header::CONNECTION, "close")
    } else {
        has_token(&headers, &header::CONNECTION, "keep-alive")
    };
    let upgrade = headers.contains_key(header::UPGRADE);
    let expect_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    Ok(Some((
        len,
        Head {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            upgrade,
            expect_continue,
        },
    )))
}

/// Whether the request line is three words, the last `HTTP/<digit>…`.
fn names_http_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(words.as_slice(), [_, _, v] if v.len() > 5 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit())
}

/// The body's framing, refusing every ambiguity a proxy in front could read differently.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, HeadError> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // A list of equal values is one value (RFC 9110 §8.6); anything else is refused.
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Framing);
            }
            let n = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::Framing)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::Framing);
            }
            length = Some(n);
        }
    }
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(Framing::Length(length.unwrap_or(0)));
    }
    if length.is_some() || version != Version::HTTP_11 {
        return Err(HeadError::Framing);
    }
    let last = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim);
    match last {
        Some(coding) if coding.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        _ => Err(HeadError::Framing),
    }
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// How a connection ended here.
pub enum Served<T> {
    /// Closed: by the client, after a response that closes it, at shutdown, or idle past the
    /// read timeout.
    Closed,
    /// Closed after refusing a request head (answered unless it timed out).
    Refused(HeadError),
    /// A request this layer does not serve: the connection, and every byte read from it (that
    /// request's head first), for hyper.
    Handoff(Rewind<T>),
}

/// Serves requests on `io` with `service` until the connection closes or a request is handed
/// over. `stop` turning true closes an idle connection, and makes the response in progress the
/// last one.
pub async fn serve<T, S, F>(
    mut io: T,
    limits: &Limits,
    stop: &mut watch::Receiver<bool>,
    mut service: S,
) -> io::Result<Served<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(HttpRequest) -> F,
    F: Future<Output = Response<Body>>,
{
    // Bytes read and not yet used: empty (and unallocated) while a request is parked, unless
    // the client sent more behind it.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The connection's task is as large as the most this loop keeps across an await: each
        // step's future is boxed, and what a step makes lives in a block of its own, so a
        // parked request costs the task little beyond the service's own (boxed) future.
        let read = Box::pin(tokio::time::timeout(
            limits.read_timeout,
            read_head(&mut io, &mut buf, limits, stop),
        ));
        let head = match read.await {
            // Idle between requests: a keep-alive that ran out, nothing refused.
            Err(_elapsed) if buf.is_empty() => return Ok(Served::Closed),
            // A head begun and never finished (slowloris).
            Err(_elapsed) => return Ok(Served::Refused(HeadError::Timeout)),
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => return Ok(Served::Closed),
            Ok(Err(Refused::Io(error))) => return Err(error),
            Ok(Err(Refused::Head(error))) => {
                if let Some(status) = error.status() {
                    Box::pin(refuse(&mut io, status)).await?;
                }
                return Ok(Served::Refused(error));
            }
        };
        let Some(started) = start(head, &mut buf, limits, &mut service) else {
            return Ok(Served::Handoff(Rewind::new(io, buf)));
        };
        let Started {
            work,
            mut feed,
            version,
            is_head,
            keep_alive,
            expect_continue,
        } = started;
        if expect_continue {
            Box::pin(io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")).await?;
        }
        let waiting = Box::pin(until_closed(&mut io, &mut buf, limits, &mut feed, work));
        let responding = {
            let Some(res) = waiting.await? else {
                return Ok(Served::Closed);
            };
            // A body the service answered without reading in full leaves bytes on the wire
            // that no request boundary follows.
            let unread = feed.as_ref().is_some_and(|feed| feed.left > 0);
            let close = !keep_alive || unread || *stop.borrow() || closes(res.headers());
            Box::pin(respond(
                &mut io, &mut buf, limits, res, version, is_head, close,
            ))
        };
        drop(feed);
        let Some(closed) = responding.await? else {
            return Ok(Served::Closed);
        };
        if closed {
            let _ = Box::pin(io.shutdown()).await;
            return Ok(Served::Closed);
        }
    }
}

/// A request handed to the service, and what the connection needs of it meanwhile.
struct Started<W> {
    work: Pin<Box<W>>,
    feed: Option<Feed>,
    version: Version,
    is_head: bool,
    keep_alive: bool,
    /// The body is still to come and the client waits for `100 Continue` to send it.
    expect_continue: bool,
}

/// Takes the head (and what of its body is here) from `buf` and starts `service` on it; `None`
/// for a request hyper is to serve (nothing taken).
fn start<S, F>(
    (len, head): (usize, Head),
    buf: &mut Vec<u8>,
    limits: &Limits,
    service: &mut S,
) -> Option<Started<F>>
where
    S: FnMut(HttpRequest) -> F,
    F: Future<Output = Response<Body>>,
{
    let length = match head.framing {
        Framing::Length(n) if !head.upgrade && n <= limits.max_body as u64 => n as usize,
        _ => return None,
    };
    buf.drain(..len);
    // A body already here in full is passed whole; the rest of one is streamed to the service
    // as it comes (the service's own deadline judges a body that stalls).
    let (body, feed) = if length <= buf.len() {
        let body = RequestBody::full(Bytes::copy_from_slice(&buf[..length]));
        buf.drain(..length);
        (body, None)
    } else {
        let (tx, chunks) = mpsc::channel(2);
        let here = std::mem::take(buf);
        let left = length - here.len();
        if !here.is_empty() {
            let _ = tx.try_send(Bytes::from(here));
        }
        let body = RequestBody::Streamed {
            chunks,
            left: length as u64,
        };
        let feed = Feed {
            tx,
            left,
            dropped: false,
        };
        (body, Some(feed))
    };
    if buf.is_empty() {
        *buf = Vec::new();
    } else {
        buf.shrink_to_fit();
    }
    let expect_continue = head.expect_continue && feed.is_some();
    let (version, keep_alive) = (head.version, head.keep_alive);
    let is_head = head.method == Method::HEAD;
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers;
    Some(Started {
        work: Box::pin(service(req)),
        feed,
        version,
        is_head,
        keep_alive,
        expect_continue,
    })
}

enum Refused {
    Io(io::Error),
    Head(HeadError),
}

/// Reads until `buf` starts with a complete head; `None` when the connection ends (or `stop`
/// turns true) before a request began.
async fn read_head<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut Vec<u8>,
    limits: &Limits,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<(usize, Head)>, Refused> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf).map_err(Refused::Head)? {
                return Ok(Some(head));
            }
            if buf.len() >= limits.max_head {
                return Err(Refused::Head(HeadError::TooLarge));
            }
        }
        let n = if buf.is_empty() {
            // Idle: nothing is allocated until the client sends something.
            let mut first = [0u8; 64];
            tokio::select! {
                read = io.read(&mut first) => {
                    let n = read.map_err(Refused::Io)?;
                    buf.extend_from_slice(&first[..n]);
                    n
                }
                _ = stop.wait_for(|stopped| *stopped) => return Ok(None),
            }
        } else {
            let room = (limits.max_head - buf.len()).min(4096);
            buf.reserve(room);
            let mut limited = (&mut *io).take(room as u64);
            limited.read_buf(buf).await.map_err(Refused::Io)?
        };
        if n == 0 {
            // The client closed: cleanly between requests, or mid-head (nothing to answer).
            return Ok(None);
        }
    }
}

/// The part of a request body still to be read from the connection, and where it goes.
struct Feed {
    tx: mpsc::Sender<Bytes>,
    left: usize,
    /// The service let go of the body: what is left stays unread (and closes the connection
    /// after the response).
    dropped: bool,
}

impl Feed {
    fn feeding(feed: &Option<Feed>) -> bool {
        feed.as_ref().is_some_and(|f| f.left > 0 && !f.dropped)
    }
}

/// Waits for `work` while watching the connection: `None` when the client closes (or resets)
/// it first, and `work` is dropped then, as hyper drops a request's future. Meanwhile the rest
/// of the request's body (`feed`) is read and passed on as the service takes it; other bytes
/// the client sends (a pipelined request) are kept in `buf`, up to a head's worth.
async fn until_closed<T, W>(
    io: &mut T,
    buf: &mut Vec<u8>,
    limits: &Limits,
    feed: &mut Option<Feed>,
    work: W,
) -> io::Result<Option<W::Output>>
where
    T: AsyncRead + Unpin,
    W: Future,
{
    tokio::pin!(work);
    let mut permit: Option<mpsc::OwnedPermit<Bytes>> = None;
    // Allocated only while a body streams in.
    let mut chunk: Vec<u8> = Vec::new();
    loop {
        let feeding = Feed::feeding(feed);
        let sender = match feed {
            Some(f) if feeding && permit.is_none() => Some(f.tx.clone()),
            _ => None,
        };
        let reading = if feeding {
            permit.is_some()
        } else {
            chunk = Vec::new();
            buf.len() < limits.max_head
        };
        if let (true, Some(f)) = (reading && feeding && chunk.is_empty(), feed.as_ref()) {
            chunk = vec![0; f.left.min(16 * 1024)];
        }
        let mut scratch = [0u8; 64];
        let into: &mut [u8] = if feeding { &mut chunk } else { &mut scratch };
        let waiting = sender.is_some();
        tokio::select! {
            biased;
            out = &mut work => return Ok(Some(out)),
            reserved = async {
                match sender {
                    Some(sender) => sender.reserve_owned().await.ok(),
                    None => std::future::pending().await,
                }
            }, if waiting => match (reserved, feed.as_mut()) {
                (Some(p), _) => permit = Some(p),
                (None, Some(f)) => f.dropped = true,
                (None, None) => {}
            },
            read = io.read(into), if reading => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) if feeding => {
                    if let (Some(p), Some(f)) = (permit.take(), feed.as_mut()) {
                        f.left -= n;
                        p.send(Bytes::copy_from_slice(&chunk[..n]));
                    }
                }
                Ok(n) => buf.extend_from_slice(&scratch[..n]),
            },
        }
    }
}

/// Whether a response's own `Connection` header closes the connection.
fn closes(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "close")
}

/// How a response's body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delimit {
    /// No body at all (HEAD, 1xx, 204, 304).
    Nothing,
    /// `Content-Length` bytes, as they come.
    Length,
    Chunked,
    /// Until the connection closes (HTTP/1.0 with no known length).
    Close,
}

/// Writes `res`: `Some(true)` when the connection must close after it, `None` when the client
/// went away while it streamed.
async fn respond<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    buf: &mut Vec<u8>,
    limits: &Limits,
    res: Response<Body>,
    version: Version,
    is_head: bool,
    close: bool,
) -> io::Result<Option<bool>> {
    let (parts, mut body) = res.into_parts();
    // The head is encoded by a plain function that consumes the parts: a stream's response
    // then keeps no header map (and its allocations) for the stream's life.
    let (mut out, delimit, close) = encode_head(parts, &body, version, is_head, close);
    if delimit == Delimit::Nothing {
        io.write_all(&out).await?;
        return Ok(Some(close));
    }
    // Whatever of the body is ready goes out with the head, in one write.
    let mut ended = false;
    while let Some(frame) = body.frame().now_or_never() {
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    put(&mut out, &data, delimit);
                }
            }
            Some(Err(infallible)) => match infallible {},
            None => {
                ended = true;
                break;
            }
        }
        if out.len() >= 64 * 1024 {
            break;
        }
    }
    if ended && delimit == Delimit::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(&out).await?;
    drop(out);
    if ended {
        return Ok(Some(close || delimit == Delimit::Close));
    }
    loop {
        let frame = match until_closed(io, buf, limits, &mut None, body.frame()).await? {
            None => return Ok(None),
            Some(None) => break,
            Some(Some(Ok(frame))) => frame,
            Some(Some(Err(infallible))) => match infallible {},
        };
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            if delimit == Delimit::Chunked {
                let mut chunk = Vec::with_capacity(data.len() + 16);
                put(&mut chunk, &data, delimit);
                io.write_all(&chunk).await?;
            } else {
                io.write_all(&data).await?;
            }
        }
    }
    if delimit == Delimit::Chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    Ok(Some(close || delimit == Delimit::Close))
}

/// The response head on the wire, how its body is delimited, and whether the connection
/// closes after it (`close`, or a body that only the close can end).
fn encode_head(
    parts: hyper::http::response::Parts,
    body: &Body,
    version: Version,
    is_head: bool,
    mut close: bool,
) -> (Vec<u8>, Delimit, bool) {
    let status = parts.status;
    let mut headers = parts.headers;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let delimit = if bodiless {
        Delimit::Nothing
    } else {
        if !headers.contains_key(header::CONTENT_LENGTH) {
            if let Some(n) = http_body::Body::size_hint(body).exact() {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        if is_head {
            Delimit::Nothing
        } else if headers.contains_key(header::CONTENT_LENGTH) {
            Delimit::Length
        } else if version == Version::HTTP_11 {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Delimit::Chunked
        } else {
            close = true;
            Delimit::Close
        }
    };
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if version == Version::HTTP_10 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date::append(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (out, delimit, close)
}

/// Appends `data` to `out` as the body is delimited.
fn put(out: &mut Vec<u8>, data: &[u8], delimit: Delimit) {
    if data.is_empty() {
        return;
    }
    if delimit == Delimit::Chunked {
        // The size line written in place: no string allocated per chunk.
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// A refusal with no body that closes the connection.
async fn refuse<T: AsyncWrite + Unpin>(io: &mut T, status: StatusCode) -> io::Result<()> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\ndate: ");
    date::append(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    io.write_all(&out).await?;
    let _ = io.shutdown().await;
    Ok(())
}

/// A connection handed over with the bytes already read from it, which reads give back first.
pub struct Rewind<T> {
    read: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    /// `io`, whose reads give `read` back first.
    pub fn new(io: T, read: Vec<u8>) -> Self {
        Rewind {
            read: Bytes::from(read),
            io,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, out);
        }
        let n = this.read.len().min(out.remaining());
        out.put_slice(&this.read.split_to(n));
        if this.read.is_empty() {
            // Let go of the allocation now rather than with the connection.
            this.read = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The `Date` header's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub(super) fn append(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second || cached.1.is_empty() {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(usize, Head)>, HeadError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn a_complete_head_is_parsed_and_its_length_given() {
        let raw = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        let (len, head) = head(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], "NEXT");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.query(), Some("EIO=4&transport=polling"));
        assert_eq!(head.framing, Framing::Length(0));
        assert!(head.keep_alive && !head.upgrade);
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let h = |raw| head(raw).unwrap().unwrap().1.keep_alive;
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!h("GET / HTTP/1.0\r\n\r\n"));
        assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn framing_ambiguities_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
        ] {
            assert_eq!(head(raw).unwrap_err(), HeadError::Framing, "{raw:?}");
        }
    }

    #[test]
    fn equal_content_lengths_are_one() {
        let raw = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n";
        assert_eq!(head(raw).unwrap().unwrap().1.framing, Framing::Length(3));
        let raw = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(head(raw).unwrap().unwrap().1.framing, Framing::Chunked);
    }

    #[test]
    fn obs_fold_bare_cr_and_space_before_colon_are_malformed() {
        for raw in [
            "GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: 1\r2\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
            "GET / HTTP/1.1\rHost: a\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(head(raw).unwrap_err(), HeadError::Malformed, "{raw:?}");
        }
    }

    #[test]
    fn too_many_headers_is_too_large_and_other_versions_are_refused() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(head(&raw).unwrap_err(), HeadError::TooLarge);
        assert_eq!(
            head("GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
    }

    #[test]
    fn every_refusal_has_a_metrics_label() {
        for error in HeadError::ALL {
            assert!(
                crate::stats::HTTP_REFUSALS.contains(&error.as_str()),
                "{error:?}"
            );
        }
        assert_eq!(HeadError::ALL.len(), crate::stats::HTTP_REFUSALS.len());
    }

    #[test]
    fn upgrade_and_expect_are_seen() {
        let raw = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(head(raw).unwrap().unwrap().1.upgrade);
        let raw = "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
        assert!(head(raw).unwrap().unwrap().1.expect_continue);
    }

    #[tokio::test]
    async fn rewind_gives_back_what_was_read_first() {
        let (client, server) = tokio::io::duplex(64);
        let mut rewind = Rewind::new(server, b"abc".to_vec());
        let mut client = client;
        client.write_all(b"def").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        rewind.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abcdef");
    }
}
