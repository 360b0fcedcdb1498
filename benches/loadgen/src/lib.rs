//! The parts of the load generator other bench programs reuse (the
//! reliability battery, `benches/reliability`): the client side of the wire
//! (response heads, chunked bodies, SSE frames), server CPU and memory from
//! `/proc`, the delivery statistics with their payload format, and this
//! process's open-file limit and core.

pub mod process;
pub mod procstat;
pub mod stats;
pub mod wire;
