//! Event ids: `<epoch>-<seq>`, both as 16 lowercase hex digits.
//!
//! `seq` comes from the registry's process-wide counter, so ids are totally
//! ordered across topics within a run (and, being fixed-width, they also sort
//! as strings). `epoch` is chosen at start-up from 64 bits of OS randomness
//! mixed with the clock and the pid, so an id from an earlier run never
//! parses as one of ours and can never resume silently after a restart.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Width of every id this run hands out, in bytes.
pub const ID_LEN: usize = 33;

/// Ids longer than this are refused for resumption without being parsed.
pub const MAX_RESUME_ID_BYTES: usize = 128;

/// The start-up nonce that prefixes every id of this run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RunEpoch(u64);

impl RunEpoch {
    /// A fresh epoch for this process.
    pub fn generate() -> RunEpoch {
        RunEpoch(unique_u64())
    }

    /// An epoch with a fixed value, for tests and the fuzz targets.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_raw(raw: u64) -> RunEpoch {
        RunEpoch(raw)
    }

    /// Writes the id of event `seq` of this run.
    pub fn format(self, seq: u64) -> [u8; ID_LEN] {
        let mut id = [0u8; ID_LEN];
        write_hex(&mut id[..16], self.0);
        id[16] = b'-';
        write_hex(&mut id[17..], seq);
        id
    }

    /// The sequence number inside `raw` when it is an id of this run's shape
    /// and epoch; `None` for anything else (malformed, foreign, old epoch).
    /// Whether the sequence number is in the future is the caller's question.
    pub fn parse(self, raw: &[u8]) -> Option<u64> {
        if raw.len() != ID_LEN || raw[16] != b'-' {
            return None;
        }
        let epoch = read_hex(&raw[..16])?;
        let seq = read_hex(&raw[17..])?;
        (epoch == self.0).then_some(seq)
    }
}

impl fmt::Debug for RunEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunEpoch({:016x})", self.0)
    }
}

/// 64 bits that differ from one call to the next and from one run to the
/// next: OS randomness mixed with the clock and the pid.
pub fn unique_u64() -> u64 {
    let random = getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness (a very unusual sandbox): the clock and pid still
        // make a collision with an earlier value improbable.
        tracing::warn!("no OS randomness available for an epoch; using clock and pid");
        0
    });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    splitmix64(random ^ splitmix64(nanos ^ (u64::from(std::process::id()) << 32)))
}

/// A standard 64-bit finalizer: spreads every input bit over the output.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn write_hex(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 4 * (15 - i);
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

/// Parses exactly 16 lowercase hex digits; anything else is `None`, so every
/// value has one spelling and an id cannot be forged by case or padding.
fn read_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(nibble))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ids_round_trip_and_sort_as_strings() {
        let epoch = RunEpoch::from_raw(0xdead_beef);
        let a = epoch.format(9);
        let b = epoch.format(10);
        assert_eq!(&a, b"00000000deadbeef-0000000000000009");
        assert_eq!(epoch.parse(&a), Some(9));
        assert_eq!(epoch.parse(&b), Some(10));
        assert!(a < b);
    }

    #[test]
    fn anything_not_of_this_run_is_refused() {
        let epoch = RunEpoch::from_raw(1);
        let other = RunEpoch::from_raw(2);
        let ours = epoch.format(5);
        assert_eq!(other.parse(&ours), None, "another run's id");
        let mut upper = ours;
        upper[15] = b'A';
        assert_eq!(epoch.parse(&upper), None, "uppercase hex");
        for raw in [&b""[..], b"5", b"0000000000000001-5", &ours[..32]] {
            assert_eq!(epoch.parse(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn two_epochs_in_a_row_differ() {
        assert_ne!(RunEpoch::generate(), RunEpoch::generate());
    }

    proptest! {
        #[test]
        fn ids_round_trip_in_order(epoch in any::<u64>(), seq in 0..u64::MAX) {
            let run = RunEpoch::from_raw(epoch);
            let id = run.format(seq);
            prop_assert_eq!(run.parse(&id), Some(seq));
            prop_assert_eq!(RunEpoch::from_raw(!epoch).parse(&id), None);
            prop_assert!(id < run.format(seq + 1));
        }

        /// Whatever parses is the one spelling of its id (the fuzz target
        /// `resume_id` checks the same on arbitrary bytes).
        #[test]
        fn only_the_canonical_spelling_parses(
            raw in prop_oneof![
                "[0-9a-fA-F]{16}-[0-9a-fA-F]{16}",
                "[0-9a-f-]{0,40}",
                any::<String>(),
            ],
            other_epoch in any::<u64>(),
        ) {
            let raw = raw.as_bytes();
            let epoch = raw
                .get(..16)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap_or(other_epoch);
            for run in [RunEpoch::from_raw(epoch), RunEpoch::from_raw(other_epoch)] {
                if let Some(seq) = run.parse(raw) {
                    prop_assert_eq!(&run.format(seq)[..], raw);
                }
            }
        }
    }
}

/// The process-wide event counter together with the run's epoch.
///
/// `next` is only called under the lock of the topic that appends the event;
/// that is what lets a reader who loads `last()` and then locks a topic see
/// every event of that topic up to the loaded value (see `subscription.rs`).
#[derive(Debug)]
pub struct Sequence {
    last: std::sync::atomic::AtomicU64,
    epoch: RunEpoch,
}

impl Sequence {
    pub fn new(epoch: RunEpoch) -> Sequence {
        Sequence {
            last: std::sync::atomic::AtomicU64::new(0),
            epoch,
        }
    }

    /// Takes the next sequence number and formats its id.
    pub fn next(&self) -> (u64, [u8; ID_LEN]) {
        let seq = self.last.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        (seq, self.epoch.format(seq))
    }

    /// Cluster mode: an event numbered by the shared log was appended (under
    /// its topic's lock, like `next`), or a reset moved the node past
    /// `seq`. The sequence only grows.
    pub fn observe(&self, seq: u64) {
        self.last
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
    }

    /// The highest sequence number handed out so far (0 before the first).
    pub fn last(&self) -> u64 {
        self.last.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn epoch(&self) -> RunEpoch {
        self.epoch
    }
}
