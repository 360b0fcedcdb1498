//! Parsers for the value kinds of configuration keys. Each returns a message
//! that completes "invalid <key> from <source>: ...".

use std::net::SocketAddr;
use std::time::Duration;

/// The longest duration any key accepts: far enough for every real use, near
/// enough that deadline arithmetic can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `15s`, `250ms`, `5m`, `1h`: a positive whole number and a unit.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|ch: char| !ch.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration (write it like 15s, 250ms, 5m or 1h)");
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    let duration = match unit {
        "ms" => Duration::from_millis(amount),
        "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        "h" => Duration::from_secs(amount.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(format!("{text:?} must be greater than zero"));
    }
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than the limit of 365 days"));
    }
    Ok(duration)
}

/// A duration, or zero (`0s`, `0`) for keys where zero means "off".
pub fn duration_or_zero(text: &str) -> Result<Duration, String> {
    let digits = text
        .trim()
        .trim_end_matches(|ch: char| ch.is_ascii_alphabetic());
    match digits.parse::<u64>() {
        Ok(0) if matches!(text.trim(), "0" | "0ms" | "0s" | "0m" | "0h") => Ok(Duration::ZERO),
        _ => duration(text),
    }
}

/// A whole number within `min..=max`.
pub fn count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    in_range(n, min, max, text)
}

/// A size in bytes: `65536`, `64KiB`, `1MiB` or `2GiB`, within `min..=max`.
pub fn bytes(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let trimmed = text.trim();
    let (digits, multiplier) = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .into_iter()
        .find_map(|(unit, multiplier)| Some((trimmed.strip_suffix(unit)?, multiplier)))
        .unwrap_or((trimmed, 1));
    let n: usize = digits.parse().map_err(|_| {
        format!("{text:?} is not a size (write it like 65536, 64KiB, 1MiB or 2GiB)")
    })?;
    // Past `usize::MAX` is outside every range, even one that ends there
    // (saturating took `17179869184GiB` for `usize::MAX` bytes).
    let size = n
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is outside the allowed range {min}..={max}"))?;
    in_range(size, min, max, text)
}

fn in_range(n: usize, min: usize, max: usize, text: &str) -> Result<usize, String> {
    if n < min || n > max {
        return Err(format!(
            "{text:?} is outside the allowed range {min}..={max}"
        ));
    }
    Ok(n)
}

/// `host:port`, e.g. `127.0.0.1:8080` or `[::1]:8080`.
pub fn address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address (write it like 127.0.0.1:8080 or [::1]:8080)")
    })
}

/// `true` or `false` (also `on`/`off`, `yes`/`no`, `1`/`0`, for
/// environment variables).
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (write true or false)")),
    }
}

/// Comma-separated, blanks trimmed, empties dropped.
pub fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

/// A comma-separated list of networks (`10.0.0.0/8`, `fc00::/7`) or single
/// addresses (`192.0.2.7`, `::1`).
pub fn networks(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list(text)
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("{item:?} is not an address or network (write 10.0.0.0/8 or ::1)")
                })
        })
        .collect()
}

/// A Redis URL: `redis://`, `rediss://` (TLS) or `redis+unix://`, with a
/// host (or a socket path).
pub fn redis_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme));
    match rest {
        Some(rest) if rest.contains("protocol=resp3") => {
            Err("cluster mode speaks RESP2 to Redis: remove protocol=resp3".to_owned())
        }
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Ok(text.to_owned())
        }
        // The value is not echoed: it may hold a password.
        _ => Err("not a Redis URL (write it like redis://127.0.0.1:6379/0, \
                  rediss://host:6380 or redis+unix:///run/redis.sock)"
            .to_owned()),
    }
}

