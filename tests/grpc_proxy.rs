//! gRPC through ringway with real peers: tonic client → ringway → tonic server (and the
//! PyPI grpcio peers), on both drivers. The echo service is `ringway_bench::grpc_echo`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringway::config::Config;
use ringway::control::Server;
use ringway_bench::grpc_echo::{EchoClient, EchoServer};
use tonic::Code;

/// ringway with one gRPC listener named "grpc" routing everything to cluster "echo".
struct GrpcProxy {
    server: Option<Server>,
    addr: SocketAddr,
}

impl GrpcProxy {
    fn start(driver: &str, listener_extra: &str, routes: &str, clusters: &str) -> GrpcProxy {
        let toml = format!(
            r#"
[runtime]
workers = 2
driver = "{driver}"
drain_timeout = "5s"
drain_idle_close = "50ms"
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
{listener_extra}
routes = [ {routes} ]
{clusters}
"#
        );
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{toml}"));
        let server = Server::start(config).expect("proxy starts");
        let addr = server.local_addr("grpc").unwrap();
        GrpcProxy { server: Some(server), addr }
    }

    /// Everything to one echo backend.
    fn to(driver: &str, backend: SocketAddr) -> GrpcProxy {
        GrpcProxy::start(driver, "", r#"{ cluster = "echo" }"#, &common::cluster("echo", &[backend.to_string()], ""))
    }

    fn stop(mut self) -> ringway::stats::StatsSnapshot {
        self.server.take().unwrap().shutdown()
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn backend() -> EchoServer {
    EchoServer::start("127.0.0.1:0", 2).expect("echo server starts")
}

fn client(addr: SocketAddr) -> EchoClient {
    EchoClient::connect(addr).expect("client connects")
}

both_drivers! {
    fn unary_and_all_streaming_modes_pass_through(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"hello"), &[], None).unwrap();
        assert_eq!(reply, Bytes::from_static(b"hello"));
        let msgs = c.server_stream(Bytes::from_static(b"s"), &[("x-count", "50")], None).unwrap();
        assert_eq!(msgs.len(), 50);
        assert!(msgs.iter().all(|m| m == &Bytes::from_static(b"s")));
        let parts: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("part{i};"))).collect();
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        assert_eq!(c.client_stream(parts.clone(), &[], None).unwrap(), Bytes::from(joined));
        assert_eq!(c.bidi(parts.clone(), &[], None).unwrap(), parts);
        let stats = proxy.stop();
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.protocols.grpc.errors, 0);
    }

    fn metadata_binary_metadata_and_trailers_pass_unchanged(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        let md = [("x-echo-token", "abc-123"), ("x-echo-raw-bin", "\u{1}\u{2}bytes\u{0}"), ("x-other", "v")];
        let (headers, reply, trailers) = c.unary("Unary", Bytes::from_static(b"m"), &md, None).unwrap();
        assert_eq!(reply, Bytes::from_static(b"m"));
        assert_eq!(headers.get("x-echo-token").unwrap(), "abc-123");
        assert_eq!(trailers.get("x-echo-token").unwrap(), "abc-123");
        let bin = trailers.get_bin("x-echo-raw-bin").unwrap().to_bytes().unwrap();
        assert_eq!(&bin[..], "\u{1}\u{2}bytes\u{0}".as_bytes());
        // The upstream saw the client's own metadata and path.
        let seen = echo.stats().last_request_headers.unwrap();
        assert_eq!(seen.get("x-other").unwrap(), "v");
    }

    fn status_from_the_backend_and_trailers_only_responses_arrive(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        let err = c
            .unary("Unary", Bytes::from_static(b"x"), &[("x-status", "7"), ("x-message", "go away: no")], None)
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(err.message(), "go away: no");
    }

    fn no_route_is_unimplemented_and_the_connection_lives_on(driver: &str) {
        let echo = backend();
        let routes = r#"{ service = "ringway.test.Echo", method = "Unary", cluster = "echo" }"#;
        let proxy = GrpcProxy::start(driver, "", routes, &common::cluster("echo", &[echo.addr.to_string()], ""));
        let c = client(proxy.addr);
        let err = c.server_stream(Bytes::from_static(b"x"), &[], None).unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("/ringway.test.Echo/ServerStream"), "{}", err.message());
        let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"still here"), &[], None).unwrap();
        assert_eq!(reply, Bytes::from_static(b"still here"));
    }

    fn four_mib_messages_both_ways(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (_, reply, _) = c.unary("Unary", Bytes::from(big.clone()), &[], None).unwrap();
        assert_eq!(reply.len(), big.len());
        assert!(reply == big, "4 MiB echo differs");
        let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"x"), &[("x-size", "4194304")], None).unwrap();
        assert_eq!(reply.len(), 4 << 20);
    }

    fn hundreds_of_concurrent_streams_over_few_connections(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::start(
            driver,
            "",
            r#"{ cluster = "echo" }"#,
            &common::cluster("echo", &[echo.addr.to_string()], "max_connections_per_endpoint = 2\nmax_requests_per_connection = 100"),
        );
        let c = client(proxy.addr);
        assert_eq!(c.concurrent_unary(500, 100), 500);
        let stats = echo.stats();
        assert!(stats.connections <= 4, "2 workers x 2 connections at most, got {}", stats.connections);
    }

    fn deadline_is_forwarded_reduced_and_enforced(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        let t0 = Instant::now();
        let err = c
            .unary("Unary", Bytes::from_static(b"x"), &[("x-delay-ms", "5000")], Some(Duration::from_millis(300)))
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(t0.elapsed() < Duration::from_secs(3));
        let seen = echo.stats().last_grpc_timeout.expect("grpc-timeout forwarded");
        let fwd = ringway::grpc::wire::parse_timeout(seen.as_bytes()).expect("valid grpc-timeout");
        assert!(fwd <= Duration::from_millis(300) && fwd > Duration::from_millis(100), "forwarded {seen}");
    }

    fn client_cancel_reaches_the_upstream(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        c.cancel_after("Bidi", Duration::from_millis(200));
        assert!(
            common::eventually(Duration::from_secs(5), || echo.stats().streams_cancelled >= 1),
            "upstream never saw the cancel: {:?}",
            echo.stats()
        );
        let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"after"), &[], None).unwrap();
        assert_eq!(reply, Bytes::from_static(b"after"));
    }

    fn connect_failure_moves_on_to_the_next_endpoint(driver: &str) {
        let refusing = common::Refusing::new();
        let dead = refusing.addr;
        let echo = backend();
        // Round robin: the dead endpoint's turn comes on every worker.
        let extra = "connect_failure_backoff = \"30s\"\nlb = \"round_robin\"";
        let clusters = common::cluster("half", &[dead.to_string(), echo.addr.to_string()], extra);
        let proxy = GrpcProxy::start(driver, "", r#"{ cluster = "half" }"#, &clusters);
        let c = client(proxy.addr);
        for i in 0..10u8 {
            let (_, reply, _) = c.unary("Unary", Bytes::from(vec![i; 8]), &[], None).unwrap();
            assert_eq!(reply, Bytes::from(vec![i; 8]));
        }
        // At most one failed connect per worker, then the dead endpoint is left alone.
        let failures = proxy.stop().connect_failures;
        assert!((1..=2).contains(&failures), "{failures}");
    }

    fn unreachable_upstream_is_unavailable_with_a_reason(driver: &str) {
        let refusing = common::Refusing::new();
        let dead = refusing.addr;
        let proxy = GrpcProxy::to(driver, dead);
        let c = client(proxy.addr);
        let err = c.unary("Unary", Bytes::from_static(b"x"), &[], None).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("connect to upstream"), "{}", err.message());
    }
}

