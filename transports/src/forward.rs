//! Forwarding: a request for a session that another node of a cluster owns is passed to that
//! node, so a load balancer needs no sticky sessions.
//!
//! Session ids start with the owning node's name; a [`Locator`] (the cluster link) maps a sid
//! to the owner's address. The request goes there over a fresh HTTP/1.1 connection marked with
//! [`FORWARDED`], and the answer streams back as it comes: a long poll waits, a streaming
//! transport streams, and a WebSocket upgrade probe becomes a spliced TCP tunnel. A forwarded
//! request is never forwarded again: a node that does not know the sid answers as usual.
//!
//! The mark is an authenticator the locator makes and checks (an HMAC with the cluster's
//! secret over the method, the target and the client address, valid for a short while): a
//! request that carries the header with any other value, or reaches a node outside a cluster,
//! is refused with 403 and counted ([`crate::stats::EngineStats::forward_refused`]), since
//! whoever sets it is pretending to be a node. A valid mark names the address the forwarding
//! node got the request from, and the owner serves the request as coming from there.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::engine::{Body, EngineError};

/// Marks a request one node forwarded to another.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-halley-forwarded");

/// Where sessions of other nodes live, and how nodes vouch for the requests they forward.
pub trait Locator: Send + Sync + 'static {
    /// The address of the node that owns `sid`, if that is another node this one knows.
    fn owner(&self, sid: &str) -> Option<SocketAddr>;
    /// The [`FORWARDED`] value for a request (`method`, `target`: path and query, as sent) that
    /// this node forwards on behalf of `client`.
    fn sign_forward(&self, method: &Method, target: &str, client: IpAddr) -> Option<HeaderValue>;
    /// The client a [`FORWARDED`] value vouches for, if another node of the cluster made it
    /// lately for this very request.
    fn verify_forward(&self, method: &Method, target: &str, mark: &HeaderValue) -> Option<IpAddr>;
}

/// Whether this request was forwarded by another node (or claims to be).
pub(crate) fn is_forwarded<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(FORWARDED)
}

fn target<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
}

/// The address to serve `req` as coming from: `remote`, or for a forwarded request the client
/// its mark vouches for. A mark that `locator` does not vouch for, or any mark without a
/// cluster, is refused.
pub(crate) fn inbound<B>(
    locator: Option<&Arc<dyn Locator>>,
    req: &Request<B>,
    remote: SocketAddr,
) -> Result<SocketAddr, EngineError> {
    let Some(mark) = req.headers().get(FORWARDED) else {
        return Ok(remote);
    };
    locator
        .and_then(|locator| locator.verify_forward(req.method(), target(req), mark))
        .map(|client| SocketAddr::new(client, remote.port()))
        .ok_or(EngineError::Forbidden)
}

/// Passes `req` to the node at `owner`, vouched for by `locator`, and returns its answer.
pub(crate) async fn forward(
    mut req: Request<Incoming>,
    owner: SocketAddr,
    remote: SocketAddr,
    locator: &dyn Locator,
) -> Result<Response<Body>, EngineError> {
    let mark = locator
        .sign_forward(req.method(), target(&req), remote.ip())
        .ok_or(EngineError::Unavailable)?;
    let stream = tokio::net::TcpStream::connect(owner)
        .await
        .map_err(|error| {
            tracing::warn!(%owner, %error, "cannot reach the node that owns a session");
            EngineError::Unavailable
        })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| EngineError::Unavailable)?;
    tokio::spawn(async move {
        // Ends when the exchange (or the tunnel it was upgraded to) ends.
        let _ = conn.with_upgrades().await;
    });

    let upgrade = crate::websocket::is_upgrade_request(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let headers = req.headers_mut();
    headers.insert(FORWARDED, mark);
    if let Ok(value) = HeaderValue::from_str(&remote.ip().to_string()) {
        headers.append(HeaderName::from_static("x-forwarded-for"), value);
    }
    let mut res = sender.send_request(req).await.map_err(|error| {
        tracing::warn!(%owner, %error, "forwarding a request failed");
        EngineError::Unavailable
    })?;
    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, res.status())
    {
        let owner_upgrade = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            let (Ok(client), Ok(owner)) = tokio::join!(client_upgrade, owner_upgrade) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(owner))
                    .await;
        });
    }
    Ok(res.map(|body| Relayed(body).boxed_unsync()))
}

/// The owner's response body, passed on frame by frame; if the owner's connection fails, the
/// response just ends (the client sees a cut poll or stream and comes back).
struct Relayed(Incoming);

impl HttpBody for Relayed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!(%error, "forwarded response cut");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
