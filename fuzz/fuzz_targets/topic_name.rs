//! Topic names as they arrive in `/publish/{topic}`, `/subscribe/{topic}` or
//! `topic=`: parsing never panics, and accepts exactly what the README's
//! contract allows (checked against a reference written from the README, not
//! from `src/topic/name.rs`); an accepted name is the input, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::fuzzing::topic::{InvalidTopic, MAX_TOPIC_BYTES, TopicName, TopicStr};

/// docs/http-api.md, "Topics": 1 to 256 bytes of `A-Z a-z 0-9 _ . : ~ -`, in segments
/// joined by `/`, no empty segment.
fn contract_allows(raw: &[u8]) -> bool {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"_.:~-".contains(b);
    (1..=256).contains(&raw.len())
        && raw
            .split(|&b| b == b'/')
            .all(|segment| !segment.is_empty() && segment.iter().all(allowed))
}

fn check(raw: &str) {
    assert_eq!(MAX_TOPIC_BYTES, 256, "the contract's limit");
    let parsed = TopicName::parse(raw);
    assert_eq!(
        parsed.is_ok(),
        contract_allows(raw.as_bytes()),
        "{raw:?}: {parsed:?}"
    );
    // The borrowed form decides the same.
    assert_eq!(TopicStr::parse(raw).map(TopicStr::to_owned), parsed);
    match parsed {
        Ok(name) => {
            assert_eq!(name.as_str(), raw);
            assert_eq!(name.to_string(), raw);
            assert_eq!(name.borrowed().as_str(), raw);
            assert_eq!(TopicName::parse(&name.to_string()), Ok(name.clone()));
            assert!(!raw.starts_with('/') && !raw.ends_with('/') && !raw.contains("//"));
        }
        Err(err) => {
            let reason = err.to_string();
            assert!(reason.starts_with("invalid topic: "), "{reason:?}");
            assert!(
                !reason.contains(['\r', '\n']),
                "reason on one line: {reason:?}"
            );
            match err {
                InvalidTopic::Empty => assert!(raw.is_empty()),
                InvalidTopic::TooLong { n_bytes } => {
                    assert_eq!(n_bytes, raw.len());
                    assert!(n_bytes > 256);
                }
                InvalidTopic::BadChar { ch, at } => {
                    assert!(raw.len() <= 256);
                    assert!(raw.is_char_boundary(at));
                    assert!(raw[at..].starts_with(ch));
                    assert!(!ch.is_ascii_alphanumeric() && !"_.:~-/".contains(ch));
                    // The first one named.
                    assert!(contract_allows_chars(&raw[..at]));
                }
                InvalidTopic::EmptySegment => {
                    assert!(contract_allows_chars(raw));
                    assert!(raw.split('/').any(str::is_empty));
                }
            }
        }
    }
}

fn contract_allows_chars(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:~-/".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    // Paths are UTF-8 by the time they are split off; anything else reaches
    // the parser only through lossy decoding (U+FFFD).
    check(&String::from_utf8_lossy(data));
});
