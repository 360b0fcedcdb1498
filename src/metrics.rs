//! `Metrics`: the one owner of every Prometheus metric.
//!
//! Built once in `run`, passed down in an `Arc`, never a global, so servers
//! started side by side in one test process do not cross-talk. Other modules
//! call the named methods below and never touch a prometheus type. Labels only
//! take values from fixed sets here (never a topic or a client), and hot-path
//! counters are bumped once per batch, not once per event.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::DeniedReason;
use crate::client_limits::ConnectionRefusal;
use crate::error::RefusalReason;

/// Why a subscriber was disconnected by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Fell so far behind that events it still needed were evicted.
    Lagged,
    /// Its socket accepted no bytes for `write_timeout`.
    WriteTimeout,
}

/// Which connection deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionTimeout {
    FirstRequest,
    HeaderRead,
    KeepAlive,
    Write,
}

/// Why a cluster publish failed (`ssegate_cluster_publish_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPublishError {
    Timeout,
    Unreachable,
    OutOfMemory,
    EpochChanged,
    Other,
}

impl ClusterPublishError {
    const ALL: [ClusterPublishError; 5] = [
        ClusterPublishError::Timeout,
        ClusterPublishError::Unreachable,
        ClusterPublishError::OutOfMemory,
        ClusterPublishError::EpochChanged,
        ClusterPublishError::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            ClusterPublishError::Timeout => "timeout",
            ClusterPublishError::Unreachable => "unreachable",
            ClusterPublishError::OutOfMemory => "oom",
            ClusterPublishError::EpochChanged => "epoch_changed",
            ClusterPublishError::Other => "error",
        }
    }
}

/// Why a cluster node reset its rings (`ssegate_cluster_resyncs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// Redis holds another epoch: it restarted empty, or another node found
    /// a loss.
    EpochChanged,
    /// This node found events it had read missing from Redis.
    DataLost,
    /// The shared log was trimmed past this node's place.
    Trimmed,
}

impl ResyncReason {
    const ALL: [ResyncReason; 3] = [
        ResyncReason::EpochChanged,
        ResyncReason::DataLost,
        ResyncReason::Trimmed,
    ];

    fn label(self) -> &'static str {
        match self {
            ResyncReason::EpochChanged => "epoch_changed",
            ResyncReason::DataLost => "data_lost",
            ResyncReason::Trimmed => "trimmed",
        }
    }
}

/// The cluster-mode metrics, registered when a node joins a cluster.
struct ClusterMetrics {
    engine_up: IntGauge,
    tail_lag: Gauge,
    tail_reconnects: IntCounter,
    resyncs: IntCounterVec,
    epoch_changes: IntCounter,
    replay_reads: IntCounter,
    replay_duration: Histogram,
    publish_errors: IntCounterVec,
}

/// The status codes whose response counters are resolved once per route.
const KNOWN_CODES: [&str; 11] = [
    "200", "204", "400", "401", "403", "404", "405", "408", "413", "431", "503",
];

/// What a response answered (`ssegate_http_responses_total{route}`,
/// `ssegate_http_request_duration_seconds{route}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Publish,
    Subscribe,
    Topics,
    /// `/metrics`.
    Metrics,
    /// `/healthz`, `/readyz`.
    Health,
    /// The status page and its feed.
    Status,
    /// Anything else (404s, hyper's refusals of bad heads).
    Other,
}

impl Route {
    pub const ALL: [Route; 7] = [
        Route::Publish,
        Route::Subscribe,
        Route::Topics,
        Route::Metrics,
        Route::Health,
        Route::Status,
        Route::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Publish => "publish",
            Route::Subscribe => "subscribe",
            Route::Topics => "topics",
            Route::Metrics => "metrics",
            Route::Health => "health",
            Route::Status => "status",
            Route::Other => "other",
        }
    }
}

/// Current gauges and counters, for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub subscribers: i64,
    pub topics: i64,
    pub connections: i64,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
}

