//! The upstream side of the gRPC proxy: one multiplexed HTTP/2 client connection per pool
//! slot. Stream ids are allocated when a request's HEADERS are written; the upstream's own
//! SETTINGS_MAX_CONCURRENT_STREAMS and the cluster's `max_requests_per_connection` both cap
//! the streams open on it. A GOAWAY stops new streams at once; a lost connection sends the
//! streams it never wrote elsewhere and ends every other stream on it with UNAVAILABLE.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::BytesMut;
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Splitable};

use super::config::GrpcListener;
use super::conn::{Control, ControlLimits, Core, Side};
use super::errors::reset_code;
use super::stream::{Stream, UpstreamEnd};
use crate::config::ClusterConfig;
use crate::error::{ErrorKind, LostCause};
use crate::grpc::h2::block::{Block, BlockLimits};
use crate::grpc::h2::frame::{
    self, kind, settings::Settings, FrameError, Head, Reason, StreamId, HEAD_LEN, MAX_STREAM_ID,
};
use crate::grpc::h2::hpack::{DecodeError, HeaderList};
use crate::hosts::Host;
use crate::io::{read_more, write_outbox, ReadHint};
use crate::local::{CatchUnwind, IdMap, Notify};
use crate::pool::Member;
use crate::stats::Stats;

/// A pool of HTTP/2 upstream connections.
pub type GrpcPool = crate::pool::Pool<GrpcUpstream>;

/// Response header lists larger than this from an upstream fail their stream.
const MAX_RESPONSE_HEADERS: usize = 64 << 10;
/// CONTINUATION frames accepted from an upstream per block.
const MAX_RESPONSE_CONTINUATIONS: usize = 64;

pub struct GrpcUpstream {
    pub core: Core,
    pub peer: Rc<str>,
    /// The endpoint's shared state: requests in flight, outlier detection.
    host: Rc<Host>,
    streams: RefCell<IdMap<StreamId, Rc<Stream>>>,
    next_id: Cell<StreamId>,
    max_streams: usize,
    going_away: Cell<bool>,
    dead: Cell<bool>,
    retired: Cell<bool>,
    /// The upstream's first SETTINGS arrived. Until then only the stream that caused the
    /// connect is opened (its limits are unknown: it may allow fewer than the default 100).
    settings_seen: Cell<bool>,
    capacity: Rc<Notify>,
    stats: Rc<Stats>,
}

impl Member for GrpcUpstream {
    const SHARE_NEW_CONNECTIONS: bool = true;
    const SPREAD: bool = true;

    fn load(&self) -> usize {
        self.streams.borrow().len()
    }

    fn start<S>(stream: S, host: Rc<Host>, cluster: &ClusterConfig, capacity: Rc<Notify>, stats: Rc<Stats>) -> Rc<Self>
    where
        S: Splitable + 'static,
        S::OwnedRead: CancelableAsyncReadRent + 'static,
        S::OwnedWrite: CancelableAsyncWriteRent + 'static,
    {
        let d = GrpcListener::default();
        let conn = Rc::new(GrpcUpstream {
            core: Core::new(
                Side::Upstream,
                cluster.max_write_buffer.get(),
                d.initial_connection_window,
                d.initial_stream_window,
                4096,
                ControlLimits::upstream(),
                stats.clone(),
            ),
            peer: host.label.clone(),
            host,
            streams: RefCell::new(IdMap::default()),
            next_id: Cell::new(StreamId::new(1)),
            max_streams: cluster.max_requests_per_connection,
            going_away: Cell::new(false),
            dead: Cell::new(false),
            retired: Cell::new(false),
            settings_seen: Cell::new(false),
            capacity,
            stats,
        });
        let mut opening = BytesMut::with_capacity(64);
        opening.extend_from_slice(frame::PREFACE);
        let ours = Settings {
            enable_push: Some(false),
            initial_window_size: Some(d.initial_stream_window),
            max_header_list_size: Some(MAX_RESPONSE_HEADERS as u32),
            ..Settings::default()
        };
        conn.core.opening(&ours, &mut opening);
        conn.core.push(opening);
        let (rd, mut wr) = stream.into_split();
        let c = conn.clone();
        monoio::spawn(async move {
            match CatchUnwind::new(write_outbox(&mut wr, &c.core.out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let cause = LostCause::WriteFailed(Rc::new(e));
                    let _ = CatchUnwind::new(async { c.die(cause, None) }).await;
                }
                Err(_) => c.stats.panics.set(c.stats.panics.get() + 1),
            }
        });
        let c = conn.clone();
        monoio::spawn(async move {
            if CatchUnwind::new(c.clone().unpark_on_drain()).await.is_err() {
                c.stats.panics.set(c.stats.panics.get() + 1);
                c.die(LostCause::Panicked("writer wake-up"), None);
            }
        });
        let c = conn.clone();
        monoio::spawn(async move {
            if CatchUnwind::new(c.clone().read_loop(rd)).await.is_err() {
                c.stats.panics.set(c.stats.panics.get() + 1);
                c.die(LostCause::Panicked("reader"), None);
            }
        });
        conn
    }

