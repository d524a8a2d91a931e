//! What a gRPC listener says to a client that does not open with the HTTP/2 preface.

use bytes::BytesMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::grpc::h2::frame::{self, Reason, StreamId};
use crate::worker::state::WorkerState;

/// Something other than an HTTP/2 preface arrived: HTTP/1.x gets an HTTP/1.1 answer saying
/// what this port speaks; anything else a GOAWAY.
pub(super) async fn refuse_non_h2<W: AsyncWriteRent>(buf: &[u8], wr: &mut W, state: &WorkerState, listener: &str) {
    state.stats.garbage_connections.set(state.stats.garbage_connections.get() + 1);
    let http1 = looks_like_http1(buf);
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

/// An HTTP/1.x request line starts with a method (3 to 8 uppercase letters), a space and a
/// target: `/path`, `*` or an absolute URL. Anything else ("INVALID PREFACE", a mangled
/// HTTP/2 preface "PRI * ...") is not one.
fn looks_like_http1(buf: &[u8]) -> bool {
    let method = buf.iter().take(9).take_while(|b| b.is_ascii_uppercase()).count();
    (3..=8).contains(&method)
        && !buf.starts_with(b"PRI ")
        && buf.get(method) == Some(&b' ')
        && matches!(buf.get(method + 1), Some(b'/' | b'*' | b'h'))
}

#[cfg(test)]
mod tests {
    use super::looks_like_http1;

    #[test]
    fn http1_request_lines_are_told_from_other_garbage() {
        for yes in ["GET / HTTP/1.1", "POST /a.B/C HTTP/1.1", "OPTIONS * HTTP/1.1", "GET http://x/ HTTP/1.0"] {
            assert!(looks_like_http1(yes.as_bytes()), "{yes}");
        }
        for no in ["INVALID CONNECTION PREFACE", "PRI * HTTP/2.0", "get / HTTP/1.1", "GE / HTTP/1.1", "\x16\x03\x01"] {
            assert!(!looks_like_http1(no.as_bytes()), "{no}");
        }
    }
}
