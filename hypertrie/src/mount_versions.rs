//! Versions across mounts (spec trie.md §9.4): diffs of the trie that holds a prefix, typed
//! put/del/mount/unmount as mountable-hypertrie types them; the feed's history with mount
//! entries; every mount, also inside mounted tries; and watching a prefix together with
//! the tries mounted under it.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use futures::{Stream, TryStreamExt};
use hypercore::{Feed, PublicKey};

use crate::mounts::{normalize_path, record_of, MountRecord, MOUNTS};
use crate::resolve::{join, mount_loop, Location, MAX_DEPTH};
use crate::{
    Diff, DiffOptions, Error, GetOptions, HistoryOptions, Hypertrie, ListOptions, MountableTrie,
    Node,
};

/// What a changed key is, as mountable-hypertrie types its diff entries: by the newer
/// node when there is one, else by the node that went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A plain node was added or changed (also a neighbour a delete rewrote).
    Put,
    /// A plain node is gone.
    Del,
    /// A mount node was added or changed.
    Mount,
    /// A mount node is gone.
    Unmount,
}

/// A key whose node differs between two versions ([`MountableTrie::diff`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MountDiffEntry {
    /// What changed.
    pub kind: ChangeKind,
    /// The key as seen from the outer trie.
    pub key: String,
    /// Its node in this version, as stored in the trie that holds the prefix.
    pub left: Option<Node>,
    /// Its node in the other version.
    pub right: Option<Node>,
    /// What `left` mounts, when it is a mount node with a readable record.
    pub left_mount: Option<MountRecord>,
    /// What `right` mounted, when it is a mount node with a readable record.
    pub right_mount: Option<MountRecord>,
}

/// One block of the history ([`MountableTrie::history`]), as mountable-hypertrie types it.
#[derive(Clone, Debug, PartialEq)]
pub enum MountHistoryEntry {
    /// A plain node (reset nodes included: [`Node::is_reset`]).
    Put(Node),
    /// One of a mount's two nodes, with the record of the mount as of that block (JS
    /// looks the record up at the latest version instead).
    Mount {
        /// The node.
        node: Node,
        /// What it mounts, if the record is there.
        record: Option<MountRecord>,
    },
}

/// A mount found by [`MountableTrie::list_mounts`].
#[derive(Clone, Debug)]
pub struct MountPoint {
    /// Where it is mounted, as seen from the outer trie (normalized: no leading `/`,
    /// where JS's `listMounts` puts one).
    pub path: String,
    /// Its record.
    pub record: MountRecord,
    /// The mounted trie (checked out at the record's version when pinned).
    pub trie: Hypertrie,
}

/// The record of the mount `node` is part of, read in `trie` (the version `node` belongs
/// to): a hidden mount node holds it, a visible one has it at `mounts/<key>`.
async fn record_in(trie: &Hypertrie, node: &Node) -> Result<Option<MountRecord>, Error> {
    if node.hidden() {
        return record_of(node).map(Some);
    }
    let hidden = GetOptions {
        hidden: true,
        ..GetOptions::default()
    };
    let key = format!("{MOUNTS}/{}", node.key());
    match trie.get(&key, hidden).await? {
        Some(record) if record.is_mount() => record_of(&record).map(Some),
        _ => Ok(None),
    }
}

/// A diff in progress: the trie that holds the prefix, at both versions.
struct DiffWalk {
    diff: Diff,
    left: Hypertrie,
    right: Hypertrie,
    outer: String,
}

impl DiffWalk {
    async fn next(&mut self) -> Result<Option<MountDiffEntry>, Error> {
        let Some(entry) = self.diff.next().await? else {
            return Ok(None);
        };
        let mut left_mount = None;
        if let Some(node) = entry.left.as_ref().filter(|n| n.is_mount()) {
            left_mount = record_in(&self.left, node).await?;
        }
        let mut right_mount = None;
        if let Some(node) = entry.right.as_ref().filter(|n| n.is_mount()) {
            right_mount = record_in(&self.right, node).await?;
        }
        let kind = match (&entry.left, &entry.right) {
            (Some(left), _) if left.is_mount() => ChangeKind::Mount,
            (Some(_), _) => ChangeKind::Put,
            (None, Some(right)) if right.is_mount() => ChangeKind::Unmount,
            (None, _) => ChangeKind::Del,
        };
        Ok(Some(MountDiffEntry {
            kind,
            key: join(&self.outer, &entry.key),
            left: entry.left,
            right: entry.right,
            left_mount,
            right_mount,
        }))
    }
}

/// Identifies a trie as watched or listed: its key and pinned version.
type TrieId = (PublicKey, Option<u64>);

fn trie_id(trie: &Hypertrie) -> TrieId {
    (trie.feed().key(), trie.version)
}

