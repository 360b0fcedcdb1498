//! R7, HTTP/2 abuse over cleartext h2c with prior knowledge (ssegate
//! serves it on its plain port: checked first with the `h2` crate). Four
//! attacks, each for a few seconds, attackers reconnecting when thrown out:
//! rapid reset (HEADERS + RST_STREAM as fast as the `h2` client goes), a
//! thousand streams on one connection (raw frames: a real client keeps to
//! `max_concurrent_streams`), a CONTINUATION flood (raw), a PING flood
//! (raw, 10,000 a second). The gateway must answer each as configured
//! (GOAWAY, REFUSED_STREAM, a closed connection), keep a probe
//! subscriber's p99 under twice its baseline, and keep its memory bounded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h2_attacks::{
    PINGS_PER_SECOND, Rapid, continuation_flood, http_request, many_streams, ping_flood,
    rapid_reset,
};
use super::{Ctx, RowFuture, count, wait_for};
use crate::gateway::Gateway;
use crate::http::{self, Conn};
use crate::probe::{JITTER_MS, Probe, Spec, Window, within};
use crate::row::Row;

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(h2_abuse(ctx))
}

/// The gateway's defaults this scenario checks against.
const MAX_CONCURRENT_STREAMS: u64 = 256;
const PROBE_TOPIC: &str = "h2/probe";
/// Research §6 R7 (a): 10,000 streams/s on 10 connections.
const RAPID_PER_CONNECTION: f64 = 1_000.0;

async fn h2_abuse(ctx: &Ctx) -> Result<Row, String> {
    let (phase, n_rapid) = ctx
        .scale
        .pick((Duration::from_secs(3), 2), (Duration::from_secs(10), 10));
    let gateway = ctx.launcher.start(0, &[]).await?;
    let addr = gateway.addr;
    let probe = Probe::start(Spec::new(addr, PROBE_TOPIC, 200.0), ctx.clock, ctx.nice).await?;
    let mut row = Row::new("R7", "HTTP/2 abuse (h2c)");
    let h2c = h2c_works(addr).await;
    row.check(
        h2c.is_ok(),
        format!(
            "h2c by prior knowledge on the plain port (h2 crate: /healthz 200, a subscribe gets a publish){}",
            h2c.err().map(|e| format!(": {e}")).unwrap_or_default()
        ),
    );
    let (base_rss, base_fds) = (gateway.rss_kib(), gateway.n_fds());
    let mut peak_rss = base_rss;
    probe.take_window().await;
    tokio::time::sleep(phase).await;
    let before = probe.take_window().await;

    let burst = until(phase, &gateway, &mut peak_rss, || {
        rapid_reset(addr, Duration::from_millis(500), None)
    })
    .await;
    probe.take_window().await;
    let rapid = until(phase, &gateway, &mut peak_rss, || {
        futures(n_rapid, |_| {
            rapid_reset(addr, phase, Some(RAPID_PER_CONNECTION))
        })
    })
    .await;
    let w_rapid = probe.take_window().await;
    let many = until(phase, &gateway, &mut peak_rss, || many_streams(addr, phase)).await;
    let w_many = probe.take_window().await;
    let flood = until(phase, &gateway, &mut peak_rss, || {
        continuation_flood(addr, phase)
    })
    .await;
    let w_flood = probe.take_window().await;
    let pings = until(phase, &gateway, &mut peak_rss, || ping_flood(addr, phase)).await;
    let w_pings = probe.take_window().await;

    tokio::time::sleep(phase).await;
    let after = probe.take_window().await;
    let healthy = http::get(addr, "/healthz").await.map(|r| r.status);
    let settled = wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async { gateway.n_fds().abs_diff(base_fds) <= 16 },
    )
    .await;
    let report = probe.stop().await;
    row.lost = report.n_lost;
    row.duplicated = report.n_duplicated;

    let reference = before.p99_ms;
    let p99_ok = |w: &Window| within(w.p99_ms, reference, 2.0);
    row.note(format!(
        "probe p99 before the attacks {:.2} ms, after them {:.2} ms",
        before.p99_ms, after.p99_ms
    ));
    row.check(
        burst.n_connections > 0
            && burst.n_goaway > 0
            && burst.n_goaway + burst.n_closed == burst.n_connections
            && burst.slowest_end <= Duration::from_secs(1),
        format!(
            "rapid reset flat out: every connection ended by the gateway within 1 s ({} of {}: {} GOAWAY read, {} closed under the client's writes; slowest {:.0} ms; {} streams reset in 0.5 s)",
            burst.n_goaway + burst.n_closed,
            burst.n_connections,
            burst.n_goaway,
            burst.n_closed,
            burst.slowest_end.as_secs_f64() * 1000.0,
            count(burst.n_streams)
        ),
    );
    let sum = |f: fn(&Rapid) -> u64| rapid.iter().map(f).sum::<u64>();
    row.check_speed(
        p99_ok(&w_rapid),
        format!(
            "rapid reset at {} streams/s on {n_rapid} connections: probe p99 < 2× baseline (or + {JITTER_MS} ms) ({:.2} ms vs {:.2} ms; {} streams on {} connections, {} GOAWAY, {} closed, {} open at the end)",
            count((RAPID_PER_CONNECTION as u64) * n_rapid as u64),
            w_rapid.p99_ms,
            reference,
            count(sum(|r| r.n_streams)),
            sum(|r| r.n_connections),
            sum(|r| r.n_goaway),
            sum(|r| r.n_closed),
            sum(|r| r.n_open)
        ),
    );
    row.check(
        many.n_connections > 0
            && many.max_opened <= MAX_CONCURRENT_STREAMS
            && many.n_unanswered == 0
            && p99_ok(&w_many),
        format!(
            "1,000 streams on one connection: at most max_concurrent_streams ({MAX_CONCURRENT_STREAMS}) opened, the rest refused ({} connections: at most {} opened, {} REFUSED_STREAM, {} GOAWAY, {} unanswered), probe p99 {:.2} ms",
            many.n_connections,
            many.max_opened,
            count(many.n_refused),
            many.n_goaway,
            many.n_unanswered,
            w_many.p99_ms
        ),
    );
    row.check(
        flood.n_connections > 0
            && flood.n_closed == flood.n_connections
            && flood.closed_measured
            && flood.read_before_close <= 1 << 20
            && flood.slowest <= Duration::from_secs(1)
            && p99_ok(&w_flood),
        format!(
            "CONTINUATION flood: each connection closed (GOAWAY {}) within 1 s, after the gateway read < 1 MiB of header block ({} of {} closed, slowest {:.0} ms; {} bytes read before the close, measured a frame at a time), probe p99 {:.2} ms",
            flood
                .goaway_code
                .map_or("none".to_string(), |c| format!("code {c}")),
            flood.n_closed,
            flood.n_connections,
            flood.slowest.as_secs_f64() * 1000.0,
            count(flood.read_before_close),
            w_flood.p99_ms
        ),
    );
    row.check_speed(
        p99_ok(&w_pings),
        format!(
            "PING flood ({} PINGs, {} answered, {}): probe p99 < 2× baseline (or + {JITTER_MS} ms) ({:.2} ms vs {:.2} ms)",
            count(pings.n_sent),
            count(pings.n_acked),
            match pings.goaway_code {
                Some(code) => format!("GOAWAY code {code}"),
                None => "no GOAWAY".to_string(),
            },
            w_pings.p99_ms,
            reference
        ),
    );
    let growth = peak_rss.saturating_sub(base_rss);
    row.check(
        growth < 10 * 1024,
        format!(
            "RSS bounded: peak growth < 10 MiB ({:.1} MiB)",
            growth as f64 / 1024.0
        ),
    );
    row.check(
        healthy == Ok(200) && settled.is_some() && report.clean(),
        format!(
            "afterwards /healthz 200, fds back to baseline ± 16 ({base_fds} → {}), probe lost nothing ({})",
            gateway.n_fds(),
            report.describe()
        ),
    );
    row.load = "probe publisher + subscriber at 200 events/s (HTTP/1.1)".into();
    row.faults = format!(
        "{:.0} s each: rapid reset flat out (0.5 s) and at {} streams/s on {n_rapid} connections; a connection a second opening 1,000 streams; 10 CONTINUATION floods a second; {} PINGs/s",
        phase.as_secs_f64(),
        count((RAPID_PER_CONNECTION as u64) * n_rapid as u64),
        count(PINGS_PER_SECOND)
    );
    row.bad_inputs =
        "h2 frames beyond the limits: streams over max_concurrent_streams, endless header blocks"
            .into();
    Ok(row)
}

