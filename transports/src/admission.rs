//! Session admission: how many sessions may exist at once, in total and per client address, and
//! which address a handshake counts against.
//!
//! A handshake reserves a place before its session is created, and the session gives it back
//! when it leaves the registry. The counters are all the state there is: nothing here awaits,
//! and no map guard is held beyond one counter update.
//!
//! Behind a reverse proxy every client arrives from the proxy's address, so a per-address limit
//! on the peer would cap the whole deployment. A peer that is a trusted proxy (loopback by
//! default: nginx on the same host) is looked through, to the nearest `X-Forwarded-For` address
//! that is not itself a trusted proxy; a request from a trusted proxy that names no client
//! counts against the total only. An address announced by an untrusted peer is ignored, so
//! clients cannot pick the address they are counted under. IPv6 clients are counted per /64,
//! the block one subscriber usually gets: counting single addresses would let one client take
//! 2^64 of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::headers::Headers;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// An address range in CIDR notation: `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `127.0.0.0/8` and `::1`: a proxy on the same host.
    pub const LOOPBACK: [IpRange; 2] = [
        IpRange {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        IpRange {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ];

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why an address range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or a CIDR range (`10.0.0.0/8`, `::1`)")]
pub struct InvalidRange(String);

impl FromStr for IpRange {
    type Err = InvalidRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRange(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(invalid)?,
            None => max,
        };
        Ok(IpRange { addr, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The address a request from `peer` counts against: the peer itself, or, when the peer is a
/// trusted proxy, the client it names in `X-Forwarded-For`; `None` when a trusted proxy names
/// no usable client.
pub fn client_address(peer: IpAddr, headers: &Headers, trusted: &[IpRange]) -> Option<IpAddr> {
    real_client(peer, headers, trusted).map(per_client)
}

/// The client's own address, as [`client_address`] finds it but not grouped per /64 (what the
/// auth hook and the AMQP bridge report to the application).
pub fn real_client(peer: IpAddr, headers: &Headers, trusted: &[IpRange]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return Some(peer.to_canonical());
    }
    // Each proxy appends the address it saw, so the list is read from the right: the first
    // address no trusted proxy vouches for is the client. What lies left of it is the client's
    // own say, and could be anything.
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        entries.extend(std::str::from_utf8(value).ok()?.split(','));
    }
    for entry in entries.into_iter().rev() {
        let ip: IpAddr = entry.trim().parse().ok()?;
        if !is_trusted(ip) {
            return Some(ip.to_canonical());
        }
    }
    None
}

/// The key one client is counted under: its IPv4 address, or its IPv6 /64.
fn per_client(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

/// Which limit refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_sessions`: the server holds as many sessions as it may.
    Total,
    /// `max_sessions_per_ip`: this client address holds as many as it may.
    PerAddress,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::Total, Refusal::PerAddress];

    /// The limit's name, as in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "max_sessions",
            Refusal::PerAddress => "max_sessions_per_ip",
        }
    }
}

/// Sessions held now, in total and per client address.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    total: AtomicUsize,
    per_address: DashMap<IpAddr, usize>,
}

impl Admission {
    /// Whether a session for `client` would be admitted now, without reserving anything (to
    /// refuse a WebSocket handshake with an HTTP status before upgrading it).
    pub(crate) fn check(
        &self,
        client: Option<IpAddr>,
        max_total: usize,
        max_per_address: usize,
    ) -> Result<(), Refusal> {
        if self.total.load(Ordering::Relaxed) >= max_total {
            return Err(Refusal::Total);
        }
        match client.and_then(|ip| self.per_address.get(&ip).map(|n| *n)) {
            Some(n) if n >= max_per_address => Err(Refusal::PerAddress),
            _ => Ok(()),
        }
    }