/// A trie watched at a prefix: its id, the prefix there, and the outer path to it.
type WatchPoint = (TrieId, String, String);

/// What a watch looks at: the tries with their prefixes, and the feeds whose growth may
/// change what is under the prefix.
struct Scan {
    points: Vec<(WatchPoint, Hypertrie)>,
    feeds: Vec<Feed>,
}

impl MountableTrie {
    /// The keys under `prefix` whose nodes differ between this version (left) and version
    /// `version` of the outer trie (right), from the trie that holds the prefix:
    /// mountable-hypertrie's diff. Entries are typed [`ChangeKind::Mount`] or
    /// [`ChangeKind::Unmount`] for mount nodes, with their records.
    ///
    /// When the prefix lies inside a mount, the mounted trie is diffed between its
    /// version as seen from here and as seen from version `version` (the same latest
    /// version for an unpinned mount: nothing changed), or against its empty version when
    /// the other version mounts another trie there or none. JS instead always diffs
    /// against the empty version there, keeps the mounted trie's own keys, and looks the
    /// records up in the wrong trie; at the outer trie both agree.
    pub fn diff(
        &self,
        version: u64,
        prefix: &str,
        options: DiffOptions,
    ) -> impl Stream<Item = Result<MountDiffEntry, Error>> + Send + 'static {
        let (this, other) = (self.clone(), self.checkout(version));
        let prefix = normalize_path(prefix);
        let open = async move {
            let left = this.locate_within(&prefix, true).await?;
            let right = other.locate_within(&prefix, true).await?;
            let right_version = if right.trie.feed().key() == left.trie.feed().key() {
                right.trie.version()
            } else {
                1
            };
            Ok(DiffWalk {
                diff: left.trie.diff(right_version, &left.path, options),
                right: left.trie.checkout(right_version),
                left: left.trie,
                outer: left.outer,
            })
        };
        futures::stream::once(open)
            .map_ok(|walk| {
                futures::stream::try_unfold(walk, |mut walk| async move {
                    Ok(walk.next().await?.map(|entry| (entry, walk)))
                })
            })
            .try_flatten()
    }

    /// The outer trie's history ([`Hypertrie::history`]), mount nodes typed as such.
    pub fn history(
        &self,
        options: HistoryOptions,
    ) -> impl Stream<Item = Result<MountHistoryEntry, Error>> + Send + 'static {
        let trie = self.trie().clone();
        self.trie().history(options).and_then(move |node| {
            let trie = trie.clone();
            async move {
                if !node.is_mount() {
                    return Ok(MountHistoryEntry::Put(node));
                }
                // The version this node made holds the whole mount (one batch: record first).
                let record = record_in(&trie.checkout(node.seq + 1), &node).await?;
                Ok(MountHistoryEntry::Mount { node, record })
            }
        })
    }

    /// The mounts of the outer trie, in hash order, each followed (when `recursive`) by
    /// the mounts inside what it mounts, paths as seen from here: mountable-hypertrie's
    /// `listMounts`. A trie that (through mounts) mounts itself is [`Error::MountLoop`].
    pub async fn list_mounts(&self, recursive: bool) -> Result<Vec<MountPoint>, Error> {
        let mut out = Vec::new();
        let chain = vec![trie_id(self.trie())];
        self.mounts_into(
            self.trie().clone(),
            String::new(),
            recursive,
            chain,
            &mut out,
        )
        .await?;
        Ok(out)
    }

    fn mounts_into<'a>(
        &'a self,
        trie: Hypertrie,
        prefix: String,
        recursive: bool,
        chain: Vec<TrieId>,
        out: &'a mut Vec<MountPoint>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            for record in trie.mounts().await? {
                let path = join(&prefix, &record.local_path);
                let mounted = self.mounted(&record, &path).await?;
                let inner = match &record.remote_path {
                    Some(remote) => join(&path, &normalize_path(remote)),
                    None => path.clone(),
                };
                out.push(MountPoint {
                    path: path.clone(),
                    record,
                    trie: mounted.clone(),
                });
                if recursive {
                    let id = trie_id(&mounted);
                    if chain.contains(&id) || chain.len() > MAX_DEPTH {
                        return Err(mount_loop(&path));
                    }
                    let mut chain = chain.clone();
                    chain.push(id);
                    self.mounts_into(mounted, inner, true, chain, out).await?;
                }
            }
            Ok(())
        })
    }

    /// A stream that yields each time something under `prefix` changes: in the trie that
    /// holds the prefix, or in any trie mounted under it (mounts added later included),
    /// locally or replicated. It keeps asking peers for longer feeds while polled, follows
    /// the latest version (also from a checkout), and yields once per wake-up however many
    /// tries changed. A change is a newer node under the prefix in one of the tries (so,
    /// as in JS, a delete that leaves nothing under it is missed) or a mount added,
    /// removed or changed on the way to or under the prefix. The stream ends after an
    /// error, [`Error::MountLoop`] included.
    pub fn watch(&self, prefix: &str) -> impl Stream<Item = Result<(), Error>> + Send + 'static {
        let mut latest = self.clone();
        latest.trie.version = None;
        let watcher = Watcher {
            this: latest,
            prefix: normalize_path(prefix),
            seen: None,
        };
        futures::stream::try_unfold(watcher, |mut watcher| async move {
            watcher.changed().await?;
            Ok(Some(((), watcher)))
        })
    }

    /// The tries to watch for `prefix`: the one that holds it (the tries on the way
    /// there are watched for mount changes) and every trie mounted under it.
    async fn scan(&self, prefix: &str) -> Result<Scan, Error> {
        let mut at = Location {
            trie: self.trie().clone(),
            path: prefix.to_string(),
            outer: String::new(),
        };
        let mut feeds = vec![self.trie().feed().clone()];
        let mut chain = vec![trie_id(self.trie())];
        while let Some(inner) = self.descend(&at, false).await? {
            let id = trie_id(&inner.trie);
            if chain.contains(&id) || chain.len() > MAX_DEPTH {
                return Err(mount_loop(prefix));
            }
            chain.push(id);
            feeds.push(inner.trie.feed().clone());
            at = inner;
        }
        let mut scan = Scan {
            points: Vec::new(),
            feeds,
        };
        self.scan_mounts(at, chain, &mut scan).await?;
        // Pinned tries never change; the same feed is waited on once.
        let mut keys = HashSet::new();
        scan.feeds.retain(|f| keys.insert(f.key()));
        Ok(scan)
    }

    fn scan_mounts<'a>(
        &'a self,
        at: Location,
        chain: Vec<TrieId>,
        scan: &'a mut Scan,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let hidden = ListOptions {
                hidden: true,
                ..ListOptions::default()
            };
            let records = at.trie.list(&join(MOUNTS, &at.path), hidden).await?;
            let id = trie_id(&at.trie);
            if id.1.is_none() {
                scan.feeds.push(at.trie.feed().clone());
            }
            scan.points
                .push(((id, at.path.clone(), at.outer.clone()), at.trie.clone()));
            for node in records.iter().filter(|n| n.is_mount()) {
                let Some(point) = node
                    .key()
                    .strip_prefix(MOUNTS)
                    .and_then(|k| k.strip_prefix('/'))
                else {
                    continue;
                };
                let record = record_of(node)?;
                let outer = join(&at.outer, point);
                let mounted = self.mounted(&record, &outer).await?;
                let id = trie_id(&mounted);
                if chain.contains(&id) || chain.len() > MAX_DEPTH {
                    return Err(mount_loop(&outer));
                }
                let mut chain = chain.clone();
                chain.push(id);
                let inner = Location {
                    trie: mounted,
                    path: String::new(),
                    outer,
                };
                self.scan_mounts(inner, chain, scan).await?;
            }
            Ok(())
        })
    }
}

