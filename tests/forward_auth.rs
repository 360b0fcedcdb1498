//! Forward authorization (`subscribe_auth = "forward"`): a real HTTP server
//! in the test plays the application, answering by session cookie with 200,
//! 401, 403, 500, slowly, or not at all; the gateway runs on port 0 and is
//! reached with a real client over HTTP/1.1 (the direct path) and HTTP/2
//! (hyper). Checked: the verdicts and their statuses, what the application
//! received, that its answer body never reaches the browser, the cache, and
//! `max_stream_lifetime`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{ServerProcess, Subscriber, TestServer, client, config, h2_client, metric};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ssegate::Config;
use ssegate::config::SubscribeAuth;
use tokio::net::TcpListener;

/// What the application was asked.
#[derive(Debug, Clone)]
struct Asked {
    path_and_query: String,
    cookie: Option<String>,
    authorization: Option<String>,
    origin: Option<String>,
    forwarded_for: Option<String>,
}

/// The application: answers by the `session` cookie.
struct App {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    task: tokio::task::JoinHandle<()>,
}

const APP_BODY: &str = "APP-PRIVATE-ANSWER-BODY";

impl App {
    async fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(answer(request, &log).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        App { addr, asked, task }
    }

    fn url(&self) -> String {
        format!("http://{}/api/ssegate/authorize", self.addr)
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().expect("log").clone()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    log: &Mutex<Vec<Asked>>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|value| value.to_str().expect("ascii").to_owned())
    };
    let asked = Asked {
        path_and_query: request
            .uri()
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default(),
        cookie: header("cookie"),
        authorization: header("authorization"),
        origin: header("origin"),
        forwarded_for: header("x-forwarded-for"),
    };
    log.lock().expect("log").push(asked.clone());
    let session = asked.cookie.as_deref().and_then(|cookie| {
        cookie
            .split("; ")
            .find_map(|pair| pair.strip_prefix("session="))
    });
    let status = match session {
        None => 401,
        Some("alice") => {
            // Alice may read her own topics only.
            let all_hers = asked
                .path_and_query
                .split(['?', '&'])
                .filter_map(|pair| pair.strip_prefix("topic="))
                .all(|topic| topic.starts_with("users%2Falice%2F"));
            if all_hers { 200 } else { 403 }
        }
        Some("crash") => 500,
        Some("slow") => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            200
        }
        Some(_) => 403,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(APP_BODY.as_bytes())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response
}

