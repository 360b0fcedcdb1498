//! The six workloads, each measured against one server.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use crate::procstat::{self, Usage};
use crate::publisher::{self, Plan};
use crate::servers::Server;
use crate::stats::{Clock, Stats};
use crate::subscriber::{self, SubscriberSpec};

/// Subscribers running as tasks; aborted (their sockets closed) on drop.
pub struct Fleet(Vec<AbortHandle>);

impl Drop for Fleet {
    fn drop(&mut self) {
        self.0.iter().for_each(AbortHandle::abort);
    }
}

/// Polls `done` every few milliseconds until it holds or `timeout` passes.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Starts `specs`, `batch` at a time (all at once when `batch` is 0), and
/// waits until each has its response head.
async fn connect(
    specs: Vec<SubscriberSpec>,
    stats: &Rc<Stats>,
    clock: Clock,
    batch: usize,
) -> Result<Fleet, String> {
    let n_total = specs.len() as u64;
    let batch = if batch == 0 {
        specs.len().max(1)
    } else {
        batch
    };
    let mut handles = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(batch) {
        for spec in chunk {
            let task =
                tokio::task::spawn_local(subscriber::run(spec.clone(), Rc::clone(stats), clock));
            handles.push(task.abort_handle());
        }
        let n_started = handles.len() as u64;
        let settled =
            || stats.connected.get() + stats.refused.get() + stats.lost_streams.get() >= n_started;
        if !wait_until(Duration::from_secs(60), settled).await {
            return Err(format!(
                "only {} of {n_total} subscribers connected",
                stats.connected.get()
            ));
        }
    }
    let fleet = Fleet(handles);
    if stats.connected.get() != n_total {
        return Err(format!(
            "{} of {n_total} subscribers refused or failed",
            n_total - stats.connected.get()
        ));
    }
    Ok(fleet)
}

/// The shape of a fan-out workload.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_topics: usize,
    pub subscribers_per_topic: usize,
    pub payload_bytes: usize,
    pub publisher_connections: usize,
}

/// One fan-out run at one publish rate.
#[derive(Debug, Clone)]
pub struct Step {
    pub rate: f64,
    pub offered_per_s: f64,
    pub deliveries: u64,
    pub expected: u64,
    pub achieved_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub server: Usage,
    pub loader_cpu_share: f64,
    pub pass: bool,
}

impl Step {
    pub fn cpu_us_per_delivery(&self) -> (f64, f64) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.deliveries.max(1) as f64;
        (per(self.server.user), per(self.server.system))
    }
}

/// Runs `shape` at `rate` events/s for `duration` with fresh topics and
/// subscribers, and checks every delivery.
pub async fn fanout_step(
    server: &Server,
    shape: Shape,
    rate: f64,
    duration: Duration,
    label: &str,
    clock: Clock,
) -> Result<Step, String> {
    let topics: Vec<String> = (0..shape.n_topics)
        .map(|t| format!("{label}-{t}"))
        .collect();
    let stats = Rc::new(Stats::new());
    let specs = topics
        .iter()
        .flat_map(|topic| {
            (0..shape.subscribers_per_topic).map(move |_| SubscriberSpec {
                addr: server.addr,
                topic: topic.clone(),
                last_event_id: None,
                expect_first: Some(0),
                catch_up_at: None,
                record_ids: None,
            })
        })
        .collect();
    let fleet = connect(specs, &stats, clock, 1000).await?;
    stats.reset_window();
    let n_events = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let expected = n_events * shape.subscribers_per_topic as u64;
    let plan = Plan {
        addr: server.addr,
        topics: Rc::new(topics),
        rate,
        n_events,
        first: 0,
        payload_bytes: shape.payload_bytes,
        n_connections: shape.publisher_connections,
    };
    let (usage_before, own_before, started) = (server.usage(), procstat::own_cpu(), Instant::now());
    publisher::run(plan, Rc::clone(&stats), clock).await;
    wait_until(Duration::from_secs(5), || {
        stats.deliveries.get() >= expected
            || stats.lost_streams.get() > 0
            || stats.refused.get() > 0
    })
    .await;
    let window = started.elapsed();
    let usage = server.usage().since(&usage_before);
    let loader_cpu_share =
        (procstat::own_cpu().saturating_sub(own_before)).as_secs_f64() / window.as_secs_f64();
    drop(fleet);
    let offered_per_s = rate * shape.subscribers_per_topic as f64;
    let achieved_per_s = stats.deliveries.get() as f64 / window.as_secs_f64();
    let p99_ms = stats.latency_ms(0.99);
    let errors = stats.errors();
    let deliveries = stats.deliveries.get();
    Ok(Step {
        rate,
        offered_per_s,
        deliveries,
        expected,
        achieved_per_s,
        p50_ms: stats.latency_ms(0.50),
        p99_ms,
        max_ms: stats.max_latency_ms(),
        errors,
        server: usage,
        loader_cpu_share,
        pass: errors == 0
            && deliveries == expected
            && achieved_per_s >= 0.9 * offered_per_s
            && p99_ms < 1000.0,
    })
}

