//! What can go wrong with one request, whoever started it, with typed details. Each protocol
//! turns a [`RequestError`] into its own reply in exactly one function (`thrift/errors.rs`:
//! exception type and message; `grpc/errors.rs`: status and message, or a reset code), so
//! the same failure reads the same way in every protocol and the table is tested as a whole.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// Who started a failure: the proxy's answer differs (a client's mistake is its own; an
/// upstream's failure is reported as the proxy's inability to serve; the proxy's own limits
/// are named as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something the proxy will not or cannot forward.
    Client,
    /// The upstream failed, went away, or broke the protocol.
    Upstream,
    /// The proxy's own state: no route, no room, a deadline, a drain.
    Proxy,
}

/// What a client sent that this proxy does not forward (it is not malformed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// Thrift without framing (TBufferedTransport).
    UnframedTransport,
    /// Apache THeader transforms (zlib, …), which would hide the seqID.
    HeaderTransform,
    /// TTHeader `PV_*` payload validators, which a proxy that rewrites seqIDs cannot re-sign.
    PayloadValidator,
    /// A Thrift message type other than CALL or ONEWAY sent to the proxy.
    MessageType,
}

/// Why connecting to an endpoint failed.
#[derive(Clone, Debug)]
pub enum ConnectCause {
    /// The connect call failed (refused, unreachable, …).
    Io(Rc<std::io::Error>),
    /// No answer within this long (`connect_timeout`, or the request's deadline if sooner).
    TimedOut(Duration),
}

impl fmt::Display for ConnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectCause::Io(e) => write!(f, "{e}"),
            ConnectCause::TimedOut(d) => write!(f, "timed out after {d:?}"),
        }
    }
}

/// Why an upstream connection was lost (every request in flight on it fails).
#[derive(Clone, Debug)]
pub enum LostCause {
    /// The upstream closed the connection.
    Closed,
    /// Reading failed.
    ReadFailed(Rc<std::io::Error>),
    /// Writing failed.
    WriteFailed(Rc<std::io::Error>),
    /// A reply that could not be parsed (Thrift): nothing after it can be trusted.
    MalformedReply,
    /// A reply over the size limit whose header could not be read to tell whose it was.
    UnparseableOversizedReply,
    /// The upstream broke HTTP/2 on the connection (a connection error).
    ProtocolError(&'static str),
    /// A bug in the proxy: a task of the connection panicked (which one).
    Panicked(&'static str),
}

impl fmt::Display for LostCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostCause::Closed => write!(f, "upstream connection closed"),
            LostCause::ReadFailed(e) => write!(f, "upstream read failed ({e})"),
            LostCause::WriteFailed(e) => write!(f, "upstream write failed ({e})"),
            LostCause::MalformedReply => write!(f, "upstream sent a malformed reply"),
            LostCause::UnparseableOversizedReply => write!(f, "upstream sent an unparseable oversized reply"),
            LostCause::ProtocolError(why) => write!(f, "upstream protocol error ({why})"),
            LostCause::Panicked(task) => write!(f, "upstream connection failed ({task} panicked)"),
        }
    }
}

