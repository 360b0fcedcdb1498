//! `Topic`: one topic's ring buffer and the subscribers waiting on it.
//!
//! Everything about a topic lives under one `std::sync::Mutex`: the ring, the
//! parked wakers and the liveness flag. Appending an event (with its sequence
//! number taken under that lock) and a subscriber checking "anything past my
//! cursor? if not, park me" are therefore atomic with respect to each other,
//! which is what makes the seam between replay and live loss- and
//! duplicate-free. No critical section awaits or allocates per subscriber;
//! wakers are woken after the lock is released.
//!
//! Every append, whatever its source (one publish, a batch, later a cluster
//! tail), goes through `Topic::append`, which also hands the new events to
//! the subscribers parked at the head (`fanout`): no caller can forget to.
//!
//! Knows nothing about HTTP or metrics.

pub mod budget;
pub mod fanout;
pub mod name;
pub mod ring;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use slab::Slab;
use tokio::time::Instant;

use crate::id::Sequence;
use crate::sink::Sink;
use crate::sse::encode::FrameTemplate;
use budget::BufferPolicy;
use fanout::FanOut;
use name::TopicName;
use ring::{Ring, StoredEvent};

/// What every topic of a registry shares.
pub struct TopicSettings {
    /// Ring bounds and the node-wide byte budget.
    pub buffer: BufferPolicy,
    /// `fanout_busy_period`: how often a busy topic's fan-out may start a
    /// sweep (see `fanout::FanOut`).
    pub fan_out_busy_period: Duration,
    /// Told how many events each batch of fan-out writes delivered (the
    /// metrics; this module knows nothing of them).
    pub on_fanned_out: Box<dyn Fn(usize) + Send + Sync>,
    /// Set when the node starts shutting down: appends that would take a
    /// number from this node's sequence (local publishes) are refused from
    /// then on. Checked under each topic's lock, so that a stream's last
    /// read after it saw the shutdown finds every publish that was taken
    /// (see `EventStream`'s drain): none is acknowledged to a stream that
    /// ends without it.
    pub publishes_closed: AtomicBool,
}

impl std::fmt::Debug for TopicSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSettings")
            .field("buffer", &self.buffer)
            .field("fan_out_busy_period", &self.fan_out_busy_period)
            .finish_non_exhaustive()
    }
}

/// One event to append: its frame, and how it gets its sequence number.
pub trait NewFrame {
    /// Whether appending it publishes on this node (it takes a number from
    /// the node's sequence), which a node shutting down refuses; an event
    /// numbered by the cluster's log is another node's publish, relayed.
    const LOCAL_PUBLISH: bool;
    /// The frame's length in bytes.
    fn len(&self) -> usize;
    /// Numbers the event (under the topic lock) and gives its frame.
    fn number(self, sequence: &Sequence) -> (u64, Bytes);
}

impl NewFrame for FrameTemplate {
    const LOCAL_PUBLISH: bool = true;

    fn len(&self) -> usize {
        FrameTemplate::len(self)
    }

    /// The next number of the node's sequence, patched into the frame.
    fn number(self, sequence: &Sequence) -> (u64, Bytes) {
        let (seq, id) = sequence.next();
        (seq, self.finish(&id))
    }
}

/// An event numbered already, by the cluster's shared log: appending it
/// moves the node's sequence up to its number.
#[derive(Debug, Clone)]
pub struct Numbered {
    pub seq: u64,
    pub frame: Bytes,
}

impl NewFrame for Numbered {
    const LOCAL_PUBLISH: bool = false;

    fn len(&self) -> usize {
        self.frame.len()
    }

    fn number(self, sequence: &Sequence) -> (u64, Bytes) {
        sequence.observe(self.seq);
        (self.seq, self.frame)
    }
}

/// Events to append in one step, and their total size.
#[derive(Debug)]
pub struct Frames<I> {
    frames: I,
    n_events: usize,
    n_bytes: usize,
}

impl<F: NewFrame> Frames<std::iter::Once<F>> {
    pub fn one(frame: F) -> Self {
        Frames {
            n_events: 1,
            n_bytes: frame.len(),
            frames: std::iter::once(frame),
        }
    }
}

impl<F: NewFrame> Frames<std::vec::IntoIter<F>> {
    pub fn many(frames: Vec<F>) -> Self {
        Frames {
            n_events: frames.len(),
            n_bytes: frames.iter().map(NewFrame::len).sum(),
            frames: frames.into_iter(),
        }
    }
}

