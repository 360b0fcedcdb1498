//! HTTP/1.1 subscribe requests answered straight on the socket, without hyper.
//!
//! Why: hyper keeps a read buffer (8 KiB, 16 KiB after the auto builder's
//! protocol sniff) and an 8 KiB header buffer for the whole life of every
//! HTTP/1 connection, and runs its dispatcher on every write. For an event
//! stream that idles for hours or writes one small frame per event, that was
//! most of the memory and most of the user-space CPU per subscriber (measured
//! in `benches/README.md`). So a plain-text connection whose first bytes are a
//! complete `GET /subscribe...` head is served here: the head is *peeked*, not
//! read, and parsed with httparse (hyper's own parser). When the subscription
//! opens, the head is consumed, the response head written, and the stream's
//! chunks written as they come, the body delimited by closing the connection
//! (as nchan does), so each chunk is one `write` of a shared frame.
//!
//! While such a stream waits at the head of its topic, the publisher of the
//! next event writes that event to its socket itself (`topic::fanout`,
//! through the socket's `sink::Sink`); the task claims the socket back
//! whenever it is polled.
//!
//! Everything else is left untouched on the socket for hyper, which answers it
//! exactly as before: other requests, HTTP/2, heads that are still incomplete
//! after a short wait, too large or malformed, and subscribes that are
//! refused (hyper re-reads the head and gives the same status and reason).
//! Two kinds of refusal are answered here instead, then the connection
//! closed: a temporary one to an `EventSource` (hyper would try, and wait,
//! all over again) and an authorization refusal (hyper would verify the
//! token, or ask the application, a second time). TLS connections never
//! come here.

use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection::{ConnectionState, InFlight, OpenSubscription};
use crate::error::ApiError;
use crate::http::{Endpoint, access_log, cors, reply, subscribe};
use crate::io::DeadlineIo;
use crate::metrics::Route;
use crate::sink::{Claim, Handover, SharedSocket, Sink};
use crate::sse::stream::EventStream;
use crate::state::AppState;

/// The largest request head taken on this path; larger ones go to hyper.
const MAX_HEAD_BYTES: usize = 4096;
/// Headers parsed at most; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// A head that has not fully arrived gets this long, once, to complete (its
/// second packet is usually right behind); then hyper takes the connection.
/// Peeking cannot wait for "more bytes", only sleep, so a client that drips
/// its head must not keep this path polling.
const PARTIAL_HEAD_PAUSE: Duration = Duration::from_millis(5);

/// What the first bytes of a connection are.
pub enum Peek {
    /// A complete HTTP/1.1 `GET /subscribe...` head of `head_len` bytes.
    Subscribe {
        request: Box<Parts>,
        head_len: usize,
    },
    /// Anything else: hyper's to answer.
    Other,
    /// Nothing complete arrived before the first-request deadline.
    TimedOut,
}

/// Looks at the start of `stream` without consuming it, waiting for the head
/// to arrive until `deadline`.
pub async fn peek_subscribe(stream: &TcpStream, deadline: Instant) -> Peek {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut waited_for_rest = false;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_elapsed) => return Peek::TimedOut,
            Ok(Err(_)) | Ok(Ok(0)) => return Peek::Other,
            Ok(Ok(n)) => n,
        };
        match parse_head(&buf[..n]) {
            Parsed::Subscribe(request, head_len) => return Peek::Subscribe { request, head_len },
            Parsed::Other => return Peek::Other,
            Parsed::Partial if n == buf.len() || waited_for_rest => return Peek::Other,
            Parsed::Partial => {
                if Instant::now() + PARTIAL_HEAD_PAUSE >= deadline {
                    return Peek::TimedOut;
                }
                tokio::time::sleep(PARTIAL_HEAD_PAUSE).await;
                waited_for_rest = true;
            }
        }
    }
}

/// What `parse_head` made of the peeked bytes.
pub enum Parsed {
    Subscribe(Box<Parts>, usize),
    Partial,
    Other,
}

