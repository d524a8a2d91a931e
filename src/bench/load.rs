//! The load generator. Closed loop: C connections, each keeping M requests in flight. Open
//! loop: a fixed total rate spread over the connections, each request's latency measured from
//! its *intended* send time, so a stall in the system under test shows up as latency instead
//! of silently lowering the send rate (coordinated omission).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Canceller, Splitable};
use monoio::net::TcpStream;

use super::wire::{check_reply, encode_request, BenchProtocol};
use crate::io::{read_more, ReadHint};
use crate::local::SeqMap;
use crate::thrift::frame_len;

/// Open-loop requests allowed to be outstanding on one connection before sends are skipped.
const OPEN_LOOP_BACKLOG: usize = 100_000;

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

pub(super) struct Acc {
    hist: Histogram<u64>,
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
}

impl Acc {
    pub(super) fn error(&mut self, kind: &'static str) {
        self.errors_n(kind, 1);
    }

    pub(super) fn errors_n(&mut self, kind: &'static str, n: u64) {
        *self.errors.entry(kind).or_default() += n;
    }

    /// Accounts one checked reply: `sent_at` is when its request was (meant to be) sent, or
    /// `None` when no request of ours had that seqID; `measured` says whether it counts.
    pub(super) fn reply(&mut self, sent_at: Option<Instant>, now: Instant, measured: impl Fn(Instant) -> bool) {
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

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Shared clock of one run: when measuring starts and when sending stops.
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    /// The open loop's send times for connection `id` at `rate` per second: call `k` is due
    /// at `due(k)`. Connections are staggered so they do not all fire on the same tick.
    pub(super) fn schedule(&self, id: u32, rate: f64) -> impl Fn(u32) -> Instant {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let first = self.start + interval.mul_f64((id as f64 * 0.618_033_988_7) % 1.0);
        move |k| first + interval * k
    }

    /// Sleeps until the run starts (all connections begin together).
    pub(super) async fn wait_start(&self) {
        let now = Instant::now();
        if now < self.start {
            monoio::time::sleep(self.start - now).await;
        }
    }
}

/// Writes what `wbuf` holds and empties it (keeping its allocation); false on a write error,
/// which is counted.
pub(super) async fn write_batch<W: AsyncWriteRent>(wr: &mut W, wbuf: &mut BytesMut, acc: &RefCell<Acc>) -> bool {
    let (res, b) = wr.write_all(std::mem::take(wbuf)).await;
    *wbuf = b;
    wbuf.clear();
    if res.is_err() {
        acc.borrow_mut().error("io");
        return false;
    }
    true
}

/// Runs the load and returns merged results.
pub fn run_load(spec: &LoadSpec) -> LoadResult {
    let start = Instant::now() + Duration::from_millis(20);
    let window = Window { start, measure_from: start + spec.warmup, end: start + spec.warmup + spec.duration };
    let progress = Arc::new(AtomicU64::new(0));
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            let progress = progress.clone();
            std::thread::spawn(move || run_thread(t, threads, spec, window, progress))
        })
        .collect();
    if spec.progress {
        let p = progress.clone();
        let end = window.end;
        std::thread::spawn(move || {
            let mut last = 0;
            while Instant::now() + Duration::from_secs(1) < end {
                std::thread::sleep(Duration::from_secs(1));
                let now = p.load(Ordering::Relaxed);
                let left = end.saturating_duration_since(Instant::now()).as_secs();
                eprintln!("progress: {now} replies, {}/s, {left}s left", now - last);
                last = now;
            }
        });
    }
    let mut hist = new_hist();
    let mut requests = 0;
    let mut errors = BTreeMap::new();
    for h in handles {
        let acc = h.join().expect("load thread");
        hist.add(&acc.hist).expect("same histogram bounds");
        requests += acc.requests;
        for (k, v) in acc.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let mode = match spec.rate {
        Some(r) => format!("open {r:.0}/s"),
        None => format!("{}x{}", spec.connections, spec.inflight),
    };
    LoadResult {
        spec_label: format!("{} {mode} {}B", spec.protocol.name(), spec.payload),
        requests,
        seconds: spec.duration.as_secs_f64(),
        hist,
        errors,
    }
}

