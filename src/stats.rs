//! Per-worker counters. Each worker owns its `Stats` (plain `Cell`s, no atomics); the control
//! thread only ever sees `StatsSnapshot` copies sent over a channel and sums them. The
//! counters every protocol shares are here; each protocol's own are in its folder
//! (`thrift/stats.rs`, `grpc/stats.rs`), gathered in `protocol.rs`.

pub mod counters;

use std::ops::Deref;

use self::counters::counters;
use crate::protocol::{ProtocolSnapshot, ProtocolStats};

counters! {
    /// The counters every protocol shares.
    Common / CommonSnapshot, "" {
        /// Downstream connections accepted.
        downstream_connections,
        /// Requests forwarded upstream (Thrift CALL and ONEWAY, gRPC calls).
        requests,
        /// Requests with no matching route.
        no_route,
        /// Requests that passed their deadline.
        timeouts,
        /// Upstream connections lost with requests in flight or idle.
        upstream_lost,
        /// Failed upstream connects.
        connect_failures,
        /// Upstream connections opened.
        upstream_connections,
        /// Connection tasks that panicked (caught; only that connection closed).
        panics,
        /// Connections closed because their bytes were not the listener's protocol.
        garbage_connections,
        /// Client reads paused because the worker was over runtime.max_buffer_memory.
        buffer_paused_reads,
        /// Bytes held in the worker's buffers when the snapshot was taken (a gauge).
        buffer_bytes,
        /// Times the worker went over runtime.max_buffer_memory.
        buffer_over_budget,
        /// 1 while the worker is over runtime.max_buffer_memory (until under nine tenths).
        buffer_over,
    }
}

/// Counters owned by one worker: the shared ones (reached through `Deref`), and each
/// protocol's own in `protocols`.
#[derive(Default, Debug)]
pub struct Stats {
    common: Common,
    pub protocols: ProtocolStats,
}

impl Deref for Stats {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

/// A copy of a worker's counters that can cross threads.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub common: CommonSnapshot,
    pub protocols: ProtocolSnapshot,
}

impl Deref for StatsSnapshot {
    type Target = CommonSnapshot;
    fn deref(&self) -> &CommonSnapshot {
        &self.common
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot { common: self.common.snapshot(), protocols: self.protocols.snapshot() }
    }
}

impl StatsSnapshot {
    /// Adds another worker's counters to these.
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.common.add(&o.common);
        self.protocols.add(&o.protocols);
    }

    /// `name=value` pairs for the log.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let mut p = self.common.pairs();
        p.extend(self.protocols.pairs());
        p
    }
}
