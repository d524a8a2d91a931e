//! One direction of a stream: what is queued for the receiver while its flow-control window
//! (or the receiving connection's write queue) is closed, and the windows both ways.
//!
//! Flow control is per hop: the proxy gives window back to the sender only for bytes it has
//! queued towards the receiver (which the receiver's own window allowed), so a slow reader
//! slows the writer and what the proxy holds per stream stays below the window it granted.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;

use crate::grpc::conn::Core;
use crate::grpc::h2::frame::{self, DataFlags, StreamId, HEAD_LEN};
use crate::grpc::h2::hpack::HeaderList;

/// Something queued for the receiving side of one direction.
pub(super) enum Item {
    /// A header block (response headers, or trailers) and its END_STREAM flag.
    Headers(HeaderList, bool),
    /// DATA content. With `head_room`, `buf` still starts with the frame's own 9-byte header,
    /// which is rewritten in place when the whole rest goes out in one frame. `credited`:
    /// given back to the sender already (a request replayed to another upstream).
    Data { buf: BytesMut, head_room: bool, end: bool, credited: bool },
}

/// One direction of a stream.
pub(super) struct Dir {
    pub(super) queue: VecDeque<Item>,
    /// What the receiver still accepts on this stream.
    pub(super) send_window: i64,
    /// What the sender may still send us on this stream.
    pub(super) recv_window: i64,
    /// Forwarded bytes not yet given back to the sender.
    recv_credit: u32,
    /// END_STREAM came from the sender.
    pub(super) end_received: bool,
    /// END_STREAM went to the receiver.
    pub(super) end_sent: bool,
    /// Since when data has waited without progress for a zero window or a full write queue
    /// (stall guard).
    pub(super) blocked_since: Option<Instant>,
    /// On the receiving connection's list of streams to flush when it has room again.
    pub(super) parked: bool,
    /// What the sender's `content-length` still announces (RFC 9113 §8.1.1), if it sent one.
    pub(super) content_left: Option<u64>,
}

impl Dir {
    pub(super) fn new(recv_window: u32) -> Dir {
        Dir {
            queue: VecDeque::new(),
            send_window: 0,
            recv_window: recv_window as i64,
            recv_credit: 0,
            end_received: false,
            end_sent: false,
            blocked_since: None,
            parked: false,
            content_left: None,
        }
    }

    /// Counts `len` bytes of DATA (`end`: with END_STREAM) against the announced
    /// `content-length`: more than it, or less by the end, makes the message malformed.
    pub(super) fn count_content(&mut self, len: usize, end: bool) -> Result<(), &'static str> {
        let Some(left) = self.content_left else { return Ok(()) };
        let left = left.checked_sub(len as u64).ok_or("DATA beyond content-length")?;
        self.content_left = Some(left);
        if end && left > 0 {
            return Err("DATA short of content-length");
        }
        Ok(())
    }

    /// Bytes of DATA queued.
    pub(super) fn queued_bytes(&self) -> usize {
        self.queue
            .iter()
            .map(|i| match i {
                Item::Data { buf, head_room, .. } => buf.len() - if *head_room { HEAD_LEN } else { 0 },
                Item::Headers(..) => 0,
            })
            .sum()
    }
}

/// One end of a hop: a connection and the stream's id on it.
#[derive(Clone, Copy)]
pub(super) struct Hop<'a> {
    pub(super) conn: &'a Core,
    pub(super) stream: StreamId,
}

impl<'a> Hop<'a> {
    pub(super) fn new(conn: &'a Core, stream: StreamId) -> Self {
        Hop { conn, stream }
    }
}

/// What a flush did.
pub(super) struct Flushed {
    /// A header block was written.
    pub(super) headers: bool,
    /// Data is left that waits for room (a window or the write queue).
    pub(super) parked: bool,
}

