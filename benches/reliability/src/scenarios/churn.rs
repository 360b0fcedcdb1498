//! R2, subscriber churn: subscribers arrive in waves (1,000 every 3 s at
//! full scale) and each leaves ten waves later, so about 10,000 are open at
//! a time, for 5 minutes; of each wave 10% are cut in the middle of a big
//! replay and 10% in the middle of their request head, and of those that
//! stay, half leave with a FIN and half with a reset. A warm-up cycle first
//! (to the same peak and back) sets the baseline. After the last wave,
//! `ssegate_subscribers` must be 0 within `heartbeat_interval` + 1 s, RSS
//! within 10% of the baseline, descriptors within 16 of it, and every topic
//! gone once `buffer_ttl` has passed without events. Every subscriber that
//! stayed is checked for loss, duplicates and order (`seam_check`).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::seam_check::{Class, Log, Received, verify};
use super::{Ctx, RowFuture, count, wait_for};
use crate::gateway::Gateway;
use crate::http::{self, Conn};
use crate::rng::Rng;
use crate::row::Row;
use crate::sse::{SseStream, format_id, parse_id};

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(churn(ctx))
}

const HEARTBEAT: Duration = Duration::from_secs(5);
/// Topics `c/0` .. `c/99` at 2 events/s each; `c/big` carries 1 KiB events
/// for the replays that are cut.
const N_TOPICS: u64 = 100;
const BIG_TOPIC: u8 = 100;

struct Plan {
    wave: usize,
    period: Duration,
    /// Waves a subscriber stays.
    lifetime: u32,
    duration: Duration,
    /// Time for RSS to settle before it is compared.
    settle: Duration,
    buffer_ttl: Duration,
}

/// What the publishers and the waves share.
struct Shared {
    epoch: u64,
    /// `(seq, topic, token)` of every acknowledged publish.
    log: RefCell<Vec<(u64, u8, u64)>>,
    stop: Cell<bool>,
    n_refused: Cell<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stay,
    CutInReplay,
    CutInHead,
}

