//! The RabbitMQ bridge under attack and failure, against a real RabbitMQ (`AMQP_URL`, default
//! the local guest account) and the real `halley` binary: a client's over-long event name is
//! refused and the bridge lives on; the outbound queue stops at its byte bound while the broker
//! is away; `/readyz` says 503 while a link is down and 200 once it is back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::binary::Halley;
use common::sio::WsClient;
use common::{request, within};
use futures_util::StreamExt;
use hyper::{Method, StatusCode};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::Value;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A channel with publisher confirms; waits for the broker to come up, then fails loudly.
async fn broker() -> (Connection, Channel) {
    let url = amqp_url();
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = loop {
        match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(conn) => break conn,
            Err(error) if Instant::now() > deadline => {
                panic!("no RabbitMQ at {url} ({error}): start it (rabbitmq-server -detached)")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, channel)
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("halley-test-{prefix}-{}-{nanos}", std::process::id())
}

async fn get_json(addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    let reply = request(addr, Method::GET, path, &[], "").await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

async fn metrics(admin: SocketAddr) -> String {
    let reply = request(admin, Method::GET, "/metrics", &[], "").await;
    reply.text().to_owned()
}

/// Polls the admin `/healthz` until `condition` holds (the bridge reconnects on a timer with
/// backoff: there is no event to wait on), for up to `limit`.
async fn health_until(
    admin: SocketAddr,
    what: &str,
    limit: Duration,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, health) = get_json(admin, "/healthz").await;
        if condition(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}; last /healthz: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `halley` binary with `args`, once its AMQP bridge is connected.
async fn bridged(args: &[&str]) -> Halley {
    let halley = Halley::start(args, &[]).await;
    health_until(
        halley.admin,
        "amqp connected",
        Duration::from_secs(10),
        |h| h["amqp"]["connected"] == true,
    )
    .await;
    halley
}

/// Polls `/readyz` on `addr` until it answers `status`, for up to `limit`.
async fn readyz_until(addr: SocketAddr, status: StatusCode, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (got, body) = get_json(addr, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not {status} within {limit:?}: {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A private queue bound to `exchange` (declared as halley declares it): sees every event the
/// bridge publishes there.
async fn tap(channel: &Channel, exchange: &str) -> Consumer {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.name().clone(),
            "test-tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
}

async fn publish_json(channel: &Channel, queue: &str, body: &str) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn consumers_of(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .consumer_count()
}

async fn delete_queue(channel: &Channel, queue: &str) {
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

const LONG_NAME_ERROR: &str = r#"431[{"error":"event name too long for AMQP (max 255 bytes)"}]"#;

#[tokio::test]
async fn an_over_long_event_name_is_refused_and_the_bridge_lives_on() {
    let (_conn, channel) = broker().await;
    let exchange = unique("events");
    let queue = unique("work");
    let mut published = tap(&channel, &exchange).await;
    let url = amqp_url();
    let halley = bridged(&[
        "--amqp-url",
        &url,
        "--amqp-queue",
        &queue,
        "--amqp-publish-exchange",
        &exchange,
    ])
    .await;
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;

    // The attack: a 300-byte event name, once without an ack and once with one.
    let long = "n".repeat(300);
    client.send(&format!(r#"42["{long}",1]"#));
    client.send(&format!(r#"421["{long}",2]"#));
    assert_eq!(client.text().await, LONG_NAME_ERROR);
    // 255 bytes is still a routing key.
    let longest = "k".repeat(255);
    client.send(&format!(r#"42["{longest}",3]"#));
    client.send(r#"42["ok",4]"#);

    // Only the valid events reach the exchange, in order: the refused ones never left halley.
    for (key, body) in [(longest.as_str(), "[3]"), ("ok", "[4]")] {
        let delivery = within("a published client event", published.next())
            .await
            .expect("the tap is open")
            .expect("a delivery");
        assert_eq!(delivery.routing_key.as_str(), key);
        assert_eq!(delivery.data, body.as_bytes());
    }
    // And the bridge still consumes: a work-queue message reaches the browser.
    publish_json(&channel, &queue, r#"{"after":true}"#).await;
    assert_eq!(client.text().await, r#"42["news",{"after":true}]"#);
    assert_eq!(
        consumers_of(&channel, &queue).await,
        1,
        "the bridge still consumes the queue"
    );

    let (_, health) = get_json(halley.admin, "/healthz").await;
    let amqp = &health["amqp"];
    assert_eq!(amqp["connected"], true, "{health}");
    assert_eq!(amqp["publish_refused"]["event_name"], 2, "{health}");
    assert_eq!(amqp["restarts"], 0, "{health}");
    assert_eq!(amqp["connects"], 1, "no reconnect was needed: {health}");
    let text = metrics(halley.admin).await;
    assert!(
        text.contains("halley_amqp_publish_refused_total{reason=\"event_name\"} 2"),
        "{text}"
    );
    assert!(text.contains("halley_amqp_restarts_total 0"), "{text}");
    let (status, _) = get_json(halley.addr, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn readyz_is_503_while_the_consumed_queue_is_gone_and_200_once_it_is_back() {
    // A real failure that ends the bridge's session: the broker deletes the queue it consumes
    // (cancelling the consumer), and with --amqp-queue-passive the bridge may not declare it
    // again, so it stays down, and says so, until the queue is back.
    let (_conn, channel) = broker().await;
    let queue = unique("passive");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let url = amqp_url();
    let halley = bridged(&[
        "--amqp-url",
        &url,
        "--amqp-queue",
        &queue,
        "--amqp-queue-passive",
    ])
    .await;
    assert_eq!(get_json(halley.addr, "/readyz").await.0, StatusCode::OK);
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;

    delete_queue(&channel, &queue).await;
    let down = readyz_until(
        halley.admin,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(down["amqp"]["connected"], false, "{down}");
    assert_eq!(
        get_json(halley.addr, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "unavailable" })
        ),
        "the public listener says the status, nothing more"
    );
    let (status, health) = get_json(halley.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "alive without the queue");
    assert_eq!(health["amqp"]["connected"], false, "{health}");

    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The bridge retries with backoff (at most 10 s between tries).
    readyz_until(halley.addr, StatusCode::OK, Duration::from_secs(30)).await;
    publish_json(&channel, &queue, r#""back""#).await;
    assert_eq!(client.text().await, r#"42["news","back"]"#);
    delete_queue(&channel, &queue).await;
}

#[tokio::test]
async fn the_outbound_queue_stops_at_its_byte_bound_while_the_broker_is_away() {
    // A port nothing listens on (1, reserved; not one picked and released, which a parallel
    // test could take): the bridge never connects, and client events pile up.
    let closed = 1;
    let url = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let max = 100_000u64;
    let halley = Halley::start(
        &[
            "--amqp-url",
            &url,
            "--amqp-publish-exchange",
            "halley.test.unreachable",
            "--amqp-outbound-max-bytes",
            &max.to_string(),
        ],
        &[],
    )
    .await;
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;
    // Ten events of 30 kB each, with acks: three fit in 100 kB, the rest are refused at once.
    let payload = "x".repeat(30_000);
    for id in 1..=10 {
        client.send(&format!(r#"42{id}["big","{payload}"]"#));
    }
    let busy = r#"[{"error":"server busy: the event was not published (AMQP backlog full)"}]"#;
    for id in 4..=10 {
        assert_eq!(client.text().await, format!("43{id}{busy}"));
    }
    let (_, health) = get_json(halley.admin, "/healthz").await;
    let amqp = &health["amqp"];
    assert_eq!(amqp["connected"], false, "{health}");
    assert_eq!(amqp["publish_refused"]["backlog_bytes"], 7, "{health}");
    let queued = amqp["outbound_bytes"].as_u64().expect("outbound_bytes");
    assert!(
        (90_000..=max).contains(&queued),
        "three events held, no more: {health}"
    );
    let text = metrics(halley.admin).await;
    assert!(
        text.contains(&format!("halley_amqp_outbound_bytes {queued}")),
        "{text}"
    );
    assert!(
        text.contains("halley_amqp_publish_refused_total{reason=\"backlog_bytes\"} 7"),
        "{text}"
    );
    assert_eq!(
        get_json(halley.addr, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn readyz_waits_for_the_cluster_link() {
    use halley::bridge::cluster::{Cluster, ClusterConfig};
    use halley::bridge::envelope::Key;
    use halley::bridge::health;

    let key = || Key::new(b"test-cluster-secret-0123456789abcdef").unwrap();
    let advertise: SocketAddr = "127.0.0.1:1".parse().unwrap();
    // Port 1: nothing listens there (see above).
    let closed = 1;
    let io = common::sio::builder().build();
    let mut config = ClusterConfig::new(
        format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"),
        advertise,
        key(),
    );
    config.exchange = unique("cluster");
    let away = Cluster::spawn(&io, config);
    let res = health::readyz(&io, None, Some(&away), true);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    let linked_io = common::sio::builder().build();
    let mut config = ClusterConfig::new(amqp_url(), advertise, key());
    config.exchange = unique("cluster");
    let linked = Cluster::spawn(&linked_io, config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while health::readyz(&linked_io, None, Some(&linked), true).status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the cluster link did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        health::readyz(&io, None, Some(&away), false).status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "still no broker on the closed port"
    );
}

#[tokio::test]
async fn a_cookie_too_big_for_an_amqp_frame_is_refused_without_costing_the_connection() {
    // RabbitMQ closes the whole connection on a header frame over its frame_max (128 kB by
    // default): a client's huge Cookie forwarded as `x-cookie` must not do that.
    let (_conn, channel) = broker().await;
    let exchange = unique("cookies");
    let mut published = tap(&channel, &exchange).await;
    let url = amqp_url();
    let halley = bridged(&[
        "--amqp-url",
        &url,
        "--amqp-publish-exchange",
        &exchange,
        "--amqp-forward-cookie",
        // The default (64 KiB) would refuse this head with 431 before any event: allow it,
        // to prove the bridge's own defence.
        "--max-header-bytes",
        "1048576",
    ])
    .await;
    let cookie = format!("session={}", "c".repeat(200_000));
    let mut big = WsClient::open_with(halley.addr, true, &[("cookie", &cookie)]).await;
    big.connect("/", None).await;
    big.send(r#"421["crumbs",1]"#);
    assert_eq!(
        big.text().await,
        r#"431[{"error":"event headers too large for the AMQP broker (the Cookie?)"}]"#
    );
    let mut small = WsClient::open(halley.addr, true).await;
    small.connect("/", None).await;
    small.send(r#"42["ok",2]"#);
    let delivery = within("a published client event", published.next())
        .await
        .expect("the tap is open")
        .expect("a delivery");
    assert_eq!(delivery.routing_key.as_str(), "ok");
    let (_, health) = get_json(halley.admin, "/healthz").await;
    assert_eq!(
        health["amqp"]["connects"], 1,
        "the connection survived: {health}"
    );
    assert_eq!(health["amqp"]["publish_refused"]["headers"], 1, "{health}");
}

/// A raw Socket.IO client over long-polling that reads `news` numbers until the server closes
/// its session, polling every `pace` (a client between two polls when the shutdown comes).
async fn poll_news_until_closed(addr: SocketAddr, pace: Duration) -> Vec<u64> {
    let path = "/socket.io/?EIO=4&transport=polling";
    let open = request(addr, Method::GET, path, &[], "").await;
    let sid = common::sid_in(&open.body).expect("an open packet");
    let path = format!("{path}&sid={sid}");
    let text = [("content-type", "text/plain;charset=UTF-8")];
    let post = |body: &'static str| request(addr, Method::POST, &path, &text, body);
    assert_eq!(post("40").await.text(), "ok");
    let mut news = Vec::new();
    loop {
        let reply = request(addr, Method::GET, &path, &[], "").await;
        if reply.status != StatusCode::OK {
            panic!("a poll failed before the close packet: {reply:?}");
        }
        let mut closed = false;
        for packet in reply.text().split('\u{1e}') {
            match packet {
                "1" => closed = true,
                "2" => assert_eq!(post("3").await.text(), "ok"),
                _ => {
                    if let Some(n) = packet
                        .strip_prefix(r#"42["news","#)
                        .and_then(|rest| rest.strip_suffix(']'))
                    {
                        news.push(n.parse().expect("a number"));
                    }
                }
            }
        }
        if closed {
            return news;
        }
        tokio::time::sleep(pace).await;
    }
}

#[tokio::test]
async fn sigterm_with_messages_flowing_leaves_each_one_delivered_or_in_rabbitmq() {
    const MESSAGES: u64 = 400;
    let (_conn, channel) = broker().await;
    let queue = unique("shutdown");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let url = amqp_url();
    let mut halley = bridged(&[
        "--amqp-url",
        &url,
        "--amqp-queue",
        &queue,
        "--demo",
        "false",
        "--shutdown-grace",
        "5",
    ])
    .await;
    let mut ws = WsClient::open(halley.addr, true).await;
    ws.connect("/", None).await;
    // Polls every 300 ms: most of its messages wait in its outbox between two polls.
    let poller = tokio::spawn(poll_news_until_closed(
        halley.addr,
        Duration::from_millis(300),
    ));
    // The poller has joined `/` once a message published now reaches two sockets.
    health_until(halley.admin, "two sockets", Duration::from_secs(5), |h| {
        h["sessions"] == 2
    })
    .await;

    let publisher = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for n in 1..=MESSAGES {
                let properties =
                    BasicProperties::default().with_content_type("application/json".into());
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        n.to_string().as_bytes(),
                        properties,
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                // A steady feed, so that messages are on their way when the signal comes.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            channel
        })
    };
    let mut over_ws = Vec::new();
    let mut terminated = false;
    loop {
        match ws.recv().await {
            common::sio::Frame::Text(text) => {
                if let Some(n) = text
                    .strip_prefix(r#"42["news","#)
                    .and_then(|rest| rest.strip_suffix(']'))
                {
                    over_ws.push(n.parse::<u64>().expect("a number"));
                }
            }
            common::sio::Frame::Closed(_) => break,
            other => panic!("unexpected frame {other:?}"),
        }
        // Mid-stream: SIGTERM once a hundred messages went through.
        if over_ws.len() == 100 && !terminated {
            halley.terminate().await;
            terminated = true;
        }
    }
    assert!(
        terminated,
        "the WebSocket closed before 100 messages: {over_ws:?}"
    );
    assert_eq!(
        halley.exited(Duration::from_secs(15)).await,
        Some(0),
        "a clean exit"
    );
    let over_polling = within("the polling client's last poll", poller)
        .await
        .expect("the poller");
    let channel = within("the publisher", publisher).await.unwrap();

    // What halley did not take is still in the queue.
    let mut left = std::collections::BTreeSet::new();
    while let Some(message) = channel
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let n: u64 = std::str::from_utf8(&message.delivery.data)
            .unwrap()
            .parse()
            .unwrap();
        left.insert(n);
    }
    delete_queue(&channel, &queue).await;
    assert!(
        !left.is_empty(),
        "the signal came while messages were flowing"
    );
    for (client, got) in [("websocket", &over_ws), ("polling", &over_polling)] {
        let got: std::collections::BTreeSet<u64> = got.iter().copied().collect();
        let missing: Vec<u64> = (1..=MESSAGES)
            .filter(|n| !got.contains(n) && !left.contains(n))
            .collect();
        assert_eq!(
            missing,
            Vec::<u64>::new(),
            "{client}: neither delivered nor in RabbitMQ ({} delivered, {} left)",
            got.len(),
            left.len()
        );
    }
}

/// Publishes `body` (JSON) to `queue` with `message_id` = `id`.
async fn publish_with_id(channel: &Channel, queue: &str, id: &str, body: &str) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(id.into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_whose_id_was_delivered_is_acked_and_dropped_and_order_is_reported() {
    let (_conn, channel) = broker().await;
    let queue = unique("dedupe");
    let url = amqp_url();
    let halley = bridged(&["--amqp-url", &url, "--amqp-queue", &queue]).await;
    let (_, health) = get_json(halley.admin, "/healthz").await;
    assert_eq!(
        health["amqp"]["queue_order"], "single-active-consumer",
        "a queue Halley declares keeps order: {health}"
    );
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;

    // What RabbitMQ does after a failover: the same message (same id) again. And messages
    // without an id, twice alike: those are never dropped.
    publish_with_id(&channel, &queue, "m-1", r#"{"n":1}"#).await;
    publish_with_id(&channel, &queue, "m-1", r#"{"n":1}"#).await;
    publish_with_id(&channel, &queue, "m-2", r#"{"n":2}"#).await;
    publish_json(&channel, &queue, r#"{"n":"anonymous"}"#).await;
    publish_json(&channel, &queue, r#"{"n":"anonymous"}"#).await;
    for expected in [
        r#"42["news",{"n":1}]"#,
        r#"42["news",{"n":2}]"#,
        r#"42["news",{"n":"anonymous"}]"#,
        r#"42["news",{"n":"anonymous"}]"#,
    ] {
        assert_eq!(client.text().await, expected);
    }
    let health = health_until(halley.admin, "5 acks", Duration::from_secs(10), |h| {
        h["amqp"]["acked"] == 5
    })
    .await;
    assert_eq!(health["amqp"]["duplicates"], 1, "{health}");
    let text = metrics(halley.admin).await;
    assert!(text.contains("halley_amqp_duplicates_total 1"), "{text}");
    // The queue is empty: the duplicate was acked, not left or dead-lettered.
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(declared.message_count(), 0);
    delete_queue(&channel, &queue).await;

    // An HTTP publish retried with the same id is delivered once.
    for _ in 0..2 {
        let reply = request(
            halley.admin,
            Method::POST,
            "/publish",
            &[("content-type", "application/json")],
            r#"{"event":"news","data":"once","id":"p-1"}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    client.send(r#"42["marker"]"#);
    let reply = request(
        halley.admin,
        Method::POST,
        "/publish",
        &[("content-type", "application/json")],
        r#"{"event":"news","data":"after"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(client.text().await, r#"42["news","once"]"#);
    assert_eq!(client.text().await, r#"42["news","after"]"#);
    let long_id = format!(r#"{{"event":"news","data":1,"id":"{}"}}"#, "i".repeat(256));
    let reply = request(
        halley.admin,
        Method::POST,
        "/publish",
        &[("content-type", "application/json")],
        long_id.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
}

#[tokio::test]
async fn an_existing_queue_without_a_single_active_consumer_is_used_and_reported() {
    let (_conn, channel) = broker().await;
    let queue = unique("unordered");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("halley-test-dlx".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    let url = amqp_url();
    let halley = bridged(&["--amqp-url", &url, "--amqp-queue", &queue]).await;
    let health = health_until(halley.admin, "queue order", Duration::from_secs(10), |h| {
        !h["amqp"]["queue_order"].is_null()
    })
    .await;
    assert_eq!(health["amqp"]["queue_order"], "not-guaranteed", "{health}");
    let mut client = WsClient::open(halley.addr, true).await;
    client.connect("/", None).await;
    publish_json(&channel, &queue, r#""used as it is""#).await;
    assert_eq!(client.text().await, r#"42["news","used as it is"]"#);
    delete_queue(&channel, &queue).await;
}
