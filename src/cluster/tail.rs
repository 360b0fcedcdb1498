//! The tail: one task per node reading the shared log from its cursor into
//! the local rings, in log order, so that every node's rings hold the same
//! events under the same ids in the same order.
//!
//! It reads with `XREAD BLOCK` on a connection of its own (a blocking read
//! would stall the shared one). A read that has not returned after three
//! times `tail_block` is given up and the connection made anew: a stale
//! connection after a failover can otherwise wait forever while the node
//! looks healthy (centrifugal/centrifugo#1189). Each entry names the log's
//! previous one (`P`): an entry that does not follow the cursor means the
//! log lost or trimmed entries the tail never read. Then, and after every
//! (re)connect, after every read that found nothing, and whenever a publish
//! asks, it checks that the log is still the one it was reading:
//!
//! - another epoch, or none (Redis restarted empty, or another node found a
//!   loss): adopt it (making one if needed) and reset;
//! - Redis's newest id behind the cursor, or the cursor's entry gone while
//!   an older one is still there (only a loss removes the newer entry
//!   first): acknowledged events were lost, so begin a new epoch and reset;
//! - the cursor's entry trimmed away (the node was away longer than the log
//!   holds): reset and go on from the log's end;
//!
//! where a reset empties the rings and ends the streams (`Registry::reset`):
//! their clients resume from the topics' streams in Redis, exactly, or with
//! a `gap` where the loss was.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::ids::{Epoch, IdMap, StreamId};
use super::join::init;
use super::replay::{array, bulk};
use super::{Cluster, frame};
use crate::metrics::ResyncReason;
use crate::shutdown::Shutdown;
use crate::topic::Numbered;
use crate::topic::name::TopicStr;

/// Entries one read takes at most.
const READ_COUNT: usize = 1024;

/// Where the tail is: the last id it appended (or started from), and
/// whether that id is an entry of the log (a start position may not be).
#[derive(Debug, Clone, Copy)]
struct Cursor {
    id: StreamId,
    is_entry: bool,
}

/// Runs the tail from `start` until shutdown.
pub(super) async fn run(cluster: Arc<Cluster>, start: StreamId, shutdown: Shutdown) {
    let mut cursor = Cursor {
        id: start,
        is_entry: false,
    };
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    while !shutdown.streams_ending() {
        if !first {
            cluster.metrics.cluster_tail_reconnected();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.streams_end() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        first = false;
        let mut conn = match connect(&cluster).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(cause = %err, "cluster tail cannot connect to Redis");
                continue;
            }
        };
        if let Err(err) = check(&cluster, &mut conn, &mut cursor, false).await {
            tracing::debug!(cause = %err, "cluster tail check failed");
            continue;
        }
        backoff = Duration::from_millis(100);
        if let Err(err) = follow(&cluster, &mut conn, &mut cursor, &shutdown).await {
            tracing::info!(cause = %err, "cluster tail lost its Redis connection; reconnecting");
        }
    }
}