async fn churn(ctx: &Ctx) -> Result<Row, String> {
    let plan = ctx.scale.pick(
        Plan {
            wave: 100,
            period: Duration::from_secs(1),
            lifetime: 5,
            duration: Duration::from_secs(20),
            settle: Duration::from_secs(3),
            buffer_ttl: Duration::from_secs(5),
        },
        Plan {
            wave: 1_000,
            period: Duration::from_secs(3),
            lifetime: 10,
            duration: Duration::from_secs(300),
            settle: Duration::from_secs(30),
            buffer_ttl: Duration::from_secs(10),
        },
    );
    let gateway = ctx
        .launcher
        .start(
            0,
            &[
                "--heartbeat-interval",
                &format!("{}s", HEARTBEAT.as_secs()),
                "--buffer-ttl",
                &format!("{}s", plan.buffer_ttl.as_secs()),
            ],
        )
        .await?;
    let addr = gateway.addr;
    let mut first = Conn::connect(addr).await?;
    let reply = first.publish("c/warmup", b"w").await?;
    let epoch = http::published(&reply)
        .and_then(|p| parse_id(p.id.as_bytes()))
        .map(|(epoch, _)| epoch)
        .ok_or("no id in a publish reply")?;
    drop(first);
    let shared = Rc::new(Shared {
        epoch,
        log: RefCell::new(Vec::new()),
        stop: Cell::new(false),
        n_refused: Cell::new(0),
    });
    let publishers = vec![
        tokio::task::spawn_local(publish(addr, 0, 200.0, 100, Rc::clone(&shared))),
        tokio::task::spawn_local(publish(addr, 1, 20.0, 1024, Rc::clone(&shared))),
    ];
    let mut rng = Rng::new(ctx.seed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Warm-up: one cycle to the peak and back, every kind of client.
    let peak_time = plan.period * plan.lifetime;
    let warm = waves(addr, &plan, peak_time, &shared, &mut rng).await;
    let warm_received = finish(warm).await?;
    let drained = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { subscribers(addr).await == Some(0.0) },
    )
    .await;
    if drained.is_none() {
        return Err("the warm-up's subscribers were never all gone".into());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (base_rss, base_fds) = (gateway.rss_kib(), gateway.n_fds());

    let run_started = Instant::now();
    let tasks = waves(addr, &plan, plan.duration, &shared, &mut rng).await;
    let n_lives = tasks.len() + warm_received.len();
    let mut peak_rss = gateway.rss_kib();
    let received = finish_sampling(tasks, &gateway, &mut peak_rss).await?;
    let to_zero = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { subscribers(addr).await == Some(0.0) },
    )
    .await;
    tokio::time::sleep(plan.settle).await;
    let (end_rss, end_fds) = (gateway.rss_kib(), gateway.n_fds());
    shared.stop.set(true);
    for publisher in publishers {
        let _ = publisher.await;
    }
    let topics_gone = wait_for(
        plan.buffer_ttl + Duration::from_secs(5),
        Duration::from_millis(250),
        || async { http::metric(addr, "ssegate_topics").await.ok() == Some(0.0) },
    )
    .await;
    let churned_for = run_started.elapsed();

    let log = Log::new(std::mem::take(&mut *shared.log.borrow_mut()), epoch);
    let mut row = Row::new("R2", "subscriber churn");
    let (mut n_bad, mut n_checked, mut n_deliveries) = (0, 0, 0u64);
    for one in warm_received.iter().chain(&received) {
        let Some(one) = one else { continue };
        n_checked += 1;
        n_deliveries += one.events.len() as u64;
        let verdict = verify(one, &log);
        row.lost += verdict.lost;
        row.duplicated += verdict.duplicated;
        if !verdict.problems.is_empty() {
            n_bad += 1;
            if n_bad <= 10 {
                row.note(format!(
                    "subscriber {:?} {:?} topic {:?}: {}",
                    one.class,
                    one.resume,
                    one.topics,
                    verdict.problems.join("; ")
                ));
            }
        }
    }
    row.load = format!(
        "waves of {} every {:.0} s, each subscriber staying {} waves (peak {}), for {:.0} s after a warm-up cycle; 220 events/s on {} topics",
        count(plan.wave as u64),
        plan.period.as_secs_f64(),
        plan.lifetime,
        count((plan.wave * plan.lifetime as usize) as u64),
        churned_for.as_secs_f64(),
        N_TOPICS + 1
    );
    row.faults = format!(
        "{} subscriber lives: 10% cut mid-replay, 10% cut mid-head (reset); of the rest half leave with FIN, half with RST",
        count(n_lives as u64)
    );
    row.check(
        n_bad == 0 && shared.n_refused.get() == 0,
        format!(
            "every subscriber that stayed got every event after its id or position, once, in order ({} of {n_checked}, {} deliveries; publishes refused: {})",
            n_checked - n_bad,
            count(n_deliveries),
            shared.n_refused.get()
        ),
    );
    let limit = HEARTBEAT + Duration::from_secs(1);
    row.check(
        to_zero.is_some_and(|d| d <= limit),
        format!(
            "ssegate_subscribers 0 within heartbeat_interval + 1 s of the last client leaving ({})",
            to_zero.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
        ),
    );
    row.check(
        end_rss as f64 <= base_rss as f64 * 1.10,
        format!(
            "RSS within 10% of the warmed-up baseline after {:.0} s idle ({:.1} MiB vs {:.1} MiB; peak {:.1} MiB)",
            plan.settle.as_secs_f64(),
            end_rss as f64 / 1024.0,
            base_rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0
        ),
    );
    row.check(
        end_fds.abs_diff(base_fds) <= 16,
        format!("fds back to baseline ± 16 ({base_fds} → {end_fds})"),
    );
    row.check(
        topics_gone.is_some(),
        format!(
            "ssegate_topics 0 within buffer_ttl ({} s) + 5 s once publishing stopped",
            plan.buffer_ttl.as_secs()
        ),
    );
    Ok(row)
}

async fn subscribers(addr: SocketAddr) -> Option<f64> {
    http::metric(addr, "ssegate_subscribers").await.ok()
}

type Life = JoinHandle<Result<Option<Received>, String>>;

/// Starts a wave every `period` for `duration`; returns every life started.
async fn waves(
    addr: SocketAddr,
    plan: &Plan,
    duration: Duration,
    shared: &Rc<Shared>,
    rng: &mut Rng,
) -> Vec<Life> {
    let started = Instant::now();
    let mut lives = Vec::new();
    let stay = plan.period * plan.lifetime;
    for n in 0u32.. {
        let at = started + plan.period * n;
        if at >= started + duration {
            break;
        }
        tokio::time::sleep_until(at).await;
        for i in 0..plan.wave {
            let kind = match i % 10 {
                0 => Kind::CutInReplay,
                1 => Kind::CutInHead,
                _ => Kind::Stay,
            };
            let seed = rng.next_u64();
            // Spread over the first fifth of the period.
            let delay = plan.period.mul_f64(0.2 * i as f64 / plan.wave as f64);
            lives.push(tokio::task::spawn_local(life(
                addr,
                kind,
                at + delay,
                at + stay,
                seed,
                Rc::clone(shared),
            )));
        }
    }
    lives
}

