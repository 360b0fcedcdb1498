//! Cluster ids: `<epoch>-<ms>-<seq>`, the Redis stream id of an event in
//! the shared log behind the cluster's epoch, the same on every node.
//!
//! Inside a node, every event has a `u64` sequence number, as on a single
//! node (rings, cursors and fan-out compare those). In cluster mode that
//! number is the stream id packed into 64 bits (`ms << 20 | seq`) plus an
//! offset, so that it only ever grows, even across a change of epoch whose
//! ids start lower: `IdMap` translates between the two for the current
//! epoch. A node never hands out, and never accepts, an id of another epoch.
//!
//! Packing needs `seq < 2^20` (a million events in one millisecond) and
//! `ms < 2^44` (the year 2527); the publish script keeps the first true
//! even when Redis's clock steps back (see `scripts::PUBLISH`).

use std::fmt;

/// Bits of the packed number given to the stream id's `seq` part.
const SEQ_BITS: u32 = 20;
/// The largest `seq` a packed number holds, plus one.
pub const SEQ_LIMIT: u64 = 1 << SEQ_BITS;
/// Bytes of a cluster epoch: 64 random bits in base 32.
pub const EPOCH_LEN: usize = 13;
/// The digits of an epoch: lowercase, no `i`, `l`, `o`, `u` (Crockford's).
const EPOCH_DIGITS: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A Redis stream id, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` in canonical decimal (no sign, no leading zero):
    /// every id has one spelling, so none can be forged by padding.
    pub fn parse(text: &[u8]) -> Option<StreamId> {
        let dash = text.iter().position(|&b| b == b'-')?;
        let (ms, seq) = (&text[..dash], &text[dash + 1..]);
        Some(StreamId {
            ms: canonical_decimal(ms)?,
            seq: canonical_decimal(seq)?,
        })
    }

    /// The packed number, if the id fits (see the module doc).
    pub fn pack(self) -> Option<u64> {
        (self.seq < SEQ_LIMIT && self.ms < 1 << (64 - SEQ_BITS))
            .then_some(self.ms << SEQ_BITS | self.seq)
    }

    pub fn unpack(packed: u64) -> StreamId {
        StreamId {
            ms: packed >> SEQ_BITS,
            seq: packed & (SEQ_LIMIT - 1),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

fn canonical_decimal(digits: &[u8]) -> Option<u64> {
    let canonical = match digits {
        [] => false,
        [b'0'] => true,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A cluster epoch: names one Redis dataset's life, so that ids of another
/// cluster, another dataset or an earlier life are never taken for ours.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; EPOCH_LEN]);

impl Epoch {
    /// A fresh epoch from 64 bits of OS randomness (as the single-node run
    /// epoch does, falling back to the clock and pid).
    pub fn generate() -> Epoch {
        let random = crate::id::unique_u64();
        let mut digits = [0u8; EPOCH_LEN];
        for (i, digit) in digits.iter_mut().enumerate() {
            // 13 digits of 5 bits: the top one gets the last 4 bits.
            let shift = 5 * (EPOCH_LEN - 1 - i);
            *digit = EPOCH_DIGITS[((random >> shift) & 31) as usize];
        }
        Epoch(digits)
    }

    /// An epoch as Redis holds it: exactly `EPOCH_LEN` epoch digits.
    pub fn parse(text: &[u8]) -> Option<Epoch> {
        let digits: [u8; EPOCH_LEN] = text.try_into().ok()?;
        digits
            .iter()
            .all(|digit| EPOCH_DIGITS.contains(digit))
            .then_some(Epoch(digits))
    }

    pub fn as_str(&self) -> &str {
        // Epoch digits are ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.as_str())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resume id, split: its epoch and stream id. `None` for anything else.
pub fn parse_cluster_id(raw: &[u8]) -> Option<(Epoch, StreamId)> {
    if raw.len() <= EPOCH_LEN || raw[EPOCH_LEN] != b'-' {
        return None;
    }
    Some((
        Epoch::parse(&raw[..EPOCH_LEN])?,
        StreamId::parse(&raw[EPOCH_LEN + 1..])?,
    ))
}

/// The current epoch and how its stream ids map to this node's sequence
/// numbers: `seq = id.pack() + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub epoch: Epoch,
    /// The log's newest id when the epoch began: entries up to it belong
    /// to an earlier epoch (an epoch begun after a loss leaves them in
    /// Redis), and no id of this epoch is below it.
    pub base: StreamId,
    offset: u64,
}

