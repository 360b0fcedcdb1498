//! Resuming on a node: where the client's id points, waiting for this
//! node's tail when it is behind, and reading from Redis what the node's
//! rings no longer hold (judged by `replay::judge`), merged with the rings
//! by id.

use std::sync::PoisonError;
use tokio::time::Instant;

use super::ids::{self, Epoch, IdMap, StreamId};
use super::replay::{self, Judged, judge};
use super::{Cluster, ReplayUnavailable, SubscribeError, frame};
use crate::subscription::{Replay, Resume, Start, Subscription};
use crate::topic::name::{TopicName, TopicStr};

impl Cluster {
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
            let position_id = position_id(&map, start.replay_through);
            return Ok(pending.open(start, resume_text, position_id, Replay::default()));
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
        let position_id = position_id(&map, start.replay_through);
        Ok(pending.open(start, resume_text, position_id, replay))
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

/// The wire id of sequence number `seq` for a stream's position block: the
/// stream id it packs, or the epoch's `base` when `seq` is older than this
/// epoch (nothing published in it yet), so that the position always
/// resumes exactly under this epoch.
fn position_id(map: &IdMap, seq: u64) -> String {
    let id = map
        .stream_id(seq)
        .filter(|id| *id >= map.base)
        .unwrap_or(map.base);
    map.format(id)
}
