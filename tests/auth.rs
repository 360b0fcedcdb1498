//! Subscriber and publisher authorization with JSON Web Tokens, through a
//! real server on port 0 and a real HTTP client: the contract's matrix of
//! token sources (header, cookie, query) against every kind of bad token,
//! with the exact status, `WWW-Authenticate` and one-line reason; streams
//! that end with their token and resume exactly with a fresh one; publish
//! grants; configuration errors; and no token in any log line at `trace`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ServerProcess, Subscriber, TestServer, client, config, h2_client, metric};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use ssegate::Config;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
const ISSUER: &str = "https://app.example";

const CHALLENGE: &str = r#"Bearer realm="ssegate""#;
const INVALID: &str = r#"Bearer realm="ssegate", error="invalid_token""#;
const SCOPE: &str = r#"Bearer realm="ssegate", error="insufficient_scope""#;
const BAD_REQUEST: &str = r#"Bearer realm="ssegate", error="invalid_request""#;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A file holding `contents`, in a directory of this test's own.
fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssegate-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// Claims granting `subscribe` and `publish`, valid for 10 minutes.
fn claims(subscribe: &[&str], publish: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": "ssegate",
        "sub": "user-42",
        // Under `query_token_max_lifetime`, so every source accepts it.
        "exp": now() + 240,
        "ssegate": {"subscribe": subscribe, "publish": publish},
    })
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(SECRET).expect("key"),
    )
}

fn sign(algorithm: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    encode(&Header::new(algorithm), claims, key).expect("sign")
}

/// A server with HS256 tokens (issuer required) for subscribers.
fn jwt_config() -> Config {
    let mut config = config();
    config.auth.subscribe_auth = ssegate::config::SubscribeAuth::Jwt;
    config.auth.jwt_algorithms = vec!["HS256".into()];
    config.auth.jwt_secret_file = Some(temp_file("hs256.secret", SECRET));
    config.auth.jwt_issuer = Some(ISSUER.into());
    config.auth.anonymous_topics = vec!["public/**".into()];
    config.publish_token = Some(PUBLISH_TOKEN.into());
    config
}

const PUBLISH_TOKEN: &str = "static-publish-token";

/// Publishes with the static token (JWT on means publishing needs one).
async fn publish(server: &TestServer, topic: &str, data: &str) -> common::Published {
    let response = client()
        .post(server.url(&format!("/publish/{topic}")))
        .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
        .body(data.to_owned())
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.expect("body")).expect("publish reply")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    Cookie,
    Query,
}

/// What a subscribe got: status, `WWW-Authenticate` and the body (read
/// only when the status is not 200).
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: String,
}

async fn try_subscribe(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    token: Option<(&str, Source)>,
) -> Answer {
    let mut url = server.url(path);
    let mut request_headers = Vec::new();
    match token {
        Some((token, Source::Header)) => {
            request_headers.push(("authorization", format!("Bearer {token}")))
        }
        Some((token, Source::Cookie)) => {
            request_headers.push(("cookie", format!("theme=dark; ssegate_token={token}")))
        }
        Some((token, Source::Query)) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{separator}access_token={token}");
        }
        None => {}
    }
    let mut request = client.get(url);
    for (name, value) in request_headers {
        request = request.header(name, value);
    }
    answer(request).await
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("subscribe");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().expect("ascii").to_owned());
    let body = match status {
        200 => String::new(),
        _ => response.text().await.expect("body"),
    };
    Answer {
        status,
        challenge,
        body,
    }
}

