//! Backends that fail (issue 14), with real backends on both drivers: active health checks
//! (Thrift against Apache Thrift servers, gRPC against grpcio's own health servicer),
//! outlier ejection of a backend that never answers, least request around a slow backend,
//! consistent hashing, retries only of requests that sent nothing, and the per-endpoint
//! connection limit across dialects. Progress is read off the admin endpoint's /metrics.
//! Last, straight through the library's pools: retired upstream connections are freed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apache::{Backend, Client, Wire};
use common::prom::{get, parse, value};
use common::ttheader::binary_message;
use common::{cluster, eventually, ChildGuard};
use ringway::config::{Address, Config, LbPolicy};
use ringway::control::Server;
use ringway::hosts::{Host, HostSet, Shared};
use ringway::pool::{Member, Pool};

/// A proxy with one Thrift listener routing everything to cluster "c", and an admin endpoint.
fn proxy(driver: &str, workers: usize, clusters: &str) -> (Server, SocketAddr, SocketAddr) {
    let toml = format!(
        "[runtime]\nworkers = {workers}\ndriver = {driver:?}\ndrain_timeout = \"2s\"\ndrain_idle_close = \"50ms\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"thrift\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\nroutes = [{{ cluster = \"c\" }}]\n\
         {clusters}"
    );
    let server = Server::start(Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))).unwrap();
    let (addr, admin) = (server.local_addr("thrift").unwrap(), server.admin_addr().unwrap());
    (server, addr, admin)
}

/// One sample of /metrics (summed over the series that match `labels`).
fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&parse(&get(admin, "/metrics").2), name, labels)
}

/// A Framed binary client with TCP_NODELAY, one call at a time: (message type, seqID).
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw(s)
    }

    fn call(&mut self, method: &str, seq: i32) -> u8 {
        let m = binary_message(1, method, seq, 1, "x");
        let mut f = (m.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        self.0.write_all(&f).unwrap();
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        let n = u32::from_be_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let got = i32::from_be_bytes([body[8 + n], body[9 + n], body[10 + n], body[11 + n]]);
        assert_eq!(got, seq, "reply to its own call");
        body[3]
    }
}

const REPLY: u8 = 2;
const EXCEPTION: u8 = 3;

/// A backend that accepts, reads and never answers. Returns its address and accept count.
fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, accepted) = (l.local_addr().unwrap(), Arc::new(AtomicUsize::new(0)));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

/// A backend that reads one request and closes the connection without answering.
fn hang_up() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, requests) = (l.local_addr().unwrap(), Arc::new(AtomicUsize::new(0)));
    let r = requests.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                r.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, requests)
}

/// A backend that accepts with a tiny receive buffer and reads nothing, so the proxy's writes
/// to it back up; when `reset` is set it resets every connection (RST, as a crashing host).
fn stalling_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    common::stalling_server(Vec::new())
}

