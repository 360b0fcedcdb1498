//! CORS on the publish and subscribe endpoints: preflights, and the
//! `Access-Control-Allow-Origin` header on responses, errors included.

mod common;

use common::{TestServer, client, config};

const APP: &str = "https://app.example";

async fn server_allowing(origins: &[&str]) -> TestServer {
    let mut config = config();
    config.cors_allowed_origins = origins.iter().map(|o| o.to_string()).collect();
    TestServer::start(config).await
}

#[tokio::test]
async fn preflight_for_an_allowed_origin() {
    let server = server_allowing(&[APP]).await;
    for (path, method, allowed) in [
        ("/publish/t", "POST", "POST, OPTIONS"),
        ("/subscribe/t", "GET", "GET, OPTIONS"),
        ("/subscribe?topic=t", "GET", "GET, OPTIONS"),
    ] {
        let response = client()
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("Origin", APP)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, last-event-id",
            )
            .send()
            .await
            .expect("preflight");
        assert_eq!(response.status(), 204, "{path}");
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], APP);
        assert_eq!(headers["access-control-allow-methods"], allowed);
        assert_eq!(
            headers["access-control-allow-headers"],
            "authorization, content-type, last-event-id"
        );
        assert!(headers.contains_key("access-control-max-age"));
    }
}

#[tokio::test]
async fn preflight_for_another_origin_is_refused() {
    let server = server_allowing(&[APP]).await;
    let response = client()
        .request(reqwest::Method::OPTIONS, server.url("/publish/t"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(response.status(), 403);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_eq!(response.text().await.expect("body"), "origin not allowed\n");
}

#[tokio::test]
async fn responses_and_errors_carry_the_allowed_origin() {
    let server = server_allowing(&[APP, "https://other.example"]).await;
    let subscribe = client()
        .get(server.url("/subscribe/t"))
        .header("Origin", APP)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(subscribe.status(), 200);
    assert_eq!(subscribe.headers()["access-control-allow-origin"], APP);
    assert_eq!(subscribe.headers()["vary"], "Origin");

    for (request, status) in [
        (client().post(server.url("/publish/t")).body("x"), 200),
        (
            client().post(server.url("/publish/bad%20topic")).body("x"),
            400,
        ),
        (client().get(server.url("/subscribe")), 400),
        (client().get(server.url("/publish/t")), 405),
    ] {
        let response = request
            .header("Origin", APP)
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["access-control-allow-origin"], APP);
    }

    let unlisted = client()
        .post(server.url("/publish/t"))
        .header("Origin", "https://evil.example")
        .body("x")
        .send()
        .await
        .expect("publish");
    assert!(
        !unlisted
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn a_wildcard_allows_every_origin() {
    let server = server_allowing(&["*"]).await;
    let response = client()
        .get(server.url("/subscribe/t"))
        .header("Origin", "https://anyone.example")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn without_configuration_there_are_no_cors_headers() {
    let server = server_allowing(&[]).await;
    let response = client()
        .get(server.url("/subscribe/t"))
        .header("Origin", APP)
        .send()
        .await
        .expect("subscribe");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let plain_options = client()
        .request(reqwest::Method::OPTIONS, server.url("/publish/t"))
        .send()
        .await
        .expect("options");
    assert_eq!(plain_options.status(), 204);
    assert_eq!(plain_options.headers()["allow"], "POST, OPTIONS");
}
