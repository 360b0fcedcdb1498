//! Shared test harness: a real server on `127.0.0.1:0` (in-process or the
//! real binary), a real HTTP client (reqwest), and a real SSE parser
//! (`eventsource-stream`). Each `tests/*.rs` file uses part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod deploy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use ssegate::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Called when a test's outside prerequisite (a tool, a browser, npm
/// packages) is missing: fails when `REQUIRE_TEST_TOOLS=1` (as `.ci/run`
/// sets it), else says SKIPPED where it cannot pass unnoticed and returns,
/// so that `cargo test` works on a fresh machine.
pub fn prerequisite_missing(what: &str, why: &str) {
    let required = std::env::var("REQUIRE_TEST_TOOLS").is_ok_and(|v| v == "1");
    assert!(!required, "{what} prerequisite missing: {why}");
    // Straight to the terminal: the test harness captures `eprintln!` of
    // passing tests.
    let notice = format!("\nSKIPPED {what}: {why}; .ci/run installs it\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
}

/// A rustls client configuration that trusts only `cert_pem` and offers `alpn`.
pub fn tls_client_config(cert_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::rustls::ClientConfig {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    roots.add(der).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tls
}

/// A reqwest client that trusts only `cert_pem`, offers `alpn`, and finds
/// `localhost` at `addr`.
pub fn tls_client(cert_pem: &str, alpn: &[&[u8]], addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls_client_config(cert_pem, alpn))
        .resolve("localhost", addr)
        .build()
        .expect("client")
}

/// A raw HTTP/1.1 connection over TLS to `localhost` at `addr`.
pub async fn raw_tls(
    cert_pem: &str,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(cert_pem, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Writes `request` on `stream` as it is and reads until the server closes.
pub async fn raw_exchange<S>(mut stream: S, request: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => panic!("the server neither answered nor closed"),
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// One HTTP/1.1 response read off a raw connection: status, lower-cased
/// header lines, body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// The responses in `bytes`, in order (bodies by `content-length`).
    pub fn parse_all(mut bytes: &[u8]) -> Vec<RawResponse> {
        let mut responses = Vec::new();
        while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().expect("status line");
            let status = status_line
                .split(' ')
                .nth(1)
                .expect("status")
                .parse()
                .expect("status");
            let headers: Vec<(String, String)> = lines
                .filter_map(|line| line.split_once(": "))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .map_or(0, |(_, value)| value.parse().expect("length"));
            let body_start = end + 4;
            let body_end = (body_start + length).min(bytes.len());
            let body = String::from_utf8_lossy(&bytes[body_start..body_end]).into_owned();
            responses.push(RawResponse {
                status,
                headers,
                body,
            });
            bytes = &bytes[body_end..];
        }
        responses
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How long any "eventually" in these tests may take before it is a failure.
/// Generous on purpose: these machines are shared, and nothing here measures
/// speed.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The embedded defaults, listening on an ephemeral port.
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

/// The gateway running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ssegate::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server stops in time")
            .expect("server task")
    }
}

/// reqwest is built without a bundled TLS crypto provider (the gateway uses
/// ring); every client needs one installed, even for plain HTTP.
fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A client whose connections come from `local` (any of 127.0.0.0/8 works
/// on loopback): another client address, for the per-address limits.
pub fn client_from(local: &str, http2: bool) -> reqwest::Client {
    install_tls_provider();
    let builder = reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<std::net::IpAddr>().expect("local address"));
    match http2 {
        true => builder.http2_prior_knowledge(),
        false => builder,
    }
    .build()
    .expect("client")
}

pub fn h2_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client")
}

/// The JSON body of a successful publish.
#[derive(Debug, Deserialize)]
pub struct Published {
    pub id: String,
    pub topic: String,
    pub subscribers: usize,
}

/// Publishes `body` to `topic` and expects `200`.
pub async fn publish(
    server: &TestServer,
    topic: &str,
    body: impl Into<reqwest::Body>,
) -> Published {
    publish_to(&client(), &server.url(&format!("/publish/{topic}")), body).await
}

pub async fn publish_to(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> Published {
    let response = client.post(url).body(body).send().await.expect("publish");
    let status = response.status();
    let text = response.text().await.expect("publish body");
    assert_eq!(status, 200, "publish to {url}: {text}");
    serde_json::from_str(&text).expect("publish reply is JSON")
}

/// A subscriber stream parsed by an independent SSE parser.
pub struct Subscriber {
    pub response_headers: reqwest::header::HeaderMap,
    pub version: reqwest::Version,
    events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>,
}

impl Subscriber {
    /// `GET path_and_query`, with `Last-Event-ID` when given; expects `200`.
    pub async fn open(
        server: &TestServer,
        path_and_query: &str,
        last_event_id: Option<&str>,
    ) -> Subscriber {
        Subscriber::open_with(&client(), &server.url(path_and_query), last_event_id).await
    }

    pub async fn open_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Subscriber {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        Subscriber::from_request(request).await
    }

    /// Sends `request` (a subscribe built by the test); expects `200`.
    pub async fn from_request(request: reqwest::RequestBuilder) -> Subscriber {
        let response = request.send().await.expect("subscribe");
        let url = response.url().clone();
        assert_eq!(response.status(), 200, "subscribe to {url}");
        let response_headers = response.headers().clone();
        let version = response.version();
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|event| event.map_err(|err| err.to_string()));
        Subscriber {
            response_headers,
            version,
            events: Box::pin(events),
        }
    }

    /// The next event; fails the test if none comes or the stream ends.
    pub async fn next(&mut self) -> Event {
        match self.next_or_end().await {
            Some(event) => event,
            None => panic!("stream ended while an event was expected"),
        }
    }

    /// The next event, or `None` when the stream ends.
    pub async fn next_or_end(&mut self) -> Option<Event> {
        let next = tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("an event or the end of the stream in time");
        next.map(|event| event.expect("well-formed SSE"))
    }

    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }
}

