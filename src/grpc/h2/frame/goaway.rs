//! GOAWAY (type 0x7): `R + last stream id (31), error code (32), debug data`, stream 0.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use super::{kind, need_conn, u31, Flags, FrameError, Head, Reason, StreamId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: StreamId,
    pub reason: Reason,
    /// Debug data (a range of the payload).
    pub debug: Range<usize>,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<GoAway, FrameError> {
    need_conn(head, "GOAWAY on a stream")?;
    if payload.len() < 8 {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes"));
    }
    let reason = Reason(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
    Ok(GoAway { last_stream: StreamId::new(u31(payload)), reason, debug: 8..payload.len() })
}

pub fn encode(last_stream: StreamId, reason: Reason, debug: &[u8], dst: &mut BytesMut) {
    Head::new(kind::GOAWAY, Flags::NONE, StreamId::ZERO, 8 + debug.len()).encode(dst);
    dst.put_u32(last_stream.get());
    dst.put_u32(reason.0);
    dst.extend_from_slice(debug);
}
