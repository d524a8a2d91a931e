//! HEADERS (type 0x1): `[pad length] [E + stream dependency, weight] fragment [padding]`,
//! flags END_STREAM, END_HEADERS, PADDED, PRIORITY. A block larger than the peer's
//! SETTINGS_MAX_FRAME_SIZE continues in CONTINUATION frames written right after it.

use std::ops::Range;

use bytes::BytesMut;

use super::{kind, need_stream, u31, unpad, FrameError, Head, HeadersFlags, Reason, StreamId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    /// The header-block fragment (a range of the payload).
    pub fragment: Range<usize>,
    pub end_stream: bool,
    pub end_headers: bool,
    /// Stream dependency, when the PRIORITY flag is set (parsed, then ignored: RFC 9113 §5.3.2).
    pub depends_on: Option<StreamId>,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Headers, FrameError> {
    need_stream(head, "HEADERS on stream 0")?;
    let flags = HeadersFlags::from(head.flags);
    let mut r = unpad(flags.is_padded(), payload)?;
    let mut depends_on = None;
    if flags.is_priority() {
        if r.len() < 5 {
            return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "HEADERS too short for its priority"));
        }
        // A stream that depends on itself is a stream error, which the side raises once the
        // block is decoded (HPACK state must follow every block).
        depends_on = Some(StreamId::new(u31(&payload[r.start..])));
        r.start += 5;
    }
    Ok(Headers { fragment: r, end_stream: flags.is_end_stream(), end_headers: flags.is_end_headers(), depends_on })
}

/// Fills in the head of a HEADERS frame (END_HEADERS set) whose block already follows the
/// first `HEAD_LEN` octets of `frame`; the block must fit in one frame.
pub fn head_in_place(stream: StreamId, end_stream: bool, frame: &mut [u8]) {
    let flags = HeadersFlags::END_HEADERS.with(HeadersFlags::END_STREAM, end_stream);
    let len = frame.len() - super::HEAD_LEN;
    Head::new(kind::HEADERS, flags, stream, len).write_into(frame);
}

/// Writes a header block as one HEADERS frame plus as many CONTINUATION frames as
/// `max_frame_size` requires, contiguously (nothing may come between them on the wire).
pub fn encode(stream: StreamId, block: &[u8], end_stream: bool, max_frame_size: usize, dst: &mut BytesMut) {
    let max = max_frame_size.max(1);
    let first = block.len().min(max);
    let flags = HeadersFlags::empty()
        .with(HeadersFlags::END_STREAM, end_stream)
        .with(HeadersFlags::END_HEADERS, first == block.len());
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
