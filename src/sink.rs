//! `Sink`: a direct stream's socket, shared between the stream's task and
//! its topic's fan-outs; `SharedSocket`, the only way to make one.
//!
//! Why: a fan-out writes a new event straight to the sockets of the streams
//! waiting at the head of their topic, without waking them (see
//! `topic::fanout`). That needs the socket's descriptor outside the task that
//! owns the socket, so this module keeps the two rules that make it safe,
//! and nothing outside it can break them:
//!
//! - **One writer at a time.** The sink's state says who may write: the task
//!   while it is `TASK`, one fan-out while it is `WRITING`. A fan-out can
//!   only send through a `SinkWrite`, which exists only while the state is
//!   `WRITING` and which it got by moving the state from `PARKED`.
//! - **The descriptor is closed only after the sink is `CLOSED`.** The
//!   socket is owned by a `SharedSocket`, which never gives it away or lends
//!   it mutably (so it cannot be swapped out and closed early), and whose
//!   `Drop` moves the sink to `CLOSED`, waiting out a send in progress,
//!   before the socket is dropped. A `CLOSED` sink is never written.
//!
//! ```text
//!            task parks at head                 fan-out claims
//!   TASK ───────────────────────────► PARKED ─────────────────► WRITING
//!    ▲  ◄─────────────────────────────  │  ◄──── wrote in full ───┘ │
//!    │        task claims back          │                           │
//!    └──── fan-out hands over (and wakes the task) ◄────────────────┘
//!          (socket full, partial write, error, loss, or asked for)
//! ```
//!
//! The task claims the socket back whenever it is polled; if a fan-out is
//! writing at that moment, it marks the sink `WANTED` and the fan-out hands
//! over when done. `CLOSED` is set only from a state in which no fan-out
//! writes.
//!
//! A `loom` model of claim, park, write and close checks both rules and the
//! wake-up on hand-over (`model` below; `.ci/run` runs it through the
//! `tests/loom_sink` package).

use std::io;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;

use self::sync::{AtomicU8, AtomicU64, Mutex, MutexGuard, Ordering::SeqCst, yield_now};

#[cfg(not(loom))]
use tokio::time::Instant;

#[cfg(loom)]
use std::time::Instant;

/// The task owns the socket (it may write).
const TASK: u8 = 0;
/// The task waits at the head of the topic; a fan-out may claim the socket.
const PARKED: u8 = 1;
/// A fan-out is writing to the socket.
const WRITING: u8 = 2;
/// A fan-out is writing, and the task has asked for the socket back.
const WRITING_WANTED: u8 = 3;
/// The socket is about to be closed: nobody writes any more.
const CLOSED: u8 = 4;

/// What a fan-out's `send` goes to: the socket's descriptor (in the model, a
/// fake socket that checks who writes when).
#[cfg(not(loom))]
type Target = std::os::fd::RawFd;
#[cfg(loom)]
type Target = Arc<model::FakeSocket>;

/// A socket whose writes its task shares with the fan-outs of its topic.
///
/// The socket stays inside: the task reads and writes it through `&self`
/// (`get_ref`) or the `AsyncRead`/`AsyncWrite` forwarding below, and it is
/// closed when this is dropped, after the sink is `CLOSED`.
#[derive(Debug)]
pub struct SharedSocket<S> {
    sink: Arc<Sink>,
    socket: S,
}

impl<S: AsTarget> SharedSocket<S> {
    /// Takes `socket` over; its sink starts owned by the task.
    pub fn new(socket: S) -> SharedSocket<S> {
        SharedSocket {
            sink: Arc::new(Sink::new(socket.target())),
            socket,
        }
    }
}

impl<S> SharedSocket<S> {
    /// The sink to lend to the topic while the stream waits at its head.
    pub fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }

    pub fn get_ref(&self) -> &S {
        &self.socket
    }
}

impl<S> Drop for SharedSocket<S> {
    /// Shuts fan-outs out before the socket (a later field drop) closes.
    fn drop(&mut self) {
        self.sink.close();
    }
}

