//! `run`: the accept loop, one hyper connection per socket, and the drain.
//!
//! Each accepted socket gets TCP_NODELAY and keepalive, the `DeadlineIo`
//! wrapper, and hyper-util's auto builder (HTTP/1.1 and HTTP/2 with prior
//! knowledge on one port; HTTP/2 by ALPN under TLS), watched by a
//! `GracefulShutdown`. On shutdown: stop accepting, flip readiness and refuse
//! new publishes, let the publishes in flight finish, then end every
//! subscriber stream (bodies watch the flag themselves: hyper's graceful
//! shutdown waits for responses to finish, and an event stream never does),
//! and give up after `shutdown_timeout` (see `shutdown` for the two stages).

use crate::auth::Authorizer;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::Instrument;

use crate::client_limits::{ClientLimits, ConnectionPermit};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connection::ConnectionState;
use crate::http;
use crate::http::direct::{self, Peek};
use crate::http::head_refusals::HeadRefusals;
use crate::id::RunEpoch;
use crate::io::{DeadlineIo, Deadlines};
use crate::metrics::{ConnectionTimeout, Metrics};
use crate::registry::{Limits, Registry};
use crate::shutdown::{self, Shutdown};
use crate::sse::encode::retry_frame;
use crate::sse::stream::StreamSettings;
use crate::state::{AppState, Shared};
use crate::tls::{self, TlsAcceptor};

type Builder = auto::Builder<TokioExecutor>;

/// How long, at most, connections open at shutdown keep being served before
/// they are told to close (bounded by half of `shutdown_timeout`).
const READINESS_GRACE: Duration = Duration::from_secs(1);

/// Serves on `listener` until `shutdown_signal` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown_signal: impl Future<Output = ()>,
) -> io::Result<()> {
    let tls = match config.tls_files() {
        Some((cert, key)) => Some(TlsAcceptor::from_pem_files(cert, key)?),
        None => None,
    };
    let (trigger, shutdown) = shutdown::channel();
    let state = app_state(config, shutdown.clone()).await?;
    let local_addr = listener.local_addr()?;
    // Before the start line: from then on a SIGHUP must not end the process.
    let reloader = tls::spawn_reloader(tls.clone(), state.config.tls_watch_interval);
    log_start(
        &state.config,
        state.client_limits.max_connections(),
        local_addr,
    );

    let sweeper = tokio::spawn(sweep_idle_topics(state.clone()));
    let cluster_tasks = state
        .cluster
        .as_ref()
        .map(|cluster| cluster.spawn(shutdown.clone()))
        .unwrap_or_default();
    let builder = Arc::new(connection_builder(&state.config));
    let graceful = GracefulShutdown::new();
    let acceptor = Acceptor {
        state: state.clone(),
        builder,
        tls,
        graceful: &graceful,
    };
    acceptor.accept_until(&listener, shutdown_signal).await;

    drop(listener);
    trigger.begin();
    let n_connections = graceful.count();
    tracing::info!(
        n_connections,
        "shutting down: finishing publishes in flight, then ending streams"
    );
    let grace = state.config.shutdown_timeout;
    let started = Instant::now();
    let deadline = started + grace;
    // A publish whose request arrived before the signal is finished and
    // reaches every stream it counts: the streams end only after it (or
    // after half the grace, when its body trickles in; it is then refused).
    if tokio::time::timeout_at(started + grace / 2, trigger.publishes_finished())
        .await
        .is_err()
    {
        tracing::warn!(
            n_publishes = trigger.n_publishes_in_flight(),
            "publishes still in flight after half of shutdown_timeout; \
             ending streams without waiting for them"
        );
    }
    // Refused under each topic's lock from here on, so that a stream's
    // last read after it sees the shutdown finds every publish it was
    // counted for.
    state.registry.close_to_publishes();
    trigger.end_streams();
    state.registry.wake_all();
    if n_connections > 0 {
        // Connections already open keep being served for a moment (`/readyz`
        // says 503, a publish is refused, a subscribe is told to come back),
        // so a client or balancer holding one learns of the shutdown by
        // asking.
        tokio::time::sleep_until(started + READINESS_GRACE.min(grace / 2)).await;
    }
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after shutdown_timeout; closing them"
        );
    }
    sweeper.abort();
    reloader.abort();
    if let Some(cluster) = &state.cluster {
        cluster.leave().await;
    }
    cluster_tasks.iter().for_each(|task| task.abort());
    tracing::info!("shutdown complete");
    Ok(())
}

