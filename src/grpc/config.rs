//! The gRPC keys of a listener (`protocol = "grpc"`): the HTTP/2 limits (ref §5, Appendix
//! C), typed and checked once against the ranges the protocol allows.

use std::time::Duration;

use crate::config::problems::{Problems, Section, StrOrInt};

/// The keys only a gRPC listener takes.
pub const KEYS: &[&str] = &[
    "max_concurrent_streams",
    "initial_stream_window",
    "initial_connection_window",
    "max_header_list_size",
    "max_continuation_frames",
    "max_reset_burst",
    "max_resets_per_second",
    "max_pending_control_frames",
    "max_settings_entries",
    "max_empty_data_frames",
    "stream_stall_timeout",
];

/// HTTP/2 limits of a gRPC listener. Each is a listener key of the same name; the defaults
/// are in `GrpcListener::default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcListener {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise to clients.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: bytes a peer may send on one stream before the proxy has
    /// forwarded them (bounds proxy memory per stream, each direction).
    pub initial_stream_window: u32,
    /// The connection window granted at start (bounds memory per connection).
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE, enforced on the decoded list and on the raw block.
    pub max_header_list_size: u32,
    /// CONTINUATION frames after one HEADERS frame.
    pub max_continuation_frames: usize,
    /// Stream resets (by the client, or by the proxy because of client errors) allowed in a
    /// burst, refilled at `max_resets_per_second` (rapid reset).
    pub max_reset_burst: u32,
    pub max_resets_per_second: u32,
    /// PING/SETTINGS acknowledgements queued while the peer does not read them.
    pub max_pending_control_frames: usize,
    /// Entries in one SETTINGS frame.
    pub max_settings_entries: usize,
    /// Consecutive empty DATA frames without END_STREAM (a CPU-burning pattern).
    pub max_empty_data_frames: u32,
    /// How long a stream may have data queued for a peer whose window stays at zero.
    pub stream_stall_timeout: Duration,
}

impl Default for GrpcListener {
    fn default() -> Self {
        GrpcListener {
            max_concurrent_streams: 256,
            initial_stream_window: 1 << 20,
            initial_connection_window: 16 << 20,
            max_header_list_size: 16 << 10,
            max_continuation_frames: 8,
            max_reset_burst: 1000,
            max_resets_per_second: 100,
            max_pending_control_frames: 1000,
            max_settings_entries: 32,
            max_empty_data_frames: 100,
            stream_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Reads a gRPC listener's own keys (unknown keys were refused by the caller).
pub fn parse(s: &Section<'_>, p: &mut Problems) -> GrpcListener {
    let d = GrpcListener::default();
    let window = |p: &mut Problems, key: &str, default: u32| -> u32 {
        let v: Option<StrOrInt> = s.size(p, key);
        p.byte_size(s.path(key), &v, default as usize, (65_535..=0x7fff_ffff, "65535..=2147483647")).get() as u32
    };
    let header_list = s.size(p, "max_header_list_size");
    let count = |p: &mut Problems, key: &str, default: usize, max: usize| -> usize {
        let v = s.int(p, key);
        p.positive(s.path(key), v, default, max)
    };
    GrpcListener {
        max_concurrent_streams: count(p, "max_concurrent_streams", d.max_concurrent_streams as usize, 1 << 20) as u32,
        initial_stream_window: window(p, "initial_stream_window", d.initial_stream_window),
        initial_connection_window: window(p, "initial_connection_window", d.initial_connection_window),
        max_header_list_size: p
            .byte_size(
                s.path("max_header_list_size"),
                &header_list,
                d.max_header_list_size as usize,
                (1024..=16 << 20, "1KiB..=16MiB"),
            )
            .get() as u32,
        max_continuation_frames: count(p, "max_continuation_frames", d.max_continuation_frames, 1024),
        max_reset_burst: count(p, "max_reset_burst", d.max_reset_burst as usize, 1 << 20) as u32,
        max_resets_per_second: count(p, "max_resets_per_second", d.max_resets_per_second as usize, 1 << 20) as u32,
        max_pending_control_frames: count(p, "max_pending_control_frames", d.max_pending_control_frames, 1 << 20),
        max_settings_entries: count(p, "max_settings_entries", d.max_settings_entries, 1024),
        max_empty_data_frames: count(p, "max_empty_data_frames", d.max_empty_data_frames as usize, 1 << 20) as u32,
        stream_stall_timeout: match s.string(p, "stream_stall_timeout") {
            None => d.stream_stall_timeout,
            Some(v) => p.duration(s.path("stream_stall_timeout"), &Some(v), "30s"),
        },
    }
}
