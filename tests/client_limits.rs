//! Connection and per-address limits: `max_connections` and
//! `max_connections_per_address` close a connection at accept, before it
//! sends anything; `max_streams_per_address` refuses one more subscriber
//! stream (HTTP/2 streams included) for now; exempt addresses (loopback by
//! default) count only in the total.

mod common;

use std::time::Duration;

use common::{
    PATIENCE, Subscriber, TestServer, client, client_from, config, eventually, h2_client, metric_at,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `local` that sends nothing (yet).
async fn connect_from(server: &TestServer, local: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("local"))
        .expect("bind");
    socket.connect(server.addr).await.expect("connect")
}

/// Whether the server closes `stream` without answering a request.
async fn closed_unanswered(mut stream: TcpStream) -> bool {
    // The write may already fail: the server closed first.
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("neither answered nor closed"),
    }
}

/// Whether a connection from `local` gets `/healthz` answered.
async fn answered(server: &TestServer, local: &str) -> bool {
    !closed_unanswered(connect_from(server, local).await).await
}

fn limits_on_loopback() -> ssegate::Config {
    let mut config = config();
    // Loopback is exempt by default; these tests are all loopback.
    config.address_limits_exempt = Vec::new();
    config.first_request_timeout = Duration::from_secs(30);
    config.header_read_timeout = Duration::from_secs(30);
    config
}

/// Sends `request` on a new connection from `local` and reads the whole
/// answer (the server closes the connection after it).
async fn exchange(server: &TestServer, local: &str, request: &str) -> String {
    let mut stream = connect_from(server, local).await;
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes after answering")
        .expect("read");
    String::from_utf8(answer).expect("UTF-8 answer")
}

#[tokio::test]
async fn past_max_connections_a_probe_slot_answers_health_checks_only_then_accept_closes() {
    let mut config = config();
    config.max_connections = 3;
    config.first_request_timeout = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from(&server, "127.0.0.1").await);
    }

    // An orchestrator's probe still gets its answer, on a connection of its own.
    let health = exchange(
        &server,
        "127.0.0.2",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.to_ascii_lowercase().contains("connection: close"),
        "{health}"
    );
    let ready = exchange(
        &server,
        "127.0.0.2",
        "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // Anything else is refused for now, with the reason.
    let publish = exchange(
        &server,
        "127.0.0.2",
        "POST /publish/full HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert!(publish.starts_with("HTTP/1.1 503"), "{publish}");
    assert!(
        publish.to_ascii_lowercase().contains("retry-after:"),
        "{publish}"
    );
    assert!(
        publish.ends_with("server full: it holds max_connections (3) connections; try later\n"),
        "{publish}"
    );
    // An EventSource is told to come back instead of being refused for good.
    let subscribe = exchange(
        &server,
        "127.0.0.2",
        "GET /subscribe/full HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    assert!(subscribe.starts_with("HTTP/1.1 200"), "{subscribe}");
    assert!(subscribe.contains("\nretry: "), "{subscribe}");
    assert!(
        subscribe.contains("\n: server full: it holds max_connections"),
        "{subscribe}"
    );

    // Once every probe slot is held too, a connection is closed at accept.
    let mut probes = Vec::new();
    for _ in 0..PROBE_SLOTS {
        probes.push(connect_from(&server, "127.0.0.3").await);
    }
    assert!(closed_unanswered(connect_from(&server, "127.0.0.4").await).await);
    drop(probes);
    drop(idle.pop());
    let scraper = client();
    eventually("a slot frees up", || async {
        scraper.get(server.url("/healthz")).send().await.is_ok()
    })
    .await;
    let reply = common::publish_to(&scraper, &server.url("/publish/full"), "served").await;
    assert_eq!(reply.subscribers, 0);
    let metrics = server.url("/metrics");
    let refused = r#"ssegate_connections_refused_total{reason="max_connections"}"#;
    // The publish, the subscribe, and the connection closed at accept.
    assert_eq!(metric_at(&scraper, &metrics, refused).await, 3.0);
    let subscribes = r#"ssegate_subscribes_refused_total{reason="max_connections"}"#;
    assert_eq!(metric_at(&scraper, &metrics, subscribes).await, 1.0);
}

/// Connections admitted past `max_connections` for health checks (as
/// documented; `client_limits::PROBE_SLOTS`).
const PROBE_SLOTS: usize = 32;

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let mut config = limits_on_loopback();
    config.max_connections_per_address = 2;
    let server = TestServer::start(config).await;
    let _first = connect_from(&server, "127.0.0.1").await;
    let _second = connect_from(&server, "127.0.0.1").await;
    assert!(closed_unanswered(connect_from(&server, "127.0.0.1").await).await);
    assert!(
        answered(&server, "127.0.0.2").await,
        "another address gets in"
    );
    let scraper = client_from("127.0.0.3", false);
    let refused = r#"ssegate_connections_refused_total{reason="max_connections_per_address"}"#;
    assert_eq!(
        metric_at(&scraper, &server.url("/metrics"), refused).await,
        1.0
    );
    drop(_first);
    eventually("the address's slot frees up", || async {
        answered(&server, "127.0.0.1").await
    })
    .await;
}

#[tokio::test]
async fn one_address_cannot_take_every_stream_http2_streams_included() {
    let mut config = limits_on_loopback();
    config.max_streams_per_address = 2;
    let server = TestServer::start(config).await;
    let url = server.url("/subscribe/crowded");
    let h1 = client_from("127.0.0.1", false);
    let h2 = client_from("127.0.0.1", true);
    let first = Subscriber::open_with(&h1, &url, None).await;
    let _second = Subscriber::open_with(&h2, &url, None).await;
    // A third stream on the same HTTP/2 connection, and on HTTP/1.1.
    for http in [&h2, &h1] {
        let response = http.get(&url).send().await.expect("response");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(
            response.text().await.expect("reason"),
            "too many streams from this address (max_streams_per_address 2); try later\n"
        );
    }
    // An EventSource is told to come back instead.
    let response = h1
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert!(body.starts_with("retry: "), "{body:?}");
    assert!(
        body.contains(": too many streams from this address"),
        "{body:?}"
    );
    // Another address is not affected.
    let other = client_from("127.0.0.2", true);
    let _elsewhere = Subscriber::open_with(&other, &url, None).await;
    let refused = r#"ssegate_subscribes_refused_total{reason="max_streams_per_address"}"#;
    assert_eq!(
        metric_at(&other, &server.url("/metrics"), refused).await,
        3.0
    );
    drop(first);
    eventually("the address's stream slot frees up", || async {
        h2.get(&url).send().await.expect("response").status() == 200
    })
    .await;
}

#[tokio::test]
async fn loopback_is_exempt_from_the_per_address_limits_by_default() {
    let mut config = config();
    config.max_connections_per_address = 1;
    config.max_streams_per_address = 1;
    let server = TestServer::start(config).await;
    let url = server.url("/subscribe/proxied");
    let _a = Subscriber::open_with(&client(), &url, None).await;
    let _b = Subscriber::open_with(&client(), &url, None).await;
    let _c = Subscriber::open_with(&h2_client(), &url, None).await;
}
