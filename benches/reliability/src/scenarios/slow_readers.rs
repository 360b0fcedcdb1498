//! R5, slow readers: subscribers that never read (the smallest receive
//! buffer the kernel allows, and no `read` ever) on a topic carrying 1 MB/s,
//! beside normal subscribers of the same topic. Each slow one must be
//! dropped within `write_timeout` + 1 s and counted in
//! `ssegate_subscribers_dropped_total`; the normal subscribers' publish →
//! receive p99 and the publisher's request p99 must stay within 20% of the
//! same run without slow readers (measured before and after them); memory
//! must stay bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::{Ctx, RowFuture, count};
use crate::http;
use crate::probe::{JITTER_MS, Probe, Spec, within};
use crate::procnet;
use crate::row::Row;

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(slow_readers(ctx))
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(4);
const TOPIC: &str = "slow/fire";
/// 256 events of 4 KiB a second: 1 MiB/s.
const RATE: f64 = 256.0;
const EVENT_BYTES: usize = 4096;
/// Per-connection buffer (`connection_buffer_bytes`, the default).
const CONNECTION_BUFFER: u64 = 64 * 1024;

async fn slow_readers(ctx: &Ctx) -> Result<Row, String> {
    let (n_normal, n_slow, window) = ctx.scale.pick(
        (20, 100, Duration::from_secs(4)),
        (100, 1_000, Duration::from_secs(15)),
    );
    let write_timeout = format!("{}s", WRITE_TIMEOUT.as_secs());
    let gateway = ctx
        .launcher
        .start(
            0,
            &[
                "--write-timeout",
                &write_timeout,
                // Longer than the drops take: nobody is dropped as lagged.
                "--buffer-events",
                "8192",
            ],
        )
        .await?;
    let addr = gateway.addr;
    let probe = Probe::start(
        Spec {
            size: EVENT_BYTES,
            n_subscribers: n_normal,
            ..Spec::new(addr, TOPIC, RATE)
        },
        ctx.clock,
        ctx.nice,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    probe.take_window().await;
    let mut peak_before = gateway.rss_kib();
    sample(&gateway, window, &mut peak_before).await;
    let before = probe.take_window().await;
    let dropped_before = drops(addr).await?;

    // The slow readers, in batches; each one's connect time kept.
    let mut slow = Vec::with_capacity(n_slow);
    let mut connected_at = Vec::with_capacity(n_slow);
    let phase_started = Instant::now();
    let mut peak_during = gateway.rss_kib();
    let tcp_before = procnet::tcp_memory_kib().unwrap_or(0);
    let mut tcp_peak_during = tcp_before;
    for batch in 0..n_slow.div_ceil(100) {
        for _ in 0..100.min(n_slow - batch * 100) {
            slow.push(slow_reader(addr).await?);
            connected_at.push(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until every slow reader should have been dropped, plus a second.
    let all_due = connected_at.last().copied().unwrap_or(phase_started) + WRITE_TIMEOUT;
    let mut series = Vec::new();
    while Instant::now() < all_due + Duration::from_secs(2) {
        let m = http::metrics(addr).await?;
        series.push((Instant::now(), dropped(&m) - dropped_before.0));
        peak_during = peak_during.max(gateway.rss_kib());
        tcp_peak_during = tcp_peak_during.max(procnet::tcp_memory_kib().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = probe.take_window().await;
    let (dropped_total, by_reason) = drops(addr).await?;
    drop(slow);

    let mut peak_after = gateway.rss_kib();
    sample(&gateway, window, &mut peak_after).await;
    let after = probe.take_window().await;
    let report = probe.stop().await;

    let mut row = Row::new("R5", "slow readers");
    row.load = format!(
        "{n_normal} normal subscribers + 1 publisher on a {:.0} KiB/s topic ({RATE} events of {} KiB a second)",
        RATE * EVENT_BYTES as f64 / 1024.0,
        EVENT_BYTES / 1024
    );
    row.faults = format!(
        "{} subscribers with a 4 KiB receive buffer that never read; write_timeout {} s",
        count(n_slow as u64),
        WRITE_TIMEOUT.as_secs()
    );
    row.lost = report.n_lost;
    row.duplicated = report.n_duplicated;
    // The k-th drop must come by the k-th connect + write_timeout + 1 s:
    // if each slow reader is dropped by its own deadline, at the k-th
    // deadline at least k of them are.
    let limit = WRITE_TIMEOUT + Duration::from_secs(1);
    let mut n_late = 0;
    let mut worst = Duration::ZERO;
    for (k, at) in connected_at.iter().enumerate() {
        let reached = series
            .iter()
            .find(|(_, n)| *n >= (k + 1) as f64)
            .map(|(when, _)| when.saturating_duration_since(*at));
        match reached {
            Some(after) if after <= limit => worst = worst.max(after),
            Some(after) => {
                n_late += 1;
                worst = worst.max(after);
            }
            None => n_late += 1,
        }
    }
    let n_dropped = dropped_total - dropped_before.0;
    row.check(
        n_late == 0 && n_dropped == n_slow as f64,
        format!(
            "each slow one dropped within write_timeout + 1 s and counted ({n_dropped} of {n_slow} counted; k-th drop by k-th connect + {:.2} s at worst)",
            worst.as_secs_f64()
        ),
    );
    let reasons: Vec<String> = by_reason
        .iter()
        .map(|(reason, n)| {
            format!(
                "{reason} {}",
                n - dropped_before.1.get(reason).unwrap_or(&0.0)
            )
        })
        .collect();
    row.note(format!("drops by reason: {}", reasons.join(", ")));
    row.check_speed(
        within(during.p99_ms, before.p99_ms, 1.2),
        format!(
            "normal subscribers' publish → receive p99 within 20% (or {JITTER_MS} ms) of the run without slow readers ({:.2} ms with them, {:.2} ms before; {:.2} ms after)",
            during.p99_ms, before.p99_ms, after.p99_ms
        ),
    );
    row.check_speed(
        within(during.publish_p99_ms, before.publish_p99_ms, 1.2),
        format!(
            "publish request p99 within 20% (or {JITTER_MS} ms) ({:.2} ms with them, {:.2} ms before; {:.2} ms after)",
            during.publish_p99_ms, before.publish_p99_ms, after.publish_p99_ms
        ),
    );
    row.check(
        report.clean(),
        format!(
            "normal subscribers get every event once, in order ({})",
            report.describe()
        ),
    );
    row.note(format!(
        "kernel TCP memory (all sockets, /proc/net/sockstat) peaked at {:.0} MiB with the slow readers, {:.0} MiB before (tcp_mem allows {:.0} MiB); socket_send_buffer_bytes caps each slow socket's share",
        tcp_peak_during as f64 / 1024.0,
        tcp_before as f64 / 1024.0,
        procnet::tcp_memory_limit_kib().unwrap_or(0) as f64 / 1024.0
    ));
    let bound_kib = n_slow as u64 * (CONNECTION_BUFFER + 64 * 1024) / 1024;
    let growth_kib = peak_during.saturating_sub(peak_before.max(peak_after));
    row.check(
        growth_kib <= bound_kib,
        format!(
            "memory bounded: peak RSS growth ≤ slow readers × (connection_buffer_bytes + 64 KiB) ({:.1} MiB ≤ {:.1} MiB)",
            growth_kib as f64 / 1024.0,
            bound_kib as f64 / 1024.0
        ),
    );
    Ok(row)
}

/// Waits `window`, keeping the peak RSS.
async fn sample(gateway: &crate::gateway::Gateway, window: Duration, peak: &mut u64) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        *peak = (*peak).max(gateway.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subscriber with the smallest receive buffer, which never reads.
async fn slow_reader(addr: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .set_recv_buffer_size(4096)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    let mut stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET /subscribe/{TOPIC} HTTP/1.1\r\nHost: r\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(stream)
}

/// `ssegate_subscribers_dropped_total`, over every reason.
fn dropped(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(key, _)| key.starts_with("ssegate_subscribers_dropped_total{"))
        .map(|(_, n)| n)
        .sum()
}

/// `ssegate_subscribers_dropped_total`, and by reason.
async fn drops(addr: SocketAddr) -> Result<(f64, HashMap<String, f64>), String> {
    let m = http::metrics(addr).await?;
    let by_reason = ["lagged", "write_timeout"]
        .iter()
        .map(|reason| {
            let key = format!("ssegate_subscribers_dropped_total{{reason=\"{reason}\"}}");
            (reason.to_string(), m.get(&key).copied().unwrap_or(0.0))
        })
        .collect();
    Ok((dropped(&m), by_reason))
}
