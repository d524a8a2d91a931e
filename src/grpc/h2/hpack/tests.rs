//! Decoder and encoder rules that the RFC vectors and the corpus (tests/hpack.rs) do not
//! reach: size updates, error cases, the list-size limit, and the encoder's policy.

use bytes::BytesMut;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn int(value: usize, n: u8, high: u8) -> Vec<u8> {
    let mut dst = BytesMut::new();
    integer::encode(value, n, high, &mut dst);
    dst.to_vec()
}

/// A block of size updates followed by `rest`.
fn updates_then(sizes: &[usize], rest: &[u8]) -> Vec<u8> {
    let mut block: Vec<u8> = sizes.iter().flat_map(|&s| int(s, 5, 0x20)).collect();
    block.extend_from_slice(rest);
    block
}

/// A literal with incremental indexing and a literal name, no Huffman.
fn indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x40];
    b.extend(int(name.len(), 7, 0));
    b.extend_from_slice(name);
    b.extend(int(value.len(), 7, 0));
    b.extend_from_slice(value);
    b
}

fn list(l: &HeaderList) -> Vec<(String, String, bool)> {
    l.iter()
        .map(|f| {
            (
                String::from_utf8_lossy(f.name).into_owned(),
                String::from_utf8_lossy(f.value).into_owned(),
                f.never_indexed,
            )
        })
        .collect()
}

fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String, bool)>, DecodeError> {
    let mut out = HeaderList::new();
    d.decode(block, usize::MAX, &mut out).map(|()| list(&out))
}

/// Expected lists, written as (name, value, never_indexed).
fn owned(items: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    items.iter().map(|&(n, v, ni)| (n.to_owned(), v.to_owned(), ni)).collect()
}

fn field<'a>(name: &'a str, value: &'a str) -> Field<'a> {
    Field { name: name.as_bytes(), value: value.as_bytes(), never_indexed: false }
}

fn encode(e: &mut Encoder, fields: &[Field<'_>]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    e.encode(fields.iter().copied(), &mut dst);
    dst.to_vec()
}

fn compression_error<T: std::fmt::Debug>(r: Result<T, DecodeError>) -> &'static str {
    match r {
        Err(DecodeError::Compression(why)) => why,
        other => panic!("expected a compression error, got {other:?}"),
    }
}

#[test]
fn empty_block_is_an_empty_list() {
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &[]).unwrap(), owned(&[]));
}

#[test]
fn size_update_at_block_start_evicts() {
    let mut d = Decoder::new(4096);
    decode(&mut d, &indexed_literal(b"k", b"v")).unwrap();
    assert_eq!(d.table_size(), 34);
    // Several updates in a row are allowed; 0 empties the table, 4096 re-opens it.
    assert_eq!(decode(&mut d, &updates_then(&[0, 4096], &[0x82])).unwrap(), owned(&[(":method", "GET", false)]));
    assert_eq!(d.table_size(), 0);
    assert!(compression_error(decode(&mut d, &[0xbe])).contains("dynamic table"));
    // A block of only an update is a valid empty list.
    assert_eq!(decode(&mut d, &updates_then(&[100], &[])).unwrap(), owned(&[]));
}

#[test]
fn size_update_after_a_field_is_rejected() {
    let mut d = Decoder::new(4096);
    let why = compression_error(decode(&mut d, &[0x82, 0x20]));
    assert!(why.contains("after the first field"), "{why}");
}

#[test]
fn size_update_above_our_setting_is_rejected() {
    let mut d = Decoder::new(4096);
    assert!(decode(&mut d, &updates_then(&[4096], &[])).is_ok());
    assert!(compression_error(decode(&mut d, &updates_then(&[4097], &[]))).contains("SETTINGS_HEADER_TABLE_SIZE"));
    d.set_max_table_size(8192);
    assert!(decode(&mut d, &updates_then(&[8192], &[])).is_ok());
}

