//! Frame classification, seqID patching at every offset of ref §1.5, and exception bytes
//! checked against ref Appendix A.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::thrift::codec::exception::{encode_exception, ExceptionType, ReplyFraming};
use crate::thrift::codec::message::{encode_varint32, SeqId};
use crate::thrift::codec::patch::{patch_request, restore_reply, OriginalSeq};

/// The TTHeader CALL of ref §2.7, byte for byte.
const REF_TTHEADER: &[u8] = &[
    0x00, 0x00, 0x00, 0x3f, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x09, //
    0x00, 0x00, //
    0x01, 0x00, 0x01, 0x00, 0x03, 0x69, 0x73, 0x6e, 0x00, 0x04, 0x45, 0x63, 0x68, 0x6f, //
    0x10, 0x00, 0x02, 0x00, 0x09, 0x00, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x06, 0x00, 0x04, 0x65, 0x63, 0x68,
    0x6f, //
    0x00, //
    0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x00,
];

/// The Apache THeader CALL of ref §2.8 (header k=v).
const REF_THEADER: &[u8] = &[
    0x00, 0x00, 0x00, 0x23, 0x0f, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x02, //
    0x00, 0x00, 0x01, 0x01, 0x01, 0x6b, 0x01, 0x76, //
    0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x00,
];

/// Framed strict-binary CALL ping seq 7 (Appendix A).
const REF_FRAMED: &[u8] = &[
    0x00, 0x00, 0x00, 0x11, 0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00,
    0x07, 0x00,
];

/// Prefixes a message with its u32 length.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

/// A compact CALL with the given seq varint and method name and a one-byte empty struct.
fn compact_call(seq: i32, name: &str) -> Vec<u8> {
    let mut m = vec![0x82, 0x21];
    let (b, n) = encode_varint32(seq as u32);
    m.extend_from_slice(&b[..n]);
    m.push(name.len() as u8);
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m
}

/// A strict-binary CALL.
fn binary_call(seq: i32, name: &str) -> Vec<u8> {
    let mut m = vec![0x80, 0x01, 0x00, 0x01];
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.push(0);
    m
}

/// Wraps a payload in a Kitex TTHeader with no info blocks (HS=1).
fn ttheader(seq: i32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_u32((10 + 4 + payload.len()) as u32);
    v.put_u16(0x1000);
    v.put_u16(0);
    v.put_i32(seq);
    v.put_u16(1);
    v.put_slice(&[0, 0, 0, 0]);
    v.put_slice(payload);
    v
}

/// Wraps a payload in an Apache THeader with the given protocol id (HS=1).
fn theader(seq: i32, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_u32((10 + 4 + payload.len()) as u32);
    v.put_u16(0x0fff);
    v.put_u16(0);
    v.put_i32(seq);
    v.put_u16(1);
    v.put_slice(&[proto, 0, 0, 0]);
    v.put_slice(payload);
    v
}

fn seq_of(frame: &[u8]) -> (i32, Option<i32>) {
    let info = parse_frame(frame, 4096).unwrap();
    let header = info.header_seq.then(|| i32::from_be_bytes(frame[8..12].try_into().unwrap()));
    (info.msg.seq.get(), header)
}

#[test]
fn reference_ttheader_example_parses_to_its_documented_fields() {
    let info = parse_frame(REF_TTHEADER, 4096).unwrap();
    assert_eq!(frame_len(REF_TTHEADER), Some(REF_TTHEADER.len()));
    assert_eq!(info.dialect.transport, Transport::TTHeader);
    assert_eq!(info.msg.seq_at, 62, "ref §2.7: payload seq at offset 62");
    assert_eq!(info.msg.seq.get(), 7);
    assert_eq!(&REF_TTHEADER[info.isn.unwrap()], b"Echo");
    assert_eq!(&REF_TTHEADER[info.to_method.unwrap()], b"ping");
    assert_eq!(&REF_TTHEADER[info.to_service.unwrap()], b"echo");
}

