//! JSON and NDJSON publish bodies: one envelope, or a batch of them published
//! in order and all-or-nothing, with every id in the reply.

mod common;

use common::{Subscriber, TestServer, config, metric, publish};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishedBatch {
    ids: Vec<String>,
    topic: String,
    subscribers: usize,
}

async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let response = common::client()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("publish");
    let status = response.status().as_u16();
    (status, response.text().await.expect("reply body"))
}

#[tokio::test]
async fn an_ndjson_batch_arrives_in_order_with_every_id() {
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/prices", None).await;
    let body = concat!(
        "{\"data\":\"one\"}\n",
        "{\"data\":\"two\\nlines\",\"event\":\"tick\"}\r\n",
        "\n",
        "{\"data\":{\"price\": 3.10}}\n",
    );
    let (status, text) = post(
        &server,
        "/publish/prices?event=quote",
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let reply: PublishedBatch = serde_json::from_str(&text).expect("batch reply");
    assert_eq!(reply.topic, "prices");
    assert_eq!(reply.subscribers, 1);
    assert_eq!(reply.ids.len(), 3);
    assert!(reply.ids.windows(2).all(|pair| pair[0] < pair[1]), "{text}");

    let events = subscriber.take(3).await;
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.id.as_str(), e.event.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (reply.ids[0].as_str(), "quote", "one"),
            (reply.ids[1].as_str(), "tick", "two\nlines"),
            (reply.ids[2].as_str(), "quote", r#"{"price": 3.10}"#),
        ]
    );
    assert_eq!(
        metric(server.addr, "ssegate_events_published_total").await,
        3.0
    );
}

#[tokio::test]
async fn a_bad_line_refuses_the_whole_batch() {
    let server = TestServer::start(config()).await;
    let cases = [
        (
            "{\"data\":\"a\"}\n{\"data\":\"b\"}\n{\"dat\":\"c\"}\n",
            "line 3: ",
        ),
        ("{\"data\":\"a\"}\nnot json\n", "line 2: "),
        ("{\"data\":\"a\",\"event\":\"gap\"}\n", "line 1: "),
        (
            "{\"data\":\"a\"}\n{\"data\":\"b\",\"event\":\"a b\"}\n",
            "line 2: ",
        ),
        ("\n\n", "no events"),
    ];
    for (body, expected) in cases {
        let (status, reason) = post(&server, "/publish/t", "application/x-ndjson", body).await;
        assert_eq!(status, 400, "{body:?}: {reason}");
        assert!(reason.contains(expected), "{body:?}: {reason}");
        assert_eq!(
            reason.trim_end().lines().count(),
            1,
            "one-line reason: {reason}"
        );
    }
    // Nothing of any refused batch was published: a resume from the start
    // of the run finds only the gap marker, no event.
    let first = publish(&server, "t", "after").await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/t?last_event_id=0", None).await;
    let gap = subscriber.next().await;
    assert_eq!(gap.event, "gap");
    let event = subscriber.next().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first.id.as_str(), "after")
    );
    assert_eq!(
        metric(server.addr, "ssegate_events_published_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_json_envelope_is_one_event_and_other_json_is_verbatim() {
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/t", None).await;

    let (status, text) = post(
        &server,
        "/publish/t",
        "application/json; charset=utf-8",
        r#"{"data":"hello","event":"greeting"}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let reply: common::Published = serde_json::from_str(&text).expect("single reply");
    let event = subscriber.next().await;
    assert_eq!(
        (event.id.as_str(), event.event.as_str(), event.data.as_str()),
        (reply.id.as_str(), "greeting", "hello")
    );

    // A JSON document that is not an envelope is the data itself, as the
    // contract says of every body.
    let document = r#"{"price": 3, "data": "x"}"#;
    let (status, text) = post(&server, "/publish/t", "application/json", document).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(subscriber.next().await.data, document);

    let (status, reason) = post(
        &server,
        "/publish/t",
        "application/json",
        r#"{"data":"x","event":"gap"}"#,
    )
    .await;
    assert_eq!(status, 400, "{reason}");
    assert!(reason.contains("reserved"), "{reason}");
}

#[tokio::test]
async fn batch_limits() {
    let mut config = config();
    config.max_event_bytes = 10;
    config.max_batch_bytes = 200;
    config.buffer_events = 3;
    let server = TestServer::start(config).await;

    let over_event = "{\"data\":\"ok\"}\n{\"data\":\"0123456789a\"}\n";
    let (status, reason) = post(&server, "/publish/t", "application/x-ndjson", over_event).await;
    assert_eq!(status, 413, "{reason}");
    assert!(
        reason.contains("line 2") && reason.contains("max_event_bytes"),
        "{reason}"
    );

    let over_body = "{\"data\":\"x\"}\n".repeat(20);
    let (status, reason) = post(&server, "/publish/t", "application/x-ndjson", over_body).await;
    assert_eq!(status, 413, "{reason}");
    assert!(reason.contains("max_batch_bytes"), "{reason}");

    let over_ring = "{\"data\":\"x\"}\n".repeat(4);
    let (status, reason) = post(&server, "/publish/t", "application/x-ndjson", over_ring).await;
    assert_eq!(status, 413, "{reason}");
    assert!(reason.contains("buffer_events (3)"), "{reason}");

    let fits = "{\"data\":\"x\"}\n".repeat(3);
    let (status, text) = post(&server, "/publish/t", "application/x-ndjson", fits).await;
    assert_eq!(status, 200, "{text}");

    let (status, reason) = post(
        &server,
        "/publish/t",
        "application/x-ndjson",
        vec![b'{', 0xff, b'}'],
    )
    .await;
    assert_eq!(status, 400, "{reason}");
    assert!(reason.contains("UTF-8"), "{reason}");
}

#[tokio::test]
async fn concurrent_batches_never_interleave() {
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/t", None).await;
    let batch = |name: &str| -> String {
        (0..50)
            .map(|i| format!("{{\"data\":\"{name}-{i}\"}}\n"))
            .collect()
    };
    let (a, b) = tokio::join!(
        post(&server, "/publish/t", "application/x-ndjson", batch("a")),
        post(&server, "/publish/t", "application/x-ndjson", batch("b")),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let events = subscriber.take(100).await;
    for half in events.chunks(50) {
        let name = &half[0].data[..1];
        let expected: Vec<String> = (0..50).map(|i| format!("{name}-{i}")).collect();
        let got: Vec<&str> = half.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(got, expected);
    }
}
