//! Labelled metrics of one worker: per listener, per route, per cluster and per endpoint.
//! Everything here is plain per-core memory (`Cell`s, a lazily made histogram): no locks, no
//! atomics another core touches. The admin side asks each worker for a [`MetricsReport`]
//! through its command channel; the worker builds it between events (`report`) and the
//! admin side merges the workers' reports (`admin/metrics.rs`).
//!
//! A [`Registry`] keeps one entry per label set for the life of the worker, so a counter
//! never goes down when a reload rebuilds routes or pools: the new ones find the entries of
//! the same names again. Knows no protocol: a request's variant (a Thrift dialect) and status
//! code (gRPC's `grpc-status`) are small numbers each protocol gives meaning to.

use std::cell::OnceCell;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use hdrhistogram::Histogram;

use crate::access_log::Sink;
use crate::error::ErrorKind;

/// Variants of a request a protocol may count apart (Thrift: transport × protocol × inner
/// framing, see `thrift::stats::variant`).
pub const VARIANTS: usize = 24;
/// Status codes counted per route (gRPC: 0..=16).
pub const STATUSES: usize = 17;
/// The Prometheus histogram's bucket bounds, in microseconds (25 µs to 30 s).
pub const LATENCY_BOUNDS_US: [u64; 19] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
/// Largest latency the histogram tells apart (longer ones count as this): 2^32 µs, 71 min.
const LATENCY_MAX_US: u64 = (1 << 32) - 1;
/// HdrHistogram precision: values within 1 % are one bucket.
const LATENCY_DIGITS: u8 = 2;

/// An empty latency histogram in microseconds, as the admin side merges them.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_DIGITS).expect("constant bounds are valid")
}

