//! The judge of R1: one subscriber's stream against the publishers' log.
//!
//! What the README ("Ids, replay and gap") promises a stream of topics `T`
//! resumed from id `r`: after `retry:`, a `gap` first if and only if some
//! event of `T` after `r` is no longer buffered (always, for an id that is
//! not this run's: foreign, malformed, in the future); then the buffered
//! events of `T` after `r` (after the gap: what is still buffered), in id
//! order; then a position block `p` unless the last event carried it; then
//! every event of `T` after `p`, live. Without `r`: the position block
//! first, then every event of `T` after it. So, per topic, the stream holds
//! every event from its first received one on, and before that only
//! evictions the `gap` owned up to.

use std::collections::{HashMap, HashSet};

use ssegate_bench::wire::SseFrame;

use crate::sse::parse_id;

/// The kind of resume id a subscriber came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No id: live from the position block.
    Fresh,
    /// An id still within every topic's buffer.
    Valid,
    /// An id whose successors are gone from every topic's buffer.
    Evicted,
    /// This run's epoch, a sequence number not handed out yet.
    Future,
    /// Another epoch's id (another run, another cluster).
    Foreign,
    /// Not an id of ssegate's shape at all.
    Malformed,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Fresh,
        Class::Valid,
        Class::Evicted,
        Class::Future,
        Class::Foreign,
        Class::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Fresh => "none",
            Class::Valid => "valid",
            Class::Evicted => "evicted",
            Class::Future => "future",
            Class::Foreign => "foreign-epoch",
            Class::Malformed => "malformed",
        }
    }

    /// Whether the server can place the id in this run's sequence.
    fn is_own(self) -> bool {
        matches!(self, Class::Valid | Class::Evicted)
    }
}

/// What one subscriber received, as it came.
#[derive(Debug, Clone)]
pub struct Received {
    pub class: Class,
    pub resume: Option<String>,
    pub topics: Vec<u8>,
    /// `(seq, token)` of each event, in arrival order.
    pub events: Vec<(u64, u64)>,
    /// Frames other than `retry:` and comments, counted.
    n_frames: u64,
    /// The frame number of the first `gap`, what it echoed, and how many.
    gap: Option<(u64, Option<String>)>,
    n_gaps: u64,
    /// `(events before it, seq)` of the position block.
    position: Option<(usize, u64)>,
    /// Frames that are not ssegate's shape, or ids of another epoch.
    pub n_bad_frames: u64,
    pub ended_by_server: bool,
}

impl Received {
    pub fn new(class: Class, resume: Option<String>, topics: Vec<u8>) -> Received {
        Received {
            class,
            resume,
            topics,
            events: Vec::new(),
            n_frames: 0,
            gap: None,
            n_gaps: 0,
            position: None,
            n_bad_frames: 0,
            ended_by_server: false,
        }
    }

    /// Takes in one frame of the stream.
    pub fn frame(&mut self, frame: &SseFrame<'_>, epoch: u64) {
        if frame.n_unknown_lines > 0 {
            self.n_bad_frames += 1;
        }
        if frame.event == Some(b"gap") {
            self.n_gaps += 1;
            if self.gap.is_none() {
                let echo = frame.data.and_then(|data| {
                    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
                    Some(value.get("last_event_id")?.as_str()?.to_string())
                });
                self.gap = Some((self.n_frames, echo));
            }
        } else if let Some(data) = frame.data {
            let id = frame.id.and_then(parse_id);
            match (id, token(data)) {
                (Some((their_epoch, seq)), Some(token)) if their_epoch == epoch => {
                    self.events.push((seq, token))
                }
                _ => self.n_bad_frames += 1,
            }
        } else if let Some(id) = frame.id {
            match (parse_id(id), self.position) {
                (Some((their_epoch, seq)), None) if their_epoch == epoch => {
                    self.position = Some((self.events.len(), seq))
                }
                _ => self.n_bad_frames += 1,
            }
        } else {
            // `retry:` or a heartbeat: not counted as a frame.
            return;
        }
        self.n_frames += 1;
    }

