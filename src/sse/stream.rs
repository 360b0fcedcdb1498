//! `EventStream`: a subscriber's response body, minus the HTTP framing.
//!
//! The stream *is* the subscriber: there is no task and no channel behind it.
//! Each poll checks shutdown, then takes everything past the subscription's
//! cursor as one chunk, then, if there was nothing, writes the position
//! block the first time (`Subscription::take_position`), else a heartbeat
//! when the stream has been quiet for `heartbeat_interval`. hyper polls it
//! only when it can buffer more, so a slow reader costs at most one
//! connection buffer.
//!
//! The heartbeat timer is lazy: a write only records the time, and the timer
//! is moved when it fires early, so a busy stream costs no timer operation
//! per event.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};

use crate::metrics::{DropReason, Metrics};
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::sse::encode::{HEARTBEAT, gap_frame, position_frame};
use crate::subscription::{Batch, Subscription};

/// Settings every stream shares.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub heartbeat_interval: Duration,
    /// Upper bound of one chunk of events (a single larger event still goes).
    pub max_chunk_bytes: usize,
}

pub struct EventStream {
    subscription: Subscription,
    /// The `retry:` field, until the first write; the opening `gap` event, if
    /// any, is decided at that moment (see `Subscription::take_opening_gap`).
    retry: Option<Bytes>,
    heartbeat: Pin<Box<Sleep>>,
    /// The heartbeat timer has this stream's waker and has not fired yet.
    heartbeat_armed: bool,
    last_write: Instant,
    settings: StreamSettings,
    shutdown: Shutdown,
    /// Set when the stream first sees the shutdown: the node's newest
    /// sequence number then, up to which it still writes what it is owed
    /// (every local publish taken before the shutdown was counted for this
    /// stream, and later ones are refused; in cluster mode the log keeps
    /// coming, hence a bound).
    drain_until: Option<u64>,
    metrics: Arc<Metrics>,
    finished: bool,
    /// When the stream must end (a token's `exp`, `max_stream_lifetime`);
    /// `None` for most streams, which then pay nothing for it.
    end: Option<Pin<Box<Sleep>>>,
}

impl EventStream {
    pub fn new(
        subscription: Subscription,
        retry: Bytes,
        settings: StreamSettings,
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
    ) -> EventStream {
        let now = Instant::now();
        EventStream {
            subscription,
            retry: Some(retry),
            heartbeat: Box::pin(tokio::time::sleep_until(now + settings.heartbeat_interval)),
            heartbeat_armed: false,
            last_write: now,
            settings,
            shutdown,
            drain_until: None,
            metrics,
            finished: false,
            end: None,
        }
    }

    /// Ends the stream at `deadline`, once its opening is written, so that
    /// the client reconnects (and is authorized again).
    pub fn ending_at(mut self, deadline: Option<Instant>) -> EventStream {
        self.end = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
        self
    }