#[test]
fn a_lowered_setting_requires_an_update_in_the_next_block() {
    let mut d = Decoder::new(4096);
    d.set_max_table_size(100);
    assert!(compression_error(decode(&mut d, &[0x82])).contains("missing"));
    let mut d = Decoder::new(4096);
    d.set_max_table_size(100);
    // Also for an empty block, and an update above the new value does not count.
    assert!(decode(&mut d, &[]).is_err());
    assert!(decode(&mut d, &updates_then(&[4096], &[0x82])).is_err());
    assert!(decode(&mut d, &updates_then(&[100], &[0x82])).is_ok());
    // Satisfied once: later blocks need none.
    assert!(decode(&mut d, &[0x82]).is_ok());
}

#[test]
fn lowered_then_raised_requires_the_minimum() {
    let mut d = Decoder::new(4096);
    d.set_max_table_size(64);
    d.set_max_table_size(4096);
    assert!(decode(&mut d, &updates_then(&[4096], &[])).is_err());
    let mut d = Decoder::new(4096);
    d.set_max_table_size(64);
    d.set_max_table_size(4096);
    assert!(decode(&mut d, &updates_then(&[64, 4096], &[])).is_ok());
    // Raising alone requires nothing.
    d.set_max_table_size(8192);
    assert!(decode(&mut d, &[0x82]).is_ok());
}

#[test]
fn literal_kinds_and_never_indexed_flag() {
    let mut d = Decoder::new(4096);
    // RFC 7541 C.2.3: never indexed, literal name.
    assert_eq!(
        decode(&mut d, &hex("100870617373776f726406736563726574")).unwrap(),
        owned(&[("password", "secret", true)])
    );
    // Never indexed with an indexed name (23 = authorization): 0001 1111 + 8 (23 - 15).
    assert_eq!(decode(&mut d, &hex("1f08 03 616263")).unwrap(), owned(&[("authorization", "abc", true)]));
    // C.2.2: without indexing.
    assert_eq!(
        decode(&mut d, &hex("040c2f73616d706c652f70617468")).unwrap(),
        owned(&[(":path", "/sample/path", false)])
    );
    assert_eq!(d.table_size(), 0);
    // C.2.1: with indexing, then the entry by index 62.
    let mut block = hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572");
    block.push(0xbe);
    let got = decode(&mut d, &block).unwrap();
    assert_eq!(got[0], got[1]);
    assert_eq!(d.table_size(), 55);
}

