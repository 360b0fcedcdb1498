//! The parts of the load generator other bench programs reuse (the
//! reliability battery, `benches/reliability`): the client side of the wire
//! (response heads, chunked bodies, SSE frames), server CPU and memory from
//! `/proc`, and the delivery statistics with their payload format.

pub mod procstat;
pub mod stats;
pub mod wire;
