//! Entry points for the coverage-guided fuzzers in `fuzz/` (one per target) and for the
//! corpus replay in `tests/fuzz_corpus.rs`: every parser and state machine that reads bytes
//! from a peer, fed arbitrary bytes. Each checks what must hold for any input (no panic, no
//! unbounded work, and where there is one, a round trip) with `assert!`, so a broken property
//! is a crash the fuzzer reports.
//!
//! Not part of the proxy's API: the fuzz crate needs one public door into crate-private code.

use bytes::BytesMut;

use crate::config::Config;
use crate::grpc::h2::block::{Assembler, BlockLimits};
use crate::grpc::h2::frame::{self, kind, FrameError, StreamId, HEAD_LEN};
use crate::grpc::h2::hpack::{DecodeError, Decoder, Encoder, Field, HeaderList};
use crate::grpc::wire::{check_request, check_response, check_trailers};
use crate::thrift::codec::message::{parse_message, read_varint32, SeqId};
use crate::thrift::codec::patch::{patch_request, request_fits, restore_reply, OriginalSeq};
use crate::thrift::codec::{detect, frame_len, parse_frame, string_header};

/// Method names longer than this are refused (the listener default).
const MAX_NAME: usize = 4096;
/// Header lists larger than this are refused (the listener default).
const MAX_LIST: usize = 16 << 10;

/// The Thrift listener's cut: detect the dialect from the first bytes, then cut frames by
/// their length prefix and classify each (Framed, TTHeader, THeader; binary or compact).
/// Every frame that parses is patched with an upstream seqID, must parse again with the same
/// method, dialect and the new seqID, and restoring the client's seqID must give back the
/// frame as it came (when it carried no checksum, which a patch recomputes). Every whole frame
/// is also read as a TTHeader Streaming frame: one that parses keeps its type, method and
/// payload when another stream id is patched in, and the id is read back from the header and
/// from an EXCEPTION payload alike.
pub fn thrift_stream(data: &[u8]) {
    let _ = detect(data, true);
    let mut rest = data;
    for _ in 0..64 {
        let Some(len) = frame_len(rest) else { return };
        let whole = len <= rest.len();
        let frame = &rest[..len.min(rest.len())];
        if let Ok(info) = parse_frame(frame, MAX_NAME) {
            let _ = string_header(frame, &info, b"isn");
            if whole {
                check_patch_round_trip(frame, &info);
            }
        }
        if whole {
            check_stream_frame(frame);
        }
        if !whole {
            return;
        }
        rest = &rest[len..];
    }
}

fn check_stream_frame(frame: &[u8]) {
    use crate::ttstream::codec::{parse, patch_sid};
    let Ok(f) = parse(frame) else { return };
    for sid in [1, -7, i32::MAX] {
        let mut patched = frame.to_vec();
        patch_sid(&mut patched, &f, sid);
        let again = parse(&patched).expect("a patched stream frame parses");
        assert_eq!(again.sid, sid);
        assert_eq!((again.kind, again.payload_at), (f.kind, f.payload_at));
        assert_eq!(again.method, f.method);
        assert_eq!(again.exception_seq_at, f.exception_seq_at);
        if let Some(at) = again.exception_seq_at {
            assert_eq!(patched[at..at + 4], sid.to_be_bytes());
        }
        assert_eq!(patched[..8], frame[..8]);
        assert_eq!(
            patched[12..f.exception_seq_at.unwrap_or(frame.len())],
            frame[12..f.exception_seq_at.unwrap_or(frame.len())]
        );
    }
}

fn check_patch_round_trip(frame: &[u8], info: &crate::thrift::codec::FrameInfo) {
    let orig = OriginalSeq::capture(frame, info);
    for seq in [SeqId::new(1), SeqId::new(300), SeqId::new(i32::MAX)] {
        let fits = request_fits(info, seq);
        let patched = patch_request(BytesMut::from(frame), info, seq);
        let again = parse_frame(&patched, MAX_NAME).expect("a patched request parses");
        assert_eq!(again.msg.seq, seq, "the patched seqID is read back");
        assert_eq!(again.dialect, info.dialect);
        assert_eq!(&patched[again.msg.name.clone()], &frame[info.msg.name.clone()]);
        if fits {
            assert_eq!(patched.len(), frame.len(), "a fitting seqID keeps the length");
        }
        let back = restore_reply(patched, &again, &orig);
        if info.crc32c.is_none() {
            assert_eq!(&back[..], frame, "restoring the client's seqID gives its frame back");
        }
    }
}

/// Thrift message headers (binary strict and old-style, compact) at every offset, and the
/// compact varint reader.
pub fn thrift_message(data: &[u8]) {
    for at in 0..data.len().min(16) {
        if let Ok(m) = parse_message(data, at, MAX_NAME) {
            assert!(m.name.end <= data.len() && m.seq_at + m.seq_len <= data.len());
        }
        let _ = read_varint32(data, at);
    }
}