    fn is_dead(&self) -> bool {
        self.dead.get()
    }

    fn has_capacity(&self) -> bool {
        !self.dead.get()
            && !self.going_away.get()
            && !self.retired.get()
            && self.settings_seen.get()
            && self.next_id.get().get() < MAX_STREAM_ID - 2
            && self.streams.borrow().len() < self.max_streams.min(self.core.peer.max_concurrent_streams.get() as usize)
    }

    fn retire(&self) {
        self.retired.set(true);
        self.close_if_idle();
    }

    fn mark_retired(&self) {
        self.retired.set(true);
    }

    fn queued_bytes(&self) -> usize {
        self.core.out.queued_bytes()
    }

    fn warming(&self) -> bool {
        !self.settings_seen.get() && !self.dead.get()
    }
}

impl UpstreamEnd for GrpcUpstream {
    fn core(&self) -> &Core {
        &self.core
    }

    fn peer(&self) -> &str {
        &self.peer
    }

    fn register(&self, stream: Rc<Stream>) -> StreamId {
        GrpcUpstream::register(self, stream)
    }

    fn forget(&self, id: StreamId) {
        GrpcUpstream::forget(self, id)
    }

    fn host(&self) -> Option<Rc<Host>> {
        Some(self.host.clone())
    }

    fn finished(&self, status: Option<u32>, failed: Option<&'static str>) {
        match (failed, status) {
            (None, Some(UNAVAILABLE)) => self.host.failure("grpc-status UNAVAILABLE"),
            (None, Some(_)) => self.host.success(),
            (Some("timeout"), _) => self.host.failure("request timeout"),
            _ => {}
        }
    }
}

/// `grpc-status` UNAVAILABLE: the upstream could not serve the call.
const UNAVAILABLE: u32 = 14;

impl GrpcUpstream {
    /// Allocates the next stream id for `stream` (called right before its HEADERS are queued).
    pub fn register(&self, stream: Rc<Stream>) -> StreamId {
        let id = self.next_id.get();
        self.next_id.set(id.next());
        self.streams.borrow_mut().insert(id, stream);
        self.host.request_started();
        self.stats.protocols.grpc.upstream_streams.set(self.stats.protocols.grpc.upstream_streams.get() + 1);
        id
    }

    async fn unpark_on_drain(self: Rc<Self>) {
        // Checked before each wait too: a connection retired before this task first ran has
        // had its last drain already, and waiting for another would hold it forever.
        while !self.dead.get() {
            self.core.drained.notified().await;
            if self.dead.get() {
                return;
            }
            if self.core.has_parked() {
                self.core.unpark_all();
            }
        }
    }

    /// A stream ended: its slot is free.
    pub fn forget(&self, id: StreamId) {
        let was_full = !self.has_capacity();
        if self.streams.borrow_mut().remove(&id).is_some() {
            self.host.requests_ended(1);
        }
        if was_full {
            self.capacity.notify_all();
        }
        self.close_if_idle();
    }

    fn close_if_idle(&self) {
        if (self.retired.get() || self.going_away.get()) && self.streams.borrow().is_empty() && !self.dead.get() {
            self.dead.set(true);
            let mut b = BytesMut::with_capacity(17);
            frame::goaway::encode(StreamId::ZERO, Reason::NO_ERROR, b"", &mut b);
            self.core.count_goaway(Reason::NO_ERROR);
            self.core.push(b);
            self.core.out.close();
            self.core.cancel_reader();
            self.capacity.notify_all();
        }
    }

    fn all_streams(&self) -> Vec<Rc<Stream>> {
        self.streams.borrow().values().cloned().collect()
    }

    fn stream(&self, id: StreamId) -> Option<Rc<Stream>> {
        self.streams.borrow().get(&id).cloned()
    }

