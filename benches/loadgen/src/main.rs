//! `ssegate-bench`: fan-out workloads run side by side against ssegate and
//! nchan, with every delivery checked, and a table of ratios. `--baseline`
//! adds a second ssegate binary (the build before a change) for an
//! after / before ratio measured in the same run. `--workloads
//! cluster,cluster-storm` measures ssegate's cluster mode (nodes sharing one
//! Redis) against a single node, and Redis's raw `XADD` ceiling.
//!
//! The servers run on one core (`taskset -c 0`), this load generator on the
//! other (it pins itself to core 1): one core each is the fair, repeatable
//! comparison on a 2-core machine. Run it through `benches/compare.sh`.

mod cluster;
mod publish_load;
mod publisher;
mod report;
mod servers;
mod subscriber;
mod workloads;

// Shared with the other bench programs (`src/lib.rs`); imported at the crate
// root so that `crate::wire` and the like read as before.
use ssegate_bench::{process, procstat, stats, wire};

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use report::Results;
use servers::Server;
use stats::Clock;
use workloads::Shape;

#[derive(Parser, Debug, Clone)]
#[command(about = "SSE fan-out benchmark: ssegate and nchan side by side")]
struct Args {
    /// The ssegate binary (build it with --release).
    #[arg(long, default_value = "target/release/ssegate")]
    ssegate: PathBuf,
    /// A second ssegate binary, measured as the server `baseline` when
    /// --servers names it (e.g. ssegate,baseline): the build before a change,
    /// started exactly like ssegate, for a ratio ssegate / baseline.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// The nchan peer: a directory with run.sh and nginx.conf.
    #[arg(long, default_value = "../shared/peers/nchan")]
    nchan_dir: PathBuf,
    /// The oha binary.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// Servers to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "ssegate,nchan")]
    servers: Vec<String>,
    /// Workloads to run. Not in the default list: `cluster` and
    /// `cluster-storm` (ssegate's cluster mode on a redis-server of its own;
    /// ssegate and baseline only, skipped for nchan).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "broadcast,topics,fixed,idle,publish,storm,publish-loaded"
    )]
    workloads: Vec<String>,
    /// Scales every subscriber count (0.1 for a quick smoke run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Rounds of the fixed-rate workloads (`fixed`, `cluster`), servers
    /// taking turns; the table shows medians. Their latency and
    /// per-delivery CPU are the noisiest figures on a shared machine.
    #[arg(long, default_value_t = 3)]
    fixed_rounds: usize,
    /// Seconds per saturation step.
    #[arg(long, default_value_t = 4)]
    step_seconds: u64,
    /// Where to write the raw results as JSON.
    #[arg(long, default_value = "benches/results/latest.json")]
    json: PathBuf,
    /// Core for the servers; this process takes the other one.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    #[arg(long, default_value_t = 1)]
    loader_core: usize,
    /// redis-server for the cluster workloads (started on --redis-port, on
    /// the server core, without persistence; never the system's service).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// redis-benchmark, for the raw XADD ceiling (runs on the loader core).
    #[arg(long, default_value = "redis-benchmark")]
    redis_benchmark: PathBuf,
    #[arg(long, default_value_t = 6390)]
    redis_port: u16,
    /// The cluster nodes' ports; the first is also the single node's.
    #[arg(long, value_delimiter = ',', default_value = "8090,8092,8093")]
    cluster_ports: Vec<u16>,
    /// Events per second of the cluster fan-out, over all topics (not
    /// scaled by --scale). Low enough that a single node is not at its
    /// limit: the latency figures are then what Redis adds, not queueing.
    #[arg(long, default_value_t = 200.0)]
    cluster_rate: f64,
    /// Seconds of publishing per layout and round of the cluster fan-out.
    #[arg(long, default_value_t = 10)]
    cluster_seconds: u64,
}

/// The workloads that start their own servers (nodes and Redis).
fn is_cluster_workload(workload: &str) -> bool {
    matches!(workload, "cluster" | "cluster-storm")
}