    /// Reserves a place for a session of `client`, to be given back with [`Self::release`].
    pub(crate) fn admit(
        &self,
        client: Option<IpAddr>,
        max_total: usize,
        max_per_address: usize,
    ) -> Result<(), Refusal> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            })
            .map_err(|_| Refusal::Total)?;
        let Some(ip) = client else { return Ok(()) };
        let mut held = self.per_address.entry(ip).or_insert(0);
        if *held >= max_per_address {
            drop(held);
            self.release(None);
            return Err(Refusal::PerAddress);
        }
        *held += 1;
        Ok(())
    }

    pub(crate) fn release(&self, client: Option<IpAddr>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = client {
            // The entry goes with the address's last session: the map only holds addresses
            // that hold sessions.
            if let Entry::Occupied(mut held) = self.per_address.entry(ip) {
                *held.get_mut() -= 1;
                if *held.get() == 0 {
                    held.remove();
                }
            }
        }
    }

    /// Sessions admitted and not yet released.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderMap;
    use hyper::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(s: &str) -> IpRange {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        assert!(range("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!range("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(range("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!range("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(range("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(range("fd00::/8").contains(ip("fd12::1")));
        assert!(!range("fd00::/8").contains(ip("10.0.0.1")));
        // A dual-stack listener sees IPv4 clients as mapped IPv6 addresses.
        assert!(IpRange::LOOPBACK[0].contains(ip("::ffff:127.0.0.1")));
        assert!(IpRange::LOOPBACK[1].contains(ip("::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "host",
            "10.0.0.0/x",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        assert_eq!(range("10.1.0.0/16").to_string(), "10.1.0.0/16");
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn untrusted_peer_counts_as_itself_whatever_it_forwards() {
        let headers = forwarded(&["10.9.9.9"]);
        assert_eq!(
            client_address(
                ip("203.0.113.5"),
                &Headers::from_map(&headers),
                &IpRange::LOOPBACK
            ),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &Headers::from_map(&headers), &[]),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn trusted_proxy_is_looked_through_from_the_right() {
        let trusted = [IpRange::LOOPBACK[0], range("10.0.0.0/8")];
        // The client prepended a lie; the proxies appended what they saw.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &Headers::from_map(&headers), &trusted),
            Some(ip("198.51.100.7"))
        );
        // A trusted proxy that names nobody (or only proxies): the total limit only.
        assert_eq!(
            client_address(ip("127.0.0.1"), &Headers::default(), &trusted),
            None
        );
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &Headers::from_map(&forwarded(&["127.0.0.1"])),
                &trusted
            ),
            None
        );
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &Headers::from_map(&forwarded(&["garbage"])),
                &trusted
            ),
            None
        );
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        assert_eq!(
            client_address(ip("2001:db8:1:2:aaaa::1"), &Headers::default(), &[]),
            Some(ip("2001:db8:1:2::"))
        );
        assert_eq!(
            client_address(ip("::ffff:192.0.2.1"), &Headers::default(), &[]),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn admission_counts_total_and_per_address_and_releases() {
        let a = Admission::default();
        let (x, y) = (Some(ip("192.0.2.1")), Some(ip("192.0.2.2")));
        assert_eq!(a.admit(x, 3, 2), Ok(()));
        assert_eq!(a.admit(x, 3, 2), Ok(()));
        assert_eq!(a.check(x, 3, 2), Err(Refusal::PerAddress));
        assert_eq!(a.admit(x, 3, 2), Err(Refusal::PerAddress));
        assert_eq!(a.total(), 2, "a refusal keeps no place");
        assert_eq!(a.admit(y, 3, 2), Ok(()));
        assert_eq!(a.admit(None, 3, 2), Err(Refusal::Total));
        assert_eq!(a.check(None, 3, 2), Err(Refusal::Total));
        a.release(x);
        assert_eq!(a.admit(None, 3, 2), Ok(()));
        a.release(None);
        a.release(x);
        a.release(y);
        assert_eq!(a.total(), 0);
        assert!(a.per_address.is_empty(), "no entry outlives its sessions");
    }
}
