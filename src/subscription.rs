//! `Subscription`: one subscriber's position in its topics, and how it reads.
//!
//! A subscription is a cursor (the sequence number up to which it has been
//! served) plus a waiter slot on each topic: no copy of any event and no queue.
//! Each read takes everything past the cursor, up to a byte budget, as one
//! chunk, so a subscriber that is behind gets many events per write.
//!
//! Multi-topic order: sequence numbers are taken under each topic's lock, so a
//! reader that first loads the sequence's `last()` value `upto` and then locks
//! each topic sees every event of every topic with `seq <= upto`. Merging
//! those and advancing the cursor to `upto` delivers the events of all topics
//! in publish order, and the last id a client saw always marks a complete
//! prefix, which is what makes its `Last-Event-ID` exact.
//!
//! Lag: the ring's floor is the highest sequence number it may have lost. A
//! subscriber is behind for good once a floor passes both its cursor and the
//! floor it already acknowledged with a `gap`.
//!
//! Knows nothing about HTTP; `sse::stream` turns batches into a response body.

use std::sync::Arc;
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::registry::{OpenSlot, Registry, Reservation};
use crate::sink::Sink;
use crate::topic::Topic;
use crate::topic::ring::{Chunk, Ring, StoredEvent};

/// One topic of a subscription and the subscriber's waiter slot on it.
pub struct Subscribed {
    pub topic: Arc<Topic>,
    pub key: usize,
    /// Events of this topic up to here are in the subscription's `replay`
    /// (cluster mode: read from Redis), so the ring's floor may be this high
    /// without a loss.
    covered_through: u64,
}

impl Subscribed {
    pub fn new(topic: Arc<Topic>, key: usize) -> Subscribed {
        Subscribed {
            topic,
            key,
            covered_through: 0,
        }
    }
}

/// Events a subscription replays from elsewhere than its topics' rings (a
/// cluster node reads what its own rings no longer hold from Redis), merged
/// with the rings' events in id order.
#[derive(Debug, Default)]
pub struct Replay {
    /// Per topic, in the order subscribed: the sequence number up to which
    /// `events` hold every event of that topic after the start (0: none).
    pub covered_through: Vec<u64>,
    /// Sequence numbers and frames, in order.
    pub events: Vec<(u64, Bytes)>,
}
/// The outcome of one read.
#[derive(Debug)]
pub enum Batch {
    /// Frames to write, in publish order.
    Events {
        frames: Bytes,
        n_events: usize,
        /// How many of them were published before the subscription started.
        n_replayed: usize,
    },
    /// Nothing new; the subscriber is parked on every topic and `waker` will be
    /// woken by the next publish.
    Idle,
    /// Events this subscriber still needed were evicted: end the stream.
    Lagged,
    /// The node lost its place in the cluster's shared log: end the stream
    /// (the client resumes exactly from Redis, or learns of a loss).
    Reset,
}

impl Batch {
    fn of(chunk: Chunk) -> Batch {
        Batch::Events {
            frames: chunk.frames,
            n_events: chunk.n_events,
            n_replayed: chunk.n_replayed,
        }
    }
}

/// A subscriber's open subscription: its topics, registered, and its
/// position in them. Built in one step (`Subscription::open`); dropping it
/// unregisters it from its topics and gives its subscriber slot back.
pub struct Subscription {
    topics: Registered,
    /// The subscriber slot, given back when this is dropped.
    slot: OpenSlot,
    position: Position,
    /// What `Replay` brought, as a ring of its own, until read. Boxed: it
    /// is rare, and every stream's task would carry room for it.
    replay: Option<Box<Ring>>,
}

/// The topics a subscription is registered on; unregisters them on drop,
/// including when a subscribe fails halfway.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    topics: Vec<Subscribed>,
}

impl Registered {
    pub(crate) fn new(registry: Arc<Registry>, n_topics: usize) -> Registered {
        Registered {
            registry,
            topics: Vec::with_capacity(n_topics),
        }
    }

