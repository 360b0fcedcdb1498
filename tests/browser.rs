//! Chromium's own `EventSource` against the real binary: cross-origin
//! delivery, event types, multi-line data, and reconnection with
//! `Last-Event-ID` after a restart (tests/browser/eventsource.test.mjs).
//!
//! Needs Node.js, Chromium and `npm ci --prefix tests/browser`. Without them
//! the test says so and passes, so `cargo test` works on a fresh machine;
//! `.ci/run` installs them and sets `SSEGATE_BROWSER_TESTS=require`, which
//! turns anything missing into a failure.

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
fn chromium_eventsource_against_the_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let missing = missing_prerequisites(&dir);
    if !missing.is_empty() {
        let required = std::env::var("SSEGATE_BROWSER_TESTS").is_ok_and(|v| v == "require");
        assert!(!required, "browser test prerequisites missing: {missing:?}");
        // Straight to the terminal: the test harness captures `eprintln!` of
        // passing tests, and a skip must not pass unnoticed.
        let notice =
            format!("\nSKIPPED browser test: it needs {missing:?}; .ci/run installs them\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
        return;
    }
    let status = Command::new("node")
        .args(["--test", "eventsource.test.mjs"])
        .current_dir(&dir)
        .env("SSEGATE_BIN", env!("CARGO_BIN_EXE_ssegate"))
        .env("CHROMIUM", chromium())
        .status()
        .expect("run node");
    assert!(status.success(), "browser tests failed: {status}");
}
