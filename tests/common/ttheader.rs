//! Kitex TTHeader frames built from the byte layout of ref §2 (the builder is checked against
//! the §2.7 example in the tests), and a backend that behaves like a Kitex server: it echoes
//! the payload seqID into both the header and the payload, and answers out of order.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A strict-binary Thrift message whose args struct is `{1: string text}`; an empty `text`
/// gives an empty struct (just STOP), as in ref §2.7.
pub fn binary_message(msg_type: u8, name: &str, seq: i32, field_id: i16, text: &str) -> Vec<u8> {
    let mut m = vec![0x80, 0x01, 0x00, msg_type];
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    if !text.is_empty() {
        m.push(11);
        m.extend_from_slice(&field_id.to_be_bytes());
        m.extend_from_slice(&(text.len() as u32).to_be_bytes());
        m.extend_from_slice(text.as_bytes());
    }
    m.push(0);
    m
}

/// A TTHeader frame per ref Appendix A: u8 protocol, u8 0 transforms, optional string KV
/// block (0x01), optional int KV block (0x10), zero padding to 4 bytes.
pub fn frame(seq: i32, str_kv: &[(&str, &str)], int_kv: &[(u16, &str)], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8, 0u8];
    if !str_kv.is_empty() {
        body.push(0x01);
        body.extend_from_slice(&(str_kv.len() as u16).to_be_bytes());
        for (k, v) in str_kv {
            body.extend_from_slice(&(k.len() as u16).to_be_bytes());
            body.extend_from_slice(k.as_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v.as_bytes());
        }
    }
    if !int_kv.is_empty() {
        body.push(0x10);
        body.extend_from_slice(&(int_kv.len() as u16).to_be_bytes());
        for (k, v) in int_kv {
            body.extend_from_slice(&k.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v.as_bytes());
        }
    }
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut meta = Vec::new();
    meta.extend_from_slice(&0x1000u16.to_be_bytes());
    meta.extend_from_slice(&0u16.to_be_bytes());
    meta.extend_from_slice(&seq.to_be_bytes());
    meta.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
    let mut f = ((meta.len() + body.len() + payload.len()) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&meta);
    f.extend_from_slice(&body);
    f.extend_from_slice(payload);
    f
}

/// A Kitex-style CALL: `isn`, ToMethod (9) and ToService (6), optional RPCTimeout (12).
pub fn kitex_call(
    seq: i32,
    isn: &str,
    method: &str,
    text: &str,
    rpc_timeout_ms: Option<u64>,
    inner_framed: bool,
) -> Vec<u8> {
    let mut payload = binary_message(1, method, seq, 1, text);
    if inner_framed {
        let mut p = (payload.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&payload);
        payload = p;
    }
    let to = rpc_timeout_ms.map(|t| t.to_string());
    let mut ints = vec![(9u16, method), (6u16, "echo")];
    if let Some(t) = &to {
        ints.push((12, t.as_str()));
    }
    frame(seq, &[("isn", isn)], &ints, &payload)
}

/// A decoded reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub header_seq: i32,
    pub msg_type: u8,
    pub name: String,
    pub payload_seq: i32,
    /// REPLY: the success string; EXCEPTION: the message.
    pub text: String,
    /// EXCEPTION: the TApplicationException type.
    pub exception_type: Option<i32>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Decodes a TTHeader frame carrying a strict-binary message (optionally inner-framed).
pub fn decode(f: &[u8]) -> Decoded {
    assert_eq!(&f[4..6], &[0x10, 0x00], "TTHeader magic");
    let header_seq = u32_at(f, 8) as i32;
    let hs = u16::from_be_bytes([f[12], f[13]]) as usize * 4;
    let mut p = 14 + hs;
    if f[p..p + 2] != [0x80, 0x01] {
        p += 4;
    }
    let msg_type = f[p + 3];
    let n = u32_at(f, p + 4) as usize;
    let name = String::from_utf8(f[p + 8..p + 8 + n].to_vec()).unwrap();
    let payload_seq = u32_at(f, p + 8 + n) as i32;
    let mut at = p + 12 + n;
    let (mut text, mut exception_type) = (String::new(), None);
    while f[at] != 0 {
        let (ty, _id) = (f[at], i16::from_be_bytes([f[at + 1], f[at + 2]]));
        at += 3;
        match ty {
            11 => {
                let l = u32_at(f, at) as usize;
                text = String::from_utf8_lossy(&f[at + 4..at + 4 + l]).to_string();
                at += 4 + l;
            }
            8 => {
                exception_type = Some(u32_at(f, at) as i32);
                at += 4;
            }
            other => panic!("unexpected field type {other}"),
        }
    }
    Decoded { header_seq, msg_type, name, payload_seq, text, exception_type }
}

