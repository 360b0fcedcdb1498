//! Replays from Redis: what a node's rings no longer hold (it restarted,
//! or never had the topic, or evicted it), read from the topic's stream,
//! and the judgment whether anything after the client's id is missing.
//!
//! A topic lost nothing after `x` exactly when one of these holds (see
//! `scripts` for what `p` and the key's expiry promise):
//!
//! - the first entry after `x` has `p <= x`: nothing of the topic lies
//!   between `x` and it; and no entry after `x` is older than `buffer_ttl`
//!   (those count as evicted, as on a single node);
//! - there is no entry after `x` and the key exists: its newest entry is
//!   at or before `x`, so there never was one after (ids only grow, and
//!   trimming never removes the newest);
//! - the key is gone and `x` is younger than `buffer_ttl + 1s`: the key
//!   outlives its newest entry by that long, so that entry is older than
//!   `x`.
//!
//! Anything else is a gap: the client is told, then given what is left.

use bytes::Bytes;
use redis::Value;

use super::ids::StreamId;

/// One entry of a topic's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: StreamId,
    /// The id of the topic's previous entry, or a bound below which it lies.
    pub prev: StreamId,
    /// The frame without its `id:` line.
    pub body: Bytes,
}

/// What the replay script read for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRead {
    /// Redis's clock when it read.
    pub now_ms: u64,
    pub key_exists: bool,
    /// The entries after the resume id, up to the node's ring floor.
    pub entries: Vec<Entry>,
    /// When `entries` is empty: the first entry after the resume id at
    /// all (already in the ring, or not yet tailed), as `(id, p)`.
    pub beyond: Option<(StreamId, StreamId)>,
}

/// The verdict on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// Nothing after the resume id is missing.
    pub continuous: bool,
    /// What to replay, oldest first: the entries not yet expired.
    pub entries: Vec<Entry>,
}

/// Judges one topic read for a client resuming after `after` (`None`: an
/// id of no use, so a gap and everything still buffered).
pub fn judge(after: Option<StreamId>, read: &TopicRead, ttl_ms: u64) -> Judged {
    let expired = |id: StreamId| id.ms.saturating_add(ttl_ms) <= read.now_ms;
    let n_entries = read.entries.len();
    let entries: Vec<Entry> = read
        .entries
        .iter()
        .filter(|entry| !expired(entry.id))
        .cloned()
        .collect();
    let Some(after) = after else {
        return Judged {
            continuous: false,
            entries,
        };
    };
    let continuous = if entries.len() < n_entries {
        false
    } else if let Some(first) = entries.first() {
        first.prev <= after
    } else if let Some((_, prev)) = read.beyond {
        prev <= after
    } else if read.key_exists {
        true
    } else {
        after.ms.saturating_add(ttl_ms + 1000) > read.now_ms
    };
    Judged {
        continuous,
        entries,
    }
}

/// Parses the replay script's reply (see `scripts::replay`).
pub fn parse_read(reply: Value) -> Option<TopicRead> {
    let [now, exists, entries, beyond] = <[Value; 4]>::try_from(array(reply)?).ok()?;
    let entries = array(entries)?
        .into_iter()
        .map(parse_entry)
        .collect::<Option<Vec<Entry>>>()?;
    let beyond = match array(beyond)?.into_iter().next() {
        Some(entry) => {
            let entry = parse_entry(entry)?;
            Some((entry.id, entry.prev))
        }
        None => None,
    };
    Some(TopicRead {
        now_ms: text(&now)?.parse().ok()?,
        key_exists: matches!(exists, Value::Int(1)),
        entries,
        beyond,
    })
}

/// An entry of a topic's stream: `[id, [field, value, ...]]` with fields
/// `p` and `f`.
pub fn parse_entry(entry: Value) -> Option<Entry> {
    let [id, fields] = <[Value; 2]>::try_from(array(entry)?).ok()?;
    let id = StreamId::parse(bulk(&id)?)?;
    let mut prev = None;
    let mut body = None;
    let mut fields = array(fields)?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match bulk(&name)? {
            b"p" => prev = StreamId::parse(bulk(&value)?),
            b"f" => body = Some(into_bytes(value)?),
            _ => {}
        }
    }
    Some(Entry {
        id,
        prev: prev?,
        body: body?,
    })
}

