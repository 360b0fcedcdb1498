//! `Registry`: every topic of this node, the event sequence and the limits.
//!
//! Owns the `DashMap` of topics, the process-wide `Sequence` (ids totally
//! ordered across topics) and the counts behind `max_topics` and
//! `max_subscribers`. `Registry::publish` is the single publish path: a later
//! multi-node mode slots in there without touching the subscribe side.
//!
//! Lock order: a map shard, then a topic. Nothing holds a topic lock while
//! touching the map, and no map guard lives past the statement that cloned the
//! `Arc<Topic>` out of it, so nothing awaits while holding either.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

use crate::id::{ID_LEN, MAX_RESUME_ID_BYTES, RunEpoch, Sequence};
use crate::metrics::Metrics;
use crate::sse::encode::event_template;
use crate::subscription::{Subscribed, Subscription};
use crate::topic::name::TopicName;
use crate::topic::{Sweep, Topic};

/// The registry's share of the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub buffer_events: usize,
    pub buffer_ttl: Duration,
    pub max_topics: usize,
    pub max_subscribers: usize,
}

/// A limit that refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReached {
    Topics,
    Subscribers,
}

/// What `publish` tells the publisher.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: [u8; ID_LEN],
    pub n_subscribers: usize,
}

/// A new subscription and, when its resume id could not be honoured exactly,
/// that id (lossily decoded), to be echoed in a `gap` event.
pub struct NewSubscription {
    pub subscription: Subscription,
    pub gap_for: Option<String>,
}

pub struct Registry {
    topics: DashMap<TopicName, Arc<Topic>>,
    sequence: Sequence,
    limits: Limits,
    n_topics: AtomicUsize,
    n_subscribers: AtomicUsize,
    /// The highest sequence number ever covered by a topic the sweeper
    /// removed. A topic created later may be a removed one reborn, so its ring
    /// starts with this floor and cannot vouch for anything at or below it.
    removed_high_water: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(limits: Limits, epoch: RunEpoch, metrics: Arc<Metrics>) -> Registry {
        Registry {
            topics: DashMap::new(),
            sequence: Sequence::new(epoch),
            limits,
            n_topics: AtomicUsize::new(0),
            n_subscribers: AtomicUsize::new(0),
            removed_high_water: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn sequence(&self) -> &Sequence {
        &self.sequence
    }

    /// Publishes one event to `topic`: encodes it once, appends it under the
    /// topic's lock with the next id, and wakes the topic's subscribers.
    pub fn publish(
        &self,
        topic: &TopicName,
        event_type: Option<&str>,
        data: &str,
    ) -> Result<Published, LimitReached> {
        let started = Instant::now();
        loop {
            let topic = self.topic(topic, started)?;
            // Encoded before the topic lock is taken; only the id is patched
            // in under it.
            let template = event_template(ID_LEN, event_type, data);
            let now = Instant::now();
            // `Removed`: swept between lookup and lock, so look the name up again.
            if let Ok(appended) =
                topic.append(&self.sequence, template, now, self.limits.buffer_ttl)
            {
                self.metrics.event_published(started.elapsed());
                return Ok(Published {
                    id: self.sequence.epoch().format(appended.seq),
                    n_subscribers: appended.n_subscribers,
                });
            }
        }
    }

    /// Opens a subscription to `names` (distinct, validated), resuming after
    /// `resume_id` when one was given.
    pub fn subscribe(
        self: &Arc<Self>,
        names: &[TopicName],
        resume_id: Option<&[u8]>,
    ) -> Result<NewSubscription, LimitReached> {
        self.reserve_subscriber()?;
        // From here on, `Subscription::drop` releases the reservation and
        // unregisters, whichever way this function returns.
        let mut subscription = Subscription::new(Arc::clone(self));
        let now = Instant::now();
        let mut max_floor = 0;
        for name in names {
            let (topic, registration) = loop {
                let topic = self.topic(name, now)?;
                if let Ok(registration) = topic.register(now, self.limits.buffer_ttl) {
                    break (topic, registration);
                }
            };
            max_floor = max_floor.max(registration.floor);
            subscription.add(Subscribed {
                topic,
                key: registration.key,
            });
        }
        let head = self.sequence.last();
        let resume = resume_id.filter(|raw| !raw.is_empty());
        let gap_for = match resume.map(|raw| (raw, self.resumable_seq(raw, head))) {
            None => {
                subscription.start_live(head);
                None
            }
            Some((_, Some(seq))) if max_floor <= seq => {
                subscription.start_after(seq, seq, head);
                None
            }
            Some((raw, Some(seq))) => {
                subscription.start_after(seq, max_floor, head);
                Some(String::from_utf8_lossy(raw).into_owned())
            }
            Some((raw, None)) => {
                subscription.start_after(0, max_floor, head);
                Some(String::from_utf8_lossy(raw).into_owned())
            }
        };
        self.metrics.subscriber_opened();
        Ok(NewSubscription {
            subscription,
            gap_for,
        })
    }

    /// The sequence number to resume after, if `raw` is an id this run made
    /// and has already handed out.
    fn resumable_seq(&self, raw: &[u8], head: u64) -> Option<u64> {
        if raw.len() > MAX_RESUME_ID_BYTES {
            return None;
        }
        self.sequence.epoch().parse(raw).filter(|&seq| seq <= head)
    }

    /// Looks a topic up, creating it within `max_topics`.
    fn topic(&self, name: &TopicName, now: Instant) -> Result<Arc<Topic>, LimitReached> {
        if let Some(topic) = self.topics.get(name).map(|entry| Arc::clone(&entry)) {
            return Ok(topic);
        }
        let max = self.limits.max_topics;
        self.n_topics
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| LimitReached::Topics)?;
        match self.topics.entry(name.clone()) {
            Entry::Occupied(entry) => {
                self.n_topics.fetch_sub(1, Ordering::AcqRel);
                Ok(Arc::clone(entry.get()))
            }
            Entry::Vacant(entry) => {
                // Read under the shard lock, which the sweeper also holds when
                // it removes this name and raises the mark.
                let floor = self.removed_high_water.load(Ordering::Acquire);
                let topic = Arc::new(Topic::new(
                    name.clone(),
                    self.limits.buffer_events,
                    floor,
                    now,
                ));
                entry.insert(Arc::clone(&topic));
                self.metrics.topic_created();
                Ok(topic)
            }
        }
    }

    fn reserve_subscriber(&self) -> Result<(), LimitReached> {
        let max = self.limits.max_subscribers;
        self.n_subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| LimitReached::Subscribers)
    }

