//! R9, kill -9 during publishes: publishers flat out on 4 topics, the
//! gateway killed with SIGKILL and restarted at once on the same port,
//! then killed again and restarted twice within one second. No id a
//! publisher was given may be given again after a restart (each run must
//! have its own epoch); `/readyz` must answer 200 within a second of each
//! start; an id of a run before must resume on the last run with a `gap`,
//! then what that run has buffered.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Ctx, RowFuture, count};
use crate::gateway::Gateway;
use crate::http::{self, Conn};
use crate::rng::Rng;
use crate::row::Row;
use crate::sse::{SseStream, format_id, parse_id};

pub fn run(ctx: &Ctx) -> RowFuture<'_> {
    Box::pin(kill9(ctx))
}

const N_TOPICS: u64 = 4;
const N_PUBLISHERS: u64 = 4;
/// The gateway's default `buffer_events`.
const BUFFER_EVENTS: usize = 1024;

/// Every acknowledged publish, as the publishers got it.
#[derive(Default)]
struct Acked {
    /// `(epoch, seq, topic)`.
    ids: RefCell<Vec<(u64, u64, u64)>>,
    /// Answers that were not 200 (a gateway not ready, say).
    n_refused: Cell<u64>,
    /// Requests that got no answer (the gateway died under them).
    n_unanswered: Cell<u64>,
    stop: Cell<bool>,
}

