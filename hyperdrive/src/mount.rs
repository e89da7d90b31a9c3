//! Mounts of other drives and raw hypercores (spec drive.md §9).

use bytes::Bytes;
use hypercore::PublicKey;
use hypertrie::{MountRecord, PutOptions};
use prost::Message;

use crate::path::key_of;
use crate::{trie_at, Drive, Error, Stat, StatMount};

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

/// A drive mounted in a drive (JS `getAllMounts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted, from the root of the drive asked.
    pub path: String,
    /// The mounted drive.
    pub key: PublicKey,
    /// The version it is pinned at, if it is.
    pub version: Option<u64>,
}

/// Which drive serves a path (JS `info(path)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The drive whose trie holds the path.
    pub drive: PublicKey,
    /// Where that drive is mounted, from the root of the drive asked (`""`: the root,
    /// it is the drive asked).
    pub mount_path: String,
    /// The path's key inside that drive.
    pub inner_path: String,
    /// Whether writes to the path are possible.
    pub writable: bool,
}

/// Mounts followed at most when listing mounts.
const MAX_MOUNT_DEPTH: usize = 16;

impl Drive {
    /// Mounts the drive (or with `options.hypercore`, the raw core) `key` at `path`, in
    /// the drive that owns `path`. A drive mount is a directory whose Stat names it,
    /// stored as mountable-hypertrie mounts; a core mount is a file of the core's blocks.
    pub async fn mount(
        &self,
        path: &str,
        key: PublicKey,
        options: MountOptions,
    ) -> Result<Stat, Error> {
        let (owner, trie, inner) = self.writable_owner(path).await?;
        // Anything there, a directory known only by what is below it included (JS's
        // `stat` finds it too).
        match self.lstat(path).await {
            Ok(_) => {
                return Err(Error::AlreadyExists {
                    path: path.to_string(),
                })
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let content = owner.content_feed().await?;
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
            let value = Bytes::from(stat.encode_to_vec());
            trie.put(&inner, value, PutOptions::default())
                .await
                .map_err(trie_at(path))?;
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
        trie.mount(&inner, record, Bytes::from(stat.encode_to_vec()))
            .await
            .map_err(trie_at(path))?;
        Ok(stat)
    }

    /// Removes the mount at `path` (a drive's both nodes, or a core's file).
    pub async fn unmount(&self, path: &str) -> Result<(), Error> {
        let (_, trie, inner) = self.writable_owner(path).await?;
        let stat = self.lstat(path).await?;
        match &stat.mount {
            Some(m) if m.hypercore == Some(true) => self.unlink(path).await,
            Some(_) => {
                trie.unmount(&inner).await.map_err(trie_at(path))?;
                Ok(())
            }
            None => Err(Error::WrongType {
                path: path.to_string(),
                reason: "is not a mount",
            }),
        }
    }

    /// The drives mounted in this drive, and with `recursive` in those, with their paths
    /// from this drive's root (hypercore mounts are plain files: not listed, as in JS).
    pub async fn mounts(&self, recursive: bool) -> Result<Vec<MountInfo>, Error> {
        let mut out = Vec::new();
        let mut todo = vec![(self.clone(), String::new(), 0)];
        let mut entered = 0;
        while let Some((drive, prefix, depth)) = todo.pop() {
            if depth > MAX_MOUNT_DEPTH {
                return Err(hypertrie::Error::MountLoop {
                    path: prefix,
                    depth,
                }
                .into());
            }
            let records = drive
                .trie
                .trie()
                .mounts()
                .await
                .map_err(trie_at(&format!("/{prefix}")))?;
            for record in records {
                let path = match prefix.as_str() {
                    "" => record.local_path.clone(),
                    p => format!("{p}/{}", record.local_path),
                };
                let key = PublicKey::from_slice(&record.key).map_err(|_| Error::BadStat {
                    path: format!("/{path}"),
                    reason: "its mount record's key is not a public key".into(),
                })?;
                let version = record.version.filter(|&v| v != 0);
                if recursive {
                    entered += 1;
                    if entered > hypertrie::MAX_MOUNTS_ENTERED {
                        let source = hypertrie::Error::TooManyMounts {
                            path: path.clone(),
                            limit: hypertrie::MAX_MOUNTS_ENTERED,
                        };
                        return Err(trie_at(&format!("/{path}"))(source));
                    }
                    let mounted = drive.drive_of_key(key).await?;
                    let mounted = match version {
                        Some(v) => mounted.checkout(v),
                        None => mounted,
                    };
                    todo.push((mounted, path.clone(), depth + 1));
                }
                out.push(MountInfo {
                    path: format!("/{path}"),
                    key,
                    version,
                });
            }
        }
        Ok(out)
    }

    /// Which drive serves `path`, and where it is mounted.
    pub async fn info(&self, path: &str) -> Result<PathInfo, Error> {
        let key = key_of(path);
        let (trie, inner) = self.trie.owner(&key).await.map_err(trie_at(path))?;
        let mount_path = key
            .strip_suffix(inner.as_str())
            .unwrap_or("")
            .trim_end_matches('/');
        Ok(PathInfo {
            drive: trie.feed().key(),
            mount_path: format!("/{mount_path}"),
            inner_path: format!("/{inner}"),
            writable: trie.writable(),
        })
    }
}