fn forward_config(url: &str) -> Config {
    let mut config = config();
    config.auth.subscribe_auth = SubscribeAuth::Forward;
    config.auth.subscribe_auth_url = Some(url.to_owned());
    config.auth.subscribe_auth_timeout = Duration::from_millis(500);
    config.auth.anonymous_topics = vec!["public/**".into()];
    config
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// A subscribe that must not stream (it is read to its end).
async fn refused(request: reqwest::RequestBuilder) -> Got {
    let response = request.send().await.expect("subscribe");
    Got {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: tokio::time::timeout(common::PATIENCE, response.text())
            .await
            .expect("a refusal ends")
            .expect("body"),
    }
}

#[tokio::test]
async fn the_application_decides_and_its_answer_body_stays_private() {
    let app = App::start().await;
    let server = TestServer::start(forward_config(&app.url())).await;
    for http in [client(), h2_client()] {
        let subscribe = |path: &str, session: Option<&str>| {
            let mut request = http
                .get(server.url(path))
                // A client's own claim about its address is not passed on.
                .header("x-forwarded-for", "203.0.113.9")
                .header("origin", "https://app.example")
                .header("authorization", "Bearer app-level-credential");
            if let Some(session) = session {
                request = request.header("cookie", format!("theme=dark; session={session}"));
            }
            request
        };
        let n_before = app.asked().len();
        let mut alice = Subscriber::from_request(subscribe(
            "/subscribe?topic=users/alice/inbox&topic=public/news&topic=users/alice/orders",
            Some("alice"),
        ))
        .await;
        let asked = app.asked();
        assert_eq!(asked.len(), n_before + 1, "one request per subscribe");
        let last = asked.last().expect("asked");
        // Only the topics that need a check, in the order given.
        assert_eq!(
            last.path_and_query,
            "/api/ssegate/authorize?topic=users%2Falice%2Finbox&topic=users%2Falice%2Forders"
        );
        assert_eq!(last.cookie.as_deref(), Some("theme=dark; session=alice"));
        assert_eq!(
            last.authorization.as_deref(),
            Some("Bearer app-level-credential")
        );
        assert_eq!(last.origin.as_deref(), Some("https://app.example"));
        assert_eq!(last.forwarded_for.as_deref(), Some("127.0.0.1"));
        let mut publish = client().post(server.url("/publish/users/alice/inbox"));
        publish = publish.body("hello alice");
        assert_eq!(publish.send().await.expect("publish").status(), 200);
        assert_eq!(alice.next().await.data, "hello alice");

        for (what, session, status, challenge) in [
            ("someone else's topic", Some("alice-but-not"), 403, None),
            ("no session", None, 401, Some(r#"Bearer realm="ssegate""#)),
        ] {
            let got = refused(subscribe("/subscribe/users/alice/inbox", session)).await;
            assert_eq!(got.status, status, "{what}: {}", got.body);
            assert_eq!(
                got.headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().expect("ascii")),
                challenge,
                "{what}"
            );
            assert!(
                !got.body.contains(APP_BODY),
                "{what}: the app's body leaked"
            );
            assert_eq!(got.body.lines().count(), 1, "{what}: {}", got.body);
        }
        let other = refused(subscribe("/subscribe/users/bob/inbox", Some("alice"))).await;
        assert_eq!(other.status, 403, "alice may not read bob's topic");

        // Anonymous topics never reach the application.
        let n_before = app.asked().len();
        let _open = Subscriber::from_request(subscribe("/subscribe/public/news", None)).await;
        assert_eq!(app.asked().len(), n_before);

        // 500 and too slow: an EventSource is told to come back, anything
        // else gets 503 with Retry-After.
        for session in ["crash", "slow"] {
            let event_source = refused(
                subscribe("/subscribe/users/alice/inbox", Some(session))
                    .header("accept", "text/event-stream"),
            )
            .await;
            assert_eq!(event_source.status, 200, "{session}");
            assert!(
                event_source.body.starts_with("retry: ") && event_source.body.contains("\n: "),
                "{session}: {:?}",
                event_source.body
            );
            assert!(!event_source.body.contains(APP_BODY));
            let plain = refused(subscribe("/subscribe/users/alice/inbox", Some(session))).await;
            assert_eq!(plain.status, 503, "{session}: {}", plain.body);
            assert!(plain.headers.contains_key("retry-after"), "{session}");
        }
    }
    let denied = |reason: &str| format!("ssegate_auth_denied_total{{reason=\"{reason}\"}}");
    // Per protocol: 2 refusals by the app + bob's topic; 2 sessions × 2
    // answers each unavailable.
    assert_eq!(metric(server.addr, &denied("forward_denied")).await, 6.0);
    assert_eq!(metric(server.addr, &denied("forward_error")).await, 8.0);
    assert!(metric(server.addr, "ssegate_forward_auth_duration_seconds_count").await >= 14.0);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_application_that_is_down_is_a_temporary_refusal() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/authorize", closed.local_addr().expect("addr"));
    drop(closed);
    let server = TestServer::start(forward_config(&url)).await;
    let got = refused(
        client()
            .get(server.url("/subscribe/users/alice/inbox"))
            .header("cookie", "session=alice")
            .header("accept", "text/event-stream"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.body.starts_with("retry: "), "{:?}", got.body);
    let got = refused(client().get(server.url("/subscribe/users/alice/inbox"))).await;
    assert_eq!(got.status, 503);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_cache_asks_once_per_cookie_and_topics() {
    let app = App::start().await;
    let mut config = forward_config(&app.url());
    config.auth.subscribe_auth_cache = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let subscribe = |topic: &str, session: &str| {
        client()
            .get(server.url(&format!("/subscribe/{topic}")))
            .header("cookie", format!("session={session}"))
    };
    for _ in 0..5 {
        Subscriber::from_request(subscribe("users/alice/inbox", "alice")).await;
    }
    assert_eq!(app.asked().len(), 1, "one call for five subscribes");
    Subscriber::from_request(subscribe("users/alice/orders", "alice")).await;
    assert_eq!(app.asked().len(), 2, "other topics are asked about");
    for _ in 0..2 {
        assert_eq!(
            refused(subscribe("users/alice/inbox", "mallory"))
                .await
                .status,
            403
        );
    }
    assert_eq!(app.asked().len(), 4, "refusals are not cached");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn max_stream_lifetime_ends_streams_so_access_is_asked_again() {
    let app = App::start().await;
    let mut config = forward_config(&app.url());
    config.auth.max_stream_lifetime = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    for http in [client(), h2_client()] {
        let request = || {
            http.get(server.url("/subscribe/users/alice/inbox"))
                .header("cookie", "session=alice")
        };
        let n_before = app.asked().len();
        let started = tokio::time::Instant::now();
        let mut stream = Subscriber::from_request(request()).await;
        assert!(stream.next_or_end().await.is_none(), "the stream ends");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "not before its time"
        );
        Subscriber::from_request(request()).await;
        assert_eq!(app.asked().len(), n_before + 2, "asked again on reconnect");
    }
    // Open topics too: every stream has the lifetime.
    let started = tokio::time::Instant::now();
    let mut open = Subscriber::open(&server, "/subscribe/public/news", None).await;
    assert!(open.next_or_end().await.is_none());
    assert!(started.elapsed() >= Duration::from_secs(1));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn cookies_sent_to_the_application_never_reach_a_log_line() {
    let app = App::start().await;
    let url = app.url();
    let server = ServerProcess::start_with_env(
        &[
            "--auth-subscribe-auth",
            "forward",
            "--auth-subscribe-auth-url",
            &url,
        ],
        &[("RUST_LOG", "trace")],
    );
    let session = "alice; secret=SESSION-SECRET-VALUE-42";
    for http in [client(), h2_client()] {
        for topic in ["users/alice/inbox", "users/bob/inbox"] {
            let response = http
                .get(server.url(&format!("/subscribe/{topic}")))
                .header("cookie", format!("session={session}"))
                .header("authorization", "Bearer APP-CREDENTIAL-SECRET")
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .expect("subscribe");
            let _ = response.bytes().await;
        }
    }
    assert!(app.asked().len() >= 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    assert!(log.contains("DEBUG"), "debug logs on");
    for secret in ["SESSION-SECRET-VALUE-42", "APP-CREDENTIAL-SECRET"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}

#[tokio::test]
async fn a_refusal_after_the_check_asks_the_application_once() {
    let app = App::start().await;
    let mut config = forward_config(&app.url());
    config.max_subscribers = 1;
    let server = TestServer::start(config).await;
    let subscribe = || {
        client()
            .get(server.url("/subscribe/users/alice/inbox"))
            .header("cookie", "session=alice")
    };
    let _held = Subscriber::from_request(subscribe()).await;
    let full = refused(subscribe()).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.body.contains("max_subscribers"), "{}", full.body);
    assert_eq!(app.asked().len(), 2, "one check per subscribe, not two");
    server.shutdown().await.expect("clean shutdown");
}
