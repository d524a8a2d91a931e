//! The Thrift proxy loop for one downstream connection: detect the transport, cut frames by
//! length, route each request, hand it to an upstream connection (which rewrites the seqID),
//! and answer every failure with an exception in the client's own dialect.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Splitable};

use crate::config::{HashKey, LbPolicy};
use crate::error::{ErrorKind, RequestError, Unsupported};
use crate::hosts::hash_bytes;
use crate::io::{read_more, write_outbox, ReadHint, MIN_READ};
use crate::local::{Budget, FrameBytes, BUDGET, COPY_MAX};
use crate::metrics::{bump, now_us, AccessEntry, CloseReason, ConnMeter, RouteMetrics};
use crate::route::{route, RouteKey};
use crate::thrift::codec::exception::ReplyFraming;
use crate::thrift::codec::message::{parse_message, split_multiplexed, CALL, ONEWAY};
use crate::thrift::codec::{
    detect, encode_exception, frame_len, parse_frame, string_header, Detected, FrameInfo, OriginalSeq, ParseError,
    Protocol,
};
use crate::thrift::config::ThriftListener;
use crate::thrift::errors::exception;
use crate::thrift::session::{Pending, ThriftSession};
use crate::thrift::stats::variant;
use crate::thrift::upstream::{ThriftPool, ThriftUpstream};
use crate::worker::state::WorkerState;

/// How many bytes we are willing to buffer just to learn the method name and seqID of a frame
/// we are about to refuse (a TTHeader header alone may be 4 x 65535 bytes).
const PEEK_LIMIT: usize = 320 * 1024;
/// Largest step by which the read buffer grows towards an announced frame length, so a bare
/// length prefix never reserves megabytes by itself.
const GROW_STEP: usize = 64 * 1024;
/// How often a reader paused by the buffer budget looks again (besides being woken).
const BUDGET_RECHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Removes the connection from the worker registry and stops its writer, however the
/// connection task ends (including by panic).
struct Registration {
    state: Rc<WorkerState>,
    id: u64,
    ds: Rc<ThriftSession>,
}

impl Registration {
    /// Registers a new connection with its worker, before its task first runs, so a drain
    /// that starts in between still waits for it.
    fn new(state: &Rc<WorkerState>, meter: Rc<ConnMeter>) -> Registration {
        let ds = Rc::new(ThriftSession::new(state.stats.clone(), meter));
        Registration { state: state.clone(), id: state.register(ds.clone()), ds }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.ds.out.close();
        self.state.deregister(self.id);
    }
}

/// Registers a new Thrift client connection with its worker, before its task first runs (so
/// a drain that starts in between still waits for it), and returns the task that serves it.
pub fn serve<S>(
    stream: S,
    listener: Rc<str>,
    state: &Rc<WorkerState>,
    meter: Rc<ConnMeter>,
) -> impl std::future::Future<Output = ()>
where
    S: Splitable + 'static,
    S::OwnedRead: CancelableAsyncReadRent + 'static,
    S::OwnedWrite: CancelableAsyncWriteRent + 'static,
{
    serve_thrift(stream, listener, Registration::new(state, meter))
}

/// Serves one Thrift client connection until it closes, is rejected, or is drained.
async fn serve_thrift<S>(stream: S, listener: Rc<str>, reg: Registration)
where
    S: Splitable + 'static,
    S::OwnedRead: CancelableAsyncReadRent + 'static,
    S::OwnedWrite: CancelableAsyncWriteRent + 'static,
{
    let (ds, state) = (reg.ds.clone(), reg.state.clone());
    if let Some(l) = state.view().listener(&listener) {
        ds.write_stall_timeout.set(l.write_stall_timeout);
    }
    *ds.listener.borrow_mut() = listener.clone();
    let (rd, mut wr) = stream.into_split();
    let mut conn = Conn {
        rd,
        buf: BytesMut::with_capacity(MIN_READ),
        read_hint: ReadHint::new(MIN_READ),
        now: Instant::now(),
        now_us: 0,
        ds: ds.clone(),
        state,
        listener,
        listener_index: usize::MAX,
    };
    let Some(detected) = conn.detect().await else { return };
    if detected == Detected::TTStream {
        // TTHeader Streaming: a protocol of its own from here on (its own session, registered
        // with the worker in place of this one).
        let Conn { rd, buf, state, listener, .. } = conn;
        let meter = ds.meter.clone();
        drop(reg);
        return crate::ttstream::downstream::serve(rd, wr, buf, listener, state, meter).await;
    }
    let writer_ds = ds.clone();
    let wfut = async move {
        if write_outbox(&mut wr, &writer_ds.out).await.is_err() {
            // Client gone: drop whatever else arrives for it.
            writer_ds.out.close();
        }
    };
    let writer = monoio::spawn(wfut);
    conn.run(detected).await;
    BUDGET.with(|b| b.update(&ds.read_held, 0));
    // Every request in flight has a deadline, so this wait is bounded.
    while ds.inflight.get() > 0 && !ds.out.is_closed() {
        ds.progress.notified().await;
    }
    drop(reg);
    writer.await;
}

