//! R3 and R4: connections that hold a slot without ever finishing a
//! request. Header drips (one byte a second, from the first byte, or on the
//! second request of a keep-alive connection), silent connections, and
//! connections sending half an HTTP/2 preface a byte a second, thousands at
//! once, against `first_request_timeout` and `header_read_timeout` set to
//! 3 s. Each must be closed within its deadline + 1 s, while a probe
//! subscriber's publish → receive p99 and a new subscriber's wait for its
//! stream stay under 100 ms; afterwards descriptors and connections are
//! back where they were.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Ctx, RowFuture, count, wait_for};
use crate::http::{self, Conn};
use crate::probe::{Probe, Spec};
use crate::row::Row;

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(slowloris(ctx))
}

const DEADLINE: Duration = Duration::from_secs(3);
/// How long past its deadline an attacker waits before calling it a
/// failure (and leaving).
const GIVE_UP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A first request head, one byte a second.
    Drip,
    /// A complete request, then the next head one byte a second.
    SecondHead,
    /// Connects and sends nothing.
    Silent,
    /// `PRI * HTTP/2.0\r\n` (half the 24-byte preface), a byte a second.
    HalfPreface,
}

struct Outcome {
    kind: Kind,
    /// From the deadline's start to the close; `None`: not closed in time.
    closed_after: Option<Duration>,
    /// Bytes the server sent (it should send none).
    n_answered: usize,
}

