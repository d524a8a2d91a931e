//! The client side of the gRPC proxy: one task per downstream HTTP/2 connection. It reads
//! frames, keeps the HPACK decoder and flow-control state, opens a stream on a pooled
//! upstream connection for each request, and answers what goes wrong with a gRPC status or
//! an HTTP/2 error code. A sweeper task enforces deadlines and the zero-window stall limit.

mod drain;
mod preface;
mod sweep;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller, Splitable};

use self::drain::{Drain, DRAIN_PING};
use self::preface::refuse_non_h2;
use super::config::GrpcListener;
use super::conn::{Control, ControlLimits, Core, Side};
use super::errors::{reply, reset_code, GrpcReply};
use super::stream::{ClientEnd, Retry, Stream};
use super::upstream::{GrpcPool, GrpcUpstream};
use super::wire::{check_request, split_path, status_fields};
use crate::config::{HashKey, LbPolicy};
use crate::error::{ErrorKind, RequestError};
use crate::grpc::h2::block::{Block, BlockLimits};
use crate::grpc::h2::frame::{self, kind, settings::Settings, FrameError, Head, Reason, StreamId, HEAD_LEN};
use crate::grpc::h2::hpack::{DecodeError, HeaderList};
use crate::hosts::{hash_bytes, Host, RetryGuard};
use crate::io::{read_more, write_outbox, ReadHint};
use crate::local::{Budget, CatchUnwind, IdMap, Notify, StallMark, BUDGET};
use crate::metrics::{now_us, AccessEntry, CloseReason, ConnMeter};
use crate::route::{route, RouteKey};
use crate::stats::Stats;
use crate::worker::state::WorkerState;

/// Header table size we let clients use.
const HEADER_TABLE: usize = 4096;
/// How often a reader paused by the buffer budget looks again (besides being woken).
const BUDGET_RECHECK: Duration = Duration::from_millis(200);
pub struct GrpcSession {
    pub core: Core,
    streams: RefCell<IdMap<StreamId, Rc<Stream>>>,
    /// Highest stream id the client opened.
    max_seen: Cell<StreamId>,
    /// Stream ids below `max_seen` the state machine still tells apart (RFC 9113 §5.1).
    past: ClosedStreams,
    /// The last stream id named by our final GOAWAY (later GOAWAYs must not name more).
    goaway_last: Cell<Option<StreamId>>,
    state: Rc<WorkerState>,
    listener: Rc<str>,
    /// The listener's place in the config (`View::listener_index`).
    listener_index: usize,
    pub limits: GrpcListener,
    drain: Cell<Drain>,
    /// Wakes the sweeper: a stream got a deadline or started waiting on a zero window.
    pub sweeper: Notify,
    closed: Cell<bool>,
    /// Keeps this connection's streams on one upstream connection (`Member::SPREAD`).
    pub affinity: usize,
    /// The listener's metrics for this connection (bytes, close reason, unrouted streams).
    pub meter: Rc<ConnMeter>,
    /// The listener's `write_stall_timeout`, and what the stall check saw last.
    write_stall_timeout: Duration,
    stall: StallMark,
    /// The read buffer's partial frame, as counted in the worker's buffer budget.
    read_held: Cell<usize>,
}

thread_local! {
    /// Affinity keys, handed out in turn to this worker's downstream connections.
    static NEXT_AFFINITY: Cell<usize> = const { Cell::new(0) };
}

/// The task that serves one gRPC client connection (it registers itself with the worker once
/// the HTTP/2 preface is in).
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
    serve_grpc(stream, listener, state.clone(), meter)
}

