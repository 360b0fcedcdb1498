//! Cluster mode when things go wrong, with real processes: Redis killed and
//! restarted (empty, with its AOF, from an older dump), frozen, out of
//! memory; nodes killed and paused past the log. Never a false `200`,
//! never a silent loss, streams kept open while there is nothing to tell,
//! and a `gap` exactly where data was lost.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use common::cluster::{
    Redis, Seen, epoch_of, node, publish_ok, read_events, read_until_quiet, subscribe, try_publish,
};
use common::{PATIENCE, ServerProcess, client, eventually, metric};

/// A subscriber's raw bytes, to see heartbeats and the end of the stream.
struct Raw {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    text: String,
}

impl Raw {
    async fn open(node: &ServerProcess, path: &str) -> Raw {
        let response = client()
            .get(node.url(path))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(response.status(), 200);
        Raw {
            body: Box::pin(response.bytes_stream()),
            text: String::new(),
        }
    }

    /// Reads until `text` holds `needle` (after what was read before).
    async fn read_until(&mut self, needle: &str) {
        let from = self.text.len();
        let deadline = Instant::now() + PATIENCE;
        while !self.text[from..].contains(needle) {
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time; got {:?}", self.text))
                .unwrap_or_else(|| panic!("stream ended before {needle:?}: {:?}", self.text))
                .expect("chunk");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until the stream ends; fails after `PATIENCE`.
    async fn read_to_end(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("the stream did not end: {:?}", self.text),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(chunk))) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
            }
        }
    }
}

async fn healthy(node: &ServerProcess) -> bool {
    match client().get(node.url("/healthz")).send().await {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

/// Publishes until Redis takes it (after an outage); the id.
async fn publish_when_back(node: &ServerProcess, topic: &str, body: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match try_publish(node, topic, body).await {
            Ok(id) => return id,
            Err((503, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err((status, reason)) => panic!("publish after recovery: {status} {reason}"),
        }
    }
}

/// Redis `kill -9` under load, then started again empty: publishes are
/// `503` (never `200`) within `publish_timeout` while it is down, streams
/// stay open with heartbeats, and once it is back every stream ends, a
/// resume gets a `gap`, and new ids carry a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let args = [
        "--heartbeat-interval",
        "1s",
        "--cluster-publish-timeout",
        "1s",
    ];
    let a = node(&redis.url(), &args);
    let b = node(&redis.url(), &args);
    let mut raw = Raw::open(&b, "/subscribe/kill/k").await;
    let before = publish_ok(&a, "kill/k", "before").await;
    raw.read_until("data: before").await;
    redis.kill9();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(2) {
        let started = Instant::now();
        match try_publish(&a, "kill/k", "during").await {
            Ok(id) => panic!("a 200 while Redis is down: {id}"),
            Err((status, reason)) => {
                assert_eq!(status, 503, "{reason}");
                assert_eq!(reason.lines().count(), 1, "{reason:?}");
            }
        }
        // publish_timeout, with room for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        assert!(healthy(&a).await && healthy(&b).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stream is still open: heartbeats come.
    raw.read_until(":\n\n").await;
    assert!(
        metric(
            a.addr,
            "ssegate_cluster_publish_errors_total{reason=\"unreachable\"}"
        )
        .await
            > 0.0
    );
    redis.restart();
    // Redis has no data: the nodes move to a new epoch and end their streams.
    raw.read_to_end().await;
    let after = publish_when_back(&a, "kill/k", "after").await;
    assert_ne!(epoch_of(&after), epoch_of(&before), "a new epoch");
    let mut resumed = subscribe(&b, "/subscribe/kill/k", Some(&before)).await;
    let seen = read_events(&mut resumed, 1).await;
    assert_eq!(
        seen.gaps.len(),
        1,
        "the resume is told of the loss: {seen:?}"
    );
    assert_eq!(seen.events, vec![(after.clone(), "after".to_owned())]);
    for server in [&a, &b] {
        assert!(healthy(server).await);
        assert_eq!(
            metric(server.addr, "ssegate_cluster_epoch_changes_total").await,
            1.0
        );
        assert!(
            !server.log_text().contains("panicked"),
            "{}",
            server.log_text()
        );
    }
}

/// Redis restarted from its AOF (`appendfsync always`): nothing was lost,
/// so nobody sees a gap and ids go on in the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_aof_loses_nothing() {
    let Some(mut redis) = Redis::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]) else {
        return;
    };
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let mut sub = subscribe(&b, "/subscribe/aof/k", None).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish_ok(&a, "aof/k", &format!("e{i}")).await);
    }
    let mut seen = read_events(&mut sub, 5).await;
    redis.restart();
    for i in 5..10 {
        ids.push(publish_when_back(&a, "aof/k", &format!("e{i}")).await);
    }
    // The stream goes on; or, if it ended, a resume picks up exactly.
    let (more, ended) = read_until_quiet(&mut sub, Duration::from_secs(3)).await;
    seen.events.extend(more.events);
    seen.gaps.extend(more.gaps);
    if ended || seen.events.len() < 10 {
        let last = seen.events.last().expect("events").0.clone();
        let mut resumed = subscribe(&b, "/subscribe/aof/k", Some(&last)).await;
        let rest = read_events(&mut resumed, 10 - seen.events.len()).await;
        seen.events.extend(rest.events);
        seen.gaps.extend(rest.gaps);
    }
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    let expected: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("e{i}")))
        .collect();
    assert_eq!(seen.events, expected);
    assert!(ids.iter().all(|id| epoch_of(id) == epoch_of(&ids[0])));
    assert_eq!(
        metric(b.addr, "ssegate_cluster_epoch_changes_total").await,
        0.0
    );
}

