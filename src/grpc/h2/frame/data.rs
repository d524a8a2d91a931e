//! DATA (type 0x0): `[pad length] data [padding]`, flags END_STREAM and PADDED.

use std::ops::Range;

use bytes::BytesMut;

use super::{flag, kind, need_stream, unpad, FrameError, Head};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// The content, padding removed (a range of the payload).
    pub data: Range<usize>,
    pub end_stream: bool,
    /// What the frame counts against flow control: the whole payload, padding included.
    pub flow_len: usize,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Data, FrameError> {
    need_stream(head, "DATA on stream 0")?;
    let data = unpad(head, payload)?;
    Ok(Data { data, end_stream: head.has(flag::END_STREAM), flow_len: payload.len() })
}

/// Writes a DATA frame header for `len` bytes of content that the caller appends.
pub fn encode_head(stream: u32, len: usize, end_stream: bool, dst: &mut BytesMut) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    Head::new(kind::DATA, flags, stream, len).encode(dst);
}

/// A whole DATA frame.
pub fn encode(stream: u32, data: &[u8], end_stream: bool, dst: &mut BytesMut) {
    encode_head(stream, data.len(), end_stream, dst);
    dst.extend_from_slice(data);
}
