//! The cluster link against a real RabbitMQ (`AMQP_URL`, default the local guest account):
//! two nodes in this process, each on its own listener, and an intruder that can publish to the
//! cluster exchange and read from it (any AMQP user with those permissions) but does not know
//! the cluster's secret. Nothing the intruder publishes takes effect, while genuine traffic
//! between the nodes goes on; a request claiming to be forwarded by a node is refused.
//!
//! Negatives are proven after a positive control: forged envelopes go into a node's queue
//! before a genuine one (the intruder waits for the broker's confirms first), and the queue
//! hands them over in order, so once the genuine one has arrived, every forged one was handled.
//!
//! Broker losses go through a [`Relay`] between a node and the broker, which cuts the node's
//! connection, refuses new ones, or stops passing what the broker says, at will.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::sio::{builder, SioServer, WsClient};
use common::{eventually, request, within, ws_send, ws_text};
use futures_util::StreamExt;
use halley::bridge::cluster::{Cluster, ClusterConfig};
use halley::bridge::envelope::{self, Key, Message, Stamp};
use halley::bridge::mapping::Emit;
use halley::bridge::{deliver, DeliverError, Reach};
use halley::socketio::adapter::{Adapter, RemoteOp, Selection};
use hyper::{Method, StatusCode};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &[u8] = b"test-cluster-secret-0123456789abcdef";

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A connection to the broker; waits for it to come up (it may still be booting when the tests
/// start), then fails loudly: these tests need a real RabbitMQ.
async fn broker() -> Connection {
    let url = amqp_url();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(conn) => return conn,
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("no RabbitMQ at {url} ({error}): start it (rabbitmq-server -detached)")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn unique_exchange(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("halley.test.{test}.{}.{nanos}", std::process::id())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Node {
    server: SioServer,
    cluster: Arc<Cluster>,
}

async fn start_node(name: &str, exchange: &str) -> Node {
    start_node_on(name, exchange, amqp_url()).await
}

async fn start_node_on(name: &str, exchange: &str, url: String) -> Node {
    let io = builder().node_name(name).build();
    io.ns("/", |_| {});
    let server = SioServer::start(io.clone()).await;
    let mut config = ClusterConfig::new(url, server.addr, Key::new(SECRET).unwrap());
    config.node = name.to_owned();
    config.exchange = exchange.to_owned();
    config.heartbeat = Duration::from_millis(200);
    let cluster = Cluster::spawn(&io, config);
    Node { server, cluster }
}

/// Two nodes that list each other.
async fn two_nodes(test: &str) -> (Node, Node, String) {
    let exchange = unique_exchange(test);
    let a = start_node("nodeA1", &exchange).await;
    let b = start_node("nodeB1", &exchange).await;
    for (node, other) in [(&a, "nodeB1"), (&b, "nodeA1")] {
        let cluster = Arc::clone(&node.cluster);
        eventually(&format!("{} to list {other}", cluster.name()), move || {
            cluster.members() == [other]
        })
        .await;
    }
    (a, b, exchange)
}

/// A TCP relay between one node and the broker: the node's broker connection breaks, or the
/// broker goes silent for it, when the test says so.
struct Relay {
    addr: SocketAddr,
    /// New connections are taken (else closed at once, as by a broker that is down).
    accepting: Arc<AtomicBool>,
    /// What the broker says is dropped on the way (publisher confirms included).
    mute: Arc<AtomicBool>,
    /// Bumped to close every connection through the relay.
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start() -> Relay {
        let url = amqp_url();
        let broker = url
            .split_once('@')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("AMQP_URL names host:port after the credentials")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepting, mute) = (Arc::new(AtomicBool::new(true)), Arc::default());
        let (cut, _) = tokio::sync::watch::channel(0);
        let relay = Relay {
            addr,
            accepting: Arc::clone(&accepting),
            mute: Arc::clone(&mute),
            cut,
        };
        let cuts = relay.cut.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if !accepting.load(Ordering::Acquire) {
                    continue;
                }
                let Ok(up) = tokio::net::TcpStream::connect(&broker).await else {
                    continue;
                };
                let (mute, mut cut) = (Arc::clone(&mute), cuts.subscribe());
                tokio::spawn(async move {
                    let ((mut down_r, mut down_w), (mut up_r, mut up_w)) =
                        (down.into_split(), up.into_split());
                    let to_broker = tokio::io::copy(&mut down_r, &mut up_w);
                    let to_node = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = up_r.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if !mute.load(Ordering::Acquire) {
                                down_w.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    // Whichever ends first (or the cut) drops both sockets.
                    tokio::select! {
                        _ = to_broker => {}
                        _ = to_node => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        relay
    }

    /// The broker's URL through this relay.
    fn url(&self) -> String {
        let url = amqp_url();
        let (credentials, rest) = url.split_once('@').unwrap();
        let vhost = rest.split_once('/').map_or("", |(_, vhost)| vhost);
        format!("{credentials}@{}/{vhost}", self.addr)
    }

    /// Breaks every connection through the relay.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

/// Waits until `node`'s cluster link went down and came back.
async fn relinked(node: &Node) {
    let cluster = Arc::clone(&node.cluster);
    eventually(
        &format!("{}'s link to go", node.cluster.name()),
        move || !cluster.stats().connected.load(Ordering::Acquire),
    )
    .await;
    let cluster = Arc::clone(&node.cluster);
    eventually(&format!("{}'s link back", node.cluster.name()), move || {
        cluster.stats().connected.load(Ordering::Acquire)
    })
    .await;
}

/// Someone with publish and read access to the cluster exchange, but not the secret.
struct Intruder {
    channel: Channel,
    exchange: String,
    /// A queue bound to the exchange: sees every envelope the nodes broadcast.
    tap: String,
    /// A queue to which forged queries ask for answers.
    inbox: String,
}

impl Intruder {
    async fn join(exchange: &str) -> Intruder {
        let conn = broker().await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let tap = channel
            .queue_declare("".into(), private, FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                tap.name().clone(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let inbox = channel
            .queue_declare("".into(), private, FieldTable::default())
            .await
            .unwrap();
        // The connection lives as long as its channel is used.
        std::mem::forget(conn);
        Intruder {
            channel,
            exchange: exchange.to_owned(),
            tap: tap.name().as_str().to_owned(),
            inbox: inbox.name().as_str().to_owned(),
        }
    }

    /// Publishes `body` to the cluster exchange and waits until the broker has routed it.
    async fn publish(&self, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack(), "the broker took it");
    }

    /// The next envelope broadcast by `node` that the tap saw, with `pick` matching its message.
    async fn capture(&self, node: &str, pick: impl Fn(&Message) -> bool) -> Vec<u8> {
        let mut consumer = self
            .channel
            .basic_consume(
                self.tap.as_str().into(),
                "tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let key = Key::new(SECRET).unwrap();
        common::within("a genuine envelope on the tap", async {
            loop {
                let delivery = consumer.next().await.unwrap().unwrap();
                // The test knows the secret; the intruder only keeps the bytes.
                if let Ok(envelope) = envelope::open(&key, &delivery.data) {
                    if envelope.stamp.node == node && pick(&envelope.message) {
                        return delivery.data;
                    }
                }
            }
        })
        .await
    }

    /// Whether anything arrived in the intruder's inbox.
    async fn inbox_empty(&self) -> bool {
        self.channel
            .basic_get(self.inbox.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .is_none()
    }
}

fn news(tag: &str) -> RemoteOp {
    RemoteOp::Emit {
        to: Selection {
            ns: "/".into(),
            ..Selection::default()
        },
        event: "news".into(),
        args: vec![json!(tag)],
        binary: Vec::new(),
        volatile: false,
        id: None,
    }
}

/// What an unauthenticated sender used to be able to say (the envelope format before secrets).
fn unsigned(node: &str, message: &serde_json::Value) -> Vec<u8> {
    let mut value = message.clone();
    value["node"] = json!(node);
    serde_json::to_vec(&value).unwrap()
}

fn rejected(node: &Node, reason: &str) -> u64 {
    node.cluster
        .stats()
        .rejected()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

async fn client_of(node: &Node) -> WsClient {
    let mut client = node.server.ws().await;
    client.connect("/", None).await;
    client
}

#[tokio::test]
async fn forged_cluster_envelopes_take_no_effect_and_genuine_ones_do() {
    let (a, b, exchange) = two_nodes("forged").await;
    let intruder = Intruder::join(&exchange).await;
    let mut client = client_of(&b).await;
    let everyone = json!({"ns": "/"});

    // A genuine broadcast from node A reaches B's client; the intruder captures it on the way.
    let captured = {
        let capture = intruder.capture("nodeA1", |m| matches!(m, Message::Op { .. }));
        a.cluster.publish(news("genuine-1"));
        let (captured, frame) = tokio::join!(capture, client.text());
        assert_eq!(frame, r#"42["news","genuine-1"]"#);
        captured
    };

    // 1. An unsigned emit and an unsigned disconnect, in the old envelope format.
    let emit = json!({"kind": "op", "op": {"op": "emit", "to": everyone, "event": "news", "args": ["unsigned"]}});
    intruder.publish(&unsigned("nodeA1", &emit)).await;
    let disconnect = json!({"kind": "op", "op": {"op": "disconnect", "to": everyone}});
    intruder.publish(&unsigned("nodeA1", &disconnect)).await;
    // 2. The captured envelope with its payload altered (same length, MAC kept).
    let altered = String::from_utf8(captured.clone())
        .unwrap()
        .replace("genuine-1", "altered-1");
    assert_ne!(altered.as_bytes(), &captured[..]);
    intruder.publish(altered.as_bytes()).await;
    // 3. The captured envelope, as it was.
    intruder.publish(&captured).await;
    // 4. A query for every socket, answered to the intruder's own queue.
    let fetch = json!({"kind": "fetch", "request": 1, "to": everyone, "reply_to": intruder.inbox});
    intruder.publish(&unsigned("nodeA1", &fetch)).await;
    // 5. A hello in node A's name with the intruder's address: B would forward A's sessions'
    //    requests (cookies included) there.
    let hijack = json!({"kind": "hello", "addr": "127.0.0.1:9", "queue": "q"});
    intruder.publish(&unsigned("nodeA1", &hijack)).await;
    // 6. An envelope signed with another secret.
    let other = Key::new(b"another-secret-0123456789abcdef-xyz").unwrap();
    let stamp = Stamp {
        node: "nodeA1".into(),
        instance: 1,
        seq: 1,
        ts: now_ms(),
    };
    let op = Message::Op {
        op: news("other-secret"),
    };
    intruder.publish(&envelope::seal(&other, &stamp, &op)).await;

    // The positive control: a genuine broadcast after all of them.
    a.cluster.publish(news("genuine-2"));
    assert_eq!(client.text().await, r#"42["news","genuine-2"]"#);

    // None of the forged ones arrived (the client got genuine-2 right after genuine-1), the
    // client is still connected, nobody answered the intruder, A is still where it was.
    let sockets = a
        .cluster
        .fetch_sockets(Selection {
            ns: "/".into(),
            ..Selection::default()
        })
        .await;
    assert_eq!(sockets.len(), 1, "B's client is still there: {sockets:?}");
    assert!(
        intruder.inbox_empty().await,
        "the forged query got an answer"
    );
    assert_eq!(
        b.cluster.owner("nodeA1xxxxxxxxxxxxxx"),
        Some(a.server.addr),
        "B still forwards A's sessions to A"
    );
    assert_eq!(b.cluster.members(), ["nodeA1"]);
    assert_eq!(
        rejected(&b, "bad_mac"),
        6,
        "4 unsigned, the altered one, another secret"
    );
    assert_eq!(rejected(&b, "replayed"), 1, "the captured envelope");
    a.cluster.publish(news("genuine-3"));
    assert_eq!(client.text().await, r#"42["news","genuine-3"]"#);
}

#[tokio::test]
async fn authentic_envelopes_from_bad_names_stale_or_advertising_foreign_addresses_are_dropped() {
    // What a node that knows the secret but is misconfigured or compromised might send.
    let (a, b, exchange) = two_nodes("policy").await;
    let intruder = Intruder::join(&exchange).await;
    let mut client = client_of(&b).await;
    let key = Key::new(SECRET).unwrap();
    let stamp = |node: &str, seq: u64, ts: u64| Stamp {
        node: node.into(),
        instance: 99,
        seq,
        ts,
    };
    let hello = |addr: &str| Message::Hello {
        addr: addr.parse::<SocketAddr>().unwrap(),
        queue: "q".into(),
    };
    // The cloud metadata address and a public one: never forwarding targets by default.
    let metadata = envelope::seal(
        &key,
        &stamp("evil01", 1, now_ms()),
        &hello("169.254.169.254:80"),
    );
    intruder.publish(&metadata).await;
    let public = envelope::seal(&key, &stamp("evil01", 2, now_ms()), &hello("8.8.8.8:80"));
    intruder.publish(&public).await;
    // A name that is no node name (it would become a prefix of session ids).
    let op = Message::Op {
        op: news("bad-name"),
    };
    let bad_name = envelope::seal(&key, &stamp("../x", 1, now_ms()), &op);
    intruder.publish(&bad_name).await;
    // An envelope a minute old.
    let op = Message::Op { op: news("stale") };
    let stale = envelope::seal(&key, &stamp("evil01", 3, now_ms() - 60_000), &op);
    intruder.publish(&stale).await;
    // A reply queue name lapin cannot carry (used to panic the link: > 255 bytes).
    let fetch = Message::Fetch {
        request: 1,
        to: Selection {
            ns: "/".into(),
            ..Selection::default()
        },
        reply_to: "q".repeat(300),
    };
    let long_reply = envelope::seal(&key, &stamp("evil01", 4, now_ms()), &fetch);
    intruder.publish(&long_reply).await;

    a.cluster.publish(news("genuine"));
    assert_eq!(client.text().await, r#"42["news","genuine"]"#);
    assert_eq!(
        b.cluster.members(),
        ["nodeA1"],
        "no forwarding target added"
    );
    assert_eq!(rejected(&b, "advertise"), 2);
    assert_eq!(rejected(&b, "bad_node_name"), 1);
    assert_eq!(rejected(&b, "stale"), 1);
    assert_eq!(rejected(&b, "reply_to"), 1);
    assert!(b.cluster.stats().connected.load(Ordering::Acquire));
    // The link survived all of it: queries still work both ways.
    let all = Selection {
        ns: "/".into(),
        ..Selection::default()
    };
    assert_eq!(a.cluster.fetch_sockets(all.clone()).await.len(), 1);
    assert_eq!(b.cluster.fetch_sockets(all).await.len(), 0);
}

#[tokio::test]
async fn forwarded_requests_need_a_mark_made_with_the_secret() {
    let (a, b, _) = two_nodes("forward").await;
    let sid = a.server.polling_open().await;
    assert!(sid.starts_with("nodeA1"), "{sid}");
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");

    // Through B, genuinely forwarded to A: the session's packets come back.
    let headers = [("content-type", "text/plain;charset=UTF-8")];
    let reply = request(b.server.addr, Method::POST, &path, &headers, "40").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "ok"));
    let reply = request(b.server.addr, Method::GET, &path, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.text().starts_with("40{\"sid\":"), "{reply:?}");

    // Straight to the owner, claiming to be forwarded: refused, counted.
    for forged in ["1", "nodeB1 0 127.0.0.1 00", ""] {
        let reply = request(
            a.server.addr,
            Method::GET,
            &path,
            &[("x-halley-forwarded", forged)],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{forged:?}: {reply:?}");
        assert_eq!(reply.text(), r#"{"code":4,"message":"Forbidden"}"#);
    }
    // Also through B: a forged mark is never passed on as if B had made it.
    let reply = request(
        b.server.addr,
        Method::GET,
        &path,
        &[("x-halley-forwarded", "1")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    let refused = |node: &Node| {
        node.server
            .io
            .engine()
            .stats()
            .forward_refused
            .load(Ordering::Relaxed)
    };
    assert_eq!((refused(&a), refused(&b)), (3, 1));

    // A node outside any cluster refuses the header too.
    let lone = SioServer::start(builder().build()).await;
    let sid = lone.polling_open().await;
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let reply = request(
        lone.addr,
        Method::GET,
        &path,
        &[("x-halley-forwarded", "1")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
}

#[tokio::test]
async fn forwarded_requests_reuse_a_kept_alive_connection_and_an_upgrade_keeps_it() {
    let (a, b, _) = two_nodes("forward-pool").await;
    let opened = || {
        b.server
            .io
            .engine()
            .stats()
            .forward_connections
            .load(Ordering::Relaxed)
    };
    let text = [("content-type", "text/plain;charset=UTF-8")];
    let path = |sid: &str| format!("/socket.io/?EIO=4&transport=polling&sid={sid}");

    // Consecutive requests through B for a session of A: one connection from B to A carries
    // them all.
    let first = a.server.polling_open().await;
    let reply = request(b.server.addr, Method::POST, &path(&first), &text, "40").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "ok"));
    let reply = request(b.server.addr, Method::GET, &path(&first), &[], "").await;
    assert!(reply.text().starts_with("40{\"sid\":"), "{reply:?}");
    assert_eq!(opened(), 1);

    // The WebSocket upgrade through B: the idle connection becomes its tunnel, and A's pings
    // come through it.
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={first}",
        b.server.addr
    );
    let (mut ws, _) = within(
        "a websocket upgrade through B",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("the upgrade forwarded to A");
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    ws_send(&mut ws, "5").await;
    assert_eq!(ws_text(&mut ws).await, "2");
    ws_send(&mut ws, "3").await;
    assert_eq!(opened(), 1);

    // So the next forwarded requests need a connection of their own, which they share in turn.
    let second = a.server.polling_open().await;
    let reply = request(b.server.addr, Method::POST, &path(&second), &text, "40").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "ok"));
    let reply = request(b.server.addr, Method::GET, &path(&second), &[], "").await;
    assert!(reply.text().starts_with("40{\"sid\":"), "{reply:?}");
    assert_eq!(opened(), 2);

    // The tunnel still carries the first session: the pong kept it, the next ping arrives.
    assert_eq!(ws_text(&mut ws).await, "2");
}

#[tokio::test]
async fn an_envelope_captured_before_a_node_listened_is_not_taken_by_it() {
    let exchange = unique_exchange("replay-to-new-node");
    let a = start_node("nodeA1", &exchange).await;
    let link = Arc::clone(&a.cluster);
    eventually("A's link (it declares the exchange)", move || {
        link.stats().connected.load(Ordering::Acquire)
    })
    .await;
    let intruder = Intruder::join(&exchange).await;
    // A genuine broadcast from A, captured while no node B exists.
    let capture = intruder.capture("nodeA1", |m| matches!(m, Message::Op { .. }));
    let publish = async {
        // The tap consumes as soon as `capture` polls; A publishes until one is seen.
        loop {
            a.cluster.publish(news("captured"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let captured = tokio::select! {
        captured = capture => captured,
        () = publish => unreachable!("publishes forever"),
    };
    // Older than the clock tolerance when B binds its queue: time itself is the condition.
    tokio::time::sleep(envelope::BIND_SKEW + Duration::from_millis(500)).await;
    let b = start_node("nodeB1", &exchange).await;
    let cluster = Arc::clone(&b.cluster);
    eventually("B to list A (its queue is bound)", move || {
        cluster.members() == ["nodeA1"]
    })
    .await;
    let mut client = client_of(&b).await;
    // Replayed, then a genuine message as the control: the client's first frame tells.
    intruder.publish(&captured).await;
    a.cluster.publish(news("genuine"));
    assert_eq!(client.text().await, r#"42["news","genuine"]"#);
    assert!(rejected(&b, "replayed") >= 1, "counted");
}

#[tokio::test]
async fn a_node_back_from_a_broker_loss_refuses_confirmed_publishes_until_every_node_is_bound_again(
) {
    let exchange = unique_exchange("rejoin");
    let (relay_a, relay_b) = (Relay::start().await, Relay::start().await);
    let a = start_node_on("nodeA1", &exchange, relay_a.url()).await;
    let b = start_node_on("nodeB1", &exchange, relay_b.url()).await;
    for (node, other) in [(&a, "nodeB1"), (&b, "nodeA1")] {
        let cluster = Arc::clone(&node.cluster);
        eventually(&format!("{} to list {other}", cluster.name()), move || {
            cluster.members() == [other]
        })
        .await;
    }
    let mut client = client_of(&b).await;

    // Both lose the broker (their queues go with their connections); A comes back first.
    relay_b.accepting.store(false, Ordering::Release);
    relay_b.cut();
    relay_a.cut();
    relinked(&a).await;
    assert_eq!(a.cluster.rejoining(), ["nodeB1"]);
    assert_eq!(a.cluster.members(), ["nodeB1"], "not dropped as gone");
    // Confirmed now, it would never reach B's client: B has no queue bound.
    let refused = a.cluster.publish_confirmed(news("refused")).await;
    let reason = refused.expect_err("refused while B is not bound again");
    assert!(reason.starts_with("cluster rejoining"), "{reason}");
    assert!(reason.contains("nodeB1"), "{reason}");

    // B is back and says hello: A publishes again, and B's client gets it.
    relay_b.accepting.store(true, Ordering::Release);
    let cluster = Arc::clone(&a.cluster);
    eventually("B's hello to reach A", move || {
        cluster.rejoining().is_empty()
    })
    .await;
    a.cluster
        .publish_confirmed(news("accepted"))
        .await
        .expect("confirmed once B is bound again");
    assert_eq!(client.text().await, r#"42["news","accepted"]"#);
    assert!(a.cluster.stats().withdrawn.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_publish_whose_confirm_went_with_the_connection_may_have_been_delivered() {
    let exchange = unique_exchange("maybe-delivered");
    let relay_a = Relay::start().await;
    let a = start_node_on("nodeA1", &exchange, relay_a.url()).await;
    let b = start_node("nodeB1", &exchange).await;
    let cluster = Arc::clone(&a.cluster);
    eventually("A to list B", move || cluster.members() == ["nodeB1"]).await;
    let mut client = client_of(&b).await;

    // The broker routes A's publish to B, and its confirm never reaches A: the connection
    // goes first.
    relay_a.mute.store(true, Ordering::Release);
    let io = a.server.io.clone();
    let publish = tokio::spawn(async move {
        let emit = Emit {
            namespace: "/".into(),
            event: "news".into(),
            rooms: Vec::new(),
            args: vec![json!("maybe")],
            binary: Vec::new(),
            id: Some("maybe-1".into()),
        };
        deliver(&io, emit, Reach::Cluster).await
    });
    assert_eq!(client.text().await, r#"42["news","maybe"]"#);
    relay_a.cut();
    let answer = within("A's answer", publish).await.unwrap();
    match answer {
        Err(DeliverError::Cluster {
            maybe_delivered: true,
            ..
        }) => {}
        other => panic!("expected maybe delivered, got {other:?}"),
    }
    assert_eq!(a.cluster.stats().maybe_delivered.load(Ordering::Relaxed), 1);
}