/// Runs `attack` while sampling the gateway's RSS.
async fn until<F, Fut, T>(phase: Duration, gateway: &Gateway, peak: &mut u64, attack: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let task = attack();
    tokio::pin!(task);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let deadline = Instant::now() + phase * 3;
    loop {
        tokio::select! {
            out = &mut task => return out,
            _ = tick.tick() => *peak = (*peak).max(gateway.rss_kib()),
            () = tokio::time::sleep_until(deadline) => {
                // The attack overran its phase: finish it anyway.
            }
        }
    }
}

/// `n` copies of an attack at once, as local tasks.
async fn futures<F, Fut, T>(n: usize, attack: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + 'static,
    T: 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::task::spawn_local(attack(i)))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        if let Ok(t) = task.await {
            out.push(t);
        }
    }
    out
}

/// Through the `h2` crate: `/healthz`, then a subscribe that gets an event.
async fn h2c_works(addr: SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::task::spawn_local(connection);
    let result = async {
        let request = |path: &str| http_request(addr, path);
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let (response, _) = client
            .send_request(request("/healthz"), true)
            .map_err(|e| e.to_string())?;
        let status = response.await.map_err(|e| e.to_string())?.status();
        if status != 200 {
            return Err(format!("/healthz over h2 answered {status}"));
        }
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let (response, _) = client
            .send_request(request("/subscribe/h2/check"), true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("subscribe over h2 answered {}", response.status()));
        }
        let mut body = response.into_body();
        let mut seen = Vec::new();
        let mut published = false;
        while !String::from_utf8_lossy(&seen).contains("data: over h2") {
            let data = tokio::time::timeout(Duration::from_secs(5), body.data())
                .await
                .map_err(|_| "no event over h2".to_string())?
                .ok_or("the h2 stream ended")?
                .map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(data.len());
            seen.extend_from_slice(&data);
            if !published && String::from_utf8_lossy(&seen).contains("id: ") {
                published = true;
                let reply = Conn::connect(addr)
                    .await?
                    .publish("h2/check", b"over h2")
                    .await?;
                if reply.status != 200 {
                    return Err(format!("publish answered {}", reply.status));
                }
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}
