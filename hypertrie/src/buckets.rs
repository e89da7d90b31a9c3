//! A node's pointers (spec trie.md §5): per path position a bucket of slots, slot `s`
//! standing for symbol `s % 5` (slots `s + 5k` chain keys whose hashes collide), each
//! holding the seq of a node; encoded as varints.

/// Seq 0 is the header, never a node: it marks an empty slot.
const EMPTY: u64 = 0;
/// Most slots a bucket may have (a bitmap varint of 64 bits).
const MAX_SLOTS: usize = 64;
/// Most positions a decoded trie may claim (hypertrie keys with 4,000 components).
const MAX_POSITIONS: u64 = 1 << 17;

/// The buckets of one node: the non-empty ones only, by position (a node's path has
/// dozens of positions, few of which point anywhere; decoding, copying and caching nodes
/// costs what they hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// Positions, as encoded (trailing empty buckets included).
    len: usize,
    /// `(position, slots)` in position order, each with a non-empty slot.
    buckets: Vec<(usize, Vec<u64>)>,
}

impl Buckets {
    fn bucket(&self, i: usize) -> Option<&[u64]> {
        self.buckets
            .binary_search_by_key(&i, |(p, _)| *p)
            .ok()
            .map(|k| &self.buckets[k].1[..])
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
        self.buckets
            .iter()
            .map(|(_, slots)| std::mem::size_of::<(usize, Vec<u64>)>() + 8 * slots.len())
            .sum()
    }

    /// Points symbol `s` at position `i` to `seq`: in the first free slot of its chain,
    /// unless the bucket already holds `seq`.
    pub fn push(&mut self, i: usize, s: usize, seq: u64) {
        self.len = self.len.max(i + 1);
        let k = match self.buckets.binary_search_by_key(&i, |(p, _)| *p) {
            Ok(k) => k,
            Err(k) => {
                self.buckets.insert(k, (i, Vec::new()));
                k
            }
        };
        let bucket = &mut self.buckets[k].1;
        let mut s = s % 5;
        while bucket.get(s).is_some_and(|&x| x != EMPTY) {
            s += 5;
        }
        if bucket.contains(&seq) {
            return;
        }
        if bucket.len() <= s {
            bucket.resize(s + 1, EMPTY);
        }
        bucket[s] = seq;
    }

    /// The encoding JS writes: length, then `position bitmap seq…` per non-empty bucket.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&varint::encode(self.len as u64));
        for &(i, ref bucket) in &self.buckets {
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
        let mut ordered = true;
        while pos < buf.len() {
            let i = next(&mut pos)?;
            if i >= length {
                return Err(format!("a bucket at position {i} of {length}"));
            }
            let mut bits = next(&mut pos)?;
            let mut slots = Vec::new();
            for s in 0..MAX_SLOTS {
                if bits == 0 {
                    break;
                }
                if bits & 1 == 1 {
                    slots.resize(s, EMPTY);
                    slots.push(next(&mut pos)?);
                }
                bits >>= 1;
            }
            let i = i as usize;
            ordered &= buckets.buckets.last().is_none_or(|&(p, _)| p < i);
            buckets.buckets.push((i, slots));
        }
        if !ordered {
            // JS writes positions in order. Otherwise a repeated position replaces the
            // earlier one: reversed, sorted stably and deduplicated keeps the last.
            buckets.buckets.reverse();
            buckets.buckets.sort_by_key(|&(p, _)| p);
            buckets.buckets.dedup_by_key(|&mut (p, _)| p);
        }
        buckets.buckets.retain(|(_, slots)| !slots.is_empty());
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
        assert_eq!(decoded.buckets.len(), 20_000);
    }
}
