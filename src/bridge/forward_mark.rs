//! The forward mark: the `x-halley-forwarded` value with which a node vouches for an HTTP
//! request it passes to the node that owns the session. Pure; the cluster link supplies the
//! secret and the clock, the engine (`crate::engine::forward`) the request.
//!
//! The value is `<node> <ms since the epoch> <client address> <64 hex digits>`, the digits an
//! HMAC-SHA256 with the cluster's secret over those three fields, the method and the request
//! target (path and query, which hold the session id). The owner accepts it within
//! [`WINDOW`] of its own clock. Anyone who can reach a node's listener can send the header;
//! without the secret it cannot make a value that passes, nor move one to another request.
//! A value seen on the network between two nodes can be sent again, for the same request,
//! within the window: whoever sees that traffic sees the responses anyway (forwarded HTTP is
//! not encrypted; see the README).

use std::net::IpAddr;

use super::envelope::{valid_node_name, Key, WINDOW};

const DOMAIN: &[u8] = b"halley-forward-v1\n";

/// The mark `node` puts on a request (`method`, `target`) from `client`, at `now` (ms).
pub fn sign(key: &Key, node: &str, method: &str, target: &str, client: IpAddr, now: u64) -> String {
    let fields = format!("{node} {now} {client}");
    let mac = key.sign(
        DOMAIN,
        &[
            fields.as_bytes(),
            b"\n",
            method.as_bytes(),
            b"\n",
            target.as_bytes(),
        ],
    );
    format!("{fields} {mac}")
}

/// A valid mark's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    /// The node that forwarded the request.
    pub node: String,
    /// The address the request came to that node from.
    pub client: IpAddr,
}

/// What `mark` vouches for, if it is valid for this request at `now` (ms).
pub fn verify(key: &Key, method: &str, target: &str, mark: &[u8], now: u64) -> Option<Vouched> {
    // The MAC is the last field; what precedes it is signed as received.
    let split = mark.iter().rposition(|&b| b == b' ')?;
    let (fields, tag) = (&mark[..split], &mark[split + 1..]);
    if !key.verify(
        DOMAIN,
        &[fields, b"\n", method.as_bytes(), b"\n", target.as_bytes()],
        tag,
    ) {
        return None;
    }
    let fields = std::str::from_utf8(fields).ok()?;
    let mut parts = fields.split(' ');
    let (Some(node), Some(ts), Some(client), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let ts: u64 = ts.parse().ok()?;
    let window = WINDOW.as_millis() as u64;
    if !valid_node_name(node) || ts.saturating_add(window) < now || ts > now.saturating_add(window)
    {
        return None;
    }
    Some(Vouched {
        node: node.to_owned(),
        client: client.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const TARGET: &str = "/socket.io/?EIO=4&transport=polling&sid=node01abc";

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn client() -> IpAddr {
        "2001:db8::7".parse().unwrap()
    }

    #[test]
    fn a_mark_vouches_for_its_request_and_client() {
        let mark = sign(&key(), "node01", "GET", TARGET, client(), NOW);
        assert!(
            mark.starts_with("node01 1700000000000 2001:db8::7 "),
            "{mark}"
        );
        assert_eq!(
            verify(&key(), "GET", TARGET, mark.as_bytes(), NOW + 1000),
            Some(Vouched {
                node: "node01".into(),
                client: client()
            })
        );
    }

    #[test]
    fn a_mark_is_refused_for_another_request_or_secret() {
        let mark = sign(&key(), "node01", "GET", TARGET, client(), NOW);
        let ok = |method: &str, target: &str, mark: &str, key: &Key| {
            verify(key, method, target, mark.as_bytes(), NOW).is_some()
        };
        assert!(ok("GET", TARGET, &mark, &key()));
        assert!(!ok("POST", TARGET, &mark, &key()));
        assert!(!ok("GET", &TARGET.replace("abc", "abd"), &mark, &key()));
        let other = Key::new(b"fedcba9876543210fedcba9876543210").unwrap();
        assert!(!ok("GET", TARGET, &mark, &other));
        // The client address cannot be swapped.
        let swapped = mark.replace("2001:db8::7", "2001:db8::8");
        assert!(!ok("GET", TARGET, &swapped, &key()));
        for forged in ["1", "", " ", "node01 1 ::1 00", &"a".repeat(5000)] {
            assert!(!ok("GET", TARGET, forged, &key()), "{forged:?}");
        }
    }

    #[test]
    fn a_mark_expires() {
        let window = WINDOW.as_millis() as u64;
        let mark = sign(&key(), "node01", "GET", TARGET, client(), NOW);
        let at = |now| verify(&key(), "GET", TARGET, mark.as_bytes(), now).is_some();
        assert!(at(NOW + window));
        assert!(!at(NOW + window + 1));
        assert!(at(NOW - window));
        assert!(!at(NOW - window - 1));
    }
}
