//! `AppState`: the handle every request handler gets.
//!
//! Cloning it costs one reference count. It holds the shared owners (the
//! registry, the metrics, the shutdown observer) and what is derived from the
//! configuration once at start-up rather than per request.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

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
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    pub fn is_ready(&self) -> bool {
        !self.shutdown.is_shutdown()
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
