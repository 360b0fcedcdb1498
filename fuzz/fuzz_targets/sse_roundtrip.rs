//! The SSE encoder (`src/sse/encode.rs`) against two independent parsers:
//! a reference written here from the WHATWG "event stream interpretation"
//! steps, and the `eventsource-stream` crate (as in the encoder's proptest),
//! fed in fuzz-chosen chunks. For any UTF-8 data, any valid event type and
//! any id the server hands out, the frame:
//!
//! - parses to exactly one event, whose data is the input with every line
//!   ending (`\r\n`, `\r`, `\n`) normalized to `\n`, with that type and id;
//! - has no field line holding a CR or LF, no blank line but its last;
//! - ends with `\n\n`.
//!
//! The control frames (`retry`, position block, `gap`, heartbeat) are
//! checked too, alone and in the order a stream sends them.
//!
//! Input: `<data> [0xFF <event type bytes> [0xFF <control bytes>]]` (0xFF never
//! occurs in UTF-8, so the seeds stay readable). The event type bytes are
//! mapped onto its alphabet; the control bytes choose the id, the chunk
//! boundaries and the retry.
#![no_main]

use std::convert::Infallible;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt, stream};
use libfuzzer_sys::fuzz_target;
use ssegate::fuzzing::ids::{Epoch, IdMap, RunEpoch, StreamId};
use ssegate::fuzzing::sse::{
    HEARTBEAT, event_body, event_template, gap_frame, position_frame, retry_frame,
};

/// README: an event type is 1 to 64 bytes of `A-Z a-z 0-9 _ . : -`.
const TYPE_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-";
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

#[derive(Debug, PartialEq)]
struct Event {
    event_type: String,
    data: String,
    last_event_id: String,
}

/// What the reference parser saw in a whole stream.
#[derive(Debug, Default)]
struct Parsed {
    events: Vec<Event>,
    last_event_id: String,
    retry: Option<u64>,
}

/// WHATWG HTML, "Interpreting an event stream", for a complete stream:
/// lines end at CRLF, LF or CR; an unterminated last line is dropped.
fn whatwg_parse(text: &str) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = Parsed::default();
    let (mut data, mut event_type) = (String::new(), String::new());
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let terminator = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + terminator..];
        if line.is_empty() {
            // Dispatch.
            if !data.is_empty() {
                if data.ends_with('\n') {
                    data.pop();
                }
                parsed.events.push(Event {
                    event_type: if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type.clone()
                    },
                    data: std::mem::take(&mut data),
                    last_event_id: parsed.last_event_id.clone(),
                });
            }
            data.clear();
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => parsed.last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                parsed.retry = value.parse().ok();
            }
            _ => {}
        }
    }
    parsed
}

/// `eventsource-stream`, fed `bytes` cut at `cuts`.
fn crate_parse(bytes: &[u8], cuts: &[usize]) -> Vec<eventsource_stream::Event> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, bytes.len());
        chunks.push(bytes[start..cut].to_vec());
        start = cut;
    }
    chunks.push(bytes[start..].to_vec());
    stream::iter(chunks.into_iter().map(Ok::<_, Infallible>))
        .eventsource()
        .collect::<Vec<_>>()
        .now_or_never()
        .expect("an in-memory stream is always ready")
        .into_iter()
        .map(|event| event.expect("parser error"))
        .collect()
}

/// What an `EventSource` client gets for `data`.
fn as_client_sees(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Every line of a frame is a field line (`name: value`), with a name the
/// encoder writes, and only the last line is blank.
fn check_lines(frame: &[u8], names: &[&str]) {
    assert!(frame.ends_with(b"\n\n"), "{frame:?}");
    assert!(!frame.contains(&b'\r'), "{frame:?}");
    let body = &frame[..frame.len() - 2];
    for line in body.split(|&b| b == b'\n') {
        let line = std::str::from_utf8(line).expect("frames are UTF-8");
        let (name, _) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(names.contains(&name), "{line:?}");
    }
}

fn byte(control: &[u8], at: usize) -> u8 {
    control.get(at).copied().unwrap_or(0)
}

fn u64_at(control: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, slot) in bytes.iter_mut().enumerate() {
        *slot = byte(control, at + i);
    }
    u64::from_le_bytes(bytes)
}

