//! Entries (spec drive.md §6–7): Stats through symlinks and implicit directories,
//! listings, directories, symlinks, unlink and per-file metadata.

use bytes::Bytes;
use hypertrie::{GetOptions, Hypertrie, ListOptions, MountListOptions, PutOptions};
use prost::Message;

use crate::path::{key_of, resolve_link, unixify};
use crate::{trie_at, Drive, Error, Stat, S_IFDIR};

/// Symlinks followed at most when resolving a path.
const MAX_SYMLINKS: usize = 40;

/// Options of [`Drive::readdir_stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReaddirOptions {
    /// Every entry below, by its path relative to the directory; else each direct child.
    pub recursive: bool,
    /// Do not list inside mounted drives (their mount points are listed).
    pub no_mounts: bool,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (with `recursive`, the path relative to the directory listed).
    pub name: String,
    /// Its Stat.
    pub stat: Stat,
}

/// The regular files of a drive version and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// The version counted.
    pub version: u64,
    /// Regular files.
    pub files: u64,
    /// Their sizes, summed.
    pub bytes: u64,
}

impl Drive {
    /// The regular files of this version and their sizes, drives and hypercores mounted in
    /// it not counted. Read from the metadata stored here: `None` when a metadata block of
    /// the version is missing (a sparse remote drive), which a walk would wait for peers
    /// to bring.
    pub async fn stored_totals(&self) -> Result<Option<Totals>, Error> {
        let trie = self.trie.trie();
        let version = trie.version();
        let mut totals = Totals {
            version,
            ..Totals::default()
        };
        if version < 2 {
            // The header at most: nothing to walk.
            return Ok(Some(totals));
        }
        if !trie.feed().has_range(0, version) {
            return Ok(None);
        }
        // At this version: what is appended meanwhile is not needed, so not waited for.
        let nodes = trie
            .checkout(version)
            .list("", ListOptions::default())
            .await
            .map_err(trie_at("/"))?;
        for node in nodes {
            // A value that is not a Stat is no file.
            let Ok(stat) = Stat::decode(node.value.as_deref().unwrap_or_default()) else {
                continue;
            };
            if stat.is_file() && stat.mount.is_none() {
                totals.files += 1;
                totals.bytes = totals.bytes.saturating_add(stat.size);
            }
        }
        Ok(Some(totals))
    }

    /// The names under the directory `path`, in trie hash order (not sorted): each direct
    /// child once (implicit directories included), or with `recursive` every entry's path
    /// relative to `path`, into mounted drives.
    pub async fn readdir(&self, path: &str, recursive: bool) -> Result<Vec<String>, Error> {
        let options = ReaddirOptions {
            recursive,
            no_mounts: false,
        };
        self.readdir_names(path, options).await
    }

    /// [`Self::readdir`] with every option (`no_mounts` leaves out what is inside mounted
    /// drives).
    pub async fn readdir_names(
        &self,
        path: &str,
        options: ReaddirOptions,
    ) -> Result<Vec<String>, Error> {
        let entries = self.list_entries(path, options, false).await?;
        Ok(entries.into_iter().map(|(name, _)| name).collect())
    }

    /// [`Self::readdir`] with each entry's Stat (JS `includeStats`). A child known only
    /// through deeper keys (an implicit directory) gets a directory Stat made as `lstat`
    /// makes it.
    pub async fn readdir_stats(
        &self,
        path: &str,
        options: ReaddirOptions,
    ) -> Result<Vec<DirEntry>, Error> {
        let entries = self.list_entries(path, options, true).await?;
        Ok(entries
            .into_iter()
            .map(|(name, stat)| DirEntry {
                name,
                stat: stat.unwrap_or_default(),
            })
            .collect())
    }

    /// The entries of [`Self::readdir_stats`], their Stats decoded only `with_stats` (a
    /// listing of names needs none, as in JS).
    async fn list_entries(
        &self,
        path: &str,
        options: ReaddirOptions,
        with_stats: bool,
    ) -> Result<Vec<(String, Option<Stat>)>, Error> {
        let key = key_of(path);
        let list = MountListOptions {
            recursive: options.recursive,
            no_mounts: options.no_mounts,
            ..MountListOptions::default()
        };
        let mut entries = Vec::new();
        let listed = self.trie.list(&key, list).await.map_err(trie_at(path))?;
        let mut seen = std::collections::HashSet::with_capacity(listed.len());
        for entry in &listed {
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
            let (name, deeper) = if options.recursive {
                (relative, false)
            } else {
                match relative.split_once('/') {
                    Some((first, _)) => (first, true),
                    None => (relative, false),
                }
            };
            if name.is_empty() || !seen.insert(name) {
                continue;
            }
            if !with_stats {
                entries.push((name.to_string(), None));
                continue;
            }
            let node_stat = decode_stat(full, entry.node.value.as_deref())?;
            let stat = if deeper {
                // The child itself may have a node of its own (an explicit directory
                // with newer keys below it).
                let child = join(&key, name);
                match self.node_stat(&child).await? {
                    Some(stat) => stat,
                    None => implicit_directory(node_stat),
                }
            } else {
                node_stat
            };
            entries.push((name.to_string(), Some(stat)));
        }
        Ok(entries)
    }