/// What `SharedSocket::new` needs of a socket: where a fan-out sends.
pub trait AsTarget {
    fn target(&self) -> Target;
}

#[cfg(not(loom))]
impl<T: std::os::fd::AsRawFd> AsTarget for T {
    fn target(&self) -> Target {
        self.as_raw_fd()
    }
}

/// The socket's side shared with fan-outs.
#[derive(Debug)]
pub struct Sink {
    target: Target,
    state: AtomicU8,
    /// Every event of the topic up to this sequence number has been written
    /// to the socket (in full, or its rest is in `handover`). Set by the task
    /// when it parks, advanced by each fan-out that writes.
    cursor: AtomicU64,
    /// When a fan-out last wrote, as nanoseconds after `clock_origin()`
    /// (0: never), so that the stream's heartbeat counts fan-out writes as
    /// activity.
    last_write_nanos: AtomicU64,
    /// The task to wake when a fan-out hands the socket over.
    waker: Mutex<Option<Waker>>,
    /// Boxed: rare, and every open stream has a sink.
    handover: Mutex<Option<Box<Handover>>>,
}

/// The instant `Sink::last_write_nanos` counts from.
fn clock_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// What a fan-out left for the task when it handed the socket over.
#[derive(Debug)]
pub enum Handover {
    /// The unwritten end of a frame: it must go out before anything else.
    Rest(Bytes),
    /// The write failed; the task ends the stream for this reason.
    Failed(io::ErrorKind),
}

/// What the task learns when it claims the socket back.
#[derive(Debug)]
pub enum Claim {
    /// The task owns the socket. `cursor` is how far the stream has been
    /// written, `last_write` when a fan-out last wrote to it (if ever), and
    /// `handover` anything a fan-out left to finish.
    Owned {
        cursor: u64,
        last_write: Option<Instant>,
        handover: Option<Handover>,
    },
    /// A fan-out is writing; it will hand the socket over and wake the task.
    Busy,
}

impl Sink {
    fn new(target: Target) -> Sink {
        // Fixed before any write, so every write time is after it.
        clock_origin();
        Sink {
            target,
            state: AtomicU8::new(TASK),
            cursor: AtomicU64::new(0),
            last_write_nanos: AtomicU64::new(0),
            waker: Mutex::new(None),
            handover: Mutex::new(None),
        }
    }

    /// Whether a fan-out may claim this sink now (read under the topic lock
    /// by an append).
    pub fn is_parked(&self) -> bool {
        self.state.load(SeqCst) == PARKED
    }

    /// How far the socket has been written (see `cursor`).
    pub fn cursor(&self) -> u64 {
        self.cursor.load(SeqCst)
    }

    /// Task side: takes the socket back before the task writes or reads its
    /// stream.
    pub fn claim(&self) -> Claim {
        let mut state = self.state.load(SeqCst);
        loop {
            let next = match state {
                TASK | CLOSED => break,
                PARKED => TASK,
                WRITING => WRITING_WANTED,
                _ => return Claim::Busy,
            };
            match self.state.compare_exchange(state, next, SeqCst, SeqCst) {
                Ok(_) if next == TASK => break,
                Ok(_) => return Claim::Busy,
                Err(actual) => state = actual,
            }
        }
        let nanos = self.last_write_nanos.load(SeqCst);
        Claim::Owned {
            cursor: self.cursor.load(SeqCst),
            last_write: (nanos > 0).then(|| clock_origin() + Duration::from_nanos(nanos)),
            handover: lock(&self.handover).take().map(|handover| *handover),
        }
    }

