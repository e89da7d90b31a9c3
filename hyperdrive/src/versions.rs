//! A drive's versions (spec drive.md §8): what changed between two versions, as JS
//! `createDiffStream` reports it; watching a path (inside mounts too); and the history of
//! the drive, every change with the version it made, optionally following new ones.
//! All of it reads only the metadata blocks it needs, so it works on sparse drives.

use std::ops::Bound;

use futures::{Stream, StreamExt, TryStreamExt};
use hypercore::PublicKey;
use hypertrie::{ChangeKind, DiffOptions, MountDiffEntry, MountRecord};

use crate::dir::decode_stat;
use crate::path::key_of;
use crate::{Drive, Error, Stat};

/// What changed at a path between two versions of a drive. Hidden entries (mount
/// records, tags) are never reported.
#[derive(Clone, Debug, PartialEq)]
pub enum DriveChange {
    /// A file, directory or symlink was written. A delete also rewrites a neighbouring
    /// entry, which [`Drive::diff`] reports as a put, as JS does ([`Drive::history`]
    /// leaves it out).
    Put {
        /// The entry's name as JS reports it: its key, without a leading `/`.
        path: String,
        /// Its Stat now.
        stat: Stat,
        /// The metadata block holding that Stat.
        seq: u64,
        /// The block of its Stat in the other version, if it had one there.
        previous: Option<u64>,
    },
    /// An entry was deleted.
    Del {
        /// The entry's name.
        path: String,
        /// The block of its Stat in the other version.
        previous: u64,
    },
    /// A drive was mounted (or mounted again).
    Mount {
        /// The mount point's name.
        path: String,
        /// The mounted drive.
        key: PublicKey,
        /// The version it is pinned at, if any.
        version: Option<u64>,
        /// The metadata block of the mount point.
        seq: u64,
        /// The block of the mount point in the other version, if it had one there.
        previous: Option<u64>,
    },
    /// A drive was unmounted.
    Unmount {
        /// The mount point's name.
        path: String,
        /// The drive that was mounted there, when its record can be read.
        key: Option<PublicKey>,
        /// The block of the mount point in the other version.
        previous: u64,
    },
}

impl DriveChange {
    /// The name of the entry that changed.
    pub fn path(&self) -> &str {
        match self {
            DriveChange::Put { path, .. }
            | DriveChange::Del { path, .. }
            | DriveChange::Mount { path, .. }
            | DriveChange::Unmount { path, .. } => path,
        }
    }
}

/// Options of [`Drive::history`], in versions (version `v` is made by metadata block
/// `v - 1`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryOptions {
    /// The changes that made the versions after this one (0 and 1: from the start).
    pub since: u64,
    /// Up to the one that made this version; `None`: this drive's version, or no end
    /// when `live`.
    pub until: Option<u64>,
    /// Keep following the drive's new versions, written here or replicated.
    pub live: bool,
}

/// A change in a drive's history, and the version it made.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The version the change made.
    pub version: u64,
    /// What changed.
    pub change: DriveChange,
}

/// The key of a mount, from its record (JS's `info`), else from the mount point's Stat.
fn mounted_key(
    record: Option<&MountRecord>,
    stat: Option<&Stat>,
) -> Option<(PublicKey, Option<u64>)> {
    if let Some(record) = record {
        let key = PublicKey::from_slice(&record.key).ok()?;
        return Some((key, record.version.filter(|&v| v != 0)));
    }
    let mount = stat?.mount.as_ref()?;
    let key = PublicKey::from_slice(&mount.key).ok()?;
    Some((key, mount.version.filter(|&v| v != 0)))
}

