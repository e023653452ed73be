//! The request query as the engine reads it (`engine::Query::parse`), and what the engine does
//! with its values before any session is involved: the transport name, the JSONP callback index
//! reflected into scripts, and the `tried` fallback report counted into the metrics.
//!
//! Beyond "no panic":
//! - each field is the value of the last pair with its key, borrowed from the query itself,
//!   and never holds a `&` (checked against a separate model);
//! - a transport name maps back to itself;
//! - an index `valid_index` accepts is 1 to 6 ASCII digits, and the script prelude and JSONP
//!   response that reflect it are exactly the expected bytes around it;
//! - the `tried` report counts exactly its known `name:reason` pairs among the first 8 pieces,
//!   so one handshake moves the fallback counters by 8 at most.
#![no_main]

use halley_engine::engine::Query;
use halley_engine::framing::{html_prelude, jsonp, valid_index, HTML_PRELUDE_MIN};
use halley_engine::stats::{EngineStats, FALLBACK_REASONS};
use halley_engine::TransportKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `Uri::query` is a `&str`; hyper only lets URI-legal ASCII through, UTF-8 is a superset.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let q = Query::parse(query);
    let fields = [
        ("EIO", q.eio),
        ("transport", q.transport),
        ("sid", q.sid),
        ("j", q.j),
        ("tried", q.tried),
    ];
    for (key, value) in fields {
        assert_eq!(value, last_value(query, key), "{key} in {query:?}");
        if let Some(value) = value {
            assert!(!value.contains('&'));
            let range = query.as_bytes().as_ptr_range();
            assert!(
                range.contains(&value.as_ptr()) || value.is_empty(),
                "{key} not borrowed"
            );
        }
    }

    if let Some(name) = q.transport {
        if let Some(t) = TransportKind::from_name(name) {
            assert_eq!(t.name(), name);
        }
    }

    if let Some(j) = q.j {
        let digits = (1..=6).contains(&j.len()) && j.bytes().all(|b| b.is_ascii_digit());
        assert_eq!(valid_index(j), digits, "valid_index({j:?})");
        if digits {
            let prelude = html_prelude(j);
            assert!(prelude.len() > HTML_PRELUDE_MIN);
            let needle = format!("var p=parent.___eio[{j}];</script>");
            assert!(std::str::from_utf8(&prelude).unwrap().contains(&needle));
            assert_eq!(&jsonp(j, &[])[..], format!("___eio[{j}](\"\");").as_bytes());
        }
    }

    if let Some(tried) = q.tried {
        let stats = EngineStats::default();
        stats.fallback_report(tried);
        let counted: u64 = TransportKind::ALL
            .iter()
            .flat_map(|&t| FALLBACK_REASONS.iter().map(move |&r| (t, r)))
            .map(|(t, r)| stats.fallbacks(t, r))
            .sum();
        assert!(counted <= 8, "one report counted {counted} fallbacks");
        assert_eq!(counted, known_pairs(tried), "tried={tried:?}");
    }
});

/// The model: scan the pairs from the end, first match wins; a pair without `=` is a key with
/// an empty value.
fn last_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.rsplit('&').find_map(|pair| match pair.find('=') {
        Some(eq) => (&pair[..eq] == key).then(|| &pair[eq + 1..]),
        None => (pair == key).then_some(""),
    })
}

fn known_pairs(tried: &str) -> u64 {
    let mut n = 0;
    for (i, pair) in tried.split(',').enumerate() {
        if i == 8 {
            break;
        }
        let Some(colon) = pair.find(':') else {
            continue;
        };
        let (name, reason) = (&pair[..colon], &pair[colon + 1..]);
        if TransportKind::ALL.iter().any(|t| t.name() == name) && FALLBACK_REASONS.contains(&reason)
        {
            n += 1;
        }
    }
    n
}
