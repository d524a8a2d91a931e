//! One proxied gRPC call: a downstream stream mapped to an upstream stream, with what is
//! queued in each direction while the receiver's flow-control window is closed.
//!
//! Flow control is per hop: the proxy gives window back to the sender only for bytes it has
//! queued towards the receiver (which the receiver's own window allowed), so a slow reader
//! slows the writer and what the proxy holds per stream stays below the window it granted.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use super::core::Core;
use super::downstream::GrpcSession;
use super::upstream::GrpcUpstream;
use super::wire::{encode_timeout, status_fields, Code};
use crate::grpc::h2::frame::{self, Reason, HEAD_LEN};
use crate::grpc::h2::hpack::{Field, HeaderList};

/// Something queued for the receiving side of one direction.
pub enum Item {
    /// A header block (response headers, or trailers) and its END_STREAM flag.
    Headers(HeaderList, bool),
    /// DATA content. With `head_room`, `buf` still starts with the frame's own 9-byte header,
    /// which is rewritten in place when the whole rest goes out in one frame.
    Data { buf: BytesMut, head_room: bool, end: bool },
}

/// One direction of a stream.
pub struct Dir {
    pub queue: VecDeque<Item>,
    /// What the receiver still accepts on this stream.
    pub send_window: i64,
    /// What the sender may still send us on this stream.
    pub recv_window: i64,
    /// Forwarded bytes not yet given back to the sender.
    recv_credit: u32,
    /// END_STREAM came from the sender.
    pub end_received: bool,
    /// END_STREAM went to the receiver.
    pub end_sent: bool,
    /// Since when data has waited without progress for a zero window or a full write queue
    /// (stall guard).
    pub blocked_since: Option<Instant>,
    /// On the receiving connection's list of streams to flush when it has room again.
    pub parked: bool,
}

impl Dir {
    fn new(recv_window: u32) -> Dir {
        Dir {
            queue: VecDeque::new(),
            send_window: 0,
            recv_window: recv_window as i64,
            recv_credit: 0,
            end_received: false,
            end_sent: false,
            blocked_since: None,
            parked: false,
        }
    }

    /// Bytes of DATA queued.
    pub fn queued_bytes(&self) -> usize {
        self.queue
            .iter()
            .map(|i| match i {
                Item::Data { buf, head_room, .. } => buf.len() - if *head_room { HEAD_LEN } else { 0 },
                Item::Headers(..) => 0,
            })
            .sum()
    }
}

pub struct StreamState {
    pub up: Option<Rc<GrpcUpstream>>,
    pub up_id: u32,
    /// Client → upstream.
    pub req: Dir,
    /// Upstream → client.
    pub resp: Dir,
    /// The upstream sent its response headers (a later HEADERS is trailers).
    pub resp_headers_seen: bool,
    /// Response headers went to the client (an error now needs trailers, not Trailers-Only).
    pub resp_headers_sent: bool,
    pub deadline: Option<Instant>,
    /// The request headers, until the stream is opened upstream.
    pub request: Option<(HeaderList, bool)>,
    pub closed: bool,
    /// The upstream ended the call early (trailers, then RST_STREAM(NO_ERROR)): once the
    /// trailers reach the client, tell a client still sending to stop.
    pub rst_client_after_trailers: bool,
}

pub struct Stream {
    pub down: Rc<GrpcSession>,
    pub down_id: u32,
    pub st: RefCell<StreamState>,
    /// Counts towards the worker's event coalescing while the stream lives.
    _in_flight: crate::worker::hold::InFlight,
}

impl Stream {
    pub fn new(
        down: Rc<GrpcSession>,
        down_id: u32,
        request: HeaderList,
        end_stream: bool,
        deadline: Option<Instant>,
    ) -> Stream {
        let recv = down.core.stream_window;
        let mut req = Dir::new(recv);
        req.end_received = end_stream;
        let mut resp = Dir::new(0);
        resp.send_window = down.core.peer.initial_window.get() as i64;
        Stream {
            down,
            down_id,
            _in_flight: crate::worker::hold::InFlight::new(),
            st: RefCell::new(StreamState {
                up: None,
                up_id: 0,
                req,
                resp,
                resp_headers_seen: false,
                resp_headers_sent: false,
                deadline,
                request: Some((request, end_stream)),
                closed: false,
                rst_client_after_trailers: false,
            }),
        }
    }

