//! Every file in `deploy/` checked by the tool its world uses, and against
//! the gateway itself: the Dockerfile by hadolint, and its command line,
//! configuration and health check run with the binary (refused without a
//! publish token, serving with one); the systemd unit by `systemd-analyze
//! verify`, and its `ExecStart` run with and without the token file; the
//! Kubernetes manifests by their schemas (kubernetes-validate), for the
//! drain timing, the cluster wiring, the token, the memory limit and the
//! Ingress's annotations, and the Redis they run by a real `redis-server`
//! started with the manifest's arguments; the nginx snippet by `nginx -t`
//! and by a subscriber streaming through a real nginx (and a publish over
//! IPv6 loopback); the alert rules by `promtool`; every metric the rules and
//! the dashboard name against a real `/metrics` (a single node's, and a
//! cluster node's for `ssegate_cluster_*`). The local three-node cluster
//! (`deploy/local-cluster/`) is run by `tests/local_cluster.rs`.
//!
//! Tools that are missing make a test say SKIPPED and pass, so `cargo test`
//! works on a fresh machine; `.ci/run` installs them and sets
//! `REQUIRE_TEST_TOOLS=1`, which turns a missing tool into a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{Redis, free_port};
use common::deploy::{check, deploy, have, read, repo, temp_dir};
use common::{Subscriber, TestServer, config, publish};

/// How long the gateway takes to stop on SIGTERM at most: its
/// `shutdown_timeout` plus the second of readiness grace.
fn drain() -> Duration {
    ssegate::Config::default().shutdown_timeout + Duration::from_secs(1)
}

/// A publish token for the tests that start the gateway off loopback.
const TOKEN: &str = "a-test-token-0123456789abcdef";

/// The binary started as a deploy file starts it: with `args` and only
/// `env` (and `PATH`), from an empty directory, its log kept.
struct Launched {
    child: std::process::Child,
    port: u16,
}

