//! Origin policy: whether the page behind a request may make it. Pure functions over the
//! request's headers, its peer's address and the configuration; nothing here does IO, and the
//! engine alone decides what a refusal looks like on the wire.
//!
//! A browser attaches the user's cookies to requests any page makes, so a request that uses
//! them (a WebSocket handshake, any POST, and a GET whose answer a foreign page can read
//! without CORS: JSONP, forever-frames, SSE, xhr-streaming) must come from a page this server
//! trusts: its own origin, one listed in [`Cors::Origins`], or any with [`Cors::AnyOrigin`].
//! Plain XHR polling GETs are not checked: without a CORS grant a foreign page cannot read them.
//!
//! Where the request comes from is, in order of trust:
//! - `Origin` when present. `null` (a sandboxed or `file:` page, a cross-origin redirect, or a
//!   page whose `Referrer-Policy` is `no-referrer` posting) is foreign: any page can make its
//!   requests carry it. It passes only when the browser itself says `Sec-Fetch-Site:
//!   same-origin`, which is how a same-origin page with `no-referrer` posts.
//! - else the origin of `Referer`;
//! - else `Sec-Fetch-Site`, which modern browsers set on every request and no page can set:
//!   `cross-site` and `same-site` are refused (a sibling subdomain shares cookies but is another
//!   origin: list it), `same-origin` and `none` (the user typed the URL) pass;
//! - else nothing: a client that is not a browser, an old browser, or a privacy proxy. A
//!   WebSocket or a POST passes (IE6–9's hidden-form POSTs carry no `Origin`); a script-like
//!   GET passes only in the default same-origin mode, not when a list is configured.
//!
//! This server's own origin is `http://` + `Host`. Behind a trusted proxy (see
//! [`crate::admission`]), `X-Forwarded-Proto` and `X-Forwarded-Host` name the public one
//! instead; from any other peer they are ignored, or a client could name its own origin.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName};
use hyper::Method;

use crate::admission::IpRange;
use crate::session::TransportKind;

/// Which origins may read responses cross-origin and make requests that carry cookies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers: same-origin pages only.
    #[default]
    SameOrigin,
    /// `Access-Control-Allow-Origin: *`, never with credentials; every origin may connect.
    AnyOrigin,
    /// Only these origins (`scheme://host[:port]`), with credentials.
    Origins(Vec<String>),
}

/// The requests the policy applies to, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A WebSocket handshake, opening a session or upgrading one.
    WebSocket,
    /// A GET answered as script, HTML or a stream a foreign page can read without CORS.
    Script,
    /// A POST of any transport.
    Post,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::WebSocket, Kind::Script, Kind::Post];

    /// The kind's name, as in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WebSocket => "websocket",
            Kind::Script => "script",
            Kind::Post => "post",
        }
    }

    /// Which rule a request falls under: `transport` and `jsonp` (a `j` is given) as in its
    /// query, `upgrade` whether it asks for a WebSocket. `None`: not checked.
    pub fn of(
        method: &Method,
        transport: Option<TransportKind>,
        jsonp: bool,
        upgrade: bool,
    ) -> Option<Kind> {
        if *method == Method::POST {
            return Some(Kind::Post);
        }
        if *method != Method::GET {
            return None;
        }
        if upgrade {
            return Some(Kind::WebSocket);
        }
        match transport? {
            TransportKind::Polling if !jsonp => None,
            TransportKind::WebSocket => None,
            _ => Some(Kind::Script),
        }
    }
}

/// Why a request was refused, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its `Origin` is neither this server's nor allowed (or is `null`, or unreadable).
    ForeignOrigin,
    /// It has no `Origin`, and its `Referer` is from a page that is not allowed.
    ForeignReferer,
    /// It names no page, and the browser marks it `cross-site` or `same-site`.
    CrossSite,
    /// A script-like GET that names no page while a list of origins is configured.
    Unnamed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ForeignOrigin => "foreign origin",
            Reason::ForeignReferer => "foreign referer",
            Reason::CrossSite => "cross-site fetch",
            Reason::Unnamed => "no origin or referer",
        }
    }
}

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether a request of `kind` with `headers`, from the connection's `peer`, may be served.
pub fn check(
    kind: Kind,
    headers: &HeaderMap,
    peer: IpAddr,
    cors: &Cors,
    trusted: &[IpRange],
) -> Result<(), Reason> {
    if *cors == Cors::AnyOrigin {
        return Ok(());
    }
    let allowed = |source: Option<Origin<'_>>| {
        source.is_some_and(|source| {
            own_origin(headers, peer, trusted).is_some_and(|own| own.same(&source))
                || is_listed(cors, &source)
        })
    };
    let site = headers.get(SEC_FETCH_SITE).map(|v| v.as_bytes());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().ok();
        if origin == Some("null") && site == Some(b"same-origin") {
            return Ok(());
        }
        return match allowed(origin.and_then(Origin::parse)) {
            true => Ok(()),
            false => Err(Reason::ForeignOrigin),
        };
    }
    if let Some(referer) = headers.get(header::REFERER) {
        let source = referer.to_str().ok().and_then(Origin::of_url);
        return match allowed(source) {
            true => Ok(()),
            false => Err(Reason::ForeignReferer),
        };
    }
    match site {
        Some(b"same-origin" | b"none") => Ok(()),
        // `cross-site`, `same-site`, and whatever a later browser may add.
        Some(_) => Err(Reason::CrossSite),
        None => match (kind, cors) {
            (Kind::Script, Cors::Origins(_)) => Err(Reason::Unnamed),
            _ => Ok(()),
        },
    }
}

