//! Header-block assembly: a HEADERS (or PUSH_PROMISE) without END_HEADERS must be followed
//! by CONTINUATION frames of the same stream and nothing else (RFC 9113 §6.10). The raw block
//! size and the number of CONTINUATION frames are bounded (the CONTINUATION flood, ref §5).

use bytes::BytesMut;

use super::frame::{FrameError, Reason, StreamId};

/// Limits on one header block.
#[derive(Clone, Copy, Debug)]
pub struct BlockLimits {
    /// Raw (encoded) bytes in one block.
    pub max_block: usize,
    /// CONTINUATION frames after the HEADERS frame.
    pub max_continuations: usize,
}

/// A header block being assembled.
#[derive(Debug)]
pub struct Pending {
    pub stream: StreamId,
    pub end_stream: bool,
    pub block: BytesMut,
    continuations: usize,
}

/// The assembler of one connection direction.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<Pending>,
}

/// A complete block.
pub struct Block {
    pub stream: StreamId,
    pub end_stream: bool,
    pub block: BytesMut,
}

impl Assembler {
    /// True while a block waits for CONTINUATION: every other frame is then a protocol error.
    pub fn in_progress(&self) -> Option<StreamId> {
        self.pending.as_ref().map(|p| p.stream)
    }

    /// Starts a block with a HEADERS fragment. Returns it at once when END_HEADERS is set.
    pub fn start(
        &mut self,
        stream: StreamId,
        end_stream: bool,
        end_headers: bool,
        fragment: BytesMut,
        limits: BlockLimits,
    ) -> Result<Option<Block>, FrameError> {
        if fragment.len() > limits.max_block {
            return Err(too_large());
        }
        if end_headers {
            return Ok(Some(Block { stream, end_stream, block: fragment }));
        }
        self.pending = Some(Pending { stream, end_stream, block: fragment, continuations: 0 });
        Ok(None)
    }

    /// Adds a CONTINUATION fragment for `stream`.
    pub fn continuation(
        &mut self,
        stream: StreamId,
        end_headers: bool,
        fragment: &[u8],
        limits: BlockLimits,
    ) -> Result<Option<Block>, FrameError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "CONTINUATION without a header block"));
        };
        if p.stream != stream {
            return Err(FrameError::Connection(Reason::PROTOCOL_ERROR, "CONTINUATION for another stream"));
        }
        p.continuations += 1;
        if p.continuations > limits.max_continuations {
            return Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "too many CONTINUATION frames"));
        }
        if p.block.len() + fragment.len() > limits.max_block {
            return Err(too_large());
        }
        p.block.extend_from_slice(fragment);
        if !end_headers {
            return Ok(None);
        }
        let p = self.pending.take().expect("checked above");
        Ok(Some(Block { stream: p.stream, end_stream: p.end_stream, block: p.block }))
    }
}

fn too_large() -> FrameError {
    FrameError::Connection(Reason::ENHANCE_YOUR_CALM, "header block larger than the header list limit")
}
