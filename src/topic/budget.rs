//! `BufferPolicy`: how much one topic's ring may hold, and the byte budget
//! all rings share.
//!
//! Counting events alone does not bound memory: `max_event_bytes` limits the
//! raw body, and a body of line breaks encodes to several times its size. So
//! each ring is also capped in bytes (evicting its oldest events, like the
//! count), and the node's total is capped too (refusing the publish instead:
//! evicting another topic's events would break its replay promise).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct BufferPolicy {
    /// Events kept per topic (`buffer_events`).
    pub max_events: usize,
    /// Encoded bytes kept per topic (`buffer_bytes`).
    pub max_bytes: usize,
    /// How long an event stays replayable (`buffer_ttl`).
    pub ttl: Duration,
    /// Encoded bytes all rings may hold together (`max_buffered_bytes`).
    max_total_bytes: usize,
    total_bytes: AtomicUsize,
}

impl BufferPolicy {
    pub fn new(
        max_events: usize,
        max_bytes: usize,
        ttl: Duration,
        max_total_bytes: usize,
    ) -> BufferPolicy {
        BufferPolicy {
            max_events,
            max_bytes,
            ttl,
            max_total_bytes,
            total_bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes currently held by all rings.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Whether adding `adding` bytes while evicting `freeing` stays within the
    /// node-wide budget. Concurrent appends to other topics may overshoot it
    /// by at most one event each.
    pub(super) fn admits(&self, adding: usize, freeing: usize) -> bool {
        self.total_bytes().saturating_sub(freeing) + adding <= self.max_total_bytes
    }

    pub(super) fn add(&self, n_bytes: usize) {
        self.total_bytes.fetch_add(n_bytes, Ordering::Relaxed);
    }

    pub(super) fn release(&self, n_bytes: usize) {
        if n_bytes > 0 {
            self.total_bytes.fetch_sub(n_bytes, Ordering::Relaxed);
        }
    }
}
