//! A fast Thrift echo backend: one pinned-free monoio thread per `threads`, SO_REUSEPORT,
//! answering every CALL with a REPLY that carries the request's own bytes (same seqID in
//! the payload and, for TTHeader/THeader, in the header) with only the message type flipped.
//! ONEWAY gets no reply. An optional delay holds each batch of replies before writing.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::{Canceller, Splitable};
use monoio::net::{TcpListener, TcpStream};

use ringway::io::{read_more, write_outbox, ReadHint};
use ringway::local::Outbox;
use ringway::thrift::codec::message::{CALL, REPLY};
use ringway::thrift::codec::{frame_len, parse_frame, Protocol};

/// Largest frame the echo backend accepts.
const MAX_FRAME: usize = 64 << 20;

/// A running echo backend.
pub struct EchoServer {
    pub addr: SocketAddr,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `addr` (port 0 allowed) on `threads` SO_REUSEPORT sockets and serves forever.
    pub fn start(addr: SocketAddr, threads: usize, delay: Duration) -> std::io::Result<EchoServer> {
        EchoServer::start_kind(addr, threads, delay, false)
    }

    /// A TTHeader Streaming echo backend instead (`crate::ttstream_echo`; no delay).
    pub fn start_ttstream(addr: SocketAddr, threads: usize) -> std::io::Result<EchoServer> {
        EchoServer::start_kind(addr, threads, Duration::ZERO, true)
    }

    fn start_kind(addr: SocketAddr, threads: usize, delay: Duration, ttstream: bool) -> std::io::Result<EchoServer> {
        let mut addr = addr;
        let mut listeners = Vec::new();
        for _ in 0..threads.max(1) {
            let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            s.listen(4096)?;
            let l: std::net::TcpListener = s.into();
            addr = l.local_addr()?;
            listeners.push(l);
        }
        let threads = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                std::thread::Builder::new()
                    .name(format!("echo-{i}"))
                    .spawn(move || {
                        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                            .enable_timer()
                            .build()
                            .expect("echo runtime");
                        rt.block_on(async move {
                            let l = TcpListener::from_std(l).expect("echo listener");
                            loop {
                                if let Ok((s, _)) = l.accept().await {
                                    let _ = s.set_nodelay(true);
                                    if ttstream {
                                        monoio::spawn(crate::ttstream_echo::serve(s));
                                    } else {
                                        monoio::spawn(serve(s, delay));
                                    }
                                }
                            }
                        })
                    })
                    .expect("echo thread")
            })
            .collect();
        Ok(EchoServer { addr, threads })
    }

    /// Blocks forever (the threads never end on their own).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn serve(stream: TcpStream, delay: Duration) {
    let (mut rd, mut wr) = stream.into_split();
    let out = Rc::new(Outbox::default());
    let o = out.clone();
    let writer = monoio::spawn(async move {
        let _ = write_outbox(&mut wr, &o).await;
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let cancel = Canceller::new();
    let mut hint = ReadHint::new(64 * 1024);
    'conn: loop {
        match read_more(&mut rd, &mut buf, cancel.handle(), &mut hint).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        let mut batch = BytesMut::new();
        while let Some(len) = frame_len(&buf) {
            if len > MAX_FRAME {
                break 'conn;
            }
            if buf.len() < len {
                break;
            }
            let mut frame = buf.split_to(len);
            let Ok(info) = parse_frame(&frame, 4096) else { break 'conn };
            if info.msg.msg_type != CALL {
                continue;
            }
            let at = info.msg.type_at();
            frame[at] = if info.msg.protocol == Protocol::Compact { (REPLY << 5) | 1 } else { REPLY };
            if batch.is_empty() {
                batch = frame;
            } else {
                batch.extend_from_slice(&frame);
            }
        }
        if batch.is_empty() {
            continue;
        }
        if delay.is_zero() {
            out.push(batch);
        } else {
            let o = out.clone();
            monoio::spawn(async move {
                monoio::time::sleep(delay).await;
                o.push(batch);
            });
        }
    }
    if !delay.is_zero() {
        monoio::time::sleep(delay).await;
    }
    out.close();
    let _ = writer.await;
}
