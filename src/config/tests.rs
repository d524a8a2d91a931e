use super::*;

const EXAMPLE: &str = r#"
[runtime]
workers = 2
driver = "epoll"
[[listener]]
name = "thrift"
protocol = "thrift"
address = "127.0.0.1:7000"
routes = [
  { service = "Echo", method = "ping", cluster = "echo" },
  { method_prefix = "get", cluster = "echo" },
  { cluster = "echo" },
]
[[cluster]]
name = "echo"
endpoints = ["127.0.0.1:9100", "unix:/run/echo.sock"]
connect_timeout = "250ms"
request_timeout = "1s"
max_connections_per_endpoint = 4
max_requests_per_connection = 256
"#;

#[test]
fn the_issue_example_parses_into_typed_values() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.runtime.workers, 2);
    assert_eq!(c.runtime.driver, DriverKind::Epoll);
    assert_eq!(c.listeners[0].routes.len(), 3);
    assert_eq!(c.listeners[0].routes[0].service.as_deref(), Some("Echo"));
    assert_eq!(c.clusters[0].connect_timeout, Duration::from_millis(250));
    assert_eq!(c.clusters[0].connect_failure_backoff, Duration::from_secs(2), "default");
    assert_eq!(c.clusters[0].endpoints[1], Address::Unix("/run/echo.sock".into()));
    assert_eq!(c.listeners[0].protocol.thrift().map(|t| t.max_frame_size), Some(ByteSize(16 << 20)));
}

#[test]
fn problems_are_reported_with_key_paths_all_at_once() {
    let bad =
        EXAMPLE.replace("{ cluster = \"echo\" },", "{ cluster = \"ech\" },").replace("\"250ms\"", "\"250 parsecs\"");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.0.contains(&"listener[0].routes[2].cluster: no cluster named \"ech\"".to_string()), "{err}");
    assert!(err.0.iter().any(|p| p.starts_with("cluster[0].connect_timeout:")), "{err}");
    assert_eq!(err.0.len(), 2, "{err}");
}

#[test]
fn unknown_keys_are_errors() {
    let err = Config::parse(&EXAMPLE.replace("request_timeout", "request_timout")).unwrap_err();
    assert!(err.to_string().contains("request_timout"), "{err}");
}

#[test]
fn the_admin_endpoint_is_off_unless_configured_and_its_limits_have_defaults() {
    assert_eq!(Config::parse(EXAMPLE).unwrap().admin, None);
    let with = |lines: &str| format!("{EXAMPLE}\n[admin]\n{lines}\n");
    let a = Config::parse(&with("address = \"127.0.0.1:9901\"")).unwrap().admin.unwrap();
    assert_eq!(a.address, Address::Tcp("127.0.0.1:9901".parse().unwrap()));
    assert_eq!((a.max_request_size, a.read_timeout), (ByteSize(64 << 10), Duration::from_secs(5)), "defaults");
    let a = Config::parse(&with(
        "address = \"unix:/run/rw-admin.sock\"\nmax_request_size = \"4KiB\"\nread_timeout = \"250ms\"",
    ))
    .unwrap()
    .admin
    .unwrap();
    assert_eq!(a.address, Address::Unix("/run/rw-admin.sock".into()));
    assert_eq!((a.max_request_size, a.read_timeout), (ByteSize(4096), Duration::from_millis(250)));
    let err = Config::parse(&with("max_request_size = 10")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("admin.address: missing")), "{err}");
    assert!(err.0.contains(&"admin.max_request_size: 10 is out of range 1KiB..=16MiB".to_string()), "{err}");
    let err = Config::parse(&with("address = \"127.0.0.1:9901\"\nport = 1")).unwrap_err();
    assert!(err.to_string().contains("port"), "unknown keys are errors: {err}");
}

#[test]
fn units_parse() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("10").is_err());
    assert_eq!(parse_byte_size("16MiB").unwrap(), 16 << 20);
    assert_eq!(parse_byte_size("4096").unwrap(), 4096);
    assert!(parse_byte_size("4 parsecs").is_err());
}

