//! WINDOW_UPDATE (type 0x8): `R + window size increment (31)`, on stream 0 (connection) or a
//! stream. An increment of 0 is a PROTOCOL_ERROR of the stream, or of the connection on 0.

use bytes::{BufMut, BytesMut};

use super::{kind, u31, Flags, FrameError, Head, Reason, StreamId};

pub fn parse(head: &Head, payload: &[u8]) -> Result<u32, FrameError> {
    if payload.len() != 4 {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4"));
    }
    let inc = u31(payload);
    if inc == 0 {
        let why = "WINDOW_UPDATE with a zero increment";
        return Err(if head.stream.is_zero() {
            FrameError::Connection(Reason::PROTOCOL_ERROR, why)
        } else {
            FrameError::Stream(head.stream, Reason::PROTOCOL_ERROR, why)
        });
    }
    Ok(inc)
}

pub fn encode(stream: StreamId, increment: u32, dst: &mut BytesMut) {
    debug_assert!(increment > 0 && increment <= super::MAX_WINDOW);
    Head::new(kind::WINDOW_UPDATE, Flags::NONE, stream, 4).encode(dst);
    dst.put_u32(increment);
}
