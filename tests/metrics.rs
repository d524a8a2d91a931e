//! The metrics as an operator's tools read them: exact counts in `GET /metrics` after a known
//! mix of Thrift calls (two routes, two dialects, oneway, the backend's own EXCEPTIONs, no
//! route, a dead cluster) and gRPC calls with known statuses, on both drivers; the text parsed
//! by `promtool check metrics` and by Python's `prometheus_client`; and a real Prometheus
//! server scraping the endpoint and answering queries for ringway's series.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::apache::{Backend, Client, Reply, Wire};
use common::grpc::h2_call;
use common::prom::{get, parse, value};
use common::{eventually, ChildGuard, Refusing};
use ringway::config::Config;
use ringway::control::Server;
use ringway_bench::grpc_echo::{EchoClient, EchoServer};

const SHORT: Option<Duration> = Some(Duration::from_secs(10));

/// A Thrift listener with routes `ping`, `echo`, `fail` (to the binary echo backend), `dead`
/// (to a port nothing listens on) and `compact` (methods starting with `c`, to the compact echo
/// backend), no catch-all; a gRPC listener whose one route takes the echo service only.
fn start(driver: &str, thrift: &Backends, grpc: SocketAddr) -> Server {
    let toml = format!(
        r#"
[runtime]
workers = 2
driver = "{driver}"
drain_timeout = "5s"
[admin]
address = "127.0.0.1:0"
[[listener]]
name = "thrift"
address = "127.0.0.1:0"
routes = [
  {{ name = "ping", method = "ping", cluster = "main" }},
  {{ name = "echo", method = "echo", cluster = "main" }},
  {{ name = "fail", method = "fail", cluster = "main" }},
  {{ name = "dead", method = "dead", cluster = "dead" }},
  {{ name = "compact", method_prefix = "c", cluster = "compact" }},
]
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
routes = [ {{ name = "echo", service = "ringway.test.Echo", cluster = "gecho" }} ]
{}
{}
{}
{}
"#,
        common::cluster("main", &[thrift.binary.endpoint()], ""),
        common::cluster("compact", &[thrift.compact.endpoint()], ""),
        common::cluster("dead", &[thrift.dead.addr.to_string()], ""),
        common::cluster("gecho", &[grpc.to_string()], ""),
    );
    Server::start(Config::parse(&toml).unwrap()).unwrap()
}

/// Apache Thrift echo backends, one per protocol the clients speak, and a port that refuses
/// connections for the dead route.
struct Backends {
    binary: Backend,
    compact: Backend,
    dead: Refusing,
}

impl Backends {
    fn start() -> Backends {
        Backends {
            binary: Backend::start(Wire::Binary, Duration::ZERO),
            compact: Backend::start(Wire::Compact, Duration::ZERO),
            dead: Refusing::new(),
        }
    }
}

