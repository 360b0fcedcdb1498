//! Fan-out writes: a publisher writes its event straight to the sockets of
//! subscribers waiting at the head of the topic, and hands a socket back to
//! the subscriber's own stream whenever that does not work out (socket full,
//! partial write, subscriber behind, another publisher racing it). Whatever
//! path an event takes, every subscriber must get the same bytes, in order,
//! once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    PATIENCE, RawSubscriber, TestServer, client, config, eventually, metric, publish, publish_to,
    small_buffer_subscriber,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The frame the gateway writes for a plain publish of `data` with `id`.
fn frame(id: &str, data: &str) -> String {
    format!("id: {id}\ndata: {data}\n\n")
}

/// Reads until `received` holds `n` event frames after the opening (the
/// `retry:` and, these streams starting before any publish, the position
/// block); returns those frames.
async fn frames_after_opening(subscriber: &mut RawSubscriber, n: usize) -> String {
    let received = subscriber.read_frames(n + 2).await;
    let text = String::from_utf8(received.to_vec()).expect("UTF-8 stream");
    after_opening(&text).to_string()
}

/// `body` after its `retry:` frame and its position block (`id:` alone).
fn after_opening(body: &str) -> &str {
    let (opening, rest) = body.split_once("\n\n").expect("an opening frame");
    assert!(opening.starts_with("retry: "), "opening: {opening:?}");
    let (position, rest) = rest.split_once("\n\n").expect("a position block");
    assert!(
        position.starts_with("id: ") && !position.contains('\n'),
        "position block: {position:?}"
    );
    rest
}

#[tokio::test]
async fn publishers_write_to_parked_subscribers_byte_exact() {
    let server = TestServer::start(config()).await;
    // More subscribers than a publisher writes to inline (its own task then
    // does the writing), and fewer.
    let mut wide = Vec::new();
    for _ in 0..40 {
        wide.push(RawSubscriber::open(&server, "/subscribe/wide").await);
    }
    let mut narrow = Vec::new();
    for _ in 0..3 {
        narrow.push(RawSubscriber::open(&server, "/subscribe/narrow").await);
    }
    for subscriber in wide.iter_mut().chain(narrow.iter_mut()) {
        subscriber.read_frames(1).await;
    }
    let mut expected_wide = String::new();
    let mut expected_narrow = String::new();
    const N_EVENTS: usize = 60;
    for i in 0..N_EVENTS {
        let data = format!("wide event {i}");
        let published = publish(&server, "wide", data.clone()).await;
        expected_wide.push_str(&frame(&published.id, &data));
        let data = format!("narrow event {i}");
        let published = publish(&server, "narrow", data.clone()).await;
        expected_narrow.push_str(&frame(&published.id, &data));
    }
    for subscriber in &mut wide {
        assert_eq!(
            frames_after_opening(subscriber, N_EVENTS).await,
            expected_wide
        );
    }
    for subscriber in &mut narrow {
        assert_eq!(
            frames_after_opening(subscriber, N_EVENTS).await,
            expected_narrow
        );
    }
    let n_subscribers = (wide.len() + narrow.len()) as f64;
    let delivered = metric(server.addr, "ssegate_events_delivered_total").await;
    assert_eq!(delivered, n_subscribers * N_EVENTS as f64);
    // Most events found their subscribers parked and were written by the
    // publisher; the first one after subscribing never is (a new stream
    // reads it from the ring), nor any that races the previous fan-out.
    let fanned_out = metric(server.addr, "ssegate_events_fanned_out_total").await;
    assert!(
        fanned_out >= n_subscribers * (N_EVENTS / 2) as f64,
        "only {fanned_out} of {delivered} deliveries were fanned out"
    );
    server.shutdown().await.expect("clean shutdown");
}

/// A subscriber with a tiny receive buffer that reads nothing for a while:
/// publishers fill its socket, get partial writes and then none, and hand
/// it back to its stream, which must finish every frame they started.
#[tokio::test]
async fn a_full_socket_is_handed_back_without_a_torn_frame() {
    let server = TestServer::start(ssegate::Config {
        buffer_events: 1000,
        buffer_bytes: 64 << 20,
        max_buffered_bytes: 256 << 20,
        max_event_bytes: 1 << 20,
        ..config()
    })
    .await;
    let mut slow = small_buffer_subscriber(server.addr, "big").await;
    // A fast reader on the same topic keeps getting fan-out writes meanwhile.
    let mut fast = RawSubscriber::open(&server, "/subscribe/big").await;
    fast.read_frames(1).await;

    const N_EVENTS: usize = 60;
    let mut expected = String::new();
    for i in 0..N_EVENTS {
        // Larger than one socket buffer, so that a send into a socket with
        // some room writes part of the frame.
        let data = format!("{i:05}:{}", "x".repeat(200_001));
        let published = publish(&server, "big", data.clone()).await;
        expected.push_str(&frame(&published.id, &data));
    }
    assert_eq!(frames_after_opening(&mut fast, N_EVENTS).await, expected);

    let received = read_until(&mut slow, expected.len()).await;
    let body = received
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .expect("response head");
    assert_eq!(after_opening(body), expected);
    server.shutdown().await.expect("clean shutdown");
}

