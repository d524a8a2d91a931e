//! The reply side of one downstream (client) connection and the pending-request entries that
//! point back to it. Upstream connections push replies here; the client's writer task drains it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::Canceller;

use crate::error::RequestError;
use crate::local::{FrameBytes, Notify, Outbox, StallMark, COPY_MAX};
use crate::metrics::{bump, now_us, AccessEntry, CloseReason, ConnMeter, RouteMetrics};
use crate::stats::Stats;
use crate::thrift::codec::message::EXCEPTION;
use crate::thrift::codec::patch::{reply_fits, restore_reply_in_place};
use crate::thrift::codec::{encode_exception, restore_reply, Dialect, FrameInfo, OriginalSeq};
use crate::thrift::errors::exception;
use crate::worker::state::{DownstreamConn, IdleMark};

/// Shared state of one client connection.
pub struct ThriftSession {
    /// Replies and proxy-generated exceptions waiting for the writer task.
    pub out: Outbox,
    /// Requests sent upstream whose reply has not come back yet.
    pub inflight: Cell<usize>,
    /// Woken when `inflight` drops or the writer drains the outbox, so a reader paused at a
    /// limit resumes.
    pub progress: Rc<Notify>,
    /// Bumped when a request is read or a reply queued (no clock read on the hot path); the
    /// drain ticker turns "unchanged since" into an idle time.
    pub activity: Cell<u64>,
    /// Drain bookkeeping: the activity count last seen idle, and since when.
    pub idle_mark: IdleMark,
    /// True while the read buffer holds part of a frame (not idle even if nothing is in flight).
    pub partial: Cell<bool>,
    /// The bytes of that partial frame, as counted in the worker's buffer budget.
    pub read_held: Cell<usize>,
    /// Cancels the reader's in-flight read (drain close, forced close).
    pub read_canceller: RefCell<Canceller>,
    /// The method name of the last request, shared by its pending entries: a client calls
    /// the same few methods, so most requests need no allocation for their name.
    last_name: RefCell<Option<Rc<[u8]>>>,
    pub stats: Rc<Stats>,
    /// The listener's metrics for this connection (bytes, close reason, unrouted requests).
    pub meter: Rc<ConnMeter>,
    /// The listener's name and `write_stall_timeout`, and what the stall check saw last.
    pub listener: RefCell<Rc<str>>,
    pub write_stall_timeout: Cell<Duration>,
    stall: StallMark,
}

impl ThriftSession {
    pub fn new(stats: Rc<Stats>, meter: Rc<ConnMeter>) -> Self {
        let progress = Rc::new(Notify::default());
        ThriftSession {
            out: Outbox::for_client(Some(progress.clone()), meter.listener.clone()),
            inflight: Cell::new(0),
            progress,
            activity: Cell::new(0),
            idle_mark: IdleMark::default(),
            partial: Cell::new(false),
            read_held: Cell::new(0),
            read_canceller: RefCell::new(Canceller::new()),
            last_name: RefCell::new(None),
            stats,
            meter,
            listener: RefCell::new(Rc::from("")),
            write_stall_timeout: Cell::new(Duration::from_secs(30)),
            stall: StallMark::default(),
        }
    }

    /// Records activity (a request read, a reply queued).
    pub fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }

    /// Nothing in flight and no partial frame: closing now loses nothing already sent to us.
    pub fn is_idle(&self) -> bool {
        self.inflight.get() == 0 && !self.partial.get()
    }

    /// Interrupts the reader's current read (it sees a cancelled read and stops).
    pub fn cancel_read(&self) {
        crate::io::cancel_reads(&self.read_canceller);
    }

    /// The method name for a pending entry: the last one's, when it is the same.
    pub fn method_name(&self, name: &[u8]) -> Rc<[u8]> {
        let mut last = self.last_name.borrow_mut();
        match &*last {
            Some(n) if **n == *name => n.clone(),
            _ => {
                let n: Rc<[u8]> = name.into();
                *last = Some(n.clone());
                n
            }
        }
    }

    fn request_done(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.touch();
        self.progress.notify_all();
    }

    /// Answers a request with the exception `err` maps to (`thrift/errors.rs`), in the
    /// client's own dialect, with its method name and seqID.
    pub fn send_error(&self, dialect: Dialect, name: &[u8], seq: &OriginalSeq, err: &RequestError) {
        let (kind, msg) = exception(err);
        let mut buf = BytesMut::with_capacity(64 + name.len() + msg.len());
        encode_exception(&mut buf, dialect.reply_framing(), dialect.protocol, name, seq, kind, &msg);
        self.stats.protocols.thrift.exceptions.set(self.stats.protocols.thrift.exceptions.get() + 1);
        self.out.push(buf);
    }

    /// Answers a request read at `start` with the exception for `err`, counted on `route`
    /// (its latency ends when the exception is written).
    pub fn refuse(
        &self,
        route: &Rc<RouteMetrics>,
        start: u64,
        dialect: Dialect,
        name: &[u8],
        seq: &OriginalSeq,
        err: &RequestError,
    ) {
        route.error(&err.kind);
        self.send_error(dialect, name, seq, err);
        let latency = now_us().saturating_sub(start);
        route.observe(latency);
        if route.logging() {
            route.log(&AccessEntry {
                method: name,
                endpoint: err.kind.endpoint().unwrap_or(""),
                outcome: err.kind.label(),
                grpc_status: None,
                latency_us: latency,
                bytes_in: None,
                bytes_out: None,
            });
        }
    }
}

