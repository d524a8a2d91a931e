//! # ringway
//!
//! A thread-per-core RPC data-plane proxy. Layout, from the bottom up:
//!
//! - [`thrift`]: sans-I/O codecs (detect, cut, classify, patch seqIDs, exceptions).
//! - [`config`]: TOML config, typed and validated once into an immutable snapshot.
//! - [`route`]: first-match route tables.
//! - [`upstream`]: per-worker pools of multiplexed upstream connections.
//! - [`proxy`]: the per-connection Thrift proxy loop.
//! - [`worker`]: pinned worker threads, each one monoio runtime.
//! - [`control`]: the control thread: loads config, hands snapshots to workers, reload, drain.

pub mod config;
pub mod control;
pub mod error;
pub mod grpc;
pub mod io;
pub mod local;
pub mod logging;
pub mod pool;
pub mod protocol;
pub mod route;
pub mod stats;
pub mod thrift;
pub mod worker;
