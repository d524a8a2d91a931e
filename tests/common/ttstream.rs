//! TTHeader Streaming (ref §3) for tests: frames built on the §2 TTHeader builder
//! (`ttheader::frame`, itself checked against the §2.7 example) with FLAGS 0x0002, protocol id
//! 0x10 and int keys 27 (frame type) and 9 (method), as Kitex's `EncodeFrame` writes them; a
//! full decoder of the header; and a backend that behaves as ref §3.2 describes: it creates a
//! stream on any Header frame, answers by method, ends streams with a Trailer (with `biz-*`
//! keys for business errors), answers a Rst as Kitex does (a late Header and a Trailer with an
//! EXCEPTION) and drops frames for ids it does not know.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ttheader::{frame, read_frame};

pub const META: &str = "1";
pub const HEADER: &str = "2";
pub const DATA: &str = "3";
pub const TRAILER: &str = "4";
pub const RST: &str = "5";

/// One ttstream frame.
pub fn ts_frame(sid: i32, ftype: &str, method: &str, strs: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut f = frame(sid, strs, &[(27, ftype), (9, method)], payload);
    f[7] |= 0x02; // FLAGS: HeaderFlagsStreaming
    f[14] = 0x10; // PROTOCOL ID: ThriftStruct
    f
}

/// A strict-binary EXCEPTION message: `{1: string message, 2: i32 type}`.
pub fn exception_payload(method: &str, seq: i32, type_id: i32, message: &str) -> Vec<u8> {
    let mut m = vec![0x80, 0x01, 0x00, 0x03];
    m.extend_from_slice(&(method.len() as u32).to_be_bytes());
    m.extend_from_slice(method.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&[11, 0, 1]);
    m.extend_from_slice(&(message.len() as u32).to_be_bytes());
    m.extend_from_slice(message.as_bytes());
    m.extend_from_slice(&[8, 0, 2]);
    m.extend_from_slice(&type_id.to_be_bytes());
    m.push(0);
    m
}

/// A decoded ttstream frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsFrame {
    pub flags: u16,
    pub sid: i32,
    pub protocol: u8,
    pub ftype: String,
    pub method: String,
    pub strs: BTreeMap<String, String>,
    pub ints: BTreeMap<u16, String>,
    pub payload: Vec<u8>,
}

/// The EXCEPTION a Trailer or Rst carries: its seq, type id and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub name: String,
    pub seq: i32,
    pub type_id: i32,
    pub message: String,
}

