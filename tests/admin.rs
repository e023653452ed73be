//! The admin listener of the `halley` binary, probed as an attacker would: the public listener
//! (where a reverse proxy on the same host sends every request from 127.0.0.1) serves nothing
//! administrative and reveals nothing in its health answers; the admin listener refuses what a
//! web page could forge (DNS rebinding, foreign origins, form posts) and, with a token, anyone
//! without it. Every refusal is counted in `/metrics`.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::binary::Halley;
use common::sio::WsClient;
use common::Reply;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

/// A request to `addr` with `headers`; `Host` is the address unless `headers` name one.
async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        req = req.header("host", addr.to_string());
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    common::send(addr, req.body(Full::new(body.into())).unwrap()).await
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn publish_body() -> String {
    json!({ "event": "news", "data": { "from": "admin" } }).to_string()
}

/// A genuine `POST /publish` on the admin listener; its answer.
async fn publish(halley: &Halley) -> Value {
    let reply = request(
        halley.admin,
        Method::POST,
        "/publish",
        &[JSON],
        publish_body(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    json_of(&reply.body)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn nothing_administrative_is_served_on_the_public_listener() {
    let halley = Halley::start(&[], &[]).await;
    // What nginx on the same host would pass on: a loopback peer, a JSON body.
    for path in ["/publish", "/sockets"] {
        let reply = request(halley.addr, Method::POST, path, &[JSON], publish_body()).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "POST {path}: {reply:?}"
        );
    }
    let reply = request(halley.addr, Method::GET, "/metrics", &[], "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "/metrics: {reply:?}");
}

#[tokio::test]
async fn public_health_answers_reveal_only_the_status() {
    let halley = Halley::start(&[], &[]).await;
    let reply = request(halley.addr, Method::GET, "/healthz", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(json_of(&reply.body), json!({ "status": "ok" }));
    let reply = request(halley.addr, Method::GET, "/readyz", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(json_of(&reply.body), json!({ "status": "ready" }));
    // The details are on the admin side.
    let reply = request(halley.admin, Method::GET, "/healthz", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(json_of(&reply.body)["sessions"].is_u64(), "{reply:?}");
}

#[tokio::test]
async fn the_admin_listener_publishes_to_public_clients() {
    let halley = Halley::start(&[], &[]).await;
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;
    assert_eq!(publish(&halley).await, json!({ "delivered": 1 }));
    assert_eq!(client.text().await, r#"42["news",{"from":"admin"}]"#);
    let reply = request(
        halley.admin,
        Method::POST,
        "/sockets",
        &[JSON],
        json!({ "action": "list" }).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        json_of(&reply.body)["sockets"].as_array().map(Vec::len),
        Some(1)
    );
}

/// The value of the metric line `name` in `/metrics` of the admin listener.
async fn metric(halley: &Halley, name: &str) -> u64 {
    let reply = request(halley.admin, Method::GET, "/metrics", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn the_admin_listener_refuses_requests_a_web_page_could_forge() {
    let halley = Halley::start(&[], &[]).await;
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;
    let admin = halley.admin.to_string();
    let admin = admin.as_str();
    let forged = [
        // DNS rebinding: the page's own name, resolved to 127.0.0.1, with a matching Origin.
        (
            "host",
            vec![
                ("host", "rebind.evil.example"),
                ("origin", "http://rebind.evil.example"),
                JSON,
            ],
            StatusCode::FORBIDDEN,
            "halley_admin_refused_total{reason=\"host\"}",
        ),
        // A page on another site posting with fetch or a form.
        (
            "origin",
            vec![("host", admin), ("origin", "https://evil.example"), JSON],
            StatusCode::FORBIDDEN,
            "halley_admin_refused_total{reason=\"origin\"}",
        ),
        // An opaque origin (sandboxed frame, data: URL).
        (
            "null origin",
            vec![("host", admin), ("origin", "null"), JSON],
            StatusCode::FORBIDDEN,
            "halley_admin_refused_total{reason=\"origin\"}",
        ),
        // A simple request that needs no preflight: text/plain, no Origin (old browsers).
        (
            "text/plain",
            vec![("host", admin), ("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "halley_admin_refused_total{reason=\"content_type\"}",
        ),
    ];
    for (what, headers, status, counter) in forged {
        let before = metric(&halley, counter).await;
        let reply = request(
            halley.admin,
            Method::POST,
            "/publish",
            &headers,
            publish_body(),
        )
        .await;
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert!(
            json_of(&reply.body)["error"].is_string(),
            "{what}: {reply:?}"
        );
        assert_eq!(metric(&halley, counter).await, before + 1, "{what} counted");
    }
    // Nothing of the above reached the client: the next frame is the genuine publish.
    publish(&halley).await;
    assert_eq!(client.text().await, r#"42["news",{"from":"admin"}]"#);
}

#[tokio::test]
async fn an_admin_token_is_required_when_set() {
    let halley = Halley::start(&[], &[("HALLEY_ADMIN_TOKEN", "s3cret-token")]).await;
    for auth in [None, Some("Bearer wrong"), Some("s3cret-token")] {
        let mut headers = vec![JSON];
        headers.extend(auth.map(|a| ("authorization", a)));
        let reply = request(
            halley.admin,
            Method::POST,
            "/publish",
            &headers,
            publish_body(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{auth:?}: {reply:?}"
        );
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let reply = request(halley.admin, Method::GET, "/metrics", &[], "").await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "metrics need the token too"
    );
    // With the token, a name in Host is fine: the token is what a rebound page lacks.
    let reply = request(
        halley.admin,
        Method::POST,
        "/publish",
        &[
            JSON,
            ("authorization", "Bearer s3cret-token"),
            ("host", "halley-admin.internal"),
        ],
        publish_body(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

#[tokio::test]
async fn an_admin_listener_off_loopback_without_a_token_refuses_to_start() {
    let (code, stderr) =
        Halley::refuse(&["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}
