//! HTTP/2 abuse limits of a gRPC listener, provoked by a raw frame client built on ringway's
//! own frame encoder (the answers are checked by code: GOAWAY ENHANCE_YOUR_CALM, RST_STREAM,
//! a gRPC status) — and after each, a real tonic client on another connection still works.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringway::config::Config;
use ringway::control::Server;
use ringway::grpc::h2::frame::{self, kind, settings::Settings, Flags, Head, Reason, StreamId, HEAD_LEN};
use ringway::grpc::h2::hpack::{Decoder, Encoder, Field, HeaderList};
use ringway_bench::grpc_echo::{EchoClient, EchoServer};

struct Proxy {
    server: Option<Server>,
    addr: SocketAddr,
}

impl Proxy {
    fn start(driver: &str, backend: SocketAddr, limits: &str) -> Proxy {
        let toml = format!(
            r#"
[runtime]
workers = 1
driver = "{driver}"
drain_timeout = "2s"
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
{limits}
routes = [ {{ cluster = "echo" }} ]
{}
"#,
            common::cluster("echo", &[backend.to_string()], "max_connections_per_endpoint = 1")
        );
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let server = Server::start(config).expect("proxy starts");
        let addr = server.local_addr("grpc").unwrap();
        Proxy { server: Some(server), addr }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// A raw HTTP/2 client: writes frames as given, reads frames with a deadline.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    enc: Encoder,
    dec: Decoder,
}

/// What came back for a stream or the connection.
#[derive(Debug)]
enum Got {
    GoAway(Reason, String),
    Rst(u32, Reason),
    Headers(u32, HeaderList, bool),
    Closed,
}

impl Raw {
    fn connect(addr: SocketAddr, settings: Settings) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut r = Raw { s, buf: BytesMut::new(), enc: Encoder::new(), dec: Decoder::new(4096) };
        let mut b = BytesMut::from(&frame::PREFACE[..]);
        frame::settings::encode(&settings, &mut b);
        r.send(&b);
        r
    }

    fn send(&mut self, b: &[u8]) {
        // The proxy may close on us mid-write: that is an answer too.
        let _ = self.s.write_all(b);
    }

    /// A request header block for `/ringway.test.Echo/<method>` with `extra` metadata.
    fn request_block(&mut self, method: &str, extra: &[(&str, &str)]) -> BytesMut {
        let path = format!("/ringway.test.Echo/{method}");
        let mut fields: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", &path),
            (":authority", "test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        fields.extend_from_slice(extra);
        let mut block = BytesMut::new();
        self.enc.encode(
            fields.iter().map(|(n, v)| Field { name: n.as_bytes(), value: v.as_bytes(), never_indexed: false }),
            &mut block,
        );
        block
    }

    /// Appends a ServerStream call on `id` asking for `extra` (HEADERS, then a one-byte
    /// message with END_STREAM).
    fn server_stream(&mut self, id: u32, extra: &[(&str, &str)], b: &mut BytesMut) {
        let block = self.request_block("ServerStream", extra);
        frame::headers::encode(StreamId::new(id), &block, false, 16384, b);
        frame::data::encode(StreamId::new(id), &[0, 0, 0, 0, 1, b'z'], true, b);
    }

    /// Reads frames until one of interest arrives or `within` passes.
    fn next(&mut self, within: Duration) -> Option<Got> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            while let Ok(Some((head, f))) = frame::cut(&mut self.buf, 1 << 24) {
                let p = &f[HEAD_LEN..];
                match head.kind {
                    kind::GOAWAY => {
                        let g = frame::goaway::parse(&head, p).unwrap();
                        return Some(Got::GoAway(g.reason, String::from_utf8_lossy(&p[g.debug]).into()));
                    }
                    kind::RST_STREAM => {
                        return Some(Got::Rst(head.stream.get(), frame::rst_stream::parse(&head, p).unwrap()))
                    }
                    kind::HEADERS => {
                        let h = frame::headers::parse(&head, p).unwrap();
                        let mut list = HeaderList::new();
                        self.dec.decode(&p[h.fragment], 1 << 20, &mut list).unwrap();
                        return Some(Got::Headers(head.stream.get(), list, h.end_stream));
                    }
                    _ => {}
                }
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return Some(Got::Closed),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Some(Got::Closed),
            }
        }
        None
    }

    /// Reads until a GOAWAY (or the end); returns its code.
    fn goaway(&mut self, within: Duration) -> Option<(Reason, String)> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.next(end - Instant::now()) {
                Some(Got::GoAway(r, why)) => return Some((r, why)),
                Some(Got::Closed) | None => return None,
                Some(_) => {}
            }
        }
        None
    }
}