/// Redis frozen (`SIGSTOP`, then `CLIENT PAUSE ... WRITE`): publishes get
/// `503` after `publish_timeout`, streams stay open, and every event
/// published after it thaws arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_then_thawed() {
    let Some(redis) = Redis::start() else { return };
    let args = [
        "--heartbeat-interval",
        "1s",
        "--cluster-publish-timeout",
        "1s",
        "--cluster-tail-block",
        "1s",
    ];
    let a = node(&redis.url(), &args);
    let b = node(&redis.url(), &args);
    let mut sub = subscribe(&b, "/subscribe/frozen/k", None).await;
    publish_ok(&a, "frozen/k", "before").await;
    read_events(&mut sub, 1).await;
    for (freeze, thaw) in [
        (vec!["STOP"], vec!["CONT"]),
        (
            vec!["CLIENT", "PAUSE", "3000", "WRITE"],
            vec!["CLIENT", "UNPAUSE"],
        ),
    ] {
        match freeze[0] {
            "STOP" => redis.signal(libc::SIGSTOP),
            _ => {
                redis.cmd(&freeze);
            }
        }
        let started = Instant::now();
        let refused = try_publish(&a, "frozen/k", "frozen").await;
        let took = started.elapsed();
        assert_eq!(
            refused.as_ref().map_err(|(status, _)| *status),
            Err(503),
            "{refused:?}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{took:?}"
        );
        assert!(healthy(&a).await && healthy(&b).await);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if freeze[0] == "STOP" {
            // Longer than three reads' worth: the tail's watchdog gives up
            // on its connection.
            tokio::time::sleep(Duration::from_millis(2000)).await;
        }
        match thaw[0] {
            "CONT" => redis.signal(libc::SIGCONT),
            _ => {
                redis.cmd(&thaw);
            }
        }
        let mut after = Vec::new();
        for i in 0..5 {
            after.push(publish_when_back(&a, "frozen/k", &format!("after {i}")).await);
        }
        // Events refused during the freeze may or may not have been stored
        // (the contract says so); every one published after arrives.
        let mut seen = Seen::default();
        while !seen
            .events
            .iter()
            .any(|(id, _)| id == after.last().expect("ids"))
        {
            let more = read_events(&mut sub, 1).await;
            seen.events.extend(more.events);
            seen.gaps.extend(more.gaps);
        }
        assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
        let received: Vec<&String> = seen.events.iter().map(|(id, _)| id).collect();
        let in_order: Vec<&String> = received
            .iter()
            .copied()
            .filter(|id| after.contains(id))
            .collect();
        assert_eq!(in_order, after.iter().collect::<Vec<_>>());
        for (_, data) in &seen.events {
            assert!(data.starts_with("after") || data == "frozen", "{data}");
        }
        if freeze[0] == "STOP" {
            assert!(metric(b.addr, "ssegate_cluster_tail_reconnects_total").await >= 1.0);
        }
    }
}

