//! Hypertrie 5 (spec trie.md): a single-writer key/value trie stored as a hypercore, one
//! node per block, byte-compatible with JS hypertrie 5.1. Each put or delete appends a
//! node that is the root of a new immutable version, so every past version stays
//! readable ([`Hypertrie::checkout`], [`Hypertrie::snapshot`]), and versions can be
//! compared ([`Hypertrie::diff`], resumable from checkpoints), replayed
//! ([`Hypertrie::history`]) and watched ([`Hypertrie::watch`]). Works on sparse feeds: a
//! lookup fetches only the blocks on its way, in one go when peers speak the `hypertrie`
//! extension ([`Hypertrie::open_replicated`]). [`MountableTrie`] follows mounts of other
//! tries (mountable-hypertrie 2.8), for lookups, listings, diffs, history and watches.

mod buckets;
mod cache;
#[cfg(test)]
mod collisions;
mod diff;
mod extension;
mod history;
mod mount_versions;
mod mounts;
mod node;
mod path;
mod resolve;
mod watch;

use std::sync::Arc;

use bytes::Bytes;
use hypercore::Feed;

pub use buckets::Buckets;
pub use diff::{Diff, DiffCheckpoint, DiffEntry, DiffOptions};
pub use extension::{ExtensionStats, EXTENSION};
pub use history::HistoryOptions;
pub use mount_versions::{ChangeKind, MountDiffEntry, MountHistoryEntry, MountPoint};
pub use mounts::{is_normal_path, normalize_path, MountRecord, MOUNT_FLAG};
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
    /// A diff checkpoint that does not decode.
    #[error("a diff checkpoint does not decode: {reason}")]
    Checkpoint {
        /// Why.
        reason: String,
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

/// A put built by [`Hypertrie::prepare_put`], not appended yet. It holds the trie's
/// writer lock: its node stays the next one until it is committed, or dropped unwritten.
pub struct PreparedPut {
    trie: Hypertrie,
    node: Node,
    existing: Option<Node>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for PreparedPut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedPut")
            .field("trie", &self.trie)
            .field("key", &self.node.key())
            .field("seq", &self.node.seq)
            .finish()
    }
}

impl PreparedPut {
    /// The node the put appends.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node for the key now, if any.
    pub fn existing(&self) -> Option<&Node> {
        self.existing.as_ref()
    }

    /// What hashes and signs the node's block as the feed's next append, for
    /// [`Self::commit_signed`]: CPU work (one signature), to run on any thread, at the
    /// same time as other work.
    pub fn signer(
        &self,
    ) -> impl FnOnce() -> Result<hypercore::PreparedAppend, Error> + Send + 'static {
        let (trie, block) = (self.trie.clone(), Bytes::from(self.node.encode()));
        move || {
            trie.feed
                .prepare_append(vec![block])
                .map_err(|source| trie.feed_error(source))
        }
    }

    /// Appends the node on this thread with its block as [`Self::signer`] signed it
    /// (signed again if something else was appended meanwhile); returns it.
    pub fn commit_signed(self, signed: hypercore::PreparedAppend) -> Result<Node, Error> {
        let appended = self
            .trie
            .feed
            .commit_append(signed)
            .map_err(|source| self.trie.feed_error(source))?;
        self.trie
            .keep_appended(std::slice::from_ref(&self.node), appended.start);
        Ok(self.node)
    }

    /// Appends the node; returns it.
    pub async fn commit(self) -> Result<Node, Error> {
        self.trie
            .append_nodes(std::slice::from_ref(&self.node))
            .await?;
        Ok(self.node)
    }
}

