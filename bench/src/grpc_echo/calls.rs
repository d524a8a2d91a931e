//! The echo server's counters and one call's fate (completed, cancelled or expired, counted
//! once), shared by the server (`server.rs`) and the method handlers (`methods.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderMap;

/// The live counters behind [`EchoStats`], shared by all connections.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicU64,
    pub(super) started: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) cancelled: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) sent: AtomicU64,
    /// Last `grpc-timeout` and request headers; written once per call, read by tests.
    pub(super) last: Mutex<(Option<String>, Option<HeaderMap>)>,
}

/// One call's fate: completed, cancelled or expired, and counted once.
pub(super) struct CallState {
    counters: Arc<Counters>,
    /// Set once the call is counted.
    settled: AtomicBool,
}

impl CallState {
    pub(super) fn new(counters: Arc<Counters>) -> Arc<CallState> {
        Arc::new(CallState { counters, settled: AtomicBool::new(false) })
    }

    pub(super) fn received(&self, n: u64) {
        self.counters.received.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sent(&self, n: u64) {
        self.counters.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn complete(&self) {
        self.settle(&self.counters.completed);
    }

    pub(super) fn cancel(&self) {
        self.settle(&self.counters.cancelled);
    }

    pub(super) fn expire(&self) {
        self.settle(&self.counters.expired);
    }

    fn settle(&self, counter: &AtomicU64) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