/// The known mix of calls. Returns the downstream connections it opened per listener.
fn traffic(server: &Server, grpc_server: &EchoServer) -> (usize, usize) {
    let proxy = server.local_addr("thrift").unwrap();
    let mut binary = Client::connect(proxy, Wire::Binary);
    for seq in 0..7 {
        assert_eq!(binary.call("ping", seq, "p"), Reply::Ok("ping:p".into()));
    }
    for seq in 10..15 {
        assert_eq!(binary.call("echo", seq, "e"), Reply::Ok("echo:e".into()));
    }
    for seq in 20..23 {
        let r = binary.call("nothing", seq, "x");
        assert!(matches!(r, Reply::Exception { kind: thrift::ApplicationErrorKind::UnknownMethod, .. }), "{r:?}");
    }
    for seq in 30..32 {
        let r = binary.call("dead", seq, "x");
        assert!(matches!(r, Reply::Exception { .. }), "{r:?}");
    }
    for seq in 40..43 {
        let r = binary.call("fail", seq, "x");
        assert!(matches!(r, Reply::Exception { kind: thrift::ApplicationErrorKind::InternalError, .. }), "{r:?}");
    }
    // A oneway, then a call on the same connection: the oneway is forwarded before the reply.
    binary.send("echo", 50, "one-way", true);
    assert_eq!(binary.call("echo", 51, "e"), Reply::Ok("echo:e".into()));
    let mut compact = Client::connect(proxy, Wire::Compact);
    for seq in 0..4 {
        assert_eq!(compact.call("cecho", seq, "c"), Reply::Ok("cecho:c".into()));
    }

    let gproxy = server.local_addr("grpc").unwrap();
    let client = EchoClient::connect(gproxy).unwrap();
    for _ in 0..3 {
        client.unary("Unary", Bytes::from_static(b"hi"), &[], SHORT).unwrap();
    }
    for _ in 0..2 {
        let err = client.unary("Unary", Bytes::from_static(b"hi"), &[("x-status", "5")], SHORT).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    let r = h2_call(gproxy, "/other.Service/Call", &[], &[b"x"]).unwrap();
    assert_eq!(r.headers.get("grpc-status").unwrap(), "12", "no route: UNIMPLEMENTED");
    assert!(eventually(Duration::from_secs(5), || grpc_server.stats().streams_completed == 5));
    (2, 2) // thrift: binary + compact; grpc: the tonic channel and the h2 call
}

both_drivers! {
    fn every_counter_matches_what_was_sent(driver: &str) {
        let backends = Backends::start();
        let grpc = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let server = start(driver, &backends, grpc.addr);
        let (thrift_conns, grpc_conns) = traffic(&server, &grpc);
        let admin = server.admin_addr().unwrap();
        // The clients' connections close when the traffic ends; wait until both workers saw it.
        let m = |labels: &[(&str, &str)], name: &str| value(&parse(&get(admin, "/metrics").2), name, labels);
        assert!(eventually(Duration::from_secs(5), || {
            m(&[("listener", "thrift"), ("reason", "client_closed")], "ringway_downstream_connections_closed_total")
                == thrift_conns as f64
        }));
        let (status, content_type, body) = get(admin, "/metrics");
        assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
        let s = parse(&body);
        let v = |name: &str, labels: &[(&str, &str)]| value(&s, name, labels);
        let t = |route: &'static str| [("listener", "thrift"), ("route", route)];

        // Requests by route and dialect.
        let req = "ringway_requests_total";
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "ping"), ("dialect", "framed_binary")]), 7.0);
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "echo"), ("dialect", "framed_binary")]), 7.0, "5 + oneway + 1");
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "compact"), ("dialect", "framed_compact")]), 4.0);
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "compact"), ("dialect", "framed_binary")]), 0.0);
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "fail")]), 3.0);
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "dead")]), 2.0);
        assert_eq!(v(req, &[("listener", "thrift"), ("route", "")]), 3.0, "no route");
        assert_eq!(v(req, &[("listener", "thrift"), ("protocol", "thrift")]), 26.0);
        // Outcomes.
        let resp = "ringway_responses_total";
        assert_eq!(v(resp, &[&t("ping")[..], &[("outcome", "forwarded")]].concat()), 7.0);
        assert_eq!(v(resp, &[&t("echo")[..], &[("outcome", "forwarded")]].concat()), 6.0);
        assert_eq!(v(resp, &[&t("compact")[..], &[("outcome", "forwarded")]].concat()), 4.0);
        assert_eq!(v(resp, &[&t("echo")[..], &[("outcome", "no_reply")]].concat()), 1.0);
        assert_eq!(v(resp, &[&t("fail")[..], &[("outcome", "forwarded")]].concat()), 3.0);
        assert_eq!(v("ringway_upstream_exceptions_total", &t("fail")), 3.0, "the backend's own EXCEPTIONs");
        assert_eq!(v("ringway_upstream_exceptions_total", &[("listener", "thrift")]), 3.0);
        assert_eq!(v(resp, &[&t("dead")[..], &[("outcome", "proxy_error")]].concat()), 2.0);
        let err = "ringway_proxy_errors_total";
        assert_eq!(v(err, &[&t("dead")[..], &[("kind", "connect_failed")]].concat()), 2.0);
        assert_eq!(v(err, &[&t("")[..], &[("kind", "no_route")]].concat()), 3.0);
        assert_eq!(v(err, &[("listener", "thrift")]), 5.0, "no other error of any kind");
        // Latency: one observation per call answered (the oneway has no reply).
        let count = "ringway_request_duration_seconds_count";
        for (route, n) in [("ping", 7.0), ("echo", 6.0), ("compact", 4.0), ("fail", 3.0), ("dead", 2.0), ("", 3.0)] {
            assert_eq!(v(count, &t(route)), n, "latency count of route {route:?}");
            let inf = [&t(route)[..], &[("le", "+Inf")]].concat();
            assert_eq!(v("ringway_request_duration_seconds_bucket", &inf), n);
        }
        assert!(v("ringway_request_duration_seconds_sum", &t("ping")) > 0.0);
        // Connections and bytes.
        assert_eq!(v("ringway_downstream_connections_accepted_total", &[("listener", "thrift")]), thrift_conns as f64);
        assert_eq!(v("ringway_downstream_connections_active", &[("listener", "thrift")]), 0.0);
        assert!(v("ringway_downstream_received_bytes_total", &[("listener", "thrift")]) > 0.0);
        assert!(v("ringway_downstream_sent_bytes_total", &[("listener", "thrift")]) > 0.0);
        assert!(v("ringway_upstream_connect_failures_total", &[("cluster", "dead")]) >= 1.0);
        assert_eq!(v("ringway_upstream_connections_opened_total", &[("cluster", "dead")]), 0.0);
        assert!(v("ringway_upstream_connections_opened_total", &[("cluster", "main")]) >= 1.0);

        // gRPC: statuses as the client saw them, the proxy's own UNIMPLEMENTED for no route.
        let g = |route: &'static str| [("listener", "grpc"), ("route", route)];
        assert_eq!(v(req, &[&g("echo")[..], &[("protocol", "grpc")]].concat()), 5.0);
        assert_eq!(v(req, &g("")), 1.0);
        let st = "ringway_grpc_responses_total";
        assert_eq!(v(st, &[&g("echo")[..], &[("grpc_status", "0")]].concat()), 3.0);
        assert_eq!(v(st, &[&g("echo")[..], &[("grpc_status", "5")]].concat()), 2.0);
        assert_eq!(v(st, &[&g("")[..], &[("grpc_status", "12")]].concat()), 1.0);
        assert_eq!(v(st, &[("listener", "grpc")]), 6.0, "one status per call");
        assert_eq!(v(resp, &[&g("echo")[..], &[("outcome", "forwarded")]].concat()), 5.0);
        assert_eq!(v(err, &[&g("")[..], &[("kind", "no_route")]].concat()), 1.0);
        assert_eq!(v(err, &[("listener", "grpc")]), 1.0);
        assert_eq!(v(count, &g("echo")), 5.0);
        assert_eq!(v(count, &g("")), 1.0);
        assert!(eventually(Duration::from_secs(5), || {
            m(&[("listener", "grpc")], "ringway_downstream_connections_accepted_total") == grpc_conns as f64
        }));
        // Every gRPC connection that closed is counted closed (nothing keeps its session alive).
        assert!(eventually(Duration::from_secs(5), || {
            m(&[("listener", "grpc")], "ringway_downstream_connections_active") == 0.0
                && m(&[("listener", "grpc"), ("reason", "client_closed")], "ringway_downstream_connections_closed_total")
                    == grpc_conns as f64
        }));
        // Process figures.
        assert_eq!(v("ringway_worker_info", &[("driver", if driver == "epoll" { "epoll" } else { "io_uring" })]), 2.0);
        assert_eq!(v("ringway_config_version", &[]), 1.0);
        assert!(v("ringway_process_resident_memory_bytes", &[]) > 1e6);
        assert!(v("ringway_process_open_fds", &[]) > 3.0);

        // /stats: the same figures with percentiles, merged across workers.
        let stats: serde_json::Value = serde_json::from_str(&get(admin, "/stats").2).unwrap();
        let routes = stats["routes"].as_array().unwrap();
        let ping = routes.iter().find(|r| r["listener"] == "thrift" && r["route"] == "ping").unwrap();
        assert_eq!(ping["requests"], 7);
        assert_eq!(ping["latency"]["count"], 7);
        let p = |k: &str| ping["latency"][k].as_u64().unwrap();
        assert!(p("p50_us") > 0 && p("p50_us") <= p("p90_us") && p("p99_us") <= p("p999_us") && p("p999_us") <= p("max_us"));
        let fail = routes.iter().find(|r| r["listener"] == "thrift" && r["route"] == "fail").unwrap();
        assert_eq!(fail["upstream_exceptions"], 3);
        let listener = stats["listeners"].as_array().unwrap().iter().find(|l| l["listener"] == "thrift").unwrap();
        assert_eq!(listener["latency"]["count"], 25, "every answered Thrift call of the listener");

        // /clusters: the dead endpoint's failures, the live one's connections.
        let clusters: serde_json::Value = serde_json::from_str(&get(admin, "/clusters").2).unwrap();
        let cl = |name: &str| clusters["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == name).unwrap().clone();
        let dead = &cl("dead")["endpoints"][0];
        assert!(dead["connect_failures"].as_u64().unwrap() >= 1, "{clusters}");
        assert_eq!(dead["connections_open"], 0);
        let main = &cl("main")["endpoints"][0];
        assert!(main["connections_open"].as_u64().unwrap() >= 1, "{clusters}");
        assert_eq!(main["connections_open_per_worker"].as_array().unwrap().len(), 2);
        assert_eq!(main["health"], "healthy");
        server.shutdown();
    }
}

