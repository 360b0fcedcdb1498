//! Shutdown: the OS signals that start it, and the handles that observe it.
//!
//! `channel()` returns the one `ShutdownTrigger` (deliberately not `Clone`:
//! exactly one owner, `server::run`, decides when shutdown starts) and a
//! `Shutdown` handle that anyone may clone. Subscriber streams check
//! `is_shutdown()` on every poll, which is one atomic load; background loops
//! `wait()` for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    started: AtomicBool,
    notify: Notify,
}

/// Starts shutdown; held by `server::run` only.
#[derive(Debug)]
pub struct ShutdownTrigger {
    inner: Arc<Inner>,
}

/// Observes shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
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
    /// Marks shutdown as started and wakes every `wait()`er.
    pub fn trigger(&self) {
        self.inner.started.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has started.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a trigger in between
            // still wakes us.
            notified.as_mut().enable();
            if self.is_shutdown() {
                return;
            }
            notified.await;
        }
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
    use super::*;

    #[tokio::test]
    async fn wait_returns_after_trigger_even_if_late() {
        let (trigger, shutdown) = channel();
        assert!(!shutdown.is_shutdown());
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
        trigger.trigger();
        waiter.await.expect("waiter task");
        // A wait that starts after the trigger returns at once.
        shutdown.wait().await;
        assert!(shutdown.is_shutdown());
    }
}
