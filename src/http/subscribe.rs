//! `GET /subscribe/{topic}` and `GET /subscribe?topic=A&topic=B`: validate,
//! open a subscription, answer `200` with its `EventStream` as the body.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::Response;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;

use crate::client_limits::StreamPermit;
use crate::connection::ConnectionState;
use crate::error::ApiError;
use crate::http::body::ResponseBody;
use crate::http::query;
use crate::http::reply::HttpResponse;
use crate::sse::stream::EventStream;
use crate::state::AppState;
use crate::topic::name::TopicName;

const USAGE: &str = "/subscribe/<topic> or /subscribe?topic=<a>&topic=<b>";

/// The headers of every event-stream response.
pub const STREAM_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CONTENT_TYPE, "text/event-stream"),
    (header::CACHE_CONTROL, "no-cache"),
    (header::HeaderName::from_static("x-accel-buffering"), "no"),
];

/// Answers a subscribe through hyper: `200` with the `EventStream` as body.
/// `path_topic` is what follows `/subscribe/`, `None` for bare `/subscribe`.
pub async fn handle(
    req: &Parts,
    path_topic: Option<&str>,
    state: &AppState,
    connection: &Arc<ConnectionState>,
) -> Result<HttpResponse, ApiError> {
    let (stream, slot) = open(req, path_topic, state, connection.client()).await?;
    let mut response = Response::new(ResponseBody::events(
        stream,
        connection.subscription_opened(slot),
    ));
    for (name, value) in STREAM_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

/// Validates a subscribe request from `client`, takes its slot under the
/// client's address, authorizes it, and opens its subscription; shared by
/// the hyper path and `http::direct`.
pub async fn open(
    req: &Parts,
    path_topic: Option<&str>,
    state: &AppState,
    client: Option<IpAddr>,
) -> Result<(EventStream, StreamPermit), ApiError> {
    if state.shutdown.has_begun() {
        return Err(ApiError::ShuttingDown);
    }
    let topics = topics(
        path_topic,
        req.uri.query(),
        state.config.max_topics_per_subscription,
    )?;
    let resume_id = resume_id(req)?;
    let slot = state
        .client_limits
        .open_stream(client)
        .map_err(|full| ApiError::AddressStreamLimit { max: full.max })?;
    let access = state.auth.subscribe(req, client, &topics).await?;
    let subscription = match &state.cluster {
        None => state
            .registry
            .subscribe(&topics, resume_id.as_deref())
            .map_err(ApiError::from)?,
        // Boxed: its state (replay reads) is large and short-lived.
        Some(cluster) => Box::pin(cluster.subscribe(&topics, resume_id.as_deref()))
            .await
            .map_err(ApiError::from)?,
    };
    let stream = EventStream::new(
        subscription,
        state.retry_frame.clone(),
        state.stream_settings,
        state.shutdown.clone(),
        Arc::clone(&state.metrics),
    )
    .ending_at(access.ends_at);
    Ok((stream, slot))
}

/// Counts a subscribe refused for a reason that will pass
/// (`ssegate_subscribes_refused_total{reason}`), whichever form its answer
/// takes.
pub fn count_refusal(err: &ApiError, state: &AppState) {
    if let Some(reason) = err.temporary_reason() {
        state.metrics.subscribe_refused(reason);
    }
}

/// Whether the client is an `EventSource` (or acts like one): it sends
/// `Accept: text/event-stream`, and treats any status but 200 as final.
pub fn wants_event_stream(req: &Parts) -> bool {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("text/event-stream"))
}

/// The distinct topics of the request, validated, in the order given.
pub fn topics(
    path_topic: Option<&str>,
    query: Option<&str>,
    max: usize,
) -> Result<Vec<TopicName>, ApiError> {
    let mut raw: Vec<String> = Vec::new();
    for (_, value) in query::pairs(query).filter(|(key, _)| key == "topic") {
        if !raw.iter().any(|seen| *seen == value) {
            raw.push(value.into_owned());
        }
        if raw.len() > max {
            return Err(ApiError::TooManyTopics { max });
        }
    }
    match (path_topic, raw.is_empty()) {
        (Some(_), false) => Err(ApiError::AmbiguousTopics),
        (Some(path_topic), true) => Ok(vec![TopicName::parse(path_topic)?]),
        (None, true) => Err(ApiError::MissingTopic { usage: USAGE }),
        (None, false) => raw
            .iter()
            .map(|name| TopicName::parse(name).map_err(ApiError::from))
            .collect(),
    }
}

/// The id to resume after: the `Last-Event-ID` header, else the
/// `last_event_id` parameter, else `lastEventId`.
pub fn resume_id(req: &Parts) -> Result<Option<Bytes>, ApiError> {
    // An empty header carries no id (EventSource never sends one), so it
    // does not hide the query parameters.
    if let Some(value) = req.headers.get("last-event-id").filter(|v| !v.is_empty()) {
        return Ok(Some(Bytes::copy_from_slice(value.as_bytes())));
    }
    let query = req.uri.query();
    let from_query = match query::single(query, "last_event_id")? {
        Some(id) => Some(id),
        None => query::single(query, "lastEventId")?,
    };
    Ok(from_query.map(Bytes::from))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(result: Result<Vec<TopicName>, ApiError>) -> Result<Vec<String>, ApiError> {
        result.map(|topics| topics.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn topics_from_path_or_query() {
        assert_eq!(names(topics(Some("a/b"), None, 2)), Ok(vec!["a/b".into()]));
        assert_eq!(
            names(topics(None, Some("topic=a&topic=b%2Fc&topic=a&x=1"), 2)),
            Ok(vec!["a".into(), "b/c".into()])
        );
        assert_eq!(
            topics(None, Some("topic=a&topic=b&topic=c"), 2).err(),
            Some(ApiError::TooManyTopics { max: 2 })
        );
        assert_eq!(
            topics(None, None, 2).err(),
            Some(ApiError::MissingTopic { usage: USAGE })
        );
        assert_eq!(
            topics(Some("a"), Some("topic=b"), 2).err(),
            Some(ApiError::AmbiguousTopics)
        );
        assert!(matches!(
            topics(None, Some("topic=ok&topic=bad%20one"), 2),
            Err(ApiError::InvalidTopic(_))
        ));
        assert!(matches!(
            topics(None, Some("topic="), 2),
            Err(ApiError::InvalidTopic(_))
        ));
    }

    proptest! {
        /// The fuzz target `subscribe_query` checks more on any query.
        #[test]
        fn topics_are_bounded_valid_and_refusals_are_400s(
            query in prop_oneof![
                "(topic=[a-z%2F/]{0,6}&){0,6}(last_event_id=[0-9a-f-]{0,4}&?)?",
                any::<String>(),
            ],
            path_topic in proptest::option::of("[a-z/]{0,4}"),
            max in 1..5usize,
        ) {
            match topics(path_topic.as_deref(), Some(&query), max) {
                Ok(names) => {
                    prop_assert!((1..=max).contains(&names.len()));
                    let n_bytes: usize = names.iter().map(|name| name.as_str().len()).sum();
                    prop_assert!(n_bytes <= query.len() + path_topic.map_or(0, |t| t.len()));
                }
                Err(err) => prop_assert_eq!(err.status(), 400),
            }
        }
    }
}
