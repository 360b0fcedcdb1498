//! The topic API: `GET /topics/{topic}` and
//! `GET /topics?prefix=&limit=&after=`, what a backend asks around a
//! publish: is anyone listening, what was the last event, what is still
//! buffered. Behind the publish credential, and showing only the topics it
//! may publish to (a JWT sees its grants).
//!
//! In cluster mode the subscriber counts are the cluster's (the sums the
//! nodes report to Redis, up to a second old); everything else is this
//! node's ring, which holds every node's events in the same order.

use std::time::SystemTime;

use tokio::time::Instant;

use hyper::StatusCode;
use hyper::http::request::Parts;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::query;
use crate::http::reply::{self, HttpResponse};
use crate::state::AppState;
use crate::topic::TopicSummary;
use crate::topic::name::{TopicName, TopicStr};

/// Topics a page holds unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The most `limit` may ask for.
pub const MAX_LIMIT: usize = 1000;

/// `GET /topics/{topic}`.
pub async fn one(
    head: &Parts,
    raw_topic: &str,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    state.auth.publish(&head.headers, raw_topic)?;
    let topic = TopicStr::parse(raw_topic)?;
    let (name, summary) = state
        .registry
        .topic_summary(topic.as_str())
        .ok_or(ApiError::UnknownTopic)?;
    let mut shown = described(state, vec![(name, summary)]).await;
    let topic = shown.pop().unwrap_or(Value::Null);
    Ok(reply::json(StatusCode::OK, topic.to_string()))
}

/// `GET /topics?prefix=orders/&limit=100&after=orders/41`.
pub async fn page(head: &Parts, state: &AppState) -> Result<HttpResponse, ApiError> {
    let scope = state.auth.publish_scope(&head.headers)?;
    let query = head.uri.query();
    let prefix = query::single(query, "prefix")?.unwrap_or_default();
    let after = query::single(query, "after")?;
    let limit = match query::single(query, "limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or(ApiError::InvalidLimit { max: MAX_LIMIT })?,
    };
    // A JWT's grants filter the page; asking for one more than the page
    // tells whether another follows.
    let mut chosen: Vec<(TopicName, TopicSummary)> = Vec::with_capacity(limit + 1);
    let mut cursor = after;
    loop {
        let batch =
            state
                .registry
                .topic_summaries(&prefix, cursor.as_deref(), limit + 1 - chosen.len());
        let exhausted = batch.len() < limit + 1 - chosen.len();
        cursor = batch.last().map(|(name, _)| name.as_str().to_owned());
        chosen.extend(
            batch
                .into_iter()
                .filter(|(name, _)| scope.allows(name.as_str())),
        );
        if exhausted || chosen.len() > limit {
            break;
        }
    }
    let more = chosen.len() > limit;
    chosen.truncate(limit);
    let next_after = more
        .then(|| chosen.last().map(|(name, _)| name.as_str().to_owned()))
        .flatten();
    let topics = described(state, chosen).await;
    // `next_after`: the `after` of the next page; `null` on the last one.
    let page = json!({"topics": topics, "next_after": next_after});
    Ok(reply::json(StatusCode::OK, page.to_string()))
}

/// The JSON of `topics`, with the cluster's subscriber counts in cluster
/// mode (this node's when Redis does not answer in time).
///
/// `last_event_id` is the newest event's id, buffered or not (`null`
/// before the first); `last_published_at` is RFC 3339 in UTC, `null` when
/// nothing is buffered.
async fn described(state: &AppState, topics: Vec<(TopicName, TopicSummary)>) -> Vec<Value> {
    let cluster_counts = match &state.cluster {
        None => None,
        Some(cluster) => {
            let names: Vec<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
            cluster.subscriber_sums(&names).await
        }
    };
    let wire_id = |seq: u64| match &state.cluster {
        None => Some(
            String::from_utf8_lossy(&state.registry.sequence().epoch().format(seq)).into_owned(),
        ),
        Some(cluster) => cluster.wire_id(seq),
    };
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    topics
        .iter()
        .enumerate()
        .map(|(i, (name, summary))| {
            let subscribers = cluster_counts
                .as_ref()
                .and_then(|counts| counts.get(i).copied())
                .unwrap_or(summary.n_subscribers);
            let last_published_at = summary.newest_published_at.map(|at| {
                let age = now.saturating_duration_since(at);
                humantime::format_rfc3339_millis(wall_now - age).to_string()
            });
            json!({
                "topic": name.as_str(),
                "subscribers": subscribers,
                "last_event_id": summary.newest_seq.and_then(wire_id),
                "buffered_events": summary.n_buffered,
                "buffered_bytes": summary.n_bytes,
                "oldest_buffered_id": summary.oldest_buffered_seq.and_then(wire_id),
                "last_published_at": last_published_at,
            })
        })
        .collect()
}