/// `url` with any password replaced by `***`, for messages and
/// `--print-config`: a Redis URL may carry credentials.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Empty means unset.
pub fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zero_durations_where_zero_is_off() {
        assert_eq!(duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(duration_or_zero("30s"), Ok(Duration::from_secs(30)));
        assert!(duration_or_zero("0x").is_err());
        assert!(duration_or_zero("-1s").is_err());
    }

    #[test]
    fn booleans() {
        assert_eq!(boolean("true"), Ok(true));
        assert_eq!(boolean(" OFF "), Ok(false));
        assert_eq!(boolean("0"), Ok(false));
        assert!(boolean("maybe").unwrap_err().contains("not a boolean"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in [
            "", "15", "s", "1.5s", "-1s", "15 s", "15x", "0s", "9999999h",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_and_counts() {
        assert_eq!(bytes("64KiB", 1, usize::MAX), Ok(65536));
        assert_eq!(bytes("1MiB", 1, usize::MAX), Ok(1 << 20));
        assert_eq!(bytes("2GiB", 1, usize::MAX), Ok(2 << 30));
        assert_eq!(bytes("100", 1, usize::MAX), Ok(100));
        assert!(bytes("64kb", 1, usize::MAX).is_err());
        assert!(count("0", 1, 10).is_err());
        assert!(count("11", 1, 10).is_err());
        assert_eq!(count("10", 1, 10), Ok(10));
    }

    #[test]
    fn redis_urls() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "rediss://user:pw@redis.example:6380",
            "redis+unix:///run/redis.sock",
        ] {
            assert_eq!(redis_url(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "127.0.0.1:6379",
            "http://x",
            "redis://",
            "redis://a b",
            "redis://h:1/0?protocol=resp3",
        ] {
            assert!(redis_url(bad).is_err(), "{bad:?} accepted");
        }
        let err = redis_url("redis//:hunter2@x").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(redacted_url("redis://:hunter2@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted_url("rediss://me:hunter2@h"), "rediss://me:***@h");
        assert_eq!(redacted_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn addresses_and_lists() {
        assert!(address("127.0.0.1:0").is_ok());
        assert!(address("[::1]:8080").is_ok());
        assert!(address("localhost").is_err());
        assert_eq!(list(" a, ,b "), vec!["a", "b"]);
        assert_eq!(optional("  "), None);
    }

    #[test]
    fn sizes_past_usize_are_refused() {
        // Found by `fuzz/fuzz_targets/config_value.rs`: 2^34 GiB is 2^64
        // bytes, which saturated to `usize::MAX` and passed as in range.
        assert!(bytes("17179869184GiB", 1024, usize::MAX).is_err());
        assert!(bytes("18014398509481984KiB", 0, usize::MAX).is_err());
        assert_eq!(
            bytes("17179869183GiB", 1024, usize::MAX),
            Ok(17_179_869_183 << 30)
        );
    }

    /// The documented forms, in exact arithmetic, as the fuzz target
    /// `config_value` checks them (milliseconds; bytes).
    fn exact_duration(text: &str) -> Option<u128> {
        let text = text.trim();
        let split = text.bytes().take_while(u8::is_ascii_digit).count();
        let amount = u128::from(text[..split].parse::<u64>().ok()?);
        let unit_ms = match &text[split..] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        Some(amount * unit_ms)
    }

    fn exact_size(text: &str) -> Option<u128> {
        let text = text.trim();
        let (digits, unit) = [("KiB", 1u128 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
            .into_iter()
            .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, unit)))
            .unwrap_or((text, 1));
        Some(digits.parse::<usize>().ok()? as u128 * unit)
    }

    proptest! {
        #[test]
        fn values_are_what_was_written_and_within_range(
            text in prop_oneof![
                "\\s?[0-9]{0,21}(ms|s|m|h|KiB|MiB|GiB|kb|x|)\\s?",
                any::<String>(),
            ],
            (min, max) in prop_oneof![
                Just((1024, usize::MAX)),
                Just((1, 16 << 20)),
                (0..=usize::MAX, 0..=usize::MAX),
            ],
        ) {
            let max_ms = MAX_DURATION.as_millis();
            match duration(&text) {
                Ok(d) => {
                    prop_assert!(!d.is_zero() && d <= MAX_DURATION);
                    prop_assert_eq!(Some(d.as_millis()), exact_duration(&text));
                }
                Err(_) => prop_assert!(
                    !exact_duration(&text).is_some_and(|ms| (1..=max_ms).contains(&ms))
                ),
            }
            if let Ok(d) = duration_or_zero(&text) {
                prop_assert!(d <= MAX_DURATION);
            }
            let within = |n: u128| (min as u128..=max as u128).contains(&n);
            match bytes(&text, min, max) {
                Ok(n) => {
                    prop_assert!((min..=max).contains(&n));
                    prop_assert_eq!(Some(n as u128), exact_size(&text));
                }
                Err(_) => prop_assert!(!exact_size(&text).is_some_and(within)),
            }
            if let Ok(n) = count(&text, min, max) {
                prop_assert!((min..=max).contains(&n));
            }
            if let Ok(value) = boolean(&text) {
                let word = text.trim().to_ascii_lowercase();
                let words = if value {
                    ["true", "on", "yes", "1"]
                } else {
                    ["false", "off", "no", "0"]
                };
                prop_assert!(words.contains(&word.as_str()));
            }
            let _ = (address(&text), redis_url(&text), redacted_url(&text), list(&text));
        }
    }
}
