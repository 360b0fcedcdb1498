//! The reporter: every `min(heartbeat_interval, 1s)` a node tells Redis
//! how many streams it holds open on each topic whose count changed (Redis
//! keeps each topic's sum over the live nodes for publish replies) and learns the log's newest id, which gives its tail's lag
//! (`/readyz`, `ssegate_cluster_tail_lag_seconds`), and whether Redis
//! answers at all (`ssegate_cluster_engine_up`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::Value;

use super::Cluster;
use super::ids::{Epoch, StreamId};
use super::replay::{array, bulk};
use crate::shutdown::Shutdown;
use crate::topic::name::TopicName;

/// Topic counts sent in one script call at most.
const COUNTS_PER_CALL: usize = 4096;

/// A report stays valid for this many periods: a node that stops reporting
/// (killed) drops out of the total soon after.
const REPORT_LIFETIME_PERIODS: u32 = 3;

pub(super) async fn run(cluster: Arc<Cluster>, shutdown: Shutdown) {
    let period = cluster.settings.report_period;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What Redis was last told, per topic with open streams here.
    let mut reported: HashMap<TopicName, usize> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.streams_end() => return,
        }
        let done = tokio::time::timeout(period, report(&cluster, &mut reported)).await;
        // An error Redis answered with (out of memory, say) still means it
        // is up.
        let up = match done {
            Ok(Ok(())) => true,
            Ok(Err(err)) => matches!(
                err.kind(),
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
            ),
            Err(_elapsed) => false,
        };
        cluster.engine_up.store(up, Ordering::Relaxed);
        cluster.metrics.cluster_engine_up(up);
    }
}

/// One report. `reported` is what Redis holds for this node: only the
/// changes are sent (a count of 0 for a topic that has none left).
async fn report(
    cluster: &Cluster,
    reported: &mut HashMap<TopicName, usize>,
) -> redis::RedisResult<()> {
    let current: HashMap<TopicName, usize> =
        cluster.registry.subscriber_counts().into_iter().collect();
    let mut changes: Vec<(&TopicName, usize)> = current
        .iter()
        .filter(|(topic, n)| reported.get(*topic) != Some(n))
        .map(|(topic, n)| (topic, *n))
        .collect();
    changes.extend(
        reported
            .keys()
            .filter(|topic| !current.contains_key(*topic))
            .map(|topic| (topic, 0)),
    );
    let lifetime = cluster.settings.report_period * REPORT_LIFETIME_PERIODS;
    let mut found: Option<(bool, Option<Epoch>, Option<StreamId>)> = None;
    // At least one call, even with nothing changed: presence and lag.
    for chunk in changes
        .chunks(COUNTS_PER_CALL)
        .chain(changes.is_empty().then_some(&[][..]))
    {
        let mut invocation = cluster.scripts.report.prepare_invoke();
        invocation
            .key(&cluster.keys.nodes)
            .key(cluster.keys.node(&cluster.settings.node_id))
            .key(&cluster.keys.epoch)
            .key(&cluster.keys.counts)
            .arg(&cluster.settings.node_id)
            .arg(lifetime.as_millis() as u64)
            .arg(&cluster.keys.node_prefix);
        for (topic, n) in chunk {
            invocation.arg(topic.as_str()).arg(*n);
        }
        let reply: Value = invocation.invoke_async(&mut cluster.conn.clone()).await?;
        let (existed, epoch, last) = parse(reply).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Parse, "unexpected report script reply"))
        })?;
        // Whether the hash existed before this report: the first call says.
        let existed_before = found.map_or(existed, |(existed, ..)| existed);
        found = Some((existed_before, epoch, last));
    }
    let Some((existed, epoch, last)) = found else {
        return Ok(());
    };
    let lost = !existed && reported.values().any(|&n| n > 0);
    *reported = current;
    if lost {
        // Redis lost this node's counts (restarted, say): all again next time.
        reported.clear();
    }
    if epoch != Some(cluster.ids.borrow().epoch) {
        // The tail will find out at its next read; tell it now.
        cluster.check_requested.notify_one();
    }
    let tailed = StreamId::unpack(cluster.tail_cursor.load(Ordering::SeqCst));
    let lag_ms = match last {
        Some(last) if last > tailed => last.ms.saturating_sub(tailed.ms),
        _ => 0,
    };
    cluster.tail_lag_ms.store(lag_ms, Ordering::Relaxed);
    cluster.metrics.cluster_tail_lag(lag_ms);
    Ok(())
}

fn parse(reply: Value) -> Option<(bool, Option<Epoch>, Option<StreamId>)> {
    let [existed, epoch, last] = <[Value; 3]>::try_from(array(reply)?).ok()?;
    Some((
        matches!(existed, Value::Int(1)),
        bulk(&epoch).and_then(Epoch::parse),
        bulk(&last).and_then(StreamId::parse),
    ))
}
