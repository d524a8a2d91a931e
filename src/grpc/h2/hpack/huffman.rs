//! The static Huffman code of RFC 7541 Appendix B (§5.2).
//!
//! Decoding is table-driven: the 257 codes form a complete binary tree with 256 inner nodes,
//! and a const-built table maps (inner node, next 4 input bits) to the inner node reached,
//! plus the symbol completed on the way if any. The shortest code is 5 bits long, so one
//! nibble completes at most one symbol, and a byte of input costs two table reads. A string
//! may end only on an inner node whose path from the root is all ones and shorter than
//! 8 bits: that is the padding rule (a prefix of EOS, at most 7 bits).

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// `(code, bit length)` per symbol, symbols 0..=255 then EOS (256); the code sits in the low
/// `bit length` bits. Typed from RFC 7541 Appendix B.
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    // 32 ' '
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    // 48 '0'
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    // 64 '@'
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    // 80 'P'
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    // 96 '`'
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    // 112 'p'
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    // 128
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    // 144
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    // 160
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    // 176
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    // 192
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    // 208
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    // 224
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    // 240
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    // 256 EOS
    (0x3fffffff, 30),
];

/// The symbol number of EOS.
const EOS: u16 = 256;
/// Marks a tree child that is a leaf; the low 9 bits are then the symbol.
const LEAF: u16 = 0x8000;
/// A tree child not filled in (never left over once the tree is built: the code is complete).
const EMPTY: u16 = u16::MAX;

/// The decoding tree: `children[node][bit]` is an inner node number or `LEAF | symbol`;
/// node 0 is the root. Also, per inner node, whether a string may end there.
struct Tree {
    children: [[u16; 2]; 256],
    accepting: [bool; 256],
}

