//! Replay reads shared by the resumes that need the same one.
//!
//! After a node restarts, or when a crowd reconnects at once, thousands of
//! clients resume the same topic from the same id, each needing the same
//! range of the topic's stream from Redis. One read serves them all: the
//! first resume reads, the others wait for its result, and a result is
//! reused for a moment after (the entries of a range only ever leave by
//! trimming or expiry; `judge` still decides per client, against the
//! read's own clock). A resume that gives up (its `replay_timeout`) leaves
//! the read to the next one waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::ids::StreamId;
use super::replay::TopicRead;

/// How long a finished read is reused.
const REUSE_FOR: Duration = Duration::from_secs(1);
/// Above this many reads kept, finished ones past `REUSE_FOR` are dropped.
const KEEP_AT_MOST: usize = 256;

/// The reads in flight or just done, by topic and range.
#[derive(Default)]
pub struct SharedReads {
    reads: Mutex<HashMap<Key, Arc<Read>>>,
}

type Key = (String, StreamId, StreamId);

/// One read: its result once there (`None`: it failed).
struct Read {
    started: Instant,
    result: OnceCell<Option<Arc<TopicRead>>>,
}

impl SharedReads {
    /// The read of `topic`'s range `(after, upto]`, by `read` unless one is
    /// under way or just done. `None` when it failed.
    pub async fn get<F, Fut>(
        &self,
        topic: &str,
        after: StreamId,
        upto: StreamId,
        read: F,
    ) -> Option<Arc<TopicRead>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<TopicRead>>,
    {
        let shared = self.entry((topic.to_owned(), after, upto));
        let result = shared
            .result
            .get_or_init(|| async { read().await.map(Arc::new) })
            .await
            .clone();
        if result.is_none() {
            // A failure is not for reuse: the next resume tries again.
            self.forget(&(topic.to_owned(), after, upto), &shared);
        }
        result
    }

    fn entry(&self, key: Key) -> Arc<Read> {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if reads.len() > KEEP_AT_MOST {
            reads.retain(|_, read| read.result.get().is_none() || now - read.started < REUSE_FOR);
        }
        let fresh =
            |read: &Arc<Read>| read.result.get().is_none() || now - read.started < REUSE_FOR;
        match reads.get(&key) {
            Some(read) if fresh(read) => Arc::clone(read),
            _ => {
                let read = Arc::new(Read {
                    started: now,
                    result: OnceCell::new(),
                });
                reads.insert(key, Arc::clone(&read));
                read
            }
        }
    }

    fn forget(&self, key: &Key, read: &Arc<Read>) {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        if reads
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, read))
        {
            reads.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn read_of(now_ms: u64) -> TopicRead {
        TopicRead {
            now_ms,
            key_exists: true,
            entries: Vec::new(),
            beyond: None,
        }
    }

    #[tokio::test]
    async fn concurrent_resumes_share_one_read_and_a_failure_is_not_kept() {
        let reads = Arc::new(SharedReads::default());
        let n_reads = Arc::new(AtomicUsize::new(0));
        let (after, upto) = (StreamId { ms: 1, seq: 0 }, StreamId { ms: 9, seq: 0 });
        let mut waiting = Vec::new();
        for _ in 0..20 {
            let (reads, n_reads) = (Arc::clone(&reads), Arc::clone(&n_reads));
            waiting.push(tokio::spawn(async move {
                reads
                    .get("t", after, upto, || async {
                        n_reads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some(read_of(7))
                    })
                    .await
            }));
        }
        for waiter in waiting {
            assert_eq!(waiter.await.expect("task").map(|read| read.now_ms), Some(7));
        }
        assert_eq!(n_reads.load(Ordering::SeqCst), 1);
        // Another range is another read; a failed one is tried again.
        let other = reads.get("t", upto, upto, || async { None }).await;
        assert!(other.is_none());
        let again = reads
            .get("t", upto, upto, || async { Some(read_of(8)) })
            .await;
        assert_eq!(again.map(|read| read.now_ms), Some(8));
    }
}