/// Drain: a Thrift client gets no announcement (framed Thrift has none; TTHeader `crrst` is
/// not sent yet), its connection is closed once idle, or at the drain timeout.
impl DownstreamConn for ThriftSession {
    fn start_drain(self: Rc<Self>) {}

    fn close_if_idle(&self, idle: Duration, now: Instant) {
        if self.idle_mark.idle_for(self.is_idle(), self.activity.get(), now, idle) {
            self.meter.closing(CloseReason::Drain);
            self.cancel_read();
        }
    }

    fn close_now(self: Rc<Self>) {
        self.meter.closing(CloseReason::Drain);
        self.cancel_read();
        self.out.close();
    }

    fn requests_active(&self) -> usize {
        self.inflight.get()
    }

    /// Replies the client does not read: the writer's write is cancelled, queued replies
    /// dropped, the reader stopped; replies still to come for its requests are dropped as
    /// they arrive, and the upstream connections it shared are untouched.
    fn close_if_stalled(&self, now: Instant) -> bool {
        let timeout = self.write_stall_timeout.get();
        if !self.out.stalled(&self.stall, now, timeout) {
            return false;
        }
        log::warn!(
            "listener {}: a client read none of its replies for {timeout:?} ({} bytes queued, {} requests in flight); connection closed",
            self.listener.borrow(),
            self.out.queued_bytes(),
            self.inflight.get()
        );
        self.meter.closing(CloseReason::WriteStall);
        self.cancel_read();
        self.out.abort();
        self.progress.notify_all();
        true
    }
}

/// One request in flight upstream: enough to give the reply back, or to fail it.
pub struct Pending {
    pub downstream: Rc<ThriftSession>,
    /// The client's own seqID bytes, restored into the reply.
    pub orig: OriginalSeq,
    /// Method name as the client sent it, for exceptions.
    pub name: Rc<[u8]>,
    pub dialect: Dialect,
    /// When it times out (`metrics::now_us` microseconds).
    pub deadline: u64,
    /// The route it took, and when it was read (`metrics::now_us`).
    pub route: Rc<RouteMetrics>,
    pub start: u64,
    /// The request frame's length (access log).
    pub req_len: u32,
    /// Times it was sent again after its connection died before writing it.
    pub retries: u8,
}

impl Pending {
    /// Restores the client's seqID into a reply and hands it to the client; `now`: when the
    /// reply was read (`metrics::now_us`), the end of the request's latency.
    pub fn complete(self, reply: impl FrameBytes, info: &FrameInfo, now: u64, peer: &str) {
        let reply_len = reply.len() as u64;
        let out = &self.downstream.out;
        if reply.len() < COPY_MAX && reply_fits(info, &self.orig) {
            out.push_copy(&reply, |copy| restore_reply_in_place(copy, info, &self.orig));
        } else {
            out.push(restore_reply(reply.into_owned(), info, &self.orig));
        }
        let exception = info.msg.msg_type == EXCEPTION;
        bump(&self.route.forwarded);
        if exception {
            bump(&self.route.upstream_exceptions);
        }
        let latency = now.saturating_sub(self.start);
        self.route.observe(latency);
        if self.route.logging() {
            self.route.log(&AccessEntry {
                method: &self.name,
                endpoint: peer,
                outcome: if exception { "upstream_exception" } else { "forwarded" },
                grpc_status: None,
                latency_us: latency,
                bytes_in: Some(self.req_len as u64),
                bytes_out: Some(reply_len),
            });
        }
        self.downstream.request_done();
    }

