//! The listener: accepts TCP connections, serves HTTP/1.1 with upgrades through hyper, routes
//! each request, and shuts down gracefully.
//!
//! Routing is deliberately small: the Engine.IO path goes to the engine, a few fixed pages are
//! served from memory, everything else is 404. Shutdown stops accepting, closes every session
//! (so clients reconnect elsewhere), lets in-flight requests finish, and gives up at a deadline.
//!
//! Two timeouts guard each connection against clients that hold it without using it: one for
//! a request's headers (slowloris, and idle keep-alive connections), and one for writes that
//! make no progress (a client that stopped reading a stream; TCP alone would keep such a
//! connection, and its buffers, for as long as the peer acknowledges window probes).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::engine::h1;
use crate::engine::http::{HttpRequest, RequestBody};
use crate::engine::{full, Body, Engine};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::client_js;
use crate::socketio::Halley;

impl Halley {
    /// A router serving this server's path and the browser client (at `<path>socket.io.js`
    /// and `/halley.js`), to hand to [`serve`]. (Defined here, in the server layer, so that
    /// `socketio` knows nothing of routing.)
    pub fn router(&self) -> Router {
        let script = Bytes::from_static(client_js::SCRIPT.as_bytes());
        let engine = self.engine();
        let path = format!("{}socket.io.js", engine.config().path);
        Router::new(engine.clone())
            .page(&path, client_js::CONTENT_TYPE, script.clone())
            .page("/halley.js", client_js::CONTENT_TYPE, script)
    }
}

/// Server-level settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a client may take to send a request's headers (slowloris guard); also how long
    /// an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// How long a write may wait for the client to read before the connection is closed (a
    /// client that stopped reading a streaming response, or a WebSocket).
    pub write_timeout: Duration,
    /// How long shutdown waits for sessions and requests to finish.
    pub shutdown_grace: Duration,
    /// The largest request head (request line and headers) read, in bytes; a larger one gets
    /// 431. Every session keeps its handshake's headers, so this bounds what one session can
    /// make the server keep through them. At least 8192 (hyper's floor).
    pub max_header_bytes: usize,
    /// Serve requests with Halley's own HTTP/1.1 layer ([`crate::engine::h1`]), which holds no
    /// buffer while a long poll or stream waits, and hand WebSocket handshakes, chunked uploads
    /// and large bodies to hyper; false: hyper serves every request.
    pub own_http1: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            own_http1: true,
        }
    }
}

/// A page served from memory, with a strong ETag so browsers revalidate instead of refetching.
#[derive(Clone)]
struct Page {
    content_type: HeaderValue,
    etag: HeaderValue,
    body: Bytes,
}

