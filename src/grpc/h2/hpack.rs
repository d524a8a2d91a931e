//! HPACK (RFC 7541), sans I/O: header blocks to [`HeaderList`]s and back (ref §4.3).
//!
//! A proxy cannot forward header blocks verbatim: each connection direction has its own
//! dynamic table. So every block from a peer goes through that connection's [`Decoder`], in
//! arrival order, even for streams about to be refused; and every block we send comes from
//! the [`Encoder`] of the connection it is written to, in the order it hits the socket.
//!
//! - `integer`: prefixed integers, bounded to `u32`.
//! - `huffman`: the static Huffman code; the decoder walks a const-built 4-bit state table.
//! - `table`: the static table and the dynamic table (entries as ranges of one octet log).
//! - `decoder`: [`Decoder`], with the list-size limit applied while decoding, so that an
//!   HPACK bomb (a small block naming a large entry many times) costs O(block) work and
//!   memory while the table stays in sync (ref §5).
//! - `encoder`: [`Encoder`] and its per-field indexing policy.
//! - `list`: [`HeaderList`], a decoded list in one arena, and [`Field`].
//!
//! Errors: [`DecodeError::Compression`] means the connection must be closed with
//! COMPRESSION_ERROR; [`DecodeError::ListTooLarge`] only rejects the block's stream.

mod decoder;
mod encoder;
mod huffman;
mod integer;
mod list;
mod table;

use std::fmt;

pub use decoder::Decoder;
pub use encoder::{Encoder, MAX_ENCODER_TABLE_SIZE};
pub use list::{Field, HeaderList};

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Malformed block (bad integer, index 0 or out of range, bad Huffman/padding/EOS,
    /// truncated string, size update not at block start or above the allowed maximum, ...):
    /// the connection must be closed with COMPRESSION_ERROR. The reason is for logs.
    Compression(&'static str),
    /// The decoded list exceeded `max_list_size`. The WHOLE block was still processed (dynamic
    /// table inserts applied) so the decoder stays in sync and the connection can live on;
    /// `out` holds no usable list.
    ListTooLarge,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Compression(why) => write!(f, "HPACK compression error: {why}"),
            DecodeError::ListTooLarge => f.write_str("decoded header list larger than allowed"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests;
