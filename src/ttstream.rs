//! Kitex TTHeader Streaming ("ttstream", ref §3): the streaming half of a Kitex fleet's Thrift
//! traffic. A connection the Thrift listener detects as streaming (its first frame carries
//! FLAGS 0x0002) is handed here; it uses the listener's routes, the cluster's pools (one pool
//! of ttstream connections per cluster: streaming and ping-pong never share a connection),
//! health, metrics and error table like the other protocols.

pub mod codec;
pub mod downstream;
pub mod errors;
pub mod stats;
pub mod upstream;
