//! Thrift codecs, sans I/O: transport detection, frame cutting and classification, message
//! header peek, seqID patch/restore and TApplicationException encoding. Nothing here touches a
//! socket or decodes a payload struct.

pub mod crc32c;
pub mod detect;
pub mod exception;
pub mod frame;
pub mod message;
pub mod patch;

pub use detect::{detect, Detected};
pub use exception::{encode_exception, ExceptionType, ReplyFraming};
pub use frame::{frame_len, parse_frame, string_header, Dialect, FrameInfo, ParseError, Transport};
pub use message::Protocol;
pub use patch::{patch_request, restore_reply, OriginalSeq};

impl Dialect {
    /// A small number unique to this dialect (upstream pools are kept per dialect).
    pub fn index(&self) -> u32 {
        (self.transport as u32) << 8 | (self.protocol as u32) << 1 | self.inner_framed as u32
    }

    /// How a proxy-generated reply to this dialect is framed.
    pub fn reply_framing(&self) -> ReplyFraming {
        match self.transport {
            Transport::Framed => ReplyFraming::Framed,
            Transport::TTHeader => ReplyFraming::TTHeader { inner_framed: self.inner_framed },
            Transport::THeader => ReplyFraming::THeader,
        }
    }
}
