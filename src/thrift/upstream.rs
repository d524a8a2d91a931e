//! One multiplexed upstream connection: a writer task draining an outbox, a reader task
//! matching replies to pending requests by seqID, and a sweeper failing requests whose
//! deadline passed. A connection that failed is marked dead at once and never handed a new
//! request; every request still pending on it gets an INTERNAL_ERROR.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller, Splitable};

use crate::config::ClusterConfig;
use crate::error::{ErrorKind, LostCause, RequestError};
use crate::hosts::Host;
use crate::io::{read_more, write_outbox, ReadHint};
use crate::local::{CatchUnwind, FrameBytes, Notify, Outbox, COPY_MAX};
use crate::metrics::now_us;
use crate::pool::Member;
use crate::stats::Stats;
use crate::thrift::codec::message::SeqId;
use crate::thrift::codec::patch::{patch_request_in_place, request_fits};
use crate::thrift::codec::{frame_len, parse_frame, patch_request, FrameInfo, ParseError};
use crate::thrift::seqtable::SeqTable;
use crate::thrift::session::Pending;

/// How much of an oversized reply is buffered to find out which request it answers.
const PEEK_LIMIT: usize = 320 * 1024;
/// Largest step by which a read buffer grows towards an announced frame length.
const GROW_STEP: usize = 64 * 1024;

/// Limits one upstream connection works under.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Requests in flight.
    pub max_inflight: usize,
    /// Largest reply frame.
    pub max_frame: usize,
    /// Bytes queued for writing before the connection counts as full.
    pub max_write_buffer: usize,
}

/// A pool of Thrift upstream connections (one cluster, one dialect, one worker).
pub type ThriftPool = crate::pool::Pool<ThriftUpstream>;

pub struct ThriftUpstream {
    /// The endpoint, for log lines and error messages.
    pub peer: Rc<str>,
    /// The endpoint's shared state: requests in flight, outlier detection.
    host: Rc<Host>,
    out: Outbox,
    pending: RefCell<SeqTable<Pending>>,
    /// The deadline the sweeper sleeps until; `None` while it waits for a first request.
    next_wake: Cell<Option<u64>>,
    /// Wakes the sweeper when a request has an earlier deadline than it sleeps until.
    deadline_added: Notify,
    next_seq: Cell<SeqId>,
    limits: ConnLimits,
    dead: Cell<bool>,
    /// Its pool was replaced by a reload, or the server announced `crrst`: take no new
    /// requests, close as soon as nothing is pending.
    retired: Cell<bool>,
    reader: RefCell<Canceller>,
    /// ThriftPool-wide notifier: a slot freed, the write queue drained, or a connection died.
    capacity: Rc<Notify>,
    stats: Rc<Stats>,
    /// When the last read completed (`metrics::now_us`): the end of the latency of the
    /// requests whose replies it carried.
    read_at: Cell<u64>,
    /// Its pool: requests it never wrote go back there when it dies.
    pool: RefCell<Weak<ThriftPool>>,
    /// Why the reader ended while the writer was mid-write: the writer dies with it once its
    /// write returns (`lose`).
    read_lost: RefCell<Option<LostCause>>,
}

impl ThriftUpstream {
    /// Starts the tasks for a connected stream and returns the connection.
    pub fn start<S>(
        stream: S,
        host: Rc<Host>,
        limits: ConnLimits,
        capacity: Rc<Notify>,
        stats: Rc<Stats>,
    ) -> Rc<ThriftUpstream>
    where
        S: Splitable + 'static,
        S::OwnedRead: CancelableAsyncReadRent + 'static,
        S::OwnedWrite: CancelableAsyncWriteRent + 'static,
    {
        let conn = Rc::new(ThriftUpstream {
            peer: host.label.clone(),
            host,
            out: Outbox::with_drain_notify(capacity.clone()),
            pending: RefCell::new(SeqTable::default()),
            next_wake: Cell::new(None),
            deadline_added: Notify::default(),
            next_seq: Cell::new(SeqId::FIRST),
            limits,
            dead: Cell::new(false),
            retired: Cell::new(false),
            reader: RefCell::new(Canceller::new()),
            capacity,
            stats,
            read_at: Cell::new(0),
            pool: RefCell::new(Weak::new()),
            read_lost: RefCell::new(None),
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
            let written = write_outbox(&mut wr, &c.out).await;
            let read_lost = c.read_lost.borrow_mut().take();
            match (read_lost, written) {
                (Some(cause), _) => c.die(cause),
                (None, Err(e)) => c.die(LostCause::WriteFailed(Rc::new(e))),
                (None, Ok(())) => {}
            }
        });
        let c = conn.clone();
        monoio::spawn(async move {
            let _ = CatchUnwind::new(c.sweep_loop()).await;
        });
        conn
    }

