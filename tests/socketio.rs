//! Black-box tests of the Socket.IO v5 layer: a real Halley server per test on 127.0.0.1:0,
//! spoken to with raw Socket.IO packets over WebSocket frames (and, for some, over polling).
//!
//! Server-side observations (connect-handler calls, events, disconnect reasons, ack results)
//! travel back to the test on channels filled by the handlers. Every wait is on a frame, a
//! response or such a channel, under a hang guard. That something did *not* happen is shown by
//! what arrives next on the same ordered stream (a marker emitted afterwards).
//!
//! WebSocket tests run with pingInterval 300 ms / pingTimeout 200 ms; the client helper answers
//! pings from its own task. Polling tests use a long ping interval: their client polls only
//! when the test asks, and a ping left unanswered there would be the test's doing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use halley::socketio::limits::JoinRefusal;
use halley::socketio::{
    AckError, AckReply, ConnectError, DisconnectReason, EmitError, JoinError, Socket,
};
use halley::Halley;
use serde_json::{json, Value};

use common::sio::*;
use common::within;

/// A server with namespace `/` recorded (handlers for `events`).
async fn start_root(events: &[&str]) -> (SioServer, Arc<halley::socketio::Namespace>, Probe) {
    let io = builder().build();
    let (ns, probe) = record(&io, "/", events);
    (SioServer::start(io).await, ns, probe)
}

/// Parses the JSON object after `prefix` in `frame`.
#[track_caller]
fn json_after(frame: &str, prefix: &str) -> serde_json::Map<String, Value> {
    let json = frame
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}..., got {frame:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{frame:?}: {e}"))
}

/// Splits `42<id>[...]` (after `prefix`, e.g. `42` or `42/chat,`) into the ack id and the array.
#[track_caller]
fn ack_request(frame: &str, prefix: &str) -> (u64, Value) {
    let rest = frame
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}..., got {frame:?}"));
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    assert!(digits > 0, "no ack id in {frame:?}");
    let id = rest[..digits].parse().unwrap();
    let args = serde_json::from_str(&rest[digits..]).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
    (id, args)
}

fn sorted(mut rooms: Vec<String>) -> Vec<String> {
    rooms.sort();
    rooms
}

// ---------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_to_root_answers_only_a_sid_distinct_from_the_engine_sid() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws().await;
    client.send("40");
    let reply = client.text().await;
    let json = json_after(&reply, "40");
    assert_eq!(json.keys().collect::<Vec<_>>(), ["sid"], "{reply}");
    let sid = json["sid"].as_str().expect("string sid");
    assert!(!sid.is_empty());
    assert_ne!(
        sid, client.open.sid,
        "socket id must differ from the engine sid"
    );

    let socket = probe.connected.next("the connect handler").await;
    assert_eq!(socket.id(), sid);
    assert_eq!(socket.ns(), "/");
    assert_eq!(socket.auth(), json!({}));
    assert!(socket.connected());
    assert_eq!(ns.len(), 1);

    let mut other = server.ws().await;
    let other_sid = other.connect("/", None).await;
    assert_ne!(other_sid, sid);
}