impl IdMap {
    /// The first epoch this node knows.
    pub fn new(epoch: Epoch, base: StreamId) -> IdMap {
        IdMap {
            epoch,
            base,
            offset: 0,
        }
    }

    /// The map for a new `epoch` (begun at `base`) whose log ends at
    /// `last`, chosen so that `last` maps above every sequence number handed
    /// out so far (`head`): a node's sequence only ever grows.
    pub fn next(self, epoch: Epoch, base: StreamId, last: StreamId, head: u64) -> IdMap {
        let packed = last.pack().unwrap_or(0);
        let offset = self.offset.max((head + 1).saturating_sub(packed));
        IdMap {
            epoch,
            base,
            offset,
        }
    }

    /// The sequence number of stream id `id` of this epoch.
    pub fn seq(&self, id: StreamId) -> Option<u64> {
        id.pack()?.checked_add(self.offset)
    }

    /// The stream id of sequence number `seq`, if it is one of this epoch.
    pub fn stream_id(&self, seq: u64) -> Option<StreamId> {
        seq.checked_sub(self.offset).map(StreamId::unpack)
    }

    /// The wire id of stream id `id`: `<epoch>-<ms>-<seq>`.
    pub fn format(&self, id: StreamId) -> String {
        format!("{}-{id}", self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn stream_ids_parse_only_canonically_and_pack_in_order() {
        assert_eq!(
            StreamId::parse(b"1700000000000-3"),
            Some(id(1_700_000_000_000, 3))
        );
        assert_eq!(StreamId::parse(b"0-0"), Some(StreamId::ZERO));
        for bad in [
            &b""[..],
            b"-",
            b"1-",
            b"-1",
            b"01-1",
            b"1-01",
            b"+1-1",
            b"1-1-1",
            b"a-1",
            b"99999999999999999999-1",
        ] {
            assert_eq!(
                StreamId::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let ids = [id(0, 0), id(0, 1), id(5, 0), id(5, SEQ_LIMIT - 1), id(6, 0)];
        let packed: Vec<u64> = ids.iter().map(|i| i.pack().expect("fits")).collect();
        assert!(packed.windows(2).all(|pair| pair[0] < pair[1]));
        for (i, p) in ids.iter().zip(&packed) {
            assert_eq!(StreamId::unpack(*p), *i);
        }
        assert_eq!(id(5, SEQ_LIMIT).pack(), None);
        assert_eq!(id(1 << 44, 0).pack(), None);
    }

    #[test]
    fn epochs_are_thirteen_base32_digits() {
        let epoch = Epoch::generate();
        assert_eq!(epoch.as_str().len(), EPOCH_LEN);
        assert_eq!(Epoch::parse(epoch.as_str().as_bytes()), Some(epoch));
        assert_ne!(Epoch::generate(), epoch);
        assert_eq!(
            Epoch::parse(b"0123456789abc"),
            Some(Epoch(*b"0123456789abc"))
        );
        for bad in [
            &b"0123456789ab"[..],
            b"0123456789abcd",
            b"0123456789abi",
            b"0123456789ABC",
        ] {
            assert_eq!(Epoch::parse(bad), None);
        }
    }

    #[test]
    fn ids_of_the_current_epoch_only_resume() {
        let epoch = Epoch::parse(b"k3v9q2m0d8x1a").expect("epoch");
        let map = IdMap::new(epoch, StreamId::ZERO);
        let wire = map.format(id(1_700_000_000_123, 4));
        assert_eq!(wire, "k3v9q2m0d8x1a-1700000000123-4");
        let resume_seq = |map: &IdMap, raw: &[u8]| match parse_cluster_id(raw) {
            Some((epoch, id)) if epoch == map.epoch => map.seq(id),
            _ => None,
        };
        let seq = resume_seq(&map, wire.as_bytes()).expect("ours");
        assert_eq!(map.stream_id(seq), Some(id(1_700_000_000_123, 4)));
        let other = IdMap::new(
            Epoch::parse(b"0000000000000").expect("epoch"),
            StreamId::ZERO,
        );
        assert_eq!(resume_seq(&other, wire.as_bytes()), None, "another epoch");
        for bad in [
            &b""[..],
            b"k3v9q2m0d8x1a",
            b"k3v9q2m0d8x1a-",
            b"k3v9q2m0d8x1a-1-",
            b"k3v9q2m0d8x1a-1-1048576",
            // A single-node id: another shape.
            b"00000000deadbeef-0000000000000009",
        ] {
            assert_eq!(
                resume_seq(&map, bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_new_epoch_maps_above_everything_handed_out() {
        let first = IdMap::new(
            Epoch::parse(b"aaaaaaaaaaaaa").expect("epoch"),
            StreamId::ZERO,
        );
        let head = first.seq(id(2_000, 7)).expect("seq");
        // Redis came back with ids lower than before (an older dump, a
        // clock behind): the new epoch still maps above `head`.
        let second = first.next(
            Epoch::parse(b"bbbbbbbbbbbbb").expect("epoch"),
            id(1_000, 0),
            id(1_000, 0),
            head,
        );
        let floor = second.seq(id(1_000, 0)).expect("seq");
        assert!(floor > head);
        assert!(second.seq(id(1_000, 1)).expect("seq") > floor);
        assert_eq!(second.stream_id(floor), Some(id(1_000, 0)));
        assert_eq!(second.base, id(1_000, 0));
        // Ids that already map higher keep the offset.
        let third = second.next(
            Epoch::parse(b"ccccccccccccc").expect("epoch"),
            id(9_000, 0),
            id(9_000, 0),
            floor,
        );
        assert_eq!(third.seq(id(9_000, 0)), second.seq(id(9_000, 0)));
    }

    proptest! {
        /// Whatever parses is the one spelling of its id, and formats back
        /// to it (the fuzz target `resume_id` checks the same on arbitrary
        /// bytes).
        #[test]
        fn only_the_canonical_spelling_parses(
            raw in prop_oneof![
                "[0-9a-z]{13}-(0|[1-9][0-9]{0,20})-(0|[1-9][0-9]{0,7})",
                "[0-9a-zA-Z+-]{0,40}",
                any::<String>(),
            ],
        ) {
            if let Some((epoch, stream_id)) = parse_cluster_id(raw.as_bytes()) {
                let map = IdMap::new(epoch, StreamId::ZERO);
                prop_assert_eq!(map.format(stream_id), raw);
            }
        }

        #[test]
        fn ids_map_to_sequence_numbers_and_back_in_order(
            a in (0..1u64 << 45, 0..SEQ_LIMIT + 2),
            b in (0..1u64 << 45, 0..SEQ_LIMIT + 2),
            head in 0..u64::MAX / 2,
        ) {
            let (a, b) = (id(a.0, a.1), id(b.0, b.1));
            let epoch = Epoch::parse(b"k3v9q2m0d8x1a").expect("epoch");
            let map = IdMap::new(epoch, StreamId::ZERO).next(epoch, StreamId::ZERO, a, head);
            prop_assert_eq!(parse_cluster_id(map.format(a).as_bytes()), Some((epoch, a)));
            for x in [a, b] {
                if let Some(seq) = map.seq(x) {
                    prop_assert_eq!(map.stream_id(seq), Some(x));
                } else {
                    prop_assert!(x.pack().is_none_or(|p| p.checked_add(head + 1).is_none()));
                }
            }
            if let Some(seq) = map.seq(a) {
                prop_assert!(seq > head, "a new epoch maps above what was handed out");
            }
            if let (Some(sa), Some(sb)) = (map.seq(a), map.seq(b)) {
                prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
            }
        }
    }
}