#[test]
fn a_ttheader_string_header_is_found_by_key_for_hashing() {
    let info = parse_frame(REF_TTHEADER, 4096).unwrap();
    assert_eq!(string_header(REF_TTHEADER, &info, b"isn"), Some(&b"Echo"[..]));
    assert_eq!(string_header(REF_TTHEADER, &info, b"user"), None, "absent key");
    assert_eq!(string_header(REF_TTHEADER, &info, b"is"), None, "a prefix of a key is not the key");
    let framed = parse_frame(REF_FRAMED, 4096).unwrap();
    assert_eq!(string_header(REF_FRAMED, &framed, b"isn"), None, "other dialects have none");
}

#[test]
fn reference_theader_example_parses() {
    let info = parse_frame(REF_THEADER, 4096).unwrap();
    assert_eq!(frame_len(REF_THEADER), Some(REF_THEADER.len()));
    assert_eq!(info.dialect.transport, Transport::THeader);
    assert_eq!(info.dialect.protocol, Protocol::Binary);
    assert_eq!((info.msg.seq.get(), info.msg.seq_at), (7, 22 + 8 + 4));
}

#[test]
fn theader_with_zlib_transform_is_refused() {
    let mut f = theader(7, 0, &binary_call(7, "ping"));
    f[15] = 1; // one transform
    f[16] = 1; // zlib
    assert_eq!(parse_frame(&f, 4096), Err(ParseError::Transform));
}

/// Every row of ref §1.5 that the proxy patches: the seq moves to the new value in every place
/// it sits, nothing else changes, and restoring gives back the original bytes exactly.
#[test]
fn patch_and_restore_at_every_documented_offset() {
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("framed strict binary", REF_FRAMED.to_vec(), 12 + 4),
        ("framed non-strict binary", framed(&[0, 0, 0, 4, b'p', b'i', b'n', b'g', 1, 0, 0, 0, 7, 0]), 9 + 4),
        ("framed compact", framed(&compact_call(7, "ping")), 6),
        ("kitex ttheader", REF_TTHEADER.to_vec(), 62),
        (
            "kitex ttheader framed",
            {
                let inner = framed(&binary_call(7, "ping"));
                ttheader(7, &inner)
            },
            18 + 4 + 8 + 4,
        ),
        ("apache theader binary", REF_THEADER.to_vec(), 22 + 12),
        ("apache theader compact", theader(7, 2, &compact_call(7, "ping")), 18 + 2),
    ];
    for (what, frame, seq_at) in cases {
        let info = parse_frame(&frame, 4096).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(info.msg.seq_at, seq_at, "{what}: seq offset");
        assert_eq!(info.msg.seq.get(), 7, "{what}");
        let orig = OriginalSeq::capture(&frame, &info);
        for new_seq in [1, 200, 70_000, i32::MAX - 1] {
            let patched = patch_request(BytesMut::from(&frame[..]), &info, SeqId::new(new_seq));
            assert_eq!(frame_len(&patched), Some(patched.len()), "{what}: LENGTH follows the rebuild");
            let (p, h) = seq_of(&patched);
            assert_eq!(p, new_seq, "{what}: payload seq");
            if info.header_seq {
                assert_eq!(h, Some(new_seq), "{what}: header seq");
            }
            let pinfo = parse_frame(&patched, 4096).unwrap();
            assert_eq!(&patched[pinfo.msg.name.clone()], b"ping", "{what}: name intact");
            let restored = restore_reply(patched, &pinfo, &orig);
            assert_eq!(&restored[..], &frame[..], "{what}: restore gives the original bytes");
        }
    }
}

#[test]
fn binary_exception_matches_appendix_a() {
    let mut dst = BytesMut::new();
    let seq = OriginalSeq::from_parts(&7i32.to_be_bytes(), None);
    encode_exception(
        &mut dst,
        ReplyFraming::Framed,
        Protocol::Binary,
        b"ping",
        &seq,
        ExceptionType::UnknownMethod,
        "no route",
    );
    let expected: &[u8] = &[
        0x80, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x0b, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x08, 0x6e, 0x6f, 0x20, 0x72, 0x6f, 0x75, 0x74, 0x65, 0x08, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x01, 0x00,
    ];
    assert_eq!(&dst[..4], &[0, 0, 0, 0x27]);
    assert_eq!(&dst[4..], expected);
}

