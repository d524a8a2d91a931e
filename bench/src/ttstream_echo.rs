//! The TTHeader Streaming side of the echo backend (`ringway-bench echo ttstream`): a stream
//! is created by any Header frame and answered with a Header; method `Bidi` echoes every Data
//! frame as it is (the bytes of a client frame are a valid server frame); method `Server`
//! answers a Data frame whose payload starts with a u32 count n with n Data frames of the
//! same payload, then its Trailer; a client's Trailer ends the stream with the server's; a Rst
//! forgets it; frames for unknown ids are dropped (ref §3.2).

use std::collections::HashMap;
use std::rc::Rc;

use bytes::BytesMut;
use monoio::io::{Canceller, Splitable};
use monoio::net::TcpStream;

use ringway::io::{read_more, write_outbox, ReadHint};
use ringway::local::Outbox;
use ringway::thrift::codec::frame_len;
use ringway::ttstream::codec::{encode, parse, FrameType};

/// Largest frame the backend accepts.
const MAX_FRAME: usize = 64 << 20;

pub(crate) async fn serve(stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let out = Rc::new(Outbox::default());
    let o = out.clone();
    let writer = monoio::spawn(async move {
        let _ = write_outbox(&mut wr, &o).await;
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let cancel = Canceller::new();
    let mut hint = ReadHint::new(64 * 1024);
    // Stream id -> whether it is a server stream.
    let mut streams: HashMap<i32, bool> = HashMap::new();
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
            let frame = buf.split_to(len);
            let Ok(f) = parse(&frame) else { break 'conn };
            let method = f.method.clone().map(|r| &frame[r]).unwrap_or(b"");
            match f.kind {
                FrameType::Header => {
                    streams.insert(f.sid, method == b"Server");
                    encode(&mut batch, f.sid, FrameType::Header, method, &[], b"");
                }
                FrameType::Data => match streams.get(&f.sid) {
                    Some(false) => batch.extend_from_slice(&frame),
                    Some(true) => {
                        let payload = &frame[f.payload_at..];
                        let n = payload.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                        for _ in 0..n {
                            batch.extend_from_slice(&frame);
                        }
                        encode(&mut batch, f.sid, FrameType::Trailer, method, &[], b"");
                    }
                    None => {}
                },
                FrameType::Trailer => {
                    if streams.remove(&f.sid) == Some(false) {
                        encode(&mut batch, f.sid, FrameType::Trailer, method, &[], b"");
                    }
                }
                FrameType::Rst => {
                    streams.remove(&f.sid);
                }
                FrameType::Meta => {}
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
    }
    out.close();
    let _ = writer.await;
}
