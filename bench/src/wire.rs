//! Request frames the load generator sends and the check it applies to each reply. A request
//! is `CALL echo(1: binary payload)` whose payload starts with an 8-byte tag (connection id,
//! seqID), so a reply that belongs to another request or another client is caught.

use bytes::{BufMut, BytesMut};

use ringway::thrift::codec::message::{encode_varint32, REPLY};
use ringway::thrift::codec::parse_frame;

/// The Thrift dialects the load generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchProtocol {
    FramedBinary,
    FramedCompact,
    TTHeader,
    THeader,
    GrpcUnary,
    GrpcServerStream,
    GrpcBidi,
    /// TTHeader Streaming: M bidi streams per connection, one message in flight on each.
    TtStreamBidi,
    /// TTHeader Streaming: M server streams at a time, 10 messages each.
    TtStreamServer,
}

impl BenchProtocol {
    pub fn parse(s: &str) -> Result<BenchProtocol, String> {
        Ok(match s {
            "framed" | "framed-binary" => BenchProtocol::FramedBinary,
            "framed-compact" => BenchProtocol::FramedCompact,
            "ttheader" => BenchProtocol::TTHeader,
            "theader" => BenchProtocol::THeader,
            "grpc-unary" | "grpc" => BenchProtocol::GrpcUnary,
            "grpc-server-stream" => BenchProtocol::GrpcServerStream,
            "grpc-bidi" => BenchProtocol::GrpcBidi,
            "ttstream-bidi" => BenchProtocol::TtStreamBidi,
            "ttstream-server" => BenchProtocol::TtStreamServer,
            other => {
                return Err(format!(
                    "unknown protocol {other:?} (framed-binary, framed-compact, ttheader, theader, grpc-unary, \
                     grpc-server-stream, grpc-bidi, ttstream-bidi, ttstream-server)"
                ))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            BenchProtocol::FramedBinary => "framed-binary",
            BenchProtocol::FramedCompact => "framed-compact",
            BenchProtocol::TTHeader => "ttheader",
            BenchProtocol::THeader => "theader",
            BenchProtocol::GrpcUnary => "grpc-unary",
            BenchProtocol::GrpcServerStream => "grpc-server-stream",
            BenchProtocol::GrpcBidi => "grpc-bidi",
            BenchProtocol::TtStreamBidi => "ttstream-bidi",
            BenchProtocol::TtStreamServer => "ttstream-server",
        }
    }

    pub fn is_ttstream(&self) -> bool {
        matches!(self, BenchProtocol::TtStreamBidi | BenchProtocol::TtStreamServer)
    }

    pub fn is_grpc(&self) -> bool {
        matches!(self, BenchProtocol::GrpcUnary | BenchProtocol::GrpcServerStream | BenchProtocol::GrpcBidi)
    }
}

const METHOD: &[u8] = b"echo";

/// Appends one request frame to `dst`.
pub fn encode_request(dst: &mut BytesMut, proto: BenchProtocol, seq: i32, conn: u32, payload: usize) {
    let payload = payload.max(8);
    let len_at = dst.len();
    dst.put_u32(0);
    match proto {
        BenchProtocol::TTHeader => {
            dst.put_u16(0x1000);
            dst.put_u16(0);
            dst.put_i32(seq);
            // proto 0, 0 transforms, int KV {9 (ToMethod): "echo"}: 13 bytes, padded to 16.
            dst.put_u16(4);
            dst.put_slice(&[0, 0, 0x10, 0, 1, 0, 9, 0, 4]);
            dst.put_slice(METHOD);
            dst.put_slice(&[0, 0, 0]);
        }
        BenchProtocol::THeader => {
            dst.put_u16(0x0fff);
            dst.put_u16(0);
            dst.put_i32(seq);
            dst.put_u16(1);
            dst.put_slice(&[0, 0, 0, 0]);
        }
        _ => {}
    }
    match proto {
        BenchProtocol::FramedCompact => {
            dst.put_slice(&[0x82, 0x21]);
            let (b, n) = encode_varint32(seq as u32);
            dst.put_slice(&b[..n]);
            dst.put_u8(METHOD.len() as u8);
            dst.put_slice(METHOD);
            dst.put_u8(0x18);
            let (b, n) = encode_varint32(payload as u32);
            dst.put_slice(&b[..n]);
        }
        _ => {
            dst.put_slice(&[0x80, 0x01, 0x00, 0x01]);
            dst.put_u32(METHOD.len() as u32);
            dst.put_slice(METHOD);
            dst.put_i32(seq);
            dst.put_slice(&[0x0b, 0x00, 0x01]);
            dst.put_u32(payload as u32);
        }
    }
    dst.put_u32(conn);
    dst.put_i32(seq);
    dst.put_bytes(b'x', payload - 8);
    dst.put_u8(0);
    let len = (dst.len() - len_at - 4) as u32;
    dst[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Why a reply was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    Malformed,
    Exception,
    /// Wrong type, or its tag names another connection or another seqID.
    Mismatch,
}

impl ReplyError {
    pub fn label(&self) -> &'static str {
        match self {
            ReplyError::Malformed => "malformed_reply",
            ReplyError::Exception => "exception",
            ReplyError::Mismatch => "mismatched_reply",
        }
    }
}

/// The seqID of a reply frame that parses (an EXCEPTION too).
pub fn reply_seq(frame: &[u8]) -> Option<i32> {
    parse_frame(frame, 256).ok().map(|info| info.msg.seq.get())
}

/// Checks a reply frame and returns its seqID.
pub fn check_reply(frame: &[u8], conn: u32) -> Result<i32, ReplyError> {
    let info = parse_frame(frame, 256).map_err(|_| ReplyError::Malformed)?;
    let seq = info.msg.seq.get();
    if info.msg.msg_type == ringway::thrift::codec::message::EXCEPTION {
        return Err(ReplyError::Exception);
    }
    if info.msg.msg_type != REPLY {
        return Err(ReplyError::Mismatch);
    }
    if info.header_seq && frame[8..12] != seq.to_be_bytes() {
        return Err(ReplyError::Mismatch);
    }
    // The tag sits right after the binary field header (7 bytes) or the compact one (1 + varint).
    let body = info.msg.body_at();
    let tag_at = match info.dialect.protocol {
        ringway::thrift::codec::Protocol::Compact => {
            let (_, n) =
                ringway::thrift::codec::message::read_varint32(frame, body + 1).map_err(|_| ReplyError::Malformed)?;
            body + 1 + n
        }
        _ => body + 7,
    };
    let tag = frame.get(tag_at..tag_at + 8).ok_or(ReplyError::Malformed)?;
    if tag[..4] != conn.to_be_bytes() || tag[4..] != seq.to_be_bytes() {
        return Err(ReplyError::Mismatch);
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_what_they_claim_and_echoed_replies_check() {
        for proto in
            [BenchProtocol::FramedBinary, BenchProtocol::FramedCompact, BenchProtocol::TTHeader, BenchProtocol::THeader]
        {
            let mut b = BytesMut::new();
            encode_request(&mut b, proto, 300, 7, 64);
            let info = parse_frame(&b, 256).unwrap_or_else(|e| panic!("{proto:?}: {e:?}"));
            assert_eq!((info.msg.seq.get(), &b[info.msg.name.clone()]), (300, &b"echo"[..]), "{proto:?}");
            assert_eq!(ringway::thrift::codec::frame_len(&b), Some(b.len()));
            // What the echo backend does: flip CALL to REPLY.
            let at = info.msg.type_at();
            b[at] = if proto == BenchProtocol::FramedCompact { (REPLY << 5) | 1 } else { REPLY };
            assert_eq!(check_reply(&b, 7), Ok(300), "{proto:?}");
            assert_eq!(check_reply(&b, 8), Err(ReplyError::Mismatch), "{proto:?}: other connection's tag");
        }
    }
}
