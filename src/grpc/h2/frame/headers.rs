//! HEADERS (type 0x1): `[pad length] [E + stream dependency, weight] fragment [padding]`,
//! flags END_STREAM, END_HEADERS, PADDED, PRIORITY. A block larger than the peer's
//! SETTINGS_MAX_FRAME_SIZE continues in CONTINUATION frames written right after it.

use std::ops::Range;

use bytes::BytesMut;

use super::{flag, kind, need_stream, u31, unpad, FrameError, Head, Reason};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    /// The header-block fragment (a range of the payload).
    pub fragment: Range<usize>,
    pub end_stream: bool,
    pub end_headers: bool,
    /// Stream dependency, when the PRIORITY flag is set (parsed, then ignored: RFC 9113 §5.3.2).
    pub depends_on: Option<u32>,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Headers, FrameError> {
    need_stream(head, "HEADERS on stream 0")?;
    let mut r = unpad(head, payload)?;
    let mut depends_on = None;
    if head.has(flag::PRIORITY) {
        if r.len() < 5 {
            return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "HEADERS too short for its priority"));
        }
        let dep = u31(&payload[r.start..]);
        if dep == head.stream {
            return Err(FrameError::Stream(head.stream, Reason::PROTOCOL_ERROR, "stream depends on itself"));
        }
        depends_on = Some(dep);
        r.start += 5;
    }
    Ok(Headers {
        fragment: r,
        end_stream: head.has(flag::END_STREAM),
        end_headers: head.has(flag::END_HEADERS),
        depends_on,
    })
}

/// Fills in the head of a HEADERS frame (END_HEADERS set) whose block already follows the
/// first `HEAD_LEN` octets of `frame`; the block must fit in one frame.
pub fn head_in_place(stream: u32, end_stream: bool, frame: &mut [u8]) {
    let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
    let len = frame.len() - super::HEAD_LEN;
    Head::new(kind::HEADERS, flags, stream, len).write_into(frame);
}

/// Writes a header block as one HEADERS frame plus as many CONTINUATION frames as
/// `max_frame_size` requires, contiguously (nothing may come between them on the wire).
pub fn encode(stream: u32, block: &[u8], end_stream: bool, max_frame_size: usize, dst: &mut BytesMut) {
    let max = max_frame_size.max(1);
    let first = block.len().min(max);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if first == block.len() {
        flags |= flag::END_HEADERS;
    }
    dst.reserve(block.len() + super::HEAD_LEN * (1 + block.len() / max));
    Head::new(kind::HEADERS, flags, stream, first).encode(dst);
    dst.extend_from_slice(&block[..first]);
    let mut rest = &block[first..];
    while !rest.is_empty() {
        let n = rest.len().min(max);
        super::continuation::encode(stream, &rest[..n], n == rest.len(), dst);
        rest = &rest[n..];
    }
}
