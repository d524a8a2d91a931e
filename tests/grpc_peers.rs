//! The gRPC test peers against each other, with nothing in between: the tonic echo server and
//! client (`ringway_bench::grpc_echo`) and the grpcio ones (`tests/py/grpc_peer.py`). The
//! proxy tests make the same calls through ringway; these show the peers themselves behave,
//! so a failure there is the proxy's.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringway_bench::grpc_echo::{path, pattern, EchoClient, EchoServer};
use tonic::Code;

use common::eventually;
use common::grpc::{h2_call, python_grpc_client, python_grpc_server};

const METHODS: [&str; 4] = ["Unary", "ServerStream", "ClientStream", "Bidi"];
const WAIT: Duration = Duration::from_secs(5);
const SHORT: Option<Duration> = Some(Duration::from_secs(10));

fn start() -> (EchoServer, EchoClient) {
    let server = EchoServer::start("127.0.0.1:0", 2).expect("echo server starts");
    let client = EchoClient::connect(server.addr).expect("client connects");
    (server, client)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// --- tonic client -> tonic server --------------------------------------------------------

#[test]
fn unary_echoes_the_request() {
    let (server, client) = start();
    let (_, reply, _) = client.unary("Unary", b("hello grpc"), &[], SHORT).unwrap();
    assert_eq!(reply, b("hello grpc"));
    assert!(eventually(WAIT, || server.stats().streams_completed == 1), "{:?}", server.stats());
    let stats = server.stats();
    assert_eq!((stats.streams_started, stats.messages_received, stats.messages_sent), (1, 1, 1));
    assert_eq!((stats.streams_cancelled, stats.connections), (0, 1));
}

#[test]
fn unknown_method_is_unimplemented() {
    let (_server, client) = start();
    let err = client.unary("Nope", b("x"), &[], SHORT).unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}

#[test]
fn server_stream_sends_x_count_copies() {
    let (_server, client) = start();
    assert_eq!(client.server_stream(b("tick"), &[], SHORT).unwrap(), vec![b("tick"); 3], "default count");
    let got = client.server_stream(b("tock"), &[("x-count", "5"), ("x-interval-ms", "5")], SHORT).unwrap();
    assert_eq!(got, vec![b("tock"); 5]);
    assert!(client.server_stream(b("none"), &[("x-count", "0")], SHORT).unwrap().is_empty());
    let sized = client.server_stream(b("x"), &[("x-count", "2"), ("x-size", "1000")], SHORT).unwrap();
    assert_eq!(sized, vec![pattern(1000); 2]);
}

#[test]
fn client_stream_concatenates_or_counts() {
    let (_server, client) = start();
    let msgs = vec![b("a"), b("bc"), b("def")];
    assert_eq!(client.client_stream(msgs, &[], SHORT).unwrap(), b("abcdef"));
    let many = vec![b("x"); 7];
    assert_eq!(client.client_stream(many, &[("x-reply", "count")], SHORT).unwrap(), b("7"));
    assert_eq!(client.client_stream(vec![], &[("x-reply", "count")], SHORT).unwrap(), b("0"));
}

#[test]
fn bidi_echoes_each_message() {
    let (server, client) = start();
    let msgs: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("ping {i}"))).collect();
    assert_eq!(client.bidi(msgs.clone(), &[], SHORT).unwrap(), msgs);
    assert!(eventually(WAIT, || server.stats().messages_sent == 10), "{:?}", server.stats());
}

