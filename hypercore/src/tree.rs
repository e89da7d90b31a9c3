//! Merkle tree bookkeeping over the tree bits of a [`Bitfield`]: which nodes a proof needs,
//! the request digest, the provable length, and the append-side root stack.
//!
//! The algorithms are those of hypercore 9's `lib/tree-index.js` (see `spec/wire.md`
//! section 10), so digests and proofs are exactly what a JS peer sends and expects.

use std::collections::HashMap;

use crate::bitfield::Bitfield;
use crate::flat_tree;
use crate::node::Node;

/// Largest node depth we follow. Feeds stay far below this (JS peers cannot address more
/// than 2^53 blocks); the cap keeps hostile digests and indexes from overflowing `u64`.
const MAX_DEPTH: u32 = 60;

/// Nodes a remote peer is known to hold, learned from its request digests (JS keeps a
/// `TreeIndex` per peer for this). Adding a node whose sibling is known also adds the parent.
#[derive(Debug, Default, Clone)]
pub struct RemoteTree {
    pages: HashMap<u64, Box<[u64; 64]>>,
}

impl RemoteTree {
    const BITS: u64 = 64 * 64;

    /// Whether the remote has node `index`.
    pub fn has(&self, index: u64) -> bool {
        self.pages
            .get(&(index / Self::BITS))
            .is_some_and(|p| p[((index % Self::BITS) / 64) as usize] & (1 << (index % 64)) != 0)
    }

    fn set_bit(&mut self, index: u64) -> bool {
        let page = self
            .pages
            .entry(index / Self::BITS)
            .or_insert_with(|| Box::new([0; 64]));
        let word = &mut page[((index % Self::BITS) / 64) as usize];
        let mask = 1 << (index % 64);
        let new = *word & mask == 0;
        *word |= mask;
        new
    }

    /// Records that the remote has `index` (and parents whose children it now has).
    pub fn add(&mut self, mut index: u64) {
        if !self.set_bit(index) {
            return;
        }
        while flat_tree::depth(index) < MAX_DEPTH && self.has(flat_tree::sibling(index)) {
            index = flat_tree::parent(index);
            if !self.set_bit(index) {
                break;
            }
        }
    }
}

/// Which stored nodes to send for a block, and which length's signature proves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofPlan {
    /// Node indexes in the order the receiver consumes them.
    pub nodes: Vec<u64>,
    /// `2 × length` of the signature needed, or 0 when the proof ends at a node the
    /// remote already trusts and needs no signature.
    pub verified_by: u64,
}

/// The request digest a downloader sends for `leaf` (= `2 × block`): a bit mask of which
/// nodes on the path to the top it already has (JS `TreeIndex.digest`).
pub fn digest(bf: &Bitfield, leaf: u64) -> u64 {
    if bf.has_node(leaf) {
        return 1;
    }
    let mut digest = 0u64;
    let mut next = flat_tree::sibling(leaf);
    let max = (next + 2).max(bf.tree_len_bits());
    let mut bit = 2u64;
    let mut parent = flat_tree::parent(next);
    while flat_tree::right_span(next) < max || flat_tree::left_span(parent) > 0 {
        if bf.has_node(next) {
            digest += bit;
        }
        if bf.has_node(parent) {
            digest += 2 * bit;
            if digest & 1 == 0 {
                digest += 1;
            }
            if digest + 1 == 4 * bit {
                return 1;
            }
            return digest;
        }
        if flat_tree::depth(parent) >= MAX_DEPTH {
            break;
        }
        next = flat_tree::sibling(parent);
        parent = flat_tree::parent(next);
        bit *= 2;
    }
    digest
}

