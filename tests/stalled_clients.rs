//! Clients that stop reading their replies (issue 15, item 4), on both drivers: a Thrift
//! client and a gRPC client each ask for far more than the proxy may queue for them and read
//! nothing. After the listener's `write_stall_timeout` the proxy closes them (gRPC: their
//! streams cancelled upstream), counts the close as `write_stall`, and the well-behaved
//! client sharing the same upstream connection sees no error before, during or after.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::apache::{Backend, Wire};
use common::grpc::raw_request;
use common::prom::{get, parse, value};
use common::ttheader::binary_message;
use common::{cluster, eventually};
use ringway::config::Config;
use ringway::control::Server;
use ringway::grpc::h2::frame::{self, settings::Settings, StreamId};
use ringway_bench::grpc_echo::EchoClient;

fn proxy(driver: &str, protocol: &str, endpoint: String) -> (Server, SocketAddr, SocketAddr) {
    let toml = format!(
        "[runtime]\nworkers = 1\ndriver = {driver:?}\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"l\"\nprotocol = {protocol:?}\naddress = \"127.0.0.1:0\"\n\
         write_stall_timeout = \"1s\"\nroutes = [{{ cluster = \"c\" }}]\n{}",
        cluster("c", &[endpoint], "max_connections_per_endpoint = 1\nrequest_timeout = \"20s\"")
    );
    let server = Server::start(Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))).unwrap();
    let (addr, admin) = (server.local_addr("l").unwrap(), server.admin_addr().unwrap());
    (server, addr, admin)
}

fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&parse(&get(admin, "/metrics").2), name, labels)
}

/// A socket with a small receive buffer that reads nothing: what the proxy writes to it
/// backs up at once.
fn non_reader(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_nodelay(true).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads what is left until the proxy's close shows (EOF or a reset), within `within`.
fn closed_by_peer(mut s: TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let end = Instant::now() + within;
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

both_drivers! {
    fn a_thrift_client_that_stops_reading_is_closed_and_others_are_untouched(driver: &str) {
        let backend = Backend::start(Wire::Binary, Duration::ZERO);
        let (server, addr, admin) = proxy(driver, "thrift", backend.endpoint());
        let closed = [("listener", "l"), ("reason", "write_stall")];

        // The stalled client: 64 calls whose replies are 256 KiB each (16 MiB, four times
        // the listener's max_write_buffer), written from a thread (its writes block once
        // the proxy stops reading it), and nothing read.
        let stalled = non_reader(addr);
        let mut w = stalled.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let text = "y".repeat(256 << 10);
            for seq in 1..=64 {
                let m = binary_message(1, "echo", seq, 1, &text);
                let mut f = (m.len() as u32).to_be_bytes().to_vec();
                f.extend_from_slice(&m);
                if w.write_all(&f).is_err() {
                    return;
                }
            }
        });

        // A client that reads: its calls share the one upstream connection, before, while
        // and after the other is cut off.
        let mut good = TcpStream::connect(addr).unwrap();
        good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut ok, mut seq) = (0, 1000);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && metric(admin, "ringway_downstream_connections_closed_total", &closed) == 0.0 {
            seq += 1;
            let m = binary_message(1, "echo", seq, 1, "small");
            good.write_all(&[&(m.len() as u32).to_be_bytes()[..], &m].concat()).unwrap();
            let mut len = [0u8; 4];
            good.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            good.read_exact(&mut body).unwrap();
            assert_eq!(body[3], 2, "call {seq} of the reading client failed");
            ok += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(metric(admin, "ringway_downstream_connections_closed_total", &closed), 1.0, "closed as stalled");
        assert!(closed_by_peer(stalled, Duration::from_secs(5)), "the stalled client sees its connection end");
        writer.join().unwrap();
        for _ in 0..20 {
            seq += 1;
            let m = binary_message(1, "echo", seq, 1, "after");
            good.write_all(&[&(m.len() as u32).to_be_bytes()[..], &m].concat()).unwrap();
            let mut len = [0u8; 4];
            good.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            good.read_exact(&mut body).unwrap();
            assert_eq!(body[3], 2, "call {seq} after the close failed");
        }
        assert!(ok > 10, "the reading client was served meanwhile: {ok}");
        assert_eq!(backend.accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one upstream connection, kept");
        server.shutdown();
    }

    fn a_grpc_client_that_stops_reading_is_closed_and_its_stream_cancelled_upstream(driver: &str) {
        let echo = ringway_bench::grpc_echo::EchoServer::start("127.0.0.1:0", 1).unwrap();
        let (server, addr, admin) = proxy(driver, "grpc", echo.addr.to_string());
        let closed = [("listener", "l"), ("reason", "write_stall")];

        // The stalled client: opens every window, asks for a 64 MiB server stream, reads
        // nothing.
        let mut stalled = non_reader(addr);
        let mut out = BytesMut::new();
        out.extend_from_slice(frame::PREFACE);
        let wide = Settings { initial_window_size: Some(frame::MAX_WINDOW), ..Default::default() };
        frame::settings::encode(&wide, &mut out);
        frame::window_update::encode(StreamId::ZERO, frame::MAX_WINDOW - frame::DEFAULT_WINDOW, &mut out);
        let ask = [("x-count", "1024"), ("x-size", "65536")];
        out.extend_from_slice(&raw_request(1, "/ringway.test.Echo/ServerStream", &ask, &[0, 0, 0, 0, 0]));
        stalled.write_all(&out).unwrap();

        // A tonic client on its own connection, on the same upstream connection.
        let good = EchoClient::connect(addr).unwrap();
        let mut ok = 0;
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && metric(admin, "ringway_downstream_connections_closed_total", &closed) == 0.0 {
            let msg = Bytes::from(format!("call {ok}"));
            let (_, reply, _) = good.unary("Unary", msg.clone(), &[], Some(Duration::from_secs(5))).unwrap();
            assert_eq!(reply, msg);
            ok += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(metric(admin, "ringway_downstream_connections_closed_total", &closed), 1.0, "closed as stalled");
        let cancelled = [("side", "upstream"), ("code", "CANCEL")];
        assert!(
            eventually(Duration::from_secs(3), || metric(admin, "ringway_grpc_rst_stream_sent_total", &cancelled) >= 1.0),
            "its stream was cancelled upstream"
        );
        assert!(closed_by_peer(stalled, Duration::from_secs(5)), "the stalled client sees its connection end");
        for i in 0..20 {
            let msg = Bytes::from(format!("after {i}"));
            let (_, reply, _) = good.unary("Unary", msg.clone(), &[], Some(Duration::from_secs(5))).unwrap();
            assert_eq!(reply, msg);
        }
        assert!(ok > 10, "the reading client was served meanwhile: {ok}");
        server.shutdown();
    }
}
