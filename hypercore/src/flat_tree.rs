//! Flat-tree arithmetic: every node of a feed's merkle tree numbered in-order.
//!
//! Block `i` is leaf `2i`; parents have odd indexes. These are the `flat-tree@1.13`
//! functions hypercore 9 uses, on `u64` indexes.

/// Number of trailing one bits: 0 for leaves.
#[inline]
pub fn depth(index: u64) -> u32 {
    (!index).trailing_zeros()
}

/// Position among the nodes of the same depth, counting from 0.
#[inline]
pub fn offset(index: u64) -> u64 {
    index >> (depth(index) + 1)
}

/// The node at `depth` and `offset`.
#[inline]
pub fn index(depth: u32, offset: u64) -> u64 {
    (((offset << 1) | 1) << depth) - 1
}

/// The parent of a node.
#[inline]
pub fn parent(index_: u64) -> u64 {
    let d = depth(index_);
    index(d + 1, offset(index_) >> 1)
}

/// The other child of this node's parent.
#[inline]
pub fn sibling(index_: u64) -> u64 {
    let d = depth(index_);
    index(d, offset(index_) ^ 1)
}

/// The sibling of the parent.
#[inline]
pub fn uncle(index_: u64) -> u64 {
    sibling(parent(index_))
}

/// Whether the node is the left child of its parent.
#[inline]
pub fn is_left(index_: u64) -> bool {
    offset(index_) & 1 == 0
}

/// The two children of a parent node, `None` for a leaf.
#[inline]
pub fn children(index_: u64) -> Option<(u64, u64)> {
    let d = depth(index_);
    if d == 0 {
        return None;
    }
    let o = offset(index_) << 1;
    Some((index(d - 1, o), index(d - 1, o + 1)))
}

/// The left child of a parent node (the node itself for a leaf).
#[inline]
pub fn left_child(index_: u64) -> u64 {
    children(index_).map_or(index_, |(l, _)| l)
}

/// The right child of a parent node (the node itself for a leaf).
#[inline]
pub fn right_child(index_: u64) -> u64 {
    children(index_).map_or(index_, |(_, r)| r)
}

/// The first leaf covered by a node.
#[inline]
pub fn left_span(index_: u64) -> u64 {
    let d = depth(index_);
    if d == 0 {
        index_
    } else {
        offset(index_) << (d + 1)
    }
}

/// The last leaf covered by a node.
#[inline]
pub fn right_span(index_: u64) -> u64 {
    let d = depth(index_);
    if d == 0 {
        index_
    } else {
        ((offset(index_) + 1) << (d + 1)) - 2
    }
}

/// Number of leaves (blocks) under a node.
#[inline]
pub fn count_leaves(index_: u64) -> u64 {
    1 << depth(index_)
}

/// The roots of a forest whose leaves end just before leaf `leaf_end` (which must be even),
/// i.e. the roots of a feed of `leaf_end / 2` blocks, in ascending order.
pub fn full_roots(leaf_end: u64) -> FullRoots {
    debug_assert!(leaf_end & 1 == 0, "full_roots takes a leaf index");
    FullRoots {
        remaining: leaf_end / 2,
        offset: 0,
    }
}

/// Iterator returned by [`full_roots`].
#[derive(Debug, Clone)]
pub struct FullRoots {
    remaining: u64,
    offset: u64,
}

impl Iterator for FullRoots {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.remaining == 0 {
            return None;
        }
        // The largest power of two that fits in what is left.
        let factor = 1u64 << (63 - self.remaining.leading_zeros());
        let root = self.offset + factor - 1;
        self.offset += 2 * factor;
        self.remaining -= factor;
        Some(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_relations() {
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(sibling(1), 5);
        assert_eq!(children(3), Some((1, 5)));
        assert_eq!(children(4), None);
        assert_eq!(left_span(7), 0);
        assert_eq!(right_span(7), 14);
        assert_eq!(full_roots(14).collect::<Vec<_>>(), vec![3, 9, 12]);
        assert_eq!(full_roots(0).count(), 0);
    }

    #[test]
    fn large_indexes_do_not_overflow() {
        let leaf = 2 * ((1u64 << 52) + 3);
        let mut n = leaf;
        for _ in 0..50 {
            n = parent(n);
            assert!(left_span(n) <= leaf && leaf <= right_span(n));
        }
    }
}
