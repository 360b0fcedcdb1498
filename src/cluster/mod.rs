//! Cluster mode: several nodes on one Redis acting as one gateway.
//!
//! Redis Streams hold the truth (see `scripts` for the keys): a publish is
//! one atomic script that appends the event to the shared log (Redis gives
//! the id) and to the topic's own stream, and answers only once Redis has
//! it. Every node tails the log (`tail`) into its local rings, its own
//! publishes included, so ring order is log order on every node and the
//! single-node read, fan-out and seam code serves the streams unchanged. A
//! resume the rings cannot serve reads the topic's stream (`replay`), with a
//! gap proof; a node that loses its place in the log (Redis restarted empty,
//! lost acknowledged events, or trimmed past a node that was away) resets
//! its rings and ends its streams, so that clients learn the truth from
//! Redis. A reporter (`report`) shares each node's open streams and watches
//! the tail's lag.
//!
//! Knows nothing about HTTP: the handlers call `publish` and `subscribe`.

mod ids;
mod publisher;
mod replay;
mod report;
mod scripts;
mod shared_reads;
mod tail;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::{Config, redacted_url};
use crate::metrics::{ClusterPublishError, Metrics};
use crate::registry::{NewEvent, Registry};
use crate::shutdown::Shutdown;
use crate::sse::encode::event_body;
use crate::subscription::{Replay, Resume, Start, Subscription};
use crate::topic::name::{TopicName, TopicStr};
use ids::{Epoch, IdMap, StreamId};
use publisher::Outcome;
use replay::{Judged, judge};
use scripts::Keys;

/// Redis older than this lacks `XADD ... MINID` and exclusive ranges.
const MIN_REDIS_VERSION: (u32, u32) = (6, 2);
/// How long start-up waits for Redis to answer before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds a refused publish or subscribe is told to wait: Redis usually
/// comes back within seconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A running node's share of the cluster.
pub struct Cluster {
    settings: Settings,
    keys: Keys,
    client: redis::Client,
    /// Publishes, replays and reports (the tail has its own connection).
    conn: ConnectionManager,
    scripts: Scripts,
    /// The current epoch and its id mapping; the tail changes it, publishes
    /// and resumes wait on it.
    ids: watch::Sender<IdMap>,
    /// The sequence number of the newest event the tail has appended (or
    /// of its last reset): resumes from ahead of it wait on it.
    tail_progress: watch::Sender<u64>,
    /// The tail's position in the log, as a packed stream id, for the lag
    /// and for the publish script's loss check.
    tail_cursor: AtomicU64,
    /// The newest id of the current epoch this node answered a publisher
    /// with, packed: Redis behind it (or behind the tail) lost events that
    /// were acknowledged, even if this node's tail never read them.
    acknowledged: AtomicU64,
    /// Asks the tail to check the log now (a publish found another epoch).
    check_requested: Notify,
    /// Held alone by a reset (a new map and the rings emptied), shared by
    /// a resume from numbering its id to registering (`subscribe`).
    reset_gate: RwLock<()>,
    /// Replay reads shared by resumes of the same topic from the same id.
    shared_reads: shared_reads::SharedReads,
    /// Publishes waiting for the next script call (`publisher`).
    publisher: publisher::Publisher,
    /// Whether Redis answered the last report.
    engine_up: AtomicBool,
    /// How far the tail is behind the newest event, in ms of Redis ids.
    tail_lag_ms: AtomicU64,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

/// The configuration a node uses in cluster mode.
#[derive(Debug, Clone)]
struct Settings {
    buffer_events: usize,
    buffer_ttl_ms: u64,
    log_max_events: usize,
    publish_timeout: Duration,
    replay_timeout: Duration,
    max_tail_lag: Duration,
    tail_block: Duration,
    report_period: Duration,
    node_id: String,
}

struct Scripts {
    init: redis::Script,
    bump_epoch: redis::Script,
    check: redis::Script,
    publish: redis::Script,
    replay: redis::Script,
    report: redis::Script,
}

/// What a node cannot start with: one line, naming the key to change.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A publish Redis did not store, or may not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// No answer within `publish_timeout`: stored or not, no one knows.
    Timeout,
    /// Redis cannot be reached.
    Unreachable,
    /// Redis is at `maxmemory` (`noeviction`): nothing was stored.
    OutOfMemory,
    /// Redis lost data or changed epoch, and the node has not caught up in
    /// time: nothing was stored.
    EpochChanged,
    /// Any other error from Redis.
    Failed,
}

