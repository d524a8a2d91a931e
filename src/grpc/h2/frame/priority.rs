//! PRIORITY (type 0x2): `E + stream dependency (32), weight (8)`. Deprecated by RFC 9113
//! but still parsed: a wrong length is a stream FRAME_SIZE_ERROR, self-dependency a stream
//! PROTOCOL_ERROR. The proxy ignores priorities.

use bytes::{BufMut, BytesMut};

use super::{kind, need_stream, u31, Flags, FrameError, Head, Reason, StreamId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub depends_on: StreamId,
    pub exclusive: bool,
    pub weight: u8,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Priority, FrameError> {
    need_stream(head, "PRIORITY on stream 0")?;
    if payload.len() != 5 {
        return Err(FrameError::Stream(head.stream, Reason::FRAME_SIZE_ERROR, "PRIORITY length is not 5"));
    }
    let depends_on = StreamId::new(u31(payload));
    if depends_on == head.stream {
        return Err(FrameError::Stream(head.stream, Reason::PROTOCOL_ERROR, "stream depends on itself"));
    }
    Ok(Priority { depends_on, exclusive: payload[0] & 0x80 != 0, weight: payload[4] })
}

pub fn encode(stream: StreamId, p: Priority, dst: &mut BytesMut) {
    Head::new(kind::PRIORITY, Flags::NONE, stream, 5).encode(dst);
    dst.put_u32(p.depends_on.get() | if p.exclusive { 1 << 31 } else { 0 });
    dst.put_u8(p.weight);
}
