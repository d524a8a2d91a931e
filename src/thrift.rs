//! The Thrift proxy: Framed, Kitex TTHeader and Apache THeader, on one listener.
//!
//! - [`codec`]: sans-I/O codecs (detect, cut, classify, patch seqIDs, exceptions).
//! - [`config`]: the keys of a Thrift listener.
//! - [`errors`]: every failure of a request as the exception a client gets.
//! - [`stats`]: the Thrift counters.
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
pub mod stats;
pub mod upstream;