both_drivers! {
    fn drain_lets_open_streams_finish_then_closes(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let addr = proxy.addr;
        let call = std::thread::spawn(move || {
            let c = client(addr);
            c.unary("Unary", Bytes::from_static(b"slow"), &[("x-delay-ms", "700")], None)
        });
        assert!(common::eventually(Duration::from_secs(5), || echo.stats().streams_started >= 1));
        let stats = proxy.stop();
        let (_, reply, _) = call.join().unwrap().expect("the open stream finished during the drain");
        assert_eq!(reply, Bytes::from_static(b"slow"));
        assert_eq!(stats.protocols.grpc.errors, 0);
    }

    fn upstream_graceful_goaway_fails_no_request_in_flight(driver: &str) {
        let echo = backend();
        let echo_addr = echo.addr;
        let proxy = GrpcProxy::to(driver, echo_addr);
        let addr = proxy.addr;
        let c = client(addr);
        let (_, warm, _) = c.unary("Unary", Bytes::from_static(b"warm"), &[], None).unwrap();
        assert_eq!(warm, Bytes::from_static(b"warm"));
        let call = std::thread::spawn(move || {
            let c = client(addr);
            c.unary("Unary", Bytes::from_static(b"in flight"), &[("x-delay-ms", "500")], None)
        });
        assert!(common::eventually(Duration::from_secs(5), || echo.stats().streams_started >= 2));
        // tonic's graceful shutdown: GOAWAY, then finish the streams it has.
        echo.shutdown(Duration::from_secs(5));
        let (_, reply, _) = call.join().unwrap().expect("the in-flight call survives the upstream GOAWAY");
        assert_eq!(reply, Bytes::from_static(b"in flight"));
        // A new backend on the same port: new streams go to a new connection.
        let again = EchoServer::start(&echo_addr.to_string(), 1).expect("rebind the backend port");
        let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"next"), &[], None).unwrap();
        assert_eq!(reply, Bytes::from_static(b"next"));
        assert!(again.stats().streams_started >= 1);
        assert_eq!(proxy.stop().protocols.grpc.errors, 0);
    }
}

