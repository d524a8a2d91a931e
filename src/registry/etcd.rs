//! Just enough of etcd v3's HTTP/JSON gateway for a registry reader, on blocking std sockets
//! (the registry threads are off the workers): `POST /v3/kv/range` over a key prefix, and
//! `POST /v3/watch` from a revision, whose chunked answer is a stream of JSON messages, one per
//! line. Keys and values travel base64-encoded, int64 fields as strings; a PUT event has no
//! `type` field, a DELETE (a lease expiry too) says `"type": "DELETE"`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use crate::config::EtcdEndpoint;

/// A key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// One change under a watched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete(Vec<u8>),
}

/// What a watch stream says.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchMsg {
    /// The watch is set up.
    Created,
    /// Changes, and the revision they bring the store to.
    Events { revision: i64, events: Vec<Event> },
    /// etcd ended the watch (`compact_revision` > 0: the start revision was compacted away).
    Canceled { compact_revision: i64, reason: String },
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The end of the key range holding every key that starts with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An int64 field as the gateway writes it (a string), or absent (0).
fn int64(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes_field(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map_or(Some(Vec::new()), b64_decode)
}

fn kv(v: &Value) -> Option<Kv> {
    Some(Kv { key: bytes_field(&v["key"])?, value: bytes_field(&v["value"])? })
}

/// Reads a `/v3/kv/range` answer: the keys and the store's revision.
pub fn parse_range(body: &[u8]) -> io::Result<(Vec<Kv>, i64)> {
    let v: Value = serde_json::from_slice(body).map_err(|e| err(format!("range answer: {e}")))?;
    if let Some(e) = v.get("error").or_else(|| v.get("message")) {
        return Err(err(format!("range refused: {e}")));
    }
    let revision = int64(&v["header"]["revision"]);
    let kvs = match v.get("kvs") {
        Some(Value::Array(a)) => {
            a.iter().map(kv).collect::<Option<Vec<Kv>>>().ok_or_else(|| err("bad base64 in kvs"))?
        }
        _ => Vec::new(),
    };
    Ok((kvs, revision))
}

/// Reads one message of a watch stream.
pub fn parse_watch_line(line: &[u8]) -> io::Result<WatchMsg> {
    let v: Value = serde_json::from_slice(line).map_err(|e| err(format!("watch message: {e}")))?;
    if let Some(e) = v.get("error") {
        return Err(err(format!("watch failed: {e}")));
    }
    let r = &v["result"];
    if r["canceled"].as_bool() == Some(true) {
        let reason = r["cancel_reason"].as_str().unwrap_or("").to_string();
        return Ok(WatchMsg::Canceled { compact_revision: int64(&r["compact_revision"]), reason });
    }
    if r["created"].as_bool() == Some(true) {
        return Ok(WatchMsg::Created);
    }
    let mut events = Vec::new();
    if let Some(Value::Array(a)) = r.get("events") {
        for e in a {
            let kv = kv(&e["kv"]).ok_or_else(|| err("bad base64 in an event"))?;
            events.push(match e["type"].as_str() {
                Some("DELETE") => Event::Delete(kv.key),
                _ => Event::Put(kv),
            });
        }
    }
    Ok(WatchMsg::Events { revision: int64(&r["header"]["revision"]), events })
}

/// How an answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Chunked,
    Length(usize),
}

/// Sends `POST path` with a JSON body to `ep` and returns the connection, past the answer's
/// head, and how its body is delimited.
fn post(ep: &EtcdEndpoint, path: &str, body: &str, timeout: Duration) -> io::Result<(BufReader<TcpStream>, Body)> {
    let addr = (ep.host.as_str(), ep.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{ep}: no address")))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        ep.host,
        ep.port,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.split_whitespace().nth(1) != Some("200") {
        return Err(err(format!("{ep}{path}: {}", line.trim())));
    }
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(err(format!("{ep}{path}: the answer ends in its head")));
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    match (chunked, length) {
        (true, _) => Ok((r, Body::Chunked)),
        (false, Some(n)) => Ok((r, Body::Length(n))),
        (false, None) => Err(err(format!("{ep}{path}: the answer has neither a length nor chunks"))),
    }
}

/// Reads one chunk of a chunked body (its data), `None` at the last chunk.
fn read_chunk<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended"));
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| err(format!("bad chunk size {line:?}")))?;
    if size == 0 {
        return Ok(None);
    }
    let mut data = vec![0u8; size + 2];
    r.read_exact(&mut data)?;
    data.truncate(size);
    Ok(Some(data))
}

/// A whole body, at most 64 MiB.
fn read_body<R: BufRead>(r: &mut R, body: Body) -> io::Result<Vec<u8>> {
    const MAX: usize = 64 << 20;
    match body {
        Body::Length(n) if n > MAX => Err(err("answer over 64 MiB")),
        Body::Length(n) => {
            let mut out = vec![0u8; n];
            r.read_exact(&mut out)?;
            Ok(out)
        }
        Body::Chunked => {
            let mut out = Vec::new();
            while let Some(c) = read_chunk(r)? {
                out.extend_from_slice(&c);
                if out.len() > MAX {
                    return Err(err("answer over 64 MiB"));
                }
            }
            Ok(out)
        }
    }
}