    pub(crate) fn push(&mut self, subscribed: Subscribed) {
        self.topics.push(subscribed);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let now = Instant::now();
        for subscribed in &self.topics {
            if subscribed.topic.unregister(subscribed.key, now) {
                self.registry.remove_if_unused(&subscribed.topic);
            }
        }
    }
}

/// What the client's resume id is to this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// None given: the stream starts live.
    Live,
    /// An id this run handed out: resume after its sequence number.
    After(u64),
    /// Not an id of this run (malformed, foreign, older run, future).
    Unknown,
}

/// Where a subscription starts: its first `Position`, minus the id echoed
/// by a `gap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    pub cursor: u64,
    pub acknowledged_floor: u64,
    pub replay_through: u64,
    /// Whether the stream must open with a `gap` event.
    pub gap: bool,
}

impl Start {
    /// The start decision: replay, gap, or live. `head` is the newest
    /// sequence number when the subscription registered, `max_floor` the
    /// highest floor of its topics' rings then (see `Ring::floor`).
    pub(crate) fn decide(resume: Resume, head: u64, max_floor: u64) -> Start {
        match resume {
            Resume::Live => Start {
                cursor: head,
                acknowledged_floor: head,
                replay_through: head,
                gap: false,
            },
            // Exact: nothing after `seq` was lost in any topic.
            Resume::After(seq) if max_floor <= seq => Start {
                cursor: seq,
                acknowledged_floor: seq,
                replay_through: head,
                gap: false,
            },
            // Some topic lost events after `seq`: gap, then what is left.
            Resume::After(seq) => Start {
                cursor: seq,
                acknowledged_floor: max_floor,
                replay_through: head,
                gap: true,
            },
            // Not an id of this run: gap, then everything buffered.
            Resume::Unknown => Start {
                cursor: 0,
                acknowledged_floor: max_floor,
                replay_through: head,
                gap: true,
            },
        }
    }
}

/// How far a subscription has been served, and what it was told.
#[derive(Debug, Default)]
struct Position {
    /// Every event of these topics with `seq <= cursor` has been served (or
    /// was published before the subscription and not asked for).
    cursor: u64,
    /// Losses up to here are reported by the opening `gap` event.
    acknowledged_floor: u64,
    /// Events up to here were published before the subscription started.
    replay_through: u64,
    resume_id: String,
    gap_pending: bool,
    /// Single topic only: the waker is parked in the topic and the cursor is
    /// at the newest event, so until the topic's `last_seq` moves there is
    /// nothing to read, and a poll can say so without taking the lock.
    parked_at_head: bool,
    /// The stream has written its opening (`retry:` and any `gap`); from
    /// then on a new loss ends the stream instead of joining the `gap`.
    opened_stream: bool,
    /// The sequence number of the last event handed out, if any.
    last_written: Option<u64>,
    /// The id of `replay_through`, until the position block is decided
    /// (see `take_position`).
    position_id: Option<Box<str>>,
}

impl Position {
    /// Whether a ring with this floor has lost events the subscriber needs
    /// and the stream must end. Losses found before the stream's first write
    /// join its opening `gap` instead: the client has not been told anything
    /// yet, so it can still be told the truth without a reconnect.
    fn must_drop(&mut self, floor: u64, covered_through: u64) -> bool {
        if floor
            <= self
                .cursor
                .max(self.acknowledged_floor)
                .max(covered_through)
        {
            return false;
        }
        if self.opened_stream {
            return true;
        }
        self.acknowledged_floor = floor;
        self.gap_pending = true;
        false
    }

    fn is_replay(&self, seq: u64) -> bool {
        seq <= self.replay_through
    }
}

