//! Entries (spec drive.md §6–7): Stats through symlinks and implicit directories,
//! listings, directories, symlinks, unlink and per-file metadata.

use bytes::Bytes;
use hypertrie::{GetOptions, Hypertrie, ListOptions, MountListOptions, PutOptions};
use prost::Message;

use crate::path::{key_of, resolve_link, unixify};
use crate::{Drive, Error, Stat, S_IFDIR};

/// Symlinks followed at most when resolving a path.
const MAX_SYMLINKS: usize = 40;

impl Drive {
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
    /// Removes the entry at `path` (any kind; JS rewrites a neighbour, see the trie).
    pub async fn unlink(&self, path: &str) -> Result<(), Error> {
        match self.trie.del(&key_of(path)).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }
    /// The Stat at `path`, not following a symlink there. A path with no node but keys
    /// below it is an implicit directory (JS copies a descendant's numbers into it).
    pub async fn lstat(&self, path: &str) -> Result<Stat, Error> {
        Ok(self.lstat_located(path).await?.0)
    }

    /// [`Self::lstat`], with the trie that holds the path (through mounts).
    pub(crate) async fn lstat_located(&self, path: &str) -> Result<(Stat, Hypertrie), Error> {
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
    pub(crate) async fn stat_located(&self, path: &str) -> Result<(Stat, Hypertrie), Error> {
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
        let content = owner.content_feed().await?;
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
}

/// Puts `stat` at `key` of `trie` unless something is there (`path` names it in errors).
pub(crate) async fn create(
    trie: &Hypertrie,
    key: &str,
    path: &str,
    stat: Stat,
) -> Result<Stat, Error> {
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

pub(crate) fn decode_stat(key: &str, value: Option<&[u8]>) -> Result<Stat, Error> {
    Stat::decode(value.unwrap_or_default()).map_err(|e| Error::BadStat {
        path: format!("/{key}"),
        reason: e.to_string(),
    })
}
