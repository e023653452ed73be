//! What the bridge connects to and how: its options, and the checks that keep every name
//! lapin will see within an AMQP short string (lapin panics beyond). Pure.

use std::time::Duration;

use crate::bridge::mapping::Defaults;

/// An exchange binding to consume: `exchange` (a topic exchange, declared durable if missing)
/// with a routing `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub pattern: String,
}

impl std::str::FromStr for Binding {
    type Err = String;

    /// `EXCHANGE:PATTERN`, e.g. `events:news.#`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((exchange, pattern)) if !exchange.is_empty() && !pattern.is_empty() => {
                Ok(Binding {
                    exchange: check_name(exchange)?,
                    pattern: check_name(pattern)?,
                })
            }
            _ => Err(format!("expected EXCHANGE:PATTERN, got {s:?}")),
        }
    }
}

/// The longest AMQP short string (queue, exchange and header names, routing keys), in bytes.
pub const SHORT_STRING_MAX: usize = 255;

/// For the configuration: a queue or exchange name fits an AMQP short string.
pub fn check_name(name: &str) -> Result<String, String> {
    if name.len() > SHORT_STRING_MAX {
        return Err(format!(
            "an AMQP name has at most {SHORT_STRING_MAX} bytes, this one has {}",
            name.len()
        ));
    }
    Ok(name.to_owned())
}

/// For the configuration: an `amqp://` URL that lapin can use without panicking (its virtual
/// host becomes a short string).
pub fn check_url(url: &str) -> Result<String, String> {
    let uri: lapin::uri::AMQPUri = url.parse()?;
    if uri.vhost.len() > SHORT_STRING_MAX {
        return Err(format!(
            "the virtual host has at most {SHORT_STRING_MAX} bytes"
        ));
    }
    Ok(url.to_owned())
}

/// What the bridge connects to and how it maps messages.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// A queue to consume (the seed's `socket.io`).
    pub queue: Option<String>,
    /// The queue exists already: check it, do not declare it.
    pub queue_passive: bool,
    /// Exchange bindings to consume through a private queue.
    pub bindings: Vec<Binding>,
    /// Unacked deliveries in flight.
    pub prefetch: u16,
    pub defaults: Defaults,
    /// Where unhandled client events are published (a topic exchange, declared durable).
    pub publish_exchange: Option<String>,
    /// Forward the handshake's Cookie header with each published event.
    pub forward_cookie: bool,
    /// How long a client ack waits for the backend's reply.
    pub reply_timeout: Duration,
    /// Bytes of client events (bodies, routing keys, headers) waiting for the broker, at most;
    /// beyond, events are refused (with [`OUTBOUND_QUEUE`](super::OUTBOUND_QUEUE) as the bound on their count).
    pub outbound_max_bytes: usize,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: "amqp://127.0.0.1:5672/%2f".into(),
            queue: None,
            queue_passive: false,
            bindings: Vec::new(),
            prefetch: 256,
            defaults: Defaults::default(),
            publish_exchange: None,
            forward_cookie: false,
            reply_timeout: Duration::from_secs(10),
            outbound_max_bytes: 16 << 20,
        }
    }
}

/// `url` with its password replaced by `***`, for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_parses_exchange_and_pattern() {
        assert_eq!(
            "events:news.#".parse::<Binding>(),
            Ok(Binding {
                exchange: "events".into(),
                pattern: "news.#".into()
            })
        );
        assert!("events".parse::<Binding>().is_err());
        assert!(":x".parse::<Binding>().is_err());
    }

    #[test]
    fn redact_hides_password() {
        assert_eq!(
            redact("amqp://guest:secret@localhost:5672/%2f"),
            "amqp://guest:***@localhost:5672/%2f"
        );
        assert_eq!(redact("amqp://localhost"), "amqp://localhost");
    }
}
