//! Round trip, framing (byte-exact and through a real SSE parser), headers.

mod common;

use common::{RawSubscriber, Subscriber, TestServer, config, publish};

#[tokio::test]
async fn round_trip_reply_and_headers() {
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/orders/42/status", None).await;
    let headers = &subscriber.response_headers;
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");

    let published = publish(&server, "orders/42/status", "shipped").await;
    assert_eq!(published.topic, "orders/42/status");
    assert_eq!(published.subscribers, 1);
    let event = subscriber.next().await;
    assert_eq!(event.data, "shipped");
    assert_eq!(event.id, published.id);
    assert_eq!(event.event, "message");
    assert_eq!(
        event.retry, None,
        "retry is its own block, before any event"
    );
}

#[tokio::test]
async fn publish_reply_is_exact_json() {
    let server = TestServer::start(config()).await;
    let response = common::client()
        .post(server.url("/publish/t"))
        .body("x")
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    let object = body.as_object().expect("object");
    assert_eq!(object.len(), 3, "{body}");
    assert!(object["id"].is_string());
    assert_eq!(object["topic"], "t");
    assert_eq!(object["subscribers"], 0);
}

#[tokio::test]
async fn a_subscriber_gets_only_events_published_after_it_started() {
    let server = TestServer::start(config()).await;
    publish(&server, "t", "before").await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/t", None).await;
    publish(&server, "t", "after").await;
    assert_eq!(subscriber.next().await.data, "after");
}

#[tokio::test]
async fn frames_are_byte_exact() {
    let server = TestServer::start(config()).await;
    let mut raw = RawSubscriber::open(&server, "/subscribe/bytes").await;
    let cases: [(&str, &str, &str); 8] = [
        ("", "plain", "data: plain\n"),
        ("?event=price.v2", "1", "event: price.v2\ndata: 1\n"),
        ("", "a\nb", "data: a\ndata: b\n"),
        ("", "a\r\nb", "data: a\ndata: b\n"),
        ("", "a\rb", "data: a\ndata: b\n"),
        ("", "", "data: \n"),
        ("", "ünïcødé 😀\n", "data: ünïcødé 😀\ndata: \n"),
        ("", " lead\r\r", "data:  lead\ndata: \ndata: \n"),
    ];
    let mut events = Vec::new();
    for (query, body, lines) in cases {
        let reply = common::publish_to(
            &common::client(),
            &server.url(&format!("/publish/bytes{query}")),
            body,
        )
        .await;
        events.extend_from_slice(format!("id: {}\n{lines}\n", reply.id).as_bytes());
    }
    // The stream went live before any publish of this run: its position
    // block says sequence 0 of this run.
    let first_id = String::from_utf8_lossy(&events[4..]).into_owned();
    let position = common::forge_id(first_id.split('\n').next().expect("id"), 0);
    let mut expected = format!("retry: 3000\n\nid: {position}\n\n").into_bytes();
    expected.extend_from_slice(&events);
    let received = raw.read_frames(2 + cases.len()).await;
    assert_eq!(
        String::from_utf8_lossy(received),
        String::from_utf8_lossy(&expected)
    );
}

#[tokio::test]
async fn framing_round_trips_through_an_sse_parser() {
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/parse", None).await;
    let bodies = [
        "one line",
        "two\nlines",
        "crlf\r\nlines",
        "lone\rcr",
        "",
        "\n",
        "trailing\n",
        "ünïcødé ✓ 😀",
        "  spaces  ",
        "data: looks like a field",
        ": looks like a comment",
        "id: 999",
    ];
    for body in bodies {
        publish(&server, "parse", body).await;
    }
    for body in bodies {
        let event = subscriber.next().await;
        let as_client_sees = body.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(event.data, as_client_sees, "body {body:?}");
    }
}

#[tokio::test]
async fn event_type_reaches_the_client() {
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/typed", None).await;
    common::publish_to(
        &common::client(),
        &server.url("/publish/typed?event=order.created"),
        "{}",
    )
    .await;
    let event = subscriber.next().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("order.created", "{}")
    );
}

#[tokio::test]
async fn every_subscriber_of_a_topic_gets_every_event_and_others_get_none() {
    let server = TestServer::start(config()).await;
    let mut a1 = Subscriber::open(&server, "/subscribe/a", None).await;
    let mut a2 = Subscriber::open(&server, "/subscribe/a", None).await;
    let mut b = Subscriber::open(&server, "/subscribe/b", None).await;
    let published = publish(&server, "a", "for a").await;
    assert_eq!(published.subscribers, 2);
    publish(&server, "b", "for b").await;
    assert_eq!(a1.next().await.data, "for a");
    assert_eq!(a2.next().await.data, "for a");
    assert_eq!(b.next().await.data, "for b");
}

#[tokio::test]
async fn ids_are_totally_ordered_across_topics() {
    let server = TestServer::start(config()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let topic = if i % 3 == 0 { "x" } else { "y" };
        ids.push(publish(&server, topic, format!("{i}")).await.id);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids grow in publish order, as strings too");
}

#[tokio::test]
async fn subscribes_that_hyper_answers_work_the_same() {
    // A head too large to be served directly, and HTTP/2: both through hyper.
    let server = TestServer::start(config()).await;
    let response = common::client()
        .get(server.url("/subscribe/paths"))
        .header("X-Padding", "p".repeat(6000))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut over_h2 =
        Subscriber::open_with(&common::h2_client(), &server.url("/subscribe/paths"), None).await;
    let mut raw = RawSubscriber::from_response(response);
    let published = publish(&server, "paths", "both").await;
    assert_eq!(published.subscribers, 2);
    let position = common::forge_id(&published.id, 0);
    let expected = format!(
        "retry: 3000\n\nid: {position}\n\nid: {}\ndata: both\n\n",
        published.id
    );
    assert_eq!(String::from_utf8_lossy(raw.read_frames(3).await), expected);
    assert_eq!(over_h2.next().await.data, "both");
}