/// A subscribe that needs Redis, which did not answer in time: a
/// temporary refusal (the client comes back with the same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayUnavailable;

/// What a publish tells the publisher.
#[derive(Debug, Clone)]
pub struct Published {
    /// One id per event, in order.
    pub ids: Vec<String>,
    /// Open streams on the topic over every node, as last reported.
    pub n_subscribers: u64,
}

impl Cluster {
    /// Connects to Redis and checks that this node may join: Redis 6.2 or
    /// newer, the same `buffer_events` and `buffer_ttl` as the cluster, and
    /// (a warning only) `maxmemory-policy noeviction`. The registry starts
    /// at the log's end: everything before is Redis's to replay.
    pub async fn start(
        config: &Config,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cluster>, StartError> {
        let url = config.cluster.redis_url.as_deref().unwrap_or_default();
        let shown_url = redacted_url(url);
        let client = redis::Client::open(url)
            .map_err(|err| StartError(format!("invalid cluster.redis_url {shown_url}: {err}")))?;
        let settings = Settings::of(config);
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(settings.publish_timeout.max(settings.replay_timeout)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let unreachable = |err: &dyn std::fmt::Display| {
            StartError(format!(
                "cannot reach Redis at {shown_url} (cluster.redis_url): {err}"
            ))
        };
        let mut conn = tokio::time::timeout(
            START_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|elapsed| unreachable(&elapsed))?
        .map_err(|err| unreachable(&err))?;
        check_version(&mut conn, &shown_url).await?;
        check_eviction_policy(&mut conn).await;
        let keys = Keys::new(&config.cluster.prefix);
        let scripts = Scripts::new();
        let (epoch, base, last) = join(&mut conn, &scripts, &keys, &settings).await?;
        let ids = IdMap::new(epoch, base);
        let floor = ids.seq(last).unwrap_or(0);
        registry.reset(floor);
        metrics.cluster_started();
        tracing::info!(
            redis = %shown_url,
            prefix = %config.cluster.prefix,
            epoch = %epoch,
            node = %settings.node_id,
            log_end = %last,
            "cluster mode: joined"
        );
        Ok(Arc::new(Cluster {
            keys,
            client,
            conn,
            scripts,
            ids: watch::Sender::new(ids),
            tail_progress: watch::Sender::new(floor),
            tail_cursor: AtomicU64::new(last.pack().unwrap_or(0)),
            acknowledged: AtomicU64::new(0),
            check_requested: Notify::new(),
            reset_gate: RwLock::new(()),
            shared_reads: shared_reads::SharedReads::default(),
            publisher: publisher::Publisher::new(),
            engine_up: AtomicBool::new(true),
            tail_lag_ms: AtomicU64::new(0),
            registry,
            metrics,
            settings,
        }))
    }

    /// Starts the tail, the reporter and the publisher; they end at
    /// shutdown.
    pub fn spawn(self: &Arc<Self>, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let start = StreamId::unpack(self.tail_cursor.load(Ordering::SeqCst));
        vec![
            tokio::spawn(tail::run(Arc::clone(self), start, shutdown.clone())),
            tokio::spawn(report::run(Arc::clone(self), shutdown)),
            tokio::spawn(publisher::run(Arc::clone(self))),
        ]
    }

    /// Whether this node should get new subscribers: not while its tail
    /// lags Redis by more than `max_tail_lag` and Redis answers (with Redis
    /// down, every node is as good as another, and their streams are kept).
    pub fn is_ready(&self) -> bool {
        let lag = Duration::from_millis(self.tail_lag_ms.load(Ordering::Relaxed));
        !(self.engine_up.load(Ordering::Relaxed) && lag > self.settings.max_tail_lag)
    }

    /// Publishes `events` to `topic` as one step, all or none: `Ok` once
    /// Redis has stored them. Every node, this one included, delivers them
    /// from its tail.
    pub async fn publish(
        &self,
        topic: TopicStr<'_>,
        events: &[NewEvent<'_>],
    ) -> Result<Published, PublishError> {
        let bodies: Vec<Bytes> = events
            .iter()
            .map(|event| event_body(event.event_type, event.data))
            .collect();
        let deadline = Instant::now() + self.settings.publish_timeout;
        let mut ids = self.ids.subscribe();
        for attempt in 0..2 {
            ids.borrow_and_update();
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let job = publisher::Job {
                topic: topic.as_str().to_owned(),
                bodies: bodies.clone(),
                reply,
            };
            let published = tokio::time::timeout_at(deadline, async {
                self.publisher.submit(job).await?;
                outcome.await.map_err(|_| PublishError::Unreachable)
            });
            let error = match published.await {
                Err(_elapsed) => PublishError::Timeout,
                Ok(Err(error)) | Ok(Ok(Outcome::Failed(error))) => error,
                Ok(Ok(Outcome::Stored {
                    map,
                    subscribers,
                    ids,
                })) => {
                    self.acknowledge(&map, ids.last().copied());
                    return Ok(Published {
                        ids: ids.into_iter().map(|id| map.format(id)).collect(),
                        n_subscribers: subscribers,
                    });
                }
                // Redis has another epoch, or lost what this node knew: the
                // tail resets, then the publish goes once more.
                Ok(Ok(Outcome::EpochChanged)) => {
                    self.check_requested.notify_one();
                    if attempt == 0
                        && tokio::time::timeout_at(deadline, ids.changed())
                            .await
                            .is_ok()
                    {
                        continue;
                    }
                    PublishError::EpochChanged
                }
            };
            self.metrics.cluster_publish_failed(error.metric());
            return Err(error);
        }
        self.metrics
            .cluster_publish_failed(PublishError::EpochChanged.metric());
        Err(PublishError::EpochChanged)
    }

    /// Remembers `id` (of `map`'s epoch) as acknowledged, unless the epoch
    /// changed since.
    fn acknowledge(&self, map: &IdMap, id: Option<StreamId>) {
        let _gate = self
            .reset_gate
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(packed) = id.and_then(StreamId::pack)
            && self.ids.borrow().epoch == map.epoch
        {
            self.acknowledged.fetch_max(packed, Ordering::SeqCst);
        }
    }

    /// The newest id this node knows Redis must have: what its tail read,
    /// or what it acknowledged to a publisher.
    fn known_last(&self) -> StreamId {
        let packed = self
            .tail_cursor
            .load(Ordering::SeqCst)
            .max(self.acknowledged.load(Ordering::SeqCst));
        StreamId::unpack(packed)
    }

    /// Opens a subscription, resuming after `resume_id` if given: from this
    /// node's rings where they reach back far enough, from Redis before
    /// that, with a `gap` where Redis cannot prove nothing was lost.
    pub async fn subscribe(
        &self,
        names: &[TopicName],
        resume_id: Option<&[u8]>,
    ) -> Result<Subscription, SubscribeError> {
        let resume_id = resume_id.filter(|raw| !raw.is_empty());
        let started = Instant::now();
        let deadline = started + self.settings.replay_timeout;
        let point = match resume_id {
            None => Point::Live,
            Some(raw) => tokio::time::timeout_at(deadline, self.resume_point(raw))
                .await
                .map_err(|_| SubscribeError::Unavailable(ReplayUnavailable))??,
        };
        // The id's number, the map and the registration under one gate that
        // a reset holds alone: an id is never numbered by one epoch's map
        // and then read against another epoch's rings or Redis entries.
        let (resume, map, pending) = {
            let _gate = self
                .reset_gate
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let map = *self.ids.borrow();
            let resume = match point {
                Point::Live => Resume::Live,
                Point::Unknown => Resume::Unknown,
                Point::At(epoch, id) => match map.seq(id) {
                    Some(seq)
                        if epoch == map.epoch
                            && id >= map.base
                            && seq <= *self.tail_progress.borrow() =>
                    {
                        Resume::After(seq)
                    }
                    // The epoch moved on meanwhile: not an id of this one.
                    _ => Resume::Unknown,
                },
            };
            (resume, map, self.registry.register(names)?)
        };
        let after = match resume {
            Resume::Live => None,
            Resume::After(seq) => Some(seq),
            Resume::Unknown => Some(0),
        };
        // The topics whose ring does not reach back to the resume point.
        let behind: Vec<usize> = match after {
            None => Vec::new(),
            Some(after) => (0..names.len())
                .filter(|&i| pending.floors[i] > after)
                .collect(),
        };
        let resume_text =
            resume_id.map_or_else(String::new, |raw| String::from_utf8_lossy(raw).into_owned());
        if behind.is_empty() {
            let max_floor = pending.floors.iter().copied().max().unwrap_or(0);
            let start = Start::decide(resume, pending.head, max_floor);
            return Ok(pending.open(start, resume_text, Replay::default()));
        }
        let after_id = match resume {
            Resume::After(seq) => map.stream_id(seq),
            _ => None,
        };
        // Nothing at or before the epoch's base is of this epoch.
        let read_after = after_id.unwrap_or(map.base).max(map.base);
        let mut replay = Replay {
            covered_through: vec![0; names.len()],
            events: Vec::new(),
        };
        let mut continuous = after_id.is_some();
        for &i in &behind {
            let floor = pending.floors[i];
            let upto = map.stream_id(floor).unwrap_or(StreamId::ZERO);
            let topic = names[i].borrowed();
            let read = self
                .shared_reads
                .get(topic.as_str(), read_after, upto, || async {
                    self.read_topic(topic, read_after, upto).await.ok()
                });
            let read = tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| ReplayUnavailable)?
                .ok_or(ReplayUnavailable)?;
            let Judged {
                continuous: topic_continuous,
                entries,
            } = judge(after_id, &read, self.settings.buffer_ttl_ms);
            continuous &= topic_continuous;
            replay.covered_through[i] = floor;
            for entry in entries {
                if let Some(seq) = map.seq(entry.id) {
                    replay
                        .events
                        .push((seq, frame(&map, entry.id, &entry.body)));
                }
            }
        }
        replay.events.sort_unstable_by_key(|(seq, _)| *seq);
        self.metrics
            .cluster_replay_read(behind.len(), started.elapsed());
        let start = match resume {
            Resume::After(seq) => Start {
                cursor: seq,
                acknowledged_floor: seq,
                replay_through: pending.head,
                gap: !continuous,
            },
            _ => Start::decide(Resume::Unknown, pending.head, 0),
        };
        Ok(pending.open(start, resume_text, replay))
    }

    /// Where a client's id resumes on this node, waiting (the caller bounds
    /// it) for the tail when the id is ahead of it but not of Redis: the
    /// client came from a node whose tail is further on. `subscribe` checks
    /// the point again under the reset gate.
    async fn resume_point(&self, raw: &[u8]) -> Result<Point, SubscribeError> {
        if raw.len() > crate::id::MAX_RESUME_ID_BYTES {
            return Ok(Point::Unknown);
        }
        let Some((epoch, id)) = ids::parse_cluster_id(raw) else {
            return Ok(Point::Unknown);
        };
        let mut ids = self.ids.subscribe();
        if ids.borrow_and_update().epoch != epoch {
            // Maybe Redis moved to that epoch and the tail has not yet.
            let current = self.redis_epoch().await.map_err(|_| ReplayUnavailable)?;
            if current != Some(epoch) {
                return Ok(Point::Unknown);
            }
            self.check_requested.notify_one();
            ids.wait_for(|map| map.epoch == epoch)
                .await
                .map_err(|_| ReplayUnavailable)?;
        }
        let map = *ids.borrow();
        let Some(seq) = map.seq(id).filter(|_| id >= map.base) else {
            return Ok(Point::Unknown);
        };
        if seq <= *self.tail_progress.borrow() {
            return Ok(Point::At(epoch, id));
        }
        // Ahead of this node's tail: wait for it, unless the id is ahead of
        // Redis itself (then it is no id this cluster handed out).
        let last = self.redis_last().await.map_err(|_| ReplayUnavailable)?;
        if last.is_none_or(|last| id > last) {
            return Ok(Point::Unknown);
        }
        let mut progress = self.tail_progress.subscribe();
        progress
            .wait_for(|&tailed| tailed >= seq)
            .await
            .map_err(|_| ReplayUnavailable)?;
        Ok(Point::At(epoch, id))
    }

    async fn read_topic(
        &self,
        topic: TopicStr<'_>,
        after: StreamId,
        upto: StreamId,
    ) -> redis::RedisResult<replay::TopicRead> {
        let reply: redis::Value = self
            .scripts
            .replay
            .key(self.keys.topic(topic.as_str()))
            .arg(after.to_string())
            .arg(upto.to_string())
            .arg(self.settings.buffer_events)
            .invoke_async(&mut self.conn.clone())
            .await?;
        replay::parse_read(reply).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Parse, "unexpected replay script reply"))
        })
    }

    /// Redis's current epoch (another than this node's if its tail has not
    /// caught up with a change yet).
    async fn redis_epoch(&self) -> redis::RedisResult<Option<Epoch>> {
        Ok(self
            .epoch_field("id")
            .await?
            .as_deref()
            .and_then(Epoch::parse))
    }

    /// The id of the newest event in Redis.
    async fn redis_last(&self) -> redis::RedisResult<Option<StreamId>> {
        Ok(self
            .epoch_field("last")
            .await?
            .as_deref()
            .and_then(StreamId::parse))
    }

    async fn epoch_field(&self, field: &str) -> redis::RedisResult<Option<Vec<u8>>> {
        redis::cmd("HGET")
            .arg(&self.keys.epoch)
            .arg(field)
            .query_async(&mut self.conn.clone())
            .await
    }

    /// At shutdown: this node's streams no longer count (best effort): its
    /// presence expires now, and the next report of another node takes its
    /// counts out of the sums.
    pub async fn leave(&self) {
        let mut command = redis::cmd("ZADD");
        command
            .arg(&self.keys.nodes)
            .arg(0)
            .arg(&self.settings.node_id);
        let mut conn = self.conn.clone();
        let left = command.query_async::<i64>(&mut conn);
        let _ = tokio::time::timeout(Duration::from_millis(500), left).await;
    }
}

