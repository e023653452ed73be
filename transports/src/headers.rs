//! [`Headers`]: the headers of a session's opening request, kept for the session's life in one
//! compact allocation. Pure: nothing here knows of sessions or IO.

use hyper::HeaderMap;

/// The opening request's headers, kept for the session's life in one compact allocation.
///
/// A `HeaderMap` costs about 100 bytes per slot on top of the bytes themselves (600 bytes for
/// a handful of headers, 2 KB for a browser's); every session keeps these, so they are stored
/// as `name:value\n` lines (HTTP forbids newlines in both, and `:` in names) and looked up by
/// a scan: reads are rare (auth hook, cookie forwarding), sessions are many.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    raw: Box<[u8]>,
}

impl Headers {
    /// Copies `map` (names are lowercase, as hyper gives them).
    pub fn from_map(map: &HeaderMap) -> Self {
        let mut raw = Vec::with_capacity(
            map.iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 2)
                .sum(),
        );
        for (name, value) in map {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(b':');
            raw.extend_from_slice(value.as_bytes());
            raw.push(b'\n');
        }
        Headers {
            raw: raw.into_boxed_slice(),
        }
    }

    /// Every `(name, value)` pair, in the request's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = std::str::from_utf8(&line[..colon]).ok()?;
                Some((name, &line[colon + 1..]))
            })
    }

    /// Every value of the header `name` (any case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The first value of the header `name` (any case), if it is text.
    pub fn get(&self, name: &str) -> Option<&str> {
        let value = self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?.1;
        std::str::from_utf8(value).ok()
    }

    /// A `HeaderMap` of the same headers.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.iter() {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                hyper::header::HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderValue, COOKIE, USER_AGENT};

    #[test]
    fn headers_keep_every_value_in_order_and_find_them_in_any_case() {
        let mut map = HeaderMap::new();
        map.append(COOKIE, HeaderValue::from_static("a=1"));
        map.append(
            USER_AGENT,
            HeaderValue::from_static("Mozilla/4.0 (MSIE 6.0: x)"),
        );
        map.append(COOKIE, HeaderValue::from_static("b=2"));
        map.append("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let headers = Headers::from_map(&map);
        assert_eq!(headers.get("Cookie"), Some("a=1"));
        assert_eq!(
            headers.get_all("cookie").collect::<Vec<_>>(),
            [b"a=1".as_slice(), b"b=2"]
        );
        assert_eq!(headers.get("user-agent"), Some("Mozilla/4.0 (MSIE 6.0: x)"));
        assert_eq!(headers.get("x-latin"), None, "not text");
        assert_eq!(
            headers.get_all("x-latin").next(),
            Some(b"caf\xe9".as_slice())
        );
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.to_map(), map);
        assert_eq!(Headers::default().iter().count(), 0);
    }
}
