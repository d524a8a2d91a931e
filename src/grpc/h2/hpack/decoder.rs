//! [`Decoder`]: one per connection and direction, fed every header block in arrival order.

use super::list::HeaderList;
use super::table::{DynamicTable, ENTRY_OVERHEAD, STATIC};
use super::{huffman, integer, DecodeError};

/// HPACK decoder state of one connection direction (ref §4.3).
#[derive(Debug)]
pub struct Decoder {
    /// The peer encoder's dynamic table as we mirror it.
    table: DynamicTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the largest size update the peer may send.
    max_table_size: usize,
    /// Set when our setting was lowered under the table's current size: the peer must then
    /// open its next block with a size update no larger than this (RFC 7541 §4.2).
    update_required: Option<usize>,
    /// Where literals go once the list is over `max_list_size`: they must still be decoded
    /// (Huffman checked, indexed ones inserted) but are not kept. Reused between blocks.
    scratch: Vec<u8>,
}

/// The three literal representations (RFC 7541 §6.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Literal {
    WithIndexing,
    WithoutIndexing,
    NeverIndexed,
}

impl Decoder {
    /// `max_table_size`: our SETTINGS_HEADER_TABLE_SIZE (upper bound for size updates the peer may send).
    ///
    /// The table starts at that size too, i.e. as if the peer already applied our setting. On a
    /// new connection, where the peer's encoder starts at the protocol default until it has
    /// our SETTINGS, create it with 4096 and call [`set_max_table_size`](Self::set_max_table_size)
    /// when the peer acknowledges a different value.
    pub fn new(max_table_size: usize) -> Self {
        Decoder { table: DynamicTable::new(max_table_size), max_table_size, update_required: None, scratch: Vec::new() }
    }

    /// Our SETTINGS_HEADER_TABLE_SIZE changed (call it once the peer has acknowledged it).
    /// Lowering it under the size the peer's table uses obliges the peer to start its next
    /// block with a size update at or under the lowest value set since its last block.
    pub fn set_max_table_size(&mut self, n: usize) {
        self.max_table_size = n;
        if n < self.table.capacity() {
            self.update_required = Some(self.update_required.map_or(n, |r| r.min(n)));
        }
    }

    /// Size of the dynamic table (RFC 7541 §4.1), for tests.
    #[doc(hidden)]
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Decodes one complete header block into `out` (cleared first). Enforces `max_list_size`
    /// incrementally (stop storing as soon as it is exceeded, but keep parsing to keep the table in sync;
    /// never build the huge list in memory: an HPACK bomb must cost O(block length) work and memory).
    pub fn decode(&mut self, block: &[u8], max_list_size: usize, out: &mut HeaderList) -> Result<(), DecodeError> {
        out.clear();
        out.reserve_for_block(block.len(), max_list_size);
        let result = self.fields(block, max_list_size, out);
        if result.is_err() {
            // Whatever was kept so far is not a usable list.
            out.clear();
        }
        result
    }

    /// The body of [`decode`](Self::decode): leading size updates, then the fields.
    fn fields(&mut self, block: &[u8], max_list_size: usize, out: &mut HeaderList) -> Result<(), DecodeError> {
        let mut pos = 0;
        self.size_updates(block, &mut pos)?;
        // Set once the list outgrows `max_list_size`: from then on nothing is kept.
        let mut over = false;
        while let Some(&first) = block.get(pos) {
            let kind = match first >> 4 {
                0x8..=0xf => {
                    let i = integer::decode(block, &mut pos, 7)?;
                    let (name, value, valid) = lookup_marked(&self.table, i)?;
                    if !over {
                        if out.list_size() + name.len() + value.len() + ENTRY_OVERHEAD <= max_list_size {
                            out.push_indexed(name, value, valid);
                        } else {
                            over = true;
                        }
                    }
                    continue;
                }
                0x4..=0x7 => Literal::WithIndexing,
                0x2 | 0x3 => return Err(DecodeError::Compression("dynamic table size update after the first field")),
                0x1 => Literal::NeverIndexed,
                _ => Literal::WithoutIndexing,
            };
            over = self.literal(block, &mut pos, kind, over, max_list_size, out)?;
        }
        if over {
            return Err(DecodeError::ListTooLarge);
        }
        Ok(())
    }

