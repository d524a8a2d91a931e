//! Cutting and classifying length-prefixed frames: Framed, Kitex TTHeader (and
//! TTHeaderFramed), Apache THeader. A frame here always includes its 4-byte LENGTH prefix, so
//! every offset is "from the first byte on the wire" as in ref §1.5.

use std::ops::Range;

use super::message::{parse_message, read_varint32, MessageError, MessageHeader, Protocol};

pub const TTHEADER_MAGIC: u16 = 0x1000;
pub const THEADER_MAGIC: u16 = 0x0FFF;
/// Offset of the header-level seqID in TTHeader and THeader frames.
pub const HEADER_SEQ_AT: usize = 8;
/// TTHeader int-KV keys the proxy reads (ref §2.4).
const INT_KEY_TO_SERVICE: u16 = 6;
const INT_KEY_TO_METHOD: u16 = 9;
const INT_KEY_RPC_TIMEOUT: u16 = 12;
const INT_KEY_FRAME_TYPE: u16 = 27;

/// The length-prefixed transport of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Framed,
    /// Kitex TTHeader (magic 0x1000).
    TTHeader,
    /// Apache THeader (magic 0x0FFF).
    THeader,
}

/// Everything that decides how bytes look on one connection; upstream connections are pooled
/// per dialect so a reply is always parsed the way its request was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dialect {
    pub transport: Transport,
    pub protocol: Protocol,
    /// TTHeaderFramed: the TTHeader payload carries its own u32 length.
    pub inner_framed: bool,
}

/// What is wrong with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The frame is not complete yet.
    Incomplete,
    /// Malformed: answered with PROTOCOL_ERROR and the connection is closed.
    Invalid(&'static str),
    /// THeader transforms (zlib, …) would hide the seqID: INVALID_TRANSFORM.
    Transform,
}

impl From<MessageError> for ParseError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Incomplete => ParseError::Incomplete,
            MessageError::Invalid(why) => ParseError::Invalid(why),
        }
    }
}

/// A classified frame: where its fields are, nothing decoded beyond the headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub dialect: Dialect,
    pub msg: MessageHeader,
    /// True for TTHeader and THeader: the seqID also sits at bytes 8..12.
    pub header_seq: bool,
    /// Offset of the inner u32 length for TTHeaderFramed.
    pub inner_len_at: Option<usize>,
    /// TTHeader `isn` (IDL service name).
    pub isn: Option<Range<usize>>,
    /// TTHeader int key 6, ToService.
    pub to_service: Option<Range<usize>>,
    /// TTHeader int key 9, ToMethod.
    pub to_method: Option<Range<usize>>,
    /// TTHeader int key 12, RPCTimeout in milliseconds.
    pub rpc_timeout_ms: Option<u64>,
    /// TTHeader `crc32c` value (8 lowercase hex chars over the payload), rewritten after a
    /// seqID patch.
    pub crc32c: Option<Range<usize>>,
    /// TTHeader `crrst` in a reply: the server is about to close this connection.
    pub crrst: bool,
    /// TTHeader `PV_*` payload validator: cannot be re-signed after a rewrite.
    pub custom_validator: bool,
    /// Offset of the payload (after the header; the start of the message for Framed).
    pub payload_at: usize,
}

/// Returns the total wire length of the frame at the start of `buf` (LENGTH + 4), if the
/// prefix is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let b = buf.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 4)
}

fn be_u16(buf: &[u8], at: usize) -> Result<u16, ParseError> {
    buf.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(ParseError::Incomplete)
}

/// Classifies the frame at the start of `buf`. `buf` may be a prefix of the frame: then the
/// header fields that fit are parsed and `Incomplete` is returned for the rest, which is how
/// an oversized frame still gets an exception with its own method name and seqID.
pub fn parse_frame(buf: &[u8], max_name: usize) -> Result<FrameInfo, ParseError> {
    if buf.len() < 8 {
        return Err(ParseError::Incomplete);
    }
    let magic = be_u16(buf, 4)?;
    match magic {
        TTHEADER_MAGIC => parse_header_frame(buf, Transport::TTHeader, max_name),
        THEADER_MAGIC => parse_header_frame(buf, Transport::THeader, max_name),
        _ => {
            let msg = parse_message(buf, 4, max_name)?;
            let dialect = Dialect { transport: Transport::Framed, protocol: msg.protocol, inner_framed: false };
            Ok(FrameInfo {
                dialect,
                msg,
                header_seq: false,
                inner_len_at: None,
                isn: None,
                to_service: None,
                to_method: None,
                rpc_timeout_ms: None,
                crc32c: None,
                crrst: false,
                custom_validator: false,
                payload_at: 4,
            })
        }
    }
}

