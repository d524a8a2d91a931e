//! Shared test harness: start ringway in-process on port 0, real Apache Thrift peers (the
//! crates.io `thrift` crate here, PyPI `thrift` through `tests/py`), and a TTHeader peer built
//! from the byte layout of ref §2. Everything binds 127.0.0.1 and is stopped by handle.
#![allow(dead_code)]

pub mod apache;
pub mod grpc;
pub mod prom;
pub mod ttheader;
pub mod ttstream;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringway::config::Config;
use ringway::control::Server;

/// `ringway-bench` (package `bench/`), built into the same directory as `ringway` by
/// `scripts/test.sh` (`cargo build --workspace --bins`) before any test runs.
pub fn bench_bin() -> std::path::PathBuf {
    let b = std::path::Path::new(env!("CARGO_BIN_EXE_ringway")).with_file_name("ringway-bench");
    assert!(b.exists(), "{} is not built: run scripts/test.sh, or cargo build --workspace --bins first", b.display());
    b
}

/// Starts `ringway-bench echo KIND` on a port of its own choosing and returns it with the
/// address it printed: nothing can take the port between a choice and the bind.
pub fn bench_echo(kind: &str) -> (ChildGuard, SocketAddr) {
    use std::io::BufRead;
    let mut echo = ChildGuard(
        Command::new(bench_bin())
            .args(["echo", kind, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(echo.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("echo {kind} printed {line:?}"));
    (echo, addr)
}

/// A server with a 4 KiB receive buffer that writes `greeting` to each connection it accepts
/// and then reads nothing, so what a peer writes to it backs up; once the returned flag is
/// set it resets every connection (RST, as a crashing host). Lives at most 60 s.
pub fn stalling_server(greeting: Vec<u8>) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    sock.listen(16).unwrap();
    let l: std::net::TcpListener = sock.into();
    let (addr, reset) = (l.local_addr().unwrap(), std::sync::Arc::new(AtomicBool::new(false)));
    let r = reset.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        l.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Ok((mut c, _)) = l.accept() {
                c.set_nonblocking(false).unwrap();
                if c.write_all(&greeting).is_ok() {
                    held.push(c);
                }
            }
            if r.load(Ordering::SeqCst) {
                for c in held.drain(..) {
                    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (addr, reset)
}

/// A port on 127.0.0.1 that refuses connections, reserved for as long as this lives: a socket
/// bound without `SO_REUSEADDR` and never listening. A connect to `addr` is refused, and no other
/// socket can bind the port meanwhile, the port-0 listener of a proxy under test included.
///
/// A listener bound and dropped at once frees its port, and the kernel may hand it out again:
/// CI at 45fda32 gave it to the proxy's own listener, whose "dead" cluster then sent every stream
/// back into the proxy, 1,024 deep.
pub struct Refusing {
    pub addr: SocketAddr,
    held: socket2::Socket,
}

impl Refusing {
    pub fn new() -> Refusing {
        let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        held.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let addr = held.local_addr().unwrap().as_socket().unwrap();
        Refusing { addr, held }
    }

    /// Frees the port for a server the test starts on it next, and returns it.
    pub fn release(self) -> u16 {
        drop(self.held);
        self.addr.port()
    }
}

/// How many TCP sockets on this machine are connected to 127.0.0.1:`port` and not yet closed
/// by their owner (ESTABLISHED or CLOSE_WAIT), from `/proc/net/tcp`: once a server is gone,
/// the connections a proxy still holds to it.
pub fn sockets_open_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && (f[3] == "01" || f[3] == "08")
        })
        .count()
}

/// Runs a test body once per driver: `epoll` always, `io_uring` where the kernel allows it.
#[macro_export]
macro_rules! both_drivers {
    ($(fn $name:ident($d:ident: &str) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($d: &str) $body
            #[test]
            fn epoll() { run("epoll") }
            #[test]
            fn io_uring() {
                if ringway::worker::io_uring_available() {
                    run("io_uring")
                } else {
                    eprintln!("io_uring is not available on this machine: io_uring variant skipped");
                }
            }
        }
    )*};
}