fn run_thread(t: usize, threads: usize, spec: LoadSpec, window: Window, progress: Arc<AtomicU64>) -> Acc {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("load runtime");
    rt.block_on(async move {
        let acc = Rc::new(RefCell::new(Acc { hist: new_hist(), requests: 0, errors: BTreeMap::new() }));
        let spec = Rc::new(spec);
        let mine: Vec<u32> = (0..spec.connections as u32).filter(|c| *c as usize % threads == t).collect();
        let per_conn_rate = spec.rate.map(|r| r / spec.connections as f64);
        let tasks: Vec<_> = mine
            .into_iter()
            .map(|id| {
                let (spec, acc, progress) = (spec.clone(), acc.clone(), progress.clone());
                monoio::spawn(async move {
                    let Ok(stream) = TcpStream::connect_addr(spec.target).await else {
                        acc.borrow_mut().error("connect");
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    if spec.protocol.is_grpc() {
                        return match per_conn_rate {
                            None => super::grpc_load::closed_loop(id, stream, &spec, window, &acc, &progress).await,
                            Some(r) => super::grpc_load::open_loop(id, stream, &spec, window, r, &acc, &progress).await,
                        };
                    }
                    match per_conn_rate {
                        None => closed_loop(id, stream, &spec, window, &acc, &progress).await,
                        Some(r) => open_loop(id, stream, &spec, window, r, &acc, &progress).await,
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        Rc::try_unwrap(acc).ok().expect("tasks done").into_inner()
    })
}

/// Cuts complete reply frames from `buf`, checks each and returns their seqIDs.
fn take_replies(buf: &mut BytesMut, conn: u32, acc: &RefCell<Acc>, out: &mut Vec<i32>) -> bool {
    while let Some(len) = frame_len(buf) {
        if len > 64 << 20 {
            acc.borrow_mut().error("oversized_reply");
            return false;
        }
        if buf.len() < len {
            buf.reserve(len - buf.len());
            break;
        }
        let frame = buf.split_to(len);
        match check_reply(&frame, conn) {
            Ok(seq) => out.push(seq),
            Err(e) => acc.borrow_mut().error(e.label()),
        }
    }
    true
}

async fn closed_loop(
    id: u32,
    mut stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    w.wait_start().await;
    let mut sent: SeqMap<Instant> = SeqMap::default();
    let mut next_seq = 1i32;
    let mut wbuf = BytesMut::with_capacity(spec.inflight * (spec.payload + 64));
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut seqs = Vec::new();
    let cancel = Canceller::new();
    let mut hint = ReadHint::new(16 * 1024);
    let t0 = Instant::now();
    for _ in 0..spec.inflight {
        encode_request(&mut wbuf, spec.protocol, next_seq, id, spec.payload);
        sent.insert(next_seq, t0);
        next_seq += 1;
    }
    loop {
        if !wbuf.is_empty() && !write_batch(&mut stream, &mut wbuf, acc).await {
            return;
        }
        if sent.is_empty() {
            return;
        }
        match read_more(&mut stream, &mut rbuf, cancel.handle(), &mut hint).await {
            Ok(n) if n > 0 => {}
            _ => {
                acc.borrow_mut().error("io");
                return;
            }
        }
        seqs.clear();
        if !take_replies(&mut rbuf, id, acc, &mut seqs) {
            return;
        }
        let now = Instant::now();
        let mut a = acc.borrow_mut();
        for &seq in &seqs {
            let sent_at = sent.remove(&seq);
            let known = sent_at.is_some();
            a.reply(sent_at, now, |t| t >= w.measure_from && now <= w.end);
            if !known {
                continue;
            }
            if now < w.end {
                encode_request(&mut wbuf, spec.protocol, next_seq, id, spec.payload);
                sent.insert(next_seq, now);
                next_seq = if next_seq == i32::MAX { 1 } else { next_seq + 1 };
            }
        }
        progress.fetch_add(seqs.len() as u64, Ordering::Relaxed);
    }
}

async fn open_loop(
    id: u32,
    stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    rate: f64,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    let (mut rd, mut wr) = stream.into_split();
    let sent: RefCell<SeqMap<Instant>> = RefCell::new(SeqMap::default());
    let done_sending = std::cell::Cell::new(false);
    let due = w.schedule(id, rate);
    let sender = async {
        let mut wbuf = BytesMut::new();
        let mut k: u32 = 0;
        let mut seq = 1i32;
        loop {
            let intended = due(k);
            if intended >= w.end {
                break;
            }
            let now = Instant::now();
            if intended > now {
                monoio::time::sleep(intended - now).await;
            }
            let now = Instant::now();
            let mut at = due(k);
            while at <= now && at < w.end {
                if sent.borrow().len() >= OPEN_LOOP_BACKLOG {
                    acc.borrow_mut().error("backlog_skipped");
                } else {
                    encode_request(&mut wbuf, spec.protocol, seq, id, spec.payload);
                    sent.borrow_mut().insert(seq, at);
                    seq = if seq == i32::MAX { 1 } else { seq + 1 };
                }
                k += 1;
                at = due(k);
            }
            if !write_batch(&mut wr, &mut wbuf, acc).await {
                break;
            }
        }
        done_sending.set(true);
    };
    let reader = async {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let mut seqs = Vec::new();
        let cancel = Canceller::new();
        let mut hint = ReadHint::new(16 * 1024);
        // Replies still owed when sending stops get a grace period, then count as timeouts.
        loop {
            if done_sending.get() && sent.borrow().is_empty() {
                return;
            }
            let read = read_more(&mut rd, &mut rbuf, cancel.handle(), &mut hint);
            let res = monoio::time::timeout_at((w.end + Duration::from_secs(2)).into(), read).await;
            match res {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => {
                    acc.borrow_mut().error("io");
                    return;
                }
                Err(_) => {
                    let left = sent.borrow().len() as u64;
                    *acc.borrow_mut().errors.entry("timeout").or_default() += left;
                    return;
                }
            }
            seqs.clear();
            if !take_replies(&mut rbuf, id, acc, &mut seqs) {
                return;
            }
            let now = Instant::now();
            let mut a = acc.borrow_mut();
            for &seq in &seqs {
                let sent_at = sent.borrow_mut().remove(&seq);
                a.reply(sent_at, now, |t| t >= w.measure_from);
            }
            progress.fetch_add(seqs.len() as u64, Ordering::Relaxed);
        }
    };
    monoio::join!(sender, reader);
}
