//! The TTHeader Streaming proxy's own counters (per worker; the shared ones are in
//! `crate::stats`). In the exit log they carry a `ttstream_` prefix.

use crate::stats::counters::counters;

counters! {
    /// TTHeader Streaming counters of one worker.
    TtStreamStats / TtStreamSnapshot, "ttstream_" {
        /// Client streams opened (a Header frame on a new stream id).
        opened,
        /// Streams that ended with the server's Trailer and the client's (or the client's
        /// connection closing after the server's Trailer).
        ended_ok,
        /// Streams the proxy ended with an error of its own (no route, connect failed,
        /// upstream lost, timeout, drain, …).
        ended_error,
        /// Streams the client reset (Rst, or its connection closed with the stream open).
        ended_client_reset,
        /// Streams the server reset (Rst).
        ended_server_reset,
        /// Streams reset because their client left more than `max_write_buffer` unread.
        ended_overflow,
        /// Frames for stream ids no longer (or never) open, dropped.
        late_frames,
        /// Streams opened on upstream connections.
        upstream_streams,
    }
}

impl TtStreamSnapshot {
    /// Streams open now: opened and not ended.
    pub fn active(&self) -> u64 {
        let ended =
            self.ended_ok + self.ended_error + self.ended_client_reset + self.ended_server_reset + self.ended_overflow;
        self.opened.saturating_sub(ended)
    }
}
