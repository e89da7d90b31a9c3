//! The `bitfield` file in memory: which blocks and tree nodes a feed holds.
//!
//! Layout and update rules follow hypercore 9 (`lib/bitfield.js` over `sparse-bitfield` and
//! `memory-pager`) so that the file we write is byte-identical to the one JS writes for the
//! same operations. Each page of 3584 bytes holds three bitfields, MSB first within a byte:
//! 1024 bytes of data bits (8192 blocks), 2048 bytes of tree bits (16384 nodes) and 512
//! bytes of "index" summary that JS uses to skip over fully downloaded regions.

pub mod rle;

use std::collections::{BTreeMap, BTreeSet};

use crate::flat_tree;

/// Size of a bitfield page as written by hypercore ≥ 8.
pub const DEFAULT_PAGE_SIZE: usize = 3584;
/// Data-bit bytes per page (8192 blocks).
const DATA_BYTES: u64 = 1024;
/// Tree-bit bytes per page (16384 nodes), stored after the data bits.
const TREE_BYTES: u64 = 2048;
const TREE_OFFSET: usize = 1024;
const INDEX_OFFSET: usize = 3072;
/// Blocks covered by one page of data bits.
pub const BLOCKS_PER_PAGE: u64 = DATA_BYTES * 8;

const INDEX_UPDATE_MASK: [u8; 4] = [63, 207, 243, 252];

/// 2-bit summary of a byte's two nibbles (`1111` -> 3, `0000` -> 0, else 1), as a right child.
const fn parent_right(b: u8) -> u8 {
    const fn map(n: u8) -> u8 {
        match n {
            15 => 3,
            0 => 0,
            _ => 1,
        }
    }
    (map(b >> 4) << 2) | map(b & 15)
}

#[derive(Clone, Copy)]
enum Region {
    Data,
    Tree,
    Index,
}

/// The data, tree and index bitfields of one feed, paged as on disk.
#[derive(Clone)]
pub struct Bitfield {
    page_size: usize,
    index_bytes: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
    /// Highest page number ever allocated or loaded, plus one (JS `pager.length`).
    page_count: u64,
    /// Byte lengths of the three sub-bitfields (JS `sparse-bitfield.byteLength`).
    data_len: u64,
    tree_len: u64,
    index_len: u64,
    dirty: BTreeSet<u64>,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitfield")
            .field("pages", &self.pages.len())
            .field("page_count", &self.page_count)
            .field("dirty", &self.dirty.len())
            .finish()
    }
}

impl Default for Bitfield {
    fn default() -> Self {
        Self::new(DEFAULT_PAGE_SIZE)
    }
}

impl Bitfield {
    /// An empty bitfield with pages of `page_size` bytes (3584 unless an older file says
    /// otherwise; the index part is whatever follows the 3072 bytes of data and tree bits).
    pub fn new(page_size: usize) -> Self {
        assert!(
            page_size > INDEX_OFFSET,
            "bitfield page size {page_size} too small"
        );
        Bitfield {
            page_size,
            index_bytes: (page_size - INDEX_OFFSET) as u64,
            pages: BTreeMap::new(),
            page_count: 0,
            data_len: 0,
            tree_len: 0,
            index_len: 0,
            dirty: BTreeSet::new(),
        }
    }