impl Launched {
    fn start(args: &[String], env: &[(String, String)], port: u16) -> Launched {
        let dir = temp_dir("launched");
        let child = Command::new(env!("CARGO_BIN_EXE_ssegate"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssegate");
        Launched { child, port }
    }

    /// Waits for it to exit by itself: its status and what it logged.
    fn refused(mut self) -> (std::process::ExitStatus, String) {
        let status = common::wait_exit(&mut self.child);
        let mut log = String::new();
        let stderr = self.child.stderr.as_mut().expect("stderr");
        std::io::Read::read_to_string(stderr, &mut log).expect("log");
        (status, log)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn healthy(&mut self) {
        let url = self.url("/healthz");
        let client = common::client();
        common::eventually("the gateway to answer /healthz", || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// The statuses of a publish without and with the token.
    async fn publish_statuses(&self) -> (u16, u16) {
        let client = common::client();
        let url = self.url("/publish/deploy");
        let bare = client.post(&url).body("x").send().await.expect("publish");
        let with_token = client.post(&url).bearer_auth(TOKEN).body("x");
        let with_token = with_token.send().await.expect("publish");
        (bare.status().as_u16(), with_token.status().as_u16())
    }

    /// SIGTERM: it must drain and exit 0 within `patience`.
    fn stop_within(mut self, patience: Duration) {
        let started = std::time::Instant::now();
        let kill = format!("kill -TERM {}", self.child.id());
        check(Command::new("bash").args(["-c", &kill]));
        let status = common::wait_exit(&mut self.child);
        assert!(status.success(), "exit on SIGTERM: {status}");
        assert!(started.elapsed() < patience, "took {:?}", started.elapsed());
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's documented configuration, listening on `listen`.
fn documented_config_listening_on(listen: &str) -> String {
    let documented = std::fs::read_to_string(repo().join("config/ssegate.toml")).expect("config");
    documented
        .lines()
        .map(|line| match line.starts_with("listen = ") {
            true => format!("listen = \"{listen}\""),
            false => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
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
    // Every `docker run` shown (here and in the README) passes the token
    // and gives the drain the time it needs (Docker's default is 10 s).
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let runs: Vec<&str> = dockerfile
        .lines()
        .chain(readme.lines())
        .map(|line| line.trim_start_matches(['#', ' ']))
        .filter(|line| line.starts_with("docker ") && line.contains("docker run "))
        .collect();
    assert!(
        runs.len() >= 2,
        "docker run in the Dockerfile and the README"
    );
    for run in runs {
        assert!(run.contains("-e SSEGATE_PUBLISH_TOKEN"), "{run}");
        let stop = run
            .split_once("--stop-timeout ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|secs| secs.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no --stop-timeout in {run}"));
        assert!(
            Duration::from_secs(stop) > drain(),
            "{run}: drain {:?}",
            drain()
        );
    }
    if have("hadolint", "--version") {
        check(Command::new("hadolint").arg(deploy("Dockerfile")));
    }
}

/// The Dockerfile's instructions after its last `FROM` (the image that
/// runs), continuation lines joined, comments dropped.
fn runtime_instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        match line.trim_end().strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let instructions: Vec<(String, String)> = joined
        .iter()
        .filter_map(|line| line.trim().split_once(' '))
        .map(|(keyword, rest)| (keyword.to_owned(), rest.trim().to_owned()))
        .collect();
    let last_from = instructions.iter().rposition(|(k, _)| k == "FROM");
    instructions[last_from.expect("FROM")..].to_vec()
}

/// A JSON-array instruction's arguments (`ENTRYPOINT`, `CMD`).
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{text}: {err}"))
}

#[tokio::test]
async fn the_image_refuses_to_start_without_a_token_and_serves_with_one() {
    let instructions = runtime_instructions(&read("Dockerfile"));
    let all = |keyword: &str| -> Vec<&String> {
        let found = instructions.iter().filter(move |(k, _)| k == keyword);
        found.map(|(_, rest)| rest).collect()
    };
    // Its configuration, made as the image makes it, on a free port.
    let dir = temp_dir("image");
    let config_path = dir.join("ssegate.toml");
    let config_file = config_path.to_str().expect("utf-8 path");
    let image_config = "/etc/ssegate/ssegate.toml";
    std::fs::copy(repo().join("config/ssegate.toml"), &config_path).expect("copy");
    let port = free_port();
    let localize = |text: &str| {
        text.replace(image_config, config_file)
            .replace("8080", &port.to_string())
    };
    for run in all("RUN")
        .into_iter()
        .filter(|run| run.contains(image_config))
    {
        check(Command::new("sh").arg("-c").arg(localize(run)));
    }
    let config_text = std::fs::read_to_string(&config_path).expect("config");
    assert!(config_text.contains(&format!("listen = \"0.0.0.0:{port}\"")));
    let mut env: Vec<(String, String)> = all("ENV")
        .into_iter()
        .flat_map(|pairs| pairs.split_whitespace())
        .map(|pair| pair.split_once('=').expect("ENV KEY=value"))
        .map(|(key, value)| (key.to_owned(), localize(value)))
        .collect();
    let entrypoint = exec_form(all("ENTRYPOINT").last().expect("ENTRYPOINT"));
    assert_eq!(entrypoint[0], "/usr/local/bin/ssegate");
    let mut args = entrypoint[1..].to_vec();
    args.extend(
        all("CMD")
            .last()
            .map(|cmd| exec_form(cmd))
            .unwrap_or_default(),
    );

    // As `docker run` without the token: refused, in one line saying how.
    let (status, log) = Launched::start(&args, &env, port).refused();
    assert_eq!(status.code(), Some(78), "{log}");
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(log.contains("SSEGATE_PUBLISH_TOKEN"), "{log}");

    // With `-e SSEGATE_PUBLISH_TOKEN`: serves, healthy by its own check,
    // publishes need the token, the status page (topic names) is off.
    env.push(("SSEGATE_PUBLISH_TOKEN".into(), TOKEN.into()));
    let mut gateway = Launched::start(&args, &env, port);
    gateway.healthy().await;
    let healthcheck = all("HEALTHCHECK").last().expect("HEALTHCHECK").to_string();
    let command = exec_form(&localize(healthcheck.split_once("CMD ").expect("CMD").1));
    check(Command::new(&command[0]).args(&command[1..]));
    assert_eq!(gateway.publish_statuses().await, (401, 200));
    let page = common::client().get(gateway.url("/")).send().await;
    assert_eq!(page.expect("status page").status(), 404);
    gateway.stop_within(Duration::from_secs(15));
    std::fs::remove_dir_all(&dir).ok();
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
    let drain = drain();
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

/// The values of `key=` lines in a systemd unit.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    let found = unit.lines().filter_map(|line| line.strip_prefix(&prefix));
    found.collect()
}

#[tokio::test]
async fn systemd_unit_stays_down_on_a_bad_configuration_and_starts_with_its_token() {
    let unit = read("ssegate.service");
    let prevented: Vec<i32> = unit_values(&unit, "RestartPreventExitStatus")
        .iter()
        .flat_map(|value| value.split_whitespace())
        .map(|code| code.parse().expect("an exit status"))
        .collect();
    assert!(prevented.contains(&78), "a bad configuration (78) restarts");
    let env_file = unit_values(&unit, "EnvironmentFile");
    let env_file = env_file.first().expect("EnvironmentFile for the token");
    assert_eq!(env_file.trim_start_matches('-'), "/etc/ssegate/ssegate.env");
    let exec: Vec<&str> = unit_values(&unit, "ExecStart")[0]
        .split_whitespace()
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/ssegate");
    let unit_config = "/etc/ssegate/ssegate.toml";
    assert!(exec.contains(&unit_config), "{exec:?}");

    // The operator's configuration: the documented one, serving the network.
    let dir = temp_dir("systemd-run");
    let config_path = dir.join("ssegate.toml");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    std::fs::write(&config_path, documented_config_listening_on(&listen)).expect("config");
    let args: Vec<String> = exec[1..]
        .iter()
        .map(|arg| arg.replace(unit_config, config_path.to_str().expect("utf-8")))
        .collect();
    let mut env: Vec<(String, String)> = unit_values(&unit, "Environment")
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();

    // Without the token file: a status the unit does not restart on.
    let (status, log) = Launched::start(&args, &env, port).refused();
    let code = status.code().expect("an exit status");
    assert!(prevented.contains(&code), "exit {code} restarts: {log}");

    // With the file as the unit's comment describes it.
    let file = format!("# the publish token\nSSEGATE_PUBLISH_TOKEN={TOKEN}\n");
    env.extend(
        file.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
    );
    let mut gateway = Launched::start(&args, &env, port);
    gateway.healthy().await;
    assert_eq!(gateway.publish_statuses().await, (401, 200));
    let stop: u64 = unit_values(&unit, "TimeoutStopSec")[0]
        .parse()
        .expect("secs");
    gateway.stop_within(Duration::from_secs(stop));
    std::fs::remove_dir_all(&dir).ok();
}

/// The documents of a Kubernetes manifest (`kubernetes/<file>`).
fn kubernetes_documents(file: &str) -> Vec<serde_json::Value> {
    kubernetes_documents_of(&read(&format!("kubernetes/{file}")))
}

fn kubernetes_documents_of(text: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            let value: serde_norway::Value =
                serde::Deserialize::deserialize(document).expect("YAML");
            serde_json::to_value(value).expect("JSON-shaped YAML")
        })
        .collect()
}

/// The one document of `kind` in `documents` (from `file`).
fn of_kind<'a>(
    documents: &'a [serde_json::Value],
    file: &str,
    kind: &str,
) -> &'a serde_json::Value {
    let mut found = documents.iter().filter(|d| d["kind"] == kind);
    let document = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes/{file}"));
    assert!(
        found.next().is_none(),
        "two {kind}s in deploy/kubernetes/{file}"
    );
    document
}

/// The manifests, as `kubectl apply -f` gets them.
const KUBERNETES_FILES: [&str; 3] = [
    "kubernetes/redis.yaml",
    "kubernetes/ssegate.yaml",
    "kubernetes/ingress.yaml",
];

/// kubernetes-validate, strict, for the default (newest) Kubernetes and the
/// oldest the README supports (1.30, for `preStop.sleep`).
fn kubernetes_validate() {
    if !have("kubernetes-validate", "--version") {
        return;
    }
    for version in [None, Some("1.30.0")] {
        let mut command = Command::new("kubernetes-validate");
        command.args(["--strict", "--quiet"]);
        if let Some(version) = version {
            command.args(["--kubernetes-version", version]);
        }
        check(command.args(KUBERNETES_FILES.map(deploy)));
    }
}

/// `(host, port)` of a `redis://` URL.
fn redis_host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").expect("scheme").1;
    let authority = rest.split('/').next().expect("authority");
    let host_port = authority.rsplit('@').next().expect("host");
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "6379"));
    (host.to_owned(), port.parse().expect("port"))
}