async fn connect(cluster: &Cluster) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(cluster.settings.tail_block + Duration::from_secs(1)));
    cluster
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Reads and appends until the connection fails or shutdown; `Ok` only at
/// shutdown.
async fn follow(
    cluster: &Cluster,
    conn: &mut MultiplexedConnection,
    cursor: &mut Cursor,
    shutdown: &Shutdown,
) -> redis::RedisResult<()> {
    let block = cluster.settings.tail_block;
    loop {
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&cluster.keys.log)
            .arg(cursor.id.to_string());
        let read = command.query_async::<Value>(conn);
        let reply = tokio::select! {
            () = shutdown.streams_end() => return Ok(()),
            // On the shared connection: this one may be blocked in its
            // read for up to `tail_block`, longer than a waiting publish.
            () = cluster.check_requested.notified() => {
                check(cluster, &mut cluster.conn.clone(), cursor, false).await?;
                continue;
            }
            reply = tokio::time::timeout(3 * block, read) => reply,
        };
        let entries = match reply {
            Ok(reply) => log_entries(reply?),
            Err(_elapsed) => {
                tracing::warn!(
                    silent_for = ?(3 * block),
                    "cluster tail: a read of the shared log did not return; reconnecting"
                );
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "tail read timed out",
                )));
            }
        };
        match entries {
            // Nothing new within `tail_block`: a cheap moment to make sure
            // the log is still the one being read (a FLUSHALL, say, leaves
            // the connection up and the read waiting for ever).
            Some(entries) if entries.is_empty() => check(cluster, conn, cursor, false).await?,
            Some(entries) => match append(cluster, cursor, entries) {
                Appended::All => {}
                Appended::OtherEpoch(id) => {
                    let epoch = cluster.ids.borrow().epoch;
                    check(cluster, conn, cursor, false).await?;
                    if cluster.ids.borrow().epoch == epoch {
                        // Redis's epoch is this node's: the entry is not
                        // one of ours (another program, a damaged entry).
                        tracing::warn!(%id, "cluster tail: an entry of no epoch of ours; skipped");
                        *cursor = Cursor { id, is_entry: true };
                    }
                }
                Appended::Discontinuous => check(cluster, conn, cursor, true).await?,
            },
            // Reading it again at once would spin: reconnect, with backoff.
            None => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "an unreadable reply to XREAD",
                )));
            }
        }
    }
}

/// One entry of the log, as the tail needs it.
struct LogEntry {
    id: StreamId,
    /// The log's previous entry when this one was added.
    log_prev: Option<StreamId>,
    epoch: Option<Epoch>,
    topic: Vec<u8>,
    body: bytes::Bytes,
}

/// How far `append` got.
enum Appended {
    All,
    /// It stopped at an entry of another epoch (its id).
    OtherEpoch(StreamId),
    /// It stopped at an entry that does not follow the cursor: entries in
    /// between are gone.
    Discontinuous,
}

/// The entries of an `XREAD` reply (`None` if it is not one).
fn log_entries(reply: Value) -> Option<Vec<LogEntry>> {
    let mut entries = Vec::new();
    for stream in array(reply)? {
        let [_key, items] = <[Value; 2]>::try_from(array(stream)?).ok()?;
        for item in array(items)? {
            entries.push(log_entry(item)?);
        }
    }
    Some(entries)
}

/// `[id, [field, value, ...]]`, its fields taken in one pass.
fn log_entry(item: Value) -> Option<LogEntry> {
    let [id, fields] = <[Value; 2]>::try_from(array(item)?).ok()?;
    let mut entry = LogEntry {
        id: StreamId::parse(bulk(&id)?)?,
        log_prev: None,
        epoch: None,
        topic: Vec::new(),
        body: bytes::Bytes::new(),
    };
    let (mut has_topic, mut has_body) = (false, false);
    let mut fields = array(fields)?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match bulk(&name)? {
            b"E" => entry.epoch = bulk(&value).and_then(Epoch::parse),
            b"P" => entry.log_prev = bulk(&value).and_then(StreamId::parse),
            b"t" => (entry.topic, has_topic) = (into_vec(value)?, true),
            b"f" => (entry.body, has_body) = (bytes::Bytes::from(into_vec(value)?), true),
            _ => {}
        }
    }
    (has_topic && has_body).then_some(entry)
}