/// A subscriber that keeps the raw body bytes, for byte-exact checks.
pub struct RawSubscriber {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    pub received: Vec<u8>,
    /// Complete frames in `received`, counted as it grows.
    n_frames: usize,
}

impl RawSubscriber {
    pub async fn open(server: &TestServer, path_and_query: &str) -> RawSubscriber {
        let response = client()
            .get(server.url(path_and_query))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(response.status(), 200);
        RawSubscriber::from_response(response)
    }

    pub fn from_response(response: reqwest::Response) -> RawSubscriber {
        RawSubscriber {
            body: Box::pin(response.bytes_stream()),
            received: Vec::new(),
            n_frames: 0,
        }
    }

    /// Reads until the body holds `n` complete frames (`\n\n`-terminated
    /// blocks), returning everything read so far.
    pub async fn read_frames(&mut self, n: usize) -> &[u8] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.n_frames < n {
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("frames in time")
                .expect("stream still open")
                .expect("body chunk");
            // Only the new bytes, and the one before them, can hold a new
            // frame end.
            let from = self.received.len().saturating_sub(1);
            self.received.extend_from_slice(&chunk);
            self.n_frames += self.received[from..]
                .windows(2)
                .filter(|pair| pair == b"\n\n")
                .count();
        }
        &self.received
    }
}

/// Polls `check` until it returns true, failing the test after `PATIENCE`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of an unlabelled metric, or of `name{labels}` written out.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_at(&client(), &format!("http://{addr}/metrics"), name).await
}

/// `metric`, scraped from `url` with `client` (another client address, TLS).
pub async fn metric_at(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = client
        .get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().expect("number"))
        })
        .unwrap_or_else(|| panic!("metric {name} not exposed"))
}

/// The real `ssegate` binary, started on an ephemeral port.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary with `args` (it listens on 127.0.0.1:0 unless the
    /// args say otherwise) and waits for its "listening" log line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_with_env(args, &[])
    }

    /// `start` with environment variables (`RUST_LOG` is `info` unless
    /// `env` sets it).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssegate"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssegate");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listen_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                log_writer.lock().expect("log").push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("ssegate did not start: {:?}", log.lock().expect("log")));
        ServerProcess { child, addr, log }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill");
    }

    /// Waits for the process to exit, failing the test after `PATIENCE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit, failing the test after `PATIENCE`.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssegate did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The sequence number that an id of this server carries (test-side mirror
/// of the id layout, used to forge "future" ids).
pub fn forge_id(real_id: &str, seq: u64) -> String {
    let (epoch, _) = real_id.split_once('-').expect("epoch-seq id");
    format!("{epoch}-{seq:016x}")
}

/// A raw subscriber with a receive buffer as small as the kernel allows: it
/// sends its request and reads only when the test does, so the gateway
/// finds its socket full after a few kilobytes.
pub async fn small_buffer_subscriber(addr: SocketAddr, topic: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    let mut stream = TcpStream::from_std(socket.into()).expect("tokio socket");
    let request = format!("GET /subscribe/{topic} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    stream
}