/// Microseconds on the monotonic clock (`CLOCK_MONOTONIC`, the clock `Instant` reads):
/// request start and end times are plain integers, so a latency is one subtraction, and
/// reading the clock costs no `Duration` arithmetic.
#[inline]
pub fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`;
    // CLOCK_MONOTONIC always exists on Linux, so it cannot fail (and a failure would leave
    // zeros, not undefined memory).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Below this many microseconds every value has a bucket of its own.
const EXACT_BELOW: u64 = 256;
/// Buckets per power of two above that (half of `EXACT_BELOW`: 1/128 relative precision).
const PER_OCTAVE: u64 = 128;
/// Enough buckets for `LATENCY_MAX_US`.
const LATENCY_BUCKETS: usize = (EXACT_BELOW + (32 - 8) * PER_OCTAVE) as usize;

/// A worker's latency counts: the bucket layout of an HdrHistogram of 2 significant digits
/// (exact below 256 µs, then 128 buckets per power of two), recorded with a few
/// instructions; turned into a real `Histogram` only when reported.
struct Latency {
    counts: Box<[Cell<u64>; LATENCY_BUCKETS]>,
}

impl Latency {
    fn new() -> Latency {
        Latency { counts: Box::new(std::array::from_fn(|_| Cell::new(0))) }
    }

    #[inline]
    fn bucket(us: u64) -> usize {
        let us = us.min(LATENCY_MAX_US);
        if us < EXACT_BELOW {
            return us as usize;
        }
        let msb = 63 - us.leading_zeros() as u64; // 8..=31
        let shift = msb - 7;
        (EXACT_BELOW + (msb - 8) * PER_OCTAVE + ((us >> shift) - PER_OCTAVE)) as usize
    }

    /// The smallest value of bucket `i` (HdrHistogram puts it in the same bucket).
    fn low(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT_BELOW {
            return i;
        }
        let octave = (i - EXACT_BELOW) / PER_OCTAVE;
        let sub = (i - EXACT_BELOW) % PER_OCTAVE + PER_OCTAVE;
        sub << (octave + 1)
    }

    #[inline]
    fn record(&self, us: u64) {
        bump(&self.counts[Latency::bucket(us)]);
    }

    fn histogram(&self) -> Histogram<u64> {
        let mut h = latency_histogram();
        for (i, n) in self.counts.iter().map(Cell::get).enumerate().filter(|(_, n)| *n > 0) {
            h.saturating_record_n(Latency::low(i).max(1), n);
        }
        h
    }
}

/// One route of one listener (or the listener's requests that matched no route).
#[derive(Default)]
pub struct RouteMetrics {
    /// Requests read, by variant.
    pub requests: [Cell<u64>; VARIANTS],
    /// Replies from the upstream handed back to the client.
    pub forwarded: Cell<u64>,
    /// Of those, replies that were the backend's own Thrift EXCEPTION.
    pub upstream_exceptions: Cell<u64>,
    /// Requests that expect no reply (Thrift ONEWAY), once forwarded.
    pub no_reply: Cell<u64>,
    /// Requests the proxy answered itself, by `ErrorKind::index`.
    pub errors: [Cell<u64>; ErrorKind::COUNT],
    /// Finished requests by the status code the client saw (gRPC).
    pub statuses: [Cell<u64>; STATUSES],
    /// Read → reply written, microseconds; made on the first observation.
    latency: OnceCell<Latency>,
    /// The sum of every latency observed, microseconds (the histogram's `_sum`).
    latency_sum_us: Cell<u64>,
    /// Above zero: the route's listener has an access log, and a request is logged when a
    /// random u64 is at most this (the sample fraction of `u64::MAX`).
    log_threshold: Cell<u64>,
    log: RefCell<Option<Rc<RouteLog>>>,
}

impl RouteMetrics {
    /// Counts one request of `variant` (0 for protocols without variants).
    #[inline]
    pub fn request(&self, variant: usize) {
        if let Some(c) = self.requests.get(variant) {
            bump(c);
        }
    }

    /// Counts one request answered by the proxy with `err`.
    #[inline]
    pub fn error(&self, err: &ErrorKind) {
        bump(&self.errors[err.index()]);
    }

    /// Counts the status code a finished request ended with.
    #[inline]
    pub fn status(&self, code: u32) {
        if let Some(c) = self.statuses.get(code as usize) {
            bump(c);
        }
    }

    /// Records one request's latency, in microseconds.
    #[inline]
    pub fn observe(&self, us: u64) {
        add(&self.latency_sum_us, us);
        self.latency.get_or_init(Latency::new).record(us);
    }

    /// Sets (or clears) where this route's requests are logged (each config applied).
    pub fn set_log(&self, log: Option<RouteLog>) {
        self.log_threshold.set(log.as_ref().map_or(0, |l| l.threshold));
        *self.log.borrow_mut() = log.map(Rc::new);
    }

    /// Whether requests of this route may be logged (one load on the hot path).
    #[inline]
    pub fn logging(&self) -> bool {
        self.log_threshold.get() != 0
    }

    /// Logs a finished request if it is sampled. Call only when `logging()`.
    #[cold]
    pub fn log(&self, entry: &AccessEntry<'_>) {
        if sample() > self.log_threshold.get() {
            return;
        }
        if let Some(log) = &*self.log.borrow() {
            log.write(entry);
        }
    }

    fn report(&self, listener: &str, route: &str) -> RouteReport {
        RouteReport {
            listener: listener.into(),
            route: route.into(),
            requests: self.requests.each_ref().map(Cell::get),
            forwarded: self.forwarded.get(),
            upstream_exceptions: self.upstream_exceptions.get(),
            no_reply: self.no_reply.get(),
            errors: self.errors.each_ref().map(Cell::get),
            statuses: self.statuses.each_ref().map(Cell::get),
            latency: self.latency.get().map(Latency::histogram),
            latency_sum_us: self.latency_sum_us.get(),
        }
    }
}

#[inline]
pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

#[inline]
pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// A random number for access log sampling (xorshift64*, one state per worker thread).
fn sample() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = now_us() ^ (std::process::id() as u64) << 32;
            seed | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// What an access log line says about one request, besides its route's names.
pub struct AccessEntry<'a> {
    pub method: &'a [u8],
    /// The upstream endpoint that answered, if the request reached one.
    pub endpoint: &'a str,
    /// `forwarded`, `upstream_exception`, `no_reply`, or the proxy's error kind.
    pub outcome: &'a str,
    pub grpc_status: Option<u32>,
    pub latency_us: u64,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
}

/// The names a route's log lines carry, and where they go.
pub struct RouteLog {
    listener: Box<str>,
    route: Box<str>,
    cluster: Box<str>,
    protocol: &'static str,
    sink: Sink,
    threshold: u64,
}

impl RouteLog {
    pub fn new(
        listener: &str,
        route: &str,
        cluster: &str,
        protocol: &'static str,
        sink: Sink,
        sample: f64,
    ) -> RouteLog {
        // The largest u64 a sampled request may draw (0 logs nothing).
        let threshold = if sample >= 1.0 { u64::MAX } else { (sample * u64::MAX as f64) as u64 };
        RouteLog { listener: listener.into(), route: route.into(), cluster: cluster.into(), protocol, sink, threshold }
    }

    fn write(&self, e: &AccessEntry<'_>) {
        let mut line = serde_json::json!({
            "time": crate::access_log::rfc3339(std::time::SystemTime::now()),
            "listener": &*self.listener,
            "route": &*self.route,
            "cluster": &*self.cluster,
            "endpoint": e.endpoint,
            "protocol": self.protocol,
            "method": String::from_utf8_lossy(e.method),
            "outcome": e.outcome,
            "latency_us": e.latency_us,
        });
        let m = line.as_object_mut().expect("an object");
        if let Some(s) = e.grpc_status {
            m.insert("grpc_status".into(), s.into());
        }
        if let Some(b) = e.bytes_in {
            m.insert("bytes_in".into(), b.into());
        }
        if let Some(b) = e.bytes_out {
            m.insert("bytes_out".into(), b.into());
        }
        self.sink.send(line.to_string());
    }
}

/// Why a downstream connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it, or it failed under us (reset, write error).
    Client = 0,
    /// Bytes that were not the listener's protocol, or a protocol error that ends the
    /// connection (an unsupported transport, an oversized frame, an HTTP/2 connection error).
    ProtocolError,
    /// An abuse limit (HTTP/2 ENHANCE_YOUR_CALM).
    AbuseLimit,
    /// Closed by a drain.
    Drain,
    /// A bug in the proxy: the connection's task panicked.
    Panic,
    /// The client read none of its replies for `write_stall_timeout`.
    WriteStall,
}

impl CloseReason {
    pub const COUNT: usize = 6;
    pub const LABELS: [&'static str; CloseReason::COUNT] =
        ["client_closed", "protocol_error", "abuse_limit", "drain", "panic", "write_stall"];
}

/// One listener of one worker.
pub struct ListenerMetrics {
    /// The protocol's name (`thrift`, `grpc`): a listener keeps its protocol across reloads.
    pub protocol: &'static str,
    pub accepted: Cell<u64>,
    /// Connections closed at once because the worker held `max_connections` already.
    pub rejected: Cell<u64>,
    pub closed: [Cell<u64>; CloseReason::COUNT],
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    /// Requests that matched no route, or were refused before routing.
    pub unrouted: Rc<RouteMetrics>,
}

impl ListenerMetrics {
    pub fn new(protocol: &'static str) -> ListenerMetrics {
        ListenerMetrics {
            protocol,
            accepted: Cell::new(0),
            rejected: Cell::new(0),
            closed: Default::default(),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            unrouted: Rc::default(),
        }
    }

    pub fn closed(&self, why: CloseReason) {
        bump(&self.closed[why as usize]);
    }

    /// Connections open now (accepted and not yet closed).
    pub fn active(&self) -> u64 {
        self.accepted.get().saturating_sub(self.closed.iter().map(Cell::get).sum())
    }
}

/// One downstream connection's share of its listener's metrics: it counts the connection
/// closed, with the first reason given, when the last holder lets go of it.
pub struct ConnMeter {
    pub listener: Rc<ListenerMetrics>,
    reason: Cell<CloseReason>,
}

impl ConnMeter {
    /// Counts a connection accepted on `listener`.
    pub fn accepted(listener: Rc<ListenerMetrics>) -> ConnMeter {
        bump(&listener.accepted);
        ConnMeter { listener, reason: Cell::new(CloseReason::Client) }
    }

    /// Why the connection is closing; the first reason other than the client's own stays.
    pub fn closing(&self, why: CloseReason) {
        if self.reason.get() == CloseReason::Client {
            self.reason.set(why);
        }
    }

    #[inline]
    pub fn read(&self, n: usize) {
        add(&self.listener.bytes_in, n as u64);
    }
}

impl Drop for ConnMeter {
    fn drop(&mut self) {
        self.listener.closed(self.reason.get());
    }
}

/// One endpoint of one cluster (every pool of the cluster shares it).
#[derive(Default)]
pub struct EndpointMetrics {
    pub opened: Cell<u64>,
    pub connect_failures: Cell<u64>,
    /// Times outlier detection ejected it.
    pub ejections: Cell<u64>,
}

/// One cluster of one worker.
#[derive(Default)]
pub struct ClusterMetrics {
    /// Requests that found no open connection with room and waited (or connected).
    pub pool_waits: Cell<u64>,
    /// Requests tried again on another endpoint after a failure that sent nothing.
    pub retries: Cell<u64>,
    /// Retries not made because the retry budget was spent.
    pub retries_over_budget: Cell<u64>,
}

/// Entries keyed by two names (listener and route, cluster and endpoint).
type ByTwoNames<V> = RefCell<Vec<(Rc<str>, Rc<str>, Rc<V>)>>;

/// Every label set this worker has counted, kept for the worker's life.
#[derive(Default)]
pub struct Registry {
    listeners: RefCell<Vec<(Rc<str>, Rc<ListenerMetrics>)>>,
    routes: ByTwoNames<RouteMetrics>,
    clusters: RefCell<Vec<(Rc<str>, Rc<ClusterMetrics>)>>,
    endpoints: ByTwoNames<EndpointMetrics>,
}

fn find_or_add<K: PartialEq + ?Sized, V>(
    list: &RefCell<Vec<(Rc<K>, Rc<V>)>>,
    key: &K,
    make: impl FnOnce() -> (Rc<K>, Rc<V>),
) -> Rc<V> {
    let mut l = list.borrow_mut();
    if let Some((_, v)) = l.iter().find(|(k, _)| **k == *key) {
        return v.clone();
    }
    let (k, v) = make();
    l.push((k, v.clone()));
    v
}

impl Registry {
    pub fn listener(&self, name: &str, protocol: &'static str) -> Rc<ListenerMetrics> {
        find_or_add(&self.listeners, name, || (name.into(), Rc::new(ListenerMetrics::new(protocol))))
    }

    pub fn route(&self, listener: &str, route: &str) -> Rc<RouteMetrics> {
        let mut l = self.routes.borrow_mut();
        if let Some((_, _, v)) = l.iter().find(|(a, b, _)| **a == *listener && **b == *route) {
            return v.clone();
        }
        let v = Rc::new(RouteMetrics::default());
        l.push((listener.into(), route.into(), v.clone()));
        v
    }

    pub fn cluster(&self, name: &str) -> Rc<ClusterMetrics> {
        find_or_add(&self.clusters, name, || (name.into(), Rc::default()))
    }

    pub fn endpoint(&self, cluster: &str, endpoint: &str) -> Rc<EndpointMetrics> {
        let mut l = self.endpoints.borrow_mut();
        if let Some((_, _, v)) = l.iter().find(|(a, b, _)| **a == *cluster && **b == *endpoint) {
            return v.clone();
        }
        let v = Rc::new(EndpointMetrics::default());
        l.push((cluster.into(), endpoint.into(), v.clone()));
        v
    }

    /// Replies forwarded on the routes of every listener of `protocol`.
    pub fn forwarded(&self, protocol: &str) -> u64 {
        let listeners = self.listeners.borrow();
        let of = |name: &str| listeners.iter().any(|(n, l)| **n == *name && l.protocol == protocol);
        let unrouted: u64 =
            listeners.iter().filter(|(_, l)| l.protocol == protocol).map(|(_, l)| l.unrouted.forwarded.get()).sum();
        unrouted + self.routes.borrow().iter().filter(|(l, _, _)| of(l)).map(|(_, _, m)| m.forwarded.get()).sum::<u64>()
    }

    /// A copy of every counter, with the gauges the worker reads off its live state
    /// (`endpoints`: per cluster and endpoint, connections open, requests in flight, and
    /// whether a connect failure holds it back).
    pub fn report(&self, live: &[EndpointState], fail_open: &[Rc<str>]) -> MetricsReport {
        let listeners = self.listeners.borrow();
        let mut routes: Vec<RouteReport> = Vec::new();
        for (name, l) in listeners.iter() {
            routes.push(l.unrouted.report(name, ""));
        }
        routes.extend(self.routes.borrow().iter().map(|(l, r, m)| m.report(l, r)));
        let endpoints = self
            .endpoints
            .borrow()
            .iter()
            .map(|(c, e, m)| {
                let now = live.iter().filter(|s| *s.cluster == **c && *s.endpoint == **e);
                let (mut open, mut inflight, mut down, mut present) = (0, 0, false, false);
                let (mut unhealthy, mut ejected) = (false, false);
                for s in now {
                    open += s.open;
                    inflight += s.inflight;
                    down |= s.down;
                    unhealthy |= s.unhealthy;
                    ejected |= s.ejected;
                    present = true;
                }
                EndpointReport {
                    cluster: c.to_string(),
                    endpoint: e.to_string(),
                    opened: m.opened.get(),
                    connect_failures: m.connect_failures.get(),
                    open,
                    inflight,
                    backoff: down,
                    configured: present,
                    unhealthy,
                    ejected,
                    ejections: m.ejections.get(),
                }
            })
            .collect();
        MetricsReport {
            listeners: listeners
                .iter()
                .map(|(n, l)| ListenerReport {
                    name: n.to_string(),
                    protocol: l.protocol,
                    accepted: l.accepted.get(),
                    rejected: l.rejected.get(),
                    closed: l.closed.each_ref().map(Cell::get),
                    bytes_in: l.bytes_in.get(),
                    bytes_out: l.bytes_out.get(),
                })
                .collect(),
            routes,
            clusters: self
                .clusters
                .borrow()
                .iter()
                .map(|(n, m)| ClusterReport {
                    name: n.to_string(),
                    pool_waits: m.pool_waits.get(),
                    retries: m.retries.get(),
                    retries_over_budget: m.retries_over_budget.get(),
                    fail_open: fail_open.iter().any(|c| **c == **n),
                })
                .collect(),
            endpoints,
        }
    }
}

/// What a worker's live pools say about one endpoint (one entry per pool).
pub struct EndpointState {
    pub cluster: Rc<str>,
    pub endpoint: Rc<str>,
    pub open: u64,
    pub inflight: u64,
    pub down: bool,
    /// The active health check says unhealthy.
    pub unhealthy: bool,
    /// Outlier detection ejected it.
    pub ejected: bool,
}

/// A worker's metrics, copied to cross threads.
#[derive(Clone, Debug, Default)]
pub struct MetricsReport {
    pub listeners: Vec<ListenerReport>,
    pub routes: Vec<RouteReport>,
    pub clusters: Vec<ClusterReport>,
    pub endpoints: Vec<EndpointReport>,
}

#[derive(Clone, Debug)]
pub struct ListenerReport {
    pub name: String,
    pub protocol: &'static str,
    pub accepted: u64,
    pub rejected: u64,
    pub closed: [u64; CloseReason::COUNT],
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ListenerReport {
    /// Connections open now: accepted and not yet closed.
    pub fn active(&self) -> u64 {
        self.accepted.saturating_sub(self.closed.iter().sum())
    }
}

#[derive(Clone, Debug)]
pub struct RouteReport {
    pub listener: String,
    /// Empty for the requests that matched no route.
    pub route: String,
    pub requests: [u64; VARIANTS],
    pub forwarded: u64,
    pub upstream_exceptions: u64,
    pub no_reply: u64,
    pub errors: [u64; ErrorKind::COUNT],
    pub statuses: [u64; STATUSES],
    pub latency: Option<Histogram<u64>>,
    pub latency_sum_us: u64,
}

impl RouteReport {
    /// Adds another worker's figures for the same labels.
    pub fn add(&mut self, o: &RouteReport) {
        sum(&mut self.requests, &o.requests);
        sum(&mut self.errors, &o.errors);
        sum(&mut self.statuses, &o.statuses);
        self.forwarded += o.forwarded;
        self.upstream_exceptions += o.upstream_exceptions;
        self.no_reply += o.no_reply;
        self.latency_sum_us += o.latency_sum_us;
        match (&mut self.latency, &o.latency) {
            (Some(a), Some(b)) => a.add(b).expect("histograms made alike"),
            (a @ None, Some(b)) => *a = Some(b.clone()),
            _ => {}
        }
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }
}

pub fn sum<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

#[derive(Clone, Debug)]
pub struct ClusterReport {
    pub name: String,
    pub pool_waits: u64,
    pub retries: u64,
    pub retries_over_budget: u64,
    /// Every endpoint was unhealthy or ejected at the last pick: requests go to all.
    pub fail_open: bool,
}

#[derive(Clone, Debug)]
pub struct EndpointReport {
    pub cluster: String,
    pub endpoint: String,
    pub opened: u64,
    pub connect_failures: u64,
    /// Upstream connections open now.
    pub open: u64,
    /// Requests (streams) in flight now.
    pub inflight: u64,
    /// A failed connect holds new connections back (`connect_failure_backoff`).
    pub backoff: bool,
    /// The endpoint is in the running config (else it is kept for its counters only).
    pub configured: bool,
    /// The active health check says unhealthy.
    pub unhealthy: bool,
    /// Ejected by outlier detection now.
    pub ejected: bool,
    /// Times outlier detection ejected it.
    pub ejections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_outlive_a_rebuild_and_reports_merge() {
        let reg = Registry::default();
        let a = reg.route("in", "r0");
        a.request(3);
        a.observe(100);
        assert!(Rc::ptr_eq(&a, &reg.route("in", "r0")), "the same labels find the same counters");
        let l = reg.listener("in", "thrift");
        bump(&l.accepted);
        l.closed(CloseReason::Drain);
        let r = reg.report(&[], &[]);
        assert_eq!(r.listeners[0].active(), 0);
        let mut route = r.routes.iter().find(|x| x.route == "r0").unwrap().clone();
        assert_eq!(route.requests[3], 1);
        route.add(&r.routes.iter().find(|x| x.route == "r0").unwrap().clone());
        assert_eq!((route.total_requests(), route.latency.as_ref().unwrap().len()), (2, 2));
        assert!(r.routes.iter().any(|x| x.listener == "in" && x.route.is_empty()), "the unrouted entry");
    }

    #[test]
    fn latency_buckets_are_hdrhistograms_buckets() {
        // Every value lands in a bucket whose smallest value HdrHistogram (2 digits) counts as
        // equivalent to it, so turning the counts into a Histogram loses nothing.
        let h = latency_histogram();
        let mut values: Vec<u64> = (1..5000).collect();
        values.extend((0..2000).map(|i| 5000 + i * 7919));
        values.extend([1 << 20, (1 << 20) + 1, 999_999_999, LATENCY_MAX_US]);
        for v in values {
            let b = Latency::bucket(v);
            assert!(Latency::low(b) <= v && v < Latency::low(b + 1), "{v} in bucket {b}");
            assert!(h.equivalent(Latency::low(b), v), "{v}: HdrHistogram's bucket differs");
        }
        let l = Latency::new();
        for v in [3, 300, 3_000, 30_000, 30_000] {
            l.record(v);
        }
        let h = l.histogram();
        assert_eq!(
            (h.len(), h.value_at_quantile(0.5), h.max()),
            (5, h.highest_equivalent(3_000), h.highest_equivalent(30_000))
        );
    }
}
