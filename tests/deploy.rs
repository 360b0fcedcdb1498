//! Every file in `deploy/` checked by the tool its world uses, and against
//! the gateway itself: the Dockerfile by hadolint, the systemd unit by
//! `systemd-analyze verify`, the Kubernetes manifests by their schemas
//! (kubernetes-validate) and for the drain timing, the nginx snippet by
//! `nginx -t` and by a subscriber streaming through a real nginx, the alert
//! rules by `promtool`, and every metric the rules and the dashboard name
//! against a real `/metrics`.
//!
//! Tools that are missing make a test say SKIPPED and pass, so `cargo test`
//! works on a fresh machine; `.ci/run` installs them and sets
//! `REQUIRE_TEST_TOOLS=1`, which turns a missing tool into a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Subscriber, TestServer, config, publish};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|err| panic!("deploy/{file}: {err}"))
}

/// Whether `program` runs; if not, says SKIPPED (or fails when required).
fn have(program: &str, version_arg: &str) -> bool {
    let found = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        common::prerequisite_missing("deploy check", &format!("{program} is not installed"));
    }
    found
}

/// Runs a checker; fails with everything it printed unless it succeeds.
fn check(command: &mut Command) -> (String, String) {
    let output = command.output().expect("run checker");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssegate-deploy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn dockerfile_passes_hadolint_and_runs_unprivileged_with_a_healthcheck() {
    let dockerfile = read("Dockerfile");
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "two stages");
    assert!(dockerfile.contains("\nUSER 10001"), "non-root user");
    assert!(dockerfile.contains("\nHEALTHCHECK "), "healthcheck");
    assert!(dockerfile.contains("/healthz"), "healthcheck asks /healthz");
    // The image rewrites the documented file's one `listen` line.
    let documented = std::fs::read_to_string(repo().join("config/ssegate.toml")).expect("config");
    assert_eq!(
        documented
            .lines()
            .filter(|l| l.starts_with("listen = "))
            .count(),
        1,
        "the Dockerfile's sed expects one listen line"
    );
    let sets_listen = dockerfile
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .any(|line| line.contains("SSEGATE_LISTEN"));
    assert!(
        !sets_listen,
        "SSEGATE_LISTEN would override a mounted config's listen"
    );
    if have("hadolint", "--version") {
        check(Command::new("hadolint").arg(deploy("Dockerfile")));
    }
}

#[test]
fn systemd_unit_verifies() {
    let unit = read("ssegate.service");
    assert!(unit.contains("\nLimitNOFILE="), "LimitNOFILE");
    assert!(
        unit.contains("\nExecReload=/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
    let stop = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .and_then(|secs| secs.parse::<u64>().ok())
        .expect("TimeoutStopSec in seconds");
    let drain = ssegate::Config::default().shutdown_timeout + Duration::from_secs(1);
    assert!(
        Duration::from_secs(stop) > drain,
        "TimeoutStopSec {stop}s <= drain {drain:?}"
    );
    if !have("systemd-analyze", "--version") {
        return;
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = temp_dir("systemd");
    let path = dir.join("ssegate.service");
    let unit = unit.replace("/usr/local/bin/ssegate", env!("CARGO_BIN_EXE_ssegate"));
    std::fs::write(&path, unit).expect("write unit");
    let (stdout, stderr) = check(Command::new("systemd-analyze").arg("verify").arg(&path));
    std::fs::remove_dir_all(&dir).ok();
    // It reports bad lines as warnings and still exits 0.
    let complaints: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| line.contains("ssegate.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze: {complaints:?}");
}

/// The documents of the Kubernetes manifest, by kind.
fn kubernetes_documents() -> Vec<serde_json::Value> {
    let text = read("kubernetes/ssegate.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let value: serde_norway::Value =
                serde::Deserialize::deserialize(document).expect("YAML");
            serde_json::to_value(value).expect("JSON-shaped YAML")
        })
        .collect()
}

#[test]
fn kubernetes_manifests_validate_and_drain_in_time() {
    let documents = kubernetes_documents();
    let kind = |kind: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes/ssegate.yaml"))
    };
    for required in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
        kind(required);
    }
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(annotations["prometheus.io/port"], "8080");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    // The configuration the pods run is a valid ssegate configuration, and
    // the grace period covers preStop + readiness grace + shutdown_timeout.
    let dir = temp_dir("kubernetes");
    let toml_path = dir.join("ssegate.toml");
    let toml = kind("ConfigMap")["data"]["ssegate.toml"]
        .as_str()
        .expect("ssegate.toml in the ConfigMap");
    std::fs::write(&toml_path, toml).expect("write");
    let loaded = ssegate::config::load(
        [
            "ssegate",
            "--config",
            toml_path.to_str().expect("utf-8 path"),
        ],
        Vec::<(String, String)>::new(),
    )
    .expect("the ConfigMap's ssegate.toml loads");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(loaded.config.listen.port(), 8080);
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let drain = pre_stop + 1 + loaded.config.shutdown_timeout.as_secs();
    assert!(
        grace >= drain + 2,
        "terminationGracePeriodSeconds {grace} < drain {drain} + 2"
    );

    if have("kubernetes-validate", "--version") {
        check(
            Command::new("kubernetes-validate")
                .args(["--strict", "--quiet"])
                .arg(deploy("kubernetes/ssegate.yaml")),
        );
    }
}

