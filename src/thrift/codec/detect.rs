//! First-bytes detection for a Thrift listener connection (ref Appendix B).

use super::message::{Protocol, COMPACT_PROTOCOL_ID, COMPACT_VERSION};

/// Largest LENGTH a framed transport may carry (ref §1.4): keeps HTTP and garbage apart.
pub const MAX_PROTOCOL_FRAME: u32 = 0x3FFF_FFFF;

/// What the first bytes of a connection say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A length-prefixed transport: Framed, Kitex TTHeader or Apache THeader. Each frame is
    /// classified again when it is cut, so one connection may mix them.
    Framed,
    /// TTHeader Streaming (flags bit 0x0002): not supported by this listener yet.
    TTStream,
    /// Unframed (Buffered) client: answered with UNSUPPORTED_CLIENT_TYPE and closed.
    Unframed(Protocol),
    /// Kitex MeshHeader (`FF AF`): rejected.
    MeshHeader,
    /// HTTP/2 connection preface on a Thrift port.
    Http2,
    /// HTTP/1.x or bytes that are not Thrift at all.
    Garbage,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Classifies a connection from its first bytes. Returns `None` while fewer than 8 bytes are
/// known and the answer could still change; `eof` says no more bytes will come.
pub fn detect(b: &[u8], eof: bool) -> Option<Detected> {
    if b.len() < 8 && !eof {
        // Two bytes are enough for the unambiguous unframed cases.
        if b.len() >= 2 && (b[..2] == [0x80, 0x01] || is_compact_start(b)) {
            // fallthrough to the full check below
        } else {
            return None;
        }
    }
    if b.len() >= 2 && b[..2] == [0x80, 0x01] {
        return Some(Detected::Unframed(Protocol::Binary));
    }
    if is_compact_start(b) {
        return Some(Detected::Unframed(Protocol::Compact));
    }
    if b.len() < 8 {
        return Some(Detected::Garbage);
    }
    if b[..2] == [0xFF, 0xAF] {
        return Some(Detected::MeshHeader);
    }
    if &b[..4] == b"PRI " {
        return Some(Detected::Http2);
    }
    if b[0] >= 0x40 {
        return Some(Detected::Garbage);
    }
    match [b[4], b[5]] {
        [0x10, 0x00] if b[7] & 0x02 != 0 => return Some(Detected::TTStream),
        [0x10, 0x00] | [0x0F, 0xFF] | [0x80, 0x01] | [0x90, 0x01] => return Some(Detected::Framed),
        _ => {}
    }
    if b[4] == COMPACT_PROTOCOL_ID && b[5] & 0x1f == COMPACT_VERSION {
        return Some(Detected::Framed);
    }
    let first = u32_at(b, 0);
    // Non-strict unframed binary: a small name length followed by an identifier character.
    if first > 0 && first <= 4096 && (b[4].is_ascii_alphabetic() || b[4] == b'_') {
        return Some(Detected::Unframed(Protocol::BinaryNonStrict));
    }
    // Framed non-strict binary: the frame's payload starts with a small positive name length.
    let name_len = u32_at(b, 4);
    if name_len > 0 && name_len <= 4096 {
        return Some(Detected::Framed);
    }
    Some(Detected::Garbage)
}

fn is_compact_start(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == COMPACT_PROTOCOL_ID && b[1] & 0x1f == COMPACT_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_is_told_apart() {
        let framed_strict = [0, 0, 0, 0x11, 0x80, 0x01, 0x00, 0x01];
        let framed_compact = [0, 0, 0, 0x0c, 0x82, 0x21, 0x07, 0x04];
        let framed_old = [0, 0, 0, 0x0d, 0, 0, 0, 4];
        let ttheader = [0, 0, 0, 0x3f, 0x10, 0x00, 0x00, 0x00];
        let ttstream = [0, 0, 0, 0x3f, 0x10, 0x00, 0x00, 0x02];
        let theader = [0, 0, 0, 0x23, 0x0f, 0xff, 0x00, 0x00];
        assert_eq!(detect(&framed_strict, false), Some(Detected::Framed));
        assert_eq!(detect(&framed_compact, false), Some(Detected::Framed));
        assert_eq!(detect(&framed_old, false), Some(Detected::Framed));
        assert_eq!(detect(&ttheader, false), Some(Detected::Framed));
        assert_eq!(detect(&theader, false), Some(Detected::Framed));
        assert_eq!(detect(&ttstream, false), Some(Detected::TTStream));
    }

    #[test]
    fn unframed_clients_are_recognised_for_a_clear_rejection() {
        assert_eq!(detect(&[0x80, 0x01], false), Some(Detected::Unframed(Protocol::Binary)));
        assert_eq!(detect(&[0x82, 0x21], false), Some(Detected::Unframed(Protocol::Compact)));
        let old = [0, 0, 0, 4, b'p', b'i', b'n', b'g'];
        assert_eq!(detect(&old, false), Some(Detected::Unframed(Protocol::BinaryNonStrict)));
    }

    #[test]
    fn http_and_garbage_are_not_thrift() {
        assert_eq!(detect(b"PRI * HTTP/2.0", false), Some(Detected::Http2));
        assert_eq!(detect(b"GET / HTTP/1.1", false), Some(Detected::Garbage));
        assert_eq!(detect(&[0xff, 0xaf, 0, 0, 0, 0, 0, 0], false), Some(Detected::MeshHeader));
        assert_eq!(detect(&[0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef], false), Some(Detected::Garbage));
        assert_eq!(detect(&[0, 0, 0], false), None);
        assert_eq!(detect(&[0, 0, 0], true), Some(Detected::Garbage));
    }
}
