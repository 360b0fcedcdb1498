//! Topic names: validated once at the edge, then carried as a `TopicName`.
//!
//! The contract allows 1 to 256 bytes of `A-Z a-z 0-9 _ . : ~ -` in one or
//! more non-empty segments joined by `/`. Nothing here knows about HTTP: the
//! caller decides how a name arrived (path or query) and maps `InvalidTopic`
//! to a `400`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The longest topic name the contract allows, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;

/// A topic name that passed validation; cheap to clone (one `Arc`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicName(Arc<str>);

/// Why a candidate topic name was refused; `Display` is the one-line reason
/// sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidTopic {
    Empty,
    TooLong { n_bytes: usize },
    BadChar { ch: char, at: usize },
    EmptySegment,
}

/// A validated topic name borrowed from the request: looking a topic up
/// needs no allocation; only creating one does (`to_owned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicStr<'a>(&'a str);

impl<'a> TopicStr<'a> {
    /// Validates `raw` against the contract's topic grammar.
    pub fn parse(raw: &'a str) -> Result<TopicStr<'a>, InvalidTopic> {
        validate(raw).map(|()| TopicStr(raw))
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }

    pub fn to_owned(self) -> TopicName {
        TopicName(Arc::from(self.0))
    }
}

impl TopicName {
    /// Validates `raw` against the contract's topic grammar.
    pub fn parse(raw: &str) -> Result<TopicName, InvalidTopic> {
        TopicStr::parse(raw).map(TopicStr::to_owned)
    }

    pub fn borrowed(&self) -> TopicStr<'_> {
        TopicStr(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(raw: &str) -> Result<(), InvalidTopic> {
    {
        if raw.is_empty() {
            return Err(InvalidTopic::Empty);
        }
        if raw.len() > MAX_TOPIC_BYTES {
            return Err(InvalidTopic::TooLong { n_bytes: raw.len() });
        }
        if let Some((at, ch)) = raw.char_indices().find(|&(_, ch)| !is_topic_char(ch)) {
            return Err(InvalidTopic::BadChar { ch, at });
        }
        if raw.split('/').any(str::is_empty) {
            return Err(InvalidTopic::EmptySegment);
        }
        Ok(())
    }
}

fn is_topic_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | ':' | '~' | '-' | '/')
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for InvalidTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidTopic::Empty => f.write_str("invalid topic: the name is empty"),
            InvalidTopic::TooLong { n_bytes } => write!(
                f,
                "invalid topic: {n_bytes} bytes is longer than the limit of {MAX_TOPIC_BYTES}"
            ),
            // `{:?}` escapes control characters, so the reason stays on one line.
            InvalidTopic::BadChar { ch, at } => write!(
                f,
                "invalid topic: character {ch:?} at byte {at} is not allowed \
                 (use A-Z a-z 0-9 _ . : ~ - and / between segments)"
            ),
            InvalidTopic::EmptySegment => {
                f.write_str("invalid topic: empty segment (no leading, trailing or doubled '/')")
            }
        }
    }
}

impl std::error::Error for InvalidTopic {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check(raw: &str, expect: Result<(), InvalidTopic>) {
        assert_eq!(TopicName::parse(raw).map(|_| ()), expect, "topic {raw:?}");
    }

    #[test]
    fn accepts_the_contract_alphabet_and_segments() {
        check("orders", Ok(()));
        check("orders/42/status", Ok(()));
        check("A-Z_a.z:0~9", Ok(()));
        check(&"x".repeat(MAX_TOPIC_BYTES), Ok(()));
    }

    #[test]
    fn refuses_everything_else() {
        check("", Err(InvalidTopic::Empty));
        check(
            &"x".repeat(MAX_TOPIC_BYTES + 1),
            Err(InvalidTopic::TooLong { n_bytes: 257 }),
        );
        check("/a", Err(InvalidTopic::EmptySegment));
        check("a/", Err(InvalidTopic::EmptySegment));
        check("a//b", Err(InvalidTopic::EmptySegment));
        check("a%2Fb", Err(InvalidTopic::BadChar { ch: '%', at: 1 }));
        check("a b", Err(InvalidTopic::BadChar { ch: ' ', at: 1 }));
        check("é", Err(InvalidTopic::BadChar { ch: 'é', at: 0 }));
        check("a\nb", Err(InvalidTopic::BadChar { ch: '\n', at: 1 }));
    }

    #[test]
    fn reasons_stay_on_one_line() {
        let err = TopicName::parse("a\r\nb").unwrap_err();
        assert!(!err.to_string().contains(['\r', '\n']), "{err}");
    }

    /// docs/http-api.md, "Topics", written apart from `validate` (the fuzz target
    /// `topic_name` checks the same).
    fn contract_allows(raw: &str) -> bool {
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"_.:~-".contains(b);
        (1..=256).contains(&raw.len())
            && raw
                .as_bytes()
                .split(|&b| b == b'/')
                .all(|segment| !segment.is_empty() && segment.iter().all(allowed))
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_contract_and_keeps_the_name(
            raw in prop_oneof![
                "[A-Za-z0-9_.:~/-]{0,260}",
                "[a-z/%. \\x00\\r\\né\u{2028}-]{0,12}",
                any::<String>(),
            ],
        ) {
            let parsed = TopicName::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), contract_allows(&raw), "{:?}", raw);
            match parsed {
                Ok(name) => {
                    prop_assert_eq!(name.as_str(), raw.as_str());
                    prop_assert_eq!(TopicName::parse(&name.to_string()), Ok(name));
                }
                Err(err) => prop_assert!(!err.to_string().contains(['\r', '\n'])),
            }
        }

        #[test]
        fn names_of_valid_segments_round_trip(
            segments in prop::collection::vec("[A-Za-z0-9_.:~-]{1,40}", 1..12),
        ) {
            let raw = segments.join("/");
            match TopicName::parse(&raw) {
                Ok(name) => prop_assert_eq!(name.as_str(), raw.as_str()),
                Err(err) => prop_assert_eq!(
                    err,
                    InvalidTopic::TooLong { n_bytes: raw.len() }
                ),
            }
        }
    }
}
