//! `DeadlineIo`: the connection deadlines hyper does not enforce the way the
//! contract words them, enforced on the socket itself.
//!
//! - `first_request_timeout`, from accept to the end of the first request
//!   head. hyper-util's auto h1/h2 detection has no deadline at all, and a TLS
//!   handshake runs under this one too, since this wrapper sits below TLS.
//! - `header_read_timeout`, from the first byte of each HTTP/1 request head
//!   to its end, the first head included: a first head is cut at whichever
//!   of the two deadlines comes first. A head pipelined behind a request
//!   without a body is timed from its first byte too, though hyper parses
//!   it only once the response before it is done. hyper's own timer starts when it
//!   *begins waiting* for a head, which would also cut idle keep-alive
//!   connections; that job belongs to the next deadline, so hyper's is
//!   switched off.
//! - `keep_alive_timeout`, a connection idle between requests: for HTTP/1
//!   from the end of a response to the next head's first byte, for HTTP/2
//!   while no stream is open, whatever frames (PINGs) it exchanges meanwhile,
//!   so that an HTTP/2 connection answering PINGs is not held forever.
//! - `write_timeout`: a socket that accepts no byte for this long fails the
//!   connection. hyper stops polling a response body while its buffer is
//!   full, so a stuck subscriber is invisible from the body; here it is not.
//!   On HTTP/2 a stream can also stall with the socket writable, its
//!   flow-control window shut: a chunk that waits that long for window
//!   fails the connection too (`ConnectionState::oldest_stall`). hyper gives
//!   no way to reset one stream from outside its body, and the body is not
//!   polled while it waits, so the whole connection goes; its clients
//!   reconnect with their `Last-Event-ID`.
//!
//! A deadline that fires returns `TimedOut` from the next read or write, and
//! hyper drops the connection. Timers are allocated only when first needed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::connection::ConnectionState;
use crate::metrics::{ConnectionTimeout, DropReason, Metrics};

/// The four deadlines, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub first_request: Duration,
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub write: Duration,
}

/// Where the connection is in its request cycle, as far as reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    FirstRequest {
        deadline: Instant,
        /// Which deadline `deadline` is: `FirstRequest` until the first
        /// byte arrives, then `HeaderRead` if that one comes sooner.
        kind: ConnectionTimeout,
        /// Whether a byte of the first head has arrived.
        head_started: bool,
    },
    InRequest,
    Idle {
        deadline: Instant,
    },
    ReadingHead {
        deadline: Instant,
    },
    /// HTTP/2 with no stream open: closed at `deadline` unless a request
    /// comes; frames read meanwhile (PINGs, SETTINGS) do not move it.
    Http2Idle {
        deadline: Instant,
    },
}

pub struct DeadlineIo<T> {
    inner: T,
    connection: Arc<ConnectionState>,
    metrics: Arc<Metrics>,
    deadlines: Deadlines,
    phase: Phase,
    n_requests_seen: u64,
    /// HTTP/1: when the first byte of a pipelined head was read, while the
    /// request before it was still in flight; its `header_read_timeout`
    /// runs from then, not from the end of that request's response.
    pipelined_head_since: Option<Instant>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// When the pending write times out; `None` while writes make progress.
    write_stall_deadline: Option<Instant>,
    /// A deadline fired; every later call fails the same way. Atomic only
    /// so that `record_write_timeout` takes `&self`: a direct stream's
    /// socket is shared with fan-outs and never lent mutably (`sink`).
    timed_out: AtomicBool,
}

