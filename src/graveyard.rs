//! `Graveyard`: what the registry remembers about removed topics, so that a
//! topic created again under the same name never vouches for events its
//! earlier life lost.
//!
//! A tomb holds the highest sequence number the removed topic covered. When
//! the name comes back, its new ring starts with that floor, and a resume id
//! below it gets a `gap`; a resume id at or above it resumes silently, which
//! matters for rarely-updated topics (one per user, say) whose clients come
//! back long after the topic was swept. Memory is bounded by count: past
//! `max_tombs`, the oldest tombs are folded into one node-wide mark that
//! every new topic respects (truthful, if coarser). Topics that never held
//! an event leave no tomb: there was nothing to lose.
//!
//! Callers hold the topic map's shard lock for the name while burying or
//! exhuming it, so the two never race for one name.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::time::Instant;

use crate::topic::name::TopicName;

#[derive(Debug, Default)]
pub struct Graveyard {
    tombs: DashMap<TopicName, Tomb>,
    /// The highest `high_water` of every tomb folded away by `sweep`.
    folded: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Tomb {
    high_water: u64,
    buried_at: Instant,
}

impl Graveyard {
    /// Remembers that `name` was removed having covered up to `high_water`.
    pub fn bury(&self, name: &TopicName, high_water: u64, now: Instant) {
        if high_water <= self.folded.load(Ordering::SeqCst) {
            return;
        }
        self.tombs
            .entry(name.clone())
            .and_modify(|tomb| {
                tomb.high_water = tomb.high_water.max(high_water);
                tomb.buried_at = now;
            })
            .or_insert(Tomb {
                high_water,
                buried_at: now,
            });
    }

    /// The floor for a new topic called `name`. The tomb, if any, is taken:
    /// the new topic's ring carries its floor from now on.
    pub fn exhume(&self, name: &TopicName) -> u64 {
        // The tomb first: `sweep` raises `folded` before it drops a tomb, so
        // a tomb missing here is already part of the value loaded next.
        let tomb = self
            .tombs
            .remove(name)
            .map_or(0, |(_, tomb)| tomb.high_water);
        tomb.max(self.folded.load(Ordering::SeqCst))
    }

    /// Every topic created from now on starts with a floor of at least
    /// `floor` (a cluster node's reset: its rings vouch for nothing before).
    pub fn raise_floor(&self, floor: u64) {
        self.folded.fetch_max(floor, Ordering::SeqCst);
    }

    /// When there are more than `max_tombs` tombs, folds the oldest into the
    /// node-wide mark until a quarter of the room is free again.
    pub fn sweep(&self, max_tombs: usize) {
        let n_tombs = self.tombs.len();
        if n_tombs <= max_tombs {
            return;
        }
        let mut burial_times: Vec<Instant> = self.tombs.iter().map(|tomb| tomb.buried_at).collect();
        let n_fold = (n_tombs - max_tombs * 3 / 4).min(burial_times.len());
        let (_, &mut cutoff, _) = burial_times.select_nth_unstable(n_fold - 1);
        self.tombs.retain(|_, tomb| {
            let fold = tomb.buried_at <= cutoff;
            if fold {
                // Raised before the tomb goes; see `exhume`.
                self.folded.fetch_max(tomb.high_water, Ordering::SeqCst);
            }
            !fold
        });
    }

    #[cfg(test)]
    fn n_tombs(&self) -> usize {
        self.tombs.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_reborn_topic_inherits_its_own_floor_only() {
        let graveyard = Graveyard::default();
        let now = Instant::now();
        let (a, b) = (
            TopicName::parse("a").expect("a"),
            TopicName::parse("b").expect("b"),
        );
        graveyard.bury(&a, 40, now);
        assert_eq!(graveyard.exhume(&b), 0, "another name is not affected");
        assert_eq!(graveyard.exhume(&a), 40);
        assert_eq!(graveyard.exhume(&a), 0, "the tomb went to the new topic");
    }

    #[test]
    fn the_oldest_tombs_fold_into_the_node_wide_mark() {
        let graveyard = Graveyard::default();
        let now = Instant::now();
        let name = |n: &str| TopicName::parse(n).expect("topic");
        for (i, (topic, high_water)) in [("a", 40), ("b", 70), ("c", 50), ("d", 60)]
            .into_iter()
            .enumerate()
        {
            graveyard.bury(
                &name(topic),
                high_water,
                now + Duration::from_secs(i as u64),
            );
        }
        graveyard.sweep(4);
        assert_eq!(graveyard.n_tombs(), 4, "within the limit nothing folds");
        graveyard.sweep(2);
        assert_eq!(
            graveyard.n_tombs(),
            1,
            "folded down to three quarters of the limit"
        );
        assert_eq!(
            graveyard.exhume(&name("new")),
            70,
            "the oldest three folded"
        );
        // Below the mark, a tomb adds nothing and is not kept.
        graveyard.bury(&name("e"), 30, now);
        assert_eq!(graveyard.n_tombs(), 1);
    }
}
