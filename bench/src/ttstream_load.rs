//! The TTHeader Streaming loop of the load generator (closed loop). `ttstream-bidi`: each
//! connection opens M streams once and keeps one message in flight on each, every echo
//! checked against what was sent (its connection, stream and count). `ttstream-server`: each
//! of M slots opens a stream (Header, one Data asking for 10 messages, Trailer), counts each
//! message of the answer with its latency from the stream's start, and opens the next stream
//! when the server's Trailer comes. Messages are what is counted, as for gRPC streams.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use monoio::io::Canceller;
use monoio::net::TcpStream;

use ringway::io::{read_more, ReadHint};
use ringway::thrift::codec::frame_len;
use ringway::ttstream::codec::{encode, parse, FrameType};

use crate::load::{write_batch, Acc, LoadSpec, Window};
use crate::wire::BenchProtocol;

/// Messages a server stream answers with.
pub const STREAM_MESSAGES: u32 = 10;

/// One stream of the loop: when its message (or, server streams, the stream) was sent, and
/// the counter its next echo must carry.
struct Slot {
    sent_at: Instant,
    count: u32,
}

/// A Data payload: the count (server streams: how many messages to answer), the connection
/// and the stream's counter, padded to `size`.
fn payload(count: u32, conn: u32, n: u32, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(12));
    p.put_u32(count);
    p.put_u32(conn);
    p.put_u32(n);
    p.resize(size.max(12), b'p');
    p
}

pub(crate) async fn closed_loop(
    id: u32,
    mut stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    let server = spec.protocol == BenchProtocol::TtStreamServer;
    let method: &[u8] = if server { b"Server" } else { b"Bidi" };
    w.wait_start().await;
    let mut slots: HashMap<i32, Slot> = HashMap::new();
    let mut wbuf = BytesMut::with_capacity(spec.inflight * (spec.payload + 64));
    let open = |wbuf: &mut BytesMut, sid: i32, n: u32| {
        encode(wbuf, sid, FrameType::Header, method, &[(b"isn", b"bench")], b"");
        let count = if server { STREAM_MESSAGES } else { 0 };
        encode(wbuf, sid, FrameType::Data, method, &[], &payload(count, id, n, spec.payload));
        if server {
            encode(wbuf, sid, FrameType::Trailer, method, &[], b"");
        }
    };
    let t0 = Instant::now();
    let mut next_sid = 1i32;
    for _ in 0..spec.inflight {
        open(&mut wbuf, next_sid, 0);
        slots.insert(next_sid, Slot { sent_at: t0, count: 0 });
        next_sid += 1;
    }
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let cancel = Canceller::new();
    let mut hint = ReadHint::new(16 * 1024);
    loop {
        if !wbuf.is_empty() && !write_batch(&mut stream, &mut wbuf, acc).await {
            return;
        }
        if slots.is_empty() {
            return;
        }
        match read_more(&mut stream, &mut rbuf, cancel.handle(), &mut hint).await {
            Ok(n) if n > 0 => {}
            _ => {
                acc.borrow_mut().error("io");
                return;
            }
        }
        let now = Instant::now();
        let mut got = 0u64;
        let mut a = acc.borrow_mut();
        while let Some(len) = frame_len(&rbuf) {
            if rbuf.len() < len {
                break;
            }
            let frame = rbuf.split_to(len);
            let Ok(f) = parse(&frame) else {
                a.error("malformed_reply");
                return;
            };
            let Some(slot) = slots.get_mut(&f.sid) else {
                a.error("mismatched_reply");
                continue;
            };
            match f.kind {
                FrameType::Header | FrameType::Meta => {}
                FrameType::Data => {
                    let p = &frame[f.payload_at..];
                    let tag = (p.len() >= 12).then(|| {
                        (u32::from_be_bytes([p[4], p[5], p[6], p[7]]), u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
                    });
                    if tag != Some((id, slot.count)) {
                        a.error("mismatched_reply");
                        continue;
                    }
                    a.reply(Some(slot.sent_at), now, |t| t >= w.measure_from && now <= w.end);
                    got += 1;
                    if !server {
                        if now < w.end {
                            slot.count += 1;
                            slot.sent_at = now;
                            let p = payload(0, id, slot.count, spec.payload);
                            encode(&mut wbuf, f.sid, FrameType::Data, method, &[], &p);
                        } else {
                            slots.remove(&f.sid);
                        }
                    }
                }
                FrameType::Trailer if server => {
                    slots.remove(&f.sid);
                    if now < w.end {
                        let sid = next_sid;
                        next_sid = if next_sid == i32::MAX { 1 } else { next_sid + 1 };
                        open(&mut wbuf, sid, 0);
                        slots.insert(sid, Slot { sent_at: now, count: 0 });
                    }
                }
                FrameType::Trailer | FrameType::Rst => {
                    a.error("stream_ended");
                    slots.remove(&f.sid);
                }
            }
        }
        drop(a);
        progress.fetch_add(got, Ordering::Relaxed);
    }
}
