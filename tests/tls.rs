//! TLS termination: HTTP/2 negotiated by ALPN, HTTP/1.1 for clients that only
//! offer it, and a clear start-up error for unusable key material.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::{Subscriber, TestServer, config, publish_to};

struct Certificate {
    dir: PathBuf,
    cert_pem: String,
}

impl Certificate {
    fn generate(name: &str) -> Certificate {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let dir = std::env::temp_dir().join(format!("ssegate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert_pem = generated.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).expect("cert");
        std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).expect("key");
        Certificate { dir, cert_pem }
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A client trusting `cert` that offers `alpn` and resolves `localhost` to `addr`.
fn tls_client(cert: &Certificate, alpn: &[&[u8]], addr: SocketAddr) -> reqwest::Client {
    common::tls_client(&cert.cert_pem, alpn, addr)
}

async fn tls_server(cert: &Certificate) -> TestServer {
    let mut config = config();
    config.tls_cert = Some(cert.dir.join("cert.pem"));
    config.tls_key = Some(cert.dir.join("key.pem"));
    TestServer::start(config).await
}

#[tokio::test]
async fn alpn_negotiates_http2_and_falls_back_to_http1() {
    let cert = Certificate::generate("alpn");
    let server = tls_server(&cert).await;
    let url = |path: &str| format!("https://localhost:{}{path}", server.addr.port());

    let h2 = tls_client(&cert, &[b"h2", b"http/1.1"], server.addr);
    let mut over_h2 = Subscriber::open_with(&h2, &url("/subscribe/secure"), None).await;
    assert_eq!(over_h2.version, reqwest::Version::HTTP_2);

    let h1 = tls_client(&cert, &[b"http/1.1"], server.addr);
    let mut over_h1 = Subscriber::open_with(&h1, &url("/subscribe/secure"), None).await;
    assert_eq!(over_h1.version, reqwest::Version::HTTP_11);

    let reply = publish_to(&h1, &url("/publish/secure"), "encrypted").await;
    assert_eq!(reply.subscribers, 2);
    assert_eq!(over_h2.next().await.data, "encrypted");
    assert_eq!(over_h1.next().await.data, "encrypted");
}

#[tokio::test]
async fn unusable_key_material_stops_start_up_with_the_file_named() {
    let cert = Certificate::generate("bad");
    std::fs::write(cert.dir.join("key.pem"), "not a key").expect("overwrite");
    let mut config = config();
    config.tls_cert = Some(cert.dir.join("cert.pem"));
    config.tls_key = Some(cert.dir.join("key.pem"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = ssegate::run(listener, config, std::future::pending())
        .await
        .expect_err("start-up must fail");
    assert!(err.to_string().contains("key.pem"), "{err}");
}

/// A `/healthz` over a fresh connection by a client that trusts only `cert`.
async fn handshake_ok(cert: &Certificate, addr: SocketAddr) -> bool {
    tls_client(cert, &[b"h2"], addr)
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
}

#[tokio::test]
async fn rotated_certificate_files_are_loaded_without_a_signal() {
    // As cert-manager does: the files are replaced, nobody sends SIGHUP.
    let old = Certificate::generate("rotate-old");
    let new = Certificate::generate("rotate-new");
    let server = common::ServerProcess::start(&[
        "--tls-cert",
        old.dir.join("cert.pem").to_str().expect("utf-8"),
        "--tls-key",
        old.dir.join("key.pem").to_str().expect("utf-8"),
        "--tls-watch-interval",
        "100ms",
    ]);
    assert!(handshake_ok(&old, server.addr).await);
    // Written the way a renewal tool does: to a temporary name, then renamed.
    for file in ["key.pem", "cert.pem"] {
        let staged = old.dir.join(format!("{file}.new"));
        std::fs::copy(new.dir.join(file), &staged).expect("stage");
        std::fs::rename(&staged, old.dir.join(file)).expect("rename");
    }
    common::eventually("new handshakes get the rotated certificate", || async {
        handshake_ok(&new, server.addr).await
    })
    .await;
    assert!(!handshake_ok(&old, server.addr).await);
    assert!(
        server
            .log_text()
            .contains("the files changed: TLS certificate reloaded")
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_streams() {
    let old = Certificate::generate("reload-old");
    let new = Certificate::generate("reload-new");
    let server = common::ServerProcess::start(&[
        "--tls-cert",
        old.dir.join("cert.pem").to_str().expect("utf-8"),
        "--tls-key",
        old.dir.join("key.pem").to_str().expect("utf-8"),
    ]);
    let url = |path: &str| format!("https://localhost:{}{path}", server.addr.port());
    let client = tls_client(&old, &[b"h2"], server.addr);
    let mut stream = Subscriber::open_with(&client, &url("/subscribe/renewal"), None).await;
    assert!(handshake_ok(&old, server.addr).await);
    assert!(!handshake_ok(&new, server.addr).await);

    // A broken pair is refused and the served certificate stays.
    std::fs::write(old.dir.join("key.pem"), "not a key").expect("overwrite");
    server.signal(libc::SIGHUP);
    common::eventually("the failed reload to be logged", || async {
        server.log_text().contains("certificate not reloaded")
    })
    .await;
    assert!(handshake_ok(&old, server.addr).await);

    // The renewed pair is served to new connections.
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(new.dir.join(file), old.dir.join(file)).expect("renew");
    }
    server.signal(libc::SIGHUP);
    common::eventually("the reload to be logged", || async {
        server.log_text().contains("TLS certificate reloaded")
    })
    .await;
    assert!(handshake_ok(&new, server.addr).await);
    assert!(!handshake_ok(&old, server.addr).await);

    // The stream opened under the old certificate never noticed.
    let reply = publish_to(
        &tls_client(&new, &[b"h2"], server.addr),
        &url("/publish/renewal"),
        "after renewal",
    )
    .await;
    assert_eq!(reply.subscribers, 1);
    assert_eq!(stream.next().await.data, "after renewal");
}

#[tokio::test]
async fn a_malformed_head_over_tls_is_refused_with_a_reason() {
    let cert = Certificate::generate("bad-head");
    let server = tls_server(&cert).await;
    let stream = common::raw_tls(&cert.cert_pem, server.addr).await;
    let bytes = common::raw_exchange(
        stream,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
    )
    .await;
    let responses = common::RawResponse::parse_all(&bytes);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 400);
    assert_eq!(
        responses[0].body,
        "malformed request head: not valid HTTP/1.1 syntax\n"
    );
}

#[tokio::test]
async fn the_position_block_and_temporary_refusals_hold_over_tls() {
    let cert = Certificate::generate("contract");
    let mut config = config();
    config.tls_cert = Some(cert.dir.join("cert.pem"));
    config.tls_key = Some(cert.dir.join("key.pem"));
    config.max_subscribers = 1;
    let server = TestServer::start(config).await;
    let url = |path: &str| format!("https://localhost:{}{path}", server.addr.port());
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let client = tls_client(&cert, &[alpn], server.addr);
        let topic = format!("tls-{}", alpn.len());
        // The position block: the stream's place, before any event.
        let before = publish_to(&client, &url(&format!("/publish/{topic}")), "before").await;
        let response = client
            .get(url(&format!("/subscribe/{topic}")))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(response.status(), 200);
        let expected_version = match alpn {
            b"h2" => reqwest::Version::HTTP_2,
            _ => reqwest::Version::HTTP_11,
        };
        assert_eq!(response.version(), expected_version);
        let mut raw = common::RawSubscriber::from_response(response);
        let after = publish_to(&client, &url(&format!("/publish/{topic}")), "after").await;
        let expected = format!(
            "retry: 3000\n\nid: {}\n\nid: {}\ndata: after\n\n",
            before.id, after.id
        );
        assert_eq!(String::from_utf8_lossy(raw.read_frames(3).await), expected);
        // A temporary refusal: an EventSource is told to come back.
        let refused = client
            .get(url(&format!("/subscribe/{topic}")))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("refusal");
        assert_eq!(refused.status(), 200);
        let body = refused.text().await.expect("body");
        assert!(body.starts_with("retry: "), "{body:?}");
        assert!(
            body.ends_with(": subscriber limit reached (max_subscribers); try later\n\n"),
            "{body:?}"
        );
        drop(raw);
        common::eventually("the slot is free", || async {
            common::metric_at(&client, &url("/metrics"), "ssegate_subscribers").await == 0.0
        })
        .await;
    }
}

#[tokio::test]
async fn header_read_timeout_bounds_a_first_head_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cert = Certificate::generate("drip");
    let mut config = config();
    config.tls_cert = Some(cert.dir.join("cert.pem"));
    config.tls_key = Some(cert.dir.join("key.pem"));
    config.first_request_timeout = std::time::Duration::from_secs(30);
    config.header_read_timeout = std::time::Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let mut stream = common::raw_tls(&cert.cert_pem, server.addr).await;
    stream
        .write_all(b"GET /subscribe/drip HTTP/1.1\r\n")
        .await
        .expect("head starts");
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    let closed = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if stream.write_all(b"X-Drip: 1\r\n").await.is_err() {
                return;
            }
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(1), stream.read(&mut buf))
                    .await
            {
                return;
            }
        }
    };
    tokio::time::timeout(common::PATIENCE, closed)
        .await
        .expect("the drip is cut");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "closed by header_read_timeout, not first_request_timeout"
    );
    let label = "ssegate_connection_timeouts_total{deadline=\"header_read\"}";
    let client = tls_client(&cert, &[b"h2"], server.addr);
    let metrics = format!("https://localhost:{}/metrics", server.addr.port());
    assert_eq!(common::metric_at(&client, &metrics, label).await, 1.0);
}