/// The PyPI grpcio cases, each a separate run of `tests/py/grpc_peer.py client`.
const PY_CASES: [&str; 9] =
    ["unary", "server_stream", "client_stream", "bidi", "metadata", "deadline", "status", "large", "concurrent"];

both_drivers! {
    fn grpcio_client_through_ringway_to_tonic(driver: &str) {
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        for case in PY_CASES {
            let r = common::grpc::python_grpc_client(proxy.addr, case);
            assert!(r.is_ok(), "grpcio client case {case}: {r:?}");
        }
        assert_eq!(proxy.stop().panics, 0);
    }

    fn tonic_client_through_ringway_to_grpcio(driver: &str) {
        let (_py, port) = common::grpc::python_grpc_server();
        let backend: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let proxy = GrpcProxy::to(driver, backend);
        let c = client(proxy.addr);
        let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"to python"), &[], None).unwrap();
        assert_eq!(reply, Bytes::from_static(b"to python"));
        let msgs = c.server_stream(Bytes::from_static(b"p"), &[("x-count", "7")], None).unwrap();
        assert_eq!(msgs.len(), 7);
        let parts: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("{i}"))).collect();
        assert_eq!(c.bidi(parts.clone(), &[], None).unwrap(), parts);
        let md = [("x-echo-k", "v1"), ("x-echo-k-bin", "\u{0}\u{1}")];
        let (headers, _, trailers) = c.unary("Unary", Bytes::from_static(b"m"), &md, None).unwrap();
        assert_eq!(headers.get("x-echo-k").unwrap(), "v1");
        assert_eq!(trailers.get("x-echo-k").unwrap(), "v1");
        assert_eq!(&trailers.get_bin("x-echo-k-bin").unwrap().to_bytes().unwrap()[..], b"\x00\x01");
        let err = c.unary("Unary", Bytes::from_static(b"x"), &[("x-status", "9"), ("x-message", "nope")], None).unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "nope"));
        let err = c
            .unary("Unary", Bytes::from_static(b"x"), &[("x-delay-ms", "3000")], Some(Duration::from_millis(200)))
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        let big = Bytes::from(vec![7u8; 4 << 20]);
        let (_, reply, _) = c.unary("Unary", big.clone(), &[], None).unwrap();
        assert!(reply == big);
        assert_eq!(c.concurrent_unary(200, 64), 200);
    }
}

both_drivers! {
    fn a_long_quiet_stream_is_not_cut(driver: &str) {
        // No idle cut: a server stream with 1.5 s gaps between messages runs to its end, and
        // the proxy sends no PING of its own towards the backend meanwhile (none is needed).
        let echo = backend();
        let proxy = GrpcProxy::to(driver, echo.addr);
        let c = client(proxy.addr);
        let t0 = Instant::now();
        let msgs = c
            .server_stream(Bytes::from_static(b"slow"), &[("x-count", "3"), ("x-interval-ms", "1500")], None)
            .unwrap();
        assert_eq!(msgs.len(), 3);
        assert!(t0.elapsed() >= Duration::from_secs(3));
        assert_eq!(proxy.stop().protocols.grpc.errors, 0);
    }
}

both_drivers! {
    fn reload_moves_new_streams_and_lets_open_ones_finish(driver: &str) {
        let (a, b) = (backend(), backend());
        let mut proxy = GrpcProxy::to(driver, a.addr);
        let addr = proxy.addr;
        let c = client(addr);
        c.unary("Unary", Bytes::from_static(b"to a"), &[], None).unwrap();
        let slow = std::thread::spawn(move || {
            let c = client(addr);
            c.unary("Unary", Bytes::from_static(b"slow on a"), &[("x-delay-ms", "600")], None)
        });
        assert!(common::eventually(Duration::from_secs(5), || a.stats().streams_started >= 2));
        let toml = format!(
            "[runtime]\nworkers = 2\ndriver = \"{driver}\"\n[[listener]]\nname = \"grpc\"\nprotocol = \"grpc\"\n\
             address = \"127.0.0.1:0\"\nroutes = [ {{ cluster = \"echo\" }} ]\n{}",
            common::cluster("echo", &[b.addr.to_string()], "")
        );
        proxy.server.as_mut().unwrap().reload(Config::parse(&toml).unwrap()).unwrap();
        for _ in 0..4 {
            c.unary("Unary", Bytes::from_static(b"to b"), &[], None).unwrap();
        }
        assert_eq!(b.stats().streams_started, 4, "new streams go to the new cluster");
        let (_, reply, _) = slow.join().unwrap().expect("the stream open on the old pool finished");
        assert_eq!(reply, Bytes::from_static(b"slow on a"));
        assert_eq!(a.stats().streams_started, 2);
        assert_eq!(proxy.stop().protocols.grpc.errors, 0);
    }
}