#[test]
fn coalescing_keys_default_turn_off_and_refuse_long_waits() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.runtime.coalesce_wait, Duration::from_micros(100), "default");
    assert_eq!(c.runtime.coalesce_min_streams, 128, "default");

    let with = |lines: &str| EXAMPLE.replace("driver = \"epoll\"\n", &format!("driver = \"epoll\"\n{lines}\n"));
    let c = Config::parse(&with("coalesce_wait = \"0\"\ncoalesce_min_streams = 8")).unwrap();
    assert_eq!(c.runtime.coalesce_wait, Duration::ZERO, "0 turns it off");
    assert_eq!(c.runtime.coalesce_min_streams, 8);
    let c = Config::parse(&with("coalesce_wait = \"0us\"")).unwrap();
    assert_eq!(c.runtime.coalesce_wait, Duration::ZERO);
    let c = Config::parse(&with("coalesce_wait = \"200us\"")).unwrap();
    assert_eq!(c.runtime.coalesce_wait, Duration::from_micros(200));

    let err = Config::parse(&with("coalesce_wait = \"5ms\"\ncoalesce_min_streams = 0")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("runtime.coalesce_wait:") && p.contains("1ms")), "{err}");
    assert!(err.0.iter().any(|p| p.starts_with("runtime.coalesce_min_streams:")), "{err}");
    let err = Config::parse(&with("coalesce_wait = \"fast\"")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("runtime.coalesce_wait:")), "{err}");
}

#[test]
fn busy_poll_is_off_by_default_and_refuses_long_spins() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.runtime.busy_poll, Duration::ZERO, "off by default");

    let with = |lines: &str| EXAMPLE.replace("driver = \"epoll\"\n", &format!("driver = \"epoll\"\n{lines}\n"));
    let c = Config::parse(&with("busy_poll = \"50us\"")).unwrap();
    assert_eq!(c.runtime.busy_poll, Duration::from_micros(50));
    let c = Config::parse(&with("busy_poll = \"0\"")).unwrap();
    assert_eq!(c.runtime.busy_poll, Duration::ZERO);
    let err = Config::parse(&with("busy_poll = \"5ms\"")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("runtime.busy_poll:") && p.contains("1ms")), "{err}");
    let err = Config::parse(&with("busy_poll = \"always\"")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("runtime.busy_poll:")), "{err}");
}

/// A listener takes the keys every listener has, plus those of its own protocol: a key of
/// another protocol is refused with its key path and names the protocol it belongs to.
#[test]
fn listener_keys_belong_to_their_protocol() {
    let thrift_with =
        |line: &str| EXAMPLE.replace("protocol = \"thrift\"\n", &format!("protocol = \"thrift\"\n{line}\n"));
    let err = Config::parse(&thrift_with("max_concurrent_streams = 100")).unwrap_err();
    assert_eq!(
        err.0,
        ["listener[0].max_concurrent_streams: is a grpc listener key; this listener's protocol is thrift"],
        "{err}"
    );
    let err = Config::parse(&thrift_with("max_frame_sise = \"1MiB\"")).unwrap_err();
    assert_eq!(err.0, ["listener[0].max_frame_sise: unknown key for a thrift listener"], "{err}");

    let grpc = EXAMPLE.replace("protocol = \"thrift\"", "protocol = \"grpc\"");
    let c = Config::parse(&grpc).unwrap();
    assert_eq!(c.listeners[0].protocol.grpc().map(|g| g.max_concurrent_streams), Some(256), "default");
    assert!(c.listeners[0].protocol.thrift().is_none());
    let grpc_with = |line: &str| grpc.replace("protocol = \"grpc\"\n", &format!("protocol = \"grpc\"\n{line}\n"));
    for key in ["max_frame_size = \"1MiB\"", "max_pending_requests = 10", "max_method_name = 100"] {
        let err = Config::parse(&grpc_with(key)).unwrap_err();
        let name = key.split(' ').next().unwrap();
        assert_eq!(
            err.0,
            [format!("listener[0].{name}: is a thrift listener key; this listener's protocol is grpc")],
            "{err}"
        );
    }
    // Keys every listener has are taken by both.
    assert!(Config::parse(&thrift_with("max_write_buffer = \"1MiB\"")).is_ok());
    assert!(Config::parse(&grpc_with("max_write_buffer = \"1MiB\"")).is_ok());
}

