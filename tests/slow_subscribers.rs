//! Slow subscribers never hurt publishers or other subscribers: one that stops
//! reading is dropped after `write_timeout`, one that falls behind the buffer
//! is dropped as lagged (and learns it through a `gap` on resume), and the
//! server's memory stays bounded whatever is published meanwhile.

mod common;

use std::time::Duration;

use common::{
    ServerProcess, Subscriber, TestServer, client, config, eventually, metric, publish,
    small_buffer_subscriber,
};

fn payload(seq: usize, size: usize) -> String {
    let head = format!("{seq}:");
    format!("{head}{}", "x".repeat(size - head.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_dropped_while_others_get_everything_and_memory_stays_bounded() {
    const N_EVENTS: usize = 600;
    const EVENT_BYTES: usize = 60 * 1024;
    let server = ServerProcess::start(&["--write-timeout", "2s", "--buffer-events", "16"]);
    let baseline_kib = server.memory_kib("VmRSS");
    let _stuck = small_buffer_subscriber(server.addr, "firehose").await;
    let mut healthy =
        Subscriber::open_with(&client(), &server.url("/subscribe/firehose"), None).await;
    eventually("both subscribers are registered", || async {
        metric(server.addr, "ssegate_subscribers").await == 2.0
    })
    .await;

    let publisher = client();
    let url = server.url("/publish/firehose");
    for seq in 0..N_EVENTS {
        common::publish_to(&publisher, &url, payload(seq, EVENT_BYTES)).await;
        // Lockstep with the healthy reader, so it is never the slow one.
        let event = healthy.next().await;
        assert_eq!(
            event.data.split_once(':').map(|(s, _)| s),
            Some(seq.to_string().as_str())
        );
    }

    eventually("the stuck subscriber is dropped", || async {
        metric(
            server.addr,
            "ssegate_subscribers_dropped_total{reason=\"write_timeout\"}",
        )
        .await
            == 1.0
    })
    .await;
    assert_eq!(
        metric(
            server.addr,
            "ssegate_subscribers_dropped_total{reason=\"lagged\"}"
        )
        .await,
        0.0
    );
    assert_eq!(metric(server.addr, "ssegate_subscribers").await, 1.0);
    let published_mib = (N_EVENTS * EVENT_BYTES) >> 20;
    let growth_mib = (server.memory_kib("VmHWM").saturating_sub(baseline_kib)) >> 10;
    eprintln!("peak memory growth: {growth_mib} MiB for {published_mib} MiB published");
    assert!(
        growth_mib < 24,
        "peak memory grew by {growth_mib} MiB while {published_mib} MiB went past a stuck subscriber"
    );
    // The healthy subscriber is still live.
    let reply = common::publish_to(&publisher, &url, "after").await;
    assert_eq!(reply.subscribers, 1);
    assert_eq!(healthy.next().await.data, "after");
    assert!(server.log_text().contains("dropped slow subscriber"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_the_buffer_is_dropped_and_resumes_with_a_gap() {
    let mut config = config();
    config.buffer_events = 8;
    let server = TestServer::start(config).await;
    let mut lagging = Subscriber::open(&server, "/subscribe/lag", None).await;
    let mut keeping_up = Subscriber::open(&server, "/subscribe/lag", None).await;

    // The lagging client reads nothing while far more than the socket
    // buffers and the ring can hold is published.
    let publisher = client();
    let url = server.url("/publish/lag");
    for seq in 0..600 {
        common::publish_to(&publisher, &url, payload(seq, 32 * 1024)).await;
        let event = keeping_up.next().await;
        assert!(event.data.starts_with(&format!("{seq}:")));
    }

    // It gets what was already on its way, in order, then the stream ends.
    let mut last_id = None;
    let mut expected_seq = 0;
    while let Some(event) = lagging.next_or_end().await {
        assert!(
            event.data.starts_with(&format!("{expected_seq}:")),
            "in order, no gap"
        );
        expected_seq += 1;
        last_id = Some(event.id);
    }
    assert!(expected_seq < 600, "it cannot have received everything");
    assert_eq!(
        metric(
            server.addr,
            "ssegate_subscribers_dropped_total{reason=\"lagged\"}"
        )
        .await,
        1.0
    );
    // Its EventSource would now reconnect with Last-Event-ID and learn the truth.
    let last_id = last_id.expect("it received something first");
    let mut resumed = Subscriber::open(&server, "/subscribe/lag", Some(&last_id)).await;
    assert_eq!(resumed.next().await.event, "gap");
    let first_buffered = resumed.next().await;
    assert!(
        first_buffered.data.starts_with("592:"),
        "{}",
        &first_buffered.data[..8]
    );

    // The one that kept up never noticed.
    publish(&server, "lag", "still here").await;
    assert_eq!(keeping_up.next().await.data, "still here");
}

#[tokio::test]
async fn a_publisher_does_not_wait_for_a_small_buffer_subscriber() {
    let mut config = config();
    config.write_timeout = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let _stuck = small_buffer_subscriber(server.addr, "p").await;
    eventually("the stuck subscriber is registered", || async {
        metric(server.addr, "ssegate_subscribers").await == 1.0
    })
    .await;
    // Far more than the stuck socket can absorb; every publish still completes
    // (a publisher waiting on the subscriber would hang here until PATIENCE).
    for seq in 0..400 {
        let reply = publish(&server, "p", payload(seq, 60 * 1024)).await;
        assert_eq!(reply.subscribers, 1);
    }
}

/// Bytes queued in the kernel on the gateway's side of the connection from
/// `client` (`tx_queue` in `/proc/net/tcp`).
#[cfg(target_os = "linux")]
fn gateway_send_queue(gateway: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if port(local)? != gateway.port() || port(remote)? != client.port() {
            return None;
        }
        u64::from_str_radix(queues.split(':').next()?, 16).ok()
    })
}

/// Bytes the kernel holds for a subscriber that never reads, on a gateway
/// started with `args`, once 8 MiB were published to it (twice what
/// autotuning lets the kernel queue).
#[cfg(target_os = "linux")]
async fn stuck_reader_queue(args: &[&str]) -> u64 {
    const EVENT_BYTES: usize = 16 * 1024;
    let mut all = vec!["--write-timeout", "30s", "--buffer-events", "1024"];
    all.extend_from_slice(args);
    let server = ServerProcess::start(&all);
    let stuck = small_buffer_subscriber(server.addr, "pinned").await;
    let client_addr = stuck.local_addr().expect("local addr");
    eventually("the subscriber is registered", || async {
        metric(server.addr, "ssegate_subscribers").await == 1.0
    })
    .await;
    let publisher = client();
    let url = server.url("/publish/pinned");
    for seq in 0..512 {
        common::publish_to(&publisher, &url, payload(seq, EVENT_BYTES)).await;
    }
    // The writes stop once the kernel takes no more; wait until the queue
    // stops growing.
    let mut queued = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now =
            gateway_send_queue(server.addr, client_addr).expect("the connection in /proc/net/tcp");
        if now == queued && now > 0 {
            break;
        }
        queued = now;
    }
    eprintln!("kernel send queue of the stuck subscriber ({args:?}): {queued} bytes");
    assert!(
        queued > 0,
        "the gateway wrote nothing to the stuck subscriber"
    );
    assert_eq!(metric(server.addr, "ssegate_subscribers").await, 1.0);
    drop(stuck);
    queued
}

/// Left to autotuning, the kernel grows a stuck subscriber's send buffer to
/// `tcp_wmem`'s maximum (4 MiB): a thousand of them pin gigabytes of kernel
/// memory. `socket_send_buffer_bytes` caps it (the kernel doubles it).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_pins_no_more_kernel_memory_than_the_send_buffer_allows() {
    let queued = stuck_reader_queue(&[
        "--socket-send-buffer-bytes",
        "128KiB",
        "--socket-unsent-bytes",
        "0",
    ])
    .await;
    // 128 KiB doubled by the kernel, with room for its accounting.
    assert!(
        queued <= 384 * 1024,
        "the kernel queued {queued} bytes for a subscriber that never reads"
    );
}

/// Whatever the send buffer, `socket_unsent_bytes` (64 KiB by default)
/// bounds what a subscriber whose window is closed holds: everything
/// written to it is unsent.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_holds_no_more_than_the_unsent_limit_and_one_write() {
    let queued = stuck_reader_queue(&["--socket-send-buffer-bytes", "0"]).await;
    // 64 KiB, one more write of up to connection_buffer_bytes (64 KiB)
    // that started under it, and what the 4 KiB window let through.
    assert!(
        queued <= 160 * 1024,
        "the kernel queued {queued} bytes for a subscriber that never reads"
    );
}
