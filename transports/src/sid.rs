//! Session ids: 128 random bits from the OS, written as 22 base64url characters.
//!
//! They are bearer secrets (knowing one lets a client read the session over polling), so they
//! come from `getrandom`, never from a counter or a seeded generator.

use base64::Engine as _;

/// A session id. Cheap to clone and compare; displays as its wire form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(Box<str>);

impl Sid {
    /// A fresh random id. Fails only if the OS has no entropy source, which the caller reports
    /// as a server error rather than handing out a guessable id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw)?;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        Ok(Sid(text.into_boxed_str()))
    }

    /// A fresh random id after `prefix` (a cluster node's name, so that any node can tell
    /// which one owns a session).
    pub fn random_with_prefix(prefix: &str) -> Result<Self, getrandom::Error> {
        let random = Self::random()?;
        if prefix.is_empty() {
            return Ok(random);
        }
        Ok(Sid(format!("{prefix}{random}").into_boxed_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id read from elsewhere (another node's record), if it has the shape of one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::has_shape(text).then(|| Sid(text.into()))
    }

    /// Whether `text` has the shape of an id this module hands out (22 base64url characters,
    /// alone or after a cluster node's name of 6 letters or digits), whichever process made it. Rooms named
    /// like that are other sockets' own rooms, and a client must never be able to join one: the
    /// shape decides, because the socket may live on another node.
    pub fn has_shape(text: &str) -> bool {
        let Some(prefix_len) = text.len().checked_sub(RANDOM_LEN) else {
            return false;
        };
        let (prefix, random) = text.split_at_checked(prefix_len).unwrap_or(("!", ""));
        (prefix.is_empty() || prefix.len() == NODE_PREFIX_LEN)
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
            && random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

/// Characters of the random part: 16 bytes in unpadded base64.
const RANDOM_LEN: usize = 22;
/// The length of the node name a cluster puts before the random part.
const NODE_PREFIX_LEN: usize = 6;

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Sid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_of_ids_is_recognised_with_or_without_a_node_name() {
        for _ in 0..100 {
            assert!(Sid::has_shape(Sid::random().unwrap().as_str()));
            assert!(Sid::has_shape(
                Sid::random_with_prefix("node01").unwrap().as_str()
            ));
        }
        for room in [
            "",
            "news",
            "user-42",
            "aaaaaaaaaaaaaaaaaaaaa",          // 21
            "aaaaaaaaaaaaaaaaaaaaaa!",        // a character base64url has not
            "nodeXYZ0aaaaaaaaaaaaaaaaaaaaaa", // a 7-character prefix
            "no.de1aaaaaaaaaaaaaaaaaaaaaa",   // a prefix that is not a node name
            "news-of-the-day-2026-12",        // 23: no node name is 1 character
            "ééééééééééééééééééééééé",
        ] {
            assert!(!Sid::has_shape(room), "{room}");
        }
    }

    #[test]
    fn ids_are_22_url_safe_chars_and_distinct() {
        let a = Sid::random().unwrap();
        let b = Sid::random().unwrap();
        assert_eq!(a.as_str().len(), 22);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn a_prefix_goes_first() {
        let a = Sid::random_with_prefix("Node01").unwrap();
        assert_eq!(a.as_str().len(), 28);
        assert!(a.as_str().starts_with("Node01"));
        assert_eq!(Sid::random_with_prefix("").unwrap().as_str().len(), 22);
    }
}
