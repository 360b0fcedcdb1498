//! The seam between replay and live, under a publisher running flat out while
//! clients subscribe and resubscribe: no gap and no duplicate, checked by
//! sequence numbers carried in the payloads (`<topic>:<seq>`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Subscriber, TestServer, client, config, publish_to};

const N_EVENTS: u64 = 2000;
const N_CLIENTS: u64 = 4;

/// Publishes `<topic>:<seq>` for `seq in 0..N_EVENTS`, to each topic in turn,
/// as fast as one keep-alive connection allows.
fn spawn_publisher(server: &TestServer, topics: &'static [&'static str]) {
    let urls: Vec<(&str, String)> = topics
        .iter()
        .map(|topic| (*topic, server.url(&format!("/publish/{topic}"))))
        .collect();
    tokio::spawn(async move {
        let client = client();
        for seq in 0..N_EVENTS {
            for (topic, url) in &urls {
                publish_to(&client, url, format!("{topic}:{seq}")).await;
            }
        }
    });
}

/// What one client has seen of each topic: the first and the next expected
/// sequence number.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: u64,
    next: u64,
}

/// One client: subscribes, reads a few events, disconnects, resumes from the
/// last id it saw (rotating through the three ways to give it), until it has
/// seen every topic to the end. Every event must continue its topic's
/// sequence exactly, and ids must only grow.
async fn resubscribing_client(
    server: Arc<TestServer>,
    topics: &'static [&'static str],
    seed: u64,
) -> HashMap<String, Seen> {
    let topic_query: String = topics.iter().map(|t| format!("topic={t}&")).collect();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut last_id: Option<String> = None;
    let finished = |seen: &HashMap<String, Seen>| {
        seen.len() == topics.len() && seen.values().all(|s| s.next == N_EVENTS)
    };
    for round in seed.. {
        let path = format!("/subscribe?{topic_query}");
        let mut subscriber = match (&last_id, round % 3) {
            (None, _) => Subscriber::open(&server, &path, None).await,
            (Some(id), 0) => Subscriber::open(&server, &path, Some(id)).await,
            (Some(id), 1) => {
                Subscriber::open(&server, &format!("{path}last_event_id={id}"), None).await
            }
            (Some(id), _) => {
                Subscriber::open(&server, &format!("{path}lastEventId={id}"), None).await
            }
        };
        let n_reads = 1 + (round * 7919) % 40;
        for _ in 0..n_reads {
            let event = subscriber.next().await;
            assert_ne!(
                event.event, "gap",
                "client {seed}: unexpected gap {event:?}"
            );
            if let Some(last) = &last_id {
                assert!(
                    event.id > *last,
                    "client {seed}: id {} after {last}",
                    event.id
                );
            }
            last_id = Some(event.id.clone());
            let (topic, seq) = event.data.split_once(':').expect("<topic>:<seq>");
            let seq: u64 = seq.parse().expect("sequence number");
            let entry = seen.entry(topic.to_string()).or_insert(Seen {
                first: seq,
                next: seq,
            });
            assert_eq!(
                seq, entry.next,
                "client {seed}, topic {topic}: got {seq}, expected {} (gap or duplicate)",
                entry.next
            );
            entry.next += 1;
            if finished(&seen) {
                return seen;
            }
        }
    }
    unreachable!("the loop only ends by returning")
}

async fn run_seam(topics: &'static [&'static str]) {
    let mut config = config();
    // Large enough that a client reconnecting under load never loses events
    // to eviction: this test is about the seam, not about lag.
    config.buffer_events = 100_000;
    let server = Arc::new(TestServer::start(config).await);
    let clients: Vec<_> = (0..N_CLIENTS)
        .map(|seed| tokio::spawn(resubscribing_client(Arc::clone(&server), topics, seed)))
        .collect();
    spawn_publisher(&server, topics);
    for client in clients {
        let seen = client.await.expect("client saw every event exactly once");
        // Topics are published round-robin, so a client's starting points
        // differ by at most one between the first topic and the others.
        let first_topic = seen[topics[0]].first;
        for topic in &topics[1..] {
            let first = seen[*topic].first;
            assert!(first == first_topic || first + 1 == first_topic, "{seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_topic_seam_has_no_gap_and_no_duplicate() {
    run_seam(&["seam"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_topic_seam_has_no_gap_and_no_duplicate() {
    run_seam(&["left", "right"]).await;
}
