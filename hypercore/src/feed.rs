//! [`Feed`]: the async handle on an open hypercore.
//!
//! All state lives in a [`FeedCore`] behind one lock. Work that hashes or writes (append,
//! put, clear, audit, large reads) runs on tokio's blocking pool; short reads of
//! small blocks from the page cache run inline, where a thread hop would cost more than
//! the read (see the `log` benchmark).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, oneshot, watch};

use crate::core::{
    AuditReport, FeedCore, FeedOptions, Origin, Proof, ProofRequest, PutOutcome, SeekOutcome,
    SignatureAt, SignedAppend,
};
use crate::crypto::{self, DiscoveryKey, PublicKey, Signature};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::storage::{DiskStorage, MemoryStorage, Storage};
use crate::tree::RemoteTree;

/// Events kept for slow subscribers. The buffer is allocated when the feed opens, so it
/// is kept small: a process may hold hundreds of open feeds.
pub const EVENT_BACKLOG: usize = 256;

/// Blocks up to this size are read inline; larger ones on the blocking pool.
const INLINE_READ_LIMIT: u64 = 256 * 1024;
/// Batches up to this many bytes are appended inline: hashing, one signature (~17 us)
/// and a few writes to the page cache cost less than the two thread wake-ups of a hop
/// to the blocking pool (~35 us each on a 2-core VM), and keep small writers (a
/// hyperdrive's Stats, small files) from waiting on the pool behind large ones.
const INLINE_APPEND_LIMIT: u64 = 16 * 1024;

/// Something that happened to a feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The feed grew (by an append, or a peer proving a longer feed).
    Append {
        /// New length.
        length: u64,
        /// New byte length.
        byte_length: u64,
    },
    /// A block arrived from a peer (or a local `put`) and was stored.
    Download {
        /// The block.
        index: u64,
        /// Its size.
        bytes: u64,
        /// Where it came from.
        origin: Origin,
    },
    /// A block was served to a peer.
    Upload {
        /// The block.
        index: u64,
        /// Its size.
        bytes: u64,
    },
    /// Every block from 0 to the length is now stored locally.
    Sync,
    /// Blocks `[start, end)` were removed from local storage.
    Clear {
        /// First block.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// The feed was closed.
    Close,
}

/// Where an appended batch landed ([`Feed::append_batch_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Index of the batch's first block.
    pub start: u64,
    /// Byte offset of that block in the feed.
    pub start_byte: u64,
    /// The feed's length after the batch.
    pub length: u64,
}

/// Blocks hashed and signed as a feed's next append ([`Feed::prepare_append`]), to be
/// written by [`Feed::commit_append`].
#[derive(Debug)]
pub struct PreparedAppend {
    blocks: Vec<Bytes>,
    /// `None` for a large batch, hashed while it is written.
    signed: Option<SignedAppend>,
}

/// Blocks with their merkle leaf hashes, hashed ahead of an append (on any thread, with
/// no lock held) so that [`Feed::prepare_hashed`] has only the tree and one signature
/// left to compute. Built only by hashing, so a hash always matches its block.
#[derive(Debug, Default)]
pub struct HashedBlocks {
    blocks: Vec<Bytes>,
    hashes: Vec<crypto::Hash>,
}

impl HashedBlocks {
    /// Hashes `blocks` (several at a time: SIMD hashing across blocks is what makes a
    /// batch of many small blocks cheaper than hashing them one by one).
    pub fn new(blocks: Vec<Bytes>) -> HashedBlocks {
        let mut hashes = Vec::with_capacity(blocks.len());
        crypto::leaf_hashes(&blocks, &mut hashes);
        HashedBlocks { blocks, hashes }
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Bytes] {
        &self.blocks
    }

    /// The leaf hash of each block.
    pub fn hashes(&self) -> &[crypto::Hash] {
        &self.hashes
    }

    /// How many blocks there are.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Removes the blocks in `range` with their hashes.
    pub fn remove(&mut self, range: std::ops::Range<usize>) {
        self.blocks.drain(range.clone());
        self.hashes.drain(range);
    }
}

/// Where stored blocks lie on disk ([`Feed::stored_file`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// The feed's data file: block `i` is at its byte offset there.
    pub path: std::path::PathBuf,
    /// Where the first block starts in it.
    pub offset: u64,
    /// How many bytes the blocks hold.
    pub length: u64,
    /// [`Feed::clears`] when the blocks were found stored.
    pub clears: u64,
}

