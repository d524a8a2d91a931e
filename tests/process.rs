//! The `ringway` binary as an operator runs it: `check`, SIGHUP reload under traffic (and of
//! `runtime.busy_poll`), SIGTERM drain under traffic. Each test starts its own process and stops it by its handle.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::apache::{Backend, Client, Reply, Wire};
use common::ttheader::{decode, kitex_call, read_frame, KitexBackend};
use common::ChildGuard;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringway")
}

use common::{bench_bin, bench_echo};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringway-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(driver: &str, route_to: &SocketAddr, extra_runtime: &str) -> String {
    format!(
        r#"
[runtime]
workers = 2
driver = "{driver}"
{extra_runtime}
[[listener]]
name = "thrift"
address = "127.0.0.1:0"
routes = [ {{ cluster = "main" }} ]
[[cluster]]
name = "main"
endpoints = ["{route_to}"]
"#
    )
}

/// A running ringway process, its listener address and its log lines.
struct Ringway {
    child: ChildGuard,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Ringway {
    fn start(path: &Path) -> Ringway {
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(path)
            .env("RINGWAY_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("bound to ").nth(1).and_then(|s| s.split(' ').next()) {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("ringway logs its bound address");
        Ringway { child: ChildGuard(child), addr, log }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our
        // own child's, still unreaped (ChildGuard waits for it only on drop).
        assert_eq!(unsafe { libc::kill(self.child.0.id() as i32, sig) }, 0);
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(st) = self.child.0.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Client threads that each keep one connection and call in a loop until told to stop
/// (bounded by a count), counting successes and recording every failure.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr, clients: usize, max_calls: usize) -> Traffic {
        let (stop, ok, failures) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let threads = (0..clients)
            .map(|c| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut client = Client::connect(addr, Wire::Binary);
                    for n in 0..max_calls as i32 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let text = format!("c{c}n{n}");
                        client.send("echo", n + 1, &text, false);
                        match client.recv() {
                            Ok((_, seq, Reply::Ok(s))) if seq == n + 1 && s == format!("echo:{text}") => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            other => {
                                failures.lock().unwrap().push(format!("client {c} call {n}: {other:?}"));
                                break;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Traffic { stop, ok, failures, threads }
    }

    /// Stops the clients after their current call and collects the results.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Lets every client run to the end of its loop and collects the results.
    fn join(self) -> (usize, Vec<String>) {
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::SeqCst), self.failures.lock().unwrap().clone())
    }
}

#[test]
fn check_reports_problems_with_key_paths_and_exit_code_2() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        config("auto", &"127.0.0.1:9".parse().unwrap(), "").replace("cluster = \"main\"", "cluster = \"ech\""),
    )
    .unwrap();
    let out = Command::new(bin()).args(["check", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener[0].routes[0].cluster: no cluster named \"ech\""), "{err}");

    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/ringway.toml");
    let out = Command::new(bin()).args(["check", "--config", good]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A listener takes only its own protocol's keys: a gRPC key on the example's Thrift listener,
/// and the example's Thrift keys on a gRPC listener, fail `check` with their key paths.
#[test]
fn check_refuses_another_protocols_listener_keys() {
    let dir = temp_dir("check-keys");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/ringway.toml")).unwrap();
    let cases = [
        (
            example.replace("protocol = \"thrift\"", "protocol = \"thrift\"\nmax_concurrent_streams = 100"),
            vec!["listener[0].max_concurrent_streams: is a grpc listener key; this listener's protocol is thrift"],
        ),
        (
            example.replace("protocol = \"thrift\"", "protocol = \"grpc\""),
            vec![
                "listener[0].max_frame_size: is a thrift listener key; this listener's protocol is grpc",
                "listener[0].max_pending_requests: is a thrift listener key; this listener's protocol is grpc",
                "listener[0].max_method_name: is a thrift listener key; this listener's protocol is grpc",
            ],
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin()).args(["check", "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        for line in want {
            assert!(err.lines().any(|l| l == line), "case {i}: {line}\n{err}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

both_drivers! {
    fn sighup_reload_under_traffic_moves_new_requests_and_closes_nothing(driver: &str) {
        let (a, b) = (Backend::start(Wire::Binary, Duration::ZERO), Backend::start(Wire::Binary, Duration::ZERO));
        let dir = temp_dir(&format!("hup-{driver}"));
        let path = dir.join("ringway.toml");
        std::fs::write(&path, config(driver, &a.addr, "")).unwrap();
        let rw = Ringway::start(&path);
        let traffic = Traffic::start(rw.addr, 4, 20_000);
        assert!(common::eventually(Duration::from_secs(10), || a.calls.load(Ordering::SeqCst) > 50));

        std::fs::write(&path, config(driver, &b.addr, "")).unwrap();
        rw.signal(libc::SIGHUP);
        assert!(common::eventually(Duration::from_secs(10), || b.calls.load(Ordering::SeqCst) > 50), "new requests reach the new cluster");
        let a_after = a.calls.load(Ordering::SeqCst);

        // An invalid file is refused and the running config stays.
        std::fs::write(&path, "[[listener]]\nname = 3\n").unwrap();
        rw.signal(libc::SIGHUP);
        assert!(common::eventually(Duration::from_secs(10), || rw.logged("keeping the running config")));
        let b_before = b.calls.load(Ordering::SeqCst);
        assert!(common::eventually(Duration::from_secs(10), || b.calls.load(Ordering::SeqCst) > b_before + 50));

        let (ok, failures) = traffic.finish();
        assert!(failures.is_empty(), "no request failed and no connection closed: {failures:?}");
        assert!(ok > 150);
        assert_eq!(a.calls.load(Ordering::SeqCst), a_after, "nothing new went to the old cluster");
        let _ = std::fs::remove_dir_all(dir);
    }

    // `runtime.busy_poll` end to end, and live on reload: one client calling one at a time
    // makes a worker sleep once or twice per call (it waits for the request, then for the
    // reply: 1.3 to 2 measured here, fewer when other processes keep the core busy); with a
    // 1 ms spin it catches both without sleeping (0 to 2 sleeps in 200 calls on a quiet
    // machine, 12 in one run beside the whole test suite).
    fn busy_poll_reloads_live_and_the_worker_stops_sleeping_per_call(driver: &str) {
        // Raw TTHeader calls with TCP_NODELAY: the Apache client's writes wait on delayed ACKs.
        let backend = KitexBackend::start();
        let dir = temp_dir(&format!("spin-{driver}"));
        let path = dir.join("ringway.toml");
        std::fs::write(&path, config(driver, &backend.addr, "")).unwrap();
        let rw = Ringway::start(&path);
        let mut c = std::net::TcpStream::connect(rw.addr).unwrap();
        c.set_nodelay(true).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut calls = |n: i32| {
            use std::io::Write;
            for seq in 1..=n {
                c.write_all(&kitex_call(seq, "Echo", "ping", "s", None, false)).unwrap();
                let d = decode(&read_frame(&mut c).unwrap());
                assert_eq!((d.msg_type, d.payload_seq), (2, seq));
            }
        };
        let sleeps_over = |calls: &mut dyn FnMut(i32), n: i32| {
            let before = worker_sleeps(rw.child.0.id());
            calls(n);
            worker_sleeps(rw.child.0.id()) - before
        };
        calls(20);
        let without = sleeps_over(&mut calls, 200);

        std::fs::write(&path, config(driver, &backend.addr, "busy_poll = \"1ms\"")).unwrap();
        rw.signal(libc::SIGHUP);
        assert!(common::eventually(Duration::from_secs(10), || rw.logged("reloaded")));
        calls(20);
        // The best of up to eight runs of 100 calls, stopping at the first that shows the spin:
        // on a busy machine a peer may answer later than the spin now and then (and the spin
        // then backs off for a while). Beside two CPU hogs, 18 of 27 runs had more than 5
        // sleeps; with the spin left off, none of 80 runs had fewer than 11.
        let mut with: Vec<u64> = Vec::new();
        while with.len() < 8 && with.iter().all(|&s| s > 5) {
            with.push(sleeps_over(&mut calls, 100));
        }
        eprintln!("worker sleeps: {without} in 200 calls without a spin; {with:?} in runs of 100 calls with a 1 ms spin");
        assert!(
            with.iter().min().unwrap() <= &5,
            "with a 1 ms spin the worker catches each call awake: {with:?} sleeps per 100 calls (was {without} in 200)"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn sigterm_drains_under_traffic_with_zero_failed_requests(driver: &str) {
        let backend = Backend::start(Wire::Binary, Duration::from_millis(300));
        let dir = temp_dir(&format!("term-{driver}"));
        let path = dir.join("ringway.toml");
        std::fs::write(&path, config(driver, &backend.addr, "drain_timeout = \"10s\"\ndrain_idle_close = \"200ms\"")).unwrap();
        let mut rw = Ringway::start(&path);
        let traffic = Traffic::start(rw.addr, 4, 150);
        assert!(common::eventually(Duration::from_secs(10), || backend.calls.load(Ordering::SeqCst) > 20));
        // A slow request is in flight when the signal lands.
        let addr = rw.addr;
        let slow = std::thread::spawn(move || Client::connect(addr, Wire::Binary).call("slowDrain", 5, "x"));
        std::thread::sleep(Duration::from_millis(100));
        rw.signal(libc::SIGTERM);

        assert_eq!(slow.join().unwrap(), Reply::Ok("slowDrain:x".into()), "in-flight request finished");
        // New connections are refused once draining.
        assert!(common::eventually(Duration::from_secs(5), || std::net::TcpStream::connect(addr).is_err()));
        let (ok, failures) = traffic.join();
        assert!(failures.is_empty(), "zero failed requests: {failures:?}");
        assert_eq!(ok, 4 * 150, "every client finished its run through the drain");
        let status = rw.wait_exit(Duration::from_secs(15)).expect("exits after the drain");
        assert!(status.success(), "exit code 0, got {status:?}");
        assert!(rw.logged("draining"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

// Two workers, one request in flight on one of them: once SIGTERM lands, every new connect
// is refused while that request still runs, including those the kernel would hand to the
// worker with nothing to drain (on io_uring that worker used to return before its accept loop
// saw the cancel, leaving its listening socket open until the process exited).
both_drivers! {
    fn a_drain_closes_every_workers_listener_at_once(driver: &str) {
        let backend = Backend::start(Wire::Binary, Duration::from_millis(2000));
        let dir = temp_dir(&format!("term-listeners-{driver}"));
        let path = dir.join("ringway.toml");
        std::fs::write(&path, config(driver, &backend.addr, "drain_timeout = \"10s\"")).unwrap();
        let mut rw = Ringway::start(&path);
        let addr = rw.addr;
        let slow = std::thread::spawn(move || Client::connect(addr, Wire::Binary).call("slowDrain", 5, "x"));
        // The request reaches the backend, which holds it for 2 s.
        std::thread::sleep(Duration::from_millis(300));
        rw.signal(libc::SIGTERM);
        assert!(common::eventually(Duration::from_secs(1), || rw.logged("draining")));
        std::thread::sleep(Duration::from_millis(200));
        // Connects from 40 source ports spread over both workers' sockets.
        let accepted = (0..40).filter(|_| std::net::TcpStream::connect(addr).is_ok()).count();
        assert_eq!(rw.child.0.try_wait().unwrap(), None, "still draining the request in flight");
        assert_eq!(accepted, 0, "{accepted} of 40 connects accepted during the drain");
        assert_eq!(slow.join().unwrap(), Reply::Ok("slowDrain:x".into()), "in-flight request finished");
        assert!(rw.wait_exit(Duration::from_secs(15)).expect("exits after the drain").success());
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A one-shot HTTP/1.1 request to the admin endpoint: (status, body).
fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

both_drivers! {
    fn admin_reload_and_drain_do_what_sighup_and_sigterm_do(driver: &str) {
        let backend = Backend::start(Wire::Binary, Duration::ZERO);
        let dir = temp_dir(&format!("admin-{driver}"));
        let path = dir.join("ringway.toml");
        let admin = "\n[admin]\naddress = \"127.0.0.1:0\"\n";
        std::fs::write(&path, config(driver, &backend.addr, "") + admin).unwrap();
        let mut rw = Ringway::start(&path);
        let admin_line = || rw.log.lock().unwrap().iter().find_map(|l| l.split("admin endpoint on ").nth(1).map(str::to_string));
        assert!(common::eventually(Duration::from_secs(5), || admin_line().is_some()), "ringway logs its admin address");
        let admin_addr: SocketAddr = admin_line().unwrap().trim().parse().unwrap();
        let call = |seq| Client::connect(rw.addr, Wire::Binary).call("echo", seq, "x");
        assert_eq!(call(1), Reply::Ok("echo:x".into()));

        // A good file: 200 with the new version.
        std::fs::write(&path, config(driver, &backend.addr, "") + admin + "\n").unwrap();
        assert_eq!(admin_request(admin_addr, "POST", "/reload"), (200, "reloaded: version 2\n".into()));
        let (status, body) = admin_request(admin_addr, "GET", "/config");
        let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, shown["version"].as_u64()), (200, Some(2)), "{body}");
        assert_eq!(shown["source"].as_str(), Some(path.to_str().unwrap()), "the file it was loaded from");
        // A bad one: 400 with the problem and its key path; the running config stays.
        let bad = config(driver, &backend.addr, "").replace("cluster = \"main\" }", "cluster = \"ech\" }");
        std::fs::write(&path, bad + admin).unwrap();
        let (status, body) = admin_request(admin_addr, "POST", "/reload");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("listener[0].routes[0].cluster: no cluster named \"ech\""), "{body}");
        assert_eq!(call(2), Reply::Ok("echo:x".into()), "still routed by the running config");
        assert_eq!(admin_request(admin_addr, "GET", "/reload").0, 405);
        // The metrics say so: one reload applied, one refused, version 2 running.
        let (status, metrics) = admin_request(admin_addr, "GET", "/metrics");
        assert_eq!(status, 200);
        for line in ["ringway_config_version 2", "ringway_config_reloads_total{result=\"ok\"} 1", "ringway_config_reloads_total{result=\"failed\"} 1"] {
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }

        // Drain: 202, then the process drains and exits 0.
        assert_eq!(admin_request(admin_addr, "POST", "/drain"), (202, "draining\n".into()));
        let status = rw.wait_exit(Duration::from_secs(15)).expect("exits after the drain");
        assert!(status.success(), "{status:?}");
        assert!(rw.logged("admin request: draining"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Times ringway's worker threads gave up their core (slept), summed.
fn worker_sleeps(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("ringway-w") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")) {
            total += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        }
    }
    total
}

#[test]
fn demo_runs_with_nothing_installed_and_checks_every_reply() {
    let out =
        Command::new(bench_bin()).args(["demo", "--duration", "300ms"]).env("RINGWAY_LOG", "warn").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for row in ["direct 1x1", "ringway 1x1", "direct 32x10", "ringway 32x10", "grpc direct 4x4", "grpc ringway 4x4"] {
        let line = text.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no row {row}:\n{text}"));
        // The columns after the run's name: req/s first, errors last.
        let cols: Vec<&str> = line[row.len()..].split_whitespace().collect();
        let rps: f64 = cols[0].parse().unwrap();
        assert!(rps > 0.0, "{line}");
        assert_eq!(cols.last(), Some(&"0"), "zero errors: {line}");
    }
    // The headline series, read back from the admin endpoint, name both listeners' routes.
    for series in [
        r#"ringway_requests_total{listener="thrift",route="other",protocol="thrift",dialect="framed_binary"}"#,
        r#"ringway_grpc_responses_total{listener="grpc",route="echo",grpc_status="0"}"#,
    ] {
        let line =
            text.lines().find(|l| l.trim_start().starts_with(series)).unwrap_or_else(|| panic!("no {series}:\n{text}"));
        assert!(line.split_whitespace().last().unwrap().parse::<u64>().unwrap() > 0, "{line}");
    }
    assert!(text.contains("thrift/other: ") && text.contains("grpc/echo: "), "latency per route:\n{text}");
}

/// A short closed-loop `ringway-bench load` of `proto` at `target`: it must succeed with
/// every reply checked and none missing.
fn bench_load_checks_out(target: &str, proto: &str, conns: &str) {
    let out = Command::new(bench_bin())
        .args(["load", "--target", target, "--protocol", proto, "-c", conns, "-m", "8"])
        .args(["-d", "300ms", "--warmup", "100ms", "--json"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{proto}: {json} {}", String::from_utf8_lossy(&out.stderr));
    assert!(json.contains("\"error_total\":0"), "{proto}: {json}");
    assert!(!json.contains("\"requests\":0,"), "{proto}: {json}");
}

/// The bench kit's own pieces: every Thrift dialect of the load generator through ringway to
/// the echo backend, with every reply checked, and a clear refusal of an unknown protocol.
#[test]
fn bench_load_generator_drives_every_dialect_through_ringway() {
    let bench = bench_bin();
    let (_echo, echo_addr) = bench_echo("thrift");
    let proxy =
        common::Proxy::start("auto", r#"{ cluster = "echo" }"#, &common::cluster("echo", &[echo_addr.to_string()], ""));
    for proto in ["framed-binary", "framed-compact", "ttheader", "theader"] {
        bench_load_checks_out(&proxy.addr.to_string(), proto, "4");
    }
    // Open loop: a fixed rate, latency from each request's intended send time.
    let out = Command::new(&bench)
        .args(["load", "--target", &proxy.addr.to_string(), "--rate", "2000", "-c", "2"])
        .args(["-d", "500ms", "--warmup", "100ms", "--json"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("\"error_total\":0"), "open loop: {json}");
    let requests: u64 = json.split("\"requests\":").nth(1).and_then(|s| s.split(',').next()).unwrap().parse().unwrap();
    assert!((700..=1100).contains(&requests), "2000/s for 0.5 s is about 1000 requests: {json}");
    let out =
        Command::new(&bench).args(["load", "--target", "127.0.0.1:9", "--protocol", "grpc-unknown"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown protocol"));
    // Bidi has no open loop: refused up front, not run with every connection erroring.
    let out = Command::new(&bench)
        .args(["load", "--target", "127.0.0.1:9", "--protocol", "grpc-bidi", "--rate", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("grpc-bidi is closed loop"), "{out:?}");
}

/// Coordinated omission: the open loop counts latency from each request's *intended* send
/// time. The load generator is stopped (SIGSTOP) for 500 ms in the middle of a 2 s run at
/// 1000 requests/s: the ~500 requests that fell due meanwhile go out late, in a burst, and
/// each must count the time it was overdue. That puts a quarter of the run at 0–500 ms and
/// p90 at about 300 ms. Counted from the actual send time, they would all look fast and p90
/// would stay under a millisecond.
#[test]
fn open_loop_latency_counts_from_the_intended_send_time() {
    paused_open_loop("thrift", "framed-binary");
    paused_open_loop("grpc", "grpc-unary");
}

fn paused_open_loop(kind: &str, protocol: &str) {
    let (_echo, echo_addr) = bench_echo(kind);
    let load = Command::new(bench_bin())
        .args(["load", "--target", &echo_addr.to_string(), "--protocol", protocol, "--rate", "1000", "-c", "1"])
        .args(["-d", "2s", "--warmup", "0s", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = load.id() as i32;
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) takes plain integers; the pid is our own child's, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let out = load.wait_with_output().unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && json.contains("\"error_total\":0"), "{protocol}: {json}");
    let field = |name: &str| -> f64 {
        json.split(&format!("\"{name}\":")).nth(1).and_then(|s| s.split([',', '}']).next()).unwrap().parse().unwrap()
    };
    eprintln!("{protocol}: {json}");
    assert!(field("requests") >= 1800.0, "{protocol}: 1000/s for 2 s, the overdue ones included: {json}");
    assert!(field("p90_us") >= 150_000.0, "{protocol}: the 500 ms pause must show in p90: {json}");
    assert!(field("max_us") >= 400_000.0, "{protocol}: the first request due in the pause waited all of it: {json}");
}

/// The gRPC half of the bench kit: `ringway-bench echo grpc` behind the `ringway` binary,
/// driven by `ringway-bench load` in all three gRPC modes, every reply message checked.
#[test]
fn bench_grpc_load_through_the_ringway_binary() {
    let (_echo, echo_addr) = bench_echo("grpc");
    let dir = temp_dir("grpc-bench");
    let path = dir.join("ringway.toml");
    std::fs::write(
        &path,
        format!(
            "[runtime]\nworkers = 1\n[[listener]]\nname = \"g\"\nprotocol = \"grpc\"\naddress = \"127.0.0.1:0\"\n\
             routes = [ {{ cluster = \"echo\" }} ]\n[[cluster]]\nname = \"echo\"\nendpoints = [\"{echo_addr}\"]\n"
        ),
    )
    .unwrap();
    let mut ringway = Ringway::start(&path);
    let target = ringway.addr.to_string();
    for proto in ["grpc-unary", "grpc-server-stream", "grpc-bidi"] {
        bench_load_checks_out(&target, proto, "2");
    }
    // Open loop: calls at a fixed rate whatever the replies do, every reply message checked.
    for (proto, per_call) in [("grpc-unary", 1), ("grpc-server-stream", 10)] {
        let out = Command::new(bench_bin())
            .args(["load", "--target", &target, "--protocol", proto, "--rate", "2000", "-c", "2"])
            .args(["-d", "500ms", "--warmup", "100ms", "--json"])
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && json.contains("\"error_total\":0"), "{proto} open loop: {json}");
        let requests: u64 =
            json.split("\"requests\":").nth(1).and_then(|s| s.split(',').next()).unwrap().parse().unwrap();
        assert!((700 * per_call..=1100 * per_call).contains(&requests), "{proto}: 2000/s for 0.5 s: {json}");
    }
    ringway.signal(libc::SIGTERM);
    assert_eq!(ringway.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
}

/// Log rotation as logrotate does it: the file is renamed, SIGUSR1 makes ringway open the
/// path again, and later lines go to the new file while the renamed one keeps the old ones.
#[test]
fn sigusr1_reopens_access_logs_after_rotation() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let dir = temp_dir("usr1");
    let log = dir.join("access.log");
    let toml = config("auto", &backend.addr, "").replace(
        r#"routes = [ { cluster = "main" } ]"#,
        &format!("access_log = {{ path = \"{}\" }}\nroutes = [ {{ cluster = \"main\" }} ]", log.display()),
    );
    assert!(toml.contains("access_log"), "{toml}");
    let path = dir.join("ringway.toml");
    std::fs::write(&path, toml).unwrap();
    let mut rw = Ringway::start(&path);
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap_or_default().lines().count();
    let mut c = Client::connect(rw.addr, Wire::Binary);
    for seq in 0..5 {
        assert_eq!(c.call("before", seq, "x"), Reply::Ok("before:x".into()));
    }
    assert!(common::eventually(Duration::from_secs(5), || lines(&log) == 5));
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rw.signal(libc::SIGUSR1);
    assert!(common::eventually(Duration::from_secs(5), || rw.logged("access log") && rw.logged("reopened")));
    for seq in 0..3 {
        assert_eq!(c.call("after", seq, "x"), Reply::Ok("after:x".into()));
    }
    assert!(common::eventually(Duration::from_secs(5), || lines(&log) == 3), "new file: {}", lines(&log));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!((old.lines().count(), old.contains("\"after\"")), (5, false));
    rw.signal(libc::SIGTERM);
    assert!(rw.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
}