/// A topic: created on first publish or subscribe, removed by the sweeper
/// once it has had no subscriber and no event for `buffer_ttl`.
#[derive(Debug)]
pub struct Topic {
    name: TopicName,
    settings: Arc<TopicSettings>,
    /// The sequence number of the newest event (or of a `clear`'s floor),
    /// stored under the lock after each change. A parked subscriber compares
    /// it with its cursor to learn, without the lock, that nothing new has
    /// come (see `Subscription`).
    last_seq: AtomicU64,
    state: Mutex<TopicState>,
}

#[derive(Debug)]
struct TopicState {
    ring: Ring,
    /// One slot per registered subscriber.
    waiters: Slab<Waiter>,
    /// The last publish, subscribe or unsubscribe: the start of the idle
    /// period after which the sweeper may remove the topic.
    last_active: Instant,
    /// Whether any event was ever appended; a topic that only ever had
    /// subscribers is forgotten as soon as the last one leaves.
    had_events: bool,
    /// The wakers of one append, kept between appends so that waking a
    /// crowd allocates nothing.
    spare_wakers: Vec<Waker>,
    /// A fan-out is running for this topic (see `fanout`): appends leave
    /// parked sinks to it rather than starting another.
    fanning_out: bool,
    /// Set by the registry under this lock when it removes the topic. Whoever
    /// still holds an `Arc` to a removed topic must look the name up again,
    /// or an append would be lost.
    removed: bool,
}

/// A registered subscriber's slot.
#[derive(Debug, Default)]
struct Waiter {
    /// `Some` while the subscriber is parked waiting for the next append.
    waker: Option<Waker>,
    /// A direct stream's socket, which an append of one event writes to
    /// itself while it is parked (see `fanout`).
    sink: Option<Arc<Sink>>,
}

/// The topic was removed between lookup and lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed;

/// Why an append did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// Look the name up again (see `Removed`).
    Removed,
    /// The node-wide byte budget (`max_buffered_bytes`) is spent.
    OverBudget,
    /// A local publish while the node shuts down
    /// (`TopicSettings::publishes_closed`).
    Closed,
}

/// A subscriber's place on a topic.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// The subscriber's waiter slot; pass it back to `park` and `unregister`.
    pub key: usize,
    /// The ring's floor at registration, after expiry (see `Ring::floor`).
    pub floor: u64,
}

/// A topic the registry may drop: it is now marked removed, and
/// `high_water` is the highest sequence number it ever covered, which a
/// successor of the same name must not vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub high_water: u64,
}

impl Topic {
    pub fn new(name: TopicName, settings: Arc<TopicSettings>, floor: u64, now: Instant) -> Topic {
        let buffer = &settings.buffer;
        let ring = Ring::new(buffer.max_events, buffer.max_bytes, floor);
        Topic {
            name,
            settings,
            last_seq: AtomicU64::new(0),
            state: Mutex::new(TopicState {
                ring,
                waiters: Slab::new(),
                last_active: now,
                had_events: false,
                spare_wakers: Vec::new(),
                fanning_out: false,
                removed: false,
            }),
        }
    }

