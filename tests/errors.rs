//! Every refusal of the contract: its status, its headers, and a one-line
//! plain-text reason.

mod common;

use common::{RawResponse, Subscriber, TestServer, client, config, publish, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A refusal as the client sees it.
struct Refusal {
    status: u16,
    headers: reqwest::header::HeaderMap,
    reason: String,
}

async fn send(request: reqwest::RequestBuilder) -> Refusal {
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let reason = response.text().await.expect("body");
    Refusal {
        status,
        headers,
        reason,
    }
}

/// Checks status, a reason containing `reason_part`, and the reason's shape.
fn check(refusal: &Refusal, status: u16, reason_part: &str) {
    assert_eq!(refusal.status, status, "reason: {:?}", refusal.reason);
    assert!(
        refusal.reason.contains(reason_part),
        "{:?} does not mention {reason_part:?}",
        refusal.reason
    );
    assert!(refusal.reason.ends_with('\n'), "{:?}", refusal.reason);
    assert_eq!(
        refusal.reason.trim_end().lines().count(),
        1,
        "{:?}",
        refusal.reason
    );
    assert_eq!(refusal.headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn bad_paths_and_methods() {
    let server = TestServer::start(config()).await;
    let client = client();
    let url = |path: &str| server.url(path);

    check(&send(client.get(url("/nope"))).await, 404, "not found");
    check(&send(client.get(url("/status"))).await, 404, "not found");
    for (method, path, allow) in [
        (reqwest::Method::GET, "/publish/a", "POST, OPTIONS"),
        (reqwest::Method::DELETE, "/publish/a", "POST, OPTIONS"),
        (reqwest::Method::POST, "/subscribe/a", "GET, OPTIONS"),
        (reqwest::Method::PUT, "/subscribe?topic=a", "GET, OPTIONS"),
        (reqwest::Method::POST, "/metrics", "GET, HEAD"),
        (reqwest::Method::POST, "/", "GET, HEAD"),
        (reqwest::Method::DELETE, "/healthz", "GET, HEAD"),
        (reqwest::Method::POST, "/readyz", "GET, HEAD"),
    ] {
        let refusal = send(client.request(method.clone(), url(path))).await;
        check(&refusal, 405, "not allowed");
        assert_eq!(refusal.headers["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn bad_topics() {
    let server = TestServer::start(config()).await;
    let client = client();
    let long = "x".repeat(257);
    for path in [
        "/subscribe".to_string(),
        "/subscribe/".to_string(),
        "/subscribe?last_event_id=1".to_string(),
    ] {
        check(
            &send(client.get(server.url(&path))).await,
            400,
            "missing topic",
        );
    }
    for path in [
        "/subscribe/a%20b".to_string(),
        "/subscribe/a%2Fb".to_string(),
        "/subscribe/a//b".to_string(),
        "/subscribe/a/".to_string(),
        format!("/subscribe/{long}"),
        "/subscribe/caf%C3%A9".to_string(),
        "/subscribe?topic=ok&topic=bad%20one".to_string(),
        "/subscribe?topic=".to_string(),
        "/subscribe?topic=%2Fa".to_string(),
    ] {
        check(
            &send(client.get(server.url(&path))).await,
            400,
            "invalid topic",
        );
    }
    check(
        &send(client.get(server.url("/subscribe/a?topic=b"))).await,
        400,
        "either in the path",
    );
    for path in ["/publish/a%20b", "/publish/a//b", "/publish/bad!"] {
        let refusal = send(client.post(server.url(path)).body("x")).await;
        check(&refusal, 400, "invalid topic");
    }
    for path in ["/publish", "/publish/"] {
        check(
            &send(client.post(server.url(path)).body("x")).await,
            400,
            "missing topic",
        );
    }
}

#[tokio::test]
async fn too_many_topics_in_one_subscription() {
    let server = TestServer::start(config()).await;
    let at_limit: String = (0..32).map(|i| format!("topic=t{i}&")).collect();
    let over: String = (0..33).map(|i| format!("topic=t{i}&")).collect();
    let ok = Subscriber::open(&server, &format!("/subscribe?{at_limit}"), None).await;
    drop(ok);
    let refusal = send(client().get(server.url(&format!("/subscribe?{over}")))).await;
    check(&refusal, 400, "at most 32");
}

#[tokio::test]
async fn bad_event_types() {
    let server = TestServer::start(config()).await;
    let client = client();
    let long = "e".repeat(65);
    for query in [
        "event=",
        "event=a%20b",
        "event=a/b",
        &format!("event={long}"),
        "event=x&event=y",
    ] {
        let refusal = send(
            client
                .post(server.url(&format!("/publish/t?{query}")))
                .body("x"),
        )
        .await;
        check(&refusal, 400, "event");
    }
    let refusal = send(client.post(server.url("/publish/t?event=gap")).body("x")).await;
    check(&refusal, 400, "reserved");
    // 64 bytes of every allowed character is fine.
    let ok = send(
        client
            .post(server.url(&format!("/publish/t?event=aZ09_.:-{}", "e".repeat(56))))
            .body("x"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.reason);
}

#[tokio::test]
async fn bad_bodies() {
    let server = TestServer::start(config()).await;
    let client = client();
    let refusal = send(
        client
            .post(server.url("/publish/t"))
            .body(vec![b'a', 0xff, 0xfe]),
    )
    .await;
    check(&refusal, 400, "UTF-8");
    let refusal = send(
        client
            .post(server.url("/publish/t"))
            .body(vec![b'x'; 64 * 1024 + 1]),
    )
    .await;
    check(&refusal, 413, "max_event_bytes");
    let exactly = send(
        client
            .post(server.url("/publish/t"))
            .body(vec![b'x'; 64 * 1024]),
    )
    .await;
    assert_eq!(exactly.status, 200, "{}", exactly.reason);
    assert_eq!(
        common::metric(server.addr, "ssegate_events_published_total").await,
        1.0,
        "refused events are not published"
    );
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_without_reading_it_all() {
    let server = TestServer::start(config()).await;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let head = "POST /publish/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    socket.write_all(head.as_bytes()).await.expect("head");
    // 80 KiB in 1 KiB chunks, then no terminating chunk: the body never ends,
    // so only a server that stops at the limit can answer.
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    for _ in 0..80 {
        socket.write_all(chunk.as_bytes()).await.expect("chunk");
    }
    let mut response = vec![0u8; 1024];
    let n = tokio::time::timeout(common::PATIENCE, socket.read(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn publish_token() {
    let mut config = config();
    config.publish_token = Some("s3cret".into());
    let server = TestServer::start(config).await;
    let client = client();
    let url = server.url("/publish/t");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret"),
        Some("Bearer"),
    ] {
        let mut request = client.post(&url).body("x");
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let refusal = send(request).await;
        check(&refusal, 401, "bearer token");
        assert_eq!(refusal.headers["www-authenticate"], "Bearer", "{auth:?}");
    }
    let ok = send(
        client
            .post(&url)
            .header("Authorization", "Bearer s3cret")
            .body("x"),
    )
    .await;
    assert_eq!(ok.status, 200);
    // Subscribing needs no token.
    Subscriber::open(&server, "/subscribe/t", None).await;
}

#[tokio::test]
async fn max_subscribers_is_503_with_retry_after() {
    let mut config = config();
    config.max_subscribers = 2;
    let server = TestServer::start(config).await;
    let first = Subscriber::open(&server, "/subscribe/a", None).await;
    let _second = Subscriber::open(&server, "/subscribe?topic=a&topic=b", None).await;
    let refusal = send(client().get(server.url("/subscribe/c"))).await;
    check(&refusal, 503, "max_subscribers");
    assert_eq!(refusal.headers["retry-after"], "5");
    // An EventSource (it sends this Accept) would give up for good on a
    // 503: it gets a 200 telling it when to come back, on both paths.
    for http in [client(), common::h2_client()] {
        let refusal = send(
            http.get(server.url("/subscribe/c"))
                .header("accept", "text/event-stream"),
        )
        .await;
        assert_eq!(refusal.status, 200, "{}", refusal.reason);
        assert_eq!(refusal.headers["content-type"], "text/event-stream");
        let retry_ms: u64 = refusal
            .reason
            .strip_prefix("retry: ")
            .and_then(|rest| rest.split('\n').next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("a retry field first: {:?}", refusal.reason));
        assert!(
            (5_000..=15_000).contains(&retry_ms),
            "refusal_retry 10s ± 50%: {retry_ms}"
        );
        assert!(
            refusal
                .reason
                .ends_with(": subscriber limit reached (max_subscribers); try later\n\n"),
            "{:?}",
            refusal.reason
        );
    }
    let refused = r#"ssegate_subscribes_refused_total{reason="max_subscribers"}"#;
    assert_eq!(common::metric(server.addr, refused).await, 3.0);
    drop(first);
    common::eventually("a slot is free again", || async {
        client()
            .get(server.url("/subscribe/c"))
            .send()
            .await
            .expect("response")
            .status()
            == 200
    })
    .await;
}

#[tokio::test]
async fn max_topics_is_503() {
    let mut config = config();
    config.max_topics = 2;
    let server = TestServer::start(config).await;
    publish(&server, "one", "x").await;
    publish(&server, "two", "x").await;
    let refusal = send(client().post(server.url("/publish/three")).body("x")).await;
    check(&refusal, 503, "max_topics");
    // Existing topics still take events; subscribing to a new one is refused too.
    publish(&server, "one", "y").await;
    let refusal = send(client().get(server.url("/subscribe/three"))).await;
    check(&refusal, 503, "max_topics");
    assert_eq!(common::metric(server.addr, "ssegate_topics").await, 2.0);
}

#[tokio::test]
async fn subscribers_to_made_up_topics_cannot_take_the_topics_publishes_need() {
    let mut config = config();
    config.max_topics = 8;
    let server = TestServer::start(config).await;
    // Anonymous subscribers inventing topics: they may create 6 of the 8.
    let mut held = Vec::new();
    for i in 0..6 {
        held.push(Subscriber::open(&server, &format!("/subscribe/made-up-{i}"), None).await);
    }
    let refusal = send(client().get(server.url("/subscribe/made-up-6"))).await;
    check(&refusal, 503, "max_topics");
    // Publishes to new topics still go through, up to max_topics.
    publish(&server, "real-1", "x").await;
    publish(&server, "real-2", "x").await;
    let refusal = send(client().post(server.url("/publish/real-3")).body("x")).await;
    check(&refusal, 503, "max_topics");
    // And a subscriber of an existing topic is never refused for it.
    Subscriber::open(&server, "/subscribe/real-1", None).await;
    assert_eq!(common::metric(server.addr, "ssegate_topics").await, 8.0);
}

#[tokio::test]
async fn subscribers_coming_and_going_do_not_use_up_max_topics() {
    let mut config = config();
    config.max_topics = 2;
    let server = TestServer::start(config).await;
    for i in 0..10 {
        let subscriber = Subscriber::open(&server, &format!("/subscribe/passing-{i}"), None).await;
        drop(subscriber);
        common::eventually("the unused topic is gone", || async {
            common::metric(server.addr, "ssegate_topics").await == 0.0
        })
        .await;
    }
    publish(&server, "real", "x").await;
}

#[tokio::test]
async fn max_buffered_bytes_is_503_and_frees_up_as_events_expire() {
    let mut config = config();
    config.max_buffered_bytes = 64 * 1024;
    config.buffer_ttl = std::time::Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let body = "x".repeat(20 * 1024);
    for topic in ["a", "b", "c"] {
        publish(&server, topic, body.clone()).await;
    }
    let refusal = send(client().post(server.url("/publish/d")).body(body.clone())).await;
    check(&refusal, 503, "max_buffered_bytes");
    assert_eq!(refusal.headers["retry-after"], "5");
    // A topic at its own limit replaces its oldest event instead.
    let mut config = common::config();
    config.buffer_bytes = 30 * 1024;
    config.max_buffered_bytes = 64 * 1024;
    let small = TestServer::start(config).await;
    for _ in 0..10 {
        publish(&small, "rolling", body.clone()).await;
    }
    // Once the first server's events expire, publishing works again.
    common::eventually("expired events free the budget", || async {
        client()
            .post(server.url("/publish/d"))
            .body(body.clone())
            .send()
            .await
            .expect("publish")
            .status()
            == 200
    })
    .await;
}

/// A request head hyper refuses before any handler sees it, as raw bytes.
fn malformed_head() -> Vec<u8> {
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n".to_vec()
}

/// A head larger than `connection_buffer_bytes` (64 KiB by default).
fn oversized_head() -> Vec<u8> {
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 70_000));
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// hyper's own refusal of `request`, sent after `before` on one connection.
async fn refused_head(server: &TestServer, before: &[u8], request: &[u8]) -> RawResponse {
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let mut bytes = before.to_vec();
    bytes.extend_from_slice(request);
    let mut responses = RawResponse::parse_all(&raw_exchange(stream, &bytes).await);
    responses.pop().expect("a response")
}

/// A refusal read off a raw connection has the contract's shape too.
fn check_raw(refusal: &RawResponse, status: u16, reason_part: &str) {
    assert_eq!(refusal.status, status, "{refusal:?}");
    assert!(refusal.body.contains(reason_part), "{refusal:?}");
    assert!(refusal.body.ends_with('\n'), "{refusal:?}");
    assert_eq!(refusal.body.trim_end().lines().count(), 1, "{refusal:?}");
    assert_eq!(
        refusal.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(refusal.header("connection"), Some("close"));
}

#[tokio::test]
async fn heads_refused_by_hyper_itself_carry_a_reason_too() {
    let server = TestServer::start(config()).await;
    let ok = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    // The first head of a connection, and a later one (pipelined).
    for before in [&b""[..], &ok[..]] {
        let refusal = refused_head(&server, before, &malformed_head()).await;
        check_raw(&refusal, 400, "malformed request head");
    }
    // (Only as a first head: pipelined behind another request, hyper may
    // read a head this size whole, and takes it.)
    let refusal = refused_head(&server, b"", &oversized_head()).await;
    check_raw(&refusal, 431, "request head over 65536 bytes");
    // The server goes on serving.
    let mut subscriber = Subscriber::open(&server, "/subscribe/after", None).await;
    publish(&server, "after", "still here").await;
    assert_eq!(subscriber.next().await.data, "still here");
}
