//! Cluster mode with real Redis and real node processes: one gateway made
//! of several nodes, exact resumes on any node, and the truth about gaps.
//! Faults (Redis killed, frozen, restarted, out of memory; nodes killed and
//! paused) are in `tests/cluster_faults.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{
    Proxy, Redis, epoch_of, node, publish_ok, read_events, read_until_quiet, refused_start,
    stream_id, subscribe,
};
use common::{ServerProcess, eventually, metric};

/// Every subscriber, on every node, single- or multi-topic, gets every
/// event of its topics published on any node: once, in id order, with the
/// id the publisher got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_on_every_node_gets_every_event_once_in_id_order() {
    let Some(redis) = Redis::start() else { return };
    let nodes: Vec<ServerProcess> = (0..3).map(|_| node(&redis.url(), &[])).collect();
    let topics = ["fan/0", "fan/1", "fan/2"];
    let mut subscribers = Vec::new();
    for node in &nodes {
        for topic in topics {
            let subscriber = subscribe(node, &format!("/subscribe/{topic}"), None).await;
            subscribers.push((vec![topic], subscriber));
        }
        let multi = subscribe(node, "/subscribe?topic=fan/0&topic=fan/2", None).await;
        subscribers.push((vec!["fan/0", "fan/2"], multi));
    }
    // Publishers on every node at a steady rate, round the topics.
    const PER_NODE: usize = 30;
    let published: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let mut publishers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let url = node.url("");
        let published = Arc::clone(&published);
        publishers.push(tokio::spawn(async move {
            let client = common::client();
            for k in 0..PER_NODE {
                let topic = topics[(n + k) % topics.len()];
                let data = format!("node {n} event {k}");
                let reply =
                    common::publish_to(&client, &format!("{url}/publish/{topic}"), data.clone())
                        .await;
                published
                    .lock()
                    .expect("log")
                    .push((reply.id, topic.to_owned(), data));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let mut published = published.lock().expect("log").clone();
    published.sort_by_key(|(id, _, _)| stream_id(id));
    let epochs: Vec<&str> = published.iter().map(|(id, _, _)| epoch_of(id)).collect();
    assert!(
        epochs.windows(2).all(|pair| pair[0] == pair[1]),
        "one epoch"
    );
    for (topics, subscriber) in &mut subscribers {
        let expected: Vec<(String, String)> = published
            .iter()
            .filter(|(_, topic, _)| topics.contains(&topic.as_str()))
            .map(|(id, _, data)| (id.clone(), data.clone()))
            .collect();
        let seen = read_events(subscriber, expected.len()).await;
        assert!(seen.gaps.is_empty(), "no gap: {:?}", seen.gaps);
        assert_eq!(seen.events, expected, "subscriber of {topics:?}");
        let (extra, _) = read_until_quiet(subscriber, Duration::from_millis(300)).await;
        assert!(extra.events.is_empty(), "nothing twice: {:?}", extra.events);
    }
}

/// A client that saw some events on one node resumes on another (header
/// and query), and on a node started after the events (its rings are
/// empty: the events come from Redis), with exactly the events it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_exactly_on_another_node_and_on_a_fresh_one() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(publish_ok(&a, "resume/r", &format!("e{i}")).await);
    }
    let check = |seen: common::cluster::Seen, from: usize| {
        assert!(seen.gaps.is_empty(), "no gap: {:?}", seen.gaps);
        let expected: Vec<(String, String)> = (from..6)
            .map(|i| (ids[i].clone(), format!("e{i}")))
            .collect();
        assert_eq!(seen.events, expected);
    };
    let mut header = subscribe(&b, "/subscribe/resume/r", Some(&ids[1])).await;
    check(read_events(&mut header, 4).await, 2);
    let query = format!("/subscribe/resume/r?last_event_id={}", ids[3]);
    let mut by_query = subscribe(&b, &query, None).await;
    check(read_events(&mut by_query, 2).await, 4);
    // A node that was not running when the events were published.
    let fresh = node(&redis.url(), &[]);
    let mut from_redis = subscribe(&fresh, "/subscribe/resume/r", Some(&ids[0])).await;
    check(read_events(&mut from_redis, 5).await, 1);
    assert!(metric(fresh.addr, "ssegate_cluster_replay_reads_total").await >= 1.0);
    // Redis's part and the ring's part meet with nothing lost or doubled.
    let live = publish_ok(&a, "resume/r", "e6").await;
    ids.push(live);
    let seen = read_events(&mut from_redis, 1).await;
    assert_eq!(seen.events, vec![(ids[6].clone(), "e6".to_owned())]);
    // A multi-topic resume on the fresh node merges Redis and rings by id.
    let other = publish_ok(&a, "resume/s", "s0").await;
    let last = publish_ok(&a, "resume/r", "e7").await;
    let mut merged = subscribe(
        &fresh,
        "/subscribe?topic=resume/r&topic=resume/s",
        Some(&ids[4]),
    )
    .await;
    let seen = read_events(&mut merged, 4).await;
    assert!(seen.gaps.is_empty());
    assert_eq!(seen.data(), ["e5", "e6", "s0", "e7"]);
    assert_eq!(seen.events[2].0, other);
    assert_eq!(seen.events[3].0, last);
}

/// Publishes arriving together go to Redis several to one script call, and
/// a call carrying several publishes of one topic still chains them: a node
/// that was not running replays each topic from Redis alone (the `p` of
/// every entry is the one before it), in id order, with no `gap`, and each
/// topic's key expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sharing_a_script_call_stay_chained_per_topic() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis.url(), &[]);
    let calls_before = script_calls(&redis);
    const N: usize = 120;
    let a = Arc::new(a);
    let publishes: Vec<_> = (0..N)
        .map(|i| {
            let a = Arc::clone(&a);
            // Two topics, interleaved: a call carries both.
            let topic = if i % 3 == 0 { "group/h" } else { "group/g" };
            tokio::spawn(async move { (topic, i, publish_ok(&a, topic, &format!("e{i}")).await) })
        })
        .collect();
    let mut published = Vec::new();
    for publish in publishes {
        published.push(publish.await.expect("publish"));
    }
    let calls = script_calls(&redis) - calls_before;
    assert!(
        calls < N as u64,
        "{N} publishes made {calls} script calls: none shared one"
    );
    let fresh = node(&redis.url(), &[]);
    for topic in ["group/g", "group/h"] {
        let mut events: Vec<(String, String)> = published
            .iter()
            .filter(|(t, _, _)| *t == topic)
            .map(|(_, i, id)| (id.clone(), format!("e{i}")))
            .collect();
        events.sort_by_key(|(id, _)| stream_id(id));
        let (first, rest) = events.split_first().expect("events");
        let mut replay = subscribe(&fresh, &format!("/subscribe/{topic}"), Some(&first.0)).await;
        let seen = read_events(&mut replay, rest.len()).await;
        assert!(seen.gaps.is_empty(), "{topic}: {:?}", seen.gaps);
        assert_eq!(seen.events, rest, "{topic}");
        let key = format!("{{ssegate}}:t:{topic}");
        match redis.cmd(&["PTTL", &key]) {
            redis::Value::Int(ms) => assert!(ms > 0, "{key} expires: PTTL {ms}"),
            other => panic!("PTTL {key}: {other:?}"),
        }
    }
}

