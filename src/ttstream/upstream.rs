//! One multiplexed upstream TTHeader Streaming connection: streams of many clients, each under
//! a stream id allocated here (non-zero, unique on this connection), patched into every frame
//! both ways. A writer task drains its outbox; a reader task cuts the server's frames and hands
//! each to the client stream it maps to. Frames for ids it no longer maps are dropped, as Kitex
//! drops them. A connection that fails resets every stream on it, and no other.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use bytes::{Buf, BytesMut};
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller, Splitable};

use crate::config::ClusterConfig;
use crate::error::{ErrorKind, LostCause, RequestError};
use crate::hosts::Host;
use crate::io::{read_more, write_outbox, ReadHint};
use crate::local::{CatchUnwind, IdMap, Notify, Outbox, COPY_MAX};
use crate::metrics::now_us;
use crate::pool::Member;
use crate::stats::Stats;
use crate::thrift::codec::frame_len;
use crate::ttstream::codec::{encode_exception, parse, patch_sid, FrameType, StreamFrame};
use crate::ttstream::errors::CONNECTION_CLOSED;

/// Largest step by which the read buffer grows towards an announced frame length.
const GROW_STEP: usize = 64 * 1024;

/// What an upstream connection needs of the client side of a stream.
pub trait StreamClient {
    /// A frame of client stream `dsid` from the server, its stream id already `dsid`, read at
    /// `at` (`metrics::now_us`, one clock read per read, not per frame).
    fn deliver(&self, dsid: i32, frame: &[u8], f: &StreamFrame, at: u64);
    /// The upstream connection is gone (or cannot carry the stream on): the stream ends with
    /// `err`.
    fn cut(&self, dsid: i32, err: &RequestError);
}

/// Where an upstream stream goes back to.
struct Mapped {
    client: Weak<dyn StreamClient>,
    dsid: i32,
}

/// A pool of ttstream upstream connections (one cluster, one worker).
pub type TtPool = crate::pool::Pool<TtUpstream>;

pub struct TtUpstream {
    /// The endpoint, for log lines and error messages.
    pub peer: Rc<str>,
    host: Rc<Host>,
    out: Outbox,
    streams: RefCell<IdMap<i32, Mapped>>,
    next_sid: Cell<i32>,
    max_streams: usize,
    max_frame: usize,
    max_write_buffer: usize,
    dead: Cell<bool>,
    /// Its pool was replaced by a reload: no new streams, close once none is left.
    retired: Cell<bool>,
    reader: RefCell<Canceller>,
    /// Pool-wide: a stream slot freed, the write queue drained, or a connection died.
    capacity: Rc<Notify>,
    stats: Rc<Stats>,
    /// When the last read completed (`metrics::now_us`).
    read_at: Cell<u64>,
}

impl TtUpstream {
    pub fn is_dead(&self) -> bool {
        self.dead.get()
    }

    /// Streams open on it.
    pub fn streams(&self) -> usize {
        self.streams.borrow().len()
    }

    /// Bytes queued for the server (a server that stopped reading leaves them piling up).
    pub fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    /// Over the cluster's `max_write_buffer`: clients stop being read until it drains.
    pub fn is_full(&self) -> bool {
        self.out.queued_bytes() >= self.max_write_buffer
    }

    /// Woken when a stream slot frees, the write queue drains or the connection dies.
    pub fn capacity(&self) -> &Rc<Notify> {
        &self.capacity
    }

    /// Opens a stream for client stream `dsid` of `client`: its id on this connection.
    pub fn open(&self, client: Weak<dyn StreamClient>, dsid: i32) -> i32 {
        let mut streams = self.streams.borrow_mut();
        let sid = loop {
            let sid = self.next_sid.get();
            // Non-zero, positive, wrapping below i32::MAX (0 is reserved for the connection).
            self.next_sid.set(if sid >= i32::MAX - 1 { 1 } else { sid + 1 });
            if !streams.contains_key(&sid) {
                break sid;
            }
        };
        streams.insert(sid, Mapped { client, dsid });
        self.host.request_started();
        self.stats.protocols.ttstream.upstream_streams.set(self.stats.protocols.ttstream.upstream_streams.get() + 1);
        sid
    }

    /// Queues a client's frame for stream `sid` of this connection, its id patched.
    pub fn forward(&self, frame: &[u8], f: &StreamFrame, sid: i32) {
        if frame.len() < COPY_MAX {
            self.out.push_copy(frame, |copy| patch_sid(copy, f, sid));
        } else {
            let mut owned = BytesMut::from(frame);
            patch_sid(&mut owned, f, sid);
            self.out.push(owned);
        }
    }

    /// Resets stream `sid` towards the server (the client went away or reset it, or the proxy
    /// gave up on it) and forgets it.
    pub fn reset(&self, sid: i32, method: &[u8], message: &str) {
        if self.forget(sid) {
            let mut b = BytesMut::new();
            encode_exception(&mut b, sid, FrameType::Rst, method, CONNECTION_CLOSED, message);
            self.out.push(b);
        }
    }

    /// The stream ended both ways: its id is free again. False if it was not mapped.
    pub fn forget(&self, sid: i32) -> bool {
        if self.streams.borrow_mut().remove(&sid).is_none() {
            return false;
        }
        self.host.requests_ended(1);
        self.capacity.notify_all();
        self.close_if_retired_and_idle();
        true
    }

    /// The stream ended normally (the server's Trailer met the client's): counts for the
    /// endpoint's outlier detection as a success.
    pub fn success(&self) {
        self.host.success();
    }

    /// The server sent nothing for a stream by its deadline: counts towards the endpoint's
    /// outlier ejection, as a Thrift request timeout does.
    pub fn timed_out(&self) {
        self.host.failure("stream timeout");
    }

