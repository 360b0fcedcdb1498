//! `ssegate-reliability`: the reliability battery. It starts the real
//! ssegate binary once or more per scenario, with the configuration each
//! needs, drives it with well-behaved clients beside faults, abuse and bad
//! input, and checks each scenario's pass criterion (research/reliability.md
//! §6). It prints one table row per scenario, writes the table as JSON to
//! `benches/results/reliability-<scale>.json`, and exits 1 if a row fails.
//!
//! ```sh
//! cargo build --release -p ssegate
//! cargo run --release -p ssegate-reliability -- --scale small        # CI, ~2 minutes
//! cargo run --release -p ssegate-reliability -- --scale full         # the issue's figures
//! cargo run --release -p ssegate-reliability -- --only seam,kill9
//! ```
//!
//! On a machine with two cores or more the gateway runs on core 0 and the
//! battery on core 1 (`--no-pin` to let them float). The battery is one
//! thread: its clients are tasks on one current-thread runtime.

mod gateway;
mod h2raw;
mod http;
mod probe;
mod procnet;
mod rng;
mod row;
mod scenarios;
mod sse;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ssegate_bench::process;
use ssegate_bench::stats::Clock;

use gateway::Launcher;
use row::Row;
use scenarios::{Ctx, Scale};

/// The workspace root, for the default paths (the battery may be run from
/// anywhere with `cargo run -p`).
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `ROOT` without the `..`s, for messages.
fn root() -> PathBuf {
    Path::new(ROOT)
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(ROOT))
}

