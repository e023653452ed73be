//! The Admin UI across a cluster of two nodes on a real RabbitMQ (`AMQP_URL`, default the local
//! guest account): a UI logged in on node A lists node B's sockets, hears of B's changes and
//! statistics, and its actions reach B's sockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sio::{builder, SioServer, WsClient};
use common::{eventually, within};
use halley::admin_ui::{self, AdminUi, AdminUiConfig};
use halley::bridge::cluster::{Cluster, ClusterConfig};
use halley::bridge::envelope::Key;
use halley::socketio::observe::Observer;
use serde_json::{json, Value};

const SECRET: &[u8] = b"test-cluster-secret-0123456789abcdef";
const LOGIN: &str = r#"{"username":"admin","password":"secret"}"#;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

struct Node {
    server: SioServer,
    cluster: Arc<Cluster>,
    ui: Arc<AdminUi>,
}

async fn start_node(name: &str, exchange: &str) -> Node {
    let io = builder().node_name(name).build();
    let root = io.ns("/", |_| {});
    root.on("join", |socket, event| {
        socket
            .join(event.args[0].as_str().unwrap_or_default().to_owned())
            .unwrap();
    });
    let ui = admin_ui::install(
        &io,
        AdminUiConfig {
            credentials: Some(admin_ui::auth::Credentials::parse("admin:secret").unwrap()),
            server_id: Some(name.to_owned()),
            ..AdminUiConfig::default()
        },
    )
    .unwrap();
    let server = SioServer::start(io.clone()).await;
    let mut config = ClusterConfig::new(amqp_url(), server.addr, Key::new(SECRET).unwrap());
    config.node = name.to_owned();
    config.exchange = exchange.to_owned();
    config.heartbeat = Duration::from_millis(200);
    let cluster = Cluster::spawn(&io, config);
    Node {
        server,
        cluster,
        ui,
    }
}

/// The next `/admin` event that is not `server_stats`, and every `server_stats` seen meanwhile
/// goes to `stats`.
async fn change(ui: &mut WsClient, stats: &mut Vec<Value>) -> (String, Vec<Value>) {
    loop {
        let text = ui.text().await;
        let json = text
            .strip_prefix("42/admin,")
            .unwrap_or_else(|| panic!("expected an /admin event, got {text:?}"));
        let mut args: Vec<Value> = serde_json::from_str(json).unwrap();
        let name = args.remove(0).as_str().unwrap().to_owned();
        if name == "server_stats" {
            stats.push(args.remove(0));
        } else {
            return (name, args);
        }
    }
}

#[tokio::test]
async fn a_ui_on_one_node_sees_and_acts_on_every_node() {
    let exchange = format!("halley.test.admin-ui.{}", std::process::id());
    let a = start_node("nodeA7", &exchange).await;
    let b = start_node("nodeB7", &exchange).await;
    for (node, other) in [(&a, "nodeB7"), (&b, "nodeA7")] {
        let cluster = Arc::clone(&node.cluster);
        eventually(&format!("{} to list {other}", cluster.name()), move || {
            cluster.members() == [other]
        })
        .await;
    }
    let mut early = b.server.ws().await;
    let early_id = early.connect("/", None).await;

    let mut ui = a.server.ws().await;
    ui.connect("/admin", Some(LOGIN)).await;
    let mut stats = Vec::new();
    assert_eq!(change(&mut ui, &mut stats).await.0, "session");
    assert_eq!(change(&mut ui, &mut stats).await.0, "config");
    let (name, all) = change(&mut ui, &mut stats).await;
    assert_eq!(name, "all_sockets");
    let listed = all[0]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == early_id.as_str())
        .unwrap_or_else(|| panic!("node B's socket in {all:?}"))
        .clone();
    assert_eq!(listed["transport"], "websocket");
    assert_eq!(listed["clientId"], &early.open.sid[..12]);

    // Node B reports its changes once it counts a UI in the cluster.
    let ui_b = Arc::clone(&b.ui);
    eventually("node B to see the UI on node A", move || ui_b.watching()).await;
    let mut late = b.server.ws().await;
    let late_id = late.connect("/", None).await;
    let (name, args) = change(&mut ui, &mut stats).await;
    assert_eq!(
        (name.as_str(), &args[0]["id"]),
        ("socket_connected", &json!(late_id))
    );

    // An action on node A reaches the socket on node B, which reports the join.
    ui.send(&format!(r#"42/admin,["join","/","vip","{late_id}"]"#));
    let (name, args) = change(&mut ui, &mut stats).await;
    assert_eq!(&args[..3], json!(["/", "vip", late_id]).as_array().unwrap());
    assert_eq!(name, "room_joined");
    ui.send(&format!(
        r#"42/admin,["_disconnect","/",false,"{early_id}"]"#
    ));
    assert_eq!(within("node B's socket told", early.text()).await, "41");
    let (name, args) = change(&mut ui, &mut stats).await;
    assert_eq!(
        (name.as_str(), &args[1]),
        ("socket_disconnected", &json!(early_id))
    );

    // "Disconnect client" closes the whole connection, on the other node too.
    ui.send(&format!(r#"42/admin,["_disconnect","/",true,"{late_id}"]"#));
    assert_eq!(within("node B's socket told", late.text()).await, "41");
    late.expect_close().await;

    // Both nodes' statistics reach the UI.
    while !["nodeA7", "nodeB7"]
        .iter()
        .all(|id| stats.iter().any(|s| s["serverId"] == *id))
    {
        let text = ui.text().await;
        if let Some(json) = text.strip_prefix(r#"42/admin,["server_stats","#) {
            stats.push(serde_json::from_str(json.trim_end_matches(']')).unwrap());
        }
    }
}
