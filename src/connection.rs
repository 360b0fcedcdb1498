//! `ConnectionState`: what one client connection's parts tell each other.
//!
//! The service (which sees requests), the response bodies (which know when a
//! response is over) and the IO wrapper in `io.rs` (which enforces deadlines)
//! share one of these per connection. The IO wrapper reads it to know whether
//! the connection is waiting for its first request, idle between requests, or
//! busy; and, when a write stalls for `write_timeout`, how many subscriber
//! streams that disconnect drops. With HTTP/2 the parts run on different
//! tasks, hence atomics.
//!
//! HTTP/2 adds one more thing to tell: a response body whose last chunk
//! waits for the client to open its flow-control window. hyper stops polling
//! such a body, and the socket is not full, so neither the body nor the
//! socket's write deadline sees the stall; each body reports it here
//! (`StreamWatch`), and the IO wrapper, which hyper's connection task polls
//! whenever anything happens on the connection, fails the connection once a
//! chunk has waited `write_timeout`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Waker;

use slab::Slab;

use crate::client_limits::{ConnectionPermit, StreamPermit};
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct ConnectionState {
    /// Requests whose response is not finished yet.
    in_flight: AtomicUsize,
    /// Requests whose head has been read, ever. A change tells the IO wrapper
    /// that a request head completed.
    n_requests: AtomicU64,
    is_http2: AtomicBool,
    /// The `n_requests` of the last request known to have no body: bytes
    /// read while it is in flight can only be the next request's head.
    bodiless_request: AtomicU64,
    open_subscriptions: AtomicUsize,
    /// The client's address, for `X-Forwarded-For` on forward authorization.
    client: Option<IpAddr>,
    /// Admitted past `max_connections` into a probe slot: answered health
    /// checks and metrics only (`client_limits::PROBE_SLOTS`).
    probes_only: bool,
    /// The reader parked while a request was in flight. hyper does not read
    /// again until the socket wakes it, so when the last response finishes
    /// the reader is woken here to start the keep-alive deadline.
    parked_reader: Mutex<Option<Waker>>,
    /// HTTP/2 only, made by the first `watch_stream`: boxed so that an
    /// HTTP/1 connection pays one pointer for it.
    stalls: OnceLock<Box<Mutex<Stalls>>>,
}

/// The HTTP/2 response bodies of one connection and whether each one's last
/// chunk is waiting for flow-control window.
#[derive(Debug, Default)]
struct Stalls {
    /// Per watched body: since when its last chunk has waited to be sent;
    /// `None` while the body has nothing handed out (it waits for events,
    /// or hyper took everything it gave).
    waiting_since: Slab<Option<Instant>>,
    /// The IO wrapper's task, to wake when a wait begins and no check of
    /// the stalls is due: it then arms its timer for the new wait.
    watcher: Option<Waker>,
    /// Whether the IO wrapper has a check due (it saw a wait last time).
    watcher_armed: bool,
}

/// One HTTP/2 response body's report of its chunks to the connection.
#[derive(Debug)]
pub struct StreamWatch {
    connection: Arc<ConnectionState>,
    key: usize,
    /// Mirrors this body's entry, so that a body that keeps waiting for
    /// events takes no lock per poll.
    handed_out: bool,
}

/// Marks a request in flight until dropped with its response body.
#[derive(Debug)]
pub struct InFlight(Arc<ConnectionState>);

/// Marks an open subscriber stream on this connection until dropped, and
/// holds its slot under the client's address.
#[derive(Debug)]
pub struct OpenSubscription {
    connection: Arc<ConnectionState>,
    _slot: StreamPermit,
}

/// What the IO wrapper needs to know, read in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub n_requests: u64,
    pub in_flight: usize,
    pub is_http2: bool,
    /// The latest request has no body (so what is read meanwhile is the
    /// next head).
    pub is_bodiless: bool,
}

impl ConnectionState {
    pub fn new(client: IpAddr, permit: &ConnectionPermit) -> Arc<ConnectionState> {
        Arc::new(ConnectionState {
            client: Some(client),
            probes_only: permit.probes_only(),
            ..ConnectionState::default()
        })
    }

