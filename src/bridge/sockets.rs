//! `POST /sockets`: acts on the sockets a selection names, on every node of a cluster.
//!
//! It takes `{"namespace": "/", "room": "r" | "rooms": [..] | "socket": "id", "except": [..],
//! "action": "list" | "join" | "leave" | "disconnect", "target": "room"}`. `list` answers
//! `{"sockets": [{"id", "ns", "rooms", "node"}]}` (nodes that do not answer within the cluster's
//! request timeout are left out); the others answer `{"ok": true}`.
//!
//! The handler does not authorize: it is served on the admin listener only, whose guard
//! (`crate::admin`) checks every request first.

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::http::{error, json_request, json_response, root};
use crate::engine::http::HttpRequest;
use crate::engine::Body;
use crate::socketio::adapter::Selection;
use crate::socketio::{BroadcastOperator, Halley};

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

/// Serves `POST /sockets`: list the selected sockets, or make them join, leave or disconnect,
/// across the cluster.
pub async fn sockets(io: Halley, req: HttpRequest) -> Response<Body> {
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
    let mut rooms = request.rooms;
    rooms.extend(request.room);
    rooms.extend(request.socket);
    let to = Selection {
        ns: request.namespace,
        rooms,
        except: request.except,
        exclude: None,
    };
    let op = BroadcastOperator::selecting(ns, to);
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
