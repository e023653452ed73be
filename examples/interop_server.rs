//! The server the interoperability tests (`tests/interop/`) run the official Socket.IO clients
//! against: path `/socket.io/`, pingInterval 300 ms and pingTimeout 200 ms (so heartbeats happen
//! during the tests), CORS for any origin, the default connectTimeout.
//!
//! Namespace `/`:
//! - on connect: `welcome` `{"id": <socket id>}`;
//! - `echo` → `echo` with the same arguments (binary included);
//! - `ack-me` → acked with the same arguments (binary included);
//! - `ask` → emits `question` with the same arguments and an ack id; once the client acks,
//!   emits `answer` with the ack's arguments;
//! - `join` / `leave` `room` → joins / leaves it, acked with `true` if the client asked for an ack;
//! - `to-room` `room, payload` → `room-message` `payload` to the room, sender excluded;
//! - `to-room-all` `room, payload` → `room-message` `payload` to the room, sender included;
//! - `broadcast` `payload` → `broadcast` `payload` to every socket of `/`;
//! - `disconnect-me` → the server disconnects the socket from `/`;
//! - `drop-me` `<Engine.IO session id>` → the server closes that whole connection, as a crash or
//!   a restart would (the client is expected to reconnect). The id comes from the client because
//!   a Socket.IO socket does not expose its connection's (`socket.io.engine.id` in the clients);
//! - `burst` `count, size` → `count` (at most 1000) `burst` events `i, <size characters>` (at
//!   most 64 Ki), characters that every transport must escape: a downstream flood from a small
//!   request, past the 128 KiB stream limit;
//! - `status` `<socket id>, <Engine.IO session id>` → acked with
//!   `{"socket": <whether that socket is connected to />, "session": <whether that session lives>}`;
//! - `set-data` `value` → stored as the socket's `data`, acked with `true`; `get-data` → acked
//!   with the socket's `data`;
//! - `drop-me-then-emit` `<Engine.IO session id>, room` → closes that connection like `drop-me`,
//!   then emits `dropped` `<session id>` to every socket of `/` and `dropped-room` `<session id>`
//!   to `room`: events the dropped client can only get through connection state recovery.
//!
//! Namespace `/admin`: a middleware refuses sockets whose `auth.token` is not `"secret"` with
//! `{"message": "not authorized", "data": {"code": 401}}`; on connect `admin-welcome`
//! `{"id": <socket id>}`; `echo` as in `/`.
//!
//! Namespaces `/dyn-*` are created on demand; on connect `dyn-welcome` `<namespace path>`;
//! `echo` as in `/`.
//!
//! With `RECOVERY_MS=<window>` in the environment, connection state recovery is on (recovered
//! sockets skip middlewares, socket.io's default): CONNECT replies carry a `pid`, events their
//! offset as a last argument, and `welcome` is `{"id": <socket id>, "recovered": <bool>}`.
//!
//! Run: `cargo run --release --example interop_server` (PORT overrides the port 3000; PORT=0
//! picks a free one). The first line on stdout is `listening on http://127.0.0.1:<port>`.

use std::sync::Arc;
use std::time::Duration;

use halley::engine::{CloseReason, Cors};
use halley::server::{self, ServerConfig};
use halley::socketio::{ConnectError, Event, Halley, Socket};
use serde_json::{json, Value};

fn echo(socket: &Arc<Socket>, event: Event) {
    let _ = socket.emit_args("echo", event.args, event.binary);
}

fn ack_me(_socket: &Arc<Socket>, event: Event) {
    if let Some(ack) = event.ack {
        let _ = ack.send(event.args, event.binary);
    }
}

fn ask(socket: &Arc<Socket>, event: Event) {
    let reply = socket.emit_with_ack("question", event.args, event.binary);
    let socket = Arc::clone(socket);
    tokio::spawn(async move {
        match reply.await {
            Ok(reply) => {
                let _ = socket.emit_args("answer", reply.args, reply.binary);
            }
            Err(error) => tracing::debug!(id = socket.id(), %error, "no answer to question"),
        }
    });
}

