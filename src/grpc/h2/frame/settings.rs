//! SETTINGS (type 0x4): `n × (identifier u16, value u32)` on stream 0; an ACK is empty.
//! Values are validated here (RFC 9113 §6.5.2); unknown identifiers are ignored.

use bytes::{BufMut, BytesMut};

use super::{
    kind, need_conn, AckFlags, Flags, FrameError, Head, Reason, StreamId, MAX_MAX_FRAME_SIZE, MAX_WINDOW,
    MIN_MAX_FRAME_SIZE,
};

pub const HEADER_TABLE_SIZE: u16 = 0x1;
pub const ENABLE_PUSH: u16 = 0x2;
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const MAX_FRAME_SIZE: u16 = 0x5;
pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The settings a frame carried (absent = unchanged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Ack,
    Settings(Settings),
}

/// Parses a SETTINGS frame. `max_entries` bounds the entries per frame (a flood guard:
/// exceeding it is ENHANCE_YOUR_CALM).
pub fn parse(head: &Head, payload: &[u8], max_entries: usize) -> Result<Frame, FrameError> {
    need_conn(head, "SETTINGS on a stream")?;
    if AckFlags::from(head.flags).is_ack() {
        if !payload.is_empty() {
            return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "SETTINGS ACK with a payload"));
        }
        return Ok(Frame::Ack);
    }
    if payload.len() % 6 != 0 {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6"));
    }
    if payload.len() / 6 > max_entries {
        return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many entries in one SETTINGS frame"));
    }
    let mut s = Settings::default();
    for e in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([e[0], e[1]]);
        let v = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
        match id {
            HEADER_TABLE_SIZE => s.header_table_size = Some(v),
            ENABLE_PUSH => {
                if v > 1 {
                    return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "ENABLE_PUSH is not 0 or 1"));
                }
                s.enable_push = Some(v == 1);
            }
            MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(v),
            INITIAL_WINDOW_SIZE => {
                if v > MAX_WINDOW {
                    return Err(FrameError::Connection(Reason::FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1"));
                }
                s.initial_window_size = Some(v);
            }
            MAX_FRAME_SIZE => {
                if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&v) {
                    return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range"));
                }
                s.max_frame_size = Some(v);
            }
            MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(v),
            _ => {} // unknown: ignored (RFC 9113 §6.5.2)
        }
    }
    Ok(Frame::Settings(s))
}

pub fn encode(s: &Settings, dst: &mut BytesMut) {
    let entries: [(u16, Option<u32>); 6] = [
        (HEADER_TABLE_SIZE, s.header_table_size),
        (ENABLE_PUSH, s.enable_push.map(u32::from)),
        (MAX_CONCURRENT_STREAMS, s.max_concurrent_streams),
        (INITIAL_WINDOW_SIZE, s.initial_window_size),
        (MAX_FRAME_SIZE, s.max_frame_size),
        (MAX_HEADER_LIST_SIZE, s.max_header_list_size),
    ];
    let n = entries.iter().filter(|(_, v)| v.is_some()).count();
    Head::new(kind::SETTINGS, Flags::NONE, StreamId::ZERO, n * 6).encode(dst);
    for (id, v) in entries {
        if let Some(v) = v {
            dst.put_u16(id);
            dst.put_u32(v);
        }
    }
}

pub fn encode_ack(dst: &mut BytesMut) {
    Head::new(kind::SETTINGS, AckFlags::ACK, StreamId::ZERO, 0).encode(dst);
}
