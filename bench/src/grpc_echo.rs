//! A gRPC echo peer built on tonic (server and client; the server's HTTP/2 is hyper's, as in
//! tonic's own server), for ringway's gRPC integration tests and for `ringway-bench echo
//! grpc`. Messages are opaque bytes ([`RawCodec`]): there is no protobuf and no code
//! generation, so the service is written by hand.
//!
//! Service `ringway.test.Echo` (paths `/ringway.test.Echo/<Method>`):
//!
//! | method         | reply                                                                     |
//! |----------------|---------------------------------------------------------------------------|
//! | `Unary`        | the request bytes                                                         |
//! | `ServerStream` | the request bytes `x-count` times (default 3, at most 100 000), `x-interval-ms` apart |
//! | `ClientStream` | once the client half-closes: all request messages concatenated, or their number in ASCII if `x-reply: count` |
//! | `Bidi`         | each request message as it arrives; ends when the client half-closes      |
//!
//! Request metadata understood by every method:
//!
//! - `x-delay-ms`: wait before replying (Unary/ServerStream: after the request message;
//!   ClientStream: after the half-close; Bidi: before the response headers). A client reset
//!   ends the wait: the call is dropped and counted in [`EchoStats::streams_cancelled`].
//! - `x-status` (a gRPC code number) and `x-message`: end with that status instead of the
//!   reply, as a trailers-only response (ClientStream and Bidi read the request to its end
//!   first). ServerStream given an explicit `x-count` as well sends its messages first and
//!   puts the status in the trailers.
//! - `x-echo-*` (including `-bin` keys): each is sent back unchanged as a response header and
//!   as a trailer (once only, in the single header block, for a trailers-only response).
//! - `x-size`: every reply message is [`pattern`]`(x-size)` instead of the echo.
//!
//! A malformed `x-*` value gets INVALID_ARGUMENT. Messages may be up to [`MAX_MESSAGE`].
//!
//! Deadlines: the server records `grpc-timeout` ([`EchoStats::last_grpc_timeout`]) and counts a
//! client reset as [`EchoStats::streams_cancelled`]. It ends a call itself only
//! [`DEADLINE_GRACE`] after the deadline, answering DEADLINE_EXCEEDED and counting
//! [`EchoStats::deadlines_expired`], so a test can tell "the client's (or the proxy's) reset
//! arrived" from "nobody reset the stream". The server's deadline covers the wait for the
//! response headers; a response stream already under way is left to the client.

mod calls;
mod client;
mod methods;
mod server;

pub use client::{EchoClient, Reply};
pub use server::{EchoServer, EchoStats, DEADLINE_GRACE};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// The gRPC service name.
pub const SERVICE: &str = "ringway.test.Echo";

/// Largest message either side encodes or decodes (tonic's default is 4 MiB; the tests send
/// exactly 4 MiB plus framing, so the limit sits well above).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Most messages one stream carries in either direction before the peer gives up on it.
pub const MAX_STREAM_MESSAGES: usize = 1_000_000;

/// Largest `x-count` honoured by ServerStream.
pub const MAX_COUNT: u64 = 100_000;

/// The request path of `method` ("Unary", ...); a `method` starting with '/' is used as is.
pub fn path(method: &str) -> String {
    if method.starts_with('/') {
        method.to_string()
    } else {
        format!("/{SERVICE}/{method}")
    }
}

/// The `len` bytes sent for `x-size`: 0, 1, ..., 250, 0, 1, ... (251 is prime, so a shifted
/// or truncated copy does not line up with the original).
pub fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Raw-bytes gRPC codec: a message is its payload bytes, unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