/// The state of a [`MountableTrie::watch`].
struct Watcher {
    this: MountableTrie,
    prefix: String,
    /// The newest seq under the prefix per watched trie, once looked.
    seen: Option<HashMap<WatchPoint, u64>>,
}

impl Watcher {
    /// Waits for the next change.
    async fn changed(&mut self) -> Result<(), Error> {
        let newest = GetOptions {
            prefix: true,
            ..GetOptions::default()
        };
        loop {
            let scan = self.this.scan(&self.prefix).await?;
            // Lengths before looking: an append while we look wakes the wait below.
            let lengths: Vec<u64> = scan.feeds.iter().map(Feed::len).collect();
            let mut now = HashMap::new();
            for (point, trie) in &scan.points {
                let seq = trie.get(&point.1, newest).await?.map_or(0, |n| n.seq);
                now.insert(point.clone(), seq);
            }
            let changed = self.seen.as_ref().is_some_and(|seen| {
                seen.len() != now.len()
                    || now
                        .iter()
                        .any(|(point, seq)| seen.get(point).is_none_or(|s| seq > s))
            });
            self.seen = Some(now);
            if changed {
                return Ok(());
            }
            let waits = scan
                .feeds
                .iter()
                .zip(lengths)
                .map(|(feed, len)| Box::pin(feed.update(Some(len + 1), None)));
            let (grown, at, _) = futures::future::select_all(waits).await;
            if let Err(source) = grown {
                let feed = &scan.feeds[at];
                return Err(Error::Feed {
                    key: feed.key(),
                    source,
                });
            }
        }
    }
}
