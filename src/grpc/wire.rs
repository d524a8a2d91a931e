//! gRPC over HTTP/2, the parts a frame-level proxy needs (ref §4.1): `:path` split for
//! routing, `grpc-timeout` parse and re-encode, status codes, the fields of proxy-generated
//! responses, and the request-header checks of RFC 9113 §8.2–8.3.

use std::time::Duration;

use crate::grpc::h2::field::{valid_name, valid_pseudo, valid_value};
use crate::grpc::h2::hpack::HeaderList;

/// gRPC status codes the proxy generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "0",
            Code::Cancelled => "1",
            Code::Unknown => "2",
            Code::DeadlineExceeded => "4",
            Code::ResourceExhausted => "8",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
        }
    }
}

/// Splits `/pkg.Service/Method` into `("pkg.Service", "Method")`.
pub fn split_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = path.strip_prefix(b"/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (service, method) = (&rest[..slash], &rest[slash + 1..]);
    if service.is_empty() || method.is_empty() || method.contains(&b'/') {
        return None;
    }
    Some((service, method))
}

/// Parses a `grpc-timeout` value: at most 8 ASCII digits and a unit (`H M S m u n`).
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes a timeout in the finest unit that fits 8 digits (rounded up, so a forwarded
/// deadline is never earlier than the time actually left... by more than the unit).
pub fn encode_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ns = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let v = ns.div_ceil(per);
        if v <= MAX {
            return format!("{v}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Percent-encodes a `grpc-message` (ref §4.1: percent-encoded UTF-8).
pub fn encode_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The fields of a Trailers-Only response (or of the trailers after response headers, when
/// `with_status` is false): `:status 200`, `content-type`, `grpc-status`, `grpc-message`.
pub fn status_fields(out: &mut HeaderList, with_status: bool, code: Code, msg: &str) {
    out.clear();
    if with_status {
        out.push(b":status", b"200", false);
        out.push(b"content-type", b"application/grpc", false);
    }
    out.push(b"grpc-status", code.as_str().as_bytes(), false);
    if !msg.is_empty() {
        out.push(b"grpc-message", encode_message(msg).as_bytes(), false);
    }
}

/// Connection-specific fields that must not appear in HTTP/2 (RFC 9113 §8.2.2).
fn connection_specific(name: &[u8]) -> bool {
    matches!(name, b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade")
}

/// Checks a regular field: its name and value (§8.2.1; skipped when `checked`: a copy of an
/// HPACK table entry found valid when it was inserted), no connection-specific fields
/// (§8.2.2), `te` only `trailers`.
fn check_field(name: &[u8], value: &[u8], checked: bool) -> Result<(), &'static str> {
    if checked {
        debug_assert!(valid_name(name) && valid_value(value), "a checked field is valid");
    } else if !valid_name(name) {
        return Err(if name.iter().any(u8::is_ascii_uppercase) {
            "uppercase field name"
        } else {
            "invalid character in a field name"
        });
    }
    if !checked && !valid_value(value) {
        return Err("invalid character or whitespace in a field value");
    }
    if connection_specific(name) {
        return Err("connection-specific header field");
    }
    if name == b"te" && value != b"trailers" {
        return Err("te other than trailers");
    }
    Ok(())
}

/// A `content-length` value (§8.1.1): digits only; a repeated field must repeat the value.
fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, &'static str> {
    let n = std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("content-length is not a number")?;
    match seen {
        Some(m) if m != n => Err("content-length repeated with another value"),
        _ => Ok(n),
    }
}

/// What the proxy needs from a request header list once it is known to be well formed.
#[derive(Debug, Default)]
pub struct RequestInfo {
    /// Index of `:path` in the list.
    pub path: usize,
    pub timeout: Option<Duration>,
    /// The request's `content-length`: its DATA must add up to it (§8.1.1).
    pub content_length: Option<u64>,
}

/// Checks a request header list (RFC 9113 §8.3.1): pseudo-headers first, known, not
/// repeated; `:method`, `:scheme`, `:path` present; every field valid (§8.2.1: names,
/// values); no connection-specific fields; `te` only `trailers`; `content-length` a number.
/// The error is the reason for a stream PROTOCOL_ERROR.
pub fn check_request(h: &HeaderList) -> Result<RequestInfo, &'static str> {
    let mut info = RequestInfo::default();
    let (mut method, mut scheme, mut path, mut authority) = (false, false, None, false);
    let mut regular = false;
    for (i, (f, checked)) in h.iter_checked().enumerate() {
        if let Some(pseudo) = f.name.strip_prefix(b":") {
            if regular {
                return Err("pseudo-header after a regular field");
            }
            let seen = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => {
                    if path.is_some() {
                        return Err("repeated :path");
                    }
                    if !checked && !valid_pseudo(pseudo, f.value) {
                        return Err("empty or invalid :path");
                    }
                    path = Some(i);
                    continue;
                }
                _ => return Err("unknown or response pseudo-header in a request"),
            };
            if std::mem::replace(seen, true) {
                return Err("repeated pseudo-header");
            }
            if !checked && !valid_pseudo(pseudo, f.value) {
                return Err("invalid pseudo-header value");
            }
            continue;
        }
        regular = true;
        check_field(f.name, f.value, checked)?;
        match f.name {
            b"grpc-timeout" => info.timeout = parse_timeout(f.value),
            b"content-length" => info.content_length = Some(content_length(f.value, info.content_length)?),
            _ => {}
        }
    }
    if !method || !scheme {
        return Err("missing :method or :scheme");
    }
    info.path = path.ok_or("missing :path")?;
    Ok(info)
}

/// Checks a response header list or trailers from an upstream: no request pseudo-headers,
/// `:status` (three digits) only in the first block, every field valid as in a request
/// (§8.2.1, §8.2.2). Returns the `content-length`, if any.
pub fn check_response(h: &HeaderList, trailers: bool) -> Result<Option<u64>, &'static str> {
    let mut regular = false;
    let mut status = false;
    let mut length = None;
    for (f, checked) in h.iter_checked() {
        if f.name.starts_with(b":") {
            if trailers {
                return Err("pseudo-header in trailers");
            }
            if f.name != b":status" || regular || std::mem::replace(&mut status, true) {
                return Err("bad response pseudo-header");
            }
            if f.value.len() != 3 || !f.value.iter().all(u8::is_ascii_digit) {
                return Err("bad :status");
            }
            continue;
        }
        regular = true;
        check_field(f.name, f.value, checked)?;
        if f.name == b"content-length" {
            length = Some(content_length(f.value, length)?);
        }
    }
    if !trailers && !status {
        return Err("response without :status");
    }
    Ok(length)
}

