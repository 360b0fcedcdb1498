//! R11, connection limits and descriptor exhaustion.
//!
//! 1. Per address: one address opens `max_connections_per_address` + 500
//!    subscribers; the excess must be closed at accept while another
//!    address still subscribes and gets events.
//! 2. In total: twenty more addresses bring the server to
//!    `max_connections` + 500; the excess must be closed at accept or
//!    refused for now (`503` + `Retry-After`), while `/healthz` on a fresh
//!    connection, every 50 ms, never misses twice in a row (the probe
//!    slots; hundreds of connections arriving in one millisecond can hold
//!    all 32 for an instant, and an orchestrator acts on failures in a
//!    row, never on one).
//! 3. Under an open-file limit of 1,024 (set before exec, so the gateway
//!    cannot raise it), 2,000 connections: `max_connections` must have been
//!    lowered to fit, so that no `accept` fails; `/healthz` answers
//!    throughout; the gateway stays under 0.2 core while it refuses.
//! 4. Real descriptor exhaustion: the limit is lowered under the running
//!    gateway (`prlimit`) to what it holds, and 200 more clients wait in
//!    the accept queue. `accept` fails with `EMFILE`: the gateway must stay
//!    under 0.2 core, log it at a limited rate, and serve the waiting
//!    clients once connections close.
//!
//! Loopback is exempt from the per-address limits by default; steps 1 and
//! 2 run with no exemption, from several loopback addresses.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use ssegate_bench::wire::parse_head;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::{Ctx, RowFuture, count, wait_for};
use crate::gateway::Gateway;
use crate::http;
use crate::row::Row;

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(connection_limits(ctx))
}

const TOPIC: &str = "limits/r11";
/// `client_limits::PROBE_SLOTS` of the gateway.
const PROBE_SLOTS: usize = 32;
/// The most a refusing gateway may use.
const MAX_CORE: f64 = 0.2;
/// The addresses of step 2, and of steps 3 and 4.
const N_ADDRESSES: u8 = 20;

/// What became of one subscribe.
enum Fate {
    /// `200` and the stream, held open.
    Served(TcpStream),
    /// Another status (with `Retry-After` or not).
    Refused { status: u16, retry_after: bool },
    /// Closed before any answer.
    Closed,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    served: usize,
    /// `503` with `Retry-After`.
    refused: usize,
    closed: usize,
    /// Any other answer.
    other: usize,
}

impl Tally {
    fn of(fates: &[Fate]) -> Tally {
        let mut tally = Tally::default();
        for fate in fates {
            match fate {
                Fate::Served(_) => tally.served += 1,
                Fate::Refused {
                    status: 503,
                    retry_after: true,
                } => tally.refused += 1,
                Fate::Refused { .. } => tally.other += 1,
                Fate::Closed => tally.closed += 1,
            }
        }
        tally
    }

    fn describe(&self) -> String {
        format!(
            "{} served, {} closed at accept, {} refused 503 + Retry-After, {} other",
            count(self.served as u64),
            count(self.closed as u64),
            count(self.refused as u64),
            self.other
        )
    }
}

async fn connection_limits(ctx: &Ctx) -> Result<Row, String> {
    let (per_address, max_connections) = ctx.scale.pick((100, 300), (1_000, 2_000));
    let (open_files, n_flood) = ctx.scale.pick((512u64, 800), (1_024u64, 2_000));
    let mut row = Row::new("R11", "connection limits and descriptor exhaustion");
    row.load = format!(
        "subscribers held at max_connections {} / max_connections_per_address {}; then {} connections under an open-file limit of {}",
        count(max_connections as u64),
        count(per_address as u64),
        count(n_flood as u64),
        count(open_files)
    );
    row.faults = format!(
        "{} connections past each limit; the open-file limit lowered under the running gateway, with 200 clients waiting to be accepted",
        count(500)
    );

    by_address_and_in_total(ctx, per_address, max_connections, &mut row).await?;
    let gateway = ctx.launcher.start_limited(0, &[], Some(open_files)).await?;
    let held = under_the_open_file_limit(&gateway, open_files, n_flood, &mut row).await?;
    out_of_descriptors(&gateway, held, &mut row).await?;
    Ok(row)
}

