//! Every example in `examples/` run against a real gateway, so none rots:
//! the curl walk-through, the publish loop, the Node and Python publishers
//! and the Next.js route handler (type-checked, compiled and called). The
//! browser page is exercised by tests/browser/examples.test.mjs.
//!
//! Needs curl, Node.js, Python 3 and `npm ci --prefix examples/nextjs`.
//! Without them each test says so and passes, so `cargo test` works on a
//! fresh machine; `.ci/run` installs them and sets
//! `REQUIRE_TEST_TOOLS=1`, which turns anything missing into a
//! failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Subscriber, TestServer, config};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Whether `program --version` runs; if not, skip (or fail when required).
fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        skip(&format!("{program} is not installed"));
    }
    found
}

fn skip(why: &str) {
    common::prerequisite_missing("example test", why);
}

/// Runs a command to completion off the async runtime; fails the test with
/// its output unless it succeeds.
async fn run(mut command: Command) -> String {
    let shown = format!("{command:?}");
    let output: Output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("spawn");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{shown} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `(event type, data)` of the next `n` events.
async fn next_events(subscriber: &mut Subscriber, n: usize) -> Vec<(String, String)> {
    let events = subscriber.take(n).await;
    events.into_iter().map(|e| (e.event, e.data)).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn curl_walk_through() {
    if !have("curl") || !have("bash") {
        return;
    }
    let server = TestServer::start(config()).await;
    let mut command = Command::new("bash");
    command.arg(examples().join("curl.sh")).arg(server.url(""));
    let out = run(command).await;
    let received = out
        .split("--- the subscriber saw:")
        .nth(1)
        .expect("subscriber section");
    let (live, resumed) = received
        .split_once("--- resumed after")
        .expect("resume section");
    assert!(live.starts_with("\nretry: 3000\n\n"), "{out}");
    let shipped = "event: status\ndata: shipped\n\n";
    let batch = [
        "data: packed\n\n",
        "event: status\ndata: {\"carrier\":\"DHL\"}\n\n",
    ];
    assert!(live.contains(shipped), "{out}");
    // Resumed after the first event: the batch again, not the first event.
    assert!(!resumed.contains(shipped), "{out}");
    for event in batch {
        assert!(live.contains(event), "missing {event:?} live in {out}");
        assert!(
            resumed.contains(event),
            "missing {event:?} resumed in {out}"
        );
    }
}

#[tokio::test]
async fn publish_loop() {
    if !have("curl") || !have("bash") {
        return;
    }
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/demo", None).await;
    let mut command = Command::new("bash");
    command
        .arg(examples().join("publish-loop.sh"))
        .args(["demo", &server.url(""), "2"]);
    run(command).await;
    let events = next_events(&mut subscriber, 2).await;
    for (i, (event_type, data)) in events.iter().enumerate() {
        assert_eq!(event_type, "status");
        assert!(data.starts_with(&format!("order {} at ", i + 1)), "{data}");
    }
}

#[tokio::test]
async fn node_publisher() {
    if !have("node") {
        return;
    }
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/examples/node", None).await;
    let mut command = Command::new("node");
    command
        .arg(examples().join("node/publish.mjs"))
        .arg(server.url(""));
    let out = run(command).await;
    assert_eq!(
        next_events(&mut subscriber, 3).await,
        pairs(&[
            ("status", r#"{"order":42,"status":"shipped"}"#),
            ("message", "line one\nline two"),
            ("status", r#"{"order":43,"status":"packed"}"#),
        ])
    );
    assert!(out.contains("published batch "), "{out}");
}

#[tokio::test]
async fn python_publisher() {
    if !have("python3") {
        return;
    }
    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/examples/python", None).await;
    let mut command = Command::new("python3");
    command
        .arg(examples().join("python/publish.py"))
        .arg(server.url(""));
    let out = run(command).await;
    assert_eq!(
        next_events(&mut subscriber, 3).await,
        pairs(&[
            ("reading", r#"{"sensor": "t1", "celsius": 21.5}"#),
            ("message", "first"),
            ("reading", r#"{"sensor": "t2"}"#),
        ])
    );
    assert!(out.contains("published batch "), "{out}");
}

#[tokio::test]
async fn nextjs_route_handler() {
    let dir = examples().join("nextjs");
    if !have("node") {
        return;
    }
    if !dir.join("node_modules/next").exists() {
        skip("examples/nextjs needs `npm ci --prefix examples/nextjs`");
        return;
    }
    let tsc = dir.join("node_modules/typescript/bin/tsc");
    // Type-checked as Next.js compiles it, then built for Node and called.
    let mut typecheck = Command::new("node");
    typecheck.arg(&tsc).arg("--noEmit").current_dir(&dir);
    run(typecheck).await;
    let mut build = Command::new("node");
    build
        .arg(&tsc)
        .args(["-p", "tsconfig.check.json"])
        .current_dir(&dir);
    run(build).await;

    let server = TestServer::start(config()).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/orders/A-17", None).await;
    let mut call = Command::new("node");
    call.args(["check.mjs", "A-17", "shipped"])
        .current_dir(&dir)
        .env("SSEGATE_URL", server.url(""));
    let out = run(call).await;
    assert!(out.starts_with("200 "), "{out}");
    let event = subscriber.next().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("status", r#"{"id":"A-17","status":"shipped"}"#)
    );
    assert!(
        out.contains(&format!("\"eventId\":\"{}\"", event.id)),
        "{out}"
    );
}
