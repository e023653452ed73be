//! `POST /publish`, for backends without RabbitMQ.
//!
//! It takes JSON
//! `{"namespace": "/", "event": "news", "data": ..., "room": "r" | "rooms": [..], "socket": "id"}`
//! (`args: [...]` instead of `data` sends several arguments, `"id": "<unique>"` makes a retry
//! safe) and answers `{"delivered": <sockets>}`, or `{"delivered": 0, "duplicate": true}` for
//! an id delivered lately. Errors are 4xx with `{"error": "..."}` saying what to fix. In a
//! cluster, 503 `{"error": "..."}` says the other nodes do not get it (no broker confirm, the
//! cluster rejoining after a broker loss, shutting down), and 504
//! `{"error": "...", "maybe_delivered": true}` that it was published but the confirm never
//! came: they may have it or not.
//!
//! The handler does not authorize: it is served on the admin listener only, whose guard
//! (`crate::admin`) checks every request first.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{error, json_request, json_response, root};
use super::latency::{Latency, Source};
use super::mapping::Emit;
use super::{deliver, DeliverError, Delivered, Reach};
use crate::engine::http::HttpRequest;
use crate::engine::Body;
use crate::socketio::dedupe::MAX_ID_LEN;
use crate::socketio::Halley;

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

/// Serves `POST /publish`.
pub async fn handle(io: Halley, latency: Arc<Latency>, req: HttpRequest) -> Response<Body> {
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
    match deliver(&io, emit, Reach::Cluster).await {
        Ok(Delivered::Sockets(delivered)) => {
            if let Some(at) = published_at {
                latency.record(Source::Http, at);
            }
            json_response(StatusCode::OK, &json!({ "delivered": delivered }))
        }
        Ok(Delivered::Duplicate) => json_response(
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
