//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use crate::http::reply::{self, HttpResponse};
use crate::state::AppState;

/// `200` while the process runs.
pub fn healthz() -> HttpResponse {
    reply::text(StatusCode::OK, "ok")
}

/// `200` while subscribers are accepted, `503` once shutdown has started.
pub fn readyz(state: &AppState) -> HttpResponse {
    match state.is_ready() {
        true => reply::text(StatusCode::OK, "ready"),
        false => reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn readiness_flips_when_shutdown_starts_and_health_does_not() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let state = crate::server::app_state(Config::default(), shutdown);
        assert_eq!(readyz(&state).status(), StatusCode::OK);
        trigger.trigger();
        assert_eq!(readyz(&state).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(healthz().status(), StatusCode::OK);
    }
}