/// Serves one downstream connection until it closes.
async fn serve_grpc<S>(stream: S, listener: Rc<str>, state: Rc<WorkerState>, meter: Rc<ConnMeter>)
where
    S: Splitable + 'static,
    S::OwnedRead: CancelableAsyncReadRent + 'static,
    S::OwnedWrite: CancelableAsyncWriteRent + 'static,
{
    let (limits, max_write_buffer, listener_index, write_stall_timeout) = {
        let view = state.view();
        let Some(index) = view.listener_index(&listener) else { return };
        let lc = &view.snapshot.config.listeners[index];
        let Some(g) = lc.protocol.grpc() else { return };
        (*g, lc.max_write_buffer.get(), index, lc.write_stall_timeout)
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let mut hint = ReadHint::new(4096);

    // The preface, or an answer to whatever else came.
    loop {
        let n = buf.len().min(frame::PREFACE.len());
        if buf[..n] != frame::PREFACE[..n] {
            meter.closing(CloseReason::ProtocolError);
            return refuse_non_h2(&buf, &mut wr, &state, &listener).await;
        }
        if n == frame::PREFACE.len() {
            break;
        }
        match read_more(&mut rd, &mut buf, Canceller::new().handle(), &mut hint).await {
            Ok(0) | Err(_) => return,
            Ok(n) => meter.read(n),
        }
    }
    let _ = buf.split_to(frame::PREFACE.len());

    let conn = Rc::new(GrpcSession {
        core: Core::new(
            Side::Client,
            max_write_buffer,
            limits.initial_connection_window,
            limits.initial_stream_window,
            HEADER_TABLE,
            ControlLimits::client(&limits),
            state.stats.clone(),
        )
        .metered(meter.listener.clone()),
        streams: RefCell::new(IdMap::default()),
        max_seen: Cell::new(StreamId::ZERO),
        past: ClosedStreams::default(),
        goaway_last: Cell::new(None),
        state: state.clone(),
        listener,
        listener_index,
        limits,
        drain: Cell::new(Drain::Open),
        sweeper: Notify::default(),
        closed: Cell::new(false),
        affinity: NEXT_AFFINITY.with(|n| n.replace(n.get().wrapping_add(1))),
        meter,
        write_stall_timeout,
        stall: StallMark::default(),
        read_held: Cell::new(0),
    });
    let mut opening = BytesMut::with_capacity(64);
    let ours = Settings {
        max_concurrent_streams: Some(limits.max_concurrent_streams),
        initial_window_size: Some(limits.initial_stream_window),
        max_header_list_size: Some(limits.max_header_list_size),
        enable_push: Some(false),
        ..Settings::default()
    };
    conn.core.opening(&ours, &mut opening);
    conn.core.push(opening);

    let id = state.register(conn.clone());
    // Every task of the connection runs under CatchUnwind: monoio does not catch panics, and
    // one connection's bug must not take the worker down.
    let c = conn.clone();
    monoio::spawn(async move {
        let _ = CatchUnwind::new(write_outbox(&mut wr, &c.core.out)).await;
        // The client stopped reading or the connection ended: stop reading too.
        c.core.cancel_reader();
    });
    let c = conn.clone();
    monoio::spawn(async move {
        if CatchUnwind::new(c.clone().sweep()).await.is_err() {
            c.panicked("sweeper");
        }
    });
    let c = conn.clone();
    monoio::spawn(async move {
        if CatchUnwind::new(c.clone().unpark_on_drain()).await.is_err() {
            c.panicked("writer wake-up");
        }
    });

    if CatchUnwind::new(conn.read_loop(&mut rd, buf, hint)).await.is_err() {
        conn.panicked("reader");
    }
    BUDGET.with(|b| b.update(&conn.read_held, 0));
    if CatchUnwind::new(async { conn.shutdown() }).await.is_err() {
        conn.panicked("shutdown");
    }
    state.deregister(id);
}

impl GrpcSession {
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    fn panicked(&self, task: &str) {
        self.meter.closing(CloseReason::Panic);
        let stats = self.stats();
        stats.panics.set(stats.panics.get() + 1);
        log::error!("listener {}: gRPC connection {task} panicked; connection closed", self.listener);
        self.closed.set(true);
        self.core.out.close();
        self.core.cancel_reader();
    }

    /// The writer took what was queued: streams held back by a full queue may go on.
    async fn unpark_on_drain(self: Rc<Self>) {
        // Checked before each wait too: a connection shut down before this task first ran
        // has had its last drain already, and waiting for another would hold it forever.
        while !(self.closed.get() && self.streams.borrow().is_empty()) {
            self.core.drained.notified().await;
            if self.closed.get() && self.streams.borrow().is_empty() {
                return;
            }
            if self.core.has_parked() {
                self.core.unpark_all();
            }
        }
    }

    pub(super) fn limits_write_stall(&self) -> Duration {
        self.write_stall_timeout
    }

    fn block_limits(&self) -> BlockLimits {
        BlockLimits {
            max_block: self.limits.max_header_list_size as usize,
            max_continuations: self.limits.max_continuation_frames,
        }
    }

    async fn read_loop<R: CancelableAsyncReadRent>(self: &Rc<Self>, rd: &mut R, mut buf: BytesMut, mut hint: ReadHint) {
        let mut first = true;
        loop {
            // Backpressure: a client that does not read its answers (or floods requests that
            // are answered at once) stops being read once its write queue is full.
            while self.core.out.queued_bytes() > self.core.out_limit && !self.closed.get() {
                self.core.drained.notified().await;
            }
            if self.closed.get() {
                return;
            }
            loop {
                let next = match frame::cut(&mut buf, frame::MIN_MAX_FRAME_SIZE) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    // The oversized frame is still in the buffer: nothing after it can be read.
                    Err(FrameError::Connection(r, why) | FrameError::Stream(_, r, why)) => {
                        return self.conn_error(r, why);
                    }
                };
                if first && next.0.kind != kind::SETTINGS {
                    return self.conn_error(Reason::PROTOCOL_ERROR, "the preface must be followed by SETTINGS");
                }
                first = false;
                if let Err(e) = self.on_frame(next.0, next.1) {
                    if !self.frame_error(e) {
                        return;
                    }
                }
                if self.closed.get() {
                    return;
                }
            }
            BUDGET.with(|b| b.update(&self.read_held, buf.len()));
            if !self.wait_for_budget(buf.len()).await {
                return;
            }
            let handle = self.core.read_handle();
            match read_more(rd, &mut buf, handle, &mut hint).await {
                Ok(0) | Err(_) => return,
                Ok(n) => self.meter.read(n),
            }
        }
    }

    /// Over the worker's buffer memory, a client holding more than its share (a partial
    /// frame, responses it has not read) is not read until the worker is under again; false
    /// if the connection closed meanwhile.
    async fn wait_for_budget(&self, partial: usize) -> bool {
        let mine = || partial + self.core.out.held_bytes();
        if !BUDGET.with(|b| b.should_pause(mine(), self.state.conn_count())) {
            return true;
        }
        let stats = self.stats();
        stats.buffer_paused_reads.set(stats.buffer_paused_reads.get() + 1);
        while BUDGET.with(|b| b.should_pause(mine(), self.state.conn_count())) {
            if self.closed.get() {
                return false;
            }
            let _ = monoio::time::timeout(BUDGET_RECHECK, Budget::under()).await;
        }
        true
    }

    /// Handles a frame error; false when the connection is over.
    fn frame_error(self: &Rc<Self>, e: FrameError) -> bool {
        match e {
            FrameError::Connection(r, why) => {
                self.conn_error(r, why);
                false
            }
            FrameError::Stream(id, r, why) => {
                log::debug!("listener {}: stream {id}: {r}: {why}", self.listener);
                match self.stream(id) {
                    Some(s) => {
                        s.count_error(&ErrorKind::Malformed(why));
                        s.reset(Some(r), Some(Reason::CANCEL));
                    }
                    // A stream error on an idle id can only be a bad PRIORITY frame (every
                    // other frame there is a connection error): the RST_STREAM closes it.
                    None => self.core.write_rst(id, r),
                }
                if !self.core.take_budget() {
                    self.conn_error(Reason::ENHANCE_YOUR_CALM, "too many stream errors");
                    return false;
                }
                true
            }
        }
    }

    fn conn_error(&self, r: Reason, why: &str) {
        log::debug!("listener {}: connection error {r}: {why}", self.listener);
        if r == Reason::ENHANCE_YOUR_CALM {
            self.stats().protocols.grpc.calm.set(self.stats().protocols.grpc.calm.get() + 1);
            self.meter.closing(CloseReason::AbuseLimit);
        } else {
            self.meter.closing(CloseReason::ProtocolError);
        }
        self.core.go_away(self.last_stream(), r, why);
        self.closed.set(true);
    }

    fn stream(&self, id: StreamId) -> Option<Rc<Stream>> {
        self.streams.borrow().get(&id).cloned()
    }

    fn all_streams(&self) -> Vec<Rc<Stream>> {
        self.streams.borrow().values().cloned().collect()
    }

    /// A stream ended: forget it (and close if a drain is waiting for that).
    pub fn forget(&self, id: StreamId, client_done: bool) {
        self.streams.borrow_mut().remove(&id);
        if client_done {
            self.past.client_ended(id);
        }
        self.close_if_drained();
    }

    /// A new stream id: every idle id below it that the client skipped is closed now.
    fn open_id(&self, id: StreamId) {
        let last = self.max_seen.replace(id);
        if id.get() > last.get() + 2 {
            self.past.skipped(StreamId::new(last.get() + 1), id);
        }
    }

    /// The connection is over: every open stream is cancelled upstream.
    fn shutdown(self: &Rc<Self>) {
        self.closed.set(true);
        let cancelled = reset_code(&ErrorKind::Cancelled.into());
        for s in self.all_streams() {
            s.count_error(&ErrorKind::Cancelled);
            s.reset(None, Some(cancelled));
        }
        self.core.out.close();
        self.sweeper.notify_all();
        self.core.drained.notify_all();
        self.core.clear_parked();
    }

    pub fn open_streams(&self) -> usize {
        self.streams.borrow().len()
    }

    fn on_frame(self: &Rc<Self>, head: Head, frame: BytesMut) -> Result<(), FrameError> {
        self.core.check_block_order(&head)?;
        match head.kind {
            kind::DATA => return self.on_data(head, frame),
            kind::HEADERS | kind::CONTINUATION => {
                return match self.core.header_frame(&head, frame, self.block_limits())? {
                    Some(b) => self.on_block(b),
                    None => Ok(()),
                };
            }
            _ => {}
        }
        match self.core.control_frame(&head, &frame[HEAD_LEN..])? {
            Control::Done => Ok(()),
            Control::Reset { stream, reason } => self.on_rst(stream, reason),
            Control::Settings { delta } => {
                let streams = if delta != 0 { self.all_streams() } else { Vec::new() };
                Stream::shift_all(&self.core, streams, Side::Client, delta)?;
                self.core.settings_done(delta)
            }
            Control::PushPromise => {
                Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "a client must not send PUSH_PROMISE"))
            }
            Control::PingAck(data) => {
                if data == DRAIN_PING {
                    self.final_goaway();
                }
                Ok(())
            }
            Control::GoAway { reason, debug, .. } => {
                if reason != Reason::NO_ERROR {
                    log::debug!(
                        "listener {}: client GOAWAY {}: {}",
                        self.listener,
                        reason,
                        String::from_utf8_lossy(&debug)
                    );
                }
                Ok(())
            }
            Control::StreamWindow { stream, inc } => match self.stream(stream) {
                Some(s) => s.on_client_window(inc).map_err(|r| FrameError::Stream(stream, r.reason, r.why)),
                None if stream > self.max_seen.get() => {
                    Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"))
                }
                None => Ok(()),
            },
        }
    }

    fn on_data(self: &Rc<Self>, head: Head, frame: BytesMut) -> Result<(), FrameError> {
        let d = frame::data::parse(&head, &frame[HEAD_LEN..])?;
        self.core.on_data_received(d.flow_len, d.end_stream)?;
        let Some(s) = self.stream(head.stream) else {
            self.core.credit(d.flow_len);
            if head.stream > self.max_seen.get() {
                return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            if self.past.by_client(head.stream) {
                return Err(FrameError::Stream(head.stream, Reason::STREAM_CLOSED, "DATA on a closed stream"));
            }
            return Ok(()); // a stream we reset (its late frames are ignored) or long closed
        };
        s.on_request_data(frame, d.data, d.flow_len, d.end_stream)
            .map_err(|r| FrameError::Stream(head.stream, r.reason, r.why))
    }

    fn on_rst(self: &Rc<Self>, id: StreamId, r: Reason) -> Result<(), FrameError> {
        if id > self.max_seen.get() {
            return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
        }
        if !self.core.take_budget() {
            return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many stream resets"));
        }
        if let Some(s) = self.stream(id) {
            // Closed by the client: what it sends on this id from now on is an error.
            self.past.client_ended(id);
            self.stats().protocols.grpc.cancelled.set(self.stats().protocols.grpc.cancelled.get() + 1);
            let cancelled = reset_code(&ErrorKind::Cancelled.into());
            s.count_error(&ErrorKind::Cancelled);
            s.reset(None, Some(if r == Reason::NO_ERROR { cancelled } else { r }));
        }
        Ok(())
    }

    fn on_block(self: &Rc<Self>, b: Block) -> Result<(), FrameError> {
        let mut list = HeaderList::new();
        let decoded = self.core.dec.borrow_mut().decode(&b.block, self.limits.max_header_list_size as usize, &mut list);
        let too_large = match decoded {
            Ok(()) => false,
            Err(DecodeError::ListTooLarge) => true,
            Err(DecodeError::Compression(why)) => {
                return Err(FrameError::Connection(Reason::COMPRESSION_ERROR, why));
            }
        };
        let id = b.stream;
        let self_dependent = self.core.took_self_dependency(id);
        if let Some(s) = self.stream(id) {
            // Trailers from the client.
            if self_dependent {
                return Err(FrameError::Stream(id, Reason::PROTOCOL_ERROR, "stream depends on itself"));
            }
            if too_large || !b.end_stream {
                return Err(FrameError::Stream(id, Reason::PROTOCOL_ERROR, "bad request trailers"));
            }
            return s.on_request_trailers(list).map_err(|r| FrameError::Stream(id, r.reason, r.why));
        }
        if !id.is_client_initiated() {
            return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "even stream id from a client"));
        }
        if id <= self.max_seen.get() {
            // The block was decoded (HPACK stays in sync). On a stream the client had ended,
            // or an id it skipped, it is an error (RFC 9113 §5.1, §5.1.1); on a stream we
            // reset, a late frame, ignored.
            if self.past.by_client(id) {
                return Err(FrameError::Connection(Reason::STREAM_CLOSED, "HEADERS on a closed stream"));
            }
            if self.past.was_skipped(id) {
                return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "stream id lower than one already opened"));
            }
            return Ok(());
        }
        self.open_id(id);
        if self_dependent {
            return Err(FrameError::Stream(id, Reason::PROTOCOL_ERROR, "stream depends on itself"));
        }
        // Streams refused before routing count as errors of the listener's unrouted requests.
        let unrouted = &self.meter.listener.unrouted;
        if self.drain.get() == Drain::Final || self.closed.get() {
            unrouted.error(&ErrorKind::Draining);
            self.core.write_rst(id, reset_code(&ErrorKind::Draining.into()));
            return Ok(());
        }
        if BUDGET.with(Budget::is_over) {
            // Over the worker's buffer memory: refused at once, before it takes any more.
            let err = ErrorKind::MemoryBudget.into();
            unrouted.error(&ErrorKind::MemoryBudget);
            self.reply_error(id, b.end_stream, &err);
            return Ok(());
        }
        if self.streams.borrow().len() >= self.limits.max_concurrent_streams as usize {
            unrouted.error(&ErrorKind::TooManyStreams);
            let refused = reset_code(&ErrorKind::TooManyStreams.into());
            return Err(FrameError::Stream(id, refused, "over SETTINGS_MAX_CONCURRENT_STREAMS"));
        }
        if too_large {
            let err = ErrorKind::HeadersTooLarge { max: self.limits.max_header_list_size }.into();
            self.reply_error(id, b.end_stream, &err);
            return Ok(());
        }
        let info = check_request(&list)
            .and_then(|info| match info.content_length {
                Some(n) if n > 0 && b.end_stream => Err("content-length without DATA"),
                _ => Ok(info),
            })
            .map_err(|why| {
                unrouted.error(&ErrorKind::Malformed(why));
                FrameError::Stream(id, Reason::PROTOCOL_ERROR, why)
            })?;
        let path = list.iter().nth(info.path).map(|f| f.value).unwrap_or_default();
        let now = Instant::now();
        let start = now_us();
        let view = self.state.view();
        let (routes, metrics) = view.route_table(self.listener_index);
        let routed = split_path(path).and_then(|(service, method)| {
            let key = RouteKey { method, services: [Some(service), None, None] };
            route(routes, &key)
        });
        let Some(ri) = routed else {
            let stats = self.stats();
            stats.no_route.set(stats.no_route.get() + 1);
            let unrouted = &self.meter.listener.unrouted;
            unrouted.request(0);
            let err: RequestError = ErrorKind::NoRoute { target: String::from_utf8_lossy(path).into_owned() }.into();
            self.reply_error(id, b.end_stream, &err);
            let latency = now_us().saturating_sub(start);
            unrouted.observe(latency);
            if unrouted.logging() {
                unrouted.log(&AccessEntry {
                    method: path,
                    endpoint: "",
                    outcome: err.kind.label(),
                    grpc_status: match reply(&err) {
                        GrpcReply::Status(code, _) => Some(code as u32),
                        GrpcReply::Reset(_) => None,
                    },
                    latency_us: latency,
                    bytes_in: None,
                    bytes_out: None,
                });
            }
            return Ok(());
        };
        let rm = metrics[ri].clone();
        rm.request(0);
        let cluster = view.clusters[routes[ri].cluster].clone();
        drop(view);
        let deadline = info.timeout.map(|t| now + t);
        let hash = match &cluster.config.lb {
            LbPolicy::Hash(HashKey::Header(name)) => {
                let field = list.iter().find(|f| f.name == name.as_bytes()).map(|f| f.value);
                hash_bytes(field.unwrap_or(path))
            }
            LbPolicy::Hash(HashKey::Method) => hash_bytes(path),
            _ => 0,
        };
        let stream = Rc::new(Stream::new(self.clone(), id, list, b.end_stream, deadline, rm, start));
        if let Some(n) = info.content_length {
            stream.expect_request_length(n);
        }
        self.streams.borrow_mut().insert(id, stream.clone());
        if deadline.is_some() {
            self.sweeper.notify_all();
        }
        let stats = self.stats();
        stats.requests.set(stats.requests.get() + 1);
        let pool = cluster.pool::<GrpcUpstream>(0);
        let wait = cluster.config.connect_timeout.max(cluster.config.request_timeout);
        if pool.retries() > 0 {
            let until = now + wait;
            let retry =
                PoolRetry { conn: self.clone(), pool: pool.clone(), hash, until, left: Cell::new(pool.retries()) };
            stream.set_retry(Rc::new(retry));
        }
        match pool.try_acquire(self.affinity, hash) {
            Some(up) => stream.open_upstream(up),
            None => self.clone().open_later(stream, pool, hash, Instant::now() + wait, None, None),
        }
        Ok(())
    }

    /// Opens `stream` once the pool has a connection for it (the slow path, and retries),
    /// in a task of its own.
    fn open_later(
        self: Rc<Self>,
        stream: Rc<Stream>,
        pool: Rc<GrpcPool>,
        hash: u64,
        until: Instant,
        avoid: Option<Rc<Host>>,
        retry: Option<RetryGuard>,
    ) {
        let affinity = self.affinity;
        monoio::spawn(async move {
            let waiting = open_when_ready(stream, pool, affinity, hash, until, avoid);
            if CatchUnwind::new(waiting).await.is_err() {
                self.panicked("upstream wait");
            }
            drop(retry);
        });
    }

    /// Answers a stream that never reached an upstream: a Trailers-Only status (then
    /// RST_STREAM(NO_ERROR) if the client is still sending), or the reset the table gives.
    /// Counted on the listener's unrouted streams.
    fn reply_error(&self, id: StreamId, end_stream: bool, err: &RequestError) {
        let unrouted = &self.meter.listener.unrouted;
        unrouted.error(&err.kind);
        match reply(err) {
            GrpcReply::Status(code, msg) => {
                unrouted.status(code as u32);
                let mut fields = HeaderList::new();
                status_fields(&mut fields, true, code, &msg);
                self.core.write_headers(id, fields.iter(), true);
                if !end_stream {
                    self.core.write_rst(id, Reason::NO_ERROR);
                }
            }
            GrpcReply::Reset(r) => self.core.write_rst(id, r),
        }
        self.stats().protocols.grpc.errors.set(self.stats().protocols.grpc.errors.get() + 1);
    }
}

