//! PING (type 0x6): 8 opaque bytes on stream 0; the ACK echoes them.

use bytes::BytesMut;

use super::{kind, need_conn, AckFlags, FrameError, Head, Reason, StreamId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    pub ack: bool,
    pub data: [u8; 8],
}

pub fn parse(head: &Head, payload: &[u8]) -> Result<Ping, FrameError> {
    need_conn(head, "PING on a stream")?;
    let data: [u8; 8] =
        payload.try_into().map_err(|_| FrameError::Connection(Reason::FRAME_SIZE_ERROR, "PING length is not 8"))?;
    Ok(Ping { ack: AckFlags::from(head.flags).is_ack(), data })
}

pub fn encode(p: Ping, dst: &mut BytesMut) {
    Head::new(kind::PING, AckFlags::empty().with(AckFlags::ACK, p.ack), StreamId::ZERO, 8).encode(dst);
    dst.extend_from_slice(&p.data);
}