/// Steps 1 and 2.
async fn by_address_and_in_total(
    ctx: &Ctx,
    per_address: usize,
    max_connections: usize,
    row: &mut Row,
) -> Result<(), String> {
    let max = max_connections.to_string();
    let per = per_address.to_string();
    let gateway = ctx
        .launcher
        .start(
            0,
            &[
                "--max-connections",
                &max,
                "--max-connections-per-address",
                &per,
                "--max-streams-per-address",
                "0",
                "--address-limits-exempt",
                "",
            ],
        )
        .await?;
    let addr = gateway.addr;
    let fds_before = gateway.n_fds();
    let health = HealthPoller::start(addr);
    // Opened first, so it holds a slot of its own through the flood.
    let mut publisher = http::Conn::connect(addr).await?;

    // 1. One address, 500 past its limit.
    let crowd = subscribe_all(addr, &[Ipv4Addr::new(127, 0, 0, 2)], per_address + 500).await?;
    let tally = Tally::of(&crowd);
    row.check(
        tally.served == per_address && tally.closed == 500 && tally.other == 0,
        format!(
            "one address, {} subscribes: max_connections_per_address served, the rest closed at accept ({})",
            count(per_address as u64 + 500),
            tally.describe()
        ),
    );
    let other = match subscribe(addr, Ipv4Addr::new(127, 0, 0, 3)).await? {
        Fate::Served(stream) => Some(stream),
        _ => None,
    };
    let published = publisher.publish(TOPIC, b"while-full").await?;
    let delivered = match other {
        Some(stream) => receives(stream, "while-full").await,
        None => false,
    };
    row.check(
        published.status == 200 && delivered,
        "meanwhile another address subscribes and gets a published event",
    );

    // 2. Twenty more addresses, to max_connections + 500 in all (the
    // publisher's connection and the first address's subscribers held).
    let held_before = per_address + 1;
    let wanted = max_connections + 500 - held_before;
    let addresses: Vec<Ipv4Addr> = (0..N_ADDRESSES)
        .map(|i| Ipv4Addr::new(127, 0, 0, 10 + i))
        .collect();
    let flood = subscribe_all(addr, &addresses, wanted).await?;
    let tally = Tally::of(&flood);
    let served_in_all = held_before + tally.served;
    // Connections, the publisher's included.
    row.check(
        served_in_all <= max_connections
            && served_in_all + PROBE_SLOTS >= max_connections
            && tally.other == 0,
        format!(
            "{} addresses to max_connections + 500: at most max_connections held ({} with the first step's), the excess closed at accept or refused for now ({})",
            N_ADDRESSES,
            count(served_in_all as u64),
            tally.describe()
        ),
    );
    // Held full while clients keep trying, as a crowd of EventSources does.
    let retries = retry_loop(addr, &addresses, Duration::from_secs(2)).await;
    row.note(format!(
        "{} more subscribe attempts while full",
        count(retries as u64)
    ));
    let published = publisher.publish(TOPIC, b"at-max").await?;
    row.check(
        published.status == 200,
        format!(
            "a publisher connected before the flood still publishes ({})",
            published.status
        ),
    );
    let polls = health.stop().await;
    row.check(
        polls.held(),
        format!(
            "/healthz on a fresh connection every 50 ms answered throughout, never missed twice in a row ({})",
            polls.describe()
        ),
    );

    drop(crowd);
    drop(flood);
    drop(publisher);
    let settled = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            http::metric(addr, "ssegate_connections")
                .await
                .unwrap_or(f64::MAX)
                <= 1.0
        },
    )
    .await;
    let served_again = matches!(
        subscribe(addr, Ipv4Addr::new(127, 0, 0, 50)).await?,
        Fate::Served(_)
    );
    let fds_after = gateway.n_fds();
    row.check(
        settled.is_some() && served_again && fds_after.abs_diff(fds_before) <= 16,
        format!(
            "once they leave: connections back to none, a new subscriber served, fds back to baseline ± 16 ({fds_before} → {fds_after})"
        ),
    );
    Ok(())
}

