//! The local three-node cluster of `deploy/local-cluster/`, run for real
//! (`run.sh` on free ports: Redis, three nodes, nginx round-robin): a
//! stream through its nginx survives the death of its node and resumes
//! exactly, and `stop` leaves nothing running. Skips (or fails under
//! `REQUIRE_TEST_TOOLS=1`) without nginx or redis-server.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::PATIENCE;
use common::cluster::{Seen, free_port};
use common::deploy::{check, deploy, have, read, temp_dir};
use futures_util::StreamExt;

/// `deploy/local-cluster/run.sh` on ports and in a directory of the test's
/// own; stops it (and kills whatever outlives that) when dropped.
struct LocalCluster {
    /// Where the script's output goes (the cluster's own directory is
    /// `dir/cluster`).
    dir: PathBuf,
    redis_port: u16,
    node_ports: [u16; 3],
    nginx_port: u16,
    redis_server: PathBuf,
    /// Every process it started: redis, the nodes, nginx's master and
    /// workers.
    pids: Vec<u32>,
    stopped: bool,
    runs: usize,
}

impl LocalCluster {
    fn new(redis_server: PathBuf) -> LocalCluster {
        let mut ports = BTreeSet::new();
        while ports.len() < 5 {
            ports.insert(free_port());
        }
        let ports: Vec<u16> = ports.into_iter().collect();
        let dir = temp_dir("local-cluster");
        LocalCluster {
            dir,
            redis_port: ports[0],
            node_ports: [ports[1], ports[2], ports[3]],
            nginx_port: ports[4],
            redis_server,
            pids: Vec::new(),
            stopped: false,
            runs: 0,
        }
    }

    fn cluster_dir(&self) -> PathBuf {
        self.dir.join("cluster")
    }