    /// Stops taking streams and resets every stream on it with an error naming `cause`.
    pub fn die(&self, cause: LostCause) {
        if self.dead.replace(true) {
            return;
        }
        self.out.close_and_clear();
        self.cancel_reader();
        let lost: Vec<Mapped> = self.streams.borrow_mut().drain().map(|(_, m)| m).collect();
        if !lost.is_empty() {
            self.stats.upstream_lost.set(self.stats.upstream_lost.get() + 1);
            log::warn!("upstream {}: {cause}; resetting {} TTHeader streams on it", self.peer, lost.len());
            self.host.requests_ended(lost.len());
            self.host.lost_with_requests();
        }
        let err: RequestError =
            ErrorKind::UpstreamLost { endpoint: self.peer.clone(), cause, inflight: lost.len() }.into();
        for m in lost {
            if let Some(c) = m.client.upgrade() {
                c.cut(m.dsid, &err);
            }
        }
        self.capacity.notify_all();
    }

    pub fn retire(&self) {
        self.retired.set(true);
        self.close_if_retired_and_idle();
    }

    fn close_if_retired_and_idle(&self) {
        if self.retired.get() && self.streams.borrow().is_empty() && !self.dead.get() {
            // Let the writer finish what is queued (the last Trailer or Rst), then close.
            self.dead.set(true);
            self.out.close();
            self.cancel_reader();
            self.capacity.notify_all();
        }
    }

    fn cancel_reader(&self) {
        crate::io::cancel_reads(&self.reader);
    }

    async fn read_loop<R: CancelableAsyncReadRent>(self: Rc<Self>, mut rd: R) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut hint = ReadHint::new(16 * 1024);
        loop {
            while let Some(len) = frame_len(&buf) {
                if len > self.max_frame {
                    log::warn!("upstream {}: frame of {len} bytes over max_frame_size {}", self.peer, self.max_frame);
                    return self.die(LostCause::UnparseableOversizedReply);
                }
                if buf.len() < len {
                    buf.reserve((len - buf.len()).min(GROW_STEP));
                    break;
                }
                self.on_frame(&mut buf[..len]);
                buf.advance(len);
                if self.dead.get() {
                    return;
                }
            }
            if self.dead.get() {
                return;
            }
            let handle = self.reader.borrow().handle();
            match read_more(&mut rd, &mut buf, handle, &mut hint).await {
                Ok(0) => return self.die(LostCause::Closed),
                Ok(_) => self.read_at.set(now_us()),
                Err(e) => return self.die(LostCause::ReadFailed(Rc::new(e))),
            }
        }
    }

    fn on_frame(&self, frame: &mut [u8]) {
        let f = match parse(frame) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("upstream {}: unparseable TTHeader Streaming frame ({e:?}); closing", self.peer);
                return self.die(LostCause::MalformedReply);
            }
        };
        let target = self.streams.borrow().get(&f.sid).map(|m| (m.client.upgrade(), m.dsid));
        let Some((client, dsid)) = target else {
            // A late frame for a stream that ended (the answer to our Rst, say): dropped.
            let t = &self.stats.protocols.ttstream;
            t.late_frames.set(t.late_frames.get() + 1);
            return;
        };
        let Some(client) = client else {
            let method = f.method.clone().map(|r| frame[r].to_vec()).unwrap_or_default();
            return self.reset(f.sid, &method, "client connection closed");
        };
        patch_sid(frame, &f, dsid);
        client.deliver(dsid, frame, &f, self.read_at.get());
    }
}

impl Member for TtUpstream {
    /// A burst of new streams waits for the connection being opened (it takes
    /// `max_requests_per_connection` streams) instead of opening one each.
    const SHARE_NEW_CONNECTIONS: bool = true;

    fn load(&self) -> usize {
        self.streams()
    }

    fn start<S>(stream: S, host: Rc<Host>, cluster: &ClusterConfig, capacity: Rc<Notify>, stats: Rc<Stats>) -> Rc<Self>
    where
        S: Splitable + 'static,
        S::OwnedRead: CancelableAsyncReadRent + 'static,
        S::OwnedWrite: CancelableAsyncWriteRent + 'static,
    {
        let conn = Rc::new(TtUpstream {
            peer: host.label.clone(),
            host,
            out: Outbox::with_drain_notify(capacity.clone()),
            streams: RefCell::new(IdMap::default()),
            next_sid: Cell::new(1),
            max_streams: cluster.max_requests_per_connection,
            max_frame: cluster.max_frame_size.get(),
            max_write_buffer: cluster.max_write_buffer.get(),
            dead: Cell::new(false),
            retired: Cell::new(false),
            reader: RefCell::new(Canceller::new()),
            capacity,
            stats,
            read_at: Cell::new(0),
        });
        let (rd, mut wr) = stream.into_split();
        let c = conn.clone();
        monoio::spawn(async move {
            if let Err(p) = CatchUnwind::new(c.clone().read_loop(rd)).await {
                c.stats.panics.set(c.stats.panics.get() + 1);
                log::error!("upstream {}: reader panicked: {p}", c.peer);
                c.die(LostCause::Panicked("reader"));
            }
        });
        let c = conn.clone();
        monoio::spawn(async move {
            if let Err(e) = write_outbox(&mut wr, &c.out).await {
                c.die(LostCause::WriteFailed(Rc::new(e)));
            }
        });
        conn
    }

    fn is_dead(&self) -> bool {
        self.dead.get()
    }

    fn has_capacity(&self) -> bool {
        !self.dead.get() && !self.retired.get() && self.streams() < self.max_streams && !self.is_full()
    }

    fn retire(&self) {
        TtUpstream::retire(self)
    }

    fn mark_retired(&self) {
        self.retired.set(true);
    }

    fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }
}