/// A Redis memory size (`1gb`, `512mb`, `100000`) in bytes, as Redis reads it.
fn redis_bytes(text: &str) -> u64 {
    let text = text.to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().expect("a number");
    let scale = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1000 * 1000,
        "mb" => 1 << 20,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1 << 30,
        other => panic!("unknown Redis size unit {other:?}"),
    };
    number * scale
}

/// A Kubernetes memory quantity (`2Gi`, `512Mi`, `1G`) in bytes.
fn kubernetes_bytes(text: &str) -> u64 {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().expect("a number");
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        other => panic!("unknown quantity suffix {other:?}"),
    };
    number * scale
}

/// `redis-server` arguments as `--key value` pairs, in order.
fn redis_args(args: &serde_json::Value) -> Vec<(String, String)> {
    let args: Vec<&str> = args
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string args"))
        .collect();
    assert!(args.len().is_multiple_of(2), "--key value pairs: {args:?}");
    args.chunks(2)
        .map(|pair| {
            let key = pair[0]
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{:?} is no --key", pair[0]));
            (key.to_owned(), pair[1].to_owned())
        })
        .collect()
}

/// The value Redis ends up with for `key` (the last one given).
fn redis_arg<'a>(args: &'a [(String, String)], key: &str) -> &'a str {
    args.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("redis-server is not given --{key}"))
}

