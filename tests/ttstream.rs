//! Kitex TTHeader Streaming through ringway's Thrift listener: frames built from the byte
//! layout of ref §3.1 (on the §2 builder checked against the §2.7 example), a backend that
//! behaves as §3.2 describes (`common::ttstream::Backend`), every streaming mode, the errors
//! the proxy makes, cancel both ways, a stalled reader and drain, on both drivers.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::ttstream::{ts_frame, Backend, Client, DATA, HEADER, RST, TRAILER};
use common::{cluster, Proxy};

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn frames_follow_the_reference_layout() {
    // A Header as Kitex's EncodeFrame writes it: flags 0x0002, seq = stream id, protocol id
    // 0x10, int keys 27 and 9. Byte by byte from ref §2.1 / §3.1.
    let f = ts_frame(3, HEADER, "Echo", &[], b"");
    assert_eq!(&f[4..8], &[0x10, 0x00, 0x00, 0x02]);
    assert_eq!(&f[8..12], &3i32.to_be_bytes());
    let hs = u16::from_be_bytes([f[12], f[13]]) as usize * 4;
    assert_eq!(&f[14..16], &[0x10, 0x00]);
    assert_eq!(&f[16..19], &[0x10, 0x00, 0x02]);
    assert_eq!(&f[19..24], &[0x00, 27, 0x00, 0x01, b'2']);
    assert_eq!(&f[24..32], &[0x00, 9, 0x00, 0x04, b'E', b'c', b'h', b'o']);
    assert_eq!(f.len(), 14 + hs);
    assert_eq!(u32::from_be_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
}

/// A backend of id "b1" behind a one-worker proxy whose only route goes to cluster "ts"
/// (`extra`: more keys for that cluster).
fn one_backend(driver: &str, extra: &str) -> (Backend, Proxy) {
    let backend = Backend::start("b1");
    let proxy =
        Proxy::start_with(driver, 1, r#"{ cluster = "ts" }"#, &cluster("ts", &[backend.addr.to_string()], extra));
    (backend, proxy)
}

/// One bidi stream: `n` messages, half-close, every echo back in order, then the Trailer.
fn check_echo(frames: &[common::ttstream::TsFrame], sid: i32, tag: &str, n: usize) {
    assert_eq!(frames[0].ftype, HEADER, "stream {sid}: the server's Header first: {:?}", frames[0]);
    let data: Vec<String> =
        frames.iter().filter(|f| f.ftype == DATA).map(|f| String::from_utf8_lossy(&f.payload).to_string()).collect();
    let want: Vec<String> = (0..n).map(|i| format!("{tag}-{sid}-{i}")).collect();
    assert_eq!(data, want, "stream {sid}: every message of its own, in order");
    let last = frames.last().unwrap();
    assert_eq!(last.ftype, TRAILER, "stream {sid}: ends with the server's Trailer: {last:?}");
    assert!(last.exception().is_none());
}

both_drivers! {
    fn many_bidi_streams_share_few_upstream_connections(driver: &str) {
        let backend = Backend::start("b1");
        let proxy = Proxy::start_with(driver, 2, r#"{ service = "svc", cluster = "ts" }"#,
            &cluster("ts", &[backend.addr.to_string()], "max_connections_per_endpoint = 2"));
        let addr = proxy.addr;
        let clients: Vec<_> = (0..4).map(|c| std::thread::spawn(move || {
            let mut cl = Client::connect(addr);
            let tag = format!("c{c}");
            let sids: Vec<i32> = (1..=20).map(|k| k * 2 + 1).collect();
            for &sid in &sids {
                cl.open(sid, "svc", "Echo", &[]);
            }
            // Interleaved: message i of every stream, then i + 1.
            for i in 0..10 {
                for &sid in &sids {
                    cl.data(sid, "Echo", format!("{tag}-{sid}-{i}").as_bytes());
                }
            }
            for &sid in &sids {
                cl.half_close(sid, "Echo");
            }
            let got = cl.recv_until_ended(&sids);
            for &sid in &sids {
                check_echo(&got[&sid], sid, &tag, 10);
                assert_eq!(got[&sid][0].strs.get("backend").map(String::as_str), Some("b1"));
            }
            sids.len()
        })).collect();
        let done: usize = clients.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(done, 80);
        // Every stream got an id of its own on its upstream connection, whatever the clients
        // chose (all four used the same ids).
        assert_eq!(backend.seen.streams.load(Ordering::SeqCst), 80);
        assert_eq!(backend.seen.reused_ids.load(Ordering::SeqCst), 0);
        assert!(backend.seen.accepted.load(Ordering::SeqCst) <= 4, "2 per worker at most");
        let stats = proxy.stop();
        let t = stats.protocols.ttstream;
        assert_eq!((t.opened, t.ended_ok, t.active()), (80, 80, 0), "{t:?}");
        assert_eq!(t.late_frames, 0);
    }

    fn server_and_client_streaming_with_headers_and_biz_trailers_unchanged(driver: &str) {
        let (backend, proxy) = one_backend(driver, "");
        let mut cl = Client::connect(proxy.addr);
        let meta = [("RPC_TRANSIT_tenant", "t-1"), ("RPC_PERSIST_trace", "abc"), ("custom", "x y z")];
        // Server streaming: one request, 50 replies, the server's Trailer.
        cl.open(7, "svc", "ServerStream", &meta);
        cl.data(7, "ServerStream", b"50:item");
        // Client streaming: 5 messages, half-close, one reply.
        cl.open(9, "svc", "ClientStream", &[]);
        for i in 0..5 {
            cl.data(9, "ClientStream", format!("m{i}").as_bytes());
        }
        cl.half_close(9, "ClientStream");
        // A business error ends a stream with biz-* trailers and no payload.
        cl.open(11, "svc", "BizError", &[]);
        // A server that resets a stream: its Rst, EXCEPTION and all, with the client's id.
        cl.open(13, "svc", "ServerRst", &[]);
        // A Header frame that carries a payload (Kitex's codec allows one): forwarded whole.
        cl.send(&ts_frame(15, HEADER, "Echo", &[("isn", "svc")], b"header-payload"));
        cl.half_close(15, "Echo");
        let got = cl.recv_until_ended(&[7, 9, 11, 13, 15]);
        let rst = got[&13].last().unwrap();
        assert_eq!(rst.ftype, RST);
        let e = rst.exception().unwrap();
        assert_eq!((e.seq, e.type_id, e.message.as_str()), (13, 12001, "handler gave up"), "{e:?}");
        assert_eq!(rst.strs.get("ttscp").map(String::as_str), Some("backend"));
        assert_eq!(backend.seen.header_payload_bytes.load(Ordering::SeqCst), b"header-payload".len());
        assert_eq!(got[&15].last().unwrap().ftype, TRAILER);
        let items: Vec<String> =
            got[&7].iter().filter(|f| f.ftype == DATA).map(|f| String::from_utf8_lossy(&f.payload).to_string()).collect();
        assert_eq!(items, (0..50).map(|i| format!("item-{i}")).collect::<Vec<_>>());
        // The client's metainfo reached the server unchanged, and came back in its Header.
        let header = &got[&7][0];
        for (k, v) in meta {
            assert_eq!(header.strs.get(k).map(String::as_str), Some(v), "{k} through the proxy and back");
        }
        let seen = backend.seen.headers.lock().unwrap().clone();
        let (_, h) = seen.iter().find(|(m, _)| m == "ServerStream").unwrap();
        assert_eq!(h.get("RPC_TRANSIT_tenant").map(String::as_str), Some("t-1"));
        assert_eq!(h.get("isn").map(String::as_str), Some("svc"));
        let joined: Vec<&common::ttstream::TsFrame> = got[&9].iter().filter(|f| f.ftype == DATA).collect();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].payload, b"m0,m1,m2,m3,m4");
        let biz = got[&11].last().unwrap();
        assert_eq!(biz.ftype, TRAILER);
        assert_eq!(biz.strs.get("biz-status").map(String::as_str), Some("404"));
        assert_eq!(biz.strs.get("biz-message").map(String::as_str), Some("no such thing"));
        assert_eq!(biz.strs.get("biz-extra").map(String::as_str), Some("{\"k\":\"v\"}"));
        assert!(biz.payload.is_empty());
        // Kitex's compatibility Trailer after the server's: ends the streams at the proxy.
        cl.half_close(7, "ServerStream");
        cl.half_close(11, "BizError");
        let stats = proxy.stop();
        let t = stats.protocols.ttstream;
        assert_eq!((t.active(), t.ended_server_reset, t.ended_ok), (0, 1, 4), "{t:?}");
        assert_eq!(backend.seen.unknown.load(Ordering::SeqCst), 1, "the Trailer after BizError's end is unknown there");
    }

    fn no_route_answers_with_a_trailer_naming_method_or_service(driver: &str) {
        let backend = Backend::start("b1");
        let proxy = Proxy::start_with(driver, 1,
            r#"{ service = "svc", method = "Echo", cluster = "ts" }, { service = "svc2", cluster = "ts" }"#,
            &cluster("ts", &[backend.addr.to_string()], ""));
        let mut cl = Client::connect(proxy.addr);
        cl.open(5, "svc", "Nope", &[]);
        let f = cl.recv();
        assert_eq!((f.sid, f.ftype.as_str()), (5, TRAILER));
        let e = f.exception().expect("an EXCEPTION payload");
        assert_eq!((e.seq, e.type_id, e.name.as_str()), (5, 1, "Nope"), "UNKNOWN_METHOD: {e:?}");
        cl.open(6, "other", "Echo", &[]);
        let f = cl.recv();
        let e = f.exception().expect("an EXCEPTION payload");
        assert_eq!((f.sid, e.type_id), (6, 20), "UnknownService: {e:?}");
        assert!(e.message.contains("other"), "{e:?}");
        // The connection goes on: a routed stream on it works.
        cl.open(8, "svc", "Echo", &[]);
        cl.data(8, "Echo", b"x-8-0");
        cl.half_close(8, "Echo");
        let got = cl.recv_until_ended(&[8]);
        check_echo(&got[&8], 8, "x", 1);
        assert_eq!(backend.seen.streams.load(Ordering::SeqCst), 1, "unrouted streams never reach a server");
    }

    fn connect_failure_and_upstream_loss_reset_only_the_affected_streams(driver: &str) {
        let good = Backend::start("good");
        let doomed = Backend::start("doomed");
        let refusing = common::Refusing::new();
        let dead = refusing.addr;
        let routes = r#"{ service = "good", cluster = "good" }, { service = "doomed", cluster = "doomed" }, { service = "dead", cluster = "dead" }"#;
        let clusters = format!("{}{}{}",
            cluster("good", &[good.addr.to_string()], ""),
            cluster("doomed", &[doomed.addr.to_string()], ""),
            cluster("dead", &[dead.to_string()], "connect_timeout = \"500ms\"\nretries = 0"));
        let proxy = Proxy::start_with(driver, 1, routes, &clusters);
        let mut cl = Client::connect(proxy.addr);
        cl.open(1, "good", "Echo", &[]);
        for sid in [3, 5, 7] {
            cl.open(sid, "doomed", "Echo", &[]);
        }
        // Each stream's Header reply says it is open upstream.
        let mut opened = 0;
        while opened < 4 {
            assert_eq!(cl.recv().ftype, HEADER);
            opened += 1;
        }
        doomed.cut_all();
        let got = cl.recv_until_ended(&[3, 5, 7]);
        for sid in [3, 5, 7] {
            let end = got[&sid].last().unwrap();
            assert_eq!(end.ftype, RST, "{end:?}");
            let e = end.exception().unwrap();
            assert_eq!((e.seq, e.type_id), (sid, 12013), "{e:?}");
            assert!(e.message.contains(&doomed.addr.to_string()), "names the endpoint: {e:?}");
        }
        cl.open(9, "dead", "Echo", &[]);
        let f = cl.recv();
        assert_eq!((f.sid, f.ftype.as_str()), (9, RST));
        let e = f.exception().unwrap();
        assert!(e.message.contains(&dead.to_string()), "{e:?}");
        // Stream 1 never noticed.
        cl.data(1, "Echo", b"g-1-0");
        cl.half_close(1, "Echo");
        let got = cl.recv_until_ended(&[1]);
        assert_eq!(got[&1].iter().filter(|f| f.ftype == DATA).count(), 1);
        assert_eq!(got[&1].last().unwrap().ftype, TRAILER);
        let t = proxy.stop().protocols.ttstream;
        assert_eq!((t.ended_error, t.ended_ok), (4, 1), "{t:?}");
    }

    fn cancel_reaches_the_server_and_its_late_answer_is_dropped(driver: &str) {
        let (backend, proxy) = one_backend(driver, "");
        let mut cl = Client::connect(proxy.addr);
        cl.open(1, "svc", "Echo", &[]);
        assert_eq!(cl.recv().ftype, HEADER);
        // Kitex cancels with a Rst, then an empty Trailer.
        let ex = common::ttstream::exception_payload("Echo", 1, 12007, "user canceled");
        cl.send(&ts_frame(1, RST, "Echo", &[("ttscp", "client")], &ex));
        cl.half_close(1, "Echo");
        eventually("the server saw the Rst", || backend.seen.rsts.load(Ordering::SeqCst) == 1);
        assert_eq!(backend.seen.seq_mismatches.load(Ordering::SeqCst), 0, "the EXCEPTION seq is the upstream id too");
        // A new stream still works, and nothing more arrives for stream 1 (its late Header
        // and Trailer from the server are dropped at the proxy).
        cl.open(3, "svc", "Echo", &[]);
        cl.data(3, "Echo", b"y-3-0");
        cl.half_close(3, "Echo");
        let got = cl.recv_until_ended(&[3]);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![3]);
        check_echo(&got[&3], 3, "y", 1);
        // A client that goes away with streams open: each is reset upstream.
        for sid in [5, 7, 9] {
            cl.open(sid, "svc", "Echo", &[]);
        }
        for _ in 0..3 {
            assert_eq!(cl.recv().ftype, HEADER);
        }
        drop(cl);
        eventually("three more Rsts", || backend.seen.rsts.load(Ordering::SeqCst) == 4);
        let t = proxy.stop().protocols.ttstream;
        assert_eq!(t.ended_client_reset, 4, "{t:?}");
        assert!(t.late_frames >= 2, "the server's late Header and Trailer, dropped: {t:?}");
    }

    fn a_stream_waits_for_its_first_frame_then_for_silence_no_longer_than_configured(driver: &str) {
        let (backend, proxy) = one_backend(driver, "request_timeout = \"300ms\"\nstream_idle_timeout = \"400ms\"");
        let mut cl = Client::connect(proxy.addr);
        let t0 = Instant::now();
        cl.open(1, "svc", "Hang", &[]);
        let f = cl.recv();
        assert_eq!((f.sid, f.ftype.as_str()), (1, RST));
        assert_eq!(f.exception().unwrap().type_id, 12015, "stream timeout");
        assert!(t0.elapsed() >= Duration::from_millis(300) && t0.elapsed() < Duration::from_secs(3));
        // Echo answers its Header at once; then nothing flows for longer than the idle timeout.
        cl.open(3, "svc", "Echo", &[]);
        assert_eq!(cl.recv().ftype, HEADER);
        let t1 = Instant::now();
        let f = cl.recv();
        assert_eq!((f.sid, f.ftype.as_str()), (3, RST));
        assert_eq!(f.exception().unwrap().type_id, 12014, "idle: recv timeout");
        assert!(t1.elapsed() >= Duration::from_millis(400));
        eventually("both reset upstream", || backend.seen.rsts.load(Ordering::SeqCst) == 2);
        // A long stream lives as long as frames flow: 1.5 s, well past both timeouts.
        cl.open(5, "svc", "Echo", &[]);
        assert_eq!(cl.recv().ftype, HEADER);
        for i in 0..10 {
            cl.data(5, "Echo", format!("l-5-{i}").as_bytes());
            let f = cl.recv();
            assert_eq!((f.sid, f.ftype.as_str()), (5, DATA), "{f:?}");
            std::thread::sleep(Duration::from_millis(150));
        }
        cl.half_close(5, "Echo");
        assert_eq!(cl.recv().ftype, TRAILER);
    }

    fn the_ttheader_rpc_timeout_key_wins_when_smaller(driver: &str) {
        let (backend, proxy) = one_backend(driver, "request_timeout = \"30s\"");
        let mut cl = Client::connect(proxy.addr);
        // Int key 12 (RPCTimeout, ms) on the Header: stock Kitex clients do not send it.
        let mut f = common::ttheader::frame(7, &[("isn", "svc")], &[(27, HEADER), (9, "Hang"), (12, "200")], b"");
        f[7] |= 0x02;
        f[14] = 0x10;
        let t0 = Instant::now();
        cl.send(&f);
        let r = cl.recv();
        assert_eq!((r.sid, r.ftype.as_str()), (7, RST));
        assert_eq!(r.exception().unwrap().type_id, 12015);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(15), "{took:?}: the key, not the 30 s");
        eventually("reset upstream", || backend.seen.rsts.load(Ordering::SeqCst) == 1);
    }

    fn a_client_that_stops_reading_loses_its_stream_not_the_proxys_memory(driver: &str) {
        let backend = Backend::start("b1");
        let proxy = Proxy::start_full(driver, 1, "max_write_buffer = \"256KiB\"", r#"{ cluster = "ts" }"#,
            &cluster("ts", &[backend.addr.to_string()], "max_connections_per_endpoint = 1"));
        let mut greedy = Client::connect(proxy.addr);
        greedy.open(1, "svc", "Flood", &[]);
        greedy.data(1, "Flood", b"400"); // 25 MiB it will not read for a while
        // Another client's stream on the same upstream connection is not held up.
        let mut other = Client::connect(proxy.addr);
        std::thread::sleep(Duration::from_millis(300));
        other.open(1, "svc", "Echo", &[]);
        other.data(1, "Echo", b"z-1-0");
        other.half_close(1, "Echo");
        let got = other.recv_until_ended(&[1]);
        check_echo(&got[&1], 1, "z", 1);
        eventually("the greedy stream reset upstream", || backend.seen.rsts.load(Ordering::SeqCst) == 1);
        // Now it reads: what was queued (at most the limit), then the Rst saying why.
        let mut bytes = 0usize;
        let end = loop {
            let f = greedy.recv();
            if f.ftype == DATA {
                bytes += f.payload.len();
                continue;
            }
            if f.ftype == RST {
                break f;
            }
        };
        let e = end.exception().unwrap();
        assert!(e.message.contains("max_write_buffer"), "{e:?}");
        // The limit plus what the kernel buffers hold (loopback autotunes up to 4 MiB), far
        // below the 25 MiB the server sent.
        assert!(bytes < 8 << 20, "{bytes} bytes were queued for it");
        assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 1);
        let t = proxy.stop().protocols.ttstream;
        assert_eq!(t.ended_overflow, 1, "{t:?}");
    }

    fn drain_lets_open_streams_finish_and_refuses_new_ones(driver: &str) {
        let (_backend, proxy) = one_backend(driver, "");
        let mut cl = Client::connect(proxy.addr);
        cl.open(1, "svc", "Echo", &[]);
        assert_eq!(cl.recv().ftype, HEADER);
        let stopping = std::thread::spawn(move || proxy.stop());
        std::thread::sleep(Duration::from_millis(300));
        cl.open(3, "svc", "Echo", &[]);
        let f = cl.recv();
        assert_eq!((f.sid, f.ftype.as_str()), (3, TRAILER));
        assert_eq!(f.exception().unwrap().type_id, 12006, "transport closing: {f:?}");
        // The open stream goes on to its end.
        for i in 0..3 {
            cl.data(1, "Echo", format!("d-1-{i}").as_bytes());
        }
        cl.half_close(1, "Echo");
        let got = cl.recv_until_ended(&[1]);
        let data = got[&1].iter().filter(|f| f.ftype == DATA).count();
        assert_eq!(data, 3);
        assert_eq!(got[&1].last().unwrap().ftype, TRAILER);
        let stats = stopping.join().unwrap();
        let t = stats.protocols.ttstream;
        assert_eq!((t.ended_ok, t.ended_error), (1, 1), "{t:?}");
    }
}