/// Plans the proof for `leaf` given the remote's digest (JS `TreeIndex.proof`), updating
/// what we know the remote has. `None` if we do not have the node ourselves.
pub fn proof_plan(
    bf: &Bitfield,
    leaf: u64,
    hash: bool,
    digest: u64,
    remote: &mut RemoteTree,
) -> Option<ProofPlan> {
    if !bf.has_node(leaf) {
        return None;
    }
    let mut nodes = Vec::new();
    if hash {
        nodes.push(leaf);
    }
    if digest == 1 {
        return Some(ProofPlan {
            nodes,
            verified_by: 0,
        });
    }

    let has_root = digest & 1 == 1;
    let mut d = digest >> 1;
    let mut next = leaf;
    while d != 0 && flat_tree::depth(next) < MAX_DEPTH {
        if d == 1 && has_root {
            if bf.has_node(next) {
                remote.add(next);
            }
            // Having a root implies having the roots before it.
            let sib = flat_tree::sibling(next);
            if sib < next {
                next = sib;
            }
            for r in flat_tree::full_roots(flat_tree::right_span(next) + 2) {
                if bf.has_node(r) {
                    remote.add(r);
                }
            }
            break;
        }
        let sib = flat_tree::sibling(next);
        if d & 1 == 1 && bf.has_node(sib) {
            remote.add(sib);
        }
        next = flat_tree::parent(next);
        d >>= 1;
    }

    let mut next = leaf;
    while !remote.has(next) {
        let sib = flat_tree::sibling(next);
        if !bf.has_node(sib) {
            // `next` is a local root: prove it with the signed roots.
            let verified_by = verified_by(bf, next);
            nodes.extend(
                flat_tree::full_roots(verified_by).filter(|&r| r != next && !remote.has(r)),
            );
            return Some(ProofPlan { nodes, verified_by });
        }
        if !remote.has(sib) {
            nodes.push(sib);
        }
        next = flat_tree::parent(next);
        if flat_tree::depth(next) >= MAX_DEPTH {
            break;
        }
    }
    Some(ProofPlan {
        nodes,
        verified_by: 0,
    })
}

/// `2 × length` provable from the stored tree through node `index`: climb while complete,
/// then follow stored nodes down the right edge (JS `TreeIndex.verifiedBy`).
pub fn verified_by(bf: &Bitfield, index: u64) -> u64 {
    if !bf.has_node(index) {
        return 0;
    }
    let mut top = index;
    loop {
        if flat_tree::depth(top) >= MAX_DEPTH {
            break;
        }
        let parent = flat_tree::parent(top);
        if !(bf.has_node(parent) && bf.has_node(flat_tree::sibling(top))) {
            break;
        }
        top = parent;
    }
    let mut depth = flat_tree::depth(top);
    while depth > 0 {
        top = flat_tree::left_child(flat_tree::index(depth, flat_tree::offset(top) + 1));
        depth -= 1;
        while !bf.has_node(top) && depth > 0 {
            top = flat_tree::left_child(top);
            depth -= 1;
        }
    }
    if bf.has_node(top) {
        top + 2
    } else {
        top
    }
}

/// The feed length the stored tree describes (JS `TreeIndex.blocks`): from the highest
/// stored node on the left edge, as far right as stored nodes reach.
pub fn stored_length(bf: &Bitfield) -> u64 {
    let max = bf.tree_len_bits();
    let mut top = 0;
    let mut next = 0;
    while flat_tree::right_span(next) < max && flat_tree::depth(next) < MAX_DEPTH {
        next = flat_tree::parent(next);
        if bf.has_node(next) {
            top = next;
        }
    }
    if bf.has_node(top) {
        verified_by(bf, top) / 2
    } else {
        0
    }
}