fn still_serves(addr: SocketAddr) {
    let c = EchoClient::connect(addr).expect("a new client connects");
    let (_, reply, _) = c.unary("Unary", Bytes::from_static(b"ok"), &[], None).expect("other connections work");
    assert_eq!(reply, Bytes::from_static(b"ok"));
}

both_drivers! {
    fn rapid_reset_gets_enhance_your_calm(driver: &str) {
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "max_reset_burst = 20\nmax_resets_per_second = 1");
        let mut raw = Raw::connect(proxy.addr, Settings::default());
        let mut b = BytesMut::new();
        for i in 0..100u32 {
            let id = 1 + 2 * i;
            let block = raw.request_block("Unary", &[]);
            frame::headers::encode(StreamId::new(id), &block, false, 16384, &mut b);
            frame::rst_stream::encode(StreamId::new(id), Reason::CANCEL, &mut b);
        }
        raw.send(&b);
        let (r, why) = raw.goaway(Duration::from_secs(5)).expect("GOAWAY");
        assert_eq!(r, Reason::ENHANCE_YOUR_CALM, "{why}");
        assert!(why.contains("reset"), "{why}");
        still_serves(proxy.addr);
    }

    fn continuation_flood_gets_enhance_your_calm(driver: &str) {
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "max_continuation_frames = 8");
        let mut raw = Raw::connect(proxy.addr, Settings::default());
        let block = raw.request_block("Unary", &[]);
        let mut b = BytesMut::new();
        Head::new(kind::HEADERS, Flags::NONE, StreamId::new(1), 1).encode(&mut b);
        b.extend_from_slice(&block[..1]);
        for _ in 0..50 {
            frame::continuation::encode(StreamId::new(1), b"", false, &mut b);
        }
        raw.send(&b);
        let (r, why) = raw.goaway(Duration::from_secs(5)).expect("GOAWAY");
        assert_eq!(r, Reason::ENHANCE_YOUR_CALM, "{why}");
        assert!(why.contains("CONTINUATION"), "{why}");
        still_serves(proxy.addr);
    }

    fn hpack_bomb_is_refused_without_killing_the_connection(driver: &str) {
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "max_header_list_size = \"16KiB\"");
        let mut raw = Raw::connect(proxy.addr, Settings::default());
        // Static-table fields only (the test encoder's dynamic table must stay a prefix of
        // the proxy decoder's), then one 3000-byte literal with incremental indexing
        // (dynamic index 62) and 2000 one-byte references to it: ~6 MB decoded from ~5 KB.
        let mut block = BytesMut::from(&[0x83u8, 0x86][..]); // :method POST, :scheme http
        block.extend_from_slice(&[0x04, 24]); // :path, literal without indexing
        block.extend_from_slice(b"/ringway.test.Echo/Unary");
        block.extend_from_slice(&[0x40, 0x05]);
        block.extend_from_slice(b"x-big");
        block.extend_from_slice(&[0x7f, 0x81, 0x17]); // length 127 + 0x81 + 0x17<<7 = 3000
        block.extend_from_slice(&vec![b'a'; 3000]);
        // Index 62 is the newest dynamic entry; the request fields above did not add after it.
        block.extend(std::iter::repeat_n(0x80 | 62, 2000));
        let mut b = BytesMut::new();
        frame::headers::encode(StreamId::new(1), &block, true, 16384, &mut b);
        raw.send(&b);
        match raw.next(Duration::from_secs(5)) {
            Some(Got::Headers(1, list, true)) => {
                assert_eq!(list.get(b"grpc-status"), Some(&b"8"[..]), "{list:?}");
            }
            other => panic!("expected a RESOURCE_EXHAUSTED trailers-only response, got {other:?}"),
        }
        // Same connection, HPACK state still in sync: a normal request works.
        let block = raw.request_block("Unary", &[("x-echo-a", "1")]);
        let mut b = BytesMut::new();
        frame::headers::encode(StreamId::new(3), &block, false, 16384, &mut b);
        frame::data::encode(StreamId::new(3), &[0, 0, 0, 0, 2, b'h', b'i'], true, &mut b);
        raw.send(&b);
        match raw.next(Duration::from_secs(5)) {
            Some(Got::Headers(3, list, false)) => assert_eq!(list.get(b":status"), Some(&b"200"[..])),
            other => panic!("expected response headers on stream 3, got {other:?}"),
        }
        still_serves(proxy.addr);
    }

    fn ping_and_settings_floods_get_enhance_your_calm(driver: &str) {
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "max_pending_control_frames = 100");
        for settings_flood in [false, true] {
            let mut raw = Raw::connect(proxy.addr, Settings::default());
            let mut b = BytesMut::new();
            for i in 0..5000u64 {
                if settings_flood {
                    frame::settings::encode(&Settings { max_frame_size: Some(16384), ..Default::default() }, &mut b);
                } else {
                    frame::ping::encode(frame::ping::Ping { ack: false, data: i.to_be_bytes() }, &mut b);
                }
            }
            raw.send(&b);
            let (r, why) = raw.goaway(Duration::from_secs(5)).expect("GOAWAY");
            assert_eq!(r, Reason::ENHANCE_YOUR_CALM, "{why}");
        }
        still_serves(proxy.addr);
    }

    fn zero_window_stall_resets_the_stream_and_the_upstream(driver: &str) {
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "stream_stall_timeout = \"300ms\"");
        let mut raw = Raw::connect(proxy.addr, Settings { initial_window_size: Some(0), ..Default::default() });
        let mut b = BytesMut::new();
        raw.server_stream(1, &[("x-count", "100000"), ("x-interval-ms", "1")], &mut b);
        raw.send(&b);
        let t0 = Instant::now();
        loop {
            match raw.next(Duration::from_secs(5)) {
                Some(Got::Headers(1, _, false)) => continue, // response headers are not flow-controlled
                Some(Got::Rst(1, r)) => {
                    assert_eq!(r, Reason::CANCEL);
                    break;
                }
                other => panic!("expected RST_STREAM(CANCEL) on stream 1, got {other:?}"),
            }
        }
        assert!(t0.elapsed() >= Duration::from_millis(250), "reset before the stall timeout");
        assert!(
            common::eventually(Duration::from_secs(5), || echo.stats().streams_cancelled >= 1),
            "the upstream stream was not cancelled: {:?}",
            echo.stats()
        );
        still_serves(proxy.addr);
    }

    fn unknown_frame_types_are_ignored(driver: &str) {
        // RFC 9113 §4.1 / §5.5: frames of unknown types are ignored, on the connection and on
        // a stream, even between a stream's HEADERS and DATA.
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "");
        let mut raw = Raw::connect(proxy.addr, Settings::default());
        let unknown = |kind: u8, stream: u32, b: &mut BytesMut| {
            Head::new(kind, Flags::from_bits(0xff), StreamId::new(stream), 5).encode(b);
            b.extend_from_slice(b"hello");
        };
        let mut b = BytesMut::new();
        unknown(0xfa, 0, &mut b);
        let block = raw.request_block("ServerStream", &[("x-count", "1")]);
        frame::headers::encode(StreamId::new(1), &block, false, 16384, &mut b);
        unknown(0xfb, 1, &mut b);
        frame::data::encode(StreamId::new(1), &[0, 0, 0, 0, 1, b'z'], true, &mut b);
        unknown(0x0c + 0x70, 3, &mut b);
        raw.send(&b);
        match raw.next(Duration::from_secs(5)) {
            Some(Got::Headers(1, _, false)) => {}
            other => panic!("expected response headers on stream 1, got {other:?}"),
        }
        match raw.next(Duration::from_secs(5)) {
            Some(Got::Headers(1, trailers, true)) => assert_eq!(trailers.get(b"grpc-status"), Some(&b"0"[..])),
            other => panic!("expected trailers on stream 1, got {other:?}"),
        }
        assert!(raw.goaway(Duration::from_millis(300)).is_none(), "the connection must live on");
    }

    fn http1_gets_an_http1_answer(driver: &str) {
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "");
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /ringway.test.Echo/Unary HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 505 "), "{reply}");
        assert!(reply.contains("HTTP/2"), "{reply}");
        still_serves(proxy.addr);
    }
}