/// `x-echo-*` keys, `-bin` included, come back unchanged as response headers and trailers.
#[test]
fn metadata_is_echoed_as_headers_and_trailers() {
    let (server, client) = start();
    let raw = "\u{0}\u{1}raw\u{7f}é";
    let md = [("x-echo-plain", "hello"), ("x-echo-raw-bin", raw), ("x-other", "not echoed")];
    for method in METHODS {
        let reply = client.call(method, vec![b("m")], &md, SHORT).unwrap();
        for (place, map) in [("headers", &reply.headers), ("trailers", &reply.trailers)] {
            assert_eq!(map.get("x-echo-plain").unwrap(), "hello", "{method} {place}");
            let bin = map.get_bin("x-echo-raw-bin").unwrap().to_bytes().unwrap();
            assert_eq!(bin, raw.as_bytes(), "{method} {place}");
            assert!(map.get("x-other").is_none(), "{method} {place}");
        }
        // Unchanged: the base64 text the server got is the text that came back.
        let sent = server.stats().last_request_headers.unwrap();
        assert_eq!(
            sent.get("x-echo-raw-bin").unwrap().as_bytes(),
            reply.trailers.get_bin("x-echo-raw-bin").unwrap().as_encoded_bytes()
        );
    }
}

/// `x-status` ends every method with that status in one HEADERS frame with END_STREAM,
/// carrying the `x-echo-*` keys too. (The raw checks use messages without spaces: tonic
/// percent-encodes spaces in `grpc-message`, which the spec allows but does not require.)
#[test]
fn x_status_is_trailers_only() {
    let (server, client) = start();
    let err =
        client.unary("Unary", b("x"), &[("x-status", "5"), ("x-message", "no such echo"), ("x-echo-why", "st")], SHORT);
    let err = err.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no such echo"));
    assert_eq!(err.metadata().get("x-echo-why").unwrap(), "st");

    let md = [("x-status", "9"), ("x-message", "not-now"), ("x-echo-why", "st")];
    for method in METHODS {
        let r = h2_call(server.addr, &path(method), &md, &[b"one", b"two"]).unwrap();
        assert!(r.trailers_only, "{method}: {r:?}");
        assert_eq!(r.headers.get("grpc-status").unwrap(), "9", "{method}");
        assert_eq!(r.headers.get("grpc-message").unwrap(), "not-now", "{method}");
        assert_eq!(r.headers.get("x-echo-why").unwrap(), "st", "{method}");
        assert!(r.messages.is_empty() && r.trailers.is_none(), "{method}: {r:?}");
    }
    assert!(eventually(WAIT, || server.stats().streams_completed == 5), "{:?}", server.stats());
}

/// ServerStream with `x-count` and `x-status` streams first, then ends with the status in
/// real trailers.
#[test]
fn server_stream_status_after_messages() {
    let (server, _client) = start();
    let md = [("x-count", "2"), ("x-status", "14"), ("x-message", "went-away"), ("x-echo-k", "v")];
    let r = h2_call(server.addr, &path("ServerStream"), &md, &[b"msg"]).unwrap();
    assert!(!r.trailers_only);
    assert_eq!(r.headers.get("x-echo-k").unwrap(), "v");
    assert_eq!(r.messages, vec![b("msg"); 2]);
    let trailers = r.trailers.unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "14");
    assert_eq!(trailers.get("grpc-message").unwrap(), "went-away");
    assert_eq!(trailers.get("x-echo-k").unwrap(), "v");
}

#[test]
fn malformed_x_value_is_invalid_argument() {
    let (_server, client) = start();
    let err = client.unary("Unary", b("x"), &[("x-delay-ms", "soon")], SHORT).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

/// A client deadline shorter than `x-delay-ms`: DEADLINE_EXCEEDED at about the deadline, and
/// the server saw `grpc-timeout` and the call ending early.
#[test]
fn deadline_exceeded_is_seen_by_the_server() {
    let (server, client) = start();
    let start = Instant::now();
    let err =
        client.unary("Unary", b("slow"), &[("x-delay-ms", "3000")], Some(Duration::from_millis(200))).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1500), "took {took:?}");
    let timeout = server.stats().last_grpc_timeout.expect("grpc-timeout header reached the server");
    assert!(timeout.len() >= 2 && timeout.ends_with(['H', 'M', 'S', 'm', 'u', 'n']), "grpc-timeout {timeout:?}");
    assert!(eventually(WAIT, || server.stats().streams_cancelled == 1), "{:?}", server.stats());
    let stats = server.stats();
    assert_eq!((stats.streams_completed, stats.deadlines_expired), (0, 0), "the client's reset came first: {stats:?}");
}

