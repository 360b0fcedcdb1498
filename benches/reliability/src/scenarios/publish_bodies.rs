//! R6, slow and oversized publish bodies, against `request_body_timeout`
//! set to 3 s and the default `max_event_bytes` (64 KiB): bodies dripping a
//! byte a second must get `408` (or a close) within the timeout + 1 s; a
//! body one byte over the limit `413`, chunked or not; a `Content-Length` of
//! 10 GB `413` before a byte of body is sent; a 100 MB chunked body `413`
//! after the gateway read about the limit (its own `rchar`). Meanwhile a
//! probe publisher and subscriber must go on unaffected.

use std::net::SocketAddr;
use std::time::Duration;

use ssegate_bench::wire::parse_head;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Ctx, RowFuture, count};
use crate::http::{self, Conn};
use crate::probe::{Probe, Spec};
use crate::procnet;
use crate::row::Row;

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(publish_bodies(ctx))
}

const BODY_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_EVENT_BYTES: usize = 65_536;
/// What the gateway may read past the limit of a chunked body: the head,
/// chunk framing, and the 8 KiB chunk that crossed the limit (research's
/// "≤ limit + 16 KiB").
const READ_SLACK: u64 = 16 * 1024;
/// Longer than any request head this scenario sends.
const HEAD_BYTES: u64 = 256;

/// How a slow body ended.
struct Slow {
    /// From the end of the head to the answer or the close.
    after: Option<Duration>,
    status: Option<u16>,
}

async fn publish_bodies(ctx: &Ctx) -> Result<Row, String> {
    let n_slow = ctx.scale.pick(50, 500);
    let timeout = format!("{}s", BODY_TIMEOUT.as_secs());
    let gateway = ctx
        .launcher
        .start(0, &["--request-body-timeout", &timeout])
        .await?;
    let addr = gateway.addr;
    let probe = Probe::start(Spec::new(addr, "bodies/probe", 20.0), ctx.clock, ctx.nice).await?;
    let mut row = Row::new("R6", "slow and oversized publish bodies");

    let slow: Vec<_> = (0..n_slow)
        .map(|_| tokio::task::spawn_local(slow_body(addr)))
        .collect();

    let over = vec![b'x'; MAX_EVENT_BYTES + 1];
    let at_limit = Conn::connect(addr)
        .await?
        .publish("bodies/big", &over[1..])
        .await?;
    let with_length = Conn::connect(addr)
        .await?
        .publish("bodies/big", &over)
        .await?;
    let chunked = chunked_publish(addr, &over).await?;
    row.check(
        at_limit.status == 200 && with_length.status == 413 && chunked == 413,
        format!(
            "max_event_bytes + 1 → 413 (with Content-Length {}, chunked {}; at the limit {})",
            with_length.status, chunked, at_limit.status
        ),
    );

    let huge = declared_huge(addr).await?;
    row.check(
        huge.status == 413 && huge.answered_in < Duration::from_secs(1) && huge.read <= HEAD_BYTES,
        format!(
            "Content-Length: 10000000000 → 413 before any body byte is sent, and no body read ({} in {:.0} ms; the gateway read {} of {} bytes, head included)",
            huge.status,
            huge.answered_in.as_secs_f64() * 1000.0,
            count(huge.read),
            count(huge.pushed)
        ),
    );

    let hundred = hundred_megabytes(addr).await?;
    let limit = MAX_EVENT_BYTES as u64 + READ_SLACK;
    row.check(
        hundred.status == 413 && hundred.read <= limit,
        format!(
            "100 MB chunked → 413 after the gateway read ≤ the limit + {} KiB ({} after it read {} bytes of the {} sent, each 8 KiB chunk sent once it had read the last)",
            READ_SLACK / 1024,
            hundred.status,
            count(hundred.read),
            count(hundred.pushed)
        ),
    );

    let mut outcomes = Vec::with_capacity(n_slow);
    for task in slow {
        outcomes.push(task.await.map_err(|e| format!("slow body task: {e}"))?);
    }
    let deadline = BODY_TIMEOUT + Duration::from_secs(1);
    let n_in_time = outcomes
        .iter()
        .filter(|o| o.after.is_some_and(|a| a <= deadline))
        .count();
    let n_408 = outcomes.iter().filter(|o| o.status == Some(408)).count();
    let slowest = outcomes.iter().filter_map(|o| o.after).max();
    row.check(
        n_in_time == n_slow,
        format!(
            "1 byte/s bodies: 408 or close within request_body_timeout + 1 s ({n_in_time} of {n_slow}; {n_408} with 408; slowest {:.2} s)",
            slowest.unwrap_or_default().as_secs_f64()
        ),
    );
    let during = probe.take_window().await;
    let report = probe.stop().await;
    row.lost = report.n_lost;
    row.duplicated = report.n_duplicated;
    row.check(
        report.clean() && during.publish_p99_ms < 100.0,
        format!(
            "other publishes unaffected: all 200, all delivered, request p99 < 100 ms ({:.2} ms; {})",
            during.publish_p99_ms,
            report.describe()
        ),
    );
    row.load = "probe publisher + subscriber at 20 events/s".into();
    row.faults = format!("{n_slow} bodies at 1 byte/s (request_body_timeout 3 s)");
    row.bad_inputs =
        "bodies of 64 KiB + 1 (with length, chunked), Content-Length 10^10, 100 MB chunked".into();
    Ok(row)
}