async fn slowloris(ctx: &Ctx) -> Result<Row, String> {
    let (n_drip, n_silent, n_preface) = ctx.scale.pick((500, 500, 100), (5_000, 5_000, 1_000));
    let deadline = format!("{}s", DEADLINE.as_secs());
    let gateway = ctx
        .launcher
        .start(
            0,
            &[
                "--first-request-timeout",
                &deadline,
                "--header-read-timeout",
                &deadline,
            ],
        )
        .await?;
    let addr = gateway.addr;
    let probe = Probe::start(
        Spec {
            newcomers: true,
            ..Spec::new(addr, "slowloris/probe", 20.0)
        },
        ctx.clock,
        ctx.nice,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = probe.take_window().await;
    let timeouts = |m: &std::collections::HashMap<String, f64>| {
        ["first_request", "header_read"]
            .iter()
            .map(|d| {
                m.get(&format!(
                    "ssegate_connection_timeouts_total{{deadline=\"{d}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let before = http::metrics(addr).await?;
    let (base_fds, base_rss) = (gateway.n_fds(), gateway.rss_kib());
    let base_connections = before.get("ssegate_connections").copied().unwrap_or(0.0);

    let mut kinds = Vec::new();
    for i in 0..n_drip {
        kinds.push(match i % 5 {
            0 => Kind::SecondHead,
            _ => Kind::Drip,
        });
    }
    kinds.extend(std::iter::repeat_n(Kind::Silent, n_silent));
    kinds.extend(std::iter::repeat_n(Kind::HalfPreface, n_preface));
    // Interleaved, so every kind is there from the first batch on.
    let n_total = kinds.len();
    let mut order: Vec<usize> = (0..n_total).collect();
    order.sort_by_key(|&i| (i * 7919) % n_total);
    let attacked_at = Instant::now();
    let mut tasks = Vec::with_capacity(n_total);
    let mut peak_rss = base_rss;
    for batch in order.chunks(500) {
        for &i in batch {
            tasks.push(tokio::task::spawn_local(attack(addr, kinds[i])));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak_rss = peak_rss.max(gateway.rss_kib());
    }
    let mut outcomes = Vec::with_capacity(n_total);
    for task in tasks {
        peak_rss = peak_rss.max(gateway.rss_kib());
        outcomes.push(task.await.map_err(|e| format!("attacker task: {e}"))?);
    }
    let attack_seconds = attacked_at.elapsed().as_secs_f64();
    let during = probe.take_window().await;
    let settled = wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async { gateway.n_fds().abs_diff(base_fds) <= 16 },
    )
    .await;
    let after = http::metrics(addr).await?;
    let report = probe.stop().await;

    let mut row = Row::new("R3/R4", "slowloris, silent and half-preface connections");
    row.load = format!(
        "probe subscriber + publisher at 20/s; a new subscriber every 250 ms; {:.0} s under attack",
        attack_seconds
    );
    row.faults = format!(
        "{} header drips at 1 byte/s ({} on a second request), {} silent, {} half h2 prefaces at 1 byte/s; deadlines 3 s",
        count(n_drip as u64),
        n_drip / 5,
        count(n_silent as u64),
        count(n_preface as u64)
    );
    row.lost = report.n_lost;
    row.duplicated = report.n_duplicated;
    let limit = DEADLINE + Duration::from_secs(1);
    let mut worst = Duration::ZERO;
    let mut n_late = 0;
    for kind in [
        Kind::Drip,
        Kind::SecondHead,
        Kind::Silent,
        Kind::HalfPreface,
    ] {
        let of_kind: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
        let closed: Vec<Duration> = of_kind.iter().filter_map(|o| o.closed_after).collect();
        let late = of_kind
            .iter()
            .filter(|o| o.closed_after.is_none_or(|d| d > limit))
            .count();
        let max = closed.iter().max().copied().unwrap_or_default();
        let min = closed.iter().min().copied().unwrap_or_default();
        worst = worst.max(max);
        n_late += late;
        row.note(format!(
            "{kind:?}: {} connections, closed after {:.2}-{:.2} s, {late} late or open, {} answered bytes",
            of_kind.len(),
            min.as_secs_f64(),
            max.as_secs_f64(),
            of_kind.iter().map(|o| o.n_answered).sum::<usize>()
        ));
    }
    row.check(
        n_late == 0,
        format!(
            "each closed within its deadline + 1 s ({} of {n_total}, slowest {:.2} s)",
            n_total - n_late,
            worst.as_secs_f64()
        ),
    );
    let n_counted = timeouts(&after) - timeouts(&before);
    row.check(
        n_counted >= n_total as f64,
        format!("each counted in ssegate_connection_timeouts_total ({n_counted} of {n_total})"),
    );
    row.check(
        report.clean(),
        format!(
            "the probe's subscribers got every event once, in order ({})",
            report.describe()
        ),
    );
    row.check_speed(
        during.p99_ms < 100.0,
        format!(
            "probe publish → receive p99 < 100 ms ({:.2} ms; {:.2} ms before the attack)",
            during.p99_ms, baseline.p99_ms
        ),
    );
    row.check_speed(
        during.n_subscribes > 0 && during.subscribe_p99_ms < 100.0,
        format!(
            "new subscriber's stream open p99 < 100 ms ({:.2} ms over {})",
            during.subscribe_p99_ms, during.n_subscribes
        ),
    );
    let growth_kib = peak_rss.saturating_sub(base_rss);
    row.check(
        growth_kib < n_total as u64 * 80,
        format!(
            "peak RSS growth < 80 KiB per connection ({:.1} MiB for {n_total})",
            growth_kib as f64 / 1024.0
        ),
    );
    let connections = after.get("ssegate_connections").copied().unwrap_or(0.0);
    row.check(
        settled.is_some() && connections <= base_connections,
        format!(
            "afterwards fds back to baseline ± 16 ({} → {}) and ssegate_connections too ({base_connections} → {connections})",
            base_fds,
            gateway.n_fds()
        ),
    );
    Ok(row)
}

async fn attack(addr: SocketAddr, kind: Kind) -> Outcome {
    let mut outcome = Outcome {
        kind,
        closed_after: None,
        n_answered: 0,
    };
    let mut stream = match kind {
        Kind::SecondHead => match Conn::connect(addr).await {
            Ok(mut conn) => match conn.get("/healthz").await {
                Ok(response) if response.status == 200 => conn.into_stream(),
                _ => return outcome,
            },
            Err(_) => return outcome,
        },
        _ => match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) => return outcome,
        },
    };
    let drip: &[u8] = match kind {
        Kind::Drip | Kind::SecondHead => b"GET /subscribe/slowloris HTTP/1.1\r\nHost: r\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Kind::Silent => b"",
        Kind::HalfPreface => b"PRI * HTTP/2.0\r\n",
    };
    let started = Instant::now();
    let give_up = started + DEADLINE + GIVE_UP;
    let mut buf = [0u8; 1024];
    let mut next_byte = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    outcome.closed_after = Some(started.elapsed());
                    return outcome;
                }
                Ok(n) => outcome.n_answered += n,
            },
            _ = tick.tick(), if next_byte < drip.len() => {
                if stream.write_all(&drip[next_byte..next_byte + 1]).await.is_err() {
                    outcome.closed_after = Some(started.elapsed());
                    return outcome;
                }
                next_byte += 1;
            }
            () = tokio::time::sleep_until(give_up) => return outcome,
        }
    }
}
