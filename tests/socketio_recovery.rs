//! Black-box tests of connection state recovery (socket.io ≥ 4.6's `connectionStateRecovery`):
//! a real Halley server per test on 127.0.0.1:0, spoken to with raw Socket.IO packets over
//! WebSocket frames (and, in one test, over polling).
//!
//! The wire contract under test: the CONNECT reply carries `pid`; events without an ack that are
//! not volatile carry their offset as their last argument; after a connection drops (not after a
//! deliberate disconnect), a CONNECT with auth `{"pid", "offset"}` within the window gets the
//! same socket id back, its rooms and data, and every event it missed, in order, before the
//! CONNECT reply. Missed events all come before the reply, so "nothing was replayed" is shown by
//! the reply being the first frame.
//!
//! That the server noticed a drop is awaited on the namespace's disconnect handler, which runs
//! after the session is kept. Only the test of the window's end waits for time itself to pass.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halley::socketio::{Builder, ConnectError, DisconnectReason, Socket};
use halley::Halley;
use serde_json::{json, Value};

use common::sio::*;

const WINDOW: Duration = Duration::from_secs(30);

fn recovering() -> Builder {
    builder().connection_state_recovery(WINDOW, true)
}

/// Sends CONNECT for `/` with `auth` and returns every frame up to and including the CONNECT
/// reply (replayed events come first), and the reply's JSON.
async fn connect_raw(
    client: &mut WsClient,
    auth: Option<&Value>,
) -> (Vec<Frame>, serde_json::Map<String, Value>) {
    let packet = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".to_owned(),
    };
    client.send(&packet);
    let mut before = Vec::new();
    loop {
        match client.recv().await {
            Frame::Text(text) if text.starts_with("40") => {
                let json = serde_json::from_str(&text[2..])
                    .unwrap_or_else(|e| panic!("CONNECT reply {text:?}: {e}"));
                return (before, json);
            }
            Frame::Closed(close) => {
                panic!("closed before the CONNECT reply ({close:?}): {before:?}")
            }
            other => before.push(other),
        }
    }
}

/// The string field `key` of a CONNECT reply.
#[track_caller]
fn field(reply: &serde_json::Map<String, Value>, key: &str) -> String {
    reply
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {reply:?}"))
        .to_owned()
}

/// The arguments of an EVENT frame (`42[...]` or `45N-[...]`), event name first.
#[track_caller]
fn event_args(frame: &Frame) -> Vec<Value> {
    let Frame::Text(text) = frame else {
        panic!("expected an EVENT, got {frame:?}")
    };
    let start = text
        .find('[')
        .unwrap_or_else(|| panic!("not an EVENT: {text:?}"));
    assert!(
        text.starts_with("42") || text.starts_with("45"),
        "not an EVENT: {text:?}"
    );
    match serde_json::from_str(&text[start..]) {
        Ok(Value::Array(args)) => args,
        other => panic!("EVENT {text:?} has no array: {other:?}"),
    }
}

/// The offset an EVENT frame carries: its last argument.
#[track_caller]
fn offset_of(frame: &Frame) -> String {
    let args = event_args(frame);
    args.last()
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no offset in {frame:?}"))
        .to_owned()
}

/// The event name and arguments of an EVENT frame, the offset (last argument) removed.
#[track_caller]
fn without_offset(frame: &Frame) -> Vec<Value> {
    let mut args = event_args(frame);
    args.pop();
    args
}

fn sorted(mut rooms: Vec<String>) -> Vec<String> {
    rooms.sort();
    rooms
}

/// A connected client, its server-side socket, the pid, and the offset of a first event it got.
struct Session {
    client: WsClient,
    socket: Arc<Socket>,
    pid: String,
    offset: String,
}

async fn session(server: &SioServer, probe: &mut Probe) -> Session {
    let mut client = server.ws().await;
    let (_, reply) = connect_raw(&mut client, None).await;
    let pid = field(&reply, "pid");
    let socket = probe.connected.next("the connect handler").await;
    socket.emit("seen", &0).unwrap();
    let offset = offset_of(&client.recv().await);
    Session {
        client,
        socket,
        pid,
        offset,
    }
}

/// Closes the client's WebSocket and waits until the server has let the socket go.
async fn drop_connection(session: &Session, probe: &mut Probe) -> DisconnectReason {
    session.client.close();
    let left = probe.left.next("the socket's disconnection").await;
    assert_eq!(left.id, session.socket.id());
    left.reason
}

