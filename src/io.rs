//! The two socket loops every connection shares: appending reads into a `BytesMut`, and a
//! writer that drains an outbox in batches (small frames copied into one write, large ones
//! written as they are).

use std::io;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};

use crate::local::{Outbox, COPY_MAX};

/// Frames at least this large skip the batch buffer.
const DIRECT_WRITE: usize = COPY_MAX;
/// Bounds of the adaptive read size: a quiet connection reads into a small buffer (an idle
/// connection with a read in flight costs little memory: perf/idle_conns.py), a busy one
/// whose reads fill the buffer doubles towards the largest size.
pub const MIN_READ: usize = 1024;
pub const MAX_READ: usize = 64 * 1024;

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
/// write side. Returns the first write error.
pub async fn write_outbox<W: AsyncWriteRent>(wr: &mut W, outbox: &Outbox) -> io::Result<()> {
    let mut batch = Vec::new();
    // Grows with what is written; an idle connection keeps only what its last batch needed.
    let mut buf: Vec<u8> = Vec::new();
    while outbox.take_all(&mut batch).await {
        if batch.len() == 1 {
            // The usual turn: one batch of small frames (or one frame), written as it is.
            let item = batch.pop().expect("one item");
            let len = item.len();
            let (res, item) = wr.write_all(item).await;
            res?;
            outbox.written(len);
            outbox.give_back(item);
            continue;
        }
        let mut len = 0;
        for frame in batch.drain(..) {
            len += frame.len();
            if frame.len() < DIRECT_WRITE {
                buf.extend_from_slice(&frame);
                continue;
            }
            if !buf.is_empty() {
                buf = flush(wr, buf).await?;
            }
            let (res, _) = wr.write_all(frame).await;
            res?;
        }
        if !buf.is_empty() {
            buf = flush(wr, buf).await?;
        }
        outbox.written(len);
    }
    let _ = wr.shutdown().await;
    Ok(())
}

async fn flush<W: AsyncWriteRent>(wr: &mut W, buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let (res, mut buf) = wr.write_all(buf).await;
    res?;
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
