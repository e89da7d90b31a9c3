//! Hyperdrive 10 (spec drive.md): a POSIX-like filesystem over a hypertrie of Stats (the
//! metadata feed) and a content feed holding file bytes, byte-compatible with JS
//! hyperdrive 10.21. A file is one contiguous run of content blocks its Stat points to.
//!
//! This first part covers creating and opening drives in a corestore, writing files (one
//! content block per written buffer, cut at 512 KiB, into the drive that owns the path,
//! mounted or not), reading them, `lstat`/`stat` (implicit directories included),
//! `readdir`, `checkout`, `mkdir`, `symlink`/`readlink`, `unlink`, per-file metadata,
//! mounts of drives and raw cores, and tags. Streams, handles, diffs and downloads come
//! next.

mod stat;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use corestore::{Core, Corestore};
use hypercore::{DiscoveryKey, Feed, PublicKey};
use hypertrie::{
    normalize_path, GetOptions, Hypertrie, ListOptions, MountListOptions, MountRecord,
    MountableTrie, OpenOptions, PutOptions,
};
use prost::Message;

pub use stat::{MetadataEntry, Stat, StatMount, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// Largest content block: bigger buffers are cut (JS `hypercore-byte-stream`'s limit).
pub const MAX_BLOCK: usize = 512 << 10;
/// Header subtype of a drive's metadata trie.
pub const SUBTYPE: &str = "hyperdrive";
/// Symlinks followed at most when resolving a path.
const MAX_SYMLINKS: usize = 40;

/// What failed in a drive operation, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing at the path.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path.
        path: String,
    },
    /// Writing to a drive we cannot sign, or to a checkout.
    #[error("{path}: the drive is not writable here (not ours, or a checkout)")]
    NotWritable {
        /// The path.
        path: String,
    },
    /// Something is already at the path.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A file operation on a directory, or the reverse.
    #[error("{path}: {reason}")]
    WrongType {
        /// The path.
        path: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A Stat that does not decode, or points outside the content feed.
    #[error("{path}: bad metadata: {reason}")]
    BadStat {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Symlinks that lead round in circles.
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path.
        path: String,
    },
    /// The metadata trie failed.
    #[error(transparent)]
    Trie(#[from] hypertrie::Error),
    /// The content feed failed.
    #[error("content feed {key}: {source}")]
    Content {
        /// The content feed.
        key: PublicKey,
        /// Why.
        #[source]
        source: hypercore::Error,
    },
    /// The corestore could not open a feed of the drive.
    #[error("opening {what}: {source}")]
    Store {
        /// Which feed.
        what: String,
        /// Why.
        #[source]
        source: Box<corestore::Error>,
    },
}

/// Options of a drive.
#[derive(Clone, Copy, Debug, Default)]
pub struct DriveOptions {
    /// A frozen clock (ms since the epoch) for the times of new Stats; `None`: now.
    pub now: Option<u64>,
}

/// What to mount, and how (JS `mount(path, key, opts)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MountOptions {
    /// Pin the mounted drive (or core) at this version; `None` follows the latest.
    pub version: Option<u64>,
    /// Mount a raw hypercore (read as one file) rather than a drive.
    pub hypercore: bool,
    /// Owner of the mount point.
    pub uid: u32,
    /// Group of the mount point.
    pub gid: u32,
}

/// Hidden keys of tags: `hyperdrive-tags/<name>` = varint(version).
const TAGS: &str = "hyperdrive-tags";

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

/// A hyperdrive: its metadata trie and content feed, in a corestore. Cheap to clone.
#[derive(Clone)]
pub struct Drive {
    trie: MountableTrie,
    store: Corestore,
    content: Core,
    /// Keeps the metadata feed open.
    _metadata: Core,
    options: DriveOptions,
    /// Drives mounted here, opened when a write reaches them.
    mounted: Arc<Mutex<HashMap<PublicKey, Drive>>>,
}

impl Drive {
    /// The store's default drive (metadata = its default core), created if new.
    pub async fn default_drive(store: &Corestore, options: DriveOptions) -> Result<Drive, Error> {
        let metadata = store.default_core().await.map_err(|e| Error::Store {
            what: "the store's default core".into(),
            source: Box::new(e),
        })?;
        Drive::open(store, metadata, options).await
    }