#[test]
fn compact_exception_matches_appendix_a() {
    let mut dst = BytesMut::new();
    let seq = OriginalSeq::from_parts(&[7], None);
    encode_exception(
        &mut dst,
        ReplyFraming::Unframed,
        Protocol::Compact,
        b"ping",
        &seq,
        ExceptionType::UnknownMethod,
        "no route",
    );
    let expected: &[u8] = &[
        0x82, 0x61, 0x07, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x18, 0x08, 0x6e, 0x6f, 0x20, 0x72, 0x6f, 0x75, 0x74, 0x65,
        0x15, 0x02, 0x00,
    ];
    assert_eq!(&dst[..], expected);
}

#[test]
fn header_exceptions_are_valid_frames_with_the_clients_seq() {
    for (framing, proto) in [
        (ReplyFraming::TTHeader { inner_framed: false }, Protocol::Binary),
        (ReplyFraming::TTHeader { inner_framed: true }, Protocol::Binary),
        (ReplyFraming::THeader, Protocol::Binary),
        (ReplyFraming::THeader, Protocol::Compact),
        (ReplyFraming::Framed, Protocol::BinaryNonStrict),
    ] {
        let mut dst = BytesMut::new();
        let (b, n) = crate::thrift::codec::patch::seq_wire_bytes(proto, SeqId::new(42));
        let seq = OriginalSeq::from_parts(&b[..n], Some(43i32.to_be_bytes()));
        encode_exception(&mut dst, framing, proto, b"Echo:ping", &seq, ExceptionType::InternalError, "x");
        let info = parse_frame(&dst, 4096).unwrap_or_else(|e| panic!("{framing:?}: {e:?}"));
        assert_eq!(frame_len(&dst), Some(dst.len()));
        assert_eq!(info.msg.msg_type, crate::thrift::codec::message::EXCEPTION);
        assert_eq!(info.msg.seq.get(), 42);
        assert_eq!(&dst[info.msg.name.clone()], b"Echo:ping");
        if info.header_seq {
            assert_eq!(&dst[8..12], &43i32.to_be_bytes());
        }
    }
}

proptest! {
    /// Patch-then-restore is the identity for any seqs, names and bodies, in every dialect.
    #[test]
    fn patch_then_restore_is_identity(
        client_seq in any::<i32>(),
        upstream_seq in 1..i32::MAX,
        name in "[a-zA-Z_:]{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
        kind in 0..5u8,
    ) {
        let mut bin = binary_call(client_seq, &name);
        bin.extend_from_slice(&body);
        let mut cmp = compact_call(client_seq, &name);
        cmp.extend_from_slice(&body);
        let frame = match kind {
            0 => framed(&bin),
            1 => framed(&cmp),
            2 => ttheader(client_seq, &bin),
            3 => theader(client_seq, 0, &bin),
            _ => theader(client_seq, 2, &cmp),
        };
        let info = parse_frame(&frame, 4096).unwrap();
        let orig = OriginalSeq::capture(&frame, &info);
        let patched = patch_request(BytesMut::from(&frame[..]), &info, SeqId::new(upstream_seq));
        let pinfo = parse_frame(&patched, 4096).unwrap();
        prop_assert_eq!(pinfo.msg.seq.get(), upstream_seq);
        prop_assert_eq!(frame_len(&patched), Some(patched.len()));
        let restored = restore_reply(patched, &pinfo, &orig);
        prop_assert_eq!(&restored[..], &frame[..]);
    }
}

#[test]
fn strict_binary_with_a_nonzero_unused_byte_is_invalid() {
    let mut f = REF_FRAMED.to_vec();
    f[6] = 0x01; // 80 01 01 01: Kitex would read type 0x0101
    assert!(matches!(parse_frame(&f, 4096), Err(ParseError::Invalid(_))));
}

#[test]
fn ttheader_framed_inner_length_must_match() {
    let mut inner = framed(&binary_call(7, "ping"));
    inner[3] += 1;
    assert!(matches!(parse_frame(&ttheader(7, &inner), 4096), Err(ParseError::Invalid(_))));
}

#[test]
fn streaming_flag_on_a_later_frame_is_refused() {
    let mut f = REF_TTHEADER.to_vec();
    f[7] = 0x02;
    assert!(matches!(parse_frame(&f, 4096), Err(ParseError::Invalid(_))));
}