    /// The connection is gone (`cause`): no new streams. A stream whose HEADERS were still
    /// queued here never reached the upstream: it is opened again elsewhere if it may be
    /// (`Stream::refused`). Every other stream ends with the status the error table gives a
    /// lost upstream (UNAVAILABLE). `last_words` (our GOAWAY) is the only frame still sent.
    fn die(&self, cause: LostCause, last_words: Option<BytesMut>) {
        if self.dead.replace(true) && self.streams.borrow().is_empty() {
            return;
        }
        // The writer takes the whole queue at once and a frame is queued in one step, so
        // what is left is whole frames that never reached the kernel.
        let unsent = self.core.out.take_unsent_then(last_words);
        self.core.cancel_reader();
        self.core.clear_parked();
        self.core.drained.notify_all();
        let inflight = self.streams.borrow().len();
        let mut retried = 0;
        if inflight > 0 && !unsent.is_empty() {
            let unsent: Vec<u8> = unsent.concat();
            for id in frame::headers_in(&unsent) {
                if let Some(s) = self.stream(id) {
                    retried += usize::from(s.refused());
                }
            }
        }
        let streams = self.all_streams();
        if inflight > 0 {
            self.host.lost_with_requests();
            self.stats.upstream_lost.set(self.stats.upstream_lost.get() + 1);
        }
        match (streams.len(), retried) {
            (0, 0) => {}
            (n, 0) => log::warn!("upstream {}: {cause}; failing {n} streams", self.peer),
            (n, r) => log::warn!(
                "upstream {}: {cause}; {r} streams it never sent go to another connection, failing {n}",
                self.peer
            ),
        }
        let inflight = streams.len();
        let err = ErrorKind::UpstreamLost { endpoint: self.peer.clone(), cause, inflight }.into();
        for s in streams {
            s.fail(&err);
        }
        self.capacity.notify_all();
    }

