//! One downstream (client) TTHeader Streaming connection: cut its frames by length, open a
//! stream on an upstream connection for each new Header frame (routed on its method and
//! service), forward every later frame of the stream with its id patched, and hand the
//! server's frames back. The session ends each stream once both sides did (the server's
//! Trailer and the client's), or at once on a Rst from either side, and frees its ids;
//! frames for ids it no longer knows are dropped, as Kitex drops them.
//!
//! ttstream has no flow control. A server that reads slowly fills its connection's queue:
//! this client is then not read until the queue drains (every stream of this client waits;
//! other clients' streams go on). A client that reads slowly: a stream whose frame would take
//! the client's queue past the listener's `max_write_buffer` is reset both ways, so one
//! stalled reader holds at most that much memory (and `write_stall_timeout` closes it).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};

use crate::config::RouteConfig;
use crate::error::{ErrorKind, RequestError};
use crate::io::{read_more, write_outbox, ReadHint, MIN_READ};
use crate::local::{Budget, IdMap, Notify, Outbox, StallMark, BUDGET};
use crate::metrics::{bump, now_us, CloseReason, ConnMeter, RouteMetrics};
use crate::route::{route, RouteKey};
use crate::thrift::codec::frame_len;
use crate::thrift::stats::TTSTREAM_VARIANT;
use crate::ttstream::codec::{encode_exception, parse, FrameType, StreamFrame};
use crate::ttstream::errors::{stream_error, INTERNAL_ERROR, UNKNOWN_SERVICE};
use crate::ttstream::upstream::{StreamClient, TtUpstream};
use crate::worker::state::{DownstreamConn, IdleMark, WorkerState};

/// Largest step by which the read buffer grows towards an announced frame length.
const GROW_STEP: usize = 64 * 1024;
/// How often stream deadlines are checked while streams are open.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// How a stream ended, for the counters and the route's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    ClientReset,
    ServerReset,
    Overflow,
}

/// What a client stream is from its Header frame on, before it has an upstream stream.
struct StreamMeta {
    method: Rc<[u8]>,
    /// `metrics::now_us` by which the first frame from the server must come.
    deadline: u64,
    /// `cluster[].stream_idle_timeout`: no frame either way for this long ends it.
    idle: Duration,
    route: Rc<RouteMetrics>,
    start: u64,
}

/// One client stream and the upstream stream it maps to.
struct DsStream {
    up: Rc<TtUpstream>,
    usid: i32,
    meta: StreamMeta,
    client_done: bool,
    server_done: bool,
    /// The server has sent a frame: `idle` bounds the stream from now on, not `deadline`.
    responded: bool,
    /// The last frame either way (`metrics::now_us`).
    last: u64,
}

/// Shared state of one client connection.
pub struct TtSession {
    /// Frames for the client, drained by its writer task.
    pub out: Outbox,
    streams: RefCell<IdMap<i32, DsStream>>,
    /// Woken when the client's queue drains (a reader paused by a full upstream waits on the
    /// upstream's own notifier).
    progress: Rc<Notify>,
    /// Woken when a stream opens, so the deadline sweeper runs.
    opened: Notify,
    activity: Cell<u64>,
    idle_mark: IdleMark,
    partial: Cell<bool>,
    read_held: Cell<usize>,
    read_canceller: RefCell<Canceller>,
    draining: Cell<bool>,
    closed: Cell<bool>,
    max_write_buffer: Cell<usize>,
    state: Rc<WorkerState>,
    meter: Rc<ConnMeter>,
    listener: Rc<str>,
    write_stall_timeout: Cell<Duration>,
    stall: StallMark,
    me: Weak<TtSession>,
}

