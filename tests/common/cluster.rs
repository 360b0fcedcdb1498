//! Cluster-mode harness: a real `redis-server` per test on a free port (the
//! machine's own Redis service is never touched), ssegate nodes as real
//! processes (so `kill -9` and `SIGSTOP` work), a TCP proxy a test can
//! stall, and a client that resumes like `EventSource`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eventsource_stream::Event;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::{PATIENCE, ServerProcess, Subscriber, client, prerequisite_missing};

/// The `redis-server` binary: `TEST_REDIS_SERVER`, else the one on `PATH`.
/// `None` (with the skip notice, or a failure under `REQUIRE_TEST_TOOLS=1`)
/// when there is none.
pub fn redis_server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TEST_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        prerequisite_missing(
            "cluster test",
            "redis-server is not installed (apt-get install -y redis-server)",
        );
    }
    found
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A `redis-server` of the test's own, in a directory of its own.
pub struct Redis {
    binary: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// A Redis without persistence, or `None` when there is no
    /// `redis-server` (the test returns: it was skipped).
    pub fn start() -> Option<Redis> {
        Redis::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A Redis with `args` (persistence settings, say).
    pub fn start_with(args: &[&str]) -> Option<Redis> {
        let binary = redis_server_binary()?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ssegate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Redis {
            binary,
            child: None,
            port,
            dir,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        };
        redis.spawn();
        Some(redis)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.display().to_string()])
            .args(["--maxmemory-policy", "noeviction"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.try_cmd(&["PING"]).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `kill -9`: no save, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (an AOF or RDB there
    /// is loaded).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill");
    }

    /// Runs a command; panics on an error.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args)
            .unwrap_or_else(|err| panic!("redis {args:?}: {err}"))
    }

    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut conn)
    }

    /// A command's reply as text (`None` for other replies).
    pub fn string(&self, args: &[&str]) -> Option<String> {
        match self.cmd(args) {
            redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            redis::Value::SimpleString(text) => Some(text),
            redis::Value::Okay => Some("OK".into()),
            _ => None,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node of a cluster on `redis_url`, with `args` after the cluster URL.
pub fn node(redis_url: &str, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--cluster-redis-url", redis_url];
    all.extend_from_slice(args);
    ServerProcess::start(&all)
}

/// Runs the binary expecting it to refuse to start: its exit status and
/// everything it wrote to stderr.
pub fn refused_start(redis_url: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssegate"))
        .args(["--listen", "127.0.0.1:0", "--cluster-redis-url", redis_url])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssegate");
    let status = super::wait_exit(&mut child);
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

/// A cluster id's stream id, `(ms, seq)`, for ordering; panics on anything
/// else.
pub fn stream_id(id: &str) -> (u64, u64) {
    let mut parts = id.splitn(3, '-');
    let (_epoch, ms, seq) = (parts.next(), parts.next(), parts.next());
    let parse = |part: Option<&str>| {
        part.and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a cluster id: {id:?}"))
    };
    (parse(ms), parse(seq))
}

/// A cluster id's epoch.
pub fn epoch_of(id: &str) -> &str {
    id.split('-').next().expect("an epoch")
}

/// Publishes `body` on `node` to `topic`; the reply's id, or the status
/// and reason of a refusal.
pub async fn try_publish(
    node: &ServerProcess,
    topic: &str,
    body: &str,
) -> Result<String, (u16, String)> {
    let response = client()
        .post(node.url(&format!("/publish/{topic}")))
        .body(body.to_owned())
        .send()
        .await
        .map_err(|err| (0, err.to_string()))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err((status, text));
    }
    let reply: serde_json::Value = serde_json::from_str(&text).expect("publish reply is JSON");
    Ok(reply["id"].as_str().expect("an id").to_owned())
}

/// Publishes and expects `200`.
pub async fn publish_ok(node: &ServerProcess, topic: &str, body: &str) -> String {
    try_publish(node, topic, body)
        .await
        .unwrap_or_else(|(status, reason)| panic!("publish {body:?} to {topic}: {status} {reason}"))
}

/// Subscribes on `node` (`path_and_query`), resuming after `last_event_id`.
pub async fn subscribe(
    node: &ServerProcess,
    path_and_query: &str,
    last_event_id: Option<&str>,
) -> Subscriber {
    Subscriber::open_with(&client(), &node.url(path_and_query), last_event_id).await
}

/// Events with data, the `gap` events noted apart: what a client saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// `(id, data)` of every event that carried an id, in order.
    pub events: Vec<(String, String)>,
    /// The `gap` events' data.
    pub gaps: Vec<String>,
}

impl Seen {
    pub fn push(&mut self, event: Event) {
        if event.event == "gap" {
            self.gaps.push(event.data);
        } else if !event.id.is_empty() && !event.data.is_empty() {
            self.events.push((event.id, event.data));
        }
    }

    pub fn data(&self) -> Vec<&str> {
        self.events.iter().map(|(_, data)| data.as_str()).collect()
    }
}

/// Reads `n` events with data from `subscriber` (gaps noted too).
pub async fn read_events(subscriber: &mut Subscriber, n: usize) -> Seen {
    let mut seen = Seen::default();
    while seen.events.len() < n {
        seen.push(subscriber.next().await);
    }
    seen
}

/// Reads until the stream has been quiet for `quiet` or ends.
pub async fn read_until_quiet(subscriber: &mut Subscriber, quiet: Duration) -> (Seen, bool) {
    let mut seen = Seen::default();
    loop {
        match tokio::time::timeout(quiet, subscriber.next_or_end()).await {
            Err(_) => return (seen, false),
            Ok(None) => return (seen, true),
            Ok(Some(event)) => seen.push(event),
        }
    }
}

/// A TCP proxy to `upstream` whose traffic a test can hold up (`stall`)
/// and let go (`resume`), or cut (`cut`: every connection closed).
pub struct Proxy {
    pub addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (stalled_in, generation_in) = (Arc::clone(&stalled), Arc::clone(&generation));
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let born = generation_in.load(Ordering::SeqCst);
                let (stalled, generation) = (Arc::clone(&stalled_in), Arc::clone(&generation_in));
                tokio::spawn(relay(inbound, outbound, stalled, generation, born));
            }
        });
        Proxy {
            addr,
            stalled,
            generation,
            task,
        }
    }

    /// Holds every byte in both directions until `resume`.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    inbound: TcpStream,
    outbound: TcpStream,
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let alive = {
        let generation = Arc::clone(&generation);
        move || generation.load(Ordering::SeqCst) == born
    };
    let up = pump(&mut in_read, &mut out_write, &stalled, alive.clone());
    let down = pump(&mut out_read, &mut in_write, &stalled, alive);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    stalled: &AtomicBool,
    alive: impl Fn() -> bool,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if !alive() { return; }
                continue;
            }
        };
        while stalled.load(Ordering::SeqCst) {
            if !alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !alive() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The directory of this crate (for files tests read).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
