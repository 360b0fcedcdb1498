//! `Ring`: one topic's most recent events, bounded by count and age.
//!
//! Plain data: no locks, no tasks, no HTTP. The owner (`Topic`) holds it under
//! its mutex. Sequence numbers come from the process-wide counter, so a topic's
//! sequence numbers grow but have holes (other topics took the numbers in
//! between); that is why completeness is tracked with a *floor* rather than by
//! counting.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
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
    max_events: usize,
    max_bytes: usize,
    /// Sum of the stored frames' lengths.
    n_bytes: usize,
    floor: u64,
}

impl Ring {
    /// An empty ring holding at most `max_events` events and `max_bytes` of
    /// frames, but always at least the newest event.
    ///
    /// `floor` is the highest sequence number for which this ring cannot vouch:
    /// a topic created fresh may have had an earlier life that was swept away.
    pub fn new(max_events: usize, max_bytes: usize, floor: u64) -> Ring {
        Ring {
            events: VecDeque::new(),
            max_events: max_events.max(1),
            max_bytes,
            n_bytes: 0,
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
    ///
    /// Returns the bytes of the frames evicted to make room.
    pub fn push(&mut self, event: StoredEvent) -> usize {
        debug_assert!(self.last_seq().is_none_or(|last| last < event.seq));
        let (n_evict, n_freed) = self.room_for(1, event.frame.len());
        for _ in 0..n_evict {
            self.evict_front();
        }
        self.n_bytes += event.frame.len();
        self.events.push_back(event);
        n_freed
    }

    /// How many of the oldest events pushing `n_adding` frames of `n_bytes`
    /// together would evict, and their bytes. Pushing them one by one evicts
    /// exactly this prefix, provided the new frames fit an empty ring.
    pub fn room_for(&self, n_adding: usize, n_bytes: usize) -> (usize, usize) {
        let (mut n_evict, mut n_freed) = (0, 0);
        for event in &self.events {
            let n_left = self.events.len() - n_evict;
            let fits = n_left + n_adding <= self.max_events
                && self.n_bytes - n_freed + n_bytes <= self.max_bytes;
            if fits {
                break;
            }
            (n_evict, n_freed) = (n_evict + 1, n_freed + event.frame.len());
        }
        (n_evict, n_freed)
    }

    /// Drops every event published at or before `cutoff`; returns the bytes
    /// freed.
    pub fn expire(&mut self, cutoff: Instant) -> usize {
        let mut n_freed = 0;
        while self
            .events
            .front()
            .is_some_and(|event| event.published_at <= cutoff)
        {
            n_freed += self.evict_front();
        }
        n_freed
    }

    fn evict_front(&mut self) -> usize {
        match self.events.pop_front() {
            Some(event) => {
                self.floor = self.floor.max(event.seq);
                self.n_bytes -= event.frame.len();
                event.frame.len()
            }
            None => 0,
        }
    }

    /// Drops every event and raises the floor to at least `floor`: the ring
    /// vouches for nothing up to it (a cluster node that lost its place in
    /// the shared log). Returns the bytes freed.
    pub fn clear(&mut self, floor: u64) -> usize {
        let n_freed = self.n_bytes;
        self.floor = self.high_water().max(floor);
        self.events.clear();
        self.n_bytes = 0;
        n_freed
    }

    /// The highest sequence number that may have been lost from this ring.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The oldest and newest stored events.
    pub fn ends(&self) -> Option<(&StoredEvent, &StoredEvent)> {
        Some((self.events.front()?, self.events.back()?))
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
        self.events.range(self.first_after(cursor)..)
    }

    /// The events one write may carry for a reader at `cursor`: those after
    /// it, oldest first, none past `upto`, as many as fit `max_bytes` but
    /// at least one (a single event larger than the budget still goes).
    /// Every reader (a stream, a multi-topic merge, a fan-out) takes its
    /// events through this.
    pub fn take_after(&self, cursor: u64, upto: u64, max_bytes: usize) -> Take<'_> {
        Take {
            events: self.events.range(self.first_after(cursor)..),
            upto,
            bytes_left: max_bytes,
            n_taken: 0,
            cut: false,
        }
    }

    /// The events of `take_after(cursor, u64::MAX, max_bytes)` as one chunk
    /// of frames, counting those at or below `replay_through`.
    pub fn chunk_after(&self, cursor: u64, max_bytes: usize, replay_through: u64) -> Option<Chunk> {
        Chunk::of(self.take_after(cursor, u64::MAX, max_bytes), replay_through)
    }

    /// The sequence number of the first event after `cursor`, if any.
    pub fn first_seq_after(&self, cursor: u64) -> Option<u64> {
        self.events
            .get(self.first_after(cursor))
            .map(|event| event.seq)
    }

    /// A copy of the newest part of this ring: at most `max_events` events
    /// after `cursor` (shared frames, no bytes copied) and the same floor.
    pub fn snapshot_after(&self, cursor: u64, max_events: usize) -> Ring {
        let events: VecDeque<StoredEvent> = self.after(cursor).take(max_events).cloned().collect();
        Ring {
            n_bytes: events.iter().map(|event| event.frame.len()).sum(),
            max_events: events.len().max(1),
            max_bytes: usize::MAX,
            floor: self.floor,
            events,
        }
    }

    /// Index of the first event with `seq > cursor`. A live subscriber is at
    /// most a few events behind, so look back from the newest before falling
    /// back to a binary search.
    fn first_after(&self, cursor: u64) -> usize {
        const LOOK_BACK: usize = 8;
        let n = self.events.len();
        for (back, event) in self.events.iter().rev().take(LOOK_BACK).enumerate() {
            if event.seq <= cursor {
                return n - back;
            }
        }
        if n <= LOOK_BACK {
            return 0;
        }
        self.events.partition_point(|event| event.seq <= cursor)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes of encoded frames held.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }
}

/// The events one write takes: see `Ring::take_after`.
#[derive(Debug)]
pub struct Take<'a> {
    events: std::collections::vec_deque::Iter<'a, StoredEvent>,
    upto: u64,
    bytes_left: usize,
    n_taken: usize,
    cut: bool,
}