/// Every key under `prefix` and the revision of the store.
pub fn range_prefix(ep: &EtcdEndpoint, prefix: &[u8], timeout: Duration) -> io::Result<(Vec<Kv>, i64)> {
    let body = format!(r#"{{"key":"{}","range_end":"{}"}}"#, b64_encode(prefix), b64_encode(&prefix_end(prefix)));
    let (mut r, b) = post(ep, "/v3/kv/range", &body, timeout)?;
    parse_range(&read_body(&mut r, b)?)
}

/// A watch on every key under a prefix.
pub struct Watch {
    r: BufReader<TcpStream>,
    /// Bytes of the stream not yet cut into lines.
    pending: Vec<u8>,
}

impl Watch {
    /// Watches `prefix` from `start_revision` on.
    pub fn start(ep: &EtcdEndpoint, prefix: &[u8], start_revision: i64, timeout: Duration) -> io::Result<Watch> {
        let body = format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}","start_revision":"{start_revision}"}}}}"#,
            b64_encode(prefix),
            b64_encode(&prefix_end(prefix))
        );
        let (r, b) = post(ep, "/v3/watch", &body, timeout)?;
        if b != Body::Chunked {
            return Err(err(format!("{ep}/v3/watch: the answer is not a stream")));
        }
        Ok(Watch { r, pending: Vec::new() })
    }

    /// The next message, waiting at most `wait` (`Ok(None)`: nothing yet).
    pub fn next(&mut self, wait: Duration) -> io::Result<Option<WatchMsg>> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_watch_line(&line).map(Some);
            }
            self.r.get_ref().set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            match read_chunk(&mut self.r) {
                Ok(Some(data)) => self.pending.extend_from_slice(&data),
                Ok(None) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "watch stream ended")),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    // Nothing within `wait`. (A chunk cut by the timeout is not expected: etcd
                    // writes each message in one chunk, and its size line with it.)
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            if self.pending.len() > 64 << 20 {
                return Err(err("watch message over 64 MiB"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_gateway() {
        // From a real range answer: the key kitex/registry-etcd/echo/127.0.0.1:9001.
        let key = b"kitex/registry-etcd/echo/127.0.0.1:9001";
        assert_eq!(b64_encode(key), "a2l0ZXgvcmVnaXN0cnktZXRjZC9lY2hvLzEyNy4wLjAuMTo5MDAx");
        for n in 0..8 {
            let data: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(97)).collect();
            assert_eq!(b64_decode(&b64_encode(&data)).unwrap(), data);
        }
        assert_eq!(b64_decode("!!"), None);
    }

    #[test]
    fn a_prefix_ends_at_its_next_key() {
        assert_eq!(prefix_end(b"kitex/registry-etcd/echo/"), b"kitex/registry-etcd/echo0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn range_and_watch_answers_as_etcd_3_4_writes_them() {
        let range = br#"{"header":{"cluster_id":"1","member_id":"2","revision":"7","raft_term":"2"},"kvs":[{"key":"a2V5","create_revision":"2","mod_revision":"2","version":"1","value":"dmFs"}],"count":"1"}"#;
        let (kvs, rev) = parse_range(range).unwrap();
        assert_eq!(rev, 7);
        assert_eq!(kvs, vec![Kv { key: b"key".to_vec(), value: b"val".to_vec() }]);
        let empty = br#"{"header":{"revision":"9"}}"#;
        assert_eq!(parse_range(empty).unwrap(), (vec![], 9));
        let created = br#"{"result":{"header":{"revision":"2"},"created":true}}"#;
        assert_eq!(parse_watch_line(created).unwrap(), WatchMsg::Created);
        let put = br#"{"result":{"header":{"revision":"2"},"events":[{"kv":{"key":"a2V5","value":"dmFs"}}]}}"#;
        assert_eq!(
            parse_watch_line(put).unwrap(),
            WatchMsg::Events {
                revision: 2,
                events: vec![Event::Put(Kv { key: b"key".to_vec(), value: b"val".to_vec() })]
            }
        );
        let del = br#"{"result":{"header":{"revision":"3"},"events":[{"type":"DELETE","kv":{"key":"a2V5","mod_revision":"3"}}]}}"#;
        assert_eq!(
            parse_watch_line(del).unwrap(),
            WatchMsg::Events { revision: 3, events: vec![Event::Delete(b"key".to_vec())] }
        );
        let compacted = br#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"5","cancel_reason":"mvcc: required revision has been compacted"}}"#;
        assert!(matches!(parse_watch_line(compacted).unwrap(), WatchMsg::Canceled { compact_revision: 5, .. }));
    }
}
