//! A node's pointers (spec trie.md §5): per path position a bucket of slots, slot `s`
//! standing for symbol `s % 5` (slots `s + 5k` chain keys whose hashes collide), each
//! holding the seq of a node; encoded as varints.

use std::sync::Arc;

/// Seq 0 is the header, never a node: it marks an empty slot.
pub(crate) const EMPTY: u64 = 0;
/// Most slots a bucket may have (a bitmap varint of 64 bits).
const MAX_SLOTS: usize = 64;
/// Most positions a decoded trie may claim (hypertrie keys with 4,000 components).
const MAX_POSITIONS: u64 = 1 << 17;

/// The buckets of one node: the non-empty ones only, by position (a node's path has
/// dozens of positions, few of which point anywhere), their slots back to back in one
/// vector (decoding, copying, caching and freeing nodes costs what they hold), shared by
/// a node's copies (listings and lookups hand out copies of cached nodes) until one is
/// changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// Positions, as encoded (trailing empty buckets included).
    len: usize,
    /// Per bucket, in position order: its position and where its slots end in `slots`
    /// (they start where the previous bucket's end). Each has a slot.
    index: Arc<Vec<(usize, usize)>>,
    /// The buckets' slots, empty ones between occupied ones included.
    slots: Arc<Vec<u64>>,
}

impl Buckets {
    /// Where bucket `k` of the index has its slots.
    fn range(&self, k: usize) -> std::ops::Range<usize> {
        let start = k.checked_sub(1).map_or(0, |k| self.index[k].1);
        start..self.index[k].1
    }

    fn find(&self, i: usize) -> Result<usize, usize> {
        self.index.binary_search_by_key(&i, |&(p, _)| p)
    }

    fn bucket(&self, i: usize) -> Option<&[u64]> {
        self.find(i).ok().map(|k| &self.slots[self.range(k)])
    }

    /// The slots of the bucket at `i`, empty ones (0) included: none if it has none.
    pub(crate) fn bucket_slots(&self, i: usize) -> &[u64] {
        self.bucket(i).unwrap_or_default()
    }

    /// The first position from `i` on whose bucket has an occupied slot.
    pub(crate) fn next_branch(&self, i: usize) -> Option<usize> {
        let (Ok(from) | Err(from)) = self.find(i);
        (from..self.index.len())
            .find(|&k| self.slots[self.range(k)].iter().any(|&seq| seq != EMPTY))
            .map(|k| self.index[k].0)
    }

    /// The occupied slots of the bucket at `i`, as `(slot, seq)`.
    pub fn slots(&self, i: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.bucket(i)
            .into_iter()
            .flat_map(|b| b.iter().copied().enumerate())
            .filter(|&(_, seq)| seq != EMPTY)
    }

    /// The seq in slot `s` of the bucket at `i`, if any.
    pub fn get(&self, i: usize, s: usize) -> Option<u64> {
        self.bucket(i)
            .and_then(|b| b.get(s))
            .copied()
            .filter(|&seq| seq != EMPTY)
    }