impl TtSession {
    fn new(state: Rc<WorkerState>, meter: Rc<ConnMeter>, listener: Rc<str>) -> Rc<TtSession> {
        let progress = Rc::new(Notify::default());
        Rc::new_cyclic(|me| TtSession {
            out: Outbox::for_client(Some(progress.clone()), meter.listener.clone()),
            streams: RefCell::new(IdMap::default()),
            progress,
            opened: Notify::default(),
            activity: Cell::new(0),
            idle_mark: IdleMark::default(),
            partial: Cell::new(false),
            read_held: Cell::new(0),
            read_canceller: RefCell::new(Canceller::new()),
            draining: Cell::new(false),
            closed: Cell::new(false),
            max_write_buffer: Cell::new(4 << 20),
            state,
            meter,
            listener,
            write_stall_timeout: Cell::new(Duration::from_secs(30)),
            stall: StallMark::default(),
            me: me.clone(),
        })
    }

    fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }

    fn cancel_read(&self) {
        crate::io::cancel_reads(&self.read_canceller);
    }

    fn stats(&self) -> &crate::ttstream::stats::TtStreamStats {
        &self.state.stats.protocols.ttstream
    }

    /// Counts a stream's end on the worker's counters and its route.
    fn count_end(&self, s: &StreamMeta, outcome: Outcome, err: Option<&RequestError>) {
        let t = self.stats();
        let c = match outcome {
            Outcome::Ok => &t.ended_ok,
            Outcome::Error => &t.ended_error,
            Outcome::ClientReset => &t.ended_client_reset,
            Outcome::ServerReset => &t.ended_server_reset,
            Outcome::Overflow => &t.ended_overflow,
        };
        c.set(c.get() + 1);
        match err {
            Some(e) => s.route.error(&e.kind),
            None => bump(&s.route.forwarded),
        }
        s.route.observe(now_us().saturating_sub(s.start));
    }

    /// Ends stream `dsid` for the client with the frame and exception `err` maps to.
    fn send_error(&self, dsid: i32, method: &[u8], err: &RequestError, type_id: Option<i32>) {
        let (frame, id, msg) = stream_error(err);
        let mut b = BytesMut::new();
        encode_exception(&mut b, dsid, frame, method, type_id.unwrap_or(id), &msg);
        self.out.push(b);
        self.touch();
    }

    /// Removes stream `dsid`; the upstream side is told to forget or reset it by the caller.
    fn take(&self, dsid: i32) -> Option<DsStream> {
        self.streams.borrow_mut().remove(&dsid)
    }

    /// A stream both sides finished (or either reset): frees both ids.
    fn finish(&self, dsid: i32, outcome: Outcome) {
        if let Some(s) = self.take(dsid) {
            s.up.forget(s.usid);
            if outcome == Outcome::Ok {
                s.up.success();
            }
            self.count_end(&s.meta, outcome, None);
            self.progress.notify_all();
        }
    }

    /// The proxy gives up on stream `dsid` (timeout, overflow, drain): reset upstream and an
    /// error frame to the client.
    fn abort(&self, dsid: i32, err: &RequestError, outcome: Outcome) {
        if let Some(s) = self.take(dsid) {
            s.up.reset(s.usid, &s.meta.method, &err.to_string());
            self.send_error(dsid, &s.meta.method, err, None);
            self.count_end(&s.meta, outcome, Some(err));
        }
    }

    /// The client is gone: every open stream is reset upstream (cancel reaches the server).
    fn reset_all(&self, why: &str) {
        let streams: Vec<(i32, DsStream)> = self.streams.borrow_mut().drain().collect();
        for (_, s) in streams {
            s.up.reset(s.usid, &s.meta.method, why);
            let outcome = if s.server_done { Outcome::Ok } else { Outcome::ClientReset };
            if outcome == Outcome::Ok {
                s.up.success();
            }
            self.count_end(&s.meta, outcome, None);
        }
    }

    /// Checks every stream's deadline: no first frame from the server by the request
    /// timeout, or no frame either way for the stream idle timeout, resets it.
    fn sweep(&self, now: u64) {
        let expired: Vec<(i32, bool)> = self
            .streams
            .borrow()
            .iter()
            .filter_map(|(id, s)| {
                if !s.responded && now >= s.meta.deadline {
                    Some((*id, false))
                } else if s.responded && now.saturating_sub(s.last) >= s.meta.idle.as_micros() as u64 {
                    Some((*id, true))
                } else {
                    None
                }
            })
            .collect();
        for (dsid, idle) in expired {
            let up = self.streams.borrow().get(&dsid).map(|s| s.up.clone());
            if !idle {
                up.iter().for_each(|u| u.timed_out());
            }
            let endpoint = up.map(|u| u.peer.clone());
            let err: RequestError =
                if idle { ErrorKind::Stalled.into() } else { ErrorKind::Timeout { endpoint }.into() };
            self.state.stats.timeouts.set(self.state.stats.timeouts.get() + 1);
            self.abort(dsid, &err, Outcome::Error);
        }
    }

    async fn sweep_loop(self: Rc<Self>) {
        while !self.closed.get() {
            if self.streams.borrow().is_empty() {
                self.opened.notified().await;
                continue;
            }
            monoio::time::sleep(SWEEP_EVERY).await;
            self.sweep(now_us());
        }
    }
}

