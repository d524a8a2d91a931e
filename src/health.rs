//! Active health checks, made once per endpoint for the whole process by one owner: a thread
//! of its own (`ringway-health`, at the workers' priority: a check that waited for the CPU
//! behind busy workers would time out and call a live endpoint unhealthy) running a small monoio
//! runtime with one task per checked endpoint. A verdict that changes (after
//! `unhealthy_threshold` failures or `healthy_threshold` successes in a row) goes to every
//! worker through its mailbox; workers stop giving the endpoint new requests, and its open
//! connections finish what they carry. Endpoints start healthy.
//!
//! Checks: `tcp` connects; `thrift` sends a Framed binary CALL of `thrift_method` with an
//! empty struct and takes any reply (an EXCEPTION too: the server answered); `grpc` calls
//! `grpc.health.v1.Health/Check` over HTTP/2 cleartext and wants status SERVING.

use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpStream, UnixStream};

use crate::config::{Address, CheckKind, Config, HealthCheck};
use crate::grpc::h2::frame::{self, kind, settings::Settings, StreamId};
use crate::grpc::h2::hpack::{Encoder, Field};
use crate::worker::{Command, Mailbox};

/// How often the owner looks for new targets and for a stop.
const POLL: Duration = Duration::from_millis(50);
/// Replies read from a checked endpoint are cut off here.
const MAX_REPLY: usize = 64 << 10;

/// One endpoint to check.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub cluster: Arc<str>,
    pub endpoint: Address,
    pub check: HealthCheck,
}

/// What the owner knows of one endpoint, for `/clusters` and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub healthy: bool,
    pub checks: u64,
    pub failures: u64,
}

/// Every checked endpoint's verdict, by cluster and endpoint.
pub type Verdicts = Arc<Mutex<HashMap<(String, String), Verdict>>>;

/// The targets of a config: every endpoint of every cluster with `[cluster.health_check]`.
pub fn targets(config: &Config, endpoints: &dyn Fn(&str) -> Option<Vec<Address>>) -> Vec<Target> {
    let mut out = Vec::new();
    for c in &config.clusters {
        let Some(check) = &c.health_check else { continue };
        let cluster: Arc<str> = c.name.as_str().into();
        let list = endpoints(&c.name).unwrap_or_else(|| c.endpoints.clone());
        for e in list {
            out.push(Target { cluster: cluster.clone(), endpoint: e, check: check.clone() });
        }
    }
    out
}

/// The owner thread; dropping it stops the thread.
pub struct HealthOwner {
    targets: Sender<Vec<Target>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub verdicts: Verdicts,
}

impl HealthOwner {
    pub fn start(mailboxes: Vec<Mailbox>) -> io::Result<HealthOwner> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let verdicts = Verdicts::default();
        let (s, v) = (stop.clone(), verdicts.clone());
        let thread = std::thread::Builder::new().name("ringway-health".into()).spawn(move || {
            let mut rt = match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
                Ok(rt) => rt,
                Err(e) => return log::error!("health checks: runtime failed to start ({e}); no active checks"),
            };
            rt.block_on(run(rx, s, Rc::new(mailboxes), v));
        })?;
        Ok(HealthOwner { targets: tx, stop, thread: Some(thread), verdicts })
    }

    /// Where to send the endpoints to check from now on (the others stop).
    pub fn sender(&self) -> Sender<Vec<Target>> {
        self.targets.clone()
    }
}

impl Drop for HealthOwner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running check and the flag that stops it.
struct Running {
    target: Target,
    stop: Rc<std::cell::Cell<bool>>,
}

async fn run(rx: Receiver<Vec<Target>>, stop: Arc<AtomicBool>, mailboxes: Rc<Vec<Mailbox>>, verdicts: Verdicts) {
    let mut running: Vec<Running> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut latest = None;
        while let Ok(t) = rx.try_recv() {
            latest = Some(t);
        }
        if let Some(targets) = latest {
            running.retain(|r| {
                let keep = targets.contains(&r.target);
                if !keep {
                    r.stop.set(true);
                    let key = (r.target.cluster.to_string(), r.target.endpoint.to_string());
                    verdicts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    // No check, no verdict: an endpoint left unhealthy would stay so for good.
                    let (cluster, endpoint) = (r.target.cluster.clone(), r.target.endpoint.clone());
                    for m in mailboxes.iter() {
                        m.send(Command::Health { cluster: cluster.clone(), endpoint: endpoint.clone(), healthy: true });
                    }
                }
                keep
            });
            for t in targets {
                if running.iter().any(|r| r.target == t) {
                    continue;
                }
                let flag = Rc::new(std::cell::Cell::new(false));
                running.push(Running { target: t.clone(), stop: flag.clone() });
                monoio::spawn(check_loop(t, flag, mailboxes.clone(), verdicts.clone()));
            }
        }
        monoio::time::sleep(POLL).await;
    }
    for r in &running {
        r.stop.set(true);
    }
}

