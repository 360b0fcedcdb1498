//! Parsers for the value kinds of configuration keys. Each returns a message
//! that completes "invalid <key> from <source>: ...".

use std::net::SocketAddr;
use std::time::Duration;

/// The longest duration any key accepts: far enough for every real use, near
/// enough that deadline arithmetic can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A positive duration, as `humantime` reads them (`15s`, `250ms`, `1m30s`,
/// `2h 5min`, `1d`), and also with a decimal fraction (`1.5s`, `0.25h`),
/// which `humantime` does not take: at most 365 days.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = any_duration(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?} must be greater than zero"));
    }
    Ok(duration)
}

/// A duration, or zero (`0s`, `0`) for keys where zero means "off".
pub fn duration_or_zero(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "0" => Ok(Duration::ZERO),
        text => any_duration(text),
    }
}

/// A duration of zero or more, at most `MAX_DURATION`.
fn any_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("{text:?} is not a duration (write it like 15s, 250ms, 1m30s, 1.5s or 2h)");
    // Plain digits are a number without its unit, which humantime would
    // refuse too; say what is missing.
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} needs a unit (15s, 250ms, 5m)"));
    }
    let duration = match text.contains('.') {
        false => humantime::parse_duration(text).map_err(|_| bad())?,
        true => fractional_duration(text).ok_or_else(bad)?,
    };
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than the limit of 365 days"));
    }
    Ok(duration)
}

/// `1.5s`, `1m 0.5s`: spans of `<digits>[.<digits>]<unit>`, each unit as
/// `humantime` names it, summed exactly (to the nanosecond, rounded down).
fn fractional_duration(text: &str) -> Option<Duration> {
    let mut total_ns: u128 = 0;
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let n_number = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(n_number);
        let n_unit = after
            .find(|ch: char| !ch.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(n_unit);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let fraction_ok = match number.contains('.') {
            true => !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()),
            false => true,
        };
        if whole.is_empty() || unit.is_empty() || !fraction_ok {
            return None;
        }
        let unit_ns = humantime::parse_duration(&format!("1{unit}"))
            .ok()?
            .as_nanos();
        let whole: u128 = whole.parse().ok()?;
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        let fraction: u128 = match fraction {
            "" => 0,
            digits => digits.parse().ok()?,
        };
        let span = whole
            .checked_mul(unit_ns)?
            .checked_add(fraction.checked_mul(unit_ns)? / scale)?;
        total_ns = total_ns.checked_add(span)?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

/// A whole number within `min..=max`.
pub fn count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    in_range(n, min, max, text)
}

/// `bytes` in `min..=max`, or 0, which turns the setting off (`off` says
/// what 0 means, in the refusal of a size between).
pub fn bytes_or_off(text: &str, min: usize, max: usize, off: &str) -> Result<usize, String> {
    let size = bytes(text, 0, max)?;
    if (1..min).contains(&size) {
        return Err(format!("{text:?} is below {min} (write 0 for {off})"));
    }
    Ok(size)
}

