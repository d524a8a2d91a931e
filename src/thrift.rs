//! The Thrift proxy: Framed, Kitex TTHeader and Apache THeader, on one listener.
//!
//! - [`codec`]: sans-I/O codecs (detect, cut, classify, patch seqIDs, exceptions).
//! - [`session`]: a client connection's shared state and the pending-request entries that
//!   point back to it.
//! - [`seqtable`]: an upstream connection's pending requests, indexed by seqID.
//! - [`upstream`]: one multiplexed upstream connection (seqIDs allocated per connection).
//! - [`downstream`]: the per-connection loop: detect, cut, route, forward, answer failures.

pub mod codec;
pub mod config;
pub mod downstream;
pub mod errors;
pub mod seqtable;
pub mod session;
pub mod upstream;

pub use codec::{crc32c, detect, exception, frame, message, patch};
pub use codec::{frame_len, parse_frame, Protocol};
