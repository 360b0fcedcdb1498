//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, and the status
//! page (`/` and its feed, `/status/events`).

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use crate::error::ApiError;
use crate::http::body::ResponseBody;
use crate::http::reply::{self, HttpResponse};
use crate::http::subscribe::STREAM_HEADERS;
use crate::state::AppState;
use crate::status::{self, StatusStream};

/// `200` while the process runs.
pub fn healthz() -> HttpResponse {
    reply::text(StatusCode::OK, "ok")
}

/// `200` while subscribers are accepted, `503` once shutdown has started
/// (or, in cluster mode, while this node's delivery lags Redis).
pub fn readyz(state: &AppState) -> HttpResponse {
    match state.not_ready() {
        None => reply::text(StatusCode::OK, "ready"),
        Some(reason) => reply::text(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// The Prometheus text exposition.
pub fn metrics(state: &AppState) -> HttpResponse {
    let text = state.metrics.render(state.registry.buffered());
    let mut response = reply::text(StatusCode::OK, text.trim_end());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /`: the status page (routing has checked `status_page`).
pub fn status_page() -> HttpResponse {
    let mut response = hyper::Response::new(ResponseBody::full(status::PAGE));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /status/events`: the page's feed, one snapshot a second.
pub fn status_events(state: &AppState) -> Result<HttpResponse, ApiError> {
    let stream = StatusStream::open(state)?;
    let mut response = hyper::Response::new(ResponseBody::status(stream));
    for (name, value) in STREAM_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn readiness_flips_when_shutdown_starts_and_health_does_not() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let state = crate::server::app_state(Config::default(), shutdown)
            .await
            .expect("single node");
        assert_eq!(readyz(&state).status(), StatusCode::OK);
        trigger.begin();
        assert_eq!(readyz(&state).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(healthz().status(), StatusCode::OK);
    }
}
