//! Heartbeats, and clients that leave: every subscription is unregistered and
//! the gauges come back exactly.

mod common;

use std::time::Duration;

use common::{
    RawSubscriber, Subscriber, TestServer, config, eventually, h2_client, metric, publish,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_quiet_stream_gets_heartbeat_comments() {
    let mut config = config();
    config.heartbeat_interval = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let mut raw = RawSubscriber::open(&server, "/subscribe/quiet").await;
    // The opening, the position block, then heartbeats.
    let received = String::from_utf8_lossy(raw.read_frames(4).await).into_owned();
    let blocks: Vec<&str> = received.split_terminator("\n\n").collect();
    assert_eq!(blocks[0], "retry: 3000", "{received:?}");
    assert!(blocks[1].starts_with("id: "), "{received:?}");
    assert_eq!(&blocks[2..4], [":", ":"], "{received:?}");
    assert!(metric(server.addr, "ssegate_heartbeats_total").await >= 2.0);
}

#[tokio::test]
async fn subscribers_gauge_returns_to_zero_after_clients_vanish() {
    let mut config = config();
    config.heartbeat_interval = Duration::from_millis(200);
    let server = TestServer::start(config).await;

    // Orderly HTTP/1.1 clients, one multi-topic, and HTTP/2 streams.
    let mut subscribers = Vec::new();
    for i in 0..10 {
        subscribers.push(Subscriber::open(&server, &format!("/subscribe/t{}", i % 3), None).await);
    }
    subscribers
        .push(Subscriber::open(&server, "/subscribe?topic=t0&topic=t1&topic=t2", None).await);
    let h2 = h2_client();
    for _ in 0..3 {
        subscribers.push(Subscriber::open_with(&h2, &server.url("/subscribe/t0"), None).await);
    }
    // Raw sockets that are simply closed, and one reset with unread data.
    let mut raw_sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = TcpStream::connect(server.addr).await.expect("connect");
        socket
            .write_all(b"GET /subscribe/t1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut head = [0u8; 16];
        socket.read_exact(&mut head).await.expect("response head");
        raw_sockets.push(socket);
    }
    assert_eq!(metric(server.addr, "ssegate_subscribers").await, 17.0);
    // t1: three of the ten, the multi-topic one, the three raw sockets.
    assert_eq!(publish(&server, "t1", "x").await.subscribers, 7);

    drop(subscribers);
    drop(h2);
    for socket in raw_sockets {
        let socket = socket.into_std().expect("std socket");
        // SO_LINGER 0: close with RST, the rudest way to leave.
        socket2::SockRef::from(&socket)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(socket);
    }
    eventually("every subscription is gone", || async {
        metric(server.addr, "ssegate_subscribers").await == 0.0
    })
    .await;
    assert_eq!(publish(&server, "t1", "y").await.subscribers, 0);
    eventually("only the scraping connection is left", || async {
        metric(server.addr, "ssegate_connections").await <= 1.0
    })
    .await;
}

#[tokio::test]
async fn idle_topics_are_removed_after_buffer_ttl() {
    let mut config = config();
    config.buffer_ttl = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    publish(&server, "a", "x").await;
    let subscriber = Subscriber::open(&server, "/subscribe/b", None).await;
    assert_eq!(metric(server.addr, "ssegate_topics").await, 2.0);
    eventually("the published-to topic is removed", || async {
        metric(server.addr, "ssegate_topics").await == 1.0
    })
    .await;
    drop(subscriber);
    eventually(
        "the subscribed-to topic is removed once its subscriber left",
        || async { metric(server.addr, "ssegate_topics").await == 0.0 },
    )
    .await;
}

#[tokio::test]
async fn a_topic_that_only_had_subscribers_goes_with_the_last_of_them() {
    // The default buffer_ttl of 300 s: only the unused-topic path can be quick.
    let server = TestServer::start(config()).await;
    let first = Subscriber::open(&server, "/subscribe?topic=lonely&topic=kept", None).await;
    let second = Subscriber::open(&server, "/subscribe/lonely", None).await;
    publish(&server, "kept", "x").await;
    assert_eq!(metric(server.addr, "ssegate_topics").await, 2.0);
    drop(first);
    eventually("the first subscriber is gone", || async {
        metric(server.addr, "ssegate_subscribers").await == 1.0
    })
    .await;
    assert_eq!(
        metric(server.addr, "ssegate_topics").await,
        2.0,
        "lonely still has a subscriber"
    );
    drop(second);
    eventually("lonely is removed; kept has an event and stays", || async {
        metric(server.addr, "ssegate_topics").await == 1.0
    })
    .await;
}