    /// The drive whose metadata feed is `metadata`: a writable empty one gets its content
    /// feed (the store's core named `<hex metadata key>-content`) and header now; otherwise
    /// the content key is read from the header.
    pub async fn open(
        store: &Corestore,
        metadata: Core,
        options: DriveOptions,
    ) -> Result<Drive, Error> {
        let key = metadata.feed().key();
        let store_error = |e| Error::Store {
            what: format!("the content feed of drive {key}"),
            source: Box::new(e),
        };
        let feed = metadata.feed().clone();
        let (content, trie) = if feed.writable() && feed.is_empty() {
            let name = format!("{}-content", hypercore::crypto::to_hex(key.as_bytes()));
            let content = store
                .get_named(name.as_bytes())
                .await
                .map_err(store_error)?;
            let header = OpenOptions {
                metadata: Some(content.feed().key().as_bytes().to_vec()),
                subtype: Some(SUBTYPE.to_string()),
            };
            (content, Hypertrie::open(feed, header).await?)
        } else {
            let trie = Hypertrie::open(feed, OpenOptions::default()).await?;
            let header = trie.header().await?;
            let content_key = header
                .metadata
                .as_deref()
                .and_then(|k| PublicKey::from_slice(k).ok())
                .ok_or_else(|| Error::BadStat {
                    path: "/".into(),
                    reason: "the metadata header names no content feed".into(),
                })?;
            let content = store.get_by_key(content_key).await.map_err(store_error)?;
            (content, trie)
        };
        Ok(Drive {
            trie: MountableTrie::new(trie, store.clone()),
            store: store.clone(),
            content,
            _metadata: metadata,
            options,
            mounted: Arc::default(),
        })
    }

    /// The drive's key (its metadata feed's).
    pub fn key(&self) -> PublicKey {
        self.metadata().key()
    }

