//! TTHeader Streaming frames (ref §3.1), sans I/O: classify a frame, patch its stream id, and
//! write the frames the proxy makes itself (a Trailer or Rst carrying an EXCEPTION, a bare Rst).
//! Payloads are never decoded; only an EXCEPTION message's seq is found, to be patched.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::thrift::codec::exception::encode_binary_exception;
use crate::thrift::codec::frame::{ttheader_fields, TTHEADER_MAGIC};
use crate::thrift::codec::ParseError;

/// FLAGS bit of every TTHeader Streaming frame (`HeaderFlagsStreaming`).
pub const FLAG_STREAMING: u16 = 0x0002;
/// PROTOCOL ID of a ttstream frame: a Thrift struct without a message envelope.
pub const PROTOCOL_THRIFT_STRUCT: u8 = 0x10;
/// Offset of the stream id (the TTHeader sequence number).
pub const SID_AT: usize = 8;

/// The five frame types (int key 27, one ASCII digit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// Server (or proxy) to client only; servers ignore it.
    Meta,
    /// Client: opens the stream. Server: its response headers.
    Header,
    /// One message.
    Data,
    /// Client: half-close. Server: the end of the stream.
    Trailer,
    /// Either side: abort the stream.
    Rst,
}

impl FrameType {
    fn from_digit(d: u8) -> Option<FrameType> {
        Some(match d {
            b'1' => FrameType::Meta,
            b'2' => FrameType::Header,
            b'3' => FrameType::Data,
            b'4' => FrameType::Trailer,
            b'5' => FrameType::Rst,
            _ => return None,
        })
    }

    fn digit(self) -> u8 {
        match self {
            FrameType::Meta => b'1',
            FrameType::Header => b'2',
            FrameType::Data => b'3',
            FrameType::Trailer => b'4',
            FrameType::Rst => b'5',
        }
    }

    /// The label metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Meta => "meta",
            FrameType::Header => "header",
            FrameType::Data => "data",
            FrameType::Trailer => "trailer",
            FrameType::Rst => "rst",
        }
    }
}

/// A classified ttstream frame: where its fields are (offsets from the frame's first byte).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFrame {
    pub sid: i32,
    pub kind: FrameType,
    /// Int key 9, ToMethod (on every frame Kitex writes).
    pub method: Option<Range<usize>>,
    /// String key `isn`, the IDL service name (the client's Header frame).
    pub isn: Option<Range<usize>>,
    /// Int key 6, ToService (Kitex clients do not send it; others may).
    pub to_service: Option<Range<usize>>,
    /// Int key 12, RPCTimeout in milliseconds (stock Kitex clients do not send it).
    pub rpc_timeout_ms: Option<u64>,
    pub payload_at: usize,
    /// The seq of the strict-binary EXCEPTION message a Trailer or Rst may carry.
    pub exception_seq_at: Option<usize>,
}

impl StreamFrame {
    /// Bytes of payload in `frame`.
    pub fn payload_len(&self, frame: &[u8]) -> usize {
        frame.len().saturating_sub(self.payload_at)
    }
}

/// Classifies the whole frame `frame` (LENGTH prefix included).
pub fn parse(frame: &[u8]) -> Result<StreamFrame, ParseError> {
    let bad = ParseError::Invalid;
    if frame.len() < 14 {
        return Err(bad("frame shorter than a TTHeader"));
    }
    if u16::from_be_bytes([frame[4], frame[5]]) != TTHEADER_MAGIC {
        return Err(bad("not a TTHeader frame on a TTHeader Streaming connection"));
    }
    if u16::from_be_bytes([frame[6], frame[7]]) & FLAG_STREAMING == 0 {
        return Err(bad("frame without the streaming flag on a TTHeader Streaming connection"));
    }
    let sid = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
    let (_, infos, payload_at) = ttheader_fields(frame)?;
    let kind = infos.frame_type.and_then(FrameType::from_digit).ok_or(bad("no valid frame type (int key 27)"))?;
    let exception_seq_at = match kind {
        FrameType::Trailer | FrameType::Rst => exception_seq_at(frame, payload_at),
        _ => None,
    };
    Ok(StreamFrame {
        sid,
        kind,
        method: infos.to_method,
        isn: infos.isn,
        to_service: infos.to_service,
        rpc_timeout_ms: infos.rpc_timeout_ms,
        payload_at,
        exception_seq_at,
    })
}