/// The room name: the first argument, which must be a string.
fn room_arg(event: &Event) -> Option<String> {
    event
        .args
        .first()
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn join(socket: &Arc<Socket>, event: Event) {
    if let Some(room) = room_arg(&event) {
        // Acks whether it joined: a room beyond the server's room limits is refused.
        let joined = socket.join(room).is_ok();
        if let Some(ack) = event.ack {
            let _ = ack.send_data(&joined);
        }
    }
}

fn leave(socket: &Arc<Socket>, event: Event) {
    if let Some(room) = room_arg(&event) {
        socket.leave(&room);
        if let Some(ack) = event.ack {
            let _ = ack.send_data(&true);
        }
    }
}

/// The payload after the room name (`null` when absent).
fn room_payload(event: &Event) -> Value {
    event.args.get(1).cloned().unwrap_or(Value::Null)
}

fn to_room(socket: &Arc<Socket>, event: Event) {
    if let Some(room) = room_arg(&event) {
        let _ = socket.to(room).emit("room-message", &room_payload(&event));
    }
}

fn burst(socket: &Arc<Socket>, event: Event) {
    let arg = |i: usize, max: u64| {
        event
            .args
            .get(i)
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(max)
    };
    let (count, size) = (arg(0, 1000), arg(1, 64 * 1024));
    let filler: String = "</script>\u{2028}\"\\😀"
        .chars()
        .cycle()
        .take(size as usize)
        .collect();
    for i in 0..count {
        let _ = socket.emit_args("burst", vec![json!(i), json!(filler)], Vec::new());
    }
}

fn disconnect_me(socket: &Arc<Socket>, _event: Event) {
    socket.disconnect();
}

fn set_data(socket: &Arc<Socket>, event: Event) {
    socket.set_data(event.args.first().cloned().unwrap_or(Value::Null));
    if let Some(ack) = event.ack {
        let _ = ack.send_data(&true);
    }
}

fn get_data(socket: &Arc<Socket>, event: Event) {
    if let Some(ack) = event.ack {
        let _ = ack.send_data(&socket.data());
    }
}

fn admin_auth(socket: &Arc<Socket>) -> Result<(), ConnectError> {
    if socket.auth().get("token").and_then(Value::as_str) == Some("secret") {
        Ok(())
    } else {
        Err(ConnectError::new("not authorized").with_data(json!({ "code": 401 })))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let recovery = std::env::var("RECOVERY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    let mut builder = Halley::builder()
        .path("/socket.io/")
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .cors(Cors::AnyOrigin);
    if let Some(window) = recovery {
        builder = builder.connection_state_recovery(window, true);
    }
    let io = builder.build();

    // The handlers that broadcast to the whole namespace hold a handle on the server (a
    // reference cycle that lives as long as the process anyway).
    let to_room_all = {
        let io = io.clone();
        move |_socket: &Arc<Socket>, event: Event| {
            if let Some(room) = room_arg(&event) {
                let _ = io.to(room).emit("room-message", &room_payload(&event));
            }
        }
    };
    let broadcast = {
        let io = io.clone();
        move |_socket: &Arc<Socket>, event: Event| {
            if let Some(root) = io.of("/") {
                let _ = root
                    .broadcast()
                    .emit_args("broadcast", event.args, event.binary);
            }
        }
    };

    let drop_me = {
        let io = io.clone();
        move |_socket: &Arc<Socket>, event: Event| {
            let sid = event.args.first().and_then(Value::as_str).unwrap_or("");
            if let Some(conn) = io.engine().socket(sid) {
                conn.close(CloseReason::ServerClose);
            }
        }
    };
    let drop_me_then_emit = {
        let io = io.clone();
        move |_socket: &Arc<Socket>, event: Event| {
            let sid = event.args.first().and_then(Value::as_str).unwrap_or("");
            let Some(conn) = io.engine().socket(sid) else {
                return;
            };
            conn.close(CloseReason::ServerClose);
            // The connection is closed: nothing more reaches the client over it.
            let _ = io.emit("dropped", &sid);
            if let Some(room) = event.args.get(1).and_then(Value::as_str) {
                let _ = io.to(room).emit("dropped-room", &sid);
            }
        }
    };
    let status = {
        let io = io.clone();
        move |_socket: &Arc<Socket>, event: Event| {
            let arg = |i: usize| event.args.get(i).and_then(Value::as_str).unwrap_or("");
            let socket = io.of("/").is_some_and(|root| root.socket(arg(0)).is_some());
            let session = io.engine().socket(arg(1)).is_some();
            if let Some(ack) = event.ack {
                let _ = ack.send_data(&json!({ "socket": socket, "session": session }));
            }
        }
    };

    io.ns("/", move |socket| {
        let welcome = match recovery {
            Some(_) => json!({ "id": socket.id(), "recovered": socket.recovered() }),
            None => json!({ "id": socket.id() }),
        };
        let _ = socket.emit("welcome", &welcome);
    })
    .on("echo", echo)
    .on("ack-me", ack_me)
    .on("ask", ask)
    .on("join", join)
    .on("leave", leave)
    .on("to-room", to_room)
    .on("to-room-all", to_room_all)
    .on("broadcast", broadcast)
    .on("disconnect-me", disconnect_me)
    .on("burst", burst)
    .on("drop-me", drop_me)
    .on("drop-me-then-emit", drop_me_then_emit)
    .on("set-data", set_data)
    .on("get-data", get_data)
    .on("status", status);

    io.ns("/admin", |socket| {
        let _ = socket.emit("admin-welcome", &json!({ "id": socket.id() }));
    })
    .middleware(admin_auth)
    .on("echo", echo);

    io.dynamic_ns(
        |path| path.starts_with("/dyn-"),
        |socket| {
            // Dynamic namespaces have no namespace handle here: handlers go on the socket.
            socket.on("echo", echo);
            let _ = socket.emit("dyn-welcome", &socket.ns());
        },
    );

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    // Tests start this binary with PORT=0 and read the chosen port from this line.
    println!("listening on http://{}", listener.local_addr()?);
    server::serve(
        listener,
        io.router(),
        ServerConfig::default(),
        server::shutdown_signal(),
    )
    .await;
    Ok(())
}
