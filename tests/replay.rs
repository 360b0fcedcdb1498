//! Resuming with `Last-Event-ID` (header and both query spellings), multi-topic
//! replay order, and the `gap` event whenever the buffer cannot prove that
//! nothing is missing.

mod common;

use std::time::Duration;

use common::{Subscriber, TestServer, config, eventually, forge_id, metric, publish};
use eventsource_stream::Event;

/// Publishes `bodies` to `topic`, returning their ids in order.
async fn publish_all(server: &TestServer, topic: &str, bodies: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for body in bodies {
        ids.push(publish(server, topic, body.to_string()).await.id);
    }
    ids
}

fn data(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

fn assert_gap(event: &Event, last_event_id: &str) {
    assert_eq!(event.event, "gap", "expected a gap event, got {event:?}");
    let json: serde_json::Value = serde_json::from_str(&event.data).expect("gap data is JSON");
    assert_eq!(json, serde_json::json!({ "last_event_id": last_event_id }));
}

#[tokio::test]
async fn resume_by_header_and_by_both_query_spellings() {
    let server = TestServer::start(config()).await;
    let ids = publish_all(&server, "r", &["e1", "e2", "e3"]).await;
    for (path, header) in [
        ("/subscribe/r".to_string(), Some(ids[0].as_str())),
        (format!("/subscribe/r?last_event_id={}", ids[0]), None),
        (format!("/subscribe/r?lastEventId={}", ids[0]), None),
        (format!("/subscribe?topic=r&last_event_id={}", ids[0]), None),
    ] {
        let mut subscriber = Subscriber::open(&server, &path, header).await;
        let replayed = subscriber.take(2).await;
        assert_eq!(data(&replayed), ["e2", "e3"], "{path} {header:?}");
        assert_eq!(replayed[1].id, ids[2]);
    }
    // After replay the stream goes live, without loss or repeat.
    let mut subscriber = Subscriber::open(&server, "/subscribe/r", Some(&ids[1])).await;
    publish(&server, "r", "e4").await;
    assert_eq!(data(&subscriber.take(2).await), ["e3", "e4"]);
}

#[tokio::test]
async fn the_header_wins_then_last_event_id_then_last_event_id_camel() {
    let server = TestServer::start(config()).await;
    let ids = publish_all(&server, "w", &["e1", "e2", "e3"]).await;
    let path = format!(
        "/subscribe/w?last_event_id={}&lastEventId={}",
        ids[1], ids[1]
    );
    let mut by_header = Subscriber::open(&server, &path, Some(&ids[0])).await;
    assert_eq!(data(&by_header.take(2).await), ["e2", "e3"]);

    let path = format!(
        "/subscribe/w?lastEventId={}&last_event_id={}",
        ids[1], ids[0]
    );
    let mut by_snake = Subscriber::open(&server, &path, None).await;
    assert_eq!(data(&by_snake.take(2).await), ["e2", "e3"]);
}

#[tokio::test]
async fn resuming_at_the_newest_event_replays_nothing_then_goes_live() {
    let server = TestServer::start(config()).await;
    let ids = publish_all(&server, "n", &["e1", "e2"]).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/n", Some(&ids[1])).await;
    publish(&server, "n", "e3").await;
    assert_eq!(subscriber.next().await.data, "e3");
    assert_eq!(metric(server.addr, "ssegate_gaps_total").await, 0.0);
}

#[tokio::test]
async fn multi_topic_replay_is_in_publish_order() {
    let server = TestServer::start(config()).await;
    let a1 = publish(&server, "a", "a1").await.id;
    publish(&server, "b", "b1").await;
    publish(&server, "c", "c1").await;
    publish(&server, "a", "a2").await;
    publish(&server, "b", "b2").await;
    publish(&server, "a", "a3").await;
    let mut subscriber = Subscriber::open(
        &server,
        &format!("/subscribe?topic=a&topic=b&last_event_id={a1}"),
        None,
    )
    .await;
    let replayed = subscriber.take(4).await;
    assert_eq!(data(&replayed), ["b1", "a2", "b2", "a3"]);
    publish(&server, "c", "c2").await;
    publish(&server, "b", "b3").await;
    assert_eq!(subscriber.next().await.data, "b3");
    assert_eq!(
        metric(server.addr, "ssegate_events_replayed_total").await,
        4.0
    );
}

#[tokio::test]
async fn a_topic_without_history_does_not_spoil_an_exact_resume() {
    let server = TestServer::start(config()).await;
    let ids = publish_all(&server, "busy", &["e1", "e2"]).await;
    let path = format!(
        "/subscribe?topic=busy&topic=never-used&last_event_id={}",
        ids[0]
    );
    let mut subscriber = Subscriber::open(&server, &path, None).await;
    let event = subscriber.next().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("message", "e2")
    );
}

