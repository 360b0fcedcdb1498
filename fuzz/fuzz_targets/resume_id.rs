//! Resume ids (`Last-Event-ID`, `last_event_id=`): the single-node
//! `<epoch>-<seq>` (`src/id.rs`) and the cluster `<epoch>-<ms>-<seq>`
//! (`src/cluster/ids.rs`). Parsing never panics and accepts exactly the
//! canonical spelling (checked against references written here from the
//! modules' docs); a parsed id formats back to the very bytes it came from,
//! and a formatted id parses back to its parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::fuzzing::ids::{
    EPOCH_LEN, Epoch, ID_LEN, IdMap, MAX_RESUME_ID_BYTES, RunEpoch, SEQ_LIMIT, StreamId,
    parse_cluster_id,
};

/// The README's example epoch.
const README_EPOCH: u64 = 0x3f9c_0a1b_2c3d_4e5f;
/// Crockford's base 32, lowercase (the cluster epoch's digits).
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Exactly 16 lowercase hex digits.
fn hex16(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let lowercase_hex = |ch: char| ch.is_ascii_digit() || ('a'..='f').contains(&ch);
    (text.len() == 16 && text.chars().all(lowercase_hex))
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// `<epoch>-<seq>` of that epoch, both 16 lowercase hex digits.
fn reference_single(epoch: u64, raw: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(raw).ok()?;
    let (epoch_text, seq_text) = text.split_once('-')?;
    (hex16(epoch_text.as_bytes())? == epoch).then_some(())?;
    hex16(seq_text.as_bytes())
}

/// Decimal without sign or leading zero ("0" itself is fine), within u64.
fn canonical(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let padded = text.len() > 1 && text.starts_with('0');
    (digits_only && !padded)
        .then(|| text.parse().ok())
        .flatten()
}

/// `<13 Crockford digits>-<ms>-<seq>`.
fn reference_cluster(raw: &[u8]) -> Option<(String, u64, u64)> {
    let text = std::str::from_utf8(raw).ok()?;
    let parts: Vec<&str> = text.split('-').collect();
    let [epoch, ms, seq] = parts[..] else {
        return None;
    };
    let epoch_ok = epoch.len() == EPOCH_LEN && epoch.bytes().all(|b| CROCKFORD.contains(&b));
    epoch_ok.then_some(())?;
    Some((epoch.to_owned(), canonical(ms)?, canonical(seq)?))
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, slot) in bytes.iter_mut().enumerate() {
        *slot = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(bytes)
}

fn check_single_node(raw: &[u8]) {
    const { assert!(ID_LEN <= MAX_RESUME_ID_BYTES) };
    let mut epochs = vec![README_EPOCH];
    epochs.extend(raw.get(..16).and_then(hex16));
    for epoch_raw in epochs {
        let epoch = RunEpoch::from_raw(epoch_raw);
        let parsed = epoch.parse(raw);
        assert_eq!(parsed, reference_single(epoch_raw, raw), "{raw:?}");
        if let Some(seq) = parsed {
            assert_eq!(&epoch.format(seq)[..], raw, "formats back");
            // Never an id of another run.
            assert_eq!(RunEpoch::from_raw(epoch_raw ^ 1).parse(raw), None);
        }
    }
    let (epoch_raw, seq) = (u64_at(raw, 0), u64_at(raw, 8));
    let epoch = RunEpoch::from_raw(epoch_raw);
    let id = epoch.format(seq);
    assert_eq!(id.len(), ID_LEN);
    assert_eq!(epoch.parse(&id), Some(seq));
    assert_eq!(RunEpoch::from_raw(!epoch_raw).parse(&id), None);
    // Ids sort as strings in sequence order.
    if seq < u64::MAX {
        assert!(id < epoch.format(seq + 1));
    }
}

fn check_cluster(raw: &[u8]) {
    let parsed = parse_cluster_id(raw);
    let reference = reference_cluster(raw);
    assert_eq!(
        parsed.map(|(epoch, id)| (epoch.as_str().to_owned(), id.ms, id.seq)),
        reference,
        "{raw:?}"
    );
    if let Some((epoch, id)) = parsed {
        let map = IdMap::new(epoch, StreamId::ZERO);
        assert_eq!(map.format(id).as_bytes(), raw, "formats back");
        assert_eq!(Epoch::parse(epoch.as_str().as_bytes()), Some(epoch));
        let stream_id = &raw[EPOCH_LEN + 1..];
        assert_eq!(StreamId::parse(stream_id), Some(id));
        assert_eq!(id.to_string().as_bytes(), stream_id);
    }
    // The two shapes never overlap.
    if let Some(epoch) = raw.get(..16).and_then(hex16)
        && RunEpoch::from_raw(epoch).parse(raw).is_some()
    {
        assert!(parsed.is_none());
    }
}

/// Ids made from parts: they format, parse back, map to node sequence
/// numbers and back, in order.
fn check_cluster_mapping(data: &[u8]) {
    let mut digits = [0u8; EPOCH_LEN];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = CROCKFORD[usize::from(data.get(i).copied().unwrap_or(0) % 32)];
    }
    let epoch = Epoch::parse(&digits).expect("13 Crockford digits are an epoch");
    // A little past what packs (`ms < 2^44`, `seq < 2^20`) either way.
    let a = StreamId {
        ms: u64_at(data, 13) >> 19,
        seq: u64_at(data, 21) % (SEQ_LIMIT + 2),
    };
    let b = StreamId {
        ms: u64_at(data, 29) >> 19,
        seq: u64_at(data, 37) % (SEQ_LIMIT + 2),
    };
    // The highest sequence number handed out before: packed ids plus
    // offsets, far below `u64::MAX` in any real run.
    let head = u64_at(data, 45) >> 1;
    let map = IdMap::new(epoch, StreamId::ZERO).next(epoch, StreamId::ZERO, a, head);
    let wire = map.format(a);
    assert_eq!(parse_cluster_id(wire.as_bytes()), Some((epoch, a)));
    let fits = |id: StreamId| id.seq < SEQ_LIMIT && id.ms < 1 << 44;
    for id in [a, b] {
        match map.seq(id) {
            Some(seq) => {
                assert!(fits(id));
                assert_eq!(map.stream_id(seq), Some(id));
            }
            // Or the offset (at most `head + 1`) pushed it past `u64::MAX`.
            None => assert!(
                !fits(id)
                    || id.pack().is_some_and(
                        |p| u128::from(p) + u128::from(head) + 1 > u128::from(u64::MAX)
                    )
            ),
        }
    }
    // A new epoch maps its last id above everything handed out before.
    if let Some(seq) = map.seq(a) {
        assert!(seq > head || a.pack().is_none());
    }
    if let (Some(seq_a), Some(seq_b)) = (map.seq(a), map.seq(b)) {
        assert_eq!(seq_a.cmp(&seq_b), a.cmp(&b), "order kept");
    }
}

fuzz_target!(|data: &[u8]| {
    check_single_node(data);
    check_cluster(data);
    check_cluster_mapping(data);
});
