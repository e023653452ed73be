//! The Admin UI's server protocol (`halley::admin_ui`), black-box: the UI's login, what it is
//! sent on connect and on every socket and room change, its actions, read-only mode, the
//! confinement of its origin, and the refusals at start.
//!
//! The UI side is a raw Socket.IO client over WebSocket, speaking exactly what the official UI
//! (`@socket.io/admin-ui` 0.5.1) sends; the official UI itself runs in Chromium in
//! `tests/interop/admin-ui.test.mjs`.

mod common;

use halley::admin_ui::{self, AdminUiConfig, InstallError, Mode};
use halley::engine::Cors;
use halley::Halley;
use serde_json::{json, Value};

use common::binary;
use common::sio::*;
use common::within;

const LOGIN: &str = r#"{"username":"admin","password":"secret"}"#;

fn config() -> AdminUiConfig {
    AdminUiConfig {
        credentials: Some(admin_ui::auth::Credentials::parse("admin:secret").unwrap()),
        ..AdminUiConfig::default()
    }
}

/// A server with an application namespace `/` whose sockets join the room an event `join`
/// names and leave the one `leave` names, and the Admin UI installed with `ui`.
async fn start(io: Halley, ui: AdminUiConfig) -> SioServer {
    let root = io.ns("/", |_socket| {});
    root.on("join", |socket, event| {
        let room = event.args[0].as_str().unwrap_or_default().to_owned();
        socket.join(room).unwrap();
    });
    root.on("leave", |socket, event| {
        socket.leave(event.args[0].as_str().unwrap_or_default());
    });
    root.on("data", |socket, event| {
        socket.set_data(event.args[0].clone())
    });
    admin_ui::install(&io, ui).expect("install the admin UI");
    SioServer::start(io).await
}

/// The next frame of a UI socket, which must be an event of `/admin`: its name and arguments.
async fn event(ui: &mut WsClient) -> (String, Vec<Value>) {
    let text = ui.text().await;
    let json = text
        .strip_prefix("42/admin,")
        .unwrap_or_else(|| panic!("expected an /admin event, got {text:?}"));
    let mut args: Vec<Value> = serde_json::from_str(json).expect("event JSON");
    let name = args.remove(0).as_str().expect("event name").to_owned();
    (name, args)
}

/// The next event of a UI socket that is not `server_stats` (sent every 2 s whatever happens).
async fn change(ui: &mut WsClient) -> (String, Vec<Value>) {
    loop {
        let (name, args) = event(ui).await;
        if name != "server_stats" {
            return (name, args);
        }
    }
}

/// Logs a UI in with `auth`; returns its socket and the `all_sockets` list (checking
/// `session` and `config` on the way).
async fn login(server: &SioServer, auth: &str) -> (WsClient, Vec<Value>) {
    let mut ui = server.ws().await;
    ui.connect("/admin", Some(auth)).await;
    let (name, _) = change(&mut ui).await;
    let (name, config) = if name == "session" {
        change(&mut ui).await
    } else {
        (name, Vec::new())
    };
    assert_eq!(name, "config");
    assert!(config.is_empty() || config[0]["supportedFeatures"].is_array());
    let (name, all) = change(&mut ui).await;
    assert_eq!(name, "all_sockets");
    (ui, all[0].as_array().expect("a list").clone())
}

