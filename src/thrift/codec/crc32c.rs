//! CRC-32C (Castagnoli), for the TTHeader `crc32c` payload checksum (ref §2.5), which must be
//! recomputed after the proxy rewrites a payload seqID.

const POLY: u32 = 0x82F6_3B78; // reflected 0x1EDC6F41

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Rewrites an 8-char lowercase hex checksum in place.
pub fn write_hex(dst: &mut [u8], crc: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in dst.iter_mut().take(8).enumerate() {
        *d = HEX[((crc >> (28 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_check_value() {
        // The standard CRC-32C check value for "123456789".
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        let mut h = [0u8; 8];
        super::write_hex(&mut h, 0xE306_9283);
        assert_eq!(&h, b"e3069283");
    }
}
