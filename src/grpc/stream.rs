//! One proxied gRPC call: a client stream mapped onto a stream of a pooled upstream
//! connection. `StreamState` is private: the two connection sides tell a stream what arrived
//! (`on_request_*` from the client side, `on_response_*` from the upstream side) and the stream
//! enforces the rules of its two directions (RFC 9113 §5.1 order of HEADERS, DATA and
//! END_STREAM, stream windows), forwards what it may, and answers with the error a side turns
//! into RST_STREAM. The connections it lives on are reached through [`ClientEnd`] and
//! [`UpstreamEnd`], so this file depends on neither side.

mod flow;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use self::flow::{flush, queue_data, Dir, Hop, Item};
use super::conn::{Core, Parked, Side};
use super::errors::{reply, GrpcReply};
use super::wire::{check_response, check_trailers, encode_timeout, status_fields};
use crate::error::{ErrorKind, RequestError};
use crate::grpc::h2::frame::{FrameError, Reason, StreamId, HEAD_LEN, MAX_WINDOW};
use crate::grpc::h2::hpack::{Field, HeaderList};
use crate::metrics::{bump, now_us, AccessEntry, RouteMetrics};
use crate::stats::Stats;
use crate::worker::hold::InFlight;

/// What a stream needs of the client connection it arrived on.
pub trait ClientEnd {
    fn core(&self) -> &Core;
    /// The stream ended: forget it (the connection may close if a drain waits for that).
    /// The stream ended; `client_done`: the client had ended its side (END_STREAM), so any
    /// later DATA or HEADERS from it on this id is an error (RFC 9113 §5.1).
    fn forget(&self, id: StreamId, client_done: bool);
    /// A stream started waiting on a window: the sweeper should look (stall limit).
    fn wake_sweeper(&self);
    fn stats(&self) -> &Stats;
}

/// What a stream needs of the upstream connection it is opened on.
pub trait UpstreamEnd {
    fn core(&self) -> &Core;
    /// Allocates the next stream id for `stream` (called right before its HEADERS are queued).
    fn register(&self, stream: Rc<Stream>) -> StreamId;
    /// The stream ended: its slot is free.
    fn forget(&self, id: StreamId);
    /// The endpoint it is connected to (access log).
    fn peer(&self) -> &str {
        ""
    }
    /// The stream ended with the upstream's `status` (or the proxy's `failed` kind): counts
    /// for the endpoint's outlier detection.
    fn finished(&self, _status: Option<u32>, _failed: Option<&'static str>) {}
    /// The endpoint it is connected to (a retry goes elsewhere).
    fn host(&self) -> Option<Rc<crate::hosts::Host>> {
        None
    }
}

/// How a stream the upstream refused before answering (REFUSED_STREAM, or a GOAWAY above
/// its id: nothing of it was processed) is opened again elsewhere. The client side sets it;
/// it knows the pool.
pub trait Retry {
    /// Whether a retry may start now (retries left, the cluster's budget); if so, opens
    /// `stream` again through the pool, away from `refused_by` when there is another endpoint.
    fn retry(&self, stream: Rc<Stream>, refused_by: Option<Rc<crate::hosts::Host>>) -> bool;
}

/// Request DATA kept for a replay at most (a larger request is not retried).
const REPLAY_MAX: usize = 64 << 10;

/// A frame a stream refused: the side resets the stream with `reason` (RFC 9113 §5.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub why: &'static str,
}

const fn refused(reason: Reason, why: &'static str) -> Refused {
    Refused { reason, why }
}

/// DATA on a stream the client already ended (half-closed remote: RFC 9113 §5.1).
const DATA_AFTER_END: Refused = refused(Reason::STREAM_CLOSED, "DATA after END_STREAM");
/// DATA from an upstream before its response headers or after its END_STREAM.
const DATA_OUT_OF_ORDER: Refused = refused(Reason::PROTOCOL_ERROR, "DATA before HEADERS or after END_STREAM");
/// DATA beyond what the stream window allowed.
const DATA_OVER_WINDOW: Refused = refused(Reason::FLOW_CONTROL_ERROR, "DATA beyond the stream window");

