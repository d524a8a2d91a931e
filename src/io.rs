//! The two socket loops every connection shares: appending reads into a `BytesMut`, and a
//! writer that drains an outbox in batches (small frames copied into one write, large ones
//! written as they are).

use std::io;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};

use crate::local::{Outbox, COPY_MAX};

/// Frames at least this large skip the batch buffer.
const DIRECT_WRITE: usize = COPY_MAX;
/// Bounds of the adaptive read size: a quiet connection reads into a small buffer (an idle
/// connection with a read in flight costs little memory: perf/idle_conns.py), a busy one
/// whose reads fill the buffer doubles towards the largest size.
pub const MIN_READ: usize = 1024;
pub const MAX_READ: usize = 64 * 1024;

/// Cancels the read in flight under `reader` (its task sees a cancelled read and stops) and
/// arms a fresh canceller in its place.
pub fn cancel_reads(reader: &std::cell::RefCell<Canceller>) {
    let mut c = reader.borrow_mut();
    let old = std::mem::take(&mut *c);
    *c = old.cancel();
}

/// A connection's read size, adapted to its traffic: doubled as soon as a read fills the room
/// it was given, halved only after a run of reads that used less than a quarter of it (so a
/// burst that is just over the size does not make it flap between two sizes, costing an extra
/// read each time).
#[derive(Clone, Copy, Debug)]
pub struct ReadHint {
    size: usize,
    small_reads: u8,
}

/// Consecutive small reads before a read size is halved.
const SHRINK_AFTER: u8 = 32;

impl ReadHint {
    pub fn new(size: usize) -> Self {
        ReadHint { size: size.clamp(MIN_READ, MAX_READ), small_reads: 0 }
    }

    fn observe(&mut self, n: usize, room: usize) {
        if n == room {
            self.size = (self.size * 2).min(MAX_READ);
            self.small_reads = 0;
        } else if n < self.size / 4 {
            self.small_reads += 1;
            if self.small_reads >= SHRINK_AFTER {
                self.size = (self.size / 2).max(MIN_READ);
                self.small_reads = 0;
            }
        } else {
            self.small_reads = 0;
        }
    }
}

/// Reads more bytes onto the end of `buf`. `Ok(0)` is EOF.
pub async fn read_more<R: CancelableAsyncReadRent>(
    rd: &mut R,
    buf: &mut BytesMut,
    cancel: CancelHandle,
    hint: &mut ReadHint,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < hint.size / 2 {
        buf.reserve(hint.size);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let (res, slice) = rd.cancelable_read(owned.slice_mut(len..cap), cancel).await;
    *buf = slice.into_inner();
    if let Ok(n) = res {
        hint.observe(n, cap - len);
    }
    res
}

/// Writes everything queued in `outbox` until it is closed and empty, then shuts down the
/// write side. Returns the first write error (a write cancelled by `Outbox::abort` too),
/// leaving in the outbox what that write had not handed to the kernel
/// (`Outbox::take_unhanded`). Every partial write is reported to the outbox (`handed`), so a
/// reader that is slow but reads is not taken for one that stopped.
pub async fn write_outbox<W: CancelableAsyncWriteRent>(wr: &mut W, outbox: &Outbox) -> io::Result<()> {
    let mut batch = Vec::new();
    // Grows with what is written; an idle connection keeps only what its last batch needed.
    let mut buf: Vec<u8> = Vec::new();
    while outbox.take_all(&mut batch).await {
        outbox.set_writing(true);
        if batch.len() == 1 {
            // The usual turn: one batch of small frames (or one frame), written as it is.
            let item = batch.pop().expect("one item");
            let len = item.len();
            let item = match write_counted(wr, item, outbox).await {
                Ok(item) => item,
                Err((e, item, handed)) => return Err(outbox.write_failed(e, item, handed, std::iter::empty())),
            };
            outbox.written(len);
            outbox.give_back(item);
            outbox.set_writing(false);
            continue;
        }
        let mut len = 0;
        let mut frames = batch.drain(..);
        while let Some(frame) = frames.next() {
            len += frame.len();
            if frame.len() < DIRECT_WRITE {
                buf.extend_from_slice(&frame);
                continue;
            }
            if !buf.is_empty() {
                buf = match flush(wr, buf, outbox).await {
                    Ok(buf) => buf,
                    Err((e, buf, handed)) => {
                        let rest = std::iter::once(frame).chain(frames);
                        return Err(outbox.write_failed(e, BytesMut::from(&buf[..]), handed, rest));
                    }
                };
            }
            if let Err((e, frame, handed)) = write_counted(wr, frame, outbox).await {
                return Err(outbox.write_failed(e, frame, handed, frames));
            }
        }
        drop(frames);
        if !buf.is_empty() {
            buf = match flush(wr, buf, outbox).await {
                Ok(buf) => buf,
                Err((e, buf, handed)) => {
                    return Err(outbox.write_failed(e, BytesMut::from(&buf[..]), handed, std::iter::empty()))
                }
            };
        }
        outbox.written(len);
        outbox.set_writing(false);
    }
    let _ = wr.shutdown().await;
    Ok(())
}

/// A failed write: the error, the buffer, and how many of its bytes the kernel took.
type Failed<T> = (io::Error, T, usize);

/// Writes all of `buf`, reporting each partial write to `outbox`; cancellable through it.
async fn write_counted<W: CancelableAsyncWriteRent, T: IoBuf + 'static>(
    wr: &mut W,
    mut buf: T,
    outbox: &Outbox,
) -> Result<T, Failed<T>> {
    let len = buf.bytes_init();
    let mut done = 0;
    while done < len {
        let (res, slice) = wr.cancelable_write(buf.slice(done..len), outbox.write_handle()).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return Err((io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer"), buf, done)),
            Ok(n) => {
                done += n;
                outbox.handed(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, buf, done)),
        }
    }
    Ok(buf)
}

async fn flush<W: CancelableAsyncWriteRent>(
    wr: &mut W,
    buf: Vec<u8>,
    outbox: &Outbox,
) -> Result<Vec<u8>, Failed<Vec<u8>>> {
    let mut buf = write_counted(wr, buf, outbox).await?;
    buf.clear();
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_grows_at_once_and_shrinks_only_after_a_run_of_small_reads() {
        let mut h = ReadHint::new(MIN_READ);
        h.observe(1024, 1024);
        assert_eq!(h.size, 2048, "a read that filled the room doubles the size");
        // A burst just over the old size followed by small reads must not flap back at once.
        for _ in 0..SHRINK_AFTER - 1 {
            h.observe(100, 2048);
        }
        assert_eq!(h.size, 2048);
        h.observe(100, 2048);
        assert_eq!(h.size, 1024, "halved after a run of small reads");
        for _ in 0..100 {
            h.observe(MAX_READ, MAX_READ);
        }
        assert_eq!(h.size, MAX_READ, "bounded");
    }
}
