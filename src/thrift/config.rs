//! The Thrift keys of a listener (`protocol = "thrift"`), typed and checked once.

use crate::config::problems::{Problems, Section, SIZE_RANGE};
use crate::config::units::ByteSize;

/// The keys only a Thrift listener takes.
pub const KEYS: &[&str] = &["max_frame_size", "max_pending_requests", "max_method_name"];

/// Limits of a Thrift listener, per client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThriftListener {
    /// Largest request frame accepted from a client, LENGTH prefix included.
    pub max_frame_size: ByteSize,
    /// Requests in flight on one client connection; reading pauses at the limit.
    pub max_pending_requests: usize,
    /// Longest method name accepted, in bytes.
    pub max_method_name: usize,
}

impl Default for ThriftListener {
    fn default() -> Self {
        ThriftListener { max_frame_size: ByteSize(16 << 20), max_pending_requests: 1024, max_method_name: 4096 }
    }
}

/// Reads a Thrift listener's own keys (unknown keys were refused by the caller).
pub fn parse(s: &Section<'_>, p: &mut Problems) -> ThriftListener {
    let d = ThriftListener::default();
    let frame = s.size(p, "max_frame_size");
    let pending = s.int(p, "max_pending_requests");
    let name = s.int(p, "max_method_name");
    ThriftListener {
        max_frame_size: p.byte_size(s.path("max_frame_size"), &frame, d.max_frame_size.get(), SIZE_RANGE),
        max_pending_requests: p.positive(s.path("max_pending_requests"), pending, d.max_pending_requests, 1 << 20),
        max_method_name: p.positive(s.path("max_method_name"), name, d.max_method_name, 1 << 16),
    }
}
