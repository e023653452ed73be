//! The auth hook against a real (tiny) HTTP auth service, and the `subscribe` convention.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::eventually;
use common::sio::{builder, SioServer, WsClient};
use halley::bridge::auth::{self, AuthConfig, Outcome};
use halley::bridge::subscribe::{self, SubscribePolicy};
use halley::socketio::limits::{ConnectRefusal, JoinRefusal};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A test auth service: allows `{"token":"good"}` as user `u1` with the rooms `grant` (default
/// `["vip"]`), refuses the rest. Records every request body, counts the TCP connections it
/// accepts, and the requests in flight (the most at once too). While its gate is shut, it holds
/// every request.
struct AuthService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
    accepted: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
}

impl AuthService {
    async fn start() -> Self {
        Self::granting(json!(["vip"])).await
    }

    async fn granting(rooms: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (gate, open) = watch::channel(true);
        let service = AuthService {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            accepted: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            gate,
        };
        let log = Arc::clone(&service.seen);
        let accepted = Arc::clone(&service.accepted);
        let in_flight = Arc::clone(&service.in_flight);
        let max_in_flight = Arc::clone(&service.max_in_flight);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (log, rooms, open) = (Arc::clone(&log), rooms.clone(), open.clone());
                let (in_flight, max_in_flight) =
                    (Arc::clone(&in_flight), Arc::clone(&max_in_flight));
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (log, rooms, mut open) =
                            (Arc::clone(&log), rooms.clone(), open.clone());
                        let (in_flight, max_in_flight) =
                            (Arc::clone(&in_flight), Arc::clone(&max_in_flight));
                        async move {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            max_in_flight.fetch_max(now, Ordering::SeqCst);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let asked: Value = serde_json::from_slice(&body).unwrap();
                            log.lock().unwrap().push(asked.clone());
                            let _ = open.wait_for(|open| *open).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            let answer = if asked["auth"]["token"] == "good" {
                                json!({ "allow": true, "user": "u1", "rooms": rooms })
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
        service
    }

    fn asked(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    fn config(&self) -> AuthConfig {
        auth_config(self.addr)
    }
}

fn auth_config(addr: SocketAddr) -> AuthConfig {
    let mut config = AuthConfig::new(format!("http://{addr}/auth").parse().unwrap());
    config.timeout = Duration::from_secs(2);
    config
}

#[tokio::test]
async fn auth_hook_allows_one_client_and_refuses_another() {
    let service = AuthService::start().await;
    let io = builder().build();
    let ns = io.ns("/", |_| {});
    auth::install(&io, service.config());
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

    let asked = service.asked();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0]["namespace"], "/");
    assert_eq!(asked[0]["auth"], json!({ "token": "good" }));
    assert_eq!(asked[0]["remote_address"], "127.0.0.1");
    assert!(asked[0].as_object().unwrap().contains_key("cookie"));
}

#[tokio::test]
async fn the_auth_hook_is_told_the_client_a_trusted_proxy_names() {
    let service = AuthService::start().await;
    let io = builder().build();
    io.ns("/", |_| {});
    auth::install(&io, service.config());
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
    assert_eq!(service.asked()[0]["remote_address"], "198.51.100.23");
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
    let service = AuthService::start().await;
    let io = builder().build();
    let ns = io.ns("/", |_| {});
    subscribe::install(
        &ns,
        SubscribePolicy {
            patterns: vec!["news.*".into()],
        },
    );
    auth::install(&io, service.config());
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

#[tokio::test]
async fn subscribe_beyond_the_room_limits_acks_the_limit_and_the_rooms_joined_so_far() {
    let io = builder().max_rooms(3).max_room_name(8).build();
    let ns = io.ns("/", |_| {});
    subscribe::install(
        &ns,
        SubscribePolicy {
            patterns: vec!["*".into()],
        },
    );
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    let id = client.connect("/", None).await;

    client.send(r#"421["subscribe",["a","b"]]"#);
    assert_eq!(client.text().await, r#"431[{"ok":true,"rooms":["a","b"]}]"#);
    // "a" is joined already and costs nothing; "c" takes the last place, "d" finds none, and
    // "e" is not tried.
    client.send(r#"422["subscribe",["a","c","d","e"]]"#);
    assert_eq!(
        client.text().await,
        r#"432[{"ok":false,"error":"too many rooms","limit":3,"rooms":["a","c"]}]"#
    );
    client.send(r#"423["unsubscribe","a"]"#);
    assert_eq!(client.text().await, r#"433[{"ok":true,"rooms":["a"]}]"#);
    client.send(r#"424["subscribe",["123456789"]]"#);
    assert_eq!(
        client.text().await,
        r#"434[{"ok":false,"error":"room name too long","limit":8,"rooms":[]}]"#
    );
    client.send(r#"425["subscribe","12345678"]"#);
    assert_eq!(
        client.text().await,
        r#"435[{"ok":true,"rooms":["12345678"]}]"#
    );
    let socket = ns.socket(&id).unwrap();
    assert_eq!(
        socket.rooms().len(),
        4,
        "three rooms and its own: {:?}",
        socket.rooms()
    );
    assert!(io.to("d").sockets().is_empty());
    let stats = io.stats();
    assert_eq!(stats.joins_refused(JoinRefusal::TooManyRooms), 1);
    assert_eq!(stats.joins_refused(JoinRefusal::NameTooLong), 1);
}

#[tokio::test]
async fn auth_hook_rooms_beyond_the_room_limits_refuse_the_socket() {
    let service = AuthService::granting(json!(["a", "b", "c"])).await;
    let io = builder().max_rooms(2).build();
    let ns = io.ns("/", |_| {});
    let stats = auth::install(&io, service.config());
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    client.send(r#"40{"token":"good"}"#);
    assert_eq!(client.text().await, r#"44{"message":"too many rooms"}"#);
    assert_eq!(ns.len(), 0);
    assert!(
        io.to("a").sockets().is_empty(),
        "the rooms joined before the refusal are left"
    );
    assert_eq!(stats.checks(Outcome::RoomLimits), 1);

    let service = AuthService::granting(json!(["a-very-long-room"])).await;
    let io = builder().max_room_name(8).build();
    io.ns("/", |_| {});
    auth::install(&io, service.config());
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    client.send(r#"40{"token":"good"}"#);
    assert_eq!(client.text().await, r#"44{"message":"room name too long"}"#);
}

#[tokio::test]
async fn auth_hook_reuses_its_connections_to_the_service() {
    let service = AuthService::start().await;
    let io = builder().build();
    io.ns("/", |_| {});
    let stats = auth::install(&io, service.config());
    let server = SioServer::start(io.clone()).await;
    for _ in 0..5 {
        let mut client = server.ws().await;
        client.connect("/", Some(r#"{"token":"good"}"#)).await;
    }
    assert_eq!(service.asked().len(), 5);
    assert_eq!(
        service.accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection for five checks in a row"
    );
    assert_eq!(stats.checks(Outcome::Allowed), 5);
    assert_eq!(stats.in_flight(), 0);
}

#[tokio::test]
async fn auth_checks_beyond_the_concurrency_wait_for_a_free_slot() {
    let service = AuthService::start().await;
    let io = builder().build();
    io.ns("/", |_| {});
    let mut config = service.config();
    config.concurrency = 3;
    config.timeout = Duration::from_secs(4);
    let stats = auth::install(&io, config);
    let server = SioServer::start(io.clone()).await;
    // The service holds every request until the test opens its gate.
    service.gate.send_replace(false);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let client = server.ws().await;
        client.send(r#"40{"token":"good"}"#);
        clients.push(client);
    }
    eventually("3 checks at the service and 5 waiting for a slot", || {
        service.in_flight.load(Ordering::SeqCst) == 3 && stats.waiting() == 5
    })
    .await;
    assert_eq!(stats.in_flight(), 3);
    service.gate.send_replace(true);
    for client in &mut clients {
        let reply = client.text().await;
        assert!(reply.starts_with(r#"40{"sid":"#), "{reply}");
    }
    assert_eq!(service.max_in_flight.load(Ordering::SeqCst), 3);
    assert!(service.accepted.load(Ordering::SeqCst) <= 3);
    assert_eq!(stats.checks(Outcome::Allowed), 8);
    assert_eq!((stats.in_flight(), stats.waiting()), (0, 0));
}

#[tokio::test]
async fn a_check_waiting_for_a_slot_is_refused_when_the_timeout_runs_out() {
    let service = AuthService::start().await;
    let io = builder().build();
    io.ns("/", |_| {});
    let mut config = service.config();
    config.concurrency = 1;
    config.timeout = Duration::from_millis(300);
    let stats = auth::install(&io, config);
    let server = SioServer::start(io.clone()).await;
    service.gate.send_replace(false);
    let mut first = server.ws().await;
    first.send(r#"40{"token":"good"}"#);
    eventually("the first check at the service", || {
        service.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut second = server.ws().await;
    second.send(r#"40{"token":"good"}"#);
    eventually("the second check waiting", || stats.waiting() == 1).await;
    let unavailable = r#"44{"message":"authentication unavailable"}"#;
    assert_eq!(first.text().await, unavailable);
    // It got the slot only when the first gave up: what was left of its time ran out at the
    // service (or before it got there).
    assert_eq!(second.text().await, unavailable);
    assert_eq!(
        stats.checks(Outcome::Timeout) + stats.checks(Outcome::Busy),
        2
    );
    assert_eq!((stats.in_flight(), stats.waiting()), (0, 0));
}

#[tokio::test]
async fn a_client_refused_too_often_is_told_so_and_its_connection_closed() {
    let service = AuthService::start().await;
    let io = builder().max_auth_attempts(3).build();
    io.ns("/", |_| {});
    io.ns("/other", |_| {});
    let stats = auth::install(&io, service.config());
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    for _ in 0..3 {
        client.send(r#"40{"token":"bad"}"#);
        assert_eq!(
            client.text().await,
            r#"44{"message":"bad token","data":{"code":403}}"#
        );
    }
    // Another namespace, a good token: the connection has used up its attempts all the same.
    client.send(r#"40/other,{"token":"good"}"#);
    assert_eq!(
        client.text().await,
        r#"44/other,{"message":"too many authentication attempts"}"#
    );
    client.expect_close().await;
    assert_eq!(service.asked().len(), 3, "the fourth was not asked");
    assert_eq!(
        io.stats()
            .connects_refused(ConnectRefusal::TooManyAuthAttempts),
        1
    );
    // A new connection starts afresh.
    let mut again = server.ws().await;
    again.connect("/", Some(r#"{"token":"good"}"#)).await;

    let metrics = halley::metrics::Metrics::new(
        io.engine().clone(),
        None,
        Arc::new(halley::bridge::Latency::default()),
    )
    .with_socketio(Arc::clone(io.stats()))
    .with_auth(stats)
    .render();
    for line in [
        r#"halley_connects_refused_total{reason="too_many_auth_attempts"} 1"#,
        r#"halley_connects_refused_total{reason="auth_payload_too_large"} 0"#,
        r#"halley_room_joins_refused_total{reason="too_many_rooms"} 0"#,
        r#"halley_auth_checks_total{outcome="refused"} 3"#,
        r#"halley_auth_checks_total{outcome="allowed"} 1"#,
        "halley_auth_in_flight 0",
        "halley_auth_waiting 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}