fn etag_of(body: &[u8]) -> HeaderValue {
    // FNV-1a: stable across runs and builds (std's hasher is randomly seeded per process).
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    HeaderValue::from_str(&format!("\"{hash:016x}-{}\"", body.len()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

type BoxFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
/// Closing the sessions at shutdown: whether all were done by the deadline.
type BoxDrain = Pin<Box<dyn Future<Output = bool> + Send>>;
type Endpoint = Arc<dyn Fn(HttpRequest, SocketAddr) -> BoxFuture + Send + Sync>;
type Guard = Arc<dyn Fn(&HttpRequest) -> Option<Response<Body>> + Send + Sync>;

/// What the server answers: fixed pages and endpoints by exact path, the engine under its path,
/// 404 otherwise.
#[derive(Clone)]
pub struct Router {
    engine: Option<Engine>,
    pages: HashMap<String, Page>,
    endpoints: HashMap<String, Endpoint>,
    guard: Option<Guard>,
}

impl Router {
    pub fn new(engine: Engine) -> Self {
        Router {
            engine: Some(engine),
            ..Router::without_engine()
        }
    }

    /// A router of endpoints only, with no Engine.IO path (the admin listener).
    pub fn without_engine() -> Self {
        Router {
            engine: None,
            pages: HashMap::new(),
            endpoints: HashMap::new(),
            guard: None,
        }
    }

    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// Asks `guard` before answering any endpoint: a response from it is the answer (a refusal),
    /// `None` lets the request through. Pages and the engine are not guarded.
    pub fn guard<F>(mut self, guard: F) -> Self
    where
        F: Fn(&HttpRequest) -> Option<Response<Body>> + Send + Sync + 'static,
    {
        self.guard = Some(Arc::new(guard));
        self
    }

    /// Serves `body` at `path` (GET and HEAD). Pages take precedence over the engine's path, so
    /// `/socket.io/socket.io.js` can be served beside the endpoint.
    pub fn page(mut self, path: &str, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.pages.insert(
            path.to_owned(),
            Page {
                content_type: HeaderValue::from_static(content_type),
                etag: etag_of(&body),
                body,
            },
        );
        self
    }

    /// Answers every request to `path` with `handler(request, remote address)` (publish API,
    /// health checks, ...).
    pub fn endpoint<F, Fut>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(HttpRequest, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Endpoint = Arc::new(move |req, remote| Box::pin(handler(req, remote)));
        self.endpoints.insert(path.to_owned(), handler);
        self
    }

    /// The answer to `req`, on its way. Not an `async fn`: each path's future is made here and
    /// owns the request, so a parked request's future holds it once, not once per layer.
    fn route(&self, req: HttpRequest, remote: SocketAddr) -> BoxFuture {
        let answered = |res| -> BoxFuture { Box::pin(std::future::ready(res)) };
        if let Some(page) = self.pages.get(req.uri().path()) {
            return answered(serve_page(&req, page));
        }
        if let Some(endpoint) = self.endpoints.get(req.uri().path()) {
            if let Some(refusal) = self.guard.as_ref().and_then(|guard| guard(&req)) {
                return answered(refusal);
            }
            return endpoint(req, remote);
        }
        if let Some(engine) = self.engine.as_ref().filter(|e| e.matches(req.uri().path())) {
            return engine.handle(req, remote);
        }
        answered(status(StatusCode::NOT_FOUND))
    }
}

fn serve_page(req: &HttpRequest, page: &Page) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|v| v == page.etag || v == "*");
    let mut res = if fresh {
        let mut res = Response::new(full(Bytes::new()));
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res
    } else {
        let mut res = Response::new(full(page.body.clone()));
        res.headers_mut()
            .insert(header::CONTENT_TYPE, page.content_type.clone());
        res
    };
    let headers = res.headers_mut();
    headers.insert(header::ETAG, page.etag.clone());
    // Revalidate on every load: a deploy must reach browsers at once, and a 304 is cheap.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn status(code: StatusCode) -> Response<Body> {
    let reason = code.canonical_reason().unwrap_or("");
    let mut res = Response::new(full(format!("{reason}\n")));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    res
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down gracefully.
///
/// The accept loop runs as a task on the runtime's workers, not on the thread awaiting this
/// (`block_on`'s): each connection's state is allocated by the thread that accepts it and freed
/// by the worker that ends it, and the allocator gets memory freed from another thread back
/// only when the owner allocates again. An accept loop on an idle main thread kept a crowd's
/// worth of it after the crowd left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut accepting = AbortOnDrop(tokio::spawn(serve_until(
        listener,
        router,
        config,
        async move {
            let _ = stopped.await;
        },
    )));
    let ended = tokio::select! {
        () = shutdown => {
            let _ = stop.send(());
            (&mut accepting.0).await
        }
        ended = &mut accepting.0 => ended,
    };
    if let Err(error) = ended {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// Aborts the task when dropped: dropping [`serve`]'s future stops accepting, as it would if
/// the loop ran inside it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_until(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let router = Arc::new(router);
    let connections = TaskTracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    // Once shutdown begins, sessions close while this loop goes on accepting until they are
    // done (or the grace period is): a polling client between two polls may come back on a new
    // connection for what was queued for it, and its close. New sessions are refused (503).
    let mut draining: Option<(Instant, BoxDrain)> = None;
    let sessions_done = loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown, if draining.is_none() => {
                tracing::info!("shutting down");
                let deadline = Instant::now() + config.shutdown_grace;
                let router = Arc::clone(&router);
                let drain: BoxDrain = Box::pin(async move {
                    match router.engine() {
                        Some(engine) => engine.shutdown(deadline).await,
                        None => true,
                    }
                });
                draining = Some((deadline, drain));
                continue;
            }
            done = async {
                match draining.as_mut() {
                    Some((_, drain)) => drain.await,
                    None => std::future::pending().await,
                }
            }, if draining.is_some() => break done,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: back off a
                    // moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small frames are the norm; Nagle's delay would add latency to every push.
        let _ = stream.set_nodelay(true);
        let router = Arc::clone(&router);
        let mut stop = stop_rx.clone();
        let header_timeout = config.header_read_timeout;
        // hyper asserts its floor: a smaller value would panic the connection task.
        let max_header_bytes = config.max_header_bytes.max(8192);
        let stream = WriteDeadline::new(stream, config.write_timeout);
        let limits = h1::Limits {
            max_head: config.max_header_bytes,
            max_body: OWN_BODY_LIMIT,
            read_timeout: header_timeout,
        };
        let own_http1 = config.own_http1;
        connections.spawn(async move {
            let stats_router = Arc::clone(&router);
            let count_error = |error: &(dyn std::error::Error + 'static)| {
                if let Some(engine) = stats_router.engine().filter(|_| write_stalled(error)) {
                    engine
                        .stats()
                        .write_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%remote, %error, "connection ended with an error");
            };
            let stream = if own_http1 {
                let own = h1::serve(stream, &limits, &mut stop, |req| router.route(req, remote));
                match own.await {
                    Ok(h1::Served::Closed) => return,
                    Ok(h1::Served::Refused(error)) => {
                        if let Some(engine) = stats_router.engine() {
                            engine.stats().http_refused(error.as_str());
                        }
                        tracing::debug!(%remote, %error, "request head refused");
                        return;
                    }
                    Ok(h1::Served::Handoff(stream)) => stream,
                    Err(error) => return count_error(&error),
                }
            } else {
                h1::Rewind::new(stream, Vec::new())
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let routed = router.route(req.map(RequestBody::from), remote);
                async move { Ok::<_, Infallible>(routed.await) }
            });
            // Boxed: held inline, hyper's connection state would size every connection's task
            // (1,520 bytes measured, 784 boxed), also those the own HTTP/1 layer parks.
            let mut conn = Box::pin(
                http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(max_header_bytes)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades(),
            );
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                count_error(&error);
            }
        });
    };
    drop(listener);
    let deadline = draining.map_or_else(Instant::now, |(deadline, _)| deadline);
    let _ = stop_tx.send(true);
    connections.close();
    let connections_done = tokio::time::timeout_at(deadline.into(), connections.wait())
        .await
        .is_ok();
    if !(sessions_done && connections_done) {
        tracing::warn!("shutdown deadline reached with work still running");
    }
}

