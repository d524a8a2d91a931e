//! [`Encoder`]: one per connection and direction, writing blocks in the order they go out.
//!
//! Policy per field, in order:
//! 1. `never_indexed` fields stay "literal never indexed" (the name may be an index);
//! 2. an exact (name, value) match in the static or dynamic table is sent as its index;
//! 3. fields not worth a table entry are "literal without indexing": values that change per
//!    request (`grpc-timeout`, `content-length`, `date`, `grpc-message`), binary metadata
//!    (`*-bin`, which includes `grpc-status-details-bin`), credentials (`authorization`,
//!    `proxy-authorization`: kept out of a table shared by every client of an upstream
//!    connection), and values longer than a quarter of the table;
//! 4. everything else (`:authority`, `:path`, `content-type`, `user-agent`, `te`,
//!    `grpc-encoding`, `grpc-status`, ...) is a literal with incremental indexing.
//!
//! Names are sent as an index whenever the static or dynamic table has them, and strings are
//! Huffman-encoded only when that is shorter.
//!
//! A proxy encodes the same few blocks again and again on a connection (`:status 200` +
//! `content-type`, `grpc-status 0`, one method's request headers). Encoding is a pure function
//! of the field list and the dynamic table, so the encoder remembers its last few blocks that
//! changed nothing in the table, with the fields they came from, and copies one when the same
//! list comes again while the table is as it was (`Recent`).

use bytes::{BufMut, BytesMut};

use super::list::Field;
use super::table::{static_find, DynamicTable, ENTRY_OVERHEAD};
use super::{huffman, integer};

/// The largest dynamic table the encoder keeps, whatever the peer allows: gRPC header sets
/// are small, and this bounds the memory of every upstream connection. Using less than the
/// peer's maximum is always allowed (RFC 7541 §4.2); the size in use is announced with a
/// size update.
pub const MAX_ENCODER_TABLE_SIZE: usize = 16 * 1024;

/// The dynamic table size both sides start with (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// HPACK encoder state of one connection direction.
#[derive(Debug)]
pub struct Encoder {
    /// Our copy of the table the peer's decoder holds.
    table: DynamicTable,
    /// Size updates owed at the start of the next block: (smallest size set since the last
    /// block, final size).
    pending_update: Option<(usize, usize)>,
    /// Bumped by every change of the dynamic table.
    generation: u64,
    recent: Vec<Recent>,
    /// The slot the next remembered block replaces.
    next_slot: usize,
    /// The current list in `Recent::key` form (kept to reuse its buffer).
    key: Vec<u8>,
}

/// Blocks remembered per encoder.
const RECENT_BLOCKS: usize = 4;
/// Field lists longer than this (in `Recent::key` form) are not remembered.
const RECENT_MAX_KEY: usize = 1024;

/// A block encoded while the table was at `generation`, which left the table unchanged.
#[derive(Debug, Default)]
struct Recent {
    generation: u64,
    /// The field list: per field the name length (u32 LE), name, value length, value, and
    /// the never-indexed flag.
    key: Vec<u8>,
    block: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// Starts with the RFC default table size 4096.
    pub fn new() -> Self {
        Encoder {
            table: DynamicTable::new(DEFAULT_TABLE_SIZE),
            pending_update: None,
            generation: 0,
            recent: Vec::new(),
            next_slot: 0,
            key: Vec::new(),
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed: evict as needed and emit a dynamic table
    /// size update at the start of the next block (RFC 7541 §4.2 / §6.3; if it was lowered and raised
    /// between blocks, emit the minimum then the final value). Sizes above
    /// [`MAX_ENCODER_TABLE_SIZE`] are clamped to it.
    pub fn set_max_table_size(&mut self, n: usize) {
        let n = n.min(MAX_ENCODER_TABLE_SIZE);
        if n == self.table.capacity() && self.pending_update.is_none() {
            return;
        }
        self.table.set_capacity(n);
        self.generation += 1;
        let min = self.pending_update.map_or(n, |(min, _)| min.min(n));
        self.pending_update = Some((min, n));
    }

    /// Size of the dynamic table (RFC 7541 §4.1), for tests.
    #[doc(hidden)]
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Encodes a whole block, appended to `dst`.
    pub fn encode<'a>(&mut self, fields: impl IntoIterator<Item = Field<'a>>, dst: &mut BytesMut) {
        if let Some((min, last)) = self.pending_update.take() {
            if min < last {
                integer::encode(min, 5, 0x20, dst);
            }
            integer::encode(last, 5, 0x20, dst);
        }
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        for f in fields {
            for part in [f.name, f.value] {
                key.extend_from_slice(&(part.len() as u32).to_le_bytes());
                key.extend_from_slice(part);
            }
            key.push(f.never_indexed as u8);
        }
        let generation = self.generation;
        if let Some(r) = self.recent.iter().find(|r| r.generation == generation && r.key == key) {
            dst.extend_from_slice(&r.block);
        } else {
            let start = dst.len();
            for f in KeyFields(&key) {
                self.field(f, dst);
            }
            if self.generation == generation && key.len() <= RECENT_MAX_KEY {
                self.remember(&key, &dst[start..]);
            }
        }
        // Kept for the next block unless a large list made it large (memory per connection).
        if key.capacity() <= 4 * RECENT_MAX_KEY {
            self.key = key;
        }
    }

    /// Keeps a block that left the table unchanged, in place of the oldest remembered one.
    fn remember(&mut self, key: &[u8], block: &[u8]) {
        if self.recent.len() < RECENT_BLOCKS {
            self.recent.push(Recent::default());
        }
        let slot = self.next_slot % self.recent.len();
        self.next_slot = slot + 1;
        let r = &mut self.recent[slot];
        r.generation = self.generation;
        r.key.clear();
        r.key.extend_from_slice(key);
        r.block.clear();
        r.block.extend_from_slice(block);
    }

    fn field(&mut self, f: Field<'_>, dst: &mut BytesMut) {
        let (static_full, static_name) = static_find(f.name, f.value);
        if f.never_indexed {
            let name = static_name.or_else(|| self.table.find(f.name, f.value).1.map(|i| 62 + i));
            return literal(0x10, 4, name, f, dst);
        }
        if let Some(i) = static_full {
            return integer::encode(i, 7, 0x80, dst);
        }
        let (dynamic_full, dynamic_name) = self.table.find(f.name, f.value);
        if let Some(i) = dynamic_full {
            return integer::encode(62 + i, 7, 0x80, dst);
        }
        // The index is taken before the insertion below renumbers the dynamic entries, as
        // the decoder resolves it before inserting too.
        let name = static_name.or(dynamic_name.map(|i| 62 + i));
        if self.worth_indexing(f.name, f.value) {
            literal(0x40, 6, name, f, dst);
            self.table.insert(f.name, f.value);
            self.generation += 1;
        } else {
            literal(0x00, 4, name, f, dst);
        }
    }

    fn worth_indexing(&self, name: &[u8], value: &[u8]) -> bool {
        let capacity = self.table.capacity();
        if name.len() + value.len() + ENTRY_OVERHEAD > capacity || value.len() > capacity / 4 {
            return false;
        }
        !(name.ends_with(b"-bin")
            || matches!(
                name,
                b"grpc-timeout"
                    | b"content-length"
                    | b"date"
                    | b"grpc-message"
                    | b"authorization"
                    | b"proxy-authorization"
            ))
    }
}

/// The fields of a list in `Recent::key` form.
struct KeyFields<'a>(&'a [u8]);