/// The highest publish rate at which `shape` holds (see `Step::pass`).
#[derive(Debug, Clone)]
pub struct Saturation {
    pub best: Option<Step>,
    pub steps: Vec<Step>,
}

impl Saturation {
    /// Whether the load generator, not the server, may have been the limit:
    /// the first failing step had the generator's core nearly busy.
    pub fn loader_bound(&self) -> bool {
        self.steps
            .iter()
            .find(|s| !s.pass)
            .is_some_and(|s| s.loader_cpu_share > 0.9)
    }
}

/// Doubles the rate from `start_rate` until a step fails, then narrows the
/// boundary with `n_bisections` geometric bisections.
pub async fn saturation(
    server: &Server,
    shape: Shape,
    start_rate: f64,
    step_duration: Duration,
    n_bisections: usize,
    label: &str,
    clock: Clock,
) -> Result<Saturation, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut best: Option<Step> = None;
    let mut rate = start_rate;
    let mut failed_at = None;
    while failed_at.is_none() {
        let step = fanout_step(
            server,
            shape,
            rate,
            step_duration,
            &format!("{label}-{}", steps.len()),
            clock,
        )
        .await?;
        report_step(server.name, label, &step);
        if step.pass {
            best = Some(step.clone());
            rate *= 2.0;
        } else {
            failed_at = Some(rate);
        }
        steps.push(step);
    }
    let (mut low, mut high) = (
        best.as_ref().map_or(0.0, |s| s.rate),
        failed_at.unwrap_or(rate),
    );
    for _ in 0..n_bisections {
        if low <= 0.0 {
            break;
        }
        let mid = (low * high).sqrt();
        let step = fanout_step(
            server,
            shape,
            mid,
            step_duration,
            &format!("{label}-{}", steps.len()),
            clock,
        )
        .await?;
        report_step(server.name, label, &step);
        if step.pass {
            low = mid;
            best = Some(step.clone());
        } else {
            high = mid;
        }
        steps.push(step);
    }
    Ok(Saturation { best, steps })
}

/// One progress line per step, so a person waiting sees where it stands.
pub fn report_step(server: &str, label: &str, step: &Step) {
    eprintln!(
        "  {server:>7} {label:<10} rate {:>9.1} ev/s  offered {:>9.0}/s  achieved {:>9.0}/s  p99 {:>8.1} ms  errors {}  loader cpu {:>3.0}%  {}",
        step.rate,
        step.offered_per_s,
        step.achieved_per_s,
        step.p99_ms,
        step.errors + (step.expected - step.deliveries.min(step.expected)),
        step.loader_cpu_share * 100.0,
        if step.pass { "ok" } else { "FAIL" }
    );
}

/// Idle cost of many open streams.
#[derive(Debug, Clone)]
pub struct Idle {
    pub n_subscribers: usize,
    pub rss_per_subscriber_bytes: f64,
    pub idle_cpu_share: f64,
}