impl ClientEnd for GrpcSession {
    fn core(&self) -> &Core {
        &self.core
    }

    fn forget(&self, id: StreamId, client_done: bool) {
        GrpcSession::forget(self, id, client_done)
    }

    fn wake_sweeper(&self) {
        self.sweeper.notify_all();
    }

    fn stats(&self) -> &Stats {
        &self.state.stats
    }
}

/// Waits for an upstream connection with a free stream slot (connecting if the pool may),
/// then opens the stream there; a failure ends the call with UNAVAILABLE.
async fn open_when_ready(
    stream: Rc<Stream>,
    pool: Rc<GrpcPool>,
    affinity: usize,
    hash: u64,
    until: Instant,
    avoid: Option<Rc<Host>>,
) {
    let got = pool.acquire(until, affinity, hash, avoid.as_deref()).await;
    if stream.is_closed() {
        return;
    }
    match got {
        Ok(up) => stream.open_upstream(up),
        Err(e) => stream.fail(&e),
    }
}

/// Retries of one stream the upstream refused before processing it: through the same pool,
/// away from the endpoint that refused, at most `retries` times and within the cluster's
/// retry budget, until the stream's wait for a connection runs out.
struct PoolRetry {
    conn: Rc<GrpcSession>,
    pool: Rc<GrpcPool>,
    hash: u64,
    until: Instant,
    left: Cell<u32>,
}