both_drivers! {
    fn cancelled_streams_give_their_buffered_bytes_back_to_the_shared_upstream(driver: &str) {
        // 24 server streams of 64 KiB messages to a client whose window is zero: each fills its
        // 1 MiB stream window at the proxy, together more than the 16 MiB window of the one
        // shared upstream connection. The client then cancels them all. If the proxy forgot
        // to give the dropped bytes back, that upstream connection would stay stuck at zero.
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "");
        let mut raw = Raw::connect(proxy.addr, Settings { initial_window_size: Some(0), ..Default::default() });
        let mut b = BytesMut::new();
        for i in 0..24u32 {
            let id = 1 + 2 * i;
            raw.server_stream(id, &[("x-count", "100"), ("x-size", "65536")], &mut b);
        }
        raw.send(&b);
        // Let the upstream fill the windows.
        assert!(common::eventually(Duration::from_secs(10), || echo.stats().messages_sent >= 240));
        std::thread::sleep(Duration::from_millis(300));
        let mut b = BytesMut::new();
        for i in 0..24u32 {
            frame::rst_stream::encode(StreamId::new(1 + 2 * i), Reason::CANCEL, &mut b);
        }
        raw.send(&b);
        let c = EchoClient::connect(proxy.addr).unwrap();
        for _ in 0..3 {
            let r = c.server_stream(Bytes::from_static(b"after"), &[("x-count", "40"), ("x-size", "65536")], Some(Duration::from_secs(5)));
            assert_eq!(r.map(|m| m.len()).map_err(|e| e.code()), Ok(40), "the shared upstream connection still flows");
        }
    }
}

