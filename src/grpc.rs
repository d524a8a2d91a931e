//! The gRPC proxy: HTTP/2 cleartext with prior knowledge, forwarded at frame level (ref §4).
//! Header blocks are decoded and re-encoded per connection (HPACK state is per connection
//! and direction); DATA goes through as received bytes with its 9-byte header rewritten.
//!
//! - [`wire`]: gRPC specifics (path split, `grpc-timeout`, status fields, header checks).
//! - `core`: per-connection state shared by both sides (write queue, HPACK, windows).
//! - `stream`: one proxied call and the flow-controlled queues of its two directions.
//! - `down`: the client side, one task per downstream connection.
//! - `up`: pooled upstream connections.

pub mod config;
mod conn;
mod downstream;
pub mod errors;
pub mod h2;
mod stream;
mod upstream;
pub mod wire;

pub use downstream::{serve, GrpcSession};
pub use upstream::{GrpcPool, GrpcUpstream};