/// Some traffic, then the exposition text.
fn exposition() -> (Server, Backends, EchoServer, String) {
    let backends = Backends::start();
    let grpc = EchoServer::start("127.0.0.1:0", 1).unwrap();
    let server = start("auto", &backends, grpc.addr);
    traffic(&server, &grpc);
    let body = get(server.admin_addr().unwrap(), "/metrics").2;
    (server, backends, grpc, body)
}

#[test]
fn promtool_accepts_the_exposition() {
    let (server, _b, _g, body) = exposition();
    let (passed, said) = common::prom::promtool_check(&body);
    assert!(passed, "promtool refused the exposition:\n{said}");
    assert!(said.trim().is_empty(), "promtool found problems (lint):\n{said}");
    server.shutdown();
}

#[test]
fn python_prometheus_client_parses_the_exposition() {
    let (server, _b, _g, body) = exposition();
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
req = sum(s.value for s in fams["ringway_requests"].samples if s.labels.get("route") == "ping")
hist = fams["ringway_request_duration_seconds"]
count = sum(s.value for s in hist.samples if s.name.endswith("_count") and s.labels.get("route") == "ping")
print(hist.type, int(req), int(count), len(fams))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(&words[..3], ["histogram", "7", "7"], "{stdout}");
    assert!(words[3].parse::<usize>().unwrap() > 20, "families: {stdout}");
    server.shutdown();
}