/// The ConfigMap's `ssegate.toml`, loaded as a pod loads it, with `env`.
fn load_configmap_toml(toml: &str, env: &[(&str, &str)]) -> ssegate::config::Loaded {
    try_load_configmap_toml(toml, env).expect("the ConfigMap's ssegate.toml loads")
}

fn try_load_configmap_toml(
    toml: &str,
    env: &[(&str, &str)],
) -> Result<ssegate::config::Loaded, ssegate::config::ConfigError> {
    let dir = temp_dir("kubernetes");
    let toml_path = dir.join("ssegate.toml");
    std::fs::write(&toml_path, toml).expect("write");
    let loaded = ssegate::config::load(
        [
            "ssegate",
            "--config",
            toml_path.to_str().expect("utf-8 path"),
        ],
        env.iter().copied(),
    );
    std::fs::remove_dir_all(&dir).ok();
    loaded
}

/// The container's environment as the pod gets it, Secret keys resolved
/// from `secrets`; a reference to a missing Secret or key fails the test,
/// as it would keep the pod from starting.
fn pod_env(container: &serde_json::Value, secrets: &[&serde_json::Value]) -> Vec<(String, String)> {
    let vars = container["env"].as_array().expect("env");
    vars.iter()
        .map(|var| {
            let name = var["name"].as_str().expect("name").to_owned();
            if let Some(value) = var["value"].as_str() {
                return (name, value.to_owned());
            }
            let reference = &var["valueFrom"]["secretKeyRef"];
            let key = reference["key"].as_str().expect("secretKeyRef.key");
            let value = secrets
                .iter()
                .find(|secret| secret["metadata"]["name"] == reference["name"])
                .and_then(|secret| secret["stringData"][key].as_str())
                .unwrap_or_else(|| panic!("{name}: no Secret {reference} with {key}"));
            (name, value.to_owned())
        })
        .collect()
}

