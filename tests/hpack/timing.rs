//! Decode time of a typical gRPC request block, Huffman-encoded, as a first block on a
//! connection would be (every string a literal). Not a benchmark and not run by default:
//!
//! cargo test --test hpack --config 'profile.test.package.ringway.opt-level=3' -- --ignored --nocapture timing

use std::time::Instant;

use hpack_codec::field::LiteralHeaderField;
use hpack_codec::table::StaticEntry;
use ringway::grpc::h2::hpack::{Decoder, HeaderList};

/// grpc-go style request headers, every string a Huffman literal without indexing, so the
/// same block can be decoded again and again by one decoder.
fn grpc_request_block() -> Vec<u8> {
    let mut enc = hpack_codec::Encoder::new(4096);
    let mut b = enc.enter_header_block(Vec::new()).unwrap();
    b.encode_field(StaticEntry::MethodPost).unwrap();
    b.encode_field(StaticEntry::SchemeHttp).unwrap();
    let indexed_name = [
        (StaticEntry::Path, &b"/helloworld.Greeter/SayHello"[..]),
        (StaticEntry::Authority, b"greeter.default.svc.cluster.local:50051"),
        (StaticEntry::ContentType, b"application/grpc"),
        (StaticEntry::UserAgent, b"grpc-go/1.60.1"),
    ];
    for (name, value) in indexed_name {
        b.encode_field(LiteralHeaderField::with_indexed_name(name, value).with_huffman_encoded_value()).unwrap();
    }
    let literal = [
        (&b"te"[..], &b"trailers"[..]),
        (b"grpc-timeout", b"4999917u"),
        (b"grpc-accept-encoding", b"identity,deflate,gzip"),
        (b"x-request-id", b"6c3f3e6a-93b4-4b3e-9d2c-1f0e6a1b2c3d"),
    ];
    for (name, value) in literal {
        b.encode_field(LiteralHeaderField::new(name, value).with_huffman_encoded_name().with_huffman_encoded_value())
            .unwrap();
    }
    b.finish()
}

#[test]
#[ignore = "timing, run by hand (see the module doc)"]
fn timing_grpc_request_block() {
    let block = grpc_request_block();
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::new();
    d.decode(&block, 16 * 1024, &mut out).unwrap();
    assert_eq!(out.len(), 10);
    let rounds = 200_000;
    let start = Instant::now();
    for _ in 0..rounds {
        d.decode(std::hint::black_box(&block), 16 * 1024, &mut out).unwrap();
        std::hint::black_box(&out);
    }
    let each = start.elapsed() / rounds;
    println!("{}-octet gRPC request block, {} fields: {each:?} per decode", block.len(), out.len());
}
