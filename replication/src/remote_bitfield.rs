//! Which blocks a remote peer said it has: a sparse bitset filled from `Have` messages.

use std::collections::BTreeMap;

/// Bits per page (matches the 8192-block pages of `Have` bitfields).
const PAGE_BITS: u64 = 8192;
const WORDS: usize = (PAGE_BITS / 64) as usize;
/// Pages one peer's announcements may occupy: 128 M blocks, 16 MiB. A peer claiming more
/// is refused rather than allowed to exhaust memory.
pub const MAX_PAGES: usize = 16 * 1024;

/// A peer announced more blocks than [`MAX_PAGES`] can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("announced more than {} blocks", MAX_PAGES as u64 * PAGE_BITS)]
pub struct TooManyBlocks;

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

    /// Adds blocks `[start, end)`, a word at a time; fails without changing anything if
    /// that would exceed [`MAX_PAGES`].
    pub fn set_range(&mut self, start: u64, end: u64) -> Result<(), TooManyBlocks> {
        if end <= start {
            return Ok(());
        }
        let (first, last) = (start / PAGE_BITS, (end - 1) / PAGE_BITS);
        let new_pages = (first..=last)
            .filter(|p| !self.pages.contains_key(p))
            .take(MAX_PAGES + 1)
            .count();
        if self.pages.len() + new_pages > MAX_PAGES {
            return Err(TooManyBlocks);
        }
        for p in first..=last {
            let base = p * PAGE_BITS;
            let (lo, hi) = (start.max(base) - base, end.min(base + PAGE_BITS) - base);
            let words = self.pages.entry(p).or_insert_with(|| Box::new([0; WORDS]));
            for (w, word) in words.iter_mut().enumerate() {
                let (wlo, whi) = (64 * w as u64, 64 * w as u64 + 64);
                if whi <= lo || wlo >= hi {
                    continue;
                }
                let from = lo.max(wlo) - wlo;
                let to = hi.min(whi) - wlo;
                let mask = if to - from == 64 {
                    u64::MAX
                } else {
                    ((1u64 << (to - from)) - 1) << from
                };
                *word |= mask;
            }
        }
        Ok(())
    }

    /// Removes blocks `[start, end)`, touching only pages that exist.
    pub fn clear_range(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        let pages: Vec<u64> = self
            .pages
            .range(start / PAGE_BITS..=(end - 1) / PAGE_BITS)
            .map(|(&p, _)| p)
            .collect();
        for p in pages {
            let base = p * PAGE_BITS;
            let (lo, hi) = (start.max(base) - base, end.min(base + PAGE_BITS) - base);
            if lo == 0 && hi == PAGE_BITS {
                self.pages.remove(&p);
                continue;
            }
            for i in lo..hi {
                self.set(base + i, false);
            }
        }
    }

    /// Sets the bits of an MSB-first raw bitfield (as decoded from a `Have`) at `start`.
    pub fn set_from_bytes(&mut self, start: u64, bytes: &[u8]) -> Result<(), TooManyBlocks> {
        let end = (bytes.len() as u64)
            .checked_mul(8)
            .and_then(|n| start.checked_add(n))
            .ok_or(TooManyBlocks)?;
        let first = start / PAGE_BITS;
        let last = end.div_ceil(PAGE_BITS);
        let new_pages = (first..last)
            .filter(|p| !self.pages.contains_key(p))
            .count();
        if self.pages.len() + new_pages > MAX_PAGES {
            return Err(TooManyBlocks);
        }
        if start.is_multiple_of(8) {
            // Each byte is 8 consecutive blocks inside one word: OR it in whole (our words
            // are LSB-first, the wire MSB-first), looking each page up once.
            let mut k = 0usize;
            while k < bytes.len() {
                let i = start + 8 * k as u64;
                let n = (((PAGE_BITS - i % PAGE_BITS) / 8) as usize).min(bytes.len() - k);
                let chunk = &bytes[k..k + n];
                if chunk.iter().any(|&b| b != 0) {
                    let words = self
                        .pages
                        .entry(i / PAGE_BITS)
                        .or_insert_with(|| Box::new([0; WORDS]));
                    for (j, &byte) in chunk.iter().enumerate() {
                        if byte != 0 {
                            let bit = (i % PAGE_BITS) + 8 * j as u64;
                            words[(bit / 64) as usize] |=
                                u64::from(byte.reverse_bits()) << (bit % 64);
                        }
                    }
                }
                k += n;
            }
        } else {
            for (k, &byte) in bytes.iter().enumerate() {
                for bit in (0..8u64).filter(|bit| byte & (0x80 >> bit) != 0) {
                    self.set(start + 8 * k as u64 + bit, true);
                }
            }
        }
        Ok(())
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

    /// The highest block in the set, if any (the tests' model check).
    #[cfg(test)]
    fn last(&self) -> Option<u64> {
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn ranges_match_a_set(ops in proptest::collection::vec((0u64..40_000, 0u64..3_000, any::<bool>()), 0..40)) {
            let mut bf = RemoteBitfield::default();
            let mut model = BTreeSet::new();
            for (start, len, add) in ops {
                if add {
                    bf.set_range(start, start + len).unwrap();
                    model.extend(start..start + len);
                } else {
                    bf.clear_range(start, start + len);
                    for i in start..start + len { model.remove(&i); }
                }
            }
            prop_assert_eq!(bf.next(0, u64::MAX), model.iter().next().copied());
            prop_assert_eq!(bf.last(), model.iter().next_back().copied());
            for i in (0..60_000).step_by(97) {
                prop_assert_eq!(bf.get(i), model.contains(&i));
            }
        }
    }

    #[test]
    fn huge_announcements_are_refused_cheaply() {
        let mut bf = RemoteBitfield::default();
        assert_eq!(bf.set_range(0, 1 << 50), Err(TooManyBlocks));
        assert_eq!(bf.next(0, u64::MAX), None);
        bf.set_range(5, 10).unwrap();
        bf.clear_range(0, 1 << 60);
        assert_eq!(bf.next(0, u64::MAX), None);
    }

    proptest! {
        #[test]
        fn from_bytes_matches_bit_by_bit(start in 0u64..20_000, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut fast = RemoteBitfield::default();
            fast.set_from_bytes(start, &bytes).unwrap();
            let mut slow = RemoteBitfield::default();
            for (k, &b) in bytes.iter().enumerate() {
                for bit in 0..8u64 {
                    if b & (0x80 >> bit) != 0 {
                        slow.set(start + 8 * k as u64 + bit, true);
                    }
                }
            }
            for i in start.saturating_sub(10)..start + 8 * bytes.len() as u64 + 10 {
                prop_assert_eq!(fast.get(i), slow.get(i), "block {}", i);
            }
        }
    }

    #[test]
    fn from_bytes_is_msb_first() {
        let mut bf = RemoteBitfield::default();
        bf.set_from_bytes(8192, &[0b1000_0001, 0, 0x40]).unwrap();
        assert_eq!(bf.next(0, u64::MAX), Some(8192));
        assert_eq!(bf.next(8193, u64::MAX), Some(8199));
        assert_eq!(bf.last(), Some(8192 + 17));
    }
}
