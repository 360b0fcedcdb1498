//! A subscriber on a raw HTTP/1.1 connection: the request is sent as
//! given, the head read, then the stream parsed frame by frame with the load
//! generator's parser (`drain_frames`), which tells events (`data:`) from
//! position blocks (an `id:` alone), `gap` events, `retry:` and heartbeats.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use ssegate_bench::wire::{Dechunker, SseFrame, drain_frames, parse_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::PATIENCE;

/// An event stream, or whatever answered the subscribe.
pub struct SseStream {
    stream: TcpStream,
    pub status: u16,
    pub head: String,
    content_length: Option<usize>,
    raw: Vec<u8>,
    body: Vec<u8>,
    dechunker: Option<Dechunker>,
    buf: Vec<u8>,
    queue: VecDeque<Frame>,
}

/// One frame, owned (see `SseFrame`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub n_data_lines: usize,
    pub retry: Option<u64>,
    pub n_comments: usize,
    pub n_unknown_lines: usize,
}

impl Frame {
    fn from_wire(frame: &SseFrame<'_>) -> Frame {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Frame {
            id: frame.id.map(text),
            event: frame.event.map(text),
            data: frame.data.map(text),
            n_data_lines: frame.n_data_lines,
            retry: frame.retry,
            n_comments: frame.n_comments,
            n_unknown_lines: frame.n_unknown_lines,
        }
    }

    pub fn is_gap(&self) -> bool {
        self.event.as_deref() == Some("gap")
    }

    /// An event a publisher sent (not a `gap`, which ssegate writes itself).
    pub fn is_event(&self) -> bool {
        self.data.is_some() && !self.is_gap()
    }

    /// A position block: an id and nothing else.
    pub fn is_position(&self) -> bool {
        self.id.is_some() && self.data.is_none() && self.event.is_none()
    }
}

/// Bytes read per `read` call: many events per syscall when behind.
const READ_BYTES: usize = 64 * 1024;