/// Moves queued items of one direction to the receiver (`to`) as far as its windows, frame
/// size and write queue allow, and gives the forwarded bytes back to the sender (`from`).
pub(super) fn flush(dir: &mut Dir, to: Hop<'_>, from: Hop<'_>) -> Flushed {
    let (to_id, from_id) = (to.stream, from.stream);
    let (to, from) = (to.conn, from.conn);
    let mut wrote_headers = false;
    let mut parked = false;
    let mut forwarded = 0usize;
    while let Some(item) = dir.queue.front_mut() {
        match item {
            Item::Headers(..) => {
                let Some(Item::Headers(list, end)) = dir.queue.pop_front() else { unreachable!() };
                to.write_headers(to_id, list.iter(), end);
                wrote_headers = true;
                if end {
                    dir.end_sent = true;
                }
            }
            Item::Data { buf, head_room, end, credited } => {
                let start = if *head_room { HEAD_LEN } else { 0 };
                let len = buf.len() - start;
                let room = dir.send_window.min(to.send_window.get()).max(0) as usize;
                let n = len.min(room).min(to.peer.max_frame_size.get() as usize);
                if (n == 0 && len > 0) || to.out.queued_bytes() >= to.out_limit {
                    if dir.blocked_since.is_none() {
                        dir.blocked_since = Some(Instant::now());
                    }
                    parked = true;
                    break;
                }
                // Progress: the stall clock restarts when it blocks again.
                dir.blocked_since = None;
                let last = n == len;
                let end_now = last && *end;
                let flags = DataFlags::empty().with(DataFlags::END_STREAM, end_now);
                let head = frame::Head::new(frame::kind::DATA, flags, to_id, n);
                if *head_room {
                    let mut piece = buf.split_to(HEAD_LEN + n);
                    head.write_into(&mut piece);
                    to.push(piece);
                    *head_room = false;
                } else {
                    let mut piece = BytesMut::with_capacity(HEAD_LEN);
                    head.encode(&mut piece);
                    to.push(piece);
                    if n > 0 {
                        to.push(buf.split_to(n));
                    }
                }
                dir.send_window -= n as i64;
                to.send_window.set(to.send_window.get() - n as i64);
                if !*credited {
                    forwarded += n;
                }
                if last {
                    dir.queue.pop_front();
                    if end_now {
                        dir.end_sent = true;
                    }
                }
            }
        }
    }
    if dir.queue.is_empty() {
        dir.blocked_since = None;
    }
    if forwarded > 0 {
        from.credit(forwarded);
        if !dir.end_received {
            let c = dir.recv_credit + forwarded as u32;
            if c >= from.stream_window / 2 {
                dir.recv_credit = 0;
                dir.recv_window += c as i64;
                from.write_window_update(from_id, c);
            } else {
                dir.recv_credit = c;
            }
        }
    }
    Flushed { headers: wrote_headers, parked }
}

/// Accounts DATA received on a stream direction and queues it (padding is given back at once).
/// `frame` is the whole frame, header included.
pub(super) fn queue_data(
    dir: &mut Dir,
    from: &Core,
    mut frame: BytesMut,
    data: std::ops::Range<usize>,
    flow_len: usize,
    end: bool,
) -> Result<(), ()> {
    dir.recv_window -= flow_len as i64;
    if dir.recv_window < 0 {
        return Err(());
    }
    let padding = flow_len - data.len();
    if padding > 0 {
        from.credit(padding);
        dir.recv_credit += padding as u32;
    }
    let item = if data.start == 0 && padding == 0 {
        Item::Data { buf: frame, head_room: true, end, credited: false }
    } else {
        let _ = frame.split_to(HEAD_LEN + data.start);
        frame.truncate(data.len());
        Item::Data { buf: frame, head_room: false, end, credited: false }
    };
    if end {
        dir.end_received = true;
    }
    dir.queue.push_back(item);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Dir;

    /// RFC 9113 §8.1.1: DATA must add up to the content-length, no more and no less.
    #[test]
    fn data_is_counted_against_content_length() {
        let mut d = Dir::new(0);
        assert!(d.count_content(1 << 20, true).is_ok(), "no content-length: anything goes");
        d.content_left = Some(10);
        assert!(d.count_content(4, false).is_ok());
        assert!(d.count_content(6, false).is_ok());
        assert!(d.count_content(0, true).is_ok(), "exactly 10");
        d.content_left = Some(10);
        assert_eq!(d.count_content(11, false), Err("DATA beyond content-length"));
        d.content_left = Some(10);
        assert_eq!(d.count_content(9, true), Err("DATA short of content-length"));
        d.content_left = Some(0);
        assert_eq!(d.count_content(1, true), Err("DATA beyond content-length"));
    }
}
