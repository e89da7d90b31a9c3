//! Paths across mounts (spec trie.md §9.2–9.3): a trie whose mount points lead into other
//! tries of the same corestore, opened on demand (at the record's version when pinned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corestore::{Core, Corestore};
use hypercore::PublicKey;

use futures::future::BoxFuture;

use crate::mounts::{normalize_path, MountRecord};
use crate::{Error, GetOptions, Hypertrie, ListOptions, Node, OpenOptions, PutOptions};

/// Mounts followed in one lookup at most: deeper is a mount loop.
pub(crate) const MAX_DEPTH: usize = 16;
/// Mount points a listing enters at most. Drives mounted in each other without a loop
/// still multiply: 16 drives each mounting the next at 3 points make 3^16 mount points
/// below the first, which no listing should try to walk.
pub const MAX_MOUNTS_ENTERED: usize = 10_000;
/// Longest wait of a remote trie for what its peers announced before a lookup.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// A node found through mounts.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The node, its key as seen from the outer trie.
    pub node: Node,
    /// The trie that holds it.
    pub trie: Hypertrie,
    /// Its key in that trie.
    pub inner_key: String,
}

/// Options of [`MountableTrie::list`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MountListOptions {
    /// Everything below the prefix, into every mount on the way; else one node per direct
    /// child (mountable-hypertrie's default).
    pub recursive: bool,
    /// Treat mount nodes as plain entries: never list inside a mount.
    pub no_mounts: bool,
    /// Leave out the prefix itself.
    pub gt: bool,
}

/// A trie together with the tries mounted in it. Cheap to clone.
#[derive(Clone)]
pub struct MountableTrie {
    pub(crate) trie: Hypertrie,
    store: Corestore,
    /// Mounted tries opened so far, with the cores that keep them open.
    open: Arc<Mutex<HashMap<PublicKey, (Core, Hypertrie)>>>,
}

/// Where a path lives: the trie that holds it, its key there, and the outer prefix.
pub(crate) struct Location {
    pub(crate) trie: Hypertrie,
    pub(crate) path: String,
    pub(crate) outer: String,
}

impl MountableTrie {
    /// `trie`, whose mounts are opened from `store`.
    pub fn new(trie: Hypertrie, store: Corestore) -> MountableTrie {
        MountableTrie {
            trie,
            store,
            open: Arc::default(),
        }
    }

    /// The outermost trie.
    pub fn trie(&self) -> &Hypertrie {
        &self.trie
    }

    /// The same mounts over a checkout of the outermost trie (mounted tries stay at their
    /// record's version or latest, as in JS).
    pub fn checkout(&self, version: u64) -> MountableTrie {
        MountableTrie {
            trie: self.trie.checkout(version),
            ..self.clone()
        }
    }

    /// The node at `path`, found through the mounts on the way; a mount point itself is
    /// the outer trie's visible mount node.
    pub async fn get(&self, path: &str) -> Result<Option<Resolved>, Error> {
        let mut at = Location {
            trie: self.trie.clone(),
            path: normalize_path(path),
            outer: String::new(),
        };
        for _ in 0..MAX_DEPTH {
            let closest = GetOptions {
                closest: true,
                ..GetOptions::default()
            };
            self.catch_up(&at.trie).await;
            // The closest node may be a hidden one (the head, when no visible key is
            // left); JS would return it for a visible key of the same name.
            let Some(node) = at
                .trie
                .get(&at.path, closest)
                .await?
                .filter(|n| !n.hidden())
            else {
                return Ok(None);
            };
            if !node.is_mount() || node.key() == at.path {
                return Ok((node.key() == at.path).then(|| found(node, at)));
            }
            match self.descend(&at, false).await? {
                Some(inner) => at = inner,
                None => {
                    let node = at.trie.get(&at.path, GetOptions::default()).await?;
                    return Ok(node.map(|n| found(n, at)));
                }
            }
        }
        Err(mount_loop(path))
    }

