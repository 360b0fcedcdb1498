//! `Subscription`: one subscriber's position in its topics, and how it reads.
//!
//! A subscription is a cursor (the sequence number up to which it has been
//! served) plus a waiter slot on each topic: no copy of any event and no queue.
//! Each read takes everything past the cursor, up to a byte budget, as one
//! chunk, so a subscriber that is behind gets many events per write.
//!
//! Multi-topic order: sequence numbers are taken under each topic's lock, so a
//! reader that first loads the sequence's `last()` value `upto` and then locks
//! each topic sees every event of every topic with `seq <= upto`. Merging
//! those and advancing the cursor to `upto` delivers the events of all topics
//! in publish order, and the last id a client saw always marks a complete
//! prefix, which is what makes its `Last-Event-ID` exact.
//!
//! Lag: the ring's floor is the highest sequence number it may have lost. A
//! subscriber is behind for good once a floor passes both its cursor and the
//! floor it already acknowledged with a `gap`.
//!
//! Knows nothing about HTTP; `sse::body` turns batches into a response body.

use std::sync::Arc;
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::registry::Registry;
use crate::topic::Topic;
use crate::topic::ring::Ring;

/// One topic of a subscription and the subscriber's waiter slot on it.
pub struct Subscribed {
    pub topic: Arc<Topic>,
    pub key: usize,
}

/// The outcome of one read.
#[derive(Debug)]
pub enum Batch {
    /// Frames to write, in publish order.
    Events {
        frames: Bytes,
        n_events: usize,
        /// How many of them were published before the subscription started.
        n_replayed: usize,
    },
    /// Nothing new; the subscriber is parked on every topic and `waker` will be
    /// woken by the next publish.
    Idle,
    /// Events this subscriber still needed were evicted: end the stream.
    Lagged,
}

pub struct Subscription {
    registry: Arc<Registry>,
    topics: Vec<Subscribed>,
    /// Every event of these topics with `seq <= cursor` has been served (or
    /// was published before the subscription and not asked for).
    cursor: u64,
    /// Losses up to here were already reported with a `gap` event.
    acknowledged_floor: u64,
    /// Events up to here were published before the subscription started.
    replay_through: u64,
    /// Whether the subscription made it into the gauges (see `Registry::subscribe`).
    opened: bool,
}

impl Subscription {
    /// An empty subscription holding one reserved subscriber slot, which its
    /// `Drop` gives back.
    pub(crate) fn new(registry: Arc<Registry>) -> Subscription {
        Subscription {
            registry,
            topics: Vec::with_capacity(1),
            cursor: 0,
            acknowledged_floor: 0,
            replay_through: 0,
            opened: false,
        }
    }

    pub(crate) fn add(&mut self, subscribed: Subscribed) {
        self.topics.push(subscribed);
    }

    /// Starts at the head: only events published from now on.
    pub(crate) fn start_live(&mut self, head: u64) {
        self.start_after(head, head, head);
    }

    /// Starts after `cursor`, with losses up to `acknowledged_floor` already
    /// reported; events up to `head` count as replayed.
    pub(crate) fn start_after(&mut self, cursor: u64, acknowledged_floor: u64, head: u64) {
        self.cursor = cursor;
        self.acknowledged_floor = acknowledged_floor;
        self.replay_through = head;
        self.opened = true;
    }

    /// The topics, for logs.
    pub fn topic_names(&self) -> Vec<&str> {
        self.topics
            .iter()
            .map(|t| t.topic.name().as_str())
            .collect()
    }

    /// Takes everything past the cursor, at most `max_bytes` of frames (but at
    /// least one event), or parks `waker` on every topic when there is nothing.
    pub fn next_batch(&mut self, waker: &Waker, max_bytes: usize) -> Batch {
        match self.topics.len() {
            1 => self.next_batch_single(waker, max_bytes),
            _ => self.next_batch_merged(waker, max_bytes),
        }
    }

    fn is_lost(&self, ring: &Ring) -> bool {
        ring.floor() > self.cursor.max(self.acknowledged_floor)
    }