impl StreamClient for TtSession {
    fn deliver(&self, dsid: i32, frame: &[u8], f: &StreamFrame, at: u64) {
        let (over, done) = {
            let mut streams = self.streams.borrow_mut();
            let Some(s) = streams.get_mut(&dsid) else { return };
            let over = self.out.queued_bytes() + frame.len() > self.max_write_buffer.get();
            if !over {
                s.responded = true;
                s.last = at;
                if f.kind == FrameType::Trailer {
                    s.server_done = true;
                }
            }
            (over, s.server_done && s.client_done)
        };
        if over {
            let max = self.max_write_buffer.get();
            log::warn!(
                "listener {}: a client left more than max_write_buffer ({max} bytes) of TTHeader stream frames unread; stream {dsid} reset both ways",
                self.listener
            );
            if let Some(s) = self.take(dsid) {
                s.up.reset(s.usid, &s.meta.method, "client not reading (proxy buffer full)");
                let mut b = BytesMut::new();
                let msg = format!(
                    "stream reset by the proxy: the client left more than max_write_buffer ({max} bytes) unread"
                );
                encode_exception(&mut b, dsid, FrameType::Rst, &s.meta.method, INTERNAL_ERROR, &msg);
                // Past the limit on purpose: the client must learn why its stream ended.
                self.out.push(b);
                let err: RequestError = ErrorKind::MemoryBudget.into();
                self.count_end(&s.meta, Outcome::Overflow, Some(&err));
            }
            return;
        }
        self.out.push_copy(frame, |_| {});
        self.touch();
        match f.kind {
            FrameType::Rst => self.finish(dsid, Outcome::ServerReset),
            _ if done => self.finish(dsid, Outcome::Ok),
            _ => {}
        }
    }

    fn cut(&self, dsid: i32, err: &RequestError) {
        if let Some(s) = self.take(dsid) {
            // The upstream forgot it already.
            self.send_error(dsid, &s.meta.method, err, None);
            self.count_end(&s.meta, Outcome::Error, Some(err));
            self.progress.notify_all();
        }
    }
}

impl DownstreamConn for TtSession {
    /// New streams get a Trailer saying the proxy is draining; open ones go on.
    fn start_drain(self: Rc<Self>) {
        self.draining.set(true);
    }

    fn close_if_idle(&self, idle: Duration, now: Instant) {
        let idle_now = self.streams.borrow().is_empty() && !self.partial.get();
        if self.idle_mark.idle_for(idle_now, self.activity.get(), now, idle) {
            self.meter.closing(CloseReason::Drain);
            self.cancel_read();
        }
    }