/// Where a client asked to resume, as far as this node can tell before it
/// registers (see `Cluster::resume_point`).
#[derive(Debug, Clone, Copy)]
enum Point {
    Live,
    At(Epoch, StreamId),
    /// Not an id of this cluster's current epoch, or from its future.
    Unknown,
}

/// A subscribe refused in cluster mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    Limit(crate::registry::LimitReached),
    Unavailable(ReplayUnavailable),
}

impl From<crate::registry::LimitReached> for SubscribeError {
    fn from(limit: crate::registry::LimitReached) -> SubscribeError {
        SubscribeError::Limit(limit)
    }
}

impl From<ReplayUnavailable> for SubscribeError {
    fn from(unavailable: ReplayUnavailable) -> SubscribeError {
        SubscribeError::Unavailable(unavailable)
    }
}

impl PublishError {
    fn metric(self) -> ClusterPublishError {
        match self {
            PublishError::Timeout => ClusterPublishError::Timeout,
            PublishError::Unreachable => ClusterPublishError::Unreachable,
            PublishError::OutOfMemory => ClusterPublishError::OutOfMemory,
            PublishError::EpochChanged => ClusterPublishError::EpochChanged,
            PublishError::Failed => ClusterPublishError::Other,
        }
    }
}

/// Sorts a Redis error into what the publisher is told.
fn classify(err: &redis::RedisError) -> PublishError {
    if err.code() == Some("OOM") || err.to_string().contains("OOM command not allowed") {
        PublishError::OutOfMemory
    } else if err.is_timeout() {
        PublishError::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        PublishError::Unreachable
    } else {
        PublishError::Failed
    }
}