    async fn read_loop<R: CancelableAsyncReadRent>(self: Rc<Self>, mut rd: R) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut hint = ReadHint::new(16 * 1024);
        loop {
            loop {
                let next = match frame::cut(&mut buf, frame::MIN_MAX_FRAME_SIZE) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    // The oversized frame is still in the buffer: the connection is unusable.
                    Err(FrameError::Connection(r, why) | FrameError::Stream(_, r, why)) => {
                        return self.frame_error(FrameError::Connection(r, why));
                    }
                };
                if let Err(e) = self.on_frame(next.0, next.1) {
                    self.frame_error(e);
                    if self.dead.get() {
                        return;
                    }
                }
            }
            if self.dead.get() && self.streams.borrow().is_empty() {
                return;
            }
            let handle = self.core.read_handle();
            match read_more(&mut rd, &mut buf, handle, &mut hint).await {
                Ok(0) => return self.die(LostCause::Closed, None),
                Ok(_) => {}
                Err(e) => return self.die(LostCause::ReadFailed(Rc::new(e)), None),
            }
        }
    }

    fn frame_error(&self, e: FrameError) {
        match e {
            FrameError::Connection(r, why) => {
                log::warn!("upstream {}: protocol error {r}: {why}", self.peer);
                let mut b = BytesMut::new();
                frame::goaway::encode(StreamId::ZERO, r, why.as_bytes(), &mut b);
                self.core.count_goaway(r);
                if r == Reason::ENHANCE_YOUR_CALM {
                    self.stats.protocols.h2.limit(why);
                }
                self.die(LostCause::ProtocolError(why), Some(b));
            }
            FrameError::Stream(id, r, why) => {
                log::debug!("upstream {}: stream {id}: {r}: {why}", self.peer);
                match self.stream(id) {
                    // fail() cancels the upstream stream itself.
                    Some(s) => s.fail(&ErrorKind::UpstreamProtocol(why).into()),
                    None => self.core.write_rst(id, r),
                }
                if !self.core.take_budget() {
                    self.frame_error(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many stream errors"));
                }
            }
        }
    }

    fn on_frame(self: &Rc<Self>, head: Head, frame: BytesMut) -> Result<(), FrameError> {
        self.core.check_block_order(&head)?;
        match head.kind {
            kind::DATA => return self.on_data(head, frame),
            kind::HEADERS | kind::CONTINUATION => {
                let limits =
                    BlockLimits { max_block: MAX_RESPONSE_HEADERS, max_continuations: MAX_RESPONSE_CONTINUATIONS };
                return match self.core.header_frame(&head, frame, limits)? {
                    Some(b) => self.on_block(b),
                    None => Ok(()),
                };
            }
            _ => {}
        }
        // Whether a stream could be opened here before the peer's SETTINGS change its limits.
        let had_capacity = head.kind == kind::SETTINGS && self.has_capacity();
        match self.core.control_frame(&head, &frame[HEAD_LEN..])? {
            Control::Done | Control::PingAck(_) => Ok(()),
            Control::Reset { stream, .. } if self.idle(stream) => {
                Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream"))
            }
            Control::StreamWindow { stream, .. } if self.idle(stream) => {
                Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"))
            }
            Control::Reset { stream, reason } => {
                if let Some(s) = self.stream(stream) {
                    // Refused before it was processed: another connection may take it.
                    if reason != Reason::REFUSED_STREAM || !s.refused() {
                        s.on_upstream_reset(reason);
                    }
                }
                Ok(())
            }
            Control::Settings { delta } => {
                // Waiters held back while this connection was warming may now use it, or
                // open another one.
                let first = !self.settings_seen.replace(true);
                let streams = if delta != 0 { self.all_streams() } else { Vec::new() };
                Stream::shift_all(&self.core, streams, Side::Upstream, delta)?;
                self.core.settings_done(delta)?;
                if first || (!had_capacity && self.has_capacity()) {
                    self.capacity.notify_all();
                }
                Ok(())
            }
            Control::PushPromise => {
                Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "PUSH_PROMISE after ENABLE_PUSH=0"))
            }
            Control::GoAway { last_stream, reason, debug } => {
                self.on_goaway(last_stream, reason, &debug);
                Ok(())
            }
            Control::StreamWindow { stream, inc } => match self.stream(stream) {
                Some(s) => s.on_upstream_window(inc).map_err(|r| FrameError::Stream(stream, r.reason, r.why)),
                None => Ok(()),
            },
        }
    }

    /// GOAWAY: no new streams here; streams above `last` were not processed, so the client
    /// gets REFUSED_STREAM, which gRPC clients retry transparently.
    fn on_goaway(&self, last: StreamId, reason: Reason, debug: &[u8]) {
        log::info!("upstream {}: GOAWAY {reason} last stream {last} {}", self.peer, String::from_utf8_lossy(debug));
        self.going_away.set(true);
        self.capacity.notify_all();
        let refused: Vec<_> =
            self.streams.borrow().iter().filter(|(id, _)| **id > last).map(|(_, s)| s.clone()).collect();
        for s in refused {
            if s.refused() {
                continue;
            }
            s.count_error(&ErrorKind::UpstreamRefused);
            s.reset(Some(reset_code(&ErrorKind::UpstreamRefused.into())), None);
        }
        self.close_if_idle();
    }

    /// Whether `id` was never opened here (RFC 9113 §5.1 idle: only HEADERS and PRIORITY
    /// may name it; a server cannot open streams, push being off).
    fn idle(&self, id: StreamId) -> bool {
        !id.is_client_initiated() || id >= self.next_id.get()
    }

    fn on_data(self: &Rc<Self>, head: Head, frame: BytesMut) -> Result<(), FrameError> {
        let d = frame::data::parse(&head, &frame[HEAD_LEN..])?;
        self.core.on_data_received(d.flow_len, d.end_stream)?;
        let Some(s) = self.stream(head.stream) else {
            self.core.credit(d.flow_len);
            if self.idle(head.stream) {
                return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            return Ok(()); // a stream that ended or that we reset: late frames are ignored
        };
        s.on_response_data(frame, d.data, d.flow_len, d.end_stream)
            .map_err(|r| FrameError::Stream(head.stream, r.reason, r.why))
    }

    fn on_block(self: &Rc<Self>, b: Block) -> Result<(), FrameError> {
        let mut list = HeaderList::new();
        match self.core.dec.borrow_mut().decode(&b.block, MAX_RESPONSE_HEADERS, &mut list) {
            Ok(()) => {}
            Err(DecodeError::ListTooLarge) => {
                return Err(FrameError::Stream(b.stream, Reason::CANCEL, "response headers over the limit"));
            }
            Err(DecodeError::Compression(why)) => {
                return Err(FrameError::Connection(Reason::COMPRESSION_ERROR, why));
            }
        }
        let self_dependent = self.core.took_self_dependency(b.stream);
        let Some(s) = self.stream(b.stream) else {
            if self.idle(b.stream) {
                return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "HEADERS on a stream we did not open"));
            }
            return Ok(());
        };
        if self_dependent {
            return Err(FrameError::Stream(b.stream, Reason::PROTOCOL_ERROR, "stream depends on itself"));
        }
        s.on_response_headers(list, b.end_stream).map_err(|r| FrameError::Stream(b.stream, r.reason, r.why))
    }
}