    /// The next chunk to write; `None` ends the stream (shutdown or lag).
    /// At shutdown, a stream that has started writes the events it is owed
    /// up to the node's newest at that moment, then ends.
    pub fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if !self.finished && self.shutdown.streams_ending() {
            let subscription = &self.subscription;
            let until = *self
                .drain_until
                .get_or_insert_with(|| subscription.newest_seq());
            self.finished = self.retry.is_some() || subscription.cursor() >= until;
        }
        if self.finished {
            return Poll::Ready(None);
        }
        // After the opening, so that even a stream whose token expires at
        // once hands the client its `retry:` and replay first.
        if self.retry.is_none()
            && let Some(end) = &mut self.end
            && end.as_mut().poll(cx).is_ready()
        {
            self.finished = true;
            tracing::debug!(
                topics = ?self.subscription.topic_names(),
                "ended stream: its token expired or max_stream_lifetime passed"
            );
            return Poll::Ready(None);
        }
        match self
            .subscription
            .next_batch(cx.waker(), self.settings.max_chunk_bytes)
        {
            Batch::Events {
                frames,
                n_events,
                n_replayed,
            } => {
                self.metrics.delivered(n_events, n_replayed);
                let chunk = match self.retry.take() {
                    Some(retry) => self.opening(&retry, &frames),
                    None => frames,
                };
                Poll::Ready(Some(self.wrote(chunk)))
            }
            Batch::Reset => {
                self.finished = true;
                tracing::info!(
                    topics = ?self.subscription.topic_names(),
                    "ended stream: this node lost its place in the cluster's shared log; \
                     the client resumes from Redis"
                );
                Poll::Ready(None)
            }
            Batch::Lagged => {
                self.finished = true;
                self.metrics.subscribers_dropped(DropReason::Lagged, 1);
                tracing::info!(
                    reason = "lagged",
                    topics = ?self.subscription.topic_names(),
                    "dropped slow subscriber: events it still needed were evicted"
                );
                Poll::Ready(None)
            }
            Batch::Idle => {
                // Parked now; a shutdown that raced the park woke nobody, so
                // look at the flag once more.
                if self.shutdown.streams_ending() {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                // Nothing more to read: the replay is done, and the client is
                // told where the stream went live (once, if no event did).
                let position = self
                    .subscription
                    .take_position()
                    .map(|id| position_frame(&id));
                if let Some(retry) = self.retry.take() {
                    let opening = self.opening(&retry, position.as_deref().unwrap_or_default());
                    return Poll::Ready(Some(self.wrote(opening)));
                }
                if let Some(position) = position {
                    return Poll::Ready(Some(self.wrote(position)));
                }
                match self.poll_heartbeat(cx) {
                    Poll::Ready(()) => {
                        self.metrics.heartbeat_sent();
                        Poll::Ready(Some(self.wrote(HEARTBEAT)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Single topic only: lends the stream's socket to its topic's fan-outs
    /// (see `Subscription::attach_sink`).
    pub fn attach_sink(&self, sink: Arc<Sink>) -> bool {
        self.subscription.attach_sink(sink)
    }

    /// The cursor, when the stream has written its opening and waits at the
    /// head of its one topic: from there, a fan-out may write its next
    /// events for it.
    pub fn idle_at_head(&self) -> Option<u64> {
        match self.retry.is_some() || self.finished {
            true => None,
            false => self.subscription.idle_at_head(),
        }
    }

    /// A fan-out wrote the events up to `cursor` to this stream's socket,
    /// the last of them at `last_write`: the cursor moves past them and the
    /// heartbeat counts the write.
    pub fn written_elsewhere(&mut self, cursor: u64, last_write: Option<Instant>) {
        self.subscription.written_elsewhere_through(cursor);
        if let Some(at) = last_write {
            self.last_write = self.last_write.max(at);
        }
    }

    /// The first chunk: `retry:`, the `gap` event if one is due, then `frames`.
    fn opening(&mut self, retry: &[u8], frames: &[u8]) -> Bytes {
        let gap = self.subscription.take_opening_gap().map(|resume_id| {
            self.metrics.gap_sent();
            gap_frame(&resume_id)
        });
        let gap: &[u8] = gap.as_deref().unwrap_or_default();
        let mut buf = BytesMut::with_capacity(retry.len() + gap.len() + frames.len());
        buf.extend_from_slice(retry);
        buf.extend_from_slice(gap);
        buf.extend_from_slice(frames);
        buf.freeze()
    }

    fn wrote(&mut self, chunk: Bytes) -> Bytes {
        self.last_write = Instant::now();
        chunk
    }

    /// `Ready` when the stream has been quiet for a whole heartbeat interval.
    ///
    /// Writes do not move the timer (a timer-wheel update per event would
    /// cost more than the rest of a delivery): it fires at the old deadline,
    /// and is moved then to a full interval after the last write.
    fn poll_heartbeat(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Polled once, the timer stays registered with this stream's task
        // until it fires; until then, a cheap look at its state will do.
        if self.heartbeat_armed && !self.heartbeat.is_elapsed() {
            return Poll::Pending;
        }
        let due = self.last_write + self.settings.heartbeat_interval;
        loop {
            if self.heartbeat.as_mut().poll(cx).is_pending() {
                self.heartbeat_armed = true;
                return Poll::Pending;
            }
            self.heartbeat_armed = false;
            if Instant::now() >= due {
                return Poll::Ready(());
            }
            self.heartbeat.as_mut().reset(due);
        }
    }
}