#[tokio::test]
async fn gap_after_eviction_then_everything_still_buffered() {
    let mut config = config();
    config.buffer_events = 4;
    let server = TestServer::start(config).await;
    let bodies: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let ids = publish_all(&server, "ev", &refs).await;

    let mut subscriber = Subscriber::open(&server, "/subscribe/ev", Some(&ids[1])).await;
    assert_gap(&subscriber.next().await, &ids[1]);
    assert_eq!(data(&subscriber.take(4).await), ["e7", "e8", "e9", "e10"]);
    publish(&server, "ev", "e11").await;
    assert_eq!(subscriber.next().await.data, "e11");

    // Resuming exactly at the oldest lost point is a gap; just after it is not.
    let mut exact = Subscriber::open(&server, "/subscribe/ev", Some(&ids[6])).await;
    assert_eq!(data(&exact.take(4).await), ["e8", "e9", "e10", "e11"]);
    assert_eq!(metric(server.addr, "ssegate_gaps_total").await, 1.0);
}

#[tokio::test]
async fn gap_after_ttl_expiry_with_a_subscriber_keeping_the_topic() {
    let mut config = config();
    config.buffer_ttl = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let _keeper = Subscriber::open(&server, "/subscribe/ttl", None).await;
    let ids = publish_all(&server, "ttl", &["e1", "e2"]).await;
    eventually("the events expired", || async {
        metric(server.addr, "ssegate_buffered_events").await == 0.0
    })
    .await;
    // e2 expired after e1: resuming from e1 cannot be exact.
    let mut subscriber = Subscriber::open(&server, "/subscribe/ttl", Some(&ids[0])).await;
    assert_gap(&subscriber.next().await, &ids[0]);
    // Nothing after e2 was lost, so resuming from e2 is exact and silent.
    let mut exact = Subscriber::open(&server, "/subscribe/ttl", Some(&ids[1])).await;
    publish(&server, "ttl", "e3").await;
    assert_eq!(subscriber.next().await.data, "e3");
    assert_eq!(exact.next().await.data, "e3");
    assert_eq!(metric(server.addr, "ssegate_gaps_total").await, 1.0);
}

#[tokio::test]
async fn gap_after_the_idle_topic_was_removed() {
    let mut config = config();
    config.buffer_ttl = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let ids = publish_all(&server, "gone", &["e1", "e2"]).await;
    eventually("the idle topic was removed", || async {
        metric(server.addr, "ssegate_topics").await == 0.0
    })
    .await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/gone", Some(&ids[0])).await;
    assert_gap(&subscriber.next().await, &ids[0]);
    let mut exact = Subscriber::open(&server, "/subscribe/gone", Some(&ids[1])).await;
    publish(&server, "gone", "e3").await;
    assert_eq!(subscriber.next().await.data, "e3");
    assert_eq!(exact.next().await.data, "e3");
}

#[tokio::test]
async fn gap_for_an_id_from_before_a_restart() {
    let before = TestServer::start(config()).await;
    let old_id = publish(&before, "r", "from the old run").await.id;
    before.shutdown().await.expect("clean stop");

    let after = TestServer::start(config()).await;
    publish(&after, "r", "new1").await;
    publish(&after, "r", "new2").await;
    let mut subscriber = Subscriber::open(&after, "/subscribe/r", Some(&old_id)).await;
    assert_gap(&subscriber.next().await, &old_id);
    assert_eq!(data(&subscriber.take(2).await), ["new1", "new2"]);
}