/// The `grpc-status` of a trailers list, if it has a valid one.
fn grpc_status(list: &HeaderList) -> Option<u32> {
    let f = list.iter().find(|f| f.name == b"grpc-status")?;
    match f.value {
        [d @ b'0'..=b'9'] => Some((d - b'0') as u32),
        [a @ b'1'..=b'9', b @ b'0'..=b'9'] => Some(((a - b'0') * 10 + (b - b'0')) as u32),
        _ => None,
    }
}

/// What the sweeper should do about a stream now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Its deadline passed: fail it with DEADLINE_EXCEEDED.
    Expired,
    /// Data waited on a zero window longer than the stall limit: reset it.
    Stalled,
    /// Nothing yet; look again at this instant (if any).
    Later(Option<Instant>),
}

struct StreamState {
    up: Option<Rc<dyn UpstreamEnd>>,
    up_id: StreamId,
    /// Client → upstream.
    req: Dir,
    /// Upstream → client.
    resp: Dir,
    /// The upstream sent its response headers (a later HEADERS is trailers).
    resp_headers_seen: bool,
    /// Response headers went to the client (an error now needs trailers, not Trailers-Only).
    resp_headers_sent: bool,
    deadline: Option<Instant>,
    /// The request headers, until the stream is opened upstream.
    request: Option<(HeaderList, bool)>,
    closed: bool,
    /// The upstream ended the call early (trailers, then RST_STREAM(NO_ERROR)): once the
    /// trailers reach the client, tell a client still sending to stop.
    rst_client_after_trailers: bool,
    /// The `grpc-status` of the upstream's trailers (or Trailers-Only response).
    status: Option<u32>,
    /// The stream's outcome was counted as an error (else it ends as forwarded): its label.
    failed: Option<&'static str>,
    /// How to retry it if the upstream refuses it; dropped once a response arrives.
    retry: Option<Rc<dyn Retry>>,
    /// The request headers as sent upstream, and the request DATA so far (up to
    /// `REPLAY_MAX`), while a retry is possible.
    replay: Option<(HeaderList, bool)>,
    replay_data: Option<BytesMut>,
}

pub struct Stream {
    down: Rc<dyn ClientEnd>,
    /// The client's stream id.
    pub down_id: StreamId,
    st: RefCell<StreamState>,
    /// Counts towards the worker's event coalescing while the stream lives.
    _in_flight: InFlight,
    /// The route it took, and when its headers were read (metrics).
    route: Rc<RouteMetrics>,
    start: u64,
    /// The request's path, kept only when the route's listener has an access log.
    path: Option<Box<[u8]>>,
}

impl Stream {
    /// A stream the client opened with `request` (END_STREAM with it: `end_stream`), not yet
    /// on an upstream connection.
    pub fn new(
        down: Rc<dyn ClientEnd>,
        down_id: StreamId,
        request: HeaderList,
        end_stream: bool,
        deadline: Option<Instant>,
        route: Rc<RouteMetrics>,
        start: u64,
    ) -> Stream {
        let recv = down.core().stream_window;
        let mut req = Dir::new(recv);
        req.end_received = end_stream;
        let mut resp = Dir::new(0);
        resp.send_window = down.core().peer.initial_window.get() as i64;
        Stream {
            down,
            down_id,
            _in_flight: InFlight::new(),
            path: route
                .logging()
                .then(|| request.iter().find(|f| f.name == b":path").map(|f| f.value).unwrap_or_default().into()),
            route,
            start,
            st: RefCell::new(StreamState {
                up: None,
                up_id: StreamId::ZERO,
                req,
                resp,
                resp_headers_seen: false,
                resp_headers_sent: false,
                deadline,
                request: Some((request, end_stream)),
                closed: false,
                rst_client_after_trailers: false,
                status: None,
                failed: None,
                retry: None,
                replay: None,
                replay_data: None,
            }),
        }
    }