/// A client that sends `grpc-timeout` but never resets: the server ends the call itself,
/// DEADLINE_EXCEEDED, `DEADLINE_GRACE` (500 ms) after the deadline, and counts it apart.
#[test]
fn server_deadline_fires_when_no_reset_arrives() {
    let (server, _client) = start();
    let start = Instant::now();
    let r = h2_call(server.addr, &path("Unary"), &[("grpc-timeout", "100m"), ("x-delay-ms", "3000")], &[b"x"]).unwrap();
    let took = start.elapsed();
    assert!(r.trailers_only, "{r:?}");
    assert_eq!(r.headers.get("grpc-status").unwrap(), "4");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(2500), "took {took:?}");
    let stats = server.stats();
    assert_eq!((stats.deadlines_expired, stats.streams_cancelled), (1, 0), "{stats:?}");
}

/// A call dropped by the client while the server waits is counted as cancelled, whatever the
/// method (request streams are left open by `cancel_after`).
#[test]
fn client_cancel_is_counted_for_every_method() {
    let (server, client) = start();
    for (i, method) in METHODS.into_iter().enumerate() {
        client.cancel_after(method, Duration::from_millis(50));
        let want = i as u64 + 1;
        assert!(eventually(WAIT, || server.stats().streams_cancelled == want), "{method}: {:?}", server.stats());
    }
    let stats = server.stats();
    assert_eq!((stats.streams_started, stats.streams_completed), (4, 0), "{stats:?}");
    // The connection is still good.
    assert_eq!(client.unary("Unary", b("after"), &[], SHORT).unwrap().1, b("after"));
}

#[test]
fn four_mib_messages_both_ways() {
    let (_server, client) = start();
    let big = pattern(4 << 20);
    assert_eq!(client.unary("Unary", big.clone(), &[], SHORT).unwrap().1, big, "4 MiB echo");
    let size = (4 << 20).to_string();
    assert_eq!(client.unary("Unary", b("small"), &[("x-size", &size)], SHORT).unwrap().1, big, "x-size reply");
    let quarters: Vec<Bytes> = (0..4).map(|i| big.slice(i << 20..(i + 1) << 20)).collect();
    assert_eq!(client.client_stream(quarters, &[], SHORT).unwrap(), big, "4 x 1 MiB up, 4 MiB down");
    assert_eq!(client.bidi(vec![big.clone(); 2], &[], SHORT).unwrap(), vec![big; 2], "bidi 2 x 4 MiB");
}

#[test]
fn five_hundred_concurrent_unary_calls_on_one_connection() {
    let (server, client) = start();
    assert_eq!(client.concurrent_unary(500, 256), 500);
    let stats = server.stats();
    assert_eq!((stats.connections, stats.streams_started), (1, 500), "{stats:?}");
}

/// Graceful shutdown (GOAWAY) lets the call in flight finish, then the server is gone.
#[test]
fn graceful_shutdown_lets_a_slow_call_finish() {
    let (server, client) = start();
    std::thread::scope(|s| {
        let slow = s.spawn(|| client.unary("Unary", b("slow"), &[("x-delay-ms", "500")], SHORT));
        assert!(eventually(WAIT, || server.stats().streams_started == 1));
        let addr = server.addr;
        let start = Instant::now();
        server.shutdown(WAIT);
        let took = start.elapsed();
        assert_eq!(slow.join().unwrap().unwrap().1, b("slow"), "the in-flight call completed");
        assert!(took >= Duration::from_millis(200) && took < WAIT, "shutdown waited {took:?} for the call");
        assert!(std::net::TcpStream::connect(addr).is_err(), "still listening after shutdown");
    });
}

// --- tonic client -> grpcio server ---------------------------------------------------------

fn python_server() -> (common::ChildGuard, SocketAddr, EchoClient) {
    let (guard, port) = python_grpc_server();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let client = EchoClient::connect(addr).expect("tonic connects to grpcio");
    (guard, addr, client)
}

