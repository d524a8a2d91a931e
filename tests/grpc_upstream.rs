//! The proxy as seen from the upstream: a raw HTTP/2 server (ringway's frame layer and
//! HPACK, nothing else) records every frame the proxy sends, so these tests can check the
//! wire: END_STREAM once and on the last piece when DATA is split for a small window or
//! frame size, the upstream's SETTINGS_MAX_CONCURRENT_STREAMS respected, stream ids
//! increasing. The client is tonic.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringway::config::Config;
use ringway::control::Server;
use ringway::grpc::h2::frame::{self, kind, settings::Settings, AckFlags, StreamId, HEAD_LEN};
use ringway::grpc::h2::hpack::{Decoder, Encoder, Field, HeaderList};
use ringway_bench::grpc_echo::EchoClient;

/// What the raw upstream saw.
#[derive(Default, Debug)]
struct Seen {
    /// (stream, payload length, END_STREAM) of every DATA frame, in order.
    data: Vec<(u32, usize, bool)>,
    /// Stream ids in the order their HEADERS arrived.
    opened: Vec<u32>,
    /// Most streams open at once on one connection.
    max_open: usize,
    connections: usize,
}

struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts the raw upstream: it announces `settings`, answers each request after `delay`
/// with an echo of its message, and gives window back as it reads.
fn raw_upstream(settings: Settings, delay: Duration) -> RawUpstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, st2) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while !st2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            match l.accept() {
                Ok((c, _)) => {
                    let (s3, st3) = (s2.clone(), st2.clone());
                    s3.lock().unwrap().connections += 1;
                    std::thread::spawn(move || serve(c, settings, delay, s3, st3));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    RawUpstream { addr, seen, stop }
}

fn serve(
    mut c: TcpStream,
    settings: Settings,
    delay: Duration,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut out = BytesMut::new();
    frame::settings::encode(&settings, &mut out);
    c.write_all(&out).unwrap();
    let (mut dec, mut enc) = (Decoder::new(4096), Encoder::new());
    let mut buf = BytesMut::new();
    let mut preface = false;
    // stream -> (message bytes so far, when to answer)
    let mut open: std::collections::BTreeMap<u32, (Vec<u8>, Option<Instant>)> = Default::default();
    let end = Instant::now() + Duration::from_secs(60);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
        let mut tmp = [0u8; 65536];
        match c.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
        if !preface {
            if buf.len() < 24 {
                continue;
            }
            let _ = buf.split_to(24);
            preface = true;
        }
        let mut out = BytesMut::new();
        while let Ok(Some((head, f))) = frame::cut(&mut buf, 1 << 24) {
            let p = &f[HEAD_LEN..];
            match head.kind {
                kind::SETTINGS if !AckFlags::from(head.flags).is_ack() => frame::settings::encode_ack(&mut out),
                kind::HEADERS => {
                    let h = frame::headers::parse(&head, p).unwrap();
                    assert!(h.end_headers, "test upstream handles single-frame blocks only");
                    let mut list = HeaderList::new();
                    dec.decode(&p[h.fragment], 1 << 20, &mut list).unwrap();
                    let mut s = seen.lock().unwrap();
                    s.opened.push(head.stream.get());
                    open.insert(head.stream.get(), (Vec::new(), None));
                    s.max_open = s.max_open.max(open.len());
                }
                kind::DATA => {
                    let d = frame::data::parse(&head, p).unwrap();
                    seen.lock().unwrap().data.push((head.stream.get(), d.data.len(), d.end_stream));
                    if d.flow_len > 0 {
                        frame::window_update::encode(StreamId::new(0), d.flow_len as u32, &mut out);
                        frame::window_update::encode(head.stream, d.flow_len as u32, &mut out);
                    }
                    if let Some(e) = open.get_mut(&head.stream.get()) {
                        e.0.extend_from_slice(&p[d.data]);
                        if d.end_stream {
                            e.1 = Some(Instant::now() + delay);
                        }
                    }
                }
                _ => {}
            }
        }
        let now = Instant::now();
        let due: Vec<u32> =
            open.iter().filter(|(_, (_, at))| at.is_some_and(|t| t <= now)).map(|(id, _)| *id).collect();
        for id in due {
            let (msg, _) = open.remove(&id).unwrap();
            let mut block = BytesMut::new();
            let fields = [(":status", "200"), ("content-type", "application/grpc")];
            enc.encode(
                fields.iter().map(|(n, v)| Field { name: n.as_bytes(), value: v.as_bytes(), never_indexed: false }),
                &mut block,
            );
            frame::headers::encode(StreamId::new(id), &block, false, 16384, &mut out);
            for chunk in msg.chunks(16384) {
                frame::data::encode(StreamId::new(id), chunk, false, &mut out);
            }
            let mut block = BytesMut::new();
            enc.encode([Field { name: b"grpc-status", value: b"0", never_indexed: false }], &mut block);
            frame::headers::encode(StreamId::new(id), &block, true, 16384, &mut out);
        }
        if !out.is_empty() && c.write_all(&out).is_err() {
            return;
        }
    }
}

