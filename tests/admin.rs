//! The admin endpoint as an operator's tools see it: plain HTTP/1.1 over a socket (what curl,
//! a load balancer's health check or Prometheus send), against ringway started in-process.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::apache::{Backend, Client, Reply, Wire};
use ringway::config::Config;
use ringway::control::Server;

fn server(driver: &str, backend: SocketAddr) -> Server {
    Server::start(Config::parse(&toml(driver, backend)).unwrap()).unwrap()
}

fn toml(driver: &str, backend: SocketAddr) -> String {
    format!(
        r#"
[runtime]
workers = 2
driver = "{driver}"
drain_timeout = "10s"
[admin]
address = "127.0.0.1:0"
max_request_size = "1KiB"
read_timeout = "300ms"
[[listener]]
name = "thrift"
address = "127.0.0.1:0"
routes = [ {{ cluster = "main" }} ]
{}
"#,
        common::cluster("main", &[backend.to_string()], "")
    )
}

/// One response: status, headers (lowercase names), body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response (with a content-length body) off `r`.
fn read_response(r: &mut BufReader<TcpStream>) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap_or_else(|| panic!("status line {line:?}")).parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap();
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Response { status, headers, body: String::from_utf8(body).unwrap() }
}

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn get(addr: SocketAddr, path: &str) -> Response {
    let (mut s, mut r) = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").unwrap();
    read_response(&mut r)
}

#[test]
fn healthz_and_ready_answer_on_one_kept_alive_connection() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let server = server("auto", backend.addr);
    let (mut s, mut r) = connect(server.admin_addr().expect("admin endpoint configured"));
    for (path, body) in [("/healthz", "ok\n"), ("/ready", "ready\n"), ("/healthz", "ok\n")] {
        write!(s, "GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n").unwrap();
        let resp = read_response(&mut r);
        assert_eq!((resp.status, resp.body.as_str()), (200, body), "{path}");
        assert_eq!(resp.header("connection"), None, "kept alive");
    }
    drop(s);
    server.shutdown();
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let server = server("auto", backend.addr);
    let addr = server.admin_addr().unwrap();
    let resp = get(addr, "/nope");
    assert_eq!(resp.status, 404);
    assert!(resp.body.contains("/nope"), "{resp:?}");
    let (mut s, mut r) = connect(addr);
    write!(s, "POST /healthz HTTP/1.1\r\nhost: admin\r\ncontent-length: 2\r\n\r\nhi").unwrap();
    let resp = read_response(&mut r);
    assert_eq!((resp.status, resp.header("allow")), (405, Some("GET")), "{resp:?}");
    // The connection is still good after a 405.
    write!(s, "GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).status, 200);
    // An embedded server (no control thread owning a config file) cannot reload or drain.
    write!(s, "POST /reload HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).status, 503);
    server.shutdown();
}

#[test]
fn requests_over_the_size_limit_are_refused_and_the_connection_closed() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let server = server("auto", backend.addr);
    let addr = server.admin_addr().unwrap();
    // A head over 1 KiB: 431.
    let (mut s, mut r) = connect(addr);
    write!(s, "GET /healthz HTTP/1.1\r\nx-filler: {}\r\n\r\n", "a".repeat(2000)).unwrap();
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_eq!(resp.header("connection"), Some("close"));
    // A body announced over 1 KiB: 413, before any of it is read.
    let (mut s, mut r) = connect(addr);
    write!(s, "POST /ready HTTP/1.1\r\ncontent-length: 4096\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).status, 413);
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0, "closed after the refusal");
    server.shutdown();
}

#[test]
fn a_client_that_goes_quiet_is_closed_after_the_read_timeout() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let server = server("auto", backend.addr);
    let (mut s, mut r) = connect(server.admin_addr().unwrap());
    let t0 = Instant::now();
    s.write_all(b"GET /heal").unwrap();
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0, "closed without an answer");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "closed after {waited:?}");
    server.shutdown();
}

both_drivers! {
    fn ready_turns_503_while_draining_and_healthz_stays_200(driver: &str) {
        // A slow request is in flight, so the drain lasts until its reply.
        let backend = Backend::start(Wire::Binary, Duration::from_millis(1500));
        let server = server(driver, backend.addr);
        let (proxy, admin) = (server.local_addr("thrift").unwrap(), server.admin_addr().unwrap());
        assert_eq!(get(admin, "/ready").status, 200);
        let slow = std::thread::spawn(move || Client::connect(proxy, Wire::Binary).call("slowDrain", 1, "x"));
        std::thread::sleep(Duration::from_millis(300));
        let drain = std::thread::spawn(move || server.shutdown());
        assert!(
            common::eventually(Duration::from_secs(2), || {
                let r = get(admin, "/ready");
                r.status == 503 && r.body == "draining\n"
            }),
            "/ready never said draining"
        );
        assert_eq!(get(admin, "/healthz").status, 200, "the process still lives");
        assert_eq!(slow.join().unwrap(), Reply::Ok("slowDrain:x".into()), "in-flight request finished");
        drain.join().unwrap();
    }
}