impl Take<'_> {
    /// Whether the budget, rather than `upto` or the end of the ring, ended
    /// the take: there is more to read.
    pub fn was_cut(&self) -> bool {
        self.cut
    }
}

impl<'a> Iterator for Take<'a> {
    type Item = &'a StoredEvent;

    fn next(&mut self) -> Option<&'a StoredEvent> {
        if self.cut {
            return None;
        }
        let event = self.events.next()?;
        if event.seq > self.upto {
            self.events = Default::default();
            return None;
        }
        let len = event.frame.len();
        if self.n_taken > 0 && len > self.bytes_left {
            self.cut = true;
            return None;
        }
        self.bytes_left = self.bytes_left.saturating_sub(len);
        self.n_taken += 1;
        Some(event)
    }
}

/// Frames to write in one go.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The events' frames, in order: the one frame itself (shared, no copy)
    /// when there is one event.
    pub frames: Bytes,
    pub n_events: usize,
    /// How many of them have `seq <= replay_through` (see `chunk_after`).
    pub n_replayed: usize,
    pub last_seq: u64,
}

impl Chunk {
    /// The events of `take` as one chunk; `None` when it takes none.
    pub fn of<'a>(
        mut take: impl Iterator<Item = &'a StoredEvent>,
        replay_through: u64,
    ) -> Option<Chunk> {
        let first = take.next()?;
        let mut chunk = Chunk {
            frames: first.frame.clone(),
            n_events: 1,
            n_replayed: usize::from(first.seq <= replay_through),
            last_seq: first.seq,
        };
        let Some(second) = take.next() else {
            return Some(chunk);
        };
        let mut buf = BytesMut::with_capacity(16 * first.frame.len().max(second.frame.len()));
        buf.extend_from_slice(&first.frame);
        for event in std::iter::once(second).chain(take) {
            buf.extend_from_slice(&event.frame);
            chunk.n_events += 1;
            chunk.n_replayed += usize::from(event.seq <= replay_through);
            chunk.last_seq = event.seq;
        }
        chunk.frames = buf.freeze();
        Some(chunk)
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
            frame: Bytes::from(format!("data: {seq:02}\n\n")),
        }
    }

    /// Every test frame is this long.
    const FRAME: usize = "data: 00\n\n".len();

    fn seqs_after(ring: &Ring, cursor: u64) -> Vec<u64> {
        ring.after(cursor).map(|event| event.seq).collect()
    }

    #[test]
    fn capacity_one_keeps_only_the_newest_and_raises_the_floor() {
        let now = Instant::now();
        let mut ring = Ring::new(1, usize::MAX, 0);
        ring.push(event(3, now));
        assert_eq!((seqs_after(&ring, 0), ring.floor()), (vec![3], 0));
        ring.push(event(7, now));
        assert_eq!((seqs_after(&ring, 0), ring.floor()), (vec![7], 3));
    }

    #[test]
    fn wrap_around_with_holes_in_the_sequence() {
        let now = Instant::now();
        let mut ring = Ring::new(3, usize::MAX, 0);
        for seq in [2, 5, 6, 9, 11] {
            ring.push(event(seq, now));
        }
        assert_eq!(seqs_after(&ring, 0), vec![6, 9, 11]);
        assert_eq!(ring.floor(), 5);
        assert_eq!(seqs_after(&ring, 6), vec![9, 11]);
        assert_eq!(seqs_after(&ring, 7), vec![9, 11]);
        assert_eq!(seqs_after(&ring, 11), Vec::<u64>::new());
        assert_eq!(seqs_after(&ring, 12), Vec::<u64>::new());
        // A reader at 5 has missed nothing; a reader at 4 has missed seq 5.
        assert!(ring.floor() <= 5);
        assert!(ring.floor() > 4);
    }

    #[test]
    fn after_finds_the_same_events_near_the_end_and_far_back() {
        let now = Instant::now();
        let mut ring = Ring::new(100, usize::MAX, 0);
        for seq in (2..=60).step_by(2) {
            ring.push(event(seq, now));
        }
        for cursor in 0..=62 {
            let expected: Vec<u64> = (2..=60).step_by(2).filter(|&s| s > cursor).collect();
            assert_eq!(seqs_after(&ring, cursor), expected, "cursor {cursor}");
        }
    }

    #[test]
    fn expiry_is_oldest_first_and_counts_as_loss() {
        let start = Instant::now();
        let mut ring = Ring::new(8, usize::MAX, 0);
        ring.push(event(1, start));
        ring.push(event(2, start + Duration::from_secs(1)));
        ring.push(event(3, start + Duration::from_secs(2)));
        assert_eq!(ring.expire(start + Duration::from_secs(1)), 2 * FRAME);
        assert_eq!(seqs_after(&ring, 0), vec![3]);
        assert_eq!(ring.floor(), 2);
        ring.expire(start + Duration::from_secs(5));
        assert_eq!(ring.len(), 0);
        assert_eq!((ring.floor(), ring.high_water()), (3, 3));
    }

    #[test]
    fn a_take_stops_at_upto_and_at_the_budget_but_takes_at_least_one() {
        let now = Instant::now();
        let mut ring = Ring::new(8, usize::MAX, 0);
        for seq in [2, 4, 6, 8] {
            ring.push(event(seq, now));
        }
        let check = |cursor: u64, upto: u64, max_bytes: usize, expect: &[u64], cut: bool| {
            let mut take = ring.take_after(cursor, upto, max_bytes);
            let seqs: Vec<u64> = take.by_ref().map(|event| event.seq).collect();
            assert_eq!(
                (seqs.as_slice(), take.was_cut()),
                (expect, cut),
                "{cursor} {upto} {max_bytes}"
            );
        };
        check(0, u64::MAX, usize::MAX, &[2, 4, 6, 8], false);
        check(3, u64::MAX, usize::MAX, &[4, 6, 8], false);
        check(0, 5, usize::MAX, &[2, 4], false);
        check(0, u64::MAX, 2 * FRAME, &[2, 4], true);
        check(0, u64::MAX, 2 * FRAME + 1, &[2, 4], true);
        check(0, u64::MAX, 1, &[2], true);
        check(0, 4, 2 * FRAME, &[2, 4], false);
        check(8, u64::MAX, 1, &[], false);
        // The chunk shares a single frame and counts replays.
        let one = ring.chunk_after(6, 1, 0).expect("a chunk");
        assert_eq!((one.n_events, one.last_seq, one.n_replayed), (1, 8, 0));
        assert_eq!(
            one.frames.as_ptr(),
            ring.after(6).next().expect("8").frame.as_ptr()
        );
        let all = ring.chunk_after(0, usize::MAX, 5).expect("a chunk");
        assert_eq!((all.n_events, all.last_seq, all.n_replayed), (4, 8, 2));
        assert_eq!(all.frames.len(), 4 * FRAME);
        assert!(ring.chunk_after(8, usize::MAX, 0).is_none());
        let snapshot = ring.snapshot_after(3, 2);
        assert_eq!(
            (seqs_after(&snapshot, 0), snapshot.floor()),
            (vec![4, 6], 0)
        );
        assert_eq!(ring.first_seq_after(4), Some(6));
    }

    #[test]
    fn clearing_drops_everything_and_raises_the_floor() {
        let now = Instant::now();
        let mut ring = Ring::new(8, usize::MAX, 0);
        ring.push(event(3, now));
        ring.push(event(5, now));
        assert_eq!(ring.clear(4), 2 * FRAME);
        assert_eq!((ring.len(), ring.n_bytes(), ring.floor()), (0, 0, 5));
        ring.clear(9);
        assert_eq!(ring.floor(), 9);
        ring.push(event(10, now));
        assert_eq!(seqs_after(&ring, 9), vec![10]);
    }

    #[test]
    fn a_fresh_ring_keeps_the_floor_it_was_given() {
        let ring = Ring::new(2, usize::MAX, 40);
        assert_eq!((ring.floor(), ring.high_water(), ring.len()), (40, 40, 0));
    }

    #[test]
    fn the_byte_bound_evicts_oldest_first_but_keeps_the_newest() {
        let now = Instant::now();
        let mut ring = Ring::new(100, 3 * FRAME, 0);
        for seq in 1..=3 {
            assert_eq!(ring.push(event(seq, now)), 0);
        }
        assert_eq!(ring.room_for(1, FRAME), (1, FRAME));
        // Two more frames at once: the two oldest make room.
        assert_eq!(ring.room_for(2, 2 * FRAME), (2, 2 * FRAME));
        assert_eq!(ring.push(event(4, now)), FRAME);
        assert_eq!(
            (seqs_after(&ring, 0), ring.floor(), ring.n_bytes()),
            (vec![2, 3, 4], 1, 3 * FRAME)
        );
        // A frame larger than the whole bound evicts everything else.
        let big = StoredEvent {
            seq: 5,
            published_at: now,
            frame: Bytes::from(vec![b'x'; 10 * FRAME]),
        };
        assert_eq!(ring.push(big), 3 * FRAME);
        assert_eq!((seqs_after(&ring, 0), ring.floor()), (vec![5], 4));
    }
}