fn proxy(driver: &str, upstream: SocketAddr, cluster_extra: &str) -> Server {
    let toml = format!(
        r#"
[runtime]
workers = 1
driver = "{driver}"
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:0"
routes = [ {{ cluster = "up" }} ]
{}
"#,
        common::cluster("up", &[upstream.to_string()], cluster_extra)
    );
    Server::start(Config::parse(&toml).unwrap()).unwrap()
}

/// An upstream that refuses every stream before processing it: RST_STREAM(REFUSED_STREAM)
/// for each, or (`goaway`) GOAWAY with last stream 0. Returns its address and the streams it
/// refused.
fn refusing_upstream(goaway: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, refused) = (l.local_addr().unwrap(), Arc::new(std::sync::atomic::AtomicUsize::new(0)));
    let r = refused.clone();
    std::thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(mut c) = c else { continue };
            let r = r.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut out = BytesMut::new();
                frame::settings::encode(&Settings::default(), &mut out);
                if c.write_all(&out).is_err() {
                    return;
                }
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 16 << 10];
                let mut preface = false;
                loop {
                    let n = match c.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if !preface {
                        if buf.len() < frame::PREFACE.len() {
                            continue;
                        }
                        let _ = buf.split_to(frame::PREFACE.len());
                        preface = true;
                    }
                    while let Ok(Some((h, _))) = frame::cut(&mut buf, frame::MAX_MAX_FRAME_SIZE) {
                        let mut out = BytesMut::new();
                        match h.kind {
                            kind::SETTINGS if h.flags.bits() & 0x1 == 0 => frame::settings::encode_ack(&mut out),
                            kind::HEADERS if goaway => {
                                frame::goaway::encode(StreamId::ZERO, frame::Reason::NO_ERROR, b"", &mut out)
                            }
                            kind::HEADERS => {
                                frame::rst_stream::encode(h.stream, frame::Reason::REFUSED_STREAM, &mut out)
                            }
                            _ => {}
                        }
                        if h.kind == kind::HEADERS {
                            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        if !out.is_empty() && c.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, refused)
}

fn two_endpoint_proxy(driver: &str, endpoints: [SocketAddr; 2], extra: &str) -> Server {
    let toml = format!(
        "[runtime]\nworkers = 1\ndriver = {driver:?}\n[[listener]]\nname = \"grpc\"\nprotocol = \"grpc\"\n\
         address = \"127.0.0.1:0\"\nroutes = [ {{ cluster = \"up\" }} ]\n{}",
        common::cluster("up", &[endpoints[0].to_string(), endpoints[1].to_string()], extra)
    );
    Server::start(Config::parse(&toml).unwrap()).unwrap()
}

both_drivers! {
    fn a_stream_the_upstream_refuses_is_retried_on_the_other_endpoint(driver: &str) {
        let echo = ringway_bench::grpc_echo::EchoServer::start("127.0.0.1:0", 1).unwrap();
        for goaway in [false, true] {
            let (refuser, refused) = refusing_upstream(goaway);
            let server = two_endpoint_proxy(driver, [refuser, echo.addr], "lb = \"round_robin\"");
            let c = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
            for i in 0..6u8 {
                // Small requests, and 40 KB ones that cross several DATA frames.
                let msg = Bytes::from(vec![i; if i % 2 == 0 { 100 } else { 40_000 }]);
                let got = c.unary("Unary", msg.clone(), &[], Some(Duration::from_secs(10)));
                let (_, reply, _) = got.unwrap_or_else(|e| panic!("goaway={goaway} call {i}: {e}"));
                assert_eq!(reply, msg, "the replayed request arrives whole");
            }
            assert!(refused.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the refuser was tried");
            server.shutdown();
        }
        // retries = 0: the refusal reaches the client.
        let (refuser, refused) = refusing_upstream(false);
        let server = two_endpoint_proxy(driver, [refuser, echo.addr], "lb = \"round_robin\"\nretries = 0");
        let c = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
        let failed = (0..4u8)
            .filter(|i| c.unary("Unary", Bytes::from(vec![*i; 10]), &[], Some(Duration::from_secs(10))).is_err())
            .count();
        assert!(failed >= 1 && refused.load(std::sync::atomic::Ordering::SeqCst) >= 1, "failed {failed}");
        server.shutdown();
    }

    fn end_stream_moves_to_the_last_piece_of_a_split_data_frame(driver: &str) {
        // The upstream's window is 1000 bytes per stream: the proxy must cut the client's
        // 16 KiB DATA frames into pieces that fit, and END_STREAM must ride only the last.
        let up = raw_upstream(Settings { initial_window_size: Some(1000), ..Default::default() }, Duration::ZERO);
        let server = proxy(driver, up.addr, "");
        let c = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
        // A first call makes the proxy connect and learn the upstream's SETTINGS (before
        // they arrive it may use the protocol's default window).
        c.unary("Unary", Bytes::from_static(b"warm"), &[], Some(Duration::from_secs(10))).unwrap();
        let msg = Bytes::from((0..40_000u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
        let (_, reply, _) = c.unary("Unary", msg.clone(), &[], Some(Duration::from_secs(10))).unwrap();
        assert!(reply == msg, "echo through a 1000-byte window differs");
        let seen = up.seen.lock().unwrap();
        let frames: Vec<_> = seen.data.iter().filter(|(s, _, _)| *s == seen.opened[1]).collect();
        assert!(frames.len() >= 40, "split into window-sized pieces: {}", frames.len());
        assert!(frames.iter().all(|(_, len, _)| *len <= 1000), "a piece exceeds the window");
        assert_eq!(frames.iter().map(|(_, len, _)| len).sum::<usize>(), 40_005);
        assert_eq!(frames.iter().filter(|(_, _, end)| *end).count(), 1, "END_STREAM exactly once");
        assert!(frames.last().unwrap().2, "END_STREAM on the last piece");
        drop(seen);
        server.shutdown();
    }

    fn upstream_max_concurrent_streams_is_respected(driver: &str) {
        let up = raw_upstream(Settings { max_concurrent_streams: Some(2), ..Default::default() }, Duration::from_millis(50));
        let server = proxy(driver, up.addr, "max_connections_per_endpoint = 1");
        let c = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
        assert_eq!(c.concurrent_unary(10, 32), 10, "all calls complete, two at a time");
        let seen = up.seen.lock().unwrap();
        assert_eq!(seen.connections, 1);
        assert_eq!(seen.opened.len(), 10);
        assert!(seen.max_open <= 2, "upstream saw {} streams open at once", seen.max_open);
        assert!(seen.opened.windows(2).all(|w| w[1] > w[0]), "stream ids increase: {:?}", seen.opened);
        assert!(seen.opened.iter().all(|id| id % 2 == 1));
        drop(seen);
        server.shutdown();
    }
}

both_drivers! {
    fn a_burst_of_calls_spreads_over_a_few_connections_opened_one_at_a_time(driver: &str) {
        // Ten calls arrive at once while no upstream connection exists. The first opens one
        // and the others wait for its SETTINGS instead of each opening its own; then, as every
        // open connection is busy, one more is opened at a time, up to
        // max_connections_per_endpoint, and each call goes to the least-loaded connection.
        let up = raw_upstream(Settings { max_concurrent_streams: Some(100), ..Default::default() }, Duration::from_millis(20));
        let server = proxy(driver, up.addr, "max_connections_per_endpoint = 3");
        let c = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
        assert_eq!(c.concurrent_unary(10, 32), 10);
        let connections = up.seen.lock().unwrap().connections;
        assert!((2..=3).contains(&connections), "spread over 2..=3 connections, saw {connections}");
        server.shutdown();
    }
}

/// An upstream that answers a request with a flood of PINGs and reads nothing: once the
/// proxy has queued `max_pending_control_frames` (1000) unread ACKs it ends the connection
/// with GOAWAY(ENHANCE_YOUR_CALM), as it does for a client. Returns the GOAWAY codes it saw.
fn pinging_upstream() -> (SocketAddr, std::thread::JoinHandle<Vec<u32>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = BytesMut::new();
        frame::settings::encode(&Settings::default(), &mut out);
        c.write_all(&out).unwrap();
        // Read until the request's HEADERS are in.
        let mut buf = BytesMut::new();
        let mut tmp = [0u8; 65536];
        'request: loop {
            let n = c.read(&mut tmp).unwrap();
            assert!(n > 0, "the proxy closed before sending the request");
            buf.extend_from_slice(&tmp[..n]);
            let mut rest = BytesMut::from(buf.get(24..).unwrap_or_default());
            while let Ok(Some((h, _))) = frame::cut(&mut rest, 1 << 24) {
                if h.kind == kind::HEADERS {
                    break 'request;
                }
            }
        }
        // 200,000 PINGs (3.4 MB) without reading: the ACKs pile up in the proxy.
        let mut flood = BytesMut::new();
        for i in 0..200_000u64 {
            frame::ping::encode(frame::ping::Ping { ack: false, data: i.to_be_bytes() }, &mut flood);
        }
        let _ = c.write_all(&flood); // the proxy may close before it has read all of it
                                     // Now read what the proxy wrote: ACKs, then its GOAWAY, then EOF.
        let mut goaways = Vec::new();
        let mut buf = BytesMut::new();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match c.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            while let Ok(Some((h, f))) = frame::cut(&mut buf, 1 << 24) {
                if h.kind == kind::GOAWAY {
                    goaways.push(frame::goaway::parse(&h, &f[HEAD_LEN..]).unwrap().reason.0);
                }
            }
        }
        goaways
    });
    (addr, t)
}

