//! CONTINUATION (type 0x9): the rest of a header block, flag END_HEADERS.

use std::ops::Range;

use bytes::BytesMut;

use super::{flag, kind, need_stream, FrameError, Head};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continuation {
    pub fragment: Range<usize>,
    pub end_headers: bool,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Continuation, FrameError> {
    need_stream(head, "CONTINUATION on stream 0")?;
    Ok(Continuation { fragment: 0..payload.len(), end_headers: head.has(flag::END_HEADERS) })
}

pub fn encode(stream: u32, fragment: &[u8], end_headers: bool, dst: &mut BytesMut) {
    let flags = if end_headers { flag::END_HEADERS } else { 0 };
    Head::new(kind::CONTINUATION, flags, stream, fragment.len()).encode(dst);
    dst.extend_from_slice(fragment);
}