pub fn array(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

pub fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

pub fn text(value: &Value) -> Option<&str> {
    std::str::from_utf8(bulk(value)?).ok()
}

fn into_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(text) => Some(Bytes::from(text)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 10_000;
    const NOW: u64 = 1_000_000;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn entry(ms: u64, prev_ms: u64) -> Entry {
        Entry {
            id: id(ms),
            prev: id(prev_ms),
            body: Bytes::from_static(b"data: x\n\n"),
        }
    }

    fn read(exists: bool, entries: Vec<Entry>, beyond: Option<(u64, u64)>) -> TopicRead {
        TopicRead {
            now_ms: NOW,
            key_exists: exists,
            entries,
            beyond: beyond.map(|(ms, prev)| (id(ms), id(prev))),
        }
    }

    /// One row: resume after `after` (ms), the read, and the verdict
    /// expected as (continuous, ms of the entries to replay).
    fn check(after: Option<u64>, read: TopicRead, expect: (bool, &[u64])) {
        let judged = judge(after.map(id), &read, TTL);
        let replayed: Vec<u64> = judged.entries.iter().map(|entry| entry.id.ms).collect();
        assert_eq!(
            (judged.continuous, replayed.as_slice()),
            expect,
            "after {after:?}, {read:?}"
        );
    }

    #[test]
    fn the_gap_proof() {
        let fresh = NOW - 100;
        // The first entry after the id points back at it, or before it.
        check(
            Some(fresh),
            read(
                true,
                vec![entry(fresh + 1, fresh), entry(fresh + 2, fresh + 1)],
                None,
            ),
            (true, &[fresh + 1, fresh + 2]),
        );
        check(
            Some(fresh),
            read(true, vec![entry(fresh + 1, fresh - 5)], None),
            (true, &[fresh + 1]),
        );
        // ... or past it: something between was trimmed.
        check(
            Some(fresh),
            read(true, vec![entry(fresh + 9, fresh + 4)], None),
            (false, &[fresh + 9]),
        );
        // Nothing up to the floor, the first one after it decides.
        check(
            Some(fresh),
            read(true, vec![], Some((fresh + 50, fresh))),
            (true, &[]),
        );
        check(
            Some(fresh),
            read(true, vec![], Some((fresh + 50, fresh + 20))),
            (false, &[]),
        );
        // Nothing after the id at all, the key still there: nothing missed.
        check(Some(fresh), read(true, vec![], None), (true, &[]));
        // An entry after the id that is older than buffer_ttl counts as
        // evicted, and is not replayed.
        let old = NOW - TTL - 5;
        check(
            Some(old - 1),
            read(true, vec![entry(old, old - 1), entry(fresh, old)], None),
            (false, &[fresh]),
        );
        check(
            Some(old - 1),
            read(true, vec![entry(NOW - TTL, old - 1)], None),
            (false, &[]),
        );
        check(
            Some(old - 1),
            read(true, vec![entry(NOW - TTL + 1, old - 1)], None),
            (true, &[NOW - TTL + 1]),
        );
        // The key expired: it outlived its newest entry by buffer_ttl + 1s.
        check(
            Some(NOW - TTL - 999),
            read(false, vec![], None),
            (true, &[]),
        );
        check(
            Some(NOW - TTL - 1000),
            read(false, vec![], None),
            (false, &[]),
        );
        check(Some(NOW - 3 * TTL), read(false, vec![], None), (false, &[]));
        // An id of no use: a gap, and everything still buffered.
        check(
            None,
            read(true, vec![entry(old, 0), entry(fresh, old)], None),
            (false, &[fresh]),
        );
        check(None, read(false, vec![], None), (false, &[]));
    }

    #[test]
    fn replies_parse() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("1700000000000"),
            Value::Int(1),
            Value::Array(vec![Value::Array(vec![
                bulk("1699999999000-3"),
                Value::Array(vec![
                    bulk("p"),
                    bulk("1699999998000-0"),
                    bulk("f"),
                    bulk("data: a\n\n"),
                ]),
            ])]),
            Value::Array(vec![]),
        ]);
        let read = parse_read(reply).expect("a read");
        assert_eq!(read.now_ms, 1_700_000_000_000);
        assert!(read.key_exists);
        assert_eq!(read.entries.len(), 1);
        assert_eq!(
            read.entries[0].id,
            StreamId {
                ms: 1_699_999_999_000,
                seq: 3
            }
        );
        assert_eq!(
            read.entries[0].prev,
            StreamId {
                ms: 1_699_999_998_000,
                seq: 0
            }
        );
        assert_eq!(&read.entries[0].body[..], b"data: a\n\n");
        assert_eq!(read.beyond, None);
        assert!(parse_read(Value::Int(3)).is_none());
        assert!(parse_read(Value::Array(vec![bulk("x")])).is_none());
    }
}
