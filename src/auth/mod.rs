//! Who may subscribe to and publish on which topics (`[auth]`).
//!
//! `Authorizer` is built once at start-up from the configuration and asked
//! once per subscribe and per publish; it knows nothing of sockets or
//! responses, only of request heads, and answers with an `Access` (how long
//! the stream may live) or an `AuthError` (status, `WWW-Authenticate` and a
//! one-line reason, none of which ever quotes a credential).
//!
//! - `pattern`: topic patterns (`*`, trailing `**`).
//! - `jwt`: token verification and its cache.
//! - `forward`: asking the application (`subscribe_auth = "forward"`).
//! - `credentials`: where a subscriber's token comes from.
//! - `cache`: the bounded answer cache both use.
//!
//! An open deployment (`subscribe_auth = "none"`, no `max_stream_lifetime`)
//! pays one branch per subscribe: `Authorizer::subscribe` returns at once.

mod cache;
mod credentials;
mod forward;
pub mod jwt;
pub mod pattern;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::HeaderMap;
use hyper::http::request::Parts;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::{Config, SubscribeAuth};
use crate::metrics::Metrics;
use crate::topic::name::TopicName;
use credentials::Presented;
use forward::{ForwardAuth, Unavailable, Verdict};
use jwt::{Invalid, JwtVerifier, KeyProblem};
use pattern::Patterns;

pub use credentials::bearer_token;

/// The topics a publisher's credential covers (`Authorizer::publish_scope`).
#[derive(Debug, Clone)]
pub enum PublishScope {
    All,
    /// A JWT's publish grants.
    Granted(Arc<Patterns>),
}

impl PublishScope {
    pub fn allows(&self, topic: &str) -> bool {
        match self {
            PublishScope::All => true,
            PublishScope::Granted(patterns) => patterns.allows(topic),
        }
    }
}

/// Why a request was refused; each maps to one status and one
/// `WWW-Authenticate` value (RFC 6750).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credential where one is needed.
    Missing,
    /// A token that failed verification.
    InvalidToken(Invalid),
    /// A valid token that does not grant every requested topic.
    InsufficientScope,
    /// Several `Authorization` headers, or one that is not a Bearer token.
    InvalidRequest,
    /// Publish: a missing, malformed or wrong `Authorization`.
    PublishUnauthorized,
    /// The application answered `401` or `403`.
    ForwardRefused(u16),
    /// The application did not answer usably: a temporary refusal.
    ForwardUnavailable,
}

/// The `reason` label of `ssegate_auth_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedReason {
    Missing,
    Invalid,
    Scope,
    ForwardDenied,
    ForwardError,
}

impl DeniedReason {
    pub const ALL: [DeniedReason; 5] = [
        DeniedReason::Missing,
        DeniedReason::Invalid,
        DeniedReason::Scope,
        DeniedReason::ForwardDenied,
        DeniedReason::ForwardError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeniedReason::Missing => "missing",
            DeniedReason::Invalid => "invalid",
            DeniedReason::Scope => "scope",
            DeniedReason::ForwardDenied => "forward_denied",
            DeniedReason::ForwardError => "forward_error",
        }
    }
}

impl AuthError {
    pub fn status(self) -> u16 {
        match self {
            AuthError::Missing | AuthError::InvalidToken(_) | AuthError::PublishUnauthorized => 401,
            AuthError::InsufficientScope => 403,
            AuthError::InvalidRequest => 400,
            AuthError::ForwardRefused(status) => status,
            AuthError::ForwardUnavailable => 503,
        }
    }