    /// Runs `run.sh args` to its end (within a minute): exit status, output.
    fn run(&mut self, args: &[&str]) -> (std::process::ExitStatus, String) {
        self.runs += 1;
        // Into a file, not a pipe: the processes it leaves running must not
        // hold our end open.
        let out_path = self.dir.join(format!("run-{}.out", self.runs));
        let out = std::fs::File::create(&out_path).expect("output file");
        let node_ports = self.node_ports.map(|port| port.to_string()).join(" ");
        let mut child = Command::new("bash")
            .arg(deploy("local-cluster/run.sh"))
            .args(args)
            .env("LOCAL_CLUSTER_DIR", self.cluster_dir())
            .env("LOCAL_CLUSTER_BIN", env!("CARGO_BIN_EXE_ssegate"))
            .env("REDIS_SERVER", &self.redis_server)
            .env("REDIS_PORT", self.redis_port.to_string())
            .env("NODE_PORTS", node_ports)
            .env("NGINX_PORT", self.nginx_port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output file"))
            .stderr(out)
            .spawn()
            .expect("run.sh");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "run.sh {args:?} did not finish within a minute:\n{}",
                    std::fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = std::fs::read_to_string(&out_path).expect("run.sh output");
        (status, output)
    }

    /// Runs `run.sh args`, expecting success.
    fn run_ok(&mut self, args: &[&str]) -> String {
        let (status, output) = self.run(args);
        assert!(status.success(), "run.sh {args:?}: {status}\n{output}");
        output
    }

    /// The pid in `name` (`redis.pid`, `node2.pid`, `nginx.pid`).
    fn pid(&self, name: &str) -> u32 {
        let path = self.cluster_dir().join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .trim()
            .parse()
            .expect("a pid")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.nginx_port)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the processes said, for the failure's report.
            let logs = [
                "redis.log",
                "node1.log",
                "node2.log",
                "node3.log",
                "nginx-error.log",
            ];
            for name in logs {
                let path = self.cluster_dir().join(name);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                eprintln!("--- {} (last lines)\n{}", path.display(), tail.join("\n"));
            }
        }
        if !self.stopped {
            let _ = self.run(&["stop"]);
        }
        for &pid in &self.pids {
            if alive(pid) {
                // SAFETY: kill(2) has no memory-safety concerns.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if !std::thread::panicking() {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    !matches!(state, Some(Some('Z' | 'X')) | None)
}

/// The pids whose parent is `parent` (nginx's workers).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(") ")?.1.to_owned();
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// An SSE stream through nginx, read with an independent parser; a cut
/// connection (the node died) is its end.
struct ProxiedStream {
    /// `X-Ssegate-Node`: the node nginx sent it to.
    node: String,
    events: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<eventsource_stream::Event, String>> + Send>,
    >,
}

impl ProxiedStream {
    async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> ProxiedStream {
        use eventsource_stream::Eventsource;
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("subscribe through nginx");
        assert_eq!(response.status(), 200, "subscribe to {url}");
        let node = response
            .headers()
            .get("x-ssegate-node")
            .expect("nginx names the node")
            .to_str()
            .expect("ASCII")
            // After a refused node, nginx lists every one it tried.
            .rsplit(", ")
            .next()
            .expect("a node")
            .to_owned();
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|event| event.map_err(|err| err.to_string()));
        ProxiedStream {
            node,
            events: Box::pin(events),
        }
    }

    /// The next event, `None` at the end; fails after `PATIENCE`.
    async fn next(&mut self) -> Option<eventsource_stream::Event> {
        let next = tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("an event or the end of the stream in time");
        next.and_then(Result::ok)
    }

    /// Reads `n` events with data (gap events noted too).
    async fn read(&mut self, n: usize) -> Seen {
        let mut seen = Seen::default();
        while seen.events.len() < n {
            match self.next().await {
                Some(event) => seen.push(event),
                None => panic!("the stream ended after {seen:?}"),
            }
        }
        seen
    }

    /// Reads until the stream ends (`true`) or stays quiet for `quiet`.
    async fn read_rest(&mut self, quiet: Duration) -> (Seen, bool) {
        let mut seen = Seen::default();
        loop {
            match tokio::time::timeout(quiet, self.next()).await {
                Err(_) => return (seen, false),
                Ok(None) => return (seen, true),
                Ok(Some(event)) => seen.push(event),
            }
        }
    }
}

#[tokio::test]
async fn local_cluster_resumes_exactly_through_nginx_after_a_node_dies() {
    let script = deploy("local-cluster/run.sh");
    let readme = read("local-cluster/README.md");
    for command in [
        "run.sh start",
        "run.sh stop",
        "run.sh status",
        "run.sh kill",
        "Last-Event-ID",
    ] {
        assert!(readme.contains(command), "the README shows {command}");
    }
    check(Command::new("bash").arg("-n").arg(&script));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script)
            .expect("run.sh")
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "run.sh is executable");
    }
    if !have("nginx", "-v") || !have("curl", "--version") {
        return;
    }
    let Some(redis_server) = common::cluster::redis_server_binary() else {
        return;
    };
    let mut cluster = LocalCluster::new(redis_server);
    let started = cluster.run_ok(&["start"]);
    cluster.pids = [
        "redis.pid",
        "node1.pid",
        "node2.pid",
        "node3.pid",
        "nginx.pid",
    ]
    .iter()
    .map(|name| cluster.pid(name))
    .collect();
    let workers = children(cluster.pid("nginx.pid"));
    assert!(!workers.is_empty(), "nginx has workers");
    cluster.pids.extend(workers);
    let status = cluster.run_ok(&["status"]);
    assert_eq!(status.matches("running").count(), 5, "{started}\n{status}");

    // Subscribe through nginx; it names the node that serves the stream.
    let client = common::client();
    let base = cluster.base();
    let topic_url = format!("{base}/subscribe/orders");
    let mut stream = ProxiedStream::open(&client, &topic_url, None).await;
    let node_addrs: Vec<String> = cluster
        .node_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let serving = node_addrs
        .iter()
        .position(|addr| *addr == stream.node)
        .unwrap_or_else(|| panic!("{} is none of {node_addrs:?}", stream.node));
    let serving_addr: std::net::SocketAddr = stream.node.parse().expect("address");
    assert_eq!(
        common::metric(serving_addr, "ssegate_subscribers").await,
        1.0
    );

    // 20 events published through nginx (round-robin: on every node in
    // turn) arrive once each, in order, with the ids the publishes got.
    let publish_url = format!("{base}/publish/orders");
    let mut published = Vec::new();
    for i in 1..=20 {
        let reply = common::publish_to(&client, &publish_url, format!("event-{i}")).await;
        published.push((reply.id, format!("event-{i}")));
    }
    let seen = stream.read(20).await;
    assert!(seen.gaps.is_empty(), "{seen:?}");
    assert_eq!(seen.events, published);
    let ordered: Vec<_> = published
        .iter()
        .map(|(id, _)| common::cluster::stream_id(id))
        .collect();
    assert!(
        ordered.windows(2).all(|pair| pair[0] < pair[1]),
        "{ordered:?}"
    );

    // The node the stream goes through dies: the stream ends, with nothing
    // more on it.
    let killed = cluster.run_ok(&["kill", &(serving + 1).to_string()]);
    let (after, ended) = stream.read_rest(PATIENCE).await;
    assert!(ended, "the stream outlived its node");
    assert!(
        after.events.is_empty() && after.gaps.is_empty(),
        "{after:?}"
    );
    assert!(!alive(cluster.pids[1 + serving]), "{killed}");

    // 10 more while the client is away, through nginx (which skips the
    // dead node), then a resume through nginx with the last id seen: exactly
    // the missed events, on another node, no gap, no duplicate.
    let mut missed = Vec::new();
    for i in 21..=30 {
        let reply = common::publish_to(&client, &publish_url, format!("event-{i}")).await;
        missed.push((reply.id, format!("event-{i}")));
    }
    let last_seen = &published.last().expect("published").0;
    let mut resumed = ProxiedStream::open(&client, &topic_url, Some(last_seen)).await;
    assert_ne!(
        resumed.node, node_addrs[serving],
        "nginx sent the resume to the dead node"
    );
    let seen = resumed.read(missed.len()).await;
    assert!(seen.gaps.is_empty(), "a gap on resume: {seen:?}");
    assert_eq!(seen.events, missed);
    let (extra, ended) = resumed.read_rest(Duration::from_millis(500)).await;
    assert!(
        !ended && extra.events.is_empty() && extra.gaps.is_empty(),
        "{extra:?}"
    );
    drop(resumed);

    // stop ends every process it started, nginx's workers included, and
    // frees every port.
    cluster.run_ok(&["stop"]);
    cluster.stopped = true;
    let running: Vec<u32> = cluster
        .pids
        .iter()
        .copied()
        .filter(|&pid| alive(pid))
        .collect();
    assert!(running.is_empty(), "still running after stop: {running:?}");
    for port in [cluster.redis_port, cluster.nginx_port]
        .into_iter()
        .chain(cluster.node_ports)
    {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after stop"
        );
    }
    let (status, output) = cluster.run(&["status"]);
    assert_eq!(status.code(), Some(3), "status after stop: {output}");
}