/// Options for [`Feed::get_with`].
#[derive(Clone, Copy, Debug)]
pub struct GetOptions {
    /// Wait for the block to arrive when it is not stored (default true).
    pub wait: bool,
    /// Give up after this long (default: no limit).
    pub timeout: Option<Duration>,
}

impl Default for GetOptions {
    fn default() -> Self {
        GetOptions {
            wait: true,
            timeout: None,
        }
    }
}

impl GetOptions {
    /// Fail with [`Error::NotAvailable`] instead of waiting.
    pub fn no_wait() -> Self {
        GetOptions {
            wait: false,
            timeout: None,
        }
    }

    /// Wait at most `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        GetOptions {
            wait: true,
            timeout: Some(timeout),
        }
    }
}

/// Length and byte length, published on every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Status {
    length: u64,
    byte_length: u64,
    /// Bumped on every change to what is stored, so waiters can retry.
    version: u64,
    closed: bool,
}

/// `get` calls waiting for blocks, and the wake-ups due once the lock is released.
#[derive(Default)]
struct Waiting {
    /// Each waiter receives the block itself, so it need not read it back.
    waiters: HashMap<u64, Vec<oneshot::Sender<Bytes>>>,
    /// Woken only after the feed's lock is released, so the woken task does not
    /// immediately block on it.
    due: Vec<(oneshot::Sender<Bytes>, Bytes)>,
}

impl Waiting {
    /// Hands `blocks` (starting at block `start`) to the `get`s waiting for them.
    fn wake(&mut self, start: u64, blocks: &[Bytes]) {
        if self.waiters.is_empty() {
            return;
        }
        let end = start + blocks.len() as u64;
        let ready: Vec<u64> = if blocks.len() <= self.waiters.len() {
            (start..end)
                .filter(|i| self.waiters.contains_key(i))
                .collect()
        } else {
            self.waiters
                .keys()
                .copied()
                .filter(|i| (start..end).contains(i))
                .collect()
        };
        for i in ready {
            for tx in self.waiters.remove(&i).unwrap_or_default() {
                self.due.push((tx, blocks[(i - start) as usize].clone()));
            }
        }
    }
}

struct State {
    /// `None` once closed.
    core: Option<FeedCore>,
    waiting: Waiting,
    /// Lengths awaited by `update` calls (with how many callers await each).
    updates: BTreeMap<u64, usize>,
    /// Byte offsets awaited by `seek` calls the local tree could not resolve.
    seeks: BTreeMap<u64, usize>,
}

/// What local callers are waiting for, so replication knows what to fetch first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// Blocks awaited by `get` (ascending).
    pub blocks: Vec<u64>,
    /// The smallest length awaited by `update`, if any.
    pub length: Option<u64>,
    /// Byte offsets awaited by `seek` (ascending).
    pub seeks: Vec<u64>,
}

struct Inner {
    key: PublicKey,
    discovery_key: DiscoveryKey,
    sparse: bool,
    writable: bool,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    /// Set once by [`Feed::close`]: apart from `status`, so that waiting for the close
    /// is not woken by every append.
    closed: watch::Sender<bool>,
    events: broadcast::Sender<Event>,
    /// Bumped whenever [`Demand`] changes.
    demand: watch::Sender<u64>,
    /// See [`Feed::lock_writer`].
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// An open hypercore: a signed, append-only log of blocks. Cheap to clone; all clones
/// share the same feed.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = *self.inner.status.borrow();
        f.debug_struct("Feed")
            .field("key", &self.inner.key)
            .field("length", &s.length)
            .field("byte_length", &s.byte_length)
            .field("writable", &self.inner.writable)
            .finish()
    }
}

fn panicked(e: tokio::task::JoinError) -> Error {
    // A bug, not bad input: keep the process alive but say so plainly.
    Error::Internal {
        reason: format!("a storage task panicked: {e}"),
    }
}

impl Feed {
    /// Opens (or creates) the feed in `storage`.
    pub async fn open(storage: impl Storage + 'static, options: FeedOptions) -> Result<Feed> {
        let sparse = options.sparse;
        let core = tokio::task::spawn_blocking(move || FeedCore::open(&storage, &options))
            .await
            .map_err(panicked)??;
        let key = core.key();
        let status = Status {
            length: core.len(),
            byte_length: core.byte_len(),
            version: 0,
            closed: false,
        };
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Ok(Feed {
            inner: Arc::new(Inner {
                key,
                discovery_key: key.discovery_key(),
                sparse,
                writable: core.writable(),
                state: Mutex::new(State {
                    core: Some(core),
                    waiting: Waiting::default(),
                    updates: BTreeMap::new(),
                    seeks: BTreeMap::new(),
                }),
                status: watch::Sender::new(status),
                closed: watch::Sender::new(false),
                events,
                demand: watch::Sender::new(0),
                writer: Arc::default(),
            }),
        })
    }

