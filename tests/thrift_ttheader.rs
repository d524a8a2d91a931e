//! Kitex TTHeader through ringway: frames built from the byte layout of ref §2 (checked
//! against the §2.7 example), a backend that echoes the payload seqID into both places as
//! Kitex does and answers out of order.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::ttheader::{decode, kitex_call, read_frame, KitexBackend};
use common::{cluster, Proxy};

#[test]
fn the_test_builder_reproduces_the_reference_example() {
    // ref §2.7: CALL "ping", seq 7, isn=Echo, ToMethod=ping, ToService=echo, empty args.
    let expected: &[u8] = &[
        0x00, 0x00, 0x00, 0x3f, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x09, 0x00, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x03, 0x69, 0x73, 0x6e, 0x00, 0x04, 0x45, 0x63, 0x68, 0x6f, 0x10, 0x00, 0x02, 0x00, 0x09, 0x00,
        0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x06, 0x00, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x00, 0x80, 0x01, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x04, 0x70, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x00,
    ];
    assert_eq!(kitex_call(7, "Echo", "ping", "", None, false), expected);
}

/// Sends `n` pipelined TTHeader calls and checks every reply against its request, in both
/// the header seqID and the payload seqID. Returns the replies checked.
fn burst(s: &mut TcpStream, tag: &str, first_seq: i32, n: i32, inner_framed: bool) -> usize {
    let mut want = HashMap::new();
    let mut out = Vec::new();
    for k in 0..n {
        let seq = first_seq + k;
        let text = format!("{tag}-{seq}");
        out.extend(kitex_call(seq, "Echo", "ping", &text, None, inner_framed));
        want.insert(seq, format!("ping:{text}"));
    }
    s.write_all(&out).unwrap();
    for _ in 0..n {
        let d = decode(&read_frame(s).unwrap());
        assert_eq!(d.msg_type, 2, "{tag}: REPLY, got {d:?}");
        assert_eq!(d.header_seq, d.payload_seq, "{tag}: header seq restored too");
        let expected = want.remove(&d.payload_seq).unwrap_or_else(|| panic!("{tag}: unexpected seq {}", d.payload_seq));
        assert_eq!(d.text, expected);
    }
    n as usize
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

both_drivers! {
    fn unix_socket_listener_and_endpoint(driver: &str) {
        use std::os::unix::net::UnixStream;
        let dir = std::env::temp_dir().join(format!("ringway-unix-{driver}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (front, back) = (dir.join("front.sock"), dir.join("back.sock"));
        let accepted = common::ttheader::start_unix_backend(&back);
        let toml = format!(
            "[runtime]\nworkers = 2\ndriver = {driver:?}\ndrain_idle_close = \"50ms\"\n\
             [[listener]]\nname = \"u\"\naddress = \"unix:{}\"\nroutes = [{{ cluster = \"b\" }}]\n\
             [[cluster]]\nname = \"b\"\nendpoints = [\"unix:{}\"]\n",
            front.display(), back.display());
        let server = ringway::control::Server::start(ringway::config::Config::parse(&toml).unwrap()).unwrap();
        for c in 0..3 {
            let mut s = UnixStream::connect(&front).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(&kitex_call(c + 1, "Echo", "ping", "via-unix", None, false)).unwrap();
            let mut len = [0u8; 4];
            std::io::Read::read_exact(&mut s, &mut len).unwrap();
            let mut f = len.to_vec();
            f.resize(4 + u32::from_be_bytes(len) as usize, 0);
            std::io::Read::read_exact(&mut s, &mut f[4..]).unwrap();
            let d = decode(&f);
            assert_eq!((d.msg_type, d.payload_seq, d.text.as_str()), (2, c + 1, "ping:via-unix"));
        }
        assert!(accepted.load(Ordering::SeqCst) >= 1);
        server.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }

    fn kitex_clients_share_upstream_connections_with_out_of_order_replies(driver: &str) {
        let backend = KitexBackend::start();
        let proxy = Proxy::start(driver, r#"{ service = "Echo", cluster = "kitex" }"#,
            &cluster("kitex", &[backend.addr.to_string()], "max_connections_per_endpoint = 2"));
        let addr = proxy.addr;
        let threads: Vec<_> = (0..16)
            .map(|c| std::thread::spawn(move || {
                let mut s = connect(addr);
                (0..10).map(|b| burst(&mut s, &format!("c{c}"), 1 + b * 8, 8, c % 2 == 1)).sum::<usize>()
            }))
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 16 * 10 * 8);
        assert_eq!(backend.seq_mismatches.load(Ordering::SeqCst), 0, "proxy patched header and payload seq alike");
        // TTHeader and TTHeaderFramed are separate dialects (pools), but the limit counts every
        // connection to the endpoint: at most 2 per worker open at once.
        assert!(backend.peak.load(Ordering::SeqCst) <= 4, "peak {}", backend.peak.load(Ordering::SeqCst));
    }

    fn a_timeout_fails_one_request_and_spares_the_others_on_the_same_connection(driver: &str) {
        let backend = KitexBackend::start();
        // One worker, one upstream connection: everything below shares it.
        let proxy = Proxy::start_with(driver, 1, r#"{ cluster = "kitex" }"#,
            &cluster("kitex", &[backend.addr.to_string()], "max_connections_per_endpoint = 1\nrequest_timeout = \"5s\""));
        let mut slow = connect(proxy.addr);
        // The TTHeader RPCTimeout key (100 ms) is below request_timeout, so it wins.
        slow.write_all(&kitex_call(41, "Echo", "slowPing", "z", Some(100), false)).unwrap();
        let addr = proxy.addr;
        let others: Vec<_> = (0..4).map(|c| std::thread::spawn(move || burst(&mut connect(addr), &format!("o{c}"), 1, 16, false))).collect();
        let started = Instant::now();
        let d = decode(&read_frame(&mut slow).unwrap());
        let waited = started.elapsed();
        assert_eq!((d.msg_type, d.exception_type), (3, Some(6)), "INTERNAL_ERROR exception, got {d:?}");
        assert_eq!((d.header_seq, d.payload_seq, d.name.as_str()), (41, 41, "slowPing"));
        assert!(d.text.contains("timed out"), "{}", d.text);
        assert!(waited < Duration::from_millis(280), "RPCTimeout honoured ({waited:?})");
        for t in others {
            assert_eq!(t.join().unwrap(), 16);
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "all on one upstream connection");
        // The late reply (300 ms) is dropped; the connection still answers correctly.
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(burst(&mut slow, "after", 100, 2, false), 2);
        let stats = proxy.stop();
        assert_eq!((stats.timeouts, stats.protocols.thrift.late_replies), (1, 1));
    }

    fn pending_requests_per_client_connection_are_bounded(driver: &str) {
        let backend = KitexBackend::start();
        let proxy = Proxy::start_full(driver, 1, "max_pending_requests = 2", r#"{ cluster = "kitex" }"#,
            &cluster("kitex", &[backend.addr.to_string()], ""));
        let mut s = connect(proxy.addr);
        // Six slow calls pipelined at once; the backend answers each after 300 ms, all in
        // parallel. With at most 2 in flight the proxy needs three rounds.
        let started = Instant::now();
        let out: Vec<u8> = (1..=6).flat_map(|seq| kitex_call(seq, "Echo", "slowPing", "p", None, false)).collect();
        s.write_all(&out).unwrap();
        let mut seqs: Vec<i32> = (0..6).map(|_| decode(&read_frame(&mut s).unwrap())).map(|d| {
            assert_eq!(d.msg_type, 2, "{d:?}");
            d.payload_seq
        }).collect();
        seqs.sort();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
        assert!(started.elapsed() >= Duration::from_millis(880), "only 2 in flight at a time ({:?})", started.elapsed());
    }

    fn an_oversized_reply_fails_its_own_request_only(driver: &str) {
        let backend = KitexBackend::start();
        let proxy = Proxy::start_with(driver, 1, r#"{ cluster = "kitex" }"#,
            &cluster("kitex", &[backend.addr.to_string()], "max_connections_per_endpoint = 1\nmax_frame_size = \"1MiB\""));
        let mut a = connect(proxy.addr);
        let addr = proxy.addr;
        let other = std::thread::spawn(move || {
            let mut b = connect(addr);
            (0..20).map(|k| burst(&mut b, "b", 1 + k * 4, 4, false)).sum::<usize>()
        });
        a.write_all(&kitex_call(5, "Echo", "bigPing", "x", None, false)).unwrap();
        let d = decode(&read_frame(&mut a).unwrap());
        assert_eq!((d.msg_type, d.exception_type, d.payload_seq), (3, Some(6), 5), "{d:?}");
        assert!(d.text.contains("max_frame_size"), "{}", d.text);
        assert_eq!(other.join().unwrap(), 80);
        assert_eq!(burst(&mut a, "a", 6, 2, false), 2);
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1, "the shared upstream connection survived");
    }

    fn routes_match_the_ttheader_service_name(driver: &str) {
        let (a, b) = (KitexBackend::start(), KitexBackend::start());
        let proxy = Proxy::start(driver,
            r#"{ service = "Echo", method = "ping", cluster = "a" }, { service = "echo", method = "other", cluster = "a" }, { cluster = "b" }"#,
            &format!("{}{}", cluster("a", &[a.addr.to_string()], ""), cluster("b", &[b.addr.to_string()], "")));
        let mut s = connect(proxy.addr);
        let mut call = |isn: &str, method: &str, seq: i32| {
            s.write_all(&kitex_call(seq, isn, method, "t", None, false)).unwrap();
            let d = decode(&read_frame(&mut s).unwrap());
            assert_eq!((d.msg_type, d.payload_seq), (2, seq));
        };
        call("Echo", "ping", 1); // isn matches → a
        call("Other", "other", 2); // ToService "echo" matches → a
        call("Other", "ping", 3); // → b
        assert_eq!(a.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
    }

    fn unknown_method_answers_in_ttheader(driver: &str) {
        let backend = KitexBackend::start();
        let proxy = Proxy::start(driver, r#"{ method = "ping", cluster = "kitex" }"#, &cluster("kitex", &[backend.addr.to_string()], ""));
        let mut s = connect(proxy.addr);
        s.write_all(&kitex_call(-3, "Echo", "pong", "", None, true)).unwrap();
        let d = decode(&read_frame(&mut s).unwrap());
        assert_eq!((d.msg_type, d.exception_type, d.header_seq, d.payload_seq), (3, Some(1), -3, -3));
        assert_eq!(d.name, "pong");
        assert_eq!(burst(&mut s, "after", 5, 1, true), 1);
    }
}

/// Runs the Kitex Protobuf client (`tests/py/kitex_protobuf.py`, on Google's `protobuf`)
/// once against `port` and returns its verdict.
fn kitex_protobuf_call(port: u16, transport: &str, method: &str) -> serde_json::Value {
    let out = std::process::Command::new("timeout")
        .args(["30", "python3", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/kitex_protobuf.py")])
        .args(["--port", &port.to_string(), "--transport", transport, "--method", method, "--seq", "42"])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

/// Errors the proxy makes for a Kitex Protobuf client are written in Kitex Protobuf (the
/// `0x9001` envelope with a protobuf `ErrorProto`), not as Thrift exceptions it cannot read.
#[test]
fn kitex_protobuf_clients_get_errors_in_their_own_protocol() {
    let refusing = common::Refusing::new();
    let dead = refusing.addr;
    let proxy = Proxy::start_with(
        "epoll",
        1,
        r#"{ method = "Dead", cluster = "dead" }"#,
        &cluster("dead", &[dead.to_string()], "connect_timeout = \"500ms\"\nretries = 0"),
    );
    let port = proxy.addr.port();
    for transport in ["framed", "ttheader"] {
        let v = kitex_protobuf_call(port, transport, "Nope");
        assert_eq!(v["version"], 0x9001, "{transport}: {v}");
        assert_eq!(v["type"], 3, "{transport}: EXCEPTION: {v}");
        assert_eq!((v["method"].as_str(), v["seq"].as_i64()), (Some("Nope"), Some(42)), "{v}");
        assert_eq!(v["type_id"], 1, "{transport}: UNKNOWN_METHOD as ErrorProto.TypeID: {v}");
        assert!(v["message"].as_str().unwrap().contains("no route"), "{v}");
        if transport == "ttheader" {
            assert_eq!(v["header_seq"], 42, "{v}");
        }
        let v = kitex_protobuf_call(port, transport, "Dead");
        assert_eq!((v["version"].as_i64(), v["type_id"].as_i64()), (Some(0x9001), Some(6)), "{transport}: {v}");
        assert!(v["message"].as_str().unwrap().contains(&dead.to_string()), "names the endpoint: {v}");
    }
}