#[tokio::test]
async fn a_wrong_password_gets_invalid_credentials_and_nothing_else() {
    let server = start(builder().build(), config()).await;
    let mut app = server.ws().await;
    app.connect("/", None).await;
    let mut ui = server.ws().await;
    for auth in [
        r#"{"username":"admin","password":"nope"}"#,
        r#"{"username":"root","password":"secret"}"#,
        r#"{"username":"admin","password":42}"#,
        r#"{"sessionId":"0123456789abcdef"}"#,
        "{}",
    ] {
        ui.send(&format!("40/admin,{auth}"));
        assert_eq!(
            ui.text().await,
            r#"44/admin,{"message":"invalid credentials"}"#,
            "{auth}"
        );
    }
    // The same connection logs in: the next frame is the CONNECT reply, so nothing (no
    // socket, no statistics) reached it while it was refused.
    ui.send(&format!("40/admin,{LOGIN}"));
    assert!(ui.text().await.starts_with(r#"40/admin,{"sid":"#));
}

#[tokio::test]
async fn a_login_gets_its_session_the_features_and_every_socket_with_its_transport() {
    let server = start(builder().build(), config()).await;
    let mut app = server.ws().await;
    let app_id = app.connect("/", None).await;
    let app_sid = app.open.sid.clone();

    let mut ui = server.ws().await;
    ui.connect("/admin", Some(LOGIN)).await;
    let (name, session) = event(&mut ui).await;
    assert_eq!(name, "session");
    let session = session[0].as_str().expect("a session id").to_owned();
    assert_eq!(session.len(), 16);
    let (name, config) = event(&mut ui).await;
    assert_eq!(name, "config");
    assert_eq!(
        config[0],
        json!({"supportedFeatures": ["JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE",
            "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]})
    );
    let (name, all) = event(&mut ui).await;
    assert_eq!(name, "all_sockets");
    let all = all[0].as_array().unwrap();
    let listed = all
        .iter()
        .find(|s| s["id"] == app_id.as_str())
        .unwrap_or_else(|| panic!("the application socket in {all:?}"));
    assert_eq!(listed["nsp"], "/");
    assert_eq!(listed["transport"], "websocket");
    assert_eq!(listed["clientId"], &app_sid[..12]);
    assert_eq!(listed["rooms"], json!([app_id]));
    assert_eq!(listed["data"], json!({}));
    assert_eq!(listed["handshake"]["address"], "127.0.0.1");
    assert!(listed["handshake"]["issued"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(listed["handshake"]["query"]["transport"], "websocket");
    assert!(
        all.iter().any(|s| s["nsp"] == "/admin"),
        "the UI's own socket is listed too"
    );

    // The session id lets the UI back in without its password.
    let mut again = server.ws().await;
    again
        .connect("/admin", Some(&json!({ "sessionId": session }).to_string()))
        .await;
    // Its own socket_connected first (it is in the namespace already, and another UI
    // watches), then config: no new session for a session login.
    let (name, args) = change(&mut again).await;
    assert_eq!(
        (name.as_str(), &args[0]["nsp"]),
        ("socket_connected", &json!("/admin"))
    );
    assert_eq!(change(&mut again).await.0, "config");
}

#[tokio::test]
async fn every_socket_and_room_change_is_reported_in_order() {
    let server = start(builder().build(), config()).await;
    let (mut ui, _) = login(&server, LOGIN).await;

    let mut app = server.ws().await;
    let id = app.connect("/", None).await;
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "socket_connected");
    assert_eq!(args[0]["id"], id.as_str());
    assert_eq!(args[0]["transport"], "websocket");
    assert!(args[1].as_str().unwrap().ends_with('Z'), "an ISO timestamp");

    app.send(r#"42["join","news"]"#);
    let (name, args) = change(&mut ui).await;
    assert_eq!(
        (name.as_str(), &args[..3]),
        (
            "room_joined",
            &json!(["/", "news", id]).as_array().unwrap()[..]
        )
    );
    // Joining a room it is in already changes nothing, and tells nothing.
    app.send(r#"42["join","news"]"#);
    app.send(r#"42["leave","news"]"#);
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "room_left");
    assert_eq!(&args[..3], json!(["/", "news", id]).as_array().unwrap());

    app.send(r#"42["data",{"user":"ann"}]"#);
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "socket_updated");
    assert_eq!(
        args[0],
        json!({"id": id, "nsp": "/", "data": {"user": "ann"}})
    );

    app.send(r#"42["join","sports"]"#);
    assert_eq!(change(&mut ui).await.0, "room_joined");
    app.send("41");
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "socket_disconnected");
    assert_eq!(
        &args[..3],
        json!(["/", id, "client namespace disconnect"])
            .as_array()
            .unwrap()
    );
    // Then one room_left per room, its own id room included: the UI drops rooms on these only.
    let mut left = Vec::new();
    for _ in 0..2 {
        let (name, args) = change(&mut ui).await;
        assert_eq!(name, "room_left");
        left.push(args[1].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut expected = vec![id.clone(), "sports".to_owned()];
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn the_ui_actions_join_leave_and_disconnect_sockets() {
    let server = start(builder().build(), config()).await;
    let (mut ui, _) = login(&server, LOGIN).await;
    let mut app = server.ws().await;
    let id = app.connect("/", None).await;
    assert_eq!(change(&mut ui).await.0, "socket_connected");

    // The socket page's "add room", then "leave", both aimed at the socket by its id room.
    ui.send(&format!(r#"42/admin,["join","/","vip","{id}"]"#));
    let (name, args) = change(&mut ui).await;
    assert_eq!((name.as_str(), &args[1]), ("room_joined", &json!("vip")));
    let socket = server.io.of("/").unwrap().socket(&id).unwrap();
    assert!(socket.rooms().contains(&"vip".to_owned()));
    ui.send(&format!(r#"42/admin,["leave","/","vip","{id}"]"#));
    let (name, args) = change(&mut ui).await;
    assert_eq!((name.as_str(), &args[1]), ("room_left", &json!("vip")));
    // The underscored names some servers use do the same.
    ui.send(&format!(r#"42/admin,["_join","/","vip2","{id}"]"#));
    let (name, args) = change(&mut ui).await;
    assert_eq!((name.as_str(), &args[1]), ("room_joined", &json!("vip2")));
    ui.send(&format!(r#"42/admin,["_leave","/","vip2","{id}"]"#));
    let (name, args) = change(&mut ui).await;
    assert_eq!((name.as_str(), &args[1]), ("room_left", &json!("vip2")));
    // Malformed calls and unknown namespaces do nothing.
    ui.send(r#"42/admin,["join","/nowhere","x"]"#);
    ui.send(r#"42/admin,["join",1,2]"#);
    ui.send(r#"42/admin,["_disconnect","/","yes"]"#);

    // "Disconnect": the socket leaves its namespace, the client is told.
    ui.send(&format!(r#"42/admin,["_disconnect","/",false,"{id}"]"#));
    assert_eq!(app.text().await, "41");
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "socket_disconnected");
    assert_eq!(args[2], "server namespace disconnect");

    // "Disconnect client": the whole connection closes.
    let mut other = server.ws().await;
    let other_id = other.connect("/", None).await;
    ui.send(&format!(
        r#"42/admin,["_disconnect","/",true,"{other_id}"]"#
    ));
    assert_eq!(other.text().await, "41");
    other.expect_close().await;
}

#[tokio::test]
async fn readonly_offers_no_action_and_ignores_them() {
    let ui_config = AdminUiConfig {
        readonly: true,
        ..config()
    };
    let server = start(builder().build(), ui_config).await;
    let mut ui = server.ws().await;
    ui.connect("/admin", Some(LOGIN)).await;
    assert_eq!(change(&mut ui).await.0, "session");
    let (name, config) = change(&mut ui).await;
    assert_eq!(name, "config");
    assert_eq!(
        config[0],
        json!({"supportedFeatures": ["AGGREGATED_EVENTS", "ALL_EVENTS"]})
    );
    assert_eq!(change(&mut ui).await.0, "all_sockets");
    let mut app = server.ws().await;
    let id = app.connect("/", None).await;
    assert_eq!(change(&mut ui).await.0, "socket_connected");

    ui.send(&format!(r#"42/admin,["join","/","vip","{id}"]"#));
    ui.send(&format!(r#"42/admin,["_disconnect","/",true,"{id}"]"#));
    // Then a change made by the application: it is the next thing the UI hears of, so the
    // actions before it changed nothing.
    app.send(r#"42["join","probe"]"#);
    let (name, args) = change(&mut ui).await;
    assert_eq!((name.as_str(), &args[1]), ("room_joined", &json!("probe")));
    let socket = server.io.of("/").unwrap().socket(&id).unwrap();
    assert!(socket.connected());
    assert!(!socket.rooms().contains(&"vip".to_owned()));
}

#[tokio::test]
async fn production_mode_sends_statistics_only() {
    let ui_config = AdminUiConfig {
        mode: Mode::Production,
        ..config()
    };
    // Default heartbeat: the polling client below is not polled while the test waits.
    let server = start(Halley::builder().build(), ui_config).await;
    let sid = server.polling_open().await;
    server.post(&sid, "40").await;
    let mut ui = server.ws().await;
    ui.connect("/admin", Some(LOGIN)).await;
    assert_eq!(event(&mut ui).await.0, "session");
    let (name, config) = event(&mut ui).await;
    assert_eq!(name, "config");
    assert_eq!(
        config[0],
        json!({"supportedFeatures": ["JOIN", "LEAVE", "DISCONNECT",
        "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS"]})
    );
    let mut app = server.ws().await;
    app.connect("/", None).await;
    // No all_sockets, no socket_connected: statistics are next.
    let (name, stats) = event(&mut ui).await;
    assert_eq!(name, "server_stats");
    let stats = &stats[0];
    assert_eq!(stats["clientsCount"], 3, "{stats}");
    assert_eq!(stats["pollingClientsCount"], 1, "{stats}");
    assert!(stats["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "/", "socketsCount": 2})));
    assert_eq!(stats["pid"], std::process::id());
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let server = start(builder().build(), config()).await;
    for _ in 0..admin_ui::auth::MAX_FAILURES {
        let mut ui = server.ws().await;
        ui.send(r#"40/admin,{"username":"admin","password":"guess"}"#);
        assert_eq!(
            ui.text().await,
            r#"44/admin,{"message":"invalid credentials"}"#
        );
    }
    // Even the right password is refused now, unheard.
    let mut ui = server.ws().await;
    ui.send(&format!("40/admin,{LOGIN}"));
    let reply = ui.text().await;
    assert!(reply.starts_with("44/admin,"), "{reply}");
    assert!(reply.contains("too many failed logins"), "{reply}");
}

#[tokio::test]
async fn without_credentials_every_login_is_refused_unless_open() {
    let server = start(builder().build(), AdminUiConfig::default()).await;
    let mut ui = server.ws().await;
    ui.send(&format!("40/admin,{LOGIN}"));
    assert_eq!(
        ui.text().await,
        r#"44/admin,{"message":"invalid credentials"}"#
    );

    let open = AdminUiConfig {
        open: true,
        ..AdminUiConfig::default()
    };
    let server = start(builder().build(), open).await;
    let (_ui, all) = login(&server, "{}").await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn the_ui_origin_reaches_its_namespace_only() {
    let ui_config = AdminUiConfig {
        origins: vec!["http://ui.example".into()],
        app_cors: Cors::SameOrigin,
        ..config()
    };
    let io = builder().cors(ui_config.engine_cors()).build();
    let server = start(io, ui_config).await;
    let origin = [("origin", "http://ui.example")];
    let mut ui = WsClient::open_with(server.addr, true, &origin).await;
    ui.send("40");
    assert_eq!(ui.text().await, r#"44{"message":"Invalid namespace"}"#);
    ui.connect("/admin", Some(LOGIN)).await;
    // An origin the engine does not list is refused before any namespace.
    let reply = common::request(
        server.addr,
        hyper::Method::POST,
        "/socket.io/?EIO=4&transport=polling&sid=x",
        &[("origin", "http://other.example")],
        bytes::Bytes::from_static(b"40"),
    )
    .await;
    assert_eq!(reply.status, hyper::StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_application_namespace_of_the_same_name_is_refused() {
    let io = builder().build();
    io.ns("/admin", |_| {});
    assert!(matches!(
        admin_ui::install(&io, config()),
        Err(InstallError::Clash(ns)) if ns == "/admin"
    ));
    let io = builder().build();
    io.dynamic_ns(|path| path.starts_with("/a"), |_| {});
    assert!(admin_ui::install(&io, config()).is_err());
}

#[tokio::test]
async fn the_binary_refuses_a_clash_and_takes_credentials_from_the_environment() {
    // The demo serves `/demo`.
    let (code, stderr) = binary::Halley::refuse(&[
        "--admin-ui",
        "--admin-ui-no-auth",
        "--admin-ui-namespace",
        "/demo",
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/demo"), "{stderr}");

    // A malformed hash is refused without being repeated.
    let (code, stderr) = binary::Halley::refuse(&[
        "--admin-ui",
        "--admin-ui-auth",
        "admin:$2b$10$not-a-real-hash",
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--admin-ui-auth"), "{stderr}");
    assert!(!stderr.contains("not-a-real-hash"), "{stderr}");

    let halley =
        binary::Halley::start(&["--admin-ui"], &[("HALLEY_ADMIN_UI_AUTH", "admin:secret")]).await;
    let mut ui = WsClient::open(halley.addr, true).await;
    ui.send(r#"40/admin,{"username":"admin","password":"wrong"}"#);
    assert_eq!(
        ui.text().await,
        r#"44/admin,{"message":"invalid credentials"}"#
    );
    within("login", ui.connect("/admin", Some(LOGIN))).await;
    let metrics = common::request(
        halley.admin,
        hyper::Method::GET,
        "/metrics",
        &[],
        bytes::Bytes::new(),
    )
    .await;
    let text = metrics.text();
    assert!(
        text.contains(r#"halley_admin_ui_logins_total{outcome="refused"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"halley_admin_ui_logins_total{outcome="accepted"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_burst_of_changes_becomes_a_snapshot() {
    let io = builder().max_rooms(5_000).build();
    let server = start(io, config()).await;
    let (mut ui, _) = login(&server, LOGIN).await;
    let mut app = server.ws().await;
    let id = app.connect("/", None).await;
    assert_eq!(change(&mut ui).await.0, "socket_connected");
    const JOINS: usize = 3_000;
    for i in 0..JOINS {
        app.send(&format!(r#"42["join","r{i}"]"#));
    }
    // Beyond 1,000 changes a second, the UI gets its whole state again instead.
    let mut joined = 0;
    let snapshot = loop {
        let (name, args) = change(&mut ui).await;
        match name.as_str() {
            "room_joined" => joined += 1,
            "all_sockets" => break args,
            other => panic!("unexpected {other}"),
        }
    };
    assert!(
        joined < JOINS,
        "{joined} room_joined events, then a snapshot"
    );
    let listed = snapshot[0]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("the socket in the snapshot")
        .clone();
    let rooms = listed["rooms"].as_array().unwrap().len();
    assert!(
        rooms > joined,
        "the snapshot has the rooms the events left out: {rooms}"
    );
}

#[tokio::test]
async fn events_are_reported_when_asked_for() {
    let ui_config = AdminUiConfig {
        events: true,
        ..config()
    };
    let io = builder().build();
    let server = start(io, ui_config).await;
    server.io.of("/").unwrap().on("ping-me", |socket, event| {
        let _ = socket.emit("pong", &event.args[0]);
    });
    let (mut ui, _) = login(&server, LOGIN).await;
    let mut app = server.ws().await;
    let id = app.connect("/", None).await;
    assert_eq!(change(&mut ui).await.0, "socket_connected");
    // With an ack: the UI sees the name and data only.
    app.send(r#"421["ping-me",{"n":1}]"#);
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "event_received");
    assert_eq!(
        &args[..3],
        json!(["/", id, ["ping-me", {"n": 1}]]).as_array().unwrap()
    );
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "event_sent");
    assert_eq!(
        &args[..3],
        json!(["/", id, ["pong", {"n": 1}]]).as_array().unwrap()
    );
    assert!(args[3].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.text().await, r#"42["pong",{"n":1}]"#);
}

#[tokio::test]
async fn an_upgrade_to_websocket_is_reported() {
    // Default heartbeat: the polling session is not polled while the test runs.
    let server = start(Halley::builder().build(), config()).await;
    let (mut ui, _) = login(&server, LOGIN).await;
    let sid = server.polling_open().await;
    server.post(&sid, "40").await;
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "socket_connected");
    assert_eq!(args[0]["transport"], "polling");
    let id = args[0]["id"].as_str().unwrap().to_owned();

    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        server.addr
    );
    let (mut ws, _) = within("the upgrade", tokio_tungstenite::connect_async(url))
        .await
        .expect("websocket");
    common::ws_send(&mut ws, "2probe").await;
    assert_eq!(common::ws_text(&mut ws).await, "3probe");
    common::ws_send(&mut ws, "5").await;
    let (name, args) = change(&mut ui).await;
    assert_eq!(name, "socket_updated");
    assert_eq!(
        args[0],
        json!({"id": id, "nsp": "/", "transport": "websocket"})
    );
}
