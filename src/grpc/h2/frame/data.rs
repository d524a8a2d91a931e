//! DATA (type 0x0): `[pad length] data [padding]`, flags END_STREAM and PADDED.

use std::ops::Range;

use bytes::BytesMut;

use super::{kind, need_stream, unpad, DataFlags, FrameError, Head, StreamId};

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
    let flags = DataFlags::from(head.flags);
    let data = unpad(flags.is_padded(), payload)?;
    Ok(Data { data, end_stream: flags.is_end_stream(), flow_len: payload.len() })
}

/// Writes a DATA frame header for `len` bytes of content that the caller appends.
pub fn encode_head(stream: StreamId, len: usize, end_stream: bool, dst: &mut BytesMut) {
    let flags = DataFlags::empty().with(DataFlags::END_STREAM, end_stream);
    Head::new(kind::DATA, flags, stream, len).encode(dst);
}

/// A whole DATA frame.
pub fn encode(stream: StreamId, data: &[u8], end_stream: bool, dst: &mut BytesMut) {
    encode_head(stream, data.len(), end_stream, dst);
    dst.extend_from_slice(data);
}