#[tokio::test]
async fn connect_auth_payload_is_visible_in_socket_auth() {
    let io = builder().build();
    let (_root, mut root) = record(&io, "/", &[]);
    let (_chat, mut chat) = record(&io, "/chat", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;

    client
        .connect("/", Some(r#"{"token":"abc","n":[1,2]}"#))
        .await;
    let socket = root.connected.next("the root connect handler").await;
    assert_eq!(socket.auth(), json!({"token": "abc", "n": [1, 2]}));

    client.connect("/chat", Some(r#"{"token":"xyz"}"#)).await;
    let socket = chat.connected.next("the /chat connect handler").await;
    assert_eq!(socket.auth(), json!({"token": "xyz"}));
}

#[tokio::test]
async fn connect_to_custom_namespace_answers_with_namespace_prefix() {
    let io = builder().build();
    let (ns, mut probe) = record(&io, "/chat", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.send("40/chat,");
    let reply = client.text().await;
    let json = json_after(&reply, "40/chat,");
    assert_eq!(json.keys().collect::<Vec<_>>(), ["sid"], "{reply}");

    let socket = probe.connected.next("the /chat connect handler").await;
    assert_eq!(socket.ns(), "/chat");
    assert_eq!(json["sid"], socket.id());
    assert_eq!(ns.len(), 1);
}

#[tokio::test]
async fn connect_to_unknown_namespace_is_refused_and_connection_stays_usable() {
    let (server, _ns, mut probe) = start_root(&["ev"]).await;
    let mut client = server.ws().await;
    client.send("40/nope,");
    assert_eq!(
        client.text().await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    assert!(server.io.of("/nope").is_none());

    client.connect("/", None).await;
    client.send(r#"42["ev","still here"]"#);
    let got = probe.events.next("the event after the refusal").await;
    assert_eq!(got.event.args, [json!("still here")]);
}

// ---------------------------------------------------------------------------------------------
// Middlewares
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn middleware_refusal_sends_connect_error_with_message_and_data() {
    let io = builder().build();
    let (ns, mut probe) = record(&io, "/", &[]);
    ns.middleware(|_| Err(ConnectError::new("not authorized").with_data(json!({"code": 401}))));
    let (_open, _) = record(&io, "/open", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;

    client.send("40");
    assert_eq!(
        client.text().await,
        r#"44{"message":"not authorized","data":{"code":401}}"#
    );
    // The connection stays open for other namespaces. The refused CONNECT was handled before
    // this one (one ordered connection), and it never reached the connect handler.
    client.connect("/open", None).await;
    assert!(probe.connected.try_next().is_none());
    assert_eq!(ns.len(), 0);
}

#[tokio::test]
async fn middleware_refusal_without_data_has_no_data_key() {
    let io = builder().build();
    let (root, _) = record(&io, "/", &[]);
    root.middleware(|_| Err(ConnectError::new("nope")));
    let (private, _) = record(&io, "/private", &[]);
    private.middleware(|_| Err(ConnectError::new("members only")));
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;

    client.send("40");
    assert_eq!(client.text().await, r#"44{"message":"nope"}"#);
    client.send("40/private,");
    assert_eq!(
        client.text().await,
        r#"44/private,{"message":"members only"}"#
    );
}

#[tokio::test]
async fn refused_socket_leaves_no_trace_even_after_a_middleware_joined_rooms() {
    let io = builder().build();
    let (ns, mut probe) = record(&io, "/", &[]);
    let (seen_tx, mut seen) = channel::<Arc<Socket>>();
    // The first middleware joins rooms; the second refuses clients without a token.
    ns.middleware(move |socket| {
        socket.join("r").unwrap();
        socket.join("r2").unwrap();
        let _ = seen_tx.send(Arc::clone(socket));
        Ok(())
    })
    .middleware(|socket| match socket.auth().get("token") {
        Some(_) => Ok(()),
        None => Err(ConnectError::new("no token")),
    });
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;

    client.send("40");
    assert_eq!(client.text().await, r#"44{"message":"no token"}"#);
    let refused = seen.next("the middleware's socket").await;
    assert_eq!(ns.len(), 0);
    assert!(ns.socket(refused.id()).is_none());
    assert!(ns.to("r").sockets().is_empty());
    assert!(ns.to("r2").sockets().is_empty());
    assert!(ns.to(refused.id()).sockets().is_empty());
    assert!(refused.rooms().is_empty(), "{:?}", refused.rooms());
    assert!(!refused.connected());
    assert!(matches!(
        refused.emit("x", &1),
        Err(EmitError::Disconnected)
    ));

    // Nor in the connection: connecting again is not a "second CONNECT".
    let sid = client.connect("/", Some(r#"{"token":"t"}"#)).await;
    let accepted = probe.connected.next("the connect handler").await;
    assert_eq!(accepted.id(), sid);
    assert_ne!(accepted.id(), refused.id());
    assert_eq!(ns.len(), 1);
    let in_r: Vec<_> = ns
        .to("r")
        .sockets()
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(in_r, [sid.as_str()]);
    assert_eq!(
        sorted(accepted.rooms()),
        sorted(vec![sid, "r".into(), "r2".into()])
    );
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_event_reaches_handler_with_args_in_order() {
    let io = builder().build();
    let (_root, mut root) = record(&io, "/", &["ev"]);
    let (_chat, mut chat) = record(&io, "/chat", &["ev"]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/chat", None).await;

    client.send(r#"42["ev",1,"2",{"b":1,"a":2}]"#);
    let got = root.events.next("the root event").await;
    assert_eq!(got.name, "ev");
    assert_eq!(
        got.event.args,
        [json!(1), json!("2"), json!({"b": 1, "a": 2})]
    );
    // Object keys keep the client's order.
    assert_eq!(got.event.args[2].to_string(), r#"{"b":1,"a":2}"#);
    assert!(got.event.binary.is_empty());
    assert!(got.event.ack.is_none());

    client.send(r#"42/chat,["ev",true,null]"#);
    let got = chat.events.next("the /chat event").await;
    assert_eq!(got.socket.ns(), "/chat");
    assert_eq!(got.event.args, [json!(true), Value::Null]);
}

#[tokio::test]
async fn server_emit_arrives_as_event_packet_with_key_order_kept() {
    let io = builder().build();
    let (_root, mut root) = record(&io, "/", &[]);
    let (_chat, mut chat) = record(&io, "/chat", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/chat", None).await;
    let socket = root.connected.next("the root socket").await;
    let chat_socket = chat.connected.next("the /chat socket").await;

    socket.emit("ev", &json!({"z": 1, "a": 2})).unwrap();
    assert_eq!(client.text().await, r#"42["ev",{"z":1,"a":2}]"#);
    socket
        .emit_args(
            "multi",
            vec![json!(1), json!("two"), Value::Null],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(client.text().await, r#"42["multi",1,"two",null]"#);
    chat_socket.emit("ev", &[1, 2]).unwrap();
    assert_eq!(client.text().await, r#"42/chat,["ev",[1,2]]"#);
}

#[tokio::test]
async fn socket_handler_takes_precedence_over_namespace_handler() {
    let io = builder().build();
    let (tx, mut handled) = channel::<(&'static str, String)>();
    let socket_tx = tx.clone();
    let ns = io.ns("/", move |socket| {
        if socket.auth()["own"] == json!(true) {
            let tx = socket_tx.clone();
            socket.on("ev", move |socket, _| {
                let _ = tx.send(("socket ev", socket.id().to_owned()));
            });
        }
    });
    let ev_tx = tx.clone();
    ns.on("ev", move |socket, _| {
        let _ = ev_tx.send(("namespace ev", socket.id().to_owned()));
    });
    ns.on("other", move |socket, _| {
        let _ = tx.send(("namespace other", socket.id().to_owned()));
    });
    let server = SioServer::start(io).await;
    let mut own = server.ws().await;
    let own_sid = own.connect("/", Some(r#"{"own":true}"#)).await;
    let mut plain = server.ws().await;
    let plain_sid = plain.connect("/", None).await;

    own.send(r#"42["ev"]"#);
    assert_eq!(
        handled.next("ev from own").await,
        ("socket ev", own_sid.clone())
    );
    own.send(r#"42["other"]"#);
    assert_eq!(
        handled.next("other from own").await,
        ("namespace other", own_sid)
    );
    plain.send(r#"42["ev"]"#);
    assert_eq!(
        handled.next("ev from plain").await,
        ("namespace ev", plain_sid)
    );
}

// ---------------------------------------------------------------------------------------------
// Acknowledgements
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_ack_request_is_answered_with_ack_packet() {
    let io = builder().build();
    let (_root, mut root) = record(&io, "/", &["ev"]);
    let (_chat, mut chat) = record(&io, "/chat", &["ev"]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/chat", None).await;

    client.send(r#"425["ev","x"]"#);
    let got = root.events.next("the event awaiting an ack").await;
    assert_eq!(got.event.args, [json!("x")]);
    let ack = got.event.ack.expect("an ack sender");
    ack.send(vec![json!("ok"), json!({"n": 2})], Vec::new())
        .unwrap();
    assert_eq!(client.text().await, r#"435["ok",{"n":2}]"#);

    client.send(r#"42/chat,7["ev"]"#);
    let got = chat.events.next("the /chat event awaiting an ack").await;
    got.event
        .ack
        .expect("an ack sender")
        .send_data(&"fine")
        .unwrap();
    assert_eq!(client.text().await, r#"43/chat,7["fine"]"#);
}

#[tokio::test]
async fn server_ack_request_resolves_with_the_client_answer() {
    let (server, _ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    let first = socket.emit_with_ack("q", vec![json!(1)], Vec::new());
    let second = socket.emit_with_ack("q", vec![json!(2)], Vec::new());
    let (id1, args1) = ack_request(&client.text().await, "42");
    let (id2, args2) = ack_request(&client.text().await, "42");
    assert_eq!(args1, json!(["q", 1]));
    assert_eq!(args2, json!(["q", 2]));
    assert_ne!(id1, id2);

    // Answered out of order: each future gets its own answer.
    client.send(&format!(r#"43{id2}["b"]"#));
    client.send(&format!(r#"43{id1}["a",{{"x":1}}]"#));
    let reply1 = within("the first ack", first).await.expect("first ack");
    let reply2 = within("the second ack", second).await.expect("second ack");
    assert_eq!(
        reply1,
        AckReply {
            args: vec![json!("a"), json!({"x": 1})],
            binary: Vec::new()
        }
    );
    assert_eq!(reply2.args, [json!("b")]);
}

#[tokio::test]
async fn unanswered_server_ack_times_out_after_ack_timeout() {
    let ack_timeout = Duration::from_millis(200);
    let io = builder().ack_timeout(ack_timeout).build();
    let (_ns, mut probe) = record(&io, "/", &["ev"]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    let started = Instant::now();
    let pending = socket.emit_with_ack("q", Vec::new(), Vec::new());
    let (id, _) = ack_request(&client.text().await, "42");
    assert_eq!(
        within("the ack timeout", pending).await,
        Err(AckError::Timeout)
    );
    assert!(started.elapsed() >= ack_timeout);

    // A late answer is ignored; the socket carries on.
    client.send(&format!("43{id}[]"));
    client.send(r#"42["ev"]"#);
    probe.events.next("an event after the late ack").await;
    assert!(socket.connected());
}

#[tokio::test]
async fn pending_server_ack_fails_with_disconnected_when_the_socket_leaves() {
    let (server, _ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    let pending = socket.emit_with_ack("q", Vec::new(), Vec::new());
    ack_request(&client.text().await, "42");
    client.send("41");
    assert_eq!(
        within("the pending ack", pending).await,
        Err(AckError::Disconnected)
    );
    // Asking a gone socket fails at once.
    let late = socket.emit_with_ack("q", Vec::new(), Vec::new());
    assert_eq!(
        within("an ack on a gone socket", late).await,
        Err(AckError::Disconnected)
    );
}

// ---------------------------------------------------------------------------------------------
// Binary
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn binary_event_from_client_reaches_handler_with_its_attachments() {
    let (server, _ns, mut probe) = start_root(&["ev"]).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;

    client.send(r#"451-["ev",{"_placeholder":true,"num":0}]"#);
    client.send_binary(&[1, 2, 3]);
    let got = probe.events.next("the binary event").await;
    assert_eq!(got.event.args, [placeholder(0)]);
    assert_eq!(got.event.binary, [Bytes::from_static(&[1, 2, 3])]);

    client.send(r#"452-["ev",{"_placeholder":true,"num":0},"x",{"_placeholder":true,"num":1}]"#);
    client.send_binary(&[4]);
    client.send_binary(&[]);
    let got = probe.events.next("the event with two attachments").await;
    assert_eq!(got.event.args, [placeholder(0), json!("x"), placeholder(1)]);
    assert_eq!(got.event.binary, [Bytes::from_static(&[4]), Bytes::new()]);
}

#[tokio::test]
async fn server_binary_emit_sends_text_packet_then_attachment_frames() {
    let io = builder().build();
    let (_root, mut root) = record(&io, "/", &[]);
    let (_chat, mut chat) = record(&io, "/chat", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/chat", None).await;
    let socket = root.connected.next("the root socket").await;
    let chat_socket = chat.connected.next("the /chat socket").await;

    socket
        .emit_args(
            "bin",
            vec![placeholder(0), json!("x")],
            vec![Bytes::from_static(&[1, 2, 3])],
        )
        .unwrap();
    assert_eq!(
        client.text().await,
        r#"451-["bin",{"_placeholder":true,"num":0},"x"]"#
    );
    assert_eq!(client.binary().await, Bytes::from_static(&[1, 2, 3]));

    chat_socket
        .emit_args(
            "bin",
            vec![placeholder(0), placeholder(1)],
            vec![Bytes::from_static(&[9]), Bytes::from_static(&[8, 7])],
        )
        .unwrap();
    assert_eq!(
        client.text().await,
        r#"452-/chat,["bin",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(client.binary().await, Bytes::from_static(&[9]));
    assert_eq!(client.binary().await, Bytes::from_static(&[8, 7]));
}

#[tokio::test]
async fn binary_acks_work_both_ways() {
    let (server, _ns, mut probe) = start_root(&["ev"]).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    // Client → server, answered with binary.
    client.send(r#"451-3["ev",{"_placeholder":true,"num":0}]"#);
    client.send_binary(&[9]);
    let got = probe.events.next("the binary event awaiting an ack").await;
    assert_eq!(got.event.binary, [Bytes::from_static(&[9])]);
    got.event
        .ack
        .expect("an ack sender")
        .send(vec![placeholder(0)], vec![Bytes::from_static(&[8, 7])])
        .unwrap();
    assert_eq!(
        client.text().await,
        r#"461-3[{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(client.binary().await, Bytes::from_static(&[8, 7]));

    // Server → client, answered with binary.
    let pending = socket.emit_with_ack("q", Vec::new(), Vec::new());
    let (id, _) = ack_request(&client.text().await, "42");
    client.send(&format!(
        r#"461-{id}["ok",{{"_placeholder":true,"num":0}}]"#
    ));
    client.send_binary(&[5, 6]);
    let reply = within("the binary ack", pending).await.expect("ack");
    assert_eq!(reply.args, [json!("ok"), placeholder(0)]);
    assert_eq!(reply.binary, [Bytes::from_static(&[5, 6])]);
}

// ---------------------------------------------------------------------------------------------
// Rooms and broadcasts
// ---------------------------------------------------------------------------------------------

/// Three clients connected to `/`, with their server-side sockets.
async fn three(server: &SioServer, probe: &mut Probe) -> Vec<(WsClient, Arc<Socket>)> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let mut client = server.ws().await;
        let sid = client.connect("/", None).await;
        let socket = probe.connected.next("a socket").await;
        assert_eq!(socket.id(), sid);
        out.push((client, socket));
    }
    out
}

#[tokio::test]
async fn rooms_select_recipients_for_every_kind_of_broadcast() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut clients = three(&server, &mut probe).await;
    let io = &server.io;
    let (a, b, c) = (
        Arc::clone(&clients[0].1),
        Arc::clone(&clients[1].1),
        Arc::clone(&clients[2].1),
    );
    a.join("r").unwrap();
    b.join("r").unwrap();
    assert_eq!(sorted(a.rooms()), sorted(vec![a.id().into(), "r".into()]));

    assert_eq!(io.to("r").emit("m", &"room").unwrap(), 2);
    assert_eq!(io.to(c.id()).emit("m", &"just c").unwrap(), 1);
    assert_eq!(io.to(a.id()).emit("m", &"just a").unwrap(), 1);
    assert_eq!(a.to("r").emit("m", &"from a to r").unwrap(), 1);
    assert_eq!(a.broadcast().emit("m", &"not a").unwrap(), 2);
    assert_eq!(
        io.to("r").except(b.id()).emit("m", &"r minus b").unwrap(),
        1
    );
    assert_eq!(ns.broadcast().except("r").emit("m", &"not r").unwrap(), 1);
    assert_eq!(ns.broadcast().emit("m", &"all").unwrap(), 3);
    assert_eq!(io.to("r").to(c.id()).emit("m", &"r or c").unwrap(), 3);
    b.leave("r");
    assert_eq!(sorted(b.rooms()), [b.id().to_owned()]);
    assert_eq!(io.to("r").emit("m", &"after leave").unwrap(), 1);
    // A socket's own room can be left and joined again like any other.
    c.leave(c.id());
    assert!(c.rooms().is_empty());
    assert!(io.to(c.id()).sockets().is_empty());
    c.join(c.id()).unwrap();
    assert_eq!(io.to(c.id()).sockets().len(), 1);
    assert_eq!(io.emit("m", &"end").unwrap(), 3);

    let expected: [&[&str]; 3] = [
        &[
            "room",
            "just a",
            "r minus b",
            "all",
            "r or c",
            "after leave",
            "end",
        ],
        &["room", "from a to r", "not a", "all", "r or c", "end"],
        &["just c", "not a", "not r", "all", "r or c", "end"],
    ];
    for (i, (client, _)) in clients.iter_mut().enumerate() {
        for want in expected[i] {
            assert_eq!(
                client.text().await,
                format!(r#"42["m","{want}"]"#),
                "client {i}"
            );
        }
    }
}

#[tokio::test]
async fn join_is_refused_beyond_the_room_limits_and_the_own_room_does_not_count() {
    let io = builder().max_rooms(2).max_room_name(5).build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    socket.join("a").unwrap();
    socket.join("b").unwrap();
    assert_eq!(socket.join("c"), Err(JoinError::TooManyRooms { limit: 2 }));
    assert_eq!(socket.join("a"), Ok(()), "a room it is in costs nothing");
    // Its own room is 22 bytes long and outside the count.
    socket.leave(socket.id());
    socket.join(socket.id()).unwrap();
    assert_eq!(socket.rooms().len(), 3);
    socket.leave("a");
    assert_eq!(
        socket.join("abcdef"),
        Err(JoinError::NameTooLong { limit: 5 })
    );
    socket.join("c").unwrap();
    assert_eq!(io.to("c").emit("m", &1).unwrap(), 1);
    assert!(io.to("abcdef").sockets().is_empty());
    let stats = io.stats();
    assert_eq!(stats.joins_refused(JoinRefusal::TooManyRooms), 1);
    assert_eq!(stats.joins_refused(JoinRefusal::NameTooLong), 1);
    // A server-side join of many sockets skips the ones at their limit.
    io.to("c").join("d");
    assert!(io.to("d").sockets().is_empty());
    assert_eq!(client.text().await, r#"42["m",1]"#);
}

#[tokio::test]
async fn disconnected_socket_leaves_every_room() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut clients = three(&server, &mut probe).await;
    let (a, b) = (Arc::clone(&clients[0].1), Arc::clone(&clients[1].1));
    a.join("r").unwrap();
    b.join("r").unwrap();
    assert_eq!(ns.to("r").sockets().len(), 2);

    clients[0].0.close();
    let left = probe.left.next("A's disconnection").await;
    assert_eq!(left.id, a.id());
    let in_r: Vec<_> = ns
        .to("r")
        .sockets()
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(in_r, [b.id().to_owned()]);
    assert!(ns.to(a.id()).sockets().is_empty());
    assert!(a.rooms().is_empty(), "{:?}", a.rooms());
    assert!(ns.socket(a.id()).is_none());
    assert_eq!(ns.len(), 2);
    assert_eq!(server.io.to("r").emit("m", &1).unwrap(), 1);
    assert_eq!(clients[1].0.text().await, r#"42["m",1]"#);
}

#[tokio::test]
async fn binary_broadcast_reaches_every_client_with_identical_frames() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut clients = three(&server, &mut probe).await;
    let sent = ns
        .broadcast()
        .emit_args(
            "b",
            vec![placeholder(0), json!({"k": "v"})],
            vec![Bytes::from_static(b"\x00\xffbinary")],
        )
        .unwrap();
    assert_eq!(sent, 3);
    for (client, _) in &mut clients {
        assert_eq!(
            client.text().await,
            r#"451-["b",{"_placeholder":true,"num":0},{"k":"v"}]"#
        );
        assert_eq!(client.binary().await, Bytes::from_static(b"\x00\xffbinary"));
    }
}

// ---------------------------------------------------------------------------------------------
// Several namespaces on one connection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_namespaces_share_one_connection_and_leave_independently() {
    let io = builder().build();
    let (_root, mut root) = record(&io, "/", &["ev"]);
    let (chat_ns, mut chat) = record(&io, "/chat", &["ev"]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    let root_sid = client.connect("/", None).await;
    let chat_sid = client.connect("/chat", None).await;
    assert_ne!(root_sid, chat_sid);
    let root_socket = root.connected.next("the root socket").await;
    let chat_socket = chat.connected.next("the /chat socket").await;

    client.send(r#"42["ev","to root"]"#);
    client.send(r#"42/chat,["ev","to chat"]"#);
    let got = root.events.next("the root event").await;
    assert_eq!(
        (got.socket.id(), got.event.args),
        (root_sid.as_str(), vec![json!("to root")])
    );
    let got = chat.events.next("the /chat event").await;
    assert_eq!(
        (got.socket.id(), got.event.args),
        (chat_sid.as_str(), vec![json!("to chat")])
    );
    root_socket.emit("r", &1).unwrap();
    chat_socket.emit("c", &2).unwrap();
    assert_eq!(client.text().await, r#"42["r",1]"#);
    assert_eq!(client.text().await, r#"42/chat,["c",2]"#);
    // A broadcast stays in its namespace.
    assert_eq!(chat_ns.broadcast().emit("only chat", &3).unwrap(), 1);
    assert_eq!(server.io.emit("only root", &4).unwrap(), 1);
    assert_eq!(client.text().await, r#"42/chat,["only chat",3]"#);
    assert_eq!(client.text().await, r#"42["only root",4]"#);

    // Leaving /chat keeps /.
    client.send("41/chat,");
    let left = chat.left.next("the /chat disconnection").await;
    assert_eq!(
        (left.id.as_str(), left.reason),
        (
            chat_sid.as_str(),
            DisconnectReason::ClientNamespaceDisconnect
        )
    );
    assert_eq!(chat_ns.len(), 0);
    client.send(r#"42["ev","root again"]"#);
    let got = root.events.next("a root event after leaving /chat").await;
    assert_eq!(got.event.args, [json!("root again")]);
    root_socket.emit("r", &2).unwrap();
    assert_eq!(client.text().await, r#"42["r",2]"#);

    // Leaving every namespace keeps the Engine.IO connection: pings go on, and it can join again.
    client.send("41");
    let left = root.left.next("the root disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ClientNamespaceDisconnect);
    client.next_ping().await;
    client.next_ping().await;
    let again = client.connect("/chat", None).await;
    assert_ne!(again, chat_sid);
}

// ---------------------------------------------------------------------------------------------
// Disconnect reasons
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_namespace_disconnect_is_reported_as_such() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws().await;
    let sid = client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;
    client.send("41");
    let left = probe.left.next("the disconnection").await;
    assert_eq!(
        left,
        Left {
            id: sid,
            ns: "/".into(),
            reason: DisconnectReason::ClientNamespaceDisconnect
        }
    );
    assert!(!socket.connected());
    assert_eq!(ns.len(), 0);
    assert!(matches!(socket.emit("x", &1), Err(EmitError::Disconnected)));
}

#[tokio::test]
async fn server_disconnect_sends_disconnect_packet_and_keeps_the_connection() {
    let io = builder().build();
    let (root_ns, mut root) = record(&io, "/", &[]);
    let (_chat, mut chat) = record(&io, "/chat", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/chat", None).await;
    let root_socket = root.connected.next("the root socket").await;
    let chat_socket = chat.connected.next("the /chat socket").await;

    chat_socket.disconnect();
    assert_eq!(client.text().await, "41/chat,");
    let left = chat.left.next("the /chat disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ServerNamespaceDisconnect);

    root_socket.disconnect();
    assert_eq!(client.text().await, "41");
    let left = root.left.next("the root disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ServerNamespaceDisconnect);
    assert_eq!(root_ns.len(), 0);
    // Disconnecting twice sends nothing more: the next frame is the new CONNECT answer.
    root_socket.disconnect();
    client.connect("/", None).await;
}

#[tokio::test]
async fn close_connection_disconnects_every_namespace_and_closes_the_transport() {
    let io = builder().build();
    let (_root_ns, mut root) = record(&io, "/", &[]);
    let (_chat, mut chat) = record(&io, "/chat", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    client.connect("/chat", None).await;
    let root_socket = root.connected.next("the root socket").await;
    chat.connected.next("the /chat socket").await;

    root_socket.close_connection();
    assert_eq!(client.text().await, "41");
    client.expect_close().await;
    let left = root.left.next("the root disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ServerNamespaceDisconnect);
    let left = chat.left.next("the /chat disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ForcedServerClose);
}

#[tokio::test]
async fn polling_client_learns_of_a_server_close_on_its_next_poll() {
    let (server, _ns, mut probe) = start_root(&[]).await;
    let sid = server.polling_open().await;
    server.post(&sid, "40").await;
    let frames = server.poll(&sid).await;
    assert!(frames[0].starts_with("40{"), "{frames:?}");
    let socket = probe.connected.next("the socket").await;
    // No GET is parked: the close must wait for the next one.
    socket.close_connection();
    let frames = server.poll(&sid).await;
    assert_eq!(frames, vec!["41".to_owned(), "1".to_owned()]);
}

#[tokio::test]
async fn websocket_closed_by_client_is_transport_close() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws().await;
    let sid = client.connect("/", None).await;
    client.close();
    let left = probe.left.next("the disconnection").await;
    assert_eq!(
        (left.id, left.reason),
        (sid, DisconnectReason::TransportClose)
    );
    assert_eq!(ns.len(), 0);
}

#[tokio::test]
async fn missing_pong_is_ping_timeout() {
    let (server, _ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws_without_pongs().await;
    let sid = client.connect("/", None).await;
    let left = probe.left.next("the disconnection").await;
    assert_eq!((left.id, left.reason), (sid, DisconnectReason::PingTimeout));
    client.expect_close().await;
}

enum Out {
    Text(&'static str),
    Binary(&'static [u8]),
}

/// Each sequence, sent by a client connected to `/` (and `/chat` declared but not joined),
/// must close the connection with the socket's reason `reason`.
async fn assert_closes(cases: &[(&str, &[Out])], reason: DisconnectReason) {
    let io = builder().build();
    let (ns, mut probe) = record(&io, "/", &["ev"]);
    let _chat = record(&io, "/chat", &["ev"]);
    let server = SioServer::start(io).await;
    for (what, sends) in cases {
        let mut client = server.ws().await;
        let sid = client.connect("/", None).await;
        for send in *sends {
            match send {
                Out::Text(text) => client.send(text),
                Out::Binary(data) => client.send_binary(data),
            }
        }
        match client.recv().await {
            Frame::Closed(_) => {}
            other => panic!("{what}: expected the connection to close, got {other:?}"),
        }
        let left = probe.left.next(what).await;
        assert_eq!((left.id, left.reason), (sid, reason), "{what}");
        assert_eq!(ns.len(), 0, "{what}");
    }
    assert!(probe.events.try_next().is_none());
}

#[tokio::test]
async fn invalid_packets_close_the_connection_with_parse_error() {
    use Out::*;
    assert_closes(
        &[
            ("unknown packet type", &[Text("4abc")]),
            ("empty packet", &[Text("4")]),
            ("event with an object payload", &[Text("42{}")]),
            ("event with an empty array", &[Text("42[]")]),
            ("garbage before the payload", &[Text(r#"42abc["ev"]"#)]),
            ("unterminated JSON", &[Text(r#"42["ev""#)]),
            (
                "binary event without attachment count",
                &[Text(r#"45["ev"]"#)],
            ),
            ("too many attachments", &[Text(r#"4511-["ev"]"#)]),
            (
                "text while attachments are pending",
                &[
                    Text(r#"451-["ev",{"_placeholder":true,"num":0}]"#),
                    Text(r#"42["ev"]"#),
                ],
            ),
            ("binary frame without a pending packet", &[Binary(&[1, 2])]),
            (
                "client sends reserved event disconnect",
                &[Text(r#"42["disconnect"]"#)],
            ),
            (
                "client sends reserved event connect",
                &[Text(r#"42["connect",1]"#)],
            ),
        ],
        DisconnectReason::ParseError,
    )
    .await;
}

#[tokio::test]
async fn protocol_violations_close_the_connection() {
    use Out::*;
    assert_closes(
        &[
            (
                "event for a namespace not joined",
                &[Text(r#"42/chat,["ev"]"#)],
            ),
            ("ack for a namespace not joined", &[Text("43/chat,0[]")]),
            (
                "disconnect from a namespace not joined",
                &[Text("41/chat,")],
            ),
            ("second CONNECT to the same namespace", &[Text("40")]),
            (
                "CONNECT_ERROR from the client",
                &[Text(r#"44{"message":"x"}"#)],
            ),
        ],
        DisconnectReason::ParseError,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Connect timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_that_joins_no_namespace_in_time_is_closed() {
    let connect_timeout = Duration::from_millis(300);
    let io = builder().connect_timeout(connect_timeout).build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io).await;

    let started = Instant::now();
    let mut idle = server.ws().await;
    let mut joined = server.ws().await;
    joined.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    idle.expect_close().await;
    assert!(started.elapsed() >= connect_timeout);

    // The joined connection outlives its own timer: two more pings (≥ 600 ms after it opened).
    joined.next_ping().await;
    joined.next_ping().await;
    socket.emit("alive", &true).unwrap();
    assert_eq!(joined.text().await, r#"42["alive",true]"#);
    assert!(probe.left.try_next().is_none());
}

// ---------------------------------------------------------------------------------------------
// Dynamic namespaces
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dynamic_namespace_is_created_on_first_connect_when_accepted() {
    let io = builder().build();
    let (tx, mut connected) = channel::<String>();
    io.dynamic_ns(
        |path| path.starts_with("/dyn-"),
        move |socket| {
            let _ = tx.send(socket.ns().to_owned());
        },
    );
    let server = SioServer::start(io).await;
    assert!(server.io.of("/dyn-1").is_none());

    let mut client = server.ws().await;
    let sid = client.connect("/dyn-1", None).await;
    assert_eq!(
        connected.next("the dynamic connect handler").await,
        "/dyn-1"
    );

    client.send("40/other,");
    assert_eq!(
        client.text().await,
        r#"44/other,{"message":"Invalid namespace"}"#
    );
    let ns = server
        .io
        .of("/dyn-1")
        .expect("/dyn-1 exists after its first CONNECT");
    assert_eq!(ns.len(), 1);
    assert!(ns.socket(&sid).is_some());
    assert!(server.io.of("/other").is_none());

    // A second client joins the same namespace.
    let mut second = server.ws().await;
    second.connect("/dyn-1", None).await;
    assert_eq!(connected.next("the second connect").await, "/dyn-1");
    assert_eq!(ns.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Outbox policy (polling: no GET is issued, so nothing leaves the outbox)
// ---------------------------------------------------------------------------------------------

fn polling_builder() -> halley::socketio::Builder {
    Halley::builder()
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn full_outbox_drops_volatile_emits_and_disconnects_on_others() {
    let io = polling_builder().max_outbox(4).build();
    let (ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io).await;
    let sid = server.polling_open().await;
    server.post(&sid, "40").await;
    let socket = probe.connected.next("the socket").await;

    // The CONNECT answer plus three events fill the outbox.
    for i in 0..3 {
        socket.emit("e", &i).unwrap();
    }
    assert!(matches!(
        socket.emit_volatile("v", &0),
        Err(EmitError::OutboxFull)
    ));
    assert_eq!(ns.broadcast().volatile().emit("v", &1).unwrap(), 0);
    assert!(socket.connected());

    // The session survived, and the dropped packets are not in it.
    let packets = server.poll(&sid).await;
    assert_eq!(packets.len(), 4, "{packets:?}");
    assert!(packets[0].starts_with(r#"40{"sid":"#), "{packets:?}");
    assert_eq!(
        packets[1..],
        [r#"42["e",0]"#, r#"42["e",1]"#, r#"42["e",2]"#]
    );

    // Room again: a volatile emit is queued. A non-volatile one beyond capacity makes room by
    // dropping that volatile packet; the next, with nothing volatile left to drop, disconnects
    // the client.
    socket.emit_volatile("v", &2).unwrap();
    for i in 3..6 {
        socket.emit("e", &i).unwrap();
    }
    socket.emit("e", &6).unwrap();
    assert!(matches!(socket.emit("e", &7), Err(EmitError::OutboxFull)));
    let left = probe.left.next("the disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ForcedServerClose);
    assert!(!socket.connected());
    assert_eq!(ns.len(), 0);
    // The client reads what was queued, without the dropped packet, then the close.
    assert_eq!(
        server.poll(&sid).await,
        [
            r#"42["e",3]"#,
            r#"42["e",4]"#,
            r#"42["e",5]"#,
            r#"42["e",6]"#,
            "1"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Reserved event names
// ---------------------------------------------------------------------------------------------

fn reserved<T: std::fmt::Debug>(result: Result<T, EmitError>, name: &str) -> bool {
    match result {
        Err(EmitError::Reserved(n)) => n == name,
        other => panic!("emitting {name:?}: expected Reserved, got {other:?}"),
    }
}

#[tokio::test]
async fn reserved_event_names_cannot_be_emitted() {
    let (server, ns, mut probe) = start_root(&[]).await;
    let mut client = server.ws().await;
    client.connect("/", None).await;
    let socket = probe.connected.next("the socket").await;

    for name in [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ] {
        assert!(reserved(socket.emit(name, &1), name));
        assert!(reserved(
            socket.emit_args(name, Vec::new(), Vec::new()),
            name
        ));
        assert!(reserved(socket.emit_volatile(name, &1), name));
        assert!(reserved(ns.broadcast().emit(name, &1), name));
        assert!(reserved(server.io.emit(name, &1), name));
    }
    // Nothing went out: the next frame is a regular emit.
    socket.emit("fine", &1).unwrap();
    assert_eq!(client.text().await, r#"42["fine",1]"#);
}

// ---------------------------------------------------------------------------------------------
// Polling transport
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_carries_connect_events_acks_and_binary() {
    let io = polling_builder().build();
    let (ns, mut probe) = record(&io, "/", &["ev"]);
    let server = SioServer::start(io).await;
    let sid = server.polling_open().await;

    server.post(&sid, r#"40{"token":"p"}"#).await;
    let packets = server.poll(&sid).await;
    assert_eq!(packets.len(), 1, "{packets:?}");
    let json = json_after(&packets[0], "40");
    assert_eq!(json.keys().collect::<Vec<_>>(), ["sid"]);
    assert_ne!(json["sid"], sid.as_str());
    let socket = probe.connected.next("the socket").await;
    assert_eq!(json["sid"], socket.id());
    assert_eq!(socket.auth(), json!({"token": "p"}));

    // Two events in one POST, in order.
    server.post(&sid, "42[\"ev\",1]\x1e42[\"ev\",2]").await;
    assert_eq!(probe.events.next("event 1").await.event.args, [json!(1)]);
    assert_eq!(probe.events.next("event 2").await.event.args, [json!(2)]);

    // Client → server ack.
    server.post(&sid, r#"421["ev",3]"#).await;
    let got = probe.events.next("the event awaiting an ack").await;
    got.event
        .ack
        .expect("an ack sender")
        .send_data(&"ok")
        .unwrap();
    assert_eq!(server.poll(&sid).await, [r#"431["ok"]"#]);

    // Server → client ack.
    let pending = socket.emit_with_ack("q", vec![json!(4)], Vec::new());
    let packets = server.poll(&sid).await;
    assert_eq!(packets.len(), 1, "{packets:?}");
    let (id, args) = ack_request(&packets[0], "42");
    assert_eq!(args, json!(["q", 4]));
    server.post(&sid, format!(r#"43{id}["a"]"#)).await;
    let reply = within("the ack", pending).await.expect("ack");
    assert_eq!(reply.args, [json!("a")]);

    // Binary both ways (base64 `b` packets in the payload).
    server
        .post(
            &sid,
            "451-[\"ev\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID",
        )
        .await;
    let got = probe.events.next("the binary event").await;
    assert_eq!(got.event.args, [placeholder(0)]);
    assert_eq!(got.event.binary, [Bytes::from_static(&[1, 2, 3])]);
    socket
        .emit_args(
            "bin",
            vec![placeholder(0)],
            vec![Bytes::from_static(&[1, 2, 3])],
        )
        .unwrap();
    assert_eq!(
        server.poll(&sid).await,
        [r#"451-["bin",{"_placeholder":true,"num":0}]"#, "bAQID"]
    );

    server.post(&sid, "41").await;
    let left = probe.left.next("the disconnection").await;
    assert_eq!(left.reason, DisconnectReason::ClientNamespaceDisconnect);
    assert_eq!(ns.len(), 0);
}
