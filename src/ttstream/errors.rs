//! Every failure of a TTHeader Streaming stream, as a Kitex client sees it: one table from
//! [`RequestError`] to the frame that ends the stream (Trailer or Rst) and the
//! TApplicationException type id and message in its EXCEPTION payload.
//!
//! Type ids: Thrift's own where one fits (1 UNKNOWN_METHOD, 20 UnknownService as Kitex's
//! `remote.UnknownService`, 6 INTERNAL_ERROR), and Kitex's ttstream codes (`exception.go`)
//! where the stream is cut under way: 12006 transport closing, 12013 canceled by connection
//! closed, 12014 recv timeout, 12015 stream timeout.

use crate::error::{ErrorKind, RequestError};
use crate::ttstream::codec::FrameType;

pub const UNKNOWN_METHOD: i32 = 1;
pub const INTERNAL_ERROR: i32 = 6;
pub const PROTOCOL_ERROR: i32 = 7;
pub const UNKNOWN_SERVICE: i32 = 20;
pub const TRANSPORT_CLOSING: i32 = 12006;
pub const CONNECTION_CLOSED: i32 = 12013;
pub const RECV_TIMEOUT: i32 = 12014;
pub const STREAM_TIMEOUT: i32 = 12015;

/// How a stream the proxy ends is ended for its client: the frame, the exception type id and
/// its message.
pub fn stream_error(err: &RequestError) -> (FrameType, i32, String) {
    let msg = err.to_string();
    let (frame, type_id) = match &err.kind {
        // Nothing reached a server: the stream ends as a server would end it.
        ErrorKind::NoRoute { .. } => (FrameType::Trailer, UNKNOWN_METHOD),
        ErrorKind::Draining => (FrameType::Trailer, TRANSPORT_CLOSING),
        ErrorKind::Malformed(_) | ErrorKind::FrameTooLarge { .. } | ErrorKind::Unsupported(_) => {
            (FrameType::Trailer, PROTOCOL_ERROR)
        }
        ErrorKind::Saturated | ErrorKind::Overloaded | ErrorKind::MemoryBudget | ErrorKind::NoEndpoints { .. } => {
            (FrameType::Trailer, INTERNAL_ERROR)
        }
        // The stream was cut: a reset, as Kitex resets a stream it cannot carry on.
        ErrorKind::ConnectFailed { .. } => (FrameType::Rst, INTERNAL_ERROR),
        ErrorKind::UpstreamLost { .. } => (FrameType::Rst, CONNECTION_CLOSED),
        ErrorKind::Timeout { .. } => (FrameType::Rst, STREAM_TIMEOUT),
        ErrorKind::Stalled => (FrameType::Rst, RECV_TIMEOUT),
        ErrorKind::ReplyTooLarge { .. } | ErrorKind::UpstreamProtocol(_) | ErrorKind::UpstreamRefused => {
            (FrameType::Rst, INTERNAL_ERROR)
        }
        ErrorKind::Cancelled => (FrameType::Rst, CONNECTION_CLOSED),
        ErrorKind::HeadersTooLarge { .. } | ErrorKind::TooManyStreams => (FrameType::Trailer, PROTOCOL_ERROR),
    };
    (frame, type_id, msg)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::error::{ConnectCause, LostCause};

    #[test]
    fn errors_before_a_server_saw_the_stream_end_it_with_a_trailer_others_reset_it() {
        let ep: Rc<str> = "127.0.0.1:9".into();
        let refused = Rc::new(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let table: Vec<(ErrorKind, FrameType, i32)> = vec![
            (ErrorKind::NoRoute { target: "Echo".into() }, FrameType::Trailer, UNKNOWN_METHOD),
            (ErrorKind::Draining, FrameType::Trailer, TRANSPORT_CLOSING),
            (ErrorKind::Overloaded, FrameType::Trailer, INTERNAL_ERROR),
            (
                ErrorKind::ConnectFailed { endpoint: ep.clone(), cause: ConnectCause::Io(refused) },
                FrameType::Rst,
                INTERNAL_ERROR,
            ),
            (
                ErrorKind::UpstreamLost { endpoint: ep.clone(), cause: LostCause::Closed, inflight: 2 },
                FrameType::Rst,
                CONNECTION_CLOSED,
            ),
            (ErrorKind::Timeout { endpoint: Some(ep) }, FrameType::Rst, STREAM_TIMEOUT),
            (ErrorKind::Stalled, FrameType::Rst, RECV_TIMEOUT),
        ];
        for (kind, frame, id) in table {
            let err: RequestError = kind.into();
            let (f, t, msg) = stream_error(&err);
            assert_eq!((f, t), (frame, id), "{err}");
            assert_eq!(msg, err.to_string());
        }
    }
}