    /// Events received after the position block.
    pub fn live_events(&self) -> u64 {
        self.position
            .map_or(0, |(before, _)| (self.events.len() - before) as u64)
    }
}

/// `<k>:<n>` (then anything after another `:`) → `k << 32 | n`.
fn token(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    let mut fields = text.splitn(3, ':');
    let (k, n) = (fields.next()?, fields.next()?);
    Some(k.parse::<u64>().ok()? << 32 | n.parse::<u64>().ok()?)
}

/// The publishers' log, by sequence number and per topic.
pub struct Log {
    by_seq: HashMap<u64, (u8, u64)>,
    /// Per topic, `(seq, token)` sorted by seq.
    per_topic: Vec<Vec<(u64, u64)>>,
}

impl Log {
    pub fn new(entries: Vec<(u64, u8, u64)>, _epoch: u64) -> Log {
        let n_topics = entries.iter().map(|e| e.1 as usize + 1).max().unwrap_or(0);
        let mut per_topic = vec![Vec::new(); n_topics];
        let mut by_seq = HashMap::with_capacity(entries.len());
        for (seq, topic, token) in entries {
            by_seq.insert(seq, (topic, token));
            per_topic[topic as usize].push((seq, token));
        }
        per_topic.iter_mut().for_each(|t| t.sort_unstable());
        Log { by_seq, per_topic }
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Events of `topic` with `lo < seq <= hi`.
    fn between(&self, topic: u8, lo: u64, hi: u64) -> &[(u64, u64)] {
        let Some(events) = self.per_topic.get(topic as usize) else {
            return &[];
        };
        let from = events.partition_point(|e| e.0 <= lo);
        let to = events.partition_point(|e| e.0 <= hi);
        &events[from..to.max(from)]
    }
}

#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub lost: u64,
    pub duplicated: u64,
    pub misordered: u64,
    /// Events no publisher was told it published (or of another topic).
    pub phantoms: u64,
    pub gaps: u64,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn add(&mut self, other: &Verdict) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.misordered += other.misordered;
        self.phantoms += other.phantoms;
        self.gaps += other.gaps;
    }
}