both_drivers! {
    fn an_upstream_that_floods_pings_is_cut_off_and_its_calls_fail(driver: &str) {
        let (addr, upstream) = pinging_upstream();
        let server = proxy(driver, addr, "max_connections_per_endpoint = 1");
        let c = EchoClient::connect(server.local_addr("grpc").unwrap()).unwrap();
        let err = c.unary("Unary", Bytes::from_static(b"x"), &[], Some(Duration::from_secs(10))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("PING flood"), "{err:?}");
        let goaways = upstream.join().unwrap();
        assert_eq!(goaways, [0xb], "one GOAWAY(ENHANCE_YOUR_CALM) to the upstream");
        server.shutdown();
    }
}

/// An HTTP/2 upstream that opens every window wide and then reads nothing, so the proxy's
/// writes to it back up in its queue; once `reset` is set it resets every connection.
fn stalling_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    let wide = Settings {
        initial_window_size: Some(frame::MAX_WINDOW),
        max_concurrent_streams: Some(1000),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    frame::settings::encode(&wide, &mut out);
    frame::settings::encode_ack(&mut out);
    frame::window_update::encode(StreamId::ZERO, frame::MAX_WINDOW - frame::DEFAULT_WINDOW, &mut out);
    common::stalling_server(out.to_vec())
}

