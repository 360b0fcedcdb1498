//! R7, HTTP/2 abuse over cleartext h2c with prior knowledge (ssegate
//! serves it on its plain port: checked first with the `h2` crate). Four
//! attacks, each for a few seconds, attackers reconnecting when thrown out:
//! rapid reset (HEADERS + RST_STREAM as fast as the `h2` client goes), a
//! thousand streams on one connection (raw frames: a real client keeps to
//! `max_concurrent_streams`), a CONTINUATION flood (raw), a PING flood
//! (raw, 10,000 a second). The gateway must answer each as configured
//! (GOAWAY, REFUSED_STREAM, a closed connection), keep a probe
//! subscriber's p99 under twice its baseline, and keep its memory bounded.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Ctx, RowFuture, count, wait_for};
use crate::gateway::Gateway;
use crate::h2raw::{self, Reader};
use crate::http::{self, Conn};
use crate::probe::{Probe, Spec, Window};
use crate::procnet;
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
    let probe = Probe::start(Spec::new(addr, PROBE_TOPIC, 50.0), ctx.clock, ctx.nice).await?;
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

    let reference = before.p99_ms.max(after.p99_ms);
    let p99_ok = |w: &Window| w.p99_ms < 2.0 * reference;
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
    row.check(
        p99_ok(&w_rapid),
        format!(
            "rapid reset at {} streams/s on {n_rapid} connections: probe p99 < 2× baseline ({:.2} ms vs {:.2} ms; {} streams on {} connections, {} GOAWAY, {} closed, {} open at the end)",
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
    row.check(
        p99_ok(&w_pings),
        format!(
            "PING flood ({} PINGs, {} answered, {}): probe p99 < 2× baseline ({:.2} ms vs {:.2} ms)",
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
    row.load = "probe publisher + subscriber at 50 events/s (HTTP/1.1)".into();
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

fn http_request(addr: SocketAddr, path: &str) -> ::http::Request<()> {
    ::http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .expect("a valid request")
}

/// What one rapid-reset attacker saw.
struct Rapid {
    n_connections: u64,
    /// Connections ended by the gateway: a GOAWAY read, or the connection
    /// closed under the client's writes (the GOAWAY then often goes
    /// unread: the client's next write fails first).
    n_goaway: u64,
    n_closed: u64,
    /// Connections still open when the phase ended (paced only).
    n_open: u64,
    n_streams: u64,
    /// From a connection's first stream to its end, the longest.
    slowest_end: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    GoAway,
    Closed,
    Other,
}

/// HEADERS + RST_STREAM(CANCEL) on a new connection each time the gateway
/// ends one, for `phase`: as fast as the `h2` client allows, or `rate`
/// streams a second (in tens every 10 ms).
async fn rapid_reset(addr: SocketAddr, phase: Duration, rate: Option<f64>) -> Rapid {
    let mut out = Rapid {
        n_connections: 0,
        n_goaway: 0,
        n_closed: 0,
        n_open: 0,
        n_streams: 0,
        slowest_end: Duration::ZERO,
    };
    let end = Instant::now() + phase;
    while Instant::now() < end {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            break;
        };
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            break;
        };
        out.n_connections += 1;
        let ended = Rc::new(Cell::new(None));
        let driver = tokio::task::spawn_local({
            let ended = Rc::clone(&ended);
            async move {
                let result = connection.await;
                ended.set(Some(match result {
                    Err(err) if err.is_go_away() => Ended::GoAway,
                    Err(err) if err.is_io() => Ended::Closed,
                    _ => Ended::Other,
                }));
            }
        });
        let started = Instant::now();
        let mut client = client;
        let mut n = 0u64;
        let per_tick = rate.map(|rate| (rate / 100.0).max(1.0) as u64);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            let limit = match rate {
                Some(_) => end,
                None => end + Duration::from_secs(2),
            };
            if ended.get().is_some() || Instant::now() >= limit {
                break;
            }
            if let Some(per_tick) = per_tick
                && n.is_multiple_of(per_tick)
            {
                tick.tick().await;
            }
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            match client.send_request(http_request(addr, "/subscribe/h2/rapid"), false) {
                Ok((response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    drop(response);
                    n += 1;
                }
                Err(_) => break,
            }
            // Let the connection task write now and then.
            if per_tick.is_none() && n.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        // The verdict comes through the connection task (a paced one may
        // still be open at the end of the phase: no verdict then).
        let wait = match rate {
            Some(_) => Duration::from_millis(200),
            None => Duration::from_secs(2),
        };
        let _ = tokio::time::timeout(wait, async {
            while ended.get().is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        driver.abort();
        out.n_streams += n;
        match ended.get() {
            Some(Ended::GoAway) => out.n_goaway += 1,
            Some(Ended::Closed) => out.n_closed += 1,
            _ => {
                out.n_open += 1;
                continue;
            }
        }
        out.slowest_end = out.slowest_end.max(started.elapsed());
    }
    out
}

#[derive(Default)]
struct Many {
    n_connections: u64,
    max_opened: u64,
    n_refused: u64,
    n_goaway: u64,
    /// Streams neither answered nor refused within 2 s.
    n_unanswered: u64,
}

/// A connection a second that opens 1,000 subscribe streams at once, for
/// `phase`.
async fn many_streams(addr: SocketAddr, phase: Duration) -> Many {
    let mut out = Many::default();
    let end = Instant::now() + phase;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < end {
        // One connection a second, held until the next.
        tick.tick().await;
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            break;
        };
        if h2raw::open(&mut tcp).await.is_err() {
            break;
        }
        let mut burst = Vec::new();
        for i in 0..1000u32 {
            let block = h2raw::get_block(&format!("/subscribe/h2/many{}", i % 10));
            burst.extend(h2raw::frame(
                h2raw::HEADERS,
                h2raw::END_STREAM | h2raw::END_HEADERS,
                1 + 2 * i,
                &block,
            ));
        }
        let (read, mut write) = tcp.into_split();
        if write.write_all(&burst).await.is_err() {
            break;
        }
        out.n_connections += 1;
        let mut reader = Reader::new(read);
        let (mut opened, mut refused, mut goaway_last) = (0u64, 0u64, None);
        // Answers until every stream is accounted for, or 2 s of silence.
        while opened + refused < 1000 {
            match reader.next(Duration::from_secs(2)).await {
                Ok(Some(frame)) => match frame.kind {
                    h2raw::HEADERS if frame.stream % 2 == 1 => opened += 1,
                    h2raw::RST_STREAM if frame.error_code() == Some(h2raw::REFUSED_STREAM) => {
                        refused += 1
                    }
                    h2raw::GOAWAY => {
                        let last = frame
                            .payload
                            .get(..4)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
                        goaway_last = last;
                    }
                    h2raw::SETTINGS if frame.flags & h2raw::ACK == 0 => {
                        let _ = write
                            .write_all(&h2raw::frame(h2raw::SETTINGS, h2raw::ACK, 0, &[]))
                            .await;
                    }
                    _ => {}
                },
                Ok(None) | Err(()) => break,
            }
        }
        out.max_opened = out.max_opened.max(opened);
        out.n_refused += refused;
        // A GOAWAY refuses every stream above its last stream id.
        let beyond = goaway_last.map_or(0, |last| (1000 - last.div_ceil(2)).into());
        if goaway_last.is_some() {
            out.n_goaway += 1;
        }
        out.n_unanswered += 1000u64.saturating_sub(opened + refused + beyond);
    }
    out
}

#[derive(Default)]
struct Flood {
    n_connections: u64,
    n_closed: u64,
    /// Header block bytes the gateway read of the first connection's flood
    /// before it closed it (sent a frame at a time, each once it had read
    /// the last).
    read_before_close: u64,
    closed_measured: bool,
    slowest: Duration,
    goaway_code: Option<u32>,
}

/// HEADERS without END_HEADERS, then CONTINUATION frames of 4 KiB of
/// header fields each, until the gateway closes the connection (or 4 MiB):
/// the first connection in lockstep with the gateway's reads (to measure
/// what it took), the next ones flat out, ten a second for `phase`.
async fn continuation_flood(addr: SocketAddr, phase: Duration) -> Flood {
    let mut out = Flood::default();
    let end = Instant::now() + phase;
    let field = h2raw::literal(b"x-flood", &[b'f'; 4000]);
    let first = h2raw::frame(
        h2raw::HEADERS,
        0,
        1,
        &h2raw::get_block("/subscribe/h2/flood"),
    );
    let continuation = h2raw::frame(h2raw::CONTINUATION, 0, 1, &field);
    let n_frames = (4usize << 20) / continuation.len();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < end {
        // Ten connections a second.
        tick.tick().await;
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            break;
        };
        let Ok(local) = tcp.local_addr() else {
            break;
        };
        if h2raw::open(&mut tcp).await.is_err() {
            break;
        }
        out.n_connections += 1;
        let (read, mut write) = tcp.into_split();
        let closed = Rc::new(Cell::new(false));
        let code = Rc::new(Cell::new(None));
        let reader = tokio::task::spawn_local({
            let (closed, code) = (Rc::clone(&closed), Rc::clone(&code));
            async move {
                let mut reader = Reader::new(read);
                loop {
                    match reader.next(Duration::from_secs(10)).await {
                        Ok(Some(frame)) if frame.kind == h2raw::GOAWAY => {
                            code.set(frame.error_code())
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(()) => break,
                    }
                }
                closed.set(true);
            }
        });
        let started = Instant::now();
        if out.n_connections == 1 {
            let pieces: Vec<&[u8]> = std::iter::once(first.as_slice())
                .chain(std::iter::repeat_n(continuation.as_slice(), n_frames))
                .collect();
            let ports = (addr.port(), local.port());
            let (read, _) = procnet::lockstep(&mut write, ports, &pieces, || closed.get()).await;
            out.read_before_close = read;
        } else {
            let mut sent = 0u64;
            let mut frame = first.as_slice();
            while sent < 4 << 20 && !closed.get() {
                if write.write_all(frame).await.is_err() {
                    break;
                }
                sent += frame.len() as u64;
                frame = continuation.as_slice();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !closed.get() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        reader.abort();
        if closed.get() {
            out.n_closed += 1;
            if out.n_connections == 1 {
                out.closed_measured = true;
            }
        }
        out.slowest = out.slowest.max(started.elapsed());
        out.goaway_code = code.get().or(out.goaway_code);
    }
    out
}

const PINGS_PER_SECOND: u64 = 10_000;

#[derive(Default)]
struct Pings {
    n_sent: u64,
    n_acked: u64,
    goaway_code: Option<u32>,
}

/// PINGs at `PINGS_PER_SECOND` (100 every 10 ms) for `phase`, reading the
/// answers.
async fn ping_flood(addr: SocketAddr, phase: Duration) -> Pings {
    let mut out = Pings::default();
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return out;
    };
    if h2raw::open(&mut tcp).await.is_err() {
        return out;
    }
    let (read, mut write) = tcp.into_split();
    let acked = Rc::new(Cell::new(0u64));
    let code = Rc::new(Cell::new(None));
    let reader = tokio::task::spawn_local({
        let (acked, code) = (Rc::clone(&acked), Rc::clone(&code));
        async move {
            let mut reader = Reader::new(read);
            while let Ok(Some(frame)) = reader.next(Duration::from_secs(10)).await {
                match frame.kind {
                    h2raw::PING if frame.flags & h2raw::ACK != 0 => acked.set(acked.get() + 1),
                    h2raw::GOAWAY => code.set(frame.error_code()),
                    _ => {}
                }
            }
        }
    });
    let batch: Vec<u8> = (0..PINGS_PER_SECOND / 100)
        .flat_map(|i| h2raw::frame(h2raw::PING, 0, 0, &i.to_be_bytes()))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + phase;
    while Instant::now() < end {
        tick.tick().await;
        if write.write_all(&batch).await.is_err() {
            break;
        }
        out.n_sent += PINGS_PER_SECOND / 100;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.abort();
    out.n_acked = acked.get();
    out.goaway_code = code.get();
    out
}
