//! The trie's nodes in feed order (spec trie.md §6.6, JS `lib/history.js`): block by
//! block between two seqs, forwards or backwards, optionally following new blocks as they
//! are appended or replicated. Each block is read on its own, so a sparse feed fetches
//! only the blocks the history reaches.

use std::ops::Bound;

use futures::Stream;

use crate::{Error, Hypertrie, Node};

/// Options of [`Hypertrie::history`] (JS `history({gte, gt, lte, lt, reverse, live})`).
#[derive(Clone, Copy, Debug)]
pub struct HistoryOptions {
    /// The first seq: `Included(n)` is JS `gte: n`, `Excluded(n)` is `gt: n`. Unbounded
    /// (and anything below 1, the header) starts at seq 1.
    pub start: Bound<u64>,
    /// The last seq: `Included(n)` is JS `lte: n`, `Excluded(n)` is `lt: n`. Unbounded:
    /// the head of this version, or no end at all when `live`.
    pub end: Bound<u64>,
    /// Newest first (from the end down to the start). A reversed history is never live.
    pub reverse: bool,
    /// Keep following the feed past its current length, waiting for each next block to be
    /// appended here or replicated from a peer. The stream then ends only at `end` (JS
    /// ignores `lte` when live), on an error, or when dropped.
    pub live: bool,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            reverse: false,
            live: false,
        }
    }
}

/// Where a history stream stands.
struct Cursor {
    trie: Hypertrie,
    /// The next seq to read going forwards, or the lowest seq still to read backwards.
    low: u64,
    /// The highest seq still to read (`u64::MAX` for a live history without an end).
    high: u64,
    reverse: bool,
}

impl Hypertrie {
    /// The nodes of this version's blocks between `options.start` and `options.end`, in
    /// feed order (or reversed), as JS `history` reads them: one block at a time, so a
    /// sparse feed fetches only those blocks. A live history follows the feed (also from
    /// a checkout) and waits for blocks not written yet.
    ///
    /// Every block is yielded, reset nodes too ([`Node::is_reset`]: a delete of the last
    /// key): JS ends its history at a reset node instead (its `getBySeq` reads one as "no
    /// node", which ends the iterator), and yields nothing at all when the head is one.
    /// The stream ends after an error.
    pub fn history(&self, options: HistoryOptions) -> impl Stream<Item = Result<Node, Error>> {
        let low = match options.start {
            Bound::Unbounded => 1,
            Bound::Included(n) => n,
            Bound::Excluded(n) => n.saturating_add(1),
        }
        .max(1);
        let end = match options.end {
            Bound::Unbounded => None,
            Bound::Included(n) => Some(n),
            // `lt: 0` and `lt: 1` leave nothing: no seq below 1 is a node.
            Bound::Excluded(n) => Some(n.saturating_sub(1)),
        };
        let live = options.live && !options.reverse;
        let (trie, high) = if live {
            let latest = Hypertrie {
                version: None,
                ..self.clone()
            };
            (latest, end.unwrap_or(u64::MAX))
        } else {
            // The head of this version; an empty trie (version 1) has none.
            let head = self.version().checked_sub(1).filter(|&h| h > 0);
            let high = match (head, end) {
                (Some(head), Some(end)) => Some(head.min(end)),
                (head, _) => head,
            };
            (self.clone(), high.unwrap_or(0))
        };
        let cursor = Cursor {
            trie,
            low,
            high,
            reverse: options.reverse,
        };
        futures::stream::try_unfold(cursor, |mut cursor| async move {
            if cursor.low > cursor.high {
                return Ok(None);
            }
            let seq = if cursor.reverse {
                cursor.high
            } else {
                cursor.low
            };
            // A live history past the feed's length waits for the block to be appended or
            // to arrive from a peer (the feed asks its peers for the longer length).
            let feed = cursor.trie.feed();
            if seq >= feed.len() {
                feed.update(Some(seq + 1), None)
                    .await
                    .map_err(|source| cursor.trie.feed_error(source))?;
            }
            // Seq after seq: blocks are read in runs, as for a listing.
            let node = Node::clone(&*cursor.trie.load(seq, true).await?);
            if cursor.reverse {
                // `high >= low >= 1` here, so this cannot wrap.
                cursor.high -= 1;
            } else {
                cursor.low = cursor.low.saturating_add(1);
            }
            Ok(Some((node, cursor)))
        })
    }

    /// A checkout at the current version: later writes do not change what it reads.
    pub fn snapshot(&self) -> Hypertrie {
        self.checkout(self.version())
    }
}
