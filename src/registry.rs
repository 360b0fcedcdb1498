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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

use crate::graveyard::Graveyard;
use crate::id::{ID_LEN, MAX_RESUME_ID_BYTES, RunEpoch, Sequence};
use crate::metrics::Metrics;
use crate::sse::encode::{FrameTemplate, event_template};
use crate::subscription::{Registered, Resume, Start, Subscribed, Subscription};
use crate::topic::budget::BufferPolicy;
use crate::topic::name::{TopicName, TopicStr};
use crate::topic::{AppendError, Frames, Retired, Topic, TopicSettings};

/// The registry's share of the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub buffer_events: usize,
    pub buffer_bytes: usize,
    pub buffer_ttl: Duration,
    pub max_buffered_bytes: usize,
    pub max_topics: usize,
    pub max_subscribers: usize,
    /// `fanout_busy_period`: how often a busy topic's fan-out may start a
    /// sweep (see `fanout::FanOut`).
    pub fanout_busy_period: Duration,
}

/// A limit that refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReached {
    Topics,
    Subscribers,
    /// `max_buffered_bytes`: all rings together are full.
    BufferedBytes,
    /// A batch larger than one topic's ring (`buffer_events` or
    /// `buffer_bytes`): its first events would be evicted by its last before
    /// any subscriber could read them.
    BatchExceedsBuffer {
        max_events: usize,
        max_bytes: usize,
    },
}

/// One topic as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOccupancy {
    pub name: String,
    pub n_subscribers: usize,
    pub n_buffered: usize,
}

/// One event of a batch, as the publisher gave it.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub event_type: Option<&'a str>,
    pub data: &'a str,
}

/// What `publish_batch` tells the publisher.
#[derive(Debug, Clone)]
pub struct PublishedBatch {
    /// One id per event, in the order given.
    pub ids: Vec<[u8; ID_LEN]>,
    pub n_subscribers: usize,
}

/// What `publish` tells the publisher.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: [u8; ID_LEN],
    pub n_subscribers: usize,
}

pub struct Registry {
    /// Keyed with a randomly seeded fast hash: topic names come from
    /// clients, so the hash must resist collisions, and SipHash cost more
    /// than the rest of a lookup.
    topics: DashMap<TopicName, Arc<Topic>, ahash::RandomState>,
    sequence: Sequence,
    limits: Limits,
    /// What every topic shares: ring bounds, byte budget, fan-out settings.
    settings: Arc<TopicSettings>,
    n_topics: AtomicUsize,
    n_subscribers: AtomicUsize,
    /// Floors for topics that come back after being removed.
    graveyard: Graveyard,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(limits: Limits, epoch: RunEpoch, metrics: Arc<Metrics>) -> Registry {
        let fan_out_metrics = Arc::clone(&metrics);
        let settings = TopicSettings {
            buffer: BufferPolicy::new(
                limits.buffer_events,
                limits.buffer_bytes,
                limits.buffer_ttl,
                limits.max_buffered_bytes,
            ),
            fan_out_busy_period: limits.fanout_busy_period,
            on_fanned_out: Box::new(move |n_events| fan_out_metrics.fanned_out(n_events)),
        };
        Registry {
            topics: DashMap::with_hasher(ahash::RandomState::new()),
            sequence: Sequence::new(epoch),
            settings: Arc::new(settings),
            limits,
            n_topics: AtomicUsize::new(0),
            n_subscribers: AtomicUsize::new(0),
            graveyard: Graveyard::default(),
            metrics,
        }
    }

    pub fn sequence(&self) -> &Sequence {
        &self.sequence
    }

    /// Publishes one event to `topic`: encodes it once, appends it under the
    /// topic's lock with the next id, and hands it to the topic's subscribers.
    pub fn publish(
        &self,
        topic: TopicStr<'_>,
        event_type: Option<&str>,
        data: &str,
    ) -> Result<Published, LimitReached> {
        let started = Instant::now();
        loop {
            let topic = self.topic(topic, started)?;
            // Encoded before the topic lock is taken; only the id is patched
            // in under it.
            let template = event_template(ID_LEN, event_type, data);
            let mut seq = 0;
            match topic.append(&self.sequence, Frames::one(template), started, |s| seq = s) {
                Ok(n_subscribers) => {
                    self.metrics.event_published(started.elapsed());
                    return Ok(Published {
                        id: self.sequence.epoch().format(seq),
                        n_subscribers,
                    });
                }
                Err(AppendError::OverBudget) => return Err(LimitReached::BufferedBytes),
                // Removed between lookup and lock: look the name up again.
                Err(AppendError::Removed) => {}
            }
        }
    }