/// How many times Redis ran a script by its hash (`EVALSHA`) so far.
fn script_calls(redis: &Redis) -> u64 {
    let info = match redis.cmd(&["INFO", "commandstats"]) {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO: {other:?}"),
    };
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

/// A client coming from a node whose tail is ahead resumes on a node whose
/// tail is behind (its Redis traffic held up): the node waits for its tail
/// instead of calling the id "future", and the resume is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_ahead_of_the_nodes_tail_waits_for_it() {
    let Some(redis) = Redis::start() else { return };
    let upstream = format!("127.0.0.1:{}", redis.port).parse().expect("addr");
    let proxy = Proxy::start(upstream).await;
    let a = node(&redis.url(), &[]);
    let behind = node(&proxy.url(), &[]);
    // Both tails are live.
    let warm = publish_ok(&a, "lag/w", "warm").await;
    let mut warm_sub = subscribe(&behind, "/subscribe/lag/w", None).await;
    let first = publish_ok(&a, "lag/w", "first").await;
    assert_eq!(read_events(&mut warm_sub, 1).await.events[0].0, first);
    drop(warm_sub);
    let _ = warm;
    proxy.stall();
    let one = publish_ok(&a, "lag/w", "one").await;
    let two = publish_ok(&a, "lag/w", "two").await;
    let url = behind.url("/subscribe/lag/w");
    let resume = tokio::spawn(async move {
        common::Subscriber::open_with(&common::client(), &url, Some(&one)).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.resume();
    let mut resumed = resume.await.expect("subscribe");
    let seen = read_events(&mut resumed, 1).await;
    assert!(seen.gaps.is_empty(), "not a future id: {:?}", seen.gaps);
    assert_eq!(seen.events, vec![(two, "two".to_owned())]);
}

/// The gap proof at its edges, on a node whose rings have the topic and on
/// one that reads it from Redis: the oldest entry's predecessor resumes
/// without a gap, one older gets a gap and the buffer; expired events, a
/// key gone, ids of another epoch, from the future, malformed or too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_reported_exactly_when_owed() {
    let Some(redis) = Redis::start() else { return };
    let args = ["--buffer-events", "16", "--buffer-ttl", "3s"];
    let a = node(&redis.url(), &args);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(publish_ok(&a, "edge/g", &format!("g{i}")).await);
    }
    let fresh = node(&redis.url(), &args);
    for (name, server) in [("rings", &a), ("redis", &fresh)] {
        // g3 is the predecessor of the oldest kept (g4): exact.
        let mut exact = subscribe(server, "/subscribe/edge/g", Some(&ids[3])).await;
        let seen = read_events(&mut exact, 16).await;
        assert!(seen.gaps.is_empty(), "{name}: {:?}", seen.gaps);
        assert_eq!(seen.data().first(), Some(&"g4"), "{name}");
        // g2: g3 was evicted.
        let mut lost = subscribe(server, "/subscribe/edge/g", Some(&ids[2])).await;
        let seen = read_events(&mut lost, 16).await;
        assert_eq!(seen.gaps.len(), 1, "{name}");
        assert!(seen.gaps[0].contains(&ids[2]), "{name}: {:?}", seen.gaps);
        assert_eq!(seen.data().first(), Some(&"g4"), "{name}");
    }
    // Ids of no use: a gap, then everything buffered.
    let epoch = epoch_of(&ids[0]);
    let (ms, _) = stream_id(&ids[19]);
    let other_epoch = format!("0000000000000-{ms}-0");
    let future = format!("{epoch}-{}-0", ms + 3_600_000);
    let too_long = format!("{epoch}-{}", "1".repeat(120));
    for bad in [
        other_epoch.as_str(),
        future.as_str(),
        "not-an-id",
        too_long.as_str(),
    ] {
        for server in [&a, &fresh] {
            let mut sub = subscribe(server, "/subscribe/edge/g", Some(bad)).await;
            let seen = read_events(&mut sub, 16).await;
            assert_eq!(seen.gaps.len(), 1, "{bad}");
            assert_eq!(seen.data().first(), Some(&"g4"), "{bad}");
        }
    }
    // A quiet topic whose key expired, resumed with a newer id of another
    // topic: nothing of it can be missing.
    tokio::time::sleep(Duration::from_millis(4_200)).await;
    assert_eq!(
        redis.cmd(&["EXISTS", "{ssegate}:t:edge/g"]),
        redis::Value::Int(0)
    );
    let newer = publish_ok(&a, "edge/h", "h0").await;
    let late = node(&redis.url(), &args);
    let mut both = subscribe(&late, "/subscribe?topic=edge/g&topic=edge/h", Some(&newer)).await;
    let h1 = publish_ok(&a, "edge/h", "h1").await;
    let seen = read_events(&mut both, 1).await;
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(seen.events, vec![(h1, "h1".to_owned())]);
    // Events after the id expired: a gap.
    let mut expired = subscribe(&late, "/subscribe/edge/g", Some(&ids[10])).await;
    let (seen, _) = read_until_quiet(&mut expired, Duration::from_millis(500)).await;
    assert_eq!(seen.gaps.len(), 1, "{seen:?}");
    assert!(seen.events.is_empty());
    // The newest event of the topic, older than buffer_ttl + 1s, its key
    // gone: an event after it would be gone too, so nothing proves there
    // was none (Redis keeps no trace of an expired key): a gap, said once.
    let mut newest = subscribe(&late, "/subscribe/edge/g", Some(&ids[19])).await;
    let (seen, _) = read_until_quiet(&mut newest, Duration::from_millis(500)).await;
    assert_eq!((seen.gaps.len(), seen.events.len()), (1, 0), "{seen:?}");
}

