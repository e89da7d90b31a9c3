//! Renames. Hyperdrive 10 has none (its FUSE layer copies the Stat and deletes the old
//! key); here a rename is that copy and delete for every key it moves — a directory's
//! whole subtree, and the mount records under it — in one trie batch, so no reader sees
//! half of it. The content blocks stay where they are. POSIX rules decide what may be
//! replaced.

use bytes::Bytes;
use hypertrie::{ListOptions, Op, PutOptions};
use prost::Message;

use crate::{trie_at, Drive, Error};

/// Where mount records live among a trie's hidden keys.
const MOUNTS: &str = "mounts";

impl Drive {
    /// Moves the entry at `from` to `to`, in the drive that owns both (a file, a symlink,
    /// a directory with everything below it, or a mount point). An existing `to` is
    /// replaced if it is of the same kind (a directory only if empty).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        let (_, trie, from_key) = self.writable_owner(from).await?;
        let (_, to_trie, to_key) = self.writable_owner(to).await?;
        if to_trie.feed().key() != trie.feed().key() {
            return Err(Error::CrossDrive {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        if from_key == to_key {
            // Checked after the owners: renaming a path onto itself still needs it to exist.
            self.lstat(from).await?;
            return Ok(());
        }
        let stat = self.lstat(from).await?;
        if stat.is_dir() && is_below(&to_key, &from_key) {
            return Err(Error::InvalidPath {
                path: to.to_string(),
                reason: "is inside the directory being moved",
            });
        }
        match self.lstat(to).await {
            Ok(existing) if existing.mount.is_some() => {
                return Err(Error::WrongType {
                    path: to.to_string(),
                    reason: "is a mount point (unmount it)",
                })
            }
            Ok(existing) if existing.is_dir() && !stat.is_dir() => {
                return Err(Error::WrongType {
                    path: to.to_string(),
                    reason: "is a directory",
                })
            }
            Ok(existing) if !existing.is_dir() && stat.is_dir() => {
                return Err(Error::WrongType {
                    path: to.to_string(),
                    reason: "is not a directory",
                })
            }
            Ok(existing) if existing.is_dir() && !self.readdir(to, false).await?.is_empty() => {
                return Err(Error::NotEmpty {
                    path: to.to_string(),
                })
            }
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }

        let moved = |key: &str| format!("{to_key}{}", &key[from_key.len()..]);
        let mut puts = Vec::new();
        let mut dels = Vec::new();
        // The entry and, for a directory (not a mount point: its keys live in the mounted
        // drive), every key below it, in this trie.
        let mut nodes = match trie
            .get(&from_key, Default::default())
            .await
            .map_err(trie_at(from))?
        {
            Some(node) => vec![node],
            None => Vec::new(),
        };
        if stat.is_dir() && stat.mount.is_none() {
            let below = trie
                .list(&from_key, ListOptions::default())
                .await
                .map_err(trie_at(from))?;
            nodes.extend(below.into_iter().filter(|n| is_below(n.key(), &from_key)));
        }
        let hidden = ListOptions {
            hidden: true,
            ..ListOptions::default()
        };
        let records = trie
            .list(&format!("{MOUNTS}/{from_key}"), hidden)
            .await
            .map_err(trie_at(from))?;
        for node in nodes {
            puts.push(Op::Put {
                key: moved(node.key()),
                value: node.value.clone().unwrap_or_default(),
                options: PutOptions {
                    hidden: false,
                    flags: node.flags,
                },
            });
            dels.push(Op::Del {
                key: node.key().to_string(),
                hidden: false,
            });
        }
        for node in records {
            let Some(point) = node.key().strip_prefix(&format!("{MOUNTS}/")) else {
                continue;
            };
            if point != from_key && !is_below(point, &from_key) {
                continue;
            }
            let new_point = moved(point);
            let mut record = hypertrie::MountRecord::decode(
                node.value.as_deref().unwrap_or_default(),
            )
            .map_err(|e| Error::BadStat {
                path: format!("/{point}"),
                reason: format!("its mount record: {e}"),
            })?;
            record.local_path = new_point.clone();
            puts.push(Op::Put {
                key: format!("{MOUNTS}/{new_point}"),
                value: Bytes::from(record.encode_to_vec()),
                options: PutOptions {
                    hidden: true,
                    flags: node.flags,
                },
            });
            dels.push(Op::Del {
                key: node.key().to_string(),
                hidden: true,
            });
        }
        if puts.is_empty() {
            return Err(Error::NotFound {
                path: from.to_string(),
            });
        }
        // An empty directory at `to` is replaced by the puts; a file or link too.
        puts.extend(dels);
        trie.batch(puts).await.map_err(trie_at(to))?;
        Ok(())
    }
}

/// Whether `key` is strictly below the directory `dir` (both trie keys).
fn is_below(key: &str, dir: &str) -> bool {
    dir.is_empty()
        || key
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_means_inside_the_directory() {
        assert!(super::is_below("a/b", "a"));
        assert!(!super::is_below("ab", "a"));
        assert!(!super::is_below("a", "a"));
        assert!(super::is_below("x", ""));
    }
}