    /// Opens the stream on `up`: allocates the upstream stream id and writes the request
    /// headers in the same step (ids reach the wire in increasing order), with `grpc-timeout`
    /// reduced by the time already spent; then forwards whatever DATA is queued.
    pub fn open_upstream(self: &Rc<Self>, up: Rc<dyn UpstreamEnd>) {
        let mut st = self.st.borrow_mut();
        let Some((request, end)) = st.request.take() else { return };
        let id = up.register(self.clone());
        st.req.send_window = up.core().peer.initial_window.get() as i64;
        st.resp.recv_window = up.core().stream_window as i64;
        st.up_id = id;
        let left = st.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = left.map(encode_timeout);
        let fields = request.iter().map(|f| match (&timeout, f.name) {
            (Some(t), b"grpc-timeout") => Field { value: t.as_bytes(), ..f },
            _ => f,
        });
        up.core().write_headers(id, fields, end);
        if end {
            st.req.end_sent = true;
        }
        if st.retry.is_some() {
            st.replay = Some((request, end));
        }
        st.up = Some(up);
        drop(st);
        self.flush_req();
    }

    /// The request announced `content-length: n`: its DATA must add up to it.
    pub fn expect_request_length(&self, n: u64) {
        self.st.borrow_mut().req.content_left = Some(n);
    }

    /// Lets the stream be retried through `retry` while nothing came back from the upstream.
    pub fn set_retry(&self, retry: Rc<dyn Retry>) {
        let mut st = self.st.borrow_mut();
        st.retry = Some(retry);
        st.replay_data = Some(BytesMut::new());
    }

    /// The upstream refused the stream before processing it (REFUSED_STREAM, or a GOAWAY
    /// above its id). A request whose bytes so far were kept (at most `REPLAY_MAX`, no
    /// trailers) and that got no response yet goes to another upstream connection (`Retry`),
    /// what the client sends later following it; true if it did. The
    /// refused upstream stream is dropped without a reset (it is closed already).
    pub fn refused(self: &Rc<Self>) -> bool {
        let st = self.st.borrow();
        let replayable = !st.closed
            && !st.resp_headers_seen
            && st.failed.is_none()
            && st.replay.is_some()
            && st.replay_data.is_some();
        let Some(retry) = st.retry.clone().filter(|_| replayable) else { return false };
        let up = st.up.clone();
        drop(st);
        if !retry.retry(self.clone(), up.as_deref().and_then(|u| u.host())) {
            return false;
        }
        let mut st = self.st.borrow_mut();
        let up = st.up.take();
        let up_id = std::mem::replace(&mut st.up_id, StreamId::ZERO);
        // What was still queued for the refused upstream was never given back to the client:
        // give it back now, as the replay below is marked given back.
        let queued = st.req.queued_bytes();
        st.req.queue.clear();
        st.req.end_sent = false;
        st.req.send_window = 0;
        st.req.blocked_since = None;
        let data = st.replay_data.clone().unwrap_or_default();
        let (request, headers_end) = st.replay.take().expect("checked above");
        // What the client sent so far; the rest follows as it arrives (and is kept too).
        let end = st.req.end_received;
        if !headers_end && (end || !data.is_empty()) {
            st.req.queue.push_back(Item::Data { buf: data, head_room: false, end, credited: true });
        }
        st.request = Some((request, headers_end));
        // ... and, while the client still sends, its stream window for them too.
        let stream_credit = (!end && queued > 0).then_some(queued);
        if let Some(n) = stream_credit {
            st.req.recv_window += n as i64;
        }
        drop(st);
        let down = self.down.core();
        down.credit(queued);
        if let Some(n) = stream_credit {
            down.write_window_update(self.down_id, n as u32);
        }
        if let Some(up) = up {
            up.forget(up_id);
        }
        true
    }