both_drivers! {
    fn requests_a_dead_connection_never_wrote_go_to_the_other_endpoint(driver: &str) {
        let b = Backend::start(Wire::Binary, Duration::ZERO);
        let (a, reset) = stalling_backend();
        let extra = "lb = \"round_robin\"\nmax_connections_per_endpoint = 1\nmax_write_buffer = \"64MiB\"\n\
                     request_timeout = \"20s\"\noutlier_detection = { consecutive_failures = 0 }";
        let (server, addr, admin) = proxy(driver, 1, &cluster("c", &[a.to_string(), b.endpoint()], extra));
        const CALLS: i32 = 600;
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = s.try_clone().unwrap();
        let replies = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            let mut len = [0u8; 4];
            while ok + failed < CALLS && reader.read_exact(&mut len).is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                reader.read_exact(&mut body).unwrap();
                if body[3] == REPLY { ok += 1 } else { failed += 1 }
            }
            (ok, failed)
        });
        // 600 calls of 32 KiB in two waves: the first fills the kernel's buffers towards the
        // backend that reads nothing (its writer then waits), the second waits in the proxy's
        // queue for that connection: never written when the backend resets it.
        let text = "x".repeat(32 << 10);
        for seq in 1..=CALLS {
            let m = binary_message(1, "echo", seq, 1, &text);
            s.write_all(&(m.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&m).unwrap();
            if seq == CALLS / 2 {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        reset.store(true, Ordering::SeqCst);
        let (ok, failed) = replies.join().unwrap();
        assert_eq!(ok + failed, CALLS, "every call answered");
        let retried = metric(admin, "ringway_upstream_retries_total", &[("cluster", "c")]);
        assert!(retried > 0.0, "queued requests were sent again");
        assert_eq!(b.calls.load(Ordering::SeqCst) as i32, ok, "the retried ones succeeded on the other backend");
        let lost = metric(admin, "ringway_proxy_errors_total", &[("kind", "upstream_lost")]);
        assert_eq!(lost, f64::from(failed), "only requests the lost connection had written failed");
        assert!(f64::from(failed) + retried <= f64::from(CALLS / 2 + 1), "failed {failed}, retried {retried}");
        drop(s);
        server.shutdown();
    }

    fn health_checks_take_a_killed_backend_out_and_bring_it_back(driver: &str) {
        let a = Backend::start(Wire::Binary, Duration::ZERO);
        let b = Backend::start(Wire::Binary, Duration::ZERO);
        let (b_addr, port) = (b.endpoint(), b.addr.port());
        // Outlier ejection off and a short connect backoff: only the health check keeps
        // requests away from the dead backend.
        let extra = "lb = \"round_robin\"\nconnect_failure_backoff = \"1ms\"\n\
                     outlier_detection = { consecutive_failures = 0 }\n\
                     health_check = { kind = \"thrift\", interval = \"200ms\", timeout = \"150ms\", unhealthy_threshold = 2, healthy_threshold = 2 }";
        let (server, addr, admin) = proxy(driver, 2, &cluster("c", &[a.endpoint(), b_addr.clone()], extra));
        let mut clients: Vec<Raw> = (0..4).map(|_| Raw::connect(addr)).collect();
        let mut seq = 0;
        let mut round = |clients: &mut Vec<Raw>| -> usize {
            let mut failed = 0;
            for c in clients.iter_mut() {
                seq += 1;
                failed += usize::from(c.call("echo", seq) != REPLY);
            }
            failed
        };
        for _ in 0..10 {
            assert_eq!(round(&mut clients), 0);
        }
        assert!(b.calls.load(Ordering::SeqCst) > 0 && a.calls.load(Ordering::SeqCst) > 0);
        assert_eq!(metric(admin, "ringway_upstream_endpoint_healthy", &[("endpoint", &b_addr)]), 1.0);

        b.kill();
        drop(b);
        // Until the checks notice, a request that meets the dead backend's closed port is
        // retried on the other one: nothing fails but what was in flight when it died.
        let mut failed = 0;
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            failed += round(&mut clients);
        }
        assert!(failed <= clients.len(), "only requests in flight when it died fail: {failed}");
        assert!(eventually(Duration::from_secs(3), || {
            metric(admin, "ringway_upstream_endpoint_healthy", &[("endpoint", &b_addr)]) == 0.0
        }));
        std::thread::sleep(Duration::from_millis(50));
        let attempts = metric(admin, "ringway_upstream_connect_failures_total", &[("endpoint", &b_addr)]);
        for _ in 0..25 {
            assert_eq!(round(&mut clients), 0);
        }
        let after = metric(admin, "ringway_upstream_connect_failures_total", &[("endpoint", &b_addr)]);
        assert_eq!(after, attempts, "no request goes to an unhealthy endpoint");
        let clusters = get(admin, "/clusters").2;
        assert!(clusters.contains("\"health\": \"unhealthy\""), "{clusters}");

        // Restarted on the same port: healthy again after two passing checks, and traffic returns.
        let back = Backend::start_on(Wire::Binary, port);
        assert!(eventually(Duration::from_secs(3), || {
            metric(admin, "ringway_upstream_endpoint_healthy", &[("endpoint", &b_addr)]) == 1.0
        }));
        for _ in 0..10 {
            assert_eq!(round(&mut clients), 0);
        }
        assert!(back.calls.load(Ordering::SeqCst) >= 10, "traffic returned: {}", back.calls.load(Ordering::SeqCst));
        drop(clients);
        server.shutdown();
    }

    fn a_backend_that_never_answers_is_ejected_after_consecutive_timeouts(driver: &str) {
        let a = Backend::start(Wire::Binary, Duration::ZERO);
        let (hole, _) = black_hole();
        let hole = hole.to_string();
        let extra = "lb = \"round_robin\"\nrequest_timeout = \"150ms\"\n\
                     outlier_detection = { consecutive_failures = 3, base_ejection_time = \"30s\" }";
        let (server, addr, admin) = proxy(driver, 1, &cluster("c", &[a.endpoint(), hole.clone()], extra));
        let mut c = Raw::connect(addr);
        // Round robin alternates: three calls time out on the black hole, then it is ejected.
        let replies: Vec<u8> = (1..=6).map(|seq| c.call("echo", seq)).collect();
        assert_eq!(replies, [REPLY, EXCEPTION, REPLY, EXCEPTION, REPLY, EXCEPTION]);
        // From here every call goes to the live backend: none waits for a timeout.
        for seq in 7..=56 {
            assert_eq!(c.call("echo", seq), REPLY, "call {seq}");
        }
        assert_eq!(a.calls.load(Ordering::SeqCst), 53);
        assert_eq!(metric(admin, "ringway_upstream_ejections_total", &[("endpoint", &hole)]), 1.0);
        assert_eq!(metric(admin, "ringway_upstream_endpoint_ejected", &[("endpoint", &hole)]), 1.0);
        assert!(get(admin, "/clusters").2.contains("\"health\": \"ejected\""));
        drop(c);
        server.shutdown();
    }

    fn least_request_sends_little_to_a_backend_20x_slower(driver: &str) {
        let share = |lb: &str| -> f64 {
            let fast = Backend::start(Wire::Binary, Duration::from_millis(1));
            let slow = Backend::start(Wire::Binary, Duration::from_millis(20));
            let extra = format!("lb = {lb:?}");
            let (server, addr, _) = proxy(driver, 1, &cluster("c", &[fast.endpoint(), slow.endpoint()], &extra));
            let threads: Vec<_> = (0..32)
                .map(|t| std::thread::spawn(move || {
                    let mut c = Raw::connect(addr);
                    (0..15).all(|k| c.call("slowEcho", t * 100 + k) == REPLY)
                }))
                .collect();
            assert!(threads.into_iter().all(|t| t.join().unwrap()));
            server.shutdown();
            let (f, s) = (fast.calls.load(Ordering::SeqCst), slow.calls.load(Ordering::SeqCst));
            assert_eq!(f + s, 32 * 15);
            s as f64 / (f + s) as f64
        };
        let least = share("least_request");
        assert!(least < 0.2, "least_request gave the slow backend {:.0} %", least * 100.0);
        let rr = share("round_robin");
        assert!(rr > 0.4, "round robin gives each its half: {:.0} %", rr * 100.0);
    }

    fn hashing_keeps_a_key_on_one_endpoint_and_adding_one_moves_about_a_third(driver: &str) {
        let backends: Vec<Backend> = (0..3).map(|_| Backend::start(Wire::Binary, Duration::ZERO)).collect();
        let eps: Vec<String> = backends.iter().map(|b| b.endpoint()).collect();
        let (mut server, addr, _) = proxy(driver, 2, &cluster("c", &eps[..2], "lb = \"hash\""));
        let owner = |b: &[Backend], method: &str| -> usize {
            let before: Vec<usize> = b.iter().map(|x| x.calls.load(Ordering::SeqCst)).collect();
            // Several connections (both workers): a key's place does not depend on the client.
            for k in 0..3 {
                let mut c = Raw::connect(addr);
                assert_eq!(c.call(method, k + 1), REPLY);
            }
            let grew: Vec<usize> = b.iter().zip(&before).map(|(x, n)| x.calls.load(Ordering::SeqCst) - n).collect();
            let owners: Vec<usize> = (0..grew.len()).filter(|&i| grew[i] > 0).collect();
            assert_eq!(owners.len(), 1, "{method}: one endpoint took every call: {grew:?}");
            owners[0]
        };
        let keys: Vec<String> = (0..60).map(|k| format!("key{k}")).collect();
        let two: Vec<usize> = keys.iter().map(|k| owner(&backends, k)).collect();
        assert!(two.contains(&0) && two.contains(&1), "both endpoints own keys");
        let toml = format!(
            "[runtime]\nworkers = 2\ndriver = {driver:?}\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"thrift\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\nroutes = [{{ cluster = \"c\" }}]\n{}",
            cluster("c", &eps, "lb = \"hash\"")
        );
        server.reload(Config::parse(&toml).unwrap()).unwrap();
        let three: Vec<usize> = keys.iter().map(|k| owner(&backends, k)).collect();
        let moved: Vec<usize> = (0..keys.len()).filter(|&i| two[i] != three[i]).collect();
        assert!(moved.iter().all(|&i| three[i] == 2), "keys move only to the new endpoint");
        assert!((8..=32).contains(&moved.len()), "about 1/3 of 60 keys moved: {}", moved.len());
        server.shutdown();
    }

    fn a_failed_connect_is_retried_and_a_request_already_sent_is_not(driver: &str) {
        let a = Backend::start(Wire::Binary, Duration::ZERO);
        let refusing = common::Refusing::new();
        let closed = refusing.addr.to_string();
        let extra = "lb = \"round_robin\"\nconnect_failure_backoff = \"1ms\"\noutlier_detection = { consecutive_failures = 0 }";
        let (server, addr, admin) = proxy(driver, 1, &cluster("c", &[closed.clone(), a.endpoint()], extra));
        let mut c = Raw::connect(addr);
        for seq in 1..=10 {
            assert_eq!(c.call("echo", seq), REPLY, "call {seq}: the failed connect is retried");
        }
        assert!(metric(admin, "ringway_upstream_retries_total", &[("cluster", "c")]) >= 1.0);
        drop(c);
        server.shutdown();

        // retries = 0: the same connect failure is the client's error.
        let extra = format!("{extra}\nretries = 0");
        let (server, addr, _) = proxy(driver, 1, &cluster("c", &[closed, a.endpoint()], &extra));
        let mut c = Raw::connect(addr);
        assert_eq!(c.call("echo", 1), EXCEPTION);
        drop(c);
        server.shutdown();

        // A backend that takes the request and hangs up: the request reached an upstream, so
        // it fails and is never sent to the other endpoint.
        let (gone, requests) = hang_up();
        let before = a.calls.load(Ordering::SeqCst);
        let extra = "lb = \"round_robin\"\noutlier_detection = { consecutive_failures = 0 }";
        let (server, addr, _) = proxy(driver, 1, &cluster("c", &[gone.to_string(), a.endpoint()], extra));
        let mut c = Raw::connect(addr);
        assert_eq!(c.call("echo", 1), EXCEPTION);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        assert_eq!(a.calls.load(Ordering::SeqCst), before, "not retried");
        drop(c);
        server.shutdown();
    }

    fn the_connection_limit_counts_connections_of_every_dialect(driver: &str) {
        let (hole, accepted) = black_hole();
        let extra = "max_connections_per_endpoint = 2\nmax_requests_per_connection = 1\nrequest_timeout = \"1s\"";
        let (server, addr, _) = proxy(driver, 1, &cluster("c", &[hole.to_string()], extra));
        let mut binary = Client::connect(addr, Wire::Binary);
        let mut compact = Client::connect(addr, Wire::Compact);
        for seq in 1..=3 {
            binary.send("echo", seq, "b", false);
            compact.send("echo", seq, "c", false);
        }
        assert!(eventually(Duration::from_millis(500), || accepted.load(Ordering::SeqCst) == 2));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "two connections in all, whatever the dialect");
        // Every call ends (timed out, or refused as the cluster saturated): nothing hangs.
        for _ in 0..3 {
            assert!(binary.recv().is_ok());
            assert!(compact.recv().is_ok());
        }
        drop((binary, compact));
        server.shutdown();
    }

    fn over_max_requests_a_call_fails_at_once_as_overloaded(driver: &str) {
        let (hole, _) = black_hole();
        let extra = "max_requests = 2\nrequest_timeout = \"2s\"";
        let (server, addr, admin) = proxy(driver, 1, &cluster("c", &[hole.to_string()], extra));
        let mut c = Client::connect(addr, Wire::Binary);
        for seq in 1..=4 {
            c.send("echo", seq, "x", false);
        }
        // The third and fourth are refused at once; the first two wait for their deadline.
        let started = Instant::now();
        for want in [3, 4] {
            let (_, seq, reply) = c.recv().unwrap();
            assert_eq!(seq, want);
            match reply {
                common::apache::Reply::Exception { message, .. } => assert!(message.contains("overloaded"), "{message}"),
                other => panic!("expected an exception, got {other:?}"),
            }
        }
        assert!(started.elapsed() < Duration::from_millis(1500), "refused before the deadline");
        assert_eq!(metric(admin, "ringway_proxy_errors_total", &[("kind", "overloaded")]), 2.0);
        drop(c);
        server.shutdown();
    }

    fn requests_over_the_limits_are_refused_and_memory_stays_bounded(driver: &str) {
        let (hole, _) = black_hole();
        let extra = "max_pending_requests = 16\nmax_requests = 16\nrequest_timeout = \"30s\"";
        let (server, addr, admin) = proxy(driver, 1, &cluster("c", &[hole.to_string()], extra));
        let rss = || -> usize {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
        };
        let before = rss();
        // 20,000 calls of 4 KiB each (80 MiB) at a backend that never answers: queued, they
        // would hold all of it until their 30 s deadline (and this test would wait for
        // replies that do not come: with the limits raised to a million it fails).
        const CALLS: i32 = 20_000;
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = s.try_clone().unwrap();
        let replies = std::thread::spawn(move || {
            let mut n = 0;
            let mut len = [0u8; 4];
            while n < CALLS - 32 && reader.read_exact(&mut len).is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                reader.read_exact(&mut body).unwrap();
                assert_eq!(body[3], EXCEPTION);
                n += 1;
            }
            n
        });
        let text = "x".repeat(4096);
        for seq in 1..=CALLS {
            let m = binary_message(1, "echo", seq, 1, &text);
            s.write_all(&(m.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&m).unwrap();
        }
        let refused = replies.join().unwrap();
        assert!(refused >= CALLS - 32, "all but the few admitted were refused at once: {refused}");
        let grew = rss().saturating_sub(before);
        assert!(grew < 40 << 20, "80 MiB of requests left RSS {} MiB higher", grew >> 20);
        let overloaded = metric(admin, "ringway_proxy_errors_total", &[("kind", "overloaded")]);
        assert!(overloaded >= f64::from(CALLS - 32), "{overloaded}");
        drop(s);
        server.shutdown();
    }

    fn grpc_health_checks_follow_the_servicer(driver: &str) {
        let mut peer = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc_health_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut out = BufReader::new(peer.stdout.take().unwrap());
        let mut stdin = peer.stdin.take().unwrap();
        let peer = ChildGuard(peer);
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line.strip_prefix("PORT ").and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| {
            panic!("health peer printed {line:?} (pip install -r tests/py/requirements.txt)")
        });
        let ep = format!("127.0.0.1:{port}");
        let extra = "health_check = { kind = \"grpc\", interval = \"100ms\", timeout = \"90ms\", unhealthy_threshold = 1, healthy_threshold = 1 }";
        let (server, _, admin) = proxy(driver, 1, &cluster("c", std::slice::from_ref(&ep), extra));
        let healthy = || metric(admin, "ringway_upstream_endpoint_healthy", &[("endpoint", &ep)]);
        let checks = || metric(admin, "ringway_upstream_health_checks_total", &[("endpoint", &ep)]);
        assert!(eventually(Duration::from_secs(5), || checks() >= 2.0));
        assert_eq!(healthy(), 1.0, "SERVING");
        writeln!(stdin, "NOT_SERVING").unwrap();
        assert!(eventually(Duration::from_secs(5), || healthy() == 0.0), "NOT_SERVING is unhealthy");
        writeln!(stdin, "SERVING").unwrap();
        assert!(eventually(Duration::from_secs(5), || healthy() == 1.0));
        drop((stdin, peer));
        assert!(eventually(Duration::from_secs(5), || healthy() == 0.0), "a stopped server is unhealthy");
        server.shutdown();
    }
}

// Retired upstream connections are freed (the soak's leak, issue 15): straight through the
// library's pools, no proxy process.

/// The upstream of `retired_idle_connections_end`: accepts one connection, sends
/// `greeting`, then reads until the proxy closes it (true) or 10 s pass (false).
fn upstream_until_closed(greeting: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(greeting).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    });
    (addr, server)
}