/// Reads one length-prefixed frame.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut f = len.to_vec();
    f.resize(4 + u32::from_be_bytes(len) as usize, 0);
    s.read_exact(&mut f[4..])?;
    Ok(f)
}

/// A Kitex-like TTHeader echo server: replies carry the payload seqID in both places, and a
/// batch of requests that arrived together is answered in reverse order.
pub struct KitexBackend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// Most connections open at once.
    pub peak: Arc<AtomicUsize>,
    /// Requests whose header seq did not equal their payload seq (the proxy must patch both).
    pub seq_mismatches: Arc<AtomicUsize>,
}

impl KitexBackend {
    pub fn start() -> KitexBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = KitexBackend {
            addr: l.local_addr().unwrap(),
            accepted: Arc::default(),
            peak: Arc::default(),
            seq_mismatches: Arc::default(),
        };
        let (accepted, peak, mismatches) = (b.accepted.clone(), b.peak.clone(), b.seq_mismatches.clone());
        let open = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                peak.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let (mismatches, open) = (mismatches.clone(), open.clone());
                std::thread::spawn(move || {
                    serve(s, &mismatches);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        b
    }
}

/// A byte stream the backend can serve: TCP or unix.
pub trait Duplex: Read + Write + Send + 'static + Sized {
    fn dup(&self) -> Self;
}

impl Duplex for TcpStream {
    fn dup(&self) -> Self {
        self.try_clone().unwrap()
    }
}

impl Duplex for std::os::unix::net::UnixStream {
    fn dup(&self) -> Self {
        self.try_clone().unwrap()
    }
}

/// The same backend on a unix socket; returns its accepted-connection counter.
pub fn start_unix_backend(path: &std::path::Path) -> Arc<AtomicUsize> {
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(s, &AtomicUsize::new(0)));
        }
    });
    accepted
}

fn serve<S: Duplex>(mut s: S, mismatches: &AtomicUsize) {
    let writer = Arc::new(std::sync::Mutex::new(s.dup()));
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut replies = Vec::new();
        while buf.len() >= 4 && buf.len() >= 4 + u32_at(&buf, 0) as usize {
            let len = 4 + u32_at(&buf, 0) as usize;
            let req: Vec<u8> = buf.drain(..len).collect();
            let d = decode(&req);
            if d.header_seq != d.payload_seq {
                mismatches.fetch_add(1, Ordering::SeqCst);
            }
            let inner_framed = req[14 + u16::from_be_bytes([req[12], req[13]]) as usize * 4] != 0x80;
            if d.msg_type == 4 {
                continue;
            }
            let text = if d.name.starts_with("big") { "b".repeat(2 << 20) } else { format!("{}:{}", d.name, d.text) };
            let mut payload = binary_message(2, &d.name, d.payload_seq, 0, &text);
            if inner_framed {
                let mut p = (payload.len() as u32).to_be_bytes().to_vec();
                p.extend_from_slice(&payload);
                payload = p;
            }
            // Kitex: the reply header carries the payload seqID.
            let reply = frame(d.payload_seq, &[], &[], &payload);
            if d.name.starts_with("slow") {
                // Answered later from another thread; the connection keeps serving meanwhile.
                let w = writer.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    let _ = w.lock().unwrap().write_all(&reply);
                });
                continue;
            }
            replies.push(reply);
        }
        replies.reverse();
        let out: Vec<u8> = replies.concat();
        if !out.is_empty() && writer.lock().unwrap().write_all(&out).is_err() {
            return;
        }
    }
}
