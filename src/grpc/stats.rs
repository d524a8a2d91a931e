//! The gRPC proxy's own counters (per worker; the shared ones are in `crate::stats`). In the
//! exit log they carry a `grpc_` prefix.

use std::cell::Cell;

use crate::metrics::bump;
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

/// HTTP/2 error codes counted apart (0..=13, then any other).
pub const CODES: usize = 15;
/// The two ends of the proxy, as the `side` label names them (`conn::Side` order).
pub const SIDES: [&str; 2] = ["downstream", "upstream"];
/// The abuse limits that close a connection with ENHANCE_YOUR_CALM, by the reason they give.
pub const LIMITS: [(&str, &str); 6] = [
    ("PING flood", "ping_flood"),
    ("SETTINGS flood", "settings_flood"),
    ("too many empty DATA frames", "empty_data_frames"),
    ("too many stream errors", "stream_errors"),
    ("too many window changes", "window_changes"),
    ("too many stream resets", "stream_resets"),
];

/// HTTP/2 frames that end streams and connections, per worker: RST_STREAM and GOAWAY sent
/// and received on each side, by code, and abuse limits tripped, by kind.
#[derive(Default, Debug)]
pub struct H2Counters {
    pub rst_sent: [[Cell<u64>; CODES]; 2],
    pub rst_received: [[Cell<u64>; CODES]; 2],
    pub goaway_sent: [[Cell<u64>; CODES]; 2],
    pub goaway_received: [[Cell<u64>; CODES]; 2],
    /// Per `LIMITS` entry, then one for any other.
    pub limits: [Cell<u64>; LIMITS.len() + 1],
}

/// A copy of `H2Counters` that can cross threads.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Snapshot {
    pub rst_sent: [[u64; CODES]; 2],
    pub rst_received: [[u64; CODES]; 2],
    pub goaway_sent: [[u64; CODES]; 2],
    pub goaway_received: [[u64; CODES]; 2],
    pub limits: [u64; LIMITS.len() + 1],
}

/// The `code` label of a counted code.
pub fn code_label(i: usize) -> &'static str {
    crate::grpc::h2::frame::Reason(i as u32).name()
}

impl H2Counters {
    pub fn count(table: &[[Cell<u64>; CODES]; 2], side: usize, code: u32) {
        bump(&table[side][(code as usize).min(CODES - 1)]);
    }

    /// An abuse limit closed a connection, saying `why`.
    pub fn limit(&self, why: &str) {
        let i = LIMITS.iter().position(|(w, _)| *w == why).unwrap_or(LIMITS.len());
        bump(&self.limits[i]);
    }

    pub fn snapshot(&self) -> H2Snapshot {
        let t = |x: &[[Cell<u64>; CODES]; 2]| x.each_ref().map(|r| r.each_ref().map(Cell::get));
        H2Snapshot {
            rst_sent: t(&self.rst_sent),
            rst_received: t(&self.rst_received),
            goaway_sent: t(&self.goaway_sent),
            goaway_received: t(&self.goaway_received),
            limits: self.limits.each_ref().map(Cell::get),
        }
    }
}

impl H2Snapshot {
    pub fn add(&mut self, o: &H2Snapshot) {
        for (a, b) in [
            (&mut self.rst_sent, &o.rst_sent),
            (&mut self.rst_received, &o.rst_received),
            (&mut self.goaway_sent, &o.goaway_sent),
            (&mut self.goaway_received, &o.goaway_received),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                crate::metrics::sum(x, y);
            }
        }
        crate::metrics::sum(&mut self.limits, &o.limits);
    }
}
