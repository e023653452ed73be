//! The cluster seam: what a broadcast does on the other nodes.
//!
//! A [`BroadcastOperator`](super::BroadcastOperator) acts on this node's sockets, then hands
//! the same operation, as a [`RemoteOp`], to the [`Adapter`] (when one is installed, e.g. the
//! RabbitMQ cluster link in `crate::bridge::cluster`). Every other node applies it to its own
//! sockets with [`Halley::apply_remote`](super::Halley::apply_remote), which never forwards it
//! again: each socket lives on exactly one node, so each gets the operation exactly once.
//!
//! The types are plain data (serde) so that an adapter can put them on any wire.

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::recovery::SessionState;

/// Which sockets of a namespace an operation is for: those in any of `rooms` (all when
/// empty), minus those in any of `except`, minus the socket `exclude`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub ns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
}

/// An operation to apply to the selected sockets of another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RemoteOp {
    Emit {
        to: Selection,
        event: String,
        args: Vec<Value>,
        #[serde(default, with = "base64_list", skip_serializing_if = "Vec::is_empty")]
        binary: Vec<Bytes>,
        #[serde(default)]
        volatile: bool,
        /// The backend message's id (see [`super::dedupe`]): a node that saw it already drops
        /// the emit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Join {
        to: Selection,
        room: String,
    },
    Leave {
        to: Selection,
        room: String,
    },
    Disconnect {
        to: Selection,
        /// Close each selected socket's whole connection (Socket.IO's
        /// `disconnectSockets(true)`), not only its namespace.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        close: bool,
    },
}

/// One record of a cluster's shared log (see [`SharedLog`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum LogRecord {
    /// A logged event (not volatile, no ack): every node delivers it to its own selected
    /// sockets, with the record's position as its offset.
    Emit {
        to: Selection,
        event: String,
        args: Vec<Value>,
        #[serde(default, with = "base64_list", skip_serializing_if = "Vec::is_empty")]
        binary: Vec<Bytes>,
        /// The backend message's id: the first record with an id in log order is delivered,
        /// later ones are dropped, on every node alike.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A socket's recoverable state, written by the node that holds it.
    Session {
        ns: String,
        node: String,
        state: SessionState,
        id: String,
        pid: String,
        rooms: Vec<String>,
        #[serde(default)]
        data: Value,
        /// The first log position the socket was connected for (see `Persisted::since`).
        #[serde(default)]
        since: u64,
    },
}

/// A replicated, totally ordered log that every node of a cluster reads (the RabbitMQ stream
/// of `crate::bridge::log`): with connection state recovery on, logged events and sessions go
/// through it, so that every node numbers events alike and a client may recover through any
/// node. Each node, the writer too, applies each record with
/// [`Halley::apply_log`](super::Halley::apply_log) in log order; a node's own session records
/// are applied when written and skipped when read back.
pub trait SharedLog: Send + Sync + 'static {
    /// Appends `record`, without waiting.
    fn append(&self, record: LogRecord);
    /// Appends `record`; resolves once the broker has it for sure, or with the reason not.
    fn append_confirmed(&self, record: LogRecord) -> BoxFuture<Result<(), String>>;
    /// The tag of the offsets of this log (the same on every node).
    fn tag(&self) -> u32;
    /// This node's name, as its session records carry it.
    fn node(&self) -> &str;
}

/// One socket, as a cross-node query reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// The Socket.IO socket id.
    pub id: String,
    pub ns: String,
    pub rooms: Vec<String>,
    /// The node serving it (empty without a cluster).
    pub node: String,
    /// What the server's observer says of it (the Admin UI's description: transport,
    /// handshake, data), when one is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// A boxed future, as adapters return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Carries operations to the other nodes.
pub trait Adapter: Send + Sync + 'static {
    /// Sends `op` to every other node, without waiting (a broadcast from a handler cannot).
    fn publish(&self, op: RemoteOp);
    /// Sends `op` to every other node; resolves once the transport has taken it for sure
    /// (a broker's publisher confirm), or with the reason it did not.
    fn publish_confirmed(&self, op: RemoteOp) -> BoxFuture<Result<(), String>>;
    /// The sockets of every other node that match `to`. Nodes that do not answer in the
    /// adapter's time limit are left out.
    fn fetch_sockets(&self, to: Selection) -> BoxFuture<Vec<SocketInfo>>;
    /// This node's name, as [`SocketInfo::node`] reports it.
    fn node(&self) -> &str;
}

mod base64_list {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        let engine = &base64::engine::general_purpose::STANDARD;
        s.collect_seq(list.iter().map(|b| engine.encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        let engine = &base64::engine::general_purpose::STANDARD;
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                engine
                    .decode(text)
                    .map(Bytes::from)
                    .map_err(D::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_emit_round_trips_through_json_with_its_binary() {
        let op = RemoteOp::Emit {
            to: Selection {
                ns: "/chat".into(),
                rooms: vec!["a".into(), "b".into()],
                except: vec!["c".into()],
                exclude: Some("sid1".into()),
            },
            event: "news".into(),
            args: vec![json!({"比如": "中文信息"}), json!(1)],
            binary: vec![Bytes::from_static(&[0, 255, 7])],
            volatile: true,
            id: Some("m-1".into()),
        };
        let text = serde_json::to_string(&op).unwrap();
        assert!(text.starts_with(r#"{"op":"emit","#), "{text}");
        assert!(text.contains(r#""binary":["AP8H"]"#), "{text}");
        assert_eq!(serde_json::from_str::<RemoteOp>(&text).unwrap(), op);
    }

    #[test]
    fn empty_fields_stay_off_the_wire_and_default_back() {
        let op = RemoteOp::Disconnect {
            to: Selection {
                ns: "/".into(),
                ..Selection::default()
            },
            close: false,
        };
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(text, r#"{"op":"disconnect","to":{"ns":"/"}}"#);
        assert_eq!(serde_json::from_str::<RemoteOp>(&text).unwrap(), op);
    }

    #[test]
    fn bad_base64_is_an_error_not_a_panic() {
        let text = r#"{"op":"emit","to":{"ns":"/"},"event":"e","args":[],"binary":["***"]}"#;
        assert!(serde_json::from_str::<RemoteOp>(text).is_err());
    }
}
