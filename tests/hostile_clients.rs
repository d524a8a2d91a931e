//! Hostile clients beside well-behaved ones (issue 15, item 3), on both drivers. Sixteen
//! threads open connection after connection to the Thrift and the gRPC listener and send
//! random bytes, valid frames cut short, frames whose heads (lengths, magic, message and
//! frame headers) are mutated, absurd lengths, and HTTP/2 connections whose frames are
//! mutated after a valid preface. Meanwhile a real Apache Thrift client path and a tonic
//! client call through the same proxy and the same upstream connections: they must see no
//! error at all, no worker task may panic, and the process's memory must stay bounded.
//!
//! Mutations stay inside what the proxy reads (frame and message heads, HTTP/2 frames): a
//! payload the proxy forwards untouched is the backend's to judge (docs/reliability.md).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::cluster;
use common::grpc::raw_request;
use common::prom::{get, parse, value};
use common::ttheader::{binary_message, kitex_call};
use ringway::config::Config;
use ringway::control::Server;
use ringway::grpc::h2::frame::{self, settings::Settings};
use ringway_bench::grpc_echo::EchoClient;

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn framed(m: &[u8]) -> Vec<u8> {
    [&(m.len() as u32).to_be_bytes()[..], m].concat()
}

/// What a hostile Thrift connection sends: one of several kinds of bad input.
fn thrift_garbage(rng: &mut Rng) -> Vec<u8> {
    let good = match rng.below(3) {
        0 => framed(&binary_message(1, "echo", rng.next() as i32, 1, "hostile")),
        1 => kitex_call(rng.next() as i32, "echo.svc", "echo", "kitex", None, false),
        _ => framed(&binary_message(1, "Echo:echo", 5, 1, "mux")),
    };
    match rng.below(5) {
        // Random bytes.
        0 => (0..rng.below(512) + 1).map(|_| rng.next() as u8).collect(),
        // A valid frame cut short.
        1 => good[..rng.below(good.len())].to_vec(),
        // The head mutated: the length, the version or magic, the name length and the
        // name's first bytes, or TTHeader's flags, seqID and header size.
        2 => {
            let mut b = good;
            for _ in 0..rng.below(4) + 1 {
                let at = rng.below(14);
                b[at] = rng.next() as u8;
            }
            b
        }
        // An absurd length prefix, then a little.
        3 => [&(rng.next() as u32 | 0x8000_0000).to_be_bytes()[..], b"\x80\x01\x00\x01"].concat(),
        // A valid frame, then garbage after it.
        _ => [good, (0..64).map(|_| rng.next() as u8).collect()].concat(),
    }
}

/// A valid HTTP/2 request from a client, as frames (preface first).
fn h2_request(stream: u32) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(frame::PREFACE);
    frame::settings::encode(&Settings::default(), &mut out);
    out.extend_from_slice(&raw_request(stream, "/ringway.test.Echo/Unary", &[], b"\x00\x00\x00\x00\x03abc"));
    out.to_vec()
}