async fn kill9(ctx: &Ctx) -> Result<Row, String> {
    let (life, n_samples) = ctx
        .scale
        .pick((Duration::from_secs(2), 50), (Duration::from_secs(10), 250));
    let mut gateway = ctx.launcher.start(0, &[]).await?;
    let addr = gateway.addr;
    let mut row = Row::new("R9", "kill -9 during publishes");
    let mut ready_after = vec![ready(&gateway).await?];
    let acked = Rc::new(Acked::default());
    let started = Instant::now();
    let publishers: Vec<_> = (0..N_PUBLISHERS)
        .map(|k| tokio::task::spawn_local(publish(addr, k, Rc::clone(&acked))))
        .collect();
    // Lives: `life`, `life`, then a third killed within the second, so that
    // two restarts fall within one second; the last one stays up.
    let mut lives = Vec::new();
    for life in [life, life, Duration::from_millis(300)] {
        tokio::time::sleep(life).await;
        let lived = gateway.spawned_at.elapsed();
        gateway.kill9().await?;
        lives.push(lived);
        gateway = ctx.launcher.start(addr.port(), &[]).await?;
        ready_after.push(ready(&gateway).await?);
    }
    tokio::time::sleep(life).await;
    acked.stop.set(true);
    for publisher in publishers {
        let _ = publisher.await;
    }
    let publishing = started.elapsed();
    let ids = acked.ids.borrow().clone();

    // One epoch per run, and no id given twice.
    let epochs: Vec<u64> = ids.iter().fold(Vec::new(), |mut epochs, id| {
        if epochs.last() != Some(&id.0) && !epochs.contains(&id.0) {
            epochs.push(id.0);
        }
        epochs
    });
    let mut seen = HashSet::with_capacity(ids.len());
    let n_reused = ids.iter().filter(|id| !seen.insert((id.0, id.1))).count();
    row.check(
        epochs.len() == 4 && n_reused == 0,
        format!(
            "no id reused after a restart: {} distinct epochs over 4 runs, {} of {} acknowledged ids given twice",
            epochs.len(),
            n_reused,
            count(ids.len() as u64)
        ),
    );
    let slowest = ready_after.iter().max().copied().unwrap_or_default();
    row.check(
        slowest <= Duration::from_secs(1),
        format!(
            "/readyz 200 within 1 s of each start ({})",
            ready_after
                .iter()
                .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    row.check(
        lives[2] + ready_after[3] < Duration::from_secs(1),
        format!(
            "two restarts within one second (the third run lived {:.0} ms)",
            lives[2].as_secs_f64() * 1000.0
        ),
    );

    // Old ids on the last run: a gap first, echoing the id.
    let last_epoch = *epochs.last().ok_or("no publish was acknowledged")?;
    let mut rng = Rng::new(ctx.seed);
    let mut samples = Vec::new();
    for &epoch in &epochs[..epochs.len() - 1] {
        let of_run: Vec<&(u64, u64, u64)> = ids.iter().filter(|id| id.0 == epoch).collect();
        // The newest of each topic (what a live client would hold), then
        // random ones.
        for topic in 0..N_TOPICS {
            if let Some(id) = of_run.iter().rev().find(|id| id.2 == topic) {
                samples.push((**id, true));
            }
        }
        for _ in 0..n_samples.min(of_run.len()) {
            samples.push((**rng.pick(&of_run), false));
        }
    }
    let newest: Vec<Vec<u64>> = (0..N_TOPICS)
        .map(|topic| {
            ids.iter()
                .filter(|id| id.0 == last_epoch && id.2 == topic)
                .map(|id| id.1)
                .collect()
        })
        .collect();
    let (mut n_gap, mut n_replay_ok, mut n_full) = (0, 0, 0);
    for &((epoch, seq, topic), full) in &samples {
        let id = format_id(epoch, seq);
        match resume(
            addr,
            topic,
            &id,
            full.then(|| &newest[topic as usize][..]),
            last_epoch,
        )
        .await
        {
            Ok(replay_ok) => {
                n_gap += 1;
                n_full += u64::from(full);
                n_replay_ok += u64::from(full && replay_ok);
            }
            Err(err) => row.note(format!("old id {id}: {err}")),
        }
    }
    row.check(
        n_gap == samples.len() && n_replay_ok == n_full,
        format!(
            "every old id tried resumes with a gap ({n_gap} of {}; for the newest id of each topic of each run, {n_replay_ok} of {n_full} then replayed exactly the last run's buffer)",
            samples.len()
        ),
    );
    let rate = ids.len() as f64 / publishing.as_secs_f64();
    row.load = format!(
        "{N_PUBLISHERS} publishers flat out on {N_TOPICS} topics: {} acknowledged in {:.0} s ({:.1}k/s, restarts included)",
        count(ids.len() as u64),
        publishing.as_secs_f64(),
        rate / 1000.0
    );
    row.faults = format!(
        "SIGKILL ×3 after {} (restart on the same port at once each time)",
        lives
            .iter()
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    row.bad_inputs = format!("{} resume ids from killed runs", samples.len());
    row.note(format!(
        "{} publishes unanswered (in flight at a kill), {} refused",
        acked.n_unanswered.get(),
        acked.n_refused.get()
    ));
    Ok(row)
}

/// How long after its spawn the gateway's `/readyz` said 200.
async fn ready(gateway: &Gateway) -> Result<Duration, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = http::get(gateway.addr, "/readyz").await
            && response.status == 200
        {
            return Ok(gateway.spawned_at.elapsed());
        }
        if Instant::now() >= deadline {
            return Err("/readyz never said 200".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Publishes flat out, reconnecting whenever the gateway goes away.
async fn publish(addr: SocketAddr, k: u64, acked: Rc<Acked>) {
    let mut n = 0u64;
    while !acked.stop.get() {
        let Ok(mut conn) = Conn::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        while !acked.stop.get() {
            let topic = (k + n) % N_TOPICS;
            n += 1;
            match conn
                .publish(&format!("k/{topic}"), format!("{k}:{n}").as_bytes())
                .await
            {
                Ok(response) => {
                    match http::published(&response).and_then(|p| parse_id(p.id.as_bytes())) {
                        Some((epoch, seq)) => acked.ids.borrow_mut().push((epoch, seq, topic)),
                        None => acked.n_refused.set(acked.n_refused.get() + 1),
                    }
                }
                Err(_) => {
                    acked.n_unanswered.set(acked.n_unanswered.get() + 1);
                    break;
                }
            }
        }
    }
}

/// Resumes `topic` from an id of a killed run: the stream must open with a
/// gap echoing it. With `buffered` (the last run's ids of the topic),
/// also checks that what follows, up to the position, is the tail of that
/// run's buffer in order; returns whether it was.
async fn resume(
    addr: SocketAddr,
    topic: u64,
    id: &str,
    buffered: Option<&[u64]>,
    epoch: u64,
) -> Result<bool, String> {
    let mut stream = SseStream::open(
        addr,
        &format!("/subscribe/k/{topic}"),
        &format!("Last-Event-ID: {id}\r\n"),
    )
    .await?;
    if stream.status != 200 {
        return Err(format!("answered {}", stream.status));
    }
    let mut replayed = Vec::new();
    let mut gap = false;
    loop {
        // Once the replay is written nothing more comes (publishing has
        // stopped), and no position block if the last event carried it.
        let patience = Duration::from_millis(if gap { 500 } else { 5000 });
        let frame = match stream.next_frame(patience).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err("the stream ended".into()),
            Err(_) if gap => break,
            Err(err) => return Err(err),
        };
        if frame.retry.is_some() {
            continue;
        }
        if !gap {
            let echo = frame.data.as_deref().unwrap_or_default();
            if !frame.is_gap() || !echo.contains(id) {
                return Err(format!("first frame is not a gap for it: {frame:?}"));
            }
            gap = true;
            if buffered.is_none() {
                return Ok(false);
            }
            continue;
        }
        if frame.is_position() {
            break;
        }
        match frame.id.as_deref().and_then(|id| parse_id(id.as_bytes())) {
            Some((their, seq)) if their == epoch => replayed.push(seq),
            _ => return Err(format!("an event not of the last run: {frame:?}")),
        }
    }
    let buffered = buffered.unwrap_or_default();
    let expected = buffered.len().min(BUFFER_EVENTS);
    Ok(replayed.len() == expected && buffered.ends_with(&replayed))
}