    /// Whether this connection holds a probe slot and may be answered
    /// health checks and metrics only.
    pub fn probes_only(&self) -> bool {
        self.probes_only
    }

    /// The address the connection came from.
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// Called by the service as soon as a request head has been read.
    pub fn request_started(self: &Arc<Self>, is_http2: bool) -> InFlight {
        if is_http2 {
            self.is_http2.store(true, Ordering::SeqCst);
        }
        // In flight first: whoever sees the new request count also sees it busy.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.n_requests.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Called by the service for a request that has no body, right after
    /// `request_started`.
    pub fn request_has_no_body(&self) {
        let n_requests = self.n_requests.load(Ordering::SeqCst);
        self.bodiless_request.store(n_requests, Ordering::SeqCst);
    }

    pub fn subscription_opened(self: &Arc<Self>, slot: StreamPermit) -> OpenSubscription {
        self.open_subscriptions.fetch_add(1, Ordering::SeqCst);
        OpenSubscription {
            connection: Arc::clone(self),
            _slot: slot,
        }
    }

    pub fn open_subscriptions(&self) -> usize {
        self.open_subscriptions.load(Ordering::SeqCst)
    }

    /// Remembers `waker` to be woken when no request is in flight any more.
    pub fn park_reader(&self, waker: &Waker) {
        let mut parked = self
            .parked_reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match parked.as_ref() {
            Some(current) if current.will_wake(waker) => {}
            _ => *parked = Some(waker.clone()),
        }
    }

    /// Starts watching one HTTP/2 response body for flow-control stalls.
    pub fn watch_stream(self: &Arc<Self>) -> StreamWatch {
        let key = self.stalls().waiting_since.insert(None);
        StreamWatch {
            connection: Arc::clone(self),
            key,
            handed_out: false,
        }
    }

    /// Since when the longest-waiting chunk of this connection's HTTP/2
    /// bodies has waited for window, if one waits. When none waits, `waker`
    /// is woken as soon as one starts to.
    pub fn oldest_stall(&self, waker: &Waker) -> Option<Instant> {
        let mut stalls = self
            .stalls
            .get()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let oldest = stalls
            .waiting_since
            .iter()
            .filter_map(|(_, since)| *since)
            .min();
        stalls.watcher_armed = oldest.is_some();
        if oldest.is_none() {
            match &stalls.watcher {
                Some(current) if current.will_wake(waker) => {}
                _ => stalls.watcher = Some(waker.clone()),
            }
        }
        oldest
    }

    fn stalls(&self) -> std::sync::MutexGuard<'_, Stalls> {
        self.stalls
            .get_or_init(Box::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn activity(&self) -> Activity {
        let n_requests = self.n_requests.load(Ordering::SeqCst);
        Activity {
            n_requests,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            is_http2: self.is_http2.load(Ordering::SeqCst),
            is_bodiless: n_requests > 0
                && self.bodiless_request.load(Ordering::SeqCst) == n_requests,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let parked = self
                .0
                .parked_reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.connection
            .open_subscriptions
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl StreamWatch {
    /// The body gave hyper a chunk: hyper polls it again only once the chunk
    /// has window to go, so from now until the next poll it may be stalled.
    pub fn chunk_handed_out(&mut self) {
        self.handed_out = true;
        let mut stalls = self.connection.stalls();
        if let Some(since) = stalls.waiting_since.get_mut(self.key) {
            *since = Some(Instant::now());
        }
        // Armed only once someone is woken: an IO wrapper that has not
        // looked yet will look when hyper's connection task next reads,
        // which it does after writing this response's headers.
        if !stalls.watcher_armed
            && let Some(watcher) = stalls.watcher.take()
        {
            stalls.watcher_armed = true;
            watcher.wake();
        }
    }

    /// The body was polled again without a chunk to give: whatever it
    /// handed out before has gone.
    pub fn nothing_handed_out(&mut self) {
        if std::mem::take(&mut self.handed_out) {
            let mut stalls = self.connection.stalls();
            if let Some(since) = stalls.waiting_since.get_mut(self.key) {
                *since = None;
            }
        }
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.connection.stalls().waiting_since.try_remove(self.key);
    }
}
