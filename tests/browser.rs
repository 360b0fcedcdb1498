//! The real-browser suites in `tests/browser/*.test.mjs`, against the real
//! binary in headless Chromium: `EventSource` (CORS, credentials, event
//! types, automatic reconnect after a network cut, a slow-subscriber drop and
//! a restart), the fetch/XHR clients (`@microsoft/fetch-event-source`,
//! `sse.js`), the status page (screenshot in `target/browser-artifacts`), and
//! ten `EventSource`s sharing one HTTP/2 connection over TLS.
//!
//! Needs Node.js, Chromium and `npm ci --prefix tests/browser`. Without them
//! the test says so and passes, so `cargo test` works on a fresh machine;
//! `.ci/run` installs them and sets `REQUIRE_TEST_TOOLS=1`, which
//! turns anything missing into a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

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

#[test]
fn browser_suites_against_the_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let missing = missing_prerequisites(&dir);
    if !missing.is_empty() {
        common::prerequisite_missing("browser test", &format!("it needs {missing:?}"));
        return;
    }
    let mut suites: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/browser")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    suites.sort();
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
    let status = Command::new("node")
        // One suite at a time: they pick free ports and restart gateways on
        // them, which parallel suites could race for.
        .args(["--test", "--test-concurrency=1"])
        .args(&suites)
        .current_dir(&dir)
        .env("SSEGATE_BIN", env!("CARGO_BIN_EXE_ssegate"))
        .env("SSEGATE_ARTIFACTS", artifacts)
        .env("TEST_TLS_CERT", tls_dir.join("cert.pem"))
        .env("TEST_TLS_KEY", tls_dir.join("key.pem"))
        .env("CHROMIUM", chromium())
        .status()
        .expect("run node");
    std::fs::remove_dir_all(&tls_dir).ok();
    assert!(status.success(), "browser tests failed: {status}");
}
