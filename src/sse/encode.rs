//! The SSE wire format, written once per event.
//!
//! Pure functions over bytes: no HTTP, no locks, no metrics. An event becomes
//! one immutable `Bytes` frame at publish time and every subscriber shares it,
//! so nothing here runs per subscriber except the one-off `gap_frame`.
//!
//! Line breaks in data (`\n`, `\r\n`, lone `\r`) each end a `data:` line, so
//! an `EventSource` client reassembles the text with `\n` between lines. Every
//! value follows `": "`: the parser strips exactly one space, so data that
//! itself starts with a space survives.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// The comment sent when a stream has been quiet for `heartbeat_interval`.
pub const HEARTBEAT: Bytes = Bytes::from_static(b":\n\n");

/// An encoded event whose `id:` value is still a placeholder.
///
/// Encoding happens before the publisher takes the topic lock; only the id,
/// which is assigned under that lock, is patched in afterwards with `finish`.
#[derive(Debug)]
pub struct FrameTemplate {
    buf: BytesMut,
    id_at: usize,
    id_len: usize,
}

impl FrameTemplate {
    /// Writes `id` into the reserved place and freezes the frame.
    ///
    /// # Panics
    ///
    /// If `id.len()` differs from the length reserved by `event_template`;
    /// ids are fixed-width by construction, so this is a programming error.
    pub fn finish(mut self, id: &[u8]) -> Bytes {
        assert_eq!(id.len(), self.id_len, "event id width changed");
        self.buf[self.id_at..self.id_at + self.id_len].copy_from_slice(id);
        self.buf.freeze()
    }

