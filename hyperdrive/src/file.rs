//! File contents (spec drive.md §4–5): writing a file as content blocks plus its Stat, and
//! reading it whole or as a byte range.

use bytes::Bytes;
use hypercore::PublicKey;
use hypertrie::{Hypertrie, PutOptions};
use prost::Message;

use crate::{Drive, Error, Stat, StatMount, MAX_BLOCK};

/// Attributes of a file being written; unset ones take JS's defaults.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Permission bits (default 0o644).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modified, ms (default now).
    pub mtime: Option<u64>,
    /// Changed, ms (default now).
    pub ctime: Option<u64>,
    /// Per-file metadata.
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl Drive {
    /// Writes `data` to `path` as one file (blocks of at most [`MAX_BLOCK`]; an empty file
    /// is one empty block, as in JS).
    pub async fn write_file(
        &self,
        path: &str,
        data: &[u8],
        options: WriteOptions,
    ) -> Result<Stat, Error> {
        self.write_chunks(path, [Bytes::copy_from_slice(data)], options)
            .await
    }

    /// Writes `chunks` to `path` as one file, each chunk its own content block (cut at
    /// [`MAX_BLOCK`]), as a JS write stream does with each `write()`.
    pub async fn write_chunks(
        &self,
        path: &str,
        chunks: impl IntoIterator<Item = Bytes>,
        options: WriteOptions,
    ) -> Result<Stat, Error> {
        let (owner, trie, key) = self.owner_of(path).await?;
        owner.write_blocks(&trie, &key, chunks, options).await
    }

    /// Appends `chunks` to this drive's content feed and puts their Stat at `key` of
    /// `trie` (this drive's trie, or a checkout of it, which refuses).
    async fn write_blocks(
        &self,
        trie: &Hypertrie,
        key: &str,
        chunks: impl IntoIterator<Item = Bytes>,
        options: WriteOptions,
    ) -> Result<Stat, Error> {
        if !trie.writable() {
            return Err(Error::NotWritable {
                path: format!("/{key}"),
            });
        }
        let mut blocks = Vec::new();
        for chunk in chunks {
            if chunk.is_empty() {
                continue;
            }
            let mut at = 0;
            while at < chunk.len() {
                let end = (at + MAX_BLOCK).min(chunk.len());
                blocks.push(chunk.slice(at..end));
                at = end;
            }
        }
        if blocks.is_empty() {
            blocks.push(Bytes::new());
        }
        let size = blocks.iter().map(|b| b.len() as u64).sum();
        let count = blocks.len() as u64;
        // Appended, or found already in the content feed (dedup.rs).
        let run = self.store_content(blocks).await?;
        let (offset, byte_offset) = (run.offset, run.byte_offset);
        let now = self.now();
        let mut stat = Stat {
            size,
            blocks: count,
            offset,
            byte_offset,
            uid: options.uid,
            gid: options.gid,
            mtime: options.mtime.unwrap_or(now),
            ctime: options.ctime.unwrap_or(now),
            ..Stat::file(options.mode.unwrap_or(0o644), now)
        };
        for (k, v) in options.metadata {
            stat.set_metadata(&k, Some(v));
        }
        let value = Bytes::from(stat.encode_to_vec());
        trie.put(key, value, PutOptions::default()).await?;
        Ok(stat)
    }

    /// The bytes of the file at `path` (through symlinks).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        let (stat, trie) = self.stat_located(path).await?;
        if let Some(mount) = stat.mount.as_ref().filter(|m| m.hypercore == Some(true)) {
            return self.read_core(path, mount).await;
        }
        self.drive_of(&trie).await?.read_content(path, &stat).await
    }

    /// `length` bytes (all, with `None`) of the file at `path` from byte `start`, fetched
    /// as a stream of block slices: the first block is found by seeking the content feed
    /// (no earlier block is read), and the blocks of the range are requested from peers
    /// in order up front, as a JS read stream does.
    pub async fn read_range(
        &self,
        path: &str,
        start: u64,
        length: Option<u64>,
    ) -> Result<impl futures::Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
        let (stat, trie) = self.stat_located(path).await?;
        if stat.is_dir() {
            return Err(Error::WrongType {
                path: path.to_string(),
                reason: "is a directory",
            });
        }
        let owner = self.drive_of(&trie).await?;
        let length = length
            .unwrap_or(u64::MAX)
            .min(stat.size.saturating_sub(start));
        let content = owner.content().await?.clone();
        let feed = content.feed().clone();
        let end_block = stat.offset + stat.blocks;
        let (first, skip) = if length == 0 {
            (end_block, 0)
        } else {
            let at = stat.byte_offset + start;
            feed.seek(at, None)
                .await
                .map_err(|source| owner.content_error(source))?
        };
        let range = hypercore_replication::DownloadRange {
            start: first,
            end: Some(end_block),
            linear: true,
            priority: 1,
        };
        // Held while the stream lives: dropping the stream cancels the prefetch.
        let prefetch = (first < end_block).then(|| content.download(range));
        let drive = owner.key();
        let state = (feed, first, skip as usize, length, prefetch);
        Ok(futures::stream::unfold(
            state,
            move |(feed, index, skip, left, prefetch)| async move {
                if left == 0 || index >= end_block {
                    return None;
                }
                match feed.get(index).await {
                    Ok(block) => {
                        let mut chunk = block.slice(skip.min(block.len())..);
                        chunk.truncate(left.min(chunk.len() as u64) as usize);
                        let left = left - chunk.len() as u64;
                        Some((Ok(chunk), (feed, index + 1, 0, left, prefetch)))
                    }
                    Err(source) => {
                        let error = Error::Content { drive, source };
                        Some((Err(error), (feed, end_block, 0, 0, prefetch)))
                    }
                }
            },
        ))
    }

    /// The whole mounted core `mount`, block after block (a hypercore mount reads as one
    /// file; its Stat's offsets are not used, as in JS).
    async fn read_core(&self, path: &str, mount: &StatMount) -> Result<Vec<u8>, Error> {
        let key = PublicKey::from_slice(&mount.key).map_err(|_| Error::BadStat {
            path: path.to_string(),
            reason: "its mount's key is not a public key".into(),
        })?;
        let core = self.store.get_by_key(key).await.map_err(|e| Error::Store {
            what: format!("the core mounted at {path}"),
            source: Box::new(e),
        })?;
        let feed = core.feed();
        let end = mount
            .version
            .filter(|&v| v != 0)
            .unwrap_or_else(|| feed.len());
        let mut out = Vec::new();
        for index in 0..end.min(feed.len()) {
            let block = feed.get(index).await.map_err(|source| Error::MountedCore {
                key,
                path: path.to_string(),
                source: Box::new(source),
            })?;
            out.extend_from_slice(&block);
        }
        Ok(out)
    }

    /// The bytes `stat` points to in this drive's content feed.
    async fn read_content(&self, path: &str, stat: &Stat) -> Result<Vec<u8>, Error> {
        if stat.is_dir() {
            return Err(Error::WrongType {
                path: path.to_string(),
                reason: "is a directory",
            });
        }
        let content = self.content_feed().await?;
        let end = stat
            .offset
            .checked_add(stat.blocks)
            .filter(|&e| e <= content.len());
        let Some(end) = end else {
            return Err(Error::BadStat {
                path: path.to_string(),
                reason: format!(
                    "blocks {}..+{} are past the content feed's {} blocks",
                    stat.offset,
                    stat.blocks,
                    content.len()
                ),
            });
        };
        let mut out = Vec::with_capacity(stat.size as usize);
        for index in stat.offset..end {
            let block = content
                .get(index)
                .await
                .map_err(|source| self.content_error(source))?;
            out.extend_from_slice(&block);
        }
        out.truncate(stat.size as usize);
        Ok(out)
    }
}