    pub fn name(&self) -> &TopicName {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, TopicState> {
        // No critical section can panic halfway through an update, so the
        // state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `frames` in one step under one lock: all or none, in order,
    /// each numbered as it goes in, with no other event of this topic
    /// between them. Then hands the new events to the subscribers parked at
    /// the head: their sinks to the topic's fan-out (started here unless one
    /// runs), the other parked subscribers woken. Never waits on a
    /// subscriber. The caller makes sure a batch fits an empty ring, or its
    /// first events would be evicted by its last.
    ///
    /// `on_appended` sees each event's sequence number. Returns the
    /// subscribers registered at append time.
    pub fn append<F: NewFrame>(
        self: &Arc<Self>,
        sequence: &Sequence,
        frames: Frames<impl Iterator<Item = F>>,
        now: Instant,
        mut on_appended: impl FnMut(u64),
    ) -> Result<usize, AppendError> {
        let buffer = &self.settings.buffer;
        let mut parked_sinks = Vec::new();
        let (n_subscribers, wakers) = {
            let mut state = self.lock();
            if state.removed {
                return Err(AppendError::Removed);
            }
            if F::LOCAL_PUBLISH && self.settings.publishes_closed.load(Ordering::SeqCst) {
                return Err(AppendError::Closed);
            }
            self.expire(&mut state, now);
            let (_, n_freeing) = state.ring.room_for(frames.n_events, frames.n_bytes);
            if !buffer.admits(frames.n_bytes, n_freeing) {
                return Err(AppendError::OverBudget);
            }
            let mut n_freed = 0;
            for frame in frames.frames {
                let (seq, frame) = frame.number(sequence);
                n_freed += state.ring.push(StoredEvent {
                    seq,
                    published_at: now,
                    frame,
                });
                on_appended(seq);
                self.last_seq.store(seq, Ordering::Release);
            }
            buffer.add(frames.n_bytes);
            buffer.release(n_freed);
            state.last_active = now;
            state.had_events = true;
            let wakers = match state.fanning_out {
                // The running fan-out covers the parked sinks.
                true => state.take_wakers(Parked::Leave),
                false => {
                    let wakers = state.take_wakers(Parked::Collect(&mut parked_sinks));
                    state.fanning_out = !parked_sinks.is_empty();
                    wakers
                }
            };
            (state.waiters.len(), wakers)
        };
        self.wake(wakers);
        if !parked_sinks.is_empty() {
            let fan_out = FanOut::new(
                Arc::clone(self),
                parked_sinks,
                self.settings.fan_out_busy_period,
            );
            fan_out.deliver();
        }
        Ok(n_subscribers)
    }

    /// Registers a subscriber and applies expiry, so that `floor` tells the
    /// truth about what can still be replayed.
    pub fn register(&self, now: Instant) -> Result<Registration, Removed> {
        let mut state = self.lock();
        if state.removed {
            return Err(Removed);
        }
        self.expire(&mut state, now);
        state.last_active = now;
        let key = state.waiters.insert(Waiter::default());
        Ok(Registration {
            key,
            floor: state.ring.floor(),
        })
    }

    /// Unregisters a subscriber. Returns whether the topic has become
    /// worthless: no subscriber left and never an event (see `retire_unused`).
    pub fn unregister(&self, key: usize, now: Instant) -> bool {
        let mut state = self.lock();
        state.waiters.try_remove(key);
        state.last_active = now;
        state.waiters.is_empty() && !state.had_events
    }

    /// The newest event's sequence number (0 before the first), read without
    /// the lock.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Gives the subscriber in slot `key` a sink, so that appends of one
    /// event write to its socket themselves while it is parked.
    pub fn attach_sink(&self, key: usize, sink: Arc<Sink>) {
        if let Some(waiter) = self.lock().waiters.get_mut(key) {
            waiter.sink = Some(sink);
        }
    }

    /// Locks the topic for a subscriber's read.
    pub fn view(&self) -> TopicView<'_> {
        TopicView(self.lock())
    }

    /// Drops every buffered event and raises the ring's floor to `floor`,
    /// then wakes every parked subscriber: each one behind the floor ends
    /// its stream at its next read (see `Registry::reset`).
    pub fn clear(&self, floor: u64) {
        let wakers = {
            let mut state = self.lock();
            self.settings.buffer.release(state.ring.clear(floor));
            self.last_seq
                .fetch_max(state.ring.floor(), Ordering::AcqRel);
            state.take_wakers(Parked::Wake)
        };
        self.wake(wakers);
    }

    /// Wakes every parked subscriber, e.g. so that it notices shutdown.
    pub fn wake_all(&self) {
        let wakers = self.lock().take_wakers(Parked::Wake);
        self.wake(wakers);
    }

    /// For a running fan-out: a copy of the ring's newest part, at most
    /// `max_events` events after `cursor`, with its floor.
    pub fn fan_out_frames(&self, cursor: u64, max_events: usize) -> Ring {
        self.lock().ring.snapshot_after(cursor, max_events)
    }

    /// Told by the fan-out how many events a batch of writes delivered.
    pub fn fanned_out(&self, n_events: usize) {
        (self.settings.on_fanned_out)(n_events);
    }

    /// For a fan-out at the end of a sweep: the parked sinks that are behind
    /// the newest event (appended during the sweep, which left them to it),
    /// for one more sweep. None: the fan-out ends, and the next append
    /// starts a new one.
    pub fn fan_out_again(&self) -> Vec<Arc<Sink>> {
        let mut state = self.lock();
        let newest = state.ring.last_seq().unwrap_or(0);
        let behind: Vec<Arc<Sink>> = (state.waiters.iter())
            .filter_map(|(_, waiter)| waiter.sink.as_ref())
            .filter(|sink| sink.is_parked() && sink.cursor() < newest)
            .cloned()
            .collect();
        state.fanning_out = !behind.is_empty();
        behind
    }

    /// For a fan-out that stops before its end (its task was dropped): no
    /// fan-out runs any more, and every parked subscriber is woken to read
    /// the ring itself.
    pub fn abandon_fan_out(&self) {
        let wakers = {
            let mut state = self.lock();
            state.fanning_out = false;
            state.take_wakers(Parked::Wake)
        };
        self.wake(wakers);
    }

    /// Wakes `wakers` with no lock held, then keeps the buffer for next time.
    fn wake(&self, mut wakers: Vec<Waker>) {
        if wakers.capacity() == 0 {
            return;
        }
        wakers.drain(..).for_each(Waker::wake);
        let mut state = self.lock();
        if state.spare_wakers.capacity() < wakers.capacity() {
            state.spare_wakers = wakers;
        }
    }

    /// Expires old events and decides whether the topic has been idle long
    /// enough to be removed. Called by the registry under its map's shard lock,
    /// so no one can look the topic up while it is being marked removed.
    pub fn sweep(&self, now: Instant) -> Option<Retired> {
        let mut state = self.lock();
        self.expire(&mut state, now);
        let idle_long_enough =
            now.saturating_duration_since(state.last_active) >= self.settings.buffer.ttl;
        if !state.waiters.is_empty() || !idle_long_enough {
            return None;
        }
        Some(state.retire())
    }

    /// Retires a topic that only ever had subscribers, once the last one has
    /// left, so subscribing alone cannot fill `max_topics` for `buffer_ttl`.
    /// Called under the map's shard lock, like `sweep`.
    pub fn retire_unused(&self) -> Option<Retired> {
        let mut state = self.lock();
        let unused = state.waiters.is_empty() && !state.had_events && !state.removed;
        unused.then(|| state.retire())
    }

    /// Events and frame bytes currently buffered.
    pub fn buffered(&self) -> (usize, usize) {
        let state = self.lock();
        (state.ring.len(), state.ring.n_bytes())
    }

    /// What the topic API reports, read in one go under the lock.
    pub fn summary(&self) -> TopicSummary {
        let state = self.lock();
        let ends = state.ring.ends();
        TopicSummary {
            n_subscribers: state.waiters.len(),
            n_buffered: state.ring.len(),
            n_bytes: state.ring.n_bytes(),
            newest_seq: Some(self.last_seq()).filter(|seq| *seq > 0),
            oldest_buffered_seq: ends.map(|(oldest, _)| oldest.seq),
            newest_published_at: ends.map(|(_, newest)| newest.published_at),
        }
    }

    /// Subscriber streams registered on the topic, and its buffered events.
    pub fn occupancy(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiters.len(), state.ring.len())
    }