async fn check_loop(t: Target, stop: Rc<std::cell::Cell<bool>>, mailboxes: Rc<Vec<Mailbox>>, verdicts: Verdicts) {
    let key = (t.cluster.to_string(), t.endpoint.to_string());
    verdicts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), Verdict { healthy: true, ..Verdict::default() });
    // Spread the first checks of many endpoints over one interval.
    let jitter = crate::hosts::hash_bytes(key.1.as_bytes()) % (t.check.interval.as_micros() as u64).max(1);
    monoio::time::sleep(Duration::from_micros(jitter)).await;
    let (mut healthy, mut streak) = (true, 0u32);
    while !stop.get() {
        let ok = matches!(monoio::time::timeout(t.check.timeout, probe(&t)).await, Ok(Ok(true)));
        if stop.get() {
            return;
        }
        // `streak` counts results that disagree with the current verdict.
        streak = if ok != healthy { streak + 1 } else { 0 };
        let threshold = if healthy { t.check.unhealthy_threshold } else { t.check.healthy_threshold };
        let flip = streak >= threshold;
        if flip {
            healthy = ok;
            streak = 0;
            for m in mailboxes.iter() {
                m.send(Command::Health { cluster: t.cluster.clone(), endpoint: t.endpoint.clone(), healthy });
            }
        }
        let all_down = {
            let mut v = verdicts.lock().unwrap_or_else(|e| e.into_inner());
            let e = v.entry(key.clone()).or_default();
            e.healthy = healthy;
            e.checks += 1;
            e.failures += u64::from(!ok);
            flip && !healthy && v.iter().filter(|((c, _), _)| **c == *t.cluster).all(|(_, x)| !x.healthy)
        };
        if flip {
            let (n, check) = (threshold, &t.check);
            if healthy {
                log::info!(
                    "cluster {} endpoint {}: healthy after {n} {:?} checks passed; taking requests",
                    t.cluster,
                    t.endpoint,
                    check.kind
                );
            } else {
                log::warn!(
                    "cluster {} endpoint {}: unhealthy after {n} {:?} checks failed; no new requests go to it",
                    t.cluster,
                    t.endpoint,
                    check.kind
                );
            }
            if all_down {
                log::warn!(
                    "cluster {}: every endpoint is unhealthy; requests go to all of them (fail open)",
                    t.cluster
                );
            }
        }
        monoio::time::sleep(t.check.interval).await;
    }
}

/// One check; `Ok(true)` is a pass.
async fn probe(t: &Target) -> io::Result<bool> {
    match &t.endpoint {
        Address::Tcp(a) => {
            let s = TcpStream::connect_addr(*a).await?;
            s.set_nodelay(true)?;
            converse(s, &t.check).await
        }
        Address::Unix(p) => converse(UnixStream::connect(p).await?, &t.check).await,
    }
}

async fn converse<S: AsyncReadRent + monoio::io::AsyncWriteRent>(mut s: S, check: &HealthCheck) -> io::Result<bool> {
    let request = match check.kind {
        CheckKind::Tcp => return Ok(true),
        CheckKind::Thrift => BytesMut::from(&thrift_ping(&check.thrift_method)[..]),
        CheckKind::Grpc => grpc_check(&check.grpc_service),
    };
    let (r, _) = s.write_all(request).await;
    r?;
    let mut got = BytesMut::with_capacity(4096);
    loop {
        let verdict = match check.kind {
            CheckKind::Thrift => thrift_verdict(&got),
            _ => grpc_verdict(&mut got),
        };
        if let Some(v) = verdict {
            return Ok(v);
        }
        if got.len() >= MAX_REPLY {
            return Ok(false);
        }
        got.reserve(4096);
        // Onto the end of what came so far (a plain read would fill from the start).
        let (len, cap) = (got.len(), got.capacity());
        let (r, b) = s.read(got.slice_mut(len..cap)).await;
        got = b.into_inner();
        if r? == 0 {
            return Ok(false);
        }
    }
}

/// A Framed binary CALL of `method`, seqID 1, with an empty argument struct.
fn thrift_ping(method: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + method.len());
    m.extend_from_slice(&0x8001_0001u32.to_be_bytes());
    m.extend_from_slice(&(method.len() as u32).to_be_bytes());
    m.extend_from_slice(method.as_bytes());
    m.extend_from_slice(&1i32.to_be_bytes());
    m.push(0); // T_STOP: the empty struct
    let mut f = (m.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&m);
    f
}

