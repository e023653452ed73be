//! The cluster's shared recovery log as an operator sees it. The `halley` binary with
//! `--cluster --recovery-window` on a real RabbitMQ (`AMQP_URL`, default the local guest
//! account) shows `halley_log_*` on `/metrics` and a `log` object on the admin `/healthz`, and
//! counts a `POST /publish` as appended and applied; a log link that cannot reach its broker
//! keeps `/readyz` at 503 and says why on the admin listener only.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::binary::Halley;
use common::request;
use halley::bridge::envelope::Key;
use halley::bridge::health;
use halley::bridge::log::{LogConfig, LogLink};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};

const SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// Every `halley_log_*` family, as `/metrics` names its samples.
const LOG_METRICS: [&str; 10] = [
    "halley_log_connected",
    "halley_log_outbox",
    "halley_log_next_position",
    "halley_log_appended_total",
    "halley_log_applied_total",
    "halley_log_rejected_total",
    "halley_log_dropped_total",
    "halley_log_withdrawn_total",
    "halley_log_maybe_delivered_total",
    "halley_log_restarts_total",
];

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("halley-test-{prefix}-{}-{nanos}", std::process::id())
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let reply = request(addr, Method::GET, path, &[], "").await;
    (reply.status, reply.text().to_owned())
}

async fn get_json(addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    let (status, body) = get(addr, path).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The value of the sample `name` (no labels) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Polls the admin `/metrics` until `condition` holds on it, for up to `limit`: the counters
/// move on the broker's confirm and on reading the stream back, events this test cannot await.
async fn metrics_until(
    admin: SocketAddr,
    what: &str,
    limit: Duration,
    condition: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, text) = get(admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        if condition(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes what the node declared on the broker (best effort: a leftover is harmless).
async fn delete_from_broker(stream: &str, exchange: &str) {
    let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await else {
        return;
    };
    if let Ok(channel) = conn.create_channel().await {
        let _ = channel
            .queue_delete(stream.into(), QueueDeleteOptions::default())
            .await;
        let _ = channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn a_publish_is_counted_appended_and_applied_on_metrics_and_healthz() {
    let (stream, exchange) = (unique("log-stream"), unique("log-cluster"));
    let url = amqp_url();
    let halley = Halley::start(
        &[
            "--amqp-url",
            &url,
            "--cluster",
            "--cluster-exchange",
            &exchange,
            "--cluster-stream",
            &stream,
            "--recovery-window",
            "60000",
        ],
        &[("HALLEY_CLUSTER_SECRET", SECRET)],
    )
    .await;

    // `/readyz` wants every configured link up: the bridge and the cluster link connect on
    // their own schedule, apart from the log's.
    let before = metrics_until(
        halley.admin,
        "the bridge, the cluster link and the shared log connected",
        Duration::from_secs(30),
        |text| {
            [
                "halley_amqp_connected",
                "halley_cluster_connected",
                "halley_log_connected",
            ]
            .iter()
            .all(|gauge| sample(text, gauge) == Some(1))
        },
    )
    .await;
    for name in LOG_METRICS {
        let family = name.trim_end_matches("_total");
        assert!(
            before.contains(&format!("# HELP {family} ")),
            "{family} has a HELP line\n{before}"
        );
        assert!(sample(&before, name).is_some(), "{name}\n{before}");
    }
    let appended = sample(&before, "halley_log_appended_total").unwrap();
    let applied = sample(&before, "halley_log_applied_total").unwrap();
    assert_eq!(get(halley.admin, "/readyz").await.0, StatusCode::OK);

    let reply = request(
        halley.admin,
        Method::POST,
        "/publish",
        &[("content-type", "application/json")],
        json!({ "event": "news", "data": 1 }).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    let after = metrics_until(
        halley.admin,
        "the publish appended and read back",
        Duration::from_secs(10),
        |text| {
            sample(text, "halley_log_appended_total") > Some(appended)
                && sample(text, "halley_log_applied_total") > Some(applied)
        },
    )
    .await;
    assert!(
        sample(&after, "halley_log_next_position") > Some(0),
        "{after}"
    );
    for name in [
        "halley_log_rejected_total",
        "halley_log_dropped_total",
        "halley_log_withdrawn_total",
        "halley_log_maybe_delivered_total",
        "halley_log_restarts_total",
    ] {
        assert_eq!(sample(&after, name), Some(0), "{name}\n{after}");
    }

    let (status, health) = get_json(halley.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let log = &health["log"];
    assert_eq!(log["stream"], stream.as_str(), "{health}");
    assert_eq!(log["connected"], true, "{health}");
    assert!(log["appended"].as_u64() > Some(appended), "{health}");
    assert!(log["applied"].as_u64() > Some(applied), "{health}");
    assert!(log["next_position"].as_u64() > Some(0), "{health}");
    for counter in [
        "rejected",
        "dropped",
        "withdrawn",
        "maybe_delivered",
        "restarts",
        "outbox",
    ] {
        assert_eq!(log[counter], 0, "{counter}: {health}");
    }
    assert_eq!(
        get_json(halley.addr, "/healthz").await,
        (StatusCode::OK, json!({ "status": "ok" })),
        "the public listener shows none of it"
    );

    drop(halley);
    delete_from_broker(&stream, &exchange).await;
}

#[tokio::test]
async fn readyz_is_503_with_a_reason_while_the_shared_log_is_down() {
    let io = common::sio::builder().build();
    io.ns("/", |_| {});
    let log = LogLink::spawn(
        &io,
        LogConfig {
            // Port 1: nothing listens there, so the link never comes up.
            url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
            stream: unique("log-down"),
            node: "nodeD1".into(),
            key: Key::new(SECRET.as_bytes()).unwrap(),
            window: Duration::from_secs(60),
            max_bytes: 1 << 20,
        },
    );

    let res = health::readyz_with_log(&io, None, None, Some(&log), true);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["log"]["connected"], false, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("shared recovery log")),
        "{body}"
    );

    let res = health::readyz_with_log(&io, None, None, Some(&log), false);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body,
        json!({ "status": "unavailable" }),
        "the public listener says the status, nothing more"
    );

    let text = halley::metrics::Metrics::new(io.engine().clone(), None, Default::default())
        .with_log(log)
        .render();
    assert_eq!(sample(&text, "halley_log_connected"), Some(0), "{text}");
}
