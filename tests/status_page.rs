//! The built-in status page (`GET /`) and its SSE feed (`/status/events`).
//! The browser suite checks that the page draws; this checks the contract
//! under it.

mod common;

use common::{Subscriber, TestServer, config, publish};
use ssegate::config::StatusPage;

#[tokio::test]
async fn the_page_is_served_and_its_feed_follows_the_gateway() {
    let server = TestServer::start(config()).await;
    let response = common::client()
        .get(server.url("/"))
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = response.text().await.expect("html");
    assert!(html.contains("new EventSource('status/events')"), "{html}");

    let _watcher = Subscriber::open(&server, "/subscribe/busy", None).await;
    let mut feed = Subscriber::open(&server, "/status/events", None).await;
    assert_eq!(feed.response_headers["content-type"], "text/event-stream");
    for _ in 0..3 {
        publish(&server, "busy", "x").await;
    }
    // Snapshots come every second; the first may predate the publishes, and
    // a delivery is counted when the subscriber's write happens.
    let mut snapshot = serde_json::Value::Null;
    for _ in 0..10 {
        snapshot = serde_json::from_str(&feed.next().await.data).expect("JSON snapshot");
        if snapshot["published"] == 3 && snapshot["delivered"] == 3 {
            break;
        }
    }
    assert_eq!(snapshot["published"], 3, "{snapshot}");
    assert_eq!(snapshot["delivered"], 3, "{snapshot}");
    assert_eq!(snapshot["subscribers"], 1, "{snapshot}");
    assert_eq!(snapshot["topics"], 1, "{snapshot}");
    assert_eq!(
        snapshot["busiest_topics"],
        serde_json::json!([{"topic": "busy", "subscribers": 1, "buffered": 3}])
    );
    // The feed is not a topic: nobody can publish into it.
    assert_eq!(
        common::client()
            .post(server.url("/status/events"))
            .send()
            .await
            .expect("post")
            .status(),
        405
    );
}

#[tokio::test]
async fn viewers_are_capped() {
    let server = TestServer::start(config()).await;
    let mut feeds = Vec::new();
    for _ in 0..32 {
        feeds.push(Subscriber::open(&server, "/status/events", None).await);
    }
    let refused = common::client()
        .get(server.url("/status/events"))
        .send()
        .await
        .expect("status feed");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let reason = refused.text().await.expect("reason");
    assert!(reason.contains("viewer limit"), "{reason}");
    drop(feeds);
    common::eventually("a slot to come back", || async {
        common::client()
            .get(server.url("/status/events"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn status_page_false_turns_both_off() {
    let mut config = config();
    config.status_page = StatusPage::Off;
    let server = TestServer::start(config).await;
    assert_eq!(status_page_answers(&server).await, [404, 404]);
}

/// The statuses of `/` and `/status/events`.
async fn status_page_answers(server: &TestServer) -> [u16; 2] {
    let mut statuses = [0; 2];
    for (status, path) in statuses.iter_mut().zip(["/", "/status/events"]) {
        let response = common::client()
            .get(server.url(path))
            .send()
            .await
            .expect("get");
        *status = response.status().as_u16();
    }
    statuses
}

#[tokio::test]
async fn the_status_page_is_served_off_loopback_only_when_asked_for() {
    // The page names every topic: by default (`auto`) only a loopback
    // listener serves it.
    for (listen, page, expected) in [
        ("127.0.0.1:0", StatusPage::Auto, [200, 200]),
        ("[::1]:0", StatusPage::Auto, [200, 200]),
        ("0.0.0.0:0", StatusPage::Auto, [404, 404]),
        ("0.0.0.0:0", StatusPage::On, [200, 200]),
    ] {
        let mut config = config();
        config.listen = listen.parse().expect("listen");
        config.status_page = page;
        let server = TestServer::start(config).await;
        assert_eq!(
            status_page_answers(&server).await,
            expected,
            "{listen} {page:?}"
        );
    }
}

#[tokio::test]
async fn the_feed_ends_on_shutdown() {
    let server = TestServer::start(config()).await;
    let mut feed = Subscriber::open(&server, "/status/events", None).await;
    feed.next().await;
    let stopping = tokio::spawn(server.shutdown());
    while feed.next_or_end().await.is_some() {}
    stopping.await.expect("join").expect("clean shutdown");
}
