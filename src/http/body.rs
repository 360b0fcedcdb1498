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

use crate::connection::{InFlight, OpenSubscription, StreamWatch};
use crate::sse::stream::EventStream;
use crate::status::StatusStream;

pub struct ResponseBody {
    kind: Kind,
    _in_flight: Option<InFlight>,
    _open_subscription: Option<OpenSubscription>,
    /// HTTP/2 only: tells the connection when a chunk waits for window.
    flow: Option<StreamWatch>,
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
            flow: None,
        }
    }

    /// Keeps the request counted as in flight until this body is dropped.
    pub fn hold(&mut self, in_flight: InFlight) {
        self._in_flight = Some(in_flight);
    }

    /// Reports this HTTP/2 body's chunks to its connection, which fails once
    /// one has waited for flow-control window for `write_timeout`.
    pub fn watch_flow(&mut self, watch: StreamWatch) {
        self.flow = Some(watch);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take()),
            Kind::Events(stream) => stream.poll_next_chunk(cx),
            Kind::Status(stream) => stream.poll_next_chunk(cx),
        };
        if let Some(flow) = &mut this.flow {
            match chunk {
                Poll::Ready(Some(_)) => flow.chunk_handed_out(),
                _ => flow.nothing_handed_out(),
            }
        }
        chunk.map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
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
