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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

use crate::graveyard::Graveyard;
use crate::id::{ID_LEN, MAX_RESUME_ID_BYTES, RunEpoch, Sequence};
use crate::metrics::Metrics;
use crate::sse::encode::{FrameTemplate, event_template};
use crate::subscription::{Registered, Replay, Resume, Start, Subscribed, Subscription};
use crate::topic::budget::BufferPolicy;
use crate::topic::name::{TopicName, TopicStr};
use crate::topic::{AppendError, Frames, Numbered, Retired, Topic, TopicSettings, TopicSummary};

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
    /// The node is shutting down (`close_to_publishes`).
    ShuttingDown,
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
    /// Cluster mode: the floor of the last `reset`. A stream whose cursor
    /// is below it ends because the node lost its place in the shared log,
    /// not because it was slow.
    last_reset: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A subscription registered on its topics but not started yet: what a
/// cluster node looks at before it decides where the stream starts (see
/// `Registry::register`).
pub(crate) struct Pending {
    reservation: Reservation,
    registered: Registered,
    /// The newest sequence number before registering: every event the
    /// subscription is counted for in a publish reply is past it.
    pub head: u64,
    /// Each topic's ring floor at registration, in the order given.
    pub floors: Vec<u64>,
}

impl Pending {
    /// Starts the subscription at `start`, with `replay` (events read from
    /// elsewhere than the rings) merged in.
    /// `position_id` is the wire id of `start.replay_through` (this run's,
    /// or in cluster mode the cluster's), for the stream's position block.
    pub(crate) fn open(
        self,
        start: Start,
        resume_id: String,
        position_id: String,
        replay: Replay,
    ) -> Subscription {
        Subscription::open(
            self.reservation,
            self.registered,
            start,
            resume_id,
            position_id,
            replay,
        )
    }
}

/// Who would create a topic that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creator {
    Publish,
    /// A subscribe creates a topic to wait on; anyone may send one, so
    /// subscribes alone must not fill `max_topics` and refuse every publish
    /// to a new topic: they may create topics only up to
    /// `subscriber_topic_limit`, the rest is kept for publishes.
    Subscribe,
}