    pub fn is_dead(&self) -> bool {
        self.dead.get()
    }

    pub fn inflight(&self) -> usize {
        self.pending.borrow().len()
    }

    pub fn has_capacity(&self) -> bool {
        !self.dead.get()
            && !self.retired.get()
            && self.inflight() < self.limits.max_inflight
            && self.out.queued_bytes() < self.limits.max_write_buffer
    }

    /// Bytes waiting to be written (drain waits for these).
    pub fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    fn alloc_seq(&self) -> SeqId {
        let mut pending = self.pending.borrow_mut();
        loop {
            let seq = self.next_seq.get();
            // Never 0 (ref §1.5 rule 8); wrap below i32::MAX.
            self.next_seq.set(seq.next());
            if pending.vacant(seq) {
                return seq;
            }
        }
    }

    /// Patches a fresh seqID into `frame` and queues it. `pending` is `None` for ONEWAY.
    pub fn send(&self, frame: impl FrameBytes, info: &FrameInfo, pending: Option<Pending>) {
        let seq = self.alloc_seq();
        if let Some(p) = pending {
            let deadline = p.deadline;
            self.pending.borrow_mut().insert(seq, p);
            self.host.request_started();
            if self.next_wake.get().is_none_or(|w| deadline < w) {
                self.deadline_added.notify_all();
            }
        }
        if frame.len() < COPY_MAX && request_fits(info, seq) {
            self.out.push_copy(&frame, |copy| patch_request_in_place(copy, info, seq));
        } else {
            self.out.push(patch_request(frame.into_owned(), info, seq));
        }
    }

    /// Stops accepting requests, drops unsent frames (their clients are answered here) and
    /// fails everything pending: the upstream was lost (`cause`).
    pub fn die(&self, cause: LostCause) {
        if !self.dead.replace(true) {
            // Requests still in the outbox never reached the upstream: they may go elsewhere.
            let resend = self.take_unsent();
            self.out.close_and_clear();
            self.cancel_reader();
            let pending: Vec<Pending> = self.pending.borrow_mut().drain().map(|(_, p)| p).collect();
            if !pending.is_empty() {
                self.stats.upstream_lost.set(self.stats.upstream_lost.get() + 1);
                log::warn!("upstream {}: {cause}; failing {} requests in flight", self.peer, pending.len());
            }
            let inflight = pending.len();
            if inflight > 0 {
                self.host.requests_ended(inflight);
                self.host.lost_with_requests();
            }
            let err = ErrorKind::UpstreamLost { endpoint: self.peer.clone(), cause, inflight }.into();
            for p in pending {
                p.fail(&err);
            }
            if !resend.is_empty() {
                self.host.requests_ended(resend.len());
                self.resend(resend, &err);
            }
            self.deadline_added.notify_all();
            self.capacity.notify_all();
        }
    }

    /// The requests whose frames never reached the kernel: those a failed write handed none
    /// of, then those still queued. Taken out of the pending table with their frames.
    fn take_unsent(&self) -> Vec<(BytesMut, Pending)> {
        if self.pool.borrow().strong_count() == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut pending = self.pending.borrow_mut();
        let mut unsent = self.out.take_unhanded(frame_len);
        unsent.extend(self.out.take_unsent());
        for mut buf in unsent {
            // Whole frames back to back (batches of small ones, or one large one).
            while let Some(len) = frame_len(&buf).filter(|&l| l <= buf.len()) {
                let frame = buf.split_to(len);
                let Ok(info) = parse_frame(&frame, 64 * 1024) else { break };
                if let Some(p) = pending.remove(info.msg.seq) {
                    out.push((frame, p));
                }
            }
        }
        out
    }