/// A failover that lost acknowledged events, simulated: Redis restarted
/// from a dump older than what the nodes had read. They notice, begin a new
/// epoch, end their streams, and a resume gets a `gap`; no id of the lost
/// range comes back under the old epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_an_older_dump_is_a_new_epoch() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let mut raw = Raw::open(&b, "/subscribe/loss/k").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish_ok(&a, "loss/k", &format!("kept {i}")).await);
    }
    redis.cmd(&["SAVE"]);
    let dump = redis.dir.join("dump.rdb");
    let older = redis.dir.join("older.rdb");
    std::fs::copy(&dump, &older).expect("copy dump");
    for i in 0..5 {
        ids.push(publish_ok(&a, "loss/k", &format!("lost {i}")).await);
    }
    raw.read_until("data: lost 4").await;
    redis.kill9();
    std::fs::copy(&older, &dump).expect("restore dump");
    redis.restart();
    raw.read_to_end().await;
    let after = publish_when_back(&a, "loss/k", "after").await;
    assert_ne!(epoch_of(&after), epoch_of(&ids[0]));
    let mut resumed = subscribe(&b, "/subscribe/loss/k", Some(&ids[9])).await;
    let seen = read_events(&mut resumed, 1).await;
    assert_eq!(seen.gaps.len(), 1, "{seen:?}");
    assert_eq!(seen.data(), ["after"]);
    for server in [&a, &b] {
        eventually("the node changed epoch once", || async {
            metric(server.addr, "ssegate_cluster_epoch_changes_total").await == 1.0
        })
        .await;
    }
    assert!(
        metric(
            a.addr,
            "ssegate_cluster_resyncs_total{reason=\"data_lost\"}"
        )
        .await
            + metric(
                b.addr,
                "ssegate_cluster_resyncs_total{reason=\"data_lost\"}"
            )
            .await
            >= 1.0
    );
}

