//! Access logs as an operator reads them: one JSON line per sampled request with the route,
//! cluster, endpoint, method, outcome, latency and sizes; sampling that logs about the share
//! asked for; and the lines counted in `/metrics`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::apache::{Backend, Client, Reply, Wire};
use common::eventually;
use ringway::config::Config;
use ringway::control::Server;
use ringway_bench::grpc_echo::{EchoClient, EchoServer};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringway-al-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(thrift: SocketAddr, grpc: SocketAddr, dir: &Path, thrift_sample: f64) -> Server {
    let toml = format!(
        r#"
[runtime]
workers = 2
[admin]
address = "127.0.0.1:0"
[[listener]]
name = "thrift"
address = "127.0.0.1:0"
access_log = {{ path = "{}", sample = {thrift_sample} }}
routes = [ {{ name = "echo", method = "echo", cluster = "main" }} ]
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
access_log = {{ path = "{}" }}
routes = [ {{ name = "all", cluster = "gecho" }} ]
{}
{}
"#,
        dir.join("thrift.log").display(),
        dir.join("grpc.log").display(),
        common::cluster("main", &[thrift.to_string()], ""),
        common::cluster("gecho", &[grpc.to_string()], ""),
    );
    Server::start(Config::parse(&toml).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn every_request_is_one_json_line_with_what_happened_to_it() {
    let dir = temp_dir("all");
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let grpc = EchoServer::start("127.0.0.1:0", 1).unwrap();
    let server = start(backend.addr, grpc.addr, &dir, 1.0);
    let mut c = Client::connect(server.local_addr("thrift").unwrap(), Wire::Binary);
    for seq in 0..3 {
        assert_eq!(c.call("echo", seq, "hello"), Reply::Ok("echo:hello".into()));
    }
    assert!(matches!(c.call("nope", 9, "x"), Reply::Exception { .. }));
    let g = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
    g.unary("Unary", Bytes::from_static(b"hi"), &[], Some(Duration::from_secs(5))).unwrap();
    let err = g.unary("Unary", Bytes::from_static(b"hi"), &[("x-status", "7")], Some(Duration::from_secs(5)));
    assert_eq!(err.unwrap_err().code(), tonic::Code::PermissionDenied);

    let thrift_log = dir.join("thrift.log");
    assert!(eventually(Duration::from_secs(5), || lines(&thrift_log).len() == 4), "{:?}", lines(&thrift_log));
    let t = lines(&thrift_log);
    let ok: Vec<_> = t.iter().filter(|l| l["outcome"] == "forwarded").collect();
    assert_eq!(ok.len(), 3);
    let l = ok[0];
    assert_eq!(
        (l["listener"].as_str(), l["route"].as_str(), l["cluster"].as_str()),
        (Some("thrift"), Some("echo"), Some("main"))
    );
    assert_eq!((l["protocol"].as_str(), l["method"].as_str()), (Some("thrift"), Some("echo")));
    assert_eq!(l["endpoint"], backend.addr.to_string());
    assert!(l["latency_us"].as_u64().unwrap() > 0);
    assert!(l["bytes_in"].as_u64().unwrap() > 20 && l["bytes_out"].as_u64().unwrap() > 20, "{l}");
    assert!(l["time"].as_str().unwrap().ends_with('Z') && l["time"].as_str().unwrap().len() == 24, "{l}");
    let refused = t.iter().find(|l| l["outcome"] == "no_route").expect("the unrouted call is logged");
    assert_eq!((refused["route"].as_str(), refused["method"].as_str()), (Some(""), Some("nope")));

    let grpc_log = dir.join("grpc.log");
    assert!(eventually(Duration::from_secs(5), || lines(&grpc_log).len() == 2), "{:?}", lines(&grpc_log));
    let gl = lines(&grpc_log);
    let statuses: Vec<u64> = gl.iter().map(|l| l["grpc_status"].as_u64().unwrap()).collect();
    assert!(statuses.contains(&0) && statuses.contains(&7), "{gl:?}");
    assert!(
        gl.iter().all(|l| l["method"] == "/ringway.test.Echo/Unary" && l["endpoint"] == grpc.addr.to_string()),
        "{gl:?}"
    );

    // The lines are counted per file.
    let admin = server.admin_addr().unwrap();
    let body = ureq_get(admin, "/metrics");
    let want = format!("ringway_access_log_lines_total{{file=\"{}\"}} 4", thrift_log.display());
    assert!(body.contains(&want), "{want} in\n{body}");
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sampling_logs_about_the_share_asked_for() {
    let dir = temp_dir("sample");
    let backend = Backend::start(Wire::Binary, Duration::ZERO);
    let grpc = EchoServer::start("127.0.0.1:0", 1).unwrap();
    let server = start(backend.addr, grpc.addr, &dir, 0.25);
    let mut c = Client::connect(server.local_addr("thrift").unwrap(), Wire::Binary);
    // Pipelined (one call at a time would wait on the test client's own Nagle delay).
    for round in 0..4 {
        assert_eq!(c.burst("s", round * 100, 100), 100);
    }
    let path = dir.join("thrift.log");
    // Settled when two reads a moment apart agree.
    let mut last = usize::MAX;
    assert!(eventually(Duration::from_secs(5), || {
        let n = lines(&path).len();
        let same = n == last;
        last = n;
        std::thread::sleep(Duration::from_millis(100));
        same
    }));
    // 400 draws at 1/4: 100 expected, standard deviation 8.7; 40..160 is beyond 6 of them.
    assert!((40..=160).contains(&last), "{last} of 400 lines at sample = 0.25");
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

fn ureq_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
