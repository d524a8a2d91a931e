//! seqID rewriting (ref §1.5). Binary seqIDs are 4 fixed bytes, patched in place; compact
//! seqIDs are varints, so when the width changes the frame is rebuilt around the new varint and
//! every enclosing length (frame LENGTH, TTHeaderFramed inner length) moves by the delta.

use bytes::{BufMut, BytesMut};

use super::frame::{FrameInfo, HEADER_SEQ_AT};
use super::message::{encode_varint32, Protocol, SeqId};

/// The seqID bytes a client wrote, kept verbatim so the reply carries exactly them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalSeq {
    /// Payload seqID as on the wire: 4 bytes for binary, 1..=5 varint bytes for compact.
    payload: [u8; 5],
    payload_len: u8,
    /// Header seqID (bytes 8..12) for TTHeader/THeader frames.
    header: Option<[u8; 4]>,
}

impl OriginalSeq {
    /// Takes the client's seqID bytes out of a request frame.
    pub fn capture(frame: &[u8], info: &FrameInfo) -> Self {
        let mut payload = [0u8; 5];
        let n = info.msg.seq_len;
        payload[..n].copy_from_slice(&frame[info.msg.seq_at..info.msg.seq_at + n]);
        let header = info.header_seq.then(|| {
            let mut h = [0u8; 4];
            h.copy_from_slice(&frame[HEADER_SEQ_AT..HEADER_SEQ_AT + 4]);
            h
        });
        OriginalSeq { payload, payload_len: n as u8, header }
    }

    /// Builds one from raw bytes: a request header parsed without a complete frame.
    pub fn from_parts(payload_seq: &[u8], header: Option<[u8; 4]>) -> Self {
        let mut payload = [0u8; 5];
        let n = payload_seq.len().min(5);
        payload[..n].copy_from_slice(&payload_seq[..n]);
        OriginalSeq { payload, payload_len: n as u8, header }
    }

    /// The payload seqID bytes as the client wrote them.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.payload[..self.payload_len as usize]
    }

    /// The 4 bytes for a header seqID: the client's header seq, or the payload seq.
    pub fn header_bytes(&self, payload_seq: i32) -> [u8; 4] {
        self.header.unwrap_or(payload_seq.to_be_bytes())
    }
}

/// Encodes `seq` the way `protocol` writes a seqID.
pub fn seq_wire_bytes(protocol: Protocol, seq: SeqId) -> ([u8; 5], usize) {
    let seq = seq.get();
    match protocol {
        Protocol::Compact => encode_varint32(seq as u32),
        _ => {
            let mut b = [0u8; 5];
            b[..4].copy_from_slice(&seq.to_be_bytes());
            (b, 4)
        }
    }
}

/// Writes an upstream seqID into a request, in the payload and (when present) the header.
pub fn patch_request(frame: BytesMut, info: &FrameInfo, seq: SeqId) -> BytesMut {
    let (bytes, n) = seq_wire_bytes(info.msg.protocol, seq);
    let frame = replace(frame, info, &bytes[..n], info.header_seq.then(|| seq.get().to_be_bytes()));
    refresh_checksum(frame, info)
}

/// Whether [`patch_request_in_place`] can write `seq` into this request: its seqID has the
/// same width on the wire (always for binary; for compact, the same varint length).
pub fn request_fits(info: &FrameInfo, seq: SeqId) -> bool {
    seq_wire_bytes(info.msg.protocol, seq).1 == info.msg.seq_len
}

/// [`patch_request`] without moving a byte, for a request where [`request_fits`].
pub fn patch_request_in_place(frame: &mut [u8], info: &FrameInfo, seq: SeqId) {
    let (bytes, n) = seq_wire_bytes(info.msg.protocol, seq);
    write_in_place(frame, info, &bytes[..n], info.header_seq.then(|| seq.get().to_be_bytes()));
}

/// A TTHeader `crc32c` covers the payload, so it is recomputed after the payload changed.
fn refresh_checksum(mut frame: BytesMut, info: &FrameInfo) -> BytesMut {
    refresh_checksum_in_place(&mut frame, info);
    frame
}

fn refresh_checksum_in_place(frame: &mut [u8], info: &FrameInfo) {
    if let Some(r) = info.crc32c.clone() {
        let crc = super::crc32c::crc32c(&frame[info.payload_at..]);
        super::crc32c::write_hex(&mut frame[r], crc);
    }
}

/// Writes the client's original seqID bytes back into a reply.
pub fn restore_reply(frame: BytesMut, info: &FrameInfo, orig: &OriginalSeq) -> BytesMut {
    let frame = replace(frame, info, orig.payload_bytes(), reply_header(info, orig));
    refresh_checksum(frame, info)
}

/// Whether [`restore_reply_in_place`] can restore this reply: the client's seqID has the
/// width of the one in the reply.
pub fn reply_fits(info: &FrameInfo, orig: &OriginalSeq) -> bool {
    orig.payload_len as usize == info.msg.seq_len
}

/// [`restore_reply`] without moving a byte, for a reply where [`reply_fits`].
pub fn restore_reply_in_place(frame: &mut [u8], info: &FrameInfo, orig: &OriginalSeq) {
    write_in_place(frame, info, orig.payload_bytes(), reply_header(info, orig));
}

fn reply_header(info: &FrameInfo, orig: &OriginalSeq) -> Option<[u8; 4]> {
    info.header_seq.then(|| orig.header.unwrap_or_else(|| fixed_from(orig.payload_bytes())))
}

/// Same-width rewrite: the seqIDs, then the checksum.
fn write_in_place(frame: &mut [u8], info: &FrameInfo, payload_seq: &[u8], header_seq: Option<[u8; 4]>) {
    debug_assert_eq!(payload_seq.len(), info.msg.seq_len);
    if let Some(h) = header_seq {
        frame[HEADER_SEQ_AT..HEADER_SEQ_AT + 4].copy_from_slice(&h);
    }
    let at = info.msg.seq_at;
    frame[at..at + payload_seq.len()].copy_from_slice(payload_seq);
    refresh_checksum_in_place(frame, info);
}

fn fixed_from(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    if b.len() == 4 {
        out.copy_from_slice(b);
    } else if let Ok((v, _)) = super::message::read_varint32(b, 0) {
        out = v.to_be_bytes();
    }
    out
}

fn replace(mut frame: BytesMut, info: &FrameInfo, payload_seq: &[u8], header_seq: Option<[u8; 4]>) -> BytesMut {
    if let Some(h) = header_seq {
        frame[HEADER_SEQ_AT..HEADER_SEQ_AT + 4].copy_from_slice(&h);
    }
    let at = info.msg.seq_at;
    let old = info.msg.seq_len;
    if payload_seq.len() == old {
        frame[at..at + old].copy_from_slice(payload_seq);
        return frame;
    }
    // Width changed (compact varint): rebuild around the new varint and fix the lengths.
    let delta = payload_seq.len() as i64 - old as i64;
    let mut out = BytesMut::with_capacity((frame.len() as i64 + delta) as usize);
    out.put_slice(&frame[..at]);
    out.put_slice(payload_seq);
    out.put_slice(&frame[at + old..]);
    adjust_u32(&mut out, 0, delta);
    if let Some(inner) = info.inner_len_at {
        adjust_u32(&mut out, inner, delta);
    }
    out
}

fn adjust_u32(buf: &mut [u8], at: usize, delta: i64) {
    let v = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as i64 + delta;
    buf[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes());
}
