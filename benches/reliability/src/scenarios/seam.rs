//! R1, the seam under fire: publishers flat out on 8 topics while
//! subscribers join at random moments, on one topic or several, with a
//! resume id of a random kind (none, valid, evicted, future, foreign epoch,
//! malformed) given in the header or either query parameter, stay a while,
//! and leave. Afterwards each subscriber's stream is checked against the
//! publishers' log (`seam_check`): every event after its id, once, in
//! order, and a `gap` exactly when one was owed.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::seam_check::{Class, Log, Received, Verdict, verify};
use super::{Ctx, RowFuture, count};
use crate::http::{self, Conn, percent_encode};
use crate::rng::Rng;
use crate::row::Row;
use crate::sse::{SseStream, format_id, parse_id};

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(seam(ctx))
}

const N_TOPICS: u8 = 8;
const N_PUBLISHERS: u32 = 4;

struct Plan {
    n_subscribers: usize,
    duration: Duration,
    buffer_events: u64,
    /// Live events after which a subscriber leaves (at most), and how long
    /// it stays (at most).
    max_live_events: u64,
    max_stay: Duration,
}

/// What the publishers and subscribers share.
struct Shared {
    epoch: u64,
    /// `(seq, topic, token)` of every acknowledged publish, in the order
    /// the replies came.
    log: RefCell<Vec<(u64, u8, u64)>>,
    stop: Cell<bool>,
    n_refused: Cell<u64>,
}

async fn seam(ctx: &Ctx) -> Result<Row, String> {
    let plan = ctx.scale.pick(
        Plan {
            n_subscribers: 60,
            duration: Duration::from_secs(10),
            buffer_events: 2_000,
            max_live_events: 2_000,
            max_stay: Duration::from_secs(3),
        },
        Plan {
            n_subscribers: 500,
            duration: Duration::from_secs(60),
            buffer_events: 10_000,
            max_live_events: 5_000,
            max_stay: Duration::from_secs(5),
        },
    );
    let buffer = plan.buffer_events.to_string();
    let gateway = ctx.launcher.start(0, &["--buffer-events", &buffer]).await?;
    let addr = gateway.addr;
    let mut first = Conn::connect(addr).await?;
    let reply = first.publish("seam/warmup", b"w").await?;
    let epoch = http::published(&reply)
        .and_then(|p| parse_id(p.id.as_bytes()))
        .map(|(epoch, _)| epoch)
        .ok_or("no id in a publish reply")?;
    let lagged_before = lagged(addr).await?;
    let shared = Rc::new(Shared {
        epoch,
        log: RefCell::new(Vec::with_capacity(1 << 20)),
        stop: Cell::new(false),
        n_refused: Cell::new(0),
    });
    let started = Instant::now();
    let publishers: Vec<_> = (0..N_PUBLISHERS)
        .map(|k| tokio::task::spawn_local(publish(addr, k, Rc::clone(&shared))))
        .collect();
    let mut rng = Rng::new(ctx.seed);
    let subscribers: Vec<_> = (0..plan.n_subscribers)
        .map(|i| {
            let at = plan.duration.mul_f64(0.05 + 0.8 * rng.unit());
            let spec = Spec {
                at: started + at,
                stay: plan.max_stay.mul_f64(0.2 + 0.8 * rng.unit()),
                live_events: rng.range(50, plan.max_live_events),
                seed: rng.next_u64() ^ i as u64,
            };
            tokio::task::spawn_local(subscribe(
                addr,
                spec,
                plan.buffer_events,
                Rc::clone(&shared),
            ))
        })
        .collect();
    tokio::time::sleep_until(started + plan.duration).await;
    shared.stop.set(true);
    for publisher in publishers {
        let _ = publisher.await;
    }
    let published_for = started.elapsed();
    let mut received = Vec::new();
    for subscriber in subscribers {
        match subscriber.await {
            Ok(Ok(one)) => received.push(one),
            Ok(Err(err)) => return Err(format!("a subscriber failed: {err}")),
            Err(err) => return Err(format!("a subscriber task failed: {err}")),
        }
    }
    let lagged_drops = lagged(addr).await? - lagged_before;
    let log = Log::new(std::mem::take(&mut *shared.log.borrow_mut()), epoch);
    let n_events = log.len() as u64;
    let rate = n_events as f64 / published_for.as_secs_f64();
    let mut row = Row::new("R1", "seam under fire");
    row.load = format!(
        "{} subscribers joining at random moments; {} publishers flat out on {N_TOPICS} topics: {} events in {:.0} s ({:.1}k/s)",
        plan.n_subscribers,
        N_PUBLISHERS,
        count(n_events),
        published_for.as_secs_f64(),
        rate / 1000.0
    );
    let mut by_class = [0u64; Class::ALL.len()];
    let mut total = Verdict::default();
    let (mut n_bad, mut n_ended, mut n_delivered) = (0, 0u64, 0u64);
    for one in &received {
        by_class[one.class as usize] += 1;
        n_delivered += one.events.len() as u64;
        n_ended += u64::from(one.ended_by_server);
        let verdict = verify(one, &log);
        if !verdict.problems.is_empty() {
            n_bad += 1;
            row.note(format!(
                "subscriber {:?} {:?} topics {:?}: {}",
                one.class,
                one.resume,
                one.topics,
                verdict.problems.join("; ")
            ));
        }
        total.add(&verdict);
    }
    row.bad_inputs = Class::ALL
        .iter()
        .zip(by_class)
        .map(|(class, n)| format!("{n} {}", class.name()))
        .collect::<Vec<_>>()
        .join(", ");
    row.bad_inputs.push_str(" resume ids");
    row.lost = total.lost;
    row.duplicated = total.duplicated;
    row.check(
        n_bad == 0,
        format!(
            "per subscriber: every event after its id, once, in order; gap exactly when owed ({} of {} subscribers, {} deliveries checked; {} gaps, {} misordered, {} unpublished)",
            received.len() - n_bad,
            received.len(),
            count(n_delivered),
            total.gaps,
            total.misordered,
            total.phantoms
        ),
    );
    row.check(
        shared.n_refused.get() == 0,
        format!(
            "every publish answered 200 ({} not)",
            shared.n_refused.get()
        ),
    );
    row.check(
        n_ended as f64 <= lagged_drops,
        format!(
            "streams ended by the server only as counted lagged drops ({n_ended} ended, {lagged_drops} counted)"
        ),
    );
    Ok(row)
}