    /// Sends each of `requests` again through the pool, away from this endpoint, at most
    /// `retries` times each and within the cluster's retry budget; one that cannot go fails
    /// with `err`.
    fn resend(&self, requests: Vec<(BytesMut, Pending)>, err: &RequestError) {
        let Some(pool) = self.pool.borrow().upgrade() else {
            return requests.into_iter().for_each(|(_, p)| p.fail(err));
        };
        for (frame, mut p) in requests {
            if u32::from(p.retries) >= pool.retries() {
                p.fail(err);
                continue;
            }
            let Some(guard) = pool.begin_retry() else {
                p.fail(err);
                continue;
            };
            p.retries += 1;
            let (pool, host, err) = (pool.clone(), self.host.clone(), err.clone());
            monoio::spawn(async move {
                let _guard = guard;
                let Ok(info) = parse_frame(&frame, 64 * 1024) else { return p.fail(&err) };
                let left = Duration::from_micros(p.deadline.saturating_sub(now_us()));
                match pool.acquire(std::time::Instant::now() + left, 0, 0, Some(&host)).await {
                    Ok(conn) => conn.send(frame, &info, Some(p)),
                    Err(e) => p.fail(&e),
                }
            });
        }
    }

    /// Takes no new requests and closes once nothing is pending (pool retired by a reload,
    /// or the server said `crrst`).
    pub fn retire(&self) {
        self.retired.set(true);
        self.close_if_retired_and_idle();
    }

    /// Marks a connection retired without closing it (its opener still sends one request).
    pub fn mark_retired(&self) {
        self.retired.set(true);
    }

    fn close_if_retired_and_idle(&self) {
        if self.retired.get() && self.pending.borrow().is_empty() && !self.dead.get() {
            // Let the writer finish what is queued (ONEWAY frames), then close.
            self.dead.set(true);
            self.out.close();
            self.cancel_reader();
            // The sweeper sleeps until a deadline is added: wake it to see the end.
            self.deadline_added.notify_all();
            self.capacity.notify_all();
        }
    }

    fn cancel_reader(&self) {
        crate::io::cancel_reads(&self.reader);
    }

