//! `ApiError`: every way a request can be refused, as a status and a reason.
//!
//! Handlers return `Result<Response, ApiError>`; `http::reply::error` turns the
//! error into a plain-text response whose body is `reason()` on one line, or,
//! for an `EventSource` refused for a reason that will pass
//! (`temporary_reason`), into a `200` that tells it when to come back.

use std::fmt;

use crate::auth::AuthError;
use crate::cluster::{self, PublishError};
use crate::topic::name::InvalidTopic;

/// Seconds a client is told to wait when a capacity limit refused it.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    /// No topic given; `usage` shows the right form.
    MissingTopic {
        usage: &'static str,
    },
    InvalidTopic(InvalidTopic),
    /// Topics given both in the path and as `topic=` parameters.
    AmbiguousTopics,
    TooManyTopics {
        max: usize,
    },
    InvalidEventType(String),
    ReservedEventType,
    DuplicateParameter(&'static str),
    BodyTooLarge {
        max: usize,
    },
    BodyNotUtf8,
    /// A JSON or NDJSON body over `max_batch_bytes`.
    BatchTooLarge {
        max: usize,
    },
    /// A batch that would not fit one topic's ring.
    BatchExceedsBuffer {
        max_events: usize,
        max_bytes: usize,
    },
    /// One event of a JSON or NDJSON body (`line` counts from 1) is malformed;
    /// the whole batch is refused.
    InvalidBatchLine {
        line: usize,
        reason: String,
    },
    /// An NDJSON batch with more events than `buffer_events`.
    BatchTooManyEvents {
        max: usize,
    },
    /// One event of a batch has data over `max_event_bytes`.
    BatchEventTooLarge {
        line: usize,
        max: usize,
    },
    EmptyBatch,
    BodyTimeout,
    BodyUnreadable,
    /// Refused by `[auth]` (or `publish_token`).
    Auth(AuthError),
    OriginNotAllowed,
    TopicLimit,
    SubscriberLimit,
    /// Too many status-page feeds open.
    StatusViewerLimit {
        max: usize,
    },
    BufferFull,
    /// Cluster mode: Redis did not store a publish (or may not have).
    ClusterPublish(PublishError),
    /// Cluster mode: a subscribe needed Redis (a replay, or the tail to
    /// catch up), which did not answer in time: a temporary refusal.
    ReplayUnavailable,
    /// A stream (subscribe or status feed) or a publish asked for during
    /// shutdown.
    ShuttingDown,
    /// `GET /topics/{topic}` for a topic this node does not hold.
    UnknownTopic,
    /// `limit` of `GET /topics` not a whole number in `1..=max`.
    InvalidLimit {
        max: usize,
    },
    /// The client's address holds `max_streams_per_address` streams.
    AddressStreamLimit {
        max: usize,
    },
    /// A request on a connection admitted past `max_connections`, which is
    /// answered health checks and metrics only.
    ConnectionLimit {
        max: usize,
    },
    /// An HTTP/1 request head that does not parse (hyper refused it before
    /// any handler ran; `http::head_refusals` gives its answer this reason).
    MalformedHead,
    /// An HTTP/1 request head larger than `connection_buffer_bytes`.
    HeadTooLarge {
        max: usize,
    },
    /// A request target longer than hyper takes.
    UriTooLong,
}

/// Why a subscribe was refused for now (`ssegate_subscribes_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    MaxSubscribers,
    MaxTopics,
    /// Forward authorization: the application did not answer usably.
    Authorization,
    /// Cluster mode: Redis did not answer a replay in time.
    Cluster,
    ShuttingDown,
    MaxStreamsPerAddress,
    MaxConnections,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 7] = [
        RefusalReason::MaxSubscribers,
        RefusalReason::MaxConnections,
        RefusalReason::MaxStreamsPerAddress,
        RefusalReason::MaxTopics,
        RefusalReason::Authorization,
        RefusalReason::Cluster,
        RefusalReason::ShuttingDown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::MaxSubscribers => "max_subscribers",
            RefusalReason::MaxTopics => "max_topics",
            RefusalReason::Authorization => "authorization",
            RefusalReason::Cluster => "cluster",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::MaxStreamsPerAddress => "max_streams_per_address",
            RefusalReason::MaxConnections => "max_connections",
        }
    }
}