    fn close_now(self: Rc<Self>) {
        self.meter.closing(CloseReason::Drain);
        let err: RequestError = ErrorKind::Draining.into();
        let ids: Vec<i32> = self.streams.borrow().keys().copied().collect();
        for dsid in ids {
            self.abort(dsid, &err, Outcome::Error);
        }
        self.cancel_read();
        self.out.close();
    }

    fn requests_active(&self) -> usize {
        self.streams.borrow().len()
    }

    fn close_if_stalled(&self, now: Instant) -> bool {
        let timeout = self.write_stall_timeout.get();
        if !self.out.stalled(&self.stall, now, timeout) {
            return false;
        }
        log::warn!(
            "listener {}: a TTHeader Streaming client read none of its frames for {timeout:?} ({} bytes queued, {} streams open); connection closed, its streams reset upstream",
            self.listener,
            self.out.queued_bytes(),
            self.streams.borrow().len()
        );
        self.meter.closing(CloseReason::WriteStall);
        self.cancel_read();
        self.out.abort();
        true
    }
}

/// What a frame from the client asks of the reader.
enum Next {
    Continue,
    Close,
    /// A new stream found no upstream connection with room: connect or wait.
    Acquire(Box<Opening>),
    /// The upstream connection's queue is full: read no more until it drains.
    Wait(Rc<TtUpstream>),
}

/// A new stream waiting for an upstream connection.
struct Opening {
    frame: BytesMut,
    f: StreamFrame,
    pool: Rc<crate::ttstream::upstream::TtPool>,
    deadline: Instant,
    meta: StreamMeta,
}

/// Serves a client connection the Thrift listener found to be TTHeader Streaming: `buf`
/// holds what was read so far. Registers it with the worker (drain, stall checks), runs it
/// until it closes, then resets whatever streams it left open.
pub async fn serve<R, W>(
    rd: R,
    mut wr: W,
    buf: BytesMut,
    listener: Rc<str>,
    state: Rc<WorkerState>,
    meter: Rc<ConnMeter>,
) where
    R: CancelableAsyncReadRent + 'static,
    W: CancelableAsyncWriteRent + 'static,
{
    let ds = TtSession::new(state.clone(), meter, listener.clone());
    let mut max_frame = 16 << 20;
    if let Some(l) = state.view().listener(&listener) {
        ds.write_stall_timeout.set(l.write_stall_timeout);
        ds.max_write_buffer.set(l.max_write_buffer.get());
        if let Some(t) = l.protocol.thrift() {
            max_frame = t.max_frame_size.get();
        }
    }
    let id = state.register(ds.clone());
    let w = ds.clone();
    let writer = monoio::spawn(async move {
        if write_outbox(&mut wr, &w.out).await.is_err() {
            w.out.close();
        }
    });
    monoio::spawn(ds.clone().sweep_loop());
    let mut conn = Conn {
        rd,
        buf,
        hint: ReadHint::new(MIN_READ),
        ds: ds.clone(),
        max_frame,
        listener_index: usize::MAX,
        now_us: now_us(),
    };
    conn.listener_index = state.view().listener_index(&listener).unwrap_or(usize::MAX);
    conn.run().await;
    BUDGET.with(|b| b.update(&ds.read_held, 0));
    ds.reset_all("client connection closed");
    ds.closed.set(true);
    ds.opened.notify_all();
    ds.out.close();
    state.deregister(id);
    writer.await;
}

struct Conn<R> {
    rd: R,
    buf: BytesMut,
    hint: ReadHint,
    ds: Rc<TtSession>,
    max_frame: usize,
    listener_index: usize,
    /// When the last read completed (`metrics::now_us`): one clock read per read.
    now_us: u64,
}

