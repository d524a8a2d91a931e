//! # ringway-bench
//!
//! The measuring kit, in its own package so the proxy never links tokio, hyper or tonic: a
//! Thrift echo backend (monoio), a gRPC echo peer (tonic), a closed/open-loop load generator
//! with hdrhistogram latencies, the result table, and `demo` (the README's first command).
//!
//! - [`echo`]: the Thrift echo backend.
//! - [`grpc_echo`]: the gRPC echo server and client on tonic.
//! - [`load`]: the load generator's spec, measuring window, accumulator and result.
//! - `run`: [`run_load`], which spreads connections over threads and drives each one's loop.
//! - `thrift_load`: the Thrift loops (closed and open loop).
//! - `grpc_load`: the gRPC loops, on ringway's own HTTP/2 codec.
//! - `ttstream_load`, `ttstream_echo`: TTHeader Streaming load (bidi and server streams) and
//!   its echo backend.
//! - [`wire`]: the requests the load generator sends and the checks on each reply.
//! - [`report`]: the table, JSON and `.hgrm` (latency distribution) output.
//! - [`demo`]: echo backend + ringway in-process + a short load, printed as a table.

pub mod demo;
pub mod echo;
pub mod grpc_echo;
mod grpc_load;
pub mod load;
pub mod report;
mod run;
mod thrift_load;
mod ttstream_echo;
mod ttstream_load;
pub mod wire;

pub use load::{LoadResult, LoadSpec};
pub use run::run_load;
pub use wire::BenchProtocol;
