//! R14, graceful shutdown under load: thousands of subscribers on 10
//! topics, publishers at a steady rate, two publishes whose bodies are half
//! sent, then SIGTERM. `/readyz` must turn 503 at once (asked on a
//! connection already open: the listener is closed), every stream must end
//! within `shutdown_timeout`, every publish answered 200 must have reached
//! every stream it was handed to (the `subscribers` of its reply), the
//! half-sent publishes (in flight at the signal) must be finished, answered
//! 200 and delivered like the others, and the process must exit 0.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Ctx, RowFuture, count};
use crate::http::{self, Conn};
use crate::row::Row;
use crate::sse::{SseStream, parse_id};

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(shutdown(ctx))
}

const N_TOPICS: u64 = 10;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Acks {
    /// `seq → (subscribers, when)` of every publish answered 200.
    acked: RefCell<HashMap<u64, (u64, Instant)>>,
    /// Acknowledged after SIGTERM was sent.
    n_after_signal: Cell<u64>,
    n_refused: Cell<u64>,
    signalled: Cell<bool>,
    stop: Cell<bool>,
}

/// One subscriber's stream.
struct Stream {
    received: Vec<u64>,
    n_duplicated: u64,
    ended_at: Option<Instant>,
}

async fn shutdown(ctx: &Ctx) -> Result<Row, String> {
    let (n_subscribers, rate, hold) = ctx.scale.pick(
        (1_000, 200.0, Duration::from_secs(3)),
        (10_000, 200.0, Duration::from_secs(10)),
    );
    let timeout = format!("{}s", SHUTDOWN_TIMEOUT.as_secs());
    let mut gateway = ctx
        .launcher
        .start(0, &["--shutdown-timeout", &timeout])
        .await?;
    let addr = gateway.addr;
    let mut row = Row::new("R14", "graceful shutdown under load");

    let mut streams = Vec::with_capacity(n_subscribers);
    for batch in (0..n_subscribers as u64).collect::<Vec<_>>().chunks(500) {
        let opened: Vec<_> = batch
            .iter()
            .map(|&i| tokio::task::spawn_local(open(addr, i % N_TOPICS)))
            .collect();
        for task in opened {
            streams.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    let results: Vec<_> = streams
        .into_iter()
        .map(|(_, sse)| tokio::task::spawn_local(read(sse)))
        .collect();
    let acks = Rc::new(Acks::default());
    let publishers: Vec<_> = (0..4)
        .map(|k| tokio::task::spawn_local(publish(addr, k, rate / 4.0, Rc::clone(&acks))))
        .collect();
    let mut readyz = Conn::connect(addr).await?;
    if readyz.get("/readyz").await?.status != 200 {
        return Err("/readyz was not 200 before the signal".into());
    }
    // Two publishes in flight: heads and half their bodies sent.
    let mut halves = Vec::new();
    for i in 0..2 {
        let mut socket = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let head =
            format!("POST /publish/s/{i} HTTP/1.1\r\nHost: r\r\nContent-Length: 10\r\n\r\nhello");
        socket
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        halves.push(socket);
    }
    tokio::time::sleep(hold).await;

    gateway.signal(libc::SIGTERM);
    let signalled = Instant::now();
    acks.signalled.set(true);
    let readyz_503 = loop {
        match readyz.get("/readyz").await {
            Ok(response) if response.status == 503 => break Some(signalled.elapsed()),
            Ok(_) if signalled.elapsed() < Duration::from_secs(2) => {}
            _ => break None,
        }
    };
    let mut n_halves_acked = 0;
    for mut socket in halves {
        let _ = socket.write_all(b"world").await;
        let mut pending = Vec::new();
        match tokio::time::timeout(
            Duration::from_secs(5),
            http::read_response(&mut socket, &mut pending),
        )
        .await
        {
            Ok(Ok(response)) => match http::published(&response)
                .and_then(|p| Some((parse_id(p.id.as_bytes())?.1, p.subscribers)))
            {
                // Checked for delivery with the others.
                Some((seq, subscribers)) => {
                    n_halves_acked += 1;
                    acks.acked
                        .borrow_mut()
                        .insert(seq, (subscribers, Instant::now()));
                }
                None => row.note(format!(
                    "half-sent publish answered {}: {}",
                    response.status,
                    response.body_text().trim_end()
                )),
            },
            other => row.note(format!("half-sent publish: {other:?}")),
        }
    }
    let exit = gateway
        .wait_exit(SHUTDOWN_TIMEOUT + Duration::from_secs(5))
        .await;
    let exited_after = signalled.elapsed();
    acks.stop.set(true);
    for publisher in publishers {
        let _ = publisher.await;
    }
    let mut streams = Vec::with_capacity(n_subscribers);
    for result in results {
        streams.push(result.await.map_err(|e| e.to_string())?);
    }

    row.check(
        readyz_503.is_some_and(|d| d < Duration::from_millis(100)),
        format!(
            "/readyz 503 at once, on a connection already open (after {})",
            readyz_503.map_or("never".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1000.0
            ))
        ),
    );
    let ended: Vec<Duration> = streams
        .iter()
        .filter_map(|s| s.ended_at.map(|at| at.saturating_duration_since(signalled)))
        .collect();
    let n_early = streams
        .iter()
        .filter(|s| s.ended_at.is_some_and(|at| at < signalled))
        .count();
    let last_end = ended.iter().max().copied().unwrap_or_default();
    row.check(
        ended.len() == n_subscribers && n_early == 0 && last_end <= SHUTDOWN_TIMEOUT,
        format!(
            "every stream ended within shutdown_timeout ({} s): {} of {n_subscribers}, the last {:.0} ms after SIGTERM, {n_early} before it",
            SHUTDOWN_TIMEOUT.as_secs(),
            ended.len(),
            last_end.as_secs_f64() * 1000.0
        ),
    );
    // Every acknowledged event reached as many streams as its reply said.
    let mut delivered: HashMap<u64, u64> = HashMap::new();
    for stream in &streams {
        for seq in &stream.received {
            *delivered.entry(*seq).or_default() += 1;
        }
    }
    let acked = acks.acked.borrow();
    let per_topic = n_subscribers as u64 / N_TOPICS;
    let (mut n_short, mut lost, mut n_undercounted) = (0, 0, 0);
    let mut short = Vec::new();
    for (seq, &(n, at)) in acked.iter() {
        let after_signal = at > signalled;
        let got = delivered.get(seq).copied().unwrap_or(0);
        if got < n {
            n_short += 1;
            lost += n - got;
            short.push((*seq, n, got, at.saturating_duration_since(signalled)));
        }
        if n != per_topic && !after_signal {
            n_undercounted += 1;
        }
    }
    row.lost = lost;
    row.duplicated = streams.iter().map(|s| s.n_duplicated).sum();
    row.check(
        n_short == 0 && row.duplicated == 0,
        format!(
            "every publish answered 200 reached every stream it was handed to ({} of {} events; {} acknowledged after SIGTERM; {} deliveries missing)",
            count((acked.len() - n_short) as u64),
            count(acked.len() as u64),
            acks.n_after_signal.get(),
            count(lost)
        ),
    );
    short.sort_unstable();
    let first_end = ended.iter().min().copied().unwrap_or_default();
    row.note(format!(
        "streams ended {:.1} to {:.1} ms after SIGTERM",
        first_end.as_secs_f64() * 1000.0,
        last_end.as_secs_f64() * 1000.0
    ));
    for (seq, n, got, after) in short.iter().take(12) {
        row.note(format!(
            "event seq {seq}: acknowledged {:.1} ms after SIGTERM as handed to {n} streams, delivered to {got}",
            after.as_secs_f64() * 1000.0
        ));
    }
    if n_undercounted > 0 {
        row.note(format!(
            "{n_undercounted} publishes before SIGTERM were handed to other than the {per_topic} streams of their topic"
        ));
    }
    row.check(
        n_halves_acked == 2,
        format!("publishes in flight at SIGTERM finished and answered 200 ({n_halves_acked} of 2)"),
    );
    let code = exit.and_then(|status| status.code());
    row.check(
        code == Some(0) && exited_after <= SHUTDOWN_TIMEOUT + Duration::from_secs(1),
        format!(
            "exit code 0 within shutdown_timeout ({code:?} after {:.2} s)",
            exited_after.as_secs_f64()
        ),
    );
    row.load = format!(
        "{} subscribers on {N_TOPICS} topics, 4 publishers at {rate:.0} events/s, held {:.0} s",
        count(n_subscribers as u64),
        hold.as_secs_f64()
    );
    row.faults = "SIGTERM with 2 publishes half-sent".into();
    Ok(row)
}

/// Subscribes to `s/<topic>` and waits for its position block.
async fn open(addr: SocketAddr, topic: u64) -> Result<(u64, SseStream), String> {
    let mut sse = SseStream::open(addr, &format!("/subscribe/s/{topic}"), "").await?;
    if sse.status != 200 {
        return Err(format!("subscribe answered {}", sse.status));
    }
    loop {
        let frame = sse
            .next_frame(Duration::from_secs(10))
            .await?
            .ok_or("the stream ended before its position")?;
        if frame.is_position() {
            return Ok((topic, sse));
        }
    }
}

/// Reads a stream to its end, keeping the sequence numbers of its events.
async fn read(mut sse: SseStream) -> Stream {
    let mut stream = Stream {
        received: Vec::new(),
        n_duplicated: 0,
        ended_at: None,
    };
    let give_up = Instant::now() + Duration::from_secs(120);
    while Instant::now() < give_up {
        let read = tokio::time::timeout_at(
            give_up,
            sse.read_frames(|frame| {
                if let (Some(_), Some((_, seq))) = (frame.data, frame.id.and_then(parse_id)) {
                    if stream.received.last().is_some_and(|&last| last >= seq) {
                        stream.n_duplicated += 1;
                    } else {
                        stream.received.push(seq);
                    }
                }
            }),
        )
        .await;
        match read {
            Ok(Ok(true)) => {}
            _ => break,
        }
    }
    stream.ended_at = Some(Instant::now());
    stream
}

/// Publishes at `rate` to topics `k, k + 4, ...` until the gateway is gone.
async fn publish(addr: SocketAddr, k: u64, rate: f64, acks: Rc<Acks>) {
    let Ok(mut conn) = Conn::connect(addr).await else {
        return;
    };
    let period = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    for n in 0u64.. {
        if acks.stop.get() {
            return;
        }
        tokio::time::sleep_until(started + period.mul_f64(n as f64)).await;
        let topic = (k + 4 * n) % N_TOPICS;
        let Ok(response) = conn
            .publish(&format!("s/{topic}"), format!("{k}:{n}").as_bytes())
            .await
        else {
            return;
        };
        match http::published(&response)
            .and_then(|p| Some((parse_id(p.id.as_bytes())?.1, p.subscribers)))
        {
            Some((seq, subscribers)) => {
                let after_signal = acks.signalled.get();
                acks.acked
                    .borrow_mut()
                    .insert(seq, (subscribers, Instant::now()));
                if after_signal {
                    acks.n_after_signal.set(acks.n_after_signal.get() + 1);
                }
            }
            None => acks.n_refused.set(acks.n_refused.get() + 1),
        }
    }
}