    /// The drive's discovery key.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.metadata().discovery_key()
    }

    /// The content feed's key.
    pub fn content_key(&self) -> PublicKey {
        self.content_feed().key()
    }

    /// A read-only view of the drive at `version` (its metadata blocks before it; content
    /// is reached through those Stats).
    pub fn checkout(&self, version: u64) -> Drive {
        Drive {
            trie: self.trie.checkout(version),
            ..self.clone()
        }
    }

    /// The names under the directory `path`, in trie hash order (not sorted): each direct
    /// child once (implicit directories included), or with `recursive` every entry's path
    /// relative to `path`, into mounted drives.
    pub async fn readdir(&self, path: &str, recursive: bool) -> Result<Vec<String>, Error> {
        let key = key_of(path);
        let options = MountListOptions {
            recursive,
            ..MountListOptions::default()
        };
        let mut names: Vec<String> = Vec::new();
        for entry in self.trie.list(&key, options).await? {
            let full = entry.node.key();
            let relative = if key.is_empty() {
                full
            } else {
                match full
                    .strip_prefix(key.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                {
                    Some(rest) => rest,
                    None => continue,
                }
            };
            let name = if recursive {
                relative
            } else {
                relative.split('/').next().unwrap_or(relative)
            };
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The version: the metadata feed's length.
    pub fn version(&self) -> u64 {
        self.trie.trie().version()
    }

    /// Whether this drive can be written.
    pub fn writable(&self) -> bool {
        self.trie.trie().writable()
    }

    /// The metadata feed.
    pub fn metadata(&self) -> &Feed {
        self.trie.trie().feed()
    }

    /// The content feed.
    pub fn content_feed(&self) -> &Feed {
        self.content.feed()
    }

    fn now(&self) -> u64 {
        self.options.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

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

    /// The drive whose metadata trie is `trie`: this one, or one mounted here.
    async fn drive_of(&self, trie: &Hypertrie) -> Result<Drive, Error> {
        let key = trie.feed().key();
        if key == self.key() {
            return Ok(self.clone());
        }
        let cached = self
            .mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(drive) = cached {
            return Ok(drive);
        }
        let metadata = self.store.get_by_key(key).await.map_err(|e| Error::Store {
            what: format!("the mounted drive {key}"),
            source: Box::new(e),
        })?;
        let drive = Drive::open(&self.store, metadata, self.options).await?;
        let mut mounted = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        Ok(mounted.entry(key).or_insert(drive).clone())
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
        // One atomic append: the file's blocks are contiguous, and where they start is
        // known exactly, whichever other handle appends to this feed meanwhile.
        let appended = self
            .content_feed()
            .append_batch_at(blocks)
            .await
            .map_err(|source| self.content_error(source))?;
        let (offset, byte_offset) = (appended.start, appended.start_byte);
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

    /// Mounts the drive (or with `options.hypercore`, the raw core) `key` at `path`. A
    /// drive mount is a directory whose Stat names it, stored as mountable-hypertrie
    /// mounts; a core mount is a file of the core's blocks.
    pub async fn mount(
        &self,
        path: &str,
        key: PublicKey,
        options: MountOptions,
    ) -> Result<Stat, Error> {
        let at = key_of(path);
        if self.node_stat(&at).await?.is_some() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        let content = self.content_feed();
        let mount = StatMount {
            key: key.as_bytes().to_vec(),
            version: options.version,
            hash: None,
            hypercore: Some(options.hypercore),
        };
        let now = self.now();
        if options.hypercore {
            let core = self.store.get_by_key(key).await.map_err(|e| Error::Store {
                what: format!("the core {key} to mount at {path}"),
                source: Box::new(e),
            })?;
            let stat = Stat {
                uid: options.uid,
                gid: options.gid,
                size: core.feed().byte_len(),
                blocks: core.feed().len(),
                offset: content.len(),
                byte_offset: content.byte_len(),
                mount: Some(mount),
                ..Stat::file(0o644, now)
            };
            let (_, trie, key) = self.owner_of(path).await?;
            let value = Bytes::from(stat.encode_to_vec());
            trie.put(&key, value, PutOptions::default()).await?;
            return Ok(stat);
        }
        let stat = Stat {
            uid: options.uid,
            gid: options.gid,
            offset: content.len(),
            byte_offset: content.byte_len(),
            mount: Some(mount),
            ..Stat::directory(0o755, now)
        };
        let record = MountRecord {
            key: key.as_bytes().to_vec(),
            local_path: String::new(),
            version: options.version,
            remote_path: None,
            hash: None,
        };
        self.trie
            .mount(&at, record, Bytes::from(stat.encode_to_vec()))
            .await?;
        Ok(stat)
    }

    /// Removes the entry at `path` (any kind; JS rewrites a neighbour, see the trie).
    pub async fn unlink(&self, path: &str) -> Result<(), Error> {
        match self.trie.del(&key_of(path)).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// Tags `version` (default: the current one) as `name`.
    pub async fn create_tag(&self, name: &str, version: Option<u64>) -> Result<(), Error> {
        let version = version.unwrap_or_else(|| self.version());
        let hidden = PutOptions {
            hidden: true,
            flags: 0,
        };
        let value = Bytes::copy_from_slice(&varint::encode(version));
        self.trie
            .trie()
            .put(&format!("{TAGS}/{name}"), value, hidden)
            .await?;
        Ok(())
    }

    /// The version tagged `name`, if any.
    pub async fn tagged_version(&self, name: &str) -> Result<Option<u64>, Error> {
        let hidden = GetOptions {
            hidden: true,
            ..GetOptions::default()
        };
        let node = self
            .trie
            .trie()
            .get(&format!("{TAGS}/{name}"), hidden)
            .await?;
        let value = node.and_then(|n| n.value);
        Ok(value.and_then(|v| varint::decode(&v).ok().map(|(version, _)| version)))
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
        let content = owner.content.clone();
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
        let key = feed.key();
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
                        let error = Error::Content { key, source };
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
            let block = feed
                .get(index)
                .await
                .map_err(|source| Error::Content { key, source })?;
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
        let content = self.content_feed();
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

    /// The Stat at `path`, not following a symlink there. A path with no node but keys
    /// below it is an implicit directory (JS copies a descendant's numbers into it).
    pub async fn lstat(&self, path: &str) -> Result<Stat, Error> {
        Ok(self.lstat_located(path).await?.0)
    }

    /// [`Self::lstat`], with the trie that holds the path (through mounts).
    async fn lstat_located(&self, path: &str) -> Result<(Stat, Hypertrie), Error> {
        let key = key_of(path);
        if let Some(found) = self.trie.get(&key).await? {
            let stat = decode_stat(&key, found.node.value.as_deref())?;
            return Ok((stat, found.trie));
        }
        let root = self.trie.trie().clone();
        let now = self.now();
        if key.is_empty() {
            return Ok((Stat::directory(0o755, now), root));
        }
        let (trie, inner) = self.trie.owner(&key).await?;
        let below = trie.list(&inner, ListOptions::default()).await?;
        match below.into_iter().find(|n| n.key() != inner) {
            Some(node) => {
                let child = decode_stat(&key, node.value.as_deref())?;
                let stat = Stat {
                    mode: S_IFDIR | 0o755,
                    linkname: None,
                    mount: None,
                    metadata: Vec::new(),
                    ..child
                };
                Ok((stat, trie))
            }
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// The Stat at `path`, following symlinks (relative targets from the link's directory).
    pub async fn stat(&self, path: &str) -> Result<Stat, Error> {
        Ok(self.stat_located(path).await?.0)
    }

    /// [`Self::stat`], with the trie that holds the final path.
    async fn stat_located(&self, path: &str) -> Result<(Stat, Hypertrie), Error> {
        let mut at = format!("/{}", key_of(path));
        for _ in 0..MAX_SYMLINKS {
            let (stat, trie) = self.lstat_located(&at).await?;
            let Some(target) = stat.linkname.as_deref().filter(|_| stat.is_symlink()) else {
                return Ok((stat, trie));
            };
            at = resolve_link(&at, target);
        }
        Err(Error::SymlinkLoop {
            path: path.to_string(),
        })
    }

    /// Creates a directory at `path` (parents are not created, as in JS).
    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> Result<Stat, Error> {
        let (owner, trie, key) = self.owner_of(path).await?;
        let content = owner.content_feed();
        let stat = Stat {
            offset: content.len(),
            byte_offset: content.byte_len(),
            ..Stat::directory(mode.unwrap_or(0o755), self.now())
        };
        create(&trie, &key, path, stat).await
    }

    /// Creates a symlink at `path` pointing to `target` (stored as given, unixified).
    pub async fn symlink(&self, target: &str, path: &str) -> Result<Stat, Error> {
        let stat = Stat::symlink(&unixify(target), self.now());
        let (_, trie, key) = self.owner_of(path).await?;
        create(&trie, &key, path, stat).await
    }

    /// The target of the symlink at `path`.
    pub async fn readlink(&self, path: &str) -> Result<String, Error> {
        let stat = self.lstat(path).await?;
        match stat.linkname {
            Some(target) if stat.is_symlink() => Ok(target),
            _ => Err(Error::WrongType {
                path: path.to_string(),
                reason: "is not a symbolic link",
            }),
        }
    }

    /// Sets (or with `None` removes) metadata `name` of the node at `path`.
    pub async fn set_metadata(
        &self,
        path: &str,
        name: &str,
        value: Option<Vec<u8>>,
    ) -> Result<Stat, Error> {
        // In the trie that holds the path, mounted or not.
        let (trie, key) = self.trie.owner(&key_of(path)).await?;
        let node = trie.get(&key, GetOptions::default()).await?;
        let Some(node) = node else {
            return Err(Error::NotFound {
                path: path.to_string(),
            });
        };
        let mut stat = decode_stat(&key, node.value.as_deref())?;
        stat.set_metadata(name, value);
        let value = Bytes::from(stat.encode_to_vec());
        let options = PutOptions {
            hidden: false,
            flags: node.flags,
        };
        trie.put(&key, value, options).await?;
        Ok(stat)
    }

    /// Puts `stat` at `path` unless something is there.
    /// The drive that owns `path` (this one, or one mounted here), its trie (a checkout's
    /// when this is one) and the path's key there.
    async fn owner_of(&self, path: &str) -> Result<(Drive, Hypertrie, String), Error> {
        let (trie, key) = self.trie.owner(&key_of(path)).await?;
        Ok((self.drive_of(&trie).await?, trie, key))
    }

    /// The Stat of the node at `key`, through mounts.
    async fn node_stat(&self, key: &str) -> Result<Option<Stat>, Error> {
        let found = self.trie.get(key).await?;
        found
            .map(|f| decode_stat(key, f.node.value.as_deref()))
            .transpose()
    }

    fn content_error(&self, source: hypercore::Error) -> Error {
        Error::Content {
            key: self.content_key(),
            source,
        }
    }
}

/// Puts `stat` at `key` of `trie` unless something is there (`path` names it in errors).
async fn create(trie: &Hypertrie, key: &str, path: &str, stat: Stat) -> Result<Stat, Error> {
    let value = Bytes::from(stat.encode_to_vec());
    let absent = |existing: Option<&hypertrie::Node>, _: &hypertrie::Node| existing.is_none();
    match trie
        .put_if(key, value, PutOptions::default(), absent)
        .await?
    {
        Some(_) => Ok(stat),
        None => Err(Error::AlreadyExists {
            path: path.to_string(),
        }),
    }
}

fn decode_stat(key: &str, value: Option<&[u8]>) -> Result<Stat, Error> {
    Stat::decode(value.unwrap_or_default()).map_err(|e| Error::BadStat {
        path: format!("/{key}"),
        reason: e.to_string(),
    })
}

/// The trie key of a drive path (JS `fixName`, then mountable-hypertrie's normalization).
pub fn key_of(path: &str) -> String {
    normalize_path(&format!("/{}", normalize_path(path)))
}

/// A path unixified as JS stores link targets: separators collapsed, no leading `/` lost.
fn unixify(path: &str) -> String {
    let key = normalize_path(path);
    if path.starts_with(['/', '\\']) {
        format!("/{key}")
    } else {
        key
    }
}

/// Where the symlink at `link` (absolute) pointing to `target` leads, as an absolute path.
fn resolve_link(link: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        String::new()
    } else {
        link.rsplit_once('/')
            .map(|(dir, _)| dir.to_string())
            .unwrap_or_default()
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}