/// Checks request trailers from a client: no pseudo-headers (§8.1), every field valid.
pub fn check_trailers(h: &HeaderList) -> Result<(), &'static str> {
    for (f, checked) in h.iter_checked() {
        if f.name.starts_with(b":") {
            return Err("pseudo-header in trailers");
        }
        check_field(f.name, f.value, checked)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path(b"/pkg.Echo/Unary"), Some((&b"pkg.Echo"[..], &b"Unary"[..])));
        assert_eq!(split_path(b"pkg.Echo/Unary"), None);
        assert_eq!(split_path(b"/pkg.Echo/"), None);
        assert_eq!(split_path(b"//Unary"), None);
        assert_eq!(split_path(b"/a/b/c"), None);
    }

    #[test]
    fn timeouts_parse_and_re_encode() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_timeout(b"123456789n"), None, "more than 8 digits");
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b"m"), None);
        assert_eq!(parse_timeout(b"-1m"), None);
        for d in [Duration::from_nanos(7), Duration::from_millis(1500), Duration::from_secs(86_400 * 30)] {
            let back = parse_timeout(encode_timeout(d).as_bytes()).unwrap();
            assert!(back >= d && back - d <= d / 1_000_000 + Duration::from_nanos(1), "{d:?} -> {back:?}");
        }
        assert_eq!(encode_timeout(Duration::from_millis(250)), "250000u");
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no route for /a.B/C"), "no route for /a.B/C");
        assert_eq!(encode_message("50% ümlaut\n"), "50%25 %C3%BCmlaut%0A");
    }

    fn list(fields: &[(&str, &str)]) -> HeaderList {
        let mut h = HeaderList::new();
        for (n, v) in fields {
            h.push(n.as_bytes(), v.as_bytes(), false);
        }
        h
    }

    #[test]
    fn request_headers_are_checked() {
        let ok = list(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/a.B/C"),
            (":authority", "x"),
            ("te", "trailers"),
            ("grpc-timeout", "5S"),
        ]);
        let info = check_request(&ok).unwrap();
        assert_eq!((info.path, info.timeout), (2, Some(Duration::from_secs(5))));
        for (bad, why) in [
            (list(&[(":method", "POST"), (":scheme", "http")]), "missing :path"),
            (list(&[(":method", "POST"), ("x", "1"), (":scheme", "http"), (":path", "/a/b")]), "pseudo-header after"),
            (
                list(&[(":method", "POST"), (":scheme", "http"), (":path", "/a/b"), ("connection", "close")]),
                "connection",
            ),
            (list(&[(":method", "POST"), (":scheme", "http"), (":path", "/a/b"), ("te", "gzip")]), "te other"),
            (list(&[(":method", "POST"), (":scheme", "http"), (":path", "/a/b"), (":status", "200")]), "unknown"),
            (list(&[(":method", "POST"), (":method", "GET"), (":scheme", "http"), (":path", "/a/b")]), "repeated"),
            (list(&[(":method", "POST"), (":scheme", "http"), (":path", "/a/b"), ("X-Up", "1")]), "uppercase"),
        ] {
            let err = check_request(&bad).unwrap_err();
            assert!(err.contains(why), "{err} should mention {why}");
        }
    }

    fn request_with(name: &str, value: &str) -> HeaderList {
        let mut h = list(&[(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C")]);
        h.push(name.as_bytes(), value.as_bytes(), false);
        h
    }

    /// RFC 9113 §8.2.1: each rule of field names and values makes a request malformed.
    #[test]
    fn field_names_and_values_are_validated() {
        for (name, value, why) in [
            ("X-Up", "1", "uppercase"),
            ("x y", "1", "invalid character in a field name"),
            ("x:y", "1", "invalid character in a field name"),
            ("x\x7f", "1", "invalid character in a field name"),
            ("x\u{e9}", "1", "invalid character in a field name"),
            ("x\ty", "1", "invalid character in a field name"),
            ("", "1", "invalid character in a field name"),
            ("x", "a\0b", "field value"),
            ("x", "a\rb", "field value"),
            ("x", "a\nb", "field value"),
            ("x", " a", "field value"),
            ("x", "a ", "field value"),
            ("x", "\ta", "field value"),
            ("x", "a\t", "field value"),
        ] {
            let err = check_request(&request_with(name, value)).unwrap_err();
            assert!(err.contains(why), "{name:?}: {value:?}: {err} should mention {why}");
        }
        // Names are tokens: separators are refused too (an upstream parses names as tokens).
        for name in ["x(y", "x\"y", "x/y", "x=y", "x{y", "x@y", "x,y", "x;y"] {
            assert!(check_request(&request_with(name, "1")).is_err(), "{name:?}");
        }
        // Other controls than the tab, and DEL, are refused in values (RFC 9110 §5.5).
        for value in ["a\x01b", "a\x1bb", "a\x7fb", "a\x0bb"] {
            assert!(check_request(&request_with("x", value)).is_err(), "{value:?}");
        }
        // Inside a value, spaces and tabs are fine; so are visible non-ASCII bytes.
        assert!(check_request(&request_with("x", "a b\tc \u{e9}")).is_ok());
        assert!(check_request(&request_with("x-ok_1.~!#$%&'*+^`|", "")).is_ok());
        // Pseudo-header values follow the value rules; :path has no space.
        let bad_path = list(&[(":method", "POST"), (":scheme", "http"), (":path", "/a b")]);
        assert!(check_request(&bad_path).unwrap_err().contains(":path"));
        let bad_method = list(&[(":method", "PO\nST"), (":scheme", "http"), (":path", "/a/b")]);
        assert!(check_request(&bad_method).unwrap_err().contains("pseudo-header value"));
    }

    /// The word-at-a-time value check agrees with the rule read byte by byte, for every byte
    /// at every position of values up to 24 bytes long.
    #[test]
    fn the_fast_value_check_matches_the_plain_rule() {
        let plain = |v: &[u8]| {
            !matches!(v.first(), Some(b' ' | b'\t'))
                && !matches!(v.last(), Some(b' ' | b'\t'))
                && !v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        };
        for len in 1..=24usize {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(valid_value(&v), plain(&v), "{v:?}");
                }
            }
        }
        assert!(valid_value(b""));
    }

    /// Pseudo-header values follow their own grammar: an upstream builds a URI from them
    /// (hyper ends the whole connection over a bad one).
    #[test]
    fn pseudo_header_values_follow_their_grammar() {
        let req = |method: &str, scheme: &str, authority: &str, path: &str| {
            check_request(&list(&[
                (":method", method),
                (":scheme", scheme),
                (":authority", authority),
                (":path", path),
            ]))
        };
        assert!(req("POST", "http", "example.com:8080", "/a.B/C?x=1&y=%20").is_ok());
        assert!(req("OPTIONS", "https", "[::1]:443", "*").is_ok());
        for (m, sc, a, p) in [
            ("PO ST", "http", "x", "/a/b"),
            ("POST(", "http", "x", "/a/b"),
            ("POST", "1http", "x", "/a/b"),
            ("POST", "ht tp", "x", "/a/b"),
            ("POST", "http", "x\u{b3}", "/a/b"),
            ("POST", "http", "user@host", "/a/b"),
            ("POST", "http", "a b", "/a/b"),
            ("POST", "http", "x", "a/b"),
            ("POST", "http", "x", "/a b"),
            ("POST", "http", "x", "/a\"b"),
            ("POST", "http", "x", "/a{b}"),
            ("POST", "http", "x", "/\u{e9}"),
            ("POST", "http", "", "/a/b"),
            ("", "http", "x", "/a/b"),
        ] {
            assert!(req(m, sc, a, p).is_err(), "{m:?} {sc:?} {a:?} {p:?}");
        }
    }

    /// RFC 9113 §8.1.1: content-length is a number, and a repeated one agrees.
    #[test]
    fn content_length_is_read_and_checked() {
        assert_eq!(check_request(&request_with("content-length", "42")).unwrap().content_length, Some(42));
        for bad in ["", "-1", "4 2", "0x10", "99999999999999999999999"] {
            assert!(check_request(&request_with("content-length", bad)).is_err(), "{bad:?}");
        }
        let mut twice = request_with("content-length", "5");
        twice.push(b"content-length", b"5", false);
        assert_eq!(check_request(&twice).unwrap().content_length, Some(5));
        twice.push(b"content-length", b"6", false);
        assert!(check_request(&twice).unwrap_err().contains("repeated"));
        let resp = list(&[(":status", "200"), ("content-length", "7")]);
        assert_eq!(check_response(&resp, false), Ok(Some(7)));
    }

    #[test]
    fn response_fields_and_request_trailers_are_validated_too() {
        assert!(check_response(&list(&[(":status", "200"), ("X-Bad", "1")]), false).is_err());
        assert!(check_response(&list(&[(":status", "200"), ("x", "a\r\nb: c")]), false).is_err());
        assert!(check_response(&list(&[(":status", "20")]), false).unwrap_err().contains(":status"));
        assert!(check_response(&list(&[("grpc-message", " padded ")]), true).is_err());
        assert!(check_trailers(&list(&[("x-checksum", "abc")])).is_ok());
        assert!(check_trailers(&list(&[(":path", "/")])).unwrap_err().contains("pseudo-header"));
        assert!(check_trailers(&list(&[("x", "a\0")])).is_err());
        assert!(check_trailers(&list(&[("connection", "close")])).is_err());
    }

    #[test]
    fn response_headers_and_trailers_are_checked() {
        assert!(check_response(&list(&[(":status", "200"), ("content-type", "application/grpc")]), false).is_ok());
        assert!(check_response(&list(&[("grpc-status", "0")]), true).is_ok());
        assert!(check_response(&list(&[(":status", "200")]), true).is_err());
        assert!(check_response(&list(&[("content-type", "x")]), false).is_err());
        assert!(check_response(&list(&[(":path", "/")]), false).is_err());
    }
}