/// Topics subscribes may create: three quarters of `max_topics` (at least
/// one).
fn subscriber_topic_limit(max_topics: usize) -> usize {
    (max_topics - max_topics / 4).max(1)
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
            publishes_closed: AtomicBool::new(false),
        };
        Registry {
            topics: DashMap::with_hasher(ahash::RandomState::new()),
            sequence: Sequence::new(epoch),
            settings: Arc::new(settings),
            limits,
            n_topics: AtomicUsize::new(0),
            n_subscribers: AtomicUsize::new(0),
            graveyard: Graveyard::default(),
            last_reset: AtomicU64::new(0),
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
            let topic = self.topic(topic, started, Creator::Publish)?;
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
                Err(AppendError::Closed) => return Err(LimitReached::ShuttingDown),
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
        self.check_batch(batch.len(), n_bytes)?;
        loop {
            let topic = self.topic(topic, started, Creator::Publish)?;
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
                Err(AppendError::Closed) => return Err(LimitReached::ShuttingDown),
                // Removed between lookup and lock: encode again and look the
                // name up again (the templates went with the failed append).
                Err(AppendError::Removed) => batch = templates(),
            }
        }
    }

    /// Refuses a batch that would not fit one topic's ring (its first
    /// events would be evicted by its last before anyone could read them).
    /// A single event may exceed the byte bound: the ring always keeps its
    /// newest event.
    fn check_batch(&self, n_events: usize, n_bytes: usize) -> Result<(), LimitReached> {
        let buffer = &self.settings.buffer;
        if n_events > buffer.max_events || (n_events > 1 && n_bytes > buffer.max_bytes) {
            return Err(LimitReached::BatchExceedsBuffer {
                max_events: buffer.max_events,
                max_bytes: buffer.max_bytes,
            });
        }
        Ok(())
    }

    /// Cluster mode: `check_batch` for events published through Redis,
    /// sized as this node's rings will hold them.
    pub fn check_cluster_batch(&self, events: &[NewEvent<'_>]) -> Result<(), LimitReached> {
        let n_bytes = events
            .iter()
            .map(|event| event_template(ID_LEN, event.event_type, event.data).len())
            .sum();
        self.check_batch(events.len(), n_bytes)
    }

    /// Opens a subscription to `names` (distinct, validated), resuming after
    /// `resume_id` when one was given (an id of this run's own shape).
    pub fn subscribe(
        self: &Arc<Self>,
        names: &[TopicName],
        resume_id: Option<&[u8]>,
    ) -> Result<Subscription, LimitReached> {
        let pending = self.register(names)?;
        let resume_id = resume_id.filter(|raw| !raw.is_empty());
        let resume = match resume_id {
            None => Resume::Live,
            Some(raw) => self
                .resumable_seq(raw, pending.head)
                .map_or(Resume::Unknown, Resume::After),
        };
        let max_floor = pending.floors.iter().copied().max().unwrap_or(0);
        let start = Start::decide(resume, pending.head, max_floor);
        let resume_id =
            resume_id.map_or_else(String::new, |raw| String::from_utf8_lossy(raw).into_owned());
        let position = self.sequence.epoch().format(start.replay_through);
        let position_id = String::from_utf8_lossy(&position).into_owned();
        Ok(pending.open(start, resume_id, position_id, Replay::default()))
    }

    /// Takes a subscriber slot and registers on `names` (distinct,
    /// validated); where the stream starts is decided next (`Pending`).
    pub(crate) fn register(self: &Arc<Self>, names: &[TopicName]) -> Result<Pending, LimitReached> {
        let reservation = self.reserve_subscriber()?;
        // Loaded before registering: every event the subscription is counted
        // for in a publish reply (appended after registration) is past `head`
        // and so is delivered.
        let head = self.sequence.last();
        let now = Instant::now();
        let mut floors = Vec::with_capacity(names.len());
        let mut registered = Registered::new(Arc::clone(self), names.len());
        for name in names {
            let (topic, registration) = loop {
                let topic = self.topic(name.borrowed(), now, Creator::Subscribe)?;
                if let Ok(registration) = topic.register(now) {
                    break (topic, registration);
                }
            };
            floors.push(registration.floor);
            registered.push(Subscribed::new(topic, registration.key));
        }
        Ok(Pending {
            reservation,
            registered,
            head,
            floors,
        })
    }

    /// Cluster mode: appends events the shared log numbered (consecutive
    /// events of one topic, in log order) and hands them to the topic's
    /// subscribers. Never refuses: the events are in Redis already. A topic
    /// this node cannot hold (`max_topics`) or events it cannot buffer
    /// (`max_buffered_bytes`) raise the topic's floor past them instead, so
    /// its streams end and resume from Redis rather than miss them.
    pub(crate) fn append_numbered(&self, name: TopicStr<'_>, events: Vec<Numbered>) {
        for run in self.fitting_runs(events) {
            self.append_run(name, run);
        }
    }

    /// Cuts `events` into runs one ring holds (`Topic::append`'s
    /// precondition), so that no run evicts its own first events.
    fn fitting_runs(&self, events: Vec<Numbered>) -> Vec<Vec<Numbered>> {
        let buffer = &self.settings.buffer;
        let mut runs: Vec<Vec<Numbered>> = Vec::new();
        let mut n_bytes = 0;
        for event in events {
            let fits = runs.last().is_some_and(|run| {
                run.len() < buffer.max_events && n_bytes + event.frame.len() <= buffer.max_bytes
            });
            if !fits {
                runs.push(Vec::new());
                n_bytes = 0;
            }
            n_bytes += event.frame.len();
            if let Some(run) = runs.last_mut() {
                run.push(event);
            }
        }
        runs
    }

    fn append_run(&self, name: TopicStr<'_>, events: Vec<Numbered>) {
        let Some(last_seq) = events.last().map(|event| event.seq) else {
            return;
        };
        let now = Instant::now();
        loop {
            let Some(topic) = self.topic_or_bury(name, last_seq, now) else {
                self.sequence.observe(last_seq);
                return;
            };
            match topic.append(&self.sequence, Frames::many(events.clone()), now, |_| {}) {
                Ok(_) => return,
                Err(AppendError::Removed) => continue,
                // Numbered events are never refused as publishes.
                Err(AppendError::Closed) => return,
                Err(AppendError::OverBudget) => {
                    tracing::warn!(
                        topic = name.as_str(),
                        "max_buffered_bytes reached: this topic's new events are replayed from Redis"
                    );
                    // The floor first: a reader that sees the sequence past
                    // these events must find them missing, not skip them.
                    topic.clear(last_seq);
                    self.sequence.observe(last_seq);
                    return;
                }
            }
        }
    }

    /// Cluster mode: this node lost its place in the shared log (a new
    /// epoch, or a log trimmed past its cursor). Every ring is emptied and
    /// vouches for nothing up to `floor`, topics created later start there
    /// too, and every stream behind it ends at its next read; clients
    /// resume exactly from Redis, or get a `gap` where Redis lost events.
    pub(crate) fn reset(&self, floor: u64) {
        self.last_reset.fetch_max(floor, Ordering::SeqCst);
        // Before the topics are walked: one created meanwhile exhumes this.
        self.graveyard.raise_floor(floor);
        for topic in self.all_topics() {
            topic.clear(floor);
        }
        // Last: a reader that loads the sequence at the floor then finds
        // every topic cleared, so it cannot move its cursor over the reset
        // (see `subscription`'s multi-topic order).
        self.sequence.observe(floor);
    }

    /// The floor of the last `reset` (0 if none).
    pub(crate) fn last_reset(&self) -> u64 {
        self.last_reset.load(Ordering::SeqCst)
    }

    /// The sequence number to resume after, if `raw` is an id this run made
    /// and has already handed out.
    fn resumable_seq(&self, raw: &[u8], head: u64) -> Option<u64> {
        if raw.len() > MAX_RESUME_ID_BYTES {
            return None;
        }
        self.sequence.epoch().parse(raw).filter(|&seq| seq <= head)
    }

    /// Looks a topic up, creating it within `max_topics` (within three
    /// quarters of it for a subscribe; see `Creator`).
    fn topic(
        &self,
        name: TopicStr<'_>,
        now: Instant,
        creator: Creator,
    ) -> Result<Arc<Topic>, LimitReached> {
        if let Some(topic) = self.lookup(name) {
            return Ok(topic);
        }
        let max = match creator {
            Creator::Publish => self.limits.max_topics,
            Creator::Subscribe => subscriber_topic_limit(self.limits.max_topics),
        };
        self.reserve_topic_within(max)?;
        match self.topics.entry(name.to_owned()) {
            Entry::Occupied(entry) => {
                self.n_topics.fetch_sub(1, Ordering::AcqRel);
                Ok(Arc::clone(entry.get()))
            }
            Entry::Vacant(entry) => Ok(self.create(entry, now)),
        }
    }

    /// Like `topic`, for the cluster tail: a topic over `max_topics` is not
    /// created; `seq` is buried under its name instead (under the map's
    /// shard lock, as any burial), so a later creation starts past it.
    fn topic_or_bury(&self, name: TopicStr<'_>, seq: u64, now: Instant) -> Option<Arc<Topic>> {
        if let Some(topic) = self.lookup(name) {
            return Some(topic);
        }
        match self.topics.entry(name.to_owned()) {
            Entry::Occupied(entry) => Some(Arc::clone(entry.get())),
            Entry::Vacant(entry) => match self.reserve_topic() {
                Ok(()) => Some(self.create(entry, now)),
                Err(_) => {
                    self.graveyard.bury(entry.key(), seq, now);
                    None
                }
            },
        }
    }

    fn lookup(&self, name: TopicStr<'_>) -> Option<Arc<Topic>> {
        self.topics
            .get(name.as_str())
            .map(|entry| Arc::clone(&entry))
    }

    fn reserve_topic(&self) -> Result<(), LimitReached> {
        self.reserve_topic_within(self.limits.max_topics)
    }

    fn reserve_topic_within(&self, max: usize) -> Result<(), LimitReached> {
        self.n_topics
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| LimitReached::Topics)
    }

    /// Creates the topic of a vacant entry, whose `max_topics` slot is taken.
    fn create(
        &self,
        entry: dashmap::mapref::entry::VacantEntry<'_, TopicName, Arc<Topic>>,
        now: Instant,
    ) -> Arc<Topic> {
        // Under the shard lock, which is also held whenever this name is
        // removed and buried.
        let floor = self.graveyard.exhume(entry.key());
        let name = entry.key().clone();
        let topic = Arc::new(Topic::new(name, Arc::clone(&self.settings), floor, now));
        entry.insert(Arc::clone(&topic));
        self.metrics.topic_created();
        topic
    }

    fn reserve_subscriber(self: &Arc<Self>) -> Result<Reservation, LimitReached> {
        let max = self.limits.max_subscribers;
        self.n_subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Reservation(Some(Arc::clone(self))))
            .map_err(|_| LimitReached::Subscribers)
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

    /// Refuses local publishes from now on: the node is shutting down, and
    /// its streams, about to end, could not carry them (see
    /// `TopicSettings::publishes_closed`). Called before the streams learn
    /// of the shutdown.
    pub fn close_to_publishes(&self) {
        self.settings.publishes_closed.store(true, Ordering::SeqCst);
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
        keep_first(&mut ranked, n, busier);
        ranked
            .into_iter()
            .map(|(n_subscribers, n_buffered, topic)| TopicOccupancy {
                name: topic.name().as_str().to_owned(),
                n_subscribers,
                n_buffered,
            })
            .collect()
    }

    /// The topic named `name`, if it is held (`GET /topics/{topic}`).
    pub fn topic_summary(&self, name: &str) -> Option<(TopicName, TopicSummary)> {
        let topic = self.topics.get(name).map(|topic| Arc::clone(&topic))?;
        Some((topic.name().clone(), topic.summary()))
    }

    /// Up to `limit` topics whose names start with `prefix` and sort after
    /// `after`, in name order (`GET /topics`). Walks every topic, but copies
    /// and locks only the ones it returns.
    pub fn topic_summaries(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(TopicName, TopicSummary)> {
        let mut chosen: Vec<Arc<Topic>> = self
            .topics
            .iter()
            .filter(|entry| {
                let name = entry.key().as_str();
                name.starts_with(prefix) && after.is_none_or(|after| name > after)
            })
            .map(|entry| Arc::clone(entry.value()))
            .collect();
        keep_first(&mut chosen, limit, |a, b| {
            a.name().as_str().cmp(b.name().as_str())
        });
        chosen
            .into_iter()
            .map(|topic| (topic.name().clone(), topic.summary()))
            .collect()
    }

    /// Cluster mode: every topic with open streams on this node, and how
    /// many (for the reports that publish replies sum).
    pub fn subscriber_counts(&self) -> Vec<(TopicName, usize)> {
        self.all_topics()
            .into_iter()
            .filter_map(|topic| {
                let (n_subscribers, _) = topic.occupancy();
                (n_subscribers > 0).then(|| (topic.name().clone(), n_subscribers))
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

/// Keeps the first `n` of `items` in `order`, sorted: a partial selection
/// first, so that only what is kept gets sorted (the status page and the
/// topic API pick a few topics out of all of them).
fn keep_first<T>(
    items: &mut Vec<T>,
    n: usize,
    mut order: impl FnMut(&T, &T) -> std::cmp::Ordering,
) {
    if items.len() > n && n > 0 {
        items.select_nth_unstable_by(n - 1, &mut order);
    }
    items.truncate(n);
    items.sort_unstable_by(order);
}

/// One of the `max_subscribers` slots, taken by a subscribe before it
/// registers anywhere: dropped, it gives the slot back.
pub(crate) struct Reservation(Option<Arc<Registry>>);

impl Reservation {
    /// The subscription is complete: the slot now belongs to an open
    /// subscriber, counted as such until its holder gives the `OpenSlot`
    /// to `close_subscriber`.
    pub(crate) fn open(mut self) -> OpenSlot {
        if let Some(registry) = self.0.take() {
            registry.metrics.subscriber_opened();
        }
        OpenSlot(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(registry) = self.0.take() {
            registry.n_subscribers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Proof that its holder has an open subscriber's slot (only
/// `Reservation::open` makes one); `Registry::close_subscriber` takes it
/// back. Empty: the holder has the registry at hand, and a pointer more in
/// every stream costs memory at 100,000 streams.
pub(crate) struct OpenSlot(());

impl Registry {
    /// Gives back an open subscriber's slot and counts it out.
    pub(crate) fn close_subscriber(&self, _slot: &mut OpenSlot) {
        self.n_subscribers.fetch_sub(1, Ordering::AcqRel);
        self.metrics.subscriber_closed();
    }
}
