//! `/healthz` and `/readyz`: whether the process is alive, and whether it is ready for clients
//! (shutdown not begun, every configured broker link up). The admin listener gets the detailed
//! answers; the public listener gets `/readyz` without detail (and a `/healthz` of its own,
//! `crate::admin::public_healthz`).

use std::sync::atomic::Ordering;

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::amqp::BridgeStats;
use super::cluster::Cluster;
use super::http::json_response;
use super::log::LogLink;
use crate::engine::Body;
use crate::socketio::Halley;

/// `/healthz`: the process is alive; says how many sessions it holds and how the broker links
/// are.
pub fn healthz(
    io: &Halley,
    amqp: Option<&BridgeStats>,
    cluster: Option<&Cluster>,
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
                "connected": c.stats().connected.load(Ordering::Acquire),
                "restarts": c.stats().restarts.load(Ordering::Relaxed),
                "members": c.members(),
                "rejected": c
                    .stats()
                    .rejected()
                    .chain([(
                        "forward_mark",
                        io.engine()
                            .stats()
                            .forward_refused
                            .load(Ordering::Relaxed),
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
    cluster: Option<&Cluster>,
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
    cluster: Option<&Cluster>,
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
    let cluster_connected = |c: &Cluster| c.stats().connected.load(Ordering::Acquire);
    let cluster_down = cluster.is_some_and(|c| !cluster_connected(c));
    let log_connected = |l: &LogLink| l.stats().connected.load(Ordering::Acquire);
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
                "restarts": c.stats().restarts.load(Ordering::Relaxed),
            });
        }
        if let Some(l) = log {
            body["log"] = json!({
                "stream": l.stream(),
                "connected": log_connected(l),
                "restarts": l.stats().restarts.load(Ordering::Relaxed),
            });
        }
    }
    json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
}