    /// Loads the bytes of the `bitfield` file that follow its 32-byte header. A short last
    /// page is zero-padded; all-zero pages are not kept in memory.
    pub fn from_bytes(page_size: usize, bytes: &[u8]) -> Self {
        let mut bf = Bitfield::new(page_size);
        for (i, chunk) in bytes.chunks(page_size).enumerate() {
            let i = i as u64;
            bf.page_count = i + 1;
            if chunk.iter().any(|&b| b != 0) {
                let mut page = vec![0u8; page_size].into_boxed_slice();
                page[..chunk.len()].copy_from_slice(chunk);
                bf.pages.insert(i, page);
            }
        }
        bf.data_len = bf.page_count * DATA_BYTES;
        bf.tree_len = bf.page_count * TREE_BYTES;
        bf.index_len = bf.page_count * bf.index_bytes;
        bf
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    fn locate(&self, region: Region, i: u64) -> (u64, usize) {
        let (per_page, base) = match region {
            Region::Data => (DATA_BYTES, 0),
            Region::Tree => (TREE_BYTES, TREE_OFFSET),
            Region::Index => (self.index_bytes, INDEX_OFFSET),
        };
        (i / per_page, base + (i % per_page) as usize)
    }

    fn get_byte(&self, region: Region, i: u64) -> u8 {
        let (page, off) = self.locate(region, i);
        self.pages.get(&page).map_or(0, |p| p[off])
    }

    /// Sets one byte; allocates its page like JS does even when the byte does not change.
    fn set_byte(&mut self, region: Region, i: u64, b: u8) -> bool {
        let (page_no, off) = self.locate(region, i);
        let page_size = self.page_size;
        let page = self
            .pages
            .entry(page_no)
            .or_insert_with(|| vec![0u8; page_size].into_boxed_slice());
        if page_no >= self.page_count {
            self.page_count = page_no + 1;
        }
        if page[off] == b {
            return false;
        }
        page[off] = b;
        let len = match region {
            Region::Data => &mut self.data_len,
            Region::Tree => &mut self.tree_len,
            Region::Index => &mut self.index_len,
        };
        if i >= *len {
            *len = i + 1;
        }
        self.dirty.insert(page_no);
        true
    }

    /// Whether block `index` is stored.
    pub fn has_block(&self, index: u64) -> bool {
        self.get_byte(Region::Data, index >> 3) & (128 >> (index & 7)) != 0
    }

    /// Marks block `index` stored or not; returns whether anything changed.
    pub fn set_block(&mut self, index: u64, value: bool) -> bool {
        let byte_i = index >> 3;
        let mask = 128u8 >> (index & 7);
        let old = self.get_byte(Region::Data, byte_i);
        let v = if value { old | mask } else { old & !mask };
        if !self.set_byte(Region::Data, byte_i, v) {
            return false;
        }
        self.update_index(byte_i, v);
        true
    }

    /// Propagates a changed data byte into the index summary (JS `_setIndex`). JS follows
    /// this with `_expand`, which never changes a byte (it compares bit and byte lengths),
    /// so it is left out.
    fn update_index(&mut self, data_byte: u64, value: u8) {
        let o = (data_byte & 3) as usize;
        let start = 2 * (data_byte >> 2);
        let summary: u8 = match value {
            255 => 192,
            0 => 0,
            _ => 64,
        };
        let mut byte =
            (self.get_byte(Region::Index, start) & INDEX_UPDATE_MASK[o]) | (summary >> (2 * o));
        let max = self.page_count * self.index_bytes;
        let mut pos = start;
        while pos < max && self.set_byte(Region::Index, pos, byte) {
            let sib = self.get_byte(Region::Index, flat_tree::sibling(pos));
            byte = if flat_tree::is_left(pos) {
                parent_right(byte) << 4 | parent_right(sib)
            } else {
                parent_right(byte) | parent_right(sib) << 4
            };
            pos = flat_tree::parent(pos);
        }
    }

    /// Marks blocks `[start, end)` stored, a byte at a time (what an append does; gives
    /// the same bytes as marking them one by one in order).
    pub fn set_blocks(&mut self, start: u64, end: u64) {
        let mut i = start;
        while i < end {
            let byte_i = i >> 3;
            let byte_end = ((byte_i + 1) << 3).min(end);
            let lo = (i & 7) as u32;
            let hi = (byte_end - (byte_i << 3)) as u32;
            let mask = ((0xffu16 >> lo) & !(0xffu16 >> hi)) as u8;
            let v = self.get_byte(Region::Data, byte_i) | mask;
            if self.set_byte(Region::Data, byte_i, v) {
                self.update_index(byte_i, v);
            }
            i = byte_end;
        }
    }

    /// Marks exactly these tree nodes stored, without propagating to parents (the caller
    /// passes every node an append created). Nodes at or above `dense_from` are gathered
    /// per byte first.
    pub fn set_nodes(&mut self, nodes: impl Iterator<Item = u64>, dense_from: u64) {
        let first_byte = dense_from >> 3;
        let mut bytes: Vec<u8> = Vec::new();
        for n in nodes {
            if n < dense_from {
                self.set_tree_bit(n, true);
                continue;
            }
            let k = ((n >> 3) - first_byte) as usize;
            if bytes.len() <= k {
                bytes.resize(k + 1, 0);
            }
            bytes[k] |= 128 >> (n & 7);
        }
        for (k, &b) in bytes.iter().enumerate() {
            if b != 0 {
                let at = first_byte + k as u64;
                let v = self.get_byte(Region::Tree, at) | b;
                self.set_byte(Region::Tree, at, v);
            }
        }
    }

    /// Whether tree node `index` is stored.
    pub fn has_node(&self, index: u64) -> bool {
        self.get_byte(Region::Tree, index >> 3) & (128 >> (index & 7)) != 0
    }

    fn set_tree_bit(&mut self, index: u64, value: bool) -> bool {
        let byte_i = index >> 3;
        let mask = 128u8 >> (index & 7);
        let old = self.get_byte(Region::Tree, byte_i);
        let v = if value { old | mask } else { old & !mask };
        self.set_byte(Region::Tree, byte_i, v)
    }

    /// Marks node `index` stored, and every ancestor whose both children are now stored
    /// (JS `TreeIndex.set`). Returns whether the node was new.
    pub fn add_node(&mut self, mut index: u64) -> bool {
        if !self.set_tree_bit(index, true) {
            return false;
        }
        while self.has_node(flat_tree::sibling(index)) {
            index = flat_tree::parent(index);
            if !self.set_tree_bit(index, true) {
                break;
            }
        }
        true
    }

    /// Forgets node `index` (used when discarding state a crash left unfinished).
    pub fn remove_node(&mut self, index: u64) -> bool {
        self.set_tree_bit(index, false)
    }

    /// Length in bits of the tree bitfield (JS `tree.bitfield.length`), used as a scan limit.
    pub fn tree_len_bits(&self) -> u64 {
        self.tree_len * 8
    }

    /// Length in bits of the data bitfield (JS `bitfield.length`).
    pub fn data_len_bits(&self) -> u64 {
        self.data_len * 8
    }

    /// Number of stored blocks in `[start, end)`; only allocated pages are visited.
    pub fn count_blocks(&self, start: u64, end: u64) -> u64 {
        if end <= start {
            return 0;
        }
        let mut total = 0u64;
        for (&p, page) in self
            .pages
            .range(start / BLOCKS_PER_PAGE..=(end - 1) / BLOCKS_PER_PAGE)
        {
            let lo = start.max(p * BLOCKS_PER_PAGE) - p * BLOCKS_PER_PAGE;
            let hi = end.min((p + 1) * BLOCKS_PER_PAGE) - p * BLOCKS_PER_PAGE;
            total += count_bits(&page[..DATA_BYTES as usize], lo, hi);
        }
        total
    }

    /// The first stored block in `[start, end)`, if any; only allocated pages are visited.
    pub fn next_block(&self, start: u64, end: u64) -> Option<u64> {
        if end <= start {
            return None;
        }
        for (&p, page) in self
            .pages
            .range(start / BLOCKS_PER_PAGE..=(end - 1) / BLOCKS_PER_PAGE)
        {
            let base = p * BLOCKS_PER_PAGE;
            let lo = start.max(base) - base;
            let hi = end.min(base + BLOCKS_PER_PAGE) - base;
            if let Some(bit) = next_bit(&page[..DATA_BYTES as usize], lo, hi, true) {
                return Some(base + bit);
            }
        }
        None
    }

    /// The first block in `[start, end)` that is not stored, if any.
    pub fn first_missing(&self, start: u64, end: u64) -> Option<u64> {
        let mut at = start;
        while at < end {
            let p = at / BLOCKS_PER_PAGE;
            let base = p * BLOCKS_PER_PAGE;
            let hi = end.min(base + BLOCKS_PER_PAGE) - base;
            match self.pages.get(&p) {
                None => return Some(at),
                Some(page) => {
                    if let Some(bit) = next_bit(&page[..DATA_BYTES as usize], at - base, hi, false)
                    {
                        return Some(base + bit);
                    }
                }
            }
            at = base + hi;
        }
        None
    }

    /// Drops every data bit at or past block `length` and every tree bit of a node not
    /// inside the first `length` blocks (used to discard what a crash left unfinished).
    pub fn truncate(&mut self, length: u64) {
        let stale_blocks: Vec<u64> = {
            let mut v = Vec::new();
            let mut at = length;
            while let Some(b) = self.next_block(at, u64::MAX) {
                v.push(b);
                at = b + 1;
            }
            v
        };
        for b in stale_blocks {
            self.set_block(b, false);
        }
        let first_node = 2 * length;
        let stale_nodes: Vec<u64> = self
            .pages
            .range(first_node / (TREE_BYTES * 8)..)
            .flat_map(|(&p, page)| {
                let base = p * TREE_BYTES * 8;
                let tree = &page[TREE_OFFSET..TREE_OFFSET + TREE_BYTES as usize];
                (0..TREE_BYTES * 8)
                    .filter(move |&k| tree[(k >> 3) as usize] & (128 >> (k & 7)) != 0)
                    .map(move |k| base + k)
            })
            .filter(|&n| n >= first_node)
            .collect();
        for n in stale_nodes {
            self.remove_node(n);
        }
        // Parents of the roots cover blocks past `length` although their index is lower.
        for root in flat_tree::full_roots(first_node) {
            let mut p = flat_tree::parent(root);
            while p < first_node {
                self.remove_node(p);
                p = flat_tree::parent(p);
            }
        }
    }

    /// The RLE-compressed data bits for `[start, start + length)` as sent in a `Have`
    /// (JS `Bitfield.compress`; `0, 0` means all of them); `start` must be a multiple of
    /// 8192.
    pub fn compress(&self, start: u64, length: u64) -> Vec<u8> {
        let data_bits = self.data_len_bits();
        // A Want without a length asks for everything.
        let length = if start == 0 && length == 0 {
            data_bits
        } else if start.saturating_add(length) > data_bits {
            data_bits.saturating_sub(start).max(1)
        } else {
            length
        };
        let mut raw = vec![0u8; length.div_ceil(8) as usize];
        let first_page = start / BLOCKS_PER_PAGE;
        let pages = length.div_ceil(BLOCKS_PER_PAGE);
        for p in first_page..first_page + pages {
            if let Some(page) = self.pages.get(&p) {
                let at = ((p - first_page) * DATA_BYTES) as usize;
                let n = (DATA_BYTES as usize).min(raw.len().saturating_sub(at));
                raw[at..at + n].copy_from_slice(&page[..n]);
            }
        }
        rle::encode(&raw)
    }

    /// Pages changed since the last [`Bitfield::take_dirty`], as `(file offset after the
    /// header, page bytes)` in ascending order, and forgets that they were changed.
    pub fn take_dirty(&mut self) -> Vec<(u64, Vec<u8>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|p| {
                let bytes = self
                    .pages
                    .get(&p)
                    .map_or_else(|| vec![0; self.page_size], |pg| pg.to_vec());
                (p * self.page_size as u64, bytes)
            })
            .collect()
    }

