//! The reply side of one downstream (client) connection and the pending-request entries that
//! point back to it. Upstream connections push replies here; the client's writer task drains it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::Canceller;

use crate::error::RequestError;
use crate::local::{FrameBytes, Notify, Outbox, COPY_MAX};
use crate::stats::Stats;
use crate::thrift::codec::patch::{reply_fits, restore_reply_in_place};
use crate::thrift::codec::{encode_exception, restore_reply, Dialect, FrameInfo, OriginalSeq};
use crate::thrift::errors::exception;
use crate::worker::state::DownstreamConn;

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
    pub idle_mark: Cell<Option<(u64, Instant)>>,
    /// True while the read buffer holds part of a frame (not idle even if nothing is in flight).
    pub partial: Cell<bool>,
    /// Cancels the reader's in-flight read (drain close, forced close).
    pub read_canceller: RefCell<Canceller>,
    /// The method name of the last request, shared by its pending entries: a client calls
    /// the same few methods, so most requests need no allocation for their name.
    last_name: RefCell<Option<Rc<[u8]>>>,
    pub stats: Rc<Stats>,
}

impl ThriftSession {
    pub fn new(stats: Rc<Stats>) -> Self {
        let progress = Rc::new(Notify::default());
        ThriftSession {
            out: Outbox::with_drain_notify(progress.clone()),
            inflight: Cell::new(0),
            progress,
            activity: Cell::new(0),
            idle_mark: Cell::new(None),
            partial: Cell::new(false),
            read_canceller: RefCell::new(Canceller::new()),
            last_name: RefCell::new(None),
            stats,
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
        let mut c = self.read_canceller.borrow_mut();
        let old = std::mem::take(&mut *c);
        *c = old.cancel();
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
        self.stats.exceptions.set(self.stats.exceptions.get() + 1);
        self.out.push(buf);
    }
}

/// Drain: a Thrift client gets no announcement (framed Thrift has none; TTHeader `crrst` is
/// not sent yet), its connection is closed once idle, or at the drain timeout.
impl DownstreamConn for ThriftSession {
    fn start_drain(self: Rc<Self>) {}

    fn close_if_idle(&self, idle: Duration, now: Instant) {
        if !self.is_idle() {
            self.idle_mark.set(None);
            return;
        }
        let seen = self.activity.get();
        match self.idle_mark.get() {
            Some((s, since)) if s == seen => {
                if now.duration_since(since) >= idle {
                    self.cancel_read();
                }
            }
            _ => self.idle_mark.set(Some((seen, now))),
        }
    }

    fn close_now(self: Rc<Self>) {
        self.cancel_read();
        self.out.close();
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
    pub deadline: Instant,
}

impl Pending {
    /// Restores the client's seqID into a reply and hands it to the client.
    pub fn complete(self, reply: impl FrameBytes, info: &FrameInfo) {
        let out = &self.downstream.out;
        if reply.len() < COPY_MAX && reply_fits(info, &self.orig) {
            out.push_copy(&reply, |copy| restore_reply_in_place(copy, info, &self.orig));
        } else {
            out.push(restore_reply(reply.into_owned(), info, &self.orig));
        }
        self.downstream.stats.replies.set(self.downstream.stats.replies.get() + 1);
        self.downstream.request_done();
    }

    /// Answers the request with the exception for `err`.
    pub fn fail(self, err: &RequestError) {
        self.downstream.send_error(self.dialect, &self.name, &self.orig, err);
        self.downstream.request_done();
    }
}