/// Step 3: returns the streams it holds, for step 4.
async fn under_the_open_file_limit(
    gateway: &Gateway,
    open_files: u64,
    n_flood: usize,
    row: &mut Row,
) -> Result<Vec<Fate>, String> {
    let addr = gateway.addr;
    let in_force = gateway
        .log_find("ssegate listening")
        .and_then(|line| {
            let rest = &line[line.find("max_connections=")? + "max_connections=".len()..];
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .unwrap_or(u64::MAX);
    row.check(
        in_force < open_files,
        format!(
            "max_connections lowered to fit an open-file limit of {} (to {in_force}, per the start-up line)",
            count(open_files)
        ),
    );
    let health = HealthPoller::start(addr);
    let addresses: Vec<Ipv4Addr> = (0..N_ADDRESSES)
        .map(|i| Ipv4Addr::new(127, 0, 1, 10 + i))
        .collect();
    let flood = subscribe_all(addr, &addresses, n_flood).await?;
    let tally = Tally::of(&flood);
    // Hold, and measure what refusing costs while clients keep trying.
    let cpu_before = gateway.cpu_time();
    let started = Instant::now();
    let retries = retry_loop(addr, &addresses, Duration::from_secs(5)).await;
    let core = (gateway.cpu_time() - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
    let polls = health.stop().await;
    let accept_failures = gateway.log_count("accept failed");
    row.check(
        tally.served as u64 <= in_force && tally.other == 0 && accept_failures == 0,
        format!(
            "{} connections: the excess refused, no accept failed ({}; accept failures logged: {accept_failures})",
            count(n_flood as u64),
            tally.describe()
        ),
    );
    row.check_speed(
        core < MAX_CORE,
        format!(
            "refusing {} more connection attempts in 5 s took {core:.3} core (< {MAX_CORE})",
            count(retries as u64)
        ),
    );
    row.check(
        polls.held(),
        format!(
            "/healthz answered throughout, never missed twice in a row ({})",
            polls.describe()
        ),
    );
    Ok(flood)
}

/// Step 4.
async fn out_of_descriptors(
    gateway: &Gateway,
    held: Vec<Fate>,
    row: &mut Row,
) -> Result<(), String> {
    let addr = gateway.addr;
    // Below the descriptors it holds: every new one fails until some close.
    let fds = gateway.n_fds() as u64;
    let logged_before = gateway.log_count("accept failed");
    gateway.set_open_files(fds.saturating_sub(16))?;
    // These wait in the accept queue: the kernel completes the handshake.
    let mut waiting = Vec::new();
    for i in 0..200u16 {
        let local = Ipv4Addr::new(127, 0, 2, 10 + (i % 20) as u8);
        waiting.push(send_subscribe(addr, local).await?);
    }
    let cpu_before = gateway.cpu_time();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let core = (gateway.cpu_time() - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
    let logged = gateway.log_count("accept failed") - logged_before;
    row.check_speed(
        core < MAX_CORE,
        format!(
            "out of descriptors (EMFILE) with 200 clients waiting: {core:.3} core over 5 s (< {MAX_CORE})"
        ),
    );
    row.check(
        (1..=2).contains(&logged),
        format!(
            "accept failed (EMFILE), logged at a limited rate ({logged} lines in 5 s; one per 10 s)"
        ),
    );
    // Connections close: the waiting clients are accepted and served.
    drop(held);
    let answered: Vec<_> = waiting
        .into_iter()
        .map(|stream| tokio::task::spawn_local(read_fate(stream, Duration::from_secs(10))))
        .collect();
    let mut fates = Vec::with_capacity(answered.len());
    for task in answered {
        fates.push(task.await.map_err(|err| err.to_string())??);
    }
    let tally = Tally::of(&fates);
    // Accepted as descriptors free up, some maybe before the server has
    // seen every close: those are told to come back (503 + Retry-After).
    row.check(
        tally.served + tally.refused == 200,
        format!(
            "once connections close, every waiting client is answered: served, or told to retry while the closes were still being seen ({})",
            tally.describe()
        ),
    );
    drop(fates);
    let served_again = wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            matches!(
                subscribe(addr, Ipv4Addr::new(127, 0, 2, 100)).await,
                Ok(Fate::Served(_))
            )
        },
    )
    .await;
    row.check(
        served_again.is_some(),
        "then a new subscriber is served again",
    );
    Ok(())
}

/// Polls `/healthz` on a fresh connection every 50 ms until stopped.
struct HealthPoller {
    stop: Rc<Cell<bool>>,
    task: tokio::task::JoinHandle<Polls>,
}

/// What the poller saw.
#[derive(Debug, Clone, Copy, Default)]
struct Polls {
    n_ok: usize,
    n_failed: usize,
    /// The longest run of failures in a row.
    most_in_a_row: usize,
}

impl Polls {
    /// An orchestrator acts on a few failed probes in a row (Kubernetes:
    /// 3 by default, 10 s apart), never on one: a miss while hundreds of
    /// connections arrive in the same millisecond and hold every probe
    /// slot is counted, two in a row 50 ms apart fail the row.
    fn held(&self) -> bool {
        self.n_ok > 0 && self.most_in_a_row < 2
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} answered 200; at most {} missed in a row",
            self.n_ok,
            self.n_ok + self.n_failed,
            self.most_in_a_row
        )
    }
}

