//! `HeadRefusals`: a reason for the refusals hyper writes by itself.
//!
//! hyper answers an HTTP/1 request head it cannot parse before any service
//! runs: `400` for bad syntax, `414` for a target too long, `431` for a head
//! larger than its buffer (`connection_buffer_bytes`), each with an empty
//! body, and closes the connection. hyper offers no hook for these, so this
//! wrapper, between hyper and the connection's IO (above TLS), recognizes
//! such an answer on its way out and writes the contract's refusal instead:
//! the same status, a one-line reason, `connection: close`.
//!
//! What it recognizes: a write that begins with `HTTP/1.1 400 `, `414 ` or
//! `431 ` and whose head says `content-length: 0`. Every refusal of ours
//! has a reason, so never an empty body, and no service answers 414 or 431;
//! HTTP/2 frames never begin with those bytes. A write right after a
//! partial one continues a buffer and is never looked at.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;
use crate::http::reply;
use crate::metrics::{Metrics, Route};

pub struct HeadRefusals<T> {
    inner: T,
    metrics: Arc<Metrics>,
    /// `connection_buffer_bytes`, for the 431's reason.
    max_head_bytes: usize,
    /// The replacement being written, while hyper waits on its own answer.
    replacing: Option<Bytes>,
    /// The last write took only part of its buffer.
    mid_buffer: bool,
}

impl<T> HeadRefusals<T> {
    pub fn new(inner: T, max_head_bytes: usize, metrics: Arc<Metrics>) -> HeadRefusals<T> {
        HeadRefusals {
            inner,
            metrics,
            max_head_bytes,
            replacing: None,
            mid_buffer: false,
        }
    }

    /// The refusal `written` is hyper's own answer to, if it is one.
    fn refusal_in(&self, written: &[u8]) -> Option<ApiError> {
        let rest = written.strip_prefix(b"HTTP/1.1 ")?;
        let err = match rest.get(..4)? {
            b"400 " => ApiError::MalformedHead,
            b"414 " => ApiError::UriTooLong,
            b"431 " => ApiError::HeadTooLarge {
                max: self.max_head_bytes,
            },
            _ => return None,
        };
        let head_end = memchr::memmem::find(written, b"\r\n\r\n")?;
        let head = &written[..head_end + 2];
        memchr::memmem::find(head, b"\r\ncontent-length: 0\r\n")?;
        Some(err)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadRefusals<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && !this.mid_buffer
            && let Some(err) = this.refusal_in(buf)
        {
            tracing::debug!(status = err.status(), reason = %err, "request head refused");
            this.metrics
                .response_counted(Route::Other, &err.status().to_string());
            this.replacing = Some(reply::error_bytes(&err, &HeaderMap::new()));
        }
        let Some(replacement) = &mut this.replacing else {
            let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            this.mid_buffer = written < buf.len();
            return Poll::Ready(Ok(written));
        };
        // hyper closes the connection after its answer: whatever it wrote
        // is reported written once the replacement is out.
        while replacement.has_remaining() {
            let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, replacement))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            replacement.advance(n);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadRefusals<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(written: &[u8]) -> Option<u16> {
        HeadRefusals::new((), 65536, Arc::new(Metrics::new()))
            .refusal_in(written)
            .map(|err| err.status())
    }

    #[test]
    fn only_hyper_s_empty_answers_are_recognized() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(refusal(hyper_400), Some(400));
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(refusal(hyper_431), Some(431));
        assert_eq!(
            refusal(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n"),
            Some(414)
        );
        // Ours: a reason in the body.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 20\r\n\r\ninvalid topic: ...\r\n";
        assert_eq!(refusal(ours), None);
        // Another status, a body that merely mentions one, an unfinished head.
        assert_eq!(
            refusal(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            refusal(b"data: HTTP/1.1 400 \r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"),
            None
        );
        // content-length: 0 in the body, not the head.
        let in_body =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 25\r\n\r\n\r\ncontent-length: 0\r\n";
        assert_eq!(refusal(in_body), None);
    }
}