const fn build_tree() -> Tree {
    let mut children = [[EMPTY; 2]; 256];
    // Depth of each inner node, and whether its path from the root is all ones.
    let mut depth = [0u8; 256];
    let mut all_ones = [false; 256];
    all_ones[0] = true;
    let mut inner = 1usize;
    let mut sym = 0usize;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        assert!(len >= 5 && len <= 30, "code length out of range");
        let mut node = 0usize;
        let mut bit_pos = len;
        while bit_pos > 1 {
            bit_pos -= 1;
            let bit = ((code >> bit_pos) & 1) as usize;
            let child = children[node][bit];
            if child == EMPTY {
                assert!(inner < 256, "more inner nodes than a 257-leaf tree has: the code is not prefix-free");
                children[node][bit] = inner as u16;
                depth[inner] = depth[node] + 1;
                all_ones[inner] = all_ones[node] && bit == 1;
                node = inner;
                inner += 1;
            } else {
                assert!(child & LEAF == 0, "a code has another code as prefix");
                node = child as usize;
            }
        }
        let bit = (code & 1) as usize;
        assert!(children[node][bit] == EMPTY, "two codes are equal or one is a prefix of another");
        children[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(inner == 256, "the code does not form a complete tree");
    let mut accepting = [false; 256];
    let mut node = 0;
    while node < 256 {
        assert!(children[node][0] != EMPTY && children[node][1] != EMPTY, "the code is not complete");
        accepting[node] = all_ones[node] && depth[node] <= 7;
        node += 1;
    }
    Tree { children, accepting }
}

const TREE: Tree = build_tree();

/// One step of the nibble machine.
#[derive(Clone, Copy)]
struct Step {
    /// Inner node reached after the 4 bits.
    next: u8,
    /// The symbol completed within the 4 bits, valid when `flags & EMIT != 0`.
    sym: u8,
    flags: u8,
}

const EMIT: u8 = 1;
/// The 4 bits complete EOS, which must never appear in a string.
const FAIL: u8 = 2;

const fn build_steps() -> [[Step; 16]; 256] {
    let mut steps = [[Step { next: 0, sym: 0, flags: 0 }; 16]; 256];
    let mut state = 0usize;
    while state < 256 {
        let mut nibble = 0usize;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step { next: 0, sym: 0, flags: 0 };
            let mut shift = 4;
            while shift > 0 {
                shift -= 1;
                let child = TREE.children[node][(nibble >> shift) & 1];
                if child & LEAF != 0 {
                    let sym = child & !LEAF;
                    if sym == EOS {
                        step.flags = FAIL;
                        break;
                    }
                    step.flags = EMIT;
                    step.sym = sym as u8;
                    node = 0;
                } else {
                    node = child as usize;
                }
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

/// `STEPS[inner node][nibble]`, 12 KiB, built at compile time.
static STEPS: [[Step; 16]; 256] = build_steps();

/// Decodes the Huffman string `src`, appending the octets to `dst`.
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), DecodeError> {
    // At most one symbol per 5 bits.
    dst.reserve(src.len() * 8 / 5);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = STEPS[state][nibble as usize];
            if step.flags & FAIL != 0 {
                return Err(DecodeError::Compression("EOS symbol inside a Huffman string"));
            }
            if step.flags & EMIT != 0 {
                dst.push(step.sym);
            }
            state = step.next as usize;
        }
    }
    if TREE.accepting[state] {
        Ok(())
    } else {
        Err(DecodeError::Compression("Huffman padding longer than 7 bits or not all ones"))
    }
}

/// Octets `src` takes once Huffman-encoded.
pub(super) fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| CODES[b as usize].1 as usize).sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `src` to `dst`, padded with the high bits of EOS.
pub(super) fn encode(src: &[u8], dst: &mut BytesMut) {
    dst.reserve(encoded_len(src));
    // Pending bits sit in the low `pending` bits of `acc`; fewer than 8 between symbols, so
    // at most 7 + 30 bits are ever live and the shift never drops any of them.
    let mut acc: u64 = 0;
    let mut pending: u32 = 0;
    for &b in src {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        pending += u32::from(len);
        while pending >= 8 {
            pending -= 8;
            dst.put_u8((acc >> pending) as u8);
        }
    }
    if pending > 0 {
        let pad = 8 - pending;
        dst.put_u8(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn huffman(s: &[u8]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode(s, &mut dst);
        dst.to_vec()
    }

    fn unhuffman(s: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut dst = Vec::new();
        decode(s, &mut dst).map(|()| dst)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// A typo in `CODES` that keeps the tree complete would still break canonical order:
    /// RFC 7541's code is canonical (codes of one length are consecutive and rise with the
    /// symbol, and each length starts where the previous one ended, shifted). Rebuild the
    /// codes from the lengths alone and compare.
    #[test]
    fn codes_are_the_canonical_code_of_their_lengths() {
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut code: u32 = 0;
        let mut prev_len = CODES[order[0]].1;
        for (i, &sym) in order.iter().enumerate() {
            let len = CODES[sym].1;
            if i > 0 {
                code = (code + 1) << (len - prev_len);
            }
            prev_len = len;
            assert_eq!(CODES[sym].0, code, "symbol {sym}");
        }
        // Complete code: the last code of the longest length is all ones (EOS).
        assert_eq!(code, (1 << 30) - 1);
    }

    #[test]
    fn rfc_examples() {
        // RFC 7541 C.4.1, C.4.2, C.4.3, C.6.1.
        assert_eq!(huffman(b"www.example.com"), hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
        assert_eq!(huffman(b"no-cache"), hex("a8eb 1064 9cbf"));
        assert_eq!(huffman(b"custom-key"), hex("25a8 49e9 5ba9 7d7f"));
        assert_eq!(huffman(b"custom-value"), hex("25a8 49e9 5bb8 e8b4 bf"));
        assert_eq!(huffman(b"302"), hex("6402"));
        assert_eq!(huffman(b"private"), hex("aec3 771a 4b"));
        assert_eq!(unhuffman(&hex("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3")).unwrap(), b"https://www.example.com");
        assert_eq!(
            unhuffman(&hex("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff")).unwrap(),
            b"Mon, 21 Oct 2013 20:13:21 GMT"
        );
    }

    #[test]
    fn empty_string_round_trips() {
        assert_eq!(huffman(b""), b"");
        assert_eq!(unhuffman(b"").unwrap(), b"");
        assert_eq!(encoded_len(b""), 0);
    }

    #[test]
    fn every_symbol_round_trips_alone_and_in_a_run() {
        for b in 0..=255u8 {
            let one = [b];
            assert_eq!(unhuffman(&huffman(&one)).unwrap(), one);
            let run = [b; 9];
            assert_eq!(unhuffman(&huffman(&run)).unwrap(), run);
        }
    }

    #[test]
    fn padding_of_up_to_seven_ones_is_accepted() {
        // '0' is 00000 (5 bits): one byte carries it plus 3 bits of padding.
        assert_eq!(unhuffman(&[0b0000_0111]).unwrap(), b"0");
        // 'a' (00011) then 'a' again and 6 ones: 00011 00011 111111 = 2 bytes.
        assert_eq!(unhuffman(&[0b0001_1000, 0b1111_1111]).unwrap(), b"aa");
    }

    #[test]
    fn padding_not_all_ones_is_rejected() {
        // '0' then padding 110 instead of 111.
        assert!(matches!(unhuffman(&[0b0000_0110]), Err(DecodeError::Compression(_))));
        // '0' then padding 000: decodes as '0' plus 3 bits of an unfinished '0'.
        assert!(unhuffman(&[0b0000_0000]).is_err());
    }

    #[test]
    fn padding_of_eight_or_more_bits_is_rejected() {
        // A whole byte of ones is 8 bits of padding, alone or after a symbol.
        assert!(unhuffman(&[0xff]).is_err());
        let mut s = huffman(b"abc");
        s.push(0xff);
        assert!(unhuffman(&s).is_err());
        // '0' (5 bits) + 11 ones.
        assert!(unhuffman(&[0b0000_0111, 0xff]).is_err());
    }

    #[test]
    fn eos_in_the_data_is_rejected() {
        // 30 ones = EOS, then 2 ones of padding.
        assert_eq!(
            unhuffman(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Compression("EOS symbol inside a Huffman string"))
        );
        // 'a' then EOS then padding.
        let mut bits: u64 = 0b00011;
        bits = (bits << 30) | 0x3fff_ffff;
        bits = (bits << 5) | 0b11111; // 40 bits in all
        let bytes = bits.to_be_bytes()[3..].to_vec();
        assert!(unhuffman(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn random_strings_round_trip(s in proptest::collection::vec(any::<u8>(), 0..200)) {
            let enc = huffman(&s);
            prop_assert_eq!(enc.len(), encoded_len(&s));
            prop_assert_eq!(unhuffman(&enc).unwrap(), s);
        }

        #[test]
        fn random_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unhuffman(&s);
        }
    }
}