impl<R: CancelableAsyncReadRent> Conn<R> {
    async fn fill(&mut self) -> bool {
        let handle = self.ds.read_canceller.borrow().handle();
        match read_more(&mut self.rd, &mut self.buf, handle, &mut self.hint).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.ds.meter.read(n);
                self.ds.touch();
                self.now_us = now_us();
                true
            }
        }
    }

    async fn run(&mut self) {
        loop {
            while let Some(len) = frame_len(&self.buf) {
                if len > self.max_frame {
                    log::info!(
                        "listener {}: TTHeader Streaming frame of {len} bytes over max_frame_size {}; connection closed",
                        self.ds.listener,
                        self.max_frame
                    );
                    self.ds.meter.closing(CloseReason::ProtocolError);
                    return;
                }
                if self.buf.len() < len {
                    self.buf.reserve((len - self.buf.len()).min(GROW_STEP));
                    break;
                }
                let frame = self.buf.split_to(len);
                match self.on_frame(frame) {
                    Next::Continue => {}
                    Next::Close => {
                        self.ds.meter.closing(CloseReason::ProtocolError);
                        return;
                    }
                    Next::Acquire(o) => Box::pin(self.acquire(*o)).await,
                    Next::Wait(up) => self.wait_for(&up).await,
                }
            }
            self.ds.partial.set(!self.buf.is_empty());
            BUDGET.with(|b| b.update(&self.ds.read_held, self.buf.len()));
            if !self.fill().await {
                return;
            }
        }
    }

    fn on_frame(&mut self, mut frame: BytesMut) -> Next {
        let ds = self.ds.clone();
        let f = match parse(&frame) {
            Ok(f) => f,
            Err(e) => {
                log::info!("listener {}: malformed TTHeader Streaming frame ({e:?}); connection closed", ds.listener);
                return Next::Close;
            }
        };
        let known = {
            let mut streams = ds.streams.borrow_mut();
            match streams.get_mut(&f.sid) {
                Some(s) => {
                    s.last = self.now_us;
                    if f.kind == FrameType::Trailer {
                        s.client_done = true;
                    }
                    Some((s.up.clone(), s.usid, s.client_done && s.server_done))
                }
                None => None,
            }
        };
        if let Some((up, usid, done)) = known {
            // Backpressure without flow control: a server that reads slowly stops this client.
            up.forward(&frame, &f, usid);
            match f.kind {
                FrameType::Rst => ds.finish(f.sid, Outcome::ClientReset),
                _ if done => ds.finish(f.sid, Outcome::Ok),
                _ => {}
            }
            return if up.is_full() { Next::Wait(up) } else { Next::Continue };
        }
        if f.kind != FrameType::Header || f.sid == 0 {
            // Late (after the stream ended: Kitex's Trailer after its Rst) or never opened.
            let t = ds.stats();
            t.late_frames.set(t.late_frames.get() + 1);
            return Next::Continue;
        }
        self.open(&mut frame, f)
    }

    /// A Header frame on a new stream id: route it and open its upstream stream.
    fn open(&mut self, frame: &mut BytesMut, f: StreamFrame) -> Next {
        let ds = self.ds.clone();
        let state = ds.state.clone();
        let t = ds.stats();
        t.opened.set(t.opened.get() + 1);
        let at = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &frame[r]);
        let method: Rc<[u8]> = at(&f.method).unwrap_or(b"").into();
        let services = [at(&f.isn), at(&f.to_service), None];
        let key = RouteKey { method: &method, services };
        let view = state.view();
        if self.listener_index == usize::MAX {
            return Next::Close;
        }
        let (routes, metrics) = view.route_table(self.listener_index);
        let unrouted = ds.meter.listener.unrouted.clone();
        let Some(ri) = route(routes, &key) else {
            state.stats.no_route.set(state.stats.no_route.get() + 1);
            let unknown_service = service_unknown(routes, &services);
            let target = match (unknown_service, services.iter().flatten().next()) {
                (true, Some(s)) => format!("service {}", String::from_utf8_lossy(s)),
                _ => String::from_utf8_lossy(&method).into_owned(),
            };
            let err: RequestError = ErrorKind::NoRoute { target }.into();
            unrouted.request(TTSTREAM_VARIANT);
            unrouted.error(&err.kind);
            t.ended_error.set(t.ended_error.get() + 1);
            ds.send_error(f.sid, &method, &err, unknown_service.then_some(UNKNOWN_SERVICE));
            return Next::Continue;
        };
        let rm = metrics[ri].clone();
        rm.request(TTSTREAM_VARIANT);
        let refuse = if ds.draining.get() {
            Some(ErrorKind::Draining)
        } else if BUDGET.with(Budget::is_over) {
            Some(ErrorKind::MemoryBudget)
        } else {
            None
        };
        if let Some(kind) = refuse {
            let err: RequestError = kind.into();
            rm.error(&err.kind);
            t.ended_error.set(t.ended_error.get() + 1);
            ds.send_error(f.sid, &method, &err, None);
            return Next::Continue;
        }
        let cluster = view.clusters[routes[ri].cluster].clone();
        drop(view);
        let mut timeout = cluster.config.request_timeout;
        if let Some(ms) = f.rpc_timeout_ms.filter(|ms| *ms > 0) {
            timeout = timeout.min(Duration::from_millis(ms));
        }
        let start = self.now_us;
        let meta = StreamMeta {
            method,
            deadline: start + timeout.as_micros() as u64,
            idle: cluster.config.stream_idle_timeout,
            route: rm,
            start,
        };
        let pool = cluster.pool::<TtUpstream>(0);
        match pool.try_acquire(0, 0) {
            Some(up) => self.start_stream(up, frame, &f, meta),
            None => {
                let deadline = Instant::now() + timeout;
                Next::Acquire(Box::new(Opening { frame: std::mem::take(frame), f, pool, deadline, meta }))
            }
        }
    }

    /// The slow path: connect or wait for a stream slot until the stream's deadline.
    async fn acquire(&mut self, o: Opening) {
        let Opening { mut frame, f, pool, deadline, meta } = o;
        match pool.acquire(deadline, 0, 0, None).await {
            Ok(up) => {
                if let Next::Wait(up) = self.start_stream(up, &mut frame, &f, meta) {
                    self.wait_for(&up).await;
                }
            }
            Err(e) => {
                let ds = &self.ds;
                if matches!(e.kind, ErrorKind::Saturated) {
                    ds.state.stats.timeouts.set(ds.state.stats.timeouts.get() + 1);
                }
                ds.send_error(f.sid, &meta.method, &e, None);
                ds.count_end(&meta, Outcome::Error, Some(&e));
            }
        }
    }

    fn start_stream(&self, up: Rc<TtUpstream>, frame: &mut BytesMut, f: &StreamFrame, meta: StreamMeta) -> Next {
        let ds = &self.ds;
        let client: Weak<dyn StreamClient> = ds.me.clone();
        let usid = up.open(client, f.sid);
        let last = meta.start;
        let stream =
            DsStream { up: up.clone(), usid, meta, client_done: false, server_done: false, responded: false, last };
        ds.streams.borrow_mut().insert(f.sid, stream);
        ds.state.stats.requests.set(ds.state.stats.requests.get() + 1);
        ds.opened.notify_all();
        up.forward(frame, f, usid);
        if up.is_full() {
            Next::Wait(up)
        } else {
            Next::Continue
        }
    }

    /// The server reads slower than this client writes: this client waits until the
    /// upstream's queue drains (or the connection dies).
    async fn wait_for(&self, up: &TtUpstream) {
        while up.is_full() && !up.is_dead() && !self.ds.closed.get() {
            up.capacity().notified().await;
        }
    }
}

/// No route and the service is what no route knows: every route asks for a service, and
/// none of them one the stream names.
fn service_unknown(routes: &[RouteConfig], services: &[Option<&[u8]>; 3]) -> bool {
    !routes.is_empty()
        && routes
            .iter()
            .all(|r| r.service.as_ref().is_some_and(|s| !services.iter().flatten().any(|have| *have == s.as_bytes())))
}