/// A mountable-hypertrie diff entry as the drive reports it.
fn change(entry: MountDiffEntry) -> Result<DriveChange, Error> {
    let path = entry.key;
    let previous = entry.right.as_ref().map(|n| n.seq);
    let stat_of = |node: &hypertrie::Node| decode_stat(&path, node.value.as_deref());
    Ok(match (entry.kind, entry.left) {
        (ChangeKind::Put, Some(left)) => DriveChange::Put {
            stat: stat_of(&left)?,
            seq: left.seq,
            previous,
            path,
        },
        (ChangeKind::Mount, Some(left)) => {
            let stat = stat_of(&left).ok();
            let (key, version) =
                mounted_key(entry.left_mount.as_ref(), stat.as_ref()).ok_or_else(|| {
                    Error::BadStat {
                        path: path.clone(),
                        reason: "a mount point that names no drive".into(),
                    }
                })?;
            DriveChange::Mount {
                key,
                version,
                seq: left.seq,
                previous,
                path,
            }
        }
        (ChangeKind::Unmount, _) => {
            let stat = entry.right.as_ref().and_then(|n| stat_of(n).ok());
            let key = mounted_key(entry.right_mount.as_ref(), stat.as_ref()).map(|(k, _)| k);
            DriveChange::Unmount {
                key,
                previous: previous.unwrap_or_default(),
                path,
            }
        }
        (_, _) => DriveChange::Del {
            previous: previous.unwrap_or_default(),
            path,
        },
    })
}

impl Drive {
    /// What changed under `prefix` between this version (the newer, as JS's left side)
    /// and `other_version`, as JS `createDiffStream(other, prefix)` reports it, in the
    /// same order: puts, deletes, mounts and unmounts, from the trie that holds the
    /// prefix (see [`hypertrie::MountableTrie::diff`] for a prefix inside a mount).
    pub fn diff(
        &self,
        other_version: u64,
        prefix: &str,
    ) -> impl Stream<Item = Result<DriveChange, Error>> + Send + 'static {
        self.trie
            .diff(other_version, &key_of(prefix), DiffOptions::default())
            .map(|entry| change(entry?))
    }

    /// A stream that yields each time something under `path` changes: in this drive or in
    /// a drive mounted under it (mounts added later too), written here or replicated; it
    /// follows the latest version. See [`hypertrie::MountableTrie::watch`].
    pub fn watch(&self, path: &str) -> impl Stream<Item = Result<(), Error>> + Send + 'static {
        self.trie.watch(&key_of(path)).map_err(Error::from)
    }

    /// The drive's changes in the order they were made, each with the version it made:
    /// puts, deletes, mounts and unmounts of this drive's own entries (not of drives
    /// mounted in it). A delete is reported alone, without the neighbour it rewrote.
    /// Each change is found by diffing its version against the one before, which reads
    /// only the blocks on the changed path.
    pub fn history(
        &self,
        options: HistoryOptions,
    ) -> impl Stream<Item = Result<HistoryEntry, Error>> + Send + 'static {
        let blocks = hypertrie::HistoryOptions {
            start: Bound::Included(options.since),
            end: options.until.map_or(Bound::Unbounded, Bound::Excluded),
            reverse: false,
            live: options.live,
        };
        let trie = self.trie.clone();
        self.trie
            .trie()
            .history(blocks)
            .map_err(Error::from)
            .and_then(move |node| {
                let trie = trie.clone();
                async move {
                    let made = node.seq + 1;
                    let entries: Vec<MountDiffEntry> = trie
                        .checkout(made)
                        .diff(node.seq, "", DiffOptions::default())
                        .try_collect()
                        .await?;
                    // A delete appends a copy of a neighbour: not a change of its own.
                    let deletes = entries
                        .iter()
                        .any(|e| matches!(e.kind, ChangeKind::Del | ChangeKind::Unmount));
                    let mut out = Vec::new();
                    for entry in entries {
                        let rewritten = entry.left.as_ref().is_some_and(|n| n.seq == node.seq);
                        if deletes && rewritten {
                            continue;
                        }
                        out.push(Ok(HistoryEntry {
                            version: made,
                            change: change(entry)?,
                        }));
                    }
                    Ok::<_, Error>(futures::stream::iter(out))
                }
            })
            .try_flatten()
    }
}