    /// Marks pages as changed again, after writing them failed.
    pub fn mark_dirty(&mut self, pages: &[(u64, Vec<u8>)]) {
        for (offset, _) in pages {
            self.dirty.insert(offset / self.page_size as u64);
        }
    }

    /// Whether anything changed since the last [`Bitfield::take_dirty`].
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// Number of set bits `[lo, hi)` of an MSB-first byte array.
fn count_bits(bytes: &[u8], lo: u64, hi: u64) -> u64 {
    let mut total = 0;
    let mut k = lo;
    while k < hi && k & 7 != 0 {
        total += u64::from(bytes[(k >> 3) as usize] & (128 >> (k & 7)) != 0);
        k += 1;
    }
    while k + 8 <= hi {
        total += u64::from(bytes[(k >> 3) as usize].count_ones());
        k += 8;
    }
    while k < hi {
        total += u64::from(bytes[(k >> 3) as usize] & (128 >> (k & 7)) != 0);
        k += 1;
    }
    total
}

/// First bit in `[lo, hi)` equal to `value` in an MSB-first byte array.
fn next_bit(bytes: &[u8], lo: u64, hi: u64, value: bool) -> Option<u64> {
    let skip = if value { 0u8 } else { 255u8 };
    let mut k = lo;
    while k < hi {
        if k & 7 == 0 && k + 8 <= hi && bytes[(k >> 3) as usize] == skip {
            k += 8;
            continue;
        }
        if (bytes[(k >> 3) as usize] & (128 >> (k & 7)) != 0) == value {
            return Some(k);
        }
        k += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_block_writer_matches_js_page() {
        // core.json -> storage.bitfield.page0 for a 7-block writer.
        let mut bf = Bitfield::default();
        for i in 0..7 {
            bf.set_block(i, true);
            bf.add_node(2 * i);
        }
        let dirty = bf.take_dirty();
        assert_eq!(dirty.len(), 1);
        let page = &dirty[0].1;
        // Every non-zero byte of the page JS hypercore 9 writes after 7 single appends.
        let expected: &[(usize, u8)] = &[
            (0, 0xfe),
            (1024, 0xfe),
            (1025, 0xe8),
            (3072, 0x40),
            (3073, 0x40),
            (3075, 0x40),
            (3079, 0x40),
            (3087, 0x40),
            (3103, 0x40),
            (3135, 0x40),
            (3199, 0x40),
            (3327, 0x40),
            (3583, 0x40),
        ];
        let nonzero: Vec<(usize, u8)> = page
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(i, b)| (i, *b))
            .collect();
        assert_eq!(nonzero, expected);
        assert_eq!(crate::crypto::to_hex(&bf.compress(0, 1_048_576)), "02fe");
    }

    #[test]
    fn counts_and_missing() {
        let mut bf = Bitfield::default();
        for i in (0..20_000).filter(|i| i % 3 != 0) {
            bf.set_block(i, true);
        }
        assert_eq!(bf.count_blocks(0, 20_000), 20_000 - 6667);
        assert_eq!(bf.count_blocks(1, 3), 2);
        assert_eq!(bf.first_missing(1, 100), Some(3));
        let mut full = Bitfield::default();
        for i in 0..100 {
            full.set_block(i, true);
        }
        assert_eq!(full.first_missing(0, 100), None);
        assert_eq!(full.first_missing(0, 101), Some(100));
    }
}
