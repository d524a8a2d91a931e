//! The static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2, §4).

use std::collections::VecDeque;

/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
pub(super) const ENTRY_OVERHEAD: usize = 32;

/// Static table entries; index `i` (1-based on the wire) is `STATIC[i - 1]`.
pub(super) static STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// First static index whose name is `name`. A `match` on the bytes, so no hashing.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// What the static table knows about a field: the index of the exact (name, value) entry
/// and the index of the first entry with that name.
pub(super) fn static_find(name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
    let Some(first) = static_name_index(name) else {
        return (None, None);
    };
    let full = (first..=STATIC.len()).take_while(|&i| STATIC[i - 1].0 == name).find(|&i| STATIC[i - 1].1 == value);
    (full, Some(first))
}

/// One dynamic entry: its name then its value, contiguous in [`DynamicTable::bytes`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Position of the name's first octet in the table's octet log (see `DynamicTable::base`).
    start: usize,
    name_len: usize,
    value_len: usize,
    /// The decoder found the field valid (`h2::field::valid`) when it inserted it.
    valid: bool,
}

impl Entry {
    fn octets(&self) -> usize {
        self.name_len + self.value_len
    }
}

/// The dynamic table: a FIFO of entries whose octets live in one log buffer, oldest first, so
/// inserting copies the octets once and allocates only while the buffer grows to its working
/// size (about twice the table size).
#[derive(Debug, Default)]
pub(super) struct DynamicTable {
    /// Octets of the entries, oldest first; a dead prefix (octets of evicted entries) is
    /// dropped by `compact` once it is as long as the live part.
    bytes: Vec<u8>,
    /// Log position of `bytes[0]`: entries keep their log position when the dead prefix is
    /// dropped, only `base` moves.
    base: usize,
    /// Entries, newest at the front: dynamic index 62 + i is `entries[i]`.
    entries: VecDeque<Entry>,
    /// Sum of entry sizes (name + value + 32), never above `capacity`.
    size: usize,
    /// Maximum size currently in force (the last size update, or the initial setting).
    capacity: usize,
}

impl DynamicTable {
    pub(super) fn new(capacity: usize) -> Self {
        DynamicTable { capacity, ..Default::default() }
    }

    pub(super) fn size(&self) -> usize {
        self.size
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entry `i` (0 = newest) as (name, value).
    #[inline]
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let e = self.entries.get(i)?;
        let start = e.start - self.base;
        let (name, rest) = self.bytes[start..start + e.octets()].split_at(e.name_len);
        Some((name, rest))
    }

    /// Entry `i` (0 = newest) as (name, value, valid when inserted).
    #[inline]
    pub(super) fn get_marked(&self, i: usize) -> Option<(&[u8], &[u8], bool)> {
        let valid = self.entries.get(i)?.valid;
        self.get(i).map(|(n, v)| (n, v, valid))
    }

