//! Fan-out writes: publishers write events straight to the sockets of the
//! subscribers waiting at the head of their topic.
//!
//! Why: a subscriber is its `EventStream`, polled by its connection's task.
//! Delivering an event that way costs a wake, a trip through the scheduler
//! and a poll of the connection, each touching that connection's cold memory
//! (task header, stream, timer, socket registration): most of the user-space
//! CPU per delivery, measured in `benches/README.md`. The subscribers that
//! wait at the head of their topic need none of that: the new events are
//! exactly the next thing their socket must carry. So an append that finds
//! such subscribers starts a fan-out (`FanOut`), which sends each of them
//! every event past its cursor with one non-blocking `send` (as nchan does),
//! and wakes a subscriber's task only when that did not work out: the socket
//! was full, the write was partial or failed, or the subscriber may have
//! lost events. The task then serves it as before, from the ring; the
//! fan-out is a shortcut, never the only way an event arrives.
//!
//! One fan-out runs per topic at a time: appends made while it runs leave
//! the parked subscribers to it, and it sweeps again until none is behind.
//! Under load a sweep therefore carries many events per write, as a stream
//! that is behind does, instead of one write per event per subscriber.
//!
//! Only streams served by `http::direct` (plain HTTP/1.1, one topic) have a
//! `Sink`: there, the stream's bytes go to the socket unframed and unbuffered,
//! so frames written here are exactly what the task would have written.
//!
//! Who may write to the socket is decided by the sink's state:
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
//! over when done. `CLOSED` is set before the socket's descriptor is closed,
//! and only from a state in which no fan-out writes, so a fan-out never
//! writes to a descriptor that may have been reused.
//!
//! No lost wakes: a stream parks its sink only after its read found nothing
//! new, and that read left the task's waker in the topic (`TopicView::park`).
//! An append, under the topic lock, leaves a parked sink's waker in place
//! and the sink to the fan-out (starting one if none runs); for any sink not
//! parked (the task is running, has not parked the sink yet, or a fan-out is
//! writing) it takes the waker and wakes the task, which then reads the
//! ring. A running fan-out ends only when, under the same lock, it finds no
//! parked sink behind the newest event. So every event is either written by
//! a fan-out or read by the task, whichever side of the task's `park` and of
//! the fan-out's end it comes.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::topic::{FanOutFrames, Topic};

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