/// One kind of failure of a request, with its details.
#[derive(Clone, Debug)]
pub enum ErrorKind {
    /// No route of the listener matched; `target` names what was asked for (a method name, a
    /// gRPC path), as the client sent it.
    NoRoute { target: String },
    /// Connecting to `endpoint` failed; nothing was sent (every endpoint was tried).
    ConnectFailed { endpoint: Rc<str>, cause: ConnectCause },
    /// Every upstream connection stayed full until the request's deadline.
    Saturated,
    /// The upstream connection to `endpoint` was lost with `inflight` requests on it.
    UpstreamLost { endpoint: Rc<str>, cause: LostCause, inflight: usize },
    /// The request's deadline passed at the proxy, waiting on `endpoint` (if it had reached one).
    Timeout { endpoint: Option<Rc<str>> },
    /// The upstream's reply was larger than the cluster's `max_frame_size`.
    ReplyTooLarge { len: usize, max: usize },
    /// The upstream broke the protocol on this request's stream.
    UpstreamProtocol(&'static str),
    /// A request frame larger than the listener's `max_frame_size`.
    FrameTooLarge { len: usize, max: usize },
    /// Request headers larger than the listener's `max_header_list_size`.
    HeadersTooLarge { max: u32 },
    /// More streams than the listener's `max_concurrent_streams`.
    TooManyStreams,
    /// The request cannot be parsed.
    Malformed(&'static str),
    /// The request is valid but not something this proxy forwards.
    Unsupported(Unsupported),
    /// The client cancelled the request.
    Cancelled,
    /// Data waited on a zero window longer than `stream_stall_timeout`.
    Stalled,
    /// The upstream refused the stream before processing it (GOAWAY below its id).
    UpstreamRefused,
    /// The proxy is draining and takes no new requests.
    Draining,
    /// Too many requests already wait for this cluster (not raised yet: the circuit breakers of
    /// the upstream-health issue will).
    Overloaded,
    /// The worker holds more than `runtime.max_buffer_memory` in its buffers.
    MemoryBudget,
    /// The cluster has no endpoint: its registry has not answered yet, or lists none.
    NoEndpoints { cluster: String },
}

impl ErrorKind {
    /// How many kinds there are (metrics count each apart).
    pub const COUNT: usize = 19;
    /// Each kind's metric label, by `index`.
    pub const LABELS: [&'static str; ErrorKind::COUNT] = [
        "no_route",
        "connect_failed",
        "saturated",
        "upstream_lost",
        "timeout",
        "reply_too_large",
        "upstream_protocol",
        "frame_too_large",
        "headers_too_large",
        "too_many_streams",
        "malformed",
        "unsupported",
        "cancelled",
        "stalled",
        "upstream_refused",
        "draining",
        "overloaded",
        "memory_budget",
        "no_endpoints",
    ];

    /// This kind's metric label.
    pub fn label(&self) -> &'static str {
        ErrorKind::LABELS[self.index()]
    }

    /// The upstream endpoint the failure concerns, if any.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            ErrorKind::ConnectFailed { endpoint, .. } | ErrorKind::UpstreamLost { endpoint, .. } => Some(endpoint),
            ErrorKind::Timeout { endpoint } => endpoint.as_deref(),
            _ => None,
        }
    }

    /// This kind's place in `LABELS`.
    pub fn index(&self) -> usize {
        match self {
            ErrorKind::NoRoute { .. } => 0,
            ErrorKind::ConnectFailed { .. } => 1,
            ErrorKind::Saturated => 2,
            ErrorKind::UpstreamLost { .. } => 3,
            ErrorKind::Timeout { .. } => 4,
            ErrorKind::ReplyTooLarge { .. } => 5,
            ErrorKind::UpstreamProtocol(_) => 6,
            ErrorKind::FrameTooLarge { .. } => 7,
            ErrorKind::HeadersTooLarge { .. } => 8,
            ErrorKind::TooManyStreams => 9,
            ErrorKind::Malformed(_) => 10,
            ErrorKind::Unsupported(_) => 11,
            ErrorKind::Cancelled => 12,
            ErrorKind::Stalled => 13,
            ErrorKind::UpstreamRefused => 14,
            ErrorKind::Draining => 15,
            ErrorKind::Overloaded => 16,
            ErrorKind::MemoryBudget => 17,
            ErrorKind::NoEndpoints { .. } => 18,
        }
    }
}

/// A failed request: what went wrong and who started it.
#[derive(Clone, Debug)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub origin: Origin,
}