/// Reads until the body after the response head and opening is at least
/// `n_event_bytes` long.
async fn read_until(stream: &mut TcpStream, n_event_bytes: usize) -> String {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Where the events start: after the head's blank line and the opening.
    let mut events_start = None;
    loop {
        if events_start.is_none() {
            let text = String::from_utf8_lossy(&received);
            events_start = text.split_once("\r\n\r\n").and_then(|(head, body)| {
                let (opening, _) = body.split_once("\n\n")?;
                Some(head.len() + 4 + opening.len() + 2)
            });
        }
        if events_start.is_some_and(|start| received.len() - start >= n_event_bytes) {
            return String::from_utf8(received).expect("UTF-8 stream");
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the rest of the stream in time")
            .expect("read");
        assert!(n > 0, "stream ended after {} bytes", received.len());
        received.extend_from_slice(&buf[..n]);
    }
}

/// Publishers racing each other on one topic, on several worker threads:
/// fan-outs find sockets claimed by other fan-outs and by the streams
/// themselves. Every subscriber still gets every event once, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_publishers_lose_and_repeat_nothing() {
    let server = Arc::new(TestServer::start(config()).await);
    const N_PUBLISHERS: usize = 4;
    const N_EACH: usize = 150;
    let mut subscribers = Vec::new();
    for _ in 0..24 {
        subscribers.push(RawSubscriber::open(&server, "/subscribe/race").await);
    }
    for subscriber in &mut subscribers {
        subscriber.read_frames(1).await;
    }
    let mut publishers = Vec::new();
    for p in 0..N_PUBLISHERS {
        let url = server.url("/publish/race");
        publishers.push(tokio::spawn(async move {
            let client = client();
            for i in 0..N_EACH {
                publish_to(&client, &url, format!("{p}:{i}")).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let n_events = N_PUBLISHERS * N_EACH;
    let mut streams = Vec::new();
    for subscriber in &mut subscribers {
        streams.push(frames_after_opening(subscriber, n_events).await);
    }
    for stream in &streams {
        // The same bytes for everyone: one order, the topic's.
        assert_eq!(stream, &streams[0]);
    }
    let mut next = [0usize; N_PUBLISHERS];
    let mut last_seq = 0u64;
    for block in streams[0].split_terminator("\n\n") {
        let (id_line, data_line) = block.split_once('\n').expect("id and data");
        let id = id_line.strip_prefix("id: ").expect("id line");
        let seq = u64::from_str_radix(id.rsplit('-').next().expect("seq"), 16).expect("hex");
        assert!(seq > last_seq, "ids out of order at {id}");
        last_seq = seq;
        let data = data_line.strip_prefix("data: ").expect("data line");
        let (p, i) = data.split_once(':').expect("p:i");
        let (p, i): (usize, usize) = (p.parse().expect("p"), i.parse().expect("i"));
        assert_eq!(i, next[p], "publisher {p}'s events out of order");
        next[p] += 1;
    }
    assert_eq!(next, [N_EACH; N_PUBLISHERS]);
    let server = Arc::into_inner(server).expect("sole owner");
    server.shutdown().await.expect("clean shutdown");
}

/// Heartbeats come only after a whole quiet interval, counting the writes
/// publishers made for the stream.
#[tokio::test]
async fn fanned_out_writes_count_as_stream_activity() {
    let server = TestServer::start(ssegate::Config {
        heartbeat_interval: Duration::from_millis(600),
        ..config()
    })
    .await;
    let mut subscriber = RawSubscriber::open(&server, "/subscribe/beat").await;
    subscriber.read_frames(1).await;
    // Two events first, so that the later ones find the stream parked at
    // the head with nothing in between.
    for i in 0..2 {
        publish(&server, "beat", format!("warm-up {i}")).await;
    }
    subscriber.read_frames(3).await;
    let fanned_out_before = metric(server.addr, "ssegate_events_fanned_out_total").await;
    // An event every 200 ms for 1.8 s: never 600 ms of quiet, so no heartbeat.
    for i in 0..9 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(&server, "beat", format!("tick {i}")).await;
    }
    let text = String::from_utf8(subscriber.read_frames(12).await.to_vec()).expect("UTF-8");
    assert!(
        !text.contains("\n:") && !text.starts_with(':'),
        "heartbeat while events kept coming: {text:?}"
    );
    let fanned_out = metric(server.addr, "ssegate_events_fanned_out_total").await;
    assert!(
        fanned_out >= fanned_out_before + 8.0,
        "the ticks were not fanned out ({fanned_out_before} -> {fanned_out})"
    );
    // Then quiet: a heartbeat comes.
    eventually("a heartbeat after the events stop", || async {
        metric(server.addr, "ssegate_heartbeats_total").await >= 1.0
    })
    .await;
    server.shutdown().await.expect("clean shutdown");
}
