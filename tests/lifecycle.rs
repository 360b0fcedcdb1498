//! The real binary: graceful shutdown on SIGTERM/SIGINT, restarts, the
//! operations endpoints, and configuration errors.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ServerProcess, Subscriber, client, h2_client, publish_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A publish whose request arrived before SIGTERM is finished (200) and
/// reaches every stream it counted before the streams end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_publishes_in_flight_then_ends_streams_and_exits_zero() {
    let mut server = ServerProcess::start(&["--shutdown-timeout", "10s"]);
    let mut h1 = Subscriber::open_with(&client(), &server.url("/subscribe/s"), None).await;
    let mut h2 = Subscriber::open_with(&h2_client(), &server.url("/subscribe/s"), None).await;
    common::eventually("both subscribers are registered", || async {
        common::metric(server.addr, "ssegate_subscribers").await == 2.0
    })
    .await;

    // A publish whose body is still on its way when the signal arrives.
    let publisher = publish_in_flight(&server, "/publish/s", b"hello").await;

    shut_down(&server).await;
    let response = finish_publish(publisher, b"world").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""subscribers":2"#), "{response}");

    // Both streams carry it, then end cleanly.
    for (name, stream) in [("HTTP/1.1", &mut h1), ("HTTP/2", &mut h2)] {
        assert_eq!(stream.next().await.data, "helloworld", "{name}");
        assert!(stream.next_or_end().await.is_none(), "{name} stream ends");
    }

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

/// A publish whose body trickles in does not hold the shutdown: the streams
/// end after half of `shutdown_timeout`, and the publish, finished later,
/// is refused rather than acknowledged to streams that never carried it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_stalled_past_half_the_grace_is_refused_and_streams_end_without_it() {
    let mut server = ServerProcess::start(&["--shutdown-timeout", "2s"]);
    let mut subscriber = Subscriber::open_with(&client(), &server.url("/subscribe/s"), None).await;
    let publisher = publish_in_flight(&server, "/publish/s", b"hello").await;

    shut_down(&server).await;
    assert!(
        subscriber.next_or_end().await.is_none(),
        "the stream ends without waiting for the stalled publish"
    );
    assert_refused_for_shutdown(&finish_publish(publisher, b"world").await);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    assert!(
        server
            .log_text()
            .contains("publishes still in flight after half of shutdown_timeout"),
        "{}",
        server.log_text()
    );
}

/// A `POST path` of 10 bytes whose handler is running (it asked for the
/// body: hyper answered `100 Continue`) and which has sent `first` of it.
async fn publish_in_flight(server: &ServerProcess, path: &str, first: &[u8]) -> TcpStream {
    let mut publisher = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    );
    publisher.write_all(head.as_bytes()).await.expect("head");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(common::PATIENCE, publisher.read(&mut buf))
        .await
        .expect("100 Continue in time")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
    publisher.write_all(first).await.expect("first part");
    publisher
}

/// Sends the `rest` of a publish's body and reads the answer, up to the
/// close of the connection (the server's, at the end of the shutdown).
async fn finish_publish(mut publisher: TcpStream, rest: &[u8]) -> String {
    publisher
        .write_all(rest)
        .await
        .expect("the rest of the body");
    let mut response = Vec::new();
    tokio::time::timeout(common::PATIENCE, publisher.read_to_end(&mut response))
        .await
        .expect("the publish is answered")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// The binary with a kept-alive connection that asked `path` (200), then
/// sent SIGTERM and waited until the shutdown began (new connections are
/// refused).
async fn shutting_down_with_a_connection_open(path: &str) -> (ServerProcess, TcpStream) {
    let server = ServerProcess::start(&[]);
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut buf = vec![0u8; 1024];
    let n = socket.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    shut_down(&server).await;
    (server, socket)
}

/// Sends SIGTERM and waits until the shutdown began (new connections are
/// refused).
async fn shut_down(server: &ServerProcess) {
    server.signal(libc::SIGTERM);
    common::eventually("the listener is closed", || async {
        TcpStream::connect(server.addr).await.is_err()
    })
    .await;
}

/// `response` is the refusal of a publish or stream during shutdown.
fn assert_refused_for_shutdown(response: &str) {
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 5"),
        "{response}"
    );
    assert!(
        response.ends_with("shutting down; reconnect elsewhere\n"),
        "{response}"
    );
}