    async fn read_loop<R: CancelableAsyncReadRent>(self: Rc<Self>, mut rd: R) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut hint = ReadHint::new(16 * 1024);
        // Bytes of an oversized reply still to be thrown away.
        let mut skip = 0usize;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.advance(n);
                skip -= n;
            }
            while skip == 0 {
                let Some(len) = frame_len(&buf) else { break };
                if len > self.limits.max_frame {
                    match self.refuse_oversized(&buf, len) {
                        Some(true) => {
                            skip = len;
                            let n = skip.min(buf.len());
                            buf.advance(n);
                            skip -= n;
                            continue;
                        }
                        Some(false) => return self.die(LostCause::UnparseableOversizedReply),
                        None => break, // need more of its header
                    }
                }
                if buf.len() < len {
                    buf.reserve((len - buf.len()).min(GROW_STEP));
                    break;
                }
                if len < COPY_MAX {
                    // Copied into the client's outbox from here: nothing is split off.
                    self.on_reply(&buf[..len]);
                    buf.advance(len);
                } else {
                    self.on_reply(buf.split_to(len));
                }
            }
            if self.dead.get() {
                return;
            }
            let handle = self.reader.borrow().handle();
            match read_more(&mut rd, &mut buf, handle, &mut hint).await {
                Ok(0) => return self.lose(LostCause::Closed),
                Ok(_) => self.read_at.set(now_us()),
                Err(e) => return self.lose(LostCause::ReadFailed(Rc::new(e))),
            }
        }
    }

    /// The read side ended (`cause`). With a write in flight, the writer is stopped and dies
    /// with `cause` once that write returns: only then is it known which requests it handed
    /// to the kernel, and the rest may go elsewhere (on io_uring the reset usually reaches
    /// the reader first, with the failed write right behind it).
    fn lose(&self, cause: LostCause) {
        if self.out.is_writing() && !self.dead.get() {
            *self.read_lost.borrow_mut() = Some(cause);
            self.out.stop_writer();
        } else {
            self.die(cause);
        }
    }

    /// A reply over the limit fails only its own request; the connection lives on.
    /// `None`: need more bytes to read its header; `Some(false)`: cannot tell whose it is.
    fn refuse_oversized(&self, buf: &[u8], len: usize) -> Option<bool> {
        let info = match parse_frame(&buf[..buf.len().min(PEEK_LIMIT)], 64 * 1024) {
            Ok(info) => info,
            Err(ParseError::Incomplete) if buf.len() < PEEK_LIMIT => return None,
            Err(_) => return Some(false),
        };
        log::warn!("upstream {}: reply of {len} bytes over max_frame_size {}", self.peer, self.limits.max_frame);
        let removed = self.pending.borrow_mut().remove(info.msg.seq);
        if let Some(p) = removed {
            self.host.requests_ended(1);
            p.fail(&ErrorKind::ReplyTooLarge { len, max: self.limits.max_frame }.into());
            self.capacity.notify_all();
        }
        Some(true)
    }

    fn on_reply(&self, frame: impl FrameBytes) {
        let info = match parse_frame(&frame, 64 * 1024) {
            Ok(i) => i,
            Err(e) => {
                log::warn!("upstream {}: unparseable reply ({e:?}); closing", self.peer);
                return self.die(LostCause::MalformedReply);
            }
        };
        if info.crrst && !self.retired.get() {
            log::info!("upstream {}: server announced connection reset (crrst); retiring", self.peer);
            self.retired.set(true);
        }
        let was_full = self.inflight() >= self.limits.max_inflight;
        let removed = self.pending.borrow_mut().remove(info.msg.seq);
        match removed {
            Some(p) => {
                self.host.requests_ended(1);
                self.host.success();
                p.complete(frame, &info, self.read_at.get(), &self.peer);
                if was_full {
                    self.capacity.notify_all();
                }
            }
            None => self.stats.protocols.thrift.late_replies.set(self.stats.protocols.thrift.late_replies.get() + 1),
        }
        self.close_if_retired_and_idle();
    }

    async fn sweep_loop(self: Rc<Self>) {
        loop {
            let earliest = self.pending.borrow().values().map(|p| p.deadline).min();
            let Some(at) = earliest else {
                if self.dead.get() {
                    return;
                }
                self.next_wake.set(None);
                self.deadline_added.notified().await;
                continue;
            };
            let now = now_us();
            if at > now {
                self.next_wake.set(Some(at));
                let added = self.deadline_added.notified();
                monoio::select! {
                    _ = monoio::time::sleep(Duration::from_micros(at - now)) => {},
                    _ = added => {},
                }
                continue;
            }
            let expired: Vec<Pending> = {
                let mut pending = self.pending.borrow_mut();
                let seqs: Vec<SeqId> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(s, _)| s).collect();
                seqs.iter().filter_map(|s| pending.remove(*s)).collect()
            };
            self.host.requests_ended(expired.len());
            for p in expired {
                self.host.failure("request timeout");
                self.stats.timeouts.set(self.stats.timeouts.get() + 1);
                p.fail(&ErrorKind::Timeout { endpoint: Some(self.peer.clone()) }.into());
            }
            self.capacity.notify_all();
            self.close_if_retired_and_idle();
        }
    }
}

impl Member for ThriftUpstream {
    /// A burst that finds no connection waits for the one being opened (it takes
    /// `max_requests_per_connection`) instead of opening one each: a dialect's burst would
    /// otherwise take every connection slot of the endpoint from the cluster's other pools.
    const SHARE_NEW_CONNECTIONS: bool = true;

    /// Requests in flight (reported to the admin side; this pool does not spread).
    fn load(&self) -> usize {
        self.pending.borrow().len()
    }

    fn start<S>(stream: S, host: Rc<Host>, cluster: &ClusterConfig, capacity: Rc<Notify>, stats: Rc<Stats>) -> Rc<Self>
    where
        S: Splitable + 'static,
        S::OwnedRead: CancelableAsyncReadRent + 'static,
        S::OwnedWrite: CancelableAsyncWriteRent + 'static,
    {
        let limits = ConnLimits {
            max_inflight: cluster.max_requests_per_connection,
            max_frame: cluster.max_frame_size.get(),
            max_write_buffer: cluster.max_write_buffer.get(),
        };
        ThriftUpstream::start(stream, host, limits, capacity, stats)
    }
    fn is_dead(&self) -> bool {
        ThriftUpstream::is_dead(self)
    }
    fn has_capacity(&self) -> bool {
        ThriftUpstream::has_capacity(self)
    }
    fn retire(&self) {
        ThriftUpstream::retire(self)
    }
    fn mark_retired(&self) {
        ThriftUpstream::mark_retired(self)
    }
    fn queued_bytes(&self) -> usize {
        ThriftUpstream::queued_bytes(self)
    }
    fn joined(&self, pool: Weak<ThriftPool>) {
        *self.pool.borrow_mut() = pool;
    }
}
