//! `ForwardAuth`: asks the application whether a subscribe may go ahead.
//!
//! For each subscribe that needs a check, a `GET` goes to
//! `subscribe_auth_url` with the topics as `topic=` parameters and the
//! subscribe's `Cookie`, `Authorization` and `Origin` headers, plus
//! `X-Forwarded-For` with the client's address; nginx's `auth_request` and
//! nchan's `nchan_authorize_request` work the same way, so an app that has
//! one of those routes already has the right shape. `2xx` allows, `401` and
//! `403` refuse with that status, anything else (or no answer within
//! `subscribe_auth_timeout`) is a temporary refusal, as is a check while
//! 1,024 are already waiting on the application. The app's answer body is
//! read and thrown away (so its connection goes back to the pool), never
//! passed on.
//!
//! One pooled hyper client (hyper-util's legacy client, on the hyper the
//! server already runs) serves every check. With `subscribe_auth_cache`, a
//! `2xx` is reused for the same cookie, authorization and topics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::cache::{self, AnswerCache};
use crate::metrics::Metrics;
use crate::topic::name::TopicName;

/// Allowed answers remembered at most.
const CACHE_ENTRIES: usize = 65_536;
/// How much of the app's answer body is read (and dropped) so that its
/// connection can be reused; a longer body closes the connection instead.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an idle connection to the app stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Checks waiting on the application at once; more are temporary refusals,
/// so a flood of subscribes cannot become a flood of connections to the app.
const MAX_IN_FLIGHT: usize = 1024;

const FORWARDED: [HeaderName; 3] = [header::COOKIE, header::AUTHORIZATION, header::ORIGIN];

/// The app's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// `401` or `403`, as the app answered.
    Refused(u16),
    /// Another status, a timeout or a connection error: try later.
    Unavailable(Unavailable),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    Status(u16),
    Timeout,
    Unreachable,
    /// `MAX_IN_FLIGHT` checks are already waiting on the application.
    Busy,
}

pub struct ForwardAuth {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// The URL with `?` or `&` appended, ready for the topic parameters.
    url_prefix: String,
    timeout: Duration,
    cache_for: Duration,
    cache: AnswerCache<()>,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
}

impl ForwardAuth {
    /// `url` was checked by the configuration (an `http://` URL).
    pub fn new(
        url: &str,
        timeout: Duration,
        cache_for: Duration,
        metrics: Arc<Metrics>,
    ) -> ForwardAuth {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let separator = if url.contains('?') { '&' } else { '?' };
        ForwardAuth {
            client,
            url_prefix: format!("{url}{separator}"),
            timeout,
            cache_for,
            cache: AnswerCache::new(if cache_for.is_zero() {
                0
            } else {
                CACHE_ENTRIES
            }),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            metrics,
        }
    }

    /// Asks the app about `topics` for a subscribe with `headers` from
    /// `client`.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        topics: &[&TopicName],
    ) -> Verdict {
        let cache_key = (!self.cache_for.is_zero()).then(|| self.cache_key(headers, topics));
        if let Some(key) = &cache_key
            && self.cache.get(key).is_some()
        {
            return Verdict::Allowed;
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Verdict::Unavailable(Unavailable::Busy);
        };
        let started = Instant::now();
        let verdict = match self.request(headers, client, topics) {
            Some(request) => self.ask(request).await,
            None => Verdict::Unavailable(Unavailable::Unreachable),
        };
        self.metrics.forward_auth_answered(started.elapsed());
        if let (Verdict::Allowed, Some(key)) = (verdict, cache_key) {
            self.cache.insert(key, (), Instant::now() + self.cache_for);
        }
        verdict
    }

    fn cache_key(&self, headers: &HeaderMap, topics: &[&TopicName]) -> cache::Key {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + topics.len());
        for name in [header::COOKIE, header::AUTHORIZATION] {
            // A separator per header, so that values cannot run together.
            parts.push(b"\0header");
            parts.extend(headers.get_all(name).iter().map(HeaderValue::as_bytes));
        }
        parts.push(b"\0topics");
        parts.extend(topics.iter().map(|topic| topic.as_str().as_bytes()));
        cache::key(parts)
    }

    fn request(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        topics: &[&TopicName],
    ) -> Option<Request<Empty<Bytes>>> {
        let mut url = self.url_prefix.clone();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for topic in topics {
            query.append_pair("topic", topic.as_str());
        }
        url.push_str(&query.finish());
        let uri: Uri = url.parse().ok()?;
        let mut request = Request::get(uri).body(Empty::new()).ok()?;
        let forwarded = request.headers_mut();
        for name in FORWARDED {
            let values: Vec<&HeaderValue> = headers.get_all(&name).iter().collect();
            match (name == header::COOKIE, values.as_slice()) {
                (_, []) => {}
                // HTTP/2 may split cookies over several fields; HTTP/1.1
                // wants them in one.
                (true, [_, _, ..]) => {
                    let joined = values
                        .iter()
                        .map(|value| value.as_bytes())
                        .collect::<Vec<_>>()
                        .join(&b"; "[..]);
                    forwarded.insert(name, HeaderValue::from_bytes(&joined).ok()?);
                }
                (_, values) => {
                    for value in values {
                        forwarded.append(name.clone(), (*value).clone());
                    }
                }
            }
        }
        if let Some(client) = client {
            // The address this connection came from, and nothing a client
            // wrote: an app reading the first entry of a list could be lied to.
            let address = HeaderValue::from_str(&client.to_string()).ok()?;
            forwarded.insert("x-forwarded-for", address);
        }
        Some(request)
    }

    async fn ask(&self, request: Request<Empty<Bytes>>) -> Verdict {
        let deadline = Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_elapsed) => return Verdict::Unavailable(Unavailable::Timeout),
            Ok(Err(err)) => {
                tracing::debug!(cause = %err, "subscribe authorization: cannot reach the application");
                return Verdict::Unavailable(Unavailable::Unreachable);
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        // Drained so the connection goes back to the pool; never passed on.
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let _ = tokio::time::timeout_at(deadline, body.collect()).await;
        match status {
            200..=299 => Verdict::Allowed,
            401 | 403 => Verdict::Refused(status),
            other => Verdict::Unavailable(Unavailable::Status(other)),
        }
    }
}
