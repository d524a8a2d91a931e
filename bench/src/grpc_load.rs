//! The gRPC side of the load generator: a small HTTP/2 client on ringway's own frame layer
//! and HPACK. Closed loop: unary, each of M slots sends one call and, on its trailers, the
//! next; server streaming, each call asks for `STREAM_MESSAGES` replies (each counted); bidi,
//! each slot keeps one long stream and plays ping-pong on it. Open loop (unary and server
//! streaming): calls start at fixed intended times whatever the replies do, latency counted
//! from the intended time, up to the peer's stream limit in flight (beyond it a call is
//! skipped and counted). Every reply message is checked against what was sent (a tag with
//! the connection, stream and sequence number).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use monoio::io::{Canceller, Splitable};
use monoio::net::TcpStream;

use crate::load::{write_batch, Acc, LoadSpec, Window};
use crate::wire::BenchProtocol;
use ringway::grpc::h2::frame::{self, kind, settings::Settings, AckFlags, Head, StreamId, HEAD_LEN};
use ringway::grpc::h2::hpack::{Decoder, Encoder, Field, HeaderList};
use ringway::io::{read_more, ReadHint};
use ringway::local::{IdMap, Notify};

/// Reply messages per server-streaming call.
pub const STREAM_MESSAGES: usize = 10;
const WINDOW: u32 = 16 << 20;

/// One call (or one bidi stream) in flight.
struct Call {
    sent_at: Instant,
    tag: u64,
    /// Bytes of the reply message being assembled (5-byte prefix included).
    got: BytesMut,
    messages: usize,
    status_ok: bool,
}

struct Client<'a> {
    id: u32,
    spec: &'a LoadSpec,
    enc: Encoder,
    dec: Decoder,
    next_stream: StreamId,
    next_tag: u64,
    wbuf: BytesMut,
    consumed: u32,
    calls: IdMap<StreamId, Call>,
    headers: HeaderList,
    /// Closed loop: a finished call opens the next one.
    closed: bool,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 until its SETTINGS say).
    peer_streams: usize,
}

impl<'a> Client<'a> {
    /// A client whose first bytes (preface, SETTINGS, connection window) are queued.
    fn new(id: u32, spec: &'a LoadSpec, closed: bool) -> Client<'a> {
        let mut c = Client {
            id,
            spec,
            enc: Encoder::new(),
            dec: Decoder::new(4096),
            next_stream: StreamId::new(1),
            next_tag: 1,
            wbuf: BytesMut::with_capacity(64 * 1024),
            consumed: 0,
            calls: IdMap::default(),
            headers: HeaderList::new(),
            closed,
            peer_streams: 100,
        };
        c.wbuf.extend_from_slice(frame::PREFACE);
        let s = Settings { initial_window_size: Some(WINDOW), enable_push: Some(false), ..Settings::default() };
        frame::settings::encode(&s, &mut c.wbuf);
        frame::window_update::encode(StreamId::ZERO, WINDOW - frame::DEFAULT_WINDOW, &mut c.wbuf);
        c
    }

    fn method(&self) -> &'static str {
        match self.spec.protocol {
            BenchProtocol::GrpcServerStream => "/ringway.test.Echo/ServerStream",
            BenchProtocol::GrpcBidi => "/ringway.test.Echo/Bidi",
            _ => "/ringway.test.Echo/Unary",
        }
    }

    fn message(&mut self, tag: u64) {
        let len = self.spec.payload.max(16);
        self.wbuf.put_u8(0);
        self.wbuf.put_u32(len as u32);
        self.wbuf.put_u32(self.id);
        self.wbuf.put_u64(tag);
        self.wbuf.put_bytes(b'x', len - 12);
    }

    fn data(&mut self, stream: StreamId, tag: u64, end: bool) {
        let len = 5 + self.spec.payload.max(16);
        frame::data::encode_head(stream, len, end, &mut self.wbuf);
        self.message(tag);
    }