async fn lagged(addr: SocketAddr) -> Result<f64, String> {
    http::metric(addr, "ssegate_subscribers_dropped_total{reason=\"lagged\"}").await
}

/// One publisher: topic `(k + n) % 8` for its `n`-th publish, data
/// `<k>:<n>`, logged as token `k << 32 | n` under the id it got.
async fn publish(addr: SocketAddr, k: u32, shared: Rc<Shared>) {
    let Ok(mut conn) = Conn::connect(addr).await else {
        shared.n_refused.set(shared.n_refused.get() + 1);
        return;
    };
    for n in 0u64.. {
        if shared.stop.get() {
            return;
        }
        let topic = ((u64::from(k) + n) % u64::from(N_TOPICS)) as u8;
        let data = format!("{k}:{n}");
        let reply = conn
            .publish(&format!("seam/{topic}"), data.as_bytes())
            .await;
        let seq = reply
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| reply_seq(&r.body, shared.epoch));
        match seq {
            Some(seq) => shared
                .log
                .borrow_mut()
                .push((seq, topic, u64::from(k) << 32 | n)),
            None => {
                shared.n_refused.set(shared.n_refused.get() + 1);
                return;
            }
        }
    }
}

/// The sequence number in `{"id":"<epoch>-<seq>",...}`.
fn reply_seq(body: &[u8], epoch: u64) -> Option<u64> {
    let at = memchr::memmem::find(body, b"\"id\":\"")? + 6;
    let (their_epoch, seq) = parse_id(body.get(at..at + 33)?)?;
    (their_epoch == epoch).then_some(seq)
}

/// One subscriber's random choices.
struct Spec {
    at: Instant,
    stay: Duration,
    live_events: u64,
    seed: u64,
}

