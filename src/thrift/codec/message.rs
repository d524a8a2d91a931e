//! The Thrift message header (binary strict, binary non-strict, compact): just enough of it to
//! find the method name, the message type and where the seqID sits. Payload structs are never
//! decoded. Offsets follow ref §1.2 and §1.3.

use std::ops::Range;

/// Binary-protocol strict version word (`0x8001` in the top half of the first u32).
pub const BINARY_VERSION_1: u16 = 0x8001;
/// Kitex Protobuf envelope: same layout as strict binary, different version word.
pub const KITEX_PROTOBUF_VERSION_1: u16 = 0x9001;
/// Compact protocol id byte.
pub const COMPACT_PROTOCOL_ID: u8 = 0x82;
/// Compact version (low 5 bits of the second byte).
pub const COMPACT_VERSION: u8 = 0x01;

pub const CALL: u8 = 1;
pub const REPLY: u8 = 2;
pub const EXCEPTION: u8 = 3;
pub const ONEWAY: u8 = 4;

/// Which message encoding a payload uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Strict binary (`80 01 00 type`).
    Binary,
    /// Old binary: name length first, type byte after the name.
    BinaryNonStrict,
    /// Compact protocol: seqID is an unsigned LEB128 varint (not zigzag).
    Compact,
    /// The Kitex Protobuf envelope (`90 01 00 type`): strict binary's layout, a protobuf
    /// payload; its exceptions are a protobuf `ErrorProto`, not a TApplicationException.
    KitexProtobuf,
}

/// What is wrong with a message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The buffer ends before the header does.
    Incomplete,
    /// The bytes are not a Thrift message header.
    Invalid(&'static str),
}

/// A Thrift message's seqID: the client's, or one an upstream connection allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(i32);

impl SeqId {
    /// The first seqID an upstream connection hands out (0 is never used: ref §1.5 rule 8).
    pub const FIRST: SeqId = SeqId(1);

    pub const fn new(seq: i32) -> SeqId {
        SeqId(seq)
    }

    pub const fn get(self) -> i32 {
        self.0
    }

    /// The next seqID to allocate after this one: counting up through the positive range,
    /// wrapping back to 1 below `i32::MAX` (never 0, never negative).
    pub const fn next(self) -> SeqId {
        if self.0 >= i32::MAX - 1 || self.0 < 1 {
            SeqId(1)
        } else {
            SeqId(self.0 + 1)
        }
    }
}

/// A parsed message header. All ranges and offsets are absolute in the buffer passed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    pub protocol: Protocol,
    /// Offset of the first byte of the message.
    pub start: usize,
    pub msg_type: u8,
    /// The method name, possibly `Service:method` (multiplexed).
    pub name: Range<usize>,
    pub seq: SeqId,
    /// Offset of the seqID field.
    pub seq_at: usize,
    /// Width of the seqID field on the wire: 4 for binary, 1..=5 for compact.
    pub seq_len: usize,
}

impl MessageHeader {
    /// Offset of the byte that holds the message type (for compact, shared with the version).
    pub fn type_at(&self) -> usize {
        match self.protocol {
            Protocol::Binary | Protocol::KitexProtobuf => self.start + 3,
            Protocol::BinaryNonStrict => self.name.end,
            Protocol::Compact => self.start + 1,
        }
    }

    /// Offset of the first byte after the header (start of the args/result struct).
    pub fn body_at(&self) -> usize {
        match self.protocol {
            Protocol::Compact => self.name.end,
            _ => self.seq_at + 4,
        }
    }
}

fn be_u32(buf: &[u8], at: usize) -> Result<u32, MessageError> {
    buf.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(MessageError::Incomplete)
}

/// Reads an unsigned LEB128 varint of at most 5 bytes. Returns (value, width).
pub fn read_varint32(buf: &[u8], at: usize) -> Result<(u32, usize), MessageError> {
    let mut value: u64 = 0;
    for i in 0..5 {
        let b = *buf.get(at + i).ok_or(MessageError::Incomplete)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(MessageError::Invalid("varint overflows 32 bits"));
            }
            return Ok((value as u32, i + 1));
        }
    }
    Err(MessageError::Invalid("varint longer than 5 bytes"))
}