fn main() {
    let args = Args::parse();
    // 15,000 subscribers need a descriptor each.
    process::raise_open_file_limit();
    if !process::pin_to_core(args.loader_core) {
        eprintln!(
            "warning: cannot pin the load generator to core {}",
            args.loader_core
        );
    }
    eprintln!(
        "ssegate-bench: servers pinned to core {}, load generator pinned to core {} (one core each)",
        args.server_core, args.loader_core
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let results = local.block_on(&runtime, run_all(&args));
    match results {
        Ok(results) => {
            println!("{}", results.table());
            if let Some(dir) = args.json.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(err) = std::fs::write(&args.json, results.to_json()) {
                eprintln!("cannot write {}: {err}", args.json.display());
            }
        }
        Err(err) => {
            eprintln!("ssegate-bench: {err}");
            std::process::exit(1);
        }
    }
}

async fn run_all(args: &Args) -> Result<Results, String> {
    check_baseline(args)?;
    let clock = Clock::new();
    let mut results = Results::default();
    // Servers take turns workload by workload (and round by round for the
    // fixed rates), so that both see the same spell of the machine.
    for workload in &args.workloads {
        let rounds = if workload == "fixed" || workload == "cluster" {
            args.fixed_rounds
        } else {
            1
        };
        for round in 1..=rounds {
            for name in &args.servers {
                if is_cluster_workload(workload) {
                    if name == "nchan" {
                        eprintln!("== nchan: {workload}: skipped (ssegate's cluster mode only)");
                        continue;
                    }
                    eprintln!("== {name}: {workload} (round {round} of {rounds})");
                    run_cluster_workload(args, name, workload, round, clock, &mut results).await?;
                    continue;
                }
                eprintln!("== {name}: {workload} (round {round} of {rounds})");
                let server = start(args, name)?;
                run_workload(args, &server, workload, clock, &mut results).await?;
                drop(server);
            }
        }
    }
    Ok(results)
}

/// Checks `--baseline` against `--servers` before the first workload: a
/// missing baseline binary would otherwise surface only at its first turn,
/// after the other servers' runs, or (given but not named) go unmeasured
/// without a word.
fn check_baseline(args: &Args) -> Result<(), String> {
    let named = args.servers.iter().any(|name| name == "baseline");
    match &args.baseline {
        None if named => Err("--servers names baseline, but no --baseline PATH is given".into()),
        Some(path) if named && !path.is_file() => {
            Err(format!("baseline binary {} not found", path.display()))
        }
        Some(path) if !named => {
            eprintln!(
                "warning: --baseline {} is not measured: --servers does not name baseline",
                path.display()
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Starts `name` afresh. `baseline` starts exactly like `ssegate` (same
/// port, core and flags), from its own binary, so the two differ only by
/// the build.
fn start(args: &Args, name: &str) -> Result<Server, String> {
    match name {
        "ssegate" => Server::ssegate("ssegate", &args.ssegate, 8090, args.server_core, &[]),
        "baseline" => Server::ssegate(
            "baseline",
            ssegate_binary(args, name)?,
            8090,
            args.server_core,
            &[],
        ),
        "nchan" => Server::nchan(&args.nchan_dir, args.server_core),
        other => Err(format!("unknown server {other:?}")),
    }
}

/// The binary of an ssegate-like server: `ssegate` or `baseline`.
fn ssegate_binary<'a>(args: &'a Args, name: &str) -> Result<&'a std::path::Path, String> {
    match name {
        "ssegate" => Ok(&args.ssegate),
        "baseline" => args
            .baseline
            .as_deref()
            .ok_or_else(|| "the server baseline needs --baseline PATH".to_string()),
        other => Err(format!("unknown server {other:?}")),
    }
}

/// `cluster` (one round) or `cluster-storm` for the ssegate binary `name`:
/// these start their own nodes and Redis (see `cluster`).
async fn run_cluster_workload(
    args: &Args,
    name: &str,
    workload: &str,
    round: usize,
    clock: Clock,
    results: &mut Results,
) -> Result<(), String> {
    let settings = cluster::Settings {
        binary: ssegate_binary(args, name)?.to_path_buf(),
        redis_server: args.redis_server.clone(),
        redis_benchmark: args.redis_benchmark.clone(),
        oha: args.oha.clone(),
        redis_port: args.redis_port,
        node_ports: args.cluster_ports.clone(),
        core: args.server_core,
        n_subscribers: scaled(args, 10_000),
        n_topics: 100,
        publisher_connections: 12,
        rate: args.cluster_rate,
        duration: Duration::from_secs(args.cluster_seconds),
        storm_subscribers: scaled(args, 10_000),
        raw_requests: 200_000,
    };
    let name: &'static str = if name == "baseline" {
        "baseline"
    } else {
        "ssegate"
    };
    let entry = results.server(name);
    match workload {
        "cluster" => {
            let cluster = entry.cluster.get_or_insert_with(Default::default);
            cluster::fanout_round(&settings, name, round, clock, cluster).await
        }
        "cluster-storm" => {
            entry.cluster_storm = Some(cluster::storm(&settings, name, clock).await?);
            Ok(())
        }
        other => Err(format!("unknown workload {other:?}")),
    }
}

fn scaled(args: &Args, n: usize) -> usize {
    ((n as f64 * args.scale).round() as usize).max(1)
}

async fn run_workload(
    args: &Args,
    server: &Server,
    workload: &str,
    clock: Clock,
    results: &mut Results,
) -> Result<(), String> {
    let step = Duration::from_secs(args.step_seconds);
    let broadcast = Shape {
        n_topics: 1,
        subscribers_per_topic: scaled(args, 10_000),
        payload_bytes: 100,
        publisher_connections: 1,
    };
    let many_topics = Shape {
        n_topics: scaled(args, 1000),
        subscribers_per_topic: 10,
        payload_bytes: 100,
        publisher_connections: 16,
    };
    let entry = results.server(server.name);
    match workload {
        "broadcast" => {
            entry.broadcast = Some(
                workloads::saturation(server, broadcast, 2.0, step, 3, "broadcast", clock).await?,
            );
        }
        "topics" => {
            entry.many_topics = Some(
                workloads::saturation(server, many_topics, 1000.0, step, 3, "topics", clock)
                    .await?,
            );
        }
        "fixed" => {
            // Long enough for the kernel's tick-sampled user/kernel split to
            // settle: at 2 events/s the server is busy only a tenth of the time.
            let duration = Duration::from_secs(30);
            let fixed =
                workloads::fanout_step(server, broadcast, 2.0, duration, "fixed-bc", clock).await?;
            workloads::report_step(server.name, "fixed-bc", &fixed);
            entry.fixed_broadcast.push(fixed);
            let fixed =
                workloads::fanout_step(server, many_topics, 1000.0, duration, "fixed-mt", clock)
                    .await?;
            workloads::report_step(server.name, "fixed-mt", &fixed);
            entry.fixed_many_topics.push(fixed);
        }
        "idle" => {
            let idle =
                workloads::idle(server, scaled(args, 15_000), Duration::from_secs(20), clock)
                    .await?;
            eprintln!(
                "  {:>7} idle: {:.0} bytes per subscriber, {:.2}% CPU",
                server.name,
                idle.rss_per_subscriber_bytes,
                idle.idle_cpu_share * 100.0
            );
            entry.idle = Some(idle);
        }
        "publish" => {
            let load = publish_load::run(&args.oha, server.addr, 50, 10)?;
            eprintln!(
                "  {:>7} publish: {:.0} req/s, p99 {:.2} ms",
                server.name, load.requests_per_s, load.p99_ms
            );
            entry.publish = Some(load);
        }
        "storm" => {
            let storm = workloads::storm(server, scaled(args, 10_000), 100, clock).await?;
            eprintln!(
                "  {:>7} storm: {} of {} caught up in {:.2} s, {} lost",
                server.name, storm.caught_up, storm.n_subscribers, storm.seconds, storm.lost
            );
            entry.storm = Some(storm);
        }
        "publish-loaded" => {
            // Three rounds, alone then loaded, medians reported: the p99 of a
            // 10 s oha run moves by a quarter between runs on this machine.
            // oha runs on this process's core while the subscribers' tasks
            // wait (idle streams only get a heartbeat every 15 s).
            let oha = args.oha.clone();
            let addr = server.addr;
            let measure = move || {
                let oha = oha.clone();
                tokio::task::spawn_blocking(move || publish_load::run(&oha, addr, 50, 10))
            };
            let n_subscribers = scaled(args, 10_000);
            let (mut alone, mut loaded) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                alone.push(measure().await.map_err(|err| err.to_string())??);
                let (fleet, stats) = workloads::hold_idle(server, n_subscribers, clock).await?;
                loaded.push(measure().await.map_err(|err| err.to_string())??);
                let lost = stats.lost_streams.get();
                drop(fleet);
                if lost > 0 {
                    return Err(format!(
                        "{lost} idle subscribers lost their stream under publish load"
                    ));
                }
                // Let the server see the closed streams before the next round.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let (alone, loaded) = (publish_load::median(alone), publish_load::median(loaded));
            eprintln!(
                "  {:>7} publish-loaded (medians of 3): alone {:.0} req/s p99 {:.2} ms; with {n_subscribers} subscribers {:.0} req/s p99 {:.2} ms",
                server.name,
                alone.requests_per_s,
                alone.p99_ms,
                loaded.requests_per_s,
                loaded.p99_ms
            );
            entry.publish_loaded = Some(publish_load::PublishUnderLoad {
                n_subscribers,
                alone,
                loaded,
            });
        }
        other => return Err(format!("unknown workload {other:?}")),
    }
    Ok(())
}