/// Decides on the bytes peeked so far, without I/O: a complete plain
/// subscribe head (and its length), a head still arriving, or hyper's to
/// answer. Pure, so `fuzz/` feeds it arbitrary bytes.
pub fn parse_head(bytes: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"GET /subscribe";
    let n_prefix = bytes.len().min(PREFIX.len());
    if bytes[..n_prefix] != PREFIX[..n_prefix] {
        return Parsed::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(head_len)) => match to_request(&parsed) {
            Some(request) => Parsed::Subscribe(Box::new(request), head_len),
            None => Parsed::Other,
        },
        Err(_) => Parsed::Other,
    }
}

/// The head of a plain GET/1.1 without a body, or `None` for anything this
/// path leaves to hyper.
fn to_request(parsed: &httparse::Request<'_, '_>) -> Option<Parts> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let body_follows = name == hyper::header::TRANSFER_ENCODING
            || (name == hyper::header::CONTENT_LENGTH && header.value != b"0");
        if body_follows || name == hyper::header::UPGRADE {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = Method::GET;
    head.uri = uri;
    head.version = Version::HTTP_11;
    head.headers = headers;
    Some(head)
}

/// A subscription opened for a peeked request, ready to be served.
pub struct Opened {
    stream: EventStream,
    response_head: Bytes,
    head_len: usize,
    _in_flight: InFlight,
    _open_subscription: OpenSubscription,
}

/// What a peeked subscribe gets on this path.
// `Opened` moves into the stream's task as it is; boxing it for the sake of
// a rare refusal would cost every direct stream an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Stream(Opened),
    /// A temporary refusal for an `EventSource` (see
    /// `reply::temporary_refusal`), written here rather than left to hyper,
    /// which would try (and wait) all over again.
    Refused(Box<Refusal>),
}

/// A refusal's complete response (temporary, or by authorization), for the
/// request head of `head_len` bytes still on the socket.
pub struct Refusal {
    response: Bytes,
    head_len: usize,
    _in_flight: InFlight,
}