/// A size in bytes: `65536`, `64KiB`, `1MiB`, `2GiB`, or a fraction of a
/// unit (`1.5MiB`, rounded down to the byte), within `min..=max`.
pub fn bytes(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let trimmed = text.trim();
    let (number, multiplier) = [("KiB", 1u128 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .into_iter()
        .find_map(|(unit, multiplier)| Some((trimmed.strip_suffix(unit)?, multiplier)))
        .unwrap_or((trimmed, 1));
    let bad = || format!("{text:?} is not a size (write it like 65536, 64KiB, 1.5MiB or 2GiB)");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    // A fraction needs a unit: there is no half a byte.
    if !digits(whole) || (number.contains('.') && (!digits(fraction) || multiplier == 1)) {
        return Err(bad());
    }
    let out_of_range = || format!("{text:?} is outside the allowed range {min}..={max}");
    // Digits past u128 (or past usize after scaling) are outside every range,
    // even one that ends at usize::MAX.
    let whole: u128 = whole.parse().map_err(|_| out_of_range())?;
    let fraction_bytes = match fraction {
        "" => 0,
        digits => {
            let scale = u32::try_from(digits.len())
                .ok()
                .and_then(|n| 10u128.checked_pow(n))
                .ok_or_else(bad)?;
            let value: u128 = digits.parse().map_err(|_| bad())?;
            value.checked_mul(multiplier).ok_or_else(bad)? / scale
        }
    };
    let size = whole
        .checked_mul(multiplier)
        .and_then(|n| n.checked_add(fraction_bytes))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(out_of_range)?;
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
    fn sizes_where_zero_is_off() {
        assert_eq!(bytes_or_off("0", 4096, 1 << 20, "off"), Ok(0));
        assert_eq!(bytes_or_off("64KiB", 4096, 1 << 20, "off"), Ok(64 << 10));
        assert_eq!(
            bytes_or_off("100", 4096, 1 << 20, "no limit"),
            Err("\"100\" is below 4096 (write 0 for no limit)".to_string())
        );
        assert!(bytes_or_off("2MiB", 4096, 1 << 20, "off").is_err());
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
        // humantime's forms, and fractions it does not take.
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2h 5min"), Ok(Duration::from_secs(7500)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("0.25h"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("1m 0.5s"), Ok(Duration::from_millis(60_500)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "", "15", "s", "-1s", "15x", "0s", "0.0s", "9999999h", "1.s", ".5s", "1.5", "1..5s",
            "1.5x", "400d",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("15").unwrap_err().contains("needs a unit"));
        assert_eq!(duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(duration_or_zero("0.0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn sizes_and_counts() {
        assert_eq!(bytes("64KiB", 1, usize::MAX), Ok(65536));
        assert_eq!(bytes("1MiB", 1, usize::MAX), Ok(1 << 20));
        assert_eq!(bytes("2GiB", 1, usize::MAX), Ok(2 << 30));
        assert_eq!(bytes("100", 1, usize::MAX), Ok(100));
        assert_eq!(bytes("1.5MiB", 1, usize::MAX), Ok(3 << 19));
        assert_eq!(bytes("0.5KiB", 1, usize::MAX), Ok(512));
        assert_eq!(bytes("0.001KiB", 0, usize::MAX), Ok(1));
        for bad in ["64kb", "1.5", "1.MiB", ".5MiB", "1.5.2KiB", "KiB", "-1KiB"] {
            assert!(bytes(bad, 0, usize::MAX).is_err(), "{bad:?} accepted");
        }
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
    /// Spans of `<digits>[.<digits>]<ms|s|m|h>` run together (`1m30s`,
    /// `1.5s`), in nanoseconds, exactly (rounded down); `None` for any other
    /// form (humantime takes more, which the reference does not judge).
    fn exact_duration(text: &str) -> Option<u128> {
        let mut rest = text.trim();
        let mut total: u128 = 0;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let whole: u128 = rest[..whole_len].parse().ok()?;
            rest = &rest[whole_len..];
            let (fraction, scale) = match rest.strip_prefix('.') {
                Some(after) => {
                    let n = after.bytes().take_while(u8::is_ascii_digit).count();
                    let value: u128 = after[..n].parse().ok()?;
                    rest = &after[n..];
                    (value, 10u128.checked_pow(u32::try_from(n).ok()?)?)
                }
                None => (0, 1),
            };
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit_ns: u128 = match &rest[..unit_len] {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total = total
                .checked_add(whole.checked_mul(unit_ns)?)?
                .checked_add(fraction.checked_mul(unit_ns)? / scale)?;
        }
        Some(total)
    }

    /// `<digits>[KiB|MiB|GiB]`, or `<digits>.<digits>` with a unit, in
    /// bytes, exactly (rounded down).
    fn exact_size(text: &str) -> Option<u128> {
        let text = text.trim();
        let (number, unit) = [("KiB", 1u128 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
            .into_iter()
            .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, unit)))
            .unwrap_or((text, 1));
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        match number.split_once('.') {
            None if all_digits(number) => number.parse::<u128>().ok()?.checked_mul(unit),
            Some((whole, fraction)) if unit > 1 && all_digits(whole) && all_digits(fraction) => {
                let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
                let whole = whole.parse::<u128>().ok()?.checked_mul(unit)?;
                whole.checked_add(fraction.parse::<u128>().ok()?.checked_mul(unit)? / scale)
            }
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn values_are_what_was_written_and_within_range(
            text in prop_oneof![
                "\\s?[0-9]{0,21}(\\.[0-9]{0,4})?(ms|s|m|h|KiB|MiB|GiB|kb|x|)\\s?",
                "([0-9]{1,3}(\\.[0-9]{1,3})?(ms|s|m|h)){1,3}",
                any::<String>(),
            ],
            (min, max) in prop_oneof![
                Just((1024, usize::MAX)),
                Just((1, 16 << 20)),
                (0..=usize::MAX, 0..=usize::MAX),
            ],
        ) {
            let max_ns = MAX_DURATION.as_nanos();
            let exact = exact_duration(&text);
            match duration(&text) {
                Ok(d) => {
                    prop_assert!(!d.is_zero() && d <= MAX_DURATION);
                    if let Some(ns) = exact {
                        prop_assert_eq!(d.as_nanos(), ns);
                    }
                }
                Err(_) => prop_assert!(!exact.is_some_and(|ns| (1..=max_ns).contains(&ns))),
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