/// Opens `n_subscribers` streams spread over 100 `idle-*` topics (none of
/// which is published to) and holds them until the fleet is dropped.
pub async fn hold_idle(
    server: &Server,
    n_subscribers: usize,
    clock: Clock,
) -> Result<(Fleet, Rc<Stats>), String> {
    let stats = Rc::new(Stats::new());
    let specs = (0..n_subscribers)
        .map(|i| SubscriberSpec {
            addr: server.addr,
            topic: format!("idle-{}", i % 100),
            last_event_id: None,
            expect_first: None,
            catch_up_at: None,
            record_ids: None,
        })
        .collect();
    let fleet = connect(specs, &stats, clock, 1000).await?;
    Ok((fleet, stats))
}

pub async fn idle(
    server: &Server,
    n_subscribers: usize,
    window: Duration,
    clock: Clock,
) -> Result<Idle, String> {
    let rss_before = server.usage().rss_bytes;
    let (fleet, stats) = hold_idle(server, n_subscribers, clock).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let usage_before = server.usage();
    tokio::time::sleep(window).await;
    let usage = server.usage().since(&usage_before);
    let lost = stats.lost_streams.get();
    drop(fleet);
    if lost > 0 {
        return Err(format!("{lost} idle subscribers lost their stream"));
    }
    Ok(Idle {
        n_subscribers,
        rss_per_subscriber_bytes: usage.rss_bytes.saturating_sub(rss_before) as f64
            / n_subscribers as f64,
        idle_cpu_share: usage.cpu().as_secs_f64() / window.as_secs_f64(),
    })
}

/// Many subscribers reconnecting at once with a resume id.
#[derive(Debug, Clone)]
pub struct Storm {
    pub n_subscribers: usize,
    pub caught_up: u64,
    pub seconds: f64,
    pub lost: u64,
}

pub async fn storm(
    server: &Server,
    n_subscribers: usize,
    back: u64,
    clock: Clock,
) -> Result<Storm, String> {
    let topic = "storm".to_string();
    let ids = Rc::new(RefCell::new(Vec::new()));
    let probe_stats = Rc::new(Stats::new());
    let probe = SubscriberSpec {
        addr: server.addr,
        topic: topic.clone(),
        last_event_id: None,
        expect_first: Some(0),
        catch_up_at: None,
        record_ids: Some(Rc::clone(&ids)),
    };
    let probe_fleet = connect(vec![probe], &probe_stats, clock, 0).await?;
    let n_events = 2 * back;
    let plan = Plan {
        addr: server.addr,
        topics: Rc::new(vec![topic.clone()]),
        rate: 5000.0,
        n_events,
        first: 0,
        payload_bytes: 100,
        n_connections: 1,
    };
    publisher::run(plan, Rc::clone(&probe_stats), clock).await;
    if !wait_until(Duration::from_secs(10), || {
        ids.borrow().len() as u64 >= n_events
    })
    .await
    {
        return Err("the probe did not receive the storm's history".into());
    }
    drop(probe_fleet);
    let resume_id = ids.borrow()[(back - 1) as usize].1.clone();
    let stats = Rc::new(Stats::new());
    let specs: Vec<SubscriberSpec> = (0..n_subscribers)
        .map(|_| SubscriberSpec {
            addr: server.addr,
            topic: topic.clone(),
            last_event_id: Some(resume_id.clone()),
            expect_first: Some(back),
            catch_up_at: Some(n_events - 1),
            record_ids: None,
        })
        .collect();
    let started_ns = clock.now_ns();
    let mut handles = Vec::with_capacity(n_subscribers);
    for spec in specs {
        handles.push(
            tokio::task::spawn_local(subscriber::run(spec, Rc::clone(&stats), clock))
                .abort_handle(),
        );
    }
    let fleet = Fleet(handles);
    wait_until(Duration::from_secs(60), || {
        stats.caught_up.get() as usize >= n_subscribers || stats.errors() > 0
    })
    .await;
    drop(fleet);
    let caught_up = stats.caught_up.get();
    let expected = n_subscribers as u64 * back;
    Ok(Storm {
        n_subscribers,
        caught_up,
        seconds: stats.last_caught_up_ns.get().saturating_sub(started_ns) as f64 / 1e9,
        lost: stats.errors() + stats.gaps.get() + expected.saturating_sub(stats.deliveries.get()),
    })
}