impl Retry for PoolRetry {
    fn retry(&self, stream: Rc<Stream>, refused_by: Option<Rc<Host>>) -> bool {
        if self.left.get() == 0 || Instant::now() >= self.until {
            return false;
        }
        let Some(guard) = self.pool.begin_retry() else { return false };
        self.left.set(self.left.get() - 1);
        let pool = self.pool.clone();
        self.conn.clone().open_later(stream, pool, self.hash, self.until, refused_by, Some(guard));
        true
    }
}

/// How many ids the client ended are remembered (their late DATA or HEADERS are errors).
const CLOSED_REMEMBERED: usize = 16;

/// What a session remembers of stream ids below the highest one opened, to answer frames
/// on them as RFC 9113 §5.1 says: the last few streams the client ended (END_STREAM or
/// RST_STREAM: a later DATA is a stream error STREAM_CLOSED, HEADERS a connection error),
/// and the last run of ids it skipped (closed without being opened: HEADERS there is a
/// PROTOCOL_ERROR). Any other closed id is one we reset or one long gone: its late frames are
/// ignored, as the RFC asks after a RST_STREAM of ours. Fixed size: no allocation per stream.
#[derive(Default)]
struct ClosedStreams {
    ended: Cell<[u32; CLOSED_REMEMBERED]>,
    next: Cell<usize>,
    /// Ids in `skipped.0 .. skipped.1` (odd ones) were never opened.
    skipped: Cell<(u32, u32)>,
}

