//! Content deduplication (beyond JS): a file whose bytes, cut into the same blocks, are
//! already in the content feed gets a Stat pointing at those blocks instead of a second
//! copy. JS Stats share blocks too (`copy`), so JS reads such a drive as any other.
//!
//! Candidates come from an index of the runs of blocks the drive's Stats point to, in every
//! version: the metadata feed is scanned from where the previous lookup stopped, so the
//! index is built by the first write that looks and kept current by the next ones. It is
//! keyed by size, so a file of a size no run has costs one map lookup; when sizes match,
//! the first block is hashed and looked up by the runs' first leaf hashes (each run's read
//! once), so files that share a size cost no more than one that does not. Equal blocks have
//! equal merkle leaf hashes, which the content feed stores: a candidate is confirmed by
//! comparing every leaf hash, never by reading its content.

use std::collections::BTreeSet;

use bytes::Bytes;
use hypercore::crypto::{leaf_hash, leaf_hashes, Hash};
use hypercore::{Feed, GetOptions};
use prost::Message;

use crate::{Drive, Error, Stat};

/// Runs indexed at most per drive (about 50 bytes each): past it, new runs are not indexed
/// and their content is appended again if written again.
const MAX_INDEXED: usize = 1 << 18;
/// Metadata blocks read and decoded per step of a scan.
const SCAN_STEP: u64 = 1024;

/// Where a file's content lies in the content feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Run {
    /// Index of the first block.
    pub offset: u64,
    /// Byte position of that block in the feed.
    pub byte_offset: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// Where a file's content is in the content feed: found there by
/// [`Drive::find_content`], or put there.
pub(crate) struct Stored {
    /// None until found or appended.
    pub run: Option<Run>,
    /// The first 8 bytes of the first block's leaf hash, when the lookup computed it.
    pub first_leaf: Option<u64>,
}

/// The runs of a drive's content feed that its Stats point to (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct ContentIndex {
    state: tokio::sync::Mutex<IndexState>,
}

#[derive(Debug, Default)]
struct IndexState {
    /// Metadata blocks scanned so far.
    scanned: u64,
    /// Runs whose first leaf hash has not been read yet, by (size, blocks, offset).
    unread: BTreeSet<(u64, u64, u64)>,
    /// Runs by (size, blocks, the first 8 bytes of their first leaf hash, offset): a
    /// lookup finds the few that may hold a file without going through every run of its
    /// size (many files share a size).
    runs: BTreeSet<(u64, u64, u64, u64)>,
}

impl IndexState {
    fn len(&self) -> usize {
        self.unread.len() + self.runs.len()
    }

    /// Whether some run has `size` bytes in `blocks` blocks.
    fn has_size(&self, size: u64, blocks: u64) -> bool {
        self.unread
            .range((size, blocks, 0)..=(size, blocks, u64::MAX))
            .next()
            .is_some()
            || self
                .runs
                .range((size, blocks, 0, 0)..=(size, blocks, u64::MAX, u64::MAX))
                .next()
                .is_some()
    }
}

/// Indexed runs of the size, block count and first block looked for, which may hold the
/// content: their offsets.
#[derive(Debug, Default)]
pub(crate) struct Candidates(Vec<u64>);

impl Candidates {
    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn prefix(hash: &Hash) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(bytes)
}

/// First blocks hashed right here rather than on the blocking pool up to this size (a
/// hop costs more than hashing a few KiB).
const INLINE_HASH: usize = 16 << 10;
/// First leaves of new runs read right here rather than on the blocking pool up to this
/// many (each a small read of the tree file, nearly always in the page cache).
const INLINE_LEAVES: usize = 4;
/// Metadata blocks read right here rather than in one blocking call up to this many.
const INLINE_SCAN: u64 = 16;