    /// Opens (or creates) the feed stored as flat files in `dir`, with default options.
    pub async fn open_dir(dir: impl Into<std::path::PathBuf>) -> Result<Feed> {
        Feed::open(DiskStorage::new(dir), FeedOptions::default()).await
    }

    /// A new feed in memory with a fresh key pair.
    pub async fn memory() -> Result<Feed> {
        Feed::open(MemoryStorage::new(), FeedOptions::default()).await
    }

    /// The public key.
    pub fn key(&self) -> PublicKey {
        self.inner.key
    }

    /// The discovery key.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.inner.discovery_key
    }

    /// Whether this copy can append (holds the secret key).
    pub fn writable(&self) -> bool {
        self.inner.writable
    }

    /// Whether only requested blocks are downloaded.
    pub fn is_sparse(&self) -> bool {
        self.inner.sparse
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        self.inner.status.borrow().length
    }

    /// Whether the feed has no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes of all blocks.
    pub fn byte_len(&self) -> u64 {
        self.inner.status.borrow().byte_length
    }

    /// Whether [`Feed::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner
            .state
            .lock()
            .map(|s| s.core.is_none())
            .unwrap_or(true)
    }

    /// Resolves once the feed is closed (at once if it is).
    pub async fn closed(&self) {
        let mut closed = self.inner.closed.subscribe();
        let _ = closed.wait_for(|&c| c).await;
    }

    /// Subscribes to events. A receiver that falls more than [`EVENT_BACKLOG`] events
    /// behind gets `Lagged` and continues from the newest.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Events as a `Stream` (lagged events are skipped).
    pub fn event_stream(&self) -> impl futures::Stream<Item = Event> + Send + 'static {
        use futures::StreamExt;
        tokio_stream::wrappers::BroadcastStream::new(self.events())
            .filter_map(|e| async move { e.ok() })
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        self.inner.lock()
    }

    /// Runs `f` on the core right here (for short, in-memory or cached work).
    fn with_core<T>(&self, f: impl FnOnce(&mut FeedCore) -> Result<T>) -> Result<T> {
        let mut state = self.state()?;
        let core = state.core.as_mut().ok_or(Error::Closed {
            key: self.inner.key,
        })?;
        f(core)
    }

    /// Runs `f` on the blocking pool (for hashing and writing), with the core and the
    /// waiting `get`s, which are woken after the lock is released.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut FeedCore, &mut Waiting, &Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.locked(f))
            .await
            .map_err(panicked)?
    }

    /// Appends one block; returns the new length.
    pub async fn append(&self, block: impl Into<Bytes>) -> Result<u64> {
        self.append_batch(vec![block.into()]).await
    }

    /// Appends blocks atomically (one signature for the batch); returns the new length.
    pub async fn append_batch<B: Into<Bytes>>(
        &self,
        blocks: impl IntoIterator<Item = B>,
    ) -> Result<u64> {
        Ok(self.append_batch_at(blocks).await?.length)
    }

    /// Appends blocks atomically, as [`Feed::append_batch`], and says where they landed:
    /// whoever else appends meanwhile, the batch is contiguous from `start`.
    pub async fn append_batch_at<B: Into<Bytes>>(
        &self,
        blocks: impl IntoIterator<Item = B>,
    ) -> Result<Appended> {
        let blocks: Vec<Bytes> = blocks.into_iter().map(Into::into).collect();
        if blocks.iter().map(|b| b.len() as u64).sum::<u64>() <= INLINE_APPEND_LIMIT {
            return self.append_batch_blocking(blocks);
        }
        let feed = self.clone();
        tokio::task::spawn_blocking(move || feed.append_batch_blocking(blocks))
            .await
            .map_err(panicked)?
    }

    /// [`Feed::append_batch_at`] on this thread: it hashes, signs and writes, so call it
    /// off the async runtime (a blocking task or thread) unless the batch is small.
    pub fn append_batch_blocking(&self, blocks: Vec<Bytes>) -> Result<Appended> {
        let prepared = self.prepare_append(blocks)?;
        self.commit_append(prepared)
    }

    /// Hashes and signs `blocks` as the feed's next append, without holding the feed's
    /// lock (readers go on meanwhile): CPU work, so call it off the async runtime. Hand
    /// the result to [`Feed::commit_append`]. A batch of 1 MiB or more is left for the
    /// commit, which hashes it while writing it.
    pub fn prepare_append(&self, blocks: Vec<Bytes>) -> Result<PreparedAppend> {
        let bytes: usize = blocks.iter().map(Bytes::len).sum();
        if bytes >= 1 << 20 {
            return Ok(PreparedAppend {
                blocks,
                signed: None,
            });
        }
        let base = self.with_core(|c| c.append_base())?;
        let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        let signed = base.sign(&refs)?;
        Ok(PreparedAppend {
            blocks,
            signed: Some(signed),
        })
    }

    /// [`Feed::prepare_append`] for blocks already hashed: only the tree and the signature
    /// are computed (CPU work: one Ed25519 signature).
    pub fn prepare_hashed(&self, hashed: HashedBlocks) -> Result<PreparedAppend> {
        let HashedBlocks { blocks, hashes } = hashed;
        let base = self.with_core(|c| c.append_base())?;
        let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        let signed = base.sign_with_hashes(&refs, &hashes)?;
        Ok(PreparedAppend {
            blocks,
            signed: Some(signed),
        })
    }

    /// Writes a batch from [`Feed::prepare_append`] and says where it landed, as
    /// [`Feed::append_batch_at`] (the new length published, waiting `get`s woken, an
    /// [`Event::Append`] sent). Disk work: call it off the async runtime. If another
    /// append came first since the batch was prepared, it is hashed and signed again.
    pub fn commit_append(&self, prepared: PreparedAppend) -> Result<Appended> {
        let PreparedAppend { blocks, signed } = prepared;
        self.inner.locked(move |core, waiting, inner| {
            let (start, start_byte) = (core.len(), core.byte_len());
            let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
            let length = match signed {
                Some(signed) => core.commit_append(signed, &refs)?,
                None => core.append(&refs)?,
            };
            let byte_length = core.byte_len();
            waiting.wake(start, &blocks);
            inner.publish(length, byte_length);
            let _ = inner.events.send(Event::Append {
                length,
                byte_length,
            });
            Ok(Appended {
                start,
                start_byte,
                length,
            })
        })
    }

    /// Takes the feed's writer lock: an advisory lock for writers whose several appends
    /// must land one after the other with nothing in between (a hyperdrive file is one
    /// contiguous run of content blocks). Appends do not take it themselves; writers that
    /// need contiguity all do, as JS hyperdrive's content-feed mutex.
    pub async fn lock_writer(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.writer.clone().lock_owned().await
    }

    /// The writer lock if nobody holds it (see [`Feed::lock_writer`]).
    pub fn try_lock_writer(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.inner.writer.clone().try_lock_owned().ok()
    }

    /// Block `index`, waiting for it to be downloaded if it is not stored.
    pub async fn get(&self, index: u64) -> Result<Bytes> {
        self.get_with(index, GetOptions::default()).await
    }

    /// Block `index` with explicit waiting behaviour.
    pub async fn get_with(&self, index: u64, options: GetOptions) -> Result<Bytes> {
        enum Next {
            Waiter(oneshot::Receiver<Bytes>),
            ReadLarge,
        }
        let fut = async {
            loop {
                let next = {
                    let mut state = self.state()?;
                    let core = state.core.as_mut().ok_or(Error::Closed {
                        key: self.inner.key,
                    })?;
                    if core.has(index) {
                        let (offset, size) = core.block_location(index)?;
                        if size <= INLINE_READ_LIMIT {
                            return core.read_data(offset, size).map(Bytes::from);
                        }
                        Next::ReadLarge
                    } else {
                        if !options.wait {
                            return Err(Error::NotAvailable { index });
                        }
                        if index >= crate::core::MAX_BLOCKS {
                            return Err(Error::OutOfRange {
                                index,
                                reason: "beyond 2^53 blocks".into(),
                            });
                        }
                        let (tx, rx) = oneshot::channel();
                        state.waiting.waiters.entry(index).or_default().push(tx);
                        self.inner.demand.send_modify(|v| *v += 1);
                        Next::Waiter(rx)
                    }
                };
                match next {
                    Next::Waiter(rx) => {
                        return rx.await.map_err(|_| Error::Closed {
                            key: self.inner.key,
                        })
                    }
                    Next::ReadLarge => {
                        // Off the runtime. The block may be cleared meanwhile; then wait again.
                        let read = self
                            .blocking(move |core, _, _| Ok(core.get(index)?.map(Bytes::from)))
                            .await?;
                        if let Some(b) = read {
                            return Ok(b);
                        }
                    }
                }
            }
        };
        match options.timeout {
            None => fut.await,
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    self.prune_waiters(index);
                    Err(Error::Timeout {
                        what: format!("block {index}"),
                        after: t,
                    })
                }
            },
        }
    }

    fn prune_waiters(&self, index: u64) {
        if let Ok(mut state) = self.state() {
            if let Some(list) = state.waiting.waiters.get_mut(&index) {
                list.retain(|tx| !tx.is_closed());
                if list.is_empty() {
                    state.waiting.waiters.remove(&index);
                }
            }
        }
        self.inner.demand.send_modify(|v| *v += 1);
    }

    /// What local callers are waiting for (blocks, a length, byte offsets).
    pub fn demand(&self) -> Demand {
        let Ok(state) = self.state() else {
            return Demand::default();
        };
        let mut blocks: Vec<u64> = state
            .waiting
            .waiters
            .iter()
            .filter(|(_, list)| list.iter().any(|tx| !tx.is_closed()))
            .map(|(&i, _)| i)
            .collect();
        blocks.sort_unstable();
        Demand {
            blocks,
            length: state.updates.keys().next().copied(),
            seeks: state.seeks.keys().copied().collect(),
        }
    }

    /// Changes whenever [`Feed::demand`] may have changed.
    pub fn demand_changes(&self) -> watch::Receiver<u64> {
        self.inner.demand.subscribe()
    }

    /// Registers a wait in `updates` or `seeks` until the guard is dropped.
    fn await_demand(&self, kind: DemandKind, value: u64) -> DemandGuard {
        if let Ok(mut state) = self.state() {
            *kind.map(&mut state).entry(value).or_default() += 1;
        }
        self.inner.demand.send_modify(|v| *v += 1);
        DemandGuard {
            inner: self.inner.clone(),
            kind,
            value,
        }
    }

    /// Blocks `[start, end)`, waiting for missing ones.
    pub async fn get_batch(&self, start: u64, end: u64) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut at = start;
        while at < end {
            let run = self.read_run(at, end, 8 << 20).await?;
            if run.is_empty() {
                out.push(self.get(at).await?);
                at += 1;
            } else {
                at += run.len() as u64;
                out.extend(run);
            }
        }
        Ok(out)
    }

    /// The stored blocks from `start` on, as many as are consecutive, up to `end` and about
    /// `max_bytes`, read with one call (read streams use it); empty if block `start` is not
    /// stored. Runs of up to 256 KiB are read on the calling thread, as `get` reads blocks
    /// of that size.
    pub async fn read_run(&self, start: u64, end: u64, max_bytes: u64) -> Result<Vec<Bytes>> {
        let split = |(data, sizes): (Vec<u8>, Vec<u64>)| {
            let data = Bytes::from(data);
            let mut at = 0usize;
            sizes
                .into_iter()
                .map(|s| {
                    let block = data.slice(at..at + s as usize);
                    at += s as usize;
                    block
                })
                .collect()
        };
        if max_bytes <= INLINE_READ_LIMIT {
            // As small as the blocks `get_with` reads inline (unless its first block is
            // larger: a run holds at least one).
            let small = self.with_core(|core| {
                if core.has(start) && core.block_location(start)?.1 > INLINE_READ_LIMIT {
                    return Ok(None);
                }
                core.read_run(start, end, max_bytes).map(Some)
            })?;
            if let Some(run) = small {
                return Ok(split(run));
            }
        }
        self.blocking(move |core, _, _| core.read_run(start, end, max_bytes).map(split))
            .await
    }

    /// The last block.
    pub async fn head(&self) -> Result<Bytes> {
        match self.len() {
            0 => Err(Error::OutOfRange {
                index: 0,
                reason: "the feed is empty".into(),
            }),
            n => self.get(n - 1).await,
        }
    }

    /// Whether block `index` is stored locally.
    pub fn has(&self, index: u64) -> bool {
        self.with_core(|c| Ok(c.has(index))).unwrap_or(false)
    }

    /// Whether the hash (leaf node) of block `index` is stored, with or without its data.
    pub fn has_hash(&self, index: u64) -> bool {
        self.with_core(|c| Ok(c.has_hash(index))).unwrap_or(false)
    }

    /// Where blocks `[start, end)`, all stored, lie: the feed's data file, which holds
    /// every block at its byte offset, and their bytes' place there (from the tree). For a process on this machine to read them itself
    /// (a "short-circuit" read): stored bytes stay as they are until a clear removes
    /// blocks, so bytes read from the file are the blocks' as long as [`Feed::clears`]
    /// still says [`StoredFile::clears`] after the read. `None` when a block is missing or
    /// the feed is not stored in files.
    pub fn stored_file(&self, start: u64, end: u64) -> Option<StoredFile> {
        self.with_core(|c| {
            // Counted before the check: a clear after it shows as a change.
            let clears = crate::core::clears();
            if start >= end || end > c.len() || !c.has_range(start, end) {
                return Ok(None);
            }
            let Some(path) = c.data_path().map(|p| p.to_path_buf()) else {
                return Ok(None);
            };
            let (offset, length) = c.byte_range(start, end)?;
            Ok(Some(StoredFile {
                path,
                offset,
                length,
                clears,
            }))
        })
        .ok()
        .flatten()
    }

    /// How many clears removed blocks of any feed of this process so far: each is
    /// counted before it removes a byte, so bytes read before this says an unchanged
    /// number were not touched by one.
    pub fn clears() -> u64 {
        crate::core::clears()
    }

    /// Whether every block in `[start, end)` is stored locally.
    pub fn has_range(&self, start: u64, end: u64) -> bool {
        self.with_core(|c| Ok(c.has_range(start, end)))
            .unwrap_or(false)
    }

    /// Number of blocks stored locally in `[start, end)` (`end` = `None` means the length).
    pub fn downloaded(&self, start: u64, end: Option<u64>) -> u64 {
        self.with_core(|c| Ok(c.downloaded(start, end.unwrap_or(c.len()))))
            .unwrap_or(0)
    }

    /// Bytes of the blocks stored locally in `[start, end)` (`end` = `None` means the
    /// length), from the merkle tree's sizes: no block is read.
    pub async fn downloaded_bytes(&self, start: u64, end: Option<u64>) -> Result<u64> {
        self.blocking(move |core, _, _| {
            let end = end.unwrap_or(core.len());
            core.downloaded_bytes(start, end)
        })
        .await
    }

    /// Removes blocks `[start, end)` from local storage (they can be downloaded again).
    pub async fn clear(&self, start: u64, end: u64) -> Result<()> {
        let changed = self
            .blocking(move |core, _, _| core.clear(start, end))
            .await?;
        if changed {
            self.inner.bump();
            let _ = self.inner.events.send(Event::Clear { start, end });
        }
        Ok(())
    }

    /// The block containing byte `bytes` and the offset inside it. Waits while the local
    /// tree cannot tell (a sparse clone); `timeout` bounds the wait.
    pub async fn seek(&self, bytes: u64, timeout: Option<Duration>) -> Result<(u64, u64)> {
        let fut = async {
            let mut status = self.inner.status.subscribe();
            let mut demand = None;
            loop {
                status.borrow_and_update();
                match self.with_core(|c| c.seek(bytes))? {
                    SeekOutcome::Found { index, offset } => return Ok((index, offset)),
                    SeekOutcome::Unresolved { .. } => {
                        demand.get_or_insert_with(|| self.await_demand(DemandKind::Seek, bytes));
                        status.changed().await.map_err(|_| Error::Closed {
                            key: self.inner.key,
                        })?;
                    }
                }
            }
        };
        match timeout {
            None => fut.await,
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: format!("seeking to byte {bytes}"),
                    after: t,
                })
            }),
        }
    }

    /// The block containing byte `bytes` if the local tree can tell, without waiting.
    pub fn seek_local(&self, bytes: u64) -> Result<Option<(u64, u64)>> {
        Ok(match self.with_core(|c| c.seek(bytes))? {
            SeekOutcome::Found { index, offset } => Some((index, offset)),
            SeekOutcome::Unresolved { .. } => None,
        })
    }

    /// The RLE bitfield of stored blocks a `Have` carries in reply to `Want{start,
    /// length}` (`0, 0` = all).
    pub fn have_bitfield(&self, start: u64, length: u64) -> Vec<u8> {
        self.with_core(|c| Ok(c.compressed_bitfield(start, length)))
            .unwrap_or_default()
    }

    /// Waits until the feed has at least `min_length` blocks (default: one more than now).
    /// Returns the new length.
    pub async fn update(&self, min_length: Option<u64>, timeout: Option<Duration>) -> Result<u64> {
        let min = min_length.unwrap_or_else(|| self.len() + 1);
        let _demand = (self.len() < min).then(|| self.await_demand(DemandKind::Length, min));
        let mut rx = self.inner.status.subscribe();
        let fut = rx.wait_for(|s| s.length >= min || s.closed);
        let status = match timeout {
            None => fut.await.map(|s| *s),
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r.map(|s| *s),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("length {min}"),
                        after: t,
                    })
                }
            },
        };
        match status {
            Ok(s) if !s.closed => Ok(s.length),
            _ => Err(Error::Closed {
                key: self.inner.key,
            }),
        }
    }

    /// The first stored signature for block `index` or later.
    pub fn signature(&self, index: u64) -> Result<SignatureAt> {
        self.with_core(|c| c.signature(index))
    }

    /// Whether `signature` signs the feed up to and including block `index`.
    pub fn verify(&self, index: u64, signature: &Signature) -> Result<bool> {
        self.with_core(|c| c.verify(index, signature))
    }

    /// The tree roots for length `index + 1`.
    pub fn root_hashes(&self, index: u64) -> Result<Vec<Node>> {
        self.with_core(|c| c.root_hashes(index))
    }

    /// The leaf nodes (hash and size) of blocks `[start, end)`, from the tree file (the
    /// blocks' data is not read): equal leaf hashes mean equal blocks. Fails with
    /// [`Error::NotAvailable`] if a leaf is not stored. Reads `80 * (end - start)` bytes
    /// inline: call it from a blocking thread for long ranges.
    pub fn leaves(&self, start: u64, end: u64) -> Result<Vec<Node>> {
        self.with_core(|c| c.leaves(start, end))
    }

    /// Re-hashes every stored block; blocks that do not match their hash are cleared.
    pub async fn audit(&self) -> Result<AuditReport> {
        let report = self.blocking(|core, _, _| core.audit()).await?;
        if report.invalid > 0 {
            self.inner.bump();
        }
        Ok(report)
    }

    /// The request digest for block `index`: which nodes of its proof we already have.
    pub fn digest(&self, index: u64) -> u64 {
        self.with_core(|c| Ok(c.digest(index))).unwrap_or(0)
    }

    /// The proof for block `index` that a peer with `request.digest` needs. `remote`
    /// remembers what that peer has, so later proofs to it are smaller.
    pub fn proof(
        &self,
        index: u64,
        request: ProofRequest,
        remote: &mut RemoteTree,
    ) -> Result<Proof> {
        self.with_core(|c| c.proof(index, request, remote))
    }

    /// Block `index` (unless only its hash is requested) with its proof, for sending to a
    /// peer; emits [`Event::Upload`].
    pub async fn upload(
        &self,
        index: u64,
        request: ProofRequest,
        remote: &mut RemoteTree,
    ) -> Result<(Option<Bytes>, Proof)> {
        let proof = self.proof(index, request, remote)?;
        if request.hash {
            return Ok((None, proof));
        }
        let data = self.get_with(index, GetOptions::no_wait()).await?;
        let _ = self.inner.events.send(Event::Upload {
            index,
            bytes: data.len() as u64,
        });
        Ok((Some(data), proof))
    }

    /// Verifies block `index` (or only its hash, when `data` is `None`) against `proof` and
    /// stores it. Fails with [`Error::InvalidProof`] and stores nothing if it does not verify.
    pub async fn put(
        &self,
        index: u64,
        data: Option<Bytes>,
        proof: Proof,
        origin: Origin,
    ) -> Result<PutOutcome> {
        let mut results = self.put_batch(vec![(index, data, proof)], origin).await?;
        results.pop().unwrap_or(Err(Error::Internal {
            reason: "empty batch".into(),
        }))
    }

    /// Several [`Feed::put`]s at once, as blocks arrive from a peer: leaves are hashed
    /// several at a time before the feed is locked, and the bitfield is written once.
    /// Stops at the first block that does not verify (its result is the error).
    pub async fn put_batch(
        &self,
        items: Vec<(u64, Option<Bytes>, Proof)>,
        origin: Origin,
    ) -> Result<Vec<Result<PutOutcome>>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // The proofs move into the core; the blocks stay here to wake waiters.
            let (blocks, proofs): (Vec<(u64, Option<Bytes>)>, Vec<Proof>) =
                items.into_iter().map(|(i, d, p)| ((i, d), p)).unzip();
            // Hash outside the lock: readers and writers of the feed keep going meanwhile.
            let datas: Vec<&[u8]> = blocks.iter().filter_map(|(_, d)| d.as_deref()).collect();
            let mut hashes = Vec::with_capacity(datas.len());
            crate::crypto::leaf_hashes(&datas, &mut hashes);
            // One hash per block with data, in order.
            let mut hashes = hashes.into_iter();
            inner.locked(|core, waiting, inner| {
                let batch = blocks
                    .iter()
                    .zip(proofs)
                    .map(|((i, d), p)| {
                        let block = d.as_deref().and_then(|d| Some((d, hashes.next()?)));
                        (*i, block, p)
                    })
                    .collect();
                let results = core.put_batch(batch, origin)?;
                let (length, byte_length) = (core.len(), core.byte_len());
                let synced = core.downloaded_total() == core.len();
                let mut grew = false;
                for ((index, data), result) in blocks.iter().zip(&results) {
                    let Ok(outcome) = result else { continue };
                    grew |= outcome.length_grew;
                    if let (true, Some(d)) = (outcome.downloaded, data) {
                        waiting.wake(*index, std::slice::from_ref(d));
                        let _ = inner.events.send(Event::Download {
                            index: *index,
                            bytes: d.len() as u64,
                            origin,
                        });
                    }
                }
                inner.publish(length, byte_length);
                if grew {
                    let _ = inner.events.send(Event::Append {
                        length,
                        byte_length,
                    });
                }
                let downloaded = results
                    .iter()
                    .any(|r| r.as_ref().is_ok_and(|o| o.downloaded));
                if downloaded && synced && !inner.writable {
                    let _ = inner.events.send(Event::Sync);
                }
                Ok(results)
            })
        })
        .await
        .map_err(panicked)?
    }

    /// Flushes and closes the feed. Pending `get`s fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let core = {
            let mut state = self.state()?;
            state.waiting.waiters.clear();
            state.core.take()
        };
        if let Some(core) = core {
            tokio::task::spawn_blocking(move || drop(core))
                .await
                .map_err(panicked)?;
            self.inner.status.send_modify(|s| {
                s.closed = true;
                s.version += 1;
            });
            self.inner.closed.send_replace(true);
            let _ = self.inner.events.send(Event::Close);
        }
        Ok(())
    }
}

