//! Hypertrie 5 (spec trie.md): a single-writer key/value trie stored as a hypercore, one
//! node per block, byte-compatible with JS hypertrie 5.1. Each put or delete appends a
//! node that is the root of a new immutable version, so every past version stays
//! readable ([`Hypertrie::checkout`]). Works on sparse feeds: a lookup fetches only the
//! blocks on its way.

mod buckets;
mod diff;
mod mounts;
mod node;
mod path;
mod resolve;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hypercore::Feed;

pub use buckets::Buckets;
pub use diff::{DiffEntry, DiffOptions};
pub use mounts::{normalize_path, MountRecord, MOUNT_FLAG};
pub use node::{Header, Node, HEADER_TYPE};
pub use path::Path;
pub use resolve::{MountListOptions, MountableTrie, Resolved, CATCH_UP_LIMIT, MAX_MOUNTS_ENTERED};

use path::{is_checkpoint, END};

/// What failed in a trie operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The feed failed (storage, or a block that could not be fetched).
    #[error("trie feed {key}: {source}")]
    Feed {
        /// The feed's key.
        key: hypercore::PublicKey,
        /// Why.
        #[source]
        source: hypercore::Error,
    },
    /// A block is not a valid header or node.
    #[error("trie block {seq} does not decode: {reason}")]
    Decode {
        /// The block.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The corestore could not open a mounted trie's core.
    #[error("opening the mounted core {key}: {source}")]
    Store {
        /// The mounted core.
        key: hypercore::PublicKey,
        /// Why (boxed: corestore errors are large).
        #[source]
        source: Box<corestore::Error>,
    },
    /// Following mounts went deeper than a sane tree: mounts that lead back to themselves.
    #[error("resolving {path:?} went through {depth} mounts: a mount loop")]
    MountLoop {
        /// The path looked up.
        path: String,
        /// Mounts followed.
        depth: usize,
    },
    /// A listing would enter more mount points than any sane tree has: drives mounted
    /// in each other many times over.
    #[error("listing reached {limit} mount points at {path:?}: too many mounts")]
    TooManyMounts {
        /// The mount point where it stopped.
        path: String,
        /// The most a listing enters.
        limit: usize,
    },
    /// A key that cannot be written.
    #[error("cannot put the key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// Writing to a trie whose feed we cannot sign, or to a checkout.
    #[error("the trie {key} is not writable{}", if *.checkout { " (a checkout)" } else { "" })]
    NotWritable {
        /// The feed's key.
        key: hypercore::PublicKey,
        /// Whether it is a checkout of a writable trie.
        checkout: bool,
    },
}

/// Options of [`Hypertrie::open`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Header metadata, written when the trie is created (hyperdrive: the content key).
    pub metadata: Option<Vec<u8>>,
    /// Header subtype, written when the trie is created.
    pub subtype: Option<String>,
}

/// Options of [`Hypertrie::get`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GetOptions {
    /// Look among hidden keys.
    pub hidden: bool,
    /// Return some node under the key as a prefix (the newest reachable) rather than the key.
    pub prefix: bool,
    /// Return the node where the lookup stopped rather than nothing.
    pub closest: bool,
}

/// Options of [`Hypertrie::put`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PutOptions {
    /// Store a hidden key.
    pub hidden: bool,
    /// User flags.
    pub flags: u64,
}

/// Options of [`Hypertrie::list`].
#[derive(Clone, Copy, Debug)]
pub struct ListOptions {
    /// Everything under the prefix (default), or one node per direct child.
    pub recursive: bool,
    /// Reverse hash order.
    pub reverse: bool,
    /// Leave out the prefix key itself.
    pub gt: bool,
    /// List hidden keys.
    pub hidden: bool,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            recursive: true,
            reverse: false,
            gt: false,
            hidden: false,
        }
    }
}

/// One operation of a [`Hypertrie::batch`].
#[derive(Clone, Debug)]
pub enum Op {
    /// Put `value` at `key`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Hidden and flags.
        options: PutOptions,
    },
    /// Delete `key`.
    Del {
        /// The key.
        key: String,
        /// Hidden key.
        hidden: bool,
    },
}

