//! Shutdown: the OS signals that start it, and the handles that observe it.
//!
//! `channel()` returns the one `ShutdownTrigger` (deliberately not `Clone`:
//! exactly one owner, `server::run`, decides when shutdown moves on) and a
//! `Shutdown` handle that anyone may clone.
//!
//! Shutdown runs in two stages, so that a publish in flight at the signal is
//! finished and still reaches every stream it is counted for:
//!
//! 1. `begin()`: `/readyz` turns 503, and new subscribes and new publishes
//!    are refused. A publish whose handler started before holds a
//!    `PublishInFlight` and goes on; `publishes_finished()` waits for the
//!    last of them.
//! 2. `end_streams()`: every stream writes what it is owed and ends;
//!    background loops stop. Streams check `streams_ending()` on every poll,
//!    which is one atomic load.
//!
//! The rule "no publish starts after `begin()` is not refused" is kept here,
//! between `publish_started` and `publishes_finished`: a publish counts
//! itself in before it looks at the flag, and the trigger sets the flag
//! before it looks at the count (both `SeqCst`), so either the publish sees
//! the flag or the trigger sees the publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    /// Stage 1 has begun.
    begun: AtomicBool,
    /// Stage 2 has begun.
    streams_ending: AtomicBool,
    /// Publishes whose handler started before stage 1 and has not returned.
    publishes_in_flight: AtomicUsize,
    /// Woken at each stage and when the last publish in flight finishes;
    /// every waiter looks at its own condition again.
    notify: Notify,
}

impl Inner {
    async fn wait_until(&self, done: impl Fn(&Inner) -> bool) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the condition is read, so a change in
            // between still wakes us.
            notified.as_mut().enable();
            if done(self) {
                return;
            }
            notified.await;
        }
    }
}

/// Moves shutdown through its stages; held by `server::run` only.
#[derive(Debug)]
pub struct ShutdownTrigger {
    inner: Arc<Inner>,
}

/// Observes shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

/// A publish that started before shutdown began; dropped when its handler
/// returns. Stage 2 waits for every one of them (bounded by the caller).
#[derive(Debug)]
#[must_use = "the publish counts as in flight only while this is held"]
pub struct PublishInFlight {
    inner: Arc<Inner>,
}

impl Drop for PublishInFlight {
    fn drop(&mut self) {
        let before = self
            .inner
            .publishes_in_flight
            .fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.inner.begun.load(Ordering::SeqCst) {
            self.inner.notify.notify_waiters();
        }
    }
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let inner = Arc::new(Inner::default());
    (
        ShutdownTrigger {
            inner: Arc::clone(&inner),
        },
        Shutdown { inner },
    )
}

impl ShutdownTrigger {
    /// Stage 1: readiness off, new subscribes and publishes refused.
    pub fn begin(&self) {
        self.inner.begun.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Resolves once no publish that started before `begin()` is still
    /// running. Call it after `begin()`, under a deadline: a publish whose
    /// body trickles in would otherwise hold the shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn publishes_finished(&self) {
        self.inner
            .wait_until(|inner| inner.publishes_in_flight.load(Ordering::SeqCst) == 0)
            .await;
    }

    /// How many publishes are in flight now (for the log).
    pub fn n_publishes_in_flight(&self) -> usize {
        self.inner.publishes_in_flight.load(Ordering::SeqCst)
    }

    /// Stage 2: streams write what they are owed and end; background loops
    /// stop. Implies stage 1.
    pub fn end_streams(&self) {
        self.inner.begun.store(true, Ordering::SeqCst);
        self.inner.streams_ending.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }
}

impl Shutdown {
    /// Stage 1 has begun: the node takes no new subscriber or publish.
    pub fn has_begun(&self) -> bool {
        self.inner.begun.load(Ordering::SeqCst)
    }

    /// Stage 2 has begun: streams must end.
    pub fn streams_ending(&self) -> bool {
        self.inner.streams_ending.load(Ordering::SeqCst)
    }

    /// Counts a publish in, or `None` when shutdown has begun and the
    /// publish must be refused. Hold the guard until the reply is decided.
    pub fn publish_started(&self) -> Option<PublishInFlight> {
        // Counted in first, then the flag: see the module's rule.
        self.inner
            .publishes_in_flight
            .fetch_add(1, Ordering::SeqCst);
        let guard = PublishInFlight {
            inner: Arc::clone(&self.inner),
        };
        (!self.has_begun()).then_some(guard)
    }

    /// Resolves once stage 2 has begun.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn streams_end(&self) {
        self.inner
            .wait_until(|inner| inner.streams_ending.load(Ordering::SeqCst))
            .await;
    }
}

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C elsewhere), logging which.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "shutdown requested");
            }
            _ => {
                tracing::warn!("cannot install signal handlers; falling back to Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn streams_end_returns_after_end_streams_even_if_late() {
        let (trigger, shutdown) = channel();
        assert!(!shutdown.streams_ending());
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.streams_end().await }
        });
        trigger.begin();
        assert!(shutdown.has_begun() && !shutdown.streams_ending());
        trigger.end_streams();
        waiter.await.expect("waiter task");
        // A wait that starts after the trigger returns at once.
        shutdown.streams_end().await;
        assert!(shutdown.streams_ending());
    }

    #[tokio::test]
    async fn a_publish_started_before_begin_is_waited_for_and_later_ones_are_refused() {
        let (trigger, shutdown) = channel();
        let in_flight = shutdown.publish_started().expect("before shutdown");
        trigger.begin();
        assert!(shutdown.publish_started().is_none(), "refused after begin");
        assert_eq!(trigger.n_publishes_in_flight(), 1, "the refused one left");
        let finished =
            tokio::time::timeout(Duration::from_millis(50), trigger.publishes_finished());
        assert!(finished.await.is_err(), "still in flight");
        let waiter = tokio::spawn(async move { trigger.publishes_finished().await });
        tokio::task::yield_now().await;
        drop(in_flight);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken when the last publish finished")
            .expect("waiter task");
    }

    #[tokio::test]
    async fn with_no_publish_in_flight_the_wait_returns_at_once() {
        let (trigger, shutdown) = channel();
        drop(shutdown.publish_started());
        trigger.begin();
        trigger.publishes_finished().await;
    }
}