#[test]
fn kubernetes_manifests_validate_and_drain_in_time() {
    let documents = kubernetes_documents("ssegate.yaml");
    let kind = |kind: &str| of_kind(&documents, "ssegate.yaml", kind);
    for required in [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
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
    // A Service named ssegate would put SSEGATE_SERVICE_HOST and the like
    // into the pods' environment, where ssegate reads (and warns about)
    // SSEGATE_* settings.
    assert_eq!(pod["spec"]["enableServiceLinks"], false);

    // The configuration the pods run is a valid ssegate configuration, and
    // the grace period covers preStop + readiness grace + shutdown_timeout
    // (+ leaving the cluster in Redis, at most 0.5 s).
    let toml = kind("ConfigMap")["data"]["ssegate.toml"]
        .as_str()
        .expect("ssegate.toml in the ConfigMap");
    // The pod's environment from the manifest `text` (and Redis's Secret).
    let redis_documents = kubernetes_documents("redis.yaml");
    let env_from = |text: &str| {
        let documents = kubernetes_documents_of(text);
        let secrets: Vec<&serde_json::Value> = documents
            .iter()
            .chain(&redis_documents)
            .filter(|document| document["kind"] == "Secret")
            .collect();
        pod_env(container, &secrets)
    };
    // As shipped, the token is empty: the pods would refuse to start.
    let manifest = read("kubernetes/ssegate.yaml");
    let shipped = env_from(&manifest);
    let shipped: Vec<(&str, &str)> = shipped
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let refused = try_load_configmap_toml(toml, &shipped).err();
    let refused = refused.expect("with the Secret's empty token the pods would not start");
    assert!(refused.to_string().contains("publish_token"), "{refused}");
    // Applied as the README says, the sed fills the token in.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let apply = r#"sed "s/token: \"\"/token: \"$SSEGATE_PUBLISH_TOKEN\"/" deploy/kubernetes/ssegate.yaml | kubectl apply -f -"#;
    assert!(
        readme.contains(apply),
        "the README applies the manifest with: {apply}"
    );
    let applied = manifest.replacen("token: \"\"", &format!("token: \"{TOKEN}\""), 1);
    let env = env_from(&applied);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let loaded = load_configmap_toml(toml, &env);
    assert_eq!(loaded.config.publish_token.as_deref(), Some(TOKEN));
    assert_eq!(loaded.config.listen.port(), 8080);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    // Secure by default: the pods listen on 0.0.0.0, so they start only
    // with the token of the Secret (never by allowing anonymous publishes),
    // and a missing Secret keeps them from starting.
    assert!(!toml.contains("allow_anonymous_publish"), "{toml}");
    let (token_var, token_ref) = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|var| var["name"] == "SSEGATE_PUBLISH_TOKEN")
        .map(|var| (var, &var["valueFrom"]["secretKeyRef"]))
        .expect("SSEGATE_PUBLISH_TOKEN in the container's env");
    assert!(
        token_ref.is_object(),
        "the token comes from a Secret: {token_var}"
    );
    assert_ne!(token_ref["optional"], true, "{token_var}");
    assert!(loaded.config.publish_token.is_some());
    let without_token: Vec<(&str, &str)> = env
        .iter()
        .filter(|(key, _)| *key != "SSEGATE_PUBLISH_TOKEN")
        .copied()
        .collect();
    let refused = try_load_configmap_toml(toml, &without_token).err();
    let refused = refused.expect("without the token the pods would not start");
    assert!(refused.to_string().contains("publish_token"), "{refused}");

    // Memory: events buffered take at most half the container's limit,
    // and the rest holds max_subscribers connections at about 8 KiB each
    // (ssegate's share and idle kernel socket buffers); else the pod is
    // OOM-killed before ssegate's own 503 refuses a publish.
    let limit = container["resources"]["limits"]["memory"].as_str();
    let limit = kubernetes_bytes(limit.expect("memory limit"));
    let buffered = loaded.config.max_buffered_bytes as u64;
    let connections = loaded.config.max_subscribers as u64 * (8 << 10);
    assert!(
        buffered * 2 <= limit,
        "max_buffered_bytes {buffered} > half of {limit}"
    );
    assert!(
        buffered + connections <= limit,
        "max_buffered_bytes {buffered} + {connections} for connections > {limit}"
    );
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let leave = u64::from(loaded.config.cluster.redis_url.is_some());
    let drain = pre_stop + 1 + loaded.config.shutdown_timeout.as_secs() + leave;
    assert!(
        grace >= drain + 2,
        "terminationGracePeriodSeconds {grace} < drain {drain} + 2"
    );

    // More than one replica is one gateway only in cluster mode: the file
    // names the bundled Redis, and the URL the pods use comes from the
    // Secret (through SSEGATE_CLUSTER_REDIS_URL, which overrides the file).
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas > 1, "the example runs several replicas");
    let file_url = loaded
        .config
        .cluster
        .redis_url
        .clone()
        .expect("replicas > 1 need [cluster] redis_url in the ConfigMap");
    let from_secret = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|var| var["name"] == "SSEGATE_CLUSTER_REDIS_URL")
        .expect("SSEGATE_CLUSTER_REDIS_URL in the container's env");
    let secret_ref = &from_secret["valueFrom"]["secretKeyRef"];
    let secret = of_kind(&redis_documents, "redis.yaml", "Secret");
    assert_eq!(secret_ref["name"], secret["metadata"]["name"]);
    assert_ne!(
        secret_ref["optional"], true,
        "a missing Secret must stop the pods, not fall back to the file's Redis"
    );
    let key = secret_ref["key"].as_str().expect("secretKeyRef.key");
    let secret_url = secret["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the Secret has no stringData.{key}"));
    assert_eq!(
        secret_url, file_url,
        "the bundled Secret and the ConfigMap name the same Redis"
    );
    let external = "rediss://default:p%40ss@redis.example.internal:6380/0";
    let overridden = load_configmap_toml(
        toml,
        &[
            ("SSEGATE_CLUSTER_REDIS_URL", external),
            ("SSEGATE_PUBLISH_TOKEN", TOKEN),
        ],
    );
    assert_eq!(
        overridden.config.cluster.redis_url.as_deref(),
        Some(external),
        "SSEGATE_CLUSTER_REDIS_URL overrides the file's cluster.redis_url"
    );

    kubernetes_validate();
}