    /// Opens the stream on `up`: allocates the upstream stream id and writes the request
    /// headers in the same step (ids reach the wire in increasing order), with `grpc-timeout`
    /// reduced by the time already spent; then forwards whatever DATA is queued.
    pub fn open_upstream(self: &Rc<Self>, up: &Rc<GrpcUpstream>) {
        let mut st = self.st.borrow_mut();
        let Some((request, end)) = st.request.take() else { return };
        let id = up.register(self.clone());
        st.up = Some(up.clone());
        st.up_id = id;
        st.req.send_window = up.core.peer.initial_window.get() as i64;
        st.resp.recv_window = up.core.stream_window as i64;
        let left = st.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = left.map(encode_timeout);
        let fields = request.iter().map(|f| match (&timeout, f.name) {
            (Some(t), b"grpc-timeout") => Field { value: t.as_bytes(), ..f },
            _ => f,
        });
        up.core.write_headers(id, fields, end);
        if end {
            st.req.end_sent = true;
        }
        drop(st);
        self.flush_req();
    }

    /// Forwards queued request items to the upstream as its windows allow.
    pub fn flush_req(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let Some(up) = st.up.clone() else { return };
        let up_id = st.up_id;
        let down = &self.down.core;
        let was_blocked = st.req.blocked_since.is_some();
        let out = flush(&mut st.req, &up.core, up_id, down, self.down_id);
        if !was_blocked && st.req.blocked_since.is_some() {
            self.down.sweeper.notify_all();
        }
        let park = out.parked && !std::mem::replace(&mut st.req.parked, out.parked);
        let done = st.req.end_sent && st.resp.end_sent;
        drop(st);
        if park {
            up.core.park(self.clone());
        }
        if done {
            self.finish();
        }
    }

    /// Forwards queued response items to the client as its windows allow.
    pub fn flush_resp(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let Some(up) = st.up.clone() else { return };
        let up_id = st.up_id;
        let had_headers = st.resp_headers_sent;
        let was_blocked = st.resp.blocked_since.is_some();
        let out = flush(&mut st.resp, &self.down.core, self.down_id, &up.core, up_id);
        st.resp_headers_sent = had_headers || out.headers;
        if !was_blocked && st.resp.blocked_since.is_some() {
            self.down.sweeper.notify_all();
        }
        let park = out.parked && !std::mem::replace(&mut st.resp.parked, out.parked);
        let done = st.req.end_sent && st.resp.end_sent;
        let rst_client = done && st.rst_client_after_trailers && !st.req.end_received;
        drop(st);
        if park {
            self.down.core.park(self.clone());
        }
        if rst_client {
            self.down.core.write_rst(self.down_id, Reason::NO_ERROR);
        }
        if done {
            self.finish();
        }
    }

    /// The upstream finished early: its trailers are in (maybe still queued) and it reset the
    /// stream with NO_ERROR. The request side is over; the response still goes out in full.
    pub fn upstream_done_early(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let dropped = st.req.queued_bytes();
        st.req.queue.clear();
        st.req.end_sent = true;
        st.rst_client_after_trailers = true;
        drop(st);
        self.down.core.credit(dropped);
        self.flush_resp();
    }

    /// Both directions ended: forget the stream on both connections.
    pub fn finish(self: &Rc<Self>) {
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
        drop(st);
        self.down.core.credit(req_bytes);
        self.down.forget(self.down_id);
        if let Some(up) = up {
            up.core.credit(resp_bytes);
            up.forget(up_id);
        }
    }

    /// Ends the call with a gRPC status generated by the proxy: Trailers-Only when no
    /// response headers went out yet, else trailers; queued response data is dropped. The
    /// upstream side (if any) is cancelled, and a client still sending gets RST_STREAM(NO_ERROR).
    pub fn fail(self: &Rc<Self>, code: Code, msg: &str) {
        let mut st = self.st.borrow_mut();
        if st.closed {
            return;
        }
        if !st.resp.end_sent {
            let mut fields = HeaderList::new();
            status_fields(&mut fields, !st.resp_headers_sent, code, msg);
            self.down.core.write_headers(self.down_id, fields.iter(), true);
            st.resp.end_sent = true;
        }
        let client_sending = !st.req.end_received;
        let up = st.up.clone();
        // The upstream stream is closed only when both of its directions ended.
        let (up_id, up_done) = (st.up_id, st.resp.end_received && st.req.end_sent);
        drop(st);
        if client_sending {
            self.down.core.write_rst(self.down_id, Reason::NO_ERROR);
        }
        if let Some(up) = up {
            if !up_done {
                up.core.write_rst(up_id, Reason::CANCEL);
            }
        }
        self.down.stats().grpc_errors.set(self.down.stats().grpc_errors.get() + 1);
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
            self.down.core.write_rst(self.down_id, r);
        }
        if let (Some(r), Some(up)) = (to_upstream, up) {
            up.core.write_rst(up_id, r);
        }
        self.finish();
    }

    pub fn is_closed(&self) -> bool {
        self.st.borrow().closed
    }
}