    /// The `WWW-Authenticate` value, for the statuses that carry one.
    pub fn www_authenticate(self) -> Option<&'static str> {
        match self {
            AuthError::Missing => Some(r#"Bearer realm="ssegate""#),
            AuthError::InvalidToken(_) => Some(r#"Bearer realm="ssegate", error="invalid_token""#),
            AuthError::InsufficientScope => {
                Some(r#"Bearer realm="ssegate", error="insufficient_scope""#)
            }
            AuthError::InvalidRequest => Some(r#"Bearer realm="ssegate", error="invalid_request""#),
            AuthError::PublishUnauthorized => Some("Bearer"),
            // RFC 9110 wants a challenge on every 401.
            AuthError::ForwardRefused(401) => Some(r#"Bearer realm="ssegate""#),
            AuthError::ForwardRefused(_) | AuthError::ForwardUnavailable => None,
        }
    }

    pub fn denied_reason(self) -> DeniedReason {
        match self {
            AuthError::Missing | AuthError::PublishUnauthorized => DeniedReason::Missing,
            AuthError::InvalidToken(_) | AuthError::InvalidRequest => DeniedReason::Invalid,
            AuthError::InsufficientScope => DeniedReason::Scope,
            AuthError::ForwardRefused(_) => DeniedReason::ForwardDenied,
            AuthError::ForwardUnavailable => DeniedReason::ForwardError,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("a token is required for this topic"),
            AuthError::InvalidToken(why) => write!(f, "invalid token: {}", why.describe()),
            AuthError::InsufficientScope => {
                f.write_str("the token does not grant every requested topic")
            }
            AuthError::InvalidRequest => {
                f.write_str("send one Authorization header of the form: Bearer <token>")
            }
            AuthError::PublishUnauthorized => f.write_str("missing or wrong bearer token"),
            AuthError::ForwardRefused(status) => {
                write!(f, "the application refused this subscription ({status})")
            }
            AuthError::ForwardUnavailable => f.write_str(
                "the application did not authorize this subscription in time; try later",
            ),
        }
    }
}

/// What an allowed subscribe may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// The stream ends then (the token's `exp`, `max_stream_lifetime`), so
    /// that access is checked again on reconnect.
    pub ends_at: Option<Instant>,
}

pub struct Authorizer {
    mode: SubscribeAuth,
    anonymous_topics: Patterns,
    jwt: Option<JwtVerifier>,
    forward: Option<ForwardAuth>,
    publish_token: Option<Box<[u8]>>,
    sources: credentials::Sources,
    max_stream_lifetime: Option<Duration>,
    /// Every refusal is counted here (`ssegate_auth_denied_total`), by
    /// whichever handler asked.
    metrics: Arc<Metrics>,
}

impl Authorizer {
    /// Reads key files and builds the clients; errors name the key.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Result<Authorizer, KeyProblem> {
        let auth = &config.auth;
        let anonymous_topics =
            Patterns::parse(&auth.anonymous_topics).map_err(|err| KeyProblem {
                key: "auth.anonymous_topics",
                message: err.to_string(),
            })?;
        let jwt = JwtVerifier::from_config(auth)?;
        let forward = match (&auth.subscribe_auth, &auth.subscribe_auth_url) {
            (SubscribeAuth::Forward, Some(url)) => Some(ForwardAuth::new(
                url,
                auth.subscribe_auth_timeout,
                auth.subscribe_auth_cache,
                Arc::clone(&metrics),
            )),
            _ => None,
        };
        Ok(Authorizer {
            mode: auth.subscribe_auth,
            anonymous_topics,
            jwt,
            forward,
            publish_token: config
                .publish_token
                .as_ref()
                .map(|token| token.as_bytes().into()),
            sources: credentials::Sources::of(auth),
            max_stream_lifetime: Some(auth.max_stream_lifetime).filter(|d| !d.is_zero()),
            metrics,
        })
    }

    /// `decision`, with a refusal counted by its reason.
    fn counted<T>(&self, decision: Result<T, AuthError>) -> Result<T, AuthError> {
        if let Err(refused) = &decision {
            self.metrics.auth_denied(refused.denied_reason());
        }
        decision
    }

    /// Whether subscribes are checked at all (`subscribe_auth` not `none`).
    pub fn checks_subscribes(&self) -> bool {
        self.mode != SubscribeAuth::None
    }

    /// Decides a subscribe to `topics` by the request `head` from `client`.
    pub async fn subscribe(
        &self,
        head: &Parts,
        client: Option<IpAddr>,
        topics: &[TopicName],
    ) -> Result<Access, AuthError> {
        let decision = self.decide_subscribe(head, client, topics).await;
        self.counted(decision)
    }

    async fn decide_subscribe(
        &self,
        head: &Parts,
        client: Option<IpAddr>,
        topics: &[TopicName],
    ) -> Result<Access, AuthError> {
        let lifetime_end = self.max_stream_lifetime.map(|d| Instant::now() + d);
        if self.mode == SubscribeAuth::None {
            return Ok(Access {
                ends_at: lifetime_end,
            });
        }
        let guarded: Vec<&TopicName> = topics
            .iter()
            .filter(|topic| !self.anonymous_topics.allows(topic.as_str()))
            .collect();
        if guarded.is_empty() {
            return Ok(Access {
                ends_at: lifetime_end,
            });
        }
        let token_end = match self.mode {
            SubscribeAuth::None => None,
            SubscribeAuth::Jwt => Some(self.subscribe_jwt(head, &guarded)?),
            SubscribeAuth::Forward => {
                self.subscribe_forward(head, client, &guarded).await?;
                None
            }
        };
        let ends_at = match (token_end, lifetime_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Access { ends_at })
    }

    /// A token from the first source present, verified, granting every
    /// topic in `guarded`; answers when the stream must end.
    fn subscribe_jwt(&self, head: &Parts, guarded: &[&TopicName]) -> Result<Instant, AuthError> {
        let Some(jwt) = &self.jwt else {
            // The configuration refuses `jwt` without algorithms.
            return Err(AuthError::Missing);
        };
        let (token, from_query) = match self.sources.presented(head)? {
            Presented::Nothing => return Err(AuthError::Missing),
            Presented::Header(token) | Presented::Cookie(token) => (token, false),
            Presented::Query(token) => (token, true),
        };
        let verified = jwt.verify(&token).map_err(AuthError::InvalidToken)?;
        // To the millisecond, not the second: the stream must end within a
        // second after `exp`, and `now` truncated could cost most of that.
        let lives_for = jwt::lifetime_end(verified.expires_at).saturating_sub(jwt::since_epoch());
        // `jwt_leeway` lets a token whose `exp` passed (by this clock) still
        // publish, but a stream would have to end as it opens, and its
        // client would reconnect with the same token until the leeway ran
        // out: refused at once instead, so the client fetches a fresh one.
        if lives_for.is_zero() {
            return Err(AuthError::InvalidToken(Invalid::Expired));
        }
        if from_query && lives_for > self.sources.query_max_lifetime {
            return Err(AuthError::InvalidToken(Invalid::QueryLifetime));
        }
        if !guarded
            .iter()
            .all(|topic| verified.subscribe.allows(topic.as_str()))
        {
            return Err(AuthError::InsufficientScope);
        }
        Ok(Instant::now() + lives_for)
    }

    async fn subscribe_forward(
        &self,
        head: &Parts,
        client: Option<IpAddr>,
        guarded: &[&TopicName],
    ) -> Result<(), AuthError> {
        let Some(forward) = &self.forward else {
            return Err(AuthError::ForwardUnavailable);
        };
        match forward.check(&head.headers, client, guarded).await {
            Verdict::Allowed => Ok(()),
            Verdict::Refused(status) => Err(AuthError::ForwardRefused(status)),
            Verdict::Unavailable(why) => {
                // At debug: the refusal itself is logged (and counted) once
                // where it is answered.
                match why {
                    Unavailable::Status(status) => tracing::debug!(
                        status,
                        "subscribe authorization: the application answered neither 2xx, 401 nor 403"
                    ),
                    Unavailable::Timeout => tracing::debug!(
                        "subscribe authorization: no answer within auth.subscribe_auth_timeout"
                    ),
                    Unavailable::Unreachable => {}
                    Unavailable::Busy => tracing::debug!(
                        "subscribe authorization: too many checks waiting on the application"
                    ),
                }
                Err(AuthError::ForwardUnavailable)
            }
        }
    }

    /// Decides a publish to `topic`: with `publish_token` or JWT
    /// configured, the `Authorization` header must carry the static token
    /// or a JWT whose publish grants cover the topic.
    pub fn publish(&self, headers: &HeaderMap, topic: &str) -> Result<(), AuthError> {
        let decision =
            self.decide_publish_scope(headers)
                .and_then(|scope| match scope.allows(topic) {
                    true => Ok(()),
                    false => Err(AuthError::InsufficientScope),
                });
        self.counted(decision)
    }

    /// The topics the request's credential may publish to, which are also
    /// the ones the topic API shows it: every topic for the static token
    /// (or where publishing needs none), a JWT's publish grants otherwise.
    pub fn publish_scope(&self, headers: &HeaderMap) -> Result<PublishScope, AuthError> {
        self.counted(self.decide_publish_scope(headers))
    }

    fn decide_publish_scope(&self, headers: &HeaderMap) -> Result<PublishScope, AuthError> {
        if self.publish_token.is_none() && self.jwt.is_none() {
            return Ok(PublishScope::All);
        }
        let mut values = headers.get_all(hyper::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(AuthError::PublishUnauthorized);
        };
        let token = bearer_token(value.as_bytes()).ok_or(AuthError::PublishUnauthorized)?;
        if let Some(expected) = &self.publish_token
            && bool::from(token.ct_eq(expected))
        {
            return Ok(PublishScope::All);
        }
        let jwt = self.jwt.as_ref().ok_or(AuthError::PublishUnauthorized)?;
        let token = std::str::from_utf8(token).map_err(|_| AuthError::PublishUnauthorized)?;
        let verified = jwt
            .verify(token)
            .map_err(|_| AuthError::PublishUnauthorized)?;
        Ok(PublishScope::Granted(verified.publish))
    }
}

/// Checks what start-up would: key files, PEMs and the forward URL.
pub fn check(config: &Config) -> Result<(), KeyProblem> {
    Authorizer::from_config(config, Arc::new(Metrics::new())).map(drop)
}