async fn subscribe(
    addr: SocketAddr,
    spec: Spec,
    buffer_events: u64,
    shared: Rc<Shared>,
) -> Result<Received, String> {
    tokio::time::sleep_until(spec.at).await;
    let mut rng = Rng::new(spec.seed);
    let topics: Vec<u8> = match rng.chance(0.5) {
        true => vec![rng.below(u64::from(N_TOPICS)) as u8],
        false => {
            let mut topics: Vec<u8> = (0..N_TOPICS).filter(|_| rng.chance(0.5)).collect();
            if topics.len() < 2 {
                topics = vec![0, 1 + rng.below(u64::from(N_TOPICS) - 1) as u8];
            }
            topics
        }
    };
    let (class, resume) = choose_resume(&mut rng, &shared, buffer_events);
    let mut received = Received::new(class, resume.clone(), topics.clone());
    let mut path = match topics.as_slice() {
        [one] => format!("/subscribe/seam/{one}?"),
        many => many.iter().fold("/subscribe?".to_string(), |path, t| {
            format!("{path}topic=seam/{t}&")
        }),
    };
    let mut header = String::new();
    if let Some(id) = &resume {
        match rng.below(3) {
            0 => header = format!("Last-Event-ID: {id}\r\n"),
            1 => path.push_str(&format!("last_event_id={}", percent_encode(id.as_bytes()))),
            _ => path.push_str(&format!("lastEventId={}", percent_encode(id.as_bytes()))),
        }
    }
    let mut stream = SseStream::open(addr, &path, &header).await?;
    if stream.status != 200 {
        return Err(format!("{path} answered {}", stream.status));
    }
    let leave_at = Instant::now() + spec.stay;
    let epoch = shared.epoch;
    loop {
        let live = received.live_events();
        if live >= spec.live_events || Instant::now() >= leave_at {
            break;
        }
        // Once publishing stops, read what is still coming, then leave.
        let patience = match shared.stop.get() {
            true => Duration::from_millis(500),
            false => leave_at - Instant::now(),
        };
        let read =
            tokio::time::timeout(patience, stream.read_frames(|f| received.frame(&f, epoch))).await;
        match read {
            Err(_) => break,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => {
                received.ended_by_server = true;
                break;
            }
        }
    }
    Ok(received)
}

/// A resume id of a random kind, drawn from what has been published so far.
fn choose_resume(rng: &mut Rng, shared: &Shared, buffer_events: u64) -> (Class, Option<String>) {
    let log = shared.log.borrow();
    let n = log.len() as u64;
    let head = log.iter().rev().take(64).map(|e| e.0).max().unwrap_or(0);
    let epoch = shared.epoch;
    // Every topic's ring holds `buffer_events`, and the publishers take
    // the 8 topics in turn: ids twice the rings' span back are gone from
    // every topic.
    let evicted_before = 2 * u64::from(N_TOPICS) * buffer_events;
    let class = *rng.pick(&Class::ALL);
    match class {
        Class::Valid if n > 0 => {
            let back = rng.below(n.min(buffer_events / 2));
            (
                class,
                Some(format_id(epoch, log[(n - 1 - back) as usize].0)),
            )
        }
        Class::Evicted if n > evicted_before => {
            let at = rng.below(n - evicted_before);
            (class, Some(format_id(epoch, log[at as usize].0)))
        }
        Class::Future => (class, Some(format_id(epoch, head + (1 << 40)))),
        Class::Foreign => {
            let other = epoch ^ (1 + rng.below(u64::MAX - 1));
            (class, Some(format_id(other, rng.below(head + 1))))
        }
        Class::Malformed => {
            let own = format_id(epoch, head);
            let choices = [
                "garbage".to_string(),
                "0".into(),
                "zzzzzzzzzzzzzzzz-zzzzzzzzzzzzzzzz".into(),
                "a".repeat(129),
                own[..32].to_string(),
                own.to_ascii_uppercase().replace('-', "_"),
                format!("{own}0"),
            ];
            (class, Some(rng.pick(&choices).clone()))
        }
        // Nothing old enough yet: a fresh subscriber instead.
        _ => (Class::Fresh, None),
    }
}