impl<'a> Iterator for KeyFields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.0.is_empty() {
            return None;
        }
        let mut part = || {
            let (len, rest) = self.0.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (p, rest) = rest.split_at(len);
            self.0 = rest;
            p
        };
        let name = part();
        let value = part();
        let never_indexed = self.0[0] != 0;
        self.0 = &self.0[1..];
        Some(Field { name, value, never_indexed })
    }
}

/// A literal representation: `high` is its pattern above the `prefix`-bit name index
/// (`0x40`/6 with indexing, `0x00`/4 without, `0x10`/4 never indexed).
fn literal(high: u8, prefix: u8, name_index: Option<usize>, f: Field<'_>, dst: &mut BytesMut) {
    match name_index {
        Some(i) => integer::encode(i, prefix, high, dst),
        None => {
            integer::encode(0, prefix, high, dst);
            string(f.name, dst);
        }
    }
    string(f.value, dst);
}

/// A string literal, Huffman-encoded when that is shorter.
fn string(s: &[u8], dst: &mut BytesMut) {
    let huffman_len = huffman::encoded_len(s);
    if huffman_len < s.len() {
        integer::encode(huffman_len, 7, 0x80, dst);
        huffman::encode(s, dst);
    } else {
        integer::encode(s.len(), 7, 0x00, dst);
        dst.put_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::h2::hpack::{Decoder, HeaderList};

    fn block(e: &mut Encoder, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        e.encode(fields.iter().map(|(name, value)| Field { name, value, never_indexed: false }), &mut dst);
        dst.to_vec()
    }

    #[test]
    fn a_repeated_block_is_copied_only_while_the_table_is_unchanged() {
        let list: &[(&[u8], &[u8])] = &[(b":status", b"200"), (b"content-type", b"application/grpc")];
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let mut out = HeaderList::new();
        let first = block(&mut e, list); // inserts content-type
        let second = block(&mut e, list); // all indexed, table unchanged: remembered
        assert_ne!(first, second);
        assert_eq!(e.recent.len(), 1);
        assert_eq!(block(&mut e, list), second, "copied");
        for b in [&first, &second, &second] {
            d.decode(b, 1 << 16, &mut out).unwrap();
            assert_eq!(out.get(b"content-type"), Some(&b"application/grpc"[..]));
        }
        // The table changes (emptied): the remembered block's index is gone, so the list is
        // encoded again (a size update, then the literal that inserts it once more).
        e.set_max_table_size(0);
        e.set_max_table_size(4096);
        let after = block(&mut e, list);
        assert_ne!(after, second);
        d.decode(&after, 1 << 16, &mut out).unwrap();
        assert_eq!(out.get(b"content-type"), Some(&b"application/grpc"[..]));
        assert_eq!(d.table_size(), e.table_size());
    }
}
