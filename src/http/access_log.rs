//! The access log (`access_log = true`): one line per request, when its
//! response head goes out, at `info` under the `ssegate::access` target. A
//! stream is one line however many events it carries. Credentials never
//! appear: headers are not logged, and the value of the token query
//! parameter (`auth.query_param`) is replaced.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use hyper::http::request::Parts;

use crate::metrics::Route;

/// What replaces a token in a logged query.
const REDACTED: &str = "[redacted]";

/// Logs one request. `token_param` is the query parameter a subscriber
/// token may come in (`None`: that source is off).
pub fn record(
    head: &Parts,
    status: u16,
    route: Route,
    client: Option<IpAddr>,
    started: Instant,
    token_param: Option<&str>,
) {
    let target = redacted_target(head.uri.path(), head.uri.query(), token_param);
    tracing::info!(
        target: "ssegate::access",
        client = %client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
        method = %head.method,
        target = %target,
        version = ?head.version,
        status,
        route = route.label(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
}

/// `path?query` with the value of every `token_param` parameter replaced.
/// The query is kept as sent otherwise (still percent-encoded), so a line
/// shows what the client asked for.
fn redacted_target<'a>(
    path: &'a str,
    query: Option<&'a str>,
    token_param: Option<&str>,
) -> Cow<'a, str> {
    let Some(query) = query else {
        return Cow::Borrowed(path);
    };
    let redacted: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let decoded: String = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            match token_param {
                Some(param) if decoded == param => Cow::Owned(format!("{name}={REDACTED}")),
                _ => Cow::Borrowed(pair),
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", redacted.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_values_are_replaced_and_everything_else_kept() {
        let token = Some("access_token");
        assert_eq!(redacted_target("/healthz", None, token), "/healthz");
        assert_eq!(
            redacted_target("/subscribe/a", Some("access_token=s3cret&x=1"), token),
            "/subscribe/a?access_token=[redacted]&x=1"
        );
        // Encoded, repeated, or without a value: still the parameter.
        assert_eq!(
            redacted_target(
                "/subscribe",
                Some("topic=a&access%5Ftoken=s3cret&access_token=again&access_token"),
                token
            ),
            "/subscribe?topic=a&access%5Ftoken=[redacted]&access_token=[redacted]&access_token=[redacted]"
        );
        // With the query source off, nothing is taken for a token.
        assert_eq!(
            redacted_target("/subscribe/a", Some("access_token=x"), None),
            "/subscribe/a?access_token=x"
        );
    }
}