    /// Removes the empty directory at `path`.
    pub async fn rmdir(&self, path: &str) -> Result<(), Error> {
        let (_, trie, key) = self.writable_owner(path).await?;
        let stat = self.lstat(path).await?;
        if !stat.is_dir() {
            return Err(Error::WrongType {
                path: path.to_string(),
                reason: "is not a directory",
            });
        }
        if stat.mount.is_some() {
            return Err(Error::WrongType {
                path: path.to_string(),
                reason: "is a mount point (unmount it)",
            });
        }
        if !self.readdir(path, false).await?.is_empty() {
            return Err(Error::NotEmpty {
                path: path.to_string(),
            });
        }
        match trie.del(&key, false).await.map_err(trie_at(path))? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// Cuts or extends (with zeros) the file at `path` to `size` bytes, as a new version
    /// of it (JS makes a truncate to 0 of an existing file a no-op; here it empties it).
    pub async fn truncate(&self, path: &str, size: u64) -> Result<Stat, Error> {
        let flags = crate::OpenFlags {
            write: true,
            ..crate::OpenFlags::default()
        };
        let mut handle = self.open_file(path, flags).await?;
        handle.truncate(size).await?;
        let stat = handle.close().await?;
        stat.ok_or_else(|| Error::NotFound {
            path: path.to_string(),
        })
    }

    /// Removes the entry at `path` (any kind; JS rewrites a neighbour, see the trie).
    pub async fn unlink(&self, path: &str) -> Result<(), Error> {
        let (_, trie, key) = self.writable_owner(path).await?;
        match trie.del(&key, false).await.map_err(trie_at(path))? {
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
        if let Some(found) = self.trie.get(&key).await.map_err(trie_at(path))? {
            let stat = decode_stat(&key, found.node.value.as_deref())?;
            return Ok((stat, found.trie));
        }
        let root = self.trie.trie().clone();
        let now = self.now();
        if key.is_empty() {
            return Ok((Stat::directory(0o755, now), root));
        }
        // Any key below makes it a directory: a prefix lookup finds one along a single
        // path of the trie, where listing would read the whole subtree.
        let (trie, inner) = self.trie.owner(&key).await.map_err(trie_at(path))?;
        let below = GetOptions {
            prefix: true,
            ..GetOptions::default()
        };
        match trie
            .get(&inner, below)
            .await
            .map_err(trie_at(path))?
            .filter(|n| n.key() != inner)
        {
            Some(node) => {
                let child = decode_stat(&key, node.value.as_deref())?;
                Ok((implicit_directory(child), trie))
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

    /// `path` with the symlink it names followed, and the one that names, and so on (40
    /// at most): the absolute path of what it stands for, which may not exist (creating
    /// through a dangling link makes its target, as POSIX `open` does).
    pub(crate) async fn follow_links(&self, path: &str) -> Result<String, Error> {
        let mut at = format!("/{}", key_of(path));
        for _ in 0..MAX_SYMLINKS {
            let stat = match self.lstat_located(&at).await {
                Ok((stat, _)) => stat,
                Err(Error::NotFound { .. }) => return Ok(at),
                Err(e) => return Err(e),
            };
            match stat.linkname.as_deref().filter(|_| stat.is_symlink()) {
                Some(target) => at = resolve_link(&at, target),
                None => return Ok(at),
            }
        }
        Err(Error::SymlinkLoop {
            path: path.to_string(),
        })
    }

    /// Creates a directory at `path` (parents are not created, as in JS).
    pub async fn mkdir(&self, path: &str, mode: Option<u32>) -> Result<Stat, Error> {
        let (owner, trie, key) = self.writable_owner(path).await?;
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
        let (_, trie, key) = self.writable_owner(path).await?;
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
        let (trie, key) = self
            .trie
            .owner(&key_of(path))
            .await
            .map_err(trie_at(path))?;
        let node = trie
            .get(&key, GetOptions::default())
            .await
            .map_err(trie_at(path))?;
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
        trie.put(&key, value, options)
            .await
            .map_err(trie_at(path))?;
        Ok(stat)
    }
}

/// The Stat of a directory that has no node, made from a descendant's (JS copies its
/// numbers and times).
fn implicit_directory(descendant: Stat) -> Stat {
    Stat {
        mode: S_IFDIR | 0o755,
        linkname: None,
        mount: None,
        metadata: Vec::new(),
        ..descendant
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
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
        .await
        .map_err(trie_at(path))?
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
