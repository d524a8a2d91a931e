//! Every failure of a Thrift request, as the client sees it: one table from
//! [`RequestError`] to a TApplicationException type and message.

use crate::error::{ErrorKind, RequestError, Unsupported};
use crate::thrift::codec::ExceptionType;

/// The exception a Thrift client gets for `err` (in its own dialect, with its own method name
/// and seqID: see `ThriftSession::send_error`).
pub fn exception(err: &RequestError) -> (ExceptionType, String) {
    let kind = match &err.kind {
        ErrorKind::NoRoute { target } => {
            return (ExceptionType::UnknownMethod, format!("no route for method {target:?}"))
        }
        ErrorKind::Unsupported(Unsupported::UnframedTransport) => ExceptionType::UnsupportedClientType,
        ErrorKind::Unsupported(Unsupported::HeaderTransform) => ExceptionType::InvalidTransform,
        ErrorKind::Unsupported(Unsupported::MessageType) => ExceptionType::InvalidMessageType,
        ErrorKind::Unsupported(Unsupported::PayloadValidator)
        | ErrorKind::Malformed(_)
        | ErrorKind::FrameTooLarge { .. }
        | ErrorKind::HeadersTooLarge { .. }
        | ErrorKind::TooManyStreams => ExceptionType::ProtocolError,
        ErrorKind::ConnectFailed { .. }
        | ErrorKind::Saturated
        | ErrorKind::UpstreamLost { .. }
        | ErrorKind::Timeout { .. }
        | ErrorKind::ReplyTooLarge { .. }
        | ErrorKind::UpstreamProtocol(_)
        | ErrorKind::UpstreamRefused
        | ErrorKind::Cancelled
        | ErrorKind::Stalled
        | ErrorKind::Draining
        | ErrorKind::Overloaded
        | ErrorKind::MemoryBudget
        | ErrorKind::NoEndpoints { .. } => ExceptionType::InternalError,
    };
    (kind, err.to_string())
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::error::{ConnectCause, LostCause, Origin};

    /// The whole table: every kind, its exception type, its message and who started it.
    #[test]
    fn every_error_kind_has_its_exception() {
        let ep: Rc<str> = "10.0.0.1:9100".into();
        let refused = Rc::new(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        use ExceptionType::*;
        let table: Vec<(ErrorKind, ExceptionType, &str, Origin)> = vec![
            (
                ErrorKind::NoRoute { target: "getUser".into() },
                UnknownMethod,
                "no route for method \"getUser\"",
                Origin::Proxy,
            ),
            (
                ErrorKind::ConnectFailed { endpoint: ep.clone(), cause: ConnectCause::Io(refused.clone()) },
                InternalError,
                "connect to upstream 10.0.0.1:9100 failed: Connection refused (os error 111)",
                Origin::Upstream,
            ),
            (
                ErrorKind::ConnectFailed {
                    endpoint: ep.clone(),
                    cause: ConnectCause::TimedOut(Duration::from_millis(250)),
                },
                InternalError,
                "connect to upstream 10.0.0.1:9100 failed: timed out after 250ms",
                Origin::Upstream,
            ),
            (
                ErrorKind::Saturated,
                InternalError,
                "no upstream connection had room before the request deadline",
                Origin::Proxy,
            ),
            (
                ErrorKind::UpstreamLost { endpoint: ep.clone(), cause: LostCause::Closed, inflight: 3 },
                InternalError,
                "upstream connection closed: 10.0.0.1:9100 (3 requests in flight)",
                Origin::Upstream,
            ),
            (
                ErrorKind::UpstreamLost { endpoint: ep.clone(), cause: LostCause::ReadFailed(refused), inflight: 1 },
                InternalError,
                "upstream read failed (Connection refused (os error 111)): 10.0.0.1:9100 (1 requests in flight)",
                Origin::Upstream,
            ),
            (
                ErrorKind::UpstreamLost { endpoint: ep.clone(), cause: LostCause::MalformedReply, inflight: 2 },
                InternalError,
                "upstream sent a malformed reply: 10.0.0.1:9100 (2 requests in flight)",
                Origin::Upstream,
            ),
            (
                ErrorKind::Timeout { endpoint: Some(ep) },
                InternalError,
                "upstream request timed out (10.0.0.1:9100)",
                Origin::Proxy,
            ),
            (
                ErrorKind::ReplyTooLarge { len: 2_000_000, max: 1_048_576 },
                InternalError,
                "upstream reply of 2000000 bytes is over the cluster max_frame_size of 1048576",
                Origin::Upstream,
            ),
            (
                ErrorKind::FrameTooLarge { len: 2_000_000, max: 1_048_576 },
                ProtocolError,
                "frame of 2000000 bytes is over the limit of 1048576 bytes",
                Origin::Client,
            ),
            (ErrorKind::Malformed("bad header"), ProtocolError, "malformed request: bad header", Origin::Client),
            (
                ErrorKind::Unsupported(Unsupported::UnframedTransport),
                UnsupportedClientType,
                "unframed (buffered) transport is not supported by this proxy; use framed or TTHeader",
                Origin::Client,
            ),
            (
                ErrorKind::Unsupported(Unsupported::HeaderTransform),
                InvalidTransform,
                "THeader transforms (zlib, …) are not supported by this proxy",
                Origin::Client,
            ),
            (
                ErrorKind::Unsupported(Unsupported::PayloadValidator),
                ProtocolError,
                "TTHeader PV_* payload validators cannot be re-signed by a proxy that rewrites seqIDs",
                Origin::Client,
            ),
            (
                ErrorKind::Unsupported(Unsupported::MessageType),
                InvalidMessageType,
                "only CALL and ONEWAY messages may be sent to the proxy",
                Origin::Client,
            ),
            (ErrorKind::Draining, InternalError, "the proxy is draining", Origin::Proxy),
            (
                ErrorKind::Overloaded,
                InternalError,
                "the cluster is overloaded (max_requests in flight or max_pending_requests waiting)",
                Origin::Proxy,
            ),
            (
                ErrorKind::MemoryBudget,
                InternalError,
                "the proxy is over its buffer memory (runtime.max_buffer_memory); try again shortly",
                Origin::Proxy,
            ),
            (ErrorKind::UpstreamRefused, InternalError, "the upstream refused the stream (GOAWAY)", Origin::Upstream),
            (ErrorKind::Cancelled, InternalError, "cancelled by the client", Origin::Client),
            (ErrorKind::Stalled, InternalError, "stalled on a zero flow-control window", Origin::Proxy),
            (
                ErrorKind::UpstreamProtocol("bad frame"),
                InternalError,
                "upstream protocol error: bad frame",
                Origin::Upstream,
            ),
            (
                ErrorKind::HeadersTooLarge { max: 1024 },
                ProtocolError,
                "request headers over max_header_list_size (1024 bytes)",
                Origin::Client,
            ),
            (ErrorKind::TooManyStreams, ProtocolError, "over SETTINGS_MAX_CONCURRENT_STREAMS", Origin::Client),
            (
                ErrorKind::NoEndpoints { cluster: "echo".into() },
                InternalError,
                "cluster echo has no endpoints (its registry lists no instance yet)",
                Origin::Proxy,
            ),
        ];
        for (kind, want_type, want_msg, want_origin) in table {
            let err = RequestError::new(kind.clone());
            assert_eq!(err.origin, want_origin, "{kind:?}");
            assert_eq!(exception(&err), (want_type, want_msg.to_string()), "{kind:?}");
        }
    }
}
