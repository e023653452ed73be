//! What one client may make the Socket.IO layer keep: the bounds on rooms per socket, room-name
//! length, auth payload size and connect-hook attempts, the errors that report them, and the
//! counters `/metrics` shows. Pure data: no IO, no locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why [`Socket::join`](super::Socket::join) refused a room. The socket's rooms are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The socket is in as many rooms as it may be (its own id room aside): leave one first.
    #[error("too many rooms (at most {limit} per socket)")]
    TooManyRooms { limit: usize },
    /// The room's name is longer than allowed, in bytes.
    #[error("room name too long (at most {limit} bytes)")]
    NameTooLong { limit: usize },
}

impl JoinError {
    /// The `error` string a client sees (in a `subscribe` ack, a CONNECT_ERROR).
    pub fn message(self) -> &'static str {
        match self {
            JoinError::TooManyRooms { .. } => "too many rooms",
            JoinError::NameTooLong { .. } => "room name too long",
        }
    }

    /// The limit that was reached.
    pub fn limit(self) -> usize {
        match self {
            JoinError::TooManyRooms { limit } | JoinError::NameTooLong { limit } => limit,
        }
    }

    fn reason(self) -> JoinRefusal {
        match self {
            JoinError::TooManyRooms { .. } => JoinRefusal::TooManyRooms,
            JoinError::NameTooLong { .. } => JoinRefusal::NameTooLong,
        }
    }
}

/// The label of `halley_room_joins_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    TooManyRooms = 0,
    NameTooLong = 1,
}

impl JoinRefusal {
    pub const ALL: [JoinRefusal; 2] = [JoinRefusal::TooManyRooms, JoinRefusal::NameTooLong];

    pub fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::TooManyRooms => "too_many_rooms",
            JoinRefusal::NameTooLong => "name_too_long",
        }
    }
}

/// The label of `halley_connects_refused_total{reason}`: CONNECTs refused by a limit (not by
/// a middleware or the auth hook's verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// More namespaces than `max_namespaces` at once.
    TooManyNamespaces = 0,
    /// An auth payload over `max_auth_payload` bytes.
    AuthPayloadTooLarge = 1,
    /// More refused CONNECTs needing a connect hook than `max_auth_attempts` on one connection.
    TooManyAuthAttempts = 2,
}

impl ConnectRefusal {
    pub const ALL: [ConnectRefusal; 3] = [
        ConnectRefusal::TooManyNamespaces,
        ConnectRefusal::AuthPayloadTooLarge,
        ConnectRefusal::TooManyAuthAttempts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectRefusal::TooManyNamespaces => "too_many_namespaces",
            ConnectRefusal::AuthPayloadTooLarge => "auth_payload_too_large",
            ConnectRefusal::TooManyAuthAttempts => "too_many_auth_attempts",
        }
    }

    /// The CONNECT_ERROR message the client gets.
    pub fn message(self) -> &'static str {
        match self {
            ConnectRefusal::TooManyNamespaces => "too many namespaces",
            ConnectRefusal::AuthPayloadTooLarge => "auth payload too large",
            ConnectRefusal::TooManyAuthAttempts => "too many authentication attempts",
        }
    }
}

/// Refusals by the Socket.IO layer's limits, for `/metrics`; shared by every namespace.
#[derive(Debug, Default)]
pub struct Stats {
    joins_refused: [AtomicU64; JoinRefusal::ALL.len()],
    connects_refused: [AtomicU64; ConnectRefusal::ALL.len()],
    /// Backend messages dropped because their id was delivered lately
    /// ([`super::dedupe`]).
    duplicates: AtomicU64,
}

impl Stats {
    pub fn joins_refused(&self, reason: JoinRefusal) -> u64 {
        self.joins_refused[reason as usize].load(Ordering::Relaxed)
    }

    pub fn connects_refused(&self, reason: ConnectRefusal) -> u64 {
        self.connects_refused[reason as usize].load(Ordering::Relaxed)
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    pub(crate) fn count_duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_join(&self, error: JoinError) {
        self.joins_refused[error.reason() as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_connect(&self, reason: ConnectRefusal) {
        self.connects_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The room bounds every socket of a server is held to, with the counters of refusals.
#[derive(Debug)]
pub(crate) struct RoomLimits {
    pub(crate) max_rooms: usize,
    pub(crate) max_room_name: usize,
    pub(crate) stats: std::sync::Arc<Stats>,
}

impl RoomLimits {
    /// Whether a socket already in `joined` rooms (its own aside) may join `room`.
    pub(crate) fn check(&self, joined: usize, room: &str) -> Result<(), JoinError> {
        let refused = if room.len() > self.max_room_name {
            JoinError::NameTooLong {
                limit: self.max_room_name,
            }
        } else if joined >= self.max_rooms {
            JoinError::TooManyRooms {
                limit: self.max_rooms,
            }
        } else {
            return Ok(());
        };
        self.stats.count_join(refused);
        Err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_beyond_either_bound_are_refused_and_counted() {
        let limits = RoomLimits {
            max_rooms: 2,
            max_room_name: 4,
            stats: Default::default(),
        };
        assert_eq!(limits.check(1, "abcd"), Ok(()));
        assert_eq!(
            limits.check(2, "a"),
            Err(JoinError::TooManyRooms { limit: 2 })
        );
        assert_eq!(
            limits.check(0, "abcde"),
            Err(JoinError::NameTooLong { limit: 4 })
        );
        assert_eq!(limits.stats.joins_refused(JoinRefusal::TooManyRooms), 1);
        assert_eq!(limits.stats.joins_refused(JoinRefusal::NameTooLong), 1);
    }
}