    /// Applies the size updates at the start of a block (RFC 7541 §4.2, §6.3).
    fn size_updates(&mut self, block: &[u8], pos: &mut usize) -> Result<(), DecodeError> {
        while block.get(*pos).is_some_and(|&b| b & 0xe0 == 0x20) {
            let size = integer::decode(block, pos, 5)?;
            if size > self.max_table_size {
                return Err(DecodeError::Compression("dynamic table size update above SETTINGS_HEADER_TABLE_SIZE"));
            }
            self.table.set_capacity(size);
            if self.update_required.is_some_and(|r| size <= r) {
                self.update_required = None;
            }
        }
        if self.update_required.is_some() {
            return Err(DecodeError::Compression("missing dynamic table size update after a lowered setting"));
        }
        Ok(())
    }

    /// A literal field (RFC 7541 §6.2) at `block[*pos]`. Its octets are written straight into
    /// `out`'s arena unless the list is already `over` its limit (then into `scratch`, to be
    /// dropped); a literal with indexing is inserted into the table either way. Returns
    /// whether the list is over its limit after this field.
    fn literal(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        kind: Literal,
        over: bool,
        max_list_size: usize,
        out: &mut HeaderList,
    ) -> Result<bool, DecodeError> {
        let prefix = if kind == Literal::WithIndexing { 6 } else { 4 };
        let name_index = integer::decode(block, pos, prefix)?;
        let dst = if over {
            self.scratch.clear();
            &mut self.scratch
        } else {
            out.buf_mut()
        };
        let start = dst.len();
        if name_index == 0 {
            read_string(block, pos, dst)?;
        } else {
            // Copied before the insertion below, which may evict the entry it comes from.
            dst.extend_from_slice(lookup(&self.table, name_index)?.0);
        }
        let split = dst.len();
        read_string(block, pos, dst)?;
        if kind == Literal::WithIndexing {
            // Checked once here, so the fields indexed from it later need not be.
            let valid = crate::grpc::h2::field::valid(&dst[start..split], &dst[split..]);
            self.table.insert_marked(&dst[start..split], &dst[split..], valid);
        }
        if over {
            return Ok(true);
        }
        let octets = out.buf_mut().len() - start;
        if out.list_size() + octets + ENTRY_OVERHEAD <= max_list_size {
            out.push_span(start, split, kind == Literal::NeverIndexed);
            Ok(false)
        } else {
            out.buf_mut().truncate(start);
            Ok(true)
        }
    }
}

/// Name and value at index `i` (1-based: static entries, then the dynamic ones newest first).
fn lookup(table: &DynamicTable, i: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    match i {
        0 => Err(DecodeError::Compression("index 0")),
        1..=61 => Ok(STATIC[i - 1]),
        _ => table.get(i - 62).ok_or(DecodeError::Compression("index past the end of the dynamic table")),
    }
}

/// Every static entry is a valid field but the first (`:authority` with an empty value).
const FIRST_VALID_STATIC: usize = 2;

/// [`lookup`], with whether the entry is known valid.
#[inline]
fn lookup_marked(table: &DynamicTable, i: usize) -> Result<(&[u8], &[u8], bool), DecodeError> {
    match i {
        0 => Err(DecodeError::Compression("index 0")),
        1..=61 => Ok((STATIC[i - 1].0, STATIC[i - 1].1, i >= FIRST_VALID_STATIC)),
        _ => table.get_marked(i - 62).ok_or(DecodeError::Compression("index past the end of the dynamic table")),
    }
}

/// Reads a string literal (RFC 7541 §5.2) at `block[*pos]`, appending its octets to `dst`.
fn read_string(block: &[u8], pos: &mut usize, dst: &mut Vec<u8>) -> Result<(), DecodeError> {
    let huffman = block.get(*pos).is_some_and(|&b| b & 0x80 != 0);
    let len = integer::decode(block, pos, 7)?;
    let data = block[*pos..].get(..len).ok_or(DecodeError::Compression("string literal past the end of the block"))?;
    *pos += len;
    if huffman {
        huffman::decode(data, dst)
    } else {
        dst.extend_from_slice(data);
        Ok(())
    }
}
