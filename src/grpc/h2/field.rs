//! Field validity (RFC 9113 §8.2.1, RFC 9110 §5): what every header field name and value
//! must look like, checked on requests and responses in both directions. Here, below HPACK,
//! so the decoder can mark a dynamic-table entry valid once when it is inserted; fields
//! indexed from such an entry (most fields after a connection's first request) are not
//! scanned again.

/// A table of the bytes `parts` list, for one lookup per byte: names and pseudo-header
/// values are checked on every request and response.
pub const fn byte_table(parts: &[&[u8]]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut p = 0;
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            t[parts[p][i] as usize] = true;
            i += 1;
        }
        p += 1;
    }
    t
}

pub const DIGITS_LOWER: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
pub const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
pub const TCHAR_SYMBOLS: &[u8] = b"!#$%&'*+-.^_`|~";

/// A field name (RFC 9113 §8.2.1, RFC 9110 §5.1): a token in lowercase. RFC 9113 itself only
/// bans controls, space, uppercase, colon and bytes above 0x7e; a name outside the token
/// set passes that rule but breaks upstreams that parse names as tokens (hyper: the
/// connection), so the proxy refuses it.
pub static NAME_BYTE: [bool; 256] = byte_table(&[DIGITS_LOWER, TCHAR_SYMBOLS]);
/// Whether every byte of a non-empty `v` is in `table`.
pub fn all_in(table: &[bool; 256], v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| table[b as usize])
}

/// A regular field's name: a lowercase token.
pub fn valid_name(name: &[u8]) -> bool {
    all_in(&NAME_BYTE, name)
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGHS: u64 = ONES << 7;

/// Whether any byte of `w` is below `n` (n at most 128; exact: a borrow only starts at
/// such a byte).
fn has_byte_below(w: u64, n: u8) -> bool {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0
}

/// Whether any byte of `w` is `b`.
fn has_byte(w: u64, b: u8) -> bool {
    let x = w ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// A field value (RFC 9113 §8.2.1, RFC 9110 §5.5): no NUL, CR or LF (9113) nor any other
/// control but the tab or DEL (9110: what upstreams such as hyper refuse), no leading or
/// trailing space or tab. A proxy that forwarded such a value would hand HTTP/1 hops a way
/// to smuggle. Eight bytes at a time: one test per word clears almost every value (a tab,
/// also below 0x20, sends its word to the byte-wise check).
pub fn valid_value(value: &[u8]) -> bool {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    if edge(value.first()) || edge(value.last()) {
        return false;
    }
    let forbidden = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
    let mut words = value.chunks_exact(8);
    for c in &mut words {
        let w = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
        if (has_byte_below(w, 0x20) || has_byte(w, 0x7f)) && c.iter().any(forbidden) {
            return false;
        }
    }
    !words.remainder().iter().any(forbidden)
}

/// `:method`: a token (RFC 9110 §9.1).
static METHOD_BYTE: [bool; 256] = byte_table(&[DIGITS_LOWER, UPPER, TCHAR_SYMBOLS]);
/// `:scheme` (RFC 3986 §3.1).
static SCHEME_BYTE: [bool; 256] = byte_table(&[DIGITS_LOWER, UPPER, b"+-."]);
/// `:authority` (RFC 3986 §3.2, no userinfo as RFC 9113 §8.3.1 says): reg-name, IP
/// literal and port characters, percent-encoding.
static AUTHORITY_BYTE: [bool; 256] = byte_table(&[DIGITS_LOWER, UPPER, b"-._~!$&'()*+,;=:[]%"]);
/// `:path` (RFC 3986 §3.3, §3.4): pchar, "/" and "?", percent-encoding.
static PATH_BYTE: [bool; 256] = byte_table(&[DIGITS_LOWER, UPPER, b"-._~!$&'()*+,;=:@/?%"]);

/// A pseudo-header's value, by its own grammar (an upstream parses them into a URI);
/// `pseudo` is the name without its colon. `:status`: three digits.
pub fn valid_pseudo(pseudo: &[u8], value: &[u8]) -> bool {
    match pseudo {
        b"method" => all_in(&METHOD_BYTE, value),
        b"scheme" => all_in(&SCHEME_BYTE, value) && value[0].is_ascii_alphabetic(),
        b"authority" => all_in(&AUTHORITY_BYTE, value),
        b"path" => all_in(&PATH_BYTE, value) && (value[0] == b'/' || value == b"*"),
        b"status" => value.len() == 3 && value.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A field whose name and value are both valid: a regular one by the rules above, a
/// pseudo-header by its grammar.
pub fn valid(name: &[u8], value: &[u8]) -> bool {
    match name.strip_prefix(b":") {
        Some(pseudo) => valid_pseudo(pseudo, value),
        None => valid_name(name) && valid_value(value),
    }
}
