//! The Thrift loops of the load generator: closed loop (M requests in flight per connection)
//! and open loop (a fixed rate, latency from each request's intended send time).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{Canceller, Splitable};
use monoio::net::TcpStream;

use super::wire::{check_reply, encode_request, reply_seq, ReplyError};
use ringway::io::{read_more, ReadHint};
use ringway::local::SeqMap;
use ringway::thrift::codec::frame_len;

use crate::load::{write_batch, Acc, LoadSpec, Window};

/// Open-loop requests allowed to be outstanding on one connection before sends are skipped.
const OPEN_LOOP_BACKLOG: usize = 100_000;

/// Cuts complete reply frames from `buf`, checks each and returns their seqIDs: good replies
/// in `out`, requests answered with an EXCEPTION (counted as errors) in `failed`.
fn take_replies(buf: &mut BytesMut, conn: u32, acc: &RefCell<Acc>, out: &mut Vec<i32>, failed: &mut Vec<i32>) -> bool {
    while let Some(len) = frame_len(buf) {
        if len > 64 << 20 {
            acc.borrow_mut().error("oversized_reply");
            return false;
        }
        if buf.len() < len {
            buf.reserve(len - buf.len());
            break;
        }
        let frame = buf.split_to(len);
        match check_reply(&frame, conn) {
            Ok(seq) => out.push(seq),
            Err(e) => {
                acc.borrow_mut().error(e.label());
                // The request is answered (the proxy's error): not owed any more.
                if let Some(seq) = reply_seq(&frame).filter(|_| e == ReplyError::Exception) {
                    failed.push(seq);
                }
            }
        }
    }
    true
}

pub(crate) async fn closed_loop(
    id: u32,
    mut stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    w.wait_start().await;
    let mut sent: SeqMap<Instant> = SeqMap::default();
    let mut next_seq = 1i32;
    let mut wbuf = BytesMut::with_capacity(spec.inflight * (spec.payload + 64));
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let (mut seqs, mut failed) = (Vec::new(), Vec::new());
    let cancel = Canceller::new();
    let mut hint = ReadHint::new(16 * 1024);
    let t0 = Instant::now();
    for _ in 0..spec.inflight {
        encode_request(&mut wbuf, spec.protocol, next_seq, id, spec.payload);
        sent.insert(next_seq, t0);
        next_seq += 1;
    }
    loop {
        if !wbuf.is_empty() && !write_batch(&mut stream, &mut wbuf, acc).await {
            return;
        }
        if sent.is_empty() {
            return;
        }
        match read_more(&mut stream, &mut rbuf, cancel.handle(), &mut hint).await {
            Ok(n) if n > 0 => {}
            _ => {
                acc.borrow_mut().error("io");
                return;
            }
        }
        seqs.clear();
        failed.clear();
        if !take_replies(&mut rbuf, id, acc, &mut seqs, &mut failed) {
            return;
        }
        let now = Instant::now();
        let mut a = acc.borrow_mut();
        for (&seq, ok) in seqs.iter().map(|s| (s, true)).chain(failed.iter().map(|s| (s, false))) {
            let sent_at = sent.remove(&seq);
            let known = sent_at.is_some();
            if ok {
                a.reply(sent_at, now, |t| t >= w.measure_from && now <= w.end);
            }
            if !known {
                continue;
            }
            if now < w.end {
                encode_request(&mut wbuf, spec.protocol, next_seq, id, spec.payload);
                sent.insert(next_seq, now);
                next_seq = if next_seq == i32::MAX { 1 } else { next_seq + 1 };
            }
        }
        progress.fetch_add(seqs.len() as u64, Ordering::Relaxed);
    }
}

pub(crate) async fn open_loop(
    id: u32,
    stream: TcpStream,
    spec: &LoadSpec,
    w: Window,
    rate: f64,
    acc: &RefCell<Acc>,
    progress: &AtomicU64,
) {
    let (mut rd, mut wr) = stream.into_split();
    let sent: RefCell<SeqMap<Instant>> = RefCell::new(SeqMap::default());
    let done_sending = std::cell::Cell::new(false);
    let due = w.schedule(id, rate);
    let sender = async {
        let mut wbuf = BytesMut::new();
        let mut k: u32 = 0;
        let mut seq = 1i32;
        loop {
            let intended = due(k);
            if intended >= w.end {
                break;
            }
            let now = Instant::now();
            if intended > now {
                monoio::time::sleep(intended - now).await;
            }
            let now = Instant::now();
            let mut at = due(k);
            while at <= now && at < w.end {
                if sent.borrow().len() >= OPEN_LOOP_BACKLOG {
                    acc.borrow_mut().error("backlog_skipped");
                } else {
                    encode_request(&mut wbuf, spec.protocol, seq, id, spec.payload);
                    sent.borrow_mut().insert(seq, at);
                    seq = if seq == i32::MAX { 1 } else { seq + 1 };
                }
                k += 1;
                at = due(k);
            }
            if !write_batch(&mut wr, &mut wbuf, acc).await {
                break;
            }
        }
        done_sending.set(true);
    };
    let reader = async {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let (mut seqs, mut failed) = (Vec::new(), Vec::new());
        let cancel = Canceller::new();
        let mut hint = ReadHint::new(16 * 1024);
        // Replies still owed when sending stops get a grace period, then count as timeouts.
        loop {
            if done_sending.get() && sent.borrow().is_empty() {
                return;
            }
            let read = read_more(&mut rd, &mut rbuf, cancel.handle(), &mut hint);
            let res = monoio::time::timeout_at((w.end + Duration::from_secs(2)).into(), read).await;
            match res {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => {
                    acc.borrow_mut().error("io");
                    return;
                }
                Err(_) => {
                    let left = sent.borrow().len() as u64;
                    *acc.borrow_mut().errors.entry("timeout").or_default() += left;
                    return;
                }
            }
            seqs.clear();
            failed.clear();
            if !take_replies(&mut rbuf, id, acc, &mut seqs, &mut failed) {
                return;
            }
            let now = Instant::now();
            let mut a = acc.borrow_mut();
            for &seq in &seqs {
                let sent_at = sent.borrow_mut().remove(&seq);
                a.reply(sent_at, now, |t| t >= w.measure_from);
            }
            for seq in &failed {
                sent.borrow_mut().remove(seq);
            }
            progress.fetch_add(seqs.len() as u64, Ordering::Relaxed);
        }
    };
    monoio::join!(sender, reader);
}
