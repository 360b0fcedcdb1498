//! Every file in `deploy/` checked by the tool its world uses, and against
//! the gateway itself: the Dockerfile by hadolint, the systemd unit by
//! `systemd-analyze verify`, the Kubernetes manifests by their schemas
//! (kubernetes-validate), for the drain timing and the cluster wiring, and
//! the Redis they run by a real `redis-server` started with the manifest's
//! arguments, the nginx snippet by `nginx -t` and by a subscriber streaming
//! through a real nginx, the alert rules by `promtool`, every metric the
//! rules and the dashboard name against a real `/metrics` (a single node's,
//! and a cluster node's for `ssegate_cluster_*`). The local three-node
//! cluster (`deploy/local-cluster/`) is run by `tests/local_cluster.rs`.
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

/// The documents of a Kubernetes manifest (`kubernetes/<file>`).
fn kubernetes_documents(file: &str) -> Vec<serde_json::Value> {
    let text = read(&format!("kubernetes/{file}"));
    serde_norway::Deserializer::from_str(&text)
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

/// Both manifests, as `kubectl apply -f` gets them.
const KUBERNETES_FILES: [&str; 2] = ["kubernetes/redis.yaml", "kubernetes/ssegate.yaml"];

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
    )
    .expect("the ConfigMap's ssegate.toml loads");
    std::fs::remove_dir_all(&dir).ok();
    loaded
}

#[test]
fn kubernetes_manifests_validate_and_drain_in_time() {
    let documents = kubernetes_documents("ssegate.yaml");
    let kind = |kind: &str| of_kind(&documents, "ssegate.yaml", kind);
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
    let loaded = load_configmap_toml(toml, &[]);
    assert_eq!(loaded.config.listen.port(), 8080);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
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
    let redis_documents = kubernetes_documents("redis.yaml");
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
    let overridden = load_configmap_toml(toml, &[("SSEGATE_CLUSTER_REDIS_URL", external)]);
    assert_eq!(
        overridden.config.cluster.redis_url.as_deref(),
        Some(external),
        "SSEGATE_CLUSTER_REDIS_URL overrides the file's cluster.redis_url"
    );

    kubernetes_validate();
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
