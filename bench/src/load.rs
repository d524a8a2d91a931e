//! The load generator's shared vocabulary: what to run (`LoadSpec`), the measuring window,
//! the per-thread accumulator and the merged result. `run` drives it; `thrift_load` and
//! `grpc_load` are the per-protocol loops. Closed loop: C connections, each keeping M requests in flight. Open
//! loop: a fixed total rate spread over the connections, each request's latency measured from
//! its *intended* send time, so a stall in the system under test shows up as latency instead
//! of silently lowering the send rate (coordinated omission).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use super::wire::BenchProtocol;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub protocol: BenchProtocol,
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    pub inflight: usize,
    /// Total requests per second (open loop); `None` is closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Payload bytes per request (at least 8: the tag).
    pub payload: usize,
    pub threads: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// What came out.
#[derive(Clone, Debug)]
pub struct LoadResult {
    pub spec_label: String,
    /// Replies counted inside the measured window.
    pub requests: u64,
    pub seconds: f64,
    /// Latency in nanoseconds.
    pub hist: Histogram<u64>,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// Latency percentile in microseconds.
    pub fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_us(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub(crate) struct Acc {
    pub(crate) hist: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
}

impl Acc {
    pub(crate) fn error(&mut self, kind: &'static str) {
        self.errors_n(kind, 1);
    }

    pub(crate) fn errors_n(&mut self, kind: &'static str, n: u64) {
        *self.errors.entry(kind).or_default() += n;
    }

    /// Accounts one checked reply: `sent_at` is when its request was (meant to be) sent, or
    /// `None` when no request of ours had that seqID; `measured` says whether it counts.
    pub(crate) fn reply(&mut self, sent_at: Option<Instant>, now: Instant, measured: impl Fn(Instant) -> bool) {
        match sent_at {
            Some(t) if measured(t) => {
                let _ = self.hist.record((now - t).as_nanos() as u64);
                self.requests += 1;
            }
            Some(_) => {}
            None => self.error("mismatched_reply"),
        }
    }
}

pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Shared clock of one run: when measuring starts and when sending stops.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    /// The open loop's send times for connection `id` at `rate` per second: call `k` is due
    /// at `due(k)`. Connections are staggered so they do not all fire on the same tick.
    pub(crate) fn schedule(&self, id: u32, rate: f64) -> impl Fn(u32) -> Instant {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let first = self.start + interval.mul_f64((id as f64 * 0.618_033_988_7) % 1.0);
        move |k| first + interval * k
    }

    /// Sleeps until the run starts (all connections begin together).
    pub(crate) async fn wait_start(&self) {
        let now = Instant::now();
        if now < self.start {
            monoio::time::sleep(self.start - now).await;
        }
    }
}

/// Writes what `wbuf` holds and empties it (keeping its allocation); false on a write error,
/// which is counted.
pub(crate) async fn write_batch<W: AsyncWriteRent>(wr: &mut W, wbuf: &mut BytesMut, acc: &RefCell<Acc>) -> bool {
    let (res, b) = wr.write_all(std::mem::take(wbuf)).await;
    *wbuf = b;
    wbuf.clear();
    if res.is_err() {
        acc.borrow_mut().error("io");
        return false;
    }
    true
}