    // --- What the client sends ---

    /// DATA from the client (`frame` whole, head included; `data` the content within it). A
    /// refused frame's flow-controlled bytes are given back to the client at once.
    pub fn on_request_data(
        self: &Rc<Self>,
        frame: BytesMut,
        data: std::ops::Range<usize>,
        flow_len: usize,
        end: bool,
    ) -> Result<(), Refused> {
        self.on_data(Side::Client, frame, data, flow_len, end)
    }

    /// Trailers from the client (a header block with END_STREAM after the request headers).
    pub fn on_request_trailers(self: &Rc<Self>, list: HeaderList) -> Result<(), Refused> {
        let mut st = self.st.borrow_mut();
        if st.req.end_received {
            return Err(refused(Reason::STREAM_CLOSED, "HEADERS after END_STREAM"));
        }
        check_trailers(&list).map_err(|why| refused(Reason::PROTOCOL_ERROR, why))?;
        st.req.count_content(0, true).map_err(|why| refused(Reason::PROTOCOL_ERROR, why))?;
        st.req.end_received = true;
        // Trailers are not kept for a replay.
        st.replay_data = None;
        st.req.queue.push_back(Item::Headers(list, true));
        drop(st);
        self.flush_req();
        Ok(())
    }

    /// WINDOW_UPDATE from the client: more room for the response.
    pub fn on_client_window(self: &Rc<Self>, inc: u32) -> Result<(), Refused> {
        self.on_window(Side::Client, inc)
    }

    // --- What the upstream sends ---

    /// The response headers, or the trailers after them.
    pub fn on_response_headers(self: &Rc<Self>, list: HeaderList, end_stream: bool) -> Result<(), Refused> {
        let mut st = self.st.borrow_mut();
        let trailers = st.resp_headers_seen;
        if st.resp.end_received {
            return Err(refused(Reason::STREAM_CLOSED, "HEADERS after END_STREAM"));
        }
        let length = check_response(&list, trailers).map_err(|why| refused(Reason::PROTOCOL_ERROR, why))?;
        if trailers && !end_stream {
            return Err(refused(Reason::PROTOCOL_ERROR, "trailers without END_STREAM"));
        }
        if !trailers {
            st.resp.content_left = length;
        }
        if end_stream {
            st.resp.count_content(0, true).map_err(|why| refused(Reason::PROTOCOL_ERROR, why))?;
        }
        st.resp_headers_seen = true;
        // Answered: no retry from here on.
        st.retry = None;
        st.replay = None;
        st.replay_data = None;
        if end_stream {
            st.resp.end_received = true;
            st.status = grpc_status(&list);
        }
        st.resp.queue.push_back(Item::Headers(list, end_stream));
        drop(st);
        self.flush_resp();
        Ok(())
    }

    /// DATA from the upstream (see `on_request_data`).
    pub fn on_response_data(
        self: &Rc<Self>,
        frame: BytesMut,
        data: std::ops::Range<usize>,
        flow_len: usize,
        end: bool,
    ) -> Result<(), Refused> {
        self.on_data(Side::Upstream, frame, data, flow_len, end)
    }