impl<T> DeadlineIo<T> {
    /// Wraps a socket accepted at `accepted_at`, when the first-request
    /// deadline started.
    pub fn new(
        inner: T,
        connection: Arc<ConnectionState>,
        metrics: Arc<Metrics>,
        deadlines: Deadlines,
        accepted_at: Instant,
    ) -> DeadlineIo<T> {
        DeadlineIo {
            inner,
            connection,
            metrics,
            phase: Phase::FirstRequest {
                deadline: accepted_at + deadlines.first_request,
                kind: ConnectionTimeout::FirstRequest,
                head_started: false,
            },
            deadlines,
            n_requests_seen: 0,
            pipelined_head_since: None,
            read_timer: None,
            write_timer: None,
            write_stall_deadline: None,
            timed_out: AtomicBool::new(false),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Catches up with what the service and bodies reported.
    fn update_phase(&mut self) {
        let activity = self.connection.activity();
        if activity.n_requests != self.n_requests_seen {
            self.n_requests_seen = activity.n_requests;
            self.phase = Phase::InRequest;
            self.pipelined_head_since = None;
        }
        if self.phase == Phase::InRequest && activity.in_flight == 0 {
            let deadline = Instant::now() + self.deadlines.keep_alive;
            self.phase = match (activity.is_http2, self.pipelined_head_since.take()) {
                (true, _) => Phase::Http2Idle { deadline },
                (false, None) => Phase::Idle { deadline },
                (false, Some(since)) => Phase::ReadingHead {
                    deadline: since + self.deadlines.header_read,
                },
            };
        }
    }

    fn on_bytes_read(&mut self) {
        match self.phase {
            Phase::InRequest if self.pipelined_head_since.is_none() => {
                // Bytes during a request without a body: the next head has
                // begun (hyper parses it only once this response is done).
                let activity = self.connection.activity();
                if !activity.is_http2 && activity.is_bodiless {
                    self.pipelined_head_since = Some(Instant::now());
                }
            }
            Phase::Idle { .. } => {
                self.phase = Phase::ReadingHead {
                    deadline: Instant::now() + self.deadlines.header_read,
                };
            }
            Phase::FirstRequest {
                deadline,
                head_started: false,
                ..
            } => {
                let head_deadline = Instant::now() + self.deadlines.header_read;
                self.phase = match head_deadline < deadline {
                    true => Phase::FirstRequest {
                        deadline: head_deadline,
                        kind: ConnectionTimeout::HeaderRead,
                        head_started: true,
                    },
                    false => Phase::FirstRequest {
                        deadline,
                        kind: ConnectionTimeout::FirstRequest,
                        head_started: true,
                    },
                };
            }
            _ => {}
        }
    }

    fn read_deadline(&self) -> Option<(Instant, ConnectionTimeout)> {
        match self.phase {
            Phase::FirstRequest { deadline, kind, .. } => Some((deadline, kind)),
            Phase::Idle { deadline } => Some((deadline, ConnectionTimeout::KeepAlive)),
            Phase::ReadingHead { deadline } => Some((deadline, ConnectionTimeout::HeaderRead)),
            Phase::Http2Idle { deadline } => Some((deadline, ConnectionTimeout::KeepAlive)),
            Phase::InRequest => None,
        }
    }

    /// Polls the read deadline; `Ready` means it fired.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionTimeout> {
        if !matches!(self.phase, Phase::Http2Idle { .. } | Phase::Idle { .. }) {
            // hyper reads again only when woken; the end of the last response
            // in flight wakes it here, so that `Idle` starts on time.
            self.connection.park_reader(cx.waker());
        }
        let Some((deadline, kind)) = self.read_deadline().or_else(|| self.stall_deadline(cx))
        else {
            return Poll::Pending;
        };
        ready!(poll_deadline(&mut self.read_timer, deadline, cx));
        if kind == ConnectionTimeout::Write {
            tracing::debug!("closing connection: an HTTP/2 stream's window stayed shut");
            self.record_write_timeout();
            return Poll::Ready(kind);
        }
        self.timed_out.store(true, Ordering::Relaxed);
        self.metrics.connection_timed_out(kind);
        tracing::debug!(deadline = ?kind, "closing connection: deadline passed");
        Poll::Ready(kind)
    }

    /// While HTTP/2 requests are in flight: when the oldest chunk waiting
    /// for flow-control window will have waited `write_timeout`. A client
    /// that stops opening a stream's window stops hyper polling its body
    /// while the socket stays writable, so this is the write deadline of
    /// HTTP/2 streams.
    fn stall_deadline(&self, cx: &Context<'_>) -> Option<(Instant, ConnectionTimeout)> {
        if self.phase != Phase::InRequest {
            return None;
        }
        let since = self.connection.oldest_stall(cx.waker())?;
        Some((since + self.deadlines.write, ConnectionTimeout::Write))
    }

    /// Called when a write returned `Pending`; `Ready` means the socket has
    /// accepted nothing for `write_timeout`.
    fn poll_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let write_timeout = self.deadlines.write;
        let deadline = *self
            .write_stall_deadline
            .get_or_insert_with(|| Instant::now() + write_timeout);
        ready!(poll_deadline(&mut self.write_timer, deadline, cx));
        self.record_write_timeout();
        Poll::Ready(())
    }

    /// Counts a connection lost to a stalled write, and the subscribers it
    /// carried. The kernel can get there first (`TCP_USER_TIMEOUT` is set to
    /// `write_timeout` too, for peers that vanished): same verdict, same count.
    pub fn record_write_timeout(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
        self.metrics.connection_timed_out(ConnectionTimeout::Write);
        let n_dropped = self.connection.open_subscriptions();
        if n_dropped > 0 {
            self.metrics
                .subscribers_dropped(DropReason::WriteTimeout, n_dropped);
            tracing::info!(
                reason = "write_timeout",
                n_subscribers = n_dropped,
                "dropped slow subscriber: socket accepted nothing for write_timeout"
            );
        }
    }

    fn is_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    fn write_progress(&mut self) {
        self.write_stall_deadline = None;
    }
}

/// `Ready` once `deadline` has passed. The timer is allocated on first use and
/// never moved later on the way: a timer-wheel update per request would cost
/// more than the request. A timer left at an earlier deadline fires early and
/// is moved then.
fn poll_deadline(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() > deadline {
        sleep.as_mut().reset(deadline);
    }
    loop {
        ready!(sleep.as_mut().poll(cx));
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        sleep.as_mut().reset(deadline);
    }
}

fn timed_out_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection deadline passed")
}

impl<T: std::os::fd::AsRawFd> std::os::fd::AsRawFd for DeadlineIo<T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_timed_out() {
            return Poll::Ready(Err(timed_out_error()));
        }
        this.update_phase();
        let n_before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > n_before {
                    this.on_bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => match this.poll_read_deadline(cx) {
                Poll::Ready(_) => Poll::Ready(Err(timed_out_error())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> DeadlineIo<T> {
    /// Runs one write-side operation under the write deadline.
    fn guard_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.is_timed_out() {
            return Poll::Ready(Err(timed_out_error()));
        }
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::TimedOut => {
                self.record_write_timeout();
                Poll::Ready(Err(err))
            }
            Poll::Ready(result) => {
                self.write_progress();
                Poll::Ready(result)
            }
            Poll::Pending => match self.poll_write_stall(cx) {
                Poll::Ready(()) => Poll::Ready(Err(timed_out_error())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard_write(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard_write(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .guard_write(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
