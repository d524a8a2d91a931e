//! Every failure of a gRPC call the proxy answers itself: one table from [`RequestError`] to
//! a gRPC status with its message (sent as Trailers-Only, or as trailers once response
//! headers went out), or to the RST_STREAM code that ends the stream instead.

use super::h2::frame::Reason;
use super::wire::Code;
use crate::error::{ErrorKind, RequestError};

/// How the proxy ends a call it cannot complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcReply {
    /// A gRPC status and message.
    Status(Code, String),
    /// RST_STREAM with this code (the call never became a gRPC exchange, or the peer must
    /// retry it elsewhere).
    Reset(Reason),
}

/// The answer a gRPC client gets for `err`.
pub fn reply(err: &RequestError) -> GrpcReply {
    let status = |code| GrpcReply::Status(code, err.to_string());
    match &err.kind {
        ErrorKind::NoRoute { .. } | ErrorKind::Unsupported(_) => status(Code::Unimplemented),
        ErrorKind::ConnectFailed { .. }
        | ErrorKind::Saturated
        | ErrorKind::Overloaded
        | ErrorKind::NoEndpoints { .. } => status(Code::Unavailable),
        ErrorKind::UpstreamLost { endpoint, cause, .. } => {
            GrpcReply::Status(Code::Unavailable, format!("{cause}: {endpoint}"))
        }
        ErrorKind::Timeout { .. } => GrpcReply::Status(Code::DeadlineExceeded, "deadline exceeded at the proxy".into()),
        ErrorKind::HeadersTooLarge { .. } | ErrorKind::FrameTooLarge { .. } | ErrorKind::MemoryBudget => {
            status(Code::ResourceExhausted)
        }
        ErrorKind::UpstreamProtocol(_) | ErrorKind::ReplyTooLarge { .. } => status(Code::Internal),
        ErrorKind::Malformed(_) => GrpcReply::Reset(Reason::PROTOCOL_ERROR),
        ErrorKind::TooManyStreams | ErrorKind::Draining | ErrorKind::UpstreamRefused => {
            GrpcReply::Reset(Reason::REFUSED_STREAM)
        }
        ErrorKind::Cancelled | ErrorKind::Stalled => GrpcReply::Reset(Reason::CANCEL),
    }
}

/// The RST_STREAM code for `err` when it ends a stream without a status (a kind whose reply
/// is a status gets CANCEL: the stream is abandoned).
pub fn reset_code(err: &RequestError) -> Reason {
    match reply(err) {
        GrpcReply::Reset(r) => r,
        GrpcReply::Status(..) => Reason::CANCEL,
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::error::{ConnectCause, LostCause, Unsupported};

    /// The whole table: every kind and what a gRPC client gets for it.
    #[test]
    fn every_error_kind_has_its_grpc_answer() {
        let ep: Rc<str> = "10.0.0.1:50051".into();
        let st = |c, m: &str| GrpcReply::Status(c, m.to_string());
        let table: Vec<(ErrorKind, GrpcReply)> = vec![
            (
                ErrorKind::NoRoute { target: "/pkg.Echo/Nope".into() },
                st(Code::Unimplemented, "no route for /pkg.Echo/Nope"),
            ),
            (
                ErrorKind::ConnectFailed {
                    endpoint: ep.clone(),
                    cause: ConnectCause::TimedOut(Duration::from_secs(1)),
                },
                st(Code::Unavailable, "connect to upstream 10.0.0.1:50051 failed: timed out after 1s"),
            ),
            (
                ErrorKind::Saturated,
                st(Code::Unavailable, "no upstream connection had room before the request deadline"),
            ),
            (
                ErrorKind::Overloaded,
                st(
                    Code::Unavailable,
                    "the cluster is overloaded (max_requests in flight or max_pending_requests waiting)",
                ),
            ),
            (
                ErrorKind::MemoryBudget,
                st(
                    Code::ResourceExhausted,
                    "the proxy is over its buffer memory (runtime.max_buffer_memory); try again shortly",
                ),
            ),
            (
                ErrorKind::NoEndpoints { cluster: "echo".into() },
                st(Code::Unavailable, "cluster echo has no endpoints (its registry lists no instance yet)"),
            ),
            (
                ErrorKind::UpstreamLost { endpoint: ep.clone(), cause: LostCause::Closed, inflight: 5 },
                st(Code::Unavailable, "upstream connection closed: 10.0.0.1:50051"),
            ),
            (
                ErrorKind::UpstreamLost {
                    endpoint: ep.clone(),
                    cause: LostCause::ProtocolError("frame too large"),
                    inflight: 1,
                },
                st(Code::Unavailable, "upstream protocol error (frame too large): 10.0.0.1:50051"),
            ),
            (ErrorKind::Timeout { endpoint: None }, st(Code::DeadlineExceeded, "deadline exceeded at the proxy")),
            (ErrorKind::Timeout { endpoint: Some(ep) }, st(Code::DeadlineExceeded, "deadline exceeded at the proxy")),
            (
                ErrorKind::HeadersTooLarge { max: 16384 },
                st(Code::ResourceExhausted, "request headers over max_header_list_size (16384 bytes)"),
            ),
            (
                ErrorKind::FrameTooLarge { len: 9, max: 8 },
                st(Code::ResourceExhausted, "frame of 9 bytes is over the limit of 8 bytes"),
            ),
            (
                ErrorKind::UpstreamProtocol("trailers without END_STREAM"),
                st(Code::Internal, "upstream protocol error: trailers without END_STREAM"),
            ),
            (
                ErrorKind::ReplyTooLarge { len: 9, max: 8 },
                st(Code::Internal, "upstream reply of 9 bytes is over the cluster max_frame_size of 8"),
            ),
            (
                ErrorKind::Unsupported(Unsupported::MessageType),
                st(Code::Unimplemented, "only CALL and ONEWAY messages may be sent to the proxy"),
            ),
            (ErrorKind::Malformed("bad :path"), GrpcReply::Reset(Reason::PROTOCOL_ERROR)),
            (ErrorKind::TooManyStreams, GrpcReply::Reset(Reason::REFUSED_STREAM)),
            (ErrorKind::Draining, GrpcReply::Reset(Reason::REFUSED_STREAM)),
            (ErrorKind::UpstreamRefused, GrpcReply::Reset(Reason::REFUSED_STREAM)),
            (ErrorKind::Cancelled, GrpcReply::Reset(Reason::CANCEL)),
            (ErrorKind::Stalled, GrpcReply::Reset(Reason::CANCEL)),
        ];
        for (kind, want) in table {
            assert_eq!(reply(&RequestError::new(kind.clone())), want, "{kind:?}");
        }
        assert_eq!(reset_code(&ErrorKind::Saturated.into()), Reason::CANCEL);
        assert_eq!(reset_code(&ErrorKind::Draining.into()), Reason::REFUSED_STREAM);
    }
}