    /// Puts `value` at `path`, in the mounted trie the path leads into, if any.
    pub async fn put(
        &self,
        path: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<Resolved, Error> {
        let at = self.locate(path).await?;
        let node = at.trie.put(&at.path, value, options).await?;
        Ok(found(node, at))
    }

    /// Deletes `path`, in the mounted trie the path leads into, if any; `None` if absent.
    pub async fn del(&self, path: &str) -> Result<Option<Node>, Error> {
        let at = self.locate(path).await?;
        at.trie.del(&at.path, false).await
    }

    /// Mounts `record` at `path`, in the trie that holds `path` (a mount inside a mount is
    /// written in the mounted trie, as JS does).
    pub async fn mount(
        &self,
        path: &str,
        record: MountRecord,
        value: Bytes,
    ) -> Result<Vec<Node>, Error> {
        let at = self.locate(path).await?;
        at.trie.mount(&at.path, record, value).await
    }

    /// The nodes under `prefix`, following mounts as mountable-hypertrie's iterator does:
    /// a listing that starts at or below a mount point lists the mounted trie, and a mount
    /// node met on the way is listed, followed (when recursive, or when it is the prefix)
    /// by what is mounted there, keys as seen from here. Hash order within each trie.
    pub async fn list(
        &self,
        prefix: &str,
        options: MountListOptions,
    ) -> Result<Vec<Resolved>, Error> {
        let prefix = normalize_path(prefix);
        let mut entered = 0;
        let mut out = self
            .list_at(prefix.clone(), options, 0, &mut entered)
            .await?;
        if options.gt {
            out.retain(|r| r.node.key() != prefix);
        }
        Ok(out)
    }

    fn list_at<'a>(
        &'a self,
        prefix: String,
        options: MountListOptions,
        depth: usize,
        entered: &'a mut usize,
    ) -> BoxFuture<'a, Result<Vec<Resolved>, Error>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(mount_loop(&prefix));
            }
            let at = self.locate_within(&prefix, true).await?;
            self.catch_up(&at.trie).await;
            let list = ListOptions {
                recursive: options.recursive,
                ..ListOptions::default()
            };
            let mut out = Vec::new();
            for node in at.trie.list(&at.path, list).await? {
                let enter = node.is_mount()
                    && !options.no_mounts
                    && (options.recursive || node.key() == at.path);
                let here = Location {
                    trie: at.trie.clone(),
                    path: String::new(),
                    outer: at.outer.clone(),
                };
                let resolved = found(node, here);
                let point = resolved.node.key().to_string();
                out.push(resolved);
                if enter {
                    *entered += 1;
                    if *entered > MAX_MOUNTS_ENTERED {
                        return Err(Error::TooManyMounts {
                            path: point,
                            limit: MAX_MOUNTS_ENTERED,
                        });
                    }
                    out.extend(self.list_at(point, options, depth + 1, entered).await?);
                }
            }
            Ok(out)
        })
    }

    /// The trie `path` is written to (through every mount strictly above it) and the
    /// path's key there.
    pub async fn owner(&self, path: &str) -> Result<(Hypertrie, String), Error> {
        let at = self.locate(path).await?;
        Ok((at.trie, at.path))
    }

    /// The trie and key `path` is written to: through every mount strictly above it.
    async fn locate(&self, path: &str) -> Result<Location, Error> {
        self.locate_within(path, false).await
    }

    /// As [`Self::locate`], also entering a mount whose point is `path` itself when
    /// `at_point` (listings do).
    pub(crate) async fn locate_within(
        &self,
        path: &str,
        at_point: bool,
    ) -> Result<Location, Error> {
        let mut at = Location {
            trie: self.trie.clone(),
            path: normalize_path(path),
            outer: String::new(),
        };
        for _ in 0..MAX_DEPTH {
            match self.descend(&at, at_point).await? {
                Some(inner) => at = inner,
                None => return Ok(at),
            }
        }
        Err(mount_loop(path))
    }

    /// The location of `at.path` inside the mount above it in `at.trie` (or at it, with
    /// `at_point`), if any.
    pub(crate) async fn descend(
        &self,
        at: &Location,
        at_point: bool,
    ) -> Result<Option<Location>, Error> {
        let hidden_closest = GetOptions {
            hidden: true,
            prefix: false,
            closest: true,
        };
        self.catch_up(&at.trie).await;
        let record_key = format!("mounts/{}", at.path);
        // As in `get`, the closest node may be in the other half of the trie.
        let Some(node) = at
            .trie
            .get(&record_key, hidden_closest)
            .await?
            .filter(|n| n.hidden())
        else {
            return Ok(None);
        };
        let Some(point) = node.key().strip_prefix("mounts/") else {
            return Ok(None);
        };
        let inner = match at.path.strip_prefix(point) {
            Some("") if at_point => "",
            Some(rest) => match rest.strip_prefix('/') {
                Some(inner) if !inner.is_empty() => inner,
                _ => return Ok(None),
            },
            None => return Ok(None),
        };
        if !node.is_mount() {
            return Ok(None);
        }
        let record = crate::mounts::record_of(&node)?;
        if record.key.len() != 32 {
            // The peer's block is bad (`mounted` would answer a key that cannot be put).
            return Err(Error::Decode {
                seq: node.seq,
                reason: format!(
                    "the mount record of {point:?} holds a key of {} bytes, not 32",
                    record.key.len()
                ),
            });
        }
        let trie = self.mounted(&record, point).await?;
        Ok(Some(Location {
            trie,
            path: inner.to_string(),
            outer: join(&at.outer, point),
        }))
    }

    /// Before reading a remote trie (not ours, not a checkout of a version we have), takes
    /// in what its peers announced, as mountable-hypertrie's `alwaysUpdate` does: a lookup
    /// sees the latest version peers have, and a trie just opened waits for its peers to
    /// say what that is.
    async fn catch_up(&self, trie: &Hypertrie) {
        let known = trie.is_checkout() && trie.version() <= trie.feed().len();
        if trie.writable() || known {
            return;
        }
        if let Some(core) = self.store.get_open(&trie.feed().key()) {
            core.update_if_available(CATCH_UP_LIMIT).await;
        }
    }

    /// The trie a record points to, opened from the store (at its version when pinned).
    pub(crate) async fn mounted(
        &self,
        record: &MountRecord,
        point: &str,
    ) -> Result<Hypertrie, Error> {
        let key = PublicKey::from_slice(&record.key).map_err(|_| Error::InvalidKey {
            key: point.to_string(),
            reason: "its mount record's key is not a public key",
        })?;
        let cached = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|(_, t)| t.clone());
        let trie = match cached {
            Some(trie) => trie,
            None => {
                let core = self
                    .store
                    .get_by_key(key)
                    .await
                    .map_err(|source| Error::Store {
                        key,
                        source: Box::new(source),
                    })?;
                let trie = Hypertrie::open_replicated(&core, OpenOptions::default()).await?;
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                open.insert(key, (core, trie.clone()));
                trie
            }
        };
        Ok(match record.version.filter(|&v| v != 0) {
            Some(version) => trie.checkout(version),
            None => trie,
        })
    }
}

fn found(mut node: Node, at: Location) -> Resolved {
    let inner_key = node.key().to_string();
    if !at.outer.is_empty() {
        node.path = crate::Path::new(&join(&at.outer, &inner_key), node.hidden());
    }
    Resolved {
        node,
        trie: at.trie,
        inner_key,
    }
}

pub(crate) fn join(outer: &str, inner: &str) -> String {
    match (outer.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_string(),
        (_, true) => outer.to_string(),
        _ => format!("{outer}/{inner}"),
    }
}

pub(crate) fn mount_loop(path: &str) -> Error {
    Error::MountLoop {
        path: path.to_string(),
        depth: MAX_DEPTH,
    }
}
