//! The HTTP side of the bridges: `POST /publish` for backends without RabbitMQ, and the health
//! endpoints.
//!
//! `POST /publish` takes JSON
//! `{"namespace": "/", "event": "news", "data": ..., "room": "r" | "rooms": [..], "socket": "id"}`
//! (`args: [...]` instead of `data` sends several arguments) and answers
//! `{"delivered": <sockets>}`. With a token configured it requires `Authorization: Bearer
//! <token>`; without one it only accepts clients on the loopback interface. Errors are 4xx with
//! `{"error": "..."}` saying what to fix.
//!
//! `POST /sockets` (same authorization) acts on the sockets a selection names, on every node of
//! a cluster: `{"namespace": "/", "room": "r" | "rooms": [..] | "socket": "id", "except": [..],
//! "action": "list" | "join" | "leave" | "disconnect", "target": "room"}`. `list` answers
//! `{"sockets": [{"id", "ns", "rooms", "node"}]}` (nodes that do not answer within the cluster's
//! request timeout are left out); the others answer `{"ok": true}`.

use std::net::SocketAddr;
use std::sync::Arc;

use halley_transports::full;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::amqp::BridgeStats;
use super::mapping::Emit;
use super::DeliverError;
use crate::engine::Body;
use crate::socketio::Halley;

/// Largest publish request body.
const MAX_BODY: usize = 1_000_000;

/// The publish API's settings.
#[derive(Debug, Clone, Default)]
pub struct PublishConfig {
    /// Required bearer token; `None` = loopback clients only.
    pub token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default = "root")]
    namespace: String,
    event: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    socket: Option<String>,
    /// The producer's publish time, ms since the epoch (for the latency histogram).
    #[serde(default, rename = "publishedAt")]
    published_at: Option<u64>,
}

fn root() -> String {
    "/".into()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(full(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn authorized(config: &PublishConfig, req: &Request<Incoming>, remote: SocketAddr) -> bool {
    match &config.token {
        Some(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => remote.ip().is_loopback(),
    }
}

/// Compares without an early exit, so response timing does not reveal the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketsRequest {
    #[serde(default = "root")]
    namespace: String,
    action: Action,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    except: Vec<String>,
    /// The room to join or leave.
    #[serde(default)]
    target: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    List,
    Join,
    Leave,
    Disconnect,
}

/// Reads an authorized JSON request body, or answers why not.
async fn json_request<T: serde::de::DeserializeOwned>(
    config: &PublishConfig,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Result<T, Response<Body>> {
    if req.method() != Method::POST {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
    }
    if !authorized(config, &req, remote) {
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        );
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(res);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {MAX_BODY} bytes"),
            ))
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}

/// Serves `POST /sockets`: list the selected sockets, or make them join, leave or disconnect,
/// across the cluster.
pub async fn sockets(
    io: Halley,
    config: Arc<PublishConfig>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let request: SocketsRequest = match json_request(&config, req, remote).await {
        Ok(request) => request,
        Err(res) => return res,
    };
    let Some(ns) = io.of(&request.namespace) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("namespace {:?} is not served", request.namespace),
        );
    };
    let mut op = ns.broadcast();
    for room in request
        .rooms
        .into_iter()
        .chain(request.room)
        .chain(request.socket)
    {
        op = op.to(room);
    }
    for room in request.except {
        op = op.except(room);
    }
    let target = match (request.action, request.target) {
        (Action::Join | Action::Leave, None) => {
            return error(StatusCode::BAD_REQUEST, "join and leave need a target room")
        }
        (_, target) => target.unwrap_or_default(),
    };
    match request.action {
        Action::List => {
            let sockets = op.fetch_sockets().await;
            return json_response(StatusCode::OK, &json!({ "sockets": sockets }));
        }
        Action::Join => op.join(&target),
        Action::Leave => op.leave(&target),
        Action::Disconnect => op.disconnect(),
    }
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// Serves `POST /publish`.
pub async fn handle(
    io: Halley,
    config: Arc<PublishConfig>,
    latency: Arc<super::Latency>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let request: PublishRequest = match json_request(&config, req, remote).await {
        Ok(request) => request,
        Err(res) => return res,
    };
    let args = match (request.args, request.data) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either data or args, not both",
            )
        }
        (Some(args), None) => args,
        (None, Some(data)) => vec![data],
        (None, None) => Vec::new(),
    };
    let published_at = request.published_at;
    let mut rooms = request.rooms;
    rooms.extend(request.room);
    rooms.extend(request.socket);
    let emit = Emit {
        namespace: request.namespace,
        event: request.event,
        rooms,
        args,
        binary: Vec::new(),
    };
    match super::deliver(&io, emit, super::Reach::Cluster).await {
        Ok(delivered) => {
            if let Some(at) = published_at {
                latency.record(super::Source::Http, at);
            }
            json_response(StatusCode::OK, &json!({ "delivered": delivered }))
        }
        Err(e @ DeliverError::UnknownNamespace(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ DeliverError::Cluster { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `/healthz`: the process is alive; says how many sessions it holds and how the broker link is.
pub fn healthz(
    io: &Halley,
    amqp: Option<&BridgeStats>,
    cluster: Option<&super::cluster::Cluster>,
) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "sessions": io.engine().session_count(),
            "amqp": amqp.map(BridgeStats::snapshot),
            "cluster": cluster.map(|c| json!({
                "node": c.name(),
                "connected": c.stats().connected.load(std::sync::atomic::Ordering::Acquire),
                "members": c.members(),
                "rejected": c
                    .stats()
                    .rejected()
                    .chain([(
                        "forward_mark",
                        io.engine()
                            .stats()
                            .forward_refused
                            .load(std::sync::atomic::Ordering::Relaxed),
                    )])
                    .map(|(reason, n)| (reason.to_owned(), Value::from(n)))
                    .collect::<serde_json::Map<String, Value>>(),
            })),
        }),
    )
}

/// `/readyz`: 503 while a configured broker is unreachable.
pub fn readyz(amqp: Option<&BridgeStats>) -> Response<Body> {
    match amqp {
        Some(stats) if !stats.connected() => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "amqp": stats.snapshot() }),
        ),
        _ => json_response(StatusCode::OK, &json!({ "status": "ready" })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