    /// DATA from the connection on side `from`: refused when that direction's state forbids
    /// it (the client's after its END_STREAM; the upstream's before its response headers or
    /// after its END_STREAM) or when it overruns the stream window; else queued and forwarded.
    fn on_data(
        self: &Rc<Self>,
        from: Side,
        frame: BytesMut,
        data: std::ops::Range<usize>,
        flow_len: usize,
        end: bool,
    ) -> Result<(), Refused> {
        let mut st = self.st.borrow_mut();
        let up = st.up.clone();
        let (sender, refusal) = match from {
            Side::Client => (self.down.core(), st.req.end_received.then_some(DATA_AFTER_END)),
            Side::Upstream => {
                let Some(up) = up.as_deref() else { return Ok(()) };
                (up.core(), (st.resp.end_received || !st.resp_headers_seen).then_some(DATA_OUT_OF_ORDER))
            }
        };
        if from == Side::Client && refusal.is_none() {
            if let Some(kept) = st.replay_data.as_mut() {
                if kept.len() + data.len() <= REPLAY_MAX {
                    kept.extend_from_slice(&frame[HEAD_LEN + data.start..HEAD_LEN + data.end]);
                } else {
                    st.replay_data = None;
                }
            }
        }
        let dir = match from {
            Side::Client => &mut st.req,
            Side::Upstream => &mut st.resp,
        };
        let malformed = match refusal {
            None => dir.count_content(data.len(), end).err().map(|why| refused(Reason::PROTOCOL_ERROR, why)),
            some => some,
        };
        let refusal =
            malformed.or_else(|| queue_data(dir, sender, frame, data, flow_len, end).err().map(|()| DATA_OVER_WINDOW));
        drop(st);
        if let Some(r) = refusal {
            sender.credit(flow_len);
            return Err(r);
        }
        match from {
            Side::Client => self.flush_req(),
            Side::Upstream => self.flush_resp(),
        }
        Ok(())
    }

    /// WINDOW_UPDATE from the upstream: more room for the request.
    pub fn on_upstream_window(self: &Rc<Self>, inc: u32) -> Result<(), Refused> {
        self.on_window(Side::Upstream, inc)
    }

    /// WINDOW_UPDATE from the connection on side `from`: more room for the direction that
    /// connection receives; above 2^31-1 is a stream FLOW_CONTROL_ERROR.
    fn on_window(self: &Rc<Self>, from: Side, inc: u32) -> Result<(), Refused> {
        let mut st = self.st.borrow_mut();
        let dir = match from {
            Side::Client => &mut st.resp,
            Side::Upstream => &mut st.req,
        };
        dir.send_window += inc as i64;
        if dir.send_window > MAX_WINDOW as i64 {
            return Err(refused(Reason::FLOW_CONTROL_ERROR, "window above 2^31-1"));
        }
        drop(st);
        match from {
            Side::Client => self.flush_resp(),
            Side::Upstream => self.flush_req(),
        }
        Ok(())
    }

    /// RST_STREAM from the upstream. NO_ERROR after its trailers is the "server finished
    /// early" pattern: the trailers still reach the client, then a client still sending is told
    /// to stop; any other reset goes to the client as it is.
    pub fn on_upstream_reset(self: &Rc<Self>, reason: Reason) {
        let early_close = reason == Reason::NO_ERROR && self.st.borrow().resp.end_received;
        if early_close {
            self.upstream_done_early();
        } else {
            self.reset(Some(reason), None);
        }
    }

    /// A peer's SETTINGS changed the initial window of the connection on `side` by `delta`:
    /// every one of `streams` moves its send window towards that side. Such a change costs a
    /// pass over the streams, so it spends the connection's reset budget (ENHANCE_YOUR_CALM
    /// when spent), the same on both sides.
    pub fn shift_all(core: &Core, streams: Vec<Rc<Stream>>, side: Side, delta: i64) -> Result<(), FrameError> {
        if delta == 0 {
            return Ok(());
        }
        if !core.take_budget() {
            return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many window changes"));
        }
        for s in streams {
            s.shift_send_window(side, delta).map_err(|r| FrameError::Connection(r.reason, r.why))?;
        }
        Ok(())
    }

    /// A change of the initial window of the connection on `side` moves every stream's send
    /// window towards that side by `delta`; above 2^31-1 is a connection FLOW_CONTROL_ERROR.
    pub fn shift_send_window(&self, side: Side, delta: i64) -> Result<(), Refused> {
        let mut st = self.st.borrow_mut();
        let dir = match side {
            Side::Client => &mut st.resp,
            Side::Upstream => &mut st.req,
        };
        dir.send_window += delta;
        if dir.send_window > MAX_WINDOW as i64 {
            return Err(refused(Reason::FLOW_CONTROL_ERROR, "stream window above 2^31-1"));
        }
        Ok(())
    }

