//! Single-thread building blocks for one worker: a notifier, an outbox (many producers on the
//! same thread, one writer task), and a panic guard for tasks. Nothing here is `Send`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

use crate::metrics::{add, ListenerMetrics};

/// Wakes every task waiting on it. A waiter created before `notify_all` always sees it.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// A future that completes at the next `notify_all`.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get() }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A frame being handed on: borrowed from a read buffer, or owned (split off it).
pub trait FrameBytes: std::ops::Deref<Target = [u8]> {
    fn into_owned(self) -> BytesMut;
}

impl FrameBytes for &[u8] {
    fn into_owned(self) -> BytesMut {
        BytesMut::from(self)
    }
}

impl FrameBytes for BytesMut {
    fn into_owned(self) -> BytesMut {
        self
    }
}

/// A worker's buffer memory against `runtime.max_buffer_memory`: the bytes queued in every
/// write queue of the thread (client and upstream outboxes) and held in client read buffers
/// for frames not yet whole. One per worker thread ([`BUDGET`]), so the write path adds and
/// subtracts without a pointer of its own. Over the limit, readers of the clients holding
/// more than their share wait ([`Budget::under`]) and new requests are refused; it is under
/// again at nine tenths of the limit.
pub struct Budget {
    held: Cell<usize>,
    max: Cell<usize>,
    over: Cell<bool>,
    /// Times it went over the limit.
    pub went_over: Cell<u64>,
    /// Readers waiting for it to be under again.
    waiters: RefCell<Vec<Waker>>,
}

thread_local! {
    /// This worker's buffer budget (a thread that sets no limit never goes over).
    pub static BUDGET: Budget = const {
        Budget {
            held: Cell::new(0),
            max: Cell::new(usize::MAX),
            over: Cell::new(false),
            went_over: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        }
    };
}

impl Budget {
    /// Sets the limit (a worker, at start and on reload).
    pub fn set_max(&self, max: usize) {
        self.max.set(max);
        self.check();
    }

    pub fn held(&self) -> usize {
        self.held.get()
    }

    pub fn is_over(&self) -> bool {
        self.over.get()
    }

    #[inline]
    pub fn add(&self, n: usize) {
        self.held.set(self.held.get() + n);
        if self.held.get() > self.max.get() {
            self.check();
        }
    }

    #[inline]
    pub fn sub(&self, n: usize) {
        self.held.set(self.held.get().saturating_sub(n));
        if self.over.get() {
            self.check();
        }
    }

    /// A holder's count changed from `old` to `new` (a read buffer's partial frame).
    #[inline]
    pub fn update(&self, old: &Cell<usize>, new: usize) {
        let was = old.replace(new);
        if new >= was {
            self.add(new - was);
        } else {
            self.sub(was - new);
        }
    }

    /// Whether a client holding `mine` bytes, one of `clients`, holds more than its share
    /// while the worker is over the limit: its reader should wait for `below`.
    pub fn should_pause(&self, mine: usize, clients: usize) -> bool {
        self.over.get() && mine > 0 && mine.saturating_mul(clients.max(1)) >= self.held.get()
    }

