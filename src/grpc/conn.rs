//! What both ends of the proxy share per HTTP/2 connection: the write queue, the HPACK
//! contexts, the peer's settings, connection-level flow control in both directions, and the
//! handling of connection-level frames (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, GOAWAY),
//! written once for the client side and the upstream side, with the same flood limits.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use monoio::io::Canceller;

use super::config::GrpcListener;
use super::stats::H2Counters;
use crate::grpc::h2::block::{Assembler, Block, BlockLimits};
use crate::grpc::h2::frame::{
    self, kind, settings::Settings, FrameError, Head, Reason, StreamId, DEFAULT_WINDOW, HEAD_LEN, MIN_MAX_FRAME_SIZE,
};
use crate::grpc::h2::hpack::{Decoder, Encoder, Field};
use crate::local::{Notify, Outbox};
use crate::metrics::ListenerMetrics;
use crate::stats::Stats;

/// What the peer announced in its SETTINGS.
pub struct PeerSettings {
    pub max_frame_size: Cell<u32>,
    pub initial_window: Cell<u32>,
    pub max_concurrent_streams: Cell<u32>,
}

/// Which end of the proxy a connection is: it decides which direction of a stream the
/// connection receives (client side: responses; upstream side: requests).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// A stream waiting for room on a connection (a window, or the write queue).
pub trait Parked {
    /// Closed streams are dropped from the list when it is swept.
    fn is_closed(&self) -> bool;
    /// Room again: go on writing the direction this side receives (`Side::Client`: the
    /// response; `Side::Upstream`: the request).
    fn resume(self: Rc<Self>, side: Side);
}

/// Limits on what a peer may make us do (flood guards), the same on both sides: a client's
/// come from its listener's keys, an upstream's are the listener defaults.
#[derive(Clone, Copy, Debug)]
pub struct ControlLimits {
    /// Entries in one SETTINGS frame.
    pub max_settings_entries: usize,
    /// PING and SETTINGS acknowledgements queued while the peer does not read them.
    pub max_pending_control_frames: usize,
    /// Consecutive empty DATA frames without END_STREAM.
    pub max_empty_data_frames: u32,
    /// Stream resets and stream errors the peer causes, and SETTINGS that change every
    /// stream's window, in a burst, refilled at `resets_per_second` (rapid reset).
    pub reset_burst: u32,
    pub resets_per_second: u32,
}

impl ControlLimits {
    /// A client's, from its listener's keys.
    pub fn client(l: &GrpcListener) -> ControlLimits {
        ControlLimits {
            max_settings_entries: l.max_settings_entries,
            max_pending_control_frames: l.max_pending_control_frames,
            max_empty_data_frames: l.max_empty_data_frames,
            reset_burst: l.max_reset_burst,
            resets_per_second: l.max_resets_per_second,
        }
    }

    /// An upstream's: the listener defaults, but for up to 64 SETTINGS entries.
    pub fn upstream() -> ControlLimits {
        ControlLimits { max_settings_entries: 64, ..ControlLimits::client(&GrpcListener::default()) }
    }
}