/// An id the server hands out: single-node or cluster shape.
fn event_id(control: &[u8]) -> String {
    let (a, b) = (u64_at(control, 1), u64_at(control, 9));
    if byte(control, 0) & 1 == 0 {
        let id = RunEpoch::from_raw(a).format(b);
        String::from_utf8(id.to_vec()).expect("ids are ASCII")
    } else {
        let digits: Vec<u8> = control
            .iter()
            .chain([0u8; 13].iter())
            .take(13)
            .map(|&b| CROCKFORD[usize::from(b % 32)])
            .collect();
        let epoch = Epoch::parse(&digits).expect("an epoch");
        IdMap::new(epoch, StreamId::ZERO).format(StreamId {
            ms: a >> 20,
            seq: b % (1 << 20),
        })
    }
}

fn check_event_frame(data: &str, event_type: Option<&str>, control: &[u8]) -> (Vec<u8>, String) {
    let id = event_id(control);
    let template = event_template(id.len(), event_type, data);
    let reserved = template.len();
    let frame = template.finish(id.as_bytes());
    assert_eq!(frame.len(), reserved, "sized exactly");
    check_lines(&frame, &["id", "event", "data"]);

    let expected = Event {
        event_type: event_type.unwrap_or("message").to_owned(),
        data: as_client_sees(data),
        last_event_id: id.clone(),
    };
    let text = std::str::from_utf8(&frame).expect("frames are UTF-8");
    let parsed = whatwg_parse(text);
    assert_eq!(parsed.events, [expected], "{text:?}");

    let cuts = [
        usize::from(byte(control, 17)) * frame.len() / 255,
        usize::from(byte(control, 18)) * frame.len() / 255,
    ];
    let events = crate_parse(&frame, &cuts);
    assert_eq!(events.len(), 1, "{text:?}");
    assert_eq!(events[0].data, as_client_sees(data));
    assert_eq!(events[0].event, event_type.unwrap_or("message"));
    assert_eq!(events[0].id, id);

    // A cluster node stores the frame without its id line.
    assert_eq!(
        &event_body(event_type, data)[..],
        &frame[format!("id: {id}\n").len()..]
    );
    (frame.to_vec(), id)
}

fn check_control_frames(data: &str, event_frame: &[u8], id: &str, control: &[u8]) {
    let retry_ms = u64_at(control, 19) % (366 * 24 * 3600 * 1000);
    let retry = retry_frame(Duration::from_millis(retry_ms));
    check_lines(&retry, &["retry"]);
    let position = position_frame(id);
    check_lines(&position, &["id"]);
    // The resume id quoted in a `gap` is whatever the client sent.
    let gap = gap_frame(data);
    check_lines(&gap, &["event", "data"]);
    assert_eq!(&HEARTBEAT[..], b":\n\n");

    // A stream's order: retry, a gap, the position block, an event, a
    // heartbeat, a second gap.
    let mut whole = Vec::new();
    for part in [&retry[..], &gap, &position, event_frame, &HEARTBEAT, &gap] {
        whole.extend_from_slice(part);
    }
    let parsed = whatwg_parse(std::str::from_utf8(&whole).expect("UTF-8"));
    assert_eq!(parsed.retry, Some(retry_ms));
    assert_eq!(parsed.last_event_id, id);
    let [first_gap, event, second_gap] = &parsed.events[..] else {
        panic!("{:?}", parsed.events);
    };
    for (gap, last_id) in [(first_gap, ""), (second_gap, id)] {
        assert_eq!(gap.event_type, "gap");
        // No id line: the client's last id stays where it was.
        assert_eq!(gap.last_event_id, last_id);
        let json: serde_json::Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(json, serde_json::json!({ "last_event_id": data }));
    }
    assert_eq!(event.last_event_id, id);

    let events = crate_parse(
        &whole,
        &[usize::from(byte(control, 27)) * whole.len() / 255],
    );
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|event| (event.event.as_str(), event.id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("gap", ""), (event.event_type.as_str(), id), ("gap", id)]
    );
}

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(3, |&b| b == 0xFF);
    let data = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let event_type: Option<String> = parts.next().filter(|raw| !raw.is_empty()).map(|raw| {
        raw.iter()
            .take(64)
            .map(|&b| char::from(TYPE_ALPHABET[usize::from(b) % TYPE_ALPHABET.len()]))
            .collect()
    });
    let control = parts.next().unwrap_or_default();

    let (frame, id) = check_event_frame(&data, event_type.as_deref(), control);
    check_control_frames(&data, &frame, &id, control);
});