/// Opens the subscription `request` asks for. `None` when it is refused
/// and hyper is to answer (the head is still on the socket): not for a
/// temporary refusal to an `EventSource`, nor, where subscribes are
/// authorized, for any refusal, which are answered here.
pub async fn open(
    request: &Parts,
    head_len: usize,
    state: &AppState,
    connection: &Arc<ConnectionState>,
) -> Option<Answer> {
    let started = std::time::Instant::now();
    let Some(Endpoint::Subscribe(path_topic)) = Endpoint::of(request.uri.path()) else {
        return None;
    };
    let opened = subscribe::open(request, path_topic, state, connection.client()).await;
    let mut cors_headers = HeaderMap::new();
    if let Some(allow) = cors::allow_origin(&request.headers, &state.config.cors_allowed_origins) {
        cors::decorate(&mut cors_headers, &allow);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in subscribe::STREAM_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.extend(cors_headers.clone());
    let (stream, slot) = match opened {
        Ok(opened) => opened,
        Err(err) if err.temporary_reason().is_some() && subscribe::wants_event_stream(request) => {
            subscribe::count_refusal(&err, state);
            // Not a warning each: a crowd refused at once would flood the
            // log exactly when it matters.
            tracing::debug!(status = 200, reason = %err, "subscribe refused for now");
            answered(state, request, connection, 200, started);
            let mut response = reply::http1_head(StatusCode::OK, &headers);
            response.extend_from_slice(&reply::refusal_body(&err, state.config.refusal_retry));
            return Some(Answer::Refused(Box::new(Refusal {
                response: response.freeze(),
                head_len,
                _in_flight: connection.request_started(false),
            })));
        }
        // Answered here too when subscribes are authorized: hyper would
        // authorize all over again (a second request to the application, a
        // second verification), whether the refusal came from that or from
        // a later step.
        Err(err) if matches!(err, ApiError::Auth(_)) || state.auth.checks_subscribes() => {
            subscribe::count_refusal(&err, state);
            tracing::debug!(status = err.status(), reason = %err, "request refused");
            answered(state, request, connection, err.status(), started);
            return Some(Answer::Refused(Box::new(Refusal {
                response: reply::error_bytes(&err, &cors_headers),
                head_len,
                _in_flight: connection.request_started(false),
            })));
        }
        Err(_) => return None,
    };
    answered(state, request, connection, 200, started);
    Some(Answer::Stream(Opened {
        stream,
        response_head: reply::http1_head(StatusCode::OK, &headers).freeze(),
        head_len,
        _in_flight: connection.request_started(false),
        _open_subscription: connection.subscription_opened(slot),
    }))
}

/// Counts (and, with `access_log`, logs) a response the direct path wrote.
fn answered(
    state: &AppState,
    request: &Parts,
    connection: &ConnectionState,
    status: u16,
    started: std::time::Instant,
) {
    state
        .metrics
        .response_sent(Route::Subscribe, &status.to_string(), started);
    if state.config.access_log {
        access_log::record(
            request,
            status,
            Route::Subscribe,
            connection.client(),
            started,
            state.auth_query_param(),
        );
    }
}

impl Refusal {
    /// Consumes the request head, writes the response, closes.
    pub async fn serve(self, mut io: DeadlineIo<TcpStream>) {
        let mut request_head = vec![0u8; self.head_len];
        if io.read_exact(&mut request_head).await.is_ok()
            && io.write_all(&self.response).await.is_ok()
        {
            let _ = io.shutdown().await;
        }
    }
}

impl Opened {
    /// Consumes the request head, writes the response head, then every chunk
    /// of the stream until it ends (shutdown, lag) or the client goes away.
    /// Stalled writes fail through `DeadlineIo`'s write timeout.
    pub fn serve(self, io: DeadlineIo<TcpStream>) -> impl Future<Output = ()> {
        // Not an `async fn` taking `io`: its state would keep room for `io`
        // as a parameter besides the `SharedSocket` it moves into, for the
        // whole life of every stream.
        self.serve_socket(SharedSocket::new(io))
    }

    async fn serve_socket(mut self, mut socket: SharedSocket<DeadlineIo<TcpStream>>) {
        let mut request_head = vec![0u8; self.head_len];
        if socket.read_exact(&mut request_head).await.is_err() {
            return;
        }
        drop(request_head);
        if socket.write_all(&self.response_head).await.is_err() {
            return;
        }
        let sink = Arc::clone(socket.sink());
        let attached = self.stream.attach_sink(Arc::clone(&sink));
        let sink = attached.then_some(&*sink);
        loop {
            let next =
                std::future::poll_fn(|cx| self.poll_next(cx, socket.get_ref().get_ref(), sink))
                    .await;
            match next {
                Next::Chunk(chunk) => {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                Next::End => break,
                Next::Client => match client_activity(socket.get_ref().get_ref()) {
                    ClientActivity::Sent => {}
                    ClientActivity::Closed => return,
                    ClientActivity::TimedOut => {
                        socket.get_ref().record_write_timeout();
                        return;
                    }
                },
                Next::FanOutFailed(kind) => {
                    if kind == std::io::ErrorKind::TimedOut {
                        socket.get_ref().record_write_timeout();
                    }
                    return;
                }
            }
        }
        // The stream ended on our side: a FIN tells the client at once.
        let _ = socket.shutdown().await;
    }
}

impl Opened {
    /// The next thing to do: write a chunk, end, or look at the client.
    /// With a `sink`, the socket is claimed back from fan-outs first, and
    /// handed to them again when the stream waits at the head of its topic.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        socket: &TcpStream,
        sink: Option<&Sink>,
    ) -> Poll<Next> {
        if let Some(sink) = sink
            && let Some(next) = ready!(self.claim(sink))
        {
            return Poll::Ready(next);
        }
        if let Poll::Ready(chunk) = self.stream.poll_next_chunk(cx) {
            return Poll::Ready(chunk.map_or(Next::End, Next::Chunk));
        }
        if let (Some(sink), Some(cursor)) = (sink, self.stream.idle_at_head()) {
            sink.park(cursor, cx.waker());
        }
        socket.poll_read_ready(cx).map(|_| Next::Client)
    }

    /// Takes the socket back from fan-outs and catches up with what they
    /// wrote. `Pending` while one is writing (it wakes the task when done);
    /// `Some` when one left something to finish.
    fn claim(&mut self, sink: &Sink) -> Poll<Option<Next>> {
        let Claim::Owned {
            cursor,
            last_write,
            handover,
        } = sink.claim()
        else {
            return Poll::Pending;
        };
        self.stream.written_elsewhere(cursor, last_write);
        Poll::Ready(handover.map(|handover| match handover {
            Handover::Rest(rest) => Next::Chunk(rest),
            Handover::Failed(kind) => Next::FanOutFailed(kind),
        }))
    }
}

enum Next {
    Chunk(Bytes),
    End,
    /// The socket is readable: the client sent something, closed or failed.
    Client,
    /// A fan-out's write to the socket failed.
    FanOutFailed(std::io::ErrorKind),
}

/// What the client did while its stream was open.
enum ClientActivity {
    /// It sent bytes, which an event stream has no use for: dropped.
    Sent,
    /// It closed the connection or it failed.
    Closed,
    /// The kernel gave up on it (`TCP_USER_TIMEOUT`): a write timeout.
    TimedOut,
}

fn client_activity(socket: &TcpStream) -> ClientActivity {
    let mut sink = [0u8; 64];
    match socket.try_read(&mut sink) {
        Ok(0) => ClientActivity::Closed,
        Ok(_) => ClientActivity::Sent,
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => ClientActivity::Sent,
        Err(err) if err.kind() == std::io::ErrorKind::TimedOut => ClientActivity::TimedOut,
        Err(_) => ClientActivity::Closed,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check(head: &str, expect: &str) {
        let kind = match parse_head(head.as_bytes()) {
            Parsed::Subscribe(request, len) => {
                assert_eq!(len, head.len());
                format!("subscribe {}", request.uri)
            }
            Parsed::Partial => "partial".into(),
            Parsed::Other => "other".into(),
        };
        assert_eq!(kind, expect, "{head:?}");
    }

    #[test]
    fn only_complete_plain_subscribe_heads_are_taken() {
        check(
            "GET /subscribe/a HTTP/1.1\r\nHost: x\r\n\r\n",
            "subscribe /subscribe/a",
        );
        check(
            "GET /subscribe?topic=a HTTP/1.1\r\n\r\n",
            "subscribe /subscribe?topic=a",
        );
        check("GET /subscribe/a HTTP/1.1\r\nHost: x\r\n", "partial");
        check("GET /subsc", "partial");
        check("GET /healthz HTTP/1.1\r\n\r\n", "other");
        check("POST /subscribe/a HTTP/1.1\r\n\r\n", "other");
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "other");
        check("GET /subscribe/a HTTP/1.0\r\n\r\n", "other");
        check(
            "GET /subscribe/a HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "other",
        );
        check(
            "GET /subscribe/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "other",
        );
        check("GET /subscribe/a HTTP/1.1\r\nBad Header\r\n\r\n", "other");
    }

    proptest! {
        /// The fuzz target `request_head` checks the same on any bytes.
        #[test]
        fn any_bytes_are_decided_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn only_complete_heads_within_the_limits_are_taken(
            target in "/subscribe[!-~]{0,40}",
            headers in prop::collection::vec(
                (
                    "[!-~&&[^:]]{1,12}",
                    prop::collection::vec(any::<u8>().prop_filter("a line break", |b| {
                        !b"\r\n".contains(b)
                    }), 0..24),
                ),
                0..40,
            ),
            line_end in prop::sample::select(vec!["\r\n", "\n"]),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut head = format!("GET {target} HTTP/1.1{line_end}").into_bytes();
            for (name, value) in &headers {
                head.extend_from_slice(name.as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value);
                head.extend_from_slice(line_end.as_bytes());
            }
            head.extend_from_slice(line_end.as_bytes());
            match parse_head(&head) {
                Parsed::Subscribe(request, len) => {
                    prop_assert!(headers.len() <= MAX_HEADERS);
                    prop_assert_eq!(len, head.len());
                    prop_assert_eq!(request.method, Method::GET);
                    prop_assert!(request.uri.path().starts_with("/subscribe"));
                    let shorter = &head[..cut.index(len)];
                    prop_assert!(!matches!(parse_head(shorter), Parsed::Subscribe(..)));
                }
                Parsed::Partial => prop_assert!(false, "a complete head is not partial"),
                Parsed::Other => {}
            }
        }
    }
}
