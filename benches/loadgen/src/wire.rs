//! The client side of the wire: HTTP/1.1 response heads, chunked bodies and
//! SSE frames, parsed incrementally from a byte stream with as little work
//! per byte as possible (the load generator must never be the bottleneck).

use memchr::memmem;

/// What a response head said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// Parses a response head from the start of `buf`; `None` until complete.
pub fn parse_head(buf: &[u8]) -> Option<ResponseHead> {
    let end = memmem::find(buf, b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let (mut chunked, mut content_length) = (false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok();
        }
    }
    Some(ResponseHead {
        status,
        chunked,
        content_length,
        len: end,
    })
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Default)]
pub struct Dechunker {
    /// Bytes left in the current chunk's data.
    remaining: usize,
    /// The CRLF after a chunk's data is still to be skipped.
    pending_crlf: bool,
    /// The terminating zero-size chunk was seen.
    pub finished: bool,
}

impl Dechunker {
    /// Moves the body bytes out of `raw` (consuming what it used) into `body`.
    pub fn decode(&mut self, raw: &mut Vec<u8>, body: &mut Vec<u8>) {
        let mut at = 0;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(raw.len() - at);
                body.extend_from_slice(&raw[at..at + take]);
                at += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    break;
                }
                self.pending_crlf = true;
            }
            if self.pending_crlf {
                if raw.len() - at < 2 {
                    break;
                }
                at += 2;
                self.pending_crlf = false;
            }
            let Some(line_end) = memchr::memchr(b'\n', &raw[at..]) else {
                break;
            };
            let line = &raw[at..at + line_end];
            let hex = line
                .split(|&b| b == b';' || b == b'\r')
                .next()
                .unwrap_or(b"");
            let size = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok());
            at += line_end + 1;
            match size {
                Some(0) | None => {
                    self.finished = true;
                    break;
                }
                Some(size) => self.remaining = size,
            }
        }
        raw.drain(..at);
    }
}

/// One SSE frame as far as the benchmark cares: its id, its data (an event)
/// and its `retry:` field (the reconnection delay, in ms).
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub id: &'a [u8],
    pub data: Option<&'a [u8]>,
    pub retry: Option<u64>,
}

/// Calls `on_event` for every complete frame in `body` with data or a
/// `retry:` field, and drops the bytes it consumed. Comments and `event:`
/// lines are skipped; a frame of comments only (a heartbeat) is not passed
/// on.
pub fn drain_events(body: &mut Vec<u8>, mut on_event: impl FnMut(SseEvent<'_>)) {
    drain_frames(body, |frame| {
        if frame.data.is_some() || frame.retry.is_some() {
            on_event(SseEvent {
                id: frame.id.unwrap_or_default(),
                data: frame.data,
                retry: frame.retry,
            });
        }
    });
}

/// Every field of one SSE frame as ssegate writes them (`name: value`, one
/// space): a frame with only an `id:` is a position, not an event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseFrame<'a> {
    pub id: Option<&'a [u8]>,
    pub event: Option<&'a [u8]>,
    /// The last `data:` line (the benchmarks' payloads are one line).
    pub data: Option<&'a [u8]>,
    pub n_data_lines: usize,
    pub retry: Option<u64>,
    /// Lines starting with `:` (heartbeats, a refusal's reason).
    pub n_comments: usize,
    /// Lines that are none of the above.
    pub n_unknown_lines: usize,
}

/// Calls `on_frame` for every complete frame in `body` (up to a blank
/// line), whatever it holds, and drops the bytes it consumed.
pub fn drain_frames(body: &mut Vec<u8>, mut on_frame: impl FnMut(SseFrame<'_>)) {
    let finder = memmem::Finder::new(b"\n\n");
    let mut at = 0;
    while let Some(end) = finder.find(&body[at..]) {
        let mut frame = SseFrame::default();
        for line in body[at..at + end].split(|&b| b == b'\n') {
            if let Some(value) = line.strip_prefix(b"data: ") {
                frame.data = Some(value);
                frame.n_data_lines += 1;
            } else if let Some(value) = line.strip_prefix(b"id: ") {
                frame.id = Some(value);
            } else if let Some(value) = line.strip_prefix(b"event: ") {
                frame.event = Some(value);
            } else if let Some(value) = line.strip_prefix(b"retry: ") {
                frame.retry = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            } else if line.starts_with(b":") {
                frame.n_comments += 1;
            } else if !line.is_empty() {
                frame.n_unknown_lines += 1;
            }
        }
        on_frame(frame);
        at += end + 2;
    }
    body.drain(..at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_chunks_and_events() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = parse_head(raw).expect("head");
        assert_eq!(
            (head.status, head.chunked, head.len),
            (200, true, raw.len())
        );

        // Two events split over chunks at awkward places, then the end.
        let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
        let first = [chunk("id: 1\ndata: a\n"), chunk("\nid: 2\nda")].concat();
        let mut raw = first.into_bytes();
        let (mut body, mut dechunker) = (Vec::new(), Dechunker::default());
        dechunker.decode(&mut raw, &mut body);
        raw.extend_from_slice(
            [chunk("ta: b"), chunk("\n\n"), "0\r\n\r\n".into()]
                .concat()
                .as_bytes(),
        );
        dechunker.decode(&mut raw, &mut body);
        assert!(dechunker.finished);
        let mut seen = Vec::new();
        drain_events(&mut body, |e| {
            seen.push((e.id.to_vec(), e.data.map(<[u8]>::to_vec)))
        });
        assert_eq!(
            seen,
            vec![
                (b"1".to_vec(), Some(b"a".to_vec())),
                (b"2".to_vec(), Some(b"b".to_vec()))
            ]
        );
        assert!(body.is_empty());
    }

    #[test]
    fn a_temporary_refusal_is_a_retry_and_a_comment() {
        // ssegate's "come back later" to an EventSource (cluster mode, a
        // replay Redis did not answer in time), then a heartbeat.
        let mut body =
            b"retry: 2345\n\n: cannot replay from Redis in time\n\n: heartbeat\n\n".to_vec();
        let mut seen = Vec::new();
        drain_events(&mut body, |e| seen.push((e.data.is_some(), e.retry)));
        assert_eq!(seen, vec![(false, Some(2345))]);
        assert!(body.is_empty());
    }

    #[test]
    fn a_position_block_is_a_frame_but_not_an_event() {
        let mut body =
            b"retry: 3000\n\nid: e-0\n\nid: e-1\nevent: gap\ndata: x\n\n: hb\n\n".to_vec();
        let mut frames = Vec::new();
        drain_frames(&mut body, |f| {
            frames.push((f.id.map(<[u8]>::to_vec), f.data.is_some(), f.n_comments))
        });
        let e = |id: &[u8]| Some(id.to_vec());
        assert_eq!(
            frames,
            vec![
                (None, false, 0),
                (e(b"e-0"), false, 0),
                (e(b"e-1"), true, 0),
                (None, false, 1)
            ]
        );
        let mut body = b"retry: 3000\n\nid: e-0\n\nid: e-1\ndata: x\n\n".to_vec();
        let mut events = Vec::new();
        drain_events(&mut body, |e| events.push(e.id.to_vec()));
        assert_eq!(events, vec![b"".to_vec(), b"e-1".to_vec()]);
    }
}
