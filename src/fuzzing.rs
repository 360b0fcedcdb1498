//! Doors into the crate's private parsers for the cargo-fuzz targets in
//! `fuzz/` (built only with the `fuzzing` feature; not an API).
//!
//! Re-exports of the very functions the server runs, so a target exercises
//! exactly them; what the targets assert lives in `fuzz/fuzz_targets/`,
//! written apart from the code under test.

pub use crate::error::ApiError;

/// Topic names (`/publish/{topic}`, `/subscribe/{topic}`, `topic=`).
pub mod topic {
    pub use crate::topic::name::{InvalidTopic, MAX_TOPIC_BYTES, TopicName, TopicStr};
}

/// Query strings, and the topics and resume id a subscribe reads.
pub mod query {
    pub use crate::http::query::{pairs, single};
    pub use crate::http::subscribe::{resume_id, topics};
}

/// Resume ids: single-node `<epoch>-<seq>`, cluster `<epoch>-<ms>-<seq>`.
pub mod ids {
    pub use crate::cluster::ids::{EPOCH_LEN, Epoch, IdMap, SEQ_LIMIT, StreamId, parse_cluster_id};
    pub use crate::id::{ID_LEN, MAX_RESUME_ID_BYTES, RunEpoch};
}

/// The direct path's decision on a connection's first bytes.
pub mod direct {
    pub use crate::http::direct::{Parsed, parse_head};
}

/// The SSE wire format.
pub mod sse {
    pub use crate::sse::encode::{
        HEARTBEAT, event_body, event_template, gap_frame, position_frame, retry_frame,
    };
}

/// Configuration value parsers.
pub mod config {
    pub use crate::config::value::{
        address, boolean, bytes, count, duration, duration_or_zero, list, optional, redacted_url,
        redis_url,
    };
}