    /// Size of the finished frame in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes an event with room for an `id_len`-byte id: `id:`, then `event:`
/// when a type is given, then one `data:` line per line of `data`, then the
/// blank line that dispatches it.
pub fn event_template(id_len: usize, event_type: Option<&str>, data: &str) -> FrameTemplate {
    let (n_breaks, n_break_bytes) = count_line_breaks(data.as_bytes());
    let event_len = event_type.map_or(0, |ty| "event: \n".len() + ty.len());
    let data_len = (n_breaks + 1) * "data: \n".len() + data.len() - n_break_bytes;
    let capacity = "id: \n".len() + id_len + event_len + data_len + 1;
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_slice(b"id: ");
    let id_at = buf.len();
    buf.put_bytes(b'0', id_len);
    buf.put_u8(b'\n');
    if let Some(ty) = event_type {
        put_field(&mut buf, b"event", ty.as_bytes());
    }
    put_data_lines(&mut buf, data.as_bytes());
    buf.put_u8(b'\n');
    debug_assert_eq!(buf.len(), capacity);
    FrameTemplate { buf, id_at, id_len }
}

/// An event's frame without its `id:` line (`event:` when a type is given,
/// the `data:` lines, the blank line): what a cluster node stores in Redis,
/// every node adding the id the log gave it.
pub fn event_body(event_type: Option<&str>, data: &str) -> Bytes {
    let template = event_template(0, event_type, data);
    template.buf.freeze().slice("id: \n".len()..)
}

/// Encodes a complete event frame in one call (tests; the server patches ids
/// into templates instead).
#[cfg(test)]
pub fn event_frame(id: &str, event_type: Option<&str>, data: &str) -> Bytes {
    event_template(id.len(), event_type, data).finish(id.as_bytes())
}

/// The `retry:` field every stream starts with, telling `EventSource` how long
/// to wait before reconnecting.
pub fn retry_frame(retry: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", retry.as_millis()))
}

/// The position block: only `id: <id>` and a blank line. `EventSource`
/// dispatches nothing for it but takes `id` as its `lastEventId`, so a client
/// whose stream ends before its first event still resumes from here.
pub fn position_frame(id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + 6);
    put_field(&mut buf, b"id", id.as_bytes());
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The `gap` event: the client's `last_event_id` can no longer be resumed
/// exactly. It carries no `id:` line, so the client's own last id stays put
/// until a real event arrives.
pub fn gap_frame(last_event_id: &str) -> Bytes {
    #[derive(Serialize)]
    struct Gap<'a> {
        last_event_id: &'a str,
    }
    // Serializing a struct of one string cannot fail; the fallback keeps the
    // stream well-formed should that ever change.
    let json = serde_json::to_string(&Gap { last_event_id })
        .unwrap_or_else(|_| String::from("{\"last_event_id\":\"\"}"));
    let mut buf = BytesMut::with_capacity(json.len() + 32);
    put_field(&mut buf, b"event", b"gap");
    put_field(&mut buf, b"data", json.as_bytes());
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Line breaks in `data` and the bytes they take (`\r\n` is one break of two).
fn count_line_breaks(data: &[u8]) -> (usize, usize) {
    let n_break_bytes = memchr::memchr2_iter(b'\r', b'\n', data).count();
    let n_crlf = memchr::memmem::find_iter(data, b"\r\n").count();
    (n_break_bytes - n_crlf, n_break_bytes)
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

fn put_data_lines(buf: &mut BytesMut, data: &[u8]) {
    let mut line_start = 0;
    let mut breaks = memchr::memchr2_iter(b'\r', b'\n', data).peekable();
    while let Some(at) = breaks.next() {
        put_field(buf, b"data", &data[line_start..at]);
        line_start = at + 1;
        // A CR directly followed by LF is one line break, not two.
        if data[at] == b'\r' && data.get(at + 1) == Some(&b'\n') {
            breaks.next();
            line_start += 1;
        }
    }
    put_field(buf, b"data", &data[line_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(event_type: Option<&str>, data: &str, expect: &str) {
        let frame = event_frame("7", event_type, data);
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            expect,
            "data {data:?}"
        );
    }

    #[test]
    fn frames_are_byte_exact() {
        check(None, "hello", "id: 7\ndata: hello\n\n");
        check(Some("price"), "1", "id: 7\nevent: price\ndata: 1\n\n");
        check(None, "", "id: 7\ndata: \n\n");
        check(None, "a\nb", "id: 7\ndata: a\ndata: b\n\n");
        check(None, "a\r\nb", "id: 7\ndata: a\ndata: b\n\n");
        check(None, "a\rb", "id: 7\ndata: a\ndata: b\n\n");
        check(None, "a\r\rb", "id: 7\ndata: a\ndata: \ndata: b\n\n");
        check(None, "a\n\r\nb", "id: 7\ndata: a\ndata: \ndata: b\n\n");
        check(None, "end\n", "id: 7\ndata: end\ndata: \n\n");
        check(None, "\r", "id: 7\ndata: \ndata: \n\n");
        check(None, " lead", "id: 7\ndata:  lead\n\n");
        check(None, "ünï 😀", "id: 7\ndata: ünï 😀\n\n");
    }

    #[test]
    fn a_body_is_the_frame_without_its_id_line() {
        for (event_type, data) in [(None, "a\r\nb"), (Some("price"), ""), (None, "ünï")] {
            let frame = event_frame("7", event_type, data);
            let body = event_body(event_type, data);
            assert_eq!(&frame["id: 7\n".len()..], &body[..]);
        }
    }

    #[test]
    fn template_reserves_the_id_and_sizes_exactly() {
        let template = event_template(4, Some("x"), "a\r\nb");
        let capacity = template.buf.capacity();
        let frame = template.finish(b"abcd");
        assert_eq!(&frame[..], b"id: abcd\nevent: x\ndata: a\ndata: b\n\n");
        assert_eq!(frame.len(), capacity);
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            &retry_frame(Duration::from_millis(3000))[..],
            b"retry: 3000\n\n"
        );
        assert_eq!(
            &gap_frame("x\"y\nz")[..],
            b"event: gap\ndata: {\"last_event_id\":\"x\\\"y\\nz\"}\n\n"
        );
        assert_eq!(&HEARTBEAT[..], b":\n\n");
    }
}

#[cfg(test)]
mod roundtrip {
    use std::convert::Infallible;

    use eventsource_stream::Eventsource;
    use futures_util::{FutureExt, StreamExt, stream};
    use proptest::prelude::*;

    use super::*;

    /// Parses frames with an independent SSE parser, fed in the given chunks.
    fn parse(chunks: Vec<Bytes>) -> Vec<eventsource_stream::Event> {
        stream::iter(chunks.into_iter().map(Ok::<_, Infallible>))
            .eventsource()
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("an in-memory stream is always ready")
            .into_iter()
            .map(|event| event.expect("parser error"))
            .collect()
    }

    /// What an `EventSource` client sees: every line break becomes `\n`.
    fn as_client_sees(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    proptest! {
        #[test]
        fn any_utf8_body_round_trips(
            data in any::<String>(),
            event_type in proptest::option::of("[A-Za-z0-9_.:-]{1,64}"),
            split_at in any::<prop::sample::Index>(),
        ) {
            let frame = event_frame("e-1", event_type.as_deref(), &data);
            // Split the frame at an arbitrary byte to exercise incremental parsing.
            let at = split_at.index(frame.len() + 1);
            let events = parse(vec![frame.slice(..at), frame.slice(at..)]);
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].data, &as_client_sees(&data));
            prop_assert_eq!(&events[0].id, "e-1");
            prop_assert_eq!(&events[0].event, event_type.as_deref().unwrap_or("message"));
        }

        #[test]
        fn line_breaks_of_every_kind_round_trip(
            parts in prop::collection::vec(("[a-z ]{0,3}", prop::sample::select(vec!["\n", "\r", "\r\n"])), 0..8),
        ) {
            let data: String = parts.iter().map(|(text, br)| format!("{text}{br}")).collect();
            let events = parse(vec![event_frame("1", None, &data)]);
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].data, &as_client_sees(&data));
        }
    }
}
