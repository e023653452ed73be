//! The origin policy against a real server on 127.0.0.1:0: which pages may open a WebSocket,
//! POST, or read a script-like GET (JSONP, forever-frames, SSE, xhr-streaming) with the user's
//! cookies. A browser's requests are imitated by the headers it would send (`Origin`,
//! `Referer`, `Sec-Fetch-Site`); a refusal is 403 with the Engine.IO error body, counted per
//! kind in `halley_origin_refused_total`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use halley::engine::forward::Locator;
use halley::engine::origin::Kind;
use halley::engine::{Cors, EngineConfig};
use hyper::{Method, StatusCode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use common::*;

const FORBIDDEN: &[u8] = br#"{"code":4,"message":"Forbidden"}"#;
const FOREIGN: (&str, &str) = ("origin", "http://evil.test");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const TEXT: (&str, &str) = ("content-type", "text/plain;charset=UTF-8");

/// The shipped default: same origin only.
fn same_origin() -> EngineConfig {
    EngineConfig {
        cors: Cors::SameOrigin,
        ..long_heartbeat_config()
    }
}

fn listed(origins: &[&str]) -> EngineConfig {
    EngineConfig {
        cors: Cors::Origins(origins.iter().map(|&o| o.to_owned()).collect()),
        ..long_heartbeat_config()
    }
}

/// `http://<the server's address>`: what a page served by the server sends as its Origin.
fn own(server: &TestServer) -> String {
    format!("http://{}", server.addr)
}

/// Asserts a refusal by the origin policy: 403 with the Engine.IO error body.
#[track_caller]
fn assert_forbidden(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(&reply.body[..], FORBIDDEN);
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

/// A WebSocket handshake on `query` with `headers`, over plain HTTP: the answer's head (a 101
/// is answered, and the connection then dropped) or the refusal in full.
async fn ws_attempt(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    all.extend_from_slice(headers);
    server.request(Method::GET, query, &all, Bytes::new()).await
}

/// Opens a WebSocket session with `headers` added to the handshake, and reads its open packet.
async fn ws_open_with(server: &TestServer, headers: &[(&str, &str)]) -> (Ws, Handshake) {
    let mut req = server
        .ws_url("EIO=4&transport=websocket")
        .into_client_request()
        .expect("a WebSocket request");
    for (name, value) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let (mut ws, res) = within("websocket connect", tokio_tungstenite::connect_async(req))
        .await
        .unwrap_or_else(|error| panic!("WebSocket with {headers:?} refused: {error}"));
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let open = Handshake::parse(&ws_text(&mut ws).await);
    (ws, open)
}

fn refusals(server: &TestServer, kind: Kind) -> u64 {
    server.engine.stats().origin_refusals(kind)
}

fn metrics(server: &TestServer) -> String {
    halley::metrics::Metrics::new(
        server.engine.clone(),
        None,
        Arc::new(halley::bridge::Latency::default()),
    )
    .render()
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_handshake_from_a_foreign_origin_is_refused_with_403_before_the_upgrade() {
    let server = TestServer::start(same_origin()).await;
    let reply = ws_attempt(&server, "EIO=4&transport=websocket", &[FOREIGN]).await;
    assert_forbidden(&reply);
    assert_eq!(reply.header("upgrade"), None);
    assert_eq!(server.engine.session_count(), 0);
    assert_eq!(refusals(&server, Kind::WebSocket), 1);
    let metrics = metrics(&server);
    let line = r#"halley_origin_refused_total{kind="websocket"} 1"#;
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn websocket_handshake_from_the_same_origin_is_accepted() {
    let server = TestServer::start(same_origin()).await;
    let origin = own(&server);
    let (mut ws, _) = ws_open_with(&server, &[("origin", &origin)]).await;
    ws_send(&mut ws, "4same origin").await;
    assert_eq!(ws_text(&mut ws).await, "4same origin");
    // The scheme's case does not make it another origin.
    let origin = format!("HTTP://{}", server.addr);
    ws_open_with(&server, &[("origin", &origin)]).await;
    assert_eq!(refusals(&server, Kind::WebSocket), 0);
}

#[tokio::test]
async fn websocket_handshake_without_origin_is_accepted() {
    // Not a browser: nothing to forge a user's cookies with.
    let server = TestServer::start(same_origin()).await;
    let (mut ws, _) = server.ws_handshake().await;
    ws_send(&mut ws, "4no origin").await;
    assert_eq!(ws_text(&mut ws).await, "4no origin");
    assert_eq!(refusals(&server, Kind::WebSocket), 0);
}

#[tokio::test]
async fn websocket_handshake_from_a_listed_origin_is_accepted_and_others_are_refused() {
    let server = TestServer::start(listed(&["https://good.test"])).await;
    ws_open_with(&server, &[("origin", "https://good.test")]).await;
    ws_open_with(&server, &[("origin", "https://GOOD.test:443")]).await;
    let origin = own(&server);
    ws_open_with(&server, &[("origin", &origin)]).await;
    for origin in [
        "http://good.test",
        "https://good.test.evil.test",
        "https://good.test:8443",
        "http://evil.test",
        "null",
    ] {
        let reply = ws_attempt(&server, "EIO=4&transport=websocket", &[("origin", origin)]).await;
        assert_forbidden(&reply);
    }
    assert_eq!(refusals(&server, Kind::WebSocket), 5);

    // `*` lets any page in.
    let any = TestServer::start(suite_config()).await;
    ws_open_with(&any, &[FOREIGN]).await;
    ws_open_with(&any, &[("origin", "null")]).await;
}

#[tokio::test]
async fn websocket_upgrade_of_a_polling_session_from_a_foreign_origin_is_refused_and_the_session_stays(
) {
    let server = TestServer::start(same_origin()).await;
    let sid = server.handshake().await.sid;
    let query = format!("EIO=4&transport=websocket&sid={sid}");
    let reply = ws_attempt(&server, &query, &[FOREIGN]).await;
    assert_forbidden(&reply);
    assert_eq!(refusals(&server, Kind::WebSocket), 1);
    // The session never saw the attempt: it is still on polling.
    assert_eq!(server.post(&sid, "4still polling").await.text(), "ok");
    assert_eq!(server.poll(&sid).await.text(), "4still polling");
}

#[tokio::test]
async fn forwarded_host_and_proto_from_a_trusted_proxy_name_the_public_origin() {
    // The test client connects from loopback, which is a trusted proxy by default (nginx on
    // the same host, `Host $http_host`, `X-Forwarded-Proto $scheme`).
    let server = TestServer::start(same_origin()).await;
    let proxied = [
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-proto", "https"),
    ];
    let mut headers = proxied.to_vec();
    headers.push(("origin", "https://app.example"));
    let (mut ws, _) = ws_open_with(&server, &headers).await;
    ws_send(&mut ws, "4proxied").await;
    assert_eq!(ws_text(&mut ws).await, "4proxied");
    // Behind the proxy, the address the proxy reached the server at is not the public origin.
    let mut headers = proxied.to_vec();
    let internal = own(&server);
    headers.push(("origin", &internal));
    let reply = ws_attempt(&server, "EIO=4&transport=websocket", &headers).await;
    assert_forbidden(&reply);
    // The same holds for a POST.
    let sid = server.handshake().await.sid;
    let query = format!("EIO=4&transport=polling&sid={sid}");
    let mut headers = proxied.to_vec();
    headers.extend([("origin", "https://app.example"), TEXT]);
    let reply = server
        .request(Method::POST, &query, &headers, "4proxied post")
        .await;
    assert_eq!(reply.text(), "ok");
}

#[tokio::test]
async fn forwarded_host_and_proto_from_an_untrusted_peer_are_ignored() {
    // No trusted proxy: the loopback client is just a client, and its X-Forwarded-* its own say.
    let server = TestServer::start(EngineConfig {
        trusted_proxies: Vec::new(),
        ..same_origin()
    })
    .await;
    let claimed = [
        ("x-forwarded-host", "evil.test"),
        ("x-forwarded-proto", "https"),
        ("origin", "https://evil.test"),
    ];
    let reply = ws_attempt(&server, "EIO=4&transport=websocket", &claimed).await;
    assert_forbidden(&reply);
    let origin = own(&server);
    ws_open_with(
        &server,
        &[
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "https"),
            ("origin", &origin),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Script-like GETs
// ---------------------------------------------------------------------------------------------

const JSONP: &str = "EIO=4&transport=polling&j=0";

#[tokio::test]
async fn jsonp_handshake_marked_cross_site_without_origin_or_referer_is_refused() {
    // `<script referrerpolicy="no-referrer" src="…&j=0">` on another site.
    let server = TestServer::start(same_origin()).await;
    let reply = server
        .request(
            Method::GET,
            JSONP,
            &[("sec-fetch-site", "cross-site")],
            Bytes::new(),
        )
        .await;
    assert_forbidden(&reply);
    assert!(!reply.text().contains("sid"));
    assert_eq!(server.engine.session_count(), 0);
    assert_eq!(refusals(&server, Kind::Script), 1);
    let metrics = metrics(&server);
    let line = r#"halley_origin_refused_total{kind="script"} 1"#;
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
}

#[tokio::test]
async fn every_script_like_get_marked_cross_site_is_refused() {
    let server = TestServer::start(same_origin()).await;
    let cross_site = [("sec-fetch-site", "cross-site")];
    let jsonp = server.get(JSONP).await;
    let sid = sid_in(&jsonp.body).expect("a JSONP open packet");
    let queries = [
        "EIO=4&transport=iframe&j=1".to_owned(),
        "EIO=4&transport=htmlfile&j=1".to_owned(),
        "EIO=4&transport=sse".to_owned(),
        "EIO=4&transport=xhr-streaming".to_owned(),
        // Reads of an open session too: a page that learnt a sid must not read it.
        format!("{JSONP}&sid={sid}"),
    ];
    for query in &queries {
        let reply = server
            .request(Method::GET, query, &cross_site, Bytes::new())
            .await;
        assert_forbidden(&reply);
    }
    assert_eq!(refusals(&server, Kind::Script), queries.len() as u64);
    // Plain XHR polling is protected by CORS and is not refused.
    let reply = server
        .request(
            Method::GET,
            "EIO=4&transport=polling",
            &cross_site,
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn jsonp_handshake_marked_same_site_is_refused_unless_its_origin_is_listed() {
    let sibling = [
        ("sec-fetch-site", "same-site"),
        ("referer", "http://chat.app.test/room"),
    ];
    let unnamed = [("sec-fetch-site", "same-site")];

    let server = TestServer::start(same_origin()).await;
    for headers in [&sibling[..], &unnamed[..]] {
        let reply = server
            .request(Method::GET, JSONP, headers, Bytes::new())
            .await;
        assert_forbidden(&reply);
    }

    let server = TestServer::start(listed(&["http://chat.app.test"])).await;
    let reply = server
        .request(Method::GET, JSONP, &sibling, Bytes::new())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(sid_in(&reply.body).is_some());
    let reply = server
        .request(Method::GET, JSONP, &unnamed, Bytes::new())
        .await;
    assert_forbidden(&reply);
}

#[tokio::test]
async fn jsonp_handshake_marked_same_origin_or_none_is_served() {
    for config in [same_origin(), listed(&["https://good.test"])] {
        let server = TestServer::start(config).await;
        for site in ["same-origin", "none"] {
            let reply = server
                .request(
                    Method::GET,
                    JSONP,
                    &[("sec-fetch-site", site)],
                    Bytes::new(),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{site}: {reply:?}");
            assert!(reply.text().starts_with("___eio[0](\"0{"), "{reply:?}");
        }
        assert_eq!(refusals(&server, Kind::Script), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// POSTs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn jsonp_form_post_from_a_foreign_origin_is_refused_and_the_session_stays() {
    let server = TestServer::start(same_origin()).await;
    let jsonp = server.get(JSONP).await;
    let sid = sid_in(&jsonp.body).expect("a JSONP open packet");
    let query = format!("{JSONP}&sid={sid}");
    let reply = server
        .request(Method::POST, &query, &[FOREIGN, FORM], "d=40")
        .await;
    assert_forbidden(&reply);
    assert_eq!(refusals(&server, Kind::Post), 1);
    let metrics = metrics(&server);
    let line = r#"halley_origin_refused_total{kind="post"} 1"#;
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    // Nothing of the refused POST reached the session.
    let reply = server
        .request(Method::POST, &query, &[FORM], "d=4after")
        .await;
    assert_eq!(reply.text(), "ok");
    assert_eq!(server.get(&query).await.text(), "___eio[0](\"4after\");");
}

#[tokio::test]
async fn polling_post_from_a_foreign_origin_is_refused() {
    let server = TestServer::start(same_origin()).await;
    let sid = server.handshake().await.sid;
    let query = format!("EIO=4&transport=polling&sid={sid}");
    for origin in [
        "http://evil.test",
        "null",
        "https://evil.test:443",
        "not an origin",
    ] {
        let reply = server
            .request(Method::POST, &query, &[("origin", origin), TEXT], "4evil")
            .await;
        assert_forbidden(&reply);
    }
    assert_eq!(refusals(&server, Kind::Post), 4);
    // Every transport's POST: the upstream of a streaming session too.
    let sse = Stream::open(&server, "EIO=4&transport=sse").await;
    let reply = server
        .request(
            Method::POST,
            &format!("EIO=4&transport=sse&sid={}", sse.sid),
            &[FOREIGN, TEXT],
            "4evil",
        )
        .await;
    assert_forbidden(&reply);
    assert_eq!(refusals(&server, Kind::Post), 5);
}

#[tokio::test]
async fn post_without_origin_is_accepted() {
    // IE6–9's hidden-form POSTs and clients that are not browsers send no Origin.
    let server = TestServer::start(same_origin()).await;
    let sid = server.handshake().await.sid;
    assert_eq!(server.post(&sid, "4no origin").await.text(), "ok");
    let query = format!("EIO=4&transport=polling&sid={sid}");
    let origin = own(&server);
    let reply = server
        .request(Method::POST, &query, &[("origin", &origin), TEXT], "4same")
        .await;
    assert_eq!(reply.text(), "ok");
    // A same-origin page with `Referrer-Policy: no-referrer` posts `Origin: null`; the browser
    // vouches for it with Sec-Fetch-Site.
    let reply = server
        .request(
            Method::POST,
            &query,
            &[("origin", "null"), ("sec-fetch-site", "same-origin"), TEXT],
            "4null",
        )
        .await;
    assert_eq!(reply.text(), "ok");
    assert_eq!(
        server.poll(&sid).await.text(),
        "4no origin\x1e4same\x1e4null"
    );
    assert_eq!(refusals(&server, Kind::Post), 0);
}

#[tokio::test]
async fn post_without_origin_from_a_foreign_referer_is_refused() {
    // Old IE posts a hidden form with no Origin, but with the Referer of the page that did.
    let server = TestServer::start(same_origin()).await;
    let jsonp = server.get(JSONP).await;
    let sid = sid_in(&jsonp.body).expect("a JSONP open packet");
    let query = format!("{JSONP}&sid={sid}");
    let reply = server
        .request(
            Method::POST,
            &query,
            &[("referer", "http://evil.test/page"), FORM],
            "d=40",
        )
        .await;
    assert_forbidden(&reply);
    let same = format!("{}/page", own(&server));
    let reply = server
        .request(Method::POST, &query, &[("referer", &same), FORM], "d=40")
        .await;
    assert_eq!(reply.text(), "ok");
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// A stand-in mark shared by the test locators (the cluster's HMAC mark is tested in
/// tests/cluster.rs): `test-mark <client>`.
fn sign_test_mark(client: IpAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("test-mark {client}")).ok()
}

fn verify_test_mark(mark: &HeaderValue) -> Option<IpAddr> {
    mark.to_str().ok()?.strip_prefix("test-mark ")?.parse().ok()
}

/// Places every session on one other node.
struct Elsewhere(SocketAddr);

impl Locator for Elsewhere {
    fn owner(&self, _sid: &str) -> Option<SocketAddr> {
        Some(self.0)
    }

    fn sign_forward(&self, _: &Method, _: &str, client: IpAddr) -> Option<HeaderValue> {
        sign_test_mark(client)
    }

    fn verify_forward(&self, _: &Method, _: &str, mark: &HeaderValue) -> Option<IpAddr> {
        verify_test_mark(mark)
    }
}

#[tokio::test]
async fn origin_is_checked_before_a_request_is_forwarded_to_the_owner_node() {
    let server = TestServer::start(same_origin()).await;
    // The owner is unreachable: a request that is forwarded is answered 503.
    // Port 1: nothing listens there (a port picked and released could be taken by a
    // parallel test).
    let closed: SocketAddr = "127.0.0.1:1".parse().expect("an address");
    server.engine.set_locator(Arc::new(Elsewhere(closed)));
    let query = "EIO=4&transport=polling&sid=abcdefABCDEF0123456789";
    let reply = server
        .request(Method::POST, query, &[FOREIGN, TEXT], "4evil")
        .await;
    assert_forbidden(&reply);
    let reply = ws_attempt(&server, query, &[FOREIGN]).await;
    assert_forbidden(&reply);
    let origin = own(&server);
    let reply = server
        .request(Method::POST, query, &[("origin", &origin), TEXT], "4mine")
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
}

/// Knows no other node.
struct Alone;

impl Locator for Alone {
    fn owner(&self, _sid: &str) -> Option<SocketAddr> {
        None
    }

    fn sign_forward(&self, _: &Method, _: &str, client: IpAddr) -> Option<HeaderValue> {
        sign_test_mark(client)
    }

    fn verify_forward(&self, _: &Method, _: &str, mark: &HeaderValue) -> Option<IpAddr> {
        verify_test_mark(mark)
    }
}

#[tokio::test]
async fn the_owner_node_serves_a_request_that_the_node_behind_the_proxy_let_through() {
    // The owner does not trust the forwarding node as a proxy, so it could not read the
    // public origin from X-Forwarded-*: it leaves the judgement to the node that could.
    let owner = TestServer::start(EngineConfig {
        trusted_proxies: Vec::new(),
        ..same_origin()
    })
    .await;
    owner.engine.set_locator(Arc::new(Alone));
    let entry = TestServer::start(same_origin()).await;
    entry.engine.set_locator(Arc::new(Elsewhere(owner.addr)));
    let sid = owner.handshake().await.sid;
    let query = format!("EIO=4&transport=polling&sid={sid}");
    let proxied = [
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-proto", "https"),
        TEXT,
    ];
    let mut headers = proxied.to_vec();
    headers.push(("origin", "https://app.example"));
    let reply = entry
        .request(Method::POST, &query, &headers, "4via the entry node")
        .await;
    assert_eq!(reply.text(), "ok");
    let mut headers = proxied.to_vec();
    headers.push(FOREIGN);
    let reply = entry.request(Method::POST, &query, &headers, "4evil").await;
    assert_forbidden(&reply);
    assert_eq!(owner.poll(&sid).await.text(), "4via the entry node");
    assert_eq!(refusals(&entry, Kind::Post), 1);
    assert_eq!(refusals(&owner, Kind::Post), 0);
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A streaming session kept open (its GET never ends), to POST to.
struct Stream {
    sid: String,
    _tcp: tokio::net::TcpStream,
}

impl Stream {
    async fn open(server: &TestServer, query: &str) -> Stream {
        let (sid, tcp) = open_raw(server.addr, query).await;
        Stream { sid, _tcp: tcp }
    }
}