fn resume(session: &Session) -> Value {
    json!({ "pid": session.pid, "offset": session.offset })
}

// ---------------------------------------------------------------------------------------------
// The wire format
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_reply_carries_sid_then_pid_when_recovery_is_on() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io).await;
    let mut client = server.ws().await;
    let (before, reply) = connect_raw(&mut client, None).await;
    assert!(before.is_empty());
    assert_eq!(reply.keys().collect::<Vec<_>>(), ["sid", "pid"]);
    let socket = probe.connected.next("the connect handler").await;
    assert_eq!(field(&reply, "sid"), socket.id());
    assert_ne!(field(&reply, "pid"), socket.id());
    assert!(!socket.recovered());

    let mut other = server.ws().await;
    let (_, other_reply) = connect_raw(&mut other, None).await;
    assert_ne!(field(&other_reply, "pid"), field(&reply, "pid"));
}

#[tokio::test]
async fn events_carry_an_offset_as_last_argument_unless_volatile_or_with_an_ack() {
    let io = recovering().build();
    let (ns, mut probe) = record(&io, "/", &["ask"]);
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    connect_raw(&mut client, None).await;
    let socket = probe.connected.next("the connect handler").await;

    socket.emit("own", &1).unwrap();
    io.emit("all", &2).unwrap();
    ns.to("nobody-here").emit("elsewhere", &0).unwrap();
    io.to(socket.id()).emit("by-room", &3).unwrap();
    socket.emit_volatile("volatile", &4).unwrap();
    ns.broadcast().volatile().emit("volatile-all", &5).unwrap();
    let pending = socket.emit_with_ack("question", vec![json!(6)], Vec::new());
    io.broadcast()
        .emit_args(
            "bin",
            vec![placeholder(0)],
            vec![Bytes::from_static(&[1, 2])],
        )
        .unwrap();

    let own = client.recv().await;
    assert_eq!(without_offset(&own), [json!("own"), json!(1)]);
    let all = client.recv().await;
    assert_eq!(without_offset(&all), [json!("all"), json!(2)]);
    let by_room = client.recv().await;
    assert_eq!(without_offset(&by_room), [json!("by-room"), json!(3)]);
    let offsets = [offset_of(&own), offset_of(&all), offset_of(&by_room)];
    // Distinct and in order: the `elsewhere` event took an offset between `all` and `by-room`.
    assert_ne!(offsets[0], offsets[1]);
    assert_ne!(offsets[1], offsets[2]);
    assert_eq!(client.text().await, r#"42["volatile",4]"#);
    assert_eq!(client.text().await, r#"42["volatile-all",5]"#);
    assert_eq!(client.text().await, r#"420["question",6]"#);
    let bin = client.recv().await;
    let Frame::Text(bin_text) = &bin else {
        panic!("{bin:?}")
    };
    assert!(bin_text.starts_with("451-["), "{bin_text}");
    assert_eq!(
        without_offset(&bin),
        [json!("bin"), placeholder(0)],
        "the offset follows the placeholders"
    );
    assert_eq!(client.binary().await, Bytes::from_static(&[1, 2]));

    // Acks, both ways, carry no offset.
    client.send(r#"430["answer"]"#);
    assert_eq!(pending.await.unwrap().args, [json!("answer")]);
    client.send(r#"427["ask"]"#);
    let asked = probe.events.next("the ask event").await;
    asked
        .event
        .ack
        .unwrap()
        .send(vec![json!("ok")], Vec::new())
        .unwrap();
    assert_eq!(client.text().await, r#"437["ok"]"#);
}

#[tokio::test]
async fn without_recovery_the_reply_has_no_pid_and_events_no_offset() {
    let io = builder().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws().await;
    let (_, reply) = connect_raw(&mut client, None).await;
    assert_eq!(reply.keys().collect::<Vec<_>>(), ["sid"]);
    let socket = probe.connected.next("the connect handler").await;
    socket.emit("own", &1).unwrap();
    io.emit("all", &2).unwrap();
    assert_eq!(client.text().await, r#"42["own",1]"#);
    assert_eq!(client.text().await, r#"42["all",2]"#);
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_dropped_connection_recovers_id_rooms_data_and_missed_events_in_order() {
    let io = recovering().build();
    let (ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    first.socket.join("r").unwrap();
    first.socket.set_data(json!({"user": "ann"}));
    let id = first.socket.id().to_owned();

    let reason = drop_connection(&first, &mut probe).await;
    assert_eq!(reason, DisconnectReason::TransportClose);

    // While it is away: what its rooms would have received, and what they would not.
    io.emit("all", &1).unwrap();
    io.to("r").emit("room", &2).unwrap();
    io.to("x").emit("other-room", &0).unwrap();
    ns.broadcast().except("r").emit("except-r", &0).unwrap();
    io.to(id.as_str()).emit("direct", &3).unwrap();
    ns.broadcast().volatile().emit("volatile", &0).unwrap();
    io.broadcast()
        .emit_args(
            "bin",
            vec![json!("b"), placeholder(0)],
            vec![Bytes::from_static(&[9, 8, 7])],
        )
        .unwrap();

    let mut client = server.ws().await;
    let (missed, reply) = connect_raw(&mut client, Some(&resume(&first))).await;
    assert_eq!(field(&reply, "sid"), id, "same socket id");
    assert_eq!(field(&reply, "pid"), first.pid, "same private id");
    assert_eq!(missed.len(), 5, "{missed:?}");
    assert_eq!(without_offset(&missed[0]), [json!("all"), json!(1)]);
    assert_eq!(without_offset(&missed[1]), [json!("room"), json!(2)]);
    assert_eq!(without_offset(&missed[2]), [json!("direct"), json!(3)]);
    assert_eq!(
        without_offset(&missed[3]),
        [json!("bin"), json!("b"), placeholder(0)]
    );
    assert_eq!(missed[4], Frame::Binary(Bytes::from_static(&[9, 8, 7])));

    let socket = probe.connected.next("the recovered socket").await;
    assert!(socket.recovered());
    assert_eq!(socket.id(), id);
    assert_eq!(sorted(socket.rooms()), sorted(vec![id.clone(), "r".into()]));
    assert_eq!(socket.data(), json!({"user": "ann"}));
    assert_eq!(ns.len(), 1);

    // Rooms are live again, and the offsets go on.
    io.to("r").emit("live", &4).unwrap();
    let live = client.recv().await;
    assert_eq!(without_offset(&live), [json!("live"), json!(4)]);

    // It can drop and recover again, from its newest offset.
    let second = Session {
        client,
        socket,
        pid: first.pid.clone(),
        offset: offset_of(&live),
    };
    drop_connection(&second, &mut probe).await;
    io.emit("again", &5).unwrap();
    let mut client = server.ws().await;
    let (missed, reply) = connect_raw(&mut client, Some(&resume(&second))).await;
    assert_eq!(field(&reply, "sid"), id);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(without_offset(&missed[0]), [json!("again"), json!(5)]);
}

#[tokio::test]
async fn a_ping_timeout_is_recoverable() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let mut client = server.ws_without_pongs().await;
    let (_, reply) = connect_raw(&mut client, None).await;
    let socket = probe.connected.next("the connect handler").await;
    socket.emit("seen", &0).unwrap();
    let offset = offset_of(&client.recv().await);
    let left = probe.left.next("the ping timeout").await;
    assert_eq!(left.reason, DisconnectReason::PingTimeout);
    io.emit("missed", &1).unwrap();

    let mut client = server.ws().await;
    let auth = json!({ "pid": field(&reply, "pid"), "offset": offset });
    let (missed, again) = connect_raw(&mut client, Some(&auth)).await;
    assert_eq!(field(&again, "sid"), socket.id());
    assert_eq!(missed.len(), 1);
    assert_eq!(without_offset(&missed[0]), [json!("missed"), json!(1)]);
    assert!(probe
        .connected
        .next("the recovered socket")
        .await
        .recovered());
}

#[tokio::test]
async fn a_connection_closed_by_the_server_is_recoverable() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    server
        .io
        .engine()
        .socket(first.client.open.sid.as_str())
        .expect("the engine session")
        .close(halley::engine::CloseReason::ServerClose);
    let left = probe.left.next("the forced close").await;
    assert_eq!(left.reason, DisconnectReason::ForcedServerClose);
    io.emit("missed", &1).unwrap();

    let mut client = server.ws().await;
    let (missed, reply) = connect_raw(&mut client, Some(&resume(&first))).await;
    assert_eq!(field(&reply, "sid"), first.socket.id());
    assert_eq!(without_offset(&missed[0]), [json!("missed"), json!(1)]);
}

#[tokio::test]
async fn recovery_works_over_polling() {
    let io = builder()
        .ping_interval(Duration::from_secs(60))
        .connection_state_recovery(WINDOW, true)
        .build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;

    let sid = server.polling_open().await;
    server.post(&sid, "40").await;
    let reply = server.poll(&sid).await;
    let reply: serde_json::Map<String, Value> =
        serde_json::from_str(reply[0].strip_prefix("40").expect("CONNECT reply")).unwrap();
    let socket = probe.connected.next("the connect handler").await;
    socket.emit("seen", &0).unwrap();
    let seen = server.poll(&sid).await;
    let offset = offset_of(&Frame::Text(seen[0].clone()));
    // The client closes its Engine.IO session, as socket.io-client's `engine.close()` does.
    server.post(&sid, "1").await;
    let left = probe.left.next("the socket's disconnection").await;
    assert_eq!(left.reason, DisconnectReason::TransportClose);
    io.emit("missed", &1).unwrap();

    let sid = server.polling_open().await;
    let auth = json!({ "pid": field(&reply, "pid"), "offset": offset });
    server.post(&sid, format!("40{auth}")).await;
    let mut packets = Vec::new();
    while !packets.iter().any(|p: &String| p.starts_with("40")) {
        packets.extend(server.poll(&sid).await);
    }
    assert_eq!(packets.len(), 2, "{packets:?}");
    assert_eq!(
        without_offset(&Frame::Text(packets[0].clone())),
        [json!("missed"), json!(1)]
    );
    let again: serde_json::Map<String, Value> = serde_json::from_str(&packets[1][2..]).unwrap();
    assert_eq!(field(&again, "sid"), socket.id());
    assert!(probe
        .connected
        .next("the recovered socket")
        .await
        .recovered());
}

// ---------------------------------------------------------------------------------------------
// No recovery
// ---------------------------------------------------------------------------------------------

/// Asserts a CONNECT with `auth` gets a fresh session: nothing replayed, a new id and pid, and
/// `recovered()` false.
async fn assert_fresh(server: &SioServer, probe: &mut Probe, old: &Session, auth: &Value) {
    let mut client = server.ws().await;
    let (before, reply) = connect_raw(&mut client, Some(auth)).await;
    assert!(before.is_empty(), "nothing replayed: {before:?}");
    assert_ne!(field(&reply, "sid"), old.socket.id());
    assert_ne!(field(&reply, "pid"), old.pid);
    let socket = probe.connected.next("the fresh socket").await;
    assert!(!socket.recovered());
    assert_eq!(socket.rooms(), [socket.id().to_owned()]);
    assert_eq!(socket.data(), Value::Null);
}

#[tokio::test]
async fn no_recovery_once_the_window_has_passed() {
    let window = Duration::from_millis(300);
    let io = builder().connection_state_recovery(window, true).build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    first.socket.join("r").unwrap();
    drop_connection(&first, &mut probe).await;
    io.emit("missed", &1).unwrap();
    // The passing of the window is the condition under test: no event stands for it.
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    assert_fresh(&server, &mut probe, &first, &resume(&first)).await;
}

#[tokio::test]
async fn no_recovery_after_the_client_left_the_namespace() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    first.client.send("41");
    let left = probe.left.next("the namespace disconnect").await;
    assert_eq!(left.reason, DisconnectReason::ClientNamespaceDisconnect);
    io.emit("missed", &1).unwrap();
    assert_fresh(&server, &mut probe, &first, &resume(&first)).await;
}

#[tokio::test]
async fn no_recovery_after_the_server_disconnected_the_socket() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let mut first = session(&server, &mut probe).await;
    first.socket.disconnect();
    assert_eq!(first.client.text().await, "41");
    let left = probe.left.next("the server's disconnect").await;
    assert_eq!(left.reason, DisconnectReason::ServerNamespaceDisconnect);
    assert_fresh(&server, &mut probe, &first, &resume(&first)).await;
}

#[tokio::test]
async fn an_unknown_pid_or_offset_gets_a_fresh_session_and_a_bad_offset_keeps_the_session() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    drop_connection(&first, &mut probe).await;

    let unknown_pid = json!({ "pid": "AAAAAAAAAAAAAAAAAAAAAA", "offset": first.offset });
    assert_fresh(&server, &mut probe, &first, &unknown_pid).await;
    let bad_offset = json!({ "pid": first.pid, "offset": "ffffffff.ffff" });
    assert_fresh(&server, &mut probe, &first, &bad_offset).await;
    let numbers = json!({ "pid": 1, "offset": 2 });
    assert_fresh(&server, &mut probe, &first, &numbers).await;
    let number_offset = json!({ "pid": first.pid, "offset": 2 });
    assert_fresh(&server, &mut probe, &first, &number_offset).await;

    // As in socket.io, a failed attempt leaves the session for the right offset.
    let mut client = server.ws().await;
    let (_, reply) = connect_raw(&mut client, Some(&resume(&first))).await;
    assert_eq!(field(&reply, "sid"), first.socket.id());
    // Once recovered, the session is taken: the same pid cannot recover a second socket.
    assert!(probe
        .connected
        .next("the recovered socket")
        .await
        .recovered());
    assert_fresh(&server, &mut probe, &first, &resume(&first)).await;
}

/// socket.io-client sends its pid without an offset until it has received a logged event:
/// socket.io gives it a fresh session; Halley replays it from where the session started.
#[tokio::test]
async fn a_pid_without_offset_is_replayed_from_where_the_session_started() {
    let io = recovering().build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    io.emit("before", &0).unwrap();
    for auth in [json!({}), json!({ "offset": null })] {
        let mut client = server.ws().await;
        let (_, reply) = connect_raw(&mut client, None).await;
        let socket = probe.connected.next("the connect handler").await;
        let first = Session {
            client,
            socket,
            pid: field(&reply, "pid"),
            offset: String::new(),
        };
        drop_connection(&first, &mut probe).await;
        io.emit("missed", &1).unwrap();

        let mut auth = auth.as_object().unwrap().clone();
        auth.insert("pid".into(), json!(first.pid));
        let mut client = server.ws().await;
        let (missed, reply) = connect_raw(&mut client, Some(&Value::Object(auth))).await;
        assert_eq!(field(&reply, "sid"), first.socket.id(), "same socket id");
        assert_eq!(
            missed.len(),
            1,
            "only what came after it connected: {missed:?}"
        );
        assert_eq!(without_offset(&missed[0]), [json!("missed"), json!(1)]);
        let socket = probe.connected.next("the recovered socket").await;
        assert!(socket.recovered());

        // Still no offset (it dropped before reading the replay): the start is kept.
        let again = Session {
            client,
            socket,
            pid: first.pid.clone(),
            offset: String::new(),
        };
        drop_connection(&again, &mut probe).await;
        let mut client = server.ws().await;
        let (missed, reply) = connect_raw(&mut client, Some(&json!({ "pid": first.pid }))).await;
        assert_eq!(field(&reply, "sid"), first.socket.id());
        assert_eq!(missed.len(), 1, "{missed:?}");
        let socket = probe.connected.next("the recovered socket").await;
        assert!(socket.recovered());
        socket.disconnect();
        let _ = probe.left.next("the deliberate disconnect").await;
        drop(client);
    }
}

#[tokio::test]
async fn a_replay_larger_than_half_the_outbox_gets_a_fresh_session() {
    let io = recovering().max_outbox(8).build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    drop_connection(&first, &mut probe).await;
    for i in 0..5 {
        io.emit("missed", &i).unwrap();
    }
    assert_fresh(&server, &mut probe, &first, &resume(&first)).await;
}

#[tokio::test]
async fn a_log_that_dropped_a_missed_event_gets_a_fresh_session() {
    let io = recovering().recovery_limits(2, 1 << 20, 100).build();
    let (_ns, mut probe) = record(&io, "/", &[]);
    let server = SioServer::start(io.clone()).await;
    let first = session(&server, &mut probe).await;
    drop_connection(&first, &mut probe).await;
    for i in 0..3 {
        io.emit("missed", &i).unwrap();
    }
    assert_fresh(&server, &mut probe, &first, &resume(&first)).await;
}

// ---------------------------------------------------------------------------------------------
// Middlewares
// ---------------------------------------------------------------------------------------------

/// A server whose `/` refuses sockets without `auth.token == "t"`, counting middleware and
/// hook runs.
fn guarded(skip_middlewares: bool) -> (Halley, Probe, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let io = builder()
        .connection_state_recovery(WINDOW, skip_middlewares)
        .build();
    let (ns, probe) = record(&io, "/", &[]);
    let middleware_runs = Arc::new(AtomicUsize::new(0));
    let runs = Arc::clone(&middleware_runs);
    ns.middleware(move |socket| {
        runs.fetch_add(1, Ordering::SeqCst);
        match socket.auth().get("token") {
            Some(token) if token == "t" => Ok(()),
            _ => Err(ConnectError::new("no token")),
        }
    });
    let hook_runs = Arc::new(AtomicUsize::new(0));
    let runs = Arc::clone(&hook_runs);
    io.connect_hook(move |_socket| {
        runs.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    (io, probe, middleware_runs, hook_runs)
}

async fn guarded_session(server: &SioServer, probe: &mut Probe) -> Session {
    let mut client = server.ws().await;
    let (_, reply) = connect_raw(&mut client, Some(&json!({"token": "t"}))).await;
    let socket = probe.connected.next("the connect handler").await;
    socket.emit("seen", &0).unwrap();
    let offset = offset_of(&client.recv().await);
    Session {
        client,
        socket,
        pid: field(&reply, "pid"),
        offset,
    }
}

#[tokio::test]
async fn a_recovered_socket_skips_middlewares_and_hooks_by_default() {
    let (io, mut probe, middleware_runs, hook_runs) = guarded(true);
    let server = SioServer::start(io).await;
    let first = guarded_session(&server, &mut probe).await;
    drop_connection(&first, &mut probe).await;
    assert_eq!(middleware_runs.load(Ordering::SeqCst), 1);
    assert_eq!(hook_runs.load(Ordering::SeqCst), 1);

    // No token this time: the middleware would refuse it, but it does not run.
    let mut client = server.ws().await;
    let (_, reply) = connect_raw(&mut client, Some(&resume(&first))).await;
    assert_eq!(field(&reply, "sid"), first.socket.id());
    assert!(probe
        .connected
        .next("the recovered socket")
        .await
        .recovered());
    assert_eq!(middleware_runs.load(Ordering::SeqCst), 1);
    assert_eq!(hook_runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_recovered_socket_runs_middlewares_when_told_to() {
    let (io, mut probe, middleware_runs, hook_runs) = guarded(false);
    let server = SioServer::start(io).await;
    let first = guarded_session(&server, &mut probe).await;
    drop_connection(&first, &mut probe).await;

    let mut client = server.ws().await;
    client.send(&format!("40{}", resume(&first)));
    assert_eq!(client.text().await, r#"44{"message":"no token"}"#);
    assert_eq!(middleware_runs.load(Ordering::SeqCst), 2);

    // The refusal used the session up, like any other attempt that got it.
    let with_token = json!({ "pid": first.pid, "offset": first.offset, "token": "t" });
    let mut client = server.ws().await;
    let (_, reply) = connect_raw(&mut client, Some(&with_token)).await;
    assert_ne!(field(&reply, "sid"), first.socket.id());
    assert_eq!(middleware_runs.load(Ordering::SeqCst), 3);
    assert_eq!(hook_runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn middlewares_and_hooks_see_a_recovered_socket_and_what_they_send_is_replayed() {
    let (io, mut probe, middleware_runs, hook_runs) = guarded(false);
    // A hook that broadcasts to the socket's room while the socket is not connected yet: the
    // replay, computed when the socket connects, must include it.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (hook_io, hook_seen) = (io.clone(), Arc::clone(&seen));
    io.connect_hook(move |socket| {
        *hook_seen.lock().unwrap() = Some((socket.recovered(), socket.rooms(), socket.data()));
        if socket.recovered() {
            hook_io.to("r").emit("during-hook", &2).unwrap();
        }
        async { Ok(()) }
    });
    let server = SioServer::start(io.clone()).await;
    let first = guarded_session(&server, &mut probe).await;
    first.socket.join("r").unwrap();
    first.socket.set_data(json!(42));
    let id = first.socket.id().to_owned();
    drop_connection(&first, &mut probe).await;
    io.to("r").emit("missed", &1).unwrap();

    let with_token = json!({ "pid": first.pid, "offset": first.offset, "token": "t" });
    let mut client = server.ws().await;
    let (missed, reply) = connect_raw(&mut client, Some(&with_token)).await;
    assert_eq!(field(&reply, "sid"), id);
    assert_eq!(missed.len(), 2, "{missed:?}");
    assert_eq!(without_offset(&missed[0]), [json!("missed"), json!(1)]);
    assert_eq!(without_offset(&missed[1]), [json!("during-hook"), json!(2)]);
    let socket = probe.connected.next("the recovered socket").await;
    assert!(socket.recovered());
    assert_eq!(socket.data(), json!(42));
    let (recovered, rooms, data) = seen.lock().unwrap().take().expect("the hook ran");
    assert!(recovered);
    assert_eq!(sorted(rooms), sorted(vec![id, "r".into()]));
    assert_eq!(data, json!(42));
    assert_eq!(middleware_runs.load(Ordering::SeqCst), 2);
    assert_eq!(hook_runs.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// A shared log (the cluster's RabbitMQ stream, here an in-memory stand-in that the test feeds
// to each node in log order; tests/interop/cluster-recovery.test.mjs runs the real one)
// ---------------------------------------------------------------------------------------------

/// Every record appended by any node, in log order; the test decides when each node reads.
#[derive(Default)]
struct TestLog {
    records: std::sync::Mutex<Vec<halley::socketio::adapter::LogRecord>>,
}

struct NodeLog {
    log: Arc<TestLog>,
    node: &'static str,
}

impl halley::socketio::adapter::SharedLog for NodeLog {
    fn append(&self, record: halley::socketio::adapter::LogRecord) {
        self.log.records.lock().unwrap().push(record);
    }
    fn append_confirmed(
        &self,
        record: halley::socketio::adapter::LogRecord,
    ) -> halley::socketio::adapter::BoxFuture<Result<(), String>> {
        self.append(record);
        Box::pin(async { Ok(()) })
    }
    fn tag(&self) -> u32 {
        0x5eed
    }
    fn node(&self) -> &str {
        self.node
    }
}

/// A node reading `log`: it applies records up to a position when told.
struct Node {
    io: Halley,
    read: usize,
}

impl Node {
    fn new(log: &Arc<TestLog>, name: &'static str) -> (Node, Probe) {
        let io = recovering().build();
        let (_ns, probe) = record(&io, "/", &[]);
        io.set_shared_log(Arc::new(NodeLog {
            log: Arc::clone(log),
            node: name,
        }));
        (Node { io, read: 0 }, probe)
    }

    /// Applies every record appended so far.
    fn catch_up(&mut self, log: &TestLog) {
        let records = log.records.lock().unwrap().clone();
        for (position, record) in records.into_iter().enumerate().skip(self.read) {
            self.io.apply_log(position as u64, record);
        }
        self.read = log.records.lock().unwrap().len();
    }
}

/// A client comes back through a node that has not read the log as far as the client's
/// offset (it read it on a node further on): it is restored at once, and the events it has
/// are not sent again when this node reads them.
#[tokio::test]
async fn an_offset_ahead_of_this_node_restores_and_what_the_client_has_is_not_sent_twice() {
    let log = Arc::new(TestLog::default());
    let (mut a, mut probe_a) = Node::new(&log, "nodeaa");
    let (mut b, mut probe_b) = Node::new(&log, "nodebb");
    let server_a = SioServer::start(a.io.clone()).await;
    let server_b = SioServer::start(b.io.clone()).await;

    let mut client = server_a.ws().await;
    let (_, reply) = connect_raw(&mut client, None).await;
    let socket = probe_a.connected.next("the connect handler").await;
    a.catch_up(&log);
    b.catch_up(&log);

    a.io.emit("e", &1).unwrap();
    a.io.emit("e", &2).unwrap();
    a.catch_up(&log);
    assert_eq!(without_offset(&client.recv().await), [json!("e"), json!(1)]);
    let second = client.recv().await;
    assert_eq!(without_offset(&second), [json!("e"), json!(2)]);
    let first = Session {
        client,
        socket,
        pid: field(&reply, "pid"),
        offset: offset_of(&second),
    };
    drop_connection(&first, &mut probe_a).await;

    // nodebb has read neither event.
    let mut client = server_b.ws().await;
    let (missed, reply) = connect_raw(&mut client, Some(&resume(&first))).await;
    assert_eq!(field(&reply, "sid"), first.socket.id(), "same socket id");
    assert!(missed.is_empty(), "nothing to replay yet: {missed:?}");
    assert!(probe_b
        .connected
        .next("the recovered socket")
        .await
        .recovered());

    // nodebb reads the two events (the client has them) and a third (it has not).
    a.io.emit("e", &3).unwrap();
    b.catch_up(&log);
    assert_eq!(without_offset(&client.recv().await), [json!("e"), json!(3)]);
}