#[derive(Parser, Debug)]
#[command(about = "The reliability battery: ssegate under faults, abuse and bad input")]
struct Args {
    /// `small` (CI: numbers cut 10-50x, seconds) or `full` (the issue's figures).
    #[arg(long, value_enum, default_value = "small")]
    scale: Scale,
    /// The ssegate binary (`cargo build --release -p ssegate`); default
    /// `target/release/ssegate` of this workspace.
    #[arg(long, env = "SSEGATE_BIN")]
    bin: Option<PathBuf>,
    /// Run only these scenarios (comma-separated keys; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the table as JSON; default
    /// benches/results/reliability-<scale>.json.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of every random choice (resume ids, join times, ...).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not pin the gateway to core 0 and the battery to core 1.
    #[arg(long)]
    no_pin: bool,
    /// Scheduling priority of the gateways and of the probe (the
    /// well-behaved clients whose latency the criteria judge), when allowed
    /// (root): other work on a shared machine, and the battery's own
    /// attackers, then disturb those figures less. 0 leaves it alone.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true)]
    nice: i32,
    /// The commit the binary was built from, for the JSON; default this
    /// repository's HEAD (marked `+changes` when src/ differs from it).
    #[arg(long)]
    binary_commit: Option<String>,
    /// `fail`: a latency or CPU criterion not met fails the run like any
    /// other. `advisory`: it is reported, and only the others decide the
    /// exit status (CI on a shared machine: a correctness failure is never
    /// excused, a noisy neighbour's p99 does not fail the build).
    #[arg(long, value_enum, default_value = "fail")]
    speed_criteria: SpeedCriteria,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SpeedCriteria {
    Fail,
    Advisory,
}

fn main() {
    let args = Args::parse();
    if args.list {
        for scenario in scenarios::ALL {
            println!("{:<15} {:<6} {}", scenario.key, scenario.id, scenario.title);
        }
        return;
    }
    if let Some(unknown) = args
        .only
        .iter()
        .find(|key| !scenarios::ALL.iter().any(|s| s.key == key.as_str()))
    {
        eprintln!("unknown scenario {unknown:?} (see --list)");
        std::process::exit(2);
    }
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| root().join("target/release/ssegate"));
    let Ok(bin) = bin.canonicalize() else {
        eprintln!(
            "no ssegate binary at {}: build it first (cargo build --release -p ssegate) or give --bin / SSEGATE_BIN",
            bin.display()
        );
        std::process::exit(2);
    };
    let n_files = process::raise_open_file_limit();
    // Only root may raise its priority; see whether this process may.
    let niced = args.nice != 0 && can_raise_priority(args.nice);
    let core = match !args.no_pin && n_cpus() >= 2 && has_taskset() && process::pin_to_core(1) {
        true => Some(0),
        false => None,
    };
    eprintln!(
        "ssegate-reliability: scale {:?}, binary {}, open-file limit {n_files}, {}, nice {}",
        args.scale,
        bin.display(),
        match core {
            Some(_) => "gateway on core 0, battery on core 1",
            None => "not pinned",
        },
        if niced { args.nice } else { 0 }
    );
    let ctx = Ctx {
        launcher: Launcher {
            bin: bin.clone(),
            core,
            nice: if niced { args.nice } else { 0 },
        },
        scale: args.scale,
        clock: Clock::new(),
        seed: args.seed,
        nice: if niced { args.nice } else { 0 },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let rows = tokio::task::LocalSet::new().block_on(&runtime, async {
        let mut rows = Vec::new();
        for scenario in scenarios::ALL {
            if !args.only.is_empty() && !args.only.iter().any(|key| key == scenario.key) {
                continue;
            }
            eprintln!("== {} {} ({})", scenario.id, scenario.title, scenario.key);
            let row = scenarios::run_one(&ctx, scenario).await;
            eprintln!(
                "   {} in {:.1} s",
                if row.pass { "PASS" } else { "FAIL" },
                row.seconds
            );
            rows.push(row);
        }
        rows
    });
    let seconds = started.elapsed().as_secs_f64();
    // Clients still closing must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    println!("{}", row::table(&rows));
    let n_failed = rows.iter().filter(|row| !row.pass).count();
    println!(
        "{} of {} rows passed in {seconds:.0} s ({:?} scale)",
        rows.len() - n_failed,
        rows.len(),
        args.scale
    );
    let json_path = args.json.clone().unwrap_or_else(|| {
        let name = format!("reliability-{}.json", scale_name(args.scale));
        root().join("benches/results").join(name)
    });
    write_json(&json_path, &args, &bin, seconds, &rows);
    let failed = match args.speed_criteria {
        SpeedCriteria::Fail => n_failed > 0,
        SpeedCriteria::Advisory => {
            let n_slow_only = rows
                .iter()
                .filter(|row| !row.pass && row.pass_but_speed())
                .count();
            if n_slow_only > 0 {
                println!(
                    "{n_slow_only} row(s) missed only speed criteria, advisory in this run (--speed-criteria advisory)"
                );
            }
            rows.iter().any(|row| !row.pass_but_speed())
        }
    };
    if failed {
        std::process::exit(1);
    }
}

fn scale_name(scale: Scale) -> &'static str {
    scale.pick("small", "full")
}

fn write_json(path: &Path, args: &Args, bin: &Path, seconds: f64, rows: &[Row]) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(ROOT)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let binary_commit = args.binary_commit.clone().unwrap_or_else(|| {
        // Uncommitted changes under src/ went into the binary too.
        match git(&["status", "--porcelain", "--", "src"]) {
            Some(changes) if !changes.is_empty() => format!("{head}+changes"),
            _ => head.clone(),
        }
    });
    let report = serde_json::json!({
        "scale": scale_name(args.scale),
        "date": utc_now(),
        "battery_commit": head,
        "binary_commit": binary_commit,
        "binary": bin.display().to_string(),
        "seed": args.seed,
        "only": args.only,
        "seconds": (seconds * 10.0).round() / 10.0,
        "passed": rows.iter().all(|row| row.pass),
        "rows": rows,
    });
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    match std::fs::write(path, text + "\n") {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(err) => eprintln!("cannot write {}: {err}", path.display()),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, no date crate for one line).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Whether this process may take nice value `nice` (tried on a
/// short-lived thread, which gives it up when it ends).
fn can_raise_priority(nice: i32) -> bool {
    std::thread::spawn(move || probe::set_thread_nice(nice))
        .join()
        .unwrap_or(false)
}

/// Whether `taskset` (util-linux), which pins each gateway, is there.
fn has_taskset() -> bool {
    std::process::Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn n_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