/// An event's complete frame on this node: `id: <epoch>-<ms>-<seq>` and the
/// body the publisher's node encoded. Built once per event per node.
fn frame(map: &IdMap, id: StreamId, body: &[u8]) -> Bytes {
    let id = map.format(id);
    let mut frame = Vec::with_capacity("id: \n".len() + id.len() + body.len());
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(id.as_bytes());
    frame.push(b'\n');
    frame.extend_from_slice(body);
    Bytes::from(frame)
}

impl Settings {
    fn of(config: &Config) -> Settings {
        let cluster = &config.cluster;
        Settings {
            buffer_events: config.buffer_events,
            buffer_ttl_ms: u64::try_from(config.buffer_ttl.as_millis()).unwrap_or(u64::MAX),
            log_max_events: cluster.log_max_events,
            publish_timeout: cluster.publish_timeout,
            replay_timeout: cluster.replay_timeout,
            max_tail_lag: cluster.max_tail_lag,
            tail_block: cluster.tail_block,
            report_period: config.heartbeat_interval.min(Duration::from_secs(1)),
            node_id: node_id(),
        }
    }
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            init: scripts::init(),
            bump_epoch: scripts::bump_epoch(),
            check: scripts::check(),
            publish: scripts::publish(),
            replay: scripts::replay(),
            report: scripts::report(),
        }
    }
}

