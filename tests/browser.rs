//! The real-browser suites in `tests/browser/*.test.mjs`, against the real
//! binary in headless Chromium: `EventSource` (CORS, credentials, event
//! types, automatic reconnect after a network cut, a slow-subscriber drop and
//! a restart), the fetch/XHR clients (`@microsoft/fetch-event-source`,
//! `sse.js`), private topics (an HttpOnly cookie with `withCredentials`, the
//! short-lived query token recipe, a Bearer header through
//! `fetch-event-source`), the status page (screenshot in
//! `target/browser-artifacts`),
//! ten `EventSource`s sharing one HTTP/2 connection over TLS, and, in the
//! `cluster-*` suites, cluster mode: an `EventSource` behind a round-robin
//! proxy over two nodes resuming exactly on the survivor when its node is
//! killed.
//!
//! Needs Node.js, Chromium and `npm ci --prefix tests/browser`, and the
//! cluster suites `redis-server` too (this file starts one of its own on a
//! free port and passes its URL in `TEST_REDIS_URL`). Without them the test
//! says so and passes, so `cargo test` works on a fresh machine;
//! `.ci/run` installs them and sets `REQUIRE_TEST_TOOLS=1`, which
//! turns anything missing into a failure.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;

use common::cluster::Redis;

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn missing_prerequisites(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        missing.push("node (Node.js)".to_string());
    }
    if !chromium().exists() {
        missing.push(format!(
            "{} (apt-get install -y chromium)",
            chromium().display()
        ));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        missing.push("playwright-core (npm ci --prefix tests/browser)".to_string());
    }
    missing
}

/// Whether there is a `redis-server` (`TEST_REDIS_SERVER`, else on `PATH`),
/// as `common::cluster::Redis::start` looks for it.
fn redis_server_present() -> bool {
    if let Some(path) = std::env::var_os("TEST_REDIS_SERVER") {
        return Path::new(&path).is_file();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("redis-server").is_file())
    })
}

/// The suites `tests/browser/*.test.mjs` whose name starts with `cluster-`
/// (`cluster`) or does not (`!cluster`), sorted.
fn suites(dir: &Path, cluster: bool) -> Vec<String> {
    let mut suites: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/browser")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs") && name.starts_with("cluster-") == cluster)
        .collect();
    suites.sort();
    suites
}

/// One browser run at a time: the two tests below would otherwise run
/// side by side, two Chromiums and their gateways racing for the same
/// cores and free ports.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `suites` with `node --test`, with `env` on top of the binary and
/// Chromium.
fn run_suites(dir: &Path, suites: &[String], env: &[(&str, &OsStr)]) -> ExitStatus {
    assert!(!suites.is_empty(), "no suites in {}", dir.display());
    let _one = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Command::new("node")
        // One suite at a time: they pick free ports and restart gateways on
        // them, which parallel suites could race for.
        .args(["--test", "--test-concurrency=1"])
        .args(suites)
        .current_dir(dir)
        .env("SSEGATE_BIN", env!("CARGO_BIN_EXE_ssegate"))
        .env("CHROMIUM", chromium())
        .envs(env.iter().copied())
        .status()
        .expect("run node")
}

#[test]
fn browser_suites_against_the_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let missing = missing_prerequisites(&dir);
    if !missing.is_empty() {
        common::prerequisite_missing("browser test", &format!("it needs {missing:?}"));
        return;
    }
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser-artifacts");
    // A self-signed certificate for the TLS suite (the browser is told to
    // accept it for its context).
    let tls_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate");
    std::fs::write(tls_dir.join("cert.pem"), generated.cert.pem()).expect("cert");
    std::fs::write(
        tls_dir.join("key.pem"),
        generated.signing_key.serialize_pem(),
    )
    .expect("key");
    let (cert, key) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    let status = run_suites(
        &dir,
        &suites(&dir, false),
        &[
            ("SSEGATE_ARTIFACTS", artifacts.as_os_str()),
            ("TEST_TLS_CERT", cert.as_os_str()),
            ("TEST_TLS_KEY", key.as_os_str()),
        ],
    );
    std::fs::remove_dir_all(&tls_dir).ok();
    assert!(status.success(), "browser tests failed: {status}");
}

/// The `cluster-*` suites: two nodes (started by the suite) on a Redis of
/// this test's own.
#[test]
fn browser_cluster_suites_against_the_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut missing = missing_prerequisites(&dir);
    if !redis_server_present() {
        missing.push("redis-server (apt-get install -y redis-server)".to_string());
    }
    if !missing.is_empty() {
        common::prerequisite_missing("browser cluster test", &format!("it needs {missing:?}"));
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let status = run_suites(
        &dir,
        &suites(&dir, true),
        &[("TEST_REDIS_URL", OsStr::new(&url))],
    );
    assert!(status.success(), "browser cluster tests failed: {status}");
}
