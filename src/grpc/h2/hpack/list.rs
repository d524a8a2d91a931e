//! [`HeaderList`]: a decoded header list in one arena buffer.

use std::cell::RefCell;

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

/// A decoded header list: one arena buffer plus ranges, so decoding allocates at most twice
/// per block, and not at all once the thread has buffers of dropped lists to reuse.
#[derive(Default, Clone, Debug)]
pub struct HeaderList {
    /// Names and values of all fields, back to back.
    buf: Vec<u8>,
    /// One span per field, in order.
    fields: Vec<Span>,
    /// Running RFC 7541 §4.1 size of the fields.
    size: usize,
}

/// Most emptied lists a thread keeps for reuse, and the largest arena it keeps: the usual
/// list is a few hundred octets, and a list that grew past this (a rare large block) goes
/// back to the allocator.
const SPARES_MAX: usize = 128;
const SPARE_ARENA_MAX: usize = 4096;

thread_local! {
    /// Buffers of dropped lists, for the next list this thread makes. A gRPC call decodes
    /// three blocks and drops each list once it is re-encoded; without reuse that is six
    /// allocations and six frees per call (callgrind: 4 % of a unary call's instructions,
    /// BENCHMARKS.md).
    static SPARES: RefCell<Vec<(Vec<u8>, Vec<Span>)>> = const { RefCell::new(Vec::new()) };
}

impl HeaderList {
    /// An empty list, with the buffers of a dropped one when this thread has some.
    pub fn new() -> Self {
        let spare = SPARES.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        match spare {
            Some((buf, fields)) => HeaderList { buf, fields, size: 0 },
            None => Self::default(),
        }
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

impl Drop for HeaderList {
    /// Keeps the buffers for this thread's next list (up to [`SPARES_MAX`] lists, arenas up
    /// to [`SPARE_ARENA_MAX`] octets).
    fn drop(&mut self) {
        if self.buf.capacity() == 0 || self.buf.capacity() > SPARE_ARENA_MAX {
            return;
        }
        let (mut buf, mut fields) = (std::mem::take(&mut self.buf), std::mem::take(&mut self.fields));
        buf.clear();
        fields.clear();
        let _ = SPARES.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARES_MAX {
                s.push((buf, fields));
            }
        });
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

    #[test]
    fn a_dropped_lists_buffers_serve_the_next_list_and_large_or_surplus_ones_are_freed() {
        // Each test runs on a thread of its own: the spares start empty.
        let mut l = HeaderList::new();
        l.push(b"a", &[b'x'; 1000], false);
        let cap = l.arena_capacity();
        drop(l);
        let reused = HeaderList::new();
        assert_eq!((reused.len(), reused.list_size(), reused.arena_capacity()), (0, 0, cap));
        assert_eq!(reused.get(b"a"), None);
        drop(reused);
        drop(HeaderList::new()); // the same buffers again: still one spare
        let mut big = HeaderList::new();
        big.push(b"a", &[b'x'; SPARE_ARENA_MAX + 1], false);
        drop(big); // too large to keep
        assert_eq!(HeaderList::new().arena_capacity(), 0, "the large arena was kept");
        let many: Vec<HeaderList> = (0..SPARES_MAX + 8)
            .map(|_| {
                let mut l = HeaderList::new();
                l.push(b"k", b"v", false);
                l
            })
            .collect();
        drop(many);
        let again: Vec<HeaderList> = (0..SPARES_MAX + 8).map(|_| HeaderList::new()).collect();
        let kept = again.iter().filter(|l| l.arena_capacity() > 0).count();
        assert_eq!(kept, SPARES_MAX);
    }
}