struct Conn<R> {
    rd: R,
    buf: BytesMut,
    /// Adaptive read size (see `io::read_more`).
    read_hint: ReadHint,
    /// When the last read completed: the start of every deadline of the requests it carried
    /// (one clock read per read, not per request).
    now: Instant,
    /// The same instant in `metrics::now_us` microseconds: when its requests started.
    now_us: u64,
    ds: Rc<ThriftSession>,
    state: Rc<WorkerState>,
    listener: Rc<str>,
    /// The listener's place in the config (`View::listener_index`).
    listener_index: usize,
}

/// What to do with the connection after a frame.
enum Next {
    Continue,
    Close,
    /// Every upstream connection is full or none is open yet: wait (connect) off the hot path.
    Acquire(Box<Waiting>),
}

/// The route a request took and when it was read (`metrics::now_us`), for its pending entry.
struct Metered {
    route: Rc<RouteMetrics>,
    start: u64,
    /// The request's deadline, in the same microseconds.
    deadline: u64,
}

/// A request that found no upstream connection with room.
struct Waiting {
    frame: BytesMut,
    info: FrameInfo,
    orig: OriginalSeq,
    deadline: Instant,
    pool: Rc<ThriftPool>,
    metered: Metered,
    /// The request's key under `lb = "hash"`.
    hash: u64,
}

/// The key `lb = "hash"` places a request by: a TTHeader string header (requests without it,
/// and other dialects, use the method) or the method name.
fn request_hash(key: &HashKey, frame: &[u8], info: &FrameInfo, method: &[u8]) -> u64 {
    let value = match key {
        HashKey::Header(name) => string_header(frame, info, name.as_bytes()),
        HashKey::Method => None,
    };
    hash_bytes(value.unwrap_or(method))
}

impl<R: CancelableAsyncReadRent> Conn<R> {
    /// Over the worker's buffer memory, a client holding more than its share (a partial
    /// frame, replies it has not read) is not read until the worker is under again; false
    /// if the connection closed meanwhile.
    async fn wait_for_budget(&self) -> bool {
        let mine = || self.buf.len() + self.ds.out.held_bytes();
        if !BUDGET.with(|b| b.should_pause(mine(), self.state.conn_count())) {
            return true;
        }
        self.ds.stats.buffer_paused_reads.set(self.ds.stats.buffer_paused_reads.get() + 1);
        while BUDGET.with(|b| b.should_pause(mine(), self.state.conn_count())) {
            if self.ds.out.is_closed() {
                return false;
            }
            let _ = monoio::time::timeout(BUDGET_RECHECK, Budget::under()).await;
        }
        true
    }

    /// Reads more bytes; false on EOF, error or cancellation (drain).
    async fn fill(&mut self) -> bool {
        let handle = self.ds.read_canceller.borrow().handle();
        match read_more(&mut self.rd, &mut self.buf, handle, &mut self.read_hint).await {
            Ok(0) => false,
            Ok(n) => {
                self.ds.meter.read(n);
                self.ds.touch();
                self.now = Instant::now();
                self.now_us = now_us();
                true
            }
            Err(_) => false,
        }
    }

    /// Reads until the first bytes say what the client speaks; `None` if it closed first.
    async fn detect(&mut self) -> Option<Detected> {
        loop {
            if let Some(d) = detect(&self.buf, false) {
                return Some(d);
            }
            if !self.fill().await {
                return match detect(&self.buf, true) {
                    Some(d) if !self.buf.is_empty() => Some(d),
                    _ => None,
                };
            }
        }
    }