#[test]
fn malformed_blocks_are_compression_errors() {
    let cases: &[(&str, &[u8])] = &[
        ("index 0", &[0x80]),
        ("index 62 with an empty table", &[0xbe]),
        ("static name index 0 is a literal name, truncated", &[0x40]),
        ("name index past the table", &[0x7f, 0x00, 0x01, 0x61]),
        ("string longer than the block", &[0x40, 0x05, 0x61]),
        ("value missing", &[0x40, 0x01, 0x61]),
        ("integer too long", &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
        ("integer truncated", &[0xff]),
        ("Huffman padding of 8 bits", &[0x04, 0x81, 0xff]),
        ("Huffman EOS", &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (what, block) in cases {
        let mut d = Decoder::new(4096);
        assert!(matches!(decode(&mut d, block), Err(DecodeError::Compression(_))), "{what}");
    }
}

#[test]
fn an_error_leaves_no_partial_list() {
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::new();
    // :method GET, then index 0.
    assert!(d.decode(&[0x82, 0x80], usize::MAX, &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(out.list_size(), 0);
}

#[test]
fn list_too_large_keeps_the_table_in_sync() {
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::new();
    // Two indexed literals of 32 + 1 + 100 = 133 each; the limit allows one.
    let mut block = indexed_literal(b"a", &[b'1'; 100]);
    block.extend(indexed_literal(b"b", &[b'2'; 100]));
    block.push(0x82);
    assert_eq!(d.decode(&block, 200, &mut out), Err(DecodeError::ListTooLarge));
    assert!(out.is_empty());
    assert_eq!(d.table_size(), 266);
    // Both entries are there: 62 = b, 63 = a.
    d.decode(&[0xbe, 0xbf], 1000, &mut out).unwrap();
    assert_eq!(out.get(b"b"), Some(&[b'2'; 100][..]));
    assert_eq!(out.get(b"a"), Some(&[b'1'; 100][..]));
    // The limit is inclusive.
    d.decode(&[0xbe], 133, &mut out).unwrap();
    assert_eq!(out.list_size(), 133);
    assert_eq!(d.decode(&[0xbe], 132, &mut out), Err(DecodeError::ListTooLarge));
}

#[test]
fn a_compression_error_is_reported_even_past_the_limit() {
    let mut d = Decoder::new(4096);
    let mut out = HeaderList::new();
    let mut block = indexed_literal(b"a", &[b'1'; 100]);
    block.push(0x80);
    assert!(matches!(d.decode(&block, 10, &mut out), Err(DecodeError::Compression(_))));
}

#[test]
fn a_new_entry_may_name_the_entry_it_evicts() {
    // Table of 40: one entry "abcd"/"" (36) fits; inserting a literal with indexing whose
    // name is index 62 evicts that very entry (RFC 7541 §4.4).
    let mut d = Decoder::new(40);
    decode(&mut d, &indexed_literal(b"abcd", b"")).unwrap();
    assert_eq!(decode(&mut d, &[0x7e, 0x02, b'x', b'y']).unwrap(), owned(&[("abcd", "xy", false)]));
    assert_eq!(decode(&mut d, &[0xbe]).unwrap(), owned(&[("abcd", "xy", false)]));
    assert_eq!(d.table_size(), 38);
}

#[test]
fn encoder_emits_size_updates_only_after_changes() {
    let mut e = Encoder::new();
    e.set_max_table_size(4096);
    assert_eq!(encode(&mut e, &[field(":method", "GET")]), [0x82]);
    e.set_max_table_size(256);
    assert_eq!(encode(&mut e, &[]), int(256, 5, 0x20));
    assert_eq!(encode(&mut e, &[]), [0u8; 0]);
    // Lowered then raised: the minimum, then the final value.
    e.set_max_table_size(0);
    e.set_max_table_size(1000);
    assert_eq!(encode(&mut e, &[]), [int(0, 5, 0x20), int(1000, 5, 0x20)].concat());
    // Above the cap: clamped.
    e.set_max_table_size(1 << 20);
    assert_eq!(encode(&mut e, &[]), int(MAX_ENCODER_TABLE_SIZE, 5, 0x20));
}

#[test]
fn encoder_lowering_evicts_so_the_decoder_stays_in_sync() {
    let mut e = Encoder::new();
    let mut d = Decoder::new(4096);
    let fields = [field(":authority", "svc.local:8080"), field("user-agent", "grpc-go/1.60")];
    let b = encode(&mut e, &fields);
    decode(&mut d, &b).unwrap();
    assert!(e.table_size() > 0);
    d.set_max_table_size(0);
    e.set_max_table_size(0);
    let b = encode(&mut e, &fields);
    assert_eq!(e.table_size(), 0);
    assert_eq!(decode(&mut d, &b).unwrap().len(), 2);
    assert_eq!(d.table_size(), 0);
}

#[test]
fn encoder_policy() {
    let mut e = Encoder::new();
    let mut d = Decoder::new(4096);
    let never = Field { name: b"authorization", value: b"Bearer x", never_indexed: true };
    let first = [
        field(":method", "POST"),
        field(":path", "/pkg.Svc/Method"),
        field("content-type", "application/grpc"),
        field("te", "trailers"),
        field("grpc-timeout", "100m"),
        field("x-trace-bin", "AAEC"),
        never,
    ];
    let b1 = encode(&mut e, &first);
    // :method POST is static 3.
    assert_eq!(b1[0], 0x83);
    // :path, content-type and te were indexed; grpc-timeout, *-bin and the secret were not.
    let expect = [(":path", "/pkg.Svc/Method"), ("content-type", "application/grpc"), ("te", "trailers")]
        .iter()
        .map(|(n, v)| n.len() + v.len() + 32)
        .sum::<usize>();
    assert_eq!(e.table_size(), expect);
    let got = decode(&mut d, &b1).unwrap();
    assert_eq!(got[6], owned(&[("authorization", "Bearer x", true)])[0]);
    assert_eq!(d.table_size(), expect);
    // The second time the indexed ones are one octet each.
    let b2 = encode(&mut e, &first[..4]);
    assert_eq!(b2.len(), 4, "{b2:02x?}");
    assert_eq!(decode(&mut d, &b2).unwrap(), got[..4]);
    // The never-indexed field is re-sent as never indexed (0001xxxx) with its static name
    // index 23 even though the exact pair could otherwise be indexed.
    let b3 = encode(&mut e, &[never]);
    assert_eq!(&b3[..2], &[0x1f, 0x08]);
    // A value longer than a quarter of the table is not indexed.
    let long = "x".repeat(1025);
    let before = e.table_size();
    let b4 = encode(&mut e, &[field("x-long", &long)]);
    assert_eq!(e.table_size(), before);
    assert_eq!(b4[0], 0x00);
}

#[test]
fn encoder_uses_huffman_only_when_shorter() {
    let mut e = Encoder::new();
    // "x-raw" name Huffman-encodes shorter; the value of control octets would grow.
    let b = encode(&mut e, &[Field { name: b"x-raw", value: &[0, 1, 2], never_indexed: false }]);
    // 0x40, name length with H set, ..., value length without H then the raw octets.
    assert_eq!(b[0], 0x40);
    assert_eq!(b[1] & 0x80, 0x80);
    assert_eq!(&b[b.len() - 4..], &[0x03, 0, 1, 2]);
}

/// The decoder marks a field valid only when it is a copy of a table entry whose octets
/// passed the field rules: every regular static entry (and no pseudo-header), and dynamic
/// entries checked when inserted. A later reference to an invalid entry stays unmarked, so
/// the request checks still refuse it.
#[test]
fn indexed_fields_are_marked_valid_only_from_entries_found_valid() {
    use crate::grpc::h2::field;
    for (i, (name, value)) in super::table::STATIC.iter().enumerate() {
        // Every one but 1 (`:authority`, empty), as the decoder assumes.
        assert_eq!(field::valid(name, value), i > 0, "static entry {}", i + 1);
    }
    // Literal with incremental indexing, new names: a valid field, then an invalid one.
    let mut first = vec![0x40, 5];
    first.extend_from_slice(b"x-one");
    first.extend_from_slice(&[3]);
    first.extend_from_slice(b"abc");
    first.extend_from_slice(&[0x40, 5]);
    first.extend_from_slice(b"x-two");
    first.extend_from_slice(&[3]);
    first.extend_from_slice(b"a\x01c");
    let mut dec = Decoder::new(4096);
    let mut list = HeaderList::new();
    dec.decode(&first, 1 << 16, &mut list).unwrap();
    assert!(list.iter_checked().all(|(_, checked)| !checked), "literals are never marked");
    // Indexed: dynamic 62 (x-two, the newest) and 63 (x-one), and static 31 (content-type).
    dec.decode(&[0x80 | 62, 0x80 | 63, 0x80 | 31, 0x80 | 1, 0x80 | 3], 1 << 16, &mut list).unwrap();
    let marks: Vec<(&[u8], bool)> = list.iter_checked().map(|(f, c)| (f.name, c)).collect();
    let want: [(&[u8], bool); 5] =
        [(b"x-two", false), (b"x-one", true), (b"content-type", true), (b":authority", false), (b":method", true)];
    assert_eq!(marks, want);
}
