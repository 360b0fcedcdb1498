//! Cluster mode: ssegate nodes sharing one Redis (`--cluster-redis-url`),
//! measured side by side with a single node without Redis, in one run.
//!
//! - `cluster`: the same fixed-rate fan-out (subscribers spread evenly over
//!   the nodes, publisher connections too) on a single node, on one node
//!   with Redis and on three nodes with one Redis, with every delivery
//!   checked; then `oha` publishing to node 1 of each, and `redis-benchmark`
//!   running a raw `XADD` against the one-node layout's Redis: the ceiling
//!   the publish script is compared with.
//! - `cluster-storm`: events published on node 1 of three, nodes 2 and 3
//!   started only afterwards (their rings start at the log's end, so they
//!   replay from Redis), then a reconnect storm spread over the three; and
//!   the same storm on a single node.
//!
//! Every process under test (the nodes and redis-server) runs on the server
//! core; the load generator, `oha` and `redis-benchmark` on the other.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat::{self, Usage};
use crate::publish_load::{self, PublishLoad};
use crate::servers::Server;
use crate::stats::Clock;
use crate::workloads::{self, Shape, Step, Storm, Target};

/// Everything the cluster workloads need to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The ssegate binary every node runs (ssegate's, or the baseline's).
    pub binary: PathBuf,
    pub redis_server: PathBuf,
    pub redis_benchmark: PathBuf,
    pub oha: PathBuf,
    pub redis_port: u16,
    /// One port per node; the first is also the single node's.
    pub node_ports: Vec<u16>,
    pub core: usize,
    pub n_subscribers: usize,
    pub n_topics: usize,
    pub publisher_connections: usize,
    /// Events per second over all topics, in the fan-out.
    pub rate: f64,
    pub duration: Duration,
    pub storm_subscribers: usize,
    /// `XADD`s of the raw ceiling run.
    pub raw_requests: usize,
}

/// The three ways the gateway is deployed for the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One ssegate, no Redis: what cluster mode is measured against.
    Single,
    /// One ssegate with Redis: a publish goes through the script and comes
    /// back through the node's tail.
    OneNode,
    /// Three ssegates on one Redis.
    ThreeNodes,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Single, Layout::OneNode, Layout::ThreeNodes];

    pub fn label(self) -> &'static str {
        match self {
            Layout::Single => "single node",
            Layout::OneNode => "1 node + Redis",
            Layout::ThreeNodes => "3 nodes + Redis",
        }
    }

    /// For topic names.
    fn slug(self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::OneNode => "one-node",
            Layout::ThreeNodes => "three-nodes",
        }
    }

    fn n_nodes(self) -> usize {
        match self {
            Layout::Single | Layout::OneNode => 1,
            Layout::ThreeNodes => 3,
        }
    }
}

const NODE_NAMES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// A redis-server of the benchmark's own (never the system's service):
/// no persistence, `noeviction`, on the server core; stopped on drop.
pub struct Redis {
    pub port: u16,
    pid: u32,
    child: Option<Child>,
    dir: PathBuf,
}