/// The value of TTHeader string header `key` in the frame `buf` (None for other dialects, or
/// when it is not there). Scans the info blocks again: only `lb = "hash"` on a header asks.
/// (Its own walk on purpose: sharing one walker with `parse_ttheader_infos` through a
/// closure, or teaching that function to keep one more key, cost every TTHeader request
/// 6-8 % more instructions under callgrind: 2,350 -> 2,482 / 2,542 at 32x10.)
pub fn string_header<'a>(buf: &'a [u8], info: &FrameInfo, key: &[u8]) -> Option<&'a [u8]> {
    if info.dialect.transport != Transport::TTHeader {
        return None;
    }
    let hs = usize::from(be_u16(buf, 12).ok()?) * 4;
    let h = buf.get(14..14 + hs)?;
    let u16_at = |i: usize| h.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    // Protocol id, transform count (always 0 here: parse_frame refused transforms).
    let mut i = 2;
    while i < h.len() {
        let id = h[i];
        i += 1;
        match id {
            0x00 => {}
            0x01 => {
                let count = u16_at(i)?;
                i += 2;
                for _ in 0..count {
                    let kl = u16_at(i)?;
                    let k = i + 2..i + 2 + kl;
                    let vl = u16_at(k.end)?;
                    let v = k.end + 2..k.end + 2 + vl;
                    if h.get(k.clone())? == key {
                        return h.get(v);
                    }
                    i = v.end;
                }
            }
            0x10 => {
                let count = u16_at(i)?;
                i += 2;
                for _ in 0..count {
                    i += 4 + u16_at(i + 2)?;
                }
            }
            0x11 => i += 2 + u16_at(i)?,
            _ => return None,
        }
    }
    None
}

/// Key/value ranges found in a header's info blocks (offsets from the frame's first byte).
#[derive(Default)]
pub struct Infos {
    pub isn: Option<Range<usize>>,
    pub to_service: Option<Range<usize>>,
    pub to_method: Option<Range<usize>>,
    pub rpc_timeout_ms: Option<u64>,
    pub crc32c: Option<Range<usize>>,
    pub crrst: bool,
    pub custom_validator: bool,
    /// Int key 27, the TTHeader Streaming frame type: its one ASCII digit.
    pub frame_type: Option<u8>,
}

/// The variable header of a TTHeader or THeader frame: its protocol id, its info fields and
/// where its payload starts. Inlined into each caller (the ping-pong and the streaming parse):
/// out of line, its large result went through memory and TTHeader requests took 9 % more
/// instructions (callgrind 32x10: 2,446 -> 2,668).
#[inline(always)]
fn header_area(buf: &[u8], transport: Transport) -> Result<(u32, Infos, usize), ParseError> {
    let hs = be_u16(buf, 12)? as usize * 4;
    if hs < 2 {
        return Err(ParseError::Invalid("header size too small"));
    }
    let header = 14..14 + hs;
    let total = frame_len(buf).unwrap_or(0);
    if header.end > total {
        return Err(ParseError::Invalid("header larger than frame"));
    }
    let hbuf = buf.get(header.clone()).ok_or(ParseError::Incomplete)?;
    let (proto_id, infos) = match transport {
        Transport::TTHeader => parse_ttheader_infos(hbuf, header.start)?,
        _ => parse_theader_infos(hbuf, header.start)?,
    };
    Ok((proto_id, infos, header.end))
}

/// The variable header of the Kitex TTHeader frame at the start of `buf` (TTHeader Streaming
/// reads its frames with it): protocol id, info fields, payload offset.
pub fn ttheader_fields(buf: &[u8]) -> Result<(u32, Infos, usize), ParseError> {
    header_area(buf, Transport::TTHeader)
}

fn parse_header_frame(buf: &[u8], transport: Transport, max_name: usize) -> Result<FrameInfo, ParseError> {
    if transport == Transport::TTHeader && be_u16(buf, 6)? & 0x0002 != 0 {
        return Err(ParseError::Invalid("TTHeader Streaming frame on a ping-pong connection"));
    }
    let total = frame_len(buf).unwrap_or(0);
    let (proto_id, infos, payload) = header_area(buf, transport)?;
    let (protocol_hint, at, inner_len_at) = match transport {
        Transport::TTHeader => {
            // Sniff like Kitex: payload is the message, or an inner u32 length then the message.
            let p = buf.get(payload..payload + 6).ok_or(ParseError::Incomplete)?;
            if matches!(p[..2], [0x80, 0x01] | [0x90, 0x01]) || p[0] == 0x82 {
                (None, payload, None)
            } else if matches!(p[4..6], [0x80, 0x01] | [0x90, 0x01]) {
                let inner = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
                if total < payload + 4 || inner != total - payload - 4 {
                    return Err(ParseError::Invalid("TTHeaderFramed inner length does not match the frame"));
                }
                (None, payload + 4, Some(payload))
            } else {
                return Err(ParseError::Invalid("TTHeader payload is not Thrift"));
            }
        }
        _ => (Some(proto_id), payload, None),
    };
    let msg = parse_message(buf, at, max_name)?;
    if let Some(id) = protocol_hint {
        let ok = match id {
            0 => matches!(msg.protocol, Protocol::Binary | Protocol::BinaryNonStrict),
            2 => msg.protocol == Protocol::Compact,
            _ => false,
        };
        if !ok {
            return Err(ParseError::Invalid("THeader protocol id does not match payload"));
        }
    }
    Ok(FrameInfo {
        dialect: Dialect { transport, protocol: msg.protocol, inner_framed: inner_len_at.is_some() },
        msg,
        header_seq: true,
        inner_len_at,
        isn: infos.isn,
        to_service: infos.to_service,
        to_method: infos.to_method,
        rpc_timeout_ms: infos.rpc_timeout_ms,
        crc32c: infos.crc32c,
        crrst: infos.crrst,
        custom_validator: infos.custom_validator,
        payload_at: payload,
    })
}