/// A connection of a pool that a reload retired ends once idle: the upstream sees it
/// closed, and every task it started (reader, writer, timers) returns and lets go of it,
/// whether it is retired `settle` after it opened (its tasks asleep, waiting for work) or
/// at once (before they first ran). A Thrift connection's deadline sweeper used to sleep
/// on forever, and an HTTP/2 connection's drain waiter when retired at once: each held
/// its connection, one leaked per connection retired, and the soak's RSS climbed.
fn retired_idle_connections_end<C: Member, D: monoio::Driver>(
    mut rt: monoio::Runtime<D>,
    greeting: &'static [u8],
    settle: Duration,
) {
    let (addr, server) = upstream_until_closed(greeting);
    let config = format!(
        "[[listener]]\naddress=\"127.0.0.1:0\"\nprotocol=\"thrift\"\nroutes=[{{cluster=\"c\"}}]\n\
         [[cluster]]\nname=\"c\"\nendpoints=[\"{addr}\"]\n"
    );
    let cluster = Config::parse(&config).unwrap().clusters.remove(0);
    let shared = Shared::new(&cluster, Rc::default());
    let host = Rc::new(Host::new(Address::Tcp(addr), Rc::default(), shared.clone(), true));
    let set = Rc::new(HostSet::new(LbPolicy::RoundRobin, vec![host], shared, 1));
    let freed = rt.block_on(async move {
        let pool = Pool::<C>::new(Rc::new(cluster), set, Rc::default());
        let deadline = Instant::now() + Duration::from_secs(5);
        let conn = Rc::downgrade(&pool.acquire(deadline, 0, 0, None).await.expect("a connection to the test upstream"));
        if !settle.is_zero() {
            monoio::time::sleep(settle).await;
        }
        pool.retire();
        drop(pool);
        for _ in 0..200 {
            if conn.strong_count() == 0 {
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        conn.strong_count() == 0
    });
    assert!(server.join().unwrap(), "the upstream saw the retired connection closed");
    assert!(freed, "every task of the retired connection returned and let go of it");
}

fn epoll() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap()
}

fn uring() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build().unwrap()
}

