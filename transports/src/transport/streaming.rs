//! The streaming receivers (`iframe`, `htmlfile`, `sse`, `xhr-streaming`): one long response
//! that writes each batch of queued frames as one chunk, framed per transport.
//!
//! The response body pulls from the session itself (no task per stream): when hyper asks for
//! the next chunk, it waits on the session's receiver wake-up. A stream ends after
//! `stream_limit` bytes (the client reopens it with its sid, and the frames queued meanwhile
//! wait in the outbox, so nothing is lost or repeated), when an upgrade completes (after a noop),
//! or when the session closes (after the final packet). A client that goes away drops the body,
//! which detaches the receiver.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame as HttpFrame};
use hyper::header::{self, HeaderValue};
use hyper::Response;

use crate::framing::{self, Framing};
use crate::http::{full, Body, EngineError};
use crate::lifecycle::Shared;
use crate::packet::{Frame, Packet};
use crate::session::{payload_size, ReceiverId, TransportKind};
use crate::socket::Socket;
use crate::stats::EngineStats;
use crate::transport::polling;

type Next = Pin<Box<dyn Future<Output = (Vec<Frame>, bool)> + Send>>;

/// Attaches a streaming receiver and answers with its stream.
pub(crate) fn attach(
    shared: &Shared,
    socket: &Arc<Socket>,
    transport: TransportKind,
    framing: &Framing,
    ack: Option<u64>,
) -> Result<Response<Body>, EngineError> {
    // Two statements: the lock is released before a refusal wakes the session's waiters.
    let attached = socket.lock().attach(transport, Instant::now(), ack);
    let id = attached.map_err(|e| polling::refused(socket, e))?;
    // A receiver it replaced (a resuming client's broken stream) ends now.
    socket.wake_receiver();
    let (prelude, content_type) = prelude(framing);
    let body = Stream {
        stats: Arc::clone(&shared.stats),
        transport,
        socket: Arc::clone(socket),
        id,
        framing: framing.clone(),
        prelude: Some(prelude),
        sent: 0,
        limit: shared.config.stream_limit,
        next: None,
        done: false,
    };
    Ok(stream_response(body.boxed_unsync(), content_type, framing))
}

/// A stream's first bytes and its content type.
fn prelude(framing: &Framing) -> (Bytes, &'static str) {
    match framing {
        Framing::Html(index, domain) => (
            framing::html_prelude_in(index, domain.as_deref()),
            "text/html; charset=UTF-8",
        ),
        Framing::Sse => (framing::sse_prelude(), "text/event-stream; charset=UTF-8"),
        _ => (
            framing::xhr_streaming_prelude(),
            "text/plain; charset=UTF-8",
        ),
    }
}

/// What a resuming client's stream gets when its session is gone: the stream's prelude and a
/// close packet, so that it learns at once (a stream cannot read an error status: a frame,
/// an EventSource and old XHRs only see a failure, which they would take for a cut).
pub(crate) fn gone(framing: &Framing) -> Response<Body> {
    let (prelude, content_type) = prelude(framing);
    let close = [Packet::Close.encode()];
    let chunk = match framing {
        Framing::Html(..) => framing::html_frame(&close),
        Framing::Sse => framing::sse_frame(&close),
        _ => framing::xhr_streaming_frame(&close),
    };
    let body = [prelude, chunk].concat();
    stream_response(full(body), content_type, framing)
}

fn stream_response(body: Body, content_type: &'static str, framing: &Framing) -> Response<Body> {
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // nginx buffers proxied responses unless told otherwise; a stream must flow.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if matches!(framing, Framing::Html(_, Some(_))) {
        // Browsers that key agents by origin ignore document.domain unless told not to.
        headers.insert("origin-agent-cluster", HeaderValue::from_static("?0"));
    }
    res
}

struct Stream {
    stats: Arc<EngineStats>,
    transport: TransportKind,
    socket: Arc<Socket>,
    id: ReceiverId,
    framing: Framing,
    prelude: Option<Bytes>,
    sent: usize,
    limit: usize,
    next: Option<Next>,
    done: bool,
}

impl Stream {
    fn encode_chunk(&self, frames: &[Frame]) -> Bytes {
        match &self.framing {
            Framing::Html(..) => framing::html_frame(frames),
            Framing::Sse => framing::sse_frame(frames),
            _ => framing::xhr_streaming_frame(frames),
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.next = None;
        self.socket.wake_all();
        // Detach now, not when hyper drops the body: the client may reopen as soon as it sees
        // the end of this response.
        self.socket.lock().detach(self.id);
    }
}

impl HttpBody for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, Self::Error>>> {
        if let Some(prelude) = self.prelude.take() {
            return Poll::Ready(Some(Ok(HttpFrame::data(prelude))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let next = this.next.get_or_insert_with(|| {
            let socket = Arc::clone(&this.socket);
            let id = this.id;
            let budget = this.limit.saturating_sub(this.sent);
            Box::pin(async move { socket.wait_until(|s| s.stream_chunk(id, budget)).await })
        });
        let (frames, end) = match next.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(out) => out,
        };
        self.next = None;
        let chunk = self.encode_chunk(&frames);
        // Counted as the session counts it, so that the session's chunk that reaches the
        // limit is the one that says the stream ends.
        self.sent += payload_size(&frames);
        self.stats.sent(self.transport, frames.len(), chunk.len());
        if end {
            self.finish();
        }
        Poll::Ready(Some(Ok(HttpFrame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.prelude.is_none()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.done {
            self.socket.lock().detach(self.id);
        }
    }
}
