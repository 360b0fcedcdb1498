//! `ConnectionState`: what one client connection's parts tell each other.
//!
//! The service (which sees requests), the response bodies (which know when a
//! response is over) and the IO wrapper in `io.rs` (which enforces deadlines)
//! share one of these per connection. The IO wrapper reads it to know whether
//! the connection is waiting for its first request, idle between requests, or
//! busy; and, when a write stalls for `write_timeout`, how many subscriber
//! streams that disconnect drops. With HTTP/2 the parts run on different
//! tasks, hence atomics.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

#[derive(Debug, Default)]
pub struct ConnectionState {
    /// Requests whose response is not finished yet.
    in_flight: AtomicUsize,
    /// Requests whose head has been read, ever. A change tells the IO wrapper
    /// that a request head completed.
    n_requests: AtomicU64,
    is_http2: AtomicBool,
    open_subscriptions: AtomicUsize,
    /// The client's address, for `X-Forwarded-For` on forward authorization.
    client: Option<IpAddr>,
    /// The reader parked while a request was in flight. hyper does not read
    /// again until the socket wakes it, so when the last response finishes
    /// the reader is woken here to start the keep-alive deadline.
    parked_reader: Mutex<Option<Waker>>,
}

/// Marks a request in flight until dropped with its response body.
#[derive(Debug)]
pub struct InFlight(Arc<ConnectionState>);

/// Marks an open subscriber stream on this connection until dropped.
#[derive(Debug)]
pub struct OpenSubscription(Arc<ConnectionState>);

/// What the IO wrapper needs to know, read in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub n_requests: u64,
    pub in_flight: usize,
    pub is_http2: bool,
}

impl ConnectionState {
    pub fn new(client: IpAddr) -> Arc<ConnectionState> {
        Arc::new(ConnectionState {
            client: Some(client),
            ..ConnectionState::default()
        })
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

    pub fn subscription_opened(self: &Arc<Self>) -> OpenSubscription {
        self.open_subscriptions.fetch_add(1, Ordering::SeqCst);
        OpenSubscription(Arc::clone(self))
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

    pub fn activity(&self) -> Activity {
        let n_requests = self.n_requests.load(Ordering::SeqCst);
        Activity {
            n_requests,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            is_http2: self.is_http2.load(Ordering::SeqCst),
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
        self.0.open_subscriptions.fetch_sub(1, Ordering::SeqCst);
    }
}