impl Subscription {
    /// The subscription of `topics`, starting at `start`, holding the
    /// subscriber slot `reservation` (now counted as open), with `replay`
    /// merged into what it reads. `resume_id` is the id the client gave
    /// (empty for none), echoed by a `gap`; `position_id` is the wire id of
    /// `start.replay_through`, for the position block.
    pub(crate) fn open(
        reservation: Reservation,
        mut topics: Registered,
        start: Start,
        resume_id: String,
        position_id: String,
        replay: Replay,
    ) -> Subscription {
        for (subscribed, covered) in topics.topics.iter_mut().zip(replay.covered_through) {
            subscribed.covered_through = covered;
        }
        let replay = (!replay.events.is_empty()).then(|| {
            let mut ring = Ring::new(replay.events.len(), usize::MAX, 0);
            let now = Instant::now();
            for (seq, frame) in replay.events {
                ring.push(StoredEvent {
                    seq,
                    published_at: now,
                    frame,
                });
            }
            Box::new(ring)
        });
        Subscription {
            topics,
            slot: reservation.open(),
            position: Position {
                cursor: start.cursor,
                acknowledged_floor: start.acknowledged_floor,
                replay_through: start.replay_through,
                resume_id,
                gap_pending: start.gap,
                parked_at_head: false,
                opened_stream: false,
                last_written: None,
                position_id: Some(position_id.into_boxed_str()),
            },
            replay,
        }
    }

    /// Called once, when the stream writes its first bytes: the resume id to
    /// report in a `gap` event, if the stream must open with one.
    pub fn take_opening_gap(&mut self) -> Option<String> {
        let position = &mut self.position;
        position.opened_stream = true;
        match std::mem::take(&mut position.gap_pending) {
            true => Some(std::mem::take(&mut position.resume_id)),
            false => None,
        }
    }

    /// Called when the stream finds nothing more to read: its replay is
    /// done and it is live. Once, the id to write as the position block:
    /// the id at which it went live, unless the last event it wrote
    /// carries that id or a later one (the client's `lastEventId` already
    /// says as much).
    pub fn take_position(&mut self) -> Option<Box<str>> {
        let position = &mut self.position;
        let id = position.position_id.take()?;
        let owed = position
            .last_written
            .is_none_or(|seq| seq < position.replay_through);
        owed.then_some(id)
    }

    /// The topics, for logs.
    pub fn topic_names(&self) -> Vec<&str> {
        self.topics
            .topics
            .iter()
            .map(|t| t.topic.name().as_str())
            .collect()
    }

    /// Single topic only: gives the subscriber's slot a sink, so that
    /// appends write to its socket themselves while it waits at the head.
    pub fn attach_sink(&self, sink: Arc<Sink>) -> bool {
        match self.topics.topics.as_slice() {
            [subscribed] => {
                subscribed.topic.attach_sink(subscribed.key, sink);
                true
            }
            _ => false,
        }
    }

    /// Single topic only: the cursor, if the subscriber is parked at the
    /// head of its topic (its last read found nothing new).
    pub fn idle_at_head(&self) -> Option<u64> {
        // Not before the position block is decided: a fan-out writes events,
        // never the block.
        let parked = self.topics.topics.len() == 1
            && self.position.parked_at_head
            && self.position.position_id.is_none();
        parked.then_some(self.position.cursor)
    }

    /// The node's newest sequence number: at shutdown, the stream writes
    /// what it is owed up to there before it ends.
    pub fn newest_seq(&self) -> u64 {
        self.topics.registry.sequence().last()
    }

    /// The sequence number up to which events have been taken.
    pub fn cursor(&self) -> u64 {
        self.position.cursor
    }

    /// Single topic only: a fan-out wrote the topic's events up to `cursor`
    /// to the subscriber's socket (see `fanout`).
    pub fn written_elsewhere_through(&mut self, cursor: u64) {
        if self.topics.topics.len() == 1 {
            self.position.cursor = self.position.cursor.max(cursor);
        }
    }

    /// Takes everything past the cursor, at most `max_bytes` of frames (but at
    /// least one event), or parks `waker` on every topic when there is nothing.
    pub fn next_batch(&mut self, waker: &Waker, max_bytes: usize) -> Batch {
        match self.topics.topics.len() {
            1 if self.replay.is_none() => self.next_batch_single(waker, max_bytes),
            _ => self.next_batch_merged(waker, max_bytes),
        }
    }

