//! Forwarding: a request for a session that another node of a cluster owns is passed to that
//! node, so a load balancer needs no sticky sessions.
//!
//! Session ids start with the owning node's name; a [`Locator`] (the cluster link) maps a sid
//! to the owner's address. The request goes there marked with [`FORWARDED`], and the answer
//! streams back as it comes: a long poll waits, a streaming transport streams, and a WebSocket
//! upgrade probe becomes a spliced TCP tunnel. A forwarded request is never forwarded again: a
//! node that does not know the sid answers as usual.
//!
//! The mark is an authenticator the locator makes and checks (an HMAC with the cluster's
//! secret over the method, the target and the client address, valid for a short while): a
//! request that carries the header with any other value, or reaches a node outside a cluster,
//! is refused with 403 and counted ([`crate::stats::EngineStats::forward_refused`]), since
//! whoever sets it is pretending to be a node. A valid mark names the address the forwarding
//! node got the request from, and the owner serves the request as coming from there.
//!
//! # Connections
//!
//! Forwarded requests travel on a pool (`Pool`) of HTTP/1.1 keep-alive connections per owner
//! (hyper-util's pooling client), not a connection each: a polling client's every GET and POST
//! would otherwise cost a TCP handshake between the nodes and leave a socket in TIME_WAIT.
//! A connection carries one exchange at a time, so a long poll parked on the owner holds its
//! connection, and a node keeps about as many connections to an owner as it has polls and
//! streams forwarded there. Once its answer has ended, a connection waits in the pool for the
//! next request to that owner: at most [`MAX_IDLE_PER_OWNER`] of them, each for at most
//! [`IDLE_TIMEOUT`]. A connection upgraded to a WebSocket tunnel never goes back. A request that
//! finds its pooled connection closed before it went out (the owner closed it while it was
//! idle) is sent again on another; one already sent is not (its body is gone). The connections
//! opened are counted ([`crate::stats::EngineStats::forward_connections`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::http::{is_upgrade_request, Body, EngineError, HttpRequest, RequestBody};
use crate::stats::EngineStats;

/// Marks a request one node forwarded to another.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-halley-forwarded");

/// Idle connections kept per owner. A broadcast answers every parked poll at once, and their
/// clients' next GETs come a round trip later: the pool must hold them all meanwhile, or each
/// broadcast opens a new connection for every poll beyond the bound (with 32: 7,000
/// connections in 5 s for 200 clients and 10 messages/s, BENCHMARKS.md). The pool never holds
/// more than were busy a moment before; the bound only caps what a burst leaves behind, for
/// [`IDLE_TIMEOUT`].
pub const MAX_IDLE_PER_OWNER: usize = 1024;

/// How long an idle connection stays in the pool. Below the owner's `--header-read-timeout`
/// (10 s by default), after which the owner closes a connection that sent nothing: the pool
/// lets go first, so a request is not written to a connection the owner is closing just then.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The keep-alive connections to the other nodes, shared by every forwarded request of an
/// engine (see "Connections" above).
pub(crate) struct Pool {
    client: Client<Counted, RequestBody>,
}

impl Pool {
    /// An empty pool; connections are opened on demand, and counted in `stats`.
    pub(crate) fn new(stats: Arc<EngineStats>) -> Self {
        let mut http = HttpConnector::new();
        // Small frames are the norm: Nagle's delay would hold back every forwarded push.
        http.set_nodelay(true);
        // `retry_canceled_requests` (on by default) resends a request that a pooled connection
        // closed before writing it.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_OWNER)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(Counted { http, stats });
        Pool { client }
    }

    /// Passes `req` to the node at `owner`, vouched for by `locator`, and returns its answer.
    pub(crate) async fn forward(
        &self,
        mut req: HttpRequest,
        owner: SocketAddr,
        remote: SocketAddr,
        locator: &dyn Locator,
    ) -> Result<Response<Body>, EngineError> {
        let mark = locator
            .sign_forward(req.method(), target(&req), remote.ip())
            .ok_or(EngineError::Unavailable)?;
        let upgrade = is_upgrade_request(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        // The client keys its pool by the URI's authority and sends the path and query alone,
        // as received; the Host header stays the browser's.
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(owner.to_string())
            .path_and_query(path)
            .build()
            .map_err(|_| EngineError::BadRequest)?;
        let headers = req.headers_mut();
        headers.insert(FORWARDED, mark);
        if let Ok(value) = HeaderValue::from_str(&remote.ip().to_string()) {
            headers.append(HeaderName::from_static("x-forwarded-for"), value);
        }
        let mut res = self.client.request(req).await.map_err(|error| {
            let causes = Causes(&error);
            if error.is_connect() {
                tracing::warn!(%owner, error = %causes, "cannot reach the node that owns a session");
            } else {
                tracing::warn!(%owner, error = %causes, "forwarding a request failed");
            }
            EngineError::Unavailable
        })?;
        if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (client_upgrade, res.status())
        {
            // The owner's connection is the tunnel's from now on: the pool has let go of it.
            let owner_upgrade = hyper::upgrade::on(&mut res);
            tokio::spawn(async move {
                let (Ok(client), Ok(owner)) = tokio::join!(client_upgrade, owner_upgrade) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(owner),
                )
                .await;
            });
        }
        Ok(res.map(|body| Relayed(body).boxed_unsync()))
    }
}

/// hyper-util's TCP connector, counting the connections it opens.
#[derive(Clone)]
struct Counted {
    http: HttpConnector,
    stats: Arc<EngineStats>,
}

type Connecting<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl tower_service::Service<Uri> for Counted {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Connecting<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, owner: Uri) -> Self::Future {
        let connecting = self.http.call(owner);
        let stats = Arc::clone(&self.stats);
        Box::pin(async move {
            let io = connecting.await?;
            stats.forward_connections.fetch_add(1, Ordering::Relaxed);
            Ok(io)
        })
    }
}

/// An error and its causes on one line: hyper-util's own message names only the stage
/// (`client error (Connect)`).
struct Causes<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
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
