//! Long-polling: a GET parks until the session has frames and answers them as one payload (as
//! text for XHR, wrapped in a `___eio[N](...)` script for JSONP); a POST carries a payload
//! upstream and is answered `ok`. Upstream POSTs of every HTTP transport come here.
//!
//! Only the framing and the HTTP details live here; who may read and when is the session's
//! business ([`Session::long_poll`](crate::session::Session::long_poll)).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::header::{self, HeaderValue};
use hyper::Response;

use crate::framing::{self, Framing};
use crate::http::{full, Body, EngineError, HttpRequest};
use crate::lifecycle::Shared;
use crate::packet::{decode_payload, encode_payload, Frame};
use crate::session::{AttachError, CloseReason, ReceiverId, TransportKind};
use crate::socket::Socket;

/// Detaches the receiver when the GET ends, including when the client goes away mid-poll and
/// hyper drops the request future.
struct Attached<'a> {
    socket: &'a Socket,
    id: ReceiverId,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.socket.lock().detach(self.id);
    }
}

/// Ends the upstream request when the POST is done, whichever way.
struct Posting<'a>(&'a Socket);

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        self.0.lock().end_post();
        // A resuming client's next POST may be waiting for this one.
        self.0.wake_receiver();
    }
}

/// Where a resuming client's POST stands: what it has received (`ack`), and the position of
/// its first packet (`seq`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Upstream {
    pub ack: Option<u64>,
    pub seq: Option<u64>,
}

/// The response to a refused receiver or upstream request (shared by every HTTP transport).
pub(crate) fn refused(socket: &Socket, error: AttachError) -> EngineError {
    match error {
        AttachError::Closed => {
            // It may have just timed out, judged at the request's arrival (the session's
            // driver has yet to notice): let the driver end it.
            socket.wake_all();
            EngineError::UnknownSid
        }
        AttachError::TransportMismatch | AttachError::Busy => EngineError::BadRequest,
        AttachError::BadAck => {
            socket.wake_all();
            EngineError::BadRequest
        }
        AttachError::Overlap => {
            // The session is closed now; release the parked request and the driver.
            socket.wake_all();
            EngineError::BadRequest
        }
    }
}

/// A long-poll GET: parks until the session has something, then answers one payload.
pub(crate) async fn long_poll(
    shared: &Shared,
    socket: &Arc<Socket>,
    framed: &Framing,
    ack: Option<u64>,
    stamp: Option<u64>,
) -> Result<Response<Body>, EngineError> {
    let attached = {
        // Two statements: the lock is released before a refusal wakes the session's waiters.
        let attached = socket.lock().attach_long_poll(Instant::now(), ack, stamp);
        let id = attached.map_err(|e| refused(socket, e))?;
        Attached { socket, id }
    };
    // A receiver it replaced answers now.
    socket.wake_receiver();
    let frames = socket
        .wait_until(|session| session.long_poll(attached.id, shared.config.max_poll_packets))
        .await;
    drop(attached);
    if socket.is_closed() {
        // The close packet may have been read: the session's driver can let it go.
        socket.wake_all();
    }
    let res = match framed {
        Framing::Jsonp(index) => jsonp_response(index, &frames),
        _ => payload_response(&frames),
    };
    let bytes = http_body::Body::size_hint(res.body()).exact().unwrap_or(0);
    shared
        .stats
        .sent(TransportKind::Polling, frames.len(), bytes as usize);
    Ok(res)
}

pub(crate) fn jsonp_response(index: &str, frames: &[Frame]) -> Response<Body> {
    let mut res = Response::new(full(framing::jsonp(index, frames)));
    // Served as script, with nosniff (added for every response): a `text/plain` script would be
    // refused by browsers under nosniff, which is what engine.io's JSONP runs into.
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    res
}

fn payload_response(frames: &[Frame]) -> Response<Body> {
    let len: usize = frames.iter().map(|f| f.payload_len() + 1).sum();
    let mut body = BytesMut::with_capacity(len);
    encode_payload(frames, &mut body);
    let mut res = Response::new(full(body.freeze()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    res
}

/// An upstream POST: reads at most maxPayload bytes, hands the packets to the session in order.
pub(crate) async fn post(
    shared: &Shared,
    socket: &Arc<Socket>,
    transport: TransportKind,
    at: Upstream,
    req: HttpRequest,
) -> Result<Response<Body>, EngineError> {
    socket.sync_probe().await;
    // A resuming client repeats a POST whose answer it lost; the first may still be read.
    let begin =
        socket.wait_until(
            |session| match session.begin_post(transport, Instant::now(), at.ack) {
                Err(AttachError::Busy) => None,
                other => Some(other),
            },
        );
    let _posting = tokio::select! {
        begun = begin => {
            begun.map_err(|e| refused(socket, e))?;
            Posting(socket)
        }
        () = tokio::time::sleep(shared.config.body_read_timeout) => {
            return Err(EngineError::BadRequest);
        }
    };
    let form = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    // A client that stops sending mid-body would hold the request for as long as its session
    // lives, and a WebSocket upgrade keeps the session alive: the body has a deadline of its
    // own. Its packets are lost with it, so the session ends.
    let mut body = tokio::select! {
        body = read_body(req, shared.config.max_payload) => body?,
        () = socket.wait_until(|s| s.is_closed().then_some(())) => {
            return Err(EngineError::UnknownSid);
        }
        () = tokio::time::sleep(shared.config.body_read_timeout) => {
            shared.stats.body_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(sid = %socket.sid(), "POST body timed out, closing");
            socket.close(CloseReason::ProtocolError);
            return Err(EngineError::BodyTimeout);
        }
    };
    if form {
        // A hidden-form POST (JSONP, and old IE's forever-frame clients): the payload is `d`.
        body = match framing::form_payload(&body) {
            Some(payload) => Bytes::from(payload),
            None => {
                socket.close(CloseReason::ProtocolError);
                return Err(EngineError::BadRequest);
            }
        };
    }
    let mut packets = match decode_payload(body) {
        Ok(packets) => packets,
        Err(error) => {
            tracing::debug!(sid = %socket.sid(), %error, "undecodable payload, closing");
            socket.close(CloseReason::ProtocolError);
            return Err(EngineError::BadRequest);
        }
    };
    // Packets a repeated POST carries again were applied the first time.
    let seen = socket
        .lock()
        .admit_upstream(at.seq, packets.len())
        .map_err(|error| {
            tracing::debug!(sid = %socket.sid(), %error, "upstream out of sequence, closing");
            EngineError::BadRequest
        })?;
    packets.drain(..seen);
    socket
        .receive(&*shared.handler, packets)
        .map_err(|reason| match reason {
            // The session was already over (the heartbeat deadline passed before the POST).
            CloseReason::PingTimeout => EngineError::UnknownSid,
            _ => EngineError::BadRequest,
        })?;
    Ok(ok_response())
}

/// Reads a request body of at most `max` bytes: 413 beyond, checked against Content-Length
/// first so an honest oversize upload is refused before it is read.
pub(crate) async fn read_body(req: HttpRequest, max: usize) -> Result<Bytes, EngineError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(EngineError::PayloadTooLarge);
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(EngineError::PayloadTooLarge)
        }
        // The client went away or sent a broken body.
        Err(_) => Err(EngineError::BadRequest),
    }
}

/// `200 ok` as `text/html`: a form POST answered with `text/plain` made some mobile browsers
/// offer a download (engine.io GH-43), so engine.io and Halley answer HTML.
pub(crate) fn ok_response() -> Response<Body> {
    let mut res = Response::new(full(Bytes::from_static(b"ok")));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    res
}
