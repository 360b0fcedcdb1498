//! The workloads, each measured against one server or (cluster mode) the
//! nodes of one cluster.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use crate::procstat::{self, Usage};
use crate::publisher::{self, Plan};
use crate::servers::Server;
use crate::stats::{Clock, Stats};
use crate::subscriber::{self, SubscriberSpec};

/// What a workload runs against: the addresses its clients spread over (one
/// server, or every node of a cluster) and the processes whose CPU and
/// memory count (a cluster's nodes and its Redis).
pub trait Target {
    fn addrs(&self) -> Vec<SocketAddr>;
    fn usage(&self) -> Usage;
}

impl Target for Server {
    fn addrs(&self) -> Vec<SocketAddr> {
        vec![self.addr]
    }

    fn usage(&self) -> Usage {
        Server::usage(self)
    }
}

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
/// subscribers, and checks every delivery. On several nodes, each topic's
/// subscribers take the nodes in turn (subscriber `i` on node `i % n`), and
/// so do the publisher connections: every node publishes, and every event
/// reaches subscribers on every node.
pub async fn fanout_step(
    target: &impl Target,
    shape: Shape,
    rate: f64,
    duration: Duration,
    label: &str,
    clock: Clock,
) -> Result<Step, String> {
    let topics: Vec<String> = (0..shape.n_topics)
        .map(|t| format!("{label}-{t}"))
        .collect();
    let addrs = target.addrs();
    let stats = Rc::new(Stats::new());
    let specs = topics
        .iter()
        .flat_map(|topic| {
            let addrs = &addrs;
            (0..shape.subscribers_per_topic).map(move |i| SubscriberSpec {
                addr: addrs[i % addrs.len()],
                topic: topic.clone(),
                last_event_id: None,
                expect_first: Some(0),
                catch_up_at: None,
                record_ids: None,
                reconnect: false,
            })
        })
        .collect();
    let fleet = connect(specs, &stats, clock, 1000).await?;
    stats.reset_window();
    let n_events = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let expected = n_events * shape.subscribers_per_topic as u64;
    let plan = Plan {
        addrs: Rc::new(addrs),
        topics: Rc::new(topics),
        rate,
        n_events,
        first: 0,
        payload_bytes: shape.payload_bytes,
        n_connections: shape.publisher_connections,
    };
    let (usage_before, own_before, started) = (target.usage(), procstat::own_cpu(), Instant::now());
    publisher::run(plan, Rc::clone(&stats), clock).await;
    wait_until(Duration::from_secs(5), || {
        stats.deliveries.get() >= expected
            || stats.lost_streams.get() > 0
            || stats.refused.get() > 0
    })
    .await;
    let window = started.elapsed();
    let usage = target.usage().since(&usage_before);
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
            reconnect: false,
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
    /// Subscribes answered with something other than 200 (counted in
    /// `lost` too, as every other error).
    pub refused: u64,
    /// Temporary refusals a subscriber came back after (`reconnect`): not
    /// errors, but each cost that subscriber its `retry:` delay.
    pub retried: u64,
    /// The same figures node by node, in the order of the addresses the
    /// storm was given (one entry on a single server).
    pub per_node: Vec<NodeStorm>,
}

/// One node's share of a storm.
#[derive(Debug, Clone)]
pub struct NodeStorm {
    pub addr: SocketAddr,
    pub n_subscribers: usize,
    pub caught_up: u64,
    /// From the storm's start until this node's last subscriber caught up.
    pub seconds: f64,
    pub lost: u64,
    pub refused: u64,
    pub retried: u64,
    /// From the storm's start until its first subscriber caught up, and
    /// until half of those that did.
    pub first_seconds: f64,
    pub median_seconds: f64,
}

/// Seconds from `started_ns` until the subscriber at `quantile` of those
/// that caught up did (in the order they did); 0 when none did.
fn caught_up_at(stats: &Stats, started_ns: u64, quantile: f64) -> f64 {
    let times = stats.caught_up_ns.borrow();
    let index = ((times.len() as f64 * quantile) as usize).min(times.len().saturating_sub(1));
    times
        .get(index)
        .map_or(0.0, |&ns| ns.saturating_sub(started_ns) as f64 / 1e9)
}

/// The reconnect storm on one server: the history, then the storm.
pub async fn storm(
    server: &Server,
    n_subscribers: usize,
    back: u64,
    clock: Clock,
) -> Result<Storm, String> {
    let resume_id = storm_history(server.addr, "storm", back, clock).await?;
    storm_resume(
        &[server.addr],
        "storm",
        n_subscribers,
        back,
        &resume_id,
        false,
        clock,
    )
    .await
}

