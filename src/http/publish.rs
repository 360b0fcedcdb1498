//! `POST /publish/{topic}`: read the body within limits, hand it to
//! `Registry::publish`, answer with the id. A JSON or NDJSON body carries
//! event envelopes instead (see `batch`), published in one step.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode};

use crate::error::ApiError;
use crate::http::batch::{self, BodyFormat, JsonEvent};
use crate::http::query;
use crate::http::reply::{self, HttpResponse};
use crate::registry::NewEvent;
use crate::state::AppState;
use crate::topic::name::TopicStr;

/// The longest event type the contract allows.
const MAX_EVENT_TYPE_BYTES: usize = 64;

pub async fn handle(
    head: &Parts,
    body: Incoming,
    raw_topic: &str,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    // Held until the reply is decided: a publish that started before
    // SIGTERM is finished, and the streams end only after it (see
    // `shutdown`); one that starts after is refused.
    let _in_flight = state
        .shutdown
        .publish_started()
        .ok_or(ApiError::ShuttingDown)?;
    // Before the topic's own checks: without a credential, nothing else
    // about the request is judged.
    state.auth.publish(&head.headers, raw_topic)?;
    let topic = TopicStr::parse(raw_topic)?;
    let event_type = event_type(head.uri.query())?;
    let content_type = head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let format = BodyFormat::of(content_type);
    let config = &state.config;
    // A JSON body may be an envelope (bounded by the batch limit) or the
    // verbatim data (bounded by the event limit): whichever is larger.
    let max = match format {
        BodyFormat::Plain => config.max_event_bytes,
        BodyFormat::Json => config.max_batch_bytes.max(config.max_event_bytes),
        BodyFormat::Ndjson => config.max_batch_bytes,
    };
    let body = read_body(&head.headers, body, max, config.request_body_timeout)
        .await
        .map_err(|err| match (err, format) {
            (ApiError::BodyTooLarge { max }, BodyFormat::Ndjson) => ApiError::BatchTooLarge { max },
            (err, _) => err,
        })?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::BodyNotUtf8)?;
    match format {
        BodyFormat::Ndjson => {
            let events = batch::parse_ndjson(text, config.buffer_events)?;
            publish_batch(topic, event_type.as_deref(), &events, state).await
        }
        BodyFormat::Json => match batch::parse_envelope(text) {
            // One event, so its errors are the raw body's, without a line.
            Some(event) => {
                if let Some(own_type) = &event.event_type {
                    validate_event_type(own_type)?;
                }
                if event.data.len() > config.max_event_bytes {
                    return Err(ApiError::BodyTooLarge {
                        max: config.max_event_bytes,
                    });
                }
                let event_type = event.event_type.as_deref().or(event_type.as_deref());
                publish_one(topic, event_type, &event.data, state).await
            }
            // Not an envelope: the contract's verbatim body, with its limit.
            None if text.len() > config.max_event_bytes => Err(ApiError::BodyTooLarge {
                max: config.max_event_bytes,
            }),
            None => publish_one(topic, event_type.as_deref(), text, state).await,
        },
        BodyFormat::Plain => publish_one(topic, event_type.as_deref(), text, state).await,
    }
}