/// Fan-outs this small are swept once by the publishing request itself,
/// before it answers; larger ones run as their own task (see
/// `FanOut::deliver`).
const INLINE_SINKS: usize = 16;
/// A fan-out task lets other tasks run after this many writes (about a
/// millisecond), so a topic with 10,000 subscribers cannot hold a worker
/// thread for the whole time it takes to write to all of them.
const SINKS_PER_TURN: usize = 256;
/// At most this many events, and bytes, go into one fan-out write; a sink
/// further behind gets the rest at the next sweep (or from its stream).
const MAX_WRITE_EVENTS: usize = 256;
const MAX_WRITE_BYTES: usize = 64 << 10;

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
    /// A sink for the connected socket `fd`, owned by its task. The caller
    /// must set it `CLOSED` (see `close`) before `fd` is closed.
    pub fn new(fd: RawFd) -> Sink {
        // Fixed before any write, so every write time is after it.
        clock_origin();
        Sink {
            fd,
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

    /// Fan-out side: writes every event of `frames` past the sink's cursor
    /// (at most `MAX_WRITE_BYTES`, at least one) in one `send`, if the sink
    /// is parked. Returns the number of events delivered, in full or with
    /// their rest handed over.
    fn write(&self, frames: &FanOutFrames, batches: &mut BatchCache, now: Instant) -> usize {
        // Only a parked sink: when its task has it, the task reads these
        // events from the ring itself. (No other fan-out can hold it: one
        // runs per topic.)
        if self
            .state
            .compare_exchange(PARKED, WRITING, SeqCst, SeqCst)
            .is_err()
        {
            return 0;
        }
        // The cursor covers every event of the topic up to it. The ring has
        // every event past its floor, and `frames` every event of the ring
        // past the lowest cursor of the sinks it was taken for, so the
        // events past this cursor are exactly the next thing this socket
        // must carry. A cursor below the floor means a loss only the stream
        // can report.
        let cursor = self.cursor.load(SeqCst);
        if cursor < frames.floor {
            self.hand_over(None);
            return 0;
        }
        let Some((bytes, n_events, last_seq)) = batches.after(frames, cursor) else {
            // Nothing new for this one (it caught up on its own).
            self.park_after_write();
            return 0;
        };
        match send(self.fd, &bytes) {
            Ok(n) if n == bytes.len() => {
                self.wrote(last_seq, now);
                self.park_after_write();
                n_events
            }
            Ok(n) => {
                self.wrote(last_seq, now);
                self.hand_over(Some(Handover::Rest(bytes.slice(n..))));
                n_events
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                self.hand_over(None);
                0
            }
            Err(err) => {
                self.hand_over(Some(Handover::Failed(err.kind())));
                0
            }
        }
    }

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

    /// Gives the socket back to the task and wakes it. The waker is taken
    /// while the fan-out still holds the socket: the task parks (and leaves
    /// a new waker) only after it has seen `TASK`, so the waker taken here
    /// is never one left for a later park.
    fn hand_over(&self, handover: Option<Handover>) {
        if let Some(handover) = handover {
            *lock(&self.handover) = Some(Box::new(handover));
        }
        let waker = lock(&self.waker).take();
        self.state.store(TASK, SeqCst);
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

/// The writes a topic owes the sinks parked at its head: the fan-out an
/// append starts when it finds some parked and no fan-out running.
///
/// It sweeps the sinks, writing each every event past its cursor in one
/// `send`, then asks the topic for the sinks still behind (events appended
/// during the sweep leave parked sinks to it) and sweeps again, until none
/// is. So a topic has one fan-out at a time, and under load each socket gets
/// many events per write, as a stream that is behind does.
#[derive(Debug)]
pub struct FanOut {
    topic: Arc<Topic>,
    sinks: Vec<Arc<Sink>>,
    /// When events keep coming while a large fan-out sweeps, its sweeps
    /// start at most this often (`fanout_busy_period`): each write then
    /// carries every event of the period instead of one or two. Writing is
    /// the costly part for the server, the kernel and the reader alike, so
    /// this keeps a busy broadcast topic from drowning its readers in small
    /// writes (measured in `benches/README.md`); it delays events by at most
    /// this much, and only while the topic is that busy. An event that comes
    /// alone is written at once.
    busy_period: Duration,
    /// Whether the topic has been told the fan-out is over (or abandoned).
    finished: bool,
}

impl FanOut {
    /// The fan-out `topic` started with the parked `sinks` (not empty).
    pub fn new(topic: Arc<Topic>, sinks: Vec<Arc<Sink>>, busy_period: Duration) -> FanOut {
        FanOut {
            topic,
            sinks,
            busy_period,
            finished: false,
        }
    }

    /// Runs the fan-out: one sweep here and now when there are few sinks,
    /// the rest in a task of its own that yields every `SINKS_PER_TURN`
    /// writes (the publisher gets its answer without waiting for thousands
    /// of writes). Calls `delivered` with the number of events written,
    /// once per batch of writes.
    pub fn deliver(mut self, delivered: impl Fn(usize) + Send + 'static) {
        let runtime = tokio::runtime::Handle::try_current();
        if self.sinks.len() <= INLINE_SINKS || runtime.is_err() {
            delivered(self.write_to(0..self.sinks.len()));
            self.next_sweep();
        }
        match runtime {
            _ if self.finished => {}
            Ok(runtime) => {
                runtime.spawn(self.run(delivered));
            }
            Err(_) => {
                while !self.finished {
                    delivered(self.write_to(0..self.sinks.len()));
                    self.next_sweep();
                }
            }
        }
    }

    async fn run(mut self, delivered: impl Fn(usize)) {
        while !self.finished {
            let started = Instant::now();
            for start in (0..self.sinks.len()).step_by(SINKS_PER_TURN) {
                let end = (start + SINKS_PER_TURN).min(self.sinks.len());
                delivered(self.write_to(start..end));
                tokio::task::yield_now().await;
            }
            self.next_sweep();
            if !self.finished {
                // Events came during the sweep: the topic is busy. Let the
                // next ones gather, so that each write carries them all.
                tokio::time::sleep_until(started + self.busy_period).await;
            }
        }
    }

    /// The sinks for another sweep, or the end of the fan-out.
    fn next_sweep(&mut self) {
        self.sinks = self.topic.fan_out_again();
        self.finished = self.sinks.is_empty();
    }

    /// Writes to the sinks in `range`, from one look at the topic's recent
    /// events, and one clock reading for all (a turn takes about a
    /// millisecond; heartbeats are seconds apart).
    fn write_to(&self, range: std::ops::Range<usize>) -> usize {
        let sinks = &self.sinks[range];
        let Some(lowest) = sinks.iter().map(|sink| sink.cursor()).min() else {
            return 0;
        };
        let frames = self.topic.fan_out_frames(lowest, MAX_WRITE_EVENTS);
        let mut batches = BatchCache::default();
        let now = Instant::now();
        sinks
            .iter()
            .map(|sink| sink.write(&frames, &mut batches, now))
            .sum()
    }
}

impl Drop for FanOut {
    /// A fan-out dropped halfway (its task cancelled at shutdown) must not
    /// leave the topic believing one runs: parked sinks would wait forever.
    fn drop(&mut self) {
        if !self.finished {
            self.topic.abandon_fan_out();
        }
    }
}

/// The bytes of the events past one cursor, built once for all the sinks
/// at that cursor (in a broadcast, nearly all of them).
#[derive(Debug, Default)]
struct BatchCache {
    /// Index of the first event in `FanOutFrames::events`, and its batch.
    last: Option<(usize, Batch)>,
}

/// Bytes to send, how many events they hold, and the last one's seq.
type Batch = (Bytes, usize, u64);

impl BatchCache {
    /// The events of `frames` past `cursor`, at most `MAX_WRITE_BYTES` of
    /// them but at least one; `None` when there are none.
    fn after(&mut self, frames: &FanOutFrames, cursor: u64) -> Option<Batch> {
        let first = frames.events.partition_point(|(seq, _)| *seq <= cursor);
        if first == frames.events.len() {
            return None;
        }
        if let Some((cached_first, batch)) = &self.last
            && *cached_first == first
        {
            return Some(batch.clone());
        }
        let pending = &frames.events[first..];
        let mut n_events = 1;
        let mut n_bytes = pending[0].1.len();
        for (_, frame) in &pending[1..] {
            if n_bytes + frame.len() > MAX_WRITE_BYTES {
                break;
            }
            (n_events, n_bytes) = (n_events + 1, n_bytes + frame.len());
        }
        let bytes = match n_events {
            // One event: its frame itself, shared, no copy.
            1 => pending[0].1.clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(n_bytes);
                pending[..n_events]
                    .iter()
                    .for_each(|(_, frame)| buf.extend_from_slice(frame));
                buf.freeze()
            }
        };
        let batch = (bytes, n_events, pending[n_events - 1].0);
        self.last = Some((first, batch.clone()));
        Some(batch)
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

    fn frames(floor: u64, events: &[(u64, &'static [u8])]) -> FanOutFrames {
        FanOutFrames {
            floor,
            events: events
                .iter()
                .map(|(seq, frame)| (*seq, Bytes::from_static(frame)))
                .collect(),
        }
    }

    fn write(sink: &Sink, frames: &FanOutFrames) -> usize {
        sink.write(frames, &mut BatchCache::default(), Instant::now())
    }

    #[tokio::test]
    async fn a_parked_sink_gets_every_event_past_its_cursor_in_one_write() {
        let mut f = fixture();
        f.sink.park(7, &f.waker);
        let before = Instant::now();
        let recent = frames(0, &[(7, b"data: old\n\n"), (9, b"data: a\n\n")]);
        assert_eq!(write(&f.sink, &recent), 1);
        assert_eq!(f.received(), b"data: a\n\n");
        assert!(f.sink.is_parked());
        assert_eq!(f.n_wakes(), 0, "a delivered event wakes nobody");
        // Two more: both in one write.
        let recent = frames(
            0,
            &[
                (9, b"data: a\n\n"),
                (10, b"data: b\n\n"),
                (12, b"data: c\n\n"),
            ],
        );
        assert_eq!(write(&f.sink, &recent), 2);
        assert_eq!(f.received(), b"data: b\n\ndata: c\n\n");
        // Nothing new: nothing written, still parked.
        assert_eq!(write(&f.sink, &recent), 0);
        assert!(f.sink.is_parked());
        let (cursor, last_write, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 12);
        assert!(last_write.is_some_and(|t| t >= before));
        assert!(handover.is_none());
        assert!(!f.sink.is_parked());
    }

    #[tokio::test]
    async fn a_sink_its_task_owns_or_that_lost_events_is_not_written() {
        let mut f = fixture();
        let recent = frames(0, &[(1, b"data: a\n\n")]);
        // Never parked: the task owns the socket.
        assert_eq!(write(&f.sink, &recent), 0);
        assert_eq!(f.n_wakes(), 0);
        // Parked below the ring's floor: its stream must report the loss.
        f.sink.park(3, &f.waker);
        assert_eq!(write(&f.sink, &frames(5, &[(6, b"data: a\n\n")])), 0);
        assert_eq!(f.n_wakes(), 1);
        assert!(f.received().is_empty());
        let (cursor, _, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 3);
        assert!(handover.is_none());
    }

    #[tokio::test]
    async fn a_full_socket_hands_back_the_rest_of_the_write() {
        let f = fixture();
        static BIG: [u8; 4 << 20] = [b'x'; 4 << 20];
        f.sink.park(1, &f.waker);
        // Larger than the socket buffer: part of it goes, the rest is the
        // task's to write.
        let recent = frames(0, &[(2, &BIG)]);
        assert_eq!(write(&f.sink, &recent), 1);
        assert_eq!(f.n_wakes(), 1);
        let (cursor, _, handover) = owned(f.sink.claim());
        assert_eq!(cursor, 2);
        let Some(Handover::Rest(rest)) = handover else {
            panic!("no rest handed over: {handover:?}");
        };
        assert!(!rest.is_empty() && rest.len() < BIG.len());
        // Nothing fits now: the next event is not written at all.
        f.sink.park(2, &f.waker);
        assert_eq!(write(&f.sink, &frames(0, &[(3, &BIG)])), 0);
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
        assert_eq!(write(&f.sink, &frames(0, &[(2, b"data: a\n\n")])), 0);
        assert!(f.received().is_empty());
        assert_eq!(f.n_wakes(), 0);
    }

    #[test]
    fn batches_are_capped_and_shared_by_sinks_at_one_cursor() {
        static EVENT: [u8; 40 << 10] = [b'e'; 40 << 10];
        let recent = frames(
            0,
            &[
                (1, b"data: a\n\n"),
                (2, b"data: b\n\n"),
                (3, &EVENT),
                (4, &EVENT),
            ],
        );
        let mut cache = BatchCache::default();
        let (bytes, n_events, last) = cache.after(&recent, 0).expect("a batch");
        // Two small events and one large; the second large one would pass
        // MAX_WRITE_BYTES.
        assert_eq!((n_events, last), (3, 3));
        assert_eq!(bytes.len(), 9 + 9 + EVENT.len());
        let (again, _, _) = cache.after(&recent, 0).expect("a batch");
        assert_eq!(again.as_ptr(), bytes.as_ptr(), "built once");
        assert_eq!(cache.after(&recent, 3).map(|b| (b.1, b.2)), Some((1, 4)));
        assert!(cache.after(&recent, 4).is_none());
    }
}