/// A hypertrie on a feed, at its latest version or checked out at an older one. Cheap to
/// clone; clones share the writer's lock.
#[derive(Clone)]
pub struct Hypertrie {
    feed: Feed,
    /// `Some` for a checkout.
    version: Option<u64>,
    /// Writers hold it from reading the head to appending (spec §6.2).
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Hypertrie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hypertrie")
            .field("key", &self.feed.key())
            .field("version", &self.version)
            .finish()
    }
}

impl Hypertrie {
    /// A trie on `feed`. A writable, empty feed gets its header now (with the options'
    /// metadata and subtype); a reader never writes.
    pub async fn open(feed: Feed, options: OpenOptions) -> Result<Hypertrie, Error> {
        let trie = Hypertrie {
            feed,
            version: None,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        };
        if trie.feed.writable() && trie.feed.is_empty() {
            let _guard = trie.lock.lock().await;
            if trie.feed.is_empty() {
                let header = Header {
                    r#type: HEADER_TYPE.to_string(),
                    metadata: options.metadata,
                    subtype: options.subtype,
                };
                trie.append(vec![prost::Message::encode_to_vec(&header).into()])
                    .await?;
            }
        }
        Ok(trie)
    }

    /// The feed.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The version: the feed's length, or the checked-out version.
    pub fn version(&self) -> u64 {
        self.version.unwrap_or_else(|| self.feed.len())
    }

    /// A read-only view of version `version` (0 counts as 1, the empty trie).
    pub fn checkout(&self, version: u64) -> Hypertrie {
        Hypertrie {
            feed: self.feed.clone(),
            version: Some(version.max(1)),
            lock: self.lock.clone(),
        }
    }

    /// Whether this is a checkout (a fixed version).
    pub fn is_checkout(&self) -> bool {
        self.version.is_some()
    }

    /// Whether puts and deletes are possible here.
    pub fn writable(&self) -> bool {
        self.version.is_none() && self.feed.writable()
    }

    /// Block 0.
    pub async fn header(&self) -> Result<Header, Error> {
        Header::decode_block(&self.block(0).await?)
    }

    /// The node stored at `seq` (`None` for the header, a reset node or past the version).
    pub async fn node(&self, seq: u64) -> Result<Option<Node>, Error> {
        if seq == 0 || seq >= self.version() {
            return Ok(None);
        }
        let node = self.load(seq).await?;
        Ok((!node.is_reset()).then_some(node))
    }

    /// The node for `key`.
    pub async fn get(&self, key: &str, options: GetOptions) -> Result<Option<Node>, Error> {
        View::new(self, self.version()).get(key, options).await
    }

    /// Puts `value` at `key`; returns the appended node.
    pub async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Node, Error> {
        self.check_writable()?;
        check_key(key)?;
        let _guard = self.lock.lock().await;
        let mut view = View::new(self, self.feed.len());
        let (node, _) = view.build(key, Some(value), options, 0).await?;
        self.append(vec![node.encode().into()]).await?;
        Ok(node)
    }

    /// Puts `value` at `key` if `condition(existing, new)` allows it: `existing` is the
    /// node for `key` now, if any, and `new` the node that would be appended (JS
    /// `condition`). Returns the appended node, or `None` when refused.
    pub async fn put_if(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
        condition: impl FnOnce(Option<&Node>, &Node) -> bool,
    ) -> Result<Option<Node>, Error> {
        self.check_writable()?;
        check_key(key)?;
        let _guard = self.lock.lock().await;
        let mut view = View::new(self, self.feed.len());
        let (node, closest) = view.build(key, Some(value), options, 0).await?;
        let existing = closest.filter(|c| c.key() == node.key());
        if !condition(existing.as_ref(), &node) {
            return Ok(None);
        }
        self.append(vec![node.encode().into()]).await?;
        Ok(Some(node))
    }

    /// Deletes `key`: appends a copy of a neighbouring key that no longer links it (or a
    /// reset node if it was the last key) and returns that node; `None` if `key` is absent.
    pub async fn del(&self, key: &str, hidden: bool) -> Result<Option<Node>, Error> {
        let appended = self
            .batch(vec![Op::Del {
                key: key.to_string(),
                hidden,
            }])
            .await?;
        Ok(appended.into_iter().next())
    }