    async fn run(&mut self, detected: Detected) {
        let stats = &self.state.stats;
        match detected {
            Detected::Framed => {}
            Detected::Unframed(_) => {
                self.ds.meter.closing(CloseReason::ProtocolError);
                return Box::pin(self.reject_unframed()).await;
            }
            Detected::TTStream => return, // handed to `ttstream` before `run`
            Detected::MeshHeader | Detected::Http2 | Detected::Garbage => {
                self.ds.meter.closing(CloseReason::ProtocolError);
                stats.garbage_connections.set(stats.garbage_connections.get() + 1);
                log::debug!("listener {}: {detected:?} on a Thrift port; connection closed", self.listener);
                return;
            }
        }
        let (limits, max_write_buffer) = {
            let view = self.state.view();
            let Some(index) = view.listener_index(&self.listener) else { return };
            self.listener_index = index;
            let lc = &view.snapshot.config.listeners[index];
            let Some(t) = lc.protocol.thrift() else { return };
            (*t, lc.max_write_buffer.get())
        };
        loop {
            while let Some(len) = frame_len(&self.buf) {
                if len > limits.max_frame_size.get() {
                    self.ds.meter.closing(CloseReason::ProtocolError);
                    return Box::pin(self.reject_oversized(len, &limits)).await;
                }
                if self.buf.len() < len {
                    self.buf.reserve((len - self.buf.len()).min(GROW_STEP));
                    break;
                }
                // Backpressure: at a limit, take no more requests until a reply frees a slot
                // or the client reads what is queued for it.
                while self.ds.inflight.get() >= limits.max_pending_requests
                    || self.ds.out.queued_bytes() > max_write_buffer
                {
                    if self.ds.out.is_closed() {
                        return;
                    }
                    self.ds.progress.notified().await;
                }
                let next = if len < COPY_MAX {
                    // Copied into the upstream outbox from here: nothing is split off.
                    let next = self.on_request(&self.buf[..len], &limits);
                    self.buf.advance(len);
                    next
                } else {
                    let frame = self.buf.split_to(len);
                    self.on_request(frame, &limits)
                };
                match next {
                    Next::Continue => {}
                    Next::Close => {
                        self.ds.meter.closing(CloseReason::ProtocolError);
                        return;
                    }
                    Next::Acquire(w) => Box::pin(self.acquire_and_send(*w)).await,
                }
            }
            self.ds.partial.set(!self.buf.is_empty());
            BUDGET.with(|b| b.update(&self.ds.read_held, self.buf.len()));
            if !self.wait_for_budget().await || !self.fill().await {
                return;
            }
        }
    }