/// Who is to blame, in pingora's spirit: it decides the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Capacity,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::MissingTopic { .. }
            | ApiError::InvalidTopic(_)
            | ApiError::AmbiguousTopics
            | ApiError::TooManyTopics { .. }
            | ApiError::InvalidEventType(_)
            | ApiError::ReservedEventType
            | ApiError::DuplicateParameter(_)
            | ApiError::BodyNotUtf8
            | ApiError::InvalidBatchLine { .. }
            | ApiError::EmptyBatch
            | ApiError::BodyUnreadable
            | ApiError::MalformedHead
            | ApiError::InvalidLimit { .. } => 400,
            ApiError::UnknownTopic => 404,
            ApiError::UriTooLong => 414,
            ApiError::HeadTooLarge { .. } => 431,
            ApiError::BodyTooLarge { .. }
            | ApiError::BatchTooLarge { .. }
            | ApiError::BatchExceedsBuffer { .. }
            | ApiError::BatchTooManyEvents { .. }
            | ApiError::BatchEventTooLarge { .. } => 413,
            ApiError::BodyTimeout => 408,
            ApiError::Auth(auth) => auth.status(),
            ApiError::OriginNotAllowed => 403,
            ApiError::TopicLimit
            | ApiError::SubscriberLimit
            | ApiError::StatusViewerLimit { .. }
            | ApiError::BufferFull
            | ApiError::ClusterPublish(_)
            | ApiError::ReplayUnavailable
            | ApiError::ShuttingDown
            | ApiError::AddressStreamLimit { .. }
            | ApiError::ConnectionLimit { .. } => 503,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ApiError::TopicLimit
            | ApiError::SubscriberLimit
            | ApiError::StatusViewerLimit { .. }
            | ApiError::BufferFull
            | ApiError::ClusterPublish(_)
            | ApiError::ReplayUnavailable
            | ApiError::ShuttingDown
            | ApiError::ConnectionLimit { .. }
            | ApiError::Auth(AuthError::ForwardUnavailable) => Fault::Capacity,
            _ => Fault::Client,
        }
    }

    /// Why this refusal will pass by itself, if it will: an `EventSource`
    /// is then told to come back rather than given a status it treats as
    /// final (see `http::reply::temporary_refusal`), and the reason labels
    /// `ssegate_subscribes_refused_total`.
    pub fn temporary_reason(&self) -> Option<RefusalReason> {
        match self {
            ApiError::SubscriberLimit => Some(RefusalReason::MaxSubscribers),
            ApiError::TopicLimit => Some(RefusalReason::MaxTopics),
            ApiError::Auth(AuthError::ForwardUnavailable) => Some(RefusalReason::Authorization),
            ApiError::ReplayUnavailable => Some(RefusalReason::Cluster),
            ApiError::ShuttingDown => Some(RefusalReason::ShuttingDown),
            ApiError::AddressStreamLimit { .. } => Some(RefusalReason::MaxStreamsPerAddress),
            ApiError::ConnectionLimit { .. } => Some(RefusalReason::MaxConnections),
            _ => None,
        }
    }

    /// Whether the response should carry `Retry-After`.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::SubscriberLimit
            | ApiError::TopicLimit
            | ApiError::StatusViewerLimit { .. }
            | ApiError::BufferFull
            | ApiError::ShuttingDown
            | ApiError::AddressStreamLimit { .. }
            | ApiError::ConnectionLimit { .. }
            | ApiError::Auth(AuthError::ForwardUnavailable) => Some(RETRY_AFTER_SECS),
            ApiError::ClusterPublish(_) | ApiError::ReplayUnavailable => {
                Some(cluster::RETRY_AFTER_SECS)
            }
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotFound => f.write_str("not found"),
            ApiError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed here; allowed: {allow}")
            }
            ApiError::MissingTopic { usage } => write!(f, "missing topic: use {usage}"),
            ApiError::InvalidTopic(invalid) => write!(f, "{invalid}"),
            ApiError::AmbiguousTopics => {
                f.write_str("give topics either in the path or as topic= parameters, not both")
            }
            ApiError::TooManyTopics { max } => {
                write!(f, "too many topics: at most {max} per subscription")
            }
            ApiError::InvalidEventType(reason) => write!(f, "invalid event type: {reason}"),
            ApiError::ReservedEventType => {
                f.write_str("invalid event type: \"gap\" is reserved for replay gaps")
            }
            ApiError::DuplicateParameter(name) => {
                write!(f, "parameter {name} given more than once")
            }
            ApiError::BodyTooLarge { max } => {
                write!(
                    f,
                    "event too large: the body exceeds max_event_bytes ({max} bytes)"
                )
            }
            ApiError::BodyNotUtf8 => f.write_str("event body is not valid UTF-8"),
            ApiError::BatchTooLarge { max } => write!(
                f,
                "batch too large: the body exceeds max_batch_bytes ({max} bytes)"
            ),
            ApiError::BatchExceedsBuffer {
                max_events,
                max_bytes,
            } => write!(
                f,
                "batch too large: more than one topic buffer holds \
                 (buffer_events {max_events}, buffer_bytes {max_bytes}); split it"
            ),
            ApiError::InvalidBatchLine { line, reason } => {
                write!(f, "line {line}: {reason}; nothing was published")
            }
            ApiError::BatchEventTooLarge { line, max } => write!(
                f,
                "line {line}: data exceeds max_event_bytes ({max} bytes); nothing was published"
            ),
            ApiError::EmptyBatch => f.write_str("batch has no events"),
            ApiError::BatchTooManyEvents { max } => write!(
                f,
                "batch too large: more than buffer_events ({max}) events; split it"
            ),
            ApiError::BodyTimeout => f.write_str("event body did not arrive in time"),
            ApiError::BodyUnreadable => f.write_str("event body could not be read"),
            ApiError::Auth(auth) => write!(f, "{auth}"),
            ApiError::OriginNotAllowed => f.write_str("origin not allowed"),
            ApiError::TopicLimit => f.write_str("topic limit reached (max_topics); try later"),
            ApiError::SubscriberLimit => {
                f.write_str("subscriber limit reached (max_subscribers); try later")
            }
            ApiError::StatusViewerLimit { max } => {
                write!(f, "status page viewer limit reached ({max}); try later")
            }
            ApiError::BufferFull => {
                f.write_str("buffer memory limit reached (max_buffered_bytes); try later")
            }
            ApiError::ClusterPublish(err) => f.write_str(match err {
                PublishError::Timeout => {
                    "Redis did not answer within cluster.publish_timeout; \
                     the event may or may not have been stored"
                }
                PublishError::Unreachable => {
                    "cannot reach Redis (cluster.redis_url); \
                     the event may or may not have been stored; try later"
                }
                PublishError::OutOfMemory => {
                    "Redis is out of memory (maxmemory); the event was not stored; try later"
                }
                PublishError::EpochChanged => {
                    "Redis lost its data or began a new cluster epoch; \
                     the event was not stored; try again"
                }
                PublishError::Failed => "Redis refused the publish; the event was not stored",
            }),
            ApiError::ReplayUnavailable => f.write_str(
                "cannot replay from Redis in time (cluster.replay_timeout); \
                 reconnect with the same Last-Event-ID",
            ),
            ApiError::ShuttingDown => f.write_str("shutting down; reconnect elsewhere"),
            ApiError::UnknownTopic => f.write_str(
                "unknown topic: no events buffered and no subscribers (a topic exists while \
                 either lasts)",
            ),
            ApiError::InvalidLimit { max } => {
                write!(f, "limit must be a whole number from 1 to {max}")
            }
            ApiError::AddressStreamLimit { max } => write!(
                f,
                "too many streams from this address (max_streams_per_address {max}); try later"
            ),
            ApiError::ConnectionLimit { max } => write!(
                f,
                "server full: it holds max_connections ({max}) connections; try later"
            ),
            ApiError::MalformedHead => {
                f.write_str("malformed request head: not valid HTTP/1.1 syntax")
            }
            ApiError::HeadTooLarge { max } => {
                write!(f, "request head over {max} bytes (connection_buffer_bytes)")
            }
            ApiError::UriTooLong => f.write_str("request target too long"),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<crate::registry::LimitReached> for ApiError {
    fn from(limit: crate::registry::LimitReached) -> ApiError {
        use crate::registry::LimitReached;
        match limit {
            LimitReached::Topics => ApiError::TopicLimit,
            LimitReached::Subscribers => ApiError::SubscriberLimit,
            LimitReached::BufferedBytes => ApiError::BufferFull,
            LimitReached::ShuttingDown => ApiError::ShuttingDown,
            LimitReached::BatchExceedsBuffer {
                max_events,
                max_bytes,
            } => ApiError::BatchExceedsBuffer {
                max_events,
                max_bytes,
            },
        }
    }
}

impl From<cluster::SubscribeError> for ApiError {
    fn from(err: cluster::SubscribeError) -> ApiError {
        match err {
            cluster::SubscribeError::Limit(limit) => ApiError::from(limit),
            cluster::SubscribeError::Unavailable(_) => ApiError::ReplayUnavailable,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        ApiError::Auth(err)
    }
}

impl From<InvalidTopic> for ApiError {
    fn from(invalid: InvalidTopic) -> ApiError {
        ApiError::InvalidTopic(invalid)
    }
}