/// A node killed with subscribers on it: they resume on the other nodes
/// with nothing lost and nothing twice, while publishes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_resume_on_the_others() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let doomed = node(&redis.url(), &[]);
    const N_CLIENTS: usize = 20;
    let mut clients = Vec::new();
    for _ in 0..N_CLIENTS {
        clients.push(subscribe(&doomed, "/subscribe/dies/k", None).await);
    }
    let (publisher_url, done) = (
        a.url("/publish/dies/k"),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let done_flag = std::sync::Arc::clone(&done);
    let publisher = tokio::spawn(async move {
        let mut published = Vec::new();
        for i in 0..60 {
            let reply = common::publish_to(&client(), &publisher_url, format!("e{i}")).await;
            published.push((reply.id, format!("e{i}")));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        published
    });
    // Each client reads a few events, then the node dies under them.
    let mut seen: Vec<Seen> = Vec::new();
    for sub in &mut clients {
        seen.push(read_events(sub, 3).await);
    }
    doomed.signal(libc::SIGKILL);
    let published = publisher.await.expect("publisher");
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    for (i, (sub, seen)) in clients.iter_mut().zip(&mut seen).enumerate() {
        // Whatever was already on the wire before the kill.
        let (more, ended) = read_until_quiet(sub, Duration::from_secs(2)).await;
        assert!(ended, "the dead node's stream ended");
        seen.events.extend(more.events);
        let last = seen.events.last().expect("some events").0.clone();
        let survivor = if i % 2 == 0 { &a } else { &b };
        let mut resumed = subscribe(survivor, "/subscribe/dies/k", Some(&last)).await;
        let first = published
            .iter()
            .position(|(id, _)| *id == seen.events[0].0)
            .expect("known");
        let rest = read_events(&mut resumed, published.len() - first - seen.events.len()).await;
        assert!(rest.gaps.is_empty(), "client {i}: {:?}", rest.gaps);
        seen.events.extend(rest.events);
        assert_eq!(seen.events, published[first..].to_vec(), "client {i}");
    }
}

/// A node paused while more events were published than the shared log
/// keeps: when it wakes it finds its place trimmed away, ends its streams,
/// and its clients resume exactly from the topic streams in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_longer_than_the_log_resyncs_and_its_clients_resume_exactly() {
    let Some(redis) = Redis::start() else { return };
    let args = [
        "--cluster-log-max-events",
        "100",
        "--cluster-tail-block",
        "1s",
    ];
    let a = node(&redis.url(), &args);
    let sleeper = node(&redis.url(), &args);
    let mut raw = Raw::open(&sleeper, "/subscribe/away/k").await;
    let first = publish_ok(&a, "away/k", "e0").await;
    raw.read_until("data: e0").await;
    sleeper.signal(libc::SIGSTOP);
    let mut ids = vec![first];
    for i in 1..=600 {
        ids.push(publish_ok(&a, "away/k", &format!("e{i}")).await);
    }
    let log_len = match redis.cmd(&["XLEN", "{ssegate}:log"]) {
        redis::Value::Int(n) => n,
        other => panic!("XLEN: {other:?}"),
    };
    assert!(log_len < 400, "the log was trimmed: {log_len} entries");
    sleeper.signal(libc::SIGCONT);
    // It must not deliver a partial sequence: its stream ends.
    raw.read_to_end().await;
    assert!(!raw.text.contains("data: e600"), "no jump over the hole");
    let mut delivered: Vec<&str> = raw
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    delivered.dedup();
    assert!(
        delivered
            .iter()
            .enumerate()
            .all(|(i, data)| *data == format!("e{i}")),
        "what it delivered has no hole: {delivered:?}"
    );
    let last_seen = ids[delivered.len() - 1].clone();
    eventually("the node resynced", || async {
        metric(
            sleeper.addr,
            "ssegate_cluster_resyncs_total{reason=\"trimmed\"}",
        )
        .await
            == 1.0
    })
    .await;
    // Its client resumes there, exactly, from Redis.
    let mut resumed = subscribe(&sleeper, "/subscribe/away/k", Some(&last_seen)).await;
    let rest = read_events(&mut resumed, 601 - delivered.len()).await;
    assert!(rest.gaps.is_empty(), "{:?}", rest.gaps);
    let expected: Vec<String> = (delivered.len()..=600).map(|i| format!("e{i}")).collect();
    assert_eq!(rest.data(), expected);
}

/// A burst larger than the shared log (one batch, trimmed as it goes in)
/// while a node stays connected: its next read starts past entries it
/// never saw, which `XREAD` does not say; the entries' chain (`P`) does,
/// and the node resyncs instead of delivering across the hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_log_is_noticed_by_a_connected_tail() {
    let Some(redis) = Redis::start() else { return };
    let args = [
        "--cluster-log-max-events",
        "100",
        "--cluster-tail-block",
        "30s",
    ];
    let a = node(&redis.url(), &args);
    let b = node(&redis.url(), &args);
    let mut raw = Raw::open(&b, "/subscribe/burst/k").await;
    let first = publish_ok(&a, "burst/k", "e0").await;
    raw.read_until("data: e0").await;
    let batch: String = (1..=600)
        .map(|i| format!("{{\"data\":\"e{i}\"}}\n"))
        .collect();
    let response = client()
        .post(a.url("/publish/burst/k"))
        .header("content-type", "application/x-ndjson")
        .body(batch)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    let reply: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
    let ids: Vec<String> = reply["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    raw.read_to_end().await;
    assert!(
        !raw.text.contains("data: e600"),
        "no jump over the hole: {}",
        raw.text
    );
    assert_eq!(
        metric(b.addr, "ssegate_cluster_resyncs_total{reason=\"trimmed\"}").await,
        1.0
    );
    assert_eq!(
        metric(b.addr, "ssegate_cluster_tail_reconnects_total").await,
        0.0
    );
    let mut resumed = subscribe(&b, "/subscribe/burst/k", Some(&first)).await;
    let seen = read_events(&mut resumed, 600).await;
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(seen.events.last().map(|(id, _)| id), ids.last());
    let expected: Vec<String> = (1..=600).map(|i| format!("e{i}")).collect();
    assert_eq!(seen.data(), expected);
}

