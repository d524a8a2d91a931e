//! HTTP/2 frames (RFC 9113 §4, §6; ref §4.2): the 9-byte header, one file per frame type
//! with its parse and encode, and the errors a frame can raise. Parsers take the header and
//! the payload bytes and return ranges into the payload, so DATA and header-block fragments
//! are forwarded without copying.

pub mod continuation;
pub mod data;
pub mod flags;
pub mod goaway;
pub mod headers;
pub mod ping;
pub mod priority;
pub mod push_promise;
pub mod rst_stream;
pub mod settings;
pub mod window_update;

use bytes::{BufMut, BytesMut};

/// The client connection preface (RFC 9113 §3.4), followed by a SETTINGS frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of the frame header.
pub const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE bounds (RFC 9113 §6.5.2) and the initial value.
pub const MIN_MAX_FRAME_SIZE: u32 = 1 << 14;
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// Largest flow-control window and stream id.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;
/// The initial flow-control window of every stream and of the connection.
pub const DEFAULT_WINDOW: u32 = 65_535;

/// Frame type codes.
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub use flags::{AckFlags, ContinuationFlags, DataFlags, Flags, HeadersFlags, PushPromiseFlags};

/// The name of a frame type.
pub fn kind_name(k: u8) -> &'static str {
    const NAMES: [&str; 10] = [
        "DATA",
        "HEADERS",
        "PRIORITY",
        "RST_STREAM",
        "SETTINGS",
        "PUSH_PROMISE",
        "PING",
        "GOAWAY",
        "WINDOW_UPDATE",
        "CONTINUATION",
    ];
    NAMES.get(k as usize).copied().unwrap_or("UNKNOWN")
}

/// A stream identifier (RFC 9113 §5.1.1): 31 bits, the reserved high bit always clear. Zero
/// is the connection itself; clients open odd ids, servers even ones.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u32);

impl StreamId {
    /// The connection (frames that belong to no stream).
    pub const ZERO: StreamId = StreamId(0);
    /// The largest id (GOAWAY's "every stream" in the first phase of a graceful drain).
    pub const MAX: StreamId = StreamId(MAX_STREAM_ID);

    /// The id `n`, its reserved bit cleared.
    pub const fn new(n: u32) -> StreamId {
        StreamId(n & MAX_STREAM_ID)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Opened by a client (odd).
    pub const fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }

    /// The next id the same peer may open (ids grow by two).
    pub const fn next(self) -> StreamId {
        StreamId::new(self.0 + 2)
    }
}

impl std::fmt::Debug for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An HTTP/2 error code (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    pub fn name(self) -> &'static str {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("UNKNOWN")
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.0)
    }
}

/// What a malformed frame costs: the whole connection (GOAWAY) or one stream (RST_STREAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    Connection(Reason, &'static str),
    Stream(StreamId, Reason, &'static str),
}

/// The 9-byte frame header. Its `Debug` reads like a trace: `DATA stream=3 len=5 END_STREAM`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub kind: u8,
    pub flags: Flags,
    pub stream: StreamId,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} stream={} len={}", kind_name(self.kind), self.stream, self.len)?;
        if self.flags != Flags::NONE {
            f.write_str(" ")?;
            self.flags.fmt_for(self.kind, f)?;
        }
        Ok(())
    }
}

impl Head {
    pub fn new(kind: u8, flags: impl Into<Flags>, stream: StreamId, len: usize) -> Head {
        debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
        Head { len: len as u32, kind, flags: flags.into(), stream }
    }

    /// Reads a header from the first 9 bytes; the reserved bit of the stream id is ignored.
    pub fn parse(b: &[u8]) -> Option<Head> {
        let b = b.get(..HEAD_LEN)?;
        Some(Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: Flags::from_bits(b[4]),
            stream: StreamId::new(u32::from_be_bytes([b[5], b[6], b[7], b[8]])),
        })
    }

    pub fn to_bytes(self) -> [u8; HEAD_LEN] {
        let l = self.len.to_be_bytes();
        let s = self.stream.get().to_be_bytes();
        [l[1], l[2], l[3], self.kind, self.flags.bits(), s[0], s[1], s[2], s[3]]
    }

    pub fn encode(self, dst: &mut BytesMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// Rewrites the header at the start of `frame` in place.
    pub fn write_into(self, frame: &mut [u8]) {
        frame[..HEAD_LEN].copy_from_slice(&self.to_bytes());
    }
}

/// Checks a frame against our SETTINGS_MAX_FRAME_SIZE (RFC 9113 §4.2): too large is a
/// connection error for frames that carry header blocks or belong to stream 0, a stream error
/// otherwise.
pub fn check_size(head: &Head, max_frame_size: u32) -> Result<(), FrameError> {
    if head.len <= max_frame_size {
        return Ok(());
    }
    let conn_fatal = head.stream.is_zero()
        || matches!(head.kind, kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE | kind::SETTINGS);
    if conn_fatal {
        Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"))
    } else {
        Err(FrameError::Stream(head.stream, Reason::FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"))
    }
}

/// Removes PADDED framing: returns the range of the payload that is content.
/// (`padded`: the frame's PADDED flag.)
pub(crate) fn unpad(padded: bool, payload: &[u8]) -> Result<std::ops::Range<usize>, FrameError> {
    if !padded {
        return Ok(0..payload.len());
    }
    let Some(&pad) = payload.first() else {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, "PADDED frame without a pad length"));
    };
    let pad = pad as usize;
    if pad >= payload.len() {
        return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "pad length not less than the payload"));
    }
    Ok(1..payload.len() - pad)
}

pub(crate) fn need_stream(head: &Head, what: &'static str) -> Result<(), FrameError> {
    if head.stream.is_zero() {
        return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, what));
    }
    Ok(())
}

pub(crate) fn need_conn(head: &Head, what: &'static str) -> Result<(), FrameError> {
    if !head.stream.is_zero() {
        return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, what));
    }
    Ok(())
}

pub(crate) fn u31(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & MAX_STREAM_ID
}

#[cfg(test)]
mod tests;

/// The streams whose HEADERS are among `frames`: frames we wrote ourselves, whole and back
/// to back, maybe after the connection preface (a frame head cannot start with "PRI": its
/// length would be over any frame size). Stops at a frame cut short.
pub fn headers_in(frames: &[u8]) -> Vec<StreamId> {
    let mut rest = frames.strip_prefix(PREFACE.as_slice()).unwrap_or(frames);
    let mut ids = Vec::new();
    while let Some(head) = Head::parse(rest) {
        let Some(next) = rest.get(HEAD_LEN + head.len as usize..) else { break };
        if head.kind == kind::HEADERS {
            ids.push(head.stream);
        }
        rest = next;
    }
    ids
}

/// Cuts the next whole frame off the front of `buf`: `Ok(None)` until all of it is there.
/// The size is checked against `max_frame_size` as soon as the header is in, before the
/// payload is buffered.
pub fn cut(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<(Head, BytesMut)>, FrameError> {
    let Some(head) = Head::parse(buf) else { return Ok(None) };
    check_size(&head, max_frame_size)?;
    let total = HEAD_LEN + head.len as usize;
    if buf.len() < total {
        if buf.capacity() < total {
            buf.reserve(total - buf.len());
        }
        return Ok(None);
    }
    Ok(Some((head, buf.split_to(total))))
}