    /// One topic: its ring is already in publish order, no merge needed.
    fn next_batch_single(&mut self, waker: &Waker, max_bytes: usize) -> Batch {
        let Subscription {
            topics, position, ..
        } = self;
        let subscribed = &topics.topics[0];
        // The waker parked with the last read is still in the topic (only an
        // append takes it, and an append moves `last_seq`; shutdown's
        // `wake_all` is caught by the stream's flag). This stream is always
        // polled by the same task, so that waker is still the right one.
        if position.parked_at_head && subscribed.topic.last_seq() <= position.cursor {
            return Batch::Idle;
        }
        position.parked_at_head = false;
        let mut view = subscribed.topic.view();
        if position.must_drop(view.ring().floor(), subscribed.covered_through) {
            return dropped(&topics.registry, position);
        }
        // Most polls find nothing new: answer that without a search.
        let newest = view.ring().last_seq().unwrap_or(0);
        if newest <= position.cursor {
            view.park(subscribed.key, waker);
            position.parked_at_head = true;
            return Batch::Idle;
        }
        let Some(chunk) =
            view.ring()
                .chunk_after(position.cursor, max_bytes, position.replay_through)
        else {
            return Batch::Idle;
        };
        if chunk.last_seq == newest {
            // Everything is taken: park now, under this lock, so the poll
            // after the write needs no lock to learn there is nothing more.
            view.park(subscribed.key, waker);
            position.parked_at_head = true;
        }
        drop(view);
        position.cursor = chunk.last_seq;
        position.last_written = Some(chunk.last_seq);
        Batch::of(chunk)
    }

    /// Several topics, or a replay still to merge in: collect up to `upto`
    /// from each ring, merge by sequence.
    fn next_batch_merged(&mut self, waker: &Waker, max_bytes: usize) -> Batch {
        let Subscription {
            topics,
            position,
            replay,
            ..
        } = self;
        loop {
            let upto = topics.registry.sequence().last();
            let mut collected: Vec<(u64, Bytes)> = Vec::new();
            // Every event with `seq <= limit` of every topic is in `collected`.
            let mut limit = upto;
            let mut newer_than_upto = false;
            let cursor = position.cursor;
            let mut take = |ring: &Ring, collected: &mut Vec<(u64, Bytes)>| {
                let mut take = ring.take_after(cursor, upto, max_bytes);
                collected.extend(take.by_ref().map(|event| (event.seq, event.frame.clone())));
                if take.was_cut() {
                    limit = limit.min(collected.last().map_or(upto, |(seq, _)| *seq));
                }
            };
            if let Some(replay) = replay {
                take(replay, &mut collected);
            }
            for subscribed in topics.topics.iter() {
                let mut view = subscribed.topic.view();
                let ring = view.ring();
                if position.must_drop(ring.floor(), subscribed.covered_through) {
                    return dropped(&topics.registry, position);
                }
                let n_before = collected.len();
                take(ring, &mut collected);
                newer_than_upto |= ring.last_seq().is_some_and(|last| last > upto);
                if collected.len() == n_before {
                    view.park(subscribed.key, waker);
                }
            }
            if collected.is_empty() {
                if newer_than_upto {
                    // Published between loading `upto` and locking: go again.
                    continue;
                }
                position.cursor = position.cursor.max(upto);
                *replay = None;
                return Batch::Idle;
            }
            collected.sort_unstable_by_key(|(seq, _)| *seq);
            let batch = take_merged(position, collected, limit, max_bytes);
            if replay
                .as_ref()
                .is_some_and(|ring| ring.last_seq().is_none_or(|last| last <= position.cursor))
            {
                *replay = None;
            }
            return batch;
        }
    }
}

/// Why a subscription that must drop does: the node's reset, or its lag.
fn dropped(registry: &Registry, position: &Position) -> Batch {
    match position.cursor < registry.last_reset() {
        true => Batch::Reset,
        false => Batch::Lagged,
    }
}

