//! The topic API: `GET /topics/{topic}` (is anyone listening, what was the
//! last event, what is buffered) and `GET /topics?prefix=&limit=&after=`
//! (a page of topics in name order), behind the publish credential.

mod common;

use std::time::{Duration, SystemTime};

use common::{Subscriber, TestServer, client, config, publish};
use serde_json::Value;

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn get_json(server: &TestServer, path: &str) -> Value {
    let (status, body) = get(server, path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn a_topic_shows_its_listeners_last_event_and_buffer() {
    let server = TestServer::start(config()).await;
    let first = publish(&server, "orders/42", "one").await;
    publish(&server, "orders/42", "two").await;
    let last = publish(&server, "orders/42", "three").await;
    let _listener = Subscriber::open(&server, "/subscribe/orders/42", None).await;
    let topic = get_json(&server, "/topics/orders/42").await;
    assert_eq!(topic["topic"], "orders/42");
    assert_eq!(topic["subscribers"], 1);
    assert_eq!(topic["last_event_id"], last.id.as_str());
    assert_eq!(topic["oldest_buffered_id"], first.id.as_str());
    assert_eq!(topic["buffered_events"], 3);
    let bytes = topic["buffered_bytes"].as_u64().expect("bytes");
    assert!(bytes > "onetwothree".len() as u64, "{topic}");
    let at = topic["last_published_at"].as_str().expect("a time");
    let at = humantime::parse_rfc3339(at).expect("RFC 3339");
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{topic}");
}

#[tokio::test]
async fn a_topic_with_listeners_only_has_no_event_yet() {
    let server = TestServer::start(config()).await;
    let _listener = Subscriber::open(&server, "/subscribe/quiet", None).await;
    let topic = get_json(&server, "/topics/quiet").await;
    assert_eq!(topic["subscribers"], 1);
    assert_eq!(topic["last_event_id"], Value::Null);
    assert_eq!(topic["oldest_buffered_id"], Value::Null);
    assert_eq!(topic["last_published_at"], Value::Null);
    assert_eq!(topic["buffered_events"], 0);
}

#[tokio::test]
async fn unknown_and_invalid_topics_are_refused_with_a_reason() {
    let server = TestServer::start(config()).await;
    let (status, body) = get(&server, "/topics/nobody/here", None).await;
    assert_eq!(status, 404);
    assert!(body.starts_with("unknown topic"), "{body}");
    let (status, body) = get(&server, "/topics/a//b", None).await;
    assert_eq!(status, 400, "{body}");
    let response = client()
        .post(server.url("/topics/orders"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn topics_come_in_pages_in_name_order() {
    let server = TestServer::start(config()).await;
    for topic in [
        "orders/5", "orders/1", "other/x", "orders/3", "orders/2", "orders/4",
    ] {
        publish(&server, topic, "x").await;
    }
    let names = |page: &Value| -> Vec<String> {
        page["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .map(|topic| topic["topic"].as_str().expect("name").to_owned())
            .collect()
    };
    let page = get_json(&server, "/topics?prefix=orders/&limit=2").await;
    assert_eq!(names(&page), ["orders/1", "orders/2"]);
    assert_eq!(page["next_after"], "orders/2");
    assert_eq!(page["topics"][0]["buffered_events"], 1);
    let page = get_json(&server, "/topics?prefix=orders/&limit=2&after=orders/2").await;
    assert_eq!(names(&page), ["orders/3", "orders/4"]);
    let page = get_json(&server, "/topics?prefix=orders%2F&limit=2&after=orders%2F4").await;
    assert_eq!(names(&page), ["orders/5"]);
    assert_eq!(page["next_after"], Value::Null);
    let all = get_json(&server, "/topics").await;
    assert_eq!(names(&all).len(), 6);
    assert_eq!(all["next_after"], Value::Null);
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=1&limit=2",
        "after=a&after=b",
    ] {
        let (status, body) = get(&server, &format!("/topics?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body.lines().count(), 1, "{bad}: {body}");
    }
}

#[tokio::test]
async fn the_topic_api_needs_the_publish_token_when_one_is_set() {
    let mut config = config();
    config.publish_token = Some("s3cret".into());
    let server = TestServer::start(config).await;
    let response = client()
        .post(server.url("/publish/private"))
        .header("authorization", "Bearer s3cret")
        .body("x")
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    for path in ["/topics/private", "/topics"] {
        let (status, _) = get(&server, path, None).await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = get(&server, path, Some("wrong")).await;
        assert_eq!(status, 401, "{path}");
        let (status, body) = get(&server, path, Some("s3cret")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}