/// Where the seq of a strict-binary EXCEPTION message at `at` is (`at + 8 + name length`), if
/// that is what the payload holds and it is all there.
fn exception_seq_at(frame: &[u8], at: usize) -> Option<usize> {
    let p = frame.get(at..at + 8)?;
    if p[..4] != [0x80, 0x01, 0x00, 0x03] {
        return None;
    }
    let n = u32::from_be_bytes([p[4], p[5], p[6], p[7]]) as usize;
    let seq = at.checked_add(8)?.checked_add(n)?;
    (seq.checked_add(4)? <= frame.len()).then_some(seq)
}

/// Writes stream id `sid` into `frame`: the header's sequence number and an EXCEPTION
/// payload's seq.
#[inline]
pub fn patch_sid(frame: &mut [u8], f: &StreamFrame, sid: i32) {
    frame[SID_AT..SID_AT + 4].copy_from_slice(&sid.to_be_bytes());
    if let Some(at) = f.exception_seq_at {
        frame[at..at + 4].copy_from_slice(&sid.to_be_bytes());
    }
}

/// Appends a complete frame: int keys 27 (type) and 9 (method) as Kitex writes on every frame,
/// string keys `strs`, then `payload`.
pub fn encode(dst: &mut BytesMut, sid: i32, kind: FrameType, method: &[u8], strs: &[(&[u8], &[u8])], payload: &[u8]) {
    let mut header = BytesMut::with_capacity(32 + method.len());
    header.put_slice(&[PROTOCOL_THRIFT_STRUCT, 0]);
    if !strs.is_empty() {
        header.put_u8(0x01);
        header.put_u16(strs.len() as u16);
        for (k, v) in strs {
            header.put_u16(k.len() as u16);
            header.put_slice(k);
            header.put_u16(v.len() as u16);
            header.put_slice(v);
        }
    }
    header.put_u8(0x10);
    header.put_u16(2);
    header.put_slice(&[0, 27, 0, 1, kind.digit()]);
    header.put_u16(9);
    header.put_u16(method.len() as u16);
    header.put_slice(method);
    while header.len() % 4 != 0 {
        header.put_u8(0);
    }
    dst.reserve(14 + header.len() + payload.len());
    dst.put_u32((10 + header.len() + payload.len()) as u32);
    dst.put_u16(TTHEADER_MAGIC);
    dst.put_u16(FLAG_STREAMING);
    dst.put_i32(sid);
    dst.put_u16((header.len() / 4) as u16);
    dst.put_slice(&header);
    dst.put_slice(payload);
}