both_drivers! {
    fn streams_a_dead_connection_never_sent_go_to_the_other_endpoint(driver: &str) {
        let echo = ringway_bench::grpc_echo::EchoServer::start("127.0.0.1:0", 1).unwrap();
        let (stall, reset) = stalling_upstream();
        let toml = format!(
            "[runtime]\nworkers = 1\ndriver = {driver:?}\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"grpc\"\nprotocol = \"grpc\"\naddress = \"127.0.0.1:0\"\n\
             routes = [ {{ cluster = \"up\" }} ]\n{}",
            common::cluster(
                "up",
                &[stall.to_string(), echo.addr.to_string()],
                "lb = \"round_robin\"\nmax_connections_per_endpoint = 1\nmax_write_buffer = \"64MiB\"\n\
                 request_timeout = \"20s\"\nretry_budget_percent = 100\n\
                 outlier_detection = { consecutive_failures = 0 }"
            )
        );
        let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
        let (addr, admin) = (server.local_addr("grpc").unwrap(), server.admin_addr().unwrap());
        let call = |size: usize, i: usize| {
            std::thread::spawn(move || {
                let c = EchoClient::connect(addr).unwrap();
                let msg = Bytes::from(vec![i as u8; size]);
                c.unary("Unary", msg.clone(), &[], Some(Duration::from_secs(30))).map(|(_, reply, _)| reply == msg)
            })
        };
        // Two waves: 1 MiB calls fill the kernel's buffers towards the upstream that reads
        // nothing (half go there), then small calls whose HEADERS wait in the proxy's queue
        // for that connection: never sent when the upstream resets it. Each wave waits for
        // what the proxy reports, not for a fixed time: on a busy machine the big calls may
        // take longer than any sleep to reach the proxy, and a small call's HEADERS that
        // arrive before the queue backs up are sent (and then rightly fail).
        let metrics = || common::prom::parse(&common::prom::get(admin, "/metrics").2);
        let requests = |s: &[_]| common::prom::value(s, "ringway_requests_total", &[("listener", "grpc")]);
        let big: Vec<_> = (0..16).map(|i| call(1 << 20, i)).collect();
        let backed_up = common::eventually(Duration::from_secs(20), || {
            let s = metrics();
            requests(&s) >= 16.0 && common::prom::value(&s, "ringway_buffer_memory_bytes", &[]) >= (1 << 20) as f64
        });
        assert!(backed_up, "the big calls never backed up the queue to the stalled upstream");
        let small: Vec<_> = (0..16).map(|i| call(100, i)).collect();
        let queued = common::eventually(Duration::from_secs(20), || requests(&metrics()) >= 32.0);
        assert!(queued, "the small calls never reached the proxy");
        reset.store(true, std::sync::atomic::Ordering::SeqCst);
        let big: Vec<_> = big.into_iter().map(|t| t.join().unwrap()).collect();
        let small: Vec<_> = small.into_iter().map(|t| t.join().unwrap()).collect();
        for (i, r) in small.iter().enumerate() {
            assert!(matches!(r, Ok(true)), "small call {i} (queued, never sent) failed: {r:?}");
        }
        // A big call fails only if the lost connection had sent its HEADERS (or it was too
        // big to keep for a replay), and only with UNAVAILABLE naming that upstream.
        let failed = big.iter().filter(|r| r.is_err()).count();
        assert!(big.iter().all(|r| !matches!(r, Ok(false))), "a reply differs from its request");
        let stall_name = stall.to_string();
        for s in big.iter().filter_map(|r| r.as_ref().err()) {
            assert!(s.code() == tonic::Code::Unavailable && s.message().contains(&stall_name), "{s:?}");
        }
        assert!(failed < big.len(), "the big calls to the echo upstream succeed: {big:?}");
        let samples = common::prom::parse(&common::prom::get(admin, "/metrics").2);
        let retried = common::prom::value(&samples, "ringway_upstream_retries_total", &[("cluster", "up")]);
        assert!(retried >= 1.0, "the queued streams were opened again: {retried}");
        let lost = common::prom::value(&samples, "ringway_proxy_errors_total", &[("kind", "upstream_lost")]);
        assert_eq!(lost, failed as f64, "only the streams the lost connection had sent fail");
        server.shutdown();
    }
}