fn h2_garbage(rng: &mut Rng) -> Vec<u8> {
    let good = h2_request(1 + 2 * rng.below(8) as u32);
    let p = frame::PREFACE.len();
    match rng.below(4) {
        0 => [&good[..p], &(0..rng.below(256) + 1).map(|_| rng.next() as u8).collect::<Vec<u8>>()[..]].concat(),
        1 => good[..p + rng.below(good.len() - p)].to_vec(),
        2 => {
            let mut b = good;
            for _ in 0..rng.below(6) + 1 {
                let at = p + rng.below(b.len() - p);
                b[at] = rng.next() as u8;
            }
            b
        }
        _ => (0..rng.below(64) + 1).map(|_| rng.next() as u8).collect(),
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn hostile(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>, h2: bool, sent: Arc<AtomicUsize>) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else { continue };
        s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        for _ in 0..rng.below(4) + 1 {
            let bytes = if h2 { h2_garbage(&mut rng) } else { thrift_garbage(&mut rng) };
            if s.write_all(&bytes).is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
        // Sometimes read what comes back, sometimes just go (reset or close).
        if rng.below(2) == 0 {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
        }
        if rng.below(3) == 0 {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    }
}

both_drivers! {
    fn well_behaved_clients_see_no_error_beside_hostile_ones(driver: &str) {
        // The Thrift backend answers every frame it can cut, whatever its payload: a frame
        // the proxy accepts goes to it whole (the proxy does not decode payloads), and what
        // a backend does with a payload mutated past the head is its own business; here the
        // proxy is under test. The good clients are a raw Framed binary client and tonic.
        let backend = ringway_bench::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
        let echo = ringway_bench::grpc_echo::EchoServer::start("127.0.0.1:0", 1).unwrap();
        let toml = format!(
            "[runtime]\nworkers = 2\ndriver = {driver:?}\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"thrift\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
             routes = [{{ cluster = \"t\" }}]\n\
             [[listener]]\nname = \"grpc\"\nprotocol = \"grpc\"\naddress = \"127.0.0.1:0\"\n\
             routes = [{{ cluster = \"g\" }}]\n{}\n{}",
            cluster("t", &[backend.addr.to_string()], "max_connections_per_endpoint = 1"),
            cluster("g", &[echo.addr.to_string()], "max_connections_per_endpoint = 1"),
        );
        let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
        let (thrift, grpc) = (server.local_addr("thrift").unwrap(), server.local_addr("grpc").unwrap());
        let admin = server.admin_addr().unwrap();
        let good_grpc = EchoClient::connect(grpc).unwrap();
        let mut good_thrift = TcpStream::connect(thrift).unwrap();
        good_thrift.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut call_thrift = |seq: i32| -> u8 {
            good_thrift.write_all(&framed(&binary_message(1, "echo", seq, 1, "good"))).unwrap();
            let mut len = [0u8; 4];
            good_thrift.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            good_thrift.read_exact(&mut body).unwrap();
            if body[3] != 2 {
                eprintln!("call {seq}: {}", String::from_utf8_lossy(&body));
            }
            body[3]
        };
        // Warm up, then take the memory baseline.
        for i in 0..50 {
            assert_eq!(call_thrift(i), 2);
            good_grpc.unary("Unary", Bytes::from_static(b"warm"), &[], Some(Duration::from_secs(5))).unwrap();
        }
        let before = rss_kib();

        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|i| {
                let (stop, sent) = (stop.clone(), sent.clone());
                let addr = if i % 2 == 0 { thrift } else { grpc };
                std::thread::spawn(move || hostile(addr, 0x9e37_79b9_7f4a_7c15 ^ (i + 1), stop, i % 2 == 1, sent))
            })
            .collect();
        let until = Instant::now() + Duration::from_secs(4);
        let (mut calls, mut seq) = (0, 1000);
        while Instant::now() < until {
            seq += 1;
            assert_eq!(call_thrift(seq), 2, "a good Thrift call failed beside hostile clients");
            let msg = Bytes::from(format!("good {seq}"));
            let (_, reply, _) = good_grpc
                .unary("Unary", msg.clone(), &[], Some(Duration::from_secs(5)))
                .unwrap_or_else(|e| panic!("a good gRPC call failed beside hostile clients: {e}"));
            assert_eq!(reply, msg);
            calls += 2;
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let sent = sent.load(Ordering::Relaxed);
        let samples = parse(&get(admin, "/metrics").2);
        assert_eq!(value(&samples, "ringway_task_panics_total", &[]), 0.0, "no connection task panicked");
        let refused = value(&samples, "ringway_downstream_connections_closed_total", &[("reason", "protocol_error")]);
        // Both workers still serve, and memory came back to bounded.
        for i in 0..50 {
            assert_eq!(call_thrift(100_000 + i), 2);
            good_grpc.unary("Unary", Bytes::from_static(b"after"), &[], Some(Duration::from_secs(5))).unwrap();
        }
        let grown = rss_kib().saturating_sub(before);
        eprintln!("{sent} hostile sends, {refused} connections closed as protocol errors, {calls} good calls, RSS +{grown} KiB");
        assert!(sent > 1000 && refused > 100.0, "the hostile clients ran: {sent} sends, {refused} refused");
        assert!(calls > 50, "the good clients ran: {calls}");
        assert!(grown < 64 << 10, "memory bounded: RSS grew {grown} KiB");
        server.shutdown();
    }
}
