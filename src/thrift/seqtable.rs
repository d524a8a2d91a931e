//! The table of requests in flight on one upstream connection, keyed by the seqID the proxy
//! gave them. SeqIDs are handed out in order, so a power-of-two table indexed by the seqID's
//! low bits needs no hashing: a new request takes the next seqID whose slot is free, and a
//! reply finds its entry with one index and one compare. (A `HashMap` insert, lookup and
//! remove cost ~170 instructions per request in callgrind; this costs a few tens.)
//!
//! SeqIDs still run through the whole positive `i32` range before they wrap, so a late reply
//! (its request timed out) cannot match a newer request unless 2^31 requests came between.
//! The table stays at most half full: it doubles before that, and an entry keeps its slot
//! when it does (its seqID's low bits under the old mask are the same under the new one).

use crate::thrift::codec::message::SeqId;

/// Smallest table.
const MIN_SLOTS: usize = 16;

pub struct SeqTable<V> {
    slots: Vec<Option<(SeqId, V)>>,
    len: usize,
}

impl<V> Default for SeqTable<V> {
    fn default() -> Self {
        SeqTable { slots: Vec::new(), len: 0 }
    }
}

impl<V> SeqTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, seq: SeqId) -> usize {
        seq.get() as u32 as usize & (self.slots.len() - 1)
    }

    /// Whether `seq` may be handed out now: its slot is free (growing first if the table
    /// would be more than half full).
    pub fn vacant(&mut self, seq: SeqId) -> bool {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.slots[self.slot(seq)].is_none()
    }

    /// Stores an entry for a seqID that [`vacant`](Self::vacant) said is free.
    pub fn insert(&mut self, seq: SeqId, v: V) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let i = self.slot(seq);
        assert!(self.slots[i].is_none(), "seqID {seq:?} taken while its slot was busy");
        self.slots[i] = Some((seq, v));
        self.len += 1;
    }

    pub fn remove(&mut self, seq: SeqId) -> Option<V> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.slot(seq);
        match &self.slots[i] {
            Some((s, _)) if *s == seq => {
                self.len -= 1;
                self.slots[i].take().map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (SeqId, &V)> {
        self.slots.iter().flatten().map(|(s, v)| (*s, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Takes every entry out.
    pub fn drain(&mut self) -> impl Iterator<Item = (SeqId, V)> + '_ {
        self.len = 0;
        self.slots.iter_mut().filter_map(Option::take)
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, (0..n).map(|_| None).collect());
        for (seq, v) in old.into_iter().flatten() {
            let i = self.slot(seq);
            debug_assert!(self.slots[i].is_none());
            self.slots[i] = Some((seq, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against a HashMap: random inserts (of vacant sequential seqIDs, as the connection hands
    /// them out), removes of present, absent and foreign seqIDs, through growth.
    #[test]
    fn behaves_like_a_map_of_seqids_through_growth() {
        let mut t = SeqTable::default();
        let mut m = HashMap::new();
        let mut next = 1i32;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for step in 0..20_000 {
            let r = rand();
            if r % 3 != 0 || m.is_empty() {
                // Hand out the next vacant seqID, as ThriftUpstream::alloc_seq does.
                let seq = loop {
                    let s = next;
                    next = if next >= i32::MAX - 1 { 1 } else { next + 1 };
                    if t.vacant(SeqId::new(s)) {
                        break s;
                    }
                    assert!(m.contains_key(&s) || t.iter().any(|(k, _)| t.slot(k) == t.slot(SeqId::new(s))));
                };
                assert!(!m.contains_key(&seq), "step {step}: seqID {seq} handed out twice");
                t.insert(SeqId::new(seq), step);
                m.insert(seq, step);
            } else {
                let keys: Vec<i32> = m.keys().copied().collect();
                let k = match r % 4 {
                    0 => keys[(r >> 8) as usize % keys.len()],
                    1 => keys[(r >> 8) as usize % keys.len()].wrapping_add(1 << 20),
                    2 => -((r >> 8) as i32).abs(),
                    _ => keys[(r >> 8) as usize % keys.len()],
                };
                assert_eq!(t.remove(SeqId::new(k)), m.remove(&k), "step {step}: remove {k}");
            }
            assert_eq!(t.len(), m.len());
            assert!(t.slots.len() >= 2 * t.len(), "at most half full");
        }
        let mut left: Vec<(i32, usize)> = t.iter().map(|(k, v)| (k.get(), *v)).collect();
        let mut want: Vec<(i32, usize)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        left.sort();
        want.sort();
        assert_eq!(left, want);
        assert_eq!(t.drain().count(), want.len());
        assert!(t.is_empty() && t.iter().next().is_none());
    }

    #[test]
    fn a_late_reply_for_a_reused_slot_does_not_match() {
        let mut t = SeqTable::default();
        t.insert(SeqId::new(3), "old");
        assert_eq!(t.remove(SeqId::new(3)), Some("old"));
        // 3 + 16 lands in the same slot of a 16-slot table.
        assert!(t.vacant(SeqId::new(19)));
        t.insert(SeqId::new(19), "new");
        assert_eq!(t.remove(SeqId::new(3)), None, "the late reply for 3 must not take 19's entry");
        assert_eq!(t.remove(SeqId::new(19)), Some("new"));
    }
}
