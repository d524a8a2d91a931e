//! RFC 7541 Appendix C, byte for byte. Each sequence goes through one decoder; after every
//! block the decoded list and the dynamic table size must be the RFC's. Then our encoder
//! encodes the same lists: its blocks must decode back to them, and where the RFC example
//! uses our policy (C.4: Huffman when shorter, incremental indexing of every field) the
//! bytes must be the RFC's too.

use ringway::grpc::h2::hpack::{Decoder, Encoder, HeaderList};

use super::{decode, encode, hex, lines, Owned};

/// (hex block, decoded list, table size after it).
type Step = (&'static str, &'static str, usize);

fn run_decoder(table_size: usize, steps: &[Step]) {
    let mut d = Decoder::new(table_size);
    for (i, &(block, list, size)) in steps.iter().enumerate() {
        assert_eq!(decode(&mut d, &hex(block)), lines(list), "block {i}");
        assert_eq!(d.table_size(), size, "table size after block {i}");
    }
}

/// Our encoder on the same lists, sized like the RFC's peer: the blocks decode back to the
/// lists, and the encoder's table size matches the decoder's after every block.
fn run_encoder(table_size: usize, steps: &[Step]) -> Vec<Vec<u8>> {
    let mut e = Encoder::new();
    e.set_max_table_size(table_size);
    let mut d = Decoder::new(4096);
    d.set_max_table_size(table_size);
    steps
        .iter()
        .map(|&(_, list, _)| {
            let block = encode(&mut e, &lines(list));
            assert_eq!(decode(&mut d, &block), lines(list));
            assert_eq!(e.table_size(), d.table_size());
            block
        })
        .collect()
}

#[test]
fn c2_1_literal_with_indexing() {
    run_decoder(
        4096,
        &[("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", "custom-key: custom-header", 55)],
    );
}

#[test]
fn c2_2_literal_without_indexing() {
    run_decoder(4096, &[("040c 2f73 616d 706c 652f 7061 7468", ":path: /sample/path", 0)]);
}

#[test]
fn c2_3_literal_never_indexed() {
    let mut d = Decoder::new(4096);
    let got = decode(&mut d, &hex("1008 7061 7373 776f 7264 0673 6563 7265 74"));
    let expected: Owned = vec![(b"password".to_vec(), b"secret".to_vec(), true)];
    assert_eq!(got, expected);
    assert_eq!(d.table_size(), 0);
    // Our encoder keeps it never indexed (it may Huffman-encode the strings, so the bytes
    // after the first can differ from the RFC's).
    let mut e = Encoder::new();
    let block = encode(&mut e, &expected);
    assert_eq!(block[0], 0x10);
    assert_eq!(decode(&mut d, &block), expected);
    assert_eq!(e.table_size(), 0);
}

#[test]
fn c2_4_indexed() {
    run_decoder(4096, &[("82", ":method: GET", 0)]);
    assert_eq!(run_encoder(4096, &[("82", ":method: GET", 0)]), [hex("82")]);
}

const C3: [Step; 3] = [
    (
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com",
        57,
    ),
    (
        "8286 84be 5808 6e6f 2d63 6163 6865",
        ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\ncache-control: no-cache",
        110,
    ),
    (
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ":method: GET\n:scheme: https\n:path: /index.html\n:authority: www.example.com\ncustom-key: custom-value",
        164,
    ),
];

const C4: [Step; 3] = [
    ("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", C3[0].1, 57),
    ("8286 84be 5886 a8eb 1064 9cbf", C3[1].1, 110),
    ("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf", C3[2].1, 164),
];

#[test]
fn c3_requests_without_huffman() {
    run_decoder(4096, &C3);
    // Our encoder uses Huffman where it is shorter, so it produces C.4's bytes instead.
    let ours = run_encoder(4096, &C3);
    assert_eq!(ours, C4.iter().map(|s| hex(s.0)).collect::<Vec<_>>());
}

#[test]
fn c4_requests_with_huffman() {
    run_decoder(4096, &C4);
    let ours = run_encoder(4096, &C4);
    assert_eq!(ours, C4.iter().map(|s| hex(s.0)).collect::<Vec<_>>());
}

const C5: [Step; 3] = [
    (
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        ":status: 302\ncache-control: private\ndate: Mon, 21 Oct 2013 20:13:21 GMT\nlocation: https://www.example.com",
        222,
    ),
    (
        "4803 3330 37c1 c0bf",
        ":status: 307\ncache-control: private\ndate: Mon, 21 Oct 2013 20:13:21 GMT\nlocation: https://www.example.com",
        222,
    ),
    (
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
        ":status: 200\ncache-control: private\ndate: Mon, 21 Oct 2013 20:13:22 GMT\nlocation: https://www.example.com\n\
         content-encoding: gzip\nset-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        215,
    ),
];

const C6: [Step; 3] = [
    (
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        C5[0].1,
        222,
    ),
    ("4883 640e ffc1 c0bf", C5[1].1, 222),
    (
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        C5[2].1,
        215,
    ),
];

#[test]
fn c5_responses_without_huffman_and_evictions() {
    run_decoder(256, &C5);
    // Our policy does not index `date`, so the bytes differ; the lists must not.
    run_encoder(256, &C5);
}

#[test]
fn c6_responses_with_huffman_and_evictions() {
    run_decoder(256, &C6);
    run_encoder(256, &C6);
}

#[test]
fn one_decoder_reads_the_rfc_blocks_through_a_list_size_limit() {
    // The C.5 sequence again with a limit that only the third list (set-cookie) exceeds:
    // it is rejected as too large, and the table still ends at the RFC's 215 octets.
    let mut d = Decoder::new(256);
    let mut out = HeaderList::new();
    let limit = lines(C5[1].1).iter().map(|(n, v, _)| n.len() + v.len() + 32).sum::<usize>();
    for (i, &(block, list, size)) in C5.iter().enumerate() {
        let r = d.decode(&hex(block), limit, &mut out);
        if i < 2 {
            r.unwrap();
            assert_eq!(super::owned(&out), lines(list));
        } else {
            assert_eq!(r, Err(ringway::grpc::h2::hpack::DecodeError::ListTooLarge));
        }
        assert_eq!(d.table_size(), size);
    }
}