/// Buffers are the cluster's: a node configured otherwise refuses to start
/// with one line that says what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_other_buffers_refuses_to_start() {
    let Some(redis) = Redis::start() else { return };
    let first = node(&redis.url(), &["--buffer-events", "64"]);
    let (status, stderr) = refused_start(&redis.url(), &["--buffer-events", "16"]);
    assert!(!status.success());
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("buffer_events = 16"))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    assert!(lines[0].contains("buffer_events = 64"), "{}", lines[0]);
    assert!(
        lines[0].contains("every node must use the same"),
        "{}",
        lines[0]
    );
    // The node that was first is unaffected.
    let _ = publish_ok(&first, "meta/t", "still fine").await;
    // A Redis that is not there: one line too.
    let (status, stderr) = refused_start("redis://127.0.0.1:1/0", &[]);
    assert!(!status.success());
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
}

/// The reply's `subscribers` counts every node's streams, as reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_reply_counts_subscribers_on_every_node() {
    let Some(redis) = Redis::start() else { return };
    let nodes: Vec<ServerProcess> = (0..3)
        .map(|_| node(&redis.url(), &["--heartbeat-interval", "1s"]))
        .collect();
    let mut held = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..=n {
            held.push(subscribe(node, "/subscribe/count/c", None).await);
        }
    }
    // Reports come every second: the count reaches 6 on any node.
    for node in &nodes {
        let url = node.url("/publish/count/c");
        eventually("every node's streams are counted", || {
            let url = url.clone();
            async move {
                let reply = common::publish_to(&common::client(), &url, "x").await;
                reply.subscribers == 6
            }
        })
        .await;
    }
    // A node's streams gone, it counts them out.
    held.truncate(3);
    let url = nodes[2].url("/publish/count/c");
    eventually("closed streams are counted out", || {
        let url = url.clone();
        async move {
            common::publish_to(&common::client(), &url, "x")
                .await
                .subscribers
                == 3
        }
    })
    .await;
}