impl Drive {
    /// Looks for `blocks`, a file's content, in the content feed (unless
    /// [`crate::DriveOptions::no_dedup`]).
    pub(crate) async fn find_content(&self, blocks: &[Bytes]) -> Result<Stored, Error> {
        let count = blocks.len() as u64;
        let mut found = Stored {
            run: None,
            first_leaf: None,
        };
        if self.options.no_dedup {
            return Ok(found);
        }
        let size = blocks.iter().map(|b| b.len() as u64).sum();
        if !self.may_hold(size, count).await? {
            return Ok(found);
        }
        let first = blocks.first().cloned().unwrap_or_default();
        let first = if first.len() <= INLINE_HASH {
            leaf_hash(&first)
        } else {
            blocking(move || leaf_hash(&first)).await?
        };
        found.first_leaf = Some(prefix(&first));
        let candidates = self.candidates(size, count, &first).await?;
        if !candidates.is_empty() {
            let data = blocks.to_vec();
            let hashes = blocking(move || {
                let mut hashes = Vec::with_capacity(data.len());
                leaf_hashes(&data, &mut hashes);
                hashes
            })
            .await?;
            found.run = self.confirm(candidates, hashes).await?;
        }
        Ok(found)
    }

    /// Appends `blocks`, the content of the file at `path`, to the content feed as one
    /// batch, unless `found` found them there: where they are.
    pub(crate) async fn store_content(
        &self,
        path: &str,
        blocks: Vec<Bytes>,
        found: &mut Stored,
    ) -> Result<Run, Error> {
        if let Some(run) = found.run {
            return Ok(run);
        }
        let count = blocks.len() as u64;
        let feed = self.content_feed().await?;
        // One atomic append: where the file starts is known exactly whoever else appends.
        // The writer lock keeps it out of the middle of a file written in several batches.
        let _writer = feed.lock_writer().await;
        let appended = feed
            .append_batch_at(blocks)
            .await
            .map_err(|source| self.content_write_error(path, source))?;
        let run = Run {
            offset: appended.start,
            byte_offset: appended.start_byte,
            blocks: count,
        };
        found.run = Some(run);
        Ok(run)
    }

    /// An error appending the content of the file at `path`.
    pub(crate) fn content_write_error(&self, path: &str, source: hypercore::Error) -> Error {
        Error::ContentWrite {
            path: path.to_string(),
            drive: self.key(),
            source: Box::new(source),
        }
    }

    /// Indexes the file of `size` bytes just `stored` and put as metadata block `seq`,
    /// as the next scan would, without reading the block back (nor, when the lookup
    /// hashed it, the run's first leaf): when the index has scanned up to `seq`.
    pub(crate) async fn note_written(&self, seq: u64, size: u64, stored: &Stored) {
        let Some(Run { offset, blocks, .. }) = stored.run else {
            return;
        };
        if self.options.no_dedup {
            return;
        }
        let mut state = self.dedup.state.lock().await;
        if state.scanned != seq || state.len() >= MAX_INDEXED {
            return;
        }
        match stored.first_leaf {
            Some(first) => state.runs.insert((size, blocks, first, offset)),
            None => state.unread.insert((size, blocks, offset)),
        };
        state.scanned = seq + 1;
    }

    /// Whether some indexed run has `size` bytes in `blocks` blocks (after catching the
    /// index up with the metadata feed): if not, no run can hold the content.
    pub(crate) async fn may_hold(&self, size: u64, blocks: u64) -> Result<bool, Error> {
        let mut state = self.dedup.state.lock().await;
        self.scan(&mut state).await?;
        Ok(state.has_size(size, blocks))
    }

    /// The indexed runs of `size` bytes in `blocks` blocks whose first block hashes to
    /// `first`, after catching the index up with the metadata feed.
    pub(crate) async fn candidates(
        &self,
        size: u64,
        blocks: u64,
        first: &Hash,
    ) -> Result<Candidates, Error> {
        let content = self.content_feed().await?.clone();
        let mut state = self.dedup.state.lock().await;
        self.scan(&mut state).await?;
        // First leaves not read yet are read now, once; a run whose first leaf cannot be
        // read (a bad Stat, a cleared block) leaves the index.
        let unread: Vec<(u64, u64, u64)> = state
            .unread
            .range((size, blocks, 0)..=(size, blocks, u64::MAX))
            .copied()
            .collect();
        let read_first = move |unread: Vec<(u64, u64, u64)>| {
            unread
                .into_iter()
                .map(|run| {
                    // A hostile Stat's offset may sit at the end of the numbers.
                    let leaves = run
                        .2
                        .checked_add(1)
                        .and_then(|end| content.leaves(run.2, end).ok());
                    (run, leaves.and_then(|l| l.first().map(|l| prefix(&l.hash))))
                })
                .collect::<Vec<_>>()
        };
        let firsts = if unread.len() <= INLINE_LEAVES {
            read_first(unread)
        } else {
            blocking(move || read_first(unread)).await?
        };
        for ((size, blocks, offset), first) in firsts {
            state.unread.remove(&(size, blocks, offset));
            if let Some(first) = first {
                state.runs.insert((size, blocks, first, offset));
            }
        }
        let p = prefix(first);
        Ok(Candidates(
            state
                .runs
                .range((size, blocks, p, 0)..=(size, blocks, p, u64::MAX))
                .map(|&(_, _, _, offset)| offset)
                .collect(),
        ))
    }

