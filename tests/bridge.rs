//! The auth hook against a real (tiny) HTTP auth service, and the `subscribe` convention.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::sio::{builder, SioServer, WsClient};
use halley::bridge::auth::{self, AuthConfig};
use halley::bridge::subscribe::{self, SubscribePolicy};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// An auth service: allows `{"token":"good"}` as user `u1` with room `vip`, refuses the rest.
/// Records every request body it receives.
async fn auth_service() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let asked: Value = serde_json::from_slice(&body).unwrap();
                        log.lock().unwrap().push(asked.clone());
                        let answer = if asked["auth"]["token"] == "good" {
                            json!({ "allow": true, "user": "u1", "rooms": ["vip"] })
                        } else {
                            json!({ "allow": false, "message": "bad token", "data": { "code": 403 } })
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                            answer.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn auth_config(addr: SocketAddr) -> AuthConfig {
    AuthConfig {
        url: format!("http://{addr}/auth").parse().unwrap(),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn auth_hook_allows_one_client_and_refuses_another() {
    let (service, seen) = auth_service().await;
    let io = builder().build();
    let ns = io.ns("/", |_| {});
    auth::install(&io, auth_config(service));
    let server = SioServer::start(io.clone()).await;

    let mut good = server.ws().await;
    let id = good.connect("/", Some(r#"{"token":"good"}"#)).await;
    let socket = ns.socket(&id).expect("the allowed socket is connected");
    assert_eq!(socket.data()["user"], "u1");
    assert!(
        socket.rooms().contains(&"vip".to_owned()),
        "granted rooms are joined"
    );
    io.to("vip").emit("hello", &"vip only").unwrap();
    assert_eq!(good.text().await, r#"42["hello","vip only"]"#);

    let mut bad = server.ws().await;
    bad.send(r#"40{"token":"nope"}"#);
    assert_eq!(
        bad.text().await,
        r#"44{"message":"bad token","data":{"code":403}}"#
    );
    assert_eq!(ns.len(), 1, "the refused socket is not in the namespace");

    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0]["namespace"], "/");
    assert_eq!(asked[0]["auth"], json!({ "token": "good" }));
    assert_eq!(asked[0]["remote_address"], "127.0.0.1");
    assert!(asked[0].as_object().unwrap().contains_key("cookie"));
}

#[tokio::test]
async fn the_auth_hook_is_told_the_client_a_trusted_proxy_names() {
    let (service, seen) = auth_service().await;
    let io = builder().build();
    io.ns("/", |_| {});
    auth::install(&io, auth_config(service));
    let server = SioServer::start(io.clone()).await;
    // The peer is loopback, a trusted proxy by default (nginx on the same host); the client
    // prepended a lie, the proxy appended what it saw.
    let mut client = WsClient::open_with(
        server.addr,
        true,
        &[("x-forwarded-for", "10.6.6.6, 198.51.100.23")],
    )
    .await;
    client.connect("/", Some(r#"{"token":"good"}"#)).await;
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked[0]["remote_address"], "198.51.100.23");
}

#[tokio::test]
async fn unreachable_auth_service_refuses_connections() {
    // A port nothing listens on: bind, note it, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let io = builder().build();
    io.ns("/", |_| {});
    auth::install(&io, auth_config(closed));
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.send("40");
    assert_eq!(
        client.text().await,
        r#"44{"message":"authentication unavailable"}"#
    );
}

#[tokio::test]
async fn subscribe_joins_allowed_rooms_only() {
    let (service, _) = auth_service().await;
    let io = builder().build();
    let ns = io.ns("/", |_| {});
    subscribe::install(
        &ns,
        SubscribePolicy {
            patterns: vec!["news.*".into()],
        },
    );
    auth::install(&io, auth_config(service));
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    let id = client.connect("/", Some(r#"{"token":"good"}"#)).await;

    client.send(r#"421["subscribe",["news.sport","private","vip"]]"#);
    assert_eq!(
        client.text().await,
        r#"431[{"ok":true,"rooms":["news.sport","vip"]}]"#
    );
    client.send(r#"422["subscribe","private"]"#);
    assert_eq!(
        client.text().await,
        r#"432[{"ok":false,"error":"not allowed","rooms":[]}]"#
    );
    client.send(&format!(r#"423["unsubscribe",["news.sport","{id}"]]"#));
    assert_eq!(
        client.text().await,
        r#"433[{"ok":true,"rooms":["news.sport"]}]"#
    );
    let socket = ns.socket(&id).unwrap();
    let mut rooms = socket.rooms();
    rooms.sort();
    let mut expected = vec![id.clone(), "vip".to_owned()];
    expected.sort();
    assert_eq!(rooms, expected, "own room kept, news.sport left");
}

#[tokio::test]
async fn socket_id_rooms_are_never_subscribable_whatever_the_pattern() {
    let io = builder().build();
    let ns = io.ns("/", |_| {});
    subscribe::install(
        &ns,
        SubscribePolicy {
            patterns: vec!["*".into()],
        },
    );
    let server = SioServer::start(io.clone()).await;
    let mut victim = server.ws().await;
    let victim_id = victim.connect("/", None).await;
    let mut attacker = server.ws().await;
    let attacker_id = attacker.connect("/", None).await;
    // Another socket's id, and the shape of one on another node (a node name, then an id).
    let elsewhere = format!("node01{victim_id}");
    attacker.send(&format!(
        r#"421["subscribe",["{victim_id}","{elsewhere}","{attacker_id}"]]"#
    ));
    assert_eq!(
        attacker.text().await,
        r#"431[{"ok":false,"error":"not allowed","rooms":[]}]"#
    );
    io.to(victim_id.as_str())
        .emit("private", &"for the victim")
        .unwrap();
    io.to("lobby").emit("marker", &1).unwrap();
    attacker.send(r#"422["subscribe","lobby"]"#);
    assert_eq!(
        attacker.text().await,
        r#"432[{"ok":true,"rooms":["lobby"]}]"#
    );
    io.to("lobby").emit("marker", &2).unwrap();
    // The first frame after the private emit is the lobby's: nothing of the victim's came.
    assert_eq!(attacker.text().await, r#"42["marker",2]"#);
    assert_eq!(victim.text().await, r#"42["private","for the victim"]"#);
}