#[test]
fn prometheus_rules_check_and_pass_their_unit_tests() {
    if !have("promtool", "--version") {
        return;
    }
    check(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(deploy("prometheus/ssegate-rules.yml")),
    );
    check(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(deploy("prometheus/ssegate-rules.test.yml")),
    );
}

/// Every `ssegate_*` and `process_*` name in `text`, histogram suffixes
/// folded into their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("ssegate_") || rest.starts_with("process_"))
            && (i == 0 || !is_name(bytes[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let len = rest.bytes().take_while(|&b| is_name(b)).count();
        let name = &rest[..len];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        i += len;
    }
    names
}

#[tokio::test]
async fn every_metric_in_the_rules_and_the_dashboard_exists() {
    let rules = read("prometheus/ssegate-rules.yml");
    let dashboard = read("grafana/ssegate-dashboard.json");
    let panels: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(panels["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let referenced: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .chain(metric_names(&dashboard))
        .collect();
    assert!(referenced.len() >= 10, "{referenced:?}");

    let server = TestServer::start(config()).await;
    let exposition = common::client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    let exposed: BTreeSet<String> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = referenced.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "referenced but not in /metrics: {missing:?}"
    );
}

/// nginx with the snippet included, its paths all under `dir`.
fn nginx_config(dir: &Path, snippet: &str) -> PathBuf {
    std::fs::write(dir.join("ssegate.conf"), snippet).expect("snippet");
    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {d}/ssegate.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main).expect("nginx.conf");
    path
}

/// Kills nginx when the test ends, however it ends.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn nginx_snippet_with_tls_is_valid_and_streams_without_buffering() {
    let snippet = read("nginx/ssegate.conf");
    for directive in ["proxy_buffering off;", "proxy_http_version 1.1;"] {
        assert!(snippet.contains(directive), "snippet lacks {directive}");
    }
    let read_timeout = snippet
        .lines()
        .find_map(|line| line.trim().strip_prefix("proxy_read_timeout "))
        .and_then(|value| value.trim_end_matches(';').strip_suffix('s'))
        .and_then(|secs| secs.parse::<u64>().ok())
        .expect("proxy_read_timeout in seconds");
    let heartbeat = ssegate::Config::default().heartbeat_interval;
    assert!(
        Duration::from_secs(read_timeout) > heartbeat,
        "proxy_read_timeout {read_timeout}s must exceed heartbeat_interval {heartbeat:?}"
    );
    if !have("nginx", "-v") {
        return;
    }
    let dir = temp_dir("nginx");
    let server = TestServer::start(config()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("free port")
        .port();
    // As the README says to deploy it: TLS and HTTP/2 at nginx, the
    // snippet's locations unchanged.
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert_pem = generated.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).expect("key");
    let d = dir.display();
    let tls_listen = format!(
        "listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;"
    );
    let snippet = snippet
        .replace(
            "server 127.0.0.1:8080;",
            &format!("server {};", server.addr),
        )
        .replace("listen 80;", &tls_listen);
    let conf = nginx_config(&dir, &snippet);
    check(
        Command::new("nginx")
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir),
    );

    let _nginx = Nginx(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let proxied = format!("https://localhost:{port}");
    let client = common::tls_client(
        &cert_pem,
        &[b"h2", b"http/1.1"],
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    );
    common::eventually("nginx to answer", || async {
        client
            .get(format!("{proxied}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let mut subscriber =
        Subscriber::open_with(&client, &format!("{proxied}/subscribe/news"), None).await;
    assert_eq!(
        subscriber.version,
        reqwest::Version::HTTP_2,
        "browsers get HTTP/2 from nginx"
    );
    // Each event comes through on its own. (ssegate's X-Accel-Buffering: no
    // already switches nginx's buffering off; `proxy_buffering off` above is
    // for proxies that ignore it, and is checked as text.)
    for body in ["one", "two", "three"] {
        let published = publish(&server, "news", body).await;
        let event = subscriber.next().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (published.id.as_str(), body)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names(
        "histogram_quantile(0.99, rate(ssegate_publish_duration_seconds_bucket[5m])) \
         / ssegate_max_subscribers + rate(process_cpu_seconds_total[1m]) + my_ssegate_x",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "process_cpu_seconds_total",
            "ssegate_max_subscribers",
            "ssegate_publish_duration_seconds"
        ]
    );
}
