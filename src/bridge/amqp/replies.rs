//! Client acks waiting for the backend's reply, matched by correlation id on this connection's
//! reply queue. When the connection goes, every ack still waiting is told.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::socketio::AckSender;

/// Client acks waiting for the backend's reply, by correlation id. It lives as long as the
/// session whose reply queue the backend answers to: when that ends (connection lost, or the
/// task panicking), no reply can come any more, and each ack still waiting is told so.
#[derive(Default)]
pub(super) struct Pending(Mutex<HashMap<String, AckSender>>);

impl Pending {
    pub(super) fn insert(&self, id: String, ack: AckSender) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, ack);
    }

    pub(super) fn remove(&self, id: &str) -> Option<AckSender> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let acks = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, ack) in acks.drain() {
            let error = "the connection to the backend was lost before it replied";
            let _ = ack.send(vec![json!({ "error": error })], Vec::new());
        }
    }
}

/// Answers a client's ack from the backend's reply: a JSON array is the ack's arguments, any
/// other JSON value or text is its one argument. The correlation id came from the broker
/// already parsed as a short string: it is only looked up, never converted.
pub(super) fn answer(pending: &Pending, reply: lapin::message::Delivery) {
    let Some(id) = reply.properties.correlation_id().as_ref() else {
        return;
    };
    let Some(ack) = pending.remove(id.as_str()) else {
        return;
    };
    let args = match serde_json::from_slice::<Value>(&reply.data) {
        Ok(Value::Array(args)) => args,
        Ok(value) => vec![value],
        Err(_) => vec![Value::String(
            String::from_utf8_lossy(&reply.data).into_owned(),
        )],
    };
    let _ = ack.send(args, Vec::new());
}