#[test]
fn ttheader_compact_exception_declares_protocol_2() {
    let mut dst = BytesMut::new();
    let seq = OriginalSeq::from_parts(&[9], Some(9i32.to_be_bytes()));
    encode_exception(
        &mut dst,
        ReplyFraming::TTHeader { inner_framed: false },
        Protocol::Compact,
        b"m",
        &seq,
        ExceptionType::InternalError,
        "x",
    );
    assert_eq!(dst[14], 2);
    assert_eq!(parse_frame(&dst, 4096).unwrap().msg.seq.get(), 9);
}

/// A TTHeader with a `crc32c` string key over its payload.
fn ttheader_with_crc(seq: i32, payload: &[u8]) -> Vec<u8> {
    let crc = crate::thrift::codec::crc32c::crc32c(payload);
    let mut body = vec![0u8, 0u8, 0x01, 0, 1, 0, 6];
    body.extend_from_slice(b"crc32c");
    body.extend_from_slice(&[0, 8]);
    body.extend_from_slice(format!("{crc:08x}").as_bytes());
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut v = Vec::new();
    v.put_u32((10 + body.len() + payload.len()) as u32);
    v.put_u16(0x1000);
    v.put_u16(0);
    v.put_i32(seq);
    v.put_u16((body.len() / 4) as u16);
    v.put_slice(&body);
    v.put_slice(payload);
    v
}

#[test]
fn crc32c_follows_the_patched_payload_and_the_restore() {
    let frame = ttheader_with_crc(7, &binary_call(7, "ping"));
    let info = parse_frame(&frame, 4096).unwrap();
    let at = info.crc32c.clone().expect("crc32c key found");
    let orig = OriginalSeq::capture(&frame, &info);
    let patched = patch_request(BytesMut::from(&frame[..]), &info, SeqId::new(1234));
    let want = format!("{:08x}", crate::thrift::codec::crc32c::crc32c(&patched[info.payload_at..]));
    assert_eq!(&patched[at.clone()], want.as_bytes());
    assert_ne!(&patched[at.clone()], &frame[at.clone()]);
    let restored = restore_reply(patched, &info, &orig);
    assert_eq!(&restored[..], &frame[..]);
}

#[test]
fn payload_validators_and_crrst_are_noticed() {
    let payload = binary_call(7, "ping");
    let mut f = ttheader_with_crc(7, &payload);
    let key_at = f.windows(6).position(|w| w == b"crc32c").unwrap();
    f[key_at..key_at + 6].copy_from_slice(b"PV_abc");
    assert!(parse_frame(&f, 4096).unwrap().custom_validator);
    f[key_at - 2..key_at].copy_from_slice(&[0, 5]);
    f[key_at..key_at + 5].copy_from_slice(b"crrst");
    // Key shortened by one byte: re-point the value length so the block stays well formed.
    let mut g = f[..key_at + 5].to_vec();
    g.extend_from_slice(&f[key_at + 6..]);
    g.insert(key_at + 5 + 2 + 8, 0);
    let info = parse_frame(&g, 4096).unwrap();
    assert!(info.crrst);
}

proptest! {
    /// Hostile bytes never panic the detector or the frame parser, whole or truncated.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96), cut in 0usize..96) {
        let _ = crate::thrift::codec::detect(&bytes, false);
        let _ = crate::thrift::codec::detect(&bytes, true);
        let _ = parse_frame(&bytes, 64);
        let _ = parse_frame(&bytes[..cut.min(bytes.len())], 64);
    }

    /// Mutating any byte of valid frames never panics the parser either (structure-aware).
    #[test]
    fn mutated_frames_never_panic(at in 0usize..80, val in any::<u8>(), kind in 0..4u8) {
        let mut f = match kind {
            0 => REF_TTHEADER.to_vec(),
            1 => REF_THEADER.to_vec(),
            2 => framed(&compact_call(7, "ping")),
            _ => ttheader_with_crc(3, &binary_call(3, "ping")),
        };
        let at = at % f.len();
        f[at] = val;
        if let Ok(info) = parse_frame(&f, 4096) {
            if frame_len(&f) == Some(f.len()) {
                let orig = OriginalSeq::capture(&f, &info);
                let p = patch_request(BytesMut::from(&f[..]), &info, SeqId::new(99));
                if let Ok(pi) = parse_frame(&p, 4096) {
                    let _ = restore_reply(p, &pi, &orig);
                }
            }
        }
    }
}
