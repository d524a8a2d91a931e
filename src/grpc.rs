//! The gRPC proxy: HTTP/2 cleartext with prior knowledge, forwarded at frame level (ref §4).
//! Header blocks are decoded and re-encoded per connection (HPACK state is per connection
//! and direction); DATA goes through as received bytes with its 9-byte header rewritten.
//!
//! - [`h2`]: the HTTP/2 codec, sans I/O (frames, HPACK, header-block assembly).
//! - [`wire`]: gRPC specifics (path split, `grpc-timeout`, status fields, header checks).
//! - [`config`]: the keys of a gRPC listener (HTTP/2 limits).
//! - [`errors`]: every failure the proxy answers, as a gRPC status or a reset code.
//! - [`stats`]: the gRPC counters.
//! - `conn`: per-connection state shared by both sides (write queue, HPACK, windows) and the
//!   connection-level frames, handled once for both.
//! - `stream`: one proxied call: its state machine and the flow-controlled queues of its two
//!   directions (`stream/flow.rs`).
//! - `downstream`: the client side, one task per downstream connection (with its drain,
//!   sweeper and preface check).
//! - `upstream`: pooled upstream connections.

pub mod config;
mod conn;
mod downstream;
pub mod errors;
pub mod h2;
pub mod stats;
mod stream;
mod upstream;
pub mod wire;

pub use downstream::{serve, GrpcSession};
pub use upstream::{GrpcPool, GrpcUpstream};
