//! Where a subscriber's token comes from: the `Authorization` header, else
//! the cookie `cookie_name`, else the query parameter `query_param`. Only
//! the first source present counts: a bad header does not fall back to a
//! cookie, so a client always knows which token was judged.

use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;

use super::AuthError;
use super::jwt::Invalid;
use crate::config::AuthConfig;

/// The token sources `[auth]` turns on.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `None` when `cookie_name = ""`.
    cookie_name: Option<String>,
    /// `None` when `query_param = ""`.
    query_param: Option<String>,
    pub query_max_lifetime: Duration,
}

/// The token a request presents, and where.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    Header(String),
    Cookie(String),
    Query(String),
}

impl Sources {
    pub fn of(auth: &AuthConfig) -> Sources {
        let non_empty = |name: &String| Some(name.clone()).filter(|name| !name.is_empty());
        Sources {
            cookie_name: non_empty(&auth.cookie_name),
            query_param: non_empty(&auth.query_param),
            query_max_lifetime: auth.query_token_max_lifetime,
        }
    }

    pub fn presented(&self, head: &Parts) -> Result<Presented, AuthError> {
        let mut authorization = head.headers.get_all(header::AUTHORIZATION).iter();
        if let Some(value) = authorization.next() {
            if authorization.next().is_some() {
                return Err(AuthError::InvalidRequest);
            }
            let token = bearer_token(value.as_bytes())
                .and_then(|token| std::str::from_utf8(token).ok())
                .ok_or(AuthError::InvalidRequest)?;
            return Ok(Presented::Header(token.to_owned()));
        }
        if let Some(name) = &self.cookie_name
            && let Some(token) = cookie(head.headers.get_all(header::COOKIE).iter(), name)
        {
            return Ok(Presented::Cookie(token));
        }
        if let Some(name) = &self.query_param {
            let mut values = form_urlencoded::parse(head.uri.query().unwrap_or("").as_bytes())
                .filter(|(key, _)| key == name.as_str())
                .map(|(_, value)| value);
            if let Some(token) = values.next() {
                // A malformed credential, not a malformed header: 401.
                if values.next().is_some() {
                    return Err(AuthError::InvalidToken(Invalid::Malformed));
                }
                if !token.is_empty() {
                    return Ok(Presented::Query(token.into_owned()));
                }
            }
        }
        Ok(Presented::Nothing)
    }
}

/// The credentials of a `Bearer` authorization value (the scheme is
/// case-insensitive); `None` for another scheme or no token.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii()).filter(|token| !token.is_empty())
}

/// The first non-empty value of cookie `name` in `Cookie` headers.
fn cookie<'a>(headers: impl Iterator<Item = &'a HeaderValue>, name: &str) -> Option<String> {
    headers
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use hyper::Request;

    use super::*;

    fn sources() -> Sources {
        Sources {
            cookie_name: Some("ssegate_token".into()),
            query_param: Some("access_token".into()),
            query_max_lifetime: Duration::from_secs(300),
        }
    }

    fn presented(uri: &str, headers: &[(&str, &str)]) -> Result<Presented, AuthError> {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (head, ()) = request.body(()).expect("request").into_parts();
        sources().presented(&head)
    }

    #[test]
    fn the_first_source_present_wins() {
        assert_eq!(
            presented(
                "/subscribe/a?access_token=q",
                &[("authorization", "Bearer h"), ("cookie", "ssegate_token=c")]
            ),
            Ok(Presented::Header("h".into()))
        );
        assert_eq!(
            presented(
                "/subscribe/a?access_token=q",
                &[("cookie", "x=1; ssegate_token=c")]
            ),
            Ok(Presented::Cookie("c".into()))
        );
        assert_eq!(
            presented("/subscribe/a?access_token=q", &[("cookie", "x=1")]),
            Ok(Presented::Query("q".into()))
        );
        assert_eq!(presented("/subscribe/a", &[]), Ok(Presented::Nothing));
        // A bad header does not fall back to the cookie.
        assert_eq!(
            presented(
                "/subscribe/a",
                &[("authorization", "Basic h"), ("cookie", "ssegate_token=c")]
            ),
            Err(AuthError::InvalidRequest)
        );
        assert_eq!(
            presented(
                "/subscribe/a",
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")]
            ),
            Err(AuthError::InvalidRequest)
        );
        assert_eq!(
            presented("/subscribe/a?access_token=1&access_token=2", &[]),
            Err(AuthError::InvalidToken(Invalid::Malformed))
        );
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"abc"), None);
    }
}
