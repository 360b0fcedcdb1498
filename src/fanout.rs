//! Fan-out writes: the publisher of an event writes it straight to the
//! sockets of the subscribers waiting at the head of its topic.
//!
//! Why: a subscriber is its `EventStream`, polled by its connection's task.
//! Delivering one event that way costs a wake, a trip through the scheduler
//! and a poll of the connection, each touching that connection's cold memory
//! (task header, stream, timer, socket registration): most of the user-space
//! CPU per delivery, measured in `benches/README.md`. The subscribers that
//! are at the head of their topic when an event comes need none of that: the
//! event is exactly the next thing their socket must carry. So the publisher
//! sends its frame to each of them with one non-blocking `send` (as nchan
//! does), and wakes a subscriber's task only when that did not work out:
//! the socket was full, the write was partial or failed, or the subscriber
//! was not exactly one event behind. The task then serves it as before, from
//! the ring; the fan-out is a shortcut, never the only way an event arrives.
//!
//! Only streams served by `http::direct` (plain HTTP/1.1, one topic) have a
//! `Sink`: there, the stream's bytes go to the socket unframed and unbuffered,
//! so a frame written here is exactly what the task would have written.
//!
//! Who may write to the socket is decided by the sink's state:
//!
//! ```text
//!            task parks at head                 fan-out claims
//!   TASK ───────────────────────────► PARKED ─────────────────► WRITING
//!    ▲  ◄─────────────────────────────  │  ◄──── wrote the frame ──┘ │
//!    │        task claims back          │                            │
//!    └──── fan-out hands over (and wakes the task) ◄─────────────────┘
//!          (socket full, partial write, error, behind, or asked for)
//! ```
//!
//! The task claims the socket back whenever it is polled; if a fan-out is
//! writing at that moment, it marks the sink `WANTED` and the fan-out hands
//! over when done. `CLOSED` is set before the socket's descriptor is closed,
//! and only from a state in which no fan-out writes, so a fan-out never
//! writes to a descriptor that may have been reused.
//!
//! No lost wakes: a stream parks its sink only after its read found nothing
//! new, and that read left the task's waker in the topic (`TopicView::park`).
//! An append, under the topic lock, hands a parked sink to its fan-out and
//! leaves that waker in place; for any sink not parked (the task is running,
//! or has not parked the sink yet, or a fan-out is writing) it takes the
//! waker and wakes the task, which then reads the ring. So an event either
//! is written by a fan-out or wakes the task, whichever side of the task's
//! `park` it comes.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

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

/// Fan-outs this small are written by the publishing request itself, before
/// it answers; larger ones run as their own task (see `FanOut::deliver`).
const INLINE_SINKS: usize = 16;
/// A fan-out task lets other tasks run after this many writes (about a
/// millisecond), so a topic with 10,000 subscribers cannot hold a worker
/// thread for the whole time it takes to write to all of them.
const SINKS_PER_TURN: usize = 256;

/// A direct stream's socket, shared between its task and the fan-outs of
/// its topic.
#[derive(Debug)]
pub struct Sink {
    fd: RawFd,
    state: AtomicU8,
    /// Every event of the topic up to this sequence number has been written
    /// to the socket (in full, or its rest is in `handover`). Set by the task
    /// when it parks, advanced by each fan-out that writes.
    cursor: AtomicU64,
    /// When a fan-out last wrote, as nanoseconds after `created`, so that
    /// the stream's heartbeat counts fan-out writes as activity.
    last_write_nanos: AtomicU64,
    created: Instant,
    /// The task to wake when a fan-out hands the socket over.
    waker: Mutex<Option<Waker>>,
    handover: Mutex<Option<Handover>>,
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
    /// A sink for the connected socket `fd`, owned by its task. The caller
    /// must set it `CLOSED` (see `close`) before `fd` is closed.
    pub fn new(fd: RawFd) -> Sink {
        Sink {
            fd,
            state: AtomicU8::new(TASK),
            cursor: AtomicU64::new(0),
            last_write_nanos: AtomicU64::new(0),
            created: Instant::now(),
            waker: Mutex::new(None),
            handover: Mutex::new(None),
        }
    }