    /// One topic: its ring is already in publish order, no merge needed.
    fn next_batch_single(&mut self, waker: &Waker, max_bytes: usize) -> Batch {
        let subscribed = &self.topics[0];
        let mut view = subscribed.topic.view();
        if self.is_lost(view.ring()) {
            return Batch::Lagged;
        }
        let (mut n_events, mut n_bytes, mut last_seq) = (0, 0, self.cursor);
        let mut n_replayed = 0;
        for event in view.ring().after(self.cursor) {
            if n_events > 0 && n_bytes + event.frame.len() > max_bytes {
                break;
            }
            (n_events, n_bytes, last_seq) = (n_events + 1, n_bytes + event.frame.len(), event.seq);
            n_replayed += usize::from(event.seq <= self.replay_through);
        }
        if n_events == 0 {
            view.park(subscribed.key, waker);
            return Batch::Idle;
        }
        let frames = {
            let mut chosen = view.ring().after(self.cursor).take(n_events);
            if n_events == 1 {
                // One event: share the published frame itself, no copy.
                chosen
                    .next()
                    .map(|event| event.frame.clone())
                    .unwrap_or_default()
            } else {
                let mut buf = BytesMut::with_capacity(n_bytes);
                chosen.for_each(|event| buf.extend_from_slice(&event.frame));
                buf.freeze()
            }
        };
        drop(view);
        self.cursor = last_seq;
        Batch::Events {
            frames,
            n_events,
            n_replayed,
        }
    }

    /// Several topics: collect up to `upto` from each, merge by sequence.
    fn next_batch_merged(&mut self, waker: &Waker, max_bytes: usize) -> Batch {
        loop {
            let upto = self.registry.sequence().last();
            let mut collected: Vec<(u64, Bytes)> = Vec::new();
            // Every event with `seq <= limit` of every topic is in `collected`.
            let mut limit = upto;
            let mut newer_than_upto = false;
            for subscribed in &self.topics {
                let mut view = subscribed.topic.view();
                if self.is_lost(view.ring()) {
                    return Batch::Lagged;
                }
                let (mut n_bytes, mut n_taken) = (0, 0);
                for event in view.ring().after(self.cursor) {
                    if event.seq > upto {
                        newer_than_upto = true;
                        break;
                    }
                    if n_taken > 0 && n_bytes + event.frame.len() > max_bytes {
                        limit = limit.min(collected.last().map_or(upto, |(seq, _)| *seq));
                        break;
                    }
                    collected.push((event.seq, event.frame.clone()));
                    (n_bytes, n_taken) = (n_bytes + event.frame.len(), n_taken + 1);
                }
                if n_taken == 0 {
                    view.park(subscribed.key, waker);
                }
            }
            if collected.is_empty() {
                if newer_than_upto {
                    // Published between loading `upto` and locking: go again.
                    continue;
                }
                self.cursor = self.cursor.max(upto);
                return Batch::Idle;
            }
            collected.sort_unstable_by_key(|(seq, _)| *seq);
            return self.take_merged(collected, limit, max_bytes);
        }
    }

    fn take_merged(&mut self, collected: Vec<(u64, Bytes)>, limit: u64, max_bytes: usize) -> Batch {
        let mut buf = BytesMut::new();
        let (mut n_events, mut n_replayed, mut last_seq, mut cut) = (0, 0, self.cursor, false);
        for (seq, frame) in collected.iter().filter(|(seq, _)| *seq <= limit) {
            if n_events > 0 && buf.len() + frame.len() > max_bytes {
                cut = true;
                break;
            }
            buf.extend_from_slice(frame);
            (n_events, last_seq) = (n_events + 1, *seq);
            n_replayed += usize::from(*seq <= self.replay_through);
        }
        self.cursor = if cut { last_seq } else { limit };
        Batch::Events {
            frames: buf.freeze(),
            n_events,
            n_replayed,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let now = Instant::now();
        for subscribed in &self.topics {
            subscribed.topic.unregister(subscribed.key, now);
        }
        self.registry.release_subscriber(self.opened);
    }
}