    /// Classifies, routes and forwards one request frame, synchronously unless it has to wait
    /// for an upstream connection (a future moved per request costs a large memcpy).
    fn on_request(&self, frame: impl FrameBytes, limits: &ThriftListener) -> Next {
        let ds = &self.ds;
        let stats = &self.state.stats;
        let unrouted = &ds.meter.listener.unrouted;
        let info = match parse_frame(&frame, limits.max_method_name) {
            Ok(info) => info,
            Err(ParseError::Transform) => {
                let seq = OriginalSeq::from_parts(&frame[8..12], None);
                let err: RequestError = ErrorKind::Unsupported(Unsupported::HeaderTransform).into();
                unrouted.error(&err.kind);
                encode_raw(ds, ReplyFraming::THeader, Protocol::Binary, b"", &seq, &err);
                return Next::Close;
            }
            Err(e) => {
                let why = match e {
                    ParseError::Invalid(why) => why,
                    _ => "frame ends inside its headers",
                };
                self.protocol_error(&frame, limits, &ErrorKind::Malformed(why).into());
                return Next::Close;
            }
        };
        let name = &frame[info.msg.name.clone()];
        let orig = OriginalSeq::capture(&frame, &info);
        let variant = variant(&info.dialect);
        if info.custom_validator {
            unrouted.request(variant);
            let err = ErrorKind::Unsupported(Unsupported::PayloadValidator).into();
            ds.refuse(unrouted, self.now_us, info.dialect, name, &orig, &err);
            return Next::Continue;
        }
        if info.msg.msg_type != CALL && info.msg.msg_type != ONEWAY {
            unrouted.request(variant);
            let err = ErrorKind::Unsupported(Unsupported::MessageType).into();
            ds.refuse(unrouted, self.now_us, info.dialect, name, &orig, &err);
            return Next::Continue;
        }
        let (prefix, method) = split_multiplexed(name);
        let at = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &frame[r]);
        let key = RouteKey { method, services: [prefix, at(&info.isn), at(&info.to_service)] };
        let view = self.state.view();
        let (routes, metrics) = view.route_table(self.listener_index);
        let Some(ri) = route(routes, &key) else {
            stats.no_route.set(stats.no_route.get() + 1);
            unrouted.request(variant);
            let err: RequestError = ErrorKind::NoRoute { target: String::from_utf8_lossy(name).into_owned() }.into();
            if info.msg.msg_type == CALL {
                ds.refuse(unrouted, self.now_us, info.dialect, name, &orig, &err);
            } else {
                unrouted.error(&err.kind);
            }
            return Next::Continue;
        };
        let rm = metrics[ri].clone();
        rm.request(variant);
        if BUDGET.with(Budget::is_over) {
            // Over the worker's buffer memory: refused at once, before it takes any more.
            let err: RequestError = ErrorKind::MemoryBudget.into();
            if info.msg.msg_type == CALL {
                ds.refuse(&rm, self.now_us, info.dialect, name, &orig, &err);
            } else {
                rm.error(&err.kind);
            }
            return Next::Continue;
        }
        let cluster = view.clusters[routes[ri].cluster].clone();
        drop(view);
        let mut timeout = cluster.config.request_timeout;
        if let Some(ms) = info.rpc_timeout_ms.filter(|ms| *ms > 0) {
            timeout = timeout.min(std::time::Duration::from_millis(ms));
        }
        let deadline_us = self.now_us + timeout.as_micros() as u64;
        let hash = match &cluster.config.lb {
            LbPolicy::Hash(key) => request_hash(key, &frame, &info, name),
            _ => 0,
        };
        let pool = cluster.pool::<ThriftUpstream>(info.dialect.index());
        match pool.try_acquire(0, hash) {
            Some(conn) => {
                self.send(&conn, frame, &info, orig, Metered { route: rm, start: self.now_us, deadline: deadline_us });
                Next::Continue
            }
            None => {
                let frame = frame.into_owned();
                let deadline = self.now + timeout;
                let metered = Metered { route: rm, start: self.now_us, deadline: deadline_us };
                Next::Acquire(Box::new(Waiting { frame, info, orig, deadline, pool, metered, hash }))
            }
        }
    }

    /// The slow path: connect or wait for a slot until the request's deadline.
    async fn acquire_and_send(&mut self, w: Waiting) {
        match w.pool.acquire(w.deadline, 0, w.hash, None).await {
            Ok(conn) => self.send(&conn, w.frame, &w.info, w.orig, w.metered),
            Err(e) => {
                let stats = &self.state.stats;
                if matches!(e.kind, ErrorKind::Saturated) {
                    stats.timeouts.set(stats.timeouts.get() + 1);
                }
                let name = &w.frame[w.info.msg.name.clone()];
                if w.info.msg.msg_type == CALL {
                    self.ds.refuse(&w.metered.route, w.metered.start, w.info.dialect, name, &w.orig, &e);
                } else {
                    w.metered.route.error(&e.kind);
                    log::debug!("oneway request dropped: {e}");
                }
            }
        }
    }

    fn send(
        &self,
        conn: &ThriftUpstream,
        frame: impl FrameBytes,
        info: &FrameInfo,
        orig: OriginalSeq,
        Metered { route, start, deadline }: Metered,
    ) {
        let (ds, stats) = (&self.ds, &self.state.stats);
        stats.requests.set(stats.requests.get() + 1);
        if info.msg.msg_type == ONEWAY {
            stats.protocols.thrift.oneway.set(stats.protocols.thrift.oneway.get() + 1);
            bump(&route.no_reply);
            if route.logging() {
                route.log(&AccessEntry {
                    method: &frame[info.msg.name.clone()],
                    endpoint: &conn.peer,
                    outcome: "no_reply",
                    grpc_status: None,
                    latency_us: 0,
                    bytes_in: Some(frame.len() as u64),
                    bytes_out: None,
                });
            }
            conn.send(frame, info, None);
            return;
        }
        let name = ds.method_name(&frame[info.msg.name.clone()]);
        let req_len = frame.len() as u32;
        let pending = Pending {
            downstream: ds.clone(),
            orig,
            name,
            dialect: info.dialect,
            deadline,
            route,
            start,
            req_len,
            retries: 0,
        };
        ds.inflight.set(ds.inflight.get() + 1);
        conn.send(frame, info, Some(pending));
    }

    /// Answers a request the client got wrong, naming it if its header can be read.
    /// Counted as an error of the listener's unrouted requests (the frame is no request).
    fn protocol_error(&self, frame: &[u8], limits: &ThriftListener, err: &RequestError) {
        self.ds.meter.listener.unrouted.error(&err.kind);
        match parse_frame(&frame[..frame.len().min(PEEK_LIMIT)], limits.max_method_name) {
            Ok(info) => {
                let orig = OriginalSeq::capture(frame, &info);
                self.ds.send_error(info.dialect, &frame[info.msg.name.clone()], &orig, err);
            }
            Err(_) => {
                // Not even a header: a framed binary exception with an empty name is the most
                // any client can parse.
                let seq = OriginalSeq::from_parts(&[0, 0, 0, 0], None);
                encode_raw(&self.ds, ReplyFraming::Framed, Protocol::Binary, b"", &seq, err);
            }
        }
    }

    async fn reject_oversized(&mut self, len: usize, limits: &ThriftListener) {
        let (max, max_name) = (limits.max_frame_size.get(), limits.max_method_name);
        let stats = &self.state.stats;
        stats.protocols.thrift.oversized_frames.set(stats.protocols.thrift.oversized_frames.get() + 1);
        // Buffer just enough of the frame to read its header, never the whole frame.
        while self.buf.len() < PEEK_LIMIT && matches!(parse_frame(&self.buf, max_name), Err(ParseError::Incomplete)) {
            if !self.fill().await {
                break;
            }
        }
        let buf = std::mem::take(&mut self.buf);
        self.protocol_error(&buf, limits, &ErrorKind::FrameTooLarge { len, max }.into());
        self.linger(len.saturating_sub(buf.len()), std::time::Duration::from_secs(1)).await;
    }

    /// After refusing a frame: read and discard up to `budget` more bytes for at most
    /// `within`, so the client finishes writing and reads our answer (already queued, and
    /// written meanwhile) instead of getting a reset. Replies to its earlier requests still
    /// arrive: the connection closes only once they are written.
    async fn linger(&mut self, budget: usize, within: std::time::Duration) {
        let end = Instant::now() + within;
        let mut left = budget;
        while left > 0 {
            self.buf.clear();
            let read =
                read_more(&mut self.rd, &mut self.buf, self.ds.read_canceller.borrow().handle(), &mut self.read_hint);
            match monoio::time::timeout_at(end.into(), read).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }

    async fn reject_unframed(&mut self) {
        let stats = &self.state.stats;
        stats.protocols.thrift.unframed_rejected.set(stats.protocols.thrift.unframed_rejected.get() + 1);
        let hdr = loop {
            match parse_message(&self.buf, 0, 4096) {
                Ok(h) => break Some(h),
                Err(_) if self.buf.len() >= PEEK_LIMIT => break None,
                Err(crate::thrift::codec::message::MessageError::Invalid(_)) => break None,
                Err(_) => {
                    if !self.fill().await {
                        break None;
                    }
                }
            }
        };
        if let Some(h) = hdr {
            let seq = OriginalSeq::from_parts(&self.buf[h.seq_at..h.seq_at + h.seq_len], None);
            let err: RequestError = ErrorKind::Unsupported(Unsupported::UnframedTransport).into();
            self.ds.meter.listener.unrouted.error(&err.kind);
            encode_raw(&self.ds, ReplyFraming::Unframed, h.protocol, &self.buf[h.name.clone()], &seq, &err);
        }
        log::debug!("listener {}: unframed client rejected", self.listener);
    }
}

/// Queues an exception whose dialect is given by framing alone (before a frame was classified).
fn encode_raw(
    ds: &ThriftSession,
    framing: ReplyFraming,
    protocol: Protocol,
    name: &[u8],
    seq: &OriginalSeq,
    err: &RequestError,
) {
    let (kind, msg) = exception(err);
    let mut buf = BytesMut::new();
    encode_exception(&mut buf, framing, protocol, name, seq, kind, &msg);
    ds.stats.protocols.thrift.exceptions.set(ds.stats.protocols.thrift.exceptions.get() + 1);
    ds.out.push(buf);
}