    /// The seqs of the chain `v, v + 5, …` at `i`, up to its first empty slot.
    pub fn chain(&self, i: usize, v: usize) -> impl Iterator<Item = u64> + '_ {
        let bucket = self.bucket(i).unwrap_or_default();
        (v..)
            .step_by(5)
            .map(move |s| bucket.get(s).copied().filter(|&seq| seq != EMPTY))
            .take_while(Option::is_some)
            .flatten()
    }

    /// About how much memory the buckets hold.
    pub(crate) fn heap_size(&self) -> usize {
        std::mem::size_of::<(usize, usize)>() * self.index.capacity() + 8 * self.slots.capacity()
    }

    /// Points symbol `s` at position `i` to `seq`: in the first free slot of its chain,
    /// unless the bucket already holds `seq`.
    pub fn push(&mut self, i: usize, s: usize, seq: u64) {
        self.len = self.len.max(i + 1);
        let k = match self.find(i) {
            Ok(k) => k,
            Err(k) => {
                let at = k.checked_sub(1).map_or(0, |k| self.index[k].1);
                Arc::make_mut(&mut self.index).insert(k, (i, at));
                k
            }
        };
        let range = self.range(k);
        let bucket = &self.slots[range.clone()];
        let mut s = s % 5;
        while bucket.get(s).is_some_and(|&x| x != EMPTY) {
            s += 5;
        }
        if bucket.contains(&seq) {
            return;
        }
        if bucket.len() <= s {
            let grow = s + 1 - bucket.len();
            Arc::make_mut(&mut self.slots)
                .splice(range.end..range.end, std::iter::repeat_n(EMPTY, grow));
            for (_, end) in &mut Arc::make_mut(&mut self.index)[k..] {
                *end += grow;
            }
        }
        Arc::make_mut(&mut self.slots)[range.start + s] = seq;
    }

    /// The encoding JS writes: length, then `position bitmap seq…` per non-empty bucket.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&varint::encode(self.len as u64));
        for (k, &(i, _)) in self.index.iter().enumerate() {
            let bucket = &self.slots[self.range(k)];
            let bits = bucket
                .iter()
                .enumerate()
                .filter(|&(_, &seq)| seq != EMPTY)
                .fold(0u64, |bits, (s, _)| bits | 1 << s);
            if bits == 0 {
                continue;
            }
            out.extend_from_slice(&varint::encode(i as u64));
            out.extend_from_slice(&varint::encode(bits));
            for &seq in bucket.iter().filter(|&&seq| seq != EMPTY) {
                out.extend_from_slice(&varint::encode(seq));
            }
        }
        out
    }

    /// Decodes a trie buffer, refusing malformed or absurd ones.
    pub fn decode(buf: &[u8]) -> Result<Buckets, String> {
        let mut buckets = Buckets::default();
        if buf.is_empty() {
            return Ok(buckets);
        }
        let mut pos = 0;
        let next = |pos: &mut usize| -> Result<u64, String> {
            let (v, n) = varint::decode(&buf[*pos..]).map_err(|e| e.to_string())?;
            *pos += n;
            Ok(v)
        };
        let length = next(&mut pos)?;
        if length > MAX_POSITIONS {
            return Err(format!("{length} positions"));
        }
        // Checked and counted first, so that the vectors are allocated once, at their size.
        let body = pos;
        let (mut count, mut width) = (0, 0);
        while pos < buf.len() {
            let i = next(&mut pos)?;
            if i >= length {
                return Err(format!("a bucket at position {i} of {length}"));
            }
            let bits = next(&mut pos)?;
            for _ in 0..bits.count_ones() {
                next(&mut pos)?;
            }
            count += 1;
            width += (u64::BITS - bits.leading_zeros()) as usize;
        }
        // Buckets as written, empty ones (no bits set) included until the end.
        let (mut index, mut slots) = (Vec::with_capacity(count), Vec::with_capacity(width));
        let mut ordered = true;
        pos = body;
        while pos < buf.len() {
            let i = next(&mut pos)? as usize;
            let mut bits = next(&mut pos)?;
            let start = slots.len();
            for s in 0..MAX_SLOTS {
                if bits == 0 {
                    break;
                }
                if bits & 1 == 1 {
                    slots.resize(start + s, EMPTY);
                    slots.push(next(&mut pos)?);
                }
                bits >>= 1;
            }
            ordered &= index.last().is_none_or(|&(p, _)| p < i);
            index.push((i, slots.len()));
        }
        if !ordered {
            // JS writes positions in order. Otherwise a repeated position replaces the
            // earlier one: reversed, sorted stably and deduplicated keeps the last.
            let mut start = 0;
            let mut written: Vec<(usize, Vec<u64>)> = Vec::with_capacity(index.len());
            for &(i, end) in &index {
                written.push((i, slots[start..end].to_vec()));
                start = end;
            }
            written.reverse();
            written.sort_by_key(|&(p, _)| p);
            written.dedup_by_key(|&mut (p, _)| p);
            index.clear();
            slots.clear();
            for (i, bucket) in written {
                slots.extend_from_slice(&bucket);
                index.push((i, slots.len()));
            }
        }
        // A bucket with no slot is no bucket.
        let mut start = 0;
        index.retain(|&(_, end)| {
            let keep = end > start;
            start = end;
            keep
        });
        buckets.index = Arc::new(index);
        buckets.slots = Arc::new(slots);
        buckets.len = length as usize;
        Ok(buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trie buffer of `length` positions with `(position, bits, seqs)` as given.
    fn buffer(length: u64, buckets: &[(u64, u64, &[u64])]) -> Vec<u8> {
        let mut out = varint::encode(length).to_vec();
        for &(i, bits, seqs) in buckets {
            out.extend_from_slice(&varint::encode(i));
            out.extend_from_slice(&varint::encode(bits));
            for &seq in seqs {
                out.extend_from_slice(&varint::encode(seq));
            }
        }
        out
    }

    #[test]
    fn positions_out_of_order_or_repeated_decode_as_written_in_order() {
        // JS writes ascending positions; a repeated one replaces the earlier, and a
        // bucket whose bits are all clear is no bucket.
        let buf = buffer(
            40,
            &[
                (30, 0b1, &[7]),
                (2, 0b10, &[5]),
                (30, 0b100, &[9]),
                (17, 0, &[]),
            ],
        );
        let decoded = Buckets::decode(&buf).unwrap();
        let mut expected = Buckets::default();
        expected.push(2, 1, 5);
        expected.push(30, 2, 9);
        expected.len = 40;
        assert_eq!(decoded, expected);
        assert_eq!(decoded.get(30, 0), None);
        assert_eq!(decoded.get(30, 2), Some(9));
        assert_eq!(decoded.slots(17).count(), 0);
        // Written back in order, with every position counted.
        assert_eq!(
            decoded.encode(),
            buffer(40, &[(2, 0b10, &[5]), (30, 0b100, &[9])])
        );
    }

    #[test]
    fn many_positions_in_reverse_order_decode() {
        let seqs: Vec<[u64; 1]> = (0..20_000u64).map(|i| [i + 1]).collect();
        let buckets: Vec<(u64, u64, &[u64])> = (0..20_000u64)
            .rev()
            .map(|i| (i, 1, &seqs[i as usize][..]))
            .collect();
        let decoded = Buckets::decode(&buffer(20_000, &buckets)).unwrap();
        assert_eq!(decoded.get(0, 0), Some(1));
        assert_eq!(decoded.get(19_999, 0), Some(20_000));
        assert_eq!(decoded.index.len(), 20_000);
    }
}
