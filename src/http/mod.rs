//! HTTP: routing and the handlers behind each endpoint.
//!
//! `handle` is the whole service: every refusal is an `ApiError` turned into
//! a response (for an `EventSource` refused for a reason that will pass, a
//! `200` telling it when to come back), it counts the request on its
//! connection, adds CORS headers on the publish and subscribe endpoints, and
//! counts the response.
//!
//! `direct` answers plain-text HTTP/1.1 subscribes without hyper; everything
//! else comes through `handle`.
//!
//! Routes: `POST /publish/{topic}`, `GET /subscribe/{topic}`,
//! `GET /subscribe?topic=..`, `OPTIONS` on both (preflight), `GET /metrics`,
//! `GET /healthz`, `GET /readyz`, and the status page: `GET /` and
//! `GET /status/events`. Anything else is 404, or 405 with `Allow`
//! on a known path.

mod access_log;
mod batch;
pub mod body;
mod cors;
pub mod direct;
pub mod head_refusals;
mod ops;
mod publish;
pub(crate) mod query;
pub mod reply;
pub(crate) mod subscribe;
mod topics;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Method, Request, Version};

use crate::client_limits::ConnectionRefusal;
use crate::connection::ConnectionState;
use crate::error::{ApiError, Fault};
use crate::metrics::Route;
use crate::state::AppState;
use reply::HttpResponse;