    /// Task side: the stream has written everything up to `cursor` and waits
    /// for more, its waker parked in the topic; fan-outs may write from now
    /// on. Only the task that claimed the sink calls this.
    pub fn park(&self, cursor: u64, waker: &Waker) {
        {
            let mut slot = lock(&self.waker);
            match &*slot {
                Some(parked) if parked.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.cursor.store(cursor, SeqCst);
        // Only from `TASK`: a closed sink stays closed.
        let _ = self.state.compare_exchange(TASK, PARKED, SeqCst, SeqCst);
    }

    /// Fan-out side: takes the socket if the sink is parked. Only one
    /// `SinkWrite` can exist at a time, and only while the sink is
    /// `WRITING`, so its sends never race the task's writes or the close.
    pub fn begin_write(&self) -> Option<SinkWrite<'_>> {
        self.state
            .compare_exchange(PARKED, WRITING, SeqCst, SeqCst)
            .ok()
            .map(|_| SinkWrite {
                sink: self,
                done: false,
            })
    }

    /// Before the descriptor is closed (`SharedSocket::drop`): waits out a
    /// fan-out's send in progress (one non-blocking `send`), then shuts
    /// fan-outs out for good.
    fn close(&self) {
        loop {
            match self.state.load(SeqCst) {
                WRITING | WRITING_WANTED => yield_now(),
                state => {
                    if self
                        .state
                        .compare_exchange(state, CLOSED, SeqCst, SeqCst)
                        .is_ok()
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the socket back to the task and wakes it. The waker is taken
    /// while the fan-out still holds the socket: the task parks (and leaves
    /// a new waker) only after it has seen `TASK`, so the waker taken here
    /// is never one left for a later park.
    fn hand_over(&self, handover: Option<Handover>) {
        if let Some(handover) = handover {
            *lock(&self.handover) = Some(Box::new(handover));
        }
        let waker = lock(&self.waker).take();
        // A swap rather than a store: every change of the state is then a
        // read-modify-write, which loom models exactly (a plain store may
        // squeeze into another thread's compare-and-swap there,
        // tokio-rs/loom#254); on the hardware the two are the same.
        self.state.swap(TASK, SeqCst);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A fan-out's hold on a parked sink's socket: the sink is `WRITING` for as
/// long as this lives. It ends by `send` (which parks the sink again or
/// hands it over), `release` or `hand_back`; dropped otherwise, it hands the
/// socket back to the task, which then reads the ring itself.
#[derive(Debug)]
pub struct SinkWrite<'a> {
    sink: &'a Sink,
    done: bool,
}

impl SinkWrite<'_> {
    /// How far the socket has been written.
    pub fn cursor(&self) -> u64 {
        self.sink.cursor()
    }

    /// Sends `bytes` (every event up to `last_seq`) in one non-blocking
    /// `send`. Returns whether they were delivered: in full (the sink is
    /// parked again, unless the task asked for it meanwhile), or in part
    /// with the rest handed to the task. A full socket or an error hands the
    /// socket over and delivers nothing.
    pub fn send(self, bytes: Bytes, last_seq: u64, now: Instant) -> bool {
        self.send_then(bytes, last_seq, now, AfterSend::Park)
    }

    /// `send`, for a sink that is behind by more than one write carries:
    /// after a full write the socket goes to the task, which writes the
    /// rest from the ring as fast as the socket takes it, instead of
    /// waiting for the fan-out's next sweep.
    pub fn send_and_hand_over(self, bytes: Bytes, last_seq: u64, now: Instant) -> bool {
        self.send_then(bytes, last_seq, now, AfterSend::HandOver)
    }

    fn send_then(mut self, bytes: Bytes, last_seq: u64, now: Instant, after: AfterSend) -> bool {
        self.done = true;
        let sink = self.sink;
        match send_to(&sink.target, &bytes) {
            Ok(n) if n == bytes.len() => {
                sink.wrote(last_seq, now);
                match after {
                    AfterSend::Park => sink.park_after_write(),
                    AfterSend::HandOver => sink.hand_over(None),
                }
                true
            }
            Ok(n) => {
                sink.wrote(last_seq, now);
                sink.hand_over(Some(Handover::Rest(bytes.slice(n..))));
                true
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                sink.hand_over(None);
                false
            }
            Err(err) => {
                sink.hand_over(Some(Handover::Failed(err.kind())));
                false
            }
        }
    }

    /// Nothing to write: the sink is parked again.
    pub fn release(mut self) {
        self.done = true;
        self.sink.park_after_write();
    }

    /// The task must take over (e.g. it may have lost events, which only its
    /// stream can report): hands the socket back and wakes it.
    pub fn hand_back(self) {
        // `Drop` does it.
    }
}

/// What becomes of the socket after a full write.
#[derive(Debug, Clone, Copy)]
enum AfterSend {
    /// Parked again, for the next fan-out (unless the task asked for it).
    Park,
    /// Back to the task, woken.
    HandOver,
}

impl Drop for SinkWrite<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.sink.hand_over(None);
        }
    }
}

impl Sink {
    fn wrote(&self, seq: u64, at: Instant) {
        self.cursor.store(seq, SeqCst);
        let nanos = at.saturating_duration_since(clock_origin()).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        self.last_write_nanos.store(nanos, SeqCst);
    }

    /// Back to parked after a full write, unless the task asked for the
    /// socket meanwhile (an append found the sink busy and woke it).
    fn park_after_write(&self) {
        if self
            .state
            .compare_exchange(WRITING, PARKED, SeqCst, SeqCst)
            .is_err()
        {
            self.hand_over(None);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks.
    #[cfg(not(loom))]
    return mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    #[cfg(loom)]
    return mutex.lock().expect("no panics under the sink's locks");
}

/// One non-blocking `send` of `frame` on `fd`, without SIGPIPE.
#[cfg(not(loom))]
#[allow(unsafe_code)]
fn send_to(fd: &Target, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: `frame` is valid for `frame.len()` bytes, and `fd` is open:
    // only a `SinkWrite` calls this, which exists only while the sink is
    // `WRITING`, and the descriptor's owner (`SharedSocket`) closes it only
    // after `Sink::close` has moved the sink to `CLOSED`, which it cannot do
    // while the sink is `WRITING`.
    let n = unsafe {
        libc::send(
            *fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    match usize::try_from(n) {
        Ok(n) => Ok(n),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

#[cfg(loom)]
fn send_to(target: &Target, frame: &[u8]) -> io::Result<usize> {
    target.write(model::Writer::FanOut, frame)
}

#[cfg(not(loom))]
mod tokio_io {
    //! The task's reads and writes, forwarded to the socket inside.

    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::SharedSocket;

    impl<S: AsyncRead + Unpin> AsyncRead for SharedSocket<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for SharedSocket<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().socket).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
        }
    }
}

/// The synchronization primitives, std's or loom's.
mod sync {
    #[cfg(not(loom))]
    pub use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
    #[cfg(not(loom))]
    pub use std::sync::{Mutex, MutexGuard};
    #[cfg(not(loom))]
    pub use std::thread::yield_now;

    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicU8, AtomicU64, Ordering};
    #[cfg(loom)]
    pub use loom::sync::{Mutex, MutexGuard};
    #[cfg(loom)]
    pub use loom::thread::yield_now;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    struct Fixture {
        socket: SharedSocket<UnixStream>,
        peer: UnixStream,
        wakes: Arc<CountingWaker>,
        waker: Waker,
    }

    fn fixture() -> Fixture {
        let (ours, peer) = UnixStream::pair().expect("socket pair");
        peer.set_nonblocking(true).expect("nonblocking");
        let wakes = Arc::new(CountingWaker::default());
        Fixture {
            socket: SharedSocket::new(ours),
            peer,
            waker: Waker::from(Arc::clone(&wakes)),
            wakes,
        }
    }

    impl Fixture {
        fn sink(&self) -> &Sink {
            self.socket.sink()
        }

        fn received(&mut self) -> Vec<u8> {
            let mut buf = vec![0u8; 1 << 20];
            match self.peer.read(&mut buf) {
                Ok(n) => buf[..n].to_vec(),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => Vec::new(),
                Err(err) => panic!("read: {err}"),
            }
        }

        fn n_wakes(&self) -> usize {
            self.wakes.0.load(SeqCst)
        }
    }

    fn owned(claim: Claim) -> (u64, Option<Instant>, Option<Handover>) {
        match claim {
            Claim::Owned {
                cursor,
                last_write,
                handover,
            } => (cursor, last_write, handover),
            Claim::Busy => panic!("busy"),
        }
    }

    #[tokio::test]
    async fn a_full_send_parks_the_sink_again_and_wakes_nobody() {
        let mut f = fixture();
        f.sink().park(7, &f.waker);
        let before = Instant::now();
        let write = f.sink().begin_write().expect("parked");
        assert_eq!(write.cursor(), 7);
        assert!(write.send(Bytes::from_static(b"data: a\n\n"), 9, Instant::now()));
        assert_eq!(f.received(), b"data: a\n\n");
        assert!(f.sink().is_parked());
        assert_eq!(f.n_wakes(), 0);
        let (cursor, last_write, handover) = owned(f.sink().claim());
        assert_eq!(cursor, 9);
        assert!(last_write.is_some_and(|t| t >= before));
        assert!(handover.is_none());
        assert!(!f.sink().is_parked());
    }

    #[tokio::test]
    async fn a_send_and_hand_over_gives_the_socket_to_the_task_after_the_write() {
        let mut f = fixture();
        f.sink().park(7, &f.waker);
        let write = f.sink().begin_write().expect("parked");
        assert!(write.send_and_hand_over(Bytes::from_static(b"data: a\n\n"), 9, Instant::now()));
        assert_eq!(f.received(), b"data: a\n\n");
        assert!(!f.sink().is_parked());
        assert_eq!(f.n_wakes(), 1);
        let (cursor, _, handover) = owned(f.sink().claim());
        assert_eq!(cursor, 9);
        assert!(handover.is_none());
    }

    #[tokio::test]
    async fn only_a_parked_sink_can_be_written_and_only_once_at_a_time() {
        let f = fixture();
        assert!(f.sink().begin_write().is_none(), "owned by the task");
        f.sink().park(1, &f.waker);
        let write = f.sink().begin_write().expect("parked");
        assert!(f.sink().begin_write().is_none(), "one writer at a time");
        write.release();
        assert!(f.sink().is_parked());
        assert_eq!(f.n_wakes(), 0);
    }

    #[tokio::test]
    async fn a_write_handed_back_or_dropped_wakes_the_task() {
        let f = fixture();
        f.sink().park(3, &f.waker);
        f.sink().begin_write().expect("parked").hand_back();
        assert_eq!(f.n_wakes(), 1);
        assert_eq!(owned(f.sink().claim()).0, 3);
        f.sink().park(3, &f.waker);
        drop(f.sink().begin_write());
        assert_eq!(f.n_wakes(), 2);
        assert!(!f.sink().is_parked());
    }

    #[tokio::test]
    async fn a_full_socket_hands_back_the_rest_of_the_write() {
        let f = fixture();
        static BIG: [u8; 4 << 20] = [b'x'; 4 << 20];
        f.sink().park(1, &f.waker);
        // Larger than the socket buffer: part of it goes, the rest is the
        // task's to write.
        let write = f.sink().begin_write().expect("parked");
        assert!(write.send(Bytes::from_static(&BIG), 2, Instant::now()));
        assert_eq!(f.n_wakes(), 1);
        let (cursor, _, handover) = owned(f.sink().claim());
        assert_eq!(cursor, 2);
        let Some(Handover::Rest(rest)) = handover else {
            panic!("no rest handed over: {handover:?}");
        };
        assert!(!rest.is_empty() && rest.len() < BIG.len());
        // Nothing fits now: the next event is not written at all.
        f.sink().park(2, &f.waker);
        let write = f.sink().begin_write().expect("parked");
        assert!(!write.send(Bytes::from_static(&BIG), 3, Instant::now()));
        assert_eq!(f.n_wakes(), 2);
        let (cursor, _, handover) = owned(f.sink().claim());
        assert_eq!(cursor, 2);
        assert!(handover.is_none());
    }

    #[tokio::test]
    async fn a_task_asking_during_a_write_gets_the_socket_after_it() {
        let f = fixture();
        f.sink().park(1, &f.waker);
        let write = f.sink().begin_write().expect("parked");
        assert!(matches!(f.sink().claim(), Claim::Busy));
        assert_eq!(f.sink().state.load(SeqCst), WRITING_WANTED);
        // The write completes: the fan-out hands over instead of parking.
        assert!(write.send(Bytes::from_static(b"data: a\n\n"), 2, Instant::now()));
        assert!(!f.sink().is_parked());
        assert_eq!(f.n_wakes(), 1);
        assert_eq!(owned(f.sink().claim()).0, 2);
    }

    #[tokio::test]
    async fn a_closed_sink_is_never_written_nor_parked_again() {
        let f = fixture();
        let sink = Arc::clone(f.socket.sink());
        sink.park(1, &f.waker);
        drop(f.socket);
        assert!(sink.begin_write().is_none());
        sink.park(2, &f.waker);
        assert!(!sink.is_parked());
        assert_eq!(f.wakes.0.load(SeqCst), 0);
    }
}

/// The loom model: a task and a fan-out share one sink over a fake socket
/// that fails the model on any write not allowed at that moment.
#[cfg(loom)]
pub mod model {
    use std::io;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    use super::{AsTarget, Claim, Handover, SharedSocket, Target};

    /// Who wrote.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Writer {
        Task,
        FanOut,
    }

    /// A socket whose bytes live in a loom cell: two writers at once is a
    /// data race loom reports; a write after close fails the model. Its
    /// first write takes at most `capacity` bytes (a partial write).
    #[derive(Debug)]
    pub struct FakeSocket {
        written: UnsafeCell<Vec<(Writer, Vec<u8>)>>,
        closed: AtomicBool,
        capacity: usize,
    }

    impl FakeSocket {
        pub fn with_capacity(capacity: usize) -> Arc<FakeSocket> {
            Arc::new(FakeSocket {
                written: UnsafeCell::new(Vec::new()),
                closed: AtomicBool::new(false),
                capacity,
            })
        }

        pub fn write(&self, writer: Writer, bytes: &[u8]) -> io::Result<usize> {
            assert!(
                !self.closed.load(SeqCst),
                "{writer:?} wrote to a closed socket"
            );
            self.written.with_mut(|written| {
                // SAFETY: loom checks that no other access to the cell runs
                // at the same time; that is what the model is for.
                let written = unsafe { &mut *written };
                let n = match written.is_empty() {
                    true => bytes.len().min(self.capacity),
                    false => bytes.len(),
                };
                written.push((writer, bytes[..n].to_vec()));
                Ok(n)
            })
        }

        /// Everything written, in order (call once every writer is done).
        pub fn written(&self) -> Vec<(Writer, Vec<u8>)> {
            // SAFETY: as in `write`.
            self.written.with(|written| unsafe { (*written).clone() })
        }
    }

    /// The socket the task owns: dropping it closes the fake socket.
    #[derive(Debug)]
    pub struct TaskSocket(pub Arc<FakeSocket>);

    impl Drop for TaskSocket {
        fn drop(&mut self) {
            self.0.closed.store(true, SeqCst);
        }
    }

    impl AsTarget for TaskSocket {
        fn target(&self) -> Target {
            Arc::clone(&self.0)
        }
    }

    /// Counts wakes.
    #[derive(Debug, Default)]
    pub struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    impl Wakes {
        pub fn count(&self) -> usize {
            self.0.load(SeqCst)
        }
    }

    pub fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (Arc::clone(&wakes), Waker::from(wakes))
    }

    pub type Socket = SharedSocket<TaskSocket>;

    /// The task's side of a claim, as the model checks it.
    pub fn claim_owned(socket: &Socket) -> Option<(u64, Option<Handover>)> {
        match socket.sink().claim() {
            Claim::Owned {
                cursor, handover, ..
            } => Some((cursor, handover)),
            Claim::Busy => None,
        }
    }
}