pub fn verify(received: &Received, log: &Log) -> Verdict {
    let mut verdict = Verdict {
        gaps: received.n_gaps,
        ..Verdict::default()
    };
    let problems = &mut verdict.problems;
    if received.n_bad_frames > 0 {
        problems.push(format!("{} malformed frames", received.n_bad_frames));
    }
    if received.n_gaps > 1 {
        problems.push(format!("{} gaps", received.n_gaps));
    }
    if let Some((frame_no, echo)) = &received.gap {
        if *frame_no != 0 {
            problems.push(format!("the gap came as frame {frame_no}, not first"));
        }
        if echo != &received.resume {
            problems.push(format!("the gap echoes {echo:?}"));
        }
    }
    // Order, duplicates, and events nobody published.
    let mut seen = HashSet::with_capacity(received.events.len());
    let mut previous = None;
    for &(seq, token) in &received.events {
        if !seen.insert(seq) {
            verdict.duplicated += 1;
        } else if previous.is_some_and(|p| p >= seq) {
            verdict.misordered += 1;
        }
        previous = Some(seq);
        match log.by_seq.get(&seq) {
            Some(&(topic, logged)) if logged == token && received.topics.contains(&topic) => {}
            _ => verdict.phantoms += 1,
        }
    }
    let position = received.position.map(|(_, seq)| seq);
    if let Some((before, seq)) = received.position
        && received.events[before..]
            .first()
            .is_some_and(|e| e.0 <= seq)
    {
        problems.push("an event at or before the position came after it".into());
    }
    let resume_seq = received
        .resume
        .as_deref()
        .and_then(|id| parse_id(id.as_bytes()))
        .map(|(_, seq)| seq)
        .filter(|_| received.class.is_own());
    if let Some(r) = resume_seq
        && received.events.iter().any(|e| e.0 <= r)
    {
        problems.push("an event at or before the resume id".into());
    }
    let last = received.events.last().map(|e| e.0);
    let lo = match received.class {
        Class::Fresh => position,
        _ if received.class.is_own() => resume_seq,
        _ => Some(0),
    };
    let (n_missing_early, lost) = match (lo, last.max(position)) {
        (Some(lo), Some(hi)) => completeness(received, log, &seen, lo, hi, position),
        _ => (0, 0),
    };
    verdict.lost = lost;
    if received.class == Class::Fresh
        && let Some(p) = position
        && received.events.iter().any(|e| e.0 <= p)
    {
        problems.push("a fresh subscriber got events from before its position".into());
    }
    let gap = received.gap.is_some();
    match received.class {
        Class::Fresh if gap => problems.push("a gap without a resume id".into()),
        Class::Future | Class::Foreign | Class::Malformed if !gap => {
            problems.push("no gap for an id that is not this run's".into())
        }
        Class::Valid if gap => problems.push("a gap for an id still buffered".into()),
        Class::Evicted if !gap && (last.is_some() || position.is_some()) => {
            problems.push("no gap for an evicted id".into())
        }
        _ => {}
    }
    if gap
        && received.class.is_own()
        && n_missing_early == 0
        && (last.is_some() || position.is_some())
    {
        problems.push("a gap though nothing after the id is missing".into());
    }
    if !gap {
        verdict.lost += n_missing_early;
    }
    if verdict.lost > 0 {
        problems.push(format!("{} events lost", verdict.lost));
    }
    if verdict.duplicated + verdict.misordered + verdict.phantoms > 0 {
        problems.push(format!(
            "{} duplicated, {} out of order, {} not published to its topics",
            verdict.duplicated, verdict.misordered, verdict.phantoms
        ));
    }
    verdict
}

