//! RST_STREAM (type 0x3): one error code; length must be 4.

use bytes::{BufMut, BytesMut};

use super::{kind, need_stream, Flags, FrameError, Head, Reason, StreamId};

pub fn parse(head: &Head, payload: &[u8]) -> Result<Reason, FrameError> {
    need_stream(head, "RST_STREAM on stream 0")?;
    if payload.len() != 4 {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "RST_STREAM length is not 4"));
    }
    Ok(Reason(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])))
}

pub fn encode(stream: StreamId, reason: Reason, dst: &mut BytesMut) {
    Head::new(kind::RST_STREAM, Flags::NONE, stream, 4).encode(dst);
    dst.put_u32(reason.0);
}
