//! `ringway-bench demo` (`cargo run --release -- demo` from the repository root): the example
//! config on loopback with a Thrift echo backend behind it, plus a gRPC listener in front of
//! the tonic echo backend; a short load through ringway and through the direct path for each,
//! the table, and a few headline series read back from ringway's admin endpoint. Needs nothing
//! installed.

use std::net::SocketAddr;
use std::time::Duration;

use crate::echo::EchoServer;
use crate::{report, run_load, BenchProtocol, LoadSpec};
use ringway::config::{Address, Config};
use ringway::control::Server;

/// The example config shipped in conf/ringway.toml, built into the binary.
const EXAMPLE: &str = include_str!("../../conf/ringway.toml");

/// The gRPC half the demo adds to the example (its backend's port is filled in below).
const GRPC: &str = r#"
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
routes = [ { name = "echo", service = "ringway.test.Echo", cluster = "grpc-echo" } ]

[[cluster]]
name = "grpc-echo"
endpoints = ["GRPC_BACKEND"]
"#;

/// Runs the demo and returns the printed table.
pub fn run(duration: Duration) -> std::io::Result<String> {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO)?;
    let grpc_echo = crate::grpc_echo::EchoServer::start("127.0.0.1:0", 1)?;
    let text = format!("{EXAMPLE}{}", GRPC.replace("GRPC_BACKEND", &grpc_echo.addr.to_string()));
    let mut config = Config::parse(&text).map_err(|e| std::io::Error::other(e.to_string()))?;
    // Same config, but on free loopback ports, one worker, and the echo backend behind it.
    config.runtime.workers = 1;
    for l in &mut config.listeners {
        l.address = Address::Tcp("127.0.0.1:0".parse().unwrap());
    }
    if let Some(a) = &mut config.admin {
        a.address = Address::Tcp("127.0.0.1:0".parse().unwrap());
    }
    for c in config.clusters.iter_mut().filter(|c| c.name != "grpc-echo") {
        c.endpoints = vec![Address::Tcp(echo.addr)];
    }
    let server = Server::start(config)?;
    let proxy: SocketAddr = server.local_addr("thrift").expect("example has a listener named thrift");
    println!(
        "ringway demo: echo backend on {}, ringway ({}) on {proxy}; {:?} per run",
        echo.addr,
        server.drivers().join(", "),
        duration
    );
    if let Some(a) = server.admin_addr() {
        println!(
            "ringway demo: admin endpoint on http://{a} (GET /metrics, /stats, /clusters, /config, /ready, /healthz)"
        );
    }
    let grpc_proxy: SocketAddr = server.local_addr("grpc").expect("the demo adds a listener named grpc");
    let mut rows = Vec::new();
    let runs = [
        ("", BenchProtocol::FramedBinary, (1, 1), echo.addr, proxy),
        ("", BenchProtocol::FramedBinary, (32, 10), echo.addr, proxy),
        ("grpc ", BenchProtocol::GrpcUnary, (4, 4), grpc_echo.addr, grpc_proxy),
    ];
    for (tag, protocol, (c, m), direct, through) in runs {
        for (name, target) in [("direct", direct), ("ringway", through)] {
            let spec = LoadSpec {
                target,
                protocol,
                connections: c,
                inflight: m,
                rate: None,
                warmup: Duration::from_millis(300),
                duration,
                payload: 64,
                threads: 1,
                progress: false,
            };
            let r = run_load(&spec);
            rows.push((format!("{tag}{name} {c}x{m}"), r));
        }
    }
    let headlines = server.admin_addr().map(headlines).unwrap_or_default();
    let stats = server.shutdown();
    let mut out = report::table(&rows, false);
    out.push_str(&format!(
        "\nringway forwarded {} requests (Thrift and gRPC) and returned {} Thrift replies; every reply was checked against its request.\n\
         Same machine for everything here, so these are a smoke test, not a benchmark: see perf/compare.sh.\n",
        stats.requests, stats.protocols.thrift.replies
    ));
    out.push_str(&headlines);
    Ok(out)
}

/// A few series from the admin endpoint, as an operator would look first: requests and
/// latency per route, errors, gRPC statuses, connections per worker.
fn headlines(admin: SocketAddr) -> String {
    let Some(metrics) = http_get(admin, "/metrics") else { return String::new() };
    let wanted = [
        "ringway_requests_total",
        "ringway_proxy_errors_total",
        "ringway_grpc_responses_total",
        "ringway_downstream_connections_accepted_total",
        "ringway_upstream_connections_active",
    ];
    let mut out = format!("\nHeadline series from http://{admin}/metrics (non-zero):\n");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if wanted.contains(&name) && !line.ends_with(" 0") {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(stats) = http_get(admin, "/stats").and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) {
        out.push_str(&format!("Latency per route from http://{admin}/stats (all workers merged):\n"));
        for r in stats["routes"].as_array().into_iter().flatten().filter(|r| r["latency"]["count"].as_u64() > Some(0)) {
            let l = &r["latency"];
            out.push_str(&format!(
                "  {}/{}: {} calls, p50 {} us, p99 {} us, p99.9 {} us, max {} us\n",
                r["listener"].as_str().unwrap_or(""),
                r["route"].as_str().unwrap_or(""),
                l["count"],
                l["p50_us"],
                l["p99_us"],
                l["p999_us"],
                l["max_us"]
            ));
        }
    }
    out
}

/// The body of `GET path` (HTTP/1.1, `connection: close`).
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: ringway\r\nconnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}