#[tokio::test]
async fn during_shutdown_an_open_connection_sees_readyz_503() {
    let (mut server, mut socket) = shutting_down_with_a_connection_open("/readyz").await;
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = vec![0u8; 1024];
    socket
        .write_all(ask("/readyz").as_bytes())
        .await
        .expect("request");
    let n = socket.read(&mut buf).await.expect("response");
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.ends_with("shutting down\n"), "{response}");
    // An EventSource subscribing there is not given a status it would take
    // as final: a 200 tells it when to come back (elsewhere, by then).
    let event_source = "GET /subscribe/t HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
    socket
        .write_all(event_source.as_bytes())
        .await
        .expect("request");
    let mut response = Vec::new();
    while !String::from_utf8_lossy(&response).contains("shutting down") {
        let n = tokio::time::timeout(common::PATIENCE, socket.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("response");
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("text/event-stream"), "{response}");
    assert!(response.contains("retry: "), "{response}");
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[tokio::test]
async fn during_shutdown_a_subscribe_without_event_source_accept_is_503() {
    let (mut server, mut socket) = shutting_down_with_a_connection_open("/healthz").await;
    let mut buf = vec![0u8; 1024];
    socket
        .write_all(b"GET /subscribe/t HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let n = socket.read(&mut buf).await.expect("response");
    assert_refused_for_shutdown(&String::from_utf8_lossy(&buf[..n]));
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// Every publish acknowledged before SIGTERM reaches the streams it was
/// counted for, even one far behind; a publish after it is refused (a
/// single node's streams are ending, and could not carry it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_stream_behind_gets_every_acknowledged_event_and_later_publishes_are_refused()
{
    const N_EVENTS: usize = 24;
    const EVENT_BYTES: usize = 60 * 1024;
    let mut server = ServerProcess::start(&["--shutdown-timeout", "10s"]);
    // Never read until the shutdown: the events pile up behind it.
    let mut behind = common::small_buffer_subscriber(server.addr, "drain").await;
    common::eventually("the subscriber is registered", || async {
        common::metric(server.addr, "ssegate_subscribers").await == 1.0
    })
    .await;
    let publisher = client();
    let url = server.url("/publish/drain");
    for seq in 0..N_EVENTS {
        let data = format!("{seq}:{}", "x".repeat(EVENT_BYTES));
        let reply = publish_to(&publisher, &url, data).await;
        assert_eq!(reply.subscribers, 1);
    }
    let mut kept = TcpStream::connect(server.addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 1024];
    let n = kept.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    shut_down(&server).await;
    kept.write_all(b"POST /publish/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nlater")
        .await
        .expect("request");
    let n = kept.read(&mut buf).await.expect("response");
    assert_refused_for_shutdown(&String::from_utf8_lossy(&buf[..n]));

    // Now read it all: every event, then the end of the stream.
    let mut received = Vec::new();
    tokio::time::timeout(common::PATIENCE, behind.read_to_end(&mut received))
        .await
        .expect("the stream ends in time")
        .expect("read");
    let text = String::from_utf8_lossy(&received);
    let seqs: Vec<usize> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| data.split_once(':')?.0.parse().ok())
        .collect();
    assert_eq!(seqs, (0..N_EVENTS).collect::<Vec<_>>());
    assert!(!text.contains("later"));
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let mut server = ServerProcess::start(&[]);
    let mut subscriber = Subscriber::open_with(&client(), &server.url("/subscribe/s"), None).await;
    server.signal(libc::SIGINT);
    assert!(subscriber.next_or_end().await.is_none());
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[tokio::test]
async fn after_a_restart_an_old_id_gets_a_gap() {
    let mut first = ServerProcess::start(&[]);
    let old_id = publish_to(&client(), &first.url("/publish/r"), "before")
        .await
        .id;
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0));

    let second = ServerProcess::start(&[]);
    publish_to(&client(), &second.url("/publish/r"), "after").await;
    let mut subscriber =
        Subscriber::open_with(&client(), &second.url("/subscribe/r"), Some(&old_id)).await;
    let gap = subscriber.next().await;
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.data, format!("{{\"last_event_id\":\"{old_id}\"}}"));
    assert_eq!(subscriber.next().await.data, "after");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = ServerProcess::start(&[]);
    let client = client();
    let healthz = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), 200);
    let readyz = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 200);
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text().await.expect("body");
    for (name, kind) in [
        ("ssegate_subscribers", "gauge"),
        ("ssegate_topics", "gauge"),
        ("ssegate_events_published_total", "counter"),
        ("ssegate_events_delivered_total", "counter"),
        ("ssegate_events_replayed_total", "counter"),
        ("ssegate_subscribers_dropped_total", "counter"),
        ("ssegate_publish_duration_seconds", "histogram"),
        ("ssegate_build_info", "gauge"),
        ("ssegate_http_responses_total", "counter"),
        ("ssegate_http_request_duration_seconds", "histogram"),
        ("ssegate_connections_refused_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing"
        );
    }
}

