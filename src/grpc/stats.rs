//! The gRPC proxy's own counters (per worker; the shared ones are in `crate::stats`). In the
//! exit log they carry a `grpc_` prefix.

use crate::stats::counters::counters;

counters! {
    /// gRPC counters of one worker.
    GrpcStats / GrpcSnapshot, "grpc_" {
        /// Calls ended by the proxy with a status (no route, deadline, upstream lost, …).
        errors,
        /// Streams cancelled by the client (RST_STREAM).
        cancelled,
        /// Streams reset because a peer kept its window at zero too long.
        stalled,
        /// HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM (abuse limits).
        calm,
        /// Streams opened on upstream HTTP/2 connections.
        upstream_streams,
    }
}
