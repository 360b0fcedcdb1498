//! `AnswerCache`: verified answers, reused until they expire.
//!
//! Used for verified tokens (until their `exp`) and for forward
//! authorization (for `subscribe_auth_cache`). Keys are SHA-256 digests of
//! what was presented, so the cache holds no token or cookie and a collision
//! cannot be provoked. It is bounded: when full, expired entries go first,
//! and if none has expired the whole cache is emptied (a reconnect storm of
//! more distinct credentials than it holds costs verifications, never
//! memory).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub type Key = [u8; 32];

/// Hashes `parts` unambiguously (each one length-prefixed).
pub fn key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Key {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

pub struct AnswerCache<V> {
    entries: Mutex<HashMap<Key, (Instant, V)>>,
    capacity: usize,
}

impl<V: Clone> AnswerCache<V> {
    pub fn new(capacity: usize) -> AnswerCache<V> {
        AnswerCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The answer stored under `key`, if it has not expired.
    pub fn get(&self, key: &Key) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((expires, value)) if Instant::now() < *expires => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` under `key` until `expires`.
    pub fn insert(&self, key: Key, value: V, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| now < *expires);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (expires, value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_do_not_run_parts_together() {
        assert_ne!(key([&b"ab"[..], b"c"]), key([&b"a"[..], b"bc"]));
        assert_eq!(key([&b"ab"[..], b"c"]), key([&b"ab"[..], b"c"]));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_and_the_cache_stays_bounded() {
        let cache = AnswerCache::new(2);
        let later = Instant::now() + Duration::from_secs(10);
        cache.insert(key([&b"a"[..]]), 1, later);
        assert_eq!(cache.get(&key([&b"a"[..]])), Some(1));
        cache.insert(key([&b"b"[..]]), 2, later);
        cache.insert(key([&b"c"[..]]), 3, later);
        assert!(cache.len() <= 2);
        assert_eq!(cache.get(&key([&b"c"[..]])), Some(3));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cache.get(&key([&b"c"[..]])), None);
    }
}
