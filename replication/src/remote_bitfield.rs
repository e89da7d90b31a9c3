//! Which blocks a remote peer said it has: a sparse bitset filled from `Have` messages.

use std::collections::BTreeMap;

/// Bits per page (matches the 8192-block pages of `Have` bitfields).
const PAGE_BITS: u64 = 8192;
const WORDS: usize = (PAGE_BITS / 64) as usize;

/// A sparse set of block indexes.
#[derive(Debug, Default, Clone)]
pub struct RemoteBitfield {
    pages: BTreeMap<u64, Box<[u64; WORDS]>>,
}

impl RemoteBitfield {
    /// Whether block `i` is in the set.
    pub fn get(&self, i: u64) -> bool {
        self.pages
            .get(&(i / PAGE_BITS))
            .is_some_and(|p| p[((i % PAGE_BITS) / 64) as usize] & (1 << (i % 64)) != 0)
    }

    /// Adds or removes block `i`.
    pub fn set(&mut self, i: u64, value: bool) {
        let page = i / PAGE_BITS;
        let (w, b) = (((i % PAGE_BITS) / 64) as usize, i % 64);
        if value {
            self.pages
                .entry(page)
                .or_insert_with(|| Box::new([0; WORDS]))[w] |= 1 << b;
        } else if let Some(p) = self.pages.get_mut(&page) {
            p[w] &= !(1 << b);
            if p.iter().all(|&x| x == 0) {
                self.pages.remove(&page);
            }
        }
    }

    /// Adds blocks `[start, end)`.
    pub fn set_range(&mut self, start: u64, end: u64) {
        for i in start..end {
            self.set(i, true);
        }
    }

    /// Sets the bits of an MSB-first raw bitfield (as decoded from a `Have`) at `start`.
    pub fn set_from_bytes(&mut self, start: u64, bytes: &[u8]) {
        for (k, &byte) in bytes.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    self.set(start + 8 * k as u64 + bit, true);
                }
            }
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.pages.clear();
    }

    /// The first block in the set at or after `from` and before `end`.
    pub fn next(&self, from: u64, end: u64) -> Option<u64> {
        if from >= end {
            return None;
        }
        for (&p, words) in self.pages.range(from / PAGE_BITS..) {
            let base = p * PAGE_BITS;
            if base >= end {
                return None;
            }
            let start_bit = from.saturating_sub(base);
            for w in (start_bit / 64) as usize..WORDS {
                let mut word = words[w];
                if w == (start_bit / 64) as usize {
                    word &= u64::MAX << (start_bit % 64);
                }
                if word != 0 {
                    let i = base + 64 * w as u64 + u64::from(word.trailing_zeros());
                    return (i < end).then_some(i);
                }
            }
        }
        None
    }

    /// The highest block in the set, if any.
    pub fn last(&self) -> Option<u64> {
        let (&p, words) = self.pages.iter().next_back()?;
        let w = words.iter().rposition(|&x| x != 0)?;
        Some(p * PAGE_BITS + 64 * w as u64 + 63 - u64::from(words[w].leading_zeros()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_a_set(ops in proptest::collection::vec((0u64..50_000, any::<bool>()), 0..300), probes in proptest::collection::vec((0u64..60_000, 0u64..60_000), 0..50)) {
            let mut bf = RemoteBitfield::default();
            let mut model = BTreeSet::new();
            for (i, v) in ops {
                bf.set(i, v);
                if v { model.insert(i); } else { model.remove(&i); }
            }
            for (a, b) in probes {
                prop_assert_eq!(bf.get(a), model.contains(&a));
                prop_assert_eq!(bf.next(a, b), model.range(a..b.max(a)).next().copied());
            }
            prop_assert_eq!(bf.last(), model.iter().next_back().copied());
        }
    }

    #[test]
    fn from_bytes_is_msb_first() {
        let mut bf = RemoteBitfield::default();
        bf.set_from_bytes(8192, &[0b1000_0001, 0, 0x40]);
        assert_eq!(bf.next(0, u64::MAX), Some(8192));
        assert_eq!(bf.next(8193, u64::MAX), Some(8199));
        assert_eq!(bf.last(), Some(8192 + 17));
    }
}