    // --- Forwarding ---

    /// Forwards queued request items to the upstream as its windows allow.
    fn flush_req(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let Some(up) = st.up.clone() else { return };
        let up_id = st.up_id;
        let was_blocked = st.req.blocked_since.is_some();
        let out = flush(&mut st.req, Hop::new(up.core(), up_id), Hop::new(self.down.core(), self.down_id));
        if !was_blocked && st.req.blocked_since.is_some() {
            self.down.wake_sweeper();
        }
        let park = out.parked && !std::mem::replace(&mut st.req.parked, out.parked);
        let done = st.req.end_sent && st.resp.end_sent;
        drop(st);
        if park {
            up.core().park(self.clone());
        }
        if done {
            self.finish();
        }
    }

    /// Forwards queued response items to the client as its windows allow.
    fn flush_resp(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let Some(up) = st.up.clone() else { return };
        let up_id = st.up_id;
        let had_headers = st.resp_headers_sent;
        let was_blocked = st.resp.blocked_since.is_some();
        let out = flush(&mut st.resp, Hop::new(self.down.core(), self.down_id), Hop::new(up.core(), up_id));
        st.resp_headers_sent = had_headers || out.headers;
        if !was_blocked && st.resp.blocked_since.is_some() {
            self.down.wake_sweeper();
        }
        let park = out.parked && !std::mem::replace(&mut st.resp.parked, out.parked);
        let done = st.req.end_sent && st.resp.end_sent;
        let rst_client = done && st.rst_client_after_trailers && !st.req.end_received;
        drop(st);
        if park {
            self.down.core().park(self.clone());
        }
        if rst_client {
            self.down.core().write_rst(self.down_id, Reason::NO_ERROR);
        }
        if done {
            self.finish();
        }
    }

    /// The upstream finished early: its trailers are in (maybe still queued) and it reset the
    /// stream with NO_ERROR. The request side is over; the response still goes out in full.
    fn upstream_done_early(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let dropped = st.req.queued_bytes();
        st.req.queue.clear();
        st.req.end_sent = true;
        st.rst_client_after_trailers = true;
        drop(st);
        self.down.core().credit(dropped);
        self.flush_resp();
    }

    // --- Ending ---

    /// Both directions ended: forget the stream on both connections.
    fn finish(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        if std::mem::replace(&mut st.closed, true) {
            return;
        }
        let up = st.up.take();
        let up_id = st.up_id;
        // Bytes still queued were counted against the senders' connection windows: give them
        // back, or every stream on a shared connection stalls once enough were dropped.
        let (req_bytes, resp_bytes) = (st.req.queued_bytes(), st.resp.queued_bytes());
        st.req.queue.clear();
        st.resp.queue.clear();
        let (failed, status, client_done) = (st.failed, st.status, st.req.end_received);
        drop(st);
        if failed.is_none() {
            bump(&self.route.forwarded);
            if let Some(code) = status {
                self.route.status(code);
            }
        }
        let latency = now_us().saturating_sub(self.start);
        self.route.observe(latency);
        if self.route.logging() {
            self.route.log(&AccessEntry {
                method: self.path.as_deref().unwrap_or_default(),
                endpoint: up.as_deref().map_or("", |u| u.peer()),
                outcome: failed.unwrap_or("forwarded"),
                grpc_status: status,
                latency_us: latency,
                bytes_in: None,
                bytes_out: None,
            });
        }
        self.down.core().credit(req_bytes);
        self.down.forget(self.down_id, client_done);
        if let Some(up) = up {
            up.finished(status, failed);
            up.core().credit(resp_bytes);
            up.forget(up_id);
        }
    }

