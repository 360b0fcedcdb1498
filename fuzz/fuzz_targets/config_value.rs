//! Configuration value parsers (`src/config/value.rs`), on whatever a file,
//! an environment variable or a flag may hold: never panic; an accepted
//! value is within its range, and, for the plain forms (`15s`, `250ms`,
//! `5m`, `1h`; `65536`, `64KiB`), exactly the one written (checked in exact
//! arithmetic against references written here).
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

/// `<digits><ms|s|m|h>` without a leading zero, the form every version of
/// the grammar reads the same, in exact milliseconds (the range is checked
/// apart). `None` for anything else, about which only the ranges are said.
fn simple_duration(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, unit) = text.split_at(split);
    let padded = digits.len() > 1 && digits.starts_with('0');
    if digits.is_empty() || digits.len() > 30 || padded {
        return None;
    }
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    digits.parse::<u128>().ok()?.checked_mul(unit_ms)
}

/// `<digits>[KiB|MiB|GiB]`, in exact bytes; `None` for any other form.
fn simple_size(text: &str) -> Option<u128> {
    let text = text.trim();
    let (digits, multiplier) = [("KiB", 1u128 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .into_iter()
        .find_map(|(unit, multiplier)| Some((text.strip_suffix(unit)?, multiplier)))
        .unwrap_or((text, 1));
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u128>().ok()?.checked_mul(multiplier)
}

fn check_durations(text: &str) {
    let simple = simple_duration(text);
    let max_ms = MAX_DURATION.as_millis();
    match duration(text) {
        Ok(value) => {
            assert!(
                !value.is_zero() && value <= MAX_DURATION,
                "{text:?}: {value:?}"
            );
            if let Some(ms) = simple {
                assert_eq!(value, Duration::from_millis(ms as u64), "{text:?}");
            }
            // Where zero means "off", every other duration reads the same.
            assert_eq!(duration_or_zero(text), Ok(value), "{text:?}");
        }
        Err(message) => assert!(
            !simple.is_some_and(|ms| (1..=max_ms).contains(&ms)),
            "{text:?} refused: {message}"
        ),
    }
    match duration_or_zero(text) {
        Ok(value) => {
            assert!(value <= MAX_DURATION, "{text:?}: {value:?}");
            if !value.is_zero() {
                assert_eq!(duration(text), Ok(value), "{text:?}");
            }
        }
        Err(_) => assert!(simple != Some(0) && text.trim() != "0", "{text:?}"),
    }
}

fn check_numbers(text: &str) {
    let exact_count = text.trim().parse::<usize>().ok();
    let simple = simple_size(text);
    for (min, max) in RANGES {
        let within = |n: u128| (min as u128..=max as u128).contains(&n);
        match count(text, min, max) {
            Ok(n) => assert_eq!(Some(n), exact_count.filter(|&n| within(n as u128))),
            Err(_) => assert!(!exact_count.is_some_and(|n| within(n as u128)), "{text:?}"),
        }
        match bytes(text, min, max) {
            Ok(n) => {
                assert!((min..=max).contains(&n), "{text:?}: {n}");
                if let Some(exact) = simple {
                    assert_eq!(n as u128, exact, "{text:?} in {min}..={max}");
                }
            }
            Err(_) => assert!(!simple.is_some_and(within), "{text:?} in {min}..={max}"),
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