/// `<hostname>-<pid>-<random>`: names this node's report in Redis and logs.
fn node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = crate::id::unique_u64() & 0xffff;
    format!("{host}-{}-{suffix:04x}", std::process::id())
}

async fn check_version(conn: &mut ConnectionManager, shown_url: &str) -> Result<(), StartError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|err| StartError(format!("Redis at {shown_url} refused INFO: {err}")))?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    let major_minor = (parts.next().flatten(), parts.next().flatten());
    match major_minor {
        (Some(major), Some(minor)) if (major, minor) >= MIN_REDIS_VERSION => Ok(()),
        _ => Err(StartError(format!(
            "cluster mode needs Redis 6.2 or newer; {shown_url} runs Redis {version}"
        ))),
    }
}

/// An evicted topic key would look like "nothing was published": gaps
/// would go unreported. Only `noeviction` keeps the proof true.
async fn check_eviction_policy(conn: &mut ConnectionManager) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match policy.as_deref() {
        Ok([_, policy]) if policy == "noeviction" => {}
        Ok([_, policy]) => tracing::warn!(
            policy = %policy,
            "Redis maxmemory-policy is not noeviction: an evicted key would hide lost events; \
             set maxmemory-policy noeviction"
        ),
        _ => tracing::warn!(
            "cannot check Redis's maxmemory-policy (CONFIG GET is not allowed here); \
             make sure it is noeviction, or lost events may go unreported"
        ),
    }
}