impl TsFrame {
    pub fn exception(&self) -> Option<Exception> {
        let p = &self.payload;
        if p.len() < 12 || p[..4] != [0x80, 0x01, 0x00, 0x03] {
            return None;
        }
        let n = u32::from_be_bytes(p[4..8].try_into().unwrap()) as usize;
        let name = String::from_utf8_lossy(&p[8..8 + n]).to_string();
        let seq = i32::from_be_bytes(p[8 + n..12 + n].try_into().unwrap());
        let mut at = 12 + n;
        let (mut type_id, mut message) = (0, String::new());
        while p[at] != 0 {
            let ty = p[at];
            at += 3;
            match ty {
                11 => {
                    let l = u32::from_be_bytes(p[at..at + 4].try_into().unwrap()) as usize;
                    message = String::from_utf8_lossy(&p[at + 4..at + 4 + l]).to_string();
                    at += 4 + l;
                }
                8 => {
                    type_id = i32::from_be_bytes(p[at..at + 4].try_into().unwrap());
                    at += 4;
                }
                other => panic!("unexpected exception field type {other}"),
            }
        }
        Some(Exception { name, seq, type_id, message })
    }
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

/// Decodes a whole frame (every info block; panics on anything ref §2.3 does not allow).
pub fn parse(f: &[u8]) -> TsFrame {
    assert_eq!(&f[4..6], &[0x10, 0x00], "TTHeader magic");
    let flags = u16_at(f, 6) as u16;
    let sid = i32::from_be_bytes(f[8..12].try_into().unwrap());
    let hs = u16_at(f, 12) * 4;
    let h = &f[14..14 + hs];
    let (protocol, ntrans) = (h[0], h[1] as usize);
    let mut i = 2 + ntrans;
    let (mut strs, mut ints) = (BTreeMap::new(), BTreeMap::new());
    while i < h.len() {
        let id = h[i];
        i += 1;
        match id {
            0 => {}
            1 => {
                let n = u16_at(h, i);
                i += 2;
                for _ in 0..n {
                    let kl = u16_at(h, i);
                    let k = String::from_utf8_lossy(&h[i + 2..i + 2 + kl]).to_string();
                    i += 2 + kl;
                    let vl = u16_at(h, i);
                    let v = String::from_utf8_lossy(&h[i + 2..i + 2 + vl]).to_string();
                    i += 2 + vl;
                    strs.insert(k, v);
                }
            }
            0x10 => {
                let n = u16_at(h, i);
                i += 2;
                for _ in 0..n {
                    let k = u16_at(h, i) as u16;
                    let vl = u16_at(h, i + 2);
                    ints.insert(k, String::from_utf8_lossy(&h[i + 4..i + 4 + vl]).to_string());
                    i += 4 + vl;
                }
            }
            other => panic!("info id {other:#x}"),
        }
    }
    TsFrame {
        flags,
        sid,
        protocol,
        ftype: ints.get(&27).cloned().unwrap_or_default(),
        method: ints.get(&9).cloned().unwrap_or_default(),
        strs,
        ints,
        payload: f[14 + hs..].to_vec(),
    }
}

/// A client connection: frames out, frames in.
pub struct Client {
    pub s: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s }
    }

    pub fn send(&mut self, f: &[u8]) {
        self.s.write_all(f).unwrap();
    }

    /// Opens stream `sid`: a Header frame with `isn` and `strs`.
    pub fn open(&mut self, sid: i32, isn: &str, method: &str, strs: &[(&str, &str)]) {
        let mut all = vec![("isn", isn)];
        all.extend_from_slice(strs);
        self.send(&ts_frame(sid, HEADER, method, &all, b""));
    }

    pub fn data(&mut self, sid: i32, method: &str, payload: &[u8]) {
        self.send(&ts_frame(sid, DATA, method, &[], payload));
    }

    pub fn half_close(&mut self, sid: i32, method: &str) {
        self.send(&ts_frame(sid, TRAILER, method, &[], b""));
    }

    pub fn recv(&mut self) -> TsFrame {
        parse(&read_frame(&mut self.s).expect("a frame from the proxy"))
    }

    /// Frames until every stream in `sids` has ended (Trailer or Rst), by stream.
    pub fn recv_until_ended(&mut self, sids: &[i32]) -> HashMap<i32, Vec<TsFrame>> {
        let mut open: HashSet<i32> = sids.iter().copied().collect();
        let mut got: HashMap<i32, Vec<TsFrame>> = HashMap::new();
        while !open.is_empty() {
            let f = self.recv();
            if f.ftype == TRAILER || f.ftype == RST {
                assert!(open.remove(&f.sid), "an end for stream {} that had ended or never opened: {f:?}", f.sid);
            }
            got.entry(f.sid).or_default().push(f);
        }
        got
    }
}

/// What the backend saw.
#[derive(Default)]
pub struct Seen {
    pub accepted: AtomicUsize,
    pub streams: AtomicUsize,
    pub rsts: AtomicUsize,
    /// Frames for ids the backend did not know (dropped).
    pub unknown: AtomicUsize,
    /// A Header for an id already open on that connection (the proxy must never reuse one).
    pub reused_ids: AtomicUsize,
    /// Frames whose EXCEPTION seq was not their stream id.
    pub seq_mismatches: AtomicUsize,
    /// Payload bytes that came in client Header frames (Kitex's codec allows one).
    pub header_payload_bytes: AtomicUsize,
    /// The string headers of every client Header frame, by method.
    pub headers: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    /// Open connections, so a test can cut them.
    conns: Mutex<Vec<TcpStream>>,
}

/// A ttstream backend behaving as ref §3.2 says a Kitex server does. Methods:
/// - `Echo`: Header back (with the client's string headers and `backend`), every Data
///   echoed, Trailer once the client half-closes;
/// - `ServerStream`: the first Data `n:text` gets n Data frames `text-i`, then a Trailer;
/// - `ClientStream`: Data collected; on the client's Trailer one Data joining them, then a
///   Trailer;
/// - `BizError`: a Trailer with `biz-status` 404, `biz-message` and `biz-extra`;
/// - `Hang`: nothing, ever;
/// - `Flood`: the first Data `n` gets n Data frames of 64 KiB, written from a thread of their
///   own;
/// - `ServerRst`: the stream is reset at once, a Rst carrying an EXCEPTION (12001);
/// - `Die`: the connection is closed at once (a crash).
pub struct Backend {
    pub addr: SocketAddr,
    pub id: String,
    pub seen: Arc<Seen>,
}