/// An empty SETTINGS frame: the HTTP/2 upstream's side of the connection preface.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Each connection type, on both drivers, retired at once and after 20 ms.
fn retired_idle_connections_of<C: Member>(greeting: &'static [u8]) {
    for settle in [Duration::ZERO, Duration::from_millis(20)] {
        retired_idle_connections_end::<C, _>(epoll(), greeting, settle);
        retired_idle_connections_end::<C, _>(uring(), greeting, settle);
    }
}

#[test]
fn retired_idle_thrift_connections_end() {
    retired_idle_connections_of::<ringway::thrift::upstream::ThriftUpstream>(b"");
}

#[test]
fn retired_idle_grpc_connections_end() {
    retired_idle_connections_of::<ringway::grpc::GrpcUpstream>(SETTINGS);
}

#[test]
fn retired_idle_ttstream_connections_end() {
    retired_idle_connections_of::<ringway::ttstream::upstream::TtUpstream>(b"");
}

/// The dead endpoints of these tests: a `Refusing` port refuses connects, and while it is held
/// no listener can bind it, neither on that port nor by being handed it for port 0.
#[test]
fn a_refusing_port_refuses_connects_and_cannot_be_taken() {
    let held: Vec<common::Refusing> = (0..64).map(|_| common::Refusing::new()).collect();
    for r in &held {
        let e = TcpStream::connect_timeout(&r.addr, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{}: {e}", r.addr);
        assert!(TcpListener::bind(r.addr).is_err(), "{} was bound again", r.addr);
    }
    let ports: std::collections::HashSet<u16> = held.iter().map(|r| r.addr.port()).collect();
    for _ in 0..2000 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!ports.contains(&l.local_addr().unwrap().port()), "port 0 handed out a held port");
    }
    let port = held.into_iter().next().unwrap().release();
    TcpListener::bind(("127.0.0.1", port)).expect("a released port can be bound");
}

