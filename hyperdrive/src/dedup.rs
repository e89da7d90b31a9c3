//! Content deduplication (beyond JS): a file whose bytes, cut into the same blocks, are
//! already in the content feed gets a Stat pointing at those blocks instead of a second
//! copy. JS Stats share blocks too (`copy`), so JS reads such a drive as any other.
//!
//! Candidates come from an index of the runs of blocks the drive's Stats point to, in every
//! version: the metadata feed is scanned from where the previous lookup stopped, so the
//! index is built by the first write that looks and kept current by the next ones. It is
//! keyed by size, so a file of a size no run has costs one map lookup; when sizes match,
//! the first block is hashed and compared with the run's first leaf hash. Equal blocks have
//! equal merkle leaf hashes, which the content feed stores: a candidate is confirmed by
//! comparing every leaf hash, never by reading its content.

use std::collections::BTreeMap;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// Index of the first block.
    pub offset: u64,
    /// Byte position of that block in the feed.
    pub byte_offset: u64,
    /// Number of blocks.
    pub blocks: u64,
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
    /// By (size, offset): the run's blocks, and its first leaf hash's first 8 bytes once
    /// read.
    runs: BTreeMap<(u64, u64), (u64, Option<u64>)>,
}

/// Indexed runs of the size and block count looked for, which may hold the content.
#[derive(Debug, Default)]
pub(crate) struct Candidates(Vec<(u64, u64)>);

impl Candidates {
    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps the runs whose first block hashes to `first`.
    pub fn retain_first(&mut self, first: &Hash) {
        let prefix = prefix(first);
        self.0.retain(|&(_, p)| p == prefix);
    }
}

fn prefix(hash: &Hash) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(bytes)
}

impl Drive {
    /// Puts the content of the file at `path`, `blocks`, in the content feed: finds it
    /// there already (unless [`crate::DriveOptions::no_dedup`]), or appends it as one
    /// batch.
    pub(crate) async fn store_content(&self, path: &str, blocks: Vec<Bytes>) -> Result<Run, Error> {
        let count = blocks.len() as u64;
        if !self.options.no_dedup {
            let size = blocks.iter().map(|b| b.len() as u64).sum();
            let mut candidates = self.candidates(size, count).await?;
            if !candidates.is_empty() {
                let data = blocks.clone();
                let hashes = blocking(move || {
                    candidates.retain_first(&leaf_hash(data.first().map_or(&[][..], |b| b)));
                    let mut hashes = Vec::with_capacity(data.len());
                    if !candidates.is_empty() {
                        leaf_hashes(&data, &mut hashes);
                    }
                    (candidates, hashes)
                });
                let (candidates, hashes) = hashes.await?;
                if let Some(run) = self.confirm(candidates, hashes).await? {
                    return Ok(run);
                }
            }
        }
        let feed = self.content_feed().await?;
        // One atomic append: where the file starts is known exactly whoever else appends.
        // The writer lock keeps it out of the middle of a file written in several batches.
        let _writer = feed.lock_writer().await;
        let appended =
            feed.append_batch_at(blocks)
                .await
                .map_err(|source| Error::ContentWrite {
                    path: path.to_string(),
                    drive: self.key(),
                    source: Box::new(source),
                })?;
        Ok(Run {
            offset: appended.start,
            byte_offset: appended.start_byte,
            blocks: count,
        })
    }

    /// The indexed runs of `size` bytes in `blocks` blocks, after catching the index up
    /// with the metadata feed.
    pub(crate) async fn candidates(&self, size: u64, blocks: u64) -> Result<Candidates, Error> {
        let content = self.content_feed().await?.clone();
        let mut state = self.dedup.state.lock().await;
        self.scan(&mut state).await?;
        let runs: Vec<(u64, Option<u64>)> = state
            .runs
            .range((size, 0)..=(size, u64::MAX))
            .filter(|(_, &(b, _))| b == blocks)
            .map(|(&(_, offset), &(_, first))| (offset, first))
            .collect();
        if runs.is_empty() {
            return Ok(Candidates::default());
        }
        // First leaves not read yet are read now, once; a run whose first leaf cannot be
        // read (a bad Stat, a cleared block) leaves the index.
        let firsts = blocking(move || {
            runs.into_iter()
                .map(|(offset, first)| {
                    let first = first.or_else(|| {
                        let leaves = content.leaves(offset, offset.checked_add(1)?).ok()?;
                        leaves.first().map(|l| prefix(&l.hash))
                    });
                    (offset, first)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        let mut found = Vec::new();
        for (offset, first) in firsts {
            match first {
                Some(first) => {
                    state.runs.insert((size, offset), (blocks, Some(first)));
                    found.push((offset, first));
                }
                None => {
                    state.runs.remove(&(size, offset));
                }
            }
        }
        Ok(Candidates(found))
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
            candidates.0.iter().find_map(|&(offset, _)| {
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
            let runs = if blocks.len() > 16 {
                blocking(move || file_runs(&blocks)).await?
            } else {
                file_runs(&blocks)
            };
            for (key, blocks) in runs {
                if state.runs.len() < MAX_INDEXED || state.runs.contains_key(&key) {
                    state.runs.entry(key).or_insert((blocks, None));
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
    if feed.has_range(start, end) {
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