/// Builds the shared state; in cluster mode, joins the cluster first (a
/// node that cannot is refused with one line saying why).
pub(crate) async fn app_state(config: Config, shutdown: Shutdown) -> io::Result<AppState> {
    let metrics = Arc::new(Metrics::new());
    metrics.set_limits(config.max_subscribers, config.max_topics);
    let limits = Limits {
        buffer_events: config.buffer_events,
        buffer_bytes: config.buffer_bytes,
        buffer_ttl: config.buffer_ttl,
        max_buffered_bytes: config.max_buffered_bytes,
        max_topics: config.max_topics,
        max_subscribers: config.max_subscribers,
        fanout_busy_period: config.fanout_busy_period,
    };
    let registry = Arc::new(Registry::new(
        limits,
        RunEpoch::generate(),
        Arc::clone(&metrics),
    ));
    let auth = Authorizer::from_config(&config, Arc::clone(&metrics))
        .map_err(|problem| io::Error::other(format!("{}: {}", problem.key, problem.message)))?;
    let cluster = match config.cluster.redis_url {
        None => None,
        Some(_) => Some(
            Cluster::start(&config, Arc::clone(&registry), Arc::clone(&metrics))
                .await
                .map_err(io::Error::other)?,
        ),
    };
    Ok(AppState::new(Shared {
        client_limits: ClientLimits::new(&config),
        retry_frame: retry_frame(config.retry),
        stream_settings: StreamSettings {
            heartbeat_interval: config.heartbeat_interval,
            max_chunk_bytes: config.connection_buffer_bytes,
        },
        config,
        registry,
        metrics,
        shutdown,
        status_viewers: crate::status::Viewers::default(),
        cluster,
        auth,
    }))
}

fn log_start(config: &Config, max_connections: usize, local_addr: SocketAddr) {
    tracing::info!(
        listen = %local_addr,
        tls = config.tls_files().is_some(),
        buffer_events = config.buffer_events,
        buffer_ttl = ?config.buffer_ttl,
        max_event_bytes = config.max_event_bytes,
        max_subscribers = config.max_subscribers,
        max_topics = config.max_topics,
        // The configured value, or lower to fit the open-file limit.
        max_connections,
        heartbeat_interval = ?config.heartbeat_interval,
        write_timeout = ?config.write_timeout,
        cluster = config.cluster.redis_url.is_some(),
        "ssegate listening"
    );
}

fn connection_builder(config: &Config) -> Builder {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `DeadlineIo` enforces the head deadlines as the contract words them.
        .header_read_timeout(None)
        .max_buf_size(config.connection_buffer_bytes)
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.http2_keep_alive_interval)
        .keep_alive_timeout(config.http2_keep_alive_timeout)
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(config.http2_max_header_list_bytes)
        // Rapid-reset protections (CVE-2023-44487, RUSTSEC-2024-0003): a
        // client that resets or provokes resets faster than this gets GOAWAY.
        .max_pending_accept_reset_streams(config.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(config.http2_max_local_error_reset_streams)
        .max_send_buf_size(config.connection_buffer_bytes);
    builder
}

/// How often a failing `accept` (out of descriptors, say) is logged.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Everything the accept loop hands to each new connection.
struct Acceptor<'a> {
    state: AppState,
    builder: Arc<Builder>,
    tls: Option<TlsAcceptor>,
    graceful: &'a GracefulShutdown,
}

