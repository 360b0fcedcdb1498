//! Server-Sent Events: the wire format (`encode`) and the subscriber stream
//! that writes it (`stream`). Neither knows about hyper; `http::body` adapts
//! the stream to a response body.

pub mod encode;
pub mod stream;