    fn expire(&self, state: &mut TopicState, now: Instant) {
        let buffer = &self.settings.buffer;
        if let Some(cutoff) = now.checked_sub(buffer.ttl) {
            buffer.release(state.ring.expire(cutoff));
        }
    }
}

/// One topic as the topic API (`GET /topics`) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// Streams on this node.
    pub n_subscribers: usize,
    pub n_buffered: usize,
    pub n_bytes: usize,
    /// The newest event's sequence number, buffered or not (`None` before
    /// the first).
    pub newest_seq: Option<u64>,
    pub oldest_buffered_seq: Option<u64>,
    /// When the newest buffered event was published.
    pub newest_published_at: Option<Instant>,
}

impl Drop for Topic {
    /// Gives the ring's bytes back to the node-wide budget, whichever way the
    /// topic goes.
    fn drop(&mut self) {
        let n_bytes = self.lock().ring.n_bytes();
        self.settings.buffer.release(n_bytes);
    }
}

impl TopicState {
    fn retire(&mut self) -> Retired {
        self.removed = true;
        Retired {
            high_water: self.ring.high_water(),
        }
    }

    /// The wakers of every parked subscriber, taken, except that a
    /// subscriber whose sink is parked keeps its waker unless `parked` says
    /// to wake it: a fan-out writes to it instead.
    fn take_wakers(&mut self, mut parked: Parked<'_>) -> Vec<Waker> {
        let mut wakers = std::mem::take(&mut self.spare_wakers);
        for (_, waiter) in self.waiters.iter_mut() {
            if waiter.waker.is_none() {
                continue;
            }
            if let Some(sink) = &waiter.sink
                && sink.is_parked()
            {
                match &mut parked {
                    Parked::Wake => {}
                    Parked::Collect(sinks) => {
                        sinks.push(Arc::clone(sink));
                        continue;
                    }
                    Parked::Leave => continue,
                }
            }
            wakers.extend(waiter.waker.take());
        }
        wakers
    }
}

/// What `take_wakers` does with subscribers whose sink is parked.
enum Parked<'a> {
    Wake,
    Collect(&'a mut Vec<Arc<Sink>>),
    Leave,
}

/// A locked topic, as seen by one subscriber's read.
pub struct TopicView<'a>(MutexGuard<'a, TopicState>);

impl TopicView<'_> {
    pub fn ring(&self) -> &Ring {
        &self.0.ring
    }

    /// Parks the subscriber in slot `key` until the next append. Because the
    /// caller checked the ring under this same lock, no append can slip in
    /// between "nothing new" and "parked".
    pub fn park(&mut self, key: usize, waker: &Waker) {
        if let Some(Waiter { waker: slot, .. }) = self.0.waiters.get_mut(key) {
            match slot {
                Some(parked) if parked.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }
}