    /// The first of `candidates` whose blocks hash to `hashes` and are stored here, with
    /// its byte offset (from the tree's roots, not from a Stat).
    pub(crate) async fn confirm(
        &self,
        candidates: Candidates,
        hashes: Vec<Hash>,
    ) -> Result<Option<Run>, Error> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let content = self.content_feed().await?.clone();
        blocking(move || {
            let blocks = hashes.len() as u64;
            candidates.0.iter().find_map(|&offset| {
                let end = offset.checked_add(blocks)?;
                if !content.has_range(offset, end) {
                    return None;
                }
                let leaves = content.leaves(offset, end).ok()?;
                let equal = leaves.len() == hashes.len()
                    && leaves.iter().zip(&hashes).all(|(l, h)| l.hash == *h);
                if !equal {
                    return None;
                }
                let byte_offset = match offset {
                    0 => 0,
                    _ => content
                        .root_hashes(offset - 1)
                        .ok()?
                        .iter()
                        .map(|r| r.size)
                        .sum(),
                };
                Some(Run {
                    offset,
                    byte_offset,
                    blocks,
                })
            })
        })
        .await
    }

    /// Reads the metadata blocks not scanned yet and indexes the runs of their file Stats.
    async fn scan(&self, state: &mut IndexState) -> Result<(), Error> {
        let metadata = self.metadata().clone();
        let length = metadata.len();
        state.scanned = state.scanned.max(1);
        while state.scanned < length {
            let (start, end) = (state.scanned, length.min(state.scanned + SCAN_STEP));
            let blocks =
                read_stored(&metadata, start, end)
                    .await
                    .map_err(|source| Error::Content {
                        drive: self.key(),
                        source,
                    })?;
            let runs = if blocks.len() as u64 > INLINE_SCAN {
                blocking(move || file_runs(&blocks)).await?
            } else {
                file_runs(&blocks)
            };
            for ((size, offset), blocks) in runs {
                if state.len() < MAX_INDEXED {
                    state.unread.insert((size, blocks, offset));
                }
            }
            state.scanned = end;
        }
        Ok(())
    }
}

/// The stored blocks of `[start, end)` with their indexes (missing ones are left out).
async fn read_stored(
    feed: &Feed,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, Bytes)>, hypercore::Error> {
    // A few blocks are read one by one, right here (a blocking call costs more).
    if end - start > INLINE_SCAN && feed.has_range(start, end) {
        let blocks = feed.get_batch(start, end).await?;
        return Ok((start..end).zip(blocks).collect());
    }
    let mut out = Vec::new();
    for index in start..end {
        match feed.get_with(index, GetOptions::no_wait()).await {
            Ok(block) => out.push((index, block)),
            Err(hypercore::Error::NotAvailable { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The (size, offset) and block count of each regular file's Stat among metadata blocks.
/// Anything else (hidden keys, mounts, directories, blocks that are not trie nodes or
/// Stats) is not content to share, and is passed over.
fn file_runs(blocks: &[(u64, Bytes)]) -> Vec<((u64, u64), u64)> {
    blocks
        .iter()
        .filter_map(|(seq, block)| {
            let node = hypertrie::Node::decode(*seq, block).ok()?;
            if node.hidden() || node.is_reset() {
                return None;
            }
            let stat = Stat::decode(node.value?).ok()?;
            let file = stat.is_file() && stat.mount.is_none() && stat.blocks > 0;
            file.then_some(((stat.size, stat.offset), stat.blocks))
        })
        .collect()
}

/// Runs `f` on the blocking pool (hashing and reading trees are CPU and disk work).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task {
            reason: e.to_string(),
        })
}