/// Appends a Trailer or Rst frame for stream `sid` carrying an EXCEPTION (method name, seq =
/// the stream id, a TApplicationException of `type_id`), as a Kitex server writes one.
pub fn encode_exception(dst: &mut BytesMut, sid: i32, kind: FrameType, method: &[u8], type_id: i32, message: &str) {
    let mut payload = BytesMut::with_capacity(32 + method.len() + message.len());
    encode_binary_exception(&mut payload, method, sid, type_id, message);
    encode(dst, sid, kind, method, &[], &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ref §2.7's Kitex TTHeader example (CALL "ping", seq 7, isn=Echo, ToMethod=ping,
    /// ToService=echo) with the streaming flag set and int key 27 would be a ttstream Header;
    /// here the example itself is checked field by field through the shared header walk.
    #[test]
    fn reference_example_header_fields() {
        let text = "00 00 00 3f 10 00 00 00 00 00 00 07 00 09 \
                    00 00 \
                    01 00 01 00 03 69 73 6e 00 04 45 63 68 6f \
                    10 00 02 00 09 00 04 70 69 6e 67 00 06 00 04 65 63 68 6f \
                    00 \
                    80 01 00 01 00 00 00 04 70 69 6e 67 00 00 00 07 00";
        let bytes: Vec<u8> = text.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
        assert_eq!(bytes.len(), 67);
        let (proto, infos, payload_at) = ttheader_fields(&bytes).unwrap();
        assert_eq!(proto, 0);
        assert_eq!(payload_at, 50);
        assert_eq!(&bytes[infos.isn.unwrap()], b"Echo");
        assert_eq!(&bytes[infos.to_method.unwrap()], b"ping");
        assert_eq!(&bytes[infos.to_service.unwrap()], b"echo");
        // Without the streaming flag it is refused as a ttstream frame.
        assert!(parse(&bytes).is_err());
    }

    #[test]
    fn encoded_frames_parse_back() {
        let mut b = BytesMut::new();
        encode(&mut b, 5, FrameType::Header, b"Echo", &[(b"isn", b"svc"), (b"RPC_TRANSIT_k", b"v")], b"");
        let f = parse(&b).unwrap();
        assert_eq!(f.sid, 5);
        assert_eq!(f.kind, FrameType::Header);
        assert_eq!(&b[f.method.clone().unwrap()], b"Echo");
        assert_eq!(&b[f.isn.clone().unwrap()], b"svc");
        assert_eq!(f.payload_at, b.len());
        assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 4, b.len());
        assert_eq!((f.payload_at - 14) % 4, 0);
    }

    #[test]
    fn exception_seq_is_found_and_patched_with_the_header_sid() {
        let mut b = BytesMut::new();
        encode_exception(&mut b, 9, FrameType::Rst, b"Bidi", 12013, "connection closed");
        let f = parse(&b).unwrap();
        assert_eq!(f.kind, FrameType::Rst);
        let at = f.exception_seq_at.unwrap();
        assert_eq!(at, f.payload_at + 8 + 4);
        assert_eq!(&b[at..at + 4], &9i32.to_be_bytes());
        patch_sid(&mut b, &f, -77);
        let g = parse(&b).unwrap();
        assert_eq!(g.sid, -77);
        assert_eq!(&b[at..at + 4], &(-77i32).to_be_bytes());
        // The TApplicationException body: field 1 message, field 2 type 12013.
        let body = &b[at + 4..];
        assert_eq!(&body[..3], &[0x0b, 0, 1]);
        let n = u32::from_be_bytes([body[3], body[4], body[5], body[6]]) as usize;
        assert_eq!(&body[7..7 + n], b"connection closed");
        assert_eq!(&body[7 + n..7 + n + 3], &[0x08, 0, 2]);
        assert_eq!(i32::from_be_bytes(body[10 + n..14 + n].try_into().unwrap()), 12013);
    }

    #[test]
    fn a_data_payload_is_never_taken_for_an_exception() {
        let mut b = BytesMut::new();
        // A Data frame whose payload happens to look like an EXCEPTION message.
        encode(&mut b, 3, FrameType::Data, b"m", &[], &[0x80, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0]);
        assert_eq!(parse(&b).unwrap().exception_seq_at, None);
        // A Trailer whose payload claims a name longer than the frame.
        let mut t = BytesMut::new();
        encode(&mut t, 3, FrameType::Trailer, b"m", &[], &[0x80, 1, 0, 3, 0, 0, 0, 200, 0, 0, 0, 3]);
        assert_eq!(parse(&t).unwrap().exception_seq_at, None);
    }

    #[test]
    fn frames_without_type_flag_or_magic_are_invalid() {
        let mut b = BytesMut::new();
        encode(&mut b, 1, FrameType::Data, b"m", &[], b"x");
        let mut no_flag = b.to_vec();
        no_flag[7] = 0;
        assert!(parse(&no_flag).is_err());
        let mut bad_magic = b.to_vec();
        bad_magic[4] = 0x0f;
        assert!(parse(&bad_magic).is_err());
        let mut bad_type = b.to_vec();
        let at = bad_type.windows(5).position(|w| w == [0, 27, 0, 1, b'3']).unwrap();
        bad_type[at + 4] = b'9';
        assert!(parse(&bad_type).is_err());
        assert!(parse(&b[..10]).is_err());
    }
}
