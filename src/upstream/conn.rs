//! One multiplexed upstream connection: a writer task draining an outbox, a reader task
//! matching replies to pending requests by seqID, and a sweeper failing requests whose
//! deadline passed. A connection that failed is marked dead at once and never handed a new
//! request; every request still pending on it gets an INTERNAL_ERROR.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{CancelableAsyncReadRent, Canceller, Splitable};

use crate::io::{read_more, write_outbox};

use crate::local::{CatchUnwind, Notify, Outbox, SeqMap};
use crate::session::Pending;
use crate::stats::Stats;
use crate::thrift::{frame_len, parse_frame, patch_request, restore_reply, FrameInfo};

pub struct UpConn {
    /// The endpoint, for log lines and error messages.
    pub peer: Rc<str>,
    out: Outbox<BytesMut>,
    pending: RefCell<SeqMap<Pending>>,
    /// Deadlines by time; entries whose request already completed are skipped lazily.
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, i32)>>>,
    deadline_added: Notify,
    next_seq: Cell<i32>,
    max_inflight: usize,
    dead: Cell<bool>,
    /// Its pool was replaced by a reload: close as soon as nothing is pending.
    retired: Cell<bool>,
    reader: RefCell<Canceller>,
    /// Pool-wide notifier: a slot freed or a connection died.
    capacity: Rc<Notify>,
    stats: Rc<Stats>,
    max_frame: usize,
}