    /// Whether a fan-out may claim this sink now (read under the topic lock
    /// by an append).
    pub fn is_parked(&self) -> bool {
        self.state.load(SeqCst) == PARKED
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
            last_write: (nanos > 0).then(|| self.created + Duration::from_nanos(nanos)),
            handover: lock(&self.handover).take(),
        }
    }

    /// Task side: the stream has written everything up to `cursor` and waits
    /// for more, its waker parked in the topic; fan-outs may write from now
    /// on.
    pub fn park(&self, cursor: u64, waker: &Waker) {
        {
            let mut slot = lock(&self.waker);
            match &*slot {
                Some(parked) if parked.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.cursor.store(cursor, SeqCst);
        self.state.store(PARKED, SeqCst);
    }

    /// Task side, before the descriptor is closed: waits out a fan-out's
    /// write in progress (one non-blocking `send`), then shuts fan-outs out.
    pub fn close(&self) {
        loop {
            match self.state.load(SeqCst) {
                WRITING | WRITING_WANTED => std::thread::yield_now(),
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

    /// Fan-out side: writes `frame` (event `seq`, the topic's event after
    /// `previous`) if the sink is parked with exactly that event to go. Returns
    /// whether the event was delivered, in full or with its rest handed over.
    fn write(&self, frame: &Bytes, previous: u64, seq: u64, at: Instant) -> bool {
        if self
            .state
            .compare_exchange(PARKED, WRITING, SeqCst, SeqCst)
            .is_err()
        {
            // The task has it (and reads the event from the ring), or it is
            // closed.
            return false;
        }
        // The cursor covers every event of the topic up to it, so with
        // `previous` covered and `seq` not, `seq` is exactly the next thing
        // this socket must carry. (A new stream's cursor is the process-wide
        // head, usually past `previous`.) Otherwise the ring has the rest.
        let cursor = self.cursor.load(SeqCst);
        if cursor < previous || cursor >= seq {
            self.hand_over(None);
            return false;
        }
        match send(self.fd, frame) {
            Ok(n) if n == frame.len() => {
                self.wrote(seq, at);
                self.park_after_write();
                true
            }
            Ok(n) => {
                self.wrote(seq, at);
                self.hand_over(Some(Handover::Rest(frame.slice(n..))));
                true
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.hand_over(None);
                false
            }
            Err(err) => {
                self.hand_over(Some(Handover::Failed(err.kind())));
                false
            }
        }
    }

    fn wrote(&self, seq: u64, at: Instant) {
        self.cursor.store(seq, SeqCst);
        let nanos = at.saturating_duration_since(self.created).as_nanos();
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

    /// Gives the socket back to the task and wakes it.
    fn hand_over(&self, handover: Option<Handover>) {
        if handover.is_some() {
            *lock(&self.handover) = handover;
        }
        self.state.store(TASK, SeqCst);
        self.wake();
    }

    fn wake(&self) {
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One non-blocking `send` of `frame` on `fd`, without SIGPIPE.
fn send(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: `frame` is valid for `frame.len()` bytes, and `fd` is open:
    // the caller holds the sink in `WRITING`, and its descriptor is only
    // closed after `Sink::close` has moved it to `CLOSED`, which it cannot
    // do while a write is in progress.
    let n = unsafe {
        libc::send(
            fd,
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

/// The writes one appended event owes the sinks that were parked at the
/// head of its topic when it was appended.
#[derive(Debug)]
pub struct FanOut {
    sinks: Vec<Arc<Sink>>,
    frame: Bytes,
    previous: u64,
    seq: u64,
    at: Instant,
}

impl FanOut {
    /// `frame` is event `seq`, appended at `at` right after event
    /// `previous` of its topic; `sinks` were parked when it was appended.
    pub fn new(
        sinks: Vec<Arc<Sink>>,
        frame: Bytes,
        (previous, seq): (u64, u64),
        at: Instant,
    ) -> FanOut {
        FanOut {
            sinks,
            frame,
            previous,
            seq,
            at,
        }
    }

    /// Writes to every sink: here and now when there are few, else in a task
    /// of its own that yields every `SINKS_PER_TURN` writes (the publisher
    /// gets its answer without waiting for thousands of writes). Calls
    /// `delivered` with the number of events written, once per batch of
    /// writes.
    pub fn deliver(self, delivered: impl Fn(usize) + Send + 'static) {
        if self.sinks.is_empty() {
            return;
        }
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if self.sinks.len() > INLINE_SINKS => {
                runtime.spawn(async move {
                    for start in (0..self.sinks.len()).step_by(SINKS_PER_TURN) {
                        let end = (start + SINKS_PER_TURN).min(self.sinks.len());
                        delivered(self.write_to(start..end));
                        tokio::task::yield_now().await;
                    }
                });
            }
            _ => delivered(self.write_to(0..self.sinks.len())),
        }
    }

    fn write_to(&self, range: std::ops::Range<usize>) -> usize {
        self.sinks[range]
            .iter()
            .filter(|sink| sink.write(&self.frame, self.previous, self.seq, self.at))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
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
        sink: Sink,
        peer: UnixStream,
        _ours: UnixStream,
        wakes: Arc<CountingWaker>,
        waker: Waker,
    }

    fn fixture() -> Fixture {
        let (ours, peer) = UnixStream::pair().expect("socket pair");
        peer.set_nonblocking(true).expect("nonblocking");
        let wakes = Arc::new(CountingWaker::default());
        Fixture {
            sink: Sink::new(ours.as_raw_fd()),
            peer,
            _ours: ours,
            waker: Waker::from(Arc::clone(&wakes)),
            wakes,
        }
    }

    impl Fixture {
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
    async fn a_parked_sink_gets_the_next_event_and_stays_parked() {
        let mut f = fixture();
        f.sink.park(7, &f.waker);
        let at = Instant::now();
        let frame = Bytes::from_static(b"id: x-9\ndata: a\n\n");
        assert!(f.sink.write(&frame, 7, 9, at));
        assert_eq!(f.received(), frame);
        assert!(f.sink.is_parked());
        assert_eq!(f.n_wakes(), 0, "a delivered event wakes nobody");
        // The next event follows on from the one just written.
        assert!(f.sink.write(&frame, 9, 12, at));
        let (cursor, last_write, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 12);
        assert!(last_write.is_some_and(|t| t >= at));
        assert!(handover.is_none());
        assert!(!f.sink.is_parked());
    }

    #[tokio::test]
    async fn a_sink_its_task_owns_or_one_behind_is_not_written() {
        let mut f = fixture();
        let frame = Bytes::from_static(b"data: a\n\n");
        // Never parked: the task owns the socket.
        assert!(!f.sink.write(&frame, 0, 1, Instant::now()));
        assert_eq!(f.n_wakes(), 0);
        // Parked before the event's predecessor: handed back, woken.
        f.sink.park(3, &f.waker);
        assert!(!f.sink.write(&frame, 5, 6, Instant::now()));
        assert_eq!(f.n_wakes(), 1);
        assert!(f.received().is_empty());
        let (cursor, _, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 3);
        assert!(handover.is_none());
    }

    #[tokio::test]
    async fn a_full_socket_hands_back_the_rest_of_the_frame() {
        let f = fixture();
        let frame = Bytes::from(vec![b'x'; 4 << 20]);
        f.sink.park(1, &f.waker);
        // Larger than the socket buffer: part of it goes, the rest is the
        // task's to write.
        assert!(f.sink.write(&frame, 1, 2, Instant::now()));
        assert_eq!(f.n_wakes(), 1);
        let (cursor, _, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 2);
        let Some(Handover::Rest(rest)) = handover else {
            panic!("no rest handed over: {handover:?}");
        };
        assert!(!rest.is_empty() && rest.len() < frame.len());
        // Nothing fits now: the next event is not written at all.
        f.sink.park(2, &f.waker);
        assert!(!f.sink.write(&frame, 2, 3, Instant::now()));
        assert_eq!(f.n_wakes(), 2);
        let (cursor, _, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 2);
        assert!(handover.is_none());
    }

    #[tokio::test]
    async fn a_task_asking_during_a_write_gets_the_socket_after_it() {
        let f = fixture();
        f.sink.park(1, &f.waker);
        f.sink.state.store(WRITING, SeqCst);
        assert!(matches!(f.sink.claim(), Claim::Busy));
        assert_eq!(f.sink.state.load(SeqCst), WRITING_WANTED);
        // The write completes: the fan-out hands over instead of parking.
        f.sink.wrote(2, Instant::now());
        f.sink.park_after_write();
        assert!(!f.sink.is_parked());
        assert_eq!(f.n_wakes(), 1);
        assert_eq!(owned(f.sink.claim()).0, 2);
    }

    #[tokio::test]
    async fn a_closed_sink_is_never_written() {
        let mut f = fixture();
        f.sink.park(1, &f.waker);
        f.sink.close();
        assert!(
            !f.sink
                .write(&Bytes::from_static(b"data: a\n\n"), 1, 2, Instant::now())
        );
        assert!(f.received().is_empty());
        assert_eq!(f.n_wakes(), 0);
    }
}