    /// Runs `ops` in order, each seeing the ones before, and appends their nodes in one
    /// append. Returns the appended nodes (a delete of an absent key appends nothing).
    pub async fn batch(&self, ops: Vec<Op>) -> Result<Vec<Node>, Error> {
        self.check_writable()?;
        for op in &ops {
            if let Op::Put { key, .. } = op {
                check_key(key)?;
            }
        }
        let _guard = self.lock.lock().await;
        let mut view = View::new(self, self.feed.len());
        for op in ops {
            let node = match op {
                Op::Put {
                    key,
                    value,
                    options,
                } => Some(view.build(&key, Some(value), options, 0).await?.0),
                Op::Del { key, hidden } => view.del(&key, hidden).await?,
            };
            if let Some(node) = node {
                view.pending.push(node);
            }
        }
        let pending = view.pending;
        self.append(pending.iter().map(|n| n.encode().into()).collect())
            .await?;
        Ok(pending)
    }

    /// The nodes under `prefix`, in hash order (a key before its descendants).
    pub async fn list(&self, prefix: &str, options: ListOptions) -> Result<Vec<Node>, Error> {
        View::new(self, self.version()).list(prefix, options).await
    }

    /// The nodes of blocks `start..end` (clamped to this version), in order; reset nodes
    /// are left out.
    pub async fn history(&self, start: u64, end: u64) -> Result<Vec<Node>, Error> {
        let mut out = Vec::new();
        for seq in start.max(1)..end.min(self.version()) {
            if let Some(node) = self.node(seq).await? {
                out.push(node);
            }
        }
        Ok(out)
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.writable() {
            Ok(())
        } else {
            Err(Error::NotWritable {
                key: self.feed.key(),
                checkout: self.version.is_some() && self.feed.writable(),
            })
        }
    }

    async fn append(&self, blocks: Vec<Bytes>) -> Result<(), Error> {
        if blocks.is_empty() {
            return Ok(());
        }
        self.feed
            .append_batch(blocks)
            .await
            .map(|_| ())
            .map_err(|source| self.feed_error(source))
    }

    async fn block(&self, seq: u64) -> Result<Bytes, Error> {
        self.feed
            .get(seq)
            .await
            .map_err(|source| self.feed_error(source))
    }

    /// The node at `seq`. One past the feed's length (a checkout at a later version, a
    /// mount pinned there, a pointer from a hostile node) is an error, not a wait: on a
    /// feed we write it would never come, and a remote one was brought up to what its
    /// peers have before the lookup (see `MountableTrie`).
    async fn load(&self, seq: u64) -> Result<Node, Error> {
        let length = self.feed.len();
        if seq >= length {
            return Err(self.feed_error(hypercore::Error::OutOfRange {
                index: seq,
                reason: format!("the feed has {length} blocks"),
            }));
        }
        Node::decode(seq, &self.block(seq).await?)
    }

    fn feed_error(&self, source: hypercore::Error) -> Error {
        Error::Feed {
            key: self.feed.key(),
            source,
        }
    }
}

/// Refuses keys that would not read back as written. JS reads a stored node with an empty
/// key as a reset node, so putting one would hide every key from readers; and readers strip
/// one leading `/` again, so a key starting with `//` reads back as another key (`//` as
/// the empty one).
fn check_key(key: &str) -> Result<(), Error> {
    let stored = Path::new(key, false);
    let reason = if stored.key().is_empty() {
        "it is empty (JS hypertrie reads a node with an empty key as an empty trie)"
    } else if stored.key().starts_with('/') {
        "it starts with two slashes (readers strip one more and read another key)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.to_string(),
        reason,
    })
}

/// The trie at a version, plus nodes of a batch not appended yet (seqs from `version` on).
struct View<'a> {
    trie: &'a Hypertrie,
    version: u64,
    pending: Vec<Node>,
    /// Nodes loaded during this operation.
    cache: HashMap<u64, Node>,
}