    /// Answers the request with the exception for `err`.
    pub fn fail(self, err: &RequestError) {
        self.downstream.refuse(&self.route, self.start, self.dialect, &self.name, &self.orig, err);
        self.downstream.request_done();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;
    use crate::thrift::codec::message::{encode_varint32, Protocol, CALL, EXCEPTION, REPLY};
    use crate::thrift::codec::parse_frame;

    /// A framed message with an empty struct as its payload, as a client or server writes it
    /// (strict binary: version and type, name, seqID; compact: id, type, seqID, name).
    fn framed(protocol: Protocol, msg_type: u8, name: &str, seq: i32) -> Vec<u8> {
        let mut m = Vec::new();
        if protocol == Protocol::Compact {
            let varint = |m: &mut Vec<u8>, v: u32| {
                let (b, n) = encode_varint32(v);
                m.extend_from_slice(&b[..n]);
            };
            m.extend_from_slice(&[0x82, (msg_type << 5) | 1]);
            varint(&mut m, seq as u32);
            varint(&mut m, name.len() as u32);
            m.extend_from_slice(name.as_bytes());
        } else {
            m.extend_from_slice(&[0x80, 0x01, 0x00, msg_type]);
            m.extend_from_slice(&(name.len() as u32).to_be_bytes());
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(&seq.to_be_bytes());
        }
        m.push(0); // STOP: an empty struct
        let mut f = (m.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        f
    }

    fn session() -> ThriftSession {
        let listener = Rc::new(crate::metrics::ListenerMetrics::new("thrift"));
        ThriftSession::new(Rc::new(Stats::default()), Rc::new(ConnMeter::accepted(listener)))
    }

    /// Everything queued for the client, as one byte string.
    fn written(s: &ThriftSession) -> Vec<u8> {
        let mut items = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let taken = std::pin::pin!(s.out.take_all(&mut items)).as_mut().poll(&mut cx);
        assert!(matches!(taken, std::task::Poll::Ready(true)), "nothing was queued");
        items.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// A session with one request in flight, and that request's pending entry.
    fn one_pending(protocol: Protocol, seq: i32) -> (Rc<ThriftSession>, Pending) {
        let s = Rc::new(session());
        let req = framed(protocol, CALL, "getUser", seq);
        let info = parse_frame(&req, 4096).unwrap();
        s.inflight.set(1);
        let p = Pending {
            downstream: s.clone(),
            orig: OriginalSeq::capture(&req, &info),
            name: s.method_name(b"getUser"),
            dialect: info.dialect,
            deadline: now_us() + 1_000_000,
            route: Rc::default(),
            start: 0,
            req_len: req.len() as u32,
            retries: 0,
        };
        (s, p)
    }

    #[test]
    fn a_reply_goes_back_with_the_clients_own_seqid_and_frees_its_slot() {
        // Binary: the upstream's seqID (1234) has the width of the client's (7): patched in
        // place. Compact: 1234 takes two varint bytes where 7 took one: the reply is rebuilt.
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let (s, p) = one_pending(protocol, 7);
            let route = p.route.clone();
            let activity = s.activity.get();
            let reply = framed(protocol, REPLY, "getUser", 1234);
            p.complete(&reply[..], &parse_frame(&reply, 4096).unwrap(), 0, "10.0.0.1:9100");
            let out = written(&s);
            assert_eq!(out, framed(protocol, REPLY, "getUser", 7), "{protocol:?}: the reply, seqID 7 again");
            assert_eq!((s.inflight.get(), route.forwarded.get()), (0, 1), "{protocol:?}");
            assert!(s.activity.get() > activity, "a reply counts as activity (drain)");
        }
    }

    #[test]
    fn a_failed_request_gets_the_exception_of_its_error_with_its_name_and_seqid() {
        let (s, p) = one_pending(Protocol::Binary, 7);
        p.fail(&ErrorKind::Timeout { endpoint: Some("10.0.0.1:9100".into()) }.into());
        let out = written(&s);
        let info = parse_frame(&out, 4096).unwrap();
        assert_eq!((info.msg.msg_type, info.msg.seq.get()), (EXCEPTION, 7));
        assert_eq!(&out[info.msg.name.clone()], b"getUser");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("upstream request timed out (10.0.0.1:9100)"), "{text}");
        assert_eq!((s.inflight.get(), s.stats.protocols.thrift.exceptions.get()), (0, 1));
    }

    #[test]
    fn consecutive_requests_for_one_method_share_its_name() {
        let s = session();
        let a = s.method_name(b"getUser");
        let b = s.method_name(b"getUser");
        let c = s.method_name(b"putUser");
        assert!(Rc::ptr_eq(&a, &b), "one allocation for the same name");
        assert!(!Rc::ptr_eq(&a, &c));
        assert_eq!(&*c, b"putUser");
    }

    #[test]
    fn a_drain_closes_a_connection_only_once_it_stayed_idle_for_the_idle_time() {
        let s = session();
        let idle = Duration::from_millis(200);
        let t0 = Instant::now();
        // A request in flight: not idle, whatever the time.
        s.inflight.set(1);
        s.close_if_idle(idle, t0);
        assert_eq!(s.idle_mark.get(), None);
        // Idle from now: the first tick marks it, a tick before `idle` keeps the mark.
        s.inflight.set(0);
        s.close_if_idle(idle, t0);
        assert_eq!(s.idle_mark.get(), Some((s.activity.get(), t0)));
        s.close_if_idle(idle, t0 + Duration::from_millis(100));
        assert_eq!(s.idle_mark.get(), Some((s.activity.get(), t0)));
        // Activity in between starts the idle time again.
        s.touch();
        let t1 = t0 + Duration::from_millis(300);
        s.close_if_idle(idle, t1);
        assert_eq!(s.idle_mark.get(), Some((s.activity.get(), t1)), "restarted, not closed");
        // A partial frame in the buffer is not idle either.
        s.partial.set(true);
        s.close_if_idle(idle, t1 + idle);
        assert_eq!(s.idle_mark.get(), None);
    }
}
