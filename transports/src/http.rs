//! The HTTP side every transport shares: the response body type, the Engine.IO errors and
//! the one conversion from an error to a response ([`EngineError::into_response`]), the headers
//! every response gets (no caching, no sniffing, CORS), and telling a WebSocket handshake
//! apart. Nothing here knows of sessions.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::origin::{self, Cors};

/// The body of every response the engine produces.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The body of a request, whichever HTTP/1 layer read it: hyper, for the requests it serves
/// (WebSocket handshakes, chunked uploads), or the server's own layer for parked requests,
/// which reads a request's body in full before it is handled (`Content-Length` only).
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed by hyper.
    Hyper(Incoming),
    /// Read in full; `None` once taken (or when there was none).
    Full(Option<Bytes>),
    /// Streamed by the server's own layer as it arrives: `left` bytes of `Content-Length`
    /// still to come. The channel closing early means the client went away.
    Streamed {
        chunks: tokio::sync::mpsc::Receiver<Bytes>,
        left: u64,
    },
}

/// A request body that ended before its `Content-Length`.
#[derive(Debug, thiserror::Error)]
#[error("request body cut short")]
pub struct BodyCut;

/// A request as every handler of the server takes it.
pub type HttpRequest = Request<RequestBody>;

impl RequestBody {
    /// A complete body; an empty one is no body at all.
    pub fn full(data: Bytes) -> Self {
        RequestBody::Full((!data.is_empty()).then_some(data))
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Hyper(body)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Streamed { left: 0, .. } => Poll::Ready(None),
            RequestBody::Streamed { chunks, left } => match chunks.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(chunk)) => {
                    *left = left.saturating_sub(chunk.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(None) => Poll::Ready(Some(Err(BodyCut.into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Full(data) => data.is_none(),
            RequestBody::Streamed { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Streamed { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

/// A complete (non-streaming) response body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

/// An Engine.IO protocol error answered to an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("Transport unknown")]
    UnknownTransport,
    #[error("Session ID unknown")]
    UnknownSid,
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    #[error("Bad request")]
    BadRequest,
    #[error("Forbidden")]
    Forbidden,
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    #[error("Payload too large")]
    PayloadTooLarge,
    #[error("Request body timeout")]
    BodyTimeout,
    #[error("Service unavailable")]
    Unavailable,
}

impl EngineError {
    /// The Engine.IO error code (engine.io `Server.errors`).
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest
            | EngineError::PayloadTooLarge
            | EngineError::BodyTimeout
            | EngineError::Unavailable => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            EngineError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            EngineError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct ErrorBody {
            code: u8,
            message: String,
        }
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code(),
            message: self.to_string(),
        })
        .unwrap_or_default();
        let mut res = Response::new(full(body));
        *res.status_mut() = self.status();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

/// The headers every response gets (but a 101).
pub(crate) fn common_headers(headers: &mut HeaderMap, msie: bool) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if msie {
        // IE8+'s XSS filter mangles responses that echo request data ("Internet Explorer has
        // modified this page"); engine.io and socket.io send this for MSIE and Trident.
        headers.insert(header::X_XSS_PROTECTION, HeaderValue::from_static("0"));
    }
}

pub(crate) fn is_msie(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|ua| ua.to_str().ok())
        .is_some_and(|ua| ua.contains(";MSIE") || ua.contains("MSIE ") || ua.contains("Trident/"))
}

/// The answer to a CORS preflight (`OPTIONS`).
pub(crate) fn preflight(request: &HeaderMap) -> Response<Body> {
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let headers = res.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if let Some(requested) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}

/// The CORS headers of a response to a request from `origin` (kept only where an allowlist
/// echoes it back).
pub(crate) fn cors_headers(headers: &mut HeaderMap, cors: &Cors, origin: Option<&HeaderValue>) {
    match (cors, origin) {
        (Cors::AnyOrigin, _) => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        (Cors::Origins(_), Some(origin)) => {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            if origin::listed(cors, origin.as_bytes()) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        _ => {}
    }
}

/// Whether `req` asks for a WebSocket (RFC 6455 opening handshake).
pub(crate) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_and_messages_match_the_reference() {
        let cases = [
            (EngineError::UnknownTransport, 0, "Transport unknown", 400),
            (EngineError::UnknownSid, 1, "Session ID unknown", 400),
            (
                EngineError::BadHandshakeMethod,
                2,
                "Bad handshake method",
                400,
            ),
            (EngineError::BadRequest, 3, "Bad request", 400),
            (EngineError::Forbidden, 4, "Forbidden", 403),
            (
                EngineError::UnsupportedProtocolVersion,
                5,
                "Unsupported protocol version",
                400,
            ),
            (EngineError::PayloadTooLarge, 3, "Payload too large", 413),
            (EngineError::BodyTimeout, 3, "Request body timeout", 408),
            (EngineError::Unavailable, 3, "Service unavailable", 503),
        ];
        for (error, code, message, status) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), message);
            assert_eq!(error.status().as_u16(), status);
        }
    }
}