/// The seam under fire: a publisher flat out while clients hop between
/// random nodes every few hundred milliseconds with the last id they saw
/// (header or query): each client's union of what it received is every
/// event from its first one on, once, in order, with no `gap` (the buffers
/// hold every event, so none is owed). The publisher goes on, flat out for
/// `MIN_EVENTS` and then every 5 ms, until every client has hopped
/// `MIN_HOPS` times under it (however fast publishes are), within
/// `MAX_EVENTS`, fewer than one topic buffer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hopping_between_nodes_miss_nothing_and_see_nothing_twice() {
    let Some(redis) = Redis::start() else { return };
    let nodes: Arc<Vec<ServerProcess>> =
        Arc::new((0..3).map(|_| node(&redis.url(), &[])).collect());
    const MIN_EVENTS: usize = 400;
    const MAX_EVENTS: usize = 1000;
    const N_CLIENTS: usize = 12;
    const MIN_HOPS: usize = 4;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hops_of: Arc<Vec<AtomicUsize>> =
        Arc::new((0..N_CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let publisher = {
        let (nodes, done, hops_of) = (Arc::clone(&nodes), Arc::clone(&done), Arc::clone(&hops_of));
        tokio::spawn(async move {
            let client = common::client();
            let mut published = Vec::new();
            let hopped_enough = || hops_of.iter().all(|h| h.load(Ordering::SeqCst) >= MIN_HOPS);
            for i in 0..MAX_EVENTS {
                if i >= MIN_EVENTS {
                    if hopped_enough() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let url = nodes[i % nodes.len()].url("/publish/storm/s");
                let reply = common::publish_to(&client, &url, format!("e{i}")).await;
                published.push((reply.id, format!("e{i}")));
            }
            done.store(true, Ordering::SeqCst);
            published
        })
    };
    let mut clients = Vec::new();
    for c in 0..N_CLIENTS {
        let (nodes, done, hops_of) = (Arc::clone(&nodes), Arc::clone(&done), Arc::clone(&hops_of));
        clients.push(tokio::spawn(async move {
            // A small xorshift per client: hops and dwell times vary.
            let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (c as u64 + 1);
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut seen: Vec<(String, String)> = Vec::new();
            let mut gaps = Vec::new();
            let mut hops = 0;
            loop {
                let node = &nodes[(next() % 3) as usize];
                let last = seen.last().map(|(id, _)| id.clone());
                let mut sub = match (&last, next() % 2) {
                    (Some(id), 0) => {
                        let query = format!("/subscribe/storm/s?last_event_id={id}");
                        subscribe(node, &query, None).await
                    }
                    _ => subscribe(node, "/subscribe/storm/s", last.as_deref()).await,
                };
                hops += 1;
                let dwell = Duration::from_millis(100 + next() % 400);
                let finished = done.load(Ordering::SeqCst);
                let (more, _) = match finished {
                    // After the last publish: read until everything is in.
                    true => read_until_quiet(&mut sub, Duration::from_millis(800)).await,
                    false => read_for(&mut sub, dwell).await,
                };
                seen.extend(more.events);
                gaps.extend(more.gaps);
                // Counted once the hop's reading is done: the publisher
                // was still publishing through all of it.
                hops_of[c].fetch_add(1, Ordering::SeqCst);
                if finished {
                    return (seen, gaps, hops);
                }
            }
        }));
    }
    let published = publisher.await.expect("publisher");
    for (c, client) in clients.into_iter().enumerate() {
        let (seen, gaps, hops) = client.await.expect("client");
        assert!(gaps.is_empty(), "client {c}: {gaps:?}");
        assert!(hops > MIN_HOPS, "client {c} hopped {hops} times");
        let first = seen.first().expect("events").0.clone();
        let from = published
            .iter()
            .position(|(id, _)| *id == first)
            .expect("a published id");
        let expected = &published[from..];
        if seen != expected {
            let at = seen
                .iter()
                .zip(expected)
                .position(|(got, want)| got != want)
                .unwrap_or(seen.len().min(expected.len()));
            panic!(
                "client {c} after {hops} hops: {} events seen, {} expected, first \
                 difference at {at}: got {:?}, expected {:?}",
                seen.len(),
                expected.len(),
                seen.get(at),
                expected.get(at)
            );
        }
    }
}

/// Reads what comes within `dwell`, then lets the stream go.
async fn read_for(
    subscriber: &mut common::Subscriber,
    dwell: Duration,
) -> (common::cluster::Seen, bool) {
    let deadline = tokio::time::Instant::now() + dwell;
    let mut seen = common::cluster::Seen::default();
    loop {
        match tokio::time::timeout_at(deadline, subscriber.next_or_end()).await {
            Err(_) => return (seen, false),
            Ok(None) => return (seen, true),
            Ok(Some(event)) => seen.push(event),
        }
    }
}

/// The id-only block a stream writes once it is live, in cluster mode: a
/// cluster id, at the newest event (or the epoch's start before any), from
/// which another node resumes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_position_is_a_cluster_id_any_node_resumes_from() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    let position_of = |node: &ServerProcess, path: &str| {
        let url = node.url(path);
        async move {
            let response = common::client().get(url).send().await.expect("subscribe");
            let mut raw = common::RawSubscriber::from_response(response);
            let text = String::from_utf8_lossy(raw.read_frames(2).await).into_owned();
            let block = text
                .split("\n\n")
                .nth(1)
                .expect("a second block")
                .to_owned();
            let id = block.strip_prefix("id: ").expect("an id-only block");
            assert!(!id.contains('\n'), "{block:?}");
            (id.to_owned(), raw)
        }
    };
    // Before anything is published.
    let (before, _first) = position_of(&a, "/subscribe/pos").await;
    let one = publish_ok(&a, "pos", "one").await;
    assert_eq!(epoch_of(&before), epoch_of(&one), "an id of this epoch");
    let mut resumed = subscribe(&b, "/subscribe/pos", Some(&before)).await;
    let seen = read_events(&mut resumed, 1).await;
    assert_eq!(seen.events, vec![(one.clone(), "one".to_owned())]);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    // After publishes (the newest on another topic): the newest id.
    let other = publish_ok(&a, "elsewhere", "x").await;
    let (after, _second) = position_of(&a, "/subscribe/pos").await;
    // (Node a's tail may not have read `other` back yet: then `one`.)
    assert!(
        after == other || after == one,
        "{after} is neither {other} nor {one}"
    );
    let two = publish_ok(&b, "pos", "two").await;
    let mut resumed = subscribe(&b, "/subscribe/pos", Some(&after)).await;
    let seen = read_events(&mut resumed, 1).await;
    assert_eq!(seen.events, vec![(two, "two".to_owned())]);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
}

#[tokio::test]
async fn the_topic_api_counts_subscribers_on_every_node_and_gives_cluster_ids() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis.url(), &["--heartbeat-interval", "1s"]);
    let b = node(&redis.url(), &["--heartbeat-interval", "1s"]);
    let _on_a = subscribe(&a, "/subscribe/api/t", None).await;
    let _on_b1 = subscribe(&b, "/subscribe/api/t", None).await;
    let _on_b2 = subscribe(&b, "/subscribe/api/t", None).await;
    let first = publish_ok(&a, "api/t", "one").await;
    let last = publish_ok(&b, "api/t", "two").await;
    for node in [&a, &b] {
        let url = node.url("/topics/api/t");
        eventually("every node's streams and both events show", || {
            let url = url.clone();
            let (first, last) = (first.clone(), last.clone());
            async move {
                let response = common::client().get(url).send().await.expect("topic");
                if response.status() != 200 {
                    return false;
                }
                let topic: serde_json::Value =
                    serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
                topic["subscribers"] == 3
                    && topic["last_event_id"] == last.as_str()
                    && topic["oldest_buffered_id"] == first.as_str()
                    && topic["buffered_events"] == 2
            }
        })
        .await;
    }
}