/// Publishes `2 * back` events to `topic` on `addr` and returns the id of
/// event `back - 1` (the `Last-Event-ID` of a client that has seen events
/// 0 to `back - 1`), as a probe subscribed on `addr` received it.
pub async fn storm_history(
    addr: SocketAddr,
    topic: &str,
    back: u64,
    clock: Clock,
) -> Result<String, String> {
    let ids = Rc::new(RefCell::new(Vec::new()));
    let probe_stats = Rc::new(Stats::new());
    let probe = SubscriberSpec {
        addr,
        topic: topic.to_string(),
        last_event_id: None,
        expect_first: Some(0),
        catch_up_at: None,
        record_ids: Some(Rc::clone(&ids)),
        reconnect: false,
    };
    let probe_fleet = connect(vec![probe], &probe_stats, clock, 0).await?;
    let n_events = 2 * back;
    let plan = Plan {
        addrs: Rc::new(vec![addr]),
        topics: Rc::new(vec![topic.to_string()]),
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
    if probe_stats.errors() > 0 {
        return Err(format!(
            "the storm's history was not published and received cleanly ({} errors)",
            probe_stats.errors()
        ));
    }
    let resume_id = ids.borrow()[(back - 1) as usize].1.clone();
    Ok(resume_id)
}

/// `n_subscribers` connect at once, spread over `addrs` (subscriber `i` on
/// `addrs[i % n]`), with `Last-Event-ID: resume_id`, and must each receive
/// events `back` to `2 * back - 1` of `topic`, in order. With `reconnect`,
/// a subscriber told to come back later (`retry:` and the end of the
/// stream) does so after that delay, as an `EventSource` would; without
/// it, that is a lost stream.
pub async fn storm_resume(
    addrs: &[SocketAddr],
    topic: &str,
    n_subscribers: usize,
    back: u64,
    resume_id: &str,
    reconnect: bool,
    clock: Clock,
) -> Result<Storm, String> {
    let n_events = 2 * back;
    let per_node: Vec<Rc<Stats>> = addrs.iter().map(|_| Rc::new(Stats::new())).collect();
    let started_ns = clock.now_ns();
    let mut handles = Vec::with_capacity(n_subscribers);
    for i in 0..n_subscribers {
        let node = i % addrs.len();
        let spec = SubscriberSpec {
            addr: addrs[node],
            topic: topic.to_string(),
            last_event_id: Some(resume_id.to_string()),
            expect_first: Some(back),
            catch_up_at: Some(n_events - 1),
            record_ids: None,
            reconnect,
        };
        handles.push(
            tokio::task::spawn_local(subscriber::run(spec, Rc::clone(&per_node[node]), clock))
                .abort_handle(),
        );
    }
    let fleet = Fleet(handles);
    wait_until(Duration::from_secs(60), || {
        per_node.iter().map(|s| s.caught_up.get()).sum::<u64>() as usize >= n_subscribers
            || per_node.iter().any(|s| s.errors() > 0)
    })
    .await;
    drop(fleet);
    let nodes: Vec<NodeStorm> = per_node
        .iter()
        .zip(addrs)
        .enumerate()
        .map(|(node, (stats, &addr))| {
            let n = (node..n_subscribers).step_by(addrs.len()).count();
            let expected = n as u64 * back;
            NodeStorm {
                addr,
                n_subscribers: n,
                caught_up: stats.caught_up.get(),
                seconds: stats.last_caught_up_ns.get().saturating_sub(started_ns) as f64 / 1e9,
                first_seconds: caught_up_at(stats, started_ns, 0.0),
                median_seconds: caught_up_at(stats, started_ns, 0.5),
                lost: stats.errors()
                    + stats.gaps.get()
                    + expected.saturating_sub(stats.deliveries.get()),
                refused: stats.refused.get(),
                retried: stats.retried.get(),
            }
        })
        .collect();
    Ok(Storm {
        n_subscribers,
        caught_up: nodes.iter().map(|n| n.caught_up).sum(),
        seconds: nodes.iter().map(|n| n.seconds).fold(0.0, f64::max),
        lost: nodes.iter().map(|n| n.lost).sum(),
        refused: nodes.iter().map(|n| n.refused).sum(),
        retried: nodes.iter().map(|n| n.retried).sum(),
        per_node: nodes,
    })
}
