//! Hyperdrive 10 (spec drive.md): a POSIX-like filesystem over a hypertrie of Stats (the
//! metadata feed) and a content feed holding file bytes, byte-compatible with JS
//! hyperdrive 10.21. A file is one contiguous run of content blocks its Stat points to.
//!
//! This first part covers creating and opening drives in a corestore, writing files (one
//! content block per written buffer, cut at 512 KiB), reading them, `lstat`/`stat`
//! (implicit directories included), `mkdir`, `symlink`/`readlink` and per-file
//! metadata. Writes through mounts, streams, handles, versions and downloads come next.

mod stat;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use corestore::{Core, Corestore};
use hypercore::{DiscoveryKey, Feed, PublicKey};
use hypertrie::{
    normalize_path, GetOptions, Hypertrie, ListOptions, MountListOptions, MountableTrie,
    OpenOptions, PutOptions,
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
    content: Core,
    /// Keeps the metadata feed open.
    _metadata: Core,
    options: DriveOptions,
    /// One writer at a time on the content feed, so that a file's blocks are contiguous.
    content_lock: Arc<tokio::sync::Mutex<()>>,
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
            content,
            _metadata: metadata,
            options,
            content_lock: Arc::default(),
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
        let key = key_of(path);
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
        let _guard = self.content_lock.lock().await;
        let content = self.content_feed();
        let (offset, byte_offset) = (content.len(), content.byte_len());
        content
            .append_batch(blocks)
            .await
            .map_err(|source| self.content_error(source))?;
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
        self.put_stat(&key, &stat).await?;
        Ok(stat)
    }

    /// The bytes of the file at `path` (through symlinks).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        let stat = self.stat(path).await?;
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
        let key = key_of(path);
        if let Some(stat) = self.node_stat(&key).await? {
            return Ok(stat);
        }
        let now = self.now();
        if key.is_empty() {
            return Ok(Stat::directory(0o755, now));
        }
        let one = ListOptions::default();
        let below = self.trie.trie().list(&key, one).await?;
        match below.into_iter().find(|n| n.key() != key) {
            Some(node) => {
                let child = decode_stat(&key, node.value.as_deref())?;
                Ok(Stat {
                    mode: S_IFDIR | 0o755,
                    linkname: None,
                    mount: None,
                    metadata: Vec::new(),
                    ..child
                })
            }
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// The Stat at `path`, following symlinks (relative targets from the link's directory).
    pub async fn stat(&self, path: &str) -> Result<Stat, Error> {
        let mut at = format!("/{}", key_of(path));
        for _ in 0..MAX_SYMLINKS {
            let stat = self.lstat(&at).await?;
            let Some(target) = stat.linkname.as_deref().filter(|_| stat.is_symlink()) else {
                return Ok(stat);
            };
            at = resolve_link(&at, target);
        }
        Err(Error::SymlinkLoop {
            path: path.to_string(),
        })
    }

    /// Creates a directory at `path` (parents are not created, as in JS).
    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> Result<Stat, Error> {
        let content = self.content_feed();
        let stat = Stat {
            offset: content.len(),
            byte_offset: content.byte_len(),
            ..Stat::directory(mode.unwrap_or(0o755), self.now())
        };
        self.create(path, stat).await
    }

    /// Creates a symlink at `path` pointing to `target` (stored as given, unixified).
    pub async fn symlink(&self, target: &str, path: &str) -> Result<Stat, Error> {
        let stat = Stat::symlink(&unixify(target), self.now());
        self.create(path, stat).await
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
        let key = key_of(path);
        let mut stat = self.node_stat(&key).await?.ok_or_else(|| Error::NotFound {
            path: path.to_string(),
        })?;
        stat.set_metadata(name, value);
        self.put_stat(&key, &stat).await?;
        Ok(stat)
    }

    /// Puts `stat` at `path` unless something is there.
    async fn create(&self, path: &str, stat: Stat) -> Result<Stat, Error> {
        let key = key_of(path);
        let value = Bytes::from(stat.encode_to_vec());
        let created = self
            .trie
            .trie()
            .put_if(&key, value, PutOptions::default(), |existing, _| {
                existing.is_none()
            })
            .await?;
        match created {
            Some(_) => Ok(stat),
            None => Err(Error::AlreadyExists {
                path: path.to_string(),
            }),
        }
    }

    async fn put_stat(&self, key: &str, stat: &Stat) -> Result<(), Error> {
        let value = Bytes::from(stat.encode_to_vec());
        self.trie
            .trie()
            .put(key, value, PutOptions::default())
            .await?;
        Ok(())
    }

    async fn node_stat(&self, key: &str) -> Result<Option<Stat>, Error> {
        let node = self.trie.trie().get(key, GetOptions::default()).await?;
        node.map(|n| decode_stat(key, n.value.as_deref()))
            .transpose()
    }

    fn content_error(&self, source: hypercore::Error) -> Error {
        Error::Content {
            key: self.content_key(),
            source,
        }
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