/// What a flush did.
struct Flushed {
    /// A header block was written.
    headers: bool,
    /// Data is left that waits for room (a window or the write queue).
    parked: bool,
}

/// Moves queued items of one direction to the receiver (`to`, stream `to_id`) as far as its
/// windows, frame size and write queue allow, and gives the forwarded bytes back to the
/// sender (`from`, stream `from_id`).
fn flush(dir: &mut Dir, to: &Core, to_id: u32, from: &Core, from_id: u32) -> Flushed {
    let mut wrote_headers = false;
    let mut parked = false;
    let mut forwarded = 0usize;
    while let Some(item) = dir.queue.front_mut() {
        match item {
            Item::Headers(..) => {
                let Some(Item::Headers(list, end)) = dir.queue.pop_front() else { unreachable!() };
                to.write_headers(to_id, list.iter(), end);
                wrote_headers = true;
                if end {
                    dir.end_sent = true;
                }
            }
            Item::Data { buf, head_room, end } => {
                let start = if *head_room { HEAD_LEN } else { 0 };
                let len = buf.len() - start;
                let room = dir.send_window.min(to.send_window.get()).max(0) as usize;
                let n = len.min(room).min(to.peer.max_frame_size.get() as usize);
                if (n == 0 && len > 0) || to.out.queued_bytes() >= to.out_limit {
                    if dir.blocked_since.is_none() {
                        dir.blocked_since = Some(Instant::now());
                    }
                    parked = true;
                    break;
                }
                // Progress: the stall clock restarts when it blocks again.
                dir.blocked_since = None;
                let last = n == len;
                let end_now = last && *end;
                let flags = if end_now { frame::flag::END_STREAM } else { 0 };
                let head = frame::Head::new(frame::kind::DATA, flags, to_id, n);
                if *head_room {
                    let mut piece = buf.split_to(HEAD_LEN + n);
                    head.write_into(&mut piece);
                    to.push(piece);
                    *head_room = false;
                } else {
                    let mut piece = BytesMut::with_capacity(HEAD_LEN);
                    head.encode(&mut piece);
                    to.push(piece);
                    if n > 0 {
                        to.push(buf.split_to(n));
                    }
                }
                dir.send_window -= n as i64;
                to.send_window.set(to.send_window.get() - n as i64);
                forwarded += n;
                if last {
                    dir.queue.pop_front();
                    if end_now {
                        dir.end_sent = true;
                    }
                }
            }
        }
    }
    if dir.queue.is_empty() {
        dir.blocked_since = None;
    }
    if forwarded > 0 {
        from.credit(forwarded);
        if !dir.end_received {
            let c = dir.recv_credit + forwarded as u32;
            if c >= from.stream_window / 2 {
                dir.recv_credit = 0;
                dir.recv_window += c as i64;
                from.write_window_update(from_id, c);
            } else {
                dir.recv_credit = c;
            }
        }
    }
    Flushed { headers: wrote_headers, parked }
}

/// Accounts DATA received on a stream direction and queues it (padding is given back at once).
/// `frame` is the whole frame, header included.
pub fn queue_data(
    dir: &mut Dir,
    from: &Core,
    mut frame: BytesMut,
    data: std::ops::Range<usize>,
    flow_len: usize,
    end: bool,
) -> Result<(), ()> {
    dir.recv_window -= flow_len as i64;
    if dir.recv_window < 0 {
        return Err(());
    }
    let padding = flow_len - data.len();
    if padding > 0 {
        from.credit(padding);
        dir.recv_credit += padding as u32;
    }
    let item = if data.start == 0 && padding == 0 {
        Item::Data { buf: frame, head_room: true, end }
    } else {
        let _ = frame.split_to(HEAD_LEN + data.start);
        frame.truncate(data.len());
        Item::Data { buf: frame, head_room: false, end }
    };
    if end {
        dir.end_received = true;
    }
    dir.queue.push_back(item);
    Ok(())
}
