//! What the load generator measures: deliveries, their order, their latency.
//!
//! Everything runs on one thread (the load generator is pinned to one core),
//! so shared state is `Rc` + `Cell`/`RefCell`.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use hdrhistogram::Histogram;

/// One clock for publishers and subscribers: publish time is written into
/// each payload as nanoseconds since `start`, and receive time is read from
/// the same `Instant`, so latency needs no clock synchronisation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Counters for one measurement window, shared by every subscriber task.
pub struct Stats {
    pub deliveries: Cell<u64>,
    /// Events whose sequence number was not the next expected one.
    pub out_of_order: Cell<u64>,
    /// Streams that ended or failed while they should have been open.
    pub lost_streams: Cell<u64>,
    /// Subscribes or publishes answered with something other than 2xx.
    pub refused: Cell<u64>,
    /// Subscribers whose response head has arrived.
    pub connected: Cell<u64>,
    /// Subscribers that reached their catch-up sequence number (storm).
    pub caught_up: Cell<u64>,
    pub last_caught_up_ns: Cell<u64>,
    /// When each subscriber caught up, in the order they did.
    pub caught_up_ns: RefCell<Vec<u64>>,
    /// `gap` events seen.
    pub gaps: Cell<u64>,
    /// Temporary refusals (`retry:` and the end of the stream) after which
    /// a subscriber came back (see `SubscriberSpec::reconnect`).
    pub retried: Cell<u64>,
    /// Publish-to-receive latency in microseconds.
    pub latency_us: RefCell<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            deliveries: Cell::new(0),
            out_of_order: Cell::new(0),
            lost_streams: Cell::new(0),
            refused: Cell::new(0),
            connected: Cell::new(0),
            caught_up: Cell::new(0),
            last_caught_up_ns: Cell::new(0),
            caught_up_ns: RefCell::new(Vec::new()),
            gaps: Cell::new(0),
            retried: Cell::new(0),
            latency_us: RefCell::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            ),
        }
    }

    /// Starts a new measurement window; validation state in the subscribers
    /// (their expected sequence numbers) carries on.
    pub fn reset_window(&self) {
        self.deliveries.set(0);
        self.latency_us.borrow_mut().reset();
    }

    pub fn bump(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }

    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.borrow().value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_latency_ms(&self) -> f64 {
        self.latency_us.borrow().max() as f64 / 1000.0
    }

    pub fn errors(&self) -> u64 {
        self.out_of_order.get() + self.lost_streams.get() + self.refused.get()
    }
}

/// The payload of event `seq` published at `published_ns`, padded to `size`:
/// `<seq>:<published_ns>:xxxx...`.
pub fn payload(seq: u64, published_ns: u64, size: usize) -> Vec<u8> {
    let mut out = format!("{seq}:{published_ns}:").into_bytes();
    out.resize(size.max(out.len()), b'x');
    out
}

/// The `(seq, published_ns)` at the start of a payload.
pub fn parse_payload(data: &[u8]) -> Option<(u64, u64)> {
    let mut fields = data.splitn(3, |&b| b == b':');
    let seq = parse_u64(fields.next()?)?;
    let published = parse_u64(fields.next()?)?;
    Some((seq, published))
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let data = payload(42, 123_456, 100);
        assert_eq!(data.len(), 100);
        assert_eq!(parse_payload(&data), Some((42, 123_456)));
        assert_eq!(parse_payload(b"x:1:"), None);
    }
}