    /// Ends the call because of `err`, as the error table says (`grpc/errors.rs`): with a
    /// gRPC status, Trailers-Only when no response headers went out yet, else trailers (queued
    /// response data is dropped; the upstream side, if any, is cancelled, and a client still
    /// sending gets RST_STREAM(NO_ERROR)); or with a reset of both sides.
    pub fn fail(self: &Rc<Self>, err: &RequestError) {
        let (code, msg) = match reply(err) {
            GrpcReply::Status(code, msg) => (code, msg),
            GrpcReply::Reset(r) => {
                self.count_error(&err.kind);
                return self.reset(Some(r), Some(Reason::CANCEL));
            }
        };
        if !self.is_closed() && self.count_error(&err.kind) {
            self.route.status(code as u32);
            self.st.borrow_mut().status = Some(code as u32);
        }
        let mut st = self.st.borrow_mut();
        if st.closed {
            return;
        }
        if !st.resp.end_sent {
            let mut fields = HeaderList::new();
            status_fields(&mut fields, !st.resp_headers_sent, code, &msg);
            self.down.core().write_headers(self.down_id, fields.iter(), true);
            st.resp.end_sent = true;
        }
        let client_sending = !st.req.end_received;
        let up = st.up.clone();
        // The upstream stream is closed only when both of its directions ended.
        let (up_id, up_done) = (st.up_id, st.resp.end_received && st.req.end_sent);
        drop(st);
        if client_sending {
            self.down.core().write_rst(self.down_id, Reason::NO_ERROR);
        }
        if let Some(up) = up {
            if !up_done {
                up.core().write_rst(up_id, Reason::CANCEL);
            }
        }
        let stats = self.down.stats();
        stats.protocols.grpc.errors.set(stats.protocols.grpc.errors.get() + 1);
        self.finish();
    }

    /// The stream is reset: tell the side that did not reset it, then forget the stream.
    pub fn reset(self: &Rc<Self>, to_client: Option<Reason>, to_upstream: Option<Reason>) {
        let st = self.st.borrow();
        if st.closed {
            return;
        }
        let up = st.up.clone();
        let up_id = st.up_id;
        drop(st);
        if let Some(r) = to_client {
            self.down.core().write_rst(self.down_id, r);
        }
        if let (Some(r), Some(up)) = (to_upstream, up) {
            up.core().write_rst(up_id, r);
        }
        self.finish();
    }

    /// Counts the stream's outcome as the error `kind` (once; false if it was already
    /// counted or the stream is over).
    pub fn count_error(&self, kind: &ErrorKind) -> bool {
        let mut st = self.st.borrow_mut();
        // Closed, already counted, or finished for the client (its trailers went out): the
        // call ends as forwarded, whatever happens to the rest of the stream.
        if st.closed || st.failed.is_some() || st.resp.end_sent {
            return false;
        }
        st.failed = Some(kind.label());
        self.route.error(kind);
        true
    }

    pub fn is_closed(&self) -> bool {
        self.st.try_borrow().is_ok_and(|st| st.closed)
    }

    /// What the sweeper should do about this stream at `now` (deadline first, then the stall
    /// limit on either direction).
    pub fn due(&self, now: Instant, stall: Duration) -> Due {
        let st = self.st.borrow();
        let mut next: Option<Instant> = None;
        if let Some(d) = st.deadline {
            if d <= now {
                return Due::Expired;
            }
            next = Some(d);
        }
        for since in [st.req.blocked_since, st.resp.blocked_since].into_iter().flatten() {
            let at = since + stall;
            if at <= now {
                return Due::Stalled;
            }
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Due::Later(next)
    }
}

impl Parked for Stream {
    fn is_closed(&self) -> bool {
        Stream::is_closed(self)
    }

    fn resume(self: Rc<Self>, side: Side) {
        match side {
            Side::Client => {
                self.st.borrow_mut().resp.parked = false;
                self.flush_resp();
            }
            Side::Upstream => {
                self.st.borrow_mut().req.parked = false;
                self.flush_req();
            }
        }
    }
}
