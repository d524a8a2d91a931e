//! The two socket loops every connection shares: appending reads into a `BytesMut`, and a
//! writer that drains an outbox in batches (small frames copied into one write, large ones
//! written as they are).

use std::io;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};

use crate::local::Outbox;

/// Frames at least this large skip the batch buffer.
const DIRECT_WRITE: usize = 64 * 1024;
/// Bounds of the adaptive read size: a quiet connection reads into a small buffer (an idle
/// connection with a read in flight costs little memory: perf/idle_conns.py), a busy one
/// whose reads fill the buffer doubles towards the largest size.
pub const MIN_READ: usize = 1024;
pub const MAX_READ: usize = 64 * 1024;

/// Reads more bytes onto the end of `buf`. `Ok(0)` is EOF. `hint` is the connection's read
/// size, adapted here: doubled when a read fills the room given, halved when reads are small.
pub async fn read_more<R: CancelableAsyncReadRent>(
    rd: &mut R,
    buf: &mut BytesMut,
    cancel: CancelHandle,
    hint: &mut usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < *hint / 2 {
        buf.reserve(*hint);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let (res, slice) = rd.cancelable_read(owned.slice_mut(len..cap), cancel).await;
    *buf = slice.into_inner();
    if let Ok(n) = res {
        if n == cap - len {
            *hint = (*hint * 2).min(MAX_READ);
        } else if n < *hint / 4 {
            *hint = (*hint / 2).max(MIN_READ);
        }
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
        for frame in batch.drain(..) {
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
