//! [`HeaderList`]: a decoded header list in one arena buffer.

use super::table::ENTRY_OVERHEAD;

/// One header field, borrowed from a [`HeaderList`] or handed to the [`Encoder`](super::Encoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// Lowercase octets as sent; HPACK does not check them (validation is the caller's).
    pub name: &'a [u8],
    /// Octets as sent, possibly empty.
    pub value: &'a [u8],
    /// Sent as "literal never indexed" (RFC 7541 §6.2.3): an intermediary must re-encode it
    /// the same way.
    pub never_indexed: bool,
}

/// Where one field sits in [`HeaderList::buf`].
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    /// End of the name and start of the value.
    split: usize,
    end: usize,
    never_indexed: bool,
    /// A copy of a table entry known valid (`h2::field::valid`): not scanned again.
    checked: bool,
}

/// A decoded header list: one arena buffer plus ranges, so decoding allocates at most twice per block.
#[derive(Default, Clone, Debug)]
pub struct HeaderList {
    /// Names and values of all fields, back to back.
    buf: Vec<u8>,
    /// One span per field, in order.
    fields: Vec<Span>,
    /// Running RFC 7541 §4.1 size of the fields.
    size: usize,
}

impl HeaderList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the list, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.size = 0;
    }

    /// Makes room for the list a block of `block_len` octets usually decodes to (indexed
    /// fields expand several times), capped at `max_octets`, so decoding does not grow the
    /// buffers step by step.
    pub fn reserve_for_block(&mut self, block_len: usize, max_octets: usize) {
        let octets = (block_len * 4).clamp(256, max_octets.max(256));
        self.buf.reserve(octets);
        self.fields.reserve(16);
    }

    // Inlined into the decoder's loop (one call per field): measured with callgrind, the
    // call costs ~300 instructions per gRPC call when the optimiser leaves it out of line.
    #[inline]
    pub fn push(&mut self, name: &[u8], value: &[u8], never_indexed: bool) {
        let start = self.buf.len();
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
        self.push_span(start, start + name.len(), never_indexed);
    }

    /// [`push`](Self::push) for a field indexed from a table entry; `checked` says the entry
    /// is known valid.
    #[inline]
    pub(super) fn push_indexed(&mut self, name: &[u8], value: &[u8], checked: bool) {
        self.push(name, value, false);
        if let Some(last) = self.fields.last_mut() {
            last.checked = checked;
        }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Field<'_>> + '_ {
        self.fields.iter().map(|s| Field {
            name: &self.buf[s.start..s.split],
            value: &self.buf[s.split..s.end],
            never_indexed: s.never_indexed,
        })
    }

    /// The fields, each with whether it is a copy of a table entry known valid (the field
    /// checks may skip scanning its octets).
    pub fn iter_checked(&self) -> impl Iterator<Item = (Field<'_>, bool)> + '_ {
        self.fields.iter().map(|s| {
            let f = Field {
                name: &self.buf[s.start..s.split],
                value: &self.buf[s.split..s.end],
                never_indexed: s.never_indexed,
            };
            (f, s.checked)
        })
    }

    /// First value of `name` (exact, lowercase) if present.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// RFC 7541 §4.1 size: sum of name + value + 32 over the fields.
    pub fn list_size(&self) -> usize {
        self.size
    }

    /// Capacity of the arena buffer, for tests that bound the memory a block may cost.
    #[doc(hidden)]
    pub fn arena_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The arena, for the decoder to write a field's octets in place before it knows
    /// whether the field is kept.
    pub(super) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Records a field whose name is `buf[start..split]` and value `buf[split..]`.
    #[inline]
    pub(super) fn push_span(&mut self, start: usize, split: usize, never_indexed: bool) {
        let end = self.buf.len();
        debug_assert!(start <= split && split <= end);
        self.size += end - start + ENTRY_OVERHEAD;
        self.fields.push(Span { start, split, end, never_indexed, checked: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iter_get_and_size() {
        let mut l = HeaderList::new();
        assert!(l.is_empty());
        assert_eq!(l.list_size(), 0);
        l.push(b":path", b"/pkg.Svc/Call", false);
        l.push(b"authorization", b"secret", true);
        l.push(b"x-dup", b"1", false);
        l.push(b"x-dup", b"2", false);
        l.push(b"x-empty", b"", false);
        assert_eq!(l.len(), 5);
        assert!(!l.is_empty());
        let fields: Vec<Field> = l.iter().collect();
        assert_eq!(fields[0], Field { name: b":path", value: b"/pkg.Svc/Call", never_indexed: false });
        assert_eq!(fields[1], Field { name: b"authorization", value: b"secret", never_indexed: true });
        assert_eq!(fields[4], Field { name: b"x-empty", value: b"", never_indexed: false });
        assert_eq!(l.get(b"x-dup"), Some(&b"1"[..]));
        assert_eq!(l.get(b"x-empty"), Some(&b""[..]));
        assert_eq!(l.get(b"X-DUP"), None);
        assert_eq!(l.get(b"missing"), None);
        // (5 + 13) + (13 + 6) + (5 + 1) * 2 + 7 + 5 * 32
        assert_eq!(l.list_size(), 18 + 19 + 12 + 7 + 160);
    }

    #[test]
    fn clear_empties_but_keeps_the_buffers() {
        let mut l = HeaderList::new();
        l.push(b"a", &[b'x'; 1000], false);
        let cap = l.arena_capacity();
        l.clear();
        assert_eq!((l.len(), l.list_size(), l.iter().count()), (0, 0, 0));
        assert_eq!(l.get(b"a"), None);
        assert_eq!(l.arena_capacity(), cap);
        l.push(b"b", b"2", false);
        assert_eq!(l.iter().next().unwrap(), Field { name: b"b", value: b"2", never_indexed: false });
        assert_eq!(l.list_size(), 34);
    }
}