    /// Newest entry equal to (name, value), and newest entry with that name.
    pub(super) fn find(&self, name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
        let mut by_name = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.name_len != name.len() {
                continue;
            }
            let start = e.start - self.base;
            if &self.bytes[start..start + e.name_len] != name {
                continue;
            }
            let v = &self.bytes[start + e.name_len..start + e.octets()];
            if v == value {
                return (Some(i), Some(i));
            }
            by_name.get_or_insert(i);
        }
        (None, by_name)
    }

    /// Sets the maximum size, evicting oldest entries until the table fits.
    pub(super) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.size > capacity {
            self.evict_oldest();
        }
    }

    /// Inserts (name, value) as the newest entry, evicting oldest entries to make room; an
    /// entry larger than the whole table empties it and is not stored (§4.4). `name` and
    /// `value` must not borrow from this table (callers copy a referenced name first, since
    /// the entry it comes from may be the one evicted).
    pub(super) fn insert(&mut self, name: &[u8], value: &[u8]) {
        self.insert_marked(name, value, false);
    }

    /// [`insert`](Self::insert), remembering whether the field is valid.
    pub(super) fn insert_marked(&mut self, name: &[u8], value: &[u8], valid: bool) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.capacity {
            self.clear();
            return;
        }
        while self.size + size > self.capacity {
            self.evict_oldest();
        }
        self.compact();
        let start = self.base + self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.entries.push_front(Entry { start, name_len: name.len(), value_len: value.len(), valid });
        self.size += size;
    }

    fn clear(&mut self) {
        self.base += self.bytes.len();
        self.bytes.clear();
        self.entries.clear();
        self.size = 0;
    }

    fn evict_oldest(&mut self) {
        match self.entries.pop_back() {
            Some(e) => self.size -= e.octets() + ENTRY_OVERHEAD,
            None => debug_assert_eq!(self.size, 0),
        }
        if self.entries.is_empty() {
            self.clear();
        }
    }

    /// Drops the dead prefix of `bytes` once it is at least as long as the live part, so the
    /// buffer stays under about twice the table size and each live octet is moved an
    /// amortised constant number of times.
    fn compact(&mut self) {
        let Some(oldest) = self.entries.back() else {
            return;
        };
        let dead = oldest.start - self.base;
        if dead > 0 && dead >= self.bytes.len() - dead {
            self.bytes.drain(..dead);
            self.base += dead;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(t: &DynamicTable) -> Vec<(String, String)> {
        (0..t.entries.len())
            .map(|i| {
                let (n, v) = t.get(i).unwrap();
                (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned())
            })
            .collect()
    }

    #[test]
    fn static_table_spot_checks() {
        // Indexes the RFC examples rely on.
        assert_eq!(STATIC[0], (&b":authority"[..], &b""[..]));
        assert_eq!(STATIC[1], (&b":method"[..], &b"GET"[..]));
        assert_eq!(STATIC[7], (&b":status"[..], &b"200"[..]));
        assert_eq!(STATIC[23].0, b"cache-control");
        assert_eq!(STATIC[25].0, b"content-encoding");
        assert_eq!(STATIC[30].0, b"content-type");
        assert_eq!(STATIC[32].0, b"date");
        assert_eq!(STATIC[45].0, b"location");
        assert_eq!(STATIC[54].0, b"set-cookie");
        assert_eq!(STATIC[60].0, b"www-authenticate");
    }

    #[test]
    fn static_name_index_agrees_with_the_table() {
        for (i, (name, _)) in STATIC.iter().enumerate() {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name_index(name), Some(first), "{}", String::from_utf8_lossy(name));
            assert!(first <= i + 1);
        }
        assert_eq!(static_name_index(b"grpc-status"), None);
    }

    #[test]
    fn static_find_full_and_name_matches() {
        assert_eq!(static_find(b":method", b"POST"), (Some(3), Some(2)));
        assert_eq!(static_find(b":method", b"PUT"), (None, Some(2)));
        assert_eq!(static_find(b":status", b"500"), (Some(14), Some(8)));
        assert_eq!(static_find(b"accept-encoding", b"gzip, deflate"), (Some(16), Some(16)));
        assert_eq!(static_find(b"content-type", b""), (Some(31), Some(31)));
        assert_eq!(static_find(b"content-type", b"application/grpc"), (None, Some(31)));
        assert_eq!(static_find(b"te", b"trailers"), (None, None));
    }

    #[test]
    fn insert_evicts_oldest_first() {
        // Three entries of 32 + 2 = 34 octets fit in 102, a fourth evicts the oldest.
        let mut t = DynamicTable::new(102);
        t.insert(b"a", b"1");
        t.insert(b"b", b"2");
        t.insert(b"c", b"3");
        assert_eq!(t.size(), 102);
        t.insert(b"d", b"4");
        assert_eq!(entries(&t), [("d", "4"), ("c", "3"), ("b", "2")].map(|(a, b)| (a.into(), b.into())));
        assert_eq!(t.size(), 102);
        // A larger entry evicts as many as needed.
        t.insert(b"eee", b"55555");
        assert_eq!(entries(&t), [("eee", "55555"), ("d", "4")].map(|(a, b)| (a.into(), b.into())));
        assert_eq!(t.size(), 40 + 34);
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut t = DynamicTable::new(64);
        t.insert(b"a", b"1");
        t.insert(b"name", &[b'x'; 29]); // 4 + 29 + 32 = 65 > 64
        assert_eq!(t.entries.len(), 0);
        assert_eq!(t.size(), 0);
        // Exactly the capacity fits.
        t.insert(b"name", &[b'x'; 28]);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.size(), 64);
    }

    #[test]
    fn lowering_the_capacity_evicts_and_zero_empties() {
        let mut t = DynamicTable::new(4096);
        for i in 0..10u8 {
            t.insert(b"k", &[i]);
        }
        t.set_capacity(34 * 3);
        assert_eq!(t.entries.len(), 3);
        assert_eq!(t.get(0).unwrap().1, [9]);
        assert_eq!(t.get(2).unwrap().1, [7]);
        t.set_capacity(0);
        assert_eq!((t.entries.len(), t.size()), (0, 0));
        t.insert(b"k", b"v");
        assert_eq!(t.entries.len(), 0);
    }

    #[test]
    fn find_prefers_newest_and_reports_name_matches() {
        let mut t = DynamicTable::new(4096);
        t.insert(b"k", b"1");
        t.insert(b"k", b"2");
        t.insert(b"other", b"1");
        assert_eq!(t.find(b"k", b"1"), (Some(2), Some(2)));
        assert_eq!(t.find(b"k", b"3"), (None, Some(1)));
        assert_eq!(t.find(b"x", b"1"), (None, None));
    }

    #[test]
    fn churn_keeps_the_buffer_bounded_and_the_entries_right() {
        let mut t = DynamicTable::new(4096);
        for i in 0..100_000u32 {
            let v = i.to_string();
            t.insert(b"x-request-id", v.as_bytes());
            assert!(t.size() <= 4096);
            assert_eq!(t.get(0).unwrap().1, v.as_bytes());
        }
        // Live octets are under 4096; the log holds at most as much again plus one entry.
        assert!(t.bytes.len() <= 2 * 4096 + 64, "{}", t.bytes.len());
        let n = t.entries.len();
        assert_eq!(t.get(n - 1).unwrap().1, (100_000 - n as u32).to_string().as_bytes());
    }
}
