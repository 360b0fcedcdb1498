//! `AppState`: the handle every request handler gets.
//!
//! Cloning it costs one reference count. It holds the shared owners (the
//! registry, the metrics, the shutdown observer) and what is derived from the
//! configuration once at start-up rather than per request.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::Authorizer;
use crate::client_limits::ClientLimits;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::sse::stream::StreamSettings;
use crate::status::Viewers;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Doubles as readiness: `/readyz` is 503 once shutdown has started.
    pub shutdown: Shutdown,
    /// The `retry:` field every stream starts with, encoded once.
    pub retry_frame: Bytes,
    pub stream_settings: StreamSettings,
    /// Open status-page feeds (`status`).
    pub status_viewers: Viewers,
    /// Cluster mode: publishes go to Redis, resumes may read from it.
    pub cluster: Option<Arc<Cluster>>,
    /// `[auth]` and `publish_token`: who may subscribe and publish.
    pub auth: Authorizer,
    /// Connections held, and connections and streams per client address.
    pub client_limits: Arc<ClientLimits>,
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// The query parameter a subscriber token may come in, if that source
    /// is on (the access log redacts it).
    pub fn auth_query_param(&self) -> Option<&str> {
        Some(self.config.auth.query_param.as_str()).filter(|name| !name.is_empty())
    }

    /// Why this node should not get new subscribers now, if it should not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.shutdown.has_begun() {
            return Some("shutting down");
        }
        let lagging = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| !cluster.is_ready());
        lagging.then_some("delivery lags Redis by more than cluster.max_tail_lag")
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
