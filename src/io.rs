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
/// Spare room kept at the end of a read buffer before each read.
const READ_SPARE: usize = 8 * 1024;

/// Reads more bytes onto the end of `buf`. `Ok(0)` is EOF.
pub async fn read_more<R: CancelableAsyncReadRent>(
    rd: &mut R,
    buf: &mut BytesMut,
    cancel: CancelHandle,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SPARE {
        buf.reserve(READ_SPARE * 2);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let (res, slice) = rd.cancelable_read(owned.slice_mut(len..cap), cancel).await;
    *buf = slice.into_inner();
    res
}

/// Writes everything queued in `outbox` until it is closed and empty, then shuts down the
/// write side. Returns the first write error.
pub async fn write_outbox<W: AsyncWriteRent>(wr: &mut W, outbox: &Outbox) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
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