#[test]
fn kubernetes_ingress_streams_and_exposes_only_subscribe() {
    let documents = kubernetes_documents("ingress.yaml");
    let ingress = of_kind(&documents, "ingress.yaml", "Ingress");
    let annotations = &ingress["metadata"]["annotations"];
    let annotation = |name: &str| {
        let key = format!("nginx.ingress.kubernetes.io/{name}");
        let value = annotations[key.as_str()].as_str();
        value
            .unwrap_or_else(|| panic!("no {key} annotation"))
            .to_owned()
    };
    assert_eq!(annotation("proxy-buffering"), "off");
    assert_eq!(annotation("proxy-http-version"), "1.1");
    let heartbeat = ssegate::Config::default().heartbeat_interval;
    for timeout in ["proxy-read-timeout", "proxy-send-timeout"] {
        let secs: u64 = annotation(timeout).parse().expect("seconds");
        assert!(
            Duration::from_secs(secs) > heartbeat,
            "{timeout} {secs}s must exceed heartbeat_interval {heartbeat:?}"
        );
    }
    // Browsers reach the Service of ssegate.yaml, and only /subscribe:
    // publishing and metrics stay inside the cluster.
    let ssegate_documents = kubernetes_documents("ssegate.yaml");
    let service = of_kind(&ssegate_documents, "ssegate.yaml", "Service");
    let ports = service["spec"]["ports"].as_array().expect("ports");
    let rules = ingress["spec"]["rules"].as_array().expect("rules");
    let paths: Vec<&serde_json::Value> = rules
        .iter()
        .flat_map(|rule| rule["http"]["paths"].as_array().expect("paths"))
        .collect();
    assert!(!paths.is_empty());
    for path in paths {
        let prefix = path["path"].as_str().expect("path");
        assert!(prefix.starts_with("/subscribe"), "{prefix} is exposed");
        let backend = &path["backend"]["service"];
        assert_eq!(backend["name"], service["metadata"]["name"]);
        let port = &backend["port"];
        assert!(
            ports
                .iter()
                .any(|p| p["name"] == port["name"] || p["port"] == port["number"]),
            "{port} is no port of the Service"
        );
    }
    // TLS, so browsers get HTTP/2 and share one connection.
    assert!(ingress["spec"]["tls"][0]["secretName"].is_string());
}

