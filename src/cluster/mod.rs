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

pub(crate) mod ids;
mod join;
mod publisher;
mod replay;
mod report;
mod resume;
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
use crate::topic::name::TopicStr;
use ids::{Epoch, IdMap, StreamId};
use publisher::Outcome;
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
        join::check_version(&mut conn, &shown_url).await?;
        join::check_eviction_policy(&mut conn).await;
        let keys = Keys::new(&config.cluster.prefix);
        let scripts = Scripts::new();
        let (epoch, base, last) = join::join(&mut conn, &scripts, &keys, &settings).await?;
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

    /// The wire id of this node's sequence number `seq`, or `None` for one
    /// from before the current epoch (a topic API reader is then told
    /// nothing rather than an id no node would resume from).
    pub fn wire_id(&self, seq: u64) -> Option<String> {
        let map = self.ids.borrow();
        let id = map.stream_id(seq).filter(|id| *id >= map.base)?;
        Some(map.format(id))
    }

    /// The streams open on each of `topics` across the cluster: the sums
    /// the nodes' reports keep in Redis, up to a report period (1 s) old.
    /// `None` when Redis does not answer within `replay_timeout`.
    pub async fn subscriber_sums(&self, topics: &[&str]) -> Option<Vec<usize>> {
        if topics.is_empty() {
            return Some(Vec::new());
        }
        let mut command = redis::cmd("HMGET");
        command.arg(&self.keys.counts).arg(topics);
        let mut conn = self.conn.clone();
        let read = command.query_async::<Vec<Option<i64>>>(&mut conn);
        let sums = tokio::time::timeout(self.settings.replay_timeout, read)
            .await
            .ok()?
            .ok()?;
        Some(
            sums.into_iter()
                .map(|sum| usize::try_from(sum.unwrap_or(0)).unwrap_or(0))
                .collect(),
        )
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