/// A token bucket (the reset budget).
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(burst: u32, rate: u32) -> Bucket {
        Bucket { tokens: burst as f64, last: Instant::now(), rate: rate as f64, burst: burst as f64 }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a connection-level frame (or a stream-level frame that is not DATA or a header block)
/// leaves for the side that read it to do.
#[derive(Debug)]
pub enum Control {
    /// Nothing: it was handled here (PRIORITY, a SETTINGS ACK, a PING answered, a connection
    /// WINDOW_UPDATE applied, an unknown frame type ignored).
    Done,
    /// The peer's SETTINGS were applied to the connection: the side shifts its streams' send
    /// windows by `delta` (the change of the initial window), then calls `settings_done`.
    Settings { delta: i64 },
    /// The answer to a PING of ours.
    PingAck([u8; 8]),
    /// GOAWAY: no new streams above `last_stream`.
    GoAway { last_stream: StreamId, reason: Reason, debug: Vec<u8> },
    /// WINDOW_UPDATE on a stream.
    StreamWindow { stream: StreamId, inc: u32 },
    /// RST_STREAM.
    Reset { stream: StreamId, reason: Reason },
    /// PUSH_PROMISE (each side refuses it in its own words).
    PushPromise,
}

/// Below this many parked streams the list is not swept.
const PARKED_SWEEP_MIN: usize = 16;

/// One HTTP/2 connection's shared state (either side).
pub struct Core {
    side: Side,
    /// The worker's counters (HTTP/2 resets, GOAWAYs and abuse limits are counted here).
    stats: Rc<Stats>,
    /// Cancels the reader's in-flight read.
    reader: RefCell<Canceller>,
    /// The header block being assembled from HEADERS + CONTINUATION.
    assembler: RefCell<Assembler>,
    /// Streams whose data for this connection waits for room (a window, or the write queue).
    parked: RefCell<Vec<Rc<dyn Parked>>>,
    /// `parked` is swept of closed streams when it reaches this length.
    parked_sweep_at: Cell<usize>,
    pub out: Outbox,
    /// Woken each time the writer takes what is queued.
    pub drained: Rc<Notify>,
    /// Above this many queued bytes, no more DATA is queued here (the senders wait, and are
    /// not credited) and a client connection stops reading.
    pub out_limit: usize,
    pub enc: RefCell<Encoder>,
    pub dec: RefCell<Decoder>,
    pub peer: PeerSettings,
    /// Bytes we may still send on the connection (peer's connection window).
    pub send_window: Cell<i64>,
    /// Bytes the peer may still send us on the connection.
    pub recv_window: Cell<i64>,
    /// Bytes forwarded (or dropped) that we have not given back with WINDOW_UPDATE yet.
    recv_credit: Cell<u32>,
    /// The connection window we keep granting.
    pub conn_window: u32,
    /// Our SETTINGS_INITIAL_WINDOW_SIZE (each stream's receive window).
    pub stream_window: u32,
    /// ACKs queued since the write queue was last seen empty (control-frame flood guard).
    acks_queued: Cell<usize>,
    /// The flood guards.
    pub limits: ControlLimits,
    /// What is left of the reset budget.
    budget: RefCell<Bucket>,
    /// Empty DATA frames without END_STREAM in a row.
    empty_data: Cell<u32>,
    /// The stream whose HEADERS said it depends on itself: a stream error once its block
    /// is decoded (RFC 9113 §5.3.1).
    self_dependent: Cell<Option<StreamId>>,
}

impl Core {
    pub fn new(
        side: Side,
        out_limit: usize,
        conn_window: u32,
        stream_window: u32,
        header_table: usize,
        limits: ControlLimits,
        stats: Rc<Stats>,
    ) -> Core {
        let drained = Rc::new(Notify::default());
        Core {
            side,
            stats,
            reader: RefCell::new(Canceller::new()),
            assembler: RefCell::new(Assembler::default()),
            parked: RefCell::new(Vec::new()),
            parked_sweep_at: Cell::new(PARKED_SWEEP_MIN),
            out: Outbox::with_drain_notify(drained.clone()),
            drained,
            out_limit,
            enc: RefCell::new(Encoder::new()),
            dec: RefCell::new(Decoder::new(header_table)),
            peer: PeerSettings {
                max_frame_size: Cell::new(MIN_MAX_FRAME_SIZE),
                initial_window: Cell::new(DEFAULT_WINDOW),
                max_concurrent_streams: Cell::new(100),
            },
            send_window: Cell::new(DEFAULT_WINDOW as i64),
            recv_window: Cell::new(conn_window as i64),
            recv_credit: Cell::new(0),
            conn_window,
            stream_window,
            acks_queued: Cell::new(0),
            limits,
            budget: RefCell::new(Bucket::new(limits.reset_burst, limits.resets_per_second)),
            empty_data: Cell::new(0),
            self_dependent: Cell::new(None),
        }
    }

    /// Whether the HEADERS of the block just assembled for `stream` made it depend on
    /// itself (a stream PROTOCOL_ERROR, raised after decoding).
    pub fn took_self_dependency(&self, stream: StreamId) -> bool {
        self.self_dependent.take() == Some(stream)
    }

    /// A client connection's core: bytes written and request latencies are counted on
    /// `listener` (see `Outbox::for_client`).
    pub fn metered(mut self, listener: Rc<ListenerMetrics>) -> Core {
        self.out = Outbox::for_client(Some(self.drained.clone()), listener);
        self
    }

    /// Our opening: SETTINGS, then a WINDOW_UPDATE raising the connection window from the
    /// protocol's 65,535 to `conn_window`.
    pub fn opening(&self, s: &Settings, dst: &mut BytesMut) {
        frame::settings::encode(s, dst);
        if self.conn_window > DEFAULT_WINDOW {
            frame::window_update::encode(StreamId::ZERO, self.conn_window - DEFAULT_WINDOW, dst);
        }
    }

    /// A handle that cancels the reader's next read.
    pub fn read_handle(&self) -> monoio::io::CancelHandle {
        self.reader.borrow().handle()
    }

    /// Stops the reader: cancels its read, and wakes it if it is paused on a full write queue.
    pub fn cancel_reader(&self) {
        self.drained.notify_all();
        crate::io::cancel_reads(&self.reader);
    }

    /// While a header block is open, only CONTINUATION frames of its stream may arrive
    /// (RFC 9113 §6.10).
    pub fn check_block_order(&self, head: &Head) -> Result<(), FrameError> {
        match self.assembler.borrow().in_progress() {
            Some(s) if head.kind != kind::CONTINUATION || head.stream != s => {
                Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "frame inside a header block"))
            }
            _ => Ok(()),
        }
    }

    /// Feeds a HEADERS or CONTINUATION frame to the assembler; returns the block once whole.
    pub fn header_frame(
        &self,
        head: &Head,
        mut frame: BytesMut,
        limits: BlockLimits,
    ) -> Result<Option<Block>, FrameError> {
        let payload = &frame[HEAD_LEN..];
        let mut asm = self.assembler.borrow_mut();
        if head.kind == kind::CONTINUATION {
            let c = frame::continuation::parse(head, payload)?;
            return asm.continuation(head.stream, c.end_headers, &payload[c.fragment], limits);
        }
        let h = frame::headers::parse(head, payload)?;
        if h.depends_on == Some(head.stream) {
            self.self_dependent.set(Some(head.stream));
        }
        let mut frag = frame.split_off(HEAD_LEN + h.fragment.start);
        frag.truncate(h.fragment.len());
        asm.start(head.stream, h.end_stream, h.end_headers, frag, limits)
    }

    /// A stream's data for this connection waits for room. Streams that closed while parked
    /// are dropped whenever the list has doubled since the last sweep (otherwise they would
    /// stay until the window opens or the connection ends, holding their memory and their
    /// place in the worker's coalescing count).
    pub fn park(&self, s: Rc<dyn Parked>) {
        let mut parked = self.parked.borrow_mut();
        if parked.len() >= self.parked_sweep_at.get() {
            parked.retain(|p| !p.is_closed());
            self.parked_sweep_at.set((parked.len() * 2).max(PARKED_SWEEP_MIN));
        }
        parked.push(s);
    }

    pub fn clear_parked(&self) {
        self.parked.borrow_mut().clear();
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.borrow().is_empty()
    }

    /// Room again: flush every parked stream (each parks itself again if still blocked).
    pub fn unpark_all(&self) {
        let parked = std::mem::take(&mut *self.parked.borrow_mut());
        for s in parked {
            s.resume(self.side);
        }
    }

    pub fn push(&self, b: BytesMut) {
        self.out.push(b);
    }

    /// Encodes a header list with this connection's encoder and queues it as HEADERS (+
    /// CONTINUATION) on `stream`. Encoding and queueing happen together, so blocks reach the
    /// socket in the order the encoder produced them (the peer's decoder depends on it).
    pub fn write_headers<'a>(&self, stream: StreamId, fields: impl IntoIterator<Item = Field<'a>>, end_stream: bool) {
        // The block is encoded into the write queue's batch behind room for the frame
        // head, so the usual block (one frame) costs no buffer of its own and no copy.
        let max = self.peer.max_frame_size.get() as usize;
        let mut enc = self.enc.borrow_mut();
        self.out.push_built(256, |out| {
            let at = out.len();
            out.resize(at + frame::HEAD_LEN, 0);
            enc.encode(fields, out);
            if out.len() - at - frame::HEAD_LEN <= max {
                frame::headers::head_in_place(stream, end_stream, &mut out[at..]);
            } else {
                let block = out.split_off(at + frame::HEAD_LEN);
                out.truncate(at);
                frame::headers::encode(stream, &block, end_stream, max, out);
            }
        });
    }

    fn h2(&self) -> &H2Counters {
        &self.stats.protocols.h2
    }

    /// Counts a GOAWAY this side sends by its own encoding (a drain's).
    pub fn count_goaway(&self, reason: Reason) {
        H2Counters::count(&self.h2().goaway_sent, self.side as usize, reason.0);
    }

    pub fn write_rst(&self, stream: StreamId, reason: Reason) {
        H2Counters::count(&self.h2().rst_sent, self.side as usize, reason.0);
        let mut b = BytesMut::with_capacity(13);
        frame::rst_stream::encode(stream, reason, &mut b);
        self.push(b);
    }

    pub fn write_window_update(&self, stream: StreamId, inc: u32) {
        let mut b = BytesMut::with_capacity(13);
        frame::window_update::encode(stream, inc, &mut b);
        self.push(b);
    }

    /// Accounts a received DATA frame against the connection window, and counts empty DATA
    /// frames without END_STREAM in a row (a CPU-burning pattern).
    pub fn on_data_received(&self, flow_len: usize, end_stream: bool) -> Result<(), frame::FrameError> {
        let left = self.recv_window.get() - flow_len as i64;
        if left < 0 {
            return Err(frame::FrameError::Connection(Reason::FLOW_CONTROL_ERROR, "DATA beyond the connection window"));
        }
        self.recv_window.set(left);
        if flow_len == 0 && !end_stream {
            let n = self.empty_data.get() + 1;
            self.empty_data.set(n);
            if n > self.limits.max_empty_data_frames {
                return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many empty DATA frames"));
            }
        } else {
            self.empty_data.set(0);
        }
        Ok(())
    }

    /// Spends one unit of the reset budget (a reset, a stream error, a window-changing
    /// SETTINGS the peer caused); `false` when it is spent: the caller closes the connection
    /// with ENHANCE_YOUR_CALM.
    pub fn take_budget(&self) -> bool {
        self.budget.borrow_mut().take()
    }

    /// Gives `n` received bytes back to the peer (they were forwarded or dropped), in batches
    /// of half the connection window.
    pub fn credit(&self, n: usize) {
        if n == 0 {
            return;
        }
        let c = self.recv_credit.get() + n as u32;
        if c >= self.conn_window / 2 {
            self.recv_credit.set(0);
            self.recv_window.set(self.recv_window.get() + c as i64);
            self.write_window_update(StreamId::ZERO, c);
        } else {
            self.recv_credit.set(c);
        }
    }

    /// Adds to our send window on the connection; an overflow is a FLOW_CONTROL_ERROR.
    pub fn grow_send_window(&self, inc: u32) -> Result<(), frame::FrameError> {
        let w = self.send_window.get() + inc as i64;
        if w > frame::MAX_WINDOW as i64 {
            return Err(frame::FrameError::Connection(Reason::FLOW_CONTROL_ERROR, "connection window above 2^31-1"));
        }
        self.send_window.set(w);
        Ok(())
    }

    /// Queues a PING or SETTINGS acknowledgement. `false`: the peer has made us queue more
    /// than `max_pending` of them without reading (a flood): the caller closes the connection.
    pub fn queue_ack(&self, ack: BytesMut, max_pending: usize) -> bool {
        if self.out.queued_bytes() == 0 {
            self.acks_queued.set(0);
        }
        let n = self.acks_queued.get() + 1;
        self.acks_queued.set(n);
        if n > max_pending {
            return false;
        }
        self.push(ack);
        true
    }

    /// Sends GOAWAY and closes the write side once it is flushed.
    pub fn go_away(&self, last_stream: StreamId, reason: Reason, debug: &str) {
        H2Counters::count(&self.h2().goaway_sent, self.side as usize, reason.0);
        if reason == Reason::ENHANCE_YOUR_CALM {
            self.h2().limit(debug);
        }
        let mut b = BytesMut::with_capacity(17 + debug.len());
        frame::goaway::encode(last_stream, reason, debug.as_bytes(), &mut b);
        self.push(b);
        self.out.close();
    }

    /// Applies a SETTINGS frame from the peer; returns the change of the initial stream
    /// window (to apply to every stream's send window).
    pub fn apply_settings(&self, s: &Settings) -> i64 {
        if let Some(n) = s.header_table_size {
            self.enc.borrow_mut().set_max_table_size(n as usize);
        }
        if let Some(n) = s.max_frame_size {
            self.peer.max_frame_size.set(n);
        }
        if let Some(n) = s.max_concurrent_streams {
            self.peer.max_concurrent_streams.set(n);
        }
        match s.initial_window_size {
            Some(n) => {
                let delta = n as i64 - self.peer.initial_window.get() as i64;
                self.peer.initial_window.set(n);
                delta
            }
            None => 0,
        }
    }
}