impl ClosedStreams {
    fn client_ended(&self, id: StreamId) {
        let mut ended = self.ended.get();
        if ended.contains(&id.get()) {
            return;
        }
        let i = self.next.get();
        ended[i] = id.get();
        self.ended.set(ended);
        self.next.set((i + 1) % CLOSED_REMEMBERED);
    }

    fn by_client(&self, id: StreamId) -> bool {
        !id.is_zero() && self.ended.get().contains(&id.get())
    }

    fn skipped(&self, from: StreamId, to: StreamId) {
        self.skipped.set((from.get(), to.get()));
    }

    fn was_skipped(&self, id: StreamId) -> bool {
        let (from, to) = self.skipped.get();
        (from..to).contains(&id.get())
    }
}

#[cfg(test)]
mod tests {
    use super::{ClosedStreams, CLOSED_REMEMBERED};
    use crate::grpc::h2::frame::StreamId;

    #[test]
    fn closed_streams_remember_what_the_client_ended_and_skipped() {
        let c = ClosedStreams::default();
        assert!(!c.by_client(StreamId::new(1)) && !c.by_client(StreamId::ZERO));
        c.client_ended(StreamId::new(1));
        c.client_ended(StreamId::new(1)); // once
        assert!(c.by_client(StreamId::new(1)));
        // The oldest is forgotten once more streams ended than are remembered.
        for i in 0..CLOSED_REMEMBERED as u32 {
            c.client_ended(StreamId::new(3 + 2 * i));
        }
        assert!(!c.by_client(StreamId::new(1)));
        assert!(c.by_client(StreamId::new(3 + 2 * (CLOSED_REMEMBERED as u32 - 1))));
        c.skipped(StreamId::new(1), StreamId::new(7));
        assert!(c.was_skipped(StreamId::new(3)) && c.was_skipped(StreamId::new(5)));
        assert!(!c.was_skipped(StreamId::new(7)) && !c.was_skipped(StreamId::new(9)));
    }
}