impl Backend {
    pub fn start(id: &str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = Backend { addr: l.local_addr().unwrap(), id: id.to_string(), seen: Arc::default() };
        let (seen, id) = (b.seen.clone(), b.id.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                seen.accepted.fetch_add(1, Ordering::SeqCst);
                seen.conns.lock().unwrap().push(s.try_clone().unwrap());
                let (seen, id) = (seen.clone(), id.clone());
                std::thread::spawn(move || serve(s, &seen, &id));
            }
        });
        b
    }

    /// Resets every connection open to it (as a crashing host would).
    pub fn cut_all(&self) {
        for c in self.seen.conns.lock().unwrap().drain(..) {
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

struct Stream {
    method: String,
    collected: Vec<String>,
    first_data: bool,
}

fn serve(s: TcpStream, seen: &Seen, id: &str) {
    let mut rd = s.try_clone().unwrap();
    let wr = Arc::new(Mutex::new(s));
    let send = |f: Vec<u8>| {
        let _ = wr.lock().unwrap().write_all(&f);
    };
    let mut streams: HashMap<i32, Stream> = HashMap::new();
    while let Ok(raw) = read_frame(&mut rd) {
        let f = parse(&raw);
        assert_eq!(f.flags & 0x0002, 0x0002, "every ttstream frame carries the streaming flag");
        if let Some(e) = f.exception() {
            if e.seq != f.sid {
                seen.seq_mismatches.fetch_add(1, Ordering::SeqCst);
            }
        }
        let m = f.method.clone();
        if f.ftype == HEADER {
            if streams.contains_key(&f.sid) {
                seen.reused_ids.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            seen.streams.fetch_add(1, Ordering::SeqCst);
            seen.header_payload_bytes.fetch_add(f.payload.len(), Ordering::SeqCst);
            seen.headers.lock().unwrap().push((m.clone(), f.strs.clone()));
            streams.insert(f.sid, Stream { method: m.clone(), collected: Vec::new(), first_data: true });
            match m.as_str() {
                "Die" => {
                    let _ = socket2::SockRef::from(&rd).set_linger(Some(Duration::ZERO));
                    return;
                }
                "Hang" => {}
                "ServerRst" => {
                    let ex = exception_payload(&m, f.sid, 12001, "handler gave up");
                    send(ts_frame(f.sid, RST, &m, &[("ttscp", "backend")], &ex));
                    streams.remove(&f.sid);
                }
                "BizError" => {
                    let strs =
                        [("biz-status", "404"), ("biz-message", "no such thing"), ("biz-extra", "{\"k\":\"v\"}")];
                    send(ts_frame(f.sid, TRAILER, &m, &strs, b""));
                    streams.remove(&f.sid);
                }
                _ => {
                    let mut strs: Vec<(&str, &str)> = f.strs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    strs.push(("backend", id));
                    send(ts_frame(f.sid, HEADER, &m, &strs, b""));
                }
            }
            continue;
        }
        let Some(st) = streams.get_mut(&f.sid) else {
            seen.unknown.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        match f.ftype.as_str() {
            DATA => {
                let text = String::from_utf8_lossy(&f.payload).to_string();
                let first = std::mem::replace(&mut st.first_data, false);
                match st.method.as_str() {
                    "ServerStream" if first => {
                        let (n, text) = text.split_once(':').unwrap();
                        let n: usize = n.parse().unwrap();
                        let mut out = Vec::new();
                        for i in 0..n {
                            out.extend(ts_frame(f.sid, DATA, &m, &[], format!("{text}-{i}").as_bytes()));
                        }
                        out.extend(ts_frame(f.sid, TRAILER, &m, &[], b""));
                        send(out);
                    }
                    "ClientStream" => st.collected.push(text),
                    "Flood" if first => {
                        let n: usize = text.parse().unwrap();
                        let (wr, sid, m) = (wr.clone(), f.sid, m.clone());
                        std::thread::spawn(move || {
                            let chunk = ts_frame(sid, DATA, &m, &[], &vec![b'x'; 64 * 1024]);
                            for _ in 0..n {
                                if wr.lock().unwrap().write_all(&chunk).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    "Flood" | "ServerStream" => {}
                    _ => send(ts_frame(f.sid, DATA, &m, &[], &f.payload)),
                }
            }
            TRAILER => {
                let mut out = Vec::new();
                if st.method == "ClientStream" {
                    out.extend(ts_frame(f.sid, DATA, &m, &[], st.collected.join(",").as_bytes()));
                }
                if st.method != "ServerStream" {
                    out.extend(ts_frame(f.sid, TRAILER, &m, &[("backend", id)], b""));
                }
                streams.remove(&f.sid);
                send(out);
            }
            RST => {
                seen.rsts.fetch_add(1, Ordering::SeqCst);
                streams.remove(&f.sid);
                // As Kitex: the handler still ends the stream, a late Header and a Trailer
                // carrying an EXCEPTION of the Rst's type.
                let type_id = f.exception().map_or(13, |e| e.type_id);
                let mut out = ts_frame(f.sid, HEADER, &m, &[], b"");
                let ex = exception_payload(&m, f.sid, type_id, "canceled by downstream");
                out.extend(ts_frame(f.sid, TRAILER, &m, &[], &ex));
                send(out);
            }
            _ => {}
        }
    }
}
