//! Configuration value parsers (`src/config/value.rs`), on whatever a file,
//! an environment variable or a flag may hold: never panic; an accepted
//! value is the one written (checked against references written here from
//! the documented forms, in exact arithmetic) and within its range.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ssegate::fuzzing::config::{
    address, boolean, bytes, count, duration, duration_or_zero, list, optional, redacted_url,
    redis_url,
};

const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The `(min, max)` of every count and size key (`src/config/keys.rs`), and
/// the widest.
const RANGES: [(usize, usize); 9] = [
    (1, 1_000_000),
    (1024, usize::MAX),
    (1, 16 << 20),
    (1, 64 << 20),
    (1, 1024),
    (8192, 16 << 20),
    (1024, 1 << 20),
    (100, 100_000_000),
    (0, usize::MAX),
];

/// `<whole number><ms|s|m|h>`, positive, at most 365 days, in milliseconds.
fn reference_duration(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, unit) = text.split_at(split);
    let amount: u128 = digits.parse::<u64>().ok()?.into();
    let ms = match unit {
        "ms" => amount,
        "s" => amount * 1000,
        "m" => amount * 60_000,
        "h" => amount * 3_600_000,
        _ => return None,
    };
    (ms > 0 && ms <= MAX_DURATION.as_millis()).then_some(ms)
}

/// `<whole number>[KiB|MiB|GiB]`, exactly.
fn reference_size(text: &str) -> Option<u128> {
    let text = text.trim();
    let (digits, multiplier) = [("KiB", 1u128 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .into_iter()
        .find_map(|(unit, multiplier)| Some((text.strip_suffix(unit)?, multiplier)))
        .unwrap_or((text, 1));
    Some(digits.parse::<usize>().ok()? as u128 * multiplier)
}

fn check_durations(text: &str) {
    let reference = reference_duration(text);
    match duration(text) {
        Ok(value) => {
            assert!(
                !value.is_zero() && value <= MAX_DURATION,
                "{text:?}: {value:?}"
            );
            assert_eq!(Some(value.as_millis()), reference, "{text:?}");
        }
        Err(message) => assert_eq!(reference, None, "{text:?} refused: {message}"),
    }
    let is_zero = matches!(text.trim(), "0" | "0ms" | "0s" | "0m" | "0h");
    match duration_or_zero(text) {
        Ok(value) => {
            assert!(value <= MAX_DURATION);
            assert_eq!(value.is_zero(), is_zero, "{text:?}");
            if !is_zero {
                assert_eq!(Ok(value), duration(text));
            }
        }
        Err(_) => assert!(!is_zero && duration(text).is_err(), "{text:?}"),
    }
}

fn check_numbers(text: &str) {
    let exact_count = text.trim().parse::<usize>().ok();
    let exact_size = reference_size(text);
    for (min, max) in RANGES {
        let within = |n: u128| (min as u128..=max as u128).contains(&n);
        match count(text, min, max) {
            Ok(n) => assert_eq!(Some(n), exact_count.filter(|&n| within(n as u128))),
            Err(_) => assert!(!exact_count.is_some_and(|n| within(n as u128)), "{text:?}"),
        }
        match bytes(text, min, max) {
            Ok(n) => {
                assert!((min..=max).contains(&n));
                assert_eq!(Some(n as u128), exact_size, "{text:?} in {min}..={max}");
            }
            Err(_) => assert!(!exact_size.is_some_and(within), "{text:?} in {min}..={max}"),
        }
    }
}

fn check_words(text: &str) {
    let word = text.trim().to_ascii_lowercase();
    match boolean(text) {
        Ok(value) => {
            let words: &[&str] = if value {
                &["true", "on", "yes", "1"]
            } else {
                &["false", "off", "no", "0"]
            };
            assert!(words.contains(&word.as_str()), "{text:?}");
        }
        Err(_) => {
            assert!(!["true", "on", "yes", "1", "false", "off", "no", "0"].contains(&word.as_str()))
        }
    }
    if let Ok(addr) = address(text) {
        assert_eq!(addr.to_string().parse(), Ok(addr));
    }
    let items = list(text);
    assert!(items.len() <= text.split(',').count());
    for item in &items {
        assert!(!item.is_empty() && item.trim() == item && !item.contains(','));
    }
    match optional(text) {
        Some(value) => assert!(!value.is_empty() && value == text.trim()),
        None => assert!(text.trim().is_empty()),
    }
}

fn check_urls(text: &str) {
    match redis_url(text) {
        Ok(url) => {
            assert_eq!(url, text.trim());
            let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
            assert!(
                schemes
                    .iter()
                    .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme))
            );
            assert!(!url.contains(char::is_whitespace));
        }
        // Never echoes the value: it may hold a password.
        Err(message) => assert!(
            message.len() < 200 && !message.contains("://:"),
            "{message}"
        ),
    }
    let redacted = redacted_url(text);
    let Some((scheme, rest)) = text.split_once("://") else {
        assert_eq!(redacted, text);
        return;
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let path = &rest[authority.len()..];
            assert_eq!(redacted, format!("{scheme}://{user}:***@{host}{path}"));
        }
        None => assert_eq!(redacted, text),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_durations(&text);
    check_numbers(&text);
    check_words(&text);
    check_urls(&text);
});