#[test]
fn tonic_client_grpcio_server_methods() {
    let (_py, _, client) = python_server();
    assert_eq!(client.unary("Unary", b("hello"), &[], SHORT).unwrap().1, b("hello"));
    assert_eq!(client.server_stream(b("t"), &[("x-count", "4")], SHORT).unwrap(), vec![b("t"); 4]);
    assert_eq!(client.client_stream(vec![b("a"), b("b")], &[], SHORT).unwrap(), b("ab"));
    assert_eq!(client.client_stream(vec![b("a"); 3], &[("x-reply", "count")], SHORT).unwrap(), b("3"));
    let msgs: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("m{i}"))).collect();
    assert_eq!(client.bidi(msgs.clone(), &[], SHORT).unwrap(), msgs);
}

#[test]
fn tonic_client_grpcio_server_metadata_status_deadline() {
    let (_py, addr, client) = python_server();
    let raw = "\u{0}\u{1}raw\u{7f}é";
    let reply = client.call("Unary", vec![b("m")], &[("x-echo-plain", "hi"), ("x-echo-raw-bin", raw)], SHORT).unwrap();
    for (place, map) in [("headers", &reply.headers), ("trailers", &reply.trailers)] {
        assert_eq!(map.get("x-echo-plain").unwrap(), "hi", "{place}");
        assert_eq!(map.get_bin("x-echo-raw-bin").unwrap().to_bytes().unwrap(), raw.as_bytes(), "{place}");
    }

    let err = client.unary("Unary", b("x"), &[("x-status", "7"), ("x-message", "nope"), ("x-echo-why", "st")], SHORT);
    let err = err.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::PermissionDenied, "nope"));
    assert_eq!(err.metadata().get("x-echo-why").unwrap(), "st");
    let r = h2_call(addr, &path("Unary"), &[("x-status", "7"), ("x-message", "nope")], &[b"x"]).unwrap();
    assert!(r.trailers_only, "grpcio: {r:?}");
    assert_eq!(r.headers.get("grpc-status").unwrap(), "7");

    let start = Instant::now();
    let err =
        client.unary("Unary", b("slow"), &[("x-delay-ms", "3000")], Some(Duration::from_millis(200))).unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(1500), "took {:?}", start.elapsed());
}

#[test]
fn tonic_client_grpcio_server_large_and_concurrent() {
    let (_py, _, client) = python_server();
    let big = pattern(4 << 20);
    assert_eq!(client.unary("Unary", big.clone(), &[], SHORT).unwrap().1, big);
    let size = (4 << 20).to_string();
    assert_eq!(client.unary("Unary", b("small"), &[("x-size", &size)], SHORT).unwrap().1, big);
    assert_eq!(client.concurrent_unary(200, 64), 200);
}

// --- grpcio client -> tonic server ---------------------------------------------------------

macro_rules! grpcio_client_cases {
    ($($name:ident => $case:literal,)*) => {
        mod grpcio_client_tonic_server {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let server = EchoServer::start("127.0.0.1:0", 2).expect("echo server starts");
                    match python_grpc_client(server.addr, $case) {
                        Ok(details) => eprintln!("grpcio {}: {details}", $case),
                        Err(why) => panic!("grpcio client case {}: {why}", $case),
                    }
                    if $case == "deadline" {
                        let stats = server.stats();
                        assert!(stats.last_grpc_timeout.is_some(), "{stats:?}");
                        assert!(eventually(WAIT, || server.stats().streams_cancelled == 1), "{:?}", server.stats());
                        assert_eq!(server.stats().deadlines_expired, 0, "grpcio reset the call itself");
                    }
                }
            )*
        }
    };
}

grpcio_client_cases! {
    unary => "unary",
    server_stream => "server_stream",
    client_stream => "client_stream",
    bidi => "bidi",
    metadata => "metadata",
    deadline => "deadline",
    status => "status",
    large => "large",
    concurrent => "concurrent",
}