#[test]
fn config_shows_the_running_config_with_its_version_and_a_content_hash() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let mut server = server("auto", backend.addr);
    let admin = server.admin_addr().unwrap();
    let read = |addr| {
        let resp = get(addr, "/config");
        assert_eq!((resp.status, resp.header("content-type")), (200, Some("application/json")), "{resp:?}");
        serde_json::from_str::<serde_json::Value>(&resp.body).unwrap()
    };
    let v1 = read(admin);
    assert_eq!(v1["version"], 1);
    assert!(v1["source"].is_null(), "an embedded server has no file");
    let hash = v1["hash"].as_str().unwrap().to_string();
    assert!(hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    let c = &v1["config"];
    assert_eq!(c["runtime"]["workers"], 2);
    assert_eq!(c["runtime"]["drain_timeout"], "10s");
    assert_eq!(c["listener"][0]["name"], "thrift");
    assert_eq!(c["listener"][0]["protocol"], "thrift");
    assert_eq!(c["listener"][0]["max_frame_size"], 16 << 20, "defaults are filled in");
    assert_eq!(c["listener"][0]["routes"][0]["cluster"], "main");
    assert_eq!(c["cluster"][0]["endpoints"][0], backend.addr.to_string());
    assert_eq!(c["cluster"][0]["request_timeout"], "5s");
    assert_eq!(c["admin"]["read_timeout"], "300ms");

    // The same config again: a new version, the same hash.
    let same = Config::parse(&toml("auto", backend.addr)).unwrap();
    server.reload(same).unwrap();
    let v2 = read(admin);
    assert_eq!((v2["version"].as_u64(), v2["hash"].as_str()), (Some(2), Some(hash.as_str())));
    // A changed one: the hash changes with it.
    let changed =
        Config::parse(&toml("auto", backend.addr).replace("drain_timeout = \"10s\"", "drain_timeout = \"20s\""))
            .unwrap();
    server.reload(changed).unwrap();
    let v3 = read(admin);
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["config"]["runtime"]["drain_timeout"], "20s");
    assert_ne!(v3["hash"].as_str(), Some(hash.as_str()));
    server.shutdown();
}

#[test]
fn stats_counts_every_call_per_worker_and_in_total() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let server = server("auto", backend.addr);
    let (proxy, admin) = (server.local_addr("thrift").unwrap(), server.admin_addr().unwrap());
    // 4 clients (spread over the 2 workers by the kernel), 5 calls each.
    for c in 0..4 {
        let mut client = Client::connect(proxy, Wire::Binary);
        for seq in 1..=5 {
            assert_eq!(client.call("echo", seq, "x"), Reply::Ok("echo:x".into()), "client {c}");
        }
    }
    let resp = get(admin, "/stats");
    assert_eq!((resp.status, resp.header("content-type")), (200, Some("application/json")), "{resp:?}");
    let v: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(v["total"]["requests"], 20, "{v}");
    assert_eq!(v["total"]["replies"], 20, "{v}");
    assert_eq!(v["total"]["downstream_connections"], 4, "{v}");
    assert_eq!(v["total"]["exceptions"], 0, "{v}");
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{v}");
    let per_worker: u64 = workers.iter().map(|w| w["counters"]["requests"].as_u64().unwrap()).sum();
    assert_eq!(per_worker, 20, "the workers' counts add up to the total");
    assert_eq!(v["workers_not_answering"], serde_json::json!([]));
    server.shutdown();
}

/// `max_connections` per worker: a connection over it is closed as soon as it is accepted and
/// counted; the open ones keep working, and a place freed is taken again.
#[test]
fn connections_over_the_listeners_limit_are_closed_and_counted() {
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let toml = toml("auto", backend.addr)
        .replace("workers = 2", "workers = 1")
        .replace("address = \"127.0.0.1:0\"\nroutes", "address = \"127.0.0.1:0\"\nmax_connections = 2\nroutes");
    assert!(toml.contains("max_connections = 2"), "{toml}");
    let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
    let (proxy, admin) = (server.local_addr("thrift").unwrap(), server.admin_addr().unwrap());
    let mut a = Client::connect(proxy, Wire::Binary);
    let mut b = Client::connect(proxy, Wire::Binary);
    assert_eq!(a.call("echo", 1, "a"), Reply::Ok("echo:a".into()));
    assert_eq!(b.call("echo", 1, "b"), Reply::Ok("echo:b".into()));
    // The third is closed at once: its read sees the end of the stream.
    let mut third = TcpStream::connect(proxy).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(third.read(&mut byte), Ok(0) | Err(_)), "closed by the proxy");
    assert_eq!(a.call("echo", 2, "a"), Reply::Ok("echo:a".into()), "open connections untouched");
    let metrics = get(admin, "/metrics").body;
    let line = "ringway_downstream_connections_rejected_total{listener=\"thrift\",worker=\"0\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    // A place freed is taken again.
    drop(b);
    let mut c = None;
    let ok = common::eventually(Duration::from_secs(5), || {
        let mut client = Client::connect(proxy, Wire::Binary);
        client.send("echo", 1, "c", false);
        let answered = client.recv().is_ok();
        if answered {
            c = Some(client);
        }
        answered
    });
    assert!(ok && c.is_some(), "a new connection is served once one closed");
    server.shutdown();
}