/// Each protocol's keys are typed and range-checked with their key path.
#[test]
fn protocol_keys_are_typed_and_range_checked() {
    let thrift_with =
        |line: &str| EXAMPLE.replace("protocol = \"thrift\"\n", &format!("protocol = \"thrift\"\n{line}\n"));
    let c = Config::parse(&thrift_with("max_frame_size = \"2MiB\"\nmax_pending_requests = 7")).unwrap();
    let t = c.listeners[0].protocol.thrift().copied().unwrap();
    assert_eq!((t.max_frame_size, t.max_pending_requests, t.max_method_name), (ByteSize(2 << 20), 7, 4096));
    let err = Config::parse(&thrift_with("max_pending_requests = \"many\"\nmax_frame_size = 10")).unwrap_err();
    assert!(
        err.0.contains(&"listener[0].max_pending_requests: expected an integer, found string".to_string()),
        "{err}"
    );
    assert!(err.0.contains(&"listener[0].max_frame_size: 10 is out of range 64..=1GiB".to_string()), "{err}");

    let grpc = EXAMPLE.replace(
        "protocol = \"thrift\"",
        "protocol = \"grpc\"\ninitial_stream_window = 100\nstream_stall_timeout = \"5s\"",
    );
    let err = Config::parse(&grpc).unwrap_err();
    assert_eq!(err.0, ["listener[0].initial_stream_window: 100 is out of range 65535..=2147483647"], "{err}");
    let c = Config::parse(&grpc.replace("initial_stream_window = 100", "initial_stream_window = \"64KiB\"")).unwrap();
    let g = c.listeners[0].protocol.grpc().copied().unwrap();
    assert_eq!((g.initial_stream_window, g.stream_stall_timeout), (65_536, Duration::from_secs(5)));
}

#[test]
fn routes_are_named_by_index_unless_named_and_names_are_unique_per_listener() {
    let c = Config::parse(EXAMPLE).unwrap();
    let names: Vec<&str> = c.listeners[0].routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["0", "1", "2"]);
    let named = EXAMPLE.replace("{ method_prefix = \"get\",", "{ name = \"reads\", method_prefix = \"get\",");
    assert_eq!(Config::parse(&named).unwrap().listeners[0].routes[1].name, "reads");
    let twice = EXAMPLE
        .replace("{ method_prefix = \"get\",", "{ name = \"x\", method_prefix = \"get\",")
        .replace("{ cluster = \"echo\" },\n]", "{ name = \"x\", cluster = \"echo\" },\n]");
    let err = Config::parse(&twice).unwrap_err();
    assert!(
        err.0.contains(&"listener[0].routes[2].name: route \"x\" is defined twice in this listener".to_string()),
        "{err}"
    );
}

#[test]
fn access_logs_are_off_unless_configured_and_their_keys_are_checked() {
    assert_eq!(Config::parse(EXAMPLE).unwrap().listeners[0].access_log, None);
    let with = |al: &str| {
        EXAMPLE.replace("address = \"127.0.0.1:7000\"", &format!("address = \"127.0.0.1:7000\"\naccess_log = {al}"))
    };
    let a = Config::parse(&with("{ path = \"/var/log/ringway/access.log\" }")).unwrap().listeners[0].access_log.clone();
    let a = a.unwrap();
    assert_eq!(
        (a.path.to_str(), a.sample, a.max_queued_lines),
        (Some("/var/log/ringway/access.log"), 1.0, 8192),
        "defaults"
    );
    let err = Config::parse(&with("{ path = \"a.log\", sample = 1.5, max_queued_lines = 0 }")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("listener[0].access_log.sample:")), "{err}");
    assert!(err.0.iter().any(|p| p.starts_with("listener[0].access_log.max_queued_lines:")), "{err}");
    let err = Config::parse(&with("{ sample = 0.5 }")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("listener[0].access_log.path: missing")), "{err}");
    assert!(Config::parse(&with("{ path = \"a.log\", smaple = 0.5 }")).is_err(), "unknown keys are errors");
}

#[test]
fn max_buffer_memory_defaults_and_is_range_checked() {
    assert_eq!(Config::parse(EXAMPLE).unwrap().runtime.max_buffer_memory.get(), 1 << 30);
    let with = |v: &str| EXAMPLE.replacen("[runtime]", &format!("[runtime]\nmax_buffer_memory = {v}"), 1);
    assert_eq!(Config::parse(&with("\"64MiB\"")).unwrap().runtime.max_buffer_memory.get(), 64 << 20);
    let err = Config::parse(&with("\"1KiB\"")).unwrap_err();
    assert!(err.0.iter().any(|e| e.starts_with("runtime.max_buffer_memory: ")), "{err}");
}