/// A 100-byte body, one byte a second.
async fn slow_body(addr: SocketAddr) -> Slow {
    let mut outcome = Slow {
        after: None,
        status: None,
    };
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return outcome;
    };
    let head = "POST /publish/bodies/slow HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return outcome;
    }
    let started = Instant::now();
    let give_up = started + BODY_TIMEOUT + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut buf, mut answer) = ([0u8; 1024], Vec::new());
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    outcome.after = Some(started.elapsed());
                    return outcome;
                }
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if let Some(head) = parse_head(&answer) {
                        outcome.status = Some(head.status);
                        outcome.after = Some(started.elapsed());
                        return outcome;
                    }
                }
            },
            _ = tick.tick() => {
                if stream.write_all(b"x").await.is_err() {
                    outcome.after = Some(started.elapsed());
                    return outcome;
                }
            }
            () = tokio::time::sleep_until(give_up) => return outcome,
        }
    }
}

/// `body` as one chunk of a chunked publish; the status.
async fn chunked_publish(addr: SocketAddr, body: &[u8]) -> Result<u16, String> {
    let mut request = format!(
        "POST /publish/bodies/big HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut conn = Conn::connect(addr).await?;
    Ok(conn.send(&request).await?.status)
}

struct Pushed {
    status: u16,
    answered_in: Duration,
    /// Bytes of the request the gateway read (head included).
    read: u64,
    /// Bytes this side wrote.
    pushed: u64,
}

/// A head declaring 10 GB and no body: the answer must come at once; then
/// body bytes pushed after it must not be read.
async fn declared_huge(addr: SocketAddr) -> Result<Pushed, String> {
    let mut conn = Lockstep::connect(addr).await?;
    let head =
        b"POST /publish/bodies/huge HTTP/1.1\r\nHost: r\r\nContent-Length: 10000000000\r\n\r\n";
    let started = Instant::now();
    let (read_head, _) =
        procnet::lockstep(&mut conn.writer, conn.ports, &[head.as_slice()], || false).await;
    let status = conn.status().await;
    let answered_in = started.elapsed();
    let body = vec![b'y'; 8 * 1024];
    let pieces: Vec<&[u8]> = std::iter::repeat_n(body.as_slice(), 8).collect();
    let (read_body, pushed) =
        procnet::lockstep(&mut conn.writer, conn.ports, &pieces, || false).await;
    Ok(Pushed {
        status,
        answered_in,
        read: read_head + read_body,
        pushed: head.len() as u64 + pushed,
    })
}

/// A connection written in lockstep with the gateway's reads
/// (`procnet::lockstep`): its ports, its write half, and a task reading the
/// answer's status meanwhile.
struct Lockstep {
    ports: (u16, u16),
    writer: OwnedWriteHalf,
    answer: JoinHandle<Option<u16>>,
}

impl Lockstep {
    async fn connect(addr: SocketAddr) -> Result<Lockstep, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        let (mut reader, writer) = stream.into_split();
        Ok(Lockstep {
            ports: (addr.port(), local.port()),
            writer,
            answer: tokio::task::spawn_local(async move { read_status(&mut reader).await }),
        })
    }

    /// The answer's status, or 0 if none came within `http::PATIENCE`.
    async fn status(&mut self) -> u16 {
        tokio::time::timeout(http::PATIENCE, &mut self.answer)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or(0)
    }
}

/// Reads until a response head; its status, or `None` if the connection
/// ended first.
async fn read_status(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<u16> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(head) = parse_head(&answer) {
            return Some(head.status);
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// A 100 MB chunked body in 8 KiB chunks, each sent once the gateway has
/// read the last, until it answers or stops reading: what it read by then.
async fn hundred_megabytes(addr: SocketAddr) -> Result<Pushed, String> {
    let mut conn = Lockstep::connect(addr).await?;
    let started = Instant::now();
    let head =
        b"POST /publish/bodies/hundred HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = [
        format!("{:x}\r\n", 8 * 1024).into_bytes(),
        vec![b'z'; 8 * 1024],
        b"\r\n".to_vec(),
    ]
    .concat();
    let n_chunks = (100usize << 20) / (8 * 1024);
    let pieces: Vec<&[u8]> = std::iter::once(head.as_slice())
        .chain(std::iter::repeat_n(chunk.as_slice(), n_chunks))
        .collect();
    let answer = &conn.answer;
    let (read, pushed) = procnet::lockstep(&mut conn.writer, conn.ports, &pieces, || {
        answer.is_finished()
    })
    .await;
    let status = conn.status().await;
    Ok(Pushed {
        status,
        answered_in: started.elapsed(),
        read,
        pushed,
    })
}
