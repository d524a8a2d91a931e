//! What a gRPC listener says to a client that does not open with the HTTP/2 preface.

use bytes::BytesMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::grpc::h2::frame::{self, Reason, StreamId};
use crate::worker::state::WorkerState;

/// Something other than an HTTP/2 preface arrived: HTTP/1.x gets an HTTP/1.1 answer saying
/// what this port speaks; anything else a GOAWAY.
pub(super) async fn refuse_non_h2<W: AsyncWriteRent>(buf: &[u8], wr: &mut W, state: &WorkerState, listener: &str) {
    state.stats.garbage_connections.set(state.stats.garbage_connections.get() + 1);
    let http1 = buf.iter().take(8).take_while(|b| b.is_ascii_uppercase()).count() >= 3
        && buf.iter().take(9).any(|&b| b == b' ');
    let reply: Vec<u8> = if http1 {
        log::debug!("listener {listener}: HTTP/1.x request on a gRPC (h2c) port refused");
        let body =
            "This port speaks gRPC over HTTP/2 cleartext with prior knowledge (h2c); HTTP/1.x is not supported.\n";
        format!(
            "HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        let mut b = BytesMut::new();
        frame::goaway::encode(StreamId::ZERO, Reason::PROTOCOL_ERROR, b"invalid HTTP/2 connection preface", &mut b);
        let h2 = &state.stats.protocols.h2;
        crate::grpc::stats::H2Counters::count(&h2.goaway_sent, 0, Reason::PROTOCOL_ERROR.0);
        b.to_vec()
    };
    let (_, _) = wr.write_all(reply).await;
    let _ = wr.shutdown().await;
}