pub struct Metrics {
    registry: Registry,
    subscribers: IntGauge,
    topics: IntGauge,
    connections: IntGauge,
    buffered_events: IntGauge,
    buffered_bytes: IntGauge,
    connections_accepted: IntCounter,
    events_published: IntCounter,
    events_delivered: IntCounter,
    events_replayed: IntCounter,
    events_fanned_out: IntCounter,
    subscriptions: IntCounter,
    gaps: IntCounter,
    heartbeats: IntCounter,
    /// `ssegate_subscribers_dropped_total{reason}`, each reason resolved.
    dropped_lagged: IntCounter,
    dropped_write_timeout: IntCounter,
    timeouts: IntCounterVec,
    responses: IntCounterVec,
    max_subscribers: IntGauge,
    max_topics: IntGauge,
    /// `responses` for each route and the codes the gateway sends,
    /// resolved on first use: a label lookup hashes on every response.
    responses_by_route: [[OnceLock<IntCounter>; KNOWN_CODES.len()]; Route::ALL.len()],
    request_duration: Vec<Histogram>,
    publish_duration: Histogram,
    auth_denied: IntCounterVec,
    subscribes_refused: IntCounterVec,
    connections_refused: IntCounterVec,
    forward_auth_duration: Histogram,
    /// Set once a node joins a cluster (`cluster_started`).
    cluster: OnceLock<ClusterMetrics>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help));
        let counter = |name: &str, help: &str| register(&registry, IntCounter::new(name, help));
        let counter_vec = |name: &str, help: &str, label: &str| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &[label]),
            )
        };
        let dropped_by_reason = counter_vec(
            "ssegate_subscribers_dropped_total",
            "Slow subscribers disconnected by the server, by reason: lagged (behind the buffer) or write_timeout (their socket took nothing).",
            "reason",
        );
        let responses = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "ssegate_http_responses_total",
                    "HTTP responses sent, by route and status code.",
                ),
                &["route", "code"],
            ),
        );
        let request_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ssegate_http_request_duration_seconds",
                    "From a request's head to its response's head, by route (a stream's time to open, not its life).",
                )
                .buckets(vec![
                    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1,
                    0.25, 1.0, 2.5, 10.0,
                ]),
                &["route"],
            ),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "ssegate_build_info",
                    "Always 1; the version label says which ssegate is running.",
                ),
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let publish_buckets = vec![
            5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1,
            1.0,
        ];
        let metrics = Metrics {
            subscribers: gauge("ssegate_subscribers", "Open subscriber streams."),
            topics: gauge("ssegate_topics", "Topics currently held in memory."),
            connections: gauge("ssegate_connections", "Open client connections."),
            buffered_events: gauge(
                "ssegate_buffered_events",
                "Events held in topic ring buffers (updated at scrape).",
            ),
            buffered_bytes: gauge(
                "ssegate_buffered_bytes",
                "Encoded bytes held in topic ring buffers (updated at scrape).",
            ),
            connections_accepted: counter(
                "ssegate_connections_accepted_total",
                "Client connections accepted.",
            ),
            events_published: counter("ssegate_events_published_total", "Events published."),
            events_delivered: counter(
                "ssegate_events_delivered_total",
                "Events written to subscribers, replays included.",
            ),
            events_replayed: counter(
                "ssegate_events_replayed_total",
                "Events written to subscribers from the buffer on resume.",
            ),
            events_fanned_out: counter(
                "ssegate_events_fanned_out_total",
                "Events written to subscribers by their publisher directly, without waking the stream (included in delivered).",
            ),
            subscriptions: counter("ssegate_subscriptions_total", "Subscriber streams opened."),
            gaps: counter(
                "ssegate_gaps_total",
                "gap events sent because a resume id could not be honoured exactly.",
            ),
            heartbeats: counter("ssegate_heartbeats_total", "Heartbeat comments sent."),
            dropped_lagged: dropped_by_reason.with_label_values(&["lagged"]),
            dropped_write_timeout: dropped_by_reason.with_label_values(&["write_timeout"]),
            timeouts: counter_vec(
                "ssegate_connection_timeouts_total",
                "Connections closed by a deadline, by deadline.",
                "deadline",
            ),
            responses,
            publish_duration: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ssegate_publish_duration_seconds",
                        "Time to encode, append and fan out one published event.",
                    )
                    .buckets(publish_buckets),
                ),
            ),
            max_subscribers: gauge(
                "ssegate_max_subscribers",
                "The max_subscribers limit, for alerts on how close ssegate_subscribers is.",
            ),
            max_topics: gauge(
                "ssegate_max_topics",
                "The max_topics limit, for alerts on how close ssegate_topics is.",
            ),
            responses_by_route: Default::default(),
            request_duration: Route::ALL
                .iter()
                .map(|route| request_duration.with_label_values(&[route.label()]))
                .collect(),
            auth_denied: counter_vec(
                "ssegate_auth_denied_total",
                "Subscribes and publishes refused by authorization, by reason.",
                "reason",
            ),
            subscribes_refused: counter_vec(
                "ssegate_subscribes_refused_total",
                "Subscribes refused for a reason that will pass (an EventSource is told to come back), by reason.",
                "reason",
            ),
            connections_refused: counter_vec(
                "ssegate_connections_refused_total",
                "Connections closed at accept, before anything was read, by the limit that was full.",
                "reason",
            ),
            forward_auth_duration: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ssegate_forward_auth_duration_seconds",
                        "Time the application took to answer a forward authorization request (cache hits excluded).",
                    )
                    .buckets(vec![
                        1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                        1.0, 2.5, 5.0,
                    ]),
                ),
            ),
            cluster: OnceLock::new(),
            registry,
        };
        for reason in ["lagged", "write_timeout"] {
            dropped_by_reason.with_label_values(&[reason]);
        }
        // Each route's 200s show from the start (other codes when they
        // first happen), so the family is never missing from a scrape.
        for route in Route::ALL {
            metrics.response_counter(route, 0);
        }
        // Every deadline and reason shows from the start, at 0, so that
        // alerts and dashboards see the series before the first one.
        for deadline in ["first_request", "header_read", "keep_alive", "write"] {
            metrics.timeouts.with_label_values(&[deadline]);
        }
        for reason in DeniedReason::ALL {
            metrics.auth_denied.with_label_values(&[reason.label()]);
        }
        for reason in RefusalReason::ALL {
            metrics
                .subscribes_refused
                .with_label_values(&[reason.label()]);
        }
        for reason in ConnectionRefusal::ALL {
            metrics
                .connections_refused
                .with_label_values(&[reason.label()]);
        }
        #[cfg(target_os = "linux")]
        // Process CPU, memory and file descriptors, read from /proc at scrape.
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(err) = metrics.registry.register(Box::new(process)) {
            tracing::warn!(cause = %err, "process metrics unavailable");
        }
        metrics
    }

    /// Exposes the configured limits next to the gauges they bound.
    pub fn set_limits(&self, max_subscribers: usize, max_topics: usize) {
        self.max_subscribers
            .set(i64::try_from(max_subscribers).unwrap_or(i64::MAX));
        self.max_topics
            .set(i64::try_from(max_topics).unwrap_or(i64::MAX));
    }

    pub fn subscriber_opened(&self) {
        self.subscribers.inc();
        self.subscriptions.inc();
    }

    pub fn subscriber_closed(&self) {
        self.subscribers.dec();
    }

    pub fn topic_created(&self) {
        self.topics.inc();
    }

    pub fn topic_removed(&self) {
        self.topics.dec();
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_accepted.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn event_published(&self, took: Duration) {
        self.events_published.inc();
        self.publish_duration.observe(took.as_secs_f64());
    }

    /// A batch of `n_events` published in one step: each counts as an
    /// event, the time is observed once, for the one append it was.
    pub fn batch_published(&self, n_events: usize, took: Duration) {
        self.events_published.inc_by(n_events as u64);
        self.publish_duration.observe(took.as_secs_f64());
    }

    /// Counts one batch written to one subscriber.
    pub fn delivered(&self, n_events: usize, n_replayed: usize) {
        self.events_delivered.inc_by(n_events as u64);
        if n_replayed > 0 {
            self.events_replayed.inc_by(n_replayed as u64);
        }
    }

    /// Counts events a publisher wrote to parked subscribers itself
    /// (`fanout`): delivered, without a wake.
    pub fn fanned_out(&self, n_events: usize) {
        self.events_delivered.inc_by(n_events as u64);
        self.events_fanned_out.inc_by(n_events as u64);
    }

    /// A subscribe or publish refused by authorization.
    pub fn auth_denied(&self, reason: DeniedReason) {
        self.auth_denied.with_label_values(&[reason.label()]).inc();
    }

    /// A connection closed at accept (`ClientLimits::admit`).
    pub fn connection_refused(&self, reason: ConnectionRefusal) {
        self.connections_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// A subscribe refused for now (`ApiError::temporary_reason`).
    pub fn subscribe_refused(&self, reason: RefusalReason) {
        self.subscribes_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn forward_auth_answered(&self, took: Duration) {
        self.forward_auth_duration.observe(took.as_secs_f64());
    }

    pub fn gap_sent(&self) {
        self.gaps.inc();
    }

    pub fn heartbeat_sent(&self) {
        self.heartbeats.inc();
    }

    pub fn subscribers_dropped(&self, reason: DropReason, n: usize) {
        let n = n as u64;
        match reason {
            DropReason::Lagged => self.dropped_lagged.inc_by(n),
            DropReason::WriteTimeout => self.dropped_write_timeout.inc_by(n),
        }
    }

    pub fn connection_timed_out(&self, deadline: ConnectionTimeout) {
        let label = match deadline {
            ConnectionTimeout::FirstRequest => "first_request",
            ConnectionTimeout::HeaderRead => "header_read",
            ConnectionTimeout::KeepAlive => "keep_alive",
            ConnectionTimeout::Write => "write",
        };
        self.timeouts.with_label_values(&[label]).inc();
    }

    /// Counts a response by its route and three-digit status code, and the
    /// time from its request's head (`started`) to now.
    pub fn response_sent(&self, route: Route, code: &str, started: std::time::Instant) {
        self.response_counted(route, code);
        self.request_duration[route as usize].observe(started.elapsed().as_secs_f64());
    }

    /// Counts a response whose request was never timed (hyper refused its
    /// head).
    pub fn response_counted(&self, route: Route, code: &str) {
        match KNOWN_CODES.iter().position(|known| *known == code) {
            Some(i) => self.response_counter(route, i).inc(),
            None => self
                .responses
                .with_label_values(&[route.label(), code])
                .inc(),
        }
    }

    /// The counter of `route` and `KNOWN_CODES[code]`, made on first use.
    fn response_counter(&self, route: Route, code: usize) -> &IntCounter {
        self.responses_by_route[route as usize][code].get_or_init(|| {
            self.responses
                .with_label_values(&[route.label(), KNOWN_CODES[code]])
        })
    }

    /// Registers the cluster metrics, every labelled series at 0 so that
    /// alerts and dashboards see them before the first event.
    pub fn cluster_started(&self) {
        let registry = &self.registry;
        let cluster = self.cluster.get_or_init(|| {
            let counter = |name: &str, help: &str| register(registry, IntCounter::new(name, help));
            let counter_vec = |name: &str, help: &str| {
                register(
                    registry,
                    IntCounterVec::new(Opts::new(name, help), &["reason"]),
                )
            };
            ClusterMetrics {
                engine_up: register(
                    registry,
                    IntGauge::new(
                        "ssegate_cluster_engine_up",
                        "1 while Redis answered this node's last report, else 0.",
                    ),
                ),
                tail_lag: register(
                    registry,
                    Gauge::new(
                        "ssegate_cluster_tail_lag_seconds",
                        "How far this node's delivery is behind the newest event in Redis.",
                    ),
                ),
                tail_reconnects: counter(
                    "ssegate_cluster_tail_reconnects_total",
                    "Times this node's tail of the shared log reconnected to Redis.",
                ),
                resyncs: counter_vec(
                    "ssegate_cluster_resyncs_total",
                    "Times this node reset its buffers and ended its streams, by reason.",
                ),
                epoch_changes: counter(
                    "ssegate_cluster_epoch_changes_total",
                    "Times this node moved to a new cluster epoch.",
                ),
                replay_reads: counter(
                    "ssegate_cluster_replay_reads_total",
                    "Topic streams read from Redis to resume subscribers.",
                ),
                replay_duration: register(
                    registry,
                    Histogram::with_opts(
                        HistogramOpts::new(
                            "ssegate_cluster_replay_read_duration_seconds",
                            "Time to read a resuming subscriber's topics from Redis.",
                        )
                        .buckets(vec![1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0]),
                    ),
                ),
                publish_errors: counter_vec(
                    "ssegate_cluster_publish_errors_total",
                    "Publishes Redis did not store (or may not have), by reason.",
                ),
            }
        });
        cluster.engine_up.set(1);
        for reason in ResyncReason::ALL {
            cluster.resyncs.with_label_values(&[reason.label()]);
        }
        for reason in ClusterPublishError::ALL {
            cluster.publish_errors.with_label_values(&[reason.label()]);
        }
    }

    pub fn cluster_engine_up(&self, up: bool) {
        if let Some(cluster) = self.cluster.get() {
            cluster.engine_up.set(i64::from(up));
        }
    }

    pub fn cluster_tail_lag(&self, lag_ms: u64) {
        if let Some(cluster) = self.cluster.get() {
            cluster.tail_lag.set(lag_ms as f64 / 1000.0);
        }
    }

    pub fn cluster_tail_reconnected(&self) {
        if let Some(cluster) = self.cluster.get() {
            cluster.tail_reconnects.inc();
        }
    }

    pub fn cluster_resynced(&self, reason: ResyncReason) {
        if let Some(cluster) = self.cluster.get() {
            cluster.resyncs.with_label_values(&[reason.label()]).inc();
        }
    }

    pub fn cluster_epoch_changed(&self) {
        if let Some(cluster) = self.cluster.get() {
            cluster.epoch_changes.inc();
        }
    }

    /// A resume read `n_topics` topic streams from Redis in `took`.
    pub fn cluster_replay_read(&self, n_topics: usize, took: Duration) {
        if let Some(cluster) = self.cluster.get() {
            cluster.replay_reads.inc_by(n_topics as u64);
            cluster.replay_duration.observe(took.as_secs_f64());
        }
    }

    pub fn cluster_publish_failed(&self, reason: ClusterPublishError) {
        if let Some(cluster) = self.cluster.get() {
            cluster
                .publish_errors
                .with_label_values(&[reason.label()])
                .inc();
        }
    }

    /// The figures the status page shows, read without a scrape.
    pub fn totals(&self) -> Totals {
        Totals {
            subscribers: self.subscribers.get(),
            topics: self.topics.get(),
            connections: self.connections.get(),
            published: self.events_published.get(),
            delivered: self.events_delivered.get(),
            dropped: self.dropped_lagged.get() + self.dropped_write_timeout.get(),
        }
    }

    /// The text exposition, with the buffer gauges set from `buffered`
    /// (events, bytes) first.
    pub fn render(&self, buffered: (usize, usize)) -> String {
        self.buffered_events.set(buffered.0 as i64);
        self.buffered_bytes.set(buffered.1 as i64);
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding well-formed families into a Vec cannot fail; an error would
        // only truncate the scrape, never take the server down.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(cause = %err, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers a metric created from fixed, valid options. Failure would mean
/// two metrics share a name: a bug in this file, caught by every test run.
fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric options are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_metrics_show_from_the_start_with_every_reason() {
        let metrics = Metrics::new();
        assert!(!metrics.render((0, 0)).contains("ssegate_cluster_"));
        metrics.cluster_started();
        metrics.cluster_started();
        let text = metrics.render((0, 0));
        for name in [
            "ssegate_cluster_engine_up 1",
            "ssegate_cluster_tail_lag_seconds 0",
            "ssegate_cluster_tail_reconnects_total 0",
            "ssegate_cluster_resyncs_total{reason=\"trimmed\"} 0",
            "ssegate_cluster_resyncs_total{reason=\"data_lost\"} 0",
            "ssegate_cluster_resyncs_total{reason=\"epoch_changed\"} 0",
            "ssegate_cluster_epoch_changes_total 0",
            "ssegate_cluster_replay_reads_total 0",
            "ssegate_cluster_publish_errors_total{reason=\"timeout\"} 0",
            "ssegate_cluster_publish_errors_total{reason=\"oom\"} 0",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
    }

    #[test]
    fn the_readme_documents_every_metric() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Metrics\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Metrics section");
        let metrics = Metrics::new();
        metrics.cluster_started();
        let text = metrics.render((0, 0));
        for name in text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .filter(|name| name.starts_with("ssegate_"))
        {
            assert!(
                section.contains(&format!("`{name}`")) || section.contains(&format!("`{name}{{")),
                "README's Metrics section lacks {name}"
            );
        }
    }

    #[test]
    fn every_contract_metric_is_exposed() {
        let metrics = Metrics::new();
        metrics.event_published(Duration::from_micros(20));
        let text = metrics.render((0, 0));
        for name in [
            "ssegate_subscribers ",
            "ssegate_topics ",
            "ssegate_events_published_total 1",
            "ssegate_events_delivered_total ",
            "ssegate_events_replayed_total ",
            "ssegate_subscribers_dropped_total{reason=\"lagged\"} 0",
            "ssegate_subscribers_dropped_total{reason=\"write_timeout\"} 0",
            "ssegate_build_info{version=",
            "ssegate_publish_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
    }
}