fn into_vec(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// Appends `entries` to the local rings, consecutive entries of one topic
/// in one step. Stops, without appending it, at an entry of another epoch
/// or one that does not follow the cursor: the log must be checked.
fn append(cluster: &Cluster, cursor: &mut Cursor, entries: Vec<LogEntry>) -> Appended {
    let map = *cluster.ids.borrow();
    let mut run: Vec<Numbered> = Vec::new();
    let mut run_topic: Vec<u8> = Vec::new();
    let mut appended = Appended::All;
    for entry in entries {
        if entry.epoch != Some(map.epoch) {
            appended = Appended::OtherEpoch(entry.id);
            break;
        }
        if entry.log_prev != Some(cursor.id) {
            appended = Appended::Discontinuous;
            break;
        }
        if entry.topic != run_topic {
            flush(cluster, &run_topic, std::mem::take(&mut run));
            run_topic = entry.topic;
        }
        match map.seq(entry.id) {
            Some(seq) => run.push(Numbered {
                seq,
                frame: frame(&map, entry.id, &entry.body),
            }),
            // The publish script never writes such an id.
            None => tracing::error!(id = %entry.id, "cluster tail: an id out of range; skipped"),
        }
        *cursor = Cursor {
            id: entry.id,
            is_entry: true,
        };
    }
    flush(cluster, &run_topic, run);
    moved_to(cluster, &map, cursor.id);
    appended
}

/// Appends one run of a topic's events.
fn flush(cluster: &Cluster, topic: &[u8], run: Vec<Numbered>) {
    if run.is_empty() {
        return;
    }
    let valid = std::str::from_utf8(topic)
        .ok()
        .and_then(|topic| TopicStr::parse(topic).ok());
    match valid {
        Some(topic) => cluster.registry.append_numbered(topic, run),
        None => {
            // Not written by ssegate (another program under our prefix?):
            // skipped, but its ids still count as passed.
            tracing::warn!(
                topic = %String::from_utf8_lossy(topic),
                "cluster tail: an event for an invalid topic name; skipped"
            );
            if let Some(last) = run.last() {
                cluster.registry.sequence().observe(last.seq);
            }
        }
    }
}

/// The tail has read up to `id`: publishes and waiting resumes learn it.
fn moved_to(cluster: &Cluster, map: &IdMap, id: StreamId) {
    cluster
        .tail_cursor
        .store(id.pack().unwrap_or(0), Ordering::SeqCst);
    let seq = map.seq(id).unwrap_or(0);
    cluster.tail_progress.send_if_modified(|progress| {
        let moved = *progress < seq;
        *progress = (*progress).max(seq);
        moved
    });
}

/// What the check script found (see `scripts::check`).
struct Found {
    epoch: Option<Epoch>,
    last: StreamId,
    base: StreamId,
    cursor_present: bool,
    oldest: Option<StreamId>,
}

/// Checks that the log is still the one the cursor is in, and resets the
/// node where it is not (see the module doc). `entries_missed`: the tail
/// read an entry that does not follow its cursor.
async fn check<C: redis::aio::ConnectionLike + Send>(
    cluster: &Cluster,
    conn: &mut C,
    cursor: &mut Cursor,
    entries_missed: bool,
) -> redis::RedisResult<()> {
    let reply: Value = cluster
        .scripts
        .check
        .key(&cluster.keys.epoch)
        .key(&cluster.keys.log)
        .arg(cursor.id.to_string())
        .invoke_async(conn)
        .await?;
    let found = parse_found(reply).ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Parse, "unexpected check script reply"))
    })?;
    let known = cluster.ids.borrow().epoch;
    match found.epoch {
        None => {
            // No epoch at all: Redis restarted without its data.
            let joined = init(conn, &cluster.scripts, &cluster.keys, &cluster.settings).await?;
            if joined.buffers
                != (
                    cluster.settings.buffer_events as u64,
                    cluster.settings.buffer_ttl_ms,
                )
            {
                tracing::error!(
                    "the cluster in Redis was re-created with other buffer_events or buffer_ttl \
                     than this node's; every node must use the same"
                );
            }
            let joined_at = (joined.epoch, joined.base, joined.last);
            adopt(cluster, cursor, joined_at, ResyncReason::EpochChanged);
        }
        Some(epoch) if epoch != known => {
            let at = (epoch, found.base, found.last);
            adopt(cluster, cursor, at, ResyncReason::EpochChanged);
        }
        Some(_) => {
            let entry_gone = (cursor.is_entry && !found.cursor_present) || entries_missed;
            let lost = found.last < cursor.id.max(cluster.known_last())
                || (entry_gone && found.oldest.is_none_or(|oldest| oldest < cursor.id));
            if lost {
                let reply: Value = cluster
                    .scripts
                    .bump_epoch
                    .key(&cluster.keys.epoch)
                    .arg(known.as_str())
                    .arg(Epoch::generate().as_str())
                    .invoke_async(conn)
                    .await?;
                let begun = parse_epoch(reply).ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected epoch reply"))
                })?;
                tracing::warn!(
                    cursor = %cursor.id,
                    redis_last = %found.last,
                    "Redis lost events this node had read (a failover or a restart from an \
                     older copy): a new epoch begins, and resuming clients get a gap"
                );
                adopt(cluster, cursor, begun, ResyncReason::DataLost);
            } else if entry_gone {
                tracing::warn!(
                    cursor = %cursor.id,
                    "this node was away longer than the shared log holds (log_max_events): \
                     its streams end, and their clients resume from Redis"
                );
                let _gate = cluster
                    .reset_gate
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let map = *cluster.ids.borrow();
                reset(cluster, cursor, &map, found.last, ResyncReason::Trimmed);
            }
        }
    }
    cluster.engine_up.store(true, Ordering::Relaxed);
    Ok(())
}