/// Creates the epoch and the meta hash if there are none, and checks that
/// this node's buffers are the cluster's. Returns the epoch, its base and
/// the id of the newest event in the log.
async fn join(
    conn: &mut ConnectionManager,
    scripts: &Scripts,
    keys: &Keys,
    settings: &Settings,
) -> Result<(Epoch, StreamId, StreamId), StartError> {
    let joined = init(conn, scripts, keys, settings)
        .await
        .map_err(|err| StartError(format!("cannot join the cluster in Redis: {err}")))?;
    let ours = (settings.buffer_events as u64, settings.buffer_ttl_ms);
    if joined.buffers != ours {
        return Err(StartError(format!(
            "this node has buffer_events = {} and buffer_ttl = {}ms, but the cluster in Redis \
             (key {}) has buffer_events = {} and buffer_ttl = {}ms: every node must use the same \
             buffer_events and buffer_ttl",
            ours.0, ours.1, keys.meta, joined.buffers.0, joined.buffers.1
        )));
    }
    Ok((joined.epoch, joined.base, joined.last))
}

/// What the init script found.
struct Joined {
    epoch: Epoch,
    last: StreamId,
    base: StreamId,
    /// The cluster's `buffer_events` and `buffer_ttl` in ms.
    buffers: (u64, u64),
}

async fn init<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    scripts: &Scripts,
    keys: &Keys,
    settings: &Settings,
) -> redis::RedisResult<Joined> {
    let reply: redis::Value = scripts
        .init
        .key(&keys.epoch)
        .key(&keys.meta)
        .key(&keys.log)
        .arg(Epoch::generate().as_str())
        .arg(settings.buffer_events)
        .arg(settings.buffer_ttl_ms)
        .invoke_async(conn)
        .await?;
    let parse = || {
        let [epoch, last, base, events, ttl] =
            <[redis::Value; 5]>::try_from(replay::array(reply)?).ok()?;
        Some(Joined {
            epoch: Epoch::parse(replay::bulk(&epoch)?)?,
            last: StreamId::parse(replay::bulk(&last)?)?,
            // An epoch made before bases were kept began at the log's start.
            base: replay::bulk(&base)
                .and_then(StreamId::parse)
                .unwrap_or(StreamId::ZERO),
            buffers: (
                replay::text(&events)?.parse().ok()?,
                replay::text(&ttl)?.parse().ok()?,
            ),
        })
    };
    parse().ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Parse, "unexpected init script reply"))
    })
}