impl Acceptor<'_> {
    /// Accepts until `shutdown_signal` resolves. An accept error (out of file
    /// descriptors, say) is logged and retried after a growing pause; it never
    /// ends the loop.
    async fn accept_until(
        &self,
        listener: &TcpListener,
        shutdown_signal: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown_signal);
        let mut backoff = Duration::from_millis(5);
        // Out of descriptors, every accept fails until a connection closes:
        // one warning, then one every `ACCEPT_WARNING_EVERY` with the count.
        let mut last_warned: Option<Instant> = None;
        let mut n_unwarned = 0u64;
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown_signal => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    self.serve(stream, peer);
                }
                Err(err) => {
                    n_unwarned += 1;
                    if last_warned.is_none_or(|at| at.elapsed() >= ACCEPT_WARNING_EVERY) {
                        tracing::warn!(
                            cause = %err,
                            ?backoff,
                            failures = n_unwarned,
                            "accept failed; retrying"
                        );
                        last_warned = Some(Instant::now());
                        n_unwarned = 0;
                    }
                    tokio::select! {
                        () = &mut shutdown_signal => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        // Before anything is read: a refused connection is closed at once.
        let permit = match self.state.client_limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                self.state.metrics.connection_refused(refusal);
                tracing::debug!(client.addr = %peer, reason = refusal.label(), "connection refused");
                return;
            }
        };
        let config = &self.state.config;
        configure_socket(&stream, config);
        let accepted = Accepted {
            stream,
            accepted_at: Instant::now(),
            connection: ConnectionState::new(peer.ip(), &permit),
            deadlines: Deadlines {
                first_request: config.first_request_timeout,
                header_read: config.header_read_timeout,
                keep_alive: config.keep_alive_timeout,
                write: config.write_timeout,
            },
            state: self.state.clone(),
            builder: Arc::clone(&self.builder),
            watcher: self.graceful.watcher(),
        };
        let gauge = ConnectionGauge::open(Arc::clone(&self.state.metrics), permit);
        // Separate task types, not one future with a `match`: a future is as
        // large as its largest state, and a TLS session is kilobytes that
        // every plain-text connection would otherwise carry. The span costs a
        // little on every poll, so connections only get one when debug logs
        // are on.
        match (self.tls.clone(), tracing::enabled!(tracing::Level::DEBUG)) {
            (None, false) => spawn(with_gauge(gauge, serve_plain(accepted))),
            (None, true) => {
                let span = tracing::debug_span!("connection", client.addr = %peer);
                spawn(with_gauge(gauge, serve_plain(accepted)).instrument(span))
            }
            (Some(tls), _) => {
                let span = tracing::debug_span!("connection", client.addr = %peer);
                spawn(with_gauge(gauge, serve_tls(accepted, tls)).instrument(span))
            }
        }
    }
}

fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(task);
}

/// One accepted connection and everything serving it needs.
struct Accepted {
    stream: TcpStream,
    accepted_at: Instant,
    connection: Arc<ConnectionState>,
    deadlines: Deadlines,
    state: AppState,
    builder: Arc<Builder>,
    watcher: Watcher,
}

/// Runs `serve`, keeping the connection counted until it ends.
async fn with_gauge(gauge: ConnectionGauge, serve: impl Future<Output = ()>) {
    let _gauge = gauge;
    serve.await;
}

/// A plain-text connection: a subscribe on HTTP/1.1 is served directly
/// (`http::direct`), everything else by hyper.
async fn serve_plain(accepted: Accepted) {
    let first_request_deadline = accepted.accepted_at + accepted.deadlines.first_request;
    // A probe slot's connection is answered by `http::handle`, which
    // refuses all but health checks and metrics.
    let peeked = match accepted.connection.probes_only() {
        true => Peek::Other,
        false => direct::peek_subscribe(&accepted.stream, first_request_deadline).await,
    };
    let opened = match peeked {
        Peek::TimedOut => {
            let metrics = &accepted.state.metrics;
            metrics.connection_timed_out(ConnectionTimeout::FirstRequest);
            tracing::debug!("closing connection: no complete request head in time");
            return;
        }
        // Boxed: a task is as large as its largest state, and opening
        // (with a cluster resume's reads) would size every direct stream's
        // task for the rest of its life.
        Peek::Subscribe { request, head_len } => {
            Box::pin(direct::open(
                &request,
                head_len,
                &accepted.state,
                &accepted.connection,
            ))
            .await
        }
        Peek::Other => None,
    };
    let Accepted {
        stream,
        accepted_at,
        connection,
        deadlines,
        state,
        builder,
        watcher,
    } = accepted;
    let metrics = Arc::clone(&state.metrics);
    let io = DeadlineIo::new(
        stream,
        Arc::clone(&connection),
        metrics,
        deadlines,
        accepted_at,
    );
    match opened {
        Some(direct::Answer::Stream(opened)) => {
            // Held until the stream ends, so the shutdown drain waits for it.
            let _watcher = watcher;
            opened.serve(io).await;
        }
        Some(direct::Answer::Refused(refusal)) => refusal.serve(io).await,
        // Boxed, so that a direct stream's task carries a pointer here rather
        // than room for hyper's connection state.
        None => Box::pin(serve_connection(builder, io, state, connection, watcher)).await,
    }
}

