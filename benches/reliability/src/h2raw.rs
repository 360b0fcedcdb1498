//! HTTP/2 by hand, for what a real client refuses to do: more streams than
//! the server allows, endless CONTINUATION frames, PING floods. A frame is
//! a 9-byte header and a payload; header blocks are HPACK literals without
//! indexing (no Huffman, no dynamic table), which any decoder must take.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RST_STREAM / GOAWAY error codes.
pub const REFUSED_STREAM: u32 = 0x7;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `high`.
fn integer(out: &mut Vec<u8>, high: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn string(out: &mut Vec<u8>, text: &[u8]) {
    integer(out, 0, 7, text.len());
    out.extend_from_slice(text);
}

/// A literal header field without indexing, its name given literally.
pub fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    string(&mut out, name);
    string(&mut out, value);
    out
}

/// A literal header field without indexing, its name from the static
/// table (`:authority` 1, `:path` 4).
fn literal_indexed_name(index: usize, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    integer(&mut out, 0x00, 4, index);
    string(&mut out, value);
    out
}

/// `GET <path>` over `http`: the request's header block.
pub fn get_block(path: &str) -> Vec<u8> {
    // :method GET (static 2) and :scheme http (static 6), indexed.
    let mut block = vec![0x82, 0x86];
    block.extend(literal_indexed_name(4, path.as_bytes()));
    block.extend(literal_indexed_name(1, b"r"));
    block
}

/// The connection preface and an empty SETTINGS.
pub async fn open(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await
}

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// Reads frames off a connection's read half.
pub struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(half: OwnedReadHalf) -> Reader {
        Reader {
            half,
            buf: Vec::new(),
        }
    }

    /// The next frame; `Ok(None)` at the end of the connection, `Err` when
    /// nothing came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Frame>, ()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let frame = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(Some(frame));
                }
            }
            match tokio::time::timeout(timeout, self.half.read(&mut chunk)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_frames() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10], "RFC 7541 C.1.2");
        let f = frame(PING, ACK, 0, &[1; 8]);
        assert_eq!(&f[..9], &[0, 0, 8, PING, ACK, 0, 0, 0, 0]);
        assert_eq!(literal(b"a", b"bc"), [0, 1, b'a', 2, b'b', b'c']);
    }
}
