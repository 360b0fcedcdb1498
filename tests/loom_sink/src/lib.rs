//! The loom model of `src/sink.rs`: the module itself, compiled on its own
//! (it depends on nothing of ssegate's), and model runs of its task and
//! fan-out sides racing each other.
//!
//! Run it with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p ssegate-loom-sink --release
//! ```
//!
//! Without `--cfg loom` this crate is empty (the module needs tokio then,
//! which only ssegate itself brings).

#[cfg(loom)]
#[path = "../../../src/sink.rs"]
#[allow(dead_code)]
pub mod sink;

#[cfg(all(test, loom))]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use bytes::Bytes;
    use loom::thread;

    use crate::sink::model::{FakeSocket, Socket, TaskSocket, Writer, claim_owned, waker};
    use crate::sink::{Handover, SharedSocket};

    fn socket(capacity: usize) -> (Arc<FakeSocket>, Socket) {
        let fake = FakeSocket::with_capacity(capacity);
        let socket = SharedSocket::new(TaskSocket(Arc::clone(&fake)));
        (fake, socket)
    }

    /// A fan-out thread that writes event `seq` if it can claim the sink.
    fn fan_out(socket: &Socket, seq: u64, frame: &'static [u8]) -> thread::JoinHandle<bool> {
        let sink = Arc::clone(socket.sink());
        thread::spawn(move || match sink.begin_write() {
            Some(write) => write.send(Bytes::from_static(frame), seq, Instant::now()),
            None => false,
        })
    }

    /// The task waits for the wake a busy claim promises, then claims.
    fn claim_after_wake(
        socket: &Socket,
        wakes: &crate::sink::model::Wakes,
        n_before: usize,
    ) -> (u64, Option<Handover>) {
        while wakes.count() == n_before {
            thread::yield_now();
        }
        claim_owned(socket).unwrap_or_else(|| panic!("woken, yet busy: {:?}", socket.sink()))
    }

    /// The task claims its parked socket back and writes while a fan-out
    /// writes, then closes it: never two writers at once (loom's cell), no
    /// write after the close (the fake socket), and the close waits out a
    /// send in progress.
    #[test]
    fn one_writer_at_a_time_and_none_after_close() {
        loom::model(|| {
            let (fake, socket) = socket(usize::MAX);
            let (_wakes, waker) = waker();
            socket.sink().park(1, &waker);
            let fan_out = fan_out(&socket, 2, b"e2");
            if claim_owned(&socket).is_some() {
                socket.get_ref().0.write(Writer::Task, b"t").expect("write");
            }
            drop(socket);
            fan_out.join().expect("fan-out");
            // Whatever the order, what was written is whole.
            for (_, bytes) in fake.written() {
                assert!(bytes == b"e2" || bytes == b"t", "{bytes:?}");
            }
        });
    }

    /// A task that asks for its socket while a fan-out writes is woken when
    /// the fan-out is done, and then owns the socket with the cursor the
    /// fan-out reached; a task that got it first keeps the fan-out out.
    #[test]
    fn a_busy_claim_is_always_followed_by_a_wake() {
        loom::model(|| {
            let (fake, socket) = socket(usize::MAX);
            let (wakes, waker) = waker();
            socket.sink().park(1, &waker);
            let fan_out = fan_out(&socket, 2, b"e2");
            let (cursor, handover) = match claim_owned(&socket) {
                Some(owned) => owned,
                None => claim_after_wake(&socket, &wakes, 0),
            };
            let wrote = fan_out.join().expect("fan-out");
            assert!(handover.is_none());
            match wrote {
                // Written in full before the claim took effect.
                true => {
                    assert_eq!(cursor, 2);
                    assert_eq!(fake.written(), vec![(Writer::FanOut, b"e2".to_vec())]);
                }
                // The task had it first: nothing written, nothing lost.
                false => {
                    assert_eq!(cursor, 1);
                    assert!(fake.written().is_empty());
                }
            }
        });
    }

    /// A partial write hands the rest to the task (with a wake if it had
    /// asked meanwhile), and the task's write of the rest completes the
    /// frame in order; or the task got the socket first and nothing went.
    #[test]
    fn a_partial_write_hands_the_rest_over() {
        loom::model(|| {
            let (fake, socket) = socket(2);
            let (wakes, waker) = waker();
            socket.sink().park(1, &waker);
            let fan_out = fan_out(&socket, 2, b"e2-frame");
            let (cursor, handover) = match claim_owned(&socket) {
                Some(owned) => owned,
                None => claim_after_wake(&socket, &wakes, 0),
            };
            let wrote = fan_out.join().expect("fan-out");
            if !wrote {
                assert_eq!((cursor, handover.is_none()), (1, true));
                assert!(fake.written().is_empty());
                return;
            }
            assert_eq!(cursor, 2);
            let Some(Handover::Rest(rest)) = handover else {
                panic!("the rest of the frame is the task's: {handover:?}");
            };
            socket
                .get_ref()
                .0
                .write(Writer::Task, &rest)
                .expect("write");
            let bytes: Vec<u8> = fake.written().into_iter().flat_map(|(_, b)| b).collect();
            assert_eq!(bytes, b"e2-frame");
        });
    }
}
