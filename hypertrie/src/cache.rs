//! Decoded nodes kept for every trie of the process, within one memory budget. Every
//! lookup walks down from the head through the same upper nodes, and a listing followed
//! by lookups of what it listed reads the same nodes twice: reading and decoding them
//! again each time was most of their cost. One budget for the process rather than one
//! per trie, so that a daemon with many drives open holds no more than with one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use bytes::Bytes;

use crate::Node;

/// Memory the cache holds at most, all tries together (nodes of local drives are a few
/// hundred bytes: some 50,000 of them).
pub(crate) const BUDGET: usize = 32 << 20;
/// What an entry costs beyond the node's heap: the node itself, its `Arc` and the LRU's
/// entry and table slot.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Node>() + 96;

/// Blocks a listing reads with one call: the aligned run of this many around a block
/// it needs (a recursive listing needs most blocks of the feed, in no useful order).
pub(crate) const RUN_BLOCKS: u64 = 64;
/// And at most about this many bytes.
pub(crate) const RUN_BYTES: u64 = 64 << 10;

/// An entry: a decoded node, or the blocks of a run read for a listing (decoded and
/// kept as nodes when the listing gets to them; the run goes when it is least used).
enum Cached {
    Node(Arc<Node>),
    Run(Arc<Vec<Bytes>>),
}

/// What an entry is: trie, seq (the run's first seq) and whether it is a run.
type Key = (u64, u64, bool);

/// Recently used decoded nodes and runs of blocks by trie and seq, with their
/// approximate sizes.
pub(crate) struct NodeCache {
    lru: lru::LruCache<Key, (Cached, usize)>,
    bytes: usize,
    budget: usize,
}

/// What a [`NodeCache`] let go, to be freed once it is unlocked.
#[must_use]
pub(crate) struct Evicted(Vec<Cached>);

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
        match self.lru.get(&(trie, seq, false)) {
            Some((Cached::Node(node), _)) => Some(node.clone()),
            _ => None,
        }
    }

    /// Block `seq` of trie `trie`, if a kept run holds it.
    pub(crate) fn run_block(&mut self, trie: u64, seq: u64) -> Option<Bytes> {
        let start = seq - seq % RUN_BLOCKS;
        match self.lru.get(&(trie, start, true)) {
            Some((Cached::Run(blocks), _)) => blocks.get((seq - start) as usize).cloned(),
            _ => None,
        }
    }

    /// Keeps `node` of trie `trie` (unless it alone would take a sixteenth of the budget:
    /// a trie from a peer may have nodes of up to 8 MiB).
    pub(crate) fn put(&mut self, trie: u64, node: Arc<Node>) -> Evicted {
        let size = node.heap_size() + ENTRY_OVERHEAD;
        self.insert((trie, node.seq, false), Cached::Node(node), size)
    }

    /// Keeps the blocks of trie `trie` from `start` on (a multiple of [`RUN_BLOCKS`]).
    pub(crate) fn put_run(&mut self, trie: u64, start: u64, blocks: Vec<Bytes>) -> Evicted {
        let size = blocks.iter().map(Bytes::len).sum::<usize>()
            + std::mem::size_of::<Bytes>() * blocks.len()
            + ENTRY_OVERHEAD;
        self.insert((trie, start, true), Cached::Run(Arc::new(blocks)), size)
    }

    fn insert(&mut self, key: Key, value: Cached, size: usize) -> Evicted {
        let mut evicted = Evicted(Vec::new());
        if size > self.budget / 16 {
            return evicted;
        }
        if let Some((old, old_size)) = self.lru.put(key, (value, size)) {
            self.bytes -= old_size;
            evicted.0.push(old);
        }
        self.bytes += size;
        while self.bytes > self.budget {
            match self.lru.pop_lru() {
                Some((_, (old, old_size))) => {
                    self.bytes -= old_size;
                    evicted.0.push(old);
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
            drop(cache.put(seq % 3, node(seq, 10)));
        }
        assert!(cache.bytes <= budget);
        assert!(cache.len() > 1000, "{} nodes kept", cache.len());
        assert!(cache.get(30_000 % 3, 30_000).is_some() && cache.get(1, 1).is_none());
        // Tries are told apart: the same seq of another trie is another node.
        assert!(cache.get(0, 29_999).is_none() && cache.get(2, 29_999).is_some());

        // A node too large to keep is not kept, and evicts nothing.
        let before = cache.len();
        assert!(cache.put(7, node(1, budget / 16)).0.is_empty());
        assert!(cache.get(7, 1).is_none());
        assert_eq!(cache.len(), before);

        // Large values take the budget with fewer nodes.
        for seq in 1..100 {
            drop(cache.put(8, node(seq, budget / 20)));
        }
        assert!(cache.bytes <= budget);
        assert!(cache.len() < 30);
        assert!(cache.get(8, 99).is_some());
        let counted: usize = cache.lru.iter().map(|(_, (_, size))| size).sum();
        assert_eq!(counted, cache.bytes);
    }

    #[test]
    fn runs_hand_out_their_blocks_and_count_in_the_budget() {
        let mut cache = NodeCache::new(1 << 20);
        let blocks: Vec<Bytes> = (0..10u8).map(|b| Bytes::from(vec![b; 100])).collect();
        drop(cache.put_run(1, RUN_BLOCKS, blocks));
        assert_eq!(cache.run_block(1, RUN_BLOCKS + 3).unwrap()[0], 3);
        // Past the run's end, in another run, of another trie, or as a node: nothing.
        assert!(cache.run_block(1, RUN_BLOCKS + 10).is_none());
        assert!(cache.run_block(1, 3).is_none());
        assert!(cache.run_block(2, RUN_BLOCKS + 3).is_none());
        assert!(cache.get(1, RUN_BLOCKS).is_none());
        assert!(cache.bytes >= 1000);
        drop(cache.put(1, node(RUN_BLOCKS, 10)));
        assert!(cache.get(1, RUN_BLOCKS).is_some() && cache.run_block(1, RUN_BLOCKS).is_some());
    }
}
