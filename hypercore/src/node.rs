//! A merkle tree node and its 40-byte on-disk record.

use crate::crypto::{self, Hash};

/// Bytes of one record in the `tree` file: `hash[32] || u64be(size)`.
pub const NODE_RECORD_SIZE: usize = 40;

/// A node of a feed's merkle tree: a leaf (one block) or a parent of two nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Node {
    /// Flat-tree index (block `i` is leaf `2i`).
    pub index: u64,
    /// BLAKE2b-256 hash of the leaf data or of the two children.
    pub hash: Hash,
    /// Number of data bytes under this node.
    pub size: u64,
}

impl Node {
    /// The parent of two sibling nodes (given in either order).
    pub fn parent(a: &Node, b: &Node) -> Node {
        debug_assert_eq!(crate::flat_tree::sibling(a.index), b.index);
        Node {
            index: crate::flat_tree::parent(a.index),
            hash: crypto::parent_hash(a, b),
            size: a.size + b.size,
        }
    }

    /// The 40-byte `tree` file record.
    pub fn to_record(&self) -> [u8; NODE_RECORD_SIZE] {
        let mut out = [0u8; NODE_RECORD_SIZE];
        out[..32].copy_from_slice(&self.hash);
        out[32..].copy_from_slice(&self.size.to_be_bytes());
        out
    }

    /// Parses a record; an all-zero record means "no node" and gives `None`.
    pub fn from_record(index: u64, record: &[u8]) -> Option<Node> {
        let record: &[u8; NODE_RECORD_SIZE] = record.try_into().ok()?;
        if record.iter().all(|&b| b == 0) {
            return None;
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&record[..32]);
        let size = u64::from_be_bytes(record[32..].try_into().ok()?);
        Some(Node { index, hash, size })
    }
}