#[test]
fn write_stall_timeout_defaults_and_is_checked() {
    assert_eq!(Config::parse(EXAMPLE).unwrap().listeners[0].write_stall_timeout, Duration::from_secs(30));
    let with = |v: &str| {
        EXAMPLE.replace(
            "address = \"127.0.0.1:7000\"",
            &format!("address = \"127.0.0.1:7000\"\nwrite_stall_timeout = {v}"),
        )
    };
    assert_eq!(Config::parse(&with("\"250ms\"")).unwrap().listeners[0].write_stall_timeout, Duration::from_millis(250));
    let err = Config::parse(&with("\"0s\"")).unwrap_err();
    assert!(err.0.iter().any(|e| e.starts_with("listener[0].write_stall_timeout: ")), "{err}");
    let err = Config::parse(&with("\"soon\"")).unwrap_err();
    assert!(err.0.iter().any(|e| e.starts_with("listener[0].write_stall_timeout: ")), "{err}");
}

#[test]
fn max_connections_defaults_and_is_range_checked() {
    assert_eq!(Config::parse(EXAMPLE).unwrap().listeners[0].max_connections, 100_000);
    let with = |v: &str| {
        EXAMPLE.replace("address = \"127.0.0.1:7000\"", &format!("address = \"127.0.0.1:7000\"\nmax_connections = {v}"))
    };
    assert_eq!(Config::parse(&with("2")).unwrap().listeners[0].max_connections, 2);
    let err = Config::parse(&with("0")).unwrap_err();
    assert!(err.0.contains(&"listener[0].max_connections: 0 is out of range 1..=1000000".to_string()), "{err}");
}

#[test]
fn max_pending_requests_defaults_and_is_range_checked() {
    assert_eq!(Config::parse(EXAMPLE).unwrap().clusters[0].max_pending_requests, 1024);
    let with = |v: &str| {
        EXAMPLE.replace(
            "max_requests_per_connection = 256",
            &format!("max_requests_per_connection = 256\nmax_pending_requests = {v}"),
        )
    };
    assert_eq!(Config::parse(&with("2")).unwrap().clusters[0].max_pending_requests, 2);
    let err = Config::parse(&with("0")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("cluster[0].max_pending_requests: 0 is out of range")), "{err}");
}

#[test]
fn upstream_behaviour_keys_have_defaults_and_their_problems_key_paths() {
    let c = &Config::parse(EXAMPLE).unwrap().clusters[0];
    assert_eq!(c.lb, LbPolicy::LeastRequest);
    assert_eq!((c.max_requests, c.retries, c.retry_budget_percent), (4096, 1, 20));
    assert_eq!(c.health_check, None, "no active checks unless configured");
    assert_eq!(c.outlier, OutlierDetection::default());
    assert_eq!((c.outlier.consecutive_failures, c.outlier.max_ejection_percent), (5, 50));
    assert_eq!(c.outlier.max_ejected(2), 1, "one endpoint of two can be ejected");
    assert_eq!(c.dns_refresh, Duration::from_secs(5));
    assert!(c.endpoint_names.is_empty(), "literal addresses need no refresh");

    let with = |lines: &str| EXAMPLE.replace("max_requests_per_connection = 256", lines);
    let c = Config::parse(&with(
        "lb = \"hash\"\nhash_key = \"header:x-user\"\nhealth_check = { kind = \"grpc\", grpc_service = \"echo\" }\n\
         outlier_detection = { consecutive_failures = 0 }\nretries = 0",
    ))
    .unwrap()
    .clusters
    .remove(0);
    assert_eq!(c.lb, LbPolicy::Hash(HashKey::Header("x-user".into())));
    let hc = c.health_check.unwrap();
    assert_eq!(
        (hc.kind, hc.interval, hc.timeout, hc.unhealthy_threshold, hc.healthy_threshold),
        (CheckKind::Grpc, Duration::from_secs(1), Duration::from_millis(250), 3, 2)
    );
    assert_eq!((c.outlier.consecutive_failures, c.retries), (0, 0));

    let err = Config::parse(&with(
        "lb = \"random\"\nhash_key = \"method\"\nretries = 9\nhealth_check = { kind = \"udp\", timeout = \"2s\" }\n\
         outlier_detection = { max_ejection_percent = 101, base_ejection_time = \"1m\", max_ejection_time = \"1s\" }",
    ))
    .unwrap_err();
    for want in [
        "cluster[0].lb: unknown policy \"random\"",
        "cluster[0].hash_key: only for lb = \"hash\"",
        "cluster[0].retries: 9 is out of range 0..=5",
        "cluster[0].health_check.kind: unknown kind \"udp\"",
        "cluster[0].health_check.timeout: must be above zero and at most the interval",
        "cluster[0].outlier_detection.max_ejection_percent: 101 is out of range 0..=100",
        "cluster[0].outlier_detection.max_ejection_time: must be at least base_ejection_time",
    ] {
        assert!(err.0.iter().any(|p| p.starts_with(want)), "{want}\n{err}");
    }
}