/// A whole reply frame that parses as a Thrift message (REPLY or EXCEPTION): healthy.
fn thrift_verdict(got: &[u8]) -> Option<bool> {
    use crate::thrift::codec::{frame_len, parse_frame, ParseError};
    let len = frame_len(got)?;
    let have = got.len().min(len);
    match parse_frame(&got[..have], 1024) {
        Ok(_) => Some(true),
        // More of a long method name (or header) is still to come.
        Err(ParseError::Incomplete) if have < len && got.len() < MAX_REPLY => None,
        Err(_) => Some(false),
    }
}

/// Preface, SETTINGS, then a HEADERS and DATA of `Health/Check` on stream 1.
fn grpc_check(service: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(256);
    b.extend_from_slice(frame::PREFACE);
    frame::settings::encode(&Settings { enable_push: Some(false), ..Settings::default() }, &mut b);
    let f = |name: &'static str, value: &'static str| Field {
        name: name.as_bytes(),
        value: value.as_bytes(),
        never_indexed: false,
    };
    let fields = [
        f(":method", "POST"),
        f(":scheme", "http"),
        f(":path", "/grpc.health.v1.Health/Check"),
        f(":authority", "ringway-health"),
        f("content-type", "application/grpc"),
        f("te", "trailers"),
    ];
    let mut block = BytesMut::new();
    Encoder::new().encode(fields, &mut block);
    frame::headers::encode(StreamId::new(1), &block, false, 16384, &mut b);
    // HealthCheckRequest { string service = 1; } behind the 5-byte gRPC message prefix.
    let mut msg = Vec::with_capacity(8 + service.len());
    if !service.is_empty() {
        msg.push(0x0a);
        let (v, n) = crate::thrift::codec::message::encode_varint32(service.len() as u32);
        msg.extend_from_slice(&v[..n]);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut data = vec![0u8];
    data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    data.extend_from_slice(&msg);
    frame::data::encode(StreamId::new(1), &data, true, &mut b);
    b
}

/// SERVING (HealthCheckResponse status 1) in a DATA frame of stream 1: healthy; the stream
/// or connection ending first (a Trailers-Only error, RST_STREAM, GOAWAY): not.
fn grpc_verdict(got: &mut BytesMut) -> Option<bool> {
    loop {
        let (head, f) = match frame::cut(got, frame::MAX_MAX_FRAME_SIZE) {
            Ok(Some(x)) => x,
            Ok(None) => return None,
            Err(_) => return Some(false),
        };
        let on_stream = head.stream == StreamId::new(1);
        let end = head.flags.bits() & 0x1 != 0;
        match head.kind {
            kind::DATA if on_stream => {
                let body = &f[frame::HEAD_LEN..];
                // Padding is not expected from a health server; a padded frame fails.
                if head.flags.bits() & 0x8 != 0 {
                    return Some(false);
                }
                return Some(serving(body));
            }
            kind::HEADERS if on_stream && end => return Some(false),
            kind::RST_STREAM if on_stream => return Some(false),
            kind::GOAWAY => return Some(false),
            _ => {}
        }
    }
}

/// A gRPC message holding `HealthCheckResponse { status: SERVING }`.
fn serving(body: &[u8]) -> bool {
    let Some(msg) = body.get(5..) else { return false };
    // Field 1, varint: tag 0x08.
    let mut i = 0;
    while i + 1 < msg.len() {
        let tag = msg[i];
        if tag == 0x08 {
            return msg[i + 1] == 1;
        }
        // Skip other fields of wire type 0 (varint) or 2 (length-delimited).
        match tag & 7 {
            0 => {
                i += 1;
                while i < msg.len() && msg[i] & 0x80 != 0 {
                    i += 1;
                }
                i += 1;
            }
            2 => i += 2 + msg[i + 1] as usize,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_reads_the_status_field() {
        assert!(serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!serving(&[0, 0, 0, 0, 0]), "UNKNOWN (the default, left out)");
    }

    #[test]
    fn a_thrift_reply_split_inside_a_long_method_name_waits_for_the_rest() {
        let reply = thrift_ping(&"m".repeat(200));
        assert_eq!(thrift_verdict(&reply[..3]), None, "no length yet");
        assert_eq!(thrift_verdict(&reply[..70]), None, "the name is not whole");
        assert_eq!(thrift_verdict(&reply), Some(true));
        assert_eq!(thrift_verdict(b"\x00\x00\x00\x05HTTP/"), Some(false), "not Thrift");
    }

    #[test]
    fn the_thrift_ping_is_a_framed_binary_call_with_an_empty_struct() {
        let f = thrift_ping("ping");
        let info = crate::thrift::codec::parse_frame(&f, 64).unwrap();
        assert_eq!((info.msg.msg_type, &f[info.msg.name.clone()]), (1, &b"ping"[..]));
        assert_eq!(*f.last().unwrap(), 0);
    }
}
