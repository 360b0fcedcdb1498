//! Joining the cluster at start-up: Redis new enough, evicting nothing,
//! and holding the same buffers as this node's; the epoch and the meta
//! hash made if there are none.

use redis::aio::ConnectionManager;

use super::ids::{Epoch, StreamId};
use super::scripts::Keys;
use super::{MIN_REDIS_VERSION, Scripts, Settings, StartError, replay};

pub(super) async fn check_version(
    conn: &mut ConnectionManager,
    shown_url: &str,
) -> Result<(), StartError> {
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
pub(super) async fn check_eviction_policy(conn: &mut ConnectionManager) {
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
pub(super) async fn join(
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
pub(super) struct Joined {
    pub epoch: Epoch,
    pub last: StreamId,
    pub base: StreamId,
    /// The cluster's `buffer_events` and `buffer_ttl` in ms.
    pub buffers: (u64, u64),
}

pub(super) async fn init<C: redis::aio::ConnectionLike + Send>(
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