/// The TOML `Proxy::start_with(driver, 1, routes, clusters)` runs, for a reload (the
/// listener as it was: port 0).
fn config(driver: &str, routes: &str, clusters: &str) -> ringway::config::Config {
    let toml = format!(
        "[runtime]\nworkers = 1\ndriver = {driver:?}\ndrain_timeout = \"5s\"\ndrain_idle_close = \"50ms\"\n\
         [[listener]]\nname = \"thrift\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
         max_frame_size = \"1MiB\"\nroutes = [ {routes} ]\n{clusters}"
    );
    ringway::config::Config::parse(&toml).unwrap()
}

both_drivers! {
    fn reload_leaves_open_streams_on_their_old_cluster(driver: &str) {
        let (a, b) = (Backend::start("a"), Backend::start("b"));
        let routes = r#"{ cluster = "ts" }"#;
        let mut proxy = Proxy::start_with(driver, 1, routes, &cluster("ts", &[a.addr.to_string()], ""));
        let mut cl = Client::connect(proxy.addr);
        cl.open(1, "svc", "Echo", &[]);
        assert_eq!(cl.recv().strs.get("backend").map(String::as_str), Some("a"));
        proxy.server().reload(config(driver, routes, &cluster("ts", &[b.addr.to_string()], ""))).unwrap();
        // A new stream goes to the new endpoint, on the same client connection.
        cl.open(3, "svc", "Echo", &[]);
        assert_eq!(cl.recv().strs.get("backend").map(String::as_str), Some("b"));
        // The open stream carries on where it was, to its end.
        for i in 0..3 {
            cl.data(1, "Echo", format!("r-1-{i}").as_bytes());
        }
        cl.half_close(1, "Echo");
        cl.half_close(3, "Echo");
        let got = cl.recv_until_ended(&[1, 3]);
        assert_eq!(got[&1].iter().filter(|f| f.ftype == DATA).count(), 3);
        let end = got[&1].last().unwrap();
        assert_eq!((end.ftype.as_str(), end.strs.get("backend").map(String::as_str)), (TRAILER, Some("a")));
        assert_eq!(got[&3].last().unwrap().strs.get("backend").map(String::as_str), Some("b"));
        assert_eq!((a.seen.streams.load(Ordering::SeqCst), b.seen.streams.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(a.seen.rsts.load(Ordering::SeqCst), 0, "the old stream was not cut");
    }
}

/// Streams counted by outcome in /metrics, as Prometheus reads them.
#[test]
fn metrics_show_streams_opened_active_and_ended() {
    let backend = Backend::start("b1");
    let proxy = Proxy::start_full(
        "epoll",
        1,
        "",
        r#"{ service = "svc", cluster = "ts" }"#,
        &format!("{}\n[admin]\naddress = \"127.0.0.1:0\"\n", cluster("ts", &[backend.addr.to_string()], "")),
    );
    let mut p = proxy;
    let admin = p.server().admin_addr().unwrap();
    let mut cl = Client::connect(p.addr);
    cl.open(1, "svc", "Echo", &[]);
    cl.open(3, "svc", "Echo", &[]);
    cl.open(5, "nope", "Echo", &[]);
    let _ = cl.recv_until_ended(&[5]);
    cl.half_close(3, "Echo");
    let mut ended = HashMap::new();
    while !ended.contains_key(&3) {
        let f = cl.recv();
        if f.ftype == TRAILER {
            ended.insert(f.sid, f);
        }
    }
    let (_, _, text) = common::prom::get(admin, "/metrics");
    let s = common::prom::parse(&text);
    let v = |name: &str, l: &[(&str, &str)]| common::prom::value(&s, name, l);
    assert_eq!(v("ringway_ttstream_streams_opened_total", &[]), 3.0);
    assert_eq!(v("ringway_ttstream_streams_active", &[]), 1.0);
    assert_eq!(v("ringway_ttstream_streams_ended_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(v("ringway_ttstream_streams_ended_total", &[("outcome", "error")]), 1.0);
    assert_eq!(v("ringway_ttstream_upstream_streams_total", &[]), 2.0);
    assert_eq!(v("ringway_requests_total", &[("listener", "thrift"), ("dialect", "ttstream")]), 3.0, "{text}");
}