    /// Publishes `events` to `topic` as one step: all or none, in order,
    /// nothing of this topic in between, one hand-over for the lot.
    pub fn publish_batch(
        &self,
        topic: TopicStr<'_>,
        events: &[NewEvent<'_>],
    ) -> Result<PublishedBatch, LimitReached> {
        let started = Instant::now();
        let templates = || -> Vec<FrameTemplate> {
            events
                .iter()
                .map(|event| event_template(ID_LEN, event.event_type, event.data))
                .collect()
        };
        let mut batch = templates();
        let n_bytes: usize = batch.iter().map(FrameTemplate::len).sum();
        let buffer = &self.settings.buffer;
        // A single event may exceed the byte bound: the ring always keeps its
        // newest event.
        if batch.len() > buffer.max_events || (batch.len() > 1 && n_bytes > buffer.max_bytes) {
            return Err(LimitReached::BatchExceedsBuffer {
                max_events: buffer.max_events,
                max_bytes: buffer.max_bytes,
            });
        }
        loop {
            let topic = self.topic(topic, started)?;
            let mut seqs = Vec::with_capacity(batch.len());
            match topic.append(&self.sequence, Frames::many(batch), started, |seq| {
                seqs.push(seq)
            }) {
                Ok(n_subscribers) => {
                    self.metrics.batch_published(seqs.len(), started.elapsed());
                    let epoch = self.sequence.epoch();
                    let ids = seqs.iter().map(|&seq| epoch.format(seq)).collect();
                    return Ok(PublishedBatch { ids, n_subscribers });
                }
                Err(AppendError::OverBudget) => return Err(LimitReached::BufferedBytes),
                // Removed between lookup and lock: encode again and look the
                // name up again (the templates went with the failed append).
                Err(AppendError::Removed) => batch = templates(),
            }
        }
    }

    /// Opens a subscription to `names` (distinct, validated), resuming after
    /// `resume_id` when one was given.
    pub fn subscribe(
        self: &Arc<Self>,
        names: &[TopicName],
        resume_id: Option<&[u8]>,
    ) -> Result<Subscription, LimitReached> {
        let reservation = self.reserve_subscriber()?;
        // Loaded before registering: every event the subscription is counted
        // for in a publish reply (appended after registration) is past `head`
        // and so is delivered.
        let head = self.sequence.last();
        let now = Instant::now();
        let mut max_floor = 0;
        let mut registered = Registered::new(Arc::clone(self), names.len());
        for name in names {
            let (topic, registration) = loop {
                let topic = self.topic(name.borrowed(), now)?;
                if let Ok(registration) = topic.register(now) {
                    break (topic, registration);
                }
            };
            max_floor = max_floor.max(registration.floor);
            registered.push(Subscribed {
                topic,
                key: registration.key,
            });
        }
        let resume_id = resume_id.filter(|raw| !raw.is_empty());
        let resume = match resume_id {
            None => Resume::Live,
            Some(raw) => self
                .resumable_seq(raw, head)
                .map_or(Resume::Unknown, Resume::After),
        };
        let start = Start::decide(resume, head, max_floor);
        let resume_id =
            resume_id.map_or_else(String::new, |raw| String::from_utf8_lossy(raw).into_owned());
        Ok(Subscription::open(
            reservation,
            registered,
            start,
            resume_id,
        ))
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
    fn topic(&self, name: TopicStr<'_>, now: Instant) -> Result<Arc<Topic>, LimitReached> {
        if let Some(topic) = self
            .topics
            .get(name.as_str())
            .map(|entry| Arc::clone(&entry))
        {
            return Ok(topic);
        }
        let max = self.limits.max_topics;
        self.n_topics
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| LimitReached::Topics)?;
        let name = name.to_owned();
        match self.topics.entry(name.clone()) {
            Entry::Occupied(entry) => {
                self.n_topics.fetch_sub(1, Ordering::AcqRel);
                Ok(Arc::clone(entry.get()))
            }
            Entry::Vacant(entry) => {
                // Under the shard lock, which is also held whenever this name
                // is removed and buried.
                let floor = self.graveyard.exhume(&name);
                let topic = Arc::new(Topic::new(name, Arc::clone(&self.settings), floor, now));
                entry.insert(Arc::clone(&topic));
                self.metrics.topic_created();
                Ok(topic)
            }
        }
    }

    fn reserve_subscriber(&self) -> Result<Reservation<'_>, LimitReached> {
        let max = self.limits.max_subscribers;
        self.n_subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Reservation(self))
            .map_err(|_| LimitReached::Subscribers)
    }

    /// Gives back the slot of an open subscriber (`Reservation::open`);
    /// called by `Subscription::drop`.
    pub(crate) fn close_subscriber(&self) {
        self.n_subscribers.fetch_sub(1, Ordering::AcqRel);
        self.metrics.subscriber_closed();
    }

    /// Expires old events everywhere and removes topics that have had neither
    /// a subscriber nor an event for `buffer_ttl`. Returns how many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut n_removed = 0;
        self.topics.retain(|name, topic| match topic.sweep(now) {
            None => true,
            Some(retired) => {
                self.forget(name, retired, now);
                n_removed += 1;
                false
            }
        });
        self.graveyard.sweep(self.limits.max_topics);
        n_removed
    }

    /// Removes `topic` if it never had an event and its last subscriber has
    /// just left (see `Topic::retire_unused`).
    pub(crate) fn remove_if_unused(&self, topic: &Arc<Topic>) {
        let now = Instant::now();
        self.topics.remove_if(topic.name(), |name, current| {
            // The same topic, not a successor of the same name.
            let retired = Arc::ptr_eq(current, topic)
                .then(|| current.retire_unused())
                .flatten();
            retired
                .inspect(|&retired| self.forget(name, retired, now))
                .is_some()
        });
    }

    /// Bookkeeping for a topic leaving the map; runs under its shard lock.
    fn forget(&self, name: &TopicName, retired: Retired, now: Instant) {
        self.graveyard.bury(name, retired.high_water, now);
        self.n_topics.fetch_sub(1, Ordering::AcqRel);
        self.metrics.topic_removed();
    }

    /// Every topic, copied out of the map so that no shard lock is held
    /// while each topic's own lock is taken.
    fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.iter().map(|t| Arc::clone(&t)).collect()
    }

    /// Wakes every parked subscriber so that it notices shutdown.
    pub fn wake_all(&self) {
        self.all_topics().iter().for_each(|topic| topic.wake_all());
    }

    /// The `n` topics with the most subscribers (then the most buffered
    /// events), for the status page. Walks every topic, so the status page
    /// calls it once a second whatever the number of viewers; only the `n`
    /// chosen have their names copied.
    pub fn busiest_topics(&self, n: usize) -> Vec<TopicOccupancy> {
        let topics = self.all_topics();
        let mut ranked: Vec<(usize, usize, &Arc<Topic>)> = topics
            .iter()
            .map(|topic| {
                let (n_subscribers, n_buffered) = topic.occupancy();
                (n_subscribers, n_buffered, topic)
            })
            .collect();
        let busier = |a: &(usize, usize, &Arc<Topic>), b: &(usize, usize, &Arc<Topic>)| {
            (b.0, b.1)
                .cmp(&(a.0, a.1))
                .then_with(|| a.2.name().as_str().cmp(b.2.name().as_str()))
        };
        if ranked.len() > n && n > 0 {
            ranked.select_nth_unstable_by(n - 1, busier);
        }
        ranked.truncate(n);
        ranked.sort_unstable_by(busier);
        ranked
            .into_iter()
            .map(|(n_subscribers, n_buffered, topic)| TopicOccupancy {
                name: topic.name().as_str().to_owned(),
                n_subscribers,
                n_buffered,
            })
            .collect()
    }

    /// Total events and bytes buffered across topics, for `/metrics`.
    pub fn buffered(&self) -> (usize, usize) {
        let topics = self.all_topics();
        let n_events = topics.iter().map(|topic| topic.buffered().0).sum();
        (n_events, self.settings.buffer.total_bytes())
    }
}

/// One of the `max_subscribers` slots, taken by a subscribe before it
/// registers anywhere: dropped, it gives the slot back.
pub(crate) struct Reservation<'a>(&'a Registry);

impl Reservation<'_> {
    /// The subscription is complete: the slot now belongs to an open
    /// subscriber, counted as such until `close_subscriber` gives it back.
    pub(crate) fn open(self) {
        let registry = self.0;
        std::mem::forget(self);
        registry.metrics.subscriber_opened();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.n_subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}