impl SseStream {
    /// Connects, sends `GET path` with `extra_headers` (whole lines, each
    /// ending in CRLF), and reads the response head.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        extra_headers: &str,
    ) -> Result<SseStream, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect: {err}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: r\r\n{extra_headers}\r\n");
        SseStream::open_on(stream, request.as_bytes()).await
    }

    /// Sends `request` on `stream` and reads the response head.
    pub async fn open_on(mut stream: TcpStream, request: &[u8]) -> Result<SseStream, String> {
        let _ = stream.set_nodelay(true);
        stream
            .write_all(request)
            .await
            .map_err(|err| format!("request: {err}"))?;
        let mut sse = SseStream {
            stream,
            status: 0,
            head: String::new(),
            content_length: None,
            raw: Vec::new(),
            body: Vec::new(),
            dechunker: None,
            buf: vec![0u8; READ_BYTES],
            queue: VecDeque::new(),
        };
        let head = loop {
            if let Some(head) = parse_head(&sse.raw) {
                break head;
            }
            let read = tokio::time::timeout(PATIENCE, sse.stream.read(&mut sse.buf)).await;
            match read {
                Err(_) => return Err("no response head in time".into()),
                Ok(Ok(0)) => return Err("closed before a response head".into()),
                Ok(Err(err)) => return Err(format!("read: {err}")),
                Ok(Ok(n)) => sse.raw.extend_from_slice(&sse.buf[..n]),
            }
        };
        sse.status = head.status;
        sse.content_length = head.content_length;
        sse.head = String::from_utf8_lossy(&sse.raw[..head.len]).into_owned();
        sse.raw.drain(..head.len);
        if head.chunked {
            sse.dechunker = Some(Dechunker::default());
        } else {
            sse.body.append(&mut sse.raw);
        }
        Ok(sse)
    }

    /// Reads once (waiting for bytes), then hands every complete frame to
    /// `on_frame`; `Ok(false)` once the stream has ended.
    pub async fn read_frames(
        &mut self,
        mut on_frame: impl FnMut(SseFrame<'_>),
    ) -> Result<bool, String> {
        // Frames already read (the head's read may have brought some).
        self.decode();
        drain_frames(&mut self.body, &mut on_frame);
        let n = match self.stream.read(&mut self.buf).await {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(false),
            Err(err) => return Err(format!("read: {err}")),
        };
        match self.dechunker {
            Some(_) => self.raw.extend_from_slice(&self.buf[..n]),
            None => self.body.extend_from_slice(&self.buf[..n]),
        }
        self.decode();
        drain_frames(&mut self.body, on_frame);
        Ok(!self.dechunker.as_ref().is_some_and(|d| d.finished))
    }

    fn decode(&mut self) {
        if let Some(dechunker) = self.dechunker.as_mut() {
            dechunker.decode(&mut self.raw, &mut self.body);
        }
    }

    /// The next frame, owned; `Ok(None)` when the stream ended, `Err` on a
    /// read error or when nothing came within `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Ok(Some(frame));
            }
            self.decode();
            let queue = &mut self.queue;
            drain_frames(&mut self.body, |frame| {
                queue.push_back(Frame::from_wire(&frame))
            });
            if !queue.is_empty() {
                continue;
            }
            let read = tokio::time::timeout_at(
                deadline,
                Self::read_into(
                    &mut self.stream,
                    &mut self.buf,
                    &mut self.raw,
                    &mut self.body,
                    &mut self.dechunker,
                ),
            )
            .await
            .map_err(|_| format!("no frame within {timeout:?}"))?;
            drain_frames(&mut self.body, |frame| {
                queue.push_back(Frame::from_wire(&frame))
            });
            if !read? && self.queue.is_empty() {
                return Ok(None);
            }
        }
    }

    /// One read into the body (dechunked); false at the end of the stream.
    async fn read_into(
        stream: &mut TcpStream,
        buf: &mut [u8],
        raw: &mut Vec<u8>,
        body: &mut Vec<u8>,
        dechunker: &mut Option<Dechunker>,
    ) -> Result<bool, String> {
        let n = match stream.read(buf).await {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(false),
            Err(err) => return Err(format!("read: {err}")),
        };
        match dechunker {
            Some(dechunker) => {
                raw.extend_from_slice(&buf[..n]);
                dechunker.decode(raw, body);
                Ok(!dechunker.finished)
            }
            None => {
                body.extend_from_slice(&buf[..n]);
                Ok(true)
            }
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// The rest of a body that is not a stream (a refusal's reason): up to
    /// its `Content-Length`, the end of its chunks, or the end of the
    /// connection, within `timeout`.
    pub async fn rest_of_body(mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        self.decode();
        let mut out = std::mem::take(&mut self.body);
        let complete =
            |out: &Vec<u8>, length: Option<usize>| length.is_some_and(|n| out.len() >= n);
        let read = tokio::time::timeout(timeout, async {
            while !complete(&out, self.content_length) {
                let more = Self::read_into(
                    &mut self.stream,
                    &mut self.buf,
                    &mut self.raw,
                    &mut out,
                    &mut self.dechunker,
                )
                .await?;
                if !more {
                    break;
                }
            }
            Ok::<(), String>(())
        })
        .await;
        match read {
            Ok(Ok(())) => Ok(out),
            Ok(Err(err)) => Err(err),
            Err(_) if self.content_length.is_none() && self.dechunker.is_none() => Ok(out),
            Err(_) => Err(format!("body incomplete after {timeout:?}")),
        }
    }
}

/// `(epoch, seq)` of an id of ssegate's shape (`<16 hex>-<16 hex>`).
pub fn parse_id(id: &[u8]) -> Option<(u64, u64)> {
    if id.len() != 33 || id[16] != b'-' {
        return None;
    }
    Some((hex(&id[..16])?, hex(&id[17..])?))
}

fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}

pub fn format_id(epoch: u64, seq: u64) -> String {
    format!("{epoch:016x}-{seq:016x}")
}