#[test]
fn an_endpoint_written_as_a_name_resolves_to_every_address_and_is_refreshed() {
    let c = Config::parse(&EXAMPLE.replace("\"127.0.0.1:9100\", \"unix:/run/echo.sock\"", "\"localhost:9100\""))
        .unwrap()
        .clusters
        .remove(0);
    assert!(!c.endpoints.is_empty());
    assert!(c.endpoints.iter().all(|a| matches!(a, Address::Tcp(s) if s.ip().is_loopback() && s.port() == 9100)));
    assert_eq!(c.endpoint_names, ["localhost:9100"]);
    let err = Config::parse(&EXAMPLE.replace("\"unix:/run/echo.sock\"", "\"no-such-host.invalid:1\"")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("cluster[0].endpoints[1]: cannot resolve")), "{err}");
}

const DISCOVERY: &str = r#"
[[listener]]
address = "127.0.0.1:7000"
routes = [ { cluster = "echo" } ]
[[registry]]
name = "fleet"
kind = "etcd"
endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
[[cluster]]
name = "echo"
discovery = { registry = "fleet", service = "echo", tags = { env = "prod" } }
"#;

#[test]
fn a_cluster_discovers_its_endpoints_in_a_registry() {
    let c = Config::parse(DISCOVERY).unwrap();
    let r = &c.registries[0];
    assert_eq!((r.name.as_str(), r.prefix.as_str()), ("fleet", "kitex/registry-etcd"), "Kitex's default prefix");
    assert_eq!(r.endpoints.len(), 2);
    assert_eq!(r.endpoints[1].port, 22379);
    let d = c.clusters[0].discovery.as_ref().unwrap();
    assert_eq!((d.registry.as_str(), d.service.as_str()), ("fleet", "echo"));
    assert_eq!(d.tags.get("env").map(String::as_str), Some("prod"));
    assert!(d.keep_last_on_empty, "Kitex keeps its last list: the default");
    assert!(c.clusters[0].endpoints.is_empty());
}

#[test]
fn discovery_problems_name_their_keys() {
    let both = DISCOVERY.replace("name = \"echo\"\n", "name = \"echo\"\nendpoints = [\"127.0.0.1:9\"]\n");
    let err = Config::parse(&both).unwrap_err();
    assert!(err.0.contains(&"cluster[0]: give endpoints or discovery, not both".to_string()), "{err}");
    let err =
        Config::parse(&DISCOVERY.replace("registry = \"fleet\", service", "registry = \"flet\", service")).unwrap_err();
    assert!(
        err.0.iter().any(|p| p.starts_with("cluster[0].discovery.registry: no [[registry]] named \"flet\"")),
        "{err}"
    );
    let err = Config::parse(&DISCOVERY.replace("kind = \"etcd\"", "kind = \"consul\"")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("registry[0].kind: unknown registry kind \"consul\"")), "{err}");
    let err = Config::parse(&DISCOVERY.replace("http://127.0.0.1:2379", "https://127.0.0.1:2379")).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("registry[0].endpoints[0]:") && p.contains("TLS")), "{err}");
    let none =
        DISCOVERY.replace("discovery = { registry = \"fleet\", service = \"echo\", tags = { env = \"prod\" } }", "");
    let err = Config::parse(&none).unwrap_err();
    assert!(err.0.iter().any(|p| p.starts_with("cluster[0].endpoints: needs at least one endpoint")), "{err}");
}