/// The ssegate pod's and container's `securityContext` settings that the
/// Redis pod must match (user and group ids aside: each image has its own).
fn security_settings(context: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    context
        .as_object()
        .expect("securityContext")
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "runAsUser" | "runAsGroup" | "fsGroup"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[tokio::test]
async fn kubernetes_redis_is_persistent_noeviction_hardened_and_reachable() {
    let documents = kubernetes_documents("redis.yaml");
    let kind = |kind: &str| of_kind(&documents, "redis.yaml", kind);
    for required in ["Secret", "Service", "StatefulSet", "NetworkPolicy"] {
        kind(required);
    }
    let statefulset = kind("StatefulSet");
    let service = kind("Service");
    let spec = &statefulset["spec"];
    assert_eq!(spec["replicas"], 1, "one Redis: the single source of truth");
    // Headless, and the StatefulSet's governing Service.
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(spec["serviceName"], service["metadata"]["name"]);
    let pod = &spec["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(spec["selector"]["matchLabels"], service["spec"]["selector"]);
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[key], value, "the Service selects the Redis pod");
    }
    let container = &pod["spec"]["containers"][0];
    let port = &container["ports"][0];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    let service_port = service["spec"]["ports"][0]["port"].as_u64().expect("port");

    // Persistent and never evicting, within its memory limit.
    let args = redis_args(&container["args"]);
    assert_eq!(container["command"][0], "redis-server");
    assert_eq!(redis_arg(&args, "appendonly"), "yes");
    assert!(
        ["everysec", "always"].contains(&redis_arg(&args, "appendfsync")),
        "appendfsync everysec or always"
    );
    assert_eq!(redis_arg(&args, "maxmemory-policy"), "noeviction");
    assert_eq!(redis_arg(&args, "port"), port["containerPort"].to_string());
    let maxmemory = redis_bytes(redis_arg(&args, "maxmemory"));
    let resources = &container["resources"];
    let limit = kubernetes_bytes(
        resources["limits"]["memory"]
            .as_str()
            .expect("memory limit"),
    );
    assert!(
        resources["requests"]["memory"].is_string() && resources["requests"]["cpu"].is_string()
    );
    assert!(
        maxmemory > 0 && maxmemory * 3 <= limit * 2,
        "maxmemory {maxmemory} leaves no room (a third) for an AOF rewrite's fork under the limit {limit}"
    );
    // The data directory is the claimed volume.
    let claim = &spec["volumeClaimTemplates"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|mount| mount["name"] == claim["metadata"]["name"])
        .expect("the PersistentVolumeClaim is mounted");
    assert_eq!(mount["mountPath"], redis_arg(&args, "dir"));
    assert!(claim["spec"]["resources"]["requests"]["storage"].is_string());

    // Probes ask redis-cli, and check the reply (redis-cli exits 0 on errors).
    let probe = |name: &str| -> String {
        let command = container[name]["exec"]["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an exec probe"));
        assert_eq!(command[..2], ["sh", "-c"], "{name}");
        let script = command[2].as_str().expect("script").to_owned();
        assert!(
            script.contains("redis-cli") && script.contains("ping"),
            "{name}: {script}"
        );
        assert!(script.contains("grep"), "{name} checks the reply: {script}");
        script
    };
    let probes = [probe("readinessProbe"), probe("livenessProbe")];

    // As hardened as the ssegate pod: every securityContext setting of
    // ssegate's pod and container holds for Redis's too.
    let ssegate_documents = kubernetes_documents("ssegate.yaml");
    let ssegate_pod =
        &of_kind(&ssegate_documents, "ssegate.yaml", "Deployment")["spec"]["template"];
    let ssegate_container = &ssegate_pod["spec"]["containers"][0];
    for (ours, theirs) in [
        (
            &pod["spec"]["securityContext"],
            &ssegate_pod["spec"]["securityContext"],
        ),
        (
            &container["securityContext"],
            &ssegate_container["securityContext"],
        ),
    ] {
        let ours = security_settings(ours);
        for (key, value) in security_settings(theirs) {
            assert_eq!(
                ours.get(&key),
                Some(&value),
                "Redis's securityContext.{key}"
            );
        }
    }
    assert!(pod["spec"]["securityContext"]["runAsUser"].as_u64() > Some(0));
    for key in ["automountServiceAccountToken", "enableServiceLinks"] {
        if ssegate_pod["spec"][key] == false {
            assert_eq!(pod["spec"][key], false, "{key}");
        }
    }

    // The Secret's URL is this Service; only ssegate pods may connect.
    let url = kind("Secret")["stringData"]["url"].as_str().expect("url");
    let (host, url_port) = redis_host_port(url);
    let service_name = service["metadata"]["name"].as_str().expect("name");
    let sts_name = statefulset["metadata"]["name"].as_str().expect("name");
    assert!(
        host == service_name || host == format!("{sts_name}-0.{service_name}"),
        "{url} is not the Service {service_name}"
    );
    assert_eq!(u64::from(url_port), service_port);
    let policy = &kind("NetworkPolicy")["spec"];
    assert_eq!(
        policy["podSelector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    let allowed = &policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"];
    let ssegate_labels = &ssegate_pod["metadata"]["labels"];
    for (key, value) in allowed.as_object().expect("from podSelector") {
        assert_eq!(
            &ssegate_labels[key], value,
            "the NetworkPolicy admits ssegate pods"
        );
    }
    assert_eq!(policy["ingress"][0]["ports"][0]["port"], port["name"]);
    // (Its schemas are checked with ssegate.yaml's, in
    // kubernetes_manifests_validate_and_drain_in_time.)

    // A real redis-server with the manifest's arguments (on a port and in a
    // directory of the test's own): it takes them, the probes pass against
    // it, and an ssegate node with the ConfigMap's configuration joins it.
    if !have("redis-cli", "--version") {
        return;
    }
    let own: Vec<String> = args
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "port" | "dir"))
        .flat_map(|(key, value)| [format!("--{key}"), value.clone()])
        .collect();
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let Some(redis) = Redis::start_with(&own) else {
        return;
    };
    let config = |key: &str| -> String {
        match redis.cmd(&["CONFIG", "GET", key]) {
            redis::Value::Array(pair) => match &pair[1] {
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => panic!("CONFIG GET {key}: {other:?}"),
            },
            other => panic!("CONFIG GET {key}: {other:?}"),
        }
    };
    assert_eq!(config("appendonly"), "yes");
    assert_eq!(config("maxmemory-policy"), "noeviction");
    assert_eq!(config("maxmemory"), maxmemory.to_string());
    for script in &probes {
        let script = script.replace("6379", &redis.port.to_string());
        check(Command::new("sh").arg("-c").arg(&script));
    }
    // ...and the probes fail when Redis does not answer.
    let nobody = free_port();
    for script in &probes {
        let script = script.replace("6379", &nobody.to_string());
        let status = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sh");
        assert!(!status.success(), "{script} passes with no Redis");
    }

    let ssegate_toml =
        of_kind(&ssegate_documents, "ssegate.yaml", "ConfigMap")["data"]["ssegate.toml"]
            .as_str()
            .expect("ssegate.toml");
    let dir = temp_dir("kubernetes-node");
    let toml_path = dir.join("ssegate.toml");
    std::fs::write(&toml_path, ssegate_toml).expect("write");
    let node = common::cluster::node(
        &redis.url(),
        &["--config", toml_path.to_str().expect("utf-8 path")],
    );
    let published = common::cluster::publish_ok(&node, "k8s", "hello").await;
    let log = node.log_text();
    assert!(log.contains("cluster mode: joined"), "{log}");
    assert!(!log.contains("WARN"), "the node warns: {log}");
    common::cluster::stream_id(&published);
    drop(node);
    std::fs::remove_dir_all(&dir).ok();
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

