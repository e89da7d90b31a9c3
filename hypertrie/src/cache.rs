//! Decoded nodes kept for every trie of the process, within one memory budget. Every
//! lookup walks down from the head through the same upper nodes, and a listing followed
//! by lookups of what it listed reads the same nodes twice: reading and decoding them
//! again each time was most of their cost. One budget for the process rather than one
//! per trie, so that a daemon with many drives open holds no more than with one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::Node;

/// Memory the cache holds at most, all tries together (nodes of local drives are a few
/// hundred bytes: some 50,000 of them).
pub(crate) const BUDGET: usize = 32 << 20;
/// What an entry costs beyond the node's heap: the node itself, its `Arc` and the LRU's
/// entry and table slot.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Node>() + 96;

/// Recently used decoded nodes by trie and seq, with their approximate sizes.
pub(crate) struct NodeCache {
    lru: lru::LruCache<(u64, u64), (Arc<Node>, usize)>,
    bytes: usize,
    budget: usize,
}

impl NodeCache {
    /// An empty cache holding at most about `budget` bytes.
    pub(crate) fn new(budget: usize) -> NodeCache {
        NodeCache {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    /// The node at `seq` of trie `trie`, if kept.
    pub(crate) fn get(&mut self, trie: u64, seq: u64) -> Option<Arc<Node>> {
        self.lru.get(&(trie, seq)).map(|(node, _)| node.clone())
    }

    /// Keeps `node` of trie `trie` (unless it alone would take a sixteenth of the budget:
    /// a trie from a peer may have nodes of up to 8 MiB). Returns the nodes it evicted,
    /// for the caller to free once the cache is unlocked.
    #[must_use]
    pub(crate) fn put(&mut self, trie: u64, node: Arc<Node>) -> Vec<Arc<Node>> {
        let size = node.heap_size() + ENTRY_OVERHEAD;
        let mut evicted = Vec::new();
        if size > self.budget / 16 {
            return evicted;
        }
        if let Some((old, old_size)) = self.lru.put((trie, node.seq), (node, size)) {
            self.bytes -= old_size;
            evicted.push(old);
        }
        self.bytes += size;
        while self.bytes > self.budget {
            match self.lru.pop_lru() {
                Some((_, (old, old_size))) => {
                    self.bytes -= old_size;
                    evicted.push(old);
                }
                None => break,
            }
        }
        evicted
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lru.len()
    }
}

static SHARED: LazyLock<Mutex<NodeCache>> = LazyLock::new(|| Mutex::new(NodeCache::new(BUDGET)));
static NEXT_TRIE: AtomicU64 = AtomicU64::new(1);

/// The process's cache.
pub(crate) fn shared() -> MutexGuard<'static, NodeCache> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A number no other trie opened in this process has: a trie's entries in the cache.
pub(crate) fn new_trie_id() -> u64 {
    NEXT_TRIE.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Buckets, Path};
    use bytes::Bytes;

    fn node(seq: u64, value: usize) -> Arc<Node> {
        Arc::new(Node {
            seq,
            path: Path::new(&format!("k{seq}"), false),
            value: Some(Bytes::from(vec![0u8; value])),
            flags: 0,
            buckets: Buckets::default(),
        })
    }

    #[test]
    fn the_cache_stays_within_its_budget_across_tries() {
        let budget = 1 << 20;
        let mut cache = NodeCache::new(budget);
        for seq in 1..=30_000 {
            let _ = cache.put(seq % 3, node(seq, 10));
        }
        assert!(cache.bytes <= budget);
        assert!(cache.len() > 1000, "{} nodes kept", cache.len());
        assert!(cache.get(30_000 % 3, 30_000).is_some() && cache.get(1, 1).is_none());
        // Tries are told apart: the same seq of another trie is another node.
        assert!(cache.get(0, 29_999).is_none() && cache.get(2, 29_999).is_some());

        // A node too large to keep is not kept, and evicts nothing.
        let before = cache.len();
        assert!(cache.put(7, node(1, budget / 16)).is_empty());
        assert!(cache.get(7, 1).is_none());
        assert_eq!(cache.len(), before);

        // Large values take the budget with fewer nodes.
        for seq in 1..100 {
            let _ = cache.put(8, node(seq, budget / 20));
        }
        assert!(cache.bytes <= budget);
        assert!(cache.len() < 30);
        assert!(cache.get(8, 99).is_some());
        let counted: usize = cache.lru.iter().map(|(_, (_, size))| size).sum();
        assert_eq!(counted, cache.bytes);
    }
}
