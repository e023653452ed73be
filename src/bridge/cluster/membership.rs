//! Who is in the cluster, pure: the other nodes heard from lately and the address each
//! advertised, when each must be heard from again, and the cross-node queries waiting for
//! their answers. Time is an input; no IO, no locks (the link holds these behind its own).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::socketio::adapter::SocketInfo;

struct Member {
    addr: SocketAddr,
    seen: Instant,
    /// Not heard from since this node's link came back: its queue may not be bound yet.
    rejoining: bool,
}

/// The other nodes, by name.
#[derive(Default)]
pub(super) struct Members(HashMap<String, Member>);

/// What a hello changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// A node not known before.
    Joined,
    /// A node known before this node's link went, bound again.
    Rebound,
    /// A node heard from lately.
    Known,
}

impl Members {
    /// `node` said hello at `now`, advertising `addr`.
    pub(super) fn hello(&mut self, node: String, addr: SocketAddr, now: Instant) -> Heard {
        let member = Member {
            addr,
            seen: now,
            rejoining: false,
        };
        match self.0.insert(node, member) {
            None => Heard::Joined,
            Some(was) if was.rejoining => Heard::Rebound,
            Some(_) => Heard::Known,
        }
    }

    /// This node's link is back at `now`: every known node must say hello again, and their
    /// silence while the link was down does not count against them.
    pub(super) fn relisten(&mut self, now: Instant) {
        for member in self.0.values_mut() {
            member.rejoining = true;
            member.seen = now;
        }
    }

    /// The known nodes that have not said hello since this node's link came back, sorted.
    pub(super) fn rejoining(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(_, m)| m.rejoining)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Every known node's name, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every known node's name, as a query waits for them.
    pub(super) fn waiting(&self) -> HashSet<String> {
        self.0.keys().cloned().collect()
    }

    /// Where `node` forwards requests, when it is known.
    pub(super) fn addr(&self, node: &str) -> Option<SocketAddr> {
        self.0.get(node).map(|m| m.addr)
    }

    /// Drops and names the nodes silent at `now` for longer than `limit` (`rejoin` for one not
    /// heard from since this node's link came back).
    pub(super) fn prune(&mut self, now: Instant, limit: Duration, rejoin: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .0
            .iter()
            .filter(|(_, m)| {
                now.saturating_duration_since(m.seen) > if m.rejoining { rejoin } else { limit }
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.0.remove(name);
        }
        gone
    }
}

struct Fetch {
    waiting: HashSet<String>,
    sockets: Vec<SocketInfo>,
    done: Option<oneshot::Sender<Vec<SocketInfo>>>,
}

impl Fetch {
    /// Hands the sockets gathered to the asker, once every node awaited answered.
    fn finish(self) {
        let _ = self.done.map(|done| done.send(self.sockets));
    }
}

/// Cross-node socket queries waiting for answers, by request number.
#[derive(Default)]
pub(super) struct Fetches(HashMap<u64, Fetch>);

impl Fetches {
    /// A query `request` waiting for the nodes `waiting`; `done` gets the sockets once all
    /// answered.
    pub(super) fn start(
        &mut self,
        request: u64,
        waiting: HashSet<String>,
        done: oneshot::Sender<Vec<SocketInfo>>,
    ) {
        let fetch = Fetch {
            waiting,
            sockets: Vec::new(),
            done: Some(done),
        };
        self.0.insert(request, fetch);
    }

    /// `node` answered `request` with `sockets`.
    pub(super) fn answer(&mut self, request: u64, node: &str, sockets: Vec<SocketInfo>) {
        if let Some(fetch) = self.0.get_mut(&request) {
            fetch.waiting.remove(node);
            fetch.sockets.extend(sockets);
            if fetch.waiting.is_empty() {
                if let Some(fetch) = self.0.remove(&request) {
                    fetch.finish();
                }
            }
        }
    }

    /// The nodes `gone` left: no query waits for them any more.
    pub(super) fn forget(&mut self, gone: &[String]) {
        let finished: Vec<u64> = self
            .0
            .iter_mut()
            .filter_map(|(id, fetch)| {
                for name in gone {
                    fetch.waiting.remove(name);
                }
                fetch.waiting.is_empty().then_some(*id)
            })
            .collect();
        for id in finished {
            if let Some(fetch) = self.0.remove(&id) {
                fetch.finish();
            }
        }
    }

    /// Time is up for `request`: what arrived so far.
    pub(super) fn give_up(&mut self, request: u64) -> Vec<SocketInfo> {
        self.0
            .remove(&request)
            .map(|fetch| fetch.sockets)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        3000,
    ));

    #[test]
    fn a_silent_node_is_dropped_after_the_limit_and_a_rejoining_one_after_the_bound() {
        let (limit, rejoin) = (Duration::from_secs(6), Duration::from_secs(21));
        let t0 = Instant::now();
        let mut members = Members::default();
        assert_eq!(members.hello("aaaaaa".into(), ADDR, t0), Heard::Joined);
        assert_eq!(members.hello("bbbbbb".into(), ADDR, t0), Heard::Joined);
        assert!(members.prune(t0 + limit, limit, rejoin).is_empty());
        members.relisten(t0 + limit);
        assert_eq!(members.rejoining(), ["aaaaaa", "bbbbbb"]);
        let back = t0 + limit + Duration::from_secs(1);
        assert_eq!(members.hello("aaaaaa".into(), ADDR, back), Heard::Rebound);
        assert_eq!(members.rejoining(), ["bbbbbb"]);
        let later = t0 + limit + limit + Duration::from_secs(2);
        assert_eq!(members.prune(later, limit, rejoin), ["aaaaaa"]);
        assert_eq!(members.names(), ["bbbbbb"]);
        let gone = t0 + limit + rejoin + Duration::from_secs(1);
        assert_eq!(members.prune(gone, limit, rejoin), ["bbbbbb"]);
        assert!(members.names().is_empty());
    }

    #[test]
    fn a_query_finishes_when_every_awaited_node_answered_or_left() {
        let mut fetches = Fetches::default();
        let (done, mut rx) = oneshot::channel();
        let waiting = ["aaaaaa".to_owned(), "bbbbbb".to_owned()].into();
        fetches.start(1, waiting, done);
        fetches.answer(1, "aaaaaa", Vec::new());
        assert!(rx.try_recv().is_err(), "bbbbbb has not answered");
        fetches.forget(&["bbbbbb".to_owned()]);
        assert_eq!(rx.try_recv().unwrap(), Vec::new());
        assert!(fetches.give_up(1).is_empty());
    }
}
