//! The worker's buffer memory budget (issue 15, item 5), on both drivers: a Thrift client
//! that asks for far more replies than it reads drives its worker past
//! `runtime.max_buffer_memory`. Then that client is no longer read, a new Thrift call gets
//! the overload exception and a new gRPC call RESOURCE_EXHAUSTED, and the metrics say so;
//! once the client reads what it was sent, the worker is under again and calls succeed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster;
use common::prom::{get, parse, value};
use common::ttheader::binary_message;
use ringway::config::Config;
use ringway::control::Server;
use ringway_bench::grpc_echo::EchoClient;

fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&parse(&get(admin, "/metrics").2), name, labels)
}

fn framed(m: &[u8]) -> Vec<u8> {
    [&(m.len() as u32).to_be_bytes()[..], m].concat()
}

/// One Thrift call on a fresh connection: the reply's message type and its text.
fn call(addr: SocketAddr, seq: i32) -> (u8, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&framed(&binary_message(1, "echo", seq, 1, "small"))).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    (body[3], String::from_utf8_lossy(&body).into_owned())
}

both_drivers! {
    fn over_the_buffer_budget_the_largest_client_waits_and_new_requests_are_refused(driver: &str) {
        let thrift_echo =
            ringway_bench::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Duration::ZERO).unwrap();
        let grpc_echo = ringway_bench::grpc_echo::EchoServer::start("127.0.0.1:0", 1).unwrap();
        let toml = format!(
            "[runtime]\nworkers = 1\ndriver = {driver:?}\nmax_buffer_memory = \"2MiB\"\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"thrift\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
             max_write_buffer = \"16MiB\"\nroutes = [{{ cluster = \"t\" }}]\n\
             [[listener]]\nname = \"grpc\"\nprotocol = \"grpc\"\naddress = \"127.0.0.1:0\"\n\
             routes = [{{ cluster = \"g\" }}]\n{}\n{}",
            cluster("t", &[thrift_echo.addr.to_string()], ""),
            cluster("g", &[grpc_echo.addr.to_string()], ""),
        );
        let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
        let (thrift, grpc) = (server.local_addr("thrift").unwrap(), server.local_addr("grpc").unwrap());
        let admin = server.admin_addr().unwrap();
        let good_grpc = EchoClient::connect(grpc).unwrap();
        assert_eq!(call(thrift, 1).0, 2, "a call before");
        good_grpc.unary("Unary", Bytes::from_static(b"before"), &[], Some(Duration::from_secs(5))).unwrap();

        // The greedy client: calls of 128 KiB (far more replies than the kernel's socket
        // buffers take), written from a thread, nothing read.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&thrift.into()).unwrap();
        let mut greedy: TcpStream = sock.into();
        greedy.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = greedy.try_clone().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_writer = stop.clone();
        let writer = std::thread::spawn(move || {
            // It keeps asking (up to 128 MiB) until told to stop; a write blocks while the
            // proxy does not read it.
            let text = "z".repeat(128 << 10);
            for seq in 1..=1024 {
                if stop_writer.load(std::sync::atomic::Ordering::SeqCst)
                    || w.write_all(&framed(&binary_message(1, "echo", seq, 1, &text))).is_err()
                {
                    return;
                }
            }
        });
        // (Until the kernel's socket buffers towards it are full, the worker dips under its
        // budget as they take bytes, and reads the greedy client again. Once they are full it
        // stays over: its bytes may rest anywhere above nine tenths of the budget, so the
        // state is read from its gauge, not from the bytes.)
        let over = common::eventually(Duration::from_secs(20), || {
            metric(admin, "ringway_buffer_memory_over_workers", &[]) == 1.0
                && metric(admin, "ringway_buffer_memory_bytes", &[]) > f64::from(2u32 << 20) / 10.0 * 9.0
        });
        assert!(
            over,
            "the worker went over its budget and stays there: over_total {}, over_workers {}, buffer bytes {}, paused reads {}",
            metric(admin, "ringway_buffer_memory_over_total", &[]),
            metric(admin, "ringway_buffer_memory_over_workers", &[]),
            metric(admin, "ringway_buffer_memory_bytes", &[]),
            metric(admin, "ringway_buffer_memory_paused_reads_total", &[]),
        );

        // New requests are refused, in each protocol's words.
        let (kind, text) = call(thrift, 2);
        assert_eq!(kind, 3, "an EXCEPTION: {text}");
        assert!(text.contains("max_buffer_memory"), "{text}");
        let refused = good_grpc.unary("Unary", Bytes::from_static(b"over"), &[], Some(Duration::from_secs(5)));
        let status = refused.expect_err("refused while over");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(metric(admin, "ringway_proxy_errors_total", &[("kind", "memory_budget")]) >= 2.0);
        // (Its reader pauses when it next needs bytes: requests already in its buffer are
        // refused like any other first.)
        let paused = common::eventually(Duration::from_secs(5), || {
            metric(admin, "ringway_buffer_memory_paused_reads_total", &[]) >= 1.0
        });
        assert!(paused, "the greedy client was paused");

        // The greedy client stops asking and reads what it was sent (which lets its writer's
        // last write finish): the worker is under again and calls succeed.
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        greedy.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let until = Instant::now() + Duration::from_secs(30);
        let mut recovered = false;
        while Instant::now() < until && !recovered {
            for _ in 0..64 {
                let _ = greedy.read(&mut buf);
            }
            recovered = writer.is_finished()
                && metric(admin, "ringway_buffer_memory_bytes", &[]) < f64::from(1u32 << 20)
                && call(thrift, 3).0 == 2;
        }
        assert!(recovered, "calls succeed again once the worker is under its budget");
        assert_eq!(metric(admin, "ringway_buffer_memory_over_workers", &[]), 0.0, "no worker is over");
        writer.join().unwrap();
        good_grpc.unary("Unary", Bytes::from_static(b"after"), &[], Some(Duration::from_secs(5))).unwrap();
        drop(greedy);
        server.shutdown();
    }
}
