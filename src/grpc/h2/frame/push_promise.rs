//! PUSH_PROMISE (type 0x5): `[pad length] R + promised stream id (31) fragment [padding]`.
//! The proxy never pushes and tells upstreams ENABLE_PUSH=0, so receiving one is a connection
//! PROTOCOL_ERROR at the connection layer; it is still parsed (its block must be accounted).

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use super::{kind, need_stream, u31, unpad, FrameError, Head, PushPromiseFlags, Reason, StreamId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushPromise {
    pub promised: StreamId,
    pub fragment: Range<usize>,
    pub end_headers: bool,
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<PushPromise, FrameError> {
    need_stream(head, "PUSH_PROMISE on stream 0")?;
    let flags = PushPromiseFlags::from(head.flags);
    let r = unpad(flags.is_padded(), payload)?;
    if r.len() < 4 {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "PUSH_PROMISE too short"));
    }
    Ok(PushPromise {
        promised: StreamId::new(u31(&payload[r.start..])),
        fragment: r.start + 4..r.end,
        end_headers: flags.is_end_headers(),
    })
}

pub fn encode(stream: StreamId, promised: StreamId, fragment: &[u8], dst: &mut BytesMut) {
    Head::new(kind::PUSH_PROMISE, PushPromiseFlags::END_HEADERS, stream, 4 + fragment.len()).encode(dst);
    dst.put_u32(promised.get());
    dst.extend_from_slice(fragment);
}