impl UpConn {
    /// Starts the tasks for a connected stream and returns the connection.
    pub fn start<S>(
        stream: S,
        peer: Rc<str>,
        max_inflight: usize,
        max_frame: usize,
        capacity: Rc<Notify>,
        stats: Rc<Stats>,
    ) -> Rc<UpConn>
    where
        S: Splitable + 'static,
        S::OwnedRead: CancelableAsyncReadRent + 'static,
        S::OwnedWrite: monoio::io::AsyncWriteRent + 'static,
    {
        let conn = Rc::new(UpConn {
            peer,
            out: Outbox::default(),
            pending: RefCell::new(SeqMap::default()),
            deadlines: RefCell::new(BinaryHeap::new()),
            deadline_added: Notify::default(),
            next_seq: Cell::new(1),
            max_inflight,
            dead: Cell::new(false),
            retired: Cell::new(false),
            reader: RefCell::new(Canceller::new()),
            capacity,
            stats,
            max_frame,
        });
        let (rd, wr) = stream.into_split();
        let c = conn.clone();
        monoio::spawn(async move {
            let name = c.peer.clone();
            if let Err(p) = CatchUnwind::new(c.clone().read_loop(rd)).await {
                c.stats.panics.set(c.stats.panics.get() + 1);
                log::error!("upstream {name}: reader panicked: {p}");
                c.die("upstream connection failed");
            }
        });
        let c = conn.clone();
        monoio::spawn(async move {
            if let Err(p) = CatchUnwind::new(c.clone().write_loop(wr)).await {
                c.stats.panics.set(c.stats.panics.get() + 1);
                log::error!("upstream {}: writer panicked: {p}", c.peer);
                c.die("upstream connection failed");
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
        !self.dead.get() && !self.retired.get() && self.inflight() < self.max_inflight
    }

    fn alloc_seq(&self) -> i32 {
        let pending = self.pending.borrow();
        loop {
            let seq = self.next_seq.get();
            // Never 0 (ref §1.5 rule 8); wrap below i32::MAX.
            self.next_seq.set(if seq >= i32::MAX - 1 { 1 } else { seq + 1 });
            if !pending.contains_key(&seq) {
                return seq;
            }
        }
    }

    /// Patches a fresh seqID into `frame` and queues it. `pending` is `None` for ONEWAY.
    pub fn send(&self, frame: BytesMut, info: &FrameInfo, pending: Option<Pending>) {
        let seq = self.alloc_seq();
        let frame = patch_request(frame, info, seq);
        if let Some(p) = pending {
            self.deadlines.borrow_mut().push(Reverse((p.deadline, seq)));
            self.pending.borrow_mut().insert(seq, p);
            self.deadline_added.notify_all();
        }
        self.out.push(frame);
    }

    /// Stops accepting requests and fails everything pending with `why`.
    pub fn die(&self, why: &str) {
        if !self.dead.replace(true) {
            self.out.close();
            self.cancel_reader();
            let pending: Vec<Pending> = self.pending.borrow_mut().drain().map(|(_, p)| p).collect();
            if !pending.is_empty() {
                self.stats.upstream_lost.set(self.stats.upstream_lost.get() + 1);
            }
            let msg = format!("{why}: {} ({} requests in flight)", self.peer, pending.len());
            for p in pending {
                p.fail(&msg);
            }
            self.deadline_added.notify_all();
            self.capacity.notify_all();
        }
    }

    /// Closes the connection once nothing is pending (used when its pool is retired).
    pub fn close_when_idle(&self) {
        self.retired.set(true);
        self.close_if_retired_and_idle();
    }

    fn close_if_retired_and_idle(&self) {
        if self.retired.get() && self.pending.borrow().is_empty() {
            self.die("upstream connection retired");
        }
    }

    fn cancel_reader(&self) {
        let mut c = self.reader.borrow_mut();
        let old = std::mem::take(&mut *c);
        *c = old.cancel();
    }

    async fn read_loop<R: CancelableAsyncReadRent>(self: Rc<Self>, mut rd: R) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            while let Some(len) = frame_len(&buf) {
                if len > self.max_frame {
                    log::warn!("upstream {}: reply frame of {len} bytes over the limit", self.peer);
                    return self.die("upstream sent an oversized frame");
                }
                if buf.len() < len {
                    buf.reserve(len - buf.len());
                    break;
                }
                let frame = buf.split_to(len);
                self.on_reply(frame);
            }
            if self.dead.get() {
                return;
            }
            let handle = self.reader.borrow().handle();
            let res = read_more(&mut rd, &mut buf, handle).await;
            match res {
                Ok(0) => return self.die("upstream connection closed"),
                Ok(_) => {}
                Err(e) => return self.die(&format!("upstream read failed ({e})")),
            }
        }
    }

    fn on_reply(&self, frame: BytesMut) {
        let info = match parse_frame(&frame, 64 * 1024) {
            Ok(i) => i,
            Err(e) => {
                log::warn!("upstream {}: unparseable reply ({e:?}); closing", self.peer);
                return self.die("upstream sent a malformed reply");
            }
        };
        let was_full = self.inflight() >= self.max_inflight;
        let Some(p) = self.pending.borrow_mut().remove(&info.msg.seq) else {
            self.stats.late_replies.set(self.stats.late_replies.get() + 1);
            return;
        };
        let reply = restore_reply(frame, &info, &p.orig);
        p.complete(reply);
        if was_full {
            self.capacity.notify_all();
        }
        self.close_if_retired_and_idle();
    }

    async fn write_loop<W: monoio::io::AsyncWriteRent>(self: Rc<Self>, mut wr: W) {
        if let Err(e) = write_outbox(&mut wr, &self.out).await {
            self.die(&format!("upstream write failed ({e})"));
        }
    }

    async fn sweep_loop(self: Rc<Self>) {
        loop {
            let next = self.deadlines.borrow().peek().map(|r| r.0 .0);
            match next {
                None if self.dead.get() => return,
                None => self.deadline_added.notified().await,
                Some(at) => {
                    let now = Instant::now();
                    if at > now {
                        // Wake for the earliest deadline, or sooner if a shorter one arrives.
                        let wait = (at - now).min(Duration::from_millis(50));
                        let added = self.deadline_added.notified();
                        monoio::select! {
                            _ = monoio::time::sleep(wait) => {},
                            _ = added => {},
                        }
                        continue;
                    }
                    let Reverse((deadline, seq)) = self.deadlines.borrow_mut().pop().expect("peeked");
                    let expired = {
                        let mut pending = self.pending.borrow_mut();
                        match pending.get(&seq) {
                            Some(p) if p.deadline == deadline => pending.remove(&seq),
                            _ => None,
                        }
                    };
                    if let Some(p) = expired {
                        self.stats.timeouts.set(self.stats.timeouts.get() + 1);
                        let was_full = self.inflight() + 1 >= self.max_inflight;
                        p.fail(&format!("upstream request timed out ({})", self.peer));
                        if was_full {
                            self.capacity.notify_all();
                        }
                        self.close_if_retired_and_idle();
                    }
                }
            }
        }
    }
}