impl Inner {
    /// Runs `f` under the lock, then wakes the `get`s it satisfied.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut FeedCore, &mut Waiting, &Inner) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.lock()?;
        let State { core, waiting, .. } = &mut *guard;
        let core = core.as_mut().ok_or(Error::Closed { key: self.key })?;
        let result = f(core, waiting, self);
        let due = std::mem::take(&mut waiting.due);
        drop(guard);
        for (tx, block) in due {
            let _ = tx.send(block);
        }
        result
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Internal {
            reason: format!(
                "the state of feed {} was poisoned by an earlier panic",
                self.key
            ),
        })
    }

    fn publish(&self, length: u64, byte_length: u64) {
        self.status.send_modify(|s| {
            s.length = length;
            s.byte_length = byte_length;
            s.version += 1;
        });
    }

    fn bump(&self) {
        self.status.send_modify(|s| s.version += 1);
    }
}

#[derive(Clone, Copy)]
enum DemandKind {
    Length,
    Seek,
}

impl DemandKind {
    fn map(self, state: &mut State) -> &mut BTreeMap<u64, usize> {
        match self {
            DemandKind::Length => &mut state.updates,
            DemandKind::Seek => &mut state.seeks,
        }
    }
}

/// Removes an `update` or `seek` wait from the demand when the waiting call ends.
struct DemandGuard {
    inner: Arc<Inner>,
    kind: DemandKind,
    value: u64,
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.lock() {
            let map = self.kind.map(&mut state);
            if let Some(n) = map.get_mut(&self.value) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.value);
                }
            }
        }
        self.inner.demand.send_modify(|v| *v += 1);
    }
}
