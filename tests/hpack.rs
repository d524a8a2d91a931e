//! HPACK (`ringway::grpc::h2::hpack`) against outside references:
//!
//! - `rfc`: RFC 7541 Appendix C.2–C.6, byte for byte, with the dynamic table size after
//!   every block, and our encoder's output for the same lists;
//! - `corpus`: stories of the hpack-test-case corpus (nghttp2, Python hpack, Go hpack
//!   encoders), decoded in sequence, then re-encoded by us and decoded back;
//! - `oracle`: differential property tests against the `hpack_codec` crate, both ways, and
//!   arbitrary / mutated blocks that must never panic;
//! - `bomb`: an HPACK bomb costs bounded memory and leaves the table in sync;
//! - `timing`: an ignored test that prints the decode time of a typical gRPC request block.

#[path = "hpack/bomb.rs"]
mod bomb;
#[path = "hpack/corpus.rs"]
mod corpus;
#[path = "hpack/oracle.rs"]
mod oracle;
#[path = "hpack/rfc.rs"]
mod rfc;
#[path = "hpack/timing.rs"]
mod timing;

use bytes::BytesMut;
use ringway::grpc::h2::hpack::{Decoder, Encoder, Field, HeaderList};

/// A header list as owned (name, value, never_indexed) triples, for comparisons that print
/// readably when they fail.
pub type Owned = Vec<(Vec<u8>, Vec<u8>, bool)>;

/// Hex to bytes; whitespace is ignored so RFC dumps can be pasted as they are.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn owned(list: &HeaderList) -> Owned {
    list.iter().map(|f| (f.name.to_vec(), f.value.to_vec(), f.never_indexed)).collect()
}

/// `name: value` lines to a list of fields that are not never-indexed.
pub fn lines(text: &str) -> Owned {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            // Pseudo-header names start with ':', so split at the first ": ".
            let (n, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
            (n.as_bytes().to_vec(), v.as_bytes().to_vec(), false)
        })
        .collect()
}

pub fn fields(list: &Owned) -> impl Iterator<Item = Field<'_>> + '_ {
    list.iter().map(|(n, v, ni)| Field { name: n, value: v, never_indexed: *ni })
}

pub fn encode(e: &mut Encoder, list: &Owned) -> Vec<u8> {
    let mut dst = BytesMut::new();
    e.encode(fields(list), &mut dst);
    dst.to_vec()
}

/// Decodes with no list-size limit, panicking on error.
pub fn decode(d: &mut Decoder, block: &[u8]) -> Owned {
    let mut out = HeaderList::new();
    d.decode(block, usize::MAX, &mut out).unwrap_or_else(|e| panic!("{e} in {block:02x?}"));
    owned(&out)
}
