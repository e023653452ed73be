//! The demo's server side: a `/demo` namespace that never touches the application's namespaces.
//!
//! - `ping` with an ack is answered at once with the same arguments (the page measures the
//!   round trip per transport);
//! - `broadcast` `{text, sentAt}` is sent to every demo socket as `broadcast` (the page shows
//!   each transport's arrival delay);
//! - a live feed emits `tick` `{n, t}` (t = server time in ms since the epoch) every second to
//!   every demo socket, volatile: a slow client skips ticks rather than piling them up.
//!
//! The page itself is `demo.html`, plain HTML/CSS and ES3, loading only Halley's client.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::bridge::latency::now_ms;
use crate::socketio::{Event, Halley, Socket};

/// The page served at `/`.
pub const PAGE: &str = include_str!("demo.html");

/// The namespace the demo uses.
pub const NAMESPACE: &str = "/demo";

/// Declares `/demo` on `io` and starts its feed (on the current tokio runtime).
pub fn install(io: &Halley) {
    let ns = io.ns(NAMESPACE, |_socket| {});
    ns.on("ping", |_socket: &Arc<Socket>, event: Event| {
        if let Some(ack) = event.ack {
            let _ = ack.send(event.args, event.binary);
        }
    });
    let room = Arc::clone(&ns);
    ns.on("broadcast", move |_socket: &Arc<Socket>, event: Event| {
        // Only the text and the sender's clock travel on: the page's own fields, bounded.
        let data = event.args.into_iter().next().unwrap_or(Value::Null);
        let text: String = data["text"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(500)
            .collect();
        let sent_at = data["sentAt"].as_f64().unwrap_or(0.0);
        let _ = room.broadcast().emit(
            "broadcast",
            &json!({ "text": text, "sentAt": sent_at, "serverAt": now_ms() }),
        );
        if let Some(ack) = event.ack {
            let _ = ack.send_data(&true);
        }
    });
    let feed = Arc::clone(&ns);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            interval.tick().await;
            n += 1;
            if !feed.is_empty() {
                let _ = feed
                    .broadcast()
                    .volatile()
                    .emit("tick", &json!({ "n": n, "t": now_ms() }));
            }
        }
    });
}