/// The largest request body the own HTTP/1 layer reads before handing a request to the
/// service: the engine's default payload limit (`maxHttpBufferSize`). A larger upload goes to
/// hyper, which streams it to the endpoint's own limit.
const OWN_BODY_LIMIT: usize = 1_000_000;

/// A connection whose writes fail with [`WriteStalled`] once one of them has waited `timeout`
/// for the peer to read. Reads are untouched (the header timeout and the heartbeat watch them),
/// and the timer exists only once a write has had to wait.
struct WriteDeadline<T> {
    io: T,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

/// The error of a write that waited too long for the client to read.
#[derive(Debug, thiserror::Error)]
#[error("write stalled: the client stopped reading")]
struct WriteStalled;

/// Whether a connection ended because a write stalled.
fn write_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
            .is_some_and(|inner| inner.is::<WriteStalled>())
        {
            return true;
        }
        source = error.source();
    }
    false
}

impl<T> WriteDeadline<T> {
    fn new(io: T, timeout: Duration) -> Self {
        WriteDeadline {
            io,
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// Passes on a write's outcome; a pending one starts (or keeps) the clock.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if poll.is_ready() {
            self.waiting = false;
            return poll;
        }
        if !self.waiting {
            self.waiting = true;
            let deadline = tokio::time::Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                WriteStalled,
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Binds `addr` with a listen backlog of 1024: std's default of 128 overflows when thousands of
/// clients reconnect at once (after a deploy, say), and each overflow costs a client a 1 s
/// SYN retry.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `router` the way the examples and test servers do: binds `host:$PORT` (`PORT` from the
/// environment, else `default_port`; `PORT=0` picks a free port), prints
/// `listening on http://<address>` as the first line on stdout (tests read the port from it), and
/// serves until SIGINT/SIGTERM. `HALLEY_HTTP1=hyper` turns the own HTTP/1 layer off.
pub async fn serve_from_env(router: Router, host: &str, default_port: u16) -> std::io::Result<()> {
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse::<u16>().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PORT={port} is not a port"),
            )
        })?,
        Err(_) => default_port,
    };
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host} is not an IP address"),
        )
    })?;
    let listener = bind((ip, port).into())?;
    println!("listening on http://{}", listener.local_addr()?);
    // HALLEY_HTTP1=hyper: hyper serves every request (A/B runs of the own HTTP/1 layer).
    let config = ServerConfig {
        own_http1: std::env::var("HALLEY_HTTP1").map_or(true, |v| v != "hyper"),
        ..ServerConfig::default()
    };
    serve(listener, router, config, shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
