//! What a node needs to join a cluster, and the checks of the names it uses. Pure.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::IpRange;
use lapin::types::ShortString;

use crate::bridge::envelope::{Key, NODE_NAME_LEN};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    /// The fanout exchange every node binds its queue to.
    pub exchange: String,
    /// This node's name: [`NODE_NAME_LEN`] characters of `[A-Za-z0-9]`, unique in the cluster.
    pub node: String,
    /// Where other nodes forward HTTP requests for this node's sessions.
    pub advertise: SocketAddr,
    pub heartbeat: Duration,
    /// How long a cross-node query waits for the other nodes' answers.
    pub request_timeout: Duration,
    /// The cluster's shared secret: signs and checks envelopes and forward marks.
    pub key: Key,
    /// Addresses other nodes may advertise: requests are forwarded nowhere else.
    pub peers: Vec<IpRange>,
}

impl ClusterConfig {
    pub fn new(url: String, advertise: SocketAddr, key: Key) -> Self {
        ClusterConfig {
            url,
            exchange: "halley.cluster".into(),
            node: random_node_name(),
            advertise,
            heartbeat: Duration::from_secs(2),
            request_timeout: Duration::from_secs(1),
            key,
            peers: default_peers(),
        }
    }
}

/// Where nodes may be by default: loopback and the private ranges (RFC 1918, IPv6 ULA). Not
/// public addresses, and not link-local ones (169.254.169.254 is a cloud's metadata service):
/// a node that forwarded a session's requests, cookies included, to an address a forged or
/// mistaken hello named would hand them to whoever is there.
pub fn default_peers() -> Vec<IpRange> {
    [
        "127.0.0.0/8",
        "::1",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    .iter()
    .filter_map(|range| range.parse().ok())
    .collect()
}

/// A fresh random node name.
pub fn random_node_name() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; NODE_NAME_LEN];
    let _ = getrandom::fill(&mut raw);
    raw.iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A queue or exchange name as AMQP carries it: at most 255 bytes (lapin panics on more), and
/// the characters RabbitMQ itself uses in the names it generates.
pub fn amqp_name(name: &str) -> Option<ShortString> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:".contains(&b);
    if name.is_empty() || !name.bytes().all(allowed) {
        return None;
    }
    ShortString::try_new(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::envelope::valid_node_name;

    #[test]
    fn node_names_are_six_alphanumerics() {
        let a = random_node_name();
        assert!(valid_node_name(&a), "{a}");
        assert_ne!(a, random_node_name());
        assert!(!valid_node_name("abc"));
        assert!(!valid_node_name("abc-ef"));
    }

    #[test]
    fn default_peers_are_loopback_and_private_ranges_only() {
        let peers = default_peers();
        assert_eq!(peers.len(), 6);
        let allowed = |ip: &str| peers.iter().any(|r| r.contains(ip.parse().unwrap()));
        for ip in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.31.255.1",
            "192.168.1.1",
            "fd00::1",
        ] {
            assert!(allowed(ip), "{ip}");
        }
        for ip in [
            "169.254.169.254",
            "fe80::1",
            "8.8.8.8",
            "172.32.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::",
            "2001:db8::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!allowed(ip), "{ip}");
        }
    }

    #[test]
    fn amqp_names_are_short_strings_of_plain_characters() {
        assert!(amqp_name("amq.gen-JzTY20BRgKO-HjmUJj0wLg").is_some());
        assert!(amqp_name("halley.cluster").is_some());
        assert!(amqp_name(&"q".repeat(255)).is_some());
        assert!(amqp_name(&"q".repeat(256)).is_none());
        assert!(amqp_name("").is_none());
        assert!(amqp_name("a b").is_none());
        assert!(amqp_name("é").is_none());
    }
}