/// The endpoint a path belongs to, whatever the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Healthz,
    Readyz,
    Metrics,
    /// The topic as written after `/publish/`, or `None` for bare `/publish`.
    Publish(Option<&'a str>),
    Subscribe(Option<&'a str>),
    StatusPage,
    StatusEvents,
    /// The topic API: `/topics` (a page) or `/topics/{topic}`.
    Topics(Option<&'a str>),
}

impl<'a> Endpoint<'a> {
    fn of(path: &'a str) -> Option<Endpoint<'a>> {
        // An empty topic (`/publish/`) counts as no topic: "missing" says more.
        let topic_after = |prefix: &str| {
            path.strip_prefix(prefix)
                .map(|t| Some(t).filter(|t| !t.is_empty()))
        };
        match path {
            "/healthz" => Some(Endpoint::Healthz),
            "/readyz" => Some(Endpoint::Readyz),
            "/metrics" => Some(Endpoint::Metrics),
            "/" => Some(Endpoint::StatusPage),
            "/status/events" => Some(Endpoint::StatusEvents),
            "/publish" => Some(Endpoint::Publish(None)),
            "/subscribe" => Some(Endpoint::Subscribe(None)),
            "/topics" => Some(Endpoint::Topics(None)),
            _ => topic_after("/publish/")
                .map(Endpoint::Publish)
                .or_else(|| topic_after("/subscribe/").map(Endpoint::Subscribe))
                .or_else(|| topic_after("/topics/").map(Endpoint::Topics)),
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Healthz
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::StatusPage
            | Endpoint::Topics(_) => "GET, HEAD",
            Endpoint::StatusEvents => "GET",
            Endpoint::Publish(_) => "POST, OPTIONS",
            Endpoint::Subscribe(_) => "GET, OPTIONS",
        }
    }

    fn route(self) -> Route {
        match self {
            Endpoint::Healthz | Endpoint::Readyz => Route::Health,
            Endpoint::Metrics => Route::Metrics,
            Endpoint::Publish(_) => Route::Publish,
            Endpoint::Subscribe(_) => Route::Subscribe,
            Endpoint::StatusPage | Endpoint::StatusEvents => Route::Status,
            Endpoint::Topics(_) => Route::Topics,
        }
    }

    /// What a connection in a probe slot may ask for (`client_limits`).
    fn is_probe(self) -> bool {
        matches!(
            self,
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics
        )
    }

    fn has_cors(self) -> bool {
        matches!(self, Endpoint::Publish(_) | Endpoint::Subscribe(_))
    }
}

/// Serves one request; every refusal is a response, so it never fails.
pub async fn handle(
    req: Request<Incoming>,
    state: AppState,
    connection: Arc<ConnectionState>,
) -> Result<HttpResponse, std::convert::Infallible> {
    let started = std::time::Instant::now();
    let is_http2 = req.version() == Version::HTTP_2;
    let in_flight = connection.request_started(is_http2);
    let (head, body) = req.into_parts();
    if hyper::body::Body::is_end_stream(&body) {
        connection.request_has_no_body();
    }
    let endpoint = Endpoint::of(head.uri.path());
    let allow_origin = endpoint
        .filter(|endpoint| endpoint.has_cors())
        .and_then(|_| cors::allow_origin(&head.headers, &state.config.cors_allowed_origins));
    let result = match endpoint {
        None => Err(ApiError::NotFound),
        Some(endpoint) if connection.probes_only() && !endpoint.is_probe() => {
            state
                .metrics
                .connection_refused(ConnectionRefusal::MaxConnections);
            Err(ApiError::ConnectionLimit {
                max: state.client_limits.max_connections(),
            })
        }
        Some(endpoint) => dispatch(endpoint, &head, body, &state, &connection).await,
    };
    let is_stream = matches!(
        endpoint,
        Some(Endpoint::Subscribe(_) | Endpoint::StatusEvents)
    );
    let mut response = result.unwrap_or_else(|err| {
        if matches!(endpoint, Some(Endpoint::Subscribe(_))) {
            subscribe::count_refusal(&err, &state);
        }
        // An `EventSource` treats any status but 200 as final: told to
        // come back instead, when the refusal will pass.
        if is_stream && err.temporary_reason().is_some() && subscribe::wants_event_stream(&head) {
            tracing::debug!(status = 200, reason = %err, "stream refused for now");
            return reply::temporary_refusal(&err, &state);
        }
        match err.fault() {
            Fault::Client => {
                tracing::debug!(status = err.status(), reason = %err, "request refused")
            }
            Fault::Capacity => {
                tracing::warn!(status = err.status(), reason = %err, "request refused")
            }
        }
        reply::error(&err)
    });
    if let Some(allow_origin) = &allow_origin {
        cors::decorate(response.headers_mut(), allow_origin);
    }
    // A probe slot serves one request: the next probe opens its own.
    if connection.probes_only() && !is_http2 {
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let route = endpoint.map_or(Route::Other, Endpoint::route);
    state
        .metrics
        .response_sent(route, response.status().as_str(), started);
    if state.config.access_log {
        access_log::record(
            &head,
            response.status().as_u16(),
            route,
            connection.client(),
            started,
            state.auth_query_param(),
        );
    }
    response.body_mut().hold(in_flight);
    if is_http2 {
        response.body_mut().watch_flow(connection.watch_stream());
    }
    Ok(response)
}

async fn dispatch(
    endpoint: Endpoint<'_>,
    head: &Parts,
    body: Incoming,
    state: &AppState,
    connection: &Arc<ConnectionState>,
) -> Result<HttpResponse, ApiError> {
    let status_page = matches!(endpoint, Endpoint::StatusPage | Endpoint::StatusEvents);
    if status_page && !state.config.serves_status_page() {
        return Err(ApiError::NotFound);
    }
    match (endpoint, head.method.clone()) {
        (Endpoint::Healthz, Method::GET | Method::HEAD) => Ok(ops::healthz()),
        (Endpoint::Readyz, Method::GET | Method::HEAD) => Ok(ops::readyz(state)),
        (Endpoint::Metrics, Method::GET | Method::HEAD) => Ok(ops::metrics(state)),
        (Endpoint::StatusPage, Method::GET | Method::HEAD) => Ok(ops::status_page()),
        (Endpoint::StatusEvents, Method::GET) => ops::status_events(state),
        (Endpoint::Publish(topic), Method::POST) => match topic {
            Some(topic) => publish::handle(head, body, topic, state).await,
            None => Err(ApiError::MissingTopic {
                usage: "/publish/<topic>",
            }),
        },
        (Endpoint::Topics(None), Method::GET | Method::HEAD) => topics::page(head, state).await,
        (Endpoint::Topics(Some(topic)), Method::GET | Method::HEAD) => {
            topics::one(head, topic, state).await
        }
        (Endpoint::Subscribe(topic), Method::GET) => {
            subscribe::handle(head, topic, state, connection).await
        }
        (Endpoint::Publish(_) | Endpoint::Subscribe(_), Method::OPTIONS) => cors::preflight(
            &head.headers,
            &state.config.cors_allowed_origins,
            endpoint.allow(),
        ),
        (endpoint, _) => Err(ApiError::MethodNotAllowed {
            allow: endpoint.allow(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::of("/publish/a/b"),
            Some(Endpoint::Publish(Some("a/b")))
        );
        assert_eq!(Endpoint::of("/publish/"), Some(Endpoint::Publish(None)));
        assert_eq!(Endpoint::of("/subscribe"), Some(Endpoint::Subscribe(None)));
        assert_eq!(Endpoint::of("/subscribex"), None);
        assert_eq!(Endpoint::of("/"), Some(Endpoint::StatusPage));
        assert_eq!(Endpoint::of("/status"), None);
        assert_eq!(Endpoint::of("/metrics/"), None);
        assert_eq!(Endpoint::of("/topics"), Some(Endpoint::Topics(None)));
        assert_eq!(
            Endpoint::of("/topics/orders/42"),
            Some(Endpoint::Topics(Some("orders/42")))
        );
        assert_eq!(Endpoint::of("/topicsx"), None);
    }
}