impl<'a> View<'a> {
    fn new(trie: &'a Hypertrie, version: u64) -> View<'a> {
        View {
            trie,
            version,
            pending: Vec::new(),
            cache: HashMap::new(),
        }
    }

    /// The length with the pending nodes.
    fn len(&self) -> u64 {
        self.version + self.pending.len() as u64
    }

    /// The node at `seq`: one of the batch's as it is, a stored one unless it is a reset
    /// node (JS `getBySeq`, which yields nothing for every stored node with an empty key).
    async fn load(&mut self, seq: u64) -> Result<Option<Node>, Error> {
        if let Some(node) = seq
            .checked_sub(self.version)
            .and_then(|k| self.pending.get(k as usize))
        {
            return Ok(Some(node.clone()));
        }
        if let Some(node) = self.cache.get(&seq) {
            return Ok(Some(node.clone()).filter(|n| !n.is_reset()));
        }
        if seq == 0 || seq >= self.len() {
            return Err(Error::Decode {
                seq,
                reason: format!("a pointer past the trie's version {}", self.len()),
            });
        }
        let node = self.trie.load(seq).await?;
        self.cache.insert(seq, node.clone());
        Ok(Some(node).filter(|n| !n.is_reset()))
    }

    /// The newest node: the batch's last, else the stored head.
    async fn head(&mut self) -> Result<Option<Node>, Error> {
        let len = self.len();
        if len < 2 {
            return Ok(None);
        }
        self.load(len - 1).await
    }

    /// Among the chain at `(i, v)` of `node`'s buckets, the last node that does not differ
    /// from `target` at checkpoint `i`.
    async fn follow_chain(
        &mut self,
        node: &Node,
        i: usize,
        v: usize,
        target: &Path,
    ) -> Result<Option<Node>, Error> {
        let mut found = None;
        let chain: Vec<u64> = node.buckets.chain(i, v).collect();
        for seq in chain {
            if let Some(candidate) = self.load(seq).await? {
                if !candidate.path.differs(target, i) {
                    found = Some(candidate);
                }
            }
        }
        Ok(found)
    }

    async fn get(&mut self, key: &str, options: GetOptions) -> Result<Option<Node>, Error> {
        let target = Path::new(key, options.hidden);
        let Some(mut h) = self.head().await? else {
            return Ok(None);
        };
        let len = target.len() - usize::from(options.prefix);
        for i in 0..len {
            let v = target.symbol(i);
            let cp = is_checkpoint(i);
            if h.path.symbol(i) == v && !(cp && target.differs(&h.path, i)) {
                continue;
            }
            if cp {
                match self
                    .follow_chain(&h.clone(), i, v as usize, &target)
                    .await?
                {
                    Some(next) => h = next,
                    None => return Ok(None),
                }
                continue;
            }
            match h.buckets.get(i, v as usize) {
                Some(seq) => match self.load(seq).await? {
                    Some(next) => h = next,
                    None => return Ok(None),
                },
                None => return Ok(options.closest.then_some(h)),
            }
        }
        Ok(Some(h))
    }

    /// The node a put of `key` would append next (seq = the current length), with its
    /// pointers copied from the head, skipping `deleted`; and the node the walk ended at.
    async fn build(
        &mut self,
        key: &str,
        value: Option<Bytes>,
        options: PutOptions,
        deleted: u64,
    ) -> Result<(Node, Option<Node>), Error> {
        let path = Path::new(key, options.hidden);
        let mut buckets = Buckets::default();
        let push = |buckets: &mut Buckets, i: usize, s: usize, seq: u64| {
            if seq != deleted {
                buckets.push(i, s, seq);
            }
        };
        let mut head = self.head().await?;
        let mut i = 0;
        while let Some(h) = head.clone() {
            if i >= path.len() {
                break;
            }
            let cp = is_checkpoint(i);
            let v = path.symbol(i) as usize;
            let hv = h.path.symbol(i) as usize;
            let slots: Vec<(usize, u64)> = h.buckets.slots(i).collect();
            for (j, seq) in slots {
                if j == v && !cp {
                    continue;
                }
                // At a checkpoint, only branches whose strings differ from ours (the
                // others are our own path, rebuilt below).
                if !cp {
                    push(&mut buckets, i, j, seq);
                } else if seq != deleted {
                    let other = self.load(seq).await?;
                    if other.is_some_and(|o| o.path.differs(&path, i)) {
                        push(&mut buckets, i, j, seq);
                    }
                }
            }
            if hv == v && !(cp && path.differs(&h.path, i)) {
                i += 1;
                continue;
            }
            push(&mut buckets, i, hv, h.seq);
            if cp {
                head = self.follow_chain(&h, i, v, &path).await?;
                i += 1;
                continue;
            }
            match h.buckets.get(i, v) {
                Some(seq) => head = self.load(seq).await?,
                None => break,
            }
            i += 1;
        }
        let node = Node {
            seq: self.len(),
            path,
            value,
            flags: options.flags,
            buckets,
        };
        Ok((node, head))
    }

    async fn del(&mut self, key: &str, hidden: bool) -> Result<Option<Node>, Error> {
        let target = Path::new(key, hidden);
        let Some(mut h) = self.head().await? else {
            return Ok(None);
        };
        let mut closest = 0;
        for i in 0..target.len() {
            let v = target.symbol(i) as usize;
            if h.path.symbol(i) as usize == v {
                if let Some((_, seq)) = h.buckets.slots(i).find(|&(j, _)| j != v) {
                    closest = seq;
                }
                continue;
            }
            match h.buckets.get(i, v) {
                Some(seq) => {
                    closest = h.seq;
                    match self.load(seq).await? {
                        Some(next) => h = next,
                        None => return Ok(None),
                    }
                }
                None => return Ok(None),
            }
        }
        if h.key() != target.key() {
            return Ok(None);
        }
        let deleted = h.seq;
        let options = |hidden, flags| PutOptions { hidden, flags };
        let neighbour = match closest {
            0 => None,
            seq => self.load(seq).await?,
        };
        let node = match neighbour {
            None => {
                self.build("", None, options(h.hidden(), 0), deleted)
                    .await?
                    .0
            }
            Some(c) => {
                let options = options(c.hidden(), c.flags);
                self.build(c.key(), c.value.clone(), options, deleted)
                    .await?
                    .0
            }
        };
        Ok(Some(node))
    }

    async fn list(&mut self, prefix: &str, options: ListOptions) -> Result<Vec<Node>, Error> {
        // Pushed in this order onto a stack, so visited in the reverse.
        let order: [u8; 5] = if options.reverse {
            [END, 0, 1, 2, 3]
        } else {
            [3, 2, 1, 0, END]
        };
        let target = Path::new(prefix, options.hidden);
        let start = target.len() - 1;
        let end = if options.recursive {
            usize::MAX
        } else {
            start + 32
        };
        let first = self
            .get(
                prefix,
                GetOptions {
                    hidden: options.hidden,
                    prefix: true,
                    closest: false,
                },
            )
            .await?;
        let mut out = Vec::new();
        let mut stack: Vec<(usize, Node)> = first.into_iter().map(|n| (start, n)).collect();
        // Honest pointers lead to each node at most once in a listing (each to an older
        // node, along one hash prefix); a hostile trie's may lead round in circles, and a
        // walk that followed them would grow without end. Each node is entered once.
        let mut entered: std::collections::HashSet<u64> =
            stack.iter().map(|(_, n)| n.seq).collect();
        while let Some((i, node)) = stack.pop() {
            if i >= node.path.len().min(end) {
                if !node.is_reset() {
                    out.push(node);
                }
                continue;
            }
            for &s in &order {
                if s == END && options.gt && i == start {
                    continue;
                }
                let before = stack.len();
                if node.path.symbol(i) == s {
                    stack.push((i + 1, node.clone()));
                }
                let chain: Vec<u64> = (s as usize..)
                    .step_by(5)
                    .take_while(|&slot| slot < 64)
                    .filter_map(|slot| node.buckets.get(i, slot))
                    .collect();
                for seq in chain {
                    if !entered.insert(seq) {
                        continue;
                    }
                    // A reset node stands for nothing here (JS would fail on it).
                    if let Some(next) = self.load(seq).await? {
                        stack.push((i + 1, next));
                    }
                }
                // Keys whose hashes collide here pop in ascending key order.
                stack[before..].sort_by(|a, b| b.1.key().cmp(a.1.key()));
            }
        }
        Ok(out)
    }
}