/// A hypertrie on a feed, at its latest version or checked out at an older one. Cheap to
/// clone; clones share the writer's lock and their nodes in the process's cache.
#[derive(Clone)]
pub struct Hypertrie {
    feed: Feed,
    /// `Some` for a checkout.
    version: Option<u64>,
    /// Writers hold it from reading the head to appending (spec §6.2).
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The feed's `hypertrie` extension, when opened with a replicator.
    extension: Option<Arc<extension::Service>>,
    /// Its nodes' key in the process's cache of decoded nodes.
    cache_id: u64,
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
            extension: None,
            cache_id: cache::new_trie_id(),
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
            version: Some(version.max(1)),
            ..self.clone()
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
        let node = self.load(seq, false).await?;
        Ok((!node.is_reset()).then(|| Node::clone(&node)))
    }

    /// The node for `key`.
    pub async fn get(&self, key: &str, options: GetOptions) -> Result<Option<Node>, Error> {
        let mut view = View::new(self, self.version());
        view.asking = extension::Asking::get(self, view.version, key);
        view.get(key, options).await
    }

    /// Puts `value` at `key`; returns the appended node.
    pub async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Node, Error> {
        self.prepare_put(key, value, options).await?.commit().await
    }

    /// Builds the node a put of `value` at `key` appends, holding the trie's writer lock
    /// until the put is committed or dropped (then nothing is written): the caller sees
    /// what the key holds now before deciding, and can append something else first
    /// (hyperdrive: a file's content, before its Stat).
    pub async fn prepare_put(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<PreparedPut, Error> {
        self.check_writable()?;
        check_key(key)?;
        let guard = self.lock.clone().lock_owned().await;
        let mut view = View::new(self, self.feed.len());
        let (node, closest) = view.build(key, Some(value), options, 0).await?;
        let existing = closest.filter(|c| c.key() == node.key());
        Ok(PreparedPut {
            trie: self.clone(),
            node,
            existing,
            _guard: guard,
        })
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
        let put = self.prepare_put(key, value, options).await?;
        if !condition(put.existing(), put.node()) {
            return Ok(None);
        }
        put.commit().await.map(Some)
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
        self.append_nodes(&pending).await?;
        Ok(pending)
    }

    /// The nodes under `prefix`, in hash order (a key before its descendants).
    pub async fn list(&self, prefix: &str, options: ListOptions) -> Result<Vec<Node>, Error> {
        let mut view = View::new(self, self.version());
        view.asking = extension::Asking::iterator(self, view.version, prefix, options);
        view.list(prefix, options).await
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

    /// Appends `nodes` (built with the seqs from the feed's length on) and keeps them in
    /// the cache: the next write walks down from the newest node.
    async fn append_nodes(&self, nodes: &[Node]) -> Result<(), Error> {
        if nodes.is_empty() {
            return Ok(());
        }
        let appended = self
            .feed
            .append_batch_at(nodes.iter().map(|n| Bytes::from(n.encode())))
            .await
            .map_err(|source| self.feed_error(source))?;
        self.keep_appended(nodes, appended.start);
        Ok(())
    }

    /// Keeps `nodes`, just appended from seq `start` on, in the cache: the next write
    /// walks down from the newest. Unless something appended to the feed without this
    /// trie's lock, which gave them other seqs than they were built with.
    fn keep_appended(&self, nodes: &[Node], start: u64) {
        if nodes.first().is_some_and(|n| n.seq == start) {
            for node in nodes {
                self.keep(node.clone());
            }
        }
    }

    async fn block(&self, seq: u64) -> Result<Bytes, Error> {
        self.feed
            .get(seq)
            .await
            .map_err(|source| self.feed_error(source))
    }

    /// The node at `seq`, from the cache or decoded from its block. One past the feed's
    /// length (a checkout at a later version, a mount pinned there, a pointer from a
    /// hostile node) is an error, not a wait: on a feed we write it would never come, and
    /// a remote one was brought up to what its peers have before the lookup (see
    /// `MountableTrie`). A `listing` reads a block with the run of blocks around it.
    async fn load(&self, seq: u64, listing: bool) -> Result<Arc<Node>, Error> {
        let block = match self.cached_or_run_block(seq) {
            Ok(node) => return Ok(node),
            Err(block) => block,
        };
        let length = self.feed.len();
        if seq >= length {
            return Err(self.feed_error(hypercore::Error::OutOfRange {
                index: seq,
                reason: format!("the feed has {length} blocks"),
            }));
        }
        let block = match block {
            Some(block) => block,
            None if listing => self.read_run_around(seq).await?,
            None => self.block(seq).await?,
        };
        Ok(self.keep(Node::decode(seq, &block)?))
    }

    /// The node at `seq` if its block is stored here; never waits for peers.
    async fn load_stored(&self, seq: u64) -> Result<Arc<Node>, Error> {
        let block = match self.cached_or_run_block(seq) {
            Ok(node) => return Ok(node),
            Err(Some(block)) => block,
            Err(None) => self
                .feed
                .get_with(seq, hypercore::GetOptions::no_wait())
                .await
                .map_err(|source| self.feed_error(source))?,
        };
        Ok(self.keep(Node::decode(seq, &block)?))
    }

    /// The node at `seq` if cached, else its block if a cached run holds it.
    fn cached_or_run_block(&self, seq: u64) -> Result<Arc<Node>, Option<Bytes>> {
        let mut cache = cache::shared();
        match cache.get(self.cache_id, seq) {
            Some(node) => Ok(node),
            None => Err(cache.run_block(self.cache_id, seq)),
        }
    }

    /// Block `seq`, read with the aligned run of blocks around it (one read instead of
    /// one per block), which the cache keeps for the listing's next loads; alone when the
    /// run is not all stored here.
    async fn read_run_around(&self, seq: u64) -> Result<Bytes, Error> {
        let start = seq - seq % cache::RUN_BLOCKS;
        let end = (start + cache::RUN_BLOCKS).min(self.feed.len());
        if self.feed.has_range(start, end) {
            let blocks = self
                .feed
                .read_run(start, end, cache::RUN_BYTES)
                .await
                .map_err(|source| self.feed_error(source))?;
            if let Some(block) = blocks.get((seq - start) as usize).cloned() {
                let evicted = cache::shared().put_run(self.cache_id, start, blocks);
                drop(evicted);
                return Ok(block);
            }
        }
        self.block(seq).await
    }

    fn cached(&self, seq: u64) -> Option<Arc<Node>> {
        cache::shared().get(self.cache_id, seq)
    }

    fn keep(&self, node: Node) -> Arc<Node> {
        let node = Arc::new(node);
        let evicted = cache::shared().put(self.cache_id, node.clone());
        drop(evicted);
        node
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
    /// Answering a peer's lookup: read stored blocks only, and note every seq the lookup
    /// touches where JS's `onseq` would (JS `{wait: false, onseq}`).
    touched: Option<Vec<u64>>,
    /// What to ask peers for when a block has to come from the network.
    asking: Option<extension::Asking>,
}

impl<'a> View<'a> {
    fn new(trie: &'a Hypertrie, version: u64) -> View<'a> {
        View {
            trie,
            version,
            pending: Vec::new(),
            touched: None,
            asking: None,
        }
    }

    /// Notes `seq` as touched, when answering a peer.
    fn touch(&mut self, seq: u64) {
        if let Some(touched) = &mut self.touched {
            touched.push(seq);
        }
    }

    /// The length with the pending nodes.
    fn len(&self) -> u64 {
        self.version + self.pending.len() as u64
    }

    /// The node at `seq`: one of the batch's as it is, a stored one unless it is a reset
    /// node (JS `getBySeq`, which yields nothing for every stored node with an empty key).
    async fn load(&mut self, seq: u64) -> Result<Option<Node>, Error> {
        Ok(self.shared(seq).await?.map(Arc::unwrap_or_clone))
    }

    /// [`Self::load`] without copying the node: walks hold and stack nodes by reference.
    async fn shared(&mut self, seq: u64) -> Result<Option<Arc<Node>>, Error> {
        self.shared_with(seq, false).await
    }

    /// [`Self::shared`] for a listing, which reads blocks in runs.
    async fn listed(&mut self, seq: u64) -> Result<Option<Arc<Node>>, Error> {
        self.shared_with(seq, true).await
    }

    async fn shared_with(&mut self, seq: u64, listing: bool) -> Result<Option<Arc<Node>>, Error> {
        if let Some(node) = seq
            .checked_sub(self.version)
            .and_then(|k| self.pending.get(k as usize))
        {
            return Ok(Some(Arc::new(node.clone())));
        }
        if seq == 0 || seq >= self.len() {
            return Err(Error::Decode {
                seq,
                reason: format!("a pointer past the trie's version {}", self.len()),
            });
        }
        let node = match self.touched {
            Some(_) => self.trie.load_stored(seq).await?,
            None => self.trie.load(seq, listing).await?,
        };
        Ok(Some(node).filter(|n| !n.is_reset()))
    }

    /// The newest node: the batch's last, else the stored head.
    async fn head(&mut self) -> Result<Option<Arc<Node>>, Error> {
        let len = self.len();
        if len < 2 {
            return Ok(None);
        }
        self.shared(len - 1).await
    }

    /// Among the chain at `(i, v)` of `node`'s buckets, the last node that does not differ
    /// from `target` at checkpoint `i`.
    async fn follow_chain(
        &mut self,
        node: &Node,
        i: usize,
        v: usize,
        target: &Path,
    ) -> Result<Option<Arc<Node>>, Error> {
        let mut found = None;
        let chain: Vec<u64> = node.buckets.chain(i, v).collect();
        for seq in chain {
            self.touch(seq);
            self.ask_before(seq, None);
            if let Some(candidate) = self.shared(seq).await? {
                if !candidate.path.differs(target, i) {
                    found = Some(candidate);
                }
            }
        }
        Ok(found)
    }

    async fn get(&mut self, key: &str, options: GetOptions) -> Result<Option<Node>, Error> {
        let target = Path::new(key, options.hidden);
        let Some(head) = self.len().checked_sub(1).filter(|&h| h > 0) else {
            return Ok(None);
        };
        self.touch(head);
        self.ask_before(head, None);
        let Some(mut h) = self.shared(head).await? else {
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
                Some(seq) => match self.step(seq).await? {
                    Some(next) => h = next,
                    None => return Ok(None),
                },
                None => return Ok(options.closest.then(|| Arc::unwrap_or_clone(h))),
            }
        }
        Ok(Some(Arc::unwrap_or_clone(h)))
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
            // At a checkpoint, only branches whose strings differ from ours (the others
            // are our own path, rebuilt below). JS pushes these once they have loaded,
            // after the head's own push below: in a collision chain the head comes first.
            let mut colliding = Vec::new();
            for (j, seq) in slots {
                if j == v && !cp {
                    continue;
                }
                if !cp {
                    push(&mut buckets, i, j, seq);
                } else if seq != deleted {
                    let other = self.shared(seq).await?;
                    if other.is_some_and(|o| o.path.differs(&path, i)) {
                        colliding.push((j, seq));
                    }
                }
            }
            let on_path = hv == v && !(cp && path.differs(&h.path, i));
            if !on_path {
                push(&mut buckets, i, hv, h.seq);
            }
            for (j, seq) in colliding {
                push(&mut buckets, i, j, seq);
            }
            if on_path {
                i += 1;
                continue;
            }
            if cp {
                head = self.follow_chain(&h, i, v, &path).await?;
                i += 1;
                continue;
            }
            match h.buckets.get(i, v) {
                Some(seq) => head = self.shared(seq).await?,
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
        Ok((node, head.map(Arc::unwrap_or_clone)))
    }

    /// The node a delete of `key` appends (spec §6.4): a copy of the deepest other branch
    /// along the key's path that no longer links the key, or a reset node.
    ///
    /// Where hashes collide this departs from JS, which ignores collision chains here: a
    /// delete there is a no-op for a key behind a colliding one, and drops both keys
    /// when deleting the other. This walk follows the chains as `get` does, and counts
    /// colliding keys in them as neighbours; without collisions both are the same.
    async fn del(&mut self, key: &str, hidden: bool) -> Result<Option<Node>, Error> {
        let target = Path::new(key, hidden);
        let Some(mut h) = self.head().await? else {
            return Ok(None);
        };
        let mut closest = 0;
        for i in 0..target.len() {
            let v = target.symbol(i) as usize;
            let cp = is_checkpoint(i);
            if h.path.symbol(i) as usize == v && !(cp && target.differs(&h.path, i)) {
                // At a checkpoint, slots of our own symbol hold keys whose hashes collide
                // with ours (always empty without collisions): neighbours too.
                let neighbour = h.buckets.slots(i).find(|&(j, _)| j != v || cp);
                if let Some((_, seq)) = neighbour {
                    closest = seq;
                }
                continue;
            }
            let next = if cp {
                self.follow_chain(&h.clone(), i, v, &target).await?
            } else {
                match h.buckets.get(i, v) {
                    Some(seq) => self.shared(seq).await?,
                    None => return Ok(None),
                }
            };
            match next {
                Some(next) => {
                    closest = h.seq;
                    h = next;
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

    /// Loads `seq`, the next node of a lookup: touched, and asked for if missing.
    async fn step(&mut self, seq: u64) -> Result<Option<Arc<Node>>, Error> {
        self.touch(seq);
        self.ask_before(seq, None);
        self.shared(seq).await
    }

    async fn list(&mut self, prefix: &str, options: ListOptions) -> Result<Vec<Node>, Error> {
        let mut walk = Walk::open(self, prefix, options, None).await?;
        let mut out = Vec::new();
        while let Some(node) = walk.next(self).await? {
            out.push(node);
        }
        Ok(out)
    }
}

/// A node on a listing's stack, and the path position it continues from. Its node loads
/// after the step that pushed it.
#[derive(Debug)]
struct Entry {
    i: usize,
    seq: u64,
    node: Option<Arc<Node>>,
}

/// The stack as JS's iterator checkpoint encodes it: varints of each entry's position and
/// seq, from the bottom.
fn encode_checkpoint(stack: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in stack {
        out.extend_from_slice(&varint::encode(entry.i as u64));
        out.extend_from_slice(&varint::encode(entry.seq));
    }
    out
}

/// A listing in progress (spec §6.5, JS `lib/iterator.js`).
struct Walk {
    /// The prefix's position: where `gt` leaves out the prefix key.
    start: usize,
    /// Nodes are emitted at this position (or their end).
    end: usize,
    gt: bool,
    /// Pushed in this order onto the stack, so visited in the reverse.
    order: [u8; 5],
    stack: Vec<Entry>,
    /// Nodes pointers led to so far. Honest pointers lead to each node at most once in a
    /// listing (each to an older node, along one hash prefix); a hostile trie's may lead
    /// round in circles, and a walk that followed them would grow without end.
    entered: std::collections::HashSet<u64>,
}

impl Walk {
    /// A listing of `prefix`, from the newest node under it, or from the stack of a
    /// `checkpoint` (JS iterator checkpoints: varint pairs of position and seq).
    async fn open(
        view: &mut View<'_>,
        prefix: &str,
        options: ListOptions,
        checkpoint: Option<&[(u64, u64)]>,
    ) -> Result<Walk, Error> {
        let start = Path::new(prefix, options.hidden).len() - 1;
        let get = GetOptions {
            hidden: options.hidden,
            prefix: true,
            closest: false,
        };
        let first = view.get(prefix, get).await?;
        if let Some(extension::Asking::Iterator { opened, .. }) = &mut view.asking {
            *opened = true;
        }
        let mut walk = Walk {
            start,
            end: if options.recursive {
                usize::MAX
            } else {
                start + 32
            },
            gt: options.gt,
            order: if options.reverse {
                [END, 0, 1, 2, 3]
            } else {
                [3, 2, 1, 0, END]
            },
            stack: Vec::new(),
            entered: std::collections::HashSet::new(),
        };
        match checkpoint {
            None => {
                if let Some(node) = first {
                    walk.entered.insert(node.seq);
                    walk.stack.push(Entry {
                        i: start,
                        seq: node.seq,
                        node: Some(Arc::new(node)),
                    });
                }
            }
            Some(entries) => {
                for &(i, seq) in entries {
                    let i = usize::try_from(i).unwrap_or(usize::MAX);
                    walk.entered.insert(seq);
                    walk.push(view, i, seq);
                }
                walk.load(view, 0).await?;
            }
        }
        Ok(walk)
    }

    /// Pushes `seq` to be loaded, as JS's `_push` does: touched, and asked for if
    /// missing (with the stack as it is now).
    fn push(&mut self, view: &mut View<'_>, i: usize, seq: u64) {
        self.stack.push(Entry { i, seq, node: None });
        view.touch(seq);
        if let Some(extension::Asking::Iterator { missing, .. }) = &mut view.asking {
            *missing = missing.saturating_sub(1);
        }
        view.ask_before(seq, Some(&self.stack));
    }

    /// Loads the entries from `from` up; reset nodes stand for nothing and go (JS would
    /// fail on them).
    async fn load(&mut self, view: &mut View<'_>, from: usize) -> Result<(), Error> {
        for at in from..self.stack.len() {
            if self.stack[at].node.is_none() {
                self.stack[at].node = view.listed(self.stack[at].seq).await?;
            }
        }
        Ok(())
    }

    /// The next node, in hash order (a key before its descendants).
    async fn next(&mut self, view: &mut View<'_>) -> Result<Option<Node>, Error> {
        while let Some(top) = self.stack.pop() {
            // Entries without a node were dropped when their step's loads finished.
            let Some(node) = top.node else { continue };
            let mut i = top.i;
            let limit = node.path.len().min(self.end);
            // Where no bucket branches off, the walk goes on along the node's own path (to
            // the prefix's position at most, where `gt` leaves out the prefix key).
            if i < limit {
                let gt_stop = if self.gt && self.start >= i {
                    self.start
                } else {
                    usize::MAX
                };
                let branch = node.buckets.next_branch(i).unwrap_or(usize::MAX);
                i = branch.min(gt_stop).min(limit);
            }
            if i >= limit {
                return Ok(Some(Arc::unwrap_or_clone(node)));
            }
            let base = self.stack.len();
            let mut collisions = Vec::new();
            let bucket = node.buckets.bucket_slots(i);
            let bucket = &bucket[..bucket.len().min(64)];
            for s in self.order {
                if s == END && self.gt && i == self.start {
                    continue;
                }
                let before = self.stack.len();
                if node.path.symbol(i) == s {
                    self.stack.push(Entry {
                        i: i + 1,
                        seq: node.seq,
                        node: Some(node.clone()),
                    });
                }
                for &seq in bucket.iter().skip(s as usize).step_by(5) {
                    if seq != buckets::EMPTY && self.entered.insert(seq) {
                        self.push(view, i + 1, seq);
                    }
                }
                if self.stack.len() - before > 1 {
                    collisions.push((before, self.stack.len()));
                }
            }
            self.load(view, base).await?;
            // Keys whose hashes collide here pop in ascending key order.
            for (from, to) in collisions {
                let key = |e: &Entry| e.node.as_ref().map(|n| n.key().to_string());
                self.stack[from..to].sort_by_key(|e| std::cmp::Reverse(key(e)));
            }
            let pushed = self.stack.split_off(base);
            self.stack
                .extend(pushed.into_iter().filter(|e| e.node.is_some()));
        }
        Ok(None)
    }
}