#[tokio::test]
async fn responses_are_counted_and_timed_by_route() {
    let server = ServerProcess::start(&[]);
    let http = client();
    let _stream = Subscriber::open_with(&http, &server.url("/subscribe/routes"), None).await;
    publish_to(&http, &server.url("/publish/routes"), "x").await;
    let missing = http.get(server.url("/nowhere")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"))
    };
    for (route, code) in [("subscribe", "200"), ("publish", "200"), ("other", "404")] {
        let series = format!("ssegate_http_responses_total{{code=\"{code}\",route=\"{route}\"}}");
        assert_eq!(value(&series), 1.0, "{series}");
        let timed = format!("ssegate_http_request_duration_seconds_count{{route=\"{route}\"}}");
        assert_eq!(value(&timed), 1.0, "{timed}");
    }
    let version = format!(
        "ssegate_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&version), 1.0);
}

#[tokio::test]
async fn delivery_counters_add_up() {
    let server = ServerProcess::start(&[]);
    let mut a = Subscriber::open_with(&client(), &server.url("/subscribe/m"), None).await;
    let mut b = Subscriber::open_with(&client(), &server.url("/subscribe/m"), None).await;
    let first = publish_to(&client(), &server.url("/publish/m"), "1").await;
    publish_to(&client(), &server.url("/publish/m"), "2").await;
    a.take(2).await;
    b.take(2).await;
    let mut replaying =
        Subscriber::open_with(&client(), &server.url("/subscribe/m"), Some(&first.id)).await;
    replaying.next().await;
    assert_eq!(
        common::metric(server.addr, "ssegate_events_published_total").await,
        2.0
    );
    assert_eq!(
        common::metric(server.addr, "ssegate_events_delivered_total").await,
        5.0
    );
    assert_eq!(
        common::metric(server.addr, "ssegate_events_replayed_total").await,
        1.0
    );
    assert_eq!(
        common::metric(server.addr, "ssegate_subscribers").await,
        3.0
    );
    assert_eq!(
        common::metric(server.addr, "ssegate_publish_duration_seconds_count").await,
        2.0
    );
}

/// Runs the binary to completion with `args` and `env`.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ssegate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run ssegate");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn configuration_errors_name_the_key_and_exit_78() {
    let dir = std::env::temp_dir().join(format!("ssegate-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "listen = \"127.0.0.1:0\"\nheartbeat = \"5s\"\n").expect("write");
    let unknown = unknown.to_str().expect("utf-8");
    for (args, env, expect) in [
        (vec!["--buffer-ttl", "soon"], vec![], "buffer_ttl"),
        (vec!["--listen", "nowhere:80"], vec![], "listen"),
        (
            vec![],
            vec![("SSEGATE_WRITE_TIMEOUT", "5")],
            "SSEGATE_WRITE_TIMEOUT",
        ),
        (vec!["--config", unknown], vec![], "unknown key `heartbeat`"),
        (
            vec!["--config", "/nonexistent.toml"],
            vec![],
            "/nonexistent.toml",
        ),
    ] {
        let (code, _, stderr) = run_binary(&args, &env);
        assert_eq!(code, Some(78), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(expect), "{stderr:?} lacks {expect:?}");
        assert!(stderr.starts_with("ssegate: "), "{stderr:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    }
    // A malformed command line gets clap's message with usage, and 64
    // (EX_USAGE rather than EX_CONFIG).
    let (code, _, stderr) = run_binary(&["--no-such-flag"], &[]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("--no-such-flag") && stderr.contains("Usage"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_lists_every_key_and_exits_zero() {
    let (code, stdout, _) = run_binary(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in [
        "--listen",
        "--buffer-events",
        "--heartbeat-interval",
        "--cors-allowed-origins",
        "--config",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, stderr) = run_binary(&["--listen", &addr], &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_listener_off_loopback_without_a_publish_token_is_refused() {
    let (code, _, stderr) = run_binary(&["--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("set publish_token") && stderr.contains("allow_anonymous_publish"),
        "{stderr}"
    );
    let documented = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ssegate.toml");
    for args in [
        &["--listen", "0.0.0.0:0", "--publish-token", "s3cret"][..],
        &["--listen", "0.0.0.0:0", "--allow-anonymous-publish"],
    ] {
        let args: Vec<&str> = ["-c", documented, "--check-config"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let (code, stdout, stderr) = run_binary(&args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {stdout} {stderr}");
    }
}

#[test]
fn version_names_the_release() {
    let (code, stdout, _) = run_binary(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("ssegate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_says_ok_or_names_the_bad_key() {
    let documented = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ssegate.toml");
    let (code, stdout, stderr) = run_binary(&["--check-config", documented], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.lines().next(),
        Some(format!("{documented}: ok").as_str())
    );

    let dir = std::env::temp_dir().join(format!("ssegate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (text, expect) in [
        (
            "heartbeat_interval = \"soon\"\n",
            "invalid heartbeat_interval",
        ),
        ("heartbeat = \"5s\"\n", "unknown key `heartbeat`"),
        ("listen = \"nowhere\"\n", "invalid listen"),
        ("log_format = \"xml\"\n", "invalid log_format"),
        (
            "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
            "cannot read tls_cert /nonexistent/cert.pem",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let (code, stdout, stderr) =
            run_binary(&["--check-config", path.to_str().expect("utf-8")], &[]);
        assert_eq!(code, Some(78), "{text}: {stdout} {stderr}");
        assert!(stderr.contains(expect), "{text}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn print_config_prints_the_effective_toml() {
    let (code, stdout, stderr) = run_binary(
        &["--print-config", "--heartbeat-interval", "5s"],
        &[
            ("SSEGATE_MAX_TOPICS", "500"),
            ("SSEGATE_PUBLISH_TOKEN", "hunter2"),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let table: toml::Table = stdout.parse().expect("TOML");
    assert_eq!(table["heartbeat_interval"].as_str(), Some("5s"));
    assert_eq!(table["max_topics"].as_integer(), Some(500));
    assert_eq!(table["buffer_events"].as_integer(), Some(1024));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!table.contains_key("publish_token"));
    let n_keys: usize = table
        .values()
        .map(|value| value.as_table().map_or(1, toml::Table::len))
        .sum();
    assert_eq!(n_keys, ssegate::config::KEYS.len() - 1);
    assert_eq!(table["cluster"]["prefix"].as_str(), Some("ssegate"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssegate"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut started = None;
    for line in lines.by_ref().take(10) {
        let line = line.expect("log line");
        let record: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        assert!(
            record["timestamp"].is_string() && record["level"].is_string(),
            "{line}"
        );
        if record["message"] == "ssegate listening" {
            started = Some(record);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let started = started.expect("a start line");
    assert!(
        started["listen"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{started}"
    );
}

#[test]
fn sighup_without_tls_is_logged_not_fatal() {
    // `systemctl reload` sends SIGHUP; its default action would end the process.
    let mut server = common::ServerProcess::start(&[]);
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !server
        .log_text()
        .contains("no TLS configured; nothing to reload")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let healthz = std::net::TcpStream::connect(server.addr).and_then(|mut socket| {
        use std::io::{Read, Write};
        socket.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
        let mut reply = String::new();
        socket.read_to_string(&mut reply)?;
        Ok(reply)
    });
    assert!(
        healthz
            .as_deref()
            .is_ok_and(|r| r.starts_with("HTTP/1.") && r.contains(" 200 ")),
        "{healthz:?}"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_and_no_token() {
    let server = ServerProcess::start(&["--access-log"]);
    let http = client();
    let mut stream = Subscriber::open_with(
        &http,
        &server.url("/subscribe/logged?access_token=s3cret-token"),
        None,
    )
    .await;
    for n in 0..3 {
        publish_to(&http, &server.url("/publish/logged"), n.to_string()).await;
    }
    stream.take(3).await;
    let missing = http.get(server.url("/nowhere")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    let access_lines = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|line| line.contains("ssegate::access"))
            .map(str::to_owned)
            .collect()
    };
    common::eventually("every request is logged", || async {
        access_lines(&server.log_text()).len() == 5
    })
    .await;
    let log = server.log_text();
    let lines = access_lines(&log);
    assert!(
        lines[0].contains("GET") && lines[0].contains("/subscribe/logged?access_token=[redacted]"),
        "{lines:?}"
    );
    assert!(lines[0].contains("status=200") && lines[0].contains("route=\"subscribe\""));
    assert!(lines[4].contains("/nowhere") && lines[4].contains("status=404"));
    assert!(!log.contains("s3cret-token"), "{log}");

    // Off by default.
    let quiet = ServerProcess::start(&[]);
    publish_to(&http, &quiet.url("/publish/quiet"), "x").await;
    assert!(access_lines(&quiet.log_text()).is_empty());
}