/// Appends leaves to a writer's root stack (the JS `merkle-tree-stream` generator) and
/// returns every node created: the leaves and each parent they complete. Which parents are
/// created depends only on indexes, so the structure is worked out first and the parent
/// hashes are then computed level by level, four at a time.
pub fn append_leaves(roots: &mut Vec<Node>, leaves: &[Node]) -> Vec<Node> {
    let base = roots.len();
    // Existing roots, then every created node; the stack holds positions in `pool`.
    let mut pool: Vec<Node> = Vec::with_capacity(base + 2 * leaves.len());
    pool.extend_from_slice(roots);
    let mut stack: Vec<usize> = (0..base).collect();
    // (parent, left, right) positions, bucketed by the parent's depth.
    let mut levels: Vec<Vec<(usize, usize, usize)>> = Vec::new();
    for leaf in leaves {
        pool.push(*leaf);
        stack.push(pool.len() - 1);
        while stack.len() >= 2 {
            let (l, r) = (stack[stack.len() - 2], stack[stack.len() - 1]);
            let parent = flat_tree::parent(pool[l].index);
            if parent != flat_tree::parent(pool[r].index) {
                break;
            }
            pool.push(Node {
                index: parent,
                hash: [0; 32],
                size: pool[l].size + pool[r].size,
            });
            let p = pool.len() - 1;
            let depth = flat_tree::depth(parent) as usize;
            if levels.len() < depth {
                levels.resize_with(depth, Vec::new);
            }
            levels[depth - 1].push((p, l, r));
            stack.truncate(stack.len() - 2);
            stack.push(p);
        }
    }
    // A parent only depends on nodes one level down, so each level hashes in one go.
    let mut pairs = Vec::new();
    let mut hashes = Vec::new();
    for level in &levels {
        pairs.clear();
        pairs.extend(level.iter().map(|&(_, l, r)| (pool[l], pool[r])));
        hashes.clear();
        crate::crypto::parent_hashes(&pairs, &mut hashes);
        for (&(p, _, _), h) in level.iter().zip(&hashes) {
            pool[p].hash = *h;
        }
    }
    *roots = stack.iter().map(|&i| pool[i]).collect();
    pool.split_off(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_bits(blocks: u64) -> Bitfield {
        let mut bf = Bitfield::default();
        for i in 0..blocks {
            bf.set_block(i, true);
            bf.add_node(2 * i);
        }
        bf
    }

    #[test]
    fn proofs_for_digest_zero_match_js() {
        // core.json -> proofs (7 blocks, digest 0).
        let bf = writer_bits(7);
        let plan =
            |block: u64| proof_plan(&bf, 2 * block, false, 0, &mut RemoteTree::default()).unwrap();
        assert_eq!(plan(0).nodes, vec![2, 5, 9, 12]);
        assert_eq!(plan(3).nodes, vec![4, 1, 9, 12]);
        assert_eq!(plan(6).nodes, vec![3, 9]);
        assert_eq!(plan(4).nodes, vec![10, 3, 12]);
        assert_eq!(plan(0).verified_by, 14);
        assert_eq!(stored_length(&bf), 7);
    }

    #[test]
    fn digest_after_one_block() {
        // core.json -> digests after the reader stored block 3 with its proof
        // (nodes 4, 1, 9, 12 plus the visited 6, 5, 3).
        let mut bf = Bitfield::default();
        for n in [4, 1, 9, 12, 6, 5, 3] {
            bf.add_node(n);
        }
        bf.set_block(3, true);
        let expect = [(0, 5), (1, 5), (2, 1), (3, 1), (4, 5), (5, 5), (6, 1)];
        for (block, d) in expect {
            assert_eq!(digest(&bf, 2 * block), d, "block {block}");
        }
        assert_eq!(stored_length(&bf), 7);
        let empty = Bitfield::default();
        assert_eq!(digest(&empty, 6), 0);
    }

    #[test]
    fn batched_parents_match_one_by_one() {
        // Any split of 100 leaves into batches gives the nodes of appending them singly.
        let leaves: Vec<Node> = (0..100u64)
            .map(|i| Node {
                index: 2 * i,
                hash: crate::crypto::leaf_hash(&[i as u8]),
                size: i % 7,
            })
            .collect();
        let mut single_roots = Vec::new();
        let mut single: Vec<Node> = Vec::new();
        for l in &leaves {
            single.extend(append_leaves(&mut single_roots, std::slice::from_ref(l)));
        }
        for split in [1usize, 3, 7, 64, 100] {
            let mut roots = Vec::new();
            let mut all = Vec::new();
            for chunk in leaves.chunks(split) {
                all.extend(append_leaves(&mut roots, chunk));
            }
            assert_eq!(roots, single_roots);
            all.sort_by_key(|n| n.index);
            let mut expect = single.clone();
            expect.sort_by_key(|n| n.index);
            assert_eq!(all, expect);
        }
        // Parents are the hashes of their children.
        let by_index: std::collections::HashMap<u64, Node> =
            single.iter().map(|n| (n.index, *n)).collect();
        for n in single.iter().filter(|n| n.index & 1 == 1) {
            let (l, r) = flat_tree::children(n.index).unwrap();
            assert_eq!(*n, Node::parent(&by_index[&l], &by_index[&r]));
        }
    }

    #[test]
    fn hostile_digests_do_not_overflow() {
        let bf = writer_bits(9);
        for d in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 62) | 1] {
            let _ = proof_plan(&bf, 4, true, d, &mut RemoteTree::default());
        }
    }
}