/// A TLS connection: the handshake (bounded by the first-request deadline of
/// `DeadlineIo`), then hyper, HTTP/2 or HTTP/1.1 as ALPN decided.
async fn serve_tls(accepted: Accepted, tls: TlsAcceptor) {
    let Accepted {
        stream,
        accepted_at,
        connection,
        deadlines,
        state,
        builder,
        watcher,
    } = accepted;
    let metrics = Arc::clone(&state.metrics);
    let io = DeadlineIo::new(
        stream,
        Arc::clone(&connection),
        metrics,
        deadlines,
        accepted_at,
    );
    match tls.accept(io).await {
        Ok(io) => serve_connection(builder, io, state, connection, watcher).await,
        Err(err) => tracing::debug!(cause = %err, "TLS handshake failed"),
    }
}

/// Serves one connection (HTTP/1.1 or HTTP/2, detected) over `io` until it
/// ends, under the graceful-shutdown `watcher`.
async fn serve_connection<T>(
    builder: Arc<Builder>,
    io: T,
    state: AppState,
    connection: Arc<ConnectionState>,
    watcher: Watcher,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_head_bytes = state.config.connection_buffer_bytes;
    let metrics = Arc::clone(&state.metrics);
    let service = service_fn(move |req| {
        let state = state.clone();
        let connection = Arc::clone(&connection);
        async move { http::handle(req, state, connection).await }
    });
    let io = HeadRefusals::new(io, max_head_bytes, metrics);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(conn).await {
        tracing::debug!(cause = %err, "connection ended with an error");
    }
}

fn configure_socket(stream: &TcpStream, config: &Config) {
    // Events are written as soon as they exist; Nagle would only add delay.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(cause = %err, "cannot set TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(config.tcp_keepalive)
        .with_interval(config.tcp_keepalive.min(Duration::from_secs(10)));
    if let Err(err) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(cause = %err, "cannot enable TCP keepalive");
    }
    // Left to autotuning, the kernel grows the send buffer of a subscriber
    // that stopped reading to `tcp_wmem`'s maximum (4 MiB by default): a
    // thousand such readers pin gigabytes of kernel memory, shared with every
    // other socket, and `write_timeout` only starts once that buffer is full.
    if config.socket_send_buffer_bytes > 0
        && let Err(err) = socket.set_send_buffer_size(config.socket_send_buffer_bytes)
    {
        tracing::debug!(cause = %err, "cannot set SO_SNDBUF");
    }
    // A subscriber that does not read leaves everything written to it unsent
    // (its window is closed): this bounds that part, whatever the buffer,
    // so the kernel tells the gateway it is stuck after 64 KiB instead of
    // half a megabyte. A reader far away is not slowed: bytes in flight do
    // not count.
    #[cfg(target_os = "linux")]
    if config.socket_unsent_bytes > 0 {
        let lowat = u32::try_from(config.socket_unsent_bytes).unwrap_or(u32::MAX);
        if let Err(err) = socket.set_tcp_notsent_lowat(lowat) {
            tracing::debug!(cause = %err, "cannot set TCP_NOTSENT_LOWAT");
        }
    }
    // A peer that vanished without FIN or RST leaves heartbeats unacknowledged
    // in the send buffer, which never fills and suspends keepalive probes:
    // only this bounds how long such a subscriber is kept (about one
    // heartbeat plus `write_timeout`, instead of the kernel's ~15 minutes).
    #[cfg(target_os = "linux")]
    if let Err(err) = socket.set_tcp_user_timeout(Some(config.write_timeout)) {
        tracing::debug!(cause = %err, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Keeps `ssegate_connections` and the connection's slot in
/// `ClientLimits` right on every way a connection task ends, including
/// being dropped when the runtime stops.
struct ConnectionGauge {
    metrics: Arc<Metrics>,
    _permit: ConnectionPermit,
}

impl ConnectionGauge {
    fn open(metrics: Arc<Metrics>, permit: ConnectionPermit) -> ConnectionGauge {
        metrics.connection_opened();
        ConnectionGauge {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Expires events and removes idle topics, a few times per `buffer_ttl`.
async fn sweep_idle_topics(state: AppState) {
    let period =
        (state.config.buffer_ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let n_removed = state.registry.sweep(Instant::now());
                if n_removed > 0 {
                    tracing::debug!(n_removed, "removed idle topics");
                }
            }
            () = state.shutdown.streams_end() => return,
        }
    }
}
