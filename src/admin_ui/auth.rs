//! Who may use the Admin UI: the configured user and password (plain, or a bcrypt hash as the
//! official server takes it), the session ids a login hands out (the UI reconnects with one
//! instead of the password), and the limit on failed logins per client address.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10): it runs on the blocking pool,
//! never on a runtime worker, and an address that keeps failing is refused before it costs one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The password as configured.
#[derive(Clone, PartialEq, Eq)]
enum Password {
    Plain(String),
    /// `$2a$`, `$2b$`, `$2x$` or `$2y$` (bcrypt's revisions, as bcryptjs accepts them).
    Bcrypt(String),
}

/// The Admin UI's user and password (`--admin-ui-auth USER:PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: Password,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `USER:PASSWORD`, split at the first `:` (a user name has none, a password may). A
    /// password starting `$2a$`, `$2b$`, `$2x$` or `$2y$` is a bcrypt hash (`htpasswd -nbBC 10`
    /// makes one; so does `bcryptjs`). The error never repeats the password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((user, password)) = text.split_once(':') else {
            return Err("expected USER:PASSWORD".into());
        };
        if user.is_empty() || password.is_empty() {
            return Err("expected a non-empty USER and PASSWORD".into());
        }
        let is_hash = ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|prefix| password.starts_with(prefix));
        let password = if is_hash {
            // A malformed hash would refuse every login: say so at start instead.
            // bcrypt's error repeats the hash: say what is wrong without it.
            bcrypt::verify("", password).map_err(|_| {
                "the password starts like a bcrypt hash but is not one (60 characters, \
                 `$2b$` + cost + `$` + 53 of bcrypt's base64)"
                    .to_owned()
            })?;
            Password::Bcrypt(password.to_owned())
        } else {
            Password::Plain(password.to_owned())
        };
        Ok(Credentials {
            user: user.to_owned(),
            password,
        })
    }

    /// Whether `user` and `password` are these; the bcrypt comparison blocks (call it off the
    /// runtime's workers).
    pub fn check_blocking(&self, user: &str, password: &str) -> bool {
        // Both compared, whatever the first says, and in constant time: a login's duration
        // tells nothing of which part was wrong, or how much of it.
        let user_ok = same(user.as_bytes(), self.user.as_bytes());
        let password_ok = match &self.password {
            Password::Plain(expected) => same(password.as_bytes(), expected.as_bytes()),
            Password::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        };
        user_ok & password_ok
    }
}

/// Constant-time equality of two byte strings of any lengths (compared as SHA-256 digests).
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// How long a session id lets the UI back in without its password (upstream's Redis store
/// keeps them a day).
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Session ids kept at most; the oldest goes first beyond.
const MAX_SESSIONS: usize = 1024;

/// The session ids logins handed out.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Instant>>);

impl Sessions {
    /// A new session id: 8 random bytes as 16 lowercase hex digits, as upstream makes them.
    pub fn open(&self) -> Option<String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, since| now.duration_since(*since) < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, since)| **since)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), now);
        Some(id)
    }

    /// Whether `id` is a live session.
    pub fn valid(&self, id: &str) -> bool {
        let sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .is_some_and(|since| since.elapsed() < SESSION_TTL)
    }
}

/// Failed logins one client address may make per window before it is refused unheard.
pub const MAX_FAILURES: u32 = 10;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (expired ones are dropped first; beyond, the table is cleared:
/// a flood of addresses cannot grow it without bound).
const MAX_TRACKED: usize = 65_536;

/// Failed logins per client address (IPv6: per /64, the block one subscriber gets).
#[derive(Default)]
pub struct Limiter(Mutex<HashMap<IpAddr, (u32, Instant)>>);

fn block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl Limiter {
    /// Whether `ip` failed too often lately.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&block(ip)).is_some_and(|(failures, since)| {
            *failures >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW
        })
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if table.len() >= MAX_TRACKED {
            table.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if table.len() >= MAX_TRACKED {
                table.clear();
            }
        }
        let entry = table.entry(block(ip)).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

/// Login outcomes, for `/metrics`.
#[derive(Debug, Default)]
pub struct LoginStats {
    pub accepted: AtomicU64,
    /// Wrong user, password or session id.
    pub refused: AtomicU64,
    /// Refused unheard: the address failed too often lately.
    pub limited: AtomicU64,
}

impl LoginStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_bcrypt_passwords_are_checked() {
        let plain = Credentials::parse("admin:se:cret").unwrap();
        assert!(plain.check_blocking("admin", "se:cret"));
        assert!(!plain.check_blocking("admin", "se:cre"));
        assert!(!plain.check_blocking("root", "se:cret"));
        let hash = bcrypt::hash_with_salt("secret", 4, [7; 16]).unwrap();
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let creds =
                Credentials::parse(&format!("admin:{}", hash.format_for_version(version))).unwrap();
            assert!(creds.check_blocking("admin", "secret"));
            assert!(!creds.check_blocking("admin", "Secret"));
        }
    }

    #[test]
    fn malformed_settings_are_refused_without_echoing_the_password() {
        for bad in ["admin", ":pw", "admin:", "admin:$2b$10$short"] {
            let error = Credentials::parse(bad).unwrap_err();
            assert!(!error.contains("short"), "{error}");
        }
    }

    #[test]
    fn an_address_is_blocked_after_too_many_failures() {
        let limiter = Limiter::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(!limiter.blocked(ip));
            limiter.failed(ip);
        }
        assert!(limiter.blocked(ip));
        assert!(limiter.blocked(neighbour), "same /64");
        assert!(!limiter.blocked(other));
    }

    #[test]
    fn session_ids_are_16_hex_digits_and_remembered() {
        let sessions = Sessions::default();
        let id = sessions.open().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(sessions.valid(&id));
        assert!(!sessions.valid("0000000000000000"));
    }
}