/// Percent-encodes a PromQL query for a URL.
fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_ringway_and_answers_queries() {
    let (server, _b, _g, _) = exposition();
    let admin = server.admin_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("ringway-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ringway\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; scripts/test.sh installs it)");
    let _guard = ChildGuard(child);
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = |q: &str| -> Option<serde_json::Value> {
        let mut s = TcpStream::connect(prom).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /api/v1/query?query={} HTTP/1.0\r\nhost: prometheus\r\n\r\n", urlencode(q)).ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let body = resp.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["result"].as_array().filter(|r| !r.is_empty()).map(|r| r[0]["value"][1].clone())
    };
    let mut seen = None;
    let found = eventually(Duration::from_secs(45), || {
        seen = query(r#"sum(ringway_requests_total{listener="thrift",route="ping"})"#);
        seen.as_ref().and_then(|v| v.as_str()) == Some("7")
    });
    assert!(found, "Prometheus never reported the 7 ping requests (last answer {seen:?})");
    assert_eq!(query(r#"up{job="ringway"}"#).and_then(|v| v.as_str().map(String::from)).as_deref(), Some("1"));
    let count = query(r#"sum(ringway_request_duration_seconds_count{listener="grpc",route="echo"})"#);
    assert_eq!(count.and_then(|v| v.as_str().map(String::from)).as_deref(), Some("5"));
    let p99 = query(r#"histogram_quantile(0.99, sum by (le) (ringway_request_duration_seconds_bucket{route="ping"}))"#);
    let p99: f64 = p99.and_then(|v| v.as_str().and_then(|s| s.parse().ok())).expect("a p99 from the buckets");
    assert!(p99 > 0.0 && p99 < 30.0, "p99 {p99}");
    drop(_guard);
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown();
}

/// Before any traffic a worker has made no pools yet: every configured endpoint is still
/// listed, healthy, with nothing open.
#[test]
fn clusters_lists_configured_endpoints_before_any_traffic() {
    let backends = Backends::start();
    let grpc = EchoServer::start("127.0.0.1:0", 1).unwrap();
    let server = start("auto", &backends, grpc.addr);
    let clusters: serde_json::Value = serde_json::from_str(&get(server.admin_addr().unwrap(), "/clusters").2).unwrap();
    let list = clusters["clusters"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{clusters}");
    for c in list {
        let ep = &c["endpoints"][0];
        assert_eq!((ep["health"].as_str(), ep["connections_open"].as_u64()), (Some("healthy"), Some(0)), "{clusters}");
        assert_eq!(ep["connections_open_per_worker"], serde_json::json!([0, 0]), "{clusters}");
    }
    server.shutdown();
}
