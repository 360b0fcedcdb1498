//! Publish throughput measured by `oha`: alone, and while many subscribers
//! hold streams on other topics.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// The same `oha` run without and then with idle subscribers on other topics.
#[derive(Debug, Clone)]
pub struct PublishUnderLoad {
    pub n_subscribers: usize,
    pub alone: PublishLoad,
    pub loaded: PublishLoad,
}

#[derive(Debug, Clone)]
pub struct PublishLoad {
    pub requests_per_s: f64,
    pub p99_ms: f64,
    pub success_rate: f64,
}

/// The median requests/s and the median p99 of several runs (each figure
/// on its own).
pub fn median(mut runs: Vec<PublishLoad>) -> PublishLoad {
    let middle = runs.len() / 2;
    runs.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    let p99_ms = runs.get(middle).map_or(f64::NAN, |r| r.p99_ms);
    runs.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
    let mut median = runs.get(middle).cloned().unwrap_or(PublishLoad {
        requests_per_s: f64::NAN,
        p99_ms: f64::NAN,
        success_rate: f64::NAN,
    });
    median.p99_ms = p99_ms;
    median
}

/// `oha -m POST` with a 100-byte body on `n_connections` for `seconds`.
///
/// oha gets one worker thread: it runs on one core, and by default it starts
/// one thread per physical core, whose time-slicing on that one core (4 ms
/// scheduler ticks) then shows up as the p99 of whichever server it measures.
pub fn run(
    oha: &Path,
    addr: SocketAddr,
    n_connections: usize,
    seconds: u64,
) -> Result<PublishLoad, String> {
    let url = format!("http://{addr}/publish/oha-bench");
    let output = Command::new(oha)
        .args([
            "--worker-threads",
            "1",
            "-m",
            "POST",
            "-d",
            &"x".repeat(100),
        ])
        .args([
            "-c",
            &n_connections.to_string(),
            "-z",
            &format!("{seconds}s"),
        ])
        .args(["--no-tui", "--output-format", "json", &url])
        .output()
        .map_err(|err| {
            format!(
                "cannot run {} (cargo install oha --locked): {err}",
                oha.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "oha failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|err| format!("oha output: {err}"))?;
    let number = |path: &[&str]| {
        path.iter()
            .try_fold(&report, |value, key| value.get(key))
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("oha output lacks {}", path.join(".")))
    };
    Ok(PublishLoad {
        requests_per_s: number(&["summary", "requestsPerSec"])?,
        p99_ms: number(&["latencyPercentiles", "p99"])? * 1000.0,
        success_rate: number(&["summary", "successRate"])?,
    })
}