impl Core {
    /// Handles every frame that is neither DATA nor part of a header block, the same way on
    /// both sides: SETTINGS are applied (the caller shifts stream windows, then calls
    /// `settings_done`), PINGs answered and connection WINDOW_UPDATEs applied here, each
    /// acknowledgement under the flood limit; what concerns one stream or the side's own policy
    /// is returned.
    pub fn control_frame(&self, head: &Head, payload: &[u8]) -> Result<Control, FrameError> {
        let limits = &self.limits;
        match head.kind {
            kind::PRIORITY => frame::priority::parse(head, payload).map(|_| Control::Done),
            kind::RST_STREAM => {
                let reason = frame::rst_stream::parse(head, payload)?;
                H2Counters::count(&self.h2().rst_received, self.side as usize, reason.0);
                Ok(Control::Reset { stream: head.stream, reason })
            }
            kind::SETTINGS => match frame::settings::parse(head, payload, limits.max_settings_entries)? {
                frame::settings::Frame::Ack => Ok(Control::Done),
                frame::settings::Frame::Settings(s) => Ok(Control::Settings { delta: self.apply_settings(&s) }),
            },
            kind::PUSH_PROMISE => Ok(Control::PushPromise),
            kind::PING => {
                let p = frame::ping::parse(head, payload)?;
                if p.ack {
                    return Ok(Control::PingAck(p.data));
                }
                let mut ack = BytesMut::with_capacity(17);
                frame::ping::encode(frame::ping::Ping { ack: true, data: p.data }, &mut ack);
                if !self.queue_ack(ack, limits.max_pending_control_frames) {
                    return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "PING flood"));
                }
                Ok(Control::Done)
            }
            kind::GOAWAY => {
                let g = frame::goaway::parse(head, payload)?;
                H2Counters::count(&self.h2().goaway_received, self.side as usize, g.reason.0);
                Ok(Control::GoAway { last_stream: g.last_stream, reason: g.reason, debug: payload[g.debug].to_vec() })
            }
            kind::WINDOW_UPDATE => {
                let inc = frame::window_update::parse(head, payload)?;
                if !head.stream.is_zero() {
                    return Ok(Control::StreamWindow { stream: head.stream, inc });
                }
                self.grow_send_window(inc)?;
                self.unpark_all();
                Ok(Control::Done)
            }
            _ => Ok(Control::Done), // unknown frame types are ignored (RFC 9113 §4.1)
        }
    }

    /// The second half of a peer's SETTINGS, once the side has shifted its streams' windows:
    /// the ACK (under the flood limit), and streams a larger window lets go on.
    pub fn settings_done(&self, delta: i64) -> Result<(), FrameError> {
        let limits = &self.limits;
        let mut ack = BytesMut::with_capacity(HEAD_LEN);
        frame::settings::encode_ack(&mut ack);
        if !self.queue_ack(ack, limits.max_pending_control_frames) {
            return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "SETTINGS flood"));
        }
        if delta > 0 {
            self.unpark_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::h2::frame::HeadersFlags;
    use crate::grpc::h2::hpack::HeaderList;

    /// Everything `core` queued, as (head, payload) frames.
    fn queued_frames(core: &Core) -> Vec<(Head, Vec<u8>)> {
        use std::future::Future;
        let mut items = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let taken = std::pin::pin!(core.out.take_all(&mut items)).as_mut().poll(&mut cx);
        assert!(matches!(taken, std::task::Poll::Ready(true)), "nothing queued");
        let mut wire = BytesMut::new();
        for i in items {
            wire.extend_from_slice(&i);
        }
        let mut frames = Vec::new();
        while let Some((h, f)) = frame::cut(&mut wire, 1 << 24).unwrap() {
            frames.push((h, f[frame::HEAD_LEN..].to_vec()));
        }
        assert!(wire.is_empty());
        frames
    }

    fn decode(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut list = HeaderList::new();
        Decoder::new(4096).decode(block, 1 << 20, &mut list).unwrap();
        list.iter().map(|f| (f.name.to_vec(), f.value.to_vec())).collect()
    }

    #[test]
    fn header_blocks_are_one_frame_or_split_into_continuations() {
        let core = Core::new(Side::Client, 1 << 20, 65_535, 65_535, 4096, ControlLimits::upstream(), Rc::default());
        // Small: one HEADERS frame with END_HEADERS (and END_STREAM when asked).
        let small = [Field { name: b":status", value: b"200", never_indexed: false }];
        core.write_headers(StreamId::new(3), small, true);
        let frames = queued_frames(&core);
        assert_eq!(frames.len(), 1);
        let (h, p) = &frames[0];
        let flags = HeadersFlags::from(h.flags);
        assert_eq!(
            (h.kind, flags, h.stream),
            (kind::HEADERS, HeadersFlags::END_HEADERS | HeadersFlags::END_STREAM, StreamId::new(3))
        );
        assert_eq!(decode(p), [(b":status".to_vec(), b"200".to_vec())]);
        let first_block = p.clone();

        // Large (values that neither index nor compress): HEADERS then CONTINUATION frames
        // of at most the peer's frame size, END_HEADERS on the last, END_STREAM on HEADERS.
        let values: Vec<Vec<u8>> =
            (0..3u8).map(|k| (0..9000u32).map(|i| b'!' + ((i * 7 + k as u32 * 13) % 90) as u8).collect()).collect();
        let names = [b"x-a".as_slice(), b"x-b", b"x-c"];
        let fields = names.iter().zip(&values).map(|(n, v)| Field { name: n, value: v, never_indexed: false });
        core.write_headers(StreamId::new(5), fields, false);
        let frames = queued_frames(&core);
        assert!(frames.len() >= 2, "{} frames", frames.len());
        let max = core.peer.max_frame_size.get() as usize;
        let mut block = Vec::new();
        for (i, (h, p)) in frames.iter().enumerate() {
            let last = i == frames.len() - 1;
            assert_eq!(h.stream, StreamId::new(5));
            assert_eq!(h.kind, if i == 0 { kind::HEADERS } else { kind::CONTINUATION });
            let flags = HeadersFlags::from(h.flags);
            assert_eq!(flags.is_end_headers(), last, "frame {i}");
            assert!(!flags.is_end_stream(), "frame {i}");
            assert!(p.len() <= max, "frame {i}: {} octets", p.len());
            block.extend_from_slice(p);
        }
        // Decoded with a decoder that saw the first block too (same connection state).
        let mut dec = Decoder::new(4096);
        let mut list = HeaderList::new();
        dec.decode(&first_block, 1 << 20, &mut list).unwrap();
        dec.decode(&block, 1 << 20, &mut list).unwrap();
        let got: Vec<(Vec<u8>, Vec<u8>)> = list.iter().map(|f| (f.name.to_vec(), f.value.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = names.iter().zip(&values).map(|(n, v)| (n.to_vec(), v.clone())).collect();
        assert_eq!(got, want);
    }

    fn ping(data: u64) -> (Head, Vec<u8>) {
        let mut b = BytesMut::new();
        frame::ping::encode(frame::ping::Ping { ack: false, data: data.to_be_bytes() }, &mut b);
        (Head::parse(&b).unwrap(), b[HEAD_LEN..].to_vec())
    }

    /// The flood guards are the connection's, so the upstream side has them too (it queued
    /// PING ACKs without a limit before they were shared).
    #[test]
    fn control_floods_end_the_connection_on_either_side() {
        let small = GrpcListener { max_pending_control_frames: 3, max_empty_data_frames: 2, ..Default::default() };
        for (side, limits) in
            [(Side::Client, ControlLimits::client(&small)), (Side::Upstream, ControlLimits::upstream())]
        {
            let core = Core::new(side, 1 << 20, 65_535, 65_535, 4096, limits, Rc::default());
            // PINGs answered while the peer reads nothing: the (max + 1)th is a flood.
            let max = limits.max_pending_control_frames;
            for i in 0..max as u64 {
                let (h, p) = ping(i);
                assert!(matches!(core.control_frame(&h, &p), Ok(Control::Done)), "{i}");
            }
            let (h, p) = ping(99);
            let flood = core.control_frame(&h, &p).unwrap_err();
            assert_eq!(flood, FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "PING flood"));
            // Once the peer reads what was queued, PINGs are answered again.
            queued_frames(&core);
            assert!(core.control_frame(&h, &p).is_ok());

            // Empty DATA frames without END_STREAM in a row.
            for _ in 0..limits.max_empty_data_frames {
                core.on_data_received(0, false).unwrap();
            }
            core.on_data_received(0, true).unwrap(); // END_STREAM resets the count
            for _ in 0..limits.max_empty_data_frames {
                core.on_data_received(0, false).unwrap();
            }
            let e = core.on_data_received(0, false).unwrap_err();
            assert_eq!(e, FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many empty DATA frames"));
        }
        assert_eq!(ControlLimits::upstream().max_pending_control_frames, 1000, "the listener default");
    }

    #[test]
    fn the_reset_budget_refills_at_its_rate() {
        let limits = ControlLimits { reset_burst: 3, resets_per_second: 1, ..ControlLimits::upstream() };
        let core = Core::new(Side::Upstream, 1 << 20, 65_535, 65_535, 4096, limits, Rc::default());
        assert!((0..3).all(|_| core.take_budget()), "the burst");
        assert!(!core.take_budget(), "spent");
    }
}
