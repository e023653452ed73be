//! The message ids seen lately: what keeps a backend message that RabbitMQ delivers again
//! (after a failover of the queue's consumer, or a connection lost before the ack) from
//! reaching a browser twice.
//!
//! A backend message may carry an id (AMQP `message_id`, `"id"` of `POST /publish`): ids are
//! unique per message, as AMQP means them. Every node remembers the ids of the messages it
//! delivered, its own and those other nodes forwarded ([`super::adapter::RemoteOp::Emit`]
//! carries the id), and drops a message whose id it has seen. Remembered: the last [`CAPACITY`] ids, oldest forgotten first. Messages without an id
//! are never dropped: a redelivery of one may be shown twice, never lost.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Ids remembered: at 1,000 messages a second, well over a minute of them, far longer than a
/// failover takes. About 100 bytes each.
pub const CAPACITY: usize = 100_000;

/// The longest id taken (AMQP's `message_id` is a short string, at most 255 bytes).
pub const MAX_ID_LEN: usize = 255;

/// The ids seen lately.
#[derive(Debug)]
pub struct Seen {
    ids: Mutex<Ids>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Ids {
    set: HashSet<Box<str>>,
    order: VecDeque<Box<str>>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::with_capacity(CAPACITY)
    }
}

impl Seen {
    pub fn with_capacity(capacity: usize) -> Self {
        Seen {
            ids: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `id` is new: it is remembered from now on.
    pub fn first(&self, id: &str) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.set.contains(id) {
            return false;
        }
        if ids.order.len() >= self.capacity {
            if let Some(oldest) = ids.order.pop_front() {
                ids.set.remove(&oldest);
            }
        }
        let id: Box<str> = id.into();
        ids.set.insert(id.clone());
        ids.order.push_back(id);
        true
    }

    /// Whether `id` is remembered, without remembering it.
    pub fn contains(&self, id: &str) -> bool {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.set.contains(id)
    }

    /// Forgets `id` (its delivery failed, and the message will come again).
    pub fn forget(&self, id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.set.remove(id) {
            if let Some(i) = ids.order.iter().rposition(|seen| &**seen == id) {
                ids.order.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once() {
        let seen = Seen::default();
        assert!(seen.first("a"));
        assert!(seen.first("b"));
        assert!(!seen.first("a"));
        assert!(!seen.first("b"));
    }

    #[test]
    fn the_oldest_ids_are_forgotten_past_the_capacity() {
        let seen = Seen::with_capacity(3);
        for id in ["1", "2", "3", "4"] {
            assert!(seen.first(id));
        }
        assert!(seen.first("1"), "the oldest was forgotten");
        assert!(!seen.first("3"));
        assert!(!seen.first("4"));
    }

    #[test]
    fn a_forgotten_id_is_new_again_and_frees_its_place() {
        let seen = Seen::with_capacity(2);
        assert!(seen.first("a"));
        assert!(seen.first("b"));
        seen.forget("a");
        assert!(seen.first("a"));
        assert!(!seen.first("b"), "b kept its place: forgetting a freed one");
    }
}
