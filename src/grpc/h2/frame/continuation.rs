//! CONTINUATION (type 0x9): the rest of a header block, flag END_HEADERS.

use std::ops::Range;

use bytes::BytesMut;

use super::{kind, need_stream, ContinuationFlags, FrameError, Head, StreamId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continuation {
    pub fragment: Range<usize>,
    pub end_headers: bool,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Continuation, FrameError> {
    need_stream(head, "CONTINUATION on stream 0")?;
    Ok(Continuation { fragment: 0..payload.len(), end_headers: ContinuationFlags::from(head.flags).is_end_headers() })
}

pub fn encode(stream: StreamId, fragment: &[u8], end_headers: bool, dst: &mut BytesMut) {
    let flags = ContinuationFlags::empty().with(ContinuationFlags::END_HEADERS, end_headers);
    Head::new(kind::CONTINUATION, flags, stream, fragment.len()).encode(dst);
    dst.extend_from_slice(fragment);
}