/// Redis out of memory (`maxmemory`, `noeviction`): publishes are `503`
/// with a one-line reason, streams and replays carry on, and publishing
/// recovers once memory is there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis.url(), &["--heartbeat-interval", "1s"]);
    let b = node(&redis.url(), &["--heartbeat-interval", "1s"]);
    let mut sub = subscribe(&b, "/subscribe/oom/k", None).await;
    let first = publish_ok(&a, "oom/k", "before").await;
    read_events(&mut sub, 1).await;
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let refused = try_publish(&a, "oom/k", "no room").await;
    let Err((status, reason)) = refused else {
        panic!("stored without memory: {refused:?}");
    };
    assert_eq!(status, 503);
    assert_eq!(
        reason.trim(),
        "Redis is out of memory (maxmemory); the event was not stored; try later"
    );
    assert_eq!(
        metric(
            a.addr,
            "ssegate_cluster_publish_errors_total{reason=\"oom\"}"
        )
        .await,
        1.0
    );
    // Reads still work: a fresh node replays from Redis.
    let fresh = node(&redis.url(), &[]);
    let mut replay = subscribe(
        &fresh,
        "/subscribe/oom/k",
        Some(&format!("{}-0-0", epoch_of(&first))),
    )
    .await;
    assert_eq!(read_events(&mut replay, 1).await.data(), ["before"]);
    let ready = client().get(b.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let after = publish_ok(&a, "oom/k", "after").await;
    let seen = read_events(&mut sub, 1).await;
    assert!(seen.gaps.is_empty());
    assert_eq!(seen.events, vec![(after, "after".to_owned())]);
}

/// A Redis that keeps restarting empty (a crash loop without persistence):
/// each time a new epoch, and the node goes on delivering, however many
/// times it happens (a new epoch starts at Redis's clock, so the node's
/// sequence numbers stay where they were instead of leaping each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_again_and_again() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let args = ["--cluster-tail-block", "1s"];
    let a = node(&redis.url(), &args);
    let b = node(&redis.url(), &args);
    for round in 1..=12 {
        redis.restart();
        eventually("both nodes moved to the new epoch", || async {
            metric(a.addr, "ssegate_cluster_epoch_changes_total").await == f64::from(round)
                && metric(b.addr, "ssegate_cluster_epoch_changes_total").await == f64::from(round)
        })
        .await;
        // Real ids in every epoch: what the nodes' numbers must stay near.
        publish_when_back(&a, "loop/k", &format!("round {round}")).await;
    }
    let mut sub = subscribe(&b, "/subscribe/loop/k", None).await;
    let id = publish_when_back(&a, "loop/k", "still here").await;
    let seen = read_events(&mut sub, 1).await;
    assert_eq!(seen.events, vec![(id.clone(), "still here".to_owned())]);
    // From before anything of this epoch: a gap, then all of it.
    let mut resumed = subscribe(
        &a,
        "/subscribe/loop/k",
        Some(&format!("{}-0-0", epoch_of(&id))),
    )
    .await;
    let seen = read_events(&mut resumed, 2).await;
    assert_eq!(seen.gaps.len(), 1);
    assert_eq!(seen.data(), ["round 12", "still here"]);
    assert!(!b.log_text().contains("out of range"), "{}", b.log_text());
}