async fn publish_one(
    topic: TopicStr<'_>,
    event_type: Option<&str>,
    data: &str,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    if let Some(cluster) = &state.cluster {
        let started = tokio::time::Instant::now();
        let published = cluster
            .publish(topic, &[NewEvent { event_type, data }])
            .await
            .map_err(ApiError::ClusterPublish)?;
        state.metrics.event_published(started.elapsed());
        let id = published.ids.first().map_or("", String::as_str);
        let body = serde_json::json!({
            "id": id,
            "topic": topic.as_str(),
            "subscribers": published.n_subscribers,
        });
        return Ok(reply::json(StatusCode::OK, body.to_string()));
    }
    let published = state.registry.publish(topic, event_type, data)?;
    // Written by hand, on the publish hot path: the id is hex digits and a
    // dash, the topic's alphabet has nothing JSON would escape, and the
    // count is a number.
    let id = std::str::from_utf8(&published.id).unwrap_or_default();
    let topic = topic.as_str();
    let n_subscribers = published.n_subscribers;
    let body = format!(r#"{{"id":"{id}","topic":"{topic}","subscribers":{n_subscribers}}}"#);
    Ok(reply::json(StatusCode::OK, body))
}

/// Validates every line before anything is published, then publishes them
/// in one step; answers with every id, in order.
async fn publish_batch(
    topic: TopicStr<'_>,
    default_type: Option<&str>,
    events: &[(usize, JsonEvent)],
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let max_event_bytes = state.config.max_event_bytes;
    let new_events = events
        .iter()
        .map(|(line, event)| {
            check_data_size(*line, &event.data, max_event_bytes)?;
            Ok(NewEvent {
                event_type: line_event_type(*line, event, default_type)?,
                data: &event.data,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let (ids, n_subscribers) = match &state.cluster {
        Some(cluster) => {
            state.registry.check_cluster_batch(&new_events)?;
            let started = tokio::time::Instant::now();
            let published = cluster
                .publish(topic, &new_events)
                .await
                .map_err(ApiError::ClusterPublish)?;
            state
                .metrics
                .batch_published(published.ids.len(), started.elapsed());
            (published.ids, published.n_subscribers as usize)
        }
        None => {
            let published = state.registry.publish_batch(topic, &new_events)?;
            let ids = published
                .ids
                .iter()
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .collect();
            (ids, published.n_subscribers)
        }
    };
    let body = serde_json::json!({
        "ids": ids,
        "topic": topic.as_str(),
        "subscribers": n_subscribers,
    });
    Ok(reply::json(StatusCode::OK, body.to_string()))
}

/// A line's own `event`, validated like the parameter, else the parameter.
fn line_event_type<'a>(
    line: usize,
    event: &'a JsonEvent,
    default_type: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    match &event.event_type {
        Some(event_type) => {
            validate_event_type(event_type).map_err(|err| ApiError::InvalidBatchLine {
                line,
                reason: err.to_string(),
            })?;
            Ok(Some(event_type))
        }
        None => Ok(default_type),
    }
}

fn check_data_size(line: usize, data: &str, max: usize) -> Result<(), ApiError> {
    if data.len() > max {
        return Err(ApiError::BatchEventTooLarge { line, max });
    }
    Ok(())
}

/// The optional `event=` parameter: 1 to 64 bytes of `A-Z a-z 0-9 _ . : -`,
/// and not the reserved `gap`.
fn event_type(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(event_type) = query::single(query, "event")? else {
        return Ok(None);
    };
    validate_event_type(&event_type)?;
    Ok(Some(event_type))
}

fn validate_event_type(event_type: &str) -> Result<(), ApiError> {
    if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(ApiError::InvalidEventType(format!(
            "must be 1 to {MAX_EVENT_TYPE_BYTES} bytes, got {}",
            event_type.len()
        )));
    }
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | ':' | '-');
    if let Some(ch) = event_type.chars().find(|&ch| !allowed(ch)) {
        return Err(ApiError::InvalidEventType(format!(
            "character {ch:?} is not allowed (use A-Z a-z 0-9 _ . : -)"
        )));
    }
    if event_type == "gap" {
        return Err(ApiError::ReservedEventType);
    }
    Ok(())
}

/// Reads at most `max` bytes of body within `timeout`. A declared length over
/// the limit is refused before a byte is read; an undeclared one stops being
/// read as soon as it passes the limit.
async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(ApiError::BodyTooLarge { max });
    }
    let limited = Limited::new(body, max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_elapsed) => Err(ApiError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { max })
        }
        Ok(Err(_)) => Err(ApiError::BodyUnreadable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert_eq!(event_type(None), Ok(None));
        assert_eq!(
            event_type(Some("event=price.v2:x-y_z")),
            Ok(Some("price.v2:x-y_z".into()))
        );
        assert_eq!(
            event_type(Some("event=gap")),
            Err(ApiError::ReservedEventType)
        );
        assert!(event_type(Some("event=")).is_err());
        assert!(event_type(Some("event=a%20b")).is_err());
        assert!(event_type(Some(&format!("event={}", "x".repeat(65)))).is_err());
        assert!(event_type(Some("event=a&event=b")).is_err());
    }
}