both_drivers! {
    fn a_slow_reader_slows_the_writer_and_proxy_memory_stays_bounded(driver: &str) {
        // The client grants the default 64 KiB window and never more; the backend would send
        // 100,000 messages of 64 KiB. The proxy may hold about one stream window (1 MiB) and
        // must not credit the backend beyond what it forwarded, so the backend stalls early.
        let echo = EchoServer::start("127.0.0.1:0", 1).unwrap();
        let proxy = Proxy::start(driver, echo.addr, "");
        let mut raw = Raw::connect(proxy.addr, Settings::default());
        let mut b = BytesMut::new();
        raw.server_stream(1, &[("x-count", "100000"), ("x-size", "65536")], &mut b);
        raw.send(&b);
        assert!(common::eventually(Duration::from_secs(5), || echo.stats().messages_sent >= 5));
        std::thread::sleep(Duration::from_millis(1500));
        let sent = echo.stats().messages_sent;
        // 1 MiB at the proxy + 64 KiB at the client + the backend's own HTTP/2 send buffer.
        assert!(sent < 100, "backend was let to send {sent} x 64 KiB to a client that reads nothing");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(echo.stats().messages_sent, sent, "the backend is stalled, not just slow");
        still_serves(proxy.addr);
    }
}

/// Streams refused before routing are counted in the metrics as errors of the listener's
/// unrouted requests, by kind: one over `max_concurrent_streams`, one with a header the gRPC
/// rules forbid (an uppercase field name).
#[test]
fn streams_refused_before_routing_are_counted_by_kind() {
    let backend = EchoServer::start("127.0.0.1:0", 1).unwrap();
    let toml = format!(
        r#"
[runtime]
workers = 1
drain_timeout = "2s"
[admin]
address = "127.0.0.1:0"
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
max_concurrent_streams = 1
routes = [ {{ cluster = "echo" }} ]
{}
"#,
        common::cluster("echo", &[backend.addr.to_string()], "")
    );
    let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
    let mut raw = Raw::connect(server.local_addr("grpc").unwrap(), Settings::default());
    // Stream 1 stays open (a long server stream); stream 3 is one too many.
    let mut b = BytesMut::new();
    raw.server_stream(1, &[("x-count", "100000"), ("x-interval-ms", "1")], &mut b);
    raw.send(&b);
    let mut b = BytesMut::new();
    raw.server_stream(3, &[], &mut b);
    raw.send(&b);
    let end = Instant::now() + Duration::from_secs(5);
    let mut refused = false;
    while !refused && Instant::now() < end {
        refused = matches!(raw.next(Duration::from_millis(200)), Some(Got::Rst(3, r)) if r == Reason::REFUSED_STREAM);
    }
    assert!(refused, "stream 3 refused with REFUSED_STREAM");
    // A second connection: a request with an uppercase field name is malformed.
    let mut raw2 = Raw::connect(server.local_addr("grpc").unwrap(), Settings::default());
    let mut b = BytesMut::new();
    raw2.server_stream(1, &[("X-Upper", "1")], &mut b);
    raw2.send(&b);
    let mut reset = false;
    let end = Instant::now() + Duration::from_secs(5);
    while !reset && Instant::now() < end {
        reset = matches!(raw2.next(Duration::from_millis(200)), Some(Got::Rst(1, r)) if r == Reason::PROTOCOL_ERROR);
    }
    assert!(reset, "the malformed stream is reset with PROTOCOL_ERROR");
    let mut s = TcpStream::connect(server.admin_addr().unwrap()).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    for kind in ["too_many_streams", "malformed"] {
        let line = format!("ringway_proxy_errors_total{{listener=\"grpc\",route=\"\",kind=\"{kind}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    drop((raw, raw2));
    server.shutdown();
}