impl HealthPoller {
    fn start(addr: SocketAddr) -> HealthPoller {
        let stop = Rc::new(Cell::new(false));
        let stopped = Rc::clone(&stop);
        let task = tokio::task::spawn_local(async move {
            let mut polls = Polls::default();
            let mut in_a_row = 0;
            while !stopped.get() {
                let ok = tokio::time::timeout(Duration::from_secs(2), http::get(addr, "/healthz"))
                    .await
                    .is_ok_and(|answer| answer.is_ok_and(|response| response.status == 200));
                match ok {
                    true => {
                        polls.n_ok += 1;
                        in_a_row = 0;
                    }
                    false => {
                        polls.n_failed += 1;
                        in_a_row += 1;
                        polls.most_in_a_row = polls.most_in_a_row.max(in_a_row);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            polls
        });
        HealthPoller { stop, task }
    }

    async fn stop(self) -> Polls {
        self.stop.set(true);
        self.task.await.unwrap_or_default()
    }
}

/// `n` subscribes spread over `addresses`, all at once.
async fn subscribe_all(
    addr: SocketAddr,
    addresses: &[Ipv4Addr],
    n: usize,
) -> Result<Vec<Fate>, String> {
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::task::spawn_local(subscribe(addr, addresses[i % addresses.len()])))
        .collect();
    let mut fates = Vec::with_capacity(n);
    for task in tasks {
        fates.push(task.await.map_err(|err| err.to_string())??);
    }
    Ok(fates)
}

async fn subscribe(addr: SocketAddr, local: Ipv4Addr) -> Result<Fate, String> {
    let stream = send_subscribe(addr, local).await?;
    read_fate(stream, Duration::from_secs(5)).await
}

/// Connects from `local` and sends a subscribe (without
/// `Accept: text/event-stream`, so a refusal is a status).
async fn send_subscribe(addr: SocketAddr, local: Ipv4Addr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|err| err.to_string())?;
    socket
        .bind(SocketAddr::from((local, 0)))
        .map_err(|err| format!("bind {local}: {err}"))?;
    let mut stream = socket
        .connect(addr)
        .await
        .map_err(|err| format!("connect from {local}: {err}"))?;
    let request = format!("GET /subscribe/{TOPIC} HTTP/1.1\r\nHost: r\r\n\r\n");
    // The server may have closed it already: that is read below.
    let _ = stream.write_all(request.as_bytes()).await;
    Ok(stream)
}

/// Reads the answer's head, within `patience`.
async fn read_fate(mut stream: TcpStream, patience: Duration) -> Result<Fate, String> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(patience, async {
        loop {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if memchr::memmem::find(&buf, b"\r\n\r\n").is_some() {
                return;
            }
        }
    })
    .await;
    if read.is_err() {
        return Err("a subscribe was neither answered nor closed in time".into());
    }
    if buf.is_empty() {
        return Ok(Fate::Closed);
    }
    let head = parse_head(&buf).ok_or("an answer without a complete head")?;
    let head_text = String::from_utf8_lossy(&buf[..head.len]).to_ascii_lowercase();
    Ok(match head.status {
        200 => Fate::Served(stream),
        status => Fate::Refused {
            status,
            retry_after: head_text.contains("\r\nretry-after:"),
        },
    })
}

/// Whether `stream` (a served subscribe) brings an event with `data`.
async fn receives(mut stream: TcpStream, data: &str) -> bool {
    let needle = format!("data: {data}\n");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            seen.extend_from_slice(&chunk[..n]);
            if memchr::memmem::find(&seen, needle.as_bytes()).is_some() {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Connects and closes again and again for `period`, as crowds of
/// `EventSource`s do; returns how many times.
async fn retry_loop(addr: SocketAddr, addresses: &[Ipv4Addr], period: Duration) -> usize {
    let end = Instant::now() + period;
    let mut n = 0;
    while Instant::now() < end {
        let local = addresses[n % addresses.len()];
        if let Ok(stream) = send_subscribe(addr, local).await {
            let _ = read_fate(stream, Duration::from_secs(1)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}