/// Kitex TTHeader variable header: u8 protocol, u8 transform count, ids, then info blocks with
/// u16 counts and lengths (ref §2.3).
#[inline(always)]
fn parse_ttheader_infos(h: &[u8], base: usize) -> Result<(u32, Infos), ParseError> {
    let bad = ParseError::Invalid("malformed TTHeader");
    let proto = u32::from(*h.first().ok_or(bad)?);
    let ntrans = *h.get(1).ok_or(bad)? as usize;
    if ntrans > 0 {
        return Err(ParseError::Transform);
    }
    let mut infos = Infos::default();
    let mut i = 2;
    let u16_at = |i: usize| -> Result<usize, ParseError> {
        h.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize).ok_or(bad)
    };
    while i < h.len() {
        let id = h[i];
        i += 1;
        match id {
            0x00 => {}
            0x01 => {
                let count = u16_at(i)?;
                i += 2;
                for _ in 0..count {
                    let kl = u16_at(i)?;
                    let key = i + 2..i + 2 + kl;
                    let vl = u16_at(key.end)?;
                    let val = key.end + 2..key.end + 2 + vl;
                    if val.end > h.len() {
                        return Err(bad);
                    }
                    match &h[key.clone()] {
                        b"isn" => infos.isn = Some(base + val.start..base + val.end),
                        b"crc32c" if val.len() == 8 => infos.crc32c = Some(base + val.start..base + val.end),
                        b"crc32c" => return Err(ParseError::Invalid("crc32c value is not 8 hex digits")),
                        b"crrst" => infos.crrst = true,
                        k if k.starts_with(b"PV_") => infos.custom_validator = true,
                        _ => {}
                    }
                    i = val.end;
                }
            }
            0x10 => {
                let count = u16_at(i)?;
                i += 2;
                for _ in 0..count {
                    let key = u16_at(i)? as u16;
                    let vl = u16_at(i + 2)?;
                    let val = i + 4..i + 4 + vl;
                    if val.end > h.len() {
                        return Err(bad);
                    }
                    let abs = base + val.start..base + val.end;
                    match key {
                        INT_KEY_TO_SERVICE => infos.to_service = Some(abs),
                        INT_KEY_TO_METHOD => infos.to_method = Some(abs),
                        INT_KEY_RPC_TIMEOUT => {
                            infos.rpc_timeout_ms =
                                std::str::from_utf8(&h[val.clone()]).ok().and_then(|s| s.parse().ok());
                        }
                        INT_KEY_FRAME_TYPE if vl == 1 => infos.frame_type = Some(h[val.start]),
                        _ => {}
                    }
                    i = val.end;
                }
            }
            0x11 => {
                let l = u16_at(i)?;
                i += 2 + l;
                if i > h.len() {
                    return Err(bad);
                }
            }
            _ => return Err(ParseError::Invalid("unknown TTHeader info id")),
        }
    }
    Ok((proto, infos))
}

/// Apache THeader variable header: varint protocol, varint transform count and ids, varint
/// info ids; only KEYVALUE (1) is defined, anything else ends the info section (ref §2.8).
fn parse_theader_infos(h: &[u8], _base: usize) -> Result<(u32, Infos), ParseError> {
    let var = |i: usize| -> Result<(u32, usize), ParseError> {
        read_varint32(h, i).map_err(|_| ParseError::Invalid("malformed THeader"))
    };
    let (proto, n) = var(0)?;
    let (ntrans, n2) = var(n)?;
    if ntrans > 0 {
        return Err(ParseError::Transform);
    }
    // KV headers are forwarded untouched; nothing in them routes an Apache THeader request.
    let _ = n2;
    Ok((proto, Infos::default()))
}

#[cfg(test)]
mod tests;