    /// Opens a call: HEADERS and the first message.
    fn open(&mut self, now: Instant) {
        let stream = self.next_stream;
        self.next_stream = stream.next();
        let count = STREAM_MESSAGES.to_string();
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", self.method()),
            (":authority", "ringway-bench"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        if self.spec.protocol == BenchProtocol::GrpcServerStream {
            fields.push(("x-count", &count));
        }
        let mut block = BytesMut::with_capacity(128);
        self.enc.encode(
            fields.iter().map(|(n, v)| Field { name: n.as_bytes(), value: v.as_bytes(), never_indexed: false }),
            &mut block,
        );
        frame::headers::encode(stream, &block, false, 16384, &mut self.wbuf);
        let tag = self.next_tag;
        self.next_tag += 1;
        let bidi = self.spec.protocol == BenchProtocol::GrpcBidi;
        self.data(stream, tag, !bidi);
        self.calls.insert(stream, Call { sent_at: now, tag, got: BytesMut::new(), messages: 0, status_ok: false });
    }

    /// Handles one frame; returns false when the connection is unusable.
    fn on_frame(&mut self, head: Head, f: &[u8], acc: &RefCell<Acc>, w: Window, now: Instant) -> (bool, u64) {
        let p = &f[HEAD_LEN..];
        let mut done = 0u64;
        match head.kind {
            kind::SETTINGS if !AckFlags::from(head.flags).is_ack() => {
                if let Ok(frame::settings::Frame::Settings(s)) = frame::settings::parse(&head, p, 64) {
                    if let Some(n) = s.max_concurrent_streams {
                        self.peer_streams = n as usize;
                    }
                }
                frame::settings::encode_ack(&mut self.wbuf)
            }
            kind::PING if !AckFlags::from(head.flags).is_ack() => {
                if let Ok(ping) = frame::ping::parse(&head, p) {
                    frame::ping::encode(frame::ping::Ping { ack: true, data: ping.data }, &mut self.wbuf);
                }
            }
            kind::GOAWAY => {
                acc.borrow_mut().error("goaway");
                return (false, 0);
            }
            kind::RST_STREAM if self.calls.remove(&head.stream).is_some() => acc.borrow_mut().error("reset"),
            kind::HEADERS => {
                let Ok(h) = frame::headers::parse(&head, p) else { return (false, 0) };
                if !h.end_headers || self.dec.decode(&p[h.fragment], 1 << 20, &mut self.headers).is_err() {
                    acc.borrow_mut().error("bad_headers");
                    return (false, 0);
                }
                if h.end_stream {
                    let ok = self.headers.get(b"grpc-status") == Some(b"0");
                    if let Some(c) = self.calls.get_mut(&head.stream) {
                        c.status_ok = ok;
                    }
                    done += self.finish(head.stream, acc, w, now);
                }
            }
            kind::DATA => {
                let Ok(d) = frame::data::parse(&head, p) else { return (false, 0) };
                self.consumed += d.flow_len as u32;
                let bidi = self.spec.protocol == BenchProtocol::GrpcBidi;
                let id = self.id;
                let closed = self.closed;
                let mut next = None;
                if let Some(c) = self.calls.get_mut(&head.stream) {
                    c.got.extend_from_slice(&p[d.data]);
                    while c.got.len() >= 5 {
                        let len = u32::from_be_bytes([c.got[1], c.got[2], c.got[3], c.got[4]]) as usize;
                        if c.got.len() < 5 + len {
                            break;
                        }
                        let m = c.got.split_to(5 + len);
                        let tagged = m.len() >= 17 && m[5..9] == id.to_be_bytes() && m[9..17] == c.tag.to_be_bytes();
                        if !tagged {
                            acc.borrow_mut().error("mismatched_reply");
                            continue;
                        }
                        c.messages += 1;
                        if bidi {
                            acc.borrow_mut()
                                .reply(Some(c.sent_at), now, |t| t >= w.measure_from && (!closed || now <= w.end));
                            done += 1;
                            c.sent_at = now;
                            if now < w.end {
                                next = Some(c.tag);
                            }
                        } else if self.spec.protocol == BenchProtocol::GrpcServerStream {
                            // Each message counts; latency is that of its call.
                            acc.borrow_mut()
                                .reply(Some(c.sent_at), now, |t| t >= w.measure_from && (!closed || now <= w.end));
                            done += 1;
                        }
                    }
                }
                if let Some(tag) = next {
                    self.data(head.stream, tag, false);
                } else if bidi && now >= w.end && self.calls.contains_key(&head.stream) {
                    frame::data::encode(head.stream, b"", true, &mut self.wbuf);
                }
                if self.consumed >= WINDOW / 2 {
                    frame::window_update::encode(StreamId::ZERO, self.consumed, &mut self.wbuf);
                    self.consumed = 0;
                }
            }
            _ => {}
        }
        (true, done)
    }

    /// A call ended (trailers): account it and open the next one.
    fn finish(&mut self, stream: StreamId, acc: &RefCell<Acc>, w: Window, now: Instant) -> u64 {
        let Some(c) = self.calls.remove(&stream) else { return 0 };
        let closed = self.closed;
        let mut done = 0;
        let expected = match self.spec.protocol {
            BenchProtocol::GrpcServerStream => STREAM_MESSAGES,
            BenchProtocol::GrpcBidi => c.messages,
            _ => 1,
        };
        if !c.status_ok {
            acc.borrow_mut().error("grpc_status");
        } else if c.messages != expected {
            acc.borrow_mut().error("missing_messages");
        } else if self.spec.protocol == BenchProtocol::GrpcUnary {
            acc.borrow_mut().reply(Some(c.sent_at), now, |t| t >= w.measure_from && (!closed || now <= w.end));
            done = 1;
        }
        if self.closed && now < w.end && self.spec.protocol != BenchProtocol::GrpcBidi {
            self.open(now);
        }
        done
    }
}

/// One connection of the closed loop.
pub(super) async fn closed_loop(
    id: u32,
    mut stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    w.wait_start().await;
    let mut c = Client::new(id, spec, true);
    let t0 = Instant::now();
    for _ in 0..spec.inflight {
        c.open(t0);
    }
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let cancel = Canceller::new();
    let mut hint = ReadHint::new(16 * 1024);
    loop {
        if !c.wbuf.is_empty() && !write_batch(&mut stream, &mut c.wbuf, acc).await {
            return;
        }
        if c.calls.is_empty() {
            return;
        }
        match read_more(&mut stream, &mut rbuf, cancel.handle(), &mut hint).await {
            Ok(n) if n > 0 => {}
            _ => {
                acc.borrow_mut().error("io");
                return;
            }
        }
        let now = Instant::now();
        let mut done = 0;
        loop {
            let (head, f) = match frame::cut(&mut rbuf, frame::MAX_MAX_FRAME_SIZE) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(_) => {
                    acc.borrow_mut().error("malformed_frame");
                    return;
                }
            };
            let (alive, n) = c.on_frame(head, &f, acc, w, now);
            done += n;
            if !alive {
                return;
            }
        }
        progress.fetch_add(done, Ordering::Relaxed);
    }
}