#[tokio::test]
async fn gap_for_malformed_foreign_future_and_oversized_ids() {
    let server = TestServer::start(config()).await;
    let ids = publish_all(&server, "g", &["e1", "e2"]).await;
    let future = forge_id(&ids[1], 1_000_000);
    let uppercase = ids[0].to_uppercase();
    let oversized = format!("{}{}", ids[0], "0".repeat(200));
    let foreign = "0123456789abcdef-0000000000000001".to_string();
    for bad in [
        "abc", "-", "42", &foreign, &future, &uppercase, &oversized, "é ☃",
    ] {
        // Through the header where it is a valid header value, else the query.
        let mut subscriber = if bad.is_ascii() {
            Subscriber::open(&server, "/subscribe/g", Some(bad)).await
        } else {
            let encoded: String = form_urlencoded::byte_serialize(bad.as_bytes()).collect();
            Subscriber::open(
                &server,
                &format!("/subscribe/g?last_event_id={encoded}"),
                None,
            )
            .await
        };
        assert_gap(&subscriber.next().await, bad);
        assert_eq!(
            data(&subscriber.take(2).await),
            ["e1", "e2"],
            "after gap for {bad:?}"
        );
    }
}

#[tokio::test]
async fn an_empty_resume_id_means_start_live() {
    let server = TestServer::start(config()).await;
    publish(&server, "e", "old").await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/e?last_event_id=", None).await;
    publish(&server, "e", "new").await;
    assert_eq!(subscriber.next().await.data, "new");
}

#[tokio::test]
async fn the_gap_event_is_followed_by_replay_of_every_topic_in_order() {
    let mut config = config();
    config.buffer_events = 2;
    let server = TestServer::start(config).await;
    let a1 = publish(&server, "a", "a1").await.id;
    publish(&server, "a", "a2").await;
    publish(&server, "b", "b1").await;
    publish(&server, "a", "a3").await;
    publish(&server, "a", "a4").await;
    // Topic a lost a2 (evicted); b lost nothing after a1.
    let mut subscriber = Subscriber::open(
        &server,
        &format!("/subscribe?topic=a&topic=b&lastEventId={a1}"),
        None,
    )
    .await;
    assert_gap(&subscriber.next().await, &a1);
    assert_eq!(data(&subscriber.take(3).await), ["b1", "a3", "a4"]);
}

#[tokio::test]
async fn gap_after_eviction_by_the_byte_bound() {
    let mut config = config();
    config.buffer_bytes = 4 * 1024;
    let server = TestServer::start(config).await;
    let body = "x".repeat(1500);
    let first = publish(&server, "big", body.clone()).await.id;
    for _ in 0..4 {
        publish(&server, "big", body.clone()).await;
    }
    let mut subscriber = Subscriber::open(&server, "/subscribe/big", Some(&first)).await;
    assert_gap(&subscriber.next().await, &first);
    assert_eq!(
        subscriber.take(2).await.len(),
        2,
        "two 1.5 KiB events fit in 4 KiB"
    );
}

#[tokio::test]
async fn a_removed_topic_remembers_what_it_covered_and_spoils_no_other() {
    let mut config = config();
    config.buffer_ttl = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let ids = publish_all(&server, "rare", &["r1", "r2"]).await;
    eventually("the idle topic was removed", || async {
        metric(server.addr, "ssegate_topics").await == 0.0
    })
    .await;
    // A client that saw everything comes back to the rarely-updated topic:
    // nothing was lost, so no gap, also when another, never-used topic joins.
    let path = "/subscribe?topic=rare&topic=never-published";
    let mut exact = Subscriber::open(&server, path, Some(&ids[1])).await;
    let mut lost = Subscriber::open(&server, path, Some(&ids[0])).await;
    assert_gap(&lost.next().await, &ids[0]);
    publish(&server, "never-published", "n1").await;
    assert_eq!(exact.next().await.data, "n1");
    assert_eq!(lost.next().await.data, "n1");
}

#[tokio::test]
async fn an_empty_last_event_id_header_does_not_hide_the_query() {
    let server = TestServer::start(config()).await;
    let ids = publish_all(&server, "q", &["e1", "e2"]).await;
    let path = format!("/subscribe/q?last_event_id={}", ids[0]);
    let mut subscriber = Subscriber::open(&server, &path, Some("")).await;
    assert_eq!(subscriber.next().await.data, "e2");
}
