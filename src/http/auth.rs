//! `publish_token`: the bearer token a publisher must present when set.

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use crate::error::ApiError;

/// Accepts the request when no token is configured or when it carries
/// `Authorization: Bearer <token>` with the configured token.
pub fn authorize(headers: &HeaderMap, token: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = token else {
        return Ok(());
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()));
    match presented {
        Some(presented) if constant_time_eq(presented, expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// The credentials of a `Bearer` authorization value (scheme is case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn check(header: Option<&str>, expect_ok: bool) {
        let mut headers = HeaderMap::new();
        if let Some(value) = header {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
        }
        assert_eq!(
            authorize(&headers, Some("s3cret")).is_ok(),
            expect_ok,
            "{header:?}"
        );
    }

    #[test]
    fn bearer_tokens() {
        check(Some("Bearer s3cret"), true);
        check(Some("bearer  s3cret "), true);
        check(Some("Bearer s3cre"), false);
        check(Some("Bearer s3cret2"), false);
        check(Some("Basic s3cret"), false);
        check(Some("s3cret"), false);
        check(None, false);
        assert!(authorize(&HeaderMap::new(), None).is_ok());
    }
}