/// HTTP/2 frames cut from a byte stream by their 9-byte heads, each parsed by its type.
pub fn h2_frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    for _ in 0..256 {
        let (head, f) = match frame::cut(&mut buf, frame::MIN_MAX_FRAME_SIZE) {
            Ok(Some(next)) => next,
            Ok(None) | Err(_) => break,
        };
        let p = &f[HEAD_LEN..];
        assert_eq!(p.len(), head.len as usize);
        let _ = match head.kind {
            kind::DATA => frame::data::parse(&head, p).map(|d| assert!(d.data.end <= p.len())),
            kind::HEADERS => frame::headers::parse(&head, p).map(|h| assert!(h.fragment.end <= p.len())),
            kind::PRIORITY => frame::priority::parse(&head, p).map(drop),
            kind::RST_STREAM => frame::rst_stream::parse(&head, p).map(drop),
            kind::SETTINGS => frame::settings::parse(&head, p, 32).map(drop),
            kind::PUSH_PROMISE => frame::push_promise::parse(&head, p).map(drop),
            kind::PING => frame::ping::parse(&head, p).map(drop),
            kind::GOAWAY => frame::goaway::parse(&head, p).map(drop),
            kind::WINDOW_UPDATE => frame::window_update::parse(&head, p).map(drop),
            kind::CONTINUATION => frame::continuation::parse(&head, p).map(drop),
            _ => Ok(()),
        };
    }
    let _ = frame::headers_in(data);
}

/// HPACK: the input as two header blocks through one decoder (the dynamic table carries
/// over). A block that decodes is encoded again and must decode to the same list.
pub fn hpack(data: &[u8]) {
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (first, second) = data.split_at(cut);
    let mut dec = Decoder::new(4096);
    for block in [first, second] {
        let mut list = HeaderList::new();
        match dec.decode(block, MAX_LIST, &mut list) {
            Ok(()) => {
                let size: usize = list.iter().map(|f| f.name.len() + f.value.len() + 32).sum();
                assert!(size <= MAX_LIST, "the list-size limit holds: {size}");
                let mut enc = Encoder::new();
                let mut again = BytesMut::new();
                enc.encode(list.iter(), &mut again);
                let mut back = HeaderList::new();
                Decoder::new(4096).decode(&again, usize::MAX, &mut back).expect("our own block decodes");
                assert!(list.iter().eq(back.iter().map(|f| Field { never_indexed: f.never_indexed, ..f })));
            }
            Err(DecodeError::ListTooLarge) => {}
            Err(DecodeError::Compression(_)) => return,
        }
    }
}

/// Header-block assembly and the field checks: frames cut from the input go through the
/// assembler (HEADERS + CONTINUATION, with the listener's limits), each whole block through
/// the decoder, and each list through the request, response and trailer checks.
pub fn h2_blocks(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut asm = Assembler::default();
    let mut dec = Decoder::new(4096);
    let limits = BlockLimits { max_block: MAX_LIST, max_continuations: 8 };
    for _ in 0..256 {
        let (head, mut f) = match frame::cut(&mut buf, frame::MIN_MAX_FRAME_SIZE) {
            Ok(Some(next)) => next,
            Ok(None) | Err(_) => break,
        };
        let block = match head.kind {
            kind::HEADERS => match frame::headers::parse(&head, &f[HEAD_LEN..]) {
                Ok(h) => {
                    let mut frag = f.split_off(HEAD_LEN + h.fragment.start);
                    frag.truncate(h.fragment.len());
                    asm.start(head.stream, h.end_stream, h.end_headers, frag, limits)
                }
                Err(e) => Err(e),
            },
            kind::CONTINUATION => match frame::continuation::parse(&head, &f[HEAD_LEN..]) {
                Ok(c) => asm.continuation(head.stream, c.end_headers, &f[HEAD_LEN..][c.fragment], limits),
                Err(e) => Err(e),
            },
            _ => continue,
        };
        let block = match block {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(FrameError::Connection(..)) => return,
            Err(FrameError::Stream(..)) => continue,
        };
        assert!(block.stream != StreamId::ZERO);
        let mut list = HeaderList::new();
        match dec.decode(&block.block, MAX_LIST, &mut list) {
            Ok(()) => {
                // A field marked checked (indexed from an entry found valid) must be valid:
                // the request and response checks skip scanning it.
                for (f, checked) in list.iter_checked() {
                    assert!(!checked || crate::grpc::h2::field::valid(f.name, f.value), "{f:?} marked valid");
                }
                if let Ok(info) = check_request(&list) {
                    assert!(info.path < list.len());
                }
                let _ = check_response(&list, false);
                let _ = check_response(&list, true);
                let _ = check_trailers(&list);
            }
            Err(DecodeError::ListTooLarge) => {}
            Err(DecodeError::Compression(_)) => return,
        }
    }
}

/// A config file: any text is either a config or a list of problems with key paths.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::parse(text) {
        assert!(!e.0.is_empty(), "an invalid config names at least one problem");
    }
}

/// A fuzz target: arbitrary bytes in, a panic if a property breaks.
pub type Target = fn(&[u8]);

/// The targets by name, for the corpus replay.
pub const TARGETS: [(&str, Target); 6] = [
    ("thrift_stream", thrift_stream),
    ("thrift_message", thrift_message),
    ("h2_frames", h2_frames),
    ("hpack", hpack),
    ("h2_blocks", h2_blocks),
    ("config", config),
];
