//! HPACK bomb (ref §5): one large entry inserted once, then referenced thousands of times by
//! one-octet indexed fields. The decoder must stop keeping fields at the list-size limit,
//! still walk the whole block (so the table stays in sync), and spend memory in proportion
//! to the block, not to the list it describes.

use std::time::{Duration, Instant};

use ringway::grpc::h2::hpack::{DecodeError, Decoder, HeaderList};

use super::{decode, owned};

const LIMIT: usize = 16 * 1024;

/// A literal with incremental indexing, literal name `x-bomb`, raw value of `len` octets.
fn big_literal(len: usize) -> Vec<u8> {
    let mut b = vec![0x40, 6];
    b.extend_from_slice(b"x-bomb");
    // Length with a 7-bit prefix: 127, then len - 127 in 7-bit groups.
    b.push(0x7f);
    let mut rest = len - 127;
    while rest >= 0x80 {
        b.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    b.push(rest as u8);
    b.extend(std::iter::repeat_n(b'v', len));
    b
}

#[test]
fn a_bomb_is_refused_cheaply_and_the_table_stays_in_sync() {
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::new();
    // 4000-octet value (entry size 6 + 4000 + 32 = 4038 <= 4096), then 10,000 references
    // to it: a 40 MB header list in a 14 KB block.
    let mut block = big_literal(4000);
    block.extend(std::iter::repeat_n(0xbe, 10_000));
    let start = Instant::now();
    assert_eq!(d.decode(&block, LIMIT, &mut out), Err(DecodeError::ListTooLarge));
    let took = start.elapsed();
    assert!(out.is_empty());
    assert_eq!(out.list_size(), 0);
    // At most four copies of the value were kept before the limit (4 x 4038 < 16 KiB).
    assert!(out.arena_capacity() < 64 * 1024, "arena grew to {}", out.arena_capacity());
    // Generous even for a debug build on a shared machine: walking 10,000 one-octet fields
    // without copying is microseconds; copying 40 MB would not fit.
    assert!(took < Duration::from_millis(200), "took {took:?}");
    assert_eq!(d.table_size(), 4038);

    // The next block uses the table: index 62 is still the big entry, and a new insert
    // evicts it as the peer's encoder expects.
    let got = decode(&mut d, &[0xbe]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, b"x-bomb");
    assert_eq!(got[0].1.len(), 4000);
    // 1 + 60 + 32 = 93 octets more does not fit beside 4038.
    let mut next = vec![0x40, 1, b'k', 60];
    next.extend_from_slice(&[b'w'; 60]);
    next.push(0xbe);
    let got = decode(&mut d, &next);
    let kw = (b"k".to_vec(), vec![b'w'; 60]);
    assert_eq!(owned_pairs(&got), [kw.clone(), kw]);
    assert_eq!(d.table_size(), 93);
    assert!(d.decode(&[0xbf], LIMIT, &mut out).is_err(), "index 63 is gone: the big entry was evicted");
}

#[test]
fn a_bomb_of_literals_is_bounded_too() {
    // Without the table: many literals without indexing, each small, summing past the limit.
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::new();
    let mut block = Vec::new();
    for _ in 0..2000 {
        block.extend_from_slice(&[0x00, 1, b'a', 16]);
        block.extend_from_slice(&[b'z'; 16]);
    }
    assert_eq!(d.decode(&block, LIMIT, &mut out), Err(DecodeError::ListTooLarge));
    assert!(out.arena_capacity() < 64 * 1024, "arena grew to {}", out.arena_capacity());
    // The decoder is still usable and the out list is reusable.
    d.decode(&[0x82], LIMIT, &mut out).unwrap();
    assert_eq!(owned(&out), [(b":method".to_vec(), b"GET".to_vec(), false)]);
}

fn owned_pairs(list: &super::Owned) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect()
}
