//! Every example in `examples/` run against a real gateway, so none rots:
//! the curl walk-through, the publish loop, the Node and Python publishers,
//! the Next.js route handler (type-checked, compiled and called), and the
//! Next.js app's two authorization routes under `next start` (ssegate asks
//! its authorize route; its token route mints tokens ssegate accepts). The
//! browser page is exercised by tests/browser/examples.test.mjs.
//!
//! Needs curl, Node.js, Python 3, `npm ci --prefix examples/nextjs` and,
//! for `next start`, `npm run build --prefix examples/nextjs`.
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

/// `next start` on the example's `next build` output, killed with the test.
struct NextApp {
    child: std::process::Child,
    base: String,
}

impl Drop for NextApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SESSION_SECRET: &str = "example-session-secret-at-least-32-characters";
const JWT_SECRET: &str = "example-ssegate-jwt-secret-at-least-32-characters";

/// Starts the built example app, or skips when `next build` has not run.
async fn start_next_app() -> Option<NextApp> {
    let dir = examples().join("nextjs");
    if !have("node") {
        return None;
    }
    if !dir.join(".next/BUILD_ID").exists() {
        skip("examples/nextjs needs `npm ci` and `npm run build` (next build) in examples/nextjs");
        return None;
    }
    let port = common::cluster::free_port();
    let child = Command::new("node")
        .args([
            "node_modules/next/dist/bin/next",
            "start",
            "-H",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .current_dir(&dir)
        .env("SESSION_SECRET", SESSION_SECRET)
        .env("SSEGATE_JWT_SECRET", JWT_SECRET)
        .env("NEXT_TELEMETRY_DISABLED", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn next start");
    let app = NextApp {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let probe = format!("{}/api/ssegate/authorize?topic=users/1/x", app.base);
    common::eventually("next start answers", || {
        let probe = probe.clone();
        async move {
            matches!(common::client().get(&probe).send().await, Ok(r) if r.status() == 401)
        }
    })
    .await;
    Some(app)
}

/// Signs in as `user` through the app's demo login route: the session cookie.
async fn sign_in(app: &NextApp, user: &str) -> String {
    let response = common::client()
        .post(format!("{}/api/login", app.base))
        .header("content-type", "application/json")
        .body(format!(r#"{{"user":"{user}"}}"#))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .expect("ascii");
    set_cookie.split(';').next().expect("name=value").to_owned()
}

async fn subscribe_status(url: &str, cookie: Option<&str>) -> u16 {
    let mut request = common::client().get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("subscribe").status().as_u16()
}

#[tokio::test]
async fn nextjs_authorize_route_answers_ssegates_forward_requests() {
    let Some(app) = start_next_app().await else {
        return;
    };
    let mut config = config();
    config.auth.subscribe_auth = ssegate::config::SubscribeAuth::Forward;
    config.auth.subscribe_auth_url = Some(format!("{}/api/ssegate/authorize", app.base));
    let server = TestServer::start(config).await;
    let cookie = sign_in(&app, "42").await;
    let own = server.url("/subscribe/users/42/notifications");
    let request = common::client().get(&own).header("cookie", &cookie);
    let mut subscriber = Subscriber::from_request(request).await;
    let published = common::publish(&server, "users/42/notifications", "for 42").await;
    let event = subscriber.next().await;
    assert_eq!((event.id, event.data.as_str()), (published.id, "for 42"));
    let others = server.url("/subscribe/users/43/notifications");
    assert_eq!(subscribe_status(&others, Some(&cookie)).await, 403);
    assert_eq!(subscribe_status(&own, None).await, 401);
    let both = server.url("/subscribe?topic=users/42/a&topic=users/43/b");
    assert_eq!(subscribe_status(&both, Some(&cookie)).await, 403);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn nextjs_token_route_mints_tokens_ssegate_accepts() {
    let Some(app) = start_next_app().await else {
        return;
    };
    let secret_file =
        std::env::temp_dir().join(format!("ssegate-example-jwt-{}.secret", std::process::id()));
    std::fs::write(&secret_file, JWT_SECRET).expect("secret file");
    let mut config = config();
    config.auth.subscribe_auth = ssegate::config::SubscribeAuth::Jwt;
    config.auth.jwt_algorithms = vec!["HS256".into()];
    config.auth.jwt_secret_file = Some(secret_file);
    let server = TestServer::start(config).await;
    let cookie = sign_in(&app, "42").await;
    let minted: serde_json::Value = serde_json::from_str(
        &common::client()
            .get(format!("{}/api/ssegate/token", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("token")
            .text()
            .await
            .expect("body"),
    )
    .expect("JSON");
    let token = minted["token"].as_str().expect("a token");
    assert!(minted["expiresAt"].as_u64().is_some(), "{minted}");
    let own = server.url(&format!(
        "/subscribe/users/42/notifications?access_token={token}"
    ));
    assert_eq!(subscribe_status(&own, None).await, 200);
    let others = server.url(&format!(
        "/subscribe/users/43/notifications?access_token={token}"
    ));
    assert_eq!(subscribe_status(&others, None).await, 403);
    let signed_out = common::client()
        .get(format!("{}/api/ssegate/token", app.base))
        .send()
        .await
        .expect("token");
    assert_eq!(signed_out.status(), 401);
    server.shutdown().await.expect("clean shutdown");
}
