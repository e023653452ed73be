//! The benchmark app on socketioxide, a peer of Halley's `examples/bench_server.rs` with the same
//! behaviour: namespace `/`: `message` → `message-back` with the same arguments to the sender
//! and, when the client asked for an ack, an ack with the same arguments; `bcast` → `tick` with
//! the same arguments to every socket in `/`.
//!
//! socketioxide's standalone service (404 for anything but `/socket.io/`) served by hyper 1's
//! HTTP/1.1 connection builder with upgrades, one task per connection: no framework router in
//! front. socketioxide's default config, except the payload limit, to match Socket.IO's
//! `maxHttpBufferSize` of 1e6 bytes on both transports: `max_payload` (polling; socketioxide's
//! default is 1e5) and `ws_max_message_size` (WebSocket; default 64 MiB). Heartbeat 25 s / 20 s
//! is already its default and is spelled out.
//!
//! Run: `cargo run --release` (PORT overrides 8092; PORT=0 picks a free port). The first line on
//! stdout is `listening on http://127.0.0.1:<port>`. SIGTERM/SIGINT close every socket and exit 0.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeTuple, Serializer};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::SocketIo;
use tokio::net::{TcpListener, TcpSocket};

/// An event's arguments, however many. socketioxide sends a tuple-like value as several
/// arguments and fills a tuple-like type from all of them (any other type gets only the first),
/// so this serializes and deserializes as a tuple of variable length. `rmpv::Value` keeps binary
/// attachments binary (a `serde_json::Value` would turn them into arrays of numbers).
struct Args(Vec<rmpv::Value>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        // serde_json ignores the length; the visitor reads until the array ends.
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

fn port() -> Result<u16, String> {
    match std::env::var("PORT") {
        Ok(raw) if !raw.is_empty() => raw.parse().map_err(|_| format!("PORT={raw} is not a port")),
        _ => Ok(8092),
    }
}

/// Listens like Halley's server does: SO_REUSEADDR, backlog 1024.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = port()?;
    let (svc, io) = SocketIo::builder()
        .ping_interval(Duration::from_millis(25_000))
        .ping_timeout(Duration::from_millis(20_000))
        .max_payload(1_000_000)
        .ws_max_message_size(1_000_000)
        .build_svc();

    let all = io.clone();
    io.ns("/", async move |socket: SocketRef| {
        socket.on(
            "message",
            async |socket: SocketRef, Data(args): Data<Args>, ack: AckSender| {
                let _ = socket.emit("message-back", &args);
                // A no-op when the client asked for no ack.
                let _ = ack.send(&args);
            },
        );
        let all = all.clone();
        socket.on("bcast", async move |Data(args): Data<Args>| {
            let _ = all.emit("tick", &args).await;
        });
    });

    let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("listening on http://{}", listener.local_addr()?);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
    // Disconnect every socket (bounded), then let the runtime drop the connection tasks.
    let _ = tokio::time::timeout(Duration::from_secs(10), io.close()).await;
    Ok(())
}
