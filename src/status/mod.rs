//! The live status page: `GET /` serves a page built into the binary, and
//! `GET /status/events` feeds it one JSON snapshot a second over SSE.
//!
//! The feed is not a topic: a snapshot is made from the metrics and the
//! registry when a viewer's tick asks for one, at most once a second however
//! many watch (it walks every topic to find the busiest), so it costs nothing
//! while nobody watches, and a user cannot publish into it. Viewers are
//! capped (`MAX_VIEWERS`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::error::ApiError;
use crate::state::AppState;

/// The page: HTML and JavaScript, no build step, nothing from a CDN.
pub const PAGE: &str = include_str!("page.html");

/// How often a viewer gets a snapshot.
const TICK: Duration = Duration::from_secs(1);

/// How old a cached snapshot may be and still be sent: a little under a
/// tick, so that one viewer's ticks never all get the same one.
const FRESH: Duration = Duration::from_millis(900);

/// Status streams open at once, at most.
pub const MAX_VIEWERS: usize = 32;

/// Topics listed per snapshot.
const BUSIEST_TOPICS: usize = 20;

/// Counts open status streams, and keeps the latest snapshot: however many
/// viewers watch, the topics are walked at most once per `TICK`.
#[derive(Debug, Default)]
pub struct Viewers {
    n_open: Arc<AtomicUsize>,
    latest: Mutex<Option<(Instant, Bytes)>>,
}

impl Viewers {
    /// A viewer slot, or `None` when `MAX_VIEWERS` are watching.
    fn admit(&self) -> Option<ViewerSlot> {
        self.n_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_VIEWERS).then_some(n + 1)
            })
            .ok()?;
        Some(ViewerSlot(Arc::clone(&self.n_open)))
    }

    /// The current snapshot frame, made anew when the last is a tick old.
    fn frame(&self, state: &AppState) -> Bytes {
        let now = Instant::now();
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        match &*latest {
            Some((made, frame)) if now.duration_since(*made) < FRESH => frame.clone(),
            _ => {
                let frame = Bytes::from(format!("data: {}\n\n", snapshot(state)));
                *latest = Some((now, frame.clone()));
                frame
            }
        }
    }
}

/// Released when the stream is dropped, however it ends.
struct ViewerSlot(Arc<AtomicUsize>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One viewer's snapshot feed: `retry:` first, then a snapshot at once and
/// every `TICK`, until the client leaves or the server shuts down.
pub struct StatusStream {
    state: AppState,
    first: Option<Bytes>,
    ticks: Interval,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Set once the feed has ended, so that a further poll does not poll
    /// the finished shutdown future again.
    ended: bool,
    _slot: ViewerSlot,
}

impl StatusStream {
    pub fn open(state: &AppState) -> Result<StatusStream, ApiError> {
        if state.shutdown.has_begun() {
            return Err(ApiError::ShuttingDown);
        }
        let slot = state
            .status_viewers
            .admit()
            .ok_or(ApiError::StatusViewerLimit { max: MAX_VIEWERS })?;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let shutdown = state.shutdown.clone();
        Ok(StatusStream {
            state: state.clone(),
            first: Some(state.retry_frame.clone()),
            ticks,
            shutdown: Box::pin(async move { shutdown.streams_end().await }),
            ended: false,
            _slot: slot,
        })
    }

    pub fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(None);
        }
        ready!(self.ticks.poll_tick(cx));
        Poll::Ready(Some(self.state.status_viewers.frame(&self.state)))
    }
}

/// The figures of one moment, as one line of JSON.
pub fn snapshot(state: &AppState) -> String {
    let totals = state.metrics.totals();
    let busiest: Vec<serde_json::Value> = state
        .registry
        .busiest_topics(BUSIEST_TOPICS)
        .into_iter()
        .map(|topic| {
            serde_json::json!({
                "topic": topic.name,
                "subscribers": topic.n_subscribers,
                "buffered": topic.n_buffered,
            })
        })
        .collect();
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    serde_json::json!({
        "time_ms": time_ms as u64,
        "subscribers": totals.subscribers,
        "topics": totals.topics,
        "connections": totals.connections,
        "published": totals.published,
        "delivered": totals.delivered,
        "dropped": totals.dropped,
        "busiest_topics": busiest,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_are_capped_and_slots_come_back() {
        let viewers = Viewers::default();
        let slots: Vec<ViewerSlot> = (0..MAX_VIEWERS).filter_map(|_| viewers.admit()).collect();
        assert_eq!(slots.len(), MAX_VIEWERS);
        assert!(viewers.admit().is_none());
        drop(slots);
        assert!(viewers.admit().is_some());
    }
}
