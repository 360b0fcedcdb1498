//! Group commit: publishes go to Redis several to one script call.
//!
//! Why: a script call costs Redis about as much as a small command before
//! it does anything (Lua's entry), and each command inside it about as much
//! again; and every call is a round trip with its reply to parse. One
//! publish per call made Redis spend about three raw `XADD`s on each, and
//! the node more than it spends on everything else of a publish (measured
//! in `benches/README.md`). So one task sends the calls: while one is out,
//! the publishes that arrive wait, and the next call carries them all. A
//! publish that comes alone goes at once; a busy node shares each call's
//! cost among many.
//!
//! Each publish stays all or nothing, its events in order and nothing of
//! its topic between them; a call is all or nothing too, so a refusal
//! (Redis out of memory, another epoch) refuses every publish in it. A
//! publish whose publisher has given up by the time its call goes (its
//! `publish_timeout` passed) is left out.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::ids::{IdMap, StreamId};
use super::replay::{array, bulk, text};
use super::{Cluster, PublishError, classify};

/// Publishes waiting at most (more wait to be queued, within their own
/// `publish_timeout`).
const QUEUE: usize = 16 * 1024;
/// One call carries at most this many events and bytes of frames (a single
/// larger batch still goes, alone).
const CALL_EVENTS: usize = 512;
const CALL_BYTES: usize = 1 << 20;

/// One publish waiting for a call.
pub(super) struct Job {
    pub topic: String,
    pub bodies: Vec<Bytes>,
    pub reply: oneshot::Sender<Outcome>,
}

/// What became of a publish.
pub(super) enum Outcome {
    /// Stored, under `map`'s epoch.
    Stored {
        map: IdMap,
        subscribers: u64,
        ids: Vec<StreamId>,
    },
    /// Redis has another epoch, or is behind what this node knows: nothing
    /// was stored.
    EpochChanged,
    Failed(PublishError),
}

/// The queue of publishes, and its receiving end until the task takes it.
pub(super) struct Publisher {
    queue: mpsc::Sender<Job>,
    waiting: Mutex<Option<mpsc::Receiver<Job>>>,
}

impl Publisher {
    pub fn new() -> Publisher {
        let (queue, waiting) = mpsc::channel(QUEUE);
        Publisher {
            queue,
            waiting: Mutex::new(Some(waiting)),
        }
    }

    /// Queues a publish; the caller bounds the wait.
    pub async fn submit(&self, job: Job) -> Result<(), PublishError> {
        self.queue
            .send(job)
            .await
            .map_err(|_| PublishError::Unreachable)
    }

    /// The receiving end, for the task (`run`); taken once.
    fn take(&self) -> Option<mpsc::Receiver<Job>> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Sends the calls. It runs through shutdown, so that the publishes in
/// flight then are finished; the server stops it once they are.
pub(super) async fn run(cluster: Arc<Cluster>) {
    let Some(mut waiting) = cluster.publisher.take() else {
        return;
    };
    while let Some(first) = waiting.recv().await {
        let mut jobs = vec![first];
        let (mut n_events, mut n_bytes) = size(&jobs[0]);
        while n_events < CALL_EVENTS && n_bytes < CALL_BYTES {
            let Ok(job) = waiting.try_recv() else {
                break;
            };
            let (events, bytes) = size(&job);
            (n_events, n_bytes) = (n_events + events, n_bytes + bytes);
            jobs.push(job);
        }
        // Publishers that gave up are not stored behind their back.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let map = *cluster.ids.borrow();
        let called = tokio::time::timeout(
            cluster.settings.publish_timeout,
            call(&cluster, &map, &jobs),
        );
        let outcomes = match called.await {
            Err(_elapsed) => jobs
                .iter()
                .map(|_| Outcome::Failed(PublishError::Timeout))
                .collect(),
            Ok(Err(err)) => {
                let error = classify(&err);
                jobs.iter().map(|_| Outcome::Failed(error)).collect()
            }
            Ok(Ok(Reply::EpochChanged)) => jobs.iter().map(|_| Outcome::EpochChanged).collect(),
            Ok(Ok(Reply::Stored(stored))) => stored
                .into_iter()
                .map(|(subscribers, ids)| Outcome::Stored {
                    map,
                    subscribers,
                    ids,
                })
                .collect::<Vec<_>>(),
        };
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

fn size(job: &Job) -> (usize, usize) {
    (job.bodies.len(), job.bodies.iter().map(Bytes::len).sum())
}

/// What the publish script answered for a call.
enum Reply {
    /// Per publish, in order: the topic's streams over every node, and the
    /// ids of its events.
    Stored(Vec<(u64, Vec<StreamId>)>),
    EpochChanged,
}

async fn call(cluster: &Cluster, map: &IdMap, jobs: &[Job]) -> redis::RedisResult<Reply> {
    let mut invocation = cluster.scripts.publish.prepare_invoke();
    invocation
        .key(&cluster.keys.epoch)
        .key(&cluster.keys.log)
        .key(&cluster.keys.counts);
    for job in jobs {
        invocation.key(cluster.keys.topic(&job.topic));
    }
    invocation
        .arg(map.epoch.as_str())
        .arg(cluster.settings.buffer_events)
        .arg(cluster.settings.buffer_ttl_ms)
        .arg(cluster.settings.log_max_events)
        .arg(cluster.known_last().to_string());
    for job in jobs {
        invocation.arg(&job.topic).arg(job.bodies.len());
        for body in &job.bodies {
            invocation.arg(body.as_ref());
        }
    }
    let reply: Value = invocation.invoke_async(&mut cluster.conn.clone()).await?;
    parse(reply, jobs.len()).ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Parse, "unexpected publish script reply"))
    })
}

fn parse(reply: Value, n_jobs: usize) -> Option<Reply> {
    let items = array(reply)?;
    let (status, mut rest) = items.split_first()?;
    match bulk(status)? {
        b"OK" => {
            let mut stored = Vec::with_capacity(n_jobs);
            for _ in 0..n_jobs {
                let [subscribers, n_ids, ..] = rest else {
                    return None;
                };
                let subscribers = text(subscribers)?.parse().ok()?;
                let n_ids: usize = match n_ids {
                    Value::Int(n) => usize::try_from(*n).ok()?,
                    other => text(other)?.parse().ok()?,
                };
                let ids = rest.get(2..2 + n_ids)?;
                let ids = ids
                    .iter()
                    .map(|id| StreamId::parse(bulk(id)?))
                    .collect::<Option<Vec<_>>>()?;
                stored.push((subscribers, ids));
                rest = &rest[2 + n_ids..];
            }
            Some(Reply::Stored(stored))
        }
        b"EPOCH" | b"LOST" => Some(Reply::EpochChanged),
        _ => None,
    }
}