fn parse_found(reply: Value) -> Option<Found> {
    let [epoch, last, base, present, oldest] = <[Value; 5]>::try_from(array(reply)?).ok()?;
    Some(Found {
        epoch: bulk(&epoch).and_then(Epoch::parse),
        last: stream_id_or_zero(&last),
        base: stream_id_or_zero(&base),
        cursor_present: matches!(present, Value::Int(n) if n > 0),
        oldest: bulk(&oldest).and_then(StreamId::parse),
    })
}

/// An epoch as the bump script returns it: (epoch, base, last).
fn parse_epoch(reply: Value) -> Option<(Epoch, StreamId, StreamId)> {
    let [epoch, last, base] = <[Value; 3]>::try_from(array(reply)?).ok()?;
    Some((
        Epoch::parse(bulk(&epoch)?)?,
        stream_id_or_zero(&base),
        stream_id_or_zero(&last),
    ))
}

/// A stream id, `0-0` where Redis has none (an empty log).
fn stream_id_or_zero(value: &Value) -> StreamId {
    bulk(value)
        .and_then(StreamId::parse)
        .unwrap_or(StreamId::ZERO)
}

/// Moves to an epoch, `(epoch, its base, the log's newest id)`, and resets
/// the node at that newest id.
fn adopt(
    cluster: &Cluster,
    cursor: &mut Cursor,
    (epoch, base, last): (Epoch, StreamId, StreamId),
    reason: ResyncReason,
) {
    let head = cluster.registry.sequence().last();
    let map = cluster.ids.borrow().next(epoch, base, last, head);
    tracing::warn!(
        epoch = %epoch,
        "cluster epoch changed: this node's streams end, and resuming clients get a gap"
    );
    cluster.metrics.cluster_epoch_changed();
    let _gate = cluster
        .reset_gate
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    cluster.ids.send_replace(map);
    // What was acknowledged belongs to the old epoch.
    cluster.acknowledged.store(0, Ordering::SeqCst);
    reset(cluster, cursor, &map, last, reason);
}

/// Empties the rings up to `last` (of `map`'s epoch), ends the streams,
/// and goes on from `last`. The caller holds the reset gate.
fn reset(
    cluster: &Cluster,
    cursor: &mut Cursor,
    map: &IdMap,
    last: StreamId,
    reason: ResyncReason,
) {
    let floor = map
        .seq(last)
        .unwrap_or(0)
        .max(cluster.registry.sequence().last() + 1);
    cluster.registry.reset(floor);
    cluster.metrics.cluster_resynced(reason);
    *cursor = Cursor {
        id: last,
        is_entry: false,
    };
    cluster
        .tail_cursor
        .store(last.pack().unwrap_or(0), Ordering::SeqCst);
    cluster.tail_progress.send_replace(floor);
}
