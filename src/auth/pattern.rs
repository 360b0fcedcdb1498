//! Topic patterns, as tokens grant them and `anonymous_topics` lists them.
//!
//! A pattern is split on `/` like a topic: a literal segment matches itself,
//! `*` matches exactly one segment, and `**`, only as the last segment,
//! matches one or more. `**` alone matches every topic. Patterns are parsed
//! once (per token, or at start-up) and matching is a walk over the topic's
//! bytes with no allocation. Nothing here knows about HTTP or tokens.

use std::fmt;

/// The longest pattern a token may carry, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: any one segment.
    One,
    /// `**` as the last segment: one or more segments.
    Rest,
}

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    segments: Box<[Segment]>,
}

/// Why a pattern was refused; `Display` says so without echoing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidPattern {
    Empty,
    TooLong,
    EmptySegment,
    /// `**` before the last segment.
    RestNotLast,
    /// A segment mixing `*` with other characters (`a*`).
    PartialWildcard,
}

impl fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidPattern::Empty => "empty topic pattern",
            InvalidPattern::TooLong => "topic pattern longer than 256 bytes",
            InvalidPattern::EmptySegment => "topic pattern with an empty segment",
            InvalidPattern::RestNotLast => "`**` is allowed only as a pattern's last segment",
            InvalidPattern::PartialWildcard => "`*` must be a whole segment",
        })
    }
}

impl TopicPattern {
    pub fn parse(text: &str) -> Result<TopicPattern, InvalidPattern> {
        if text.is_empty() {
            return Err(InvalidPattern::Empty);
        }
        if text.len() > MAX_PATTERN_BYTES {
            return Err(InvalidPattern::TooLong);
        }
        let n_segments = text.split('/').count();
        let mut segments = Vec::with_capacity(n_segments);
        for (i, segment) in text.split('/').enumerate() {
            segments.push(match segment {
                "" => return Err(InvalidPattern::EmptySegment),
                "*" => Segment::One,
                "**" if i + 1 == n_segments => Segment::Rest,
                "**" => return Err(InvalidPattern::RestNotLast),
                literal if literal.contains('*') => return Err(InvalidPattern::PartialWildcard),
                literal => Segment::Literal(literal.into()),
            });
        }
        Ok(TopicPattern {
            segments: segments.into_boxed_slice(),
        })
    }

    /// Whether `topic` (a valid topic name) matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut rest = Some(topic);
        for segment in self.segments.iter() {
            let Some(remaining) = rest else {
                return false;
            };
            if *segment == Segment::Rest {
                // One or more segments left, each non-empty.
                return !remaining.is_empty();
            }
            let (head, tail) = match remaining.split_once('/') {
                Some((head, tail)) => (head, Some(tail)),
                None => (remaining, None),
            };
            let matched = match segment {
                Segment::Literal(literal) => **literal == *head,
                Segment::One => !head.is_empty(),
                Segment::Rest => unreachable!("handled above"),
            };
            if !matched {
                return false;
            }
            rest = tail;
        }
        rest.is_none()
    }
}

/// A list of patterns: a topic is allowed when any of them matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Box<[TopicPattern]>);

impl Patterns {
    /// Parses every pattern; the first bad one refuses the whole list.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Patterns, InvalidPattern> {
        texts
            .iter()
            .map(|text| TopicPattern::parse(text.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(|patterns| Patterns(patterns.into_boxed_slice()))
    }

    pub fn allows(&self, topic: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        TopicPattern::parse(pattern)
            .expect("valid pattern")
            .matches(topic)
    }

    #[test]
    fn the_contract_examples() {
        assert!(matches("users/42/notifications", "users/42/notifications"));
        assert!(!matches("users/42/notifications", "users/42"));
        assert!(matches("news/*", "news/today"));
        assert!(!matches("news/*", "news"));
        assert!(!matches("news/*", "news/today/sport"));
        assert!(matches("users/42/**", "users/42/a"));
        assert!(matches("users/42/**", "users/42/a/b/c"));
        assert!(!matches("users/42/**", "users/42"));
        assert!(!matches("users/42/**", "users/420/a"));
        assert!(matches("**", "anything"));
        assert!(matches("**", "any/thing/at/all"));
        assert!(matches("*/status", "orders/status"));
        assert!(matches("*", "status"));
        assert!(!matches("*", "a/b"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        let err = |text: &str| TopicPattern::parse(text).err();
        assert_eq!(err(""), Some(InvalidPattern::Empty));
        assert_eq!(err("a//b"), Some(InvalidPattern::EmptySegment));
        assert_eq!(err("a/"), Some(InvalidPattern::EmptySegment));
        assert_eq!(err("**/a"), Some(InvalidPattern::RestNotLast));
        assert_eq!(err("a*"), Some(InvalidPattern::PartialWildcard));
        assert_eq!(err("***"), Some(InvalidPattern::PartialWildcard));
        assert_eq!(err(&"a".repeat(257)), Some(InvalidPattern::TooLong));
        assert!(TopicPattern::parse(&"a".repeat(256)).is_ok());
    }

    /// The reference: the pattern as an anchored regular expression.
    fn reference(pattern: &str, topic: &str) -> bool {
        let segment = "[^/]+";
        let body: Vec<String> = pattern
            .split('/')
            .map(|part| match part {
                "*" => segment.to_string(),
                "**" => format!("{segment}(/{segment})*"),
                literal => regex::escape(literal),
            })
            .collect();
        regex::Regex::new(&format!("^{}$", body.join("/")))
            .expect("regex")
            .is_match(topic)
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[ab]{1,2}",
            1 => Just("*".to_string()),
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..5), any::<bool>()).prop_map(|(mut parts, rest)| {
            if rest || parts.is_empty() {
                parts.push("**".into());
            }
            parts.join("/")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec("[ab]{1,2}", 1..7).prop_map(|parts| parts.join("/"))
    }

    proptest! {
        #[test]
        fn matches_like_the_reference(pattern in pattern(), topic in topic()) {
            prop_assert_eq!(matches(&pattern, &topic), reference(&pattern, &topic));
        }

        /// Any text at all: parse refuses or accepts, matching answers; no panic.
        #[test]
        fn never_panics(pattern in "[a*/]{0,12}", topic in "[a*/]{0,12}") {
            if let Ok(parsed) = TopicPattern::parse(&pattern) {
                let _ = parsed.matches(&topic);
            }
        }
    }
}