impl RequestError {
    /// The origin of `kind` when it has only one (every kind today).
    pub fn new(kind: ErrorKind) -> RequestError {
        let origin = match &kind {
            ErrorKind::NoRoute { .. }
            | ErrorKind::Saturated
            | ErrorKind::Timeout { .. }
            | ErrorKind::Stalled
            | ErrorKind::Draining
            | ErrorKind::Overloaded
            | ErrorKind::MemoryBudget
            | ErrorKind::NoEndpoints { .. } => Origin::Proxy,
            ErrorKind::ConnectFailed { .. }
            | ErrorKind::UpstreamLost { .. }
            | ErrorKind::ReplyTooLarge { .. }
            | ErrorKind::UpstreamProtocol(_)
            | ErrorKind::UpstreamRefused => Origin::Upstream,
            ErrorKind::FrameTooLarge { .. }
            | ErrorKind::HeadersTooLarge { .. }
            | ErrorKind::TooManyStreams
            | ErrorKind::Malformed(_)
            | ErrorKind::Unsupported(_)
            | ErrorKind::Cancelled => Origin::Client,
        };
        RequestError { kind, origin }
    }
}

impl From<ErrorKind> for RequestError {
    fn from(kind: ErrorKind) -> Self {
        RequestError::new(kind)
    }
}

impl fmt::Display for RequestError {
    /// The words both protocols share; each protocol's table may phrase a kind its own way.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NoRoute { target } => write!(f, "no route for {target}"),
            ErrorKind::ConnectFailed { endpoint, cause } => write!(f, "connect to upstream {endpoint} failed: {cause}"),
            ErrorKind::Saturated => write!(f, "no upstream connection had room before the request deadline"),
            ErrorKind::UpstreamLost { endpoint, cause, inflight } => {
                write!(f, "{cause}: {endpoint} ({inflight} requests in flight)")
            }
            ErrorKind::Timeout { endpoint: Some(e) } => write!(f, "upstream request timed out ({e})"),
            ErrorKind::Timeout { endpoint: None } => write!(f, "deadline exceeded at the proxy"),
            ErrorKind::ReplyTooLarge { len, max } => {
                write!(f, "upstream reply of {len} bytes is over the cluster max_frame_size of {max}")
            }
            ErrorKind::UpstreamProtocol(why) => write!(f, "upstream protocol error: {why}"),
            ErrorKind::FrameTooLarge { len, max } => write!(f, "frame of {len} bytes is over the limit of {max} bytes"),
            ErrorKind::HeadersTooLarge { max } => {
                write!(f, "request headers over max_header_list_size ({max} bytes)")
            }
            ErrorKind::TooManyStreams => write!(f, "over SETTINGS_MAX_CONCURRENT_STREAMS"),
            ErrorKind::Malformed(why) => write!(f, "malformed request: {why}"),
            ErrorKind::Unsupported(u) => f.write_str(match u {
                Unsupported::UnframedTransport => {
                    "unframed (buffered) transport is not supported by this proxy; use framed or TTHeader"
                }
                Unsupported::HeaderTransform => "THeader transforms (zlib, …) are not supported by this proxy",
                Unsupported::PayloadValidator => {
                    "TTHeader PV_* payload validators cannot be re-signed by a proxy that rewrites seqIDs"
                }
                Unsupported::MessageType => "only CALL and ONEWAY messages may be sent to the proxy",
            }),
            ErrorKind::Cancelled => write!(f, "cancelled by the client"),
            ErrorKind::Stalled => write!(f, "stalled on a zero flow-control window"),
            ErrorKind::UpstreamRefused => write!(f, "the upstream refused the stream (GOAWAY)"),
            ErrorKind::Draining => write!(f, "the proxy is draining"),
            ErrorKind::Overloaded => {
                write!(f, "the cluster is overloaded (max_requests in flight or max_pending_requests waiting)")
            }
            ErrorKind::MemoryBudget => {
                write!(f, "the proxy is over its buffer memory (runtime.max_buffer_memory); try again shortly")
            }
            ErrorKind::NoEndpoints { cluster } => {
                write!(f, "cluster {cluster} has no endpoints (its registry lists no instance yet)")
            }
        }
    }
}
