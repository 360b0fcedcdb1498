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
//! Knows nothing about HTTP or metrics.

pub mod budget;
pub mod name;
pub mod ring;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use slab::Slab;
use tokio::time::Instant;

use crate::fanout::Sink;
use crate::id::Sequence;
use crate::sse::encode::FrameTemplate;
use budget::BufferPolicy;
use name::TopicName;
use ring::{Ring, StoredEvent};

/// A topic: created on first publish or subscribe, removed by the sweeper
/// once it has had no subscriber and no event for `buffer_ttl`.
#[derive(Debug)]
pub struct Topic {
    name: TopicName,
    policy: Arc<BufferPolicy>,
    /// The sequence number of the newest event, stored under the lock after
    /// each append. A parked subscriber compares it with its cursor to learn,
    /// without the lock, that nothing new has come (see `Subscription`).
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
}

/// Where an appended event went.
#[derive(Debug)]
pub struct Appended {
    pub seq: u64,
    /// Subscriber streams registered on the topic at append time.
    pub n_subscribers: usize,
    /// The sinks parked at the head of the topic, when this append started
    /// the topic's fan-out: the caller runs it (`fanout::FanOut`). Empty
    /// when there were none, or a fan-out already running will cover them.
    pub parked_sinks: Vec<Arc<Sink>>,
}

/// The recent events a fan-out writes from (see `Topic::fan_out_frames`).
#[derive(Debug)]
pub struct FanOutFrames {
    /// The ring's floor: a sink whose cursor is below it may have lost
    /// events, which only its stream can tell it about.
    pub floor: u64,
    /// Sequence numbers and frames, oldest first.
    pub events: Vec<(u64, Bytes)>,
}

/// Where a batch of appended events went.
#[derive(Debug, Clone)]
pub struct AppendedBatch {
    /// One sequence number per event, in order.
    pub seqs: Vec<u64>,
    /// Subscriber streams registered on the topic at append time.
    pub n_subscribers: usize,
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
    pub fn new(name: TopicName, policy: Arc<BufferPolicy>, floor: u64, now: Instant) -> Topic {
        let ring = Ring::new(policy.max_events, policy.max_bytes, floor);
        Topic {
            name,
            policy,
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

    /// Assigns the next sequence number, appends the event and wakes every
    /// parked subscriber, without ever waiting on one.
    pub fn append(
        &self,
        sequence: &Sequence,
        template: FrameTemplate,
        now: Instant,
    ) -> Result<Appended, AppendError> {
        let frame_len = template.len();
        let mut appended = Appended {
            seq: 0,
            n_subscribers: 0,
            parked_sinks: Vec::new(),
        };
        appended.n_subscribers = self.append_all(
            sequence,
            std::iter::once(template),
            (1, frame_len),
            now,
            Delivery::FanOut(&mut appended.parked_sinks),
            |seq| appended.seq = seq,
        )?;
        Ok(appended)
    }

    /// Appends several events in one step under one lock: all or none, in
    /// order, with no other event of this topic between them, and one wake
    /// for the lot. The caller makes sure they fit an empty ring, or the
    /// first of them would be evicted by the last.
    pub fn append_batch(
        &self,
        sequence: &Sequence,
        templates: Vec<FrameTemplate>,
        now: Instant,
    ) -> Result<AppendedBatch, AppendError> {
        let size = (
            templates.len(),
            templates.iter().map(FrameTemplate::len).sum(),
        );
        let mut seqs = Vec::with_capacity(templates.len());
        let n_subscribers = self.append_all(
            sequence,
            templates.into_iter(),
            size,
            now,
            Delivery::Wake,
            |seq| seqs.push(seq),
        )?;
        Ok(AppendedBatch {
            seqs,
            n_subscribers,
        })
    }

    /// The one append: `size` is the number of frames and their bytes, so
    /// that the budget is checked once for all of them before any is pushed.
    /// `on_appended` sees each event's sequence number. Returns the
    /// subscribers registered at append time.
    fn append_all(
        &self,
        sequence: &Sequence,
        templates: impl Iterator<Item = FrameTemplate>,
        (n_events, n_bytes): (usize, usize),
        now: Instant,
        delivery: Delivery<'_>,
        mut on_appended: impl FnMut(u64),
    ) -> Result<usize, AppendError> {
        let (n_subscribers, wakers) = {
            let mut state = self.lock();
            if state.removed {
                return Err(AppendError::Removed);
            }
            self.expire(&mut state, now);
            let (_, n_freeing) = state.ring.room_for(n_events, n_bytes);
            if !self.policy.admits(n_bytes, n_freeing) {
                return Err(AppendError::OverBudget);
            }
            let mut n_freed = 0;
            for template in templates {
                let (seq, id) = sequence.next();
                n_freed += state.ring.push(StoredEvent {
                    seq,
                    published_at: now,
                    frame: template.finish(&id),
                });
                on_appended(seq);
                self.last_seq.store(seq, Ordering::Release);
            }
            self.policy.add(n_bytes);
            self.policy.release(n_freed);
            state.last_active = now;
            state.had_events = true;
            let wakers = match delivery {
                Delivery::FanOut(_) if state.fanning_out => state.take_wakers(Parked::Leave),
                Delivery::FanOut(parked_sinks) => {
                    let wakers = state.take_wakers(Parked::Collect(parked_sinks));
                    state.fanning_out = !parked_sinks.is_empty();
                    wakers
                }
                Delivery::Wake => state.take_wakers(Parked::Wake),
            };
            (state.waiters.len(), wakers)
        };
        self.wake(wakers);
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

    /// Wakes every parked subscriber, e.g. so that it notices shutdown.
    pub fn wake_all(&self) {
        let wakers = self.lock().take_wakers(Parked::Wake);
        self.wake(wakers);
    }

    /// For a running fan-out: the topic's floor and its events after
    /// `cursor`, at most `max_events` of them.
    pub fn fan_out_frames(&self, cursor: u64, max_events: usize) -> FanOutFrames {
        let state = self.lock();
        FanOutFrames {
            floor: state.ring.floor(),
            events: (state.ring.after(cursor).take(max_events))
                .map(|event| (event.seq, event.frame.clone()))
                .collect(),
        }
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
        let idle_long_enough = now.saturating_duration_since(state.last_active) >= self.policy.ttl;
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

    /// Subscriber streams registered on the topic, and its buffered events.
    pub fn occupancy(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiters.len(), state.ring.len())
    }

    fn expire(&self, state: &mut TopicState, now: Instant) {
        if let Some(cutoff) = now.checked_sub(self.policy.ttl) {
            self.policy.release(state.ring.expire(cutoff));
        }
    }
}

impl Drop for Topic {
    /// Gives the ring's bytes back to the node-wide budget, whichever way the
    /// topic goes.
    fn drop(&mut self) {
        let n_bytes = self.lock().ring.n_bytes();
        self.policy.release(n_bytes);
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

/// How an append reaches the parked subscribers.
enum Delivery<'a> {
    /// Wake them all.
    Wake,
    /// One event: start a fan-out with the parked sinks collected here, or
    /// leave them to the one running.
    FanOut(&'a mut Vec<Arc<Sink>>),
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
