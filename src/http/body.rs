//! `ResponseBody`: the one body type every response has.
//!
//! Either a complete buffer (replies, errors, metrics) or a subscriber's
//! `EventStream`. It also carries the connection's markers (request in
//! flight, subscription open), so they are released exactly when hyper drops
//! the body: after the last byte, on error, or when the client vanishes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::connection::{InFlight, OpenSubscription};
use crate::sse::stream::EventStream;
use crate::status::StatusStream;

pub struct ResponseBody {
    kind: Kind,
    _in_flight: Option<InFlight>,
    _open_subscription: Option<OpenSubscription>,
}

enum Kind {
    Full(Option<Bytes>),
    Events(Box<EventStream>),
    Status(Box<StatusStream>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody::of(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::of(Kind::Full(None))
    }

    pub fn events(stream: EventStream, open: OpenSubscription) -> ResponseBody {
        ResponseBody {
            _open_subscription: Some(open),
            ..ResponseBody::of(Kind::Events(Box::new(stream)))
        }
    }

    pub fn status(stream: StatusStream) -> ResponseBody {
        ResponseBody::of(Kind::Status(Box::new(stream)))
    }

    fn of(kind: Kind) -> ResponseBody {
        ResponseBody {
            kind,
            _in_flight: None,
            _open_subscription: None,
        }
    }

    /// Keeps the request counted as in flight until this body is dropped.
    pub fn hold(&mut self, in_flight: InFlight) {
        self._in_flight = Some(in_flight);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events(stream) => stream
                .poll_next_chunk(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
            Kind::Status(stream) => stream
                .poll_next_chunk(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events(_) | Kind::Status(_) => SizeHint::default(),
        }
    }
}
