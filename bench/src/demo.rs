//! `ringway-bench demo` (`cargo run --release -- demo` from the repository root): the example
//! config on loopback with an echo backend behind it, a short load through ringway and through
//! the direct path, and the table. Needs nothing installed.

use std::net::SocketAddr;
use std::time::Duration;

use crate::echo::EchoServer;
use crate::{report, run_load, BenchProtocol, LoadSpec};
use ringway::config::{Address, Config};
use ringway::control::Server;

/// The example config shipped in conf/ringway.toml, built into the binary.
const EXAMPLE: &str = include_str!("../../conf/ringway.toml");

/// Runs the demo and returns the printed table.
pub fn run(duration: Duration) -> std::io::Result<String> {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO)?;
    let mut config = Config::parse(EXAMPLE).map_err(|e| std::io::Error::other(e.to_string()))?;
    // Same config, but on free loopback ports, one worker, and the echo backend behind it.
    config.runtime.workers = 1;
    for l in &mut config.listeners {
        l.address = Address::Tcp("127.0.0.1:0".parse().unwrap());
    }
    if let Some(a) = &mut config.admin {
        a.address = Address::Tcp("127.0.0.1:0".parse().unwrap());
    }
    for c in &mut config.clusters {
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
        println!("ringway demo: admin endpoint on http://{a} (GET /healthz, /ready, /config, /stats)");
    }
    let mut rows = Vec::new();
    for (c, m) in [(1, 1), (32, 10)] {
        for (name, target) in [("direct", echo.addr), ("ringway", proxy)] {
            let spec = LoadSpec {
                target,
                protocol: BenchProtocol::FramedBinary,
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
            rows.push((format!("{name} {c}x{m}"), r));
        }
    }
    let stats = server.shutdown();
    let mut out = report::table(&rows, false);
    out.push_str(&format!(
        "\nringway forwarded {} requests and returned {} replies; every reply was checked against its request.\n\
         Same machine for everything here, so these are a smoke test, not a benchmark: see perf/compare.sh.\n",
        stats.requests, stats.protocols.thrift.replies
    ));
    Ok(out)
}