/// Hand-made: `alg: none` with the same claims and no signature.
fn alg_none(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

#[tokio::test]
async fn every_bad_token_from_every_source_gets_its_status_and_challenge() {
    let server = TestServer::start(jwt_config()).await;
    let good = claims(&["users/42/**", "news/*"], &[]);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        claims
    };
    let other_secret = EncodingKey::from_secret(b"another-secret-another-secret-!!").expect("key");
    let too_many: Vec<String> = (0..65).map(|i| format!("t/{i}")).collect();
    // (what, token, path, status, challenge); the path is a granted topic
    // unless the case is about scope.
    let one_topic = "/subscribe/users/42/notifications";
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("valid", hs256(&good), one_topic, 200, ""),
        (
            "bad signature",
            sign(Algorithm::HS256, &good, &other_secret),
            one_topic,
            401,
            INVALID,
        ),
        (
            "expired",
            hs256(&with(&|c| c["exp"] = json!(now() - 120))),
            one_topic,
            401,
            INVALID,
        ),
        (
            // A stream would have to end as it opened: refused, so the
            // client fetches a fresh token (publishing honours the leeway).
            "expired, but within jwt_leeway",
            hs256(&with(&|c| c["exp"] = json!(now() - 10))),
            one_topic,
            401,
            INVALID,
        ),
        (
            "iss as an array holding the issuer",
            hs256(&with(&|c| {
                c["iss"] = json!([ISSUER, "https://other.example"])
            })),
            one_topic,
            401,
            INVALID,
        ),
        (
            "nbf in the future",
            hs256(&with(&|c| c["nbf"] = json!(now() + 300))),
            one_topic,
            401,
            INVALID,
        ),
        (
            "wrong aud",
            hs256(&with(&|c| c["aud"] = json!("another-service"))),
            one_topic,
            401,
            INVALID,
        ),
        (
            "no aud",
            hs256(&with(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            })),
            one_topic,
            401,
            INVALID,
        ),
        (
            "wrong iss",
            hs256(&with(&|c| c["iss"] = json!("https://evil.example"))),
            one_topic,
            401,
            INVALID,
        ),
        (
            "no iss",
            hs256(&with(&|c| {
                c.as_object_mut().expect("object").remove("iss");
            })),
            one_topic,
            401,
            INVALID,
        ),
        (
            "no exp",
            hs256(&with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            })),
            one_topic,
            401,
            INVALID,
        ),
        ("alg none", alg_none(&good), one_topic, 401, INVALID),
        (
            "an algorithm not in the list",
            sign(
                Algorithm::HS512,
                &good,
                &EncodingKey::from_secret(SECRET).expect("key"),
            ),
            one_topic,
            401,
            INVALID,
        ),
        (
            "malformed claim",
            hs256(&with(&|c| {
                c["ssegate"] = json!({"subscribe": "users/42/**"})
            })),
            one_topic,
            401,
            INVALID,
        ),
        (
            "unknown grant",
            hs256(&with(&|c| c["ssegate"]["admin"] = json!(true))),
            one_topic,
            401,
            INVALID,
        ),
        (
            "bad pattern",
            hs256(&with(&|c| c["ssegate"]["subscribe"] = json!(["**/x"]))),
            one_topic,
            401,
            INVALID,
        ),
        (
            "too many patterns",
            hs256(&with(&|c| c["ssegate"]["subscribe"] = json!(too_many))),
            one_topic,
            401,
            INVALID,
        ),
        ("not a token", "not.a.jwt".into(), one_topic, 401, INVALID),
        (
            "a disallowed topic",
            hs256(&good),
            "/subscribe/users/43/notifications",
            403,
            SCOPE,
        ),
        (
            "one of three topics disallowed",
            hs256(&good),
            "/subscribe?topic=users/42/a&topic=news/today&topic=news/today/sport",
            403,
            SCOPE,
        ),
        (
            "three topics allowed",
            hs256(&good),
            "/subscribe?topic=users/42/a&topic=news/today&topic=public/x",
            200,
            "",
        ),
        (
            "no ssegate claim",
            hs256(&with(&|c| {
                c.as_object_mut().expect("object").remove("ssegate");
            })),
            one_topic,
            403,
            SCOPE,
        ),
    ];
    for http in [client(), h2_client()] {
        for source in [Source::Header, Source::Cookie, Source::Query] {
            for (what, token, path, status, challenge) in &cases {
                let got = try_subscribe(&http, &server, path, Some((token, source))).await;
                let case = format!("{what} in the {source:?} (over {http:?})");
                assert_eq!(got.status, *status, "{case}: {}", got.body);
                match *status {
                    200 => assert_eq!(got.challenge, None, "{case}"),
                    _ => {
                        assert_eq!(got.challenge.as_deref(), Some(*challenge), "{case}");
                        assert_eq!(got.body.lines().count(), 1, "{case}: one line");
                        assert!(!got.body.contains(token.as_str()), "{case}: echoes");
                    }
                }
            }
            let missing = try_subscribe(&http, &server, one_topic, None).await;
            assert_eq!(missing.status, 401, "missing: {}", missing.body);
            assert_eq!(missing.challenge.as_deref(), Some(CHALLENGE));
        }
    }
    // A "never expires" exp is taken as ten years, not an overflow; the
    // server goes on serving (a query token would live too long for the URL).
    let forever = hs256(&with(&|c| c["exp"] = json!(u64::MAX)));
    let http = client();
    for _ in 0..2 {
        let got = try_subscribe(&http, &server, one_topic, Some((&forever, Source::Header))).await;
        assert_eq!(got.status, 200, "exp near u64::MAX");
    }
    // Anonymous topics need nothing.
    let open = try_subscribe(&client(), &server, "/subscribe/public/news", None).await;
    assert_eq!(open.status, 200);
    let denied = |reason: &str| format!("ssegate_auth_denied_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(server.addr, &denied("missing")).await, 6.0);
    assert_eq!(metric(server.addr, &denied("invalid")).await, 102.0);
    assert_eq!(metric(server.addr, &denied("scope")).await, 18.0);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn only_the_first_source_counts_and_the_header_must_be_one_bearer() {
    let server = TestServer::start(jwt_config()).await;
    let good = hs256(&claims(&["a"], &[]));
    let path = server.url("/subscribe/a");
    let http = client();
    let bad_header = answer(
        http.get(&path)
            .header("authorization", "Bearer not-a-token")
            .header("cookie", format!("ssegate_token={good}")),
    )
    .await;
    assert_eq!(bad_header.status, 401, "a bad header does not fall back");
    assert_eq!(bad_header.challenge.as_deref(), Some(INVALID));
    let good_header = answer(
        http.get(&path)
            .header("authorization", format!("Bearer {good}"))
            .header("cookie", "ssegate_token=not-a-token"),
    )
    .await;
    assert_eq!(good_header.status, 200, "the header wins");
    for (what, request) in [
        (
            "Basic",
            http.get(&path)
                .header("authorization", "Basic dXNlcjpwYXNz"),
        ),
        (
            "two headers",
            http.get(&path)
                .header("authorization", format!("Bearer {good}"))
                .header("authorization", format!("Bearer {good}")),
        ),
    ] {
        let got = answer(request).await;
        assert_eq!(got.status, 400, "{what}: {}", got.body);
        assert_eq!(got.challenge.as_deref(), Some(BAD_REQUEST), "{what}");
    }
    // Two query tokens: a malformed credential, not a malformed header.
    let twice = answer(http.get(format!("{path}?access_token={good}&access_token={good}"))).await;
    assert_eq!(twice.status, 401, "{}", twice.body);
    assert_eq!(twice.challenge.as_deref(), Some(INVALID));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn cookie_and_query_sources_can_be_turned_off() {
    let mut config = jwt_config();
    config.auth.cookie_name = String::new();
    config.auth.query_param = String::new();
    let server = TestServer::start(config).await;
    let token = hs256(&claims(&["a"], &[]));
    let http = client();
    for source in [Source::Cookie, Source::Query] {
        let got = try_subscribe(&http, &server, "/subscribe/a", Some((&token, source))).await;
        assert_eq!(got.status, 401, "{source:?}: {}", got.body);
        assert_eq!(
            got.challenge.as_deref(),
            Some(CHALLENGE),
            "{source:?}: not looked at"
        );
    }
    let header = try_subscribe(
        &http,
        &server,
        "/subscribe/a",
        Some((&token, Source::Header)),
    );
    assert_eq!(header.await.status, 200);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn with_jwt_alone_publishing_needs_a_credential_too() {
    let mut config = jwt_config();
    config.publish_token = None;
    let server = TestServer::start(config).await;
    let http = client();
    let url = server.url("/publish/orders/1");
    let none = answer(http.post(&url).body("x")).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.challenge.as_deref(), Some("Bearer"));
    let granted = hs256(&claims(&[], &["orders/*"]));
    let ok = answer(
        http.post(&url)
            .header("authorization", format!("Bearer {granted}"))
            .body("x"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_query_token_must_be_short_lived() {
    let server = TestServer::start(jwt_config()).await;
    let mut long = claims(&["a"], &[]);
    long["exp"] = json!(now() + 3600);
    let long = hs256(&long);
    let http = client();
    let got = try_subscribe(&http, &server, "/subscribe/a", Some((&long, Source::Query))).await;
    assert_eq!(got.status, 401, "{}", got.body);
    assert_eq!(got.challenge.as_deref(), Some(INVALID));
    assert!(
        got.body.contains("query_token_max_lifetime"),
        "{}",
        got.body
    );
    for source in [Source::Header, Source::Cookie] {
        let got = try_subscribe(&http, &server, "/subscribe/a", Some((&long, source))).await;
        assert_eq!(got.status, 200, "{source:?}: {}", got.body);
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stream_ends_with_its_token_and_a_fresh_one_resumes_exactly() {
    let mut config = jwt_config();
    // Without leeway, so that the old token is refused right after `exp`.
    config.auth.jwt_leeway = Duration::ZERO;
    let server = TestServer::start(config).await;
    for (http, http_is_h2) in [(client(), false), (h2_client(), true)] {
        let topic = format!("users/42/expiring-{}", if http_is_h2 { "h2" } else { "h1" });
        let mut short = claims(&["users/42/**"], &[]);
        let expires_at = now() + 3;
        short["exp"] = json!(expires_at);
        let url = server.url(&format!("/subscribe/{topic}"));
        let request = http
            .get(&url)
            .header("authorization", format!("Bearer {}", hs256(&short)));
        let mut subscriber = Subscriber::from_request(request).await;
        let first = publish(&server, &topic, "one").await;
        assert_eq!(subscriber.next().await.data, "one");
        // Nothing more arrives; the stream ends at `exp`.
        assert!(subscriber.next_or_end().await.is_none(), "the stream ends");
        let ended = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let late = ended - expires_at as f64;
        assert!(
            late <= 1.0,
            "ended {late:.2} s after exp, more than the contract's second"
        );
        let missed = publish(&server, &topic, "two").await;
        // The old token no longer works; a fresh one resumes after `one`.
        let stale = answer(
            http.get(&url)
                .header("authorization", format!("Bearer {}", hs256(&short)))
                .header("last-event-id", &first.id),
        )
        .await;
        assert_eq!(stale.status, 401);
        let fresh = hs256(&claims(&["users/42/**"], &[]));
        let request = http
            .get(&url)
            .header("authorization", format!("Bearer {fresh}"))
            .header("last-event-id", &first.id);
        let mut resumed = Subscriber::from_request(request).await;
        let event = resumed.next().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (missed.id.as_str(), "two")
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn publishing_takes_the_header_only_and_honours_jwt_grants() {
    let server = TestServer::start(jwt_config()).await;
    let http = client();
    let publish = |topic: &str| {
        http.post(server.url(&format!("/publish/{topic}")))
            .body("x")
    };
    let granted = hs256(&claims(&[], &["orders/**"]));
    let cases = [
        (
            "static token",
            publish("any").header("authorization", "Bearer static-publish-token"),
            200,
            None,
        ),
        (
            "granted JWT",
            publish("orders/1").header("authorization", format!("Bearer {granted}")),
            200,
            None,
        ),
        (
            "JWT without the grant",
            publish("users/1").header("authorization", format!("Bearer {granted}")),
            403,
            Some(SCOPE),
        ),
        ("nothing", publish("orders/1"), 401, Some("Bearer")),
        (
            "the token in a cookie",
            publish("orders/1").header("cookie", format!("ssegate_token={granted}")),
            401,
            Some("Bearer"),
        ),
        (
            "the token in the query",
            http.post(server.url(&format!("/publish/orders/1?access_token={granted}")))
                .body("x"),
            401,
            Some("Bearer"),
        ),
        (
            "expired JWT",
            publish("orders/1").header("authorization", {
                let mut expired = claims(&[], &["orders/**"]);
                expired["exp"] = json!(now() - 120);
                format!("Bearer {}", hs256(&expired))
            }),
            401,
            Some("Bearer"),
        ),
        (
            "JWT expired within the leeway",
            publish("orders/1").header("authorization", {
                let mut recent = claims(&[], &["orders/**"]);
                recent["exp"] = json!(now() - 10);
                format!("Bearer {}", hs256(&recent))
            }),
            200,
            None,
        ),
        (
            "wrong static token",
            publish("orders/1").header("authorization", "Bearer static-publish-tokeN"),
            401,
            Some("Bearer"),
        ),
    ];
    for (what, request, status, challenge) in cases {
        let got = answer(request).await;
        assert_eq!(got.status, status, "{what}: {}", got.body);
        assert_eq!(got.challenge.as_deref(), challenge, "{what}");
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn asymmetric_keys_and_the_hmac_confusion_attack() {
    let rsa_private = std::fs::read(fixture("rsa-test-private.pem")).expect("fixture");
    let rsa_public = std::fs::read(fixture("rsa-test-public.pem")).expect("fixture");
    let mut rs256 = config();
    rs256.auth.subscribe_auth = ssegate::config::SubscribeAuth::Jwt;
    rs256.auth.jwt_algorithms = vec!["RS256".into()];
    rs256.auth.jwt_public_key_file = Some(fixture("rsa-test-public.pem"));
    let server = TestServer::start(rs256).await;
    let mut good = claims(&["a"], &[]);
    good.as_object_mut().expect("object").remove("iss");
    let rsa_key = EncodingKey::from_rsa_pem(&rsa_private).expect("rsa key");
    let signed = sign(Algorithm::RS256, &good, &rsa_key);
    let http = client();
    let ok = try_subscribe(
        &http,
        &server,
        "/subscribe/a",
        Some((&signed, Source::Header)),
    )
    .await;
    assert_eq!(ok.status, 200);
    // HS256 "signed" with the public key as the secret: refused, the
    // token's alg never chooses the algorithm.
    let confused = sign(
        Algorithm::HS256,
        &good,
        &EncodingKey::from_secret(&rsa_public).expect("key"),
    );
    let got = try_subscribe(
        &http,
        &server,
        "/subscribe/a",
        Some((&confused, Source::Header)),
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(got.challenge.as_deref(), Some(INVALID));
    server.shutdown().await.expect("clean shutdown");

    let mut eddsa = config();
    eddsa.auth.subscribe_auth = ssegate::config::SubscribeAuth::Jwt;
    eddsa.auth.jwt_algorithms = vec!["EdDSA".into()];
    eddsa.auth.jwt_public_key_file = Some(fixture("ed25519-test-public.pem"));
    let server = TestServer::start(eddsa).await;
    let ed_private = std::fs::read(fixture("ed25519-test-private.pem")).expect("fixture");
    let ed_key = EncodingKey::from_ed_pem(&ed_private).expect("ed key");
    let signed = sign(Algorithm::EdDSA, &good, &ed_key);
    let ok = try_subscribe(
        &http,
        &server,
        "/subscribe/a",
        Some((&signed, Source::Cookie)),
    )
    .await;
    assert_eq!(ok.status, 200);
    let wrong_family = sign(Algorithm::RS256, &good, &rsa_key);
    let got = try_subscribe(
        &http,
        &server,
        "/subscribe/a",
        Some((&wrong_family, Source::Cookie)),
    );
    assert_eq!(got.await.status, 401);
    server.shutdown().await.expect("clean shutdown");
}

/// Starts the binary with `args` expecting it to refuse; its exit code and
/// stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ssegate"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run ssegate");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn configuration_errors_name_the_key() {
    let short = temp_file("short.secret", b"too short");
    let short = short.to_str().expect("utf-8 path");
    let not_pem = temp_file(
        "not.pem",
        b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
    );
    let not_pem = not_pem.to_str().expect("utf-8 path");
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--auth-jwt-algorithms",
                "HS256",
                "--auth-jwt-secret-file",
                "/nonexistent/secret",
            ],
            "auth.jwt_secret_file",
        ),
        (
            &[
                "--auth-jwt-algorithms",
                "HS256",
                "--auth-jwt-secret-file",
                short,
            ],
            "auth.jwt_secret_file",
        ),
        (
            &[
                "--auth-jwt-algorithms",
                "EdDSA",
                "--auth-jwt-public-key-file",
                not_pem,
            ],
            "auth.jwt_public_key_file",
        ),
        (
            &["--auth-jwt-algorithms", "HS256,RS256"],
            "auth.jwt_algorithms",
        ),
        (
            &["--auth-subscribe-auth", "forward"],
            "auth.subscribe_auth_url",
        ),
        (&["--auth-subscribe-auth", "jwt"], "auth.jwt_algorithms"),
    ];
    for (args, key) in cases {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?} names {key}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ssegate"))
        .args([
            "--check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/ssegate.toml"),
        ])
        .args(["--cors-allowed-origins", "*"])
        .args(["--auth-subscribe-auth", "forward"])
        .args(["--auth-subscribe-auth-url", "http://127.0.0.1:9/authorize"])
        .output()
        .expect("run ssegate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("warning:") && stdout.contains("no cookies"),
        "a cookie source with * warns: {stdout}"
    );
}

#[tokio::test]
async fn no_credential_reaches_a_log_line_even_at_trace() {
    let secret = temp_file("trace.secret", SECRET);
    let server = ServerProcess::start_with_env(
        &[
            "--auth-subscribe-auth",
            "jwt",
            "--auth-jwt-algorithms",
            "HS256",
            "--auth-jwt-secret-file",
            secret.to_str().expect("utf-8 path"),
            "--publish-token",
            "static-publish-secret-value",
        ],
        &[("RUST_LOG", "trace")],
    );
    let subscriber_token = hs256(&{
        let mut claims = claims(&["a"], &["a"]);
        claims.as_object_mut().expect("object").remove("iss");
        claims
    });
    let bad_token = format!("{}x", &subscriber_token[..subscriber_token.len() - 1]);
    let url = server.url("/subscribe/a");
    for (http, token) in [
        (client(), &subscriber_token),
        (client(), &bad_token),
        (h2_client(), &subscriber_token),
        (h2_client(), &bad_token),
    ] {
        for request in [
            http.get(&url)
                .header("authorization", format!("Bearer {token}")),
            http.get(&url)
                .header("cookie", format!("ssegate_token={token}")),
            http.get(format!("{url}?access_token={token}")),
        ] {
            let response = request
                .timeout(Duration::from_millis(300))
                .send()
                .await
                .expect("subscribe");
            let _ = response.bytes().await;
        }
    }
    let http = client();
    for token in [
        &subscriber_token,
        &"static-publish-secret-value".to_string(),
    ] {
        let status = http
            .post(server.url("/publish/a"))
            .header("authorization", format!("Bearer {token}"))
            .body("x")
            .send()
            .await
            .expect("publish")
            .status();
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    // ssegate's debug lines are there; h2's are capped at info (a
    // malformed path it would quote may hold a query token).
    assert!(
        log.contains("DEBUG") && log.contains("request refused"),
        "debug logs on"
    );
    assert!(!log.contains(" h2::"), "h2 logs below info");
    for (what, secret) in [
        ("subscriber token", subscriber_token.as_str()),
        ("bad token", bad_token.as_str()),
        // The signature part alone, in case a token were logged in pieces.
        (
            "signature",
            subscriber_token.rsplit('.').next().expect("signature"),
        ),
        ("publish token", "static-publish-secret-value"),
    ] {
        assert!(!log.contains(secret), "the {what} appears in the log");
    }
}

#[tokio::test]
async fn the_topic_api_shows_a_jwt_only_the_topics_it_may_publish_to() {
    let server = TestServer::start(jwt_config()).await;
    for topic in ["orders/1", "orders/2", "users/1"] {
        publish(&server, topic, "x").await;
    }
    let granted = hs256(&claims(&[], &["orders/**"]));
    let get = |path: &str| {
        client()
            .get(server.url(path))
            .header("authorization", format!("Bearer {granted}"))
            .send()
    };
    let json = |response: reqwest::Response| async move {
        serde_json::from_str::<Value>(&response.text().await.expect("body")).expect("JSON")
    };
    let page = json(get("/topics").await.expect("page")).await;
    let names: Vec<&str> = page["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|topic| topic["topic"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["orders/1", "orders/2"]);
    let one = get("/topics/orders/2").await.expect("one");
    assert_eq!(one.status(), 200);
    let other = get("/topics/users/1").await.expect("other");
    assert_eq!(other.status(), 403);
    assert_eq!(other.headers()["www-authenticate"], SCOPE);
    // A page asked for one topic at a time still skips what is not granted.
    let page = json(get("/topics?limit=1&after=orders/2").await.expect("page")).await;
    assert_eq!(page["topics"].as_array().expect("topics").len(), 0);
    assert_eq!(page["next_after"], Value::Null);
}