impl Redis {
    pub fn start(binary: &Path, port: u16, core: usize) -> Result<Redis, String> {
        ensure_free(port, "redis-server")?;
        let dir = std::env::temp_dir().join(format!("ssegate-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let child = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .args(["--daemonize", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| {
                format!(
                    "cannot start {} (apt-get install -y redis-server redis-tools): {err}",
                    binary.display()
                )
            })?;
        let redis = Redis {
            port,
            pid: child.id(),
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.pings() {
            if Instant::now() >= deadline {
                return Err(format!("redis-server on port {port} did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails when something already listens on `port`: a server left over (or
/// the system's Redis) would be measured instead of ours.
fn ensure_free(port: u16, what: &str) -> Result<(), String> {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => Err(format!(
            "port {port} (for {what}) is already in use: stop whatever listens there, or choose other ports"
        )),
        Err(_) => Ok(()),
    }
}

/// The nodes of one layout and their Redis; stopped on drop, nodes first.
pub struct Deployment {
    pub layout: Layout,
    pub nodes: Vec<Server>,
    pub redis: Option<Redis>,
}

impl Deployment {
    /// Starts `layout` afresh (a new Redis too): `n_started` of its nodes
    /// now, the others with `start_node` later.
    pub fn start(
        settings: &Settings,
        layout: Layout,
        n_started: usize,
    ) -> Result<Deployment, String> {
        let redis = match layout {
            Layout::Single => None,
            Layout::OneNode | Layout::ThreeNodes => Some(Redis::start(
                &settings.redis_server,
                settings.redis_port,
                settings.core,
            )?),
        };
        let mut deployment = Deployment {
            layout,
            nodes: Vec::new(),
            redis,
        };
        for _ in 0..n_started.min(layout.n_nodes()) {
            deployment.start_node(settings)?;
        }
        Ok(deployment)
    }

    /// Starts the next node of the layout.
    pub fn start_node(&mut self, settings: &Settings) -> Result<(), String> {
        let index = self.nodes.len();
        let node_name = *NODE_NAMES
            .get(index)
            .ok_or_else(|| format!("a layout has at most {} nodes", NODE_NAMES.len()))?;
        let port = *settings
            .node_ports
            .get(index)
            .ok_or_else(|| format!("--cluster-ports names no port for node {}", index + 1))?;
        ensure_free(port, node_name)?;
        let url = self.redis.as_ref().map(Redis::url);
        let extra: Vec<&str> = match &url {
            Some(url) => vec!["--cluster-redis-url", url],
            None => Vec::new(),
        };
        let name = if self.layout == Layout::Single {
            "single"
        } else {
            node_name
        };
        let node = Server::ssegate(name, &settings.binary, port, settings.core, &extra)?;
        self.nodes.push(node);
        Ok(())
    }

    /// CPU time of every node together, and of Redis.
    fn node_and_redis_cpu(&self) -> (Duration, Duration) {
        let nodes: Vec<u32> = self.nodes.iter().flat_map(Server::pids).collect();
        let redis = self
            .redis
            .as_ref()
            .map_or(Duration::ZERO, |redis| procstat::usage(&[redis.pid]).cpu());
        (procstat::usage(&nodes).cpu(), redis)
    }

    /// Each node's CPU time and Redis's, in that order.
    fn cpu_by_process(&self) -> Vec<(String, Duration)> {
        let mut cpu: Vec<(String, Duration)> = self
            .nodes
            .iter()
            .map(|node| (node.name.to_string(), node.usage().cpu()))
            .collect();
        if let Some(redis) = &self.redis {
            cpu.push((
                "redis-server".to_string(),
                procstat::usage(&[redis.pid]).cpu(),
            ));
        }
        cpu
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.nodes.iter().flat_map(Server::pids).collect();
        pids.extend(self.redis.as_ref().map(|redis| redis.pid));
        pids
    }
}

impl Target for Deployment {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.addr).collect()
    }

    /// The nodes' CPU and memory plus Redis's.
    fn usage(&self) -> Usage {
        procstat::usage(&self.pids())
    }
}

/// One layout's rounds of the `cluster` workload.
#[derive(Debug, Clone, Default)]
pub struct LayoutRounds {
    pub fanout: Vec<Step>,
    pub publish: Vec<PublishLoad>,
    pub publish_cpu: Vec<PublishCpu>,
}

/// CPU time per publish during the `oha` run: every node's (the one that
/// takes the request, and each tail that reads it back) and Redis's.
#[derive(Debug, Clone, Copy)]
pub struct PublishCpu {
    pub nodes_us: f64,
    pub redis_us: f64,
}

/// `redis-benchmark`'s figures for the raw `XADD`.
#[derive(Debug, Clone)]
pub struct RawXadd {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Redis's CPU time per `XADD`.
    pub redis_us: f64,
}

/// Every round of the `cluster` workload for one ssegate binary.
#[derive(Debug, Clone, Default)]
pub struct ClusterResults {
    pub n_subscribers: usize,
    pub n_topics: usize,
    pub publisher_connections: usize,
    pub rate: f64,
    pub seconds: f64,
    pub single: LayoutRounds,
    pub one_node: LayoutRounds,
    pub three_nodes: LayoutRounds,
    pub raw: Vec<RawXadd>,
}

impl ClusterResults {
    pub fn layout(&self, layout: Layout) -> &LayoutRounds {
        match layout {
            Layout::Single => &self.single,
            Layout::OneNode => &self.one_node,
            Layout::ThreeNodes => &self.three_nodes,
        }
    }

    fn layout_mut(&mut self, layout: Layout) -> &mut LayoutRounds {
        match layout {
            Layout::Single => &mut self.single,
            Layout::OneNode => &mut self.one_node,
            Layout::ThreeNodes => &mut self.three_nodes,
        }
    }
}

/// The `cluster-storm` workload for one ssegate binary.
#[derive(Debug, Clone)]
pub struct ClusterStorm {
    pub single: Storm,
    pub three_nodes: Storm,
    /// The nodes started after the publishes (1-based): they replay from
    /// Redis what their rings never had.
    pub late_nodes: Vec<usize>,
    /// CPU seconds each process of the three-node layout spent from the
    /// storm's start until it ended (nodes in order, then redis-server).
    pub cpu_seconds: Vec<(String, f64)>,
}

/// One round of `cluster`: the three layouts in turn, each started afresh.
pub async fn fanout_round(
    settings: &Settings,
    name: &str,
    round: usize,
    clock: Clock,
    results: &mut ClusterResults,
) -> Result<(), String> {
    let n_topics = settings.n_topics.max(1);
    let shape = Shape {
        n_topics,
        subscribers_per_topic: (settings.n_subscribers / n_topics).max(1),
        payload_bytes: 100,
        publisher_connections: settings.publisher_connections,
    };
    results.n_subscribers = shape.n_topics * shape.subscribers_per_topic;
    results.n_topics = shape.n_topics;
    results.publisher_connections = shape.publisher_connections;
    results.rate = settings.rate;
    results.seconds = settings.duration.as_secs_f64();
    for layout in Layout::ALL {
        let deployment = Deployment::start(settings, layout, layout.n_nodes())?;
        let label = format!("cluster-{round}-{}", layout.slug());
        let step = workloads::fanout_step(
            &deployment,
            shape,
            settings.rate,
            settings.duration,
            &label,
            clock,
        )
        .await?;
        workloads::report_step(name, layout.label(), &step);
        // Let the nodes see the closed streams before oha starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = deployment.node_and_redis_cpu();
        let publish = publish_load::run(&settings.oha, deployment.nodes[0].addr, 50, 10)?;
        let cpu = deployment.node_and_redis_cpu();
        // oha runs for 10 s: its rate times that is the number of publishes.
        let n_publishes = (publish.requests_per_s * 10.0).max(1.0);
        let per_publish = |after: Duration, before: Duration| {
            after.saturating_sub(before).as_secs_f64() * 1e6 / n_publishes
        };
        let publish_cpu = PublishCpu {
            nodes_us: per_publish(cpu.0, before.0),
            redis_us: per_publish(cpu.1, before.1),
        };
        eprintln!(
            "  {name:>7} {} publish (oha to node 1): {:.0} req/s, p99 {:.2} ms, success {:.3}, CPU per publish: nodes {:.1} us, Redis {:.1} us",
            layout.label(),
            publish.requests_per_s,
            publish.p99_ms,
            publish.success_rate,
            publish_cpu.nodes_us,
            publish_cpu.redis_us
        );
        if layout == Layout::OneNode {
            let redis = deployment.redis.as_ref().ok_or("no Redis")?;
            let before = procstat::usage(&[redis.pid]).cpu();
            let mut raw = raw_xadd(&settings.redis_benchmark, redis.port, settings.raw_requests)?;
            raw.redis_us = procstat::usage(&[redis.pid])
                .cpu()
                .saturating_sub(before)
                .as_secs_f64()
                * 1e6
                / settings.raw_requests.max(1) as f64;
            eprintln!(
                "  {name:>7} Redis alone: raw XADD {:.0} /s, p99 {:.2} ms, Redis CPU per XADD {:.1} us",
                raw.requests_per_s, raw.p99_ms, raw.redis_us
            );
            results.raw.push(raw);
        }
        let rounds = results.layout_mut(layout);
        rounds.fanout.push(step);
        rounds.publish.push(publish);
        rounds.publish_cpu.push(publish_cpu);
        drop(deployment);
    }
    Ok(())
}

/// `cluster-storm`: the reconnect storm on a single node, then across
/// three nodes of which the last two start after the publishes.
pub async fn storm(settings: &Settings, name: &str, clock: Clock) -> Result<ClusterStorm, String> {
    const BACK: u64 = 100;
    const TOPIC: &str = "cluster-storm";
    let n = settings.storm_subscribers;

    let single = {
        let deployment = Deployment::start(settings, Layout::Single, 1)?;
        let addrs = deployment.addrs();
        let resume_id = workloads::storm_history(addrs[0], TOPIC, BACK, clock).await?;
        workloads::storm_resume(&addrs, TOPIC, n, BACK, &resume_id, true, clock).await?
    };
    report_storm(name, Layout::Single, &single);

    let mut deployment = Deployment::start(settings, Layout::ThreeNodes, 1)?;
    let resume_id = workloads::storm_history(deployment.nodes[0].addr, TOPIC, BACK, clock).await?;
    deployment.start_node(settings)?;
    deployment.start_node(settings)?;
    let addrs = deployment.addrs();
    let before = deployment.cpu_by_process();
    let three_nodes =
        workloads::storm_resume(&addrs, TOPIC, n, BACK, &resume_id, true, clock).await?;
    let cpu_seconds: Vec<(String, f64)> = deployment
        .cpu_by_process()
        .into_iter()
        .zip(before)
        .map(|((name, after), (_, before))| (name, after.saturating_sub(before).as_secs_f64()))
        .collect();
    drop(deployment);
    report_storm(name, Layout::ThreeNodes, &three_nodes);
    eprintln!(
        "          CPU during the storm: {}",
        cpu_seconds
            .iter()
            .map(|(process, seconds)| format!("{process} {seconds:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ClusterStorm {
        single,
        three_nodes,
        late_nodes: vec![2, 3],
        cpu_seconds,
    })
}

fn report_storm(name: &str, layout: Layout, storm: &Storm) {
    eprintln!(
        "  {name:>7} {} storm: {} of {} caught up in {:.2} s, {} lost, {} refused, {} told to come back",
        layout.label(),
        storm.caught_up,
        storm.n_subscribers,
        storm.seconds,
        storm.lost,
        storm.refused,
        storm.retried
    );
    if storm.per_node.len() > 1 {
        for (i, node) in storm.per_node.iter().enumerate() {
            eprintln!(
                "          node {} ({}): {} of {} caught up in {:.2} s (first {:.2} s, half {:.2} s), {} lost, {} refused, {} told to come back",
                i + 1,
                node.addr,
                node.caught_up,
                node.n_subscribers,
                node.seconds,
                node.first_seconds,
                node.median_seconds,
                node.lost,
                node.refused,
                node.retried
            );
        }
    }
}

/// Redis's raw ceiling on this machine: `redis-benchmark` (50 clients, on
/// this process's core) running `XADD bench:raw MAXLEN ~ 100000 * f <100
/// bytes>`, the kind of append the publish script makes twice.
pub fn raw_xadd(binary: &Path, port: u16, n_requests: usize) -> Result<RawXadd, String> {
    let value = "x".repeat(100);
    let output = Command::new(binary)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "50", "-n", &n_requests.to_string(), "--csv"])
        .args([
            "XADD",
            "bench:raw",
            "MAXLEN",
            "~",
            "100000",
            "*",
            "f",
            &value,
        ])
        .output()
        .map_err(|err| {
            format!(
                "cannot run {} (apt-get install -y redis-tools): {err}",
                binary.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_benchmark_csv(&String::from_utf8_lossy(&output.stdout))
}

/// The figures of `redis-benchmark --csv` (7.x: a header line, then one
/// line per test, every field quoted).
fn parse_benchmark_csv(text: &str) -> Result<RawXadd, String> {
    let fields = |line: &str| -> Vec<String> {
        line.trim()
            .split(',')
            .map(|field| field.trim_matches('"').to_string())
            .collect()
    };
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header = fields(lines.next().ok_or("redis-benchmark printed nothing")?);
    let row = fields(lines.next().ok_or("redis-benchmark printed no result")?);
    let column = |name: &str| -> Result<f64, String> {
        let index = header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("redis-benchmark's CSV has no {name} column"))?;
        // The test's name may not contain commas, but count from the end
        // anyway: the figures are the last columns.
        let from_end = header.len() - index;
        row.len()
            .checked_sub(from_end)
            .and_then(|i| row[i].parse().ok())
            .ok_or_else(|| format!("redis-benchmark's CSV: no number for {name}"))
    };
    Ok(RawXadd {
        requests_per_s: column("rps")?,
        p50_ms: column("p50_latency_ms")?,
        p99_ms: column("p99_latency_ms")?,
        redis_us: f64::NAN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"XADD bench:raw MAXLEN ~ 100000 * f xxxx\",\"40899.80\",\"0.792\",\"0.224\",\"0.767\",\"1.223\",\"1.671\",\"5.239\"\n";
        let raw = parse_benchmark_csv(text).expect("parsed");
        assert_eq!(raw.requests_per_s, 40899.80);
        assert_eq!(raw.p50_ms, 0.767);
        assert_eq!(raw.p99_ms, 1.671);
        assert!(parse_benchmark_csv("").is_err());
    }
}