/// Whether `origin` (an `Origin` header's value) is in the configured list; the list's entries
/// are compared as origins (`HTTP://Host:80` is `http://host`), not as strings.
pub fn listed(cors: &Cors, origin: &[u8]) -> bool {
    std::str::from_utf8(origin)
        .ok()
        .and_then(Origin::parse)
        .is_some_and(|origin| is_listed(cors, &origin))
}

fn is_listed(cors: &Cors, origin: &Origin<'_>) -> bool {
    match cors {
        Cors::Origins(list) => list
            .iter()
            .filter_map(|entry| Origin::parse(entry))
            .any(|entry| entry.same(origin)),
        Cors::SameOrigin | Cors::AnyOrigin => false,
    }
}

/// The origin clients reach this server at: the Host it was asked for over plain HTTP, or what
/// a trusted proxy says the public scheme and host are.
fn own_origin<'a>(headers: &'a HeaderMap, peer: IpAddr, trusted: &[IpRange]) -> Option<Origin<'a>> {
    let proxied = trusted.iter().any(|range| range.contains(peer));
    // A proxy that appends to a list puts its own say last; what lies left of it came from
    // further out, from someone this server has no reason to trust.
    let forwarded = |name: &HeaderName| {
        proxied
            .then(|| headers.get_all(name).iter().next_back())
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = forwarded(&X_FORWARDED_PROTO).unwrap_or("http");
    let host = match forwarded(&X_FORWARDED_HOST) {
        Some(host) => host,
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    Origin::from_parts(scheme, host)
}

/// A web origin: scheme, host and port (the scheme's default when not written).
#[derive(Debug, Clone, Copy)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    /// `scheme://host[:port]`, as browsers send it in `Origin` (a trailing `/`, which no
    /// browser sends but a configuration may, is let through). `null` is no origin.
    fn parse(s: &'a str) -> Option<Self> {
        let (scheme, authority) = s.split_once("://")?;
        Self::from_parts(scheme, authority.strip_suffix('/').unwrap_or(authority))
    }

    /// The origin of a URL (a `Referer`).
    fn of_url(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Self::from_parts(scheme, &rest[..end])
    }

    fn from_parts(scheme: &'a str, authority: &'a str) -> Option<Self> {
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        // Userinfo (`good.test@evil.test`) is refused, not read past: browsers never send it,
        // so it is someone dressing one host up as another.
        let authority_ok = !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"@/?#\\".contains(&b));
        if !scheme_ok || !authority_ok {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (_, rest) = v6.split_once(']')?;
                let host = &authority[..authority.len() - rest.len()];
                (host, rest)
            }
            None => authority.split_at(authority.find(':').unwrap_or(authority.len())),
        };
        let port = match port {
            "" => default_port(scheme),
            port => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        if host.is_empty() || host == "[]" {
            return None;
        }
        Some(Origin { scheme, host, port })
    }

    fn same(&self, other: &Origin<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port == other.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OUTSIDE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn listed_config() -> Cors {
        Cors::Origins(vec![
            "https://good.test".into(),
            "http://sib.app.test:8080/".into(),
        ])
    }

    /// `check` with `pairs` plus `Host: app.test`, from a peer outside any proxy.
    fn verdict(kind: Kind, cors: &Cors, pairs: &[(&str, &str)]) -> Result<(), Reason> {
        let mut all = vec![("host", "app.test")];
        all.extend_from_slice(pairs);
        check(kind, &headers(&all), OUTSIDE, cors, &IpRange::LOOPBACK)
    }

    #[test]
    fn origins_parse_with_default_ports_and_refuse_lookalikes() {
        let o = Origin::parse("HTTPS://Good.Test").unwrap();
        assert!(o.same(&Origin::parse("https://good.test:443").unwrap()));
        assert!(!o.same(&Origin::parse("http://good.test").unwrap()));
        assert!(!o.same(&Origin::parse("https://good.test:8443").unwrap()));
        let v6 = Origin::parse("http://[::1]:8080").unwrap();
        assert_eq!((v6.host, v6.port), ("[::1]", Some(8080)));
        assert_eq!(Origin::parse("http://[::1]").unwrap().port, Some(80));
        let url = Origin::of_url("http://good.test:81/a/b?c#d").unwrap();
        assert_eq!((url.host, url.port), ("good.test", Some(81)));
        for bad in [
            "null",
            "",
            "good.test",
            "http://",
            "http://good.test@evil.test",
            "http://:80",
            "http://good.test:x",
            "http://good.test:99999",
            "http://[::1",
            "http://[]:80",
            "http://good.test/path",
            "ht tp://good.test",
            "http://good test",
        ] {
            assert!(Origin::parse(bad).is_none(), "{bad:?}");
        }
        assert!(Origin::of_url("http://good.test@evil.test/x").is_none());
        assert!(Origin::of_url("about:blank").is_none());
    }

    #[test]
    fn requests_are_classified_by_method_transport_and_upgrade() {
        use TransportKind::*;
        let get = Method::GET;
        assert_eq!(
            Kind::of(&Method::POST, Some(Polling), false, false),
            Some(Kind::Post)
        );
        assert_eq!(
            Kind::of(&Method::POST, None, false, false),
            Some(Kind::Post)
        );
        assert_eq!(
            Kind::of(&get, Some(Polling), false, true),
            Some(Kind::WebSocket)
        );
        assert_eq!(
            Kind::of(&get, Some(WebSocket), false, true),
            Some(Kind::WebSocket)
        );
        assert_eq!(Kind::of(&get, Some(Polling), false, false), None);
        assert_eq!(
            Kind::of(&get, Some(Polling), true, false),
            Some(Kind::Script)
        );
        for t in [Iframe, Htmlfile, Sse, XhrStreaming] {
            assert_eq!(Kind::of(&get, Some(t), false, false), Some(Kind::Script));
        }
        assert_eq!(Kind::of(&get, None, true, false), None);
        assert_eq!(Kind::of(&Method::OPTIONS, Some(Sse), false, true), None);
    }

    #[test]
    fn same_origin_and_listed_origins_pass_foreign_ones_do_not() {
        for cors in [Cors::SameOrigin, listed_config()] {
            for kind in Kind::ALL {
                assert_eq!(
                    verdict(kind, &cors, &[("origin", "http://app.test")]),
                    Ok(())
                );
                assert_eq!(
                    verdict(kind, &cors, &[("origin", "http://APP.test:80")]),
                    Ok(())
                );
                for foreign in ["http://evil.test", "https://app.test", "null", "garbage"] {
                    assert_eq!(
                        verdict(kind, &cors, &[("origin", foreign)]),
                        Err(Reason::ForeignOrigin),
                        "{kind:?} {foreign}"
                    );
                }
                assert_eq!(
                    verdict(kind, &cors, &[("referer", "http://evil.test/page")]),
                    Err(Reason::ForeignReferer)
                );
                assert_eq!(
                    verdict(kind, &cors, &[("referer", "http://app.test/x?y")]),
                    Ok(())
                );
            }
        }
        let listed = listed_config();
        for source in [
            ("origin", "https://good.test"),
            ("origin", "http://sib.app.test:8080"),
            ("referer", "https://good.test/page"),
        ] {
            assert_eq!(verdict(Kind::WebSocket, &listed, &[source]), Ok(()));
            assert_eq!(
                verdict(Kind::WebSocket, &Cors::SameOrigin, &[source]),
                Err(if source.0 == "origin" {
                    Reason::ForeignOrigin
                } else {
                    Reason::ForeignReferer
                })
            );
        }
        // The Origin decides when both are sent.
        assert_eq!(
            verdict(
                Kind::Post,
                &listed,
                &[
                    ("origin", "http://evil.test"),
                    ("referer", "https://good.test/")
                ]
            ),
            Err(Reason::ForeignOrigin)
        );
        for kind in Kind::ALL {
            assert_eq!(
                verdict(kind, &Cors::AnyOrigin, &[("origin", "null")]),
                Ok(())
            );
            assert_eq!(
                verdict(kind, &Cors::AnyOrigin, &[("sec-fetch-site", "cross-site")]),
                Ok(())
            );
        }
    }

    #[test]
    fn sec_fetch_site_decides_for_requests_that_name_no_page() {
        for cors in [Cors::SameOrigin, listed_config()] {
            for kind in Kind::ALL {
                for site in ["cross-site", "same-site", "something-new"] {
                    assert_eq!(
                        verdict(kind, &cors, &[("sec-fetch-site", site)]),
                        Err(Reason::CrossSite),
                        "{kind:?} {site}"
                    );
                }
                for site in ["same-origin", "none"] {
                    assert_eq!(verdict(kind, &cors, &[("sec-fetch-site", site)]), Ok(()));
                }
            }
        }
        // A sibling subdomain is same-site, and passes once listed.
        let sibling = [
            ("sec-fetch-site", "same-site"),
            ("referer", "http://sib.app.test:8080/page"),
        ];
        assert_eq!(verdict(Kind::Script, &listed_config(), &sibling), Ok(()));
        assert_eq!(
            verdict(Kind::Script, &Cors::SameOrigin, &sibling),
            Err(Reason::ForeignReferer)
        );
        // `Origin: null` passes only when the browser vouches the request is same-origin (a
        // same-origin page with `Referrer-Policy: no-referrer` posting).
        let null = |site| [("origin", "null"), ("sec-fetch-site", site)];
        assert_eq!(
            verdict(Kind::Post, &Cors::SameOrigin, &null("same-origin")),
            Ok(())
        );
        for site in ["cross-site", "same-site", "none"] {
            assert_eq!(
                verdict(Kind::Post, &Cors::SameOrigin, &null(site)),
                Err(Reason::ForeignOrigin)
            );
        }
    }

    #[test]
    fn requests_that_name_no_page_pass_except_script_gets_under_a_list() {
        for kind in Kind::ALL {
            assert_eq!(verdict(kind, &Cors::SameOrigin, &[]), Ok(()));
        }
        assert_eq!(verdict(Kind::WebSocket, &listed_config(), &[]), Ok(()));
        assert_eq!(verdict(Kind::Post, &listed_config(), &[]), Ok(()));
        assert_eq!(
            verdict(Kind::Script, &listed_config(), &[]),
            Err(Reason::Unnamed)
        );
    }

    #[test]
    fn forwarded_host_and_proto_count_from_trusted_proxies_only() {
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-proto", "https"),
            ("origin", "https://app.test"),
        ]);
        let cors = Cors::SameOrigin;
        assert_eq!(
            check(
                Kind::WebSocket,
                &proxied,
                LOOPBACK,
                &cors,
                &IpRange::LOOPBACK
            ),
            Ok(())
        );
        // From a peer that is not a trusted proxy, the headers are the client's own say.
        assert_eq!(
            check(
                Kind::WebSocket,
                &proxied,
                OUTSIDE,
                &cors,
                &IpRange::LOOPBACK
            ),
            Err(Reason::ForeignOrigin)
        );
        assert_eq!(
            check(Kind::WebSocket, &proxied, LOOPBACK, &cors, &[]),
            Err(Reason::ForeignOrigin)
        );
        // The Host as the proxy passed it on, once the proxy names the public origin, is not it.
        let internal = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "app.test"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(
            check(Kind::Post, &internal, LOOPBACK, &cors, &IpRange::LOOPBACK),
            Err(Reason::ForeignOrigin)
        );
        // nginx's `Host $http_host` + `X-Forwarded-Proto $scheme`: the port stays in the Host.
        let nginx = headers(&[
            ("host", "app.test:8443"),
            ("x-forwarded-proto", "https"),
            ("origin", "https://app.test:8443"),
        ]);
        assert_eq!(
            check(Kind::Post, &nginx, LOOPBACK, &cors, &IpRange::LOOPBACK),
            Ok(())
        );
        // Appended lists: the nearest proxy's entry, the last one, counts.
        let chained = headers(&[
            ("host", "internal"),
            ("x-forwarded-host", "evil.test, app.test"),
            ("x-forwarded-proto", "http, https"),
            ("origin", "https://app.test"),
        ]);
        assert_eq!(
            check(Kind::Script, &chained, LOOPBACK, &cors, &IpRange::LOOPBACK),
            Ok(())
        );
    }

    #[test]
    fn the_list_matches_origins_not_strings() {
        let cors = listed_config();
        assert!(listed(&cors, b"https://good.test"));
        assert!(listed(&cors, b"https://GOOD.test:443"));
        assert!(listed(&cors, b"http://sib.app.test:8080"));
        assert!(!listed(&cors, b"http://good.test"));
        assert!(!listed(&cors, b"https://good.test.evil.test"));
        assert!(!listed(&cors, b"null"));
        assert!(!listed(&cors, b"\xff"));
        assert!(!listed(&Cors::AnyOrigin, b"https://good.test"));
    }
}
