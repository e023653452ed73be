//! The HTTP side of the bridges: `POST /publish` for backends without RabbitMQ, and the health
//! endpoints.
//!
//! `POST /publish` takes JSON
//! `{"namespace": "/", "event": "news", "data": ..., "room": "r" | "rooms": [..], "socket": "id"}`
//! (`args: [...]` instead of `data` sends several arguments, `"id": "<unique>"` makes a retry
//! safe) and answers `{"delivered": <sockets>}`, or `{"delivered": 0, "duplicate": true}` for
//! an id delivered lately. Errors are 4xx with `{"error": "..."}` saying what to fix. In a
//! cluster, 503 `{"error": "..."}` says the other nodes do not get it (no broker confirm, the
//! cluster rejoining after a broker loss, shutting down), and 504
//! `{"error": "...", "maybe_delivered": true}` that it was published but the confirm never
//! came: they may have it or not.
//!
//! These handlers do not authorize: they are served on the admin listener only, whose guard
//! (`crate::admin`) checks every request first.
//!
//! `POST /sockets` acts on the sockets a selection names, on every node of
//! a cluster: `{"namespace": "/", "room": "r" | "rooms": [..] | "socket": "id", "except": [..],
//! "action": "list" | "join" | "leave" | "disconnect", "target": "room"}`. `list` answers
//! `{"sockets": [{"id", "ns", "rooms", "node"}]}` (nodes that do not answer within the cluster's
//! request timeout are left out); the others answer `{"ok": true}`.

use std::sync::Arc;

use halley_transports::full;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::amqp::BridgeStats;
use super::log::LogLink;
use super::mapping::Emit;
use super::DeliverError;
use crate::engine::Body;
use crate::socketio::dedupe::MAX_ID_LEN;
use crate::socketio::Halley;

/// Largest publish request body.
const MAX_BODY: usize = 1_000_000;

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
    /// Unique per message: a publish retried with the same id is not delivered twice.
    #[serde(default)]
    id: Option<String>,
}

fn root() -> String {
    "/".into()
}

/// A JSON response that no cache keeps.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
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

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json_response(status, &json!({ "error": message.to_string() }))
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

/// Reads a JSON request body, or answers why not.
async fn json_request<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    if req.method() != Method::POST {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
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
pub async fn sockets(io: Halley, req: Request<Incoming>) -> Response<Body> {
    let request: SocketsRequest = match json_request(req).await {
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
    latency: Arc<super::Latency>,
    req: Request<Incoming>,
) -> Response<Body> {
    // Its sessions are closing: what it delivered now would reach nobody who stays. A backend
    // that sees 503 publishes to another node.
    if io.engine().is_shutting_down() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is shutting down: publish to another one",
        );
    }
    let request: PublishRequest = match json_request(req).await {
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
    if let Some(id) = &request.id {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return error(
                StatusCode::BAD_REQUEST,
                format!("id must be 1 to {MAX_ID_LEN} bytes"),
            );
        }
    }
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
        id: request.id,
    };
    match super::deliver(&io, emit, super::Reach::Cluster).await {
        Ok(super::Delivered::Sockets(delivered)) => {
            if let Some(at) = published_at {
                latency.record(super::Source::Http, at);
            }
            json_response(StatusCode::OK, &json!({ "delivered": delivered }))
        }
        Ok(super::Delivered::Duplicate) => json_response(
            StatusCode::OK,
            &json!({ "delivered": 0, "duplicate": true }),
        ),
        Err(e @ DeliverError::UnknownNamespace(_)) => error(StatusCode::NOT_FOUND, e),
        // Published, and the broker's confirm never came: other nodes may deliver it or not.
        // Retrying with the same id is safe.
        Err(
            e @ DeliverError::Cluster {
                maybe_delivered: true,
                ..
            },
        ) => json_response(
            StatusCode::GATEWAY_TIMEOUT,
            &json!({ "error": e.to_string(), "maybe_delivered": true }),
        ),
        // Refused: no other node delivers it (this node's sockets have it, without the log).
        Err(e @ DeliverError::Cluster { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `/healthz`: the process is alive; says how many sessions it holds and how the broker links
/// are.
pub fn healthz(
    io: &Halley,
    amqp: Option<&BridgeStats>,
    cluster: Option<&super::cluster::Cluster>,
    log: Option<&LogLink>,
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
                "restarts": c.stats().restarts.load(std::sync::atomic::Ordering::Relaxed),
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
            "log": log.map(LogLink::snapshot),
        }),
    )
}

/// [`readyz_with_log`] for a node without a shared recovery log.
pub fn readyz(
    io: &Halley,
    amqp: Option<&BridgeStats>,
    cluster: Option<&super::cluster::Cluster>,
    detail: bool,
) -> Response<Body> {
    readyz_with_log(io, amqp, cluster, None, detail)
}

/// `/readyz`: 503 once shutdown began, and while a configured broker link (the AMQP bridge,
/// the cluster link, the shared recovery log) is down, restarting after a panic included; with
/// `detail` (the admin listener's), the links' state and the reason too.
pub fn readyz_with_log(
    io: &Halley,
    amqp: Option<&BridgeStats>,
    cluster: Option<&super::cluster::Cluster>,
    log: Option<&LogLink>,
    detail: bool,
) -> Response<Body> {
    // Shutdown began: load balancers stop sending clients here.
    if io.engine().is_shutting_down() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "shutting down" }),
        );
    }
    let amqp_down = amqp.is_some_and(|stats| !stats.connected());
    let cluster_connected = |c: &super::cluster::Cluster| {
        c.stats()
            .connected
            .load(std::sync::atomic::Ordering::Acquire)
    };
    let cluster_down = cluster.is_some_and(|c| !cluster_connected(c));
    let log_connected = |l: &LogLink| {
        l.stats()
            .connected
            .load(std::sync::atomic::Ordering::Acquire)
    };
    // Every logged publish waits for the log's confirm, and sessions are restored from what
    // this node read of it: without the link it can do neither.
    let log_down = log.is_some_and(|l| !log_connected(l));
    if !amqp_down && !cluster_down && !log_down {
        return json_response(StatusCode::OK, &json!({ "status": "ready" }));
    }
    let mut body = json!({ "status": "unavailable" });
    if detail {
        let reasons: Vec<&str> = [
            (amqp_down, "the RabbitMQ bridge is not connected"),
            (cluster_down, "the cluster link is not connected"),
            (
                log_down,
                "the shared recovery log is not connected: publishes and session recovery wait for it",
            ),
        ]
        .into_iter()
        .filter_map(|(down, reason)| down.then_some(reason))
        .collect();
        body["reason"] = json!(reasons.join("; "));
        if let Some(stats) = amqp {
            body["amqp"] = json!(stats.snapshot());
        }
        if let Some(c) = cluster {
            body["cluster"] = json!({
                "connected": cluster_connected(c),
                "restarts": c.stats().restarts.load(std::sync::atomic::Ordering::Relaxed),
            });
        }
        if let Some(l) = log {
            body["log"] = json!({
                "stream": l.stream(),
                "connected": log_connected(l),
                "restarts": l.stats().restarts.load(std::sync::atomic::Ordering::Relaxed),
            });
        }
    }
    json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
}