    fn check(&self) {
        let (held, max) = (self.held.get(), self.max.get());
        if !self.over.get() && held > max {
            self.over.set(true);
            self.went_over.set(self.went_over.get() + 1);
            log::warn!(
                "worker buffers hold {held} bytes, over runtime.max_buffer_memory ({max}): the clients holding \
                 the most are not read and new requests are refused until it is under {}",
                max / 10 * 9
            );
        } else if self.over.get() && held <= max / 10 * 9 {
            self.over.set(false);
            log::warn!("worker buffers hold {held} bytes, under runtime.max_buffer_memory ({max}) again: reading and accepting requests");
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Waits until this thread's budget is under its limit again.
    pub async fn under() {
        std::future::poll_fn(|cx| {
            BUDGET.with(|b| {
                if !b.over.get() {
                    return Poll::Ready(());
                }
                let mut waiters = b.waiters.borrow_mut();
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            })
        })
        .await
    }
}

/// Frames below this size are copied into a batch ([`Outbox::push_copy`]); larger ones are
/// split off the read buffer and queued as they are.
pub const COPY_MAX: usize = 64 * 1024;
/// A batch this large takes no more frames.
const BATCH_MAX: usize = 256 * 1024;
/// Room of a new batch when no emptied one is at hand (grows as frames are appended).
const BATCH_MIN: usize = 512;

/// Frames waiting to be written by one connection's writer task. It counts the bytes queued
/// so producers can stop reading while a slow peer leaves them piling up.
///
/// Small frames are copied into a batch at the back of the queue, so the writer writes one
/// buffer per turn without a copy of its own and no frame needs a buffer of its own; the
/// writer gives the emptied batch back for reuse.
#[derive(Default)]
pub struct Outbox {
    items: RefCell<VecDeque<BytesMut>>,
    /// The item at the back is a batch that small frames may still be appended to.
    open: Cell<bool>,
    /// An emptied batch, given back by the writer.
    spare: RefCell<Option<BytesMut>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    bytes: Cell<usize>,
    /// Woken each time the writer takes the queue (so bytes went down).
    drained: Option<Rc<Notify>>,
    /// A client connection's listener: bytes written are counted there.
    meter: Option<Rc<ListenerMetrics>>,
    /// Bytes the writer has handed to the kernel so far, partial writes included (the
    /// stall check compares it between ticks; no clock is read on the write path).
    handed: Cell<u64>,
    /// The writer holds bytes it has not finished writing.
    writing: Cell<bool>,
    /// Bytes the writer took and has not handed to the kernel yet: still in the worker's
    /// buffer budget (a peer that stopped reading holds them).
    taken: Cell<usize>,
    /// Cancels the writer's write in flight (a peer that stopped reading is cut off).
    write_cancel: RefCell<monoio::io::Canceller>,
    /// What a failed write left: each buffer with how many of its bytes the kernel took.
    unhanded: RefCell<Vec<(BytesMut, usize)>>,
    /// The writer takes nothing more (`stop_writer`); what is queued stays for its owner.
    stopped: Cell<bool>,
}

impl Drop for Outbox {
    /// Bytes still queued, or taken and never written, leave the worker's budget with it.
    fn drop(&mut self) {
        self.release_bytes();
        let taken = self.taken.replace(0);
        BUDGET.with(|b| b.sub(taken));
    }
}

/// What a stall check remembers between ticks: the writer's progress last seen, and since
/// when it has not moved while bytes waited.
#[derive(Default)]
pub struct StallMark(Cell<Option<(u64, std::time::Instant)>>);

impl Outbox {
    /// An outbox that wakes `drained` whenever its writer takes what is queued.
    pub fn with_drain_notify(drained: Rc<Notify>) -> Self {
        let mut out = Outbox::default();
        out.drained = Some(drained);
        out
    }

    /// A client connection's outbox: bytes written count on `listener`.
    pub fn for_client(drained: Option<Rc<Notify>>, listener: Rc<ListenerMetrics>) -> Self {
        let mut out = Outbox::default();
        out.drained = drained;
        out.meter = Some(listener);
        out
    }

    /// The writer wrote `bytes`: counted on the client's listener, if any.
    #[inline]
    pub fn written(&self, bytes: usize) {
        if let Some(m) = &self.meter {
            add(&m.bytes_out, bytes as u64);
        }
    }

    /// Queues a frame; returns false (and drops it) when the outbox is closed.
    pub fn push(&self, item: BytesMut) -> bool {
        if self.closed.get() {
            return false;
        }
        self.bytes.set(self.bytes.get() + item.len());
        BUDGET.with(|b| b.add(item.len()));
        self.items.borrow_mut().push_back(item);
        self.open.set(false);
        self.wake_writer();
        true
    }

    /// Appends a copy of `frame` to the batch at the back of the queue (starting one if
    /// needed), then lets `patch` rewrite the copy in place. Returns false (and copies
    /// nothing) when the outbox is closed.
    #[inline]
    pub fn push_copy(&self, frame: &[u8], patch: impl FnOnce(&mut [u8])) -> bool {
        self.push_built(frame.len(), |batch| {
            let at = batch.len();
            batch.extend_from_slice(frame);
            patch(&mut batch[at..]);
        })
    }

    /// Lets `build` append frames to the batch at the back of the queue (starting one if
    /// needed; `hint` is what it usually appends), so a frame encoded here needs no buffer
    /// of its own. Returns false (and builds nothing) when the outbox is closed.
    #[inline]
    pub fn push_built(&self, hint: usize, build: impl FnOnce(&mut BytesMut)) -> bool {
        if self.closed.get() {
            return false;
        }
        let added = {
            let mut items = self.items.borrow_mut();
            let fits = self.open.get() && items.back().is_some_and(|b| b.len() + hint <= BATCH_MAX);
            if !fits {
                let batch = self.spare.borrow_mut().take();
                items.push_back(batch.unwrap_or_else(|| BytesMut::with_capacity(hint.max(BATCH_MIN))));
                self.open.set(true);
            }
            let batch = items.back_mut().expect("a batch was just ensured");
            let at = batch.len();
            build(batch);
            batch.len() - at
        };
        self.bytes.set(self.bytes.get() + added);
        BUDGET.with(|b| b.add(added));
        self.wake_writer();
        true
    }

    /// The writer hands back a buffer it has written, to be reused as the next batch.
    pub fn give_back(&self, mut buf: BytesMut) {
        if buf.capacity() <= BATCH_MAX && !self.closed.get() {
            buf.clear();
            *self.spare.borrow_mut() = Some(buf);
        }
    }

    fn wake_writer(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Bytes queued and not yet taken by the writer.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Bytes this queue holds in the worker's budget: queued, or taken by the writer and
    /// not yet handed to the kernel.
    pub fn held_bytes(&self) -> usize {
        self.bytes.get() + self.taken.get()
    }

    /// The writer handed `n` more bytes to the kernel: they leave the worker's budget.
    #[inline]
    pub fn handed(&self, n: usize) {
        self.handed.set(self.handed.get() + n as u64);
        let n = n.min(self.taken.get());
        self.taken.set(self.taken.get() - n);
        BUDGET.with(|b| b.sub(n));
    }

    /// The writer took a batch (`true`) or finished writing it (`false`).
    #[inline]
    pub fn set_writing(&self, writing: bool) {
        self.writing.set(writing);
    }

    /// The writer holds a batch it has not finished writing.
    pub fn is_writing(&self) -> bool {
        self.writing.get()
    }

    /// The connection is lost: cancels the write in flight (what it had not handed to the
    /// kernel is then kept, `take_unhanded`) and the writer takes nothing more and returns.
    /// Unlike `abort`, what is queued stays, for `take_unsent`.
    pub fn stop_writer(&self) {
        self.stopped.set(true);
        self.cancel_write();
        self.wake_writer();
    }

    /// Cancels the write in flight, and arms a fresh canceller for the next.
    fn cancel_write(&self) {
        let mut c = self.write_cancel.borrow_mut();
        let old = std::mem::take(&mut *c);
        *c = old.cancel();
    }

    /// A handle that cancels the writer's write in flight.
    pub fn write_handle(&self) -> monoio::io::CancelHandle {
        self.write_cancel.borrow().handle()
    }

    /// Whether bytes have waited to be written, with no write progress, for `timeout` by
    /// `now`, as seen at each call (`mark` keeps what the last call saw). A zero timeout
    /// never stalls.
    pub fn stalled(&self, mark: &StallMark, now: std::time::Instant, timeout: std::time::Duration) -> bool {
        if timeout.is_zero() || !(self.writing.get() || self.bytes.get() > 0) {
            mark.0.set(None);
            return false;
        }
        let handed = self.handed.get();
        match mark.0.get() {
            Some((seen, since)) if seen == handed => now.duration_since(since) >= timeout,
            _ => {
                mark.0.set(Some((handed, now)));
                false
            }
        }
    }

    /// The peer stopped reading: cancels the write in flight, drops what is queued, and
    /// closes. The writer returns an error.
    pub fn abort(&self) {
        self.cancel_write();
        self.close_and_clear();
        let taken = self.taken.replace(0);
        BUDGET.with(|b| b.sub(taken));
    }

    /// No more items will be accepted; the writer drains what is queued, then stops.
    pub fn close(&self) {
        self.closed.set(true);
        self.spare.borrow_mut().take();
        self.wake_writer();
    }

    /// Takes what is still queued (never handed to the writer), and closes.
    pub fn take_unsent(&self) -> Vec<BytesMut> {
        self.take_unsent_then(None)
    }

    /// The writer's write failed: of `buf` the kernel took `handed` bytes, of `rest` none.
    /// Kept for `take_unhanded`; they leave the worker's buffer budget now. Returns `e`.
    #[cold]
    #[inline(never)]
    pub fn write_failed(
        &self,
        e: std::io::Error,
        buf: BytesMut,
        handed: usize,
        rest: impl Iterator<Item = BytesMut>,
    ) -> std::io::Error {
        let mut kept = self.unhanded.borrow_mut();
        let mut bytes = buf.len().saturating_sub(handed);
        kept.push((buf, handed));
        for item in rest {
            bytes += item.len();
            kept.push((item, 0));
        }
        let n = bytes.min(self.taken.get());
        self.taken.set(self.taken.get() - n);
        BUDGET.with(|b| b.sub(n));
        e
    }

    /// The whole frames of a failed write that the kernel took no byte of, in the order they
    /// were queued; `frame_len` gives the length of the frame a buffer starts with. A frame
    /// the kernel took part of is not among them: the peer may have read that part.
    pub fn take_unhanded(&self, frame_len: impl Fn(&[u8]) -> Option<usize>) -> Vec<BytesMut> {
        let mut whole = Vec::new();
        for (mut buf, handed) in self.unhanded.borrow_mut().drain(..) {
            // Skip every frame that starts before `handed`.
            let mut at = 0;
            while at < handed.min(buf.len()) {
                match frame_len(&buf[at..]) {
                    Some(len) if len > 0 => at += len,
                    _ => {
                        at = buf.len();
                        break;
                    }
                }
            }
            if at < buf.len() {
                whole.push(buf.split_off(at));
            }
        }
        whole
    }

    /// Takes what is still queued, queues `last` (the only item the writer still sends),
    /// and closes.
    pub fn take_unsent_then(&self, last: Option<BytesMut>) -> Vec<BytesMut> {
        let items: Vec<BytesMut> = self.items.borrow_mut().drain(..).collect();
        self.open.set(false);
        self.release_bytes();
        if let Some(b) = last {
            self.push(b);
        }
        self.close();
        items
    }

    /// Closes and drops everything not yet taken by the writer.
    pub fn close_and_clear(&self) {
        self.items.borrow_mut().clear();
        self.open.set(false);
        self.release_bytes();
        self.close();
    }

    /// The queue was dropped: its bytes leave the worker's budget.
    fn release_bytes(&self) {
        let n = self.bytes.replace(0);
        if n > 0 {
            BUDGET.with(|b| b.sub(n));
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Moves every queued item into `dst`; waits while empty; `false` once closed and drained,
    /// or stopped.
    pub async fn take_all(&self, dst: &mut Vec<BytesMut>) -> bool {
        std::future::poll_fn(|cx| {
            if self.stopped.get() {
                return Poll::Ready(false);
            }
            let mut items = self.items.borrow_mut();
            if !items.is_empty() {
                dst.extend(items.drain(..));
                self.open.set(false);
                // Taken, not written yet: still counted until handed to the kernel.
                self.taken.set(self.taken.get() + self.bytes.replace(0));
                if let Some(n) = &self.drained {
                    n.notify_all();
                }
                return Poll::Ready(true);
            }
            if self.closed.get() {
                return Poll::Ready(false);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

pin_project_lite::pin_project! {
    /// Runs a future and turns a panic inside it into `Err(message)`, so one connection's bug
    /// closes that connection only and never unwinds through the worker's runtime. The future
    /// is held inline (no extra allocation per connection).
    pub struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> CatchUnwind<F> {
    pub fn new(inner: F) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                Poll::Ready(Err(msg))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// `CatchUnwind` plus what to do with a panic, as one future. A named future rather than an
    /// `async` block because rustc stores a captured future twice in an `async` block that
    /// awaits it (measured: 5376-byte tasks for a 2432-byte connection future).
    pub struct Guarded<F, P> {
        #[pin]
        inner: CatchUnwind<F>,
        on_panic: Option<P>,
    }
}

impl<F: Future, P: FnOnce(String)> Guarded<F, P> {
    pub fn new(inner: F, on_panic: P) -> Self {
        Guarded { inner: CatchUnwind::new(inner), on_panic: Some(on_panic) }
    }
}

impl<F: Future, P: FnOnce(String)> Future for Guarded<F, P> {
    type Output = Option<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(Some(v)),
            Poll::Ready(Err(msg)) => {
                if let Some(f) = this.on_panic.take() {
                    f(msg);
                }
                Poll::Ready(None)
            }
        }
    }
}

/// An `i32`-keyed hasher for seqID tables: Fibonacci hashing spreads consecutive ids over the
/// high bits that hashbrown uses for its control bytes.
#[derive(Default, Clone, Copy)]
pub struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i32(&mut self, i: i32) {
        self.0 = (i as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type SeqMap<V> = std::collections::HashMap<i32, V, std::hash::BuildHasherDefault<SeqHasher>>;
/// Tables keyed by a small id newtype (a stream id), hashed like seqIDs.
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<SeqHasher>>;
/// HTTP/2 stream id tables keyed by the bare number (the load generator's).
pub type StreamMap<V> = std::collections::HashMap<u32, V, std::hash::BuildHasherDefault<SeqHasher>>;

#[cfg(test)]
mod tests {

    /// The budget goes over above its limit, is under again at nine tenths, and over it
    /// only a holder of at least its share is told to pause.
    #[test]
    fn the_buffer_budget_has_hysteresis_and_pauses_the_largest() {
        let b = Budget {
            held: Cell::new(0),
            max: Cell::new(usize::MAX),
            over: Cell::new(false),
            went_over: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        };
        b.set_max(1000);
        b.add(1000);
        assert!(!b.is_over(), "at the limit is not over it");
        b.add(1);
        assert!(b.is_over() && b.went_over.get() == 1);
        assert!(b.should_pause(600, 2), "600 of 1001 with two clients: more than its share");
        assert!(!b.should_pause(400, 2), "less than its share");
        assert!(!b.should_pause(0, 1));
        b.sub(100);
        assert!(b.is_over(), "901 is still above nine tenths");
        b.sub(1);
        assert!(!b.is_over(), "900: under again");
        assert!(!b.should_pause(900, 1), "not over: nobody pauses");
        let held = Cell::new(0);
        b.update(&held, 300);
        b.update(&held, 100);
        assert_eq!((b.held(), held.get()), (1000, 100));
        b.sub(5000);
        assert_eq!(b.held(), 0, "never below zero");
    }

    /// Bytes count from the moment they are queued until the writer hands them to the
    /// kernel (a peer that stopped reading holds them), and leave with a dropped queue.
    #[test]
    fn outbox_bytes_count_in_the_budget_until_written() {
        let held = || BUDGET.with(Budget::held);
        let start = held();
        let out = Outbox::default();
        out.push(BytesMut::from(&[0u8; 100][..]));
        out.push_copy(&[0u8; 10], |_| {});
        assert_eq!(held() - start, 110);
        let mut taken = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let poll = std::pin::pin!(out.take_all(&mut taken)).as_mut().poll(&mut cx);
        assert!(poll.is_ready());
        assert_eq!(held() - start, 110, "taken, not written: still held");
        out.handed(60);
        assert_eq!(held() - start, 50);
        out.push(BytesMut::from(&[0u8; 7][..]));
        drop(out);
        assert_eq!(held(), start, "a dropped queue releases what it held");
    }

    /// After a failed write, the frames the kernel took no byte of come back whole, in the
    /// order they were queued; a frame it took part of does not. They leave the budget.
    #[test]
    fn a_failed_write_gives_back_the_whole_frames_it_did_not_hand_over() {
        // Frames of 10, 20 and 30 bytes, each starting with its length.
        let frames = |lens: &[u8]| -> BytesMut {
            let mut b = BytesMut::new();
            for &len in lens {
                b.extend_from_slice(&[len]);
                b.extend_from_slice(&vec![0u8; len as usize - 1]);
            }
            b
        };
        let len_of = |b: &[u8]| b.first().map(|&l| l as usize);
        let held = || BUDGET.with(Budget::held);
        for (handed, want) in
            [(0, vec![10, 20, 30]), (5, vec![20, 30]), (10, vec![20, 30]), (30, vec![30]), (31, vec![]), (60, vec![])]
        {
            let start = held();
            let out = Outbox::default();
            out.push(frames(&[10, 20, 30]));
            out.push(frames(&[40]));
            let mut taken = Vec::new();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(std::pin::pin!(out.take_all(&mut taken)).as_mut().poll(&mut cx).is_ready());
            out.handed(handed);
            let mut taken = taken.into_iter();
            let first = taken.next().unwrap();
            let e = out.write_failed(std::io::ErrorKind::ConnectionReset.into(), first, handed, taken);
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
            assert_eq!(held(), start, "handed {handed}: nothing left in the budget");
            let back: Vec<u8> = out.take_unhanded(len_of).concat().into_iter().filter(|&b| b > 0).collect();
            let mut want = want;
            want.push(40);
            assert_eq!(back, want, "handed {handed}");
            assert!(out.take_unhanded(len_of).is_empty(), "taken once");
        }
    }

    /// A stall is bytes waiting with no write progress for the whole timeout: progress (even
    /// a partial write) starts the count again, and an empty, idle outbox never stalls.
    #[test]
    fn stalls_are_counted_from_the_last_progress() {
        use std::time::{Duration, Instant};
        let out = Outbox::default();
        let mark = StallMark::default();
        let t = Instant::now();
        let s = Duration::from_secs;
        assert!(!out.stalled(&mark, t, s(1)), "nothing queued");
        out.push(BytesMut::from(&b"reply"[..]));
        assert!(!out.stalled(&mark, t, s(1)), "first sight");
        assert!(!out.stalled(&mark, t + s(1) - Duration::from_millis(1), s(1)));
        assert!(out.stalled(&mark, t + s(1), s(1)), "a second without progress");
        out.handed(1);
        assert!(!out.stalled(&mark, t + s(2), s(1)), "a partial write is progress");
        assert!(out.stalled(&mark, t + s(3), s(1)));
        assert!(!out.stalled(&mark, t + s(9), Duration::ZERO), "a zero timeout never stalls");
        out.close_and_clear();
        assert!(!out.stalled(&mark, t + s(10), s(1)), "nothing left to write");
        out.set_writing(true);
        assert!(!out.stalled(&mark, t + s(10), s(1)));
        assert!(out.stalled(&mark, t + s(11), s(1)), "a write in flight counts as waiting");
    }

    use super::*;

    #[test]
    fn a_panicking_task_is_caught_and_others_keep_running() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let done = Rc::new(Cell::new(0));
            let d = done.clone();
            let bad = monoio::spawn(CatchUnwind::new(async move {
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                if d.get() == 0 {
                    panic!("boom in a connection task");
                }
            }));
            let d = done.clone();
            let good = monoio::spawn(async move {
                monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                d.set(d.get() + 1);
            });
            assert_eq!(bad.await, Err("boom in a connection task".to_string()));
            good.await;
            assert_eq!(done.get(), 1);
        });
    }

    #[test]
    fn guarded_reports_a_panic_once_and_finishes() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
        rt.block_on(async {
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s = seen.clone();
            let out =
                monoio::spawn(Guarded::new(async { panic!("bad frame") }, move |m: String| s.borrow_mut().push(m)))
                    .await;
            assert_eq!(out, None::<()>);
            assert_eq!(seen.borrow().as_slice(), ["bad frame"]);
            assert_eq!(Guarded::new(async { 7 }, |_m: String| unreachable!()).await, Some(7));
        });
    }

    #[test]
    fn copied_frames_share_a_batch_and_whole_frames_keep_their_place() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
        rt.block_on(async {
            let ob = Outbox::default();
            ob.push_copy(b"ab", |b| b[0] = b'A');
            ob.push_copy(b"cd", |_| {});
            ob.push(BytesMut::from(&b"WHOLE"[..]));
            ob.push_copy(b"ef", |b| b[1] = b'F');
            assert_eq!(ob.queued_bytes(), 11);
            let mut got = Vec::new();
            assert!(ob.take_all(&mut got).await);
            assert_eq!(
                got,
                vec![BytesMut::from(&b"Abcd"[..]), BytesMut::from(&b"WHOLE"[..]), BytesMut::from(&b"eF"[..])]
            );

            // A batch the writer gave back is reused, emptied; after take_all a new batch
            // starts (nothing is appended to one the writer already has).
            let batch = got.remove(0);
            let ptr = batch.as_ptr();
            ob.give_back(batch);
            ob.push_copy(b"gh", |_| {});
            got.clear();
            assert!(ob.take_all(&mut got).await);
            assert_eq!(got, vec![BytesMut::from(&b"gh"[..])]);
            assert_eq!(got[0].as_ptr(), ptr, "the given-back buffer was reused");
            ob.close();
            assert!(!ob.push_copy(b"ij", |_| {}));
        });
    }

    #[test]
    fn outbox_drains_in_order_counts_bytes_then_reports_closed() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
        rt.block_on(async {
            let drained = Rc::new(Notify::default());
            let ob = Outbox::with_drain_notify(drained.clone());
            ob.push(BytesMut::from(&b"ab"[..]));
            ob.push(BytesMut::from(&b"cde"[..]));
            assert_eq!(ob.queued_bytes(), 5);
            let woken = drained.notified();
            let mut got = Vec::new();
            assert!(ob.take_all(&mut got).await);
            woken.await;
            assert_eq!(got, vec![BytesMut::from(&b"ab"[..]), BytesMut::from(&b"cde"[..])]);
            assert_eq!(ob.queued_bytes(), 0);
            ob.close();
            assert!(!ob.push(BytesMut::from(&b"f"[..])));
            assert!(!ob.take_all(&mut got).await);
        });
    }
}