async fn finish(lives: Vec<Life>) -> Result<Vec<Option<Received>>, String> {
    let mut out = Vec::with_capacity(lives.len());
    for life in lives {
        out.push(life.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// `finish`, sampling the gateway's RSS meanwhile.
async fn finish_sampling(
    lives: Vec<Life>,
    gateway: &Gateway,
    peak: &mut u64,
) -> Result<Vec<Option<Received>>, String> {
    let mut out = Vec::with_capacity(lives.len());
    let mut last_sample = Instant::now();
    for life in lives {
        out.push(life.await.map_err(|e| e.to_string())??);
        if last_sample.elapsed() > Duration::from_millis(500) {
            *peak = (*peak).max(gateway.rss_kib());
            last_sample = Instant::now();
        }
    }
    Ok(out)
}

/// One subscriber's life. `Stay` returns what it received, for the check.
async fn life(
    addr: SocketAddr,
    kind: Kind,
    at: Instant,
    leave_at: Instant,
    seed: u64,
    shared: Rc<Shared>,
) -> Result<Option<Received>, String> {
    tokio::time::sleep_until(at).await;
    let mut rng = Rng::new(seed);
    match kind {
        Kind::CutInHead => {
            let mut socket = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let _ = socket
                .write_all(b"GET /subscribe/c/1 HTTP/1.1\r\nHost: r\r\nAcce")
                .await;
            tokio::time::sleep(Duration::from_millis(rng.range(1, 200))).await;
            reset(socket);
            Ok(None)
        }
        Kind::CutInReplay => {
            // From the oldest event still buffered: a replay of ~200 KiB.
            let id = format_id(shared.epoch, 1);
            let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            let mut socket = socket.connect(addr).await.map_err(|e| e.to_string())?;
            let request =
                format!("GET /subscribe/c/big HTTP/1.1\r\nHost: r\r\nLast-Event-ID: {id}\r\n\r\n");
            socket
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            let want = rng.range(4096, 32 * 1024) as usize;
            let mut got = 0;
            while got < want {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => got += n,
                    _ => break,
                }
            }
            reset(socket);
            Ok(None)
        }
        Kind::Stay => stay(addr, leave_at, &mut rng, &shared).await.map(Some),
    }
}

/// Subscribes to a random topic, from a recent id or none, reads until
/// `leave_at`, and leaves with a FIN or a reset.
async fn stay(
    addr: SocketAddr,
    leave_at: Instant,
    rng: &mut Rng,
    shared: &Shared,
) -> Result<Received, String> {
    let topic = rng.below(N_TOPICS) as u8;
    let resume = match rng.chance(0.5) {
        true => shared
            .log
            .borrow()
            .iter()
            .rev()
            .take(400)
            .find(|e| e.1 == topic)
            .map(|e| format_id(shared.epoch, e.0)),
        false => None,
    };
    let class = match resume {
        Some(_) => Class::Valid,
        None => Class::Fresh,
    };
    let header = resume
        .as_ref()
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let mut received = Received::new(class, resume, vec![topic]);
    let mut stream = SseStream::open(addr, &format!("/subscribe/c/{topic}"), &header).await?;
    if stream.status != 200 {
        return Err(format!("subscribe answered {}", stream.status));
    }
    let epoch = shared.epoch;
    while Instant::now() < leave_at {
        let read =
            tokio::time::timeout_at(leave_at, stream.read_frames(|f| received.frame(&f, epoch)))
                .await;
        match read {
            Err(_) => break,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => {
                received.ended_by_server = true;
                break;
            }
        }
    }
    if rng.chance(0.5) {
        let _ = socket2::SockRef::from(stream.socket()).set_linger(Some(Duration::ZERO));
    }
    drop(stream);
    Ok(received)
}

/// Closes with a reset (SO_LINGER 0: no wait, no TIME_WAIT), as a client
/// that vanishes does.
fn reset(socket: TcpStream) {
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    drop(socket);
}

/// Publishes `rate` events a second of `size` bytes: publisher 0 on
/// `c/0` .. `c/99` in turn, publisher 1 on `c/big`. Data `<k>:<n>`.
async fn publish(addr: SocketAddr, k: u64, rate: f64, size: usize, shared: Rc<Shared>) {
    let Ok(mut conn) = Conn::connect(addr).await else {
        shared.n_refused.set(shared.n_refused.get() + 1);
        return;
    };
    let period = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    for n in 0u64.. {
        if shared.stop.get() {
            return;
        }
        tokio::time::sleep_until(started + period.mul_f64(n as f64)).await;
        let (topic, name) = match k {
            0 => ((n % N_TOPICS) as u8, format!("c/{}", n % N_TOPICS)),
            _ => (BIG_TOPIC, "c/big".to_string()),
        };
        let mut data = format!("{k}:{n}").into_bytes();
        let token = k << 32 | n;
        if size > data.len() {
            data.push(b':');
            data.resize(size, b'x');
        }
        match conn
            .publish(&name, &data)
            .await
            .ok()
            .and_then(|r| http::published(&r))
        {
            Some(p) => match parse_id(p.id.as_bytes()) {
                Some((_, seq)) => shared.log.borrow_mut().push((seq, topic, token)),
                None => shared.n_refused.set(shared.n_refused.get() + 1),
            },
            None => {
                shared.n_refused.set(shared.n_refused.get() + 1);
                return;
            }
        }
    }
}
