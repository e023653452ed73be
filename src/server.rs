//! The listener: accepts TCP connections, serves HTTP/1.1 with upgrades through hyper, routes
//! each request, and shuts down gracefully.
//!
//! Routing is deliberately small: the Engine.IO path goes to the engine, a few fixed pages are
//! served from memory, everything else is 404. Shutdown stops accepting, closes every session
//! (so clients reconnect elsewhere), lets in-flight requests finish, and gives up at a deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use halley_transports::{Body, Engine};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Server-level settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a client may take to send a request's headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long shutdown waits for sessions and requests to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A page served from memory.
#[derive(Clone)]
struct Page {
    content_type: HeaderValue,
    body: Bytes,
}

/// What the server answers: the engine under its path, fixed pages, 404 otherwise.
#[derive(Clone)]
pub struct Router {
    engine: Engine,
    pages: HashMap<String, Page>,
}

impl Router {
    pub fn new(engine: Engine) -> Self {
        Router {
            engine,
            pages: HashMap::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves `body` at `path` (GET and HEAD).
    pub fn page(mut self, path: &str, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.pages.insert(
            path.to_owned(),
            Page {
                content_type: HeaderValue::from_static(content_type),
                body: body.into(),
            },
        );
        self
    }

    async fn route(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        if self.engine.matches(req.uri().path()) {
            return self.engine.handle(req, remote).await;
        }
        match (req.method(), self.pages.get(req.uri().path())) {
            (&Method::GET | &Method::HEAD, Some(page)) => {
                let mut res = Response::new(Full::new(page.body.clone()).boxed_unsync());
                res.headers_mut()
                    .insert(header::CONTENT_TYPE, page.content_type.clone());
                res
            }
            (_, Some(_)) => status(StatusCode::METHOD_NOT_ALLOWED),
            (_, None) => status(StatusCode::NOT_FOUND),
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let reason = code.canonical_reason().unwrap_or("");
    let mut res = Response::new(Full::new(Bytes::from(format!("{reason}\n"))).boxed_unsync());
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    res
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let router = Arc::new(router);
    let connections = TaskTracker::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
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
            () = &mut shutdown => break,
        };
        // Small frames are the norm; Nagle's delay would add latency to every push.
        let _ = stream.set_nodelay(true);
        let router = Arc::clone(&router);
        let mut stop = stop_rx.clone();
        let header_timeout = config.header_read_timeout;
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let router = Arc::clone(&router);
                async move { Ok::<_, Infallible>(router.route(req, remote).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down");
    let deadline = Instant::now() + config.shutdown_grace;
    let sessions_done = router.engine().shutdown(deadline).await;
    let _ = stop_tx.send(true);
    connections.close();
    let connections_done = tokio::time::timeout_at(deadline.into(), connections.wait())
        .await
        .is_ok();
    if !(sessions_done && connections_done) {
        tracing::warn!("shutdown deadline reached with work still running");
    }
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