/// A ringway server running in this process with one Thrift listener named "thrift".
pub struct Proxy {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl Proxy {
    /// `body` is the TOML after `[runtime]` and the listener line: routes and clusters.
    pub fn start(driver: &str, routes: &str, clusters: &str) -> Proxy {
        Proxy::start_with(driver, 2, routes, clusters)
    }

    /// Like `start` with a given number of workers.
    pub fn start_with(driver: &str, workers: usize, routes: &str, clusters: &str) -> Proxy {
        Proxy::start_full(driver, workers, "", routes, clusters)
    }

    /// Like `start_with`, with extra keys for the listener.
    pub fn start_full(driver: &str, workers: usize, listener_extra: &str, routes: &str, clusters: &str) -> Proxy {
        let toml = format!(
            r#"
[runtime]
workers = {workers}
driver = "{driver}"
drain_timeout = "5s"
drain_idle_close = "50ms"
[[listener]]
name = "thrift"
protocol = "thrift"
address = "127.0.0.1:0"
max_frame_size = "1MiB"
{listener_extra}
routes = [ {routes} ]
{clusters}
"#
        );
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{toml}"));
        let server = Server::start(config).expect("proxy starts");
        let addr = server.local_addr("thrift").unwrap();
        Proxy { server: Some(server), addr }
    }

    pub fn server(&mut self) -> &mut Server {
        self.server.as_mut().unwrap()
    }

    /// Drains and stops, returning the summed worker counters.
    pub fn stop(mut self) -> ringway::stats::StatsSnapshot {
        self.server.take().unwrap().shutdown()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// A `[[cluster]]` block.
pub fn cluster(name: &str, endpoints: &[String], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!("[[cluster]]\nname = {name:?}\nendpoints = [{}]\n{extra}\n", eps.join(", "))
}

/// A child process that is killed (by handle) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tests/py/theader_peer.py server` and returns it with its port.
pub fn python_theader_server(protocol: &str) -> (ChildGuard, u16) {
    use std::io::BufRead;
    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/theader_peer.py"))
        .args(["server", "--protocol", protocol])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (see README: pip install -r tests/py/requirements.txt)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("python server printed {line:?}"));
    (ChildGuard(child), port)
}

/// Runs the Python THeader client against `port` and returns its JSON verdict.
pub fn python_theader_client(
    port: u16,
    protocol: &str,
    clients: usize,
    calls: usize,
    method: &str,
) -> serde_json_lite::Verdict {
    let out = Command::new("timeout")
        .args(["60", "python3", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/theader_peer.py"), "client"])
        .args(["--port", &port.to_string(), "--protocol", protocol, "--method", method])
        .args(["--clients", &clients.to_string(), "--calls", &calls.to_string()])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    serde_json_lite::Verdict::parse(&stdout, &String::from_utf8_lossy(&out.stderr))
}

/// Just enough JSON reading for the Python client's one-line verdict.
pub mod serde_json_lite {
    #[derive(Debug)]
    pub struct Verdict {
        pub ok: usize,
        pub raw: String,
        pub no_errors: bool,
        pub exceptions: usize,
    }

    impl Verdict {
        pub fn parse(stdout: &str, stderr: &str) -> Verdict {
            let line =
                stdout.lines().last().unwrap_or_else(|| panic!("python client printed nothing; stderr: {stderr}"));
            let ok = line
                .split("\"ok\": ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("bad verdict {line}; stderr: {stderr}"));
            let no_errors = line.contains("\"errors\": []");
            let exceptions = line.matches("\"type\":").count();
            Verdict { ok, raw: line.to_string(), no_errors, exceptions }
        }
    }
}

/// Waits until `f` is true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