/// Writes the canonical (shortest) LEB128 form of `v`; returns the bytes and their count.
pub fn encode_varint32(mut v: u32) -> ([u8; 5], usize) {
    let mut out = [0u8; 5];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[n] = byte;
            return (out, n + 1);
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

/// Parses the message header starting at `at`. `max_name` bounds the method-name length so a
/// hostile length can never make us wait for gigabytes.
pub fn parse_message(buf: &[u8], at: usize, max_name: usize) -> Result<MessageHeader, MessageError> {
    let b0 = *buf.get(at).ok_or(MessageError::Incomplete)?;
    if b0 == COMPACT_PROTOCOL_ID {
        return parse_compact(buf, at, max_name);
    }
    let word = be_u32(buf, at)?;
    let version = (word >> 16) as u16;
    if b0 & 0x80 != 0 {
        if version != BINARY_VERSION_1 && version != KITEX_PROTOBUF_VERSION_1 {
            return Err(MessageError::Invalid("bad binary protocol version"));
        }
        // Byte 2 is unused and must be 0: Kitex reads the low 16 bits as the type.
        if word & 0xff00 != 0 || !(CALL..=ONEWAY).contains(&((word & 0xff) as u8)) {
            return Err(MessageError::Invalid("bad message type"));
        }
        let msg_type = (word & 0xff) as u8;
        let n = be_u32(buf, at + 4)? as usize;
        if n > max_name {
            return Err(MessageError::Invalid("method name too long"));
        }
        let name = at + 8..at + 8 + n;
        let seq_at = name.end;
        let seq = SeqId(be_u32(buf, seq_at)? as i32);
        let protocol = if version == BINARY_VERSION_1 { Protocol::Binary } else { Protocol::KitexProtobuf };
        return Ok(MessageHeader { protocol, start: at, msg_type, name, seq, seq_at, seq_len: 4 });
    }
    // Non-strict binary: u32 name length, name, u8 type, i32 seq.
    let n = word as usize;
    if n > max_name {
        return Err(MessageError::Invalid("method name too long"));
    }
    let name = at + 4..at + 4 + n;
    let msg_type = *buf.get(name.end).ok_or(MessageError::Incomplete)?;
    let seq_at = name.end + 1;
    let seq = SeqId(be_u32(buf, seq_at)? as i32);
    if !(CALL..=ONEWAY).contains(&msg_type) {
        return Err(MessageError::Invalid("bad message type"));
    }
    Ok(MessageHeader { protocol: Protocol::BinaryNonStrict, start: at, msg_type, name, seq, seq_at, seq_len: 4 })
}

fn parse_compact(buf: &[u8], at: usize, max_name: usize) -> Result<MessageHeader, MessageError> {
    let tv = *buf.get(at + 1).ok_or(MessageError::Incomplete)?;
    if tv & 0x1f != COMPACT_VERSION {
        return Err(MessageError::Invalid("bad compact protocol version"));
    }
    let msg_type = tv >> 5;
    if !(CALL..=ONEWAY).contains(&msg_type) {
        return Err(MessageError::Invalid("bad message type"));
    }
    let seq_at = at + 2;
    let (seq, seq_len) = read_varint32(buf, seq_at)?;
    let (n, n_len) = read_varint32(buf, seq_at + seq_len)?;
    let n = n as usize;
    if n > max_name {
        return Err(MessageError::Invalid("method name too long"));
    }
    let start = seq_at + seq_len + n_len;
    let name = start..start + n;
    if buf.len() < name.end {
        return Err(MessageError::Incomplete);
    }
    Ok(MessageHeader {
        protocol: Protocol::Compact,
        start: at,
        msg_type,
        name,
        seq: SeqId(seq as i32),
        seq_at,
        seq_len,
    })
}

/// Splits a multiplexed method name `Service:method` into its parts.
pub fn split_multiplexed(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(i) => (Some(&name[..i]), &name[i + 1..]),
        None => (None, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_binary_header_from_appendix_a() {
        // Framed CALL ping seq 7 without the 4-byte frame length.
        let m = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4, b'p', b'i', b'n', b'g', 0, 0, 0, 7, 0];
        let h = parse_message(&m, 0, 64).unwrap();
        assert_eq!(h.protocol, Protocol::Binary);
        assert_eq!(h.msg_type, CALL);
        assert_eq!(&m[h.name.clone()], b"ping");
        assert_eq!((h.seq.get(), h.seq_at, h.seq_len), (7, 12, 4));
    }

    #[test]
    fn non_strict_binary_header_from_appendix_a() {
        let m = [0, 0, 0, 4, b'p', b'i', b'n', b'g', 1, 0, 0, 0, 7];
        let h = parse_message(&m, 0, 64).unwrap();
        assert_eq!(h.protocol, Protocol::BinaryNonStrict);
        assert_eq!((h.seq.get(), h.seq_at), (7, 9));
    }

    #[test]
    fn compact_negative_seq_takes_five_bytes() {
        let m = [0x82, 0x21, 0xfb, 0xff, 0xff, 0xff, 0x0f, 4, b'p', b'i', b'n', b'g'];
        let h = parse_message(&m, 0, 64).unwrap();
        assert_eq!(h.protocol, Protocol::Compact);
        assert_eq!((h.seq.get(), h.seq_at, h.seq_len), (-5, 2, 5));
        assert_eq!(&m[h.name], b"ping");
    }

    #[test]
    fn truncated_headers_ask_for_more() {
        let m = [0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4, b'p', b'i'];
        assert_eq!(parse_message(&m, 0, 64), Err(MessageError::Incomplete));
        assert_eq!(parse_message(&[0x82, 0x21, 0x85], 0, 64), Err(MessageError::Incomplete));
    }

    #[test]
    fn hostile_name_length_is_rejected_not_awaited() {
        let m = [0x80, 0x01, 0x00, 0x01, 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(parse_message(&m, 0, 4096), Err(MessageError::Invalid(_))));
    }

    #[test]
    fn varint_round_trip_and_padded_form() {
        for v in [0u32, 1, 127, 128, 16383, 16384, 1 << 21, 1 << 28, u32::MAX] {
            let (b, n) = encode_varint32(v);
            assert_eq!(read_varint32(&b[..n], 0).unwrap(), (v, n));
        }
        assert_eq!(read_varint32(&[0x85, 0x80, 0x80, 0x80, 0x00], 0).unwrap(), (5, 5));
    }

    #[test]
    fn multiplexed_names_split_on_the_first_colon() {
        assert_eq!(split_multiplexed(b"Echo:ping"), (Some(&b"Echo"[..]), &b"ping"[..]));
        assert_eq!(split_multiplexed(b"ping"), (None, &b"ping"[..]));
    }

    #[test]
    fn allocated_seqids_count_up_and_wrap_to_one_below_i32_max() {
        assert_eq!(SeqId::FIRST.next(), SeqId::new(2));
        assert_eq!(SeqId::new(i32::MAX - 2).next(), SeqId::new(i32::MAX - 1));
        assert_eq!(SeqId::new(i32::MAX - 1).next(), SeqId::FIRST, "never i32::MAX");
        assert_eq!(SeqId::new(0).next(), SeqId::FIRST, "never 0");
        assert_eq!(SeqId::new(-7).next(), SeqId::FIRST, "never negative");
    }
}
