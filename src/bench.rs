//! Measuring kit shared by `ringway-bench` and `ringway demo`: a Thrift echo backend, a gRPC
//! echo peer (tonic), a closed/open-loop load generator with hdrhistogram latencies, and the
//! result table.

pub mod echo;
pub mod grpc_echo;
mod grpc_load;
pub mod load;
pub mod report;
pub mod wire;

pub use load::{run_load, LoadResult, LoadSpec};
pub use wire::BenchProtocol;
