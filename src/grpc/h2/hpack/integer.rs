//! Prefixed integers (RFC 7541 §5.1), bounded to `u32`.

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// Continuation octets accepted after the prefix: 5 × 7 bits covers every `u32` (with
/// room for redundant zero groups), and stops a peer from making us walk an endless run of
/// `0x80` octets.
const MAX_CONTINUATION: usize = 5;

/// Reads an integer with an `n`-bit prefix (1..=8) starting at `block[*pos]`; the bits above
/// the prefix are the caller's. Advances `pos` past it.
pub(super) fn decode(block: &[u8], pos: &mut usize, n: u8) -> Result<usize, DecodeError> {
    debug_assert!((1..=8).contains(&n));
    let max_prefix = (1u32 << n) - 1;
    let Some(&first) = block.get(*pos) else {
        return Err(DecodeError::Compression("truncated integer"));
    };
    *pos += 1;
    let value = u32::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value as usize);
    }
    let mut value = u64::from(value);
    for i in 0..MAX_CONTINUATION {
        let Some(&b) = block.get(*pos) else {
            return Err(DecodeError::Compression("truncated integer"));
        };
        *pos += 1;
        value += u64::from(b & 0x7f) << (7 * i);
        if value > u64::from(u32::MAX) {
            return Err(DecodeError::Compression("integer larger than 2^32 - 1"));
        }
        if b & 0x80 == 0 {
            return Ok(value as usize);
        }
    }
    Err(DecodeError::Compression("integer with too many continuation octets"))
}

/// Appends `value` with an `n`-bit prefix; `high` holds the representation's bits above the
/// prefix (e.g. `0x80` for an indexed field).
pub(super) fn encode(value: usize, n: u8, high: u8, dst: &mut BytesMut) {
    debug_assert!((1..=8).contains(&n));
    let max_prefix = (1usize << n) - 1;
    if value < max_prefix {
        dst.put_u8(high | value as u8);
        return;
    }
    dst.put_u8(high | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(value: usize, n: u8, high: u8) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode(value, n, high, &mut dst);
        dst.to_vec()
    }

    fn dec(block: &[u8], n: u8) -> Result<(usize, usize), DecodeError> {
        let mut pos = 0;
        decode(block, &mut pos, n).map(|v| (v, pos))
    }

    #[test]
    fn rfc_c1_examples() {
        // C.1.1: 10 with a 5-bit prefix (the 3 high bits belong to someone else).
        assert_eq!(enc(10, 5, 0b1110_0000), [0b1110_1010]);
        assert_eq!(dec(&[0b1110_1010], 5).unwrap(), (10, 1));
        // C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(enc(1337, 5, 0), [0x1f, 0x9a, 0x0a]);
        assert_eq!(dec(&[0x1f, 0x9a, 0x0a], 5).unwrap(), (1337, 3));
        // C.1.3: 42 on an octet boundary (8-bit prefix).
        assert_eq!(enc(42, 8, 0), [42]);
        assert_eq!(dec(&[42, 0xff], 8).unwrap(), (42, 1));
    }

    #[test]
    fn prefix_boundaries() {
        // 2^N - 1 itself needs a continuation octet of 0.
        assert_eq!(enc(31, 5, 0), [0x1f, 0x00]);
        assert_eq!(enc(30, 5, 0), [0x1e]);
        assert_eq!(enc(127 + 128, 7, 0x80), [0xff, 0x80, 0x01]);
        assert_eq!(dec(&[0xff, 0x80, 0x01], 7).unwrap(), (255, 3));
    }

    #[test]
    fn u32_max_is_the_largest_value() {
        let max = enc(u32::MAX as usize, 5, 0);
        assert_eq!(dec(&max, 5).unwrap().0, u32::MAX as usize);
        // u32::MAX + 1 with a 5-bit prefix: 31 + (2^32 - 31) in 5 groups.
        let over = enc(u32::MAX as usize + 1, 5, 0);
        assert_eq!(dec(&over, 5), Err(DecodeError::Compression("integer larger than 2^32 - 1")));
    }

    #[test]
    fn redundant_zero_groups_are_bounded() {
        // 5 continuation octets are fine (value 31).
        assert_eq!(dec(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x00], 5).unwrap(), (31, 6));
        // A sixth one is not, whatever follows.
        assert!(dec(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 5).is_err());
        assert!(dec(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80], 5).is_err());
    }

    #[test]
    fn truncated_integers_are_rejected() {
        assert!(dec(&[], 7).is_err());
        assert!(dec(&[0x7f], 7).is_err());
        assert!(dec(&[0x7f, 0xff], 7).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(value in 0..=u32::MAX as usize, n in 1u8..=8, high in any::<u8>()) {
            let high = high & !(((1u16 << n) - 1) as u8);
            let bytes = enc(value, n, high);
            prop_assert_eq!(bytes[0] & !(((1u16 << n) - 1) as u8), high);
            prop_assert_eq!(dec(&bytes, n).unwrap(), (value, bytes.len()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8), n in 1u8..=8) {
            let _ = dec(&bytes, n);
        }
    }
}