/// Per topic: events after `lo` missing before the topic's first received
/// one (and not after the position) are evictions a gap may own up to;
/// any other missing event up to `hi` is lost. Returns both counts.
fn completeness(
    received: &Received,
    log: &Log,
    seen: &HashSet<u64>,
    lo: u64,
    hi: u64,
    position: Option<u64>,
) -> (u64, u64) {
    let (mut early, mut lost) = (0, 0);
    for &topic in &received.topics {
        let first = received
            .events
            .iter()
            .find(|e| log.by_seq.get(&e.0).is_some_and(|&(t, _)| t == topic))
            .map(|e| e.0);
        // Below `bound`, nothing of this topic was received.
        let bound = match (first, position) {
            (Some(first), Some(p)) => first.min(p + 1),
            (Some(first), None) => first,
            (None, Some(p)) => p + 1,
            (None, None) => hi + 1,
        };
        early += log.between(topic, lo, bound.saturating_sub(1)).len() as u64;
        lost += log
            .between(topic, bound.saturating_sub(1).max(lo), hi)
            .iter()
            .filter(|e| !seen.contains(&e.0))
            .count() as u64;
    }
    (early, lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::format_id;

    const EPOCH: u64 = 0xabc;

    /// Topic 0 gets seqs 1, 3, 5, ...; topic 1 gets 2, 4, 6, ...
    fn log(n: u64) -> Log {
        let entries = (1..=n)
            .map(|seq| (seq, (seq % 2 == 0) as u8, seq))
            .collect();
        Log::new(entries, EPOCH)
    }

    fn event(seq: u64) -> (Vec<u8>, Vec<u8>) {
        (
            format_id(EPOCH, seq).into_bytes(),
            format!("0:{seq}").into_bytes(),
        )
    }

    /// Feeds `frames` (`g` gap, `p<seq>` position, `<seq>` event).
    fn received(class: Class, resume: Option<u64>, topics: &[u8], frames: &str) -> Received {
        let resume = resume.map(|seq| format_id(EPOCH, seq));
        let mut r = Received::new(class, resume.clone(), topics.to_vec());
        for f in frames.split_whitespace() {
            if f == "g" {
                let data = serde_json::json!({ "last_event_id": resume }).to_string();
                r.frame(
                    &SseFrame {
                        event: Some(b"gap"),
                        data: Some(data.as_bytes()),
                        n_data_lines: 1,
                        ..SseFrame::default()
                    },
                    EPOCH,
                );
            } else if let Some(p) = f.strip_prefix('p') {
                let id = format_id(EPOCH, p.parse().unwrap());
                r.frame(
                    &SseFrame {
                        id: Some(id.as_bytes()),
                        ..SseFrame::default()
                    },
                    EPOCH,
                );
            } else {
                let (id, data) = event(f.parse().unwrap());
                r.frame(
                    &SseFrame {
                        id: Some(&id),
                        data: Some(&data),
                        n_data_lines: 1,
                        ..SseFrame::default()
                    },
                    EPOCH,
                );
            }
        }
        r
    }

    fn problems(r: &Received) -> Vec<String> {
        verify(r, &log(20)).problems
    }

    #[test]
    fn exact_resumes_pass_and_losses_are_counted() {
        // Resume after 4 on topic 0: 5, 7 replayed, position 8, then 9, 11.
        let ok = received(Class::Valid, Some(4), &[0], "5 7 p8 9 11");
        assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
        let lost = received(Class::Valid, Some(4), &[0], "5 p8 9 11");
        assert_eq!(verify(&lost, &log(20)).lost, 1);
        let dup = received(Class::Valid, Some(4), &[0], "5 7 p8 9 9 11");
        assert_eq!(verify(&dup, &log(20)).duplicated, 1);
        // Both topics, merged in id order.
        let both = received(Class::Valid, Some(4), &[0, 1], "5 6 7 8 p8 9 10");
        assert!(problems(&both).is_empty(), "{:?}", problems(&both));
        let misordered = received(Class::Valid, Some(4), &[0, 1], "5 7 6 8 p8");
        assert_eq!(verify(&misordered, &log(20)).misordered, 1);
    }

    #[test]
    fn a_gap_must_be_owed_and_owns_up_only_to_early_losses() {
        // Events 5 and 7 evicted: gap, then 9 onwards.
        let ok = received(Class::Evicted, Some(4), &[0], "g 9 p10 11");
        assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
        let no_gap = received(Class::Evicted, Some(4), &[0], "9 p10 11");
        assert!(!problems(&no_gap).is_empty());
        let unowed = received(Class::Evicted, Some(4), &[0], "g 5 7 9 p10 11");
        assert!(!problems(&unowed).is_empty());
        // A loss after the first received event is a loss, gap or not.
        let late = received(Class::Evicted, Some(4), &[0], "g 9 p10 13");
        assert_eq!(verify(&late, &log(20)).lost, 1);
    }

    #[test]
    fn ids_not_of_this_run_need_a_gap_and_fresh_ones_none() {
        let foreign = received(Class::Foreign, None, &[1], "g 14 16 p16 18");
        assert!(problems(&foreign).is_empty(), "{:?}", problems(&foreign));
        let silent = received(Class::Foreign, None, &[1], "14 16 p16 18");
        assert!(!problems(&silent).is_empty());
        let fresh = received(Class::Fresh, None, &[1], "p9 10 12");
        assert!(problems(&fresh).is_empty(), "{:?}", problems(&fresh));
        let fresh_lost = received(Class::Fresh, None, &[1], "p9 12");
        assert_eq!(verify(&fresh_lost, &log(20)).lost, 1);
        let fresh_gap = received(Class::Fresh, None, &[1], "g p9 10");
        assert!(!problems(&fresh_gap).is_empty());
    }
}