/// Calls in flight on one connection of the open loop, at most.
const OPEN_LOOP_BACKLOG: usize = 100_000;

/// One connection of the open loop: the writer starts calls at their intended times (and
/// flushes what the reader queued: SETTINGS and PING ACKs, WINDOW_UPDATEs); the reader
/// accounts replies. Replies still owed when sending stops get a grace period, then count
/// as timeouts.
pub(super) async fn open_loop(
    id: u32,
    stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    rate: f64,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    let (mut rd, mut wr) = stream.into_split();
    let c = RefCell::new(Client::new(id, spec, false));
    // Woken when the reader queued bytes to write or ended.
    let wake = Notify::default();
    let (done_sending, reader_done) = (Cell::new(false), Cell::new(false));
    let due = w.schedule(id, rate);
    let writer = async {
        let mut buf = BytesMut::new();
        let mut k: u32 = 0;
        while !reader_done.get() {
            let woken = wake.notified();
            let next = due(k);
            let now = Instant::now();
            if next < w.end {
                if next > now && c.borrow().wbuf.is_empty() {
                    monoio::select! {
                        _ = monoio::time::sleep(next - now) => {}
                        _ = woken => {}
                    }
                }
            } else {
                done_sending.set(true);
                if c.borrow().wbuf.is_empty() {
                    woken.await;
                    continue;
                }
            }
            {
                let now = Instant::now();
                let mut cl = c.borrow_mut();
                let mut at = due(k);
                while at <= now && at < w.end {
                    if cl.calls.len() >= cl.peer_streams.min(OPEN_LOOP_BACKLOG) {
                        acc.borrow_mut().error("backlog_skipped");
                    } else {
                        cl.open(at);
                    }
                    k += 1;
                    at = due(k);
                }
                std::mem::swap(&mut buf, &mut cl.wbuf);
            }
            if !buf.is_empty() && !write_batch(&mut wr, &mut buf, acc).await {
                return;
            }
        }
    };
    let reader = async {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let cancel = Canceller::new();
        let mut hint = ReadHint::new(16 * 1024);
        loop {
            if done_sending.get() && c.borrow().calls.is_empty() {
                break;
            }
            let read = read_more(&mut rd, &mut rbuf, cancel.handle(), &mut hint);
            match monoio::time::timeout_at((w.end + Duration::from_secs(2)).into(), read).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => {
                    acc.borrow_mut().error("io");
                    break;
                }
                Err(_) => {
                    let left = c.borrow().calls.len() as u64;
                    acc.borrow_mut().errors_n("timeout", left);
                    break;
                }
            }
            let now = Instant::now();
            let mut done = 0;
            let mut alive = true;
            {
                let mut cl = c.borrow_mut();
                while alive {
                    let (head, f) = match frame::cut(&mut rbuf, frame::MAX_MAX_FRAME_SIZE) {
                        Ok(Some(x)) => x,
                        Ok(None) => break,
                        Err(_) => {
                            acc.borrow_mut().error("malformed_frame");
                            alive = false;
                            break;
                        }
                    };
                    let (ok, n) = cl.on_frame(head, &f, acc, w, now);
                    done += n;
                    alive = ok;
                }
                if !cl.wbuf.is_empty() {
                    wake.notify_all();
                }
            }
            progress.fetch_add(done, Ordering::Relaxed);
            if !alive {
                break;
            }
        }
        reader_done.set(true);
        wake.notify_all();
    };
    monoio::join!(writer, reader);
}
