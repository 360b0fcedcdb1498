//! `Ring`: one topic's most recent events, bounded by count and age.
//!
//! Plain data: no locks, no tasks, no HTTP. The owner (`Topic`) holds it under
//! its mutex. Sequence numbers come from the process-wide counter, so a topic's
//! sequence numbers grow but have holes (other topics took the numbers in
//! between); that is why completeness is tracked with a *floor* rather than by
//! counting.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::time::Instant;

/// One published event as it sits in the ring: its sequence number, when it
/// was published (for `buffer_ttl`) and its fully encoded SSE frame.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub published_at: Instant,
    pub frame: Bytes,
}

/// A bounded queue of events in sequence order.
///
/// Invariant: every event of this topic with `seq > floor` that was ever
/// pushed is still in `events`. A reader at cursor `c` has therefore missed
/// nothing exactly when `floor <= c`.
#[derive(Debug)]
pub struct Ring {
    events: VecDeque<StoredEvent>,
    capacity: usize,
    floor: u64,
}

impl Ring {
    /// An empty ring holding at most `capacity` events (at least one).
    ///
    /// `floor` is the highest sequence number for which this ring cannot vouch:
    /// a topic created fresh may have had an earlier life that was swept away.
    pub fn new(capacity: usize, floor: u64) -> Ring {
        let capacity = capacity.max(1);
        Ring {
            events: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            floor,
        }
    }

    /// Appends an event, evicting the oldest one when the ring is full.
    ///
    /// # Panics
    ///
    /// In debug builds, if `event.seq` is not above every stored sequence
    /// number: the owner assigns sequence numbers under its lock, so this is a
    /// bug in the caller, never something a client can cause.
    pub fn push(&mut self, event: StoredEvent) {
        debug_assert!(self.last_seq().is_none_or(|last| last < event.seq));
        if self.events.len() == self.capacity {
            self.evict_front();
        }
        self.events.push_back(event);
    }

    /// Drops every event published at or before `cutoff`.
    pub fn expire(&mut self, cutoff: Instant) {
        while self
            .events
            .front()
            .is_some_and(|event| event.published_at <= cutoff)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(event) = self.events.pop_front() {
            self.floor = self.floor.max(event.seq);
        }
    }

    /// The highest sequence number that may have been lost from this ring.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The sequence number of the newest stored event.
    pub fn last_seq(&self) -> Option<u64> {
        self.events.back().map(|event| event.seq)
    }

    /// The highest sequence number this ring has ever covered: its newest
    /// event, or its floor when it is empty.
    pub fn high_water(&self) -> u64 {
        self.last_seq().unwrap_or(0).max(self.floor)
    }

    /// Stored events with `seq > cursor`, oldest first.
    pub fn after(&self, cursor: u64) -> impl Iterator<Item = &StoredEvent> {
        let start = self.events.partition_point(|event| event.seq <= cursor);
        self.events.range(start..)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes of encoded frames held, for the operator's memory gauge.
    pub fn n_bytes(&self) -> usize {
        self.events.iter().map(|event| event.frame.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(seq: u64, published_at: Instant) -> StoredEvent {
        StoredEvent {
            seq,
            published_at,
            frame: Bytes::from(format!("data: {seq}\n\n")),
        }
    }

    fn seqs_after(ring: &Ring, cursor: u64) -> Vec<u64> {
        ring.after(cursor).map(|event| event.seq).collect()
    }

    #[test]
    fn capacity_one_keeps_only_the_newest_and_raises_the_floor() {
        let now = Instant::now();
        let mut ring = Ring::new(1, 0);
        ring.push(event(3, now));
        assert_eq!((seqs_after(&ring, 0), ring.floor()), (vec![3], 0));
        ring.push(event(7, now));
        assert_eq!((seqs_after(&ring, 0), ring.floor()), (vec![7], 3));
    }

    #[test]
    fn wrap_around_with_holes_in_the_sequence() {
        let now = Instant::now();
        let mut ring = Ring::new(3, 0);
        for seq in [2, 5, 6, 9, 11] {
            ring.push(event(seq, now));
        }
        assert_eq!(seqs_after(&ring, 0), vec![6, 9, 11]);
        assert_eq!(ring.floor(), 5);
        assert_eq!(seqs_after(&ring, 6), vec![9, 11]);
        assert_eq!(seqs_after(&ring, 7), vec![9, 11]);
        assert_eq!(seqs_after(&ring, 11), Vec::<u64>::new());
        // A reader at 5 has missed nothing; a reader at 4 has missed seq 5.
        assert!(ring.floor() <= 5);
        assert!(ring.floor() > 4);
    }

    #[test]
    fn expiry_is_oldest_first_and_counts_as_loss() {
        let start = Instant::now();
        let mut ring = Ring::new(8, 0);
        ring.push(event(1, start));
        ring.push(event(2, start + Duration::from_secs(1)));
        ring.push(event(3, start + Duration::from_secs(2)));
        ring.expire(start + Duration::from_secs(1));
        assert_eq!(seqs_after(&ring, 0), vec![3]);
        assert_eq!(ring.floor(), 2);
        ring.expire(start + Duration::from_secs(5));
        assert_eq!(ring.len(), 0);
        assert_eq!((ring.floor(), ring.high_water()), (3, 3));
    }

    #[test]
    fn a_fresh_ring_keeps_the_floor_it_was_given() {
        let ring = Ring::new(2, 40);
        assert_eq!((ring.floor(), ring.high_water(), ring.len()), (40, 40, 0));
    }
}