/// The metric families a gateway at `base` exposes.
async fn exposed_metrics(base: &str) -> BTreeSet<String> {
    let exposition = common::client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
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
    // Cluster mode is watched: alerts on Redis being away and on the tail's
    // lag, epoch changes and resyncs; panels for those and publish errors.
    let (rule_names, dashboard_names) = (metric_names(&rules), metric_names(&dashboard));
    for name in [
        "ssegate_cluster_engine_up",
        "ssegate_cluster_tail_lag_seconds",
        "ssegate_cluster_epoch_changes_total",
        "ssegate_cluster_resyncs_total",
    ] {
        assert!(rule_names.contains(name), "no alert on {name}");
    }
    for name in [
        "ssegate_cluster_engine_up",
        "ssegate_cluster_tail_lag_seconds",
        "ssegate_cluster_resyncs_total",
        "ssegate_cluster_publish_errors_total",
    ] {
        assert!(dashboard_names.contains(name), "no panel shows {name}");
    }
    let (cluster_only, everywhere): (BTreeSet<String>, BTreeSet<String>) = referenced
        .iter()
        .cloned()
        .partition(|name| name.starts_with("ssegate_cluster_"));

    // A single node has every other metric, and no cluster one.
    let server = TestServer::start(config()).await;
    let exposed = exposed_metrics(&server.url("")).await;
    let missing: Vec<&String> = everywhere.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "referenced but not in /metrics: {missing:?}"
    );
    // And the other way round: an operator finds every metric on a panel.
    let unshown: Vec<&String> = exposed
        .iter()
        .filter(|name| name.starts_with("ssegate_") && !dashboard_names.contains(*name))
        .collect();
    assert!(unshown.is_empty(), "no panel shows {unshown:?}");
    assert!(
        !exposed
            .iter()
            .any(|name| name.starts_with("ssegate_cluster_")),
        "a single node shows cluster metrics: {exposed:?}"
    );

    // A cluster node (with a Redis of its own) has all of them, from the
    // start.
    let Some(redis) = Redis::start() else {
        return;
    };
    let node = common::cluster::node(&redis.url(), &[]);
    let exposed = exposed_metrics(&node.url("")).await;
    let missing: Vec<&String> = cluster_only
        .iter()
        .chain(&everywhere)
        .filter(|name| !exposed.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced but not in a cluster node's /metrics: {missing:?}"
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
    for directive in [
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        // Loopback and the private networks, IPv6 too, may publish.
        "allow ::1;",
        "allow fc00::/7;",
    ] {
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
    // IPv6 loopback too, where the machine has it: a backend there may
    // publish through nginx.
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let ipv6_listen = match ipv6 {
        true => format!("listen [::1]:{port} ssl http2;\n    "),
        false => {
            eprintln!("no IPv6 loopback here: the publish over ::1 is not tried");
            String::new()
        }
    };
    let tls_listen = format!(
        "listen 127.0.0.1:{port} ssl http2;\n    {ipv6_listen}ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;"
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
    if ipv6 {
        let from_ipv6 = common::tls_client(
            &cert_pem,
            &[b"h2", b"http/1.1"],
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        );
        let reply = from_ipv6
            .post(format!("{proxied}/publish/news"))
            .body("over ::1")
            .send()
            .await
            .expect("publish through nginx over ::1");
        assert_eq!(reply.status(), 200, "nginx lets ::1 publish");
        assert_eq!(subscriber.next().await.data, "over ::1");
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