// A request written onto a connection whose upstream has already reset it, before the proxy
// has read the reset: the write fails and hands the kernel nothing, so the request is safe to
// send again, and goes to the other endpoint. Straight through the library's pool, so the
// order is fixed: the request is queued after the reset arrived and before anything read it.
// Then on epoll the writer meets the reset first; on io_uring the reader does, with the write
// right behind it.

/// An upstream that accepts one connection and resets it at once (RST: linger 0).
fn upstream_that_resets() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        }
    });
    addr
}

fn a_request_whose_write_fails_goes_to_the_other_endpoint<D: monoio::Driver>(mut rt: monoio::Runtime<D>) -> Vec<u8> {
    use ringway::thrift::codec::{parse_frame, OriginalSeq};
    use ringway::thrift::session::{Pending, ThriftSession};
    let resets = upstream_that_resets();
    let echo = Backend::start(Wire::Binary, Duration::ZERO);
    let config = format!(
        "[[listener]]\naddress=\"127.0.0.1:0\"\nprotocol=\"thrift\"\nroutes=[{{cluster=\"c\"}}]\n\
         [[cluster]]\nname=\"c\"\nendpoints=[\"{resets}\", \"{}\"]\n",
        echo.endpoint()
    );
    let cluster = Config::parse(&config).unwrap().clusters.remove(0);
    let shared = Shared::new(&cluster, Rc::default());
    let host = |addr: SocketAddr| Rc::new(Host::new(Address::Tcp(addr), Rc::default(), shared.clone(), true));
    let (a, b) = (host(resets), host(echo.addr));
    let set = Rc::new(HostSet::new(LbPolicy::RoundRobin, vec![a, b.clone()], shared.clone(), 1));
    let out = rt.block_on(async move {
        let pool = Pool::<ringway::thrift::upstream::ThriftUpstream>::new(Rc::new(cluster), set, Rc::default());
        let deadline = Instant::now() + Duration::from_secs(5);
        let conn = pool.acquire(deadline, 0, 0, Some(&b)).await.expect("a connection to the resetting upstream");
        // The reset arrives; nothing here reads it until this task next waits.
        std::thread::sleep(Duration::from_millis(100));
        let listener = Rc::new(ringway::metrics::ListenerMetrics::new("thrift"));
        let session =
            Rc::new(ThriftSession::new(Rc::default(), Rc::new(ringway::metrics::ConnMeter::accepted(listener))));
        let m = binary_message(1, "echo", 7, 1, "x");
        let mut req = (m.len() as u32).to_be_bytes().to_vec();
        req.extend_from_slice(&m);
        let info = parse_frame(&req, 4096).unwrap();
        session.inflight.set(1);
        let pending = Pending {
            downstream: session.clone(),
            orig: OriginalSeq::capture(&req, &info),
            name: session.method_name(b"echo"),
            dialect: info.dialect,
            deadline: ringway::metrics::now_us() + 5_000_000,
            route: Rc::default(),
            start: 0,
            req_len: req.len() as u32,
            retries: 0,
        };
        conn.send(&req[..], &info, Some(pending));
        drop(conn);
        for _ in 0..500 {
            if session.out.queued_bytes() > 0 {
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut items = Vec::new();
        assert!(session.out.queued_bytes() > 0, "the client got an answer within 5 s");
        session.out.take_all(&mut items).await;
        drop(pool);
        items.concat()
    });
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1, "the other endpoint answered: {}", String::from_utf8_lossy(&out));
    out
}

#[test]
fn a_request_whose_write_fails_goes_to_the_other_endpoint_epoll() {
    let out = a_request_whose_write_fails_goes_to_the_other_endpoint(epoll());
    assert_eq!(out[4 + 3], REPLY, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn a_request_whose_write_fails_goes_to_the_other_endpoint_io_uring() {
    if !ringway::worker::io_uring_available() {
        return eprintln!("io_uring is not available on this machine: skipped");
    }
    let out = a_request_whose_write_fails_goes_to_the_other_endpoint(uring());
    assert_eq!(out[4 + 3], REPLY, "{}", String::from_utf8_lossy(&out));
}