impl Drop for Subscription {
    /// Gives the subscriber slot back (the topics unregister right after,
    /// `Registered`'s drop).
    fn drop(&mut self) {
        self.topics.registry.close_subscriber(&mut self.slot);
    }
}

/// Writes the merged events up to `limit` into one chunk of at most
/// `max_bytes` (at least one event) and advances the cursor past them.
fn take_merged(
    position: &mut Position,
    collected: Vec<(u64, Bytes)>,
    limit: u64,
    max_bytes: usize,
) -> Batch {
    let mut buf = BytesMut::new();
    let (mut n_events, mut n_replayed, mut last_seq, mut cut) = (0, 0, position.cursor, false);
    for (seq, frame) in collected.iter().filter(|(seq, _)| *seq <= limit) {
        if n_events > 0 && buf.len() + frame.len() > max_bytes {
            cut = true;
            break;
        }
        buf.extend_from_slice(frame);
        (n_events, last_seq) = (n_events + 1, *seq);
        n_replayed += usize::from(position.is_replay(*seq));
    }
    position.cursor = if cut { last_seq } else { limit };
    position.last_written = Some(last_seq);
    Batch::Events {
        frames: buf.freeze(),
        n_events,
        n_replayed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::id::RunEpoch;
    use crate::metrics::Metrics;
    use crate::registry::Limits;
    use crate::topic::name::TopicName;

    fn registry(buffer_events: usize) -> Arc<Registry> {
        let limits = Limits {
            buffer_events,
            buffer_bytes: usize::MAX,
            buffer_ttl: Duration::from_secs(300),
            max_buffered_bytes: usize::MAX,
            max_topics: 10,
            max_subscribers: 10,
            fanout_busy_period: Duration::from_millis(50),
        };
        Arc::new(Registry::new(
            limits,
            RunEpoch::from_raw(7),
            Arc::new(Metrics::new()),
        ))
    }

    fn publish(registry: &Registry, topic: &TopicName, body: &str) -> String {
        let published = registry
            .publish(topic.borrowed(), None, body)
            .expect("publish");
        String::from_utf8_lossy(&published.id).into_owned()
    }

    fn n_events(batch: Batch) -> usize {
        match batch {
            Batch::Events { n_events, .. } => n_events,
            other => panic!("expected events, got {other:?}"),
        }
    }

    /// One row of the start decision: resume, head, highest floor, and the
    /// start expected as (cursor, acknowledged floor, gap).
    fn check(resume: Resume, head: u64, max_floor: u64, expect: (u64, u64, bool)) {
        let start = Start::decide(resume, head, max_floor);
        assert_eq!(start.replay_through, head, "{resume:?} {head} {max_floor}");
        assert_eq!(
            (start.cursor, start.acknowledged_floor, start.gap),
            expect,
            "{resume:?} {head} {max_floor}"
        );
    }

    #[test]
    fn the_start_decision() {
        // No resume id: live from the head, whatever was lost before.
        check(Resume::Live, 10, 0, (10, 10, false));
        check(Resume::Live, 10, 8, (10, 10, false));
        // An id at or above every floor: an exact replay.
        check(Resume::After(5), 10, 0, (5, 5, false));
        check(Resume::After(5), 10, 5, (5, 5, false));
        check(Resume::After(10), 10, 7, (10, 10, false));
        // A floor above the id: events after it were lost.
        check(Resume::After(5), 10, 6, (5, 6, true));
        check(Resume::After(0), 10, 10, (0, 10, true));
        // Not an id of this run: gap, then everything still buffered.
        check(Resume::Unknown, 10, 0, (0, 0, true));
        check(Resume::Unknown, 10, 4, (0, 4, true));
        check(Resume::Unknown, 0, 0, (0, 0, true));
    }

    #[test]
    fn a_loss_before_the_first_write_joins_the_opening_gap_and_a_later_one_ends_the_stream() {
        let registry = registry(2);
        let topic = TopicName::parse("t").expect("topic");
        let first = publish(&registry, &topic, "1");
        let mut subscription = registry
            .subscribe(std::slice::from_ref(&topic), Some(first.as_bytes()))
            .expect("subscribe");
        // Exact at subscribe time; then "2" is evicted before the first read.
        for body in ["2", "3", "4"] {
            publish(&registry, &topic, body);
        }
        assert_eq!(n_events(subscription.next_batch(Waker::noop(), 1 << 20)), 2);
        assert_eq!(subscription.take_opening_gap(), Some(first));
        for body in ["5", "6", "7"] {
            publish(&registry, &topic, body);
        }
        assert!(matches!(
            subscription.next_batch(Waker::noop(), 1 << 20),
            Batch::Lagged
        ));
    }

    #[test]
    fn an_exact_resume_opens_without_a_gap() {
        let registry = registry(4);
        let topic = TopicName::parse("t").expect("topic");
        let first = publish(&registry, &topic, "1");
        publish(&registry, &topic, "2");
        let mut subscription = registry
            .subscribe(std::slice::from_ref(&topic), Some(first.as_bytes()))
            .expect("subscribe");
        assert_eq!(n_events(subscription.next_batch(Waker::noop(), 1 << 20)), 1);
        assert_eq!(subscription.take_opening_gap(), None);
        assert!(matches!(
            subscription.next_batch(Waker::noop(), 1 << 20),
            Batch::Idle
        ));
    }

    /// A waker that counts its wakes.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_batch_that_takes_everything_stays_parked_and_the_next_append_wakes_it() {
        let registry = registry(8);
        let topic = TopicName::parse("t").expect("topic");
        let mut subscription = registry
            .subscribe(std::slice::from_ref(&topic), None)
            .expect("subscribe");
        let counter = Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(Arc::clone(&counter));
        let wakes = || counter.0.load(std::sync::atomic::Ordering::SeqCst);
        publish(&registry, &topic, "1");
        assert_eq!(n_events(subscription.next_batch(&waker, 1 << 20)), 1);
        // Parked with the batch: nothing new, so no lock and no event.
        assert!(matches!(
            subscription.next_batch(&waker, 1 << 20),
            Batch::Idle
        ));
        publish(&registry, &topic, "2");
        assert_eq!(
            wakes(),
            1,
            "the append woke the waker parked with the batch"
        );
        assert_eq!(n_events(subscription.next_batch(&waker, 1 << 20)), 1);
        // A batch cut by the budget does not park: there is more to read.
        for body in ["3", "4"] {
            publish(&registry, &topic, body);
        }
        assert_eq!(n_events(subscription.next_batch(&waker, 1)), 1);
        assert_eq!(n_events(subscription.next_batch(&waker, 1)), 1);
        assert!(matches!(
            subscription.next_batch(&waker, 1 << 20),
            Batch::Idle
        ));
    }

    #[test]
    fn merged_batches_respect_the_byte_budget_and_keep_order() {
        let registry = registry(16);
        let (a, b) = (
            TopicName::parse("a").expect("a"),
            TopicName::parse("b").expect("b"),
        );
        let start = publish(&registry, &a, "start");
        for i in 0..6 {
            publish(&registry, if i % 2 == 0 { &a } else { &b }, &format!("{i}"));
        }
        let mut subscription = registry
            .subscribe(&[a, b], Some(start.as_bytes()))
            .expect("subscribe");
        let frame_len = crate::sse::encode::event_frame(&start, None, "0").len();
        let mut seen = String::new();
        loop {
            match subscription.next_batch(Waker::noop(), 2 * frame_len) {
                Batch::Events {
                    frames, n_events, ..
                } => {
                    assert!(n_events <= 2, "budget of two frames");
                    seen.push_str(&String::from_utf8_lossy(&frames));
                }
                Batch::Idle => break,
                Batch::Lagged | Batch::Reset => panic!("nothing was evicted"),
            }
        }
        let data: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data, ["0", "1", "2", "3", "4", "5"]);
    }
}
