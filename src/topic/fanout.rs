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
//! Who may write to a socket at any moment, the stream's task or one
//! fan-out, is the sink's business (`crate::sink`): a fan-out writes only
//! through the `SinkWrite` it got from a parked sink.
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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::sink::Sink;
use crate::topic::Topic;
use crate::topic::ring::Ring;

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
pub const MAX_WRITE_EVENTS: usize = 256;
const MAX_WRITE_BYTES: usize = 64 << 10;

/// Writes every event of `frames` past the sink's cursor (at most
/// `MAX_WRITE_BYTES`, at least one) in one `send`, if the sink is parked.
/// A sink that this write leaves behind `newest` (the write was capped, or
/// `frames` was) goes to its task, which catches up from the ring at the
/// socket's pace: left to the fan-out, it would get one capped write per
/// sweep, and sweeps of a busy topic are `busy_period` apart. Returns the
/// number of events delivered, in full or with their rest handed over.
fn write_to_sink(
    sink: &Sink,
    frames: &Ring,
    newest: u64,
    batches: &mut BatchCache,
    now: Instant,
) -> usize {
    // Only a parked sink: when its task has it, the task reads these events
    // from the ring itself. (No other fan-out can hold it: one runs per
    // topic.)
    let Some(write) = sink.begin_write() else {
        return 0;
    };
    // The cursor covers every event of the topic up to it. The ring has
    // every event past its floor, and `frames` every event of the ring past
    // the lowest cursor of the sinks it was taken for, so the events past
    // this cursor are exactly the next thing this socket must carry. A
    // cursor below the floor means a loss only the stream can report.
    let cursor = write.cursor();
    if cursor < frames.floor() {
        write.hand_back();
        return 0;
    }
    let Some((bytes, n_events, last_seq)) = batches.after(frames, cursor) else {
        // Nothing new for this one (it caught up on its own).
        write.release();
        return 0;
    };
    let sent = match last_seq < newest {
        true => write.send_and_hand_over(bytes, last_seq, now),
        false => write.send(bytes, last_seq, now),
    };
    match sent {
        true => n_events,
        false => 0,
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
    /// of writes). The topic is told the number of events written, once per
    /// batch of writes.
    pub fn deliver(mut self) {
        let runtime = tokio::runtime::Handle::try_current();
        if self.sinks.len() <= INLINE_SINKS || runtime.is_err() {
            self.sweep(0..self.sinks.len());
            self.next_sweep();
        }
        match runtime {
            _ if self.finished => {}
            Ok(runtime) => {
                runtime.spawn(self.run());
            }
            Err(_) => {
                while !self.finished {
                    self.sweep(0..self.sinks.len());
                    self.next_sweep();
                }
            }
        }
    }

    async fn run(mut self) {
        while !self.finished {
            let started = Instant::now();
            for start in (0..self.sinks.len()).step_by(SINKS_PER_TURN) {
                let end = (start + SINKS_PER_TURN).min(self.sinks.len());
                self.sweep(start..end);
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
    fn sweep(&self, range: std::ops::Range<usize>) {
        let sinks = &self.sinks[range];
        let Some(lowest) = sinks.iter().map(|sink| sink.cursor()).min() else {
            return;
        };
        let frames = self.topic.fan_out_frames(lowest, MAX_WRITE_EVENTS);
        // Read after the frames: at or past their last event.
        let newest = self.topic.last_seq();
        let mut batches = BatchCache::default();
        let now = Instant::now();
        let n_delivered = sinks
            .iter()
            .map(|sink| write_to_sink(sink, &frames, newest, &mut batches, now))
            .sum();
        self.topic.fanned_out(n_delivered);
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
/// whose next event is the same (in a broadcast, nearly all of them).
#[derive(Debug, Default)]
struct BatchCache {
    /// The sequence number of the batch's first event, and the batch.
    last: Option<(u64, Batch)>,
}

/// Bytes to send, how many events they hold, and the last one's seq.
type Batch = (Bytes, usize, u64);

impl BatchCache {
    /// The events of `frames` past `cursor`, at most `MAX_WRITE_BYTES` of
    /// them but at least one; `None` when there are none.
    fn after(&mut self, frames: &Ring, cursor: u64) -> Option<Batch> {
        let first = frames.first_seq_after(cursor)?;
        if let Some((cached_first, batch)) = &self.last
            && *cached_first == first
        {
            return Some(batch.clone());
        }
        let chunk = frames.chunk_after(cursor, MAX_WRITE_BYTES, 0)?;
        let batch = (chunk.frames, chunk.n_events, chunk.last_seq);
        self.last = Some((first, batch.clone()));
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(floor: u64, events: &[(u64, &'static [u8])]) -> Ring {
        let mut ring = Ring::new(events.len(), usize::MAX, floor);
        let now = Instant::now();
        for (seq, frame) in events {
            ring.push(crate::topic::ring::StoredEvent {
                seq: *seq,
                published_at: now,
                frame: Bytes::from_static(frame),
            });
        }
        ring
    }

    /// A parked sink over one end of a socket pair, and the other end.
    fn parked_sink(
        cursor: u64,
    ) -> (
        crate::sink::SharedSocket<std::os::unix::net::UnixStream>,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        peer.set_nonblocking(true).expect("nonblocking");
        let socket = crate::sink::SharedSocket::new(ours);
        socket.sink().park(cursor, std::task::Waker::noop());
        (socket, peer)
    }

    fn received(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 16];
        match peer.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(err) => panic!("read: {err}"),
        }
    }

    #[tokio::test]
    async fn a_parked_sink_gets_every_event_past_its_cursor_in_one_write() {
        let (socket, mut peer) = parked_sink(7);
        let sink = socket.sink();
        let write = |recent: &Ring| {
            let newest = recent.last_seq().unwrap_or(0);
            write_to_sink(
                sink,
                recent,
                newest,
                &mut BatchCache::default(),
                Instant::now(),
            )
        };
        let recent = frames(0, &[(7, b"data: old\n\n"), (9, b"data: a\n\n")]);
        assert_eq!(write(&recent), 1);
        assert_eq!(received(&mut peer), b"data: a\n\n");
        assert!(sink.is_parked());
        let recent = frames(
            0,
            &[
                (9, b"data: a\n\n"),
                (10, b"data: b\n\n"),
                (12, b"data: c\n\n"),
            ],
        );
        assert_eq!(write(&recent), 2);
        assert_eq!(received(&mut peer), b"data: b\n\ndata: c\n\n");
        // Nothing new: nothing written, still parked.
        assert_eq!(write(&recent), 0);
        assert!(sink.is_parked());
        assert_eq!(sink.cursor(), 12);
    }

    #[tokio::test]
    async fn a_sink_below_the_floor_is_handed_back_unwritten() {
        let (socket, mut peer) = parked_sink(3);
        let sink = socket.sink();
        let recent = frames(5, &[(6, b"data: a\n\n")]);
        assert_eq!(
            write_to_sink(sink, &recent, 6, &mut BatchCache::default(), Instant::now()),
            0
        );
        assert!(received(&mut peer).is_empty());
        assert!(!sink.is_parked(), "its stream must report the loss");
        assert_eq!(sink.cursor(), 3);
    }

    #[tokio::test]
    async fn a_sink_left_behind_by_a_capped_write_goes_to_its_task() {
        static EVENT: [u8; 40 << 10] = [b'e'; 40 << 10];
        let (socket, mut peer) = parked_sink(0);
        let sink = socket.sink();
        let recent = frames(0, &[(1, &EVENT), (2, &EVENT), (3, &EVENT)]);
        let n = write_to_sink(sink, &recent, 3, &mut BatchCache::default(), Instant::now());
        // One event fits under MAX_WRITE_BYTES; the task writes the others
        // from the ring, without waiting for a sweep.
        assert_eq!(n, 1);
        assert_eq!(received(&mut peer).len(), EVENT.len());
        assert_eq!(sink.cursor(), 1);
        assert!(
            !sink.is_parked(),
            "left behind, yet kept for the next sweep"
        );
        // Past everything the sweep saw, but not the topic's newest: the
        // same.
        let (socket, _peer) = parked_sink(0);
        let sink = socket.sink();
        let small = frames(0, &[(1, b"data: a\n\n")]);
        assert_eq!(
            write_to_sink(sink, &small, 5, &mut BatchCache::default(), Instant::now()),
            1
        );
        assert!(!sink.is_parked());
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