    /// Gives back what `reserve_subscriber` took; called by `Subscription::drop`.
    pub(crate) fn release_subscriber(&self, opened: bool) {
        self.n_subscribers.fetch_sub(1, Ordering::AcqRel);
        if opened {
            self.metrics.subscriber_closed();
        }
    }

    /// Expires old events everywhere and removes topics that have had neither
    /// a subscriber nor an event for `buffer_ttl`. Returns how many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut n_removed = 0;
        self.topics
            .retain(|_, topic| match topic.sweep(now, self.limits.buffer_ttl) {
                Sweep::Keep => true,
                Sweep::Remove { high_water } => {
                    self.removed_high_water
                        .fetch_max(high_water, Ordering::AcqRel);
                    self.n_topics.fetch_sub(1, Ordering::AcqRel);
                    self.metrics.topic_removed();
                    n_removed += 1;
                    false
                }
            });
        n_removed
    }

    /// Wakes every parked subscriber so that it notices shutdown.
    pub fn wake_all(&self) {
        let topics: Vec<Arc<Topic>> = self.topics.iter().map(|t| Arc::clone(&t)).collect();
        topics.iter().for_each(|topic| topic.wake_all());
    }

    /// Total events and bytes buffered across topics, for `/metrics`.
    pub fn buffered(&self) -> (usize, usize) {
        let topics: Vec<Arc<Topic>> = self.topics.iter().map(|t| Arc::clone(&t)).collect();
        topics
            .iter()
            .map(|topic| topic.buffered())
            .fold((0, 0), |acc, (n, b)| (acc.0 + n, acc.1 + b))
    }
}
