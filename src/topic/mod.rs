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

pub mod name;
pub mod ring;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

use crate::id::Sequence;
use crate::sse::encode::FrameTemplate;
use name::TopicName;
use ring::{Ring, StoredEvent};

/// A topic: created on first publish or subscribe, removed by the sweeper
/// once it has had no subscriber and no event for `buffer_ttl`.
#[derive(Debug)]
pub struct Topic {
    name: TopicName,
    state: Mutex<TopicState>,
}

#[derive(Debug)]
struct TopicState {
    ring: Ring,
    /// One slot per registered subscriber; `Some` while that subscriber is
    /// parked waiting for the next append.
    waiters: Slab<Option<Waker>>,
    /// The last publish, subscribe or unsubscribe: the start of the idle
    /// period after which the sweeper may remove the topic.
    last_active: Instant,
    /// Set by the sweeper under this lock. Whoever still holds an `Arc` to a
    /// removed topic must look the name up again, or an append would be lost.
    removed: bool,
}

/// The topic was removed by the sweeper between lookup and lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed;

/// Where an appended event went.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub seq: u64,
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

/// The sweeper's verdict on one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Keep,
    /// The topic is now marked removed; `high_water` is the highest sequence
    /// number it ever covered, which a successor of the same name must not
    /// vouch for.
    Remove {
        high_water: u64,
    },
}

impl Topic {
    pub fn new(name: TopicName, capacity: usize, floor: u64, now: Instant) -> Topic {
        Topic {
            name,
            state: Mutex::new(TopicState {
                ring: Ring::new(capacity, floor),
                waiters: Slab::new(),
                last_active: now,
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
        ttl: Duration,
    ) -> Result<Appended, Removed> {
        let (appended, wakers) = {
            let mut state = self.lock();
            if state.removed {
                return Err(Removed);
            }
            state.expire(now, ttl);
            let (seq, id) = sequence.next();
            state.ring.push(StoredEvent {
                seq,
                published_at: now,
                frame: template.finish(&id),
            });
            state.last_active = now;
            let n_subscribers = state.waiters.len();
            (Appended { seq, n_subscribers }, state.take_wakers())
        };
        wakers.into_iter().for_each(Waker::wake);
        Ok(appended)
    }

    /// Registers a subscriber and applies expiry, so that `floor` tells the
    /// truth about what can still be replayed.
    pub fn register(&self, now: Instant, ttl: Duration) -> Result<Registration, Removed> {
        let mut state = self.lock();
        if state.removed {
            return Err(Removed);
        }
        state.expire(now, ttl);
        state.last_active = now;
        let key = state.waiters.insert(None);
        Ok(Registration {
            key,
            floor: state.ring.floor(),
        })
    }

    pub fn unregister(&self, key: usize, now: Instant) {
        let mut state = self.lock();
        state.waiters.try_remove(key);
        state.last_active = now;
    }

    /// Locks the topic for a subscriber's read.
    pub fn view(&self) -> TopicView<'_> {
        TopicView(self.lock())
    }

    /// Wakes every parked subscriber, e.g. so that it notices shutdown.
    pub fn wake_all(&self) {
        let wakers = self.lock().take_wakers();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Expires old events and decides whether the topic has been idle long
    /// enough to be removed. Called by the registry under its map's shard lock,
    /// so no one can look the topic up while it is being marked removed.
    pub fn sweep(&self, now: Instant, ttl: Duration) -> Sweep {
        let mut state = self.lock();
        state.expire(now, ttl);
        let idle_long_enough = now.saturating_duration_since(state.last_active) >= ttl;
        if !state.waiters.is_empty() || !idle_long_enough {
            return Sweep::Keep;
        }
        state.removed = true;
        Sweep::Remove {
            high_water: state.ring.high_water(),
        }
    }

    /// Events and frame bytes currently buffered.
    pub fn buffered(&self) -> (usize, usize) {
        let state = self.lock();
        (state.ring.len(), state.ring.n_bytes())
    }
}

impl TopicState {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        if let Some(cutoff) = now.checked_sub(ttl) {
            self.ring.expire(cutoff);
        }
    }

    fn take_wakers(&mut self) -> Vec<Waker> {
        self.waiters
            .iter_mut()
            .filter_map(|(_, slot)| slot.take())
            .collect()
    }
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
        if let Some(slot) = self.0.waiters.get_mut(key) {
            match slot {
                Some(parked) if parked.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }
}
