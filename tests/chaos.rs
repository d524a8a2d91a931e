//! Chaos, short forms (issue 15, item 6), on both drivers, while load runs: a backend that
//! answers with garbage, a gRPC backend whose connection is reset in the middle of a stream,
//! and real network faults on a veth pair into a network namespace the test makes itself
//! (root only): the link taken down under load (a black hole: nothing answers, nothing
//! closes), then a token-bucket rate limit (tbf; this kernel has no netem). In each, only the
//! requests on the affected backend fail, each with its protocol's error, and the proxy
//! recovers without a restart. Longer runs: scripts/chaos.sh. The other faults (killed,
//! restarted, slowed, black-holed on loopback) are in tests/upstreams.rs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::prom::{get, parse, value};
use common::ttheader::binary_message;
use common::{cluster, eventually, ChildGuard};
use ringway::config::Config;
use ringway::control::Server;
use ringway_bench::grpc_echo::EchoClient;

fn framed(m: &[u8]) -> Vec<u8> {
    [&(m.len() as u32).to_be_bytes()[..], m].concat()
}

fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&parse(&get(admin, "/metrics").2), name, labels)
}

fn thrift_proxy(driver: &str, endpoints: &[String], extra: &str) -> (Server, SocketAddr, SocketAddr) {
    let toml = format!(
        "[runtime]\nworkers = 1\ndriver = {driver:?}\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"t\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
         routes = [{{ cluster = \"c\" }}]\n{}",
        cluster("c", endpoints, extra)
    );
    let server = Server::start(Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))).unwrap();
    let (addr, admin) = (server.local_addr("t").unwrap(), server.admin_addr().unwrap());
    (server, addr, admin)
}

/// One call on `s`: the reply's message type (2 REPLY, 3 EXCEPTION).
fn call(s: &mut TcpStream, seq: i32) -> u8 {
    s.write_all(&framed(&binary_message(1, "echo", seq, 1, "chaos"))).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    body[3]
}

/// A backend that reads a request and answers with bytes that are no Thrift at all.
fn garbage_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(200) {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 4096];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {
                    // A plausible length, then junk where a message header should be.
                    if c.write_all(b"\x00\x00\x00\x10HTTP/1.1 500 oops").is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

both_drivers! {
    fn a_backend_that_answers_garbage_fails_only_its_requests_and_is_ejected(driver: &str) {
        let good = ringway_bench::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
        let bad = garbage_backend();
        let extra = "lb = \"round_robin\"\noutlier_detection = { consecutive_failures = 1, base_ejection_time = \"30s\" }";
        let (server, addr, admin) = thrift_proxy(driver, &[bad.to_string(), good.addr.to_string()], extra);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut ok, mut failed) = (0, 0);
        for seq in 1..=60 {
            match call(&mut s, seq) {
                2 => ok += 1,
                3 => failed += 1,
                t => panic!("message type {t}"),
            }
        }
        // Round robin sends every other call to the garbage until the connection it broke
        // ejects it; that call gets an EXCEPTION, the rest succeed.
        assert!((1..=2).contains(&failed), "only the calls that met the garbage failed: {failed}");
        assert_eq!(ok + failed, 60);
        let kind = metric(admin, "ringway_proxy_errors_total", &[("kind", "upstream_protocol")])
            + metric(admin, "ringway_proxy_errors_total", &[("kind", "upstream_lost")]);
        assert_eq!(kind, f64::from(failed), "each failure is the upstream's protocol error");
        assert!(metric(admin, "ringway_upstream_ejections_total", &[("endpoint", &bad.to_string())]) >= 1.0);
        for seq in 100..120 {
            assert_eq!(call(&mut s, seq), 2, "after the ejection every call succeeds");
        }
        server.shutdown();
    }

    fn a_grpc_backend_reset_mid_stream_fails_that_stream_only(driver: &str) {
        // Two echo backends; the first is killed while a long server stream runs on it.
        let (victim, victim_addr) = common::bench_echo("grpc");
        let other = ringway_bench::grpc_echo::EchoServer::start("127.0.0.1:0", 1).unwrap();
        let toml = format!(
            "[runtime]\nworkers = 1\ndriver = {driver:?}\n[[listener]]\nname = \"g\"\nprotocol = \"grpc\"\n\
             address = \"127.0.0.1:0\"\nroutes = [{{ cluster = \"c\" }}]\n{}",
            cluster("c", &[victim_addr.to_string(), other.addr.to_string()], "lb = \"round_robin\"")
        );
        let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
        let addr = server.local_addr("g").unwrap();
        let streamer = EchoClient::connect(addr).unwrap();
        let caller = EchoClient::connect(addr).unwrap();
        // Long streams (300 messages 10 ms apart) on both backends, round robin.
        let streams: Vec<_> = (0..2)
            .map(|_| {
                let c = EchoClient::connect(addr).unwrap();
                std::thread::spawn(move || {
                    c.server_stream(
                        Bytes::from_static(b"s"),
                        &[("x-count", "300"), ("x-interval-ms", "10")],
                        Some(Duration::from_secs(30)),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        drop(victim); // killed: its connections are reset mid-stream
        let results: Vec<_> = streams.into_iter().map(|t| t.join().unwrap()).collect();
        let broken: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(broken.len(), 1, "exactly the stream on the killed backend fails: {results:?}");
        assert_eq!(broken[0].code(), tonic::Code::Unavailable, "{:?}", broken[0]);
        assert!(results.iter().any(|r| matches!(r, Ok(m) if m.len() == 300)), "the other stream completes");
        // New calls go on: a failed connect to the dead one is retried on the other.
        for i in 0..20 {
            let msg = Bytes::from(format!("after {i}"));
            let (_, reply, _) = caller.unary("Unary", msg.clone(), &[], Some(Duration::from_secs(5))).unwrap();
            assert_eq!(reply, msg);
        }
        drop(streamer);
        server.shutdown();
    }
}

/// A veth pair into a network namespace of the test's own, with the Thrift echo backend
/// inside it; removed (with the namespace) on drop.
struct NetnsBackend {
    ns: String,
    host_if: String,
    pub addr: SocketAddr,
    _echo: ChildGuard,
}

impl NetnsBackend {
    fn start(tag: u32) -> Option<NetnsBackend> {
        // SAFETY: geteuid takes nothing and returns our effective uid.
        let root = unsafe { libc::geteuid() } == 0;
        let have_ip = Command::new("ip").arg("-V").output().is_ok();
        if !root || !have_ip {
            eprintln!("needs root and iproute2 for a network namespace: skipped (CI runs it)");
            return None;
        }
        let ns = format!("rwchaos{}-{tag}", std::process::id());
        let (host_if, ns_if) = (format!("rwh{tag}{}", std::process::id() % 10000), format!("rwn{tag}"));
        let (host_ip, ns_ip) = (format!("10.231.{tag}.1"), format!("10.231.{tag}.2"));
        let sh = |args: &[&str]| {
            let ok = Command::new(args[0]).args(&args[1..]).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "{args:?} failed");
        };
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        sh(&["ip", "link", "set", &ns_if, "netns", &ns]);
        sh(&["ip", "addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if]);
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"]);
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        let addr: SocketAddr = format!("{ns_ip}:9100").parse().unwrap();
        let echo = ChildGuard(
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(common::bench_bin())
                .args(["echo", "thrift", "--listen"])
                .arg(addr.to_string())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let up = eventually(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "the backend in the namespace listens");
        Some(NetnsBackend { ns, host_if, addr, _echo: echo })
    }

    fn tc(&self, args: &str) {
        let mut cmd = Command::new("tc");
        cmd.args(["qdisc"]).args(args.replace("DEV", &self.host_if).split_whitespace());
        assert!(cmd.status().unwrap().success(), "tc qdisc {args}");
    }

    fn link(&self, up: bool) {
        let st = Command::new("ip").args(["link", "set", &self.host_if, if up { "up" } else { "down" }]).status();
        assert!(st.unwrap().success());
    }
}

impl Drop for NetnsBackend {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn real_network_faults_fail_only_the_affected_backend_and_the_proxy_recovers() {
    let Some(far) = NetnsBackend::start(7) else { return };
    let near = ringway_bench::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
    let extra = "lb = \"round_robin\"\nrequest_timeout = \"500ms\"\n\
                 outlier_detection = { consecutive_failures = 2, base_ejection_time = \"1s\" }";
    let (server, addr, admin) = thrift_proxy("epoll", &[far.addr.to_string(), near.addr.to_string()], extra);
    let far_label = far.addr.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    // Load beside the checks: four clients in a loop, counting what fails.
    let load: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let (mut ok, mut failed, mut seq) = (0u32, 0u32, i * 1_000_000);
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    if call(&mut s, seq) == 2 {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let opened = metric(admin, "ringway_upstream_connections_opened_total", &[("endpoint", &far_label)]);
    assert!(opened >= 1.0, "traffic reaches the backend across the veth");

    // 1. The link goes down under load: nothing answers and nothing closes. The calls in
    // flight there time out (EXCEPTION), it is ejected, the rest go to the near backend.
    far.link(false);
    assert!(
        eventually(Duration::from_secs(5), || metric(
            admin,
            "ringway_upstream_ejections_total",
            &[("endpoint", &far_label)]
        ) >= 1.0),
        "the black-holed backend is ejected"
    );
    std::thread::sleep(Duration::from_millis(300));
    let timeouts = metric(admin, "ringway_proxy_errors_total", &[("kind", "timeout")]);
    assert!(timeouts >= 1.0, "the calls in flight there failed as timeouts");

    // 2. The link comes back: once its ejection ran out it takes its share of the calls
    // again (round robin), and no call fails any more.
    far.link(true);
    let ejected = [("endpoint", far_label.as_str())];
    assert!(
        eventually(Duration::from_secs(5), || metric(admin, "ringway_upstream_endpoint_ejected", &ejected) == 0.0),
        "its ejection runs out"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let settled = metric(admin, "ringway_proxy_errors_total", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(admin, "ringway_proxy_errors_total", &[]), settled, "back: calls to it succeed again");
    assert_eq!(metric(admin, "ringway_upstream_ejections_total", &[("endpoint", &far_label)]), 1.0);

    // 3. A token bucket of 256 kbit/s on its link: slow, but it answers.
    far.tc("add dev DEV root tbf rate 256kbit burst 16kbit latency 200ms");
    std::thread::sleep(Duration::from_secs(1));
    far.tc("del dev DEV root");

    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for t in load {
        let (o, f) = t.join().unwrap();
        ok += o;
        failed += f;
    }
    let errors = metric(admin, "ringway_proxy_errors_total", &[]);
    eprintln!("load: {ok} ok, {failed} failed; proxy errors {errors}; timeouts {timeouts}");
    assert_eq!(f64::from(failed), errors, "every failed call is one the proxy counted");
    assert_eq!(
        metric(admin, "ringway_proxy_errors_total", &[("kind", "timeout")]),
        errors,
        "and each one a timeout on the black-holed backend"
    );
    assert!(ok > 100 * failed.max(1) / 10, "most calls succeeded: {ok} ok, {failed} failed");
    assert_eq!(metric(admin, "ringway_task_panics_total", &[]), 0.0);
    server.shutdown();
}
