//! A corestore keeps many hypercores in one directory, derives the key pairs of named cores
//! from one master key, and replicates all of its cores over shared connections — on disk,
//! in its key derivation and on the wire, compatible with JS `corestore@5.8.2`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corestore::Error> {
//! use corestore::{Corestore, CorestoreOptions};
//!
//! let store = Corestore::open("./cores", CorestoreOptions::default()).await?;
//! let core = store.get_named(b"my-log").await?;   // writable: derived from the master key
//! core.feed().append("hello").await.ok();
//! # Ok(()) }
//! ```
//!
//! * **Keys** (spec `corestore.md` §1–§2): [`MasterKey`] (the `master_key` file, created
//!   `0600`), [`derive_seed`] (derive-key framing), [`derive_key_pair`].
//! * **Layout** (§4): one directory per core at `<dk[0..2]>/<dk[2..4]>/<dk hex>/` holding
//!   hypercore's files plus `name` (`varint(len) || name`) for derived cores; a named
//!   core's secret key is never written, it is re-derived from `name` on every open.
//! * **One core per discovery key**: whichever way a core is asked for (name, key, key
//!   pair, discovery key), all callers share one [`Replicator`], even when they ask at the
//!   same time.
//! * **Open cores are a cache** (like JS corestore's): a core is opened when something asks
//!   for it and stays open while a [`Core`] handle to it lives. Cores nobody holds stay
//!   open for peers that replicate them, and are closed when the cache is over
//!   [`CorestoreOptions::max_open`] (least recently used first, those no peer replicates
//!   before those some peer does) or after [`CorestoreOptions::idle_timeout`] with no
//!   peer. An open core holds four file descriptors, so a store of any size runs within a
//!   descriptor budget. [`Corestore::list`] reports every stored core without keeping it
//!   open.
//! * **Replication** (§5): [`Corestore::replicate`] runs every open core over one
//!   hypercore-protocol connection, adds cores opened later, opens cores the remote asks
//!   for from disk, and refuses the others with a `Close`, as JS does.
//! * **Tombstones**: removing a writable core that has blocks leaves a [`Tombstone`], and
//!   re-deriving its key is refused ([`Error::Removed`]) unless asked for with
//!   [`Corestore::recreate_named`]: a second history under the same key would conflict
//!   with the one peers hold.

mod error;
mod keys;
mod layout;
mod replicate;
mod tombstones;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hypercore::{DiscoveryKey, Durability, Feed, FeedOptions, KeyPair, PublicKey, SecretKey};
use hypercore_protocol::PeerKey;
use hypercore_replication::ReplicatorOptions;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use crate::error::Error;
pub use crate::keys::{derive_key_pair, derive_seed, encode_name, MasterKey, CORESTORE_NAMESPACE};
pub use crate::layout::{core_path, StoredCore};
pub use crate::tombstones::Tombstone;
pub use hypercore_replication::Replicator;

use crate::layout::CoreStorage;
use crate::replicate::Stream;
use crate::tombstones::Tombstones;

/// How long unloading a core waits for its peers to stop using it.
const PEER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a core whose peer misbehaved is not offered to (or accepted from) that peer.
const BAN: Duration = Duration::from_secs(3600);
/// Most (peer, core) bans remembered; the oldest go first.
const MAX_BANS: usize = 4096;
/// Cores summarised at once by [`Corestore::list`].
const LIST_CONCURRENCY: usize = 16;
/// Times an open that ran out of descriptors closes an unused core and tries again.
const EMFILE_RETRIES: usize = 4;

/// The name `default_core` derives from (the root store's name in JS).
pub const DEFAULT_NAME: &[u8] = b"default";

/// Options for a [`Corestore`]: defaults for every core it opens.
#[derive(Clone, Debug)]
pub struct CorestoreOptions {
    /// How hard writes are pushed to disk.
    pub durability: Durability,
    /// Download only what is asked for (default true, like hyperdrive-daemon).
    pub sparse: bool,
    /// How each core replicates.
    pub replicator: ReplicatorOptions,
    /// Most cores kept open at once (four file descriptors each). Cores held through a
    /// [`Core`] handle are never closed to make room, so while more than this are held,
    /// more are open. Default 256.
    pub max_open: usize,
    /// A core nobody holds and no peer replicates is closed after this long. Default 30 s.
    pub idle_timeout: Duration,
}

impl Default for CorestoreOptions {
    fn default() -> Self {
        CorestoreOptions {
            durability: Durability::default(),
            sparse: true,
            replicator: ReplicatorOptions::default(),
            max_open: 256,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How a core was asked for.
enum Wanted {
    /// Derived from a name.
    Named { name: Vec<u8>, key_pair: KeyPair },
    /// An explicit key pair (its secret key is stored in `secret_key`).
    KeyPair(KeyPair),
    /// A public key only.
    Key(PublicKey),
    /// Whatever is stored under this discovery key.
    Stored,
}

impl Wanted {
    /// A core asked for this way may be created (it need not be stored yet).
    fn creates(&self) -> Option<PublicKey> {
        match self {
            Wanted::Named { key_pair, .. } | Wanted::KeyPair(key_pair) => Some(key_pair.public),
            Wanted::Key(key) => Some(*key),
            Wanted::Stored => None,
        }
    }

    /// Signs with a key the store derives or stores: re-creating a removed one forks it.
    fn signs(&self) -> bool {
        matches!(self, Wanted::Named { .. } | Wanted::KeyPair(_))
    }
}

/// Which keys to open a core's feed with.
struct Plan {
    key: PublicKey,
    secret: Option<SecretKey>,
    store_secret_key: bool,
    name: Option<Vec<u8>>,
}

/// What [`Corestore::list`] and an open core's handle report about a core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSummary {
    /// Its public key.
    pub key: PublicKey,
    /// The name its key is derived from, if it has one.
    pub name: Option<Vec<u8>>,
    /// This store can append to it.
    pub writable: bool,
    /// Blocks in the log, as far as this store knows.
    pub length: u64,
    /// Bytes in the log.
    pub byte_length: u64,
    /// Blocks stored locally.
    pub downloaded: u64,
    /// It is open now (replicating with peers that want it).
    pub open: bool,
}

/// The lifecycle lock of one discovery key: opening, closing and removing a core hold it,
/// so a feed is never opened twice (its bitfield is `flock`ed) nor reopened while closing.
#[derive(Default)]
struct Slot {
    core: Arc<tokio::sync::Mutex<Option<Replicator>>>,
}

/// An open core, as the cache sees it.
struct Open {
    core: Replicator,
    name: Option<Arc<[u8]>>,
    /// Live [`Core`] handles.
    pins: usize,
    /// Tells this opening of the core from later ones (handles of an old one may linger).
    generation: u64,
    last_used: Instant,
    /// Blocks moved to or from peers when last looked at: traffic counts as use.
    traffic: u64,
}

impl Open {
    fn summary(&self) -> CoreSummary {
        let feed = self.core.feed();
        CoreSummary {
            key: feed.key(),
            name: self.name.as_deref().map(<[u8]>::to_vec),
            writable: feed.writable(),
            length: feed.len(),
            byte_length: feed.byte_len(),
            downloaded: feed.downloaded(0, None),
            open: !feed.is_closed(),
        }
    }

    /// Counts blocks moved since last looked at as use at `now`.
    fn note_traffic(&mut self, now: Instant) {
        let t = self.core.stats().totals;
        let traffic = t.uploaded_blocks + t.downloaded_blocks;
        if traffic != self.traffic {
            self.traffic = traffic;
            self.last_used = now;
        }
    }
}

struct State {
    closed: bool,
    slots: HashMap<DiscoveryKey, Arc<Slot>>,
    /// Cores open and ready, by discovery key (always the value of their slot).
    open: HashMap<DiscoveryKey, Open>,
    streams: HashMap<u64, Arc<Stream>>,
    next_id: u64,
    /// Every stored core, once the directory has been walked; kept up to date after.
    catalog: Option<BTreeMap<DiscoveryKey, StoredCore>>,
    /// What closed cores looked like when they were last open.
    summaries: HashMap<DiscoveryKey, CoreSummary>,
    /// Cores whose peer on a remote misbehaved, and since when.
    bans: HashMap<(PeerKey, DiscoveryKey), Instant>,
    tombstones: Tombstones,
    /// Cores being closed to make room or because they were idle.
    evictions: JoinSet<()>,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Unused cores to close so that at most `max` are open, least recently used first
    /// (data moved to or from peers counts as use).
    fn over_budget(&mut self, max: usize) -> Vec<(DiscoveryKey, u64)> {
        let over = self.open.len().saturating_sub(max);
        if over == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let mut unused: Vec<(Instant, DiscoveryKey, u64)> = self
            .open
            .iter_mut()
            .filter(|(_, o)| o.pins == 0)
            .map(|(dk, o)| {
                o.note_traffic(now);
                (o.last_used, *dk, o.generation)
            })
            .collect();
        unused.sort();
        unused
            .into_iter()
            .take(over)
            .map(|(_, dk, g)| (dk, g))
            .collect()
    }
}

struct Inner {
    dir: PathBuf,
    master: MasterKey,
    options: CorestoreOptions,
    state: Mutex<State>,
    /// Closes idle cores and trims the cache.
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

/// Many hypercores in one directory. Cheap to clone; all clones share the same cores.
#[derive(Clone)]
pub struct Corestore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Corestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Corestore")
            .field("dir", &self.inner.dir)
            .field("open", &state.open.len())
            .field("streams", &state.streams.len())
            .field("closed", &state.closed)
            .finish()
    }
}

/// A core in use: it stays open while this handle (or a clone) lives. Dereferences to
/// the core's [`Replicator`].
#[derive(Clone)]
pub struct Core {
    pin: Arc<Pin>,
}

struct Pin {
    replicator: Replicator,
    name: Option<Arc<[u8]>>,
    store: Weak<Inner>,
    dk: DiscoveryKey,
    generation: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let Some(inner) = self.store.upgrade() else {
            return;
        };
        let mut state = lock(&inner.state);
        if let Some(open) = state.open.get_mut(&self.dk) {
            if open.generation == self.generation {
                open.pins = open.pins.saturating_sub(1);
                open.last_used = Instant::now();
            }
        }
    }
}

impl Core {
    /// The core's replicator.
    pub fn replicator(&self) -> &Replicator {
        &self.pin.replicator
    }

    /// The name its key is derived from, if it has one.
    pub fn name(&self) -> Option<&[u8]> {
        self.pin.name.as_deref()
    }

    /// What the store reports about it.
    pub fn summary(&self) -> CoreSummary {
        let feed = self.feed();
        CoreSummary {
            key: feed.key(),
            name: self.name().map(<[u8]>::to_vec),
            writable: feed.writable(),
            length: feed.len(),
            byte_length: feed.byte_len(),
            downloaded: feed.downloaded(0, None),
            open: !feed.is_closed(),
        }
    }
}

impl std::ops::Deref for Core {
    type Target = Replicator;

    fn deref(&self) -> &Replicator {
        &self.pin.replicator
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("key", &self.feed().key())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every update
/// under these locks is a single insert, remove or counter change).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal {
            what: what.to_string(),
            reason: e.to_string(),
        })?
}

/// Runs `work` as its own task, so that it completes even if the caller stops waiting.
async fn detached<T: Send + 'static>(
    what: String,
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work).await.map_err(|e| Error::Internal {
        what,
        reason: e.to_string(),
    })?
}

impl Corestore {
    /// Opens (creating if needed) the store in `dir`: reads its `master_key` file, or
    /// creates it (32 random bytes, mode 0600, fsync'd) when it is missing or shorter than
    /// 32 bytes, as JS does.
    pub async fn open(
        dir: impl Into<PathBuf>,
        options: CorestoreOptions,
    ) -> Result<Corestore, Error> {
        let dir = dir.into();
        let at = dir.clone();
        let (master, tombstones) = blocking("reading the master key", move || {
            let master = layout::load_or_create_master_key(&at)?;
            Ok((master, Tombstones::load(&at)?))
        })
        .await?;
        Ok(Self::new(dir, master, tombstones, options))
    }

    /// Opens the store in `dir` with this master key; no `master_key` file is read or
    /// written (JS: `new Corestore(storage, { masterKey })`).
    pub async fn open_with_master_key(
        dir: impl Into<PathBuf>,
        master: MasterKey,
        options: CorestoreOptions,
    ) -> Result<Corestore, Error> {
        let dir = dir.into();
        let at = dir.clone();
        let tombstones = blocking("creating the corestore directory", move || {
            std::fs::create_dir_all(&at)
                .map_err(Error::io("creating the corestore directory", &at))?;
            Tombstones::load(&at)
        })
        .await?;
        Ok(Self::new(dir, master, tombstones, options))
    }

    fn new(
        dir: PathBuf,
        master: MasterKey,
        tombstones: Tombstones,
        options: CorestoreOptions,
    ) -> Corestore {
        let store = Corestore {
            inner: Arc::new(Inner {
                dir,
                master,
                options,
                state: Mutex::new(State {
                    closed: false,
                    slots: HashMap::new(),
                    open: HashMap::new(),
                    streams: HashMap::new(),
                    next_id: 0,
                    catalog: None,
                    summaries: HashMap::new(),
                    bans: HashMap::new(),
                    tombstones,
                    evictions: JoinSet::new(),
                }),
                sweeper: Mutex::new(None),
            }),
        };
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&store.inner)));
        *lock(&store.inner.sweeper) = Some(sweeper);
        store
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            dir: self.inner.dir.clone(),
        }
    }

    fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The master key.
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.master
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &CorestoreOptions {
        &self.inner.options
    }

    /// The directory of the core with this discovery key (whether or not it exists).
    pub fn core_dir(&self, discovery_key: &DiscoveryKey) -> PathBuf {
        self.inner.dir.join(core_path(discovery_key))
    }

    /// The core derived from `name` (JS `store.get({ name })`), created if needed. Its
    /// `name` file makes it writable again after a restart, by name or by key. A core of
    /// this name that was removed after it had blocks is not created again
    /// ([`Error::Removed`]; see [`Corestore::recreate_named`]).
    pub async fn get_named(&self, name: &[u8]) -> Result<Core, Error> {
        let (dk, wanted) = self.named(name)?;
        self.expect_core(dk, wanted).await
    }

    /// Like [`Corestore::get_named`], but also re-creates a removed core, forgetting its
    /// tombstone. Its new history conflicts with the removed one: peers that hold the old
    /// one will refuse the new one.
    pub async fn recreate_named(&self, name: &[u8]) -> Result<Core, Error> {
        let (dk, wanted) = self.named(name)?;
        if let Some(key) = wanted.creates() {
            if let Some(tombstone) = self.tombstone(&key) {
                tracing::warn!(%key, removed_length = tombstone.length, "re-creating a removed core: its new history conflicts with the one peers may hold");
                self.set_tombstone(key, None).await?;
            }
        }
        self.expect_core(dk, wanted).await
    }

    fn named(&self, name: &[u8]) -> Result<(DiscoveryKey, Wanted), Error> {
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        let key_pair = derive_key_pair(&self.inner.master, name);
        let dk = key_pair.public.discovery_key();
        let wanted = Wanted::Named {
            name: name.to_vec(),
            key_pair,
        };
        Ok((dk, wanted))
    }

    /// The store's default core, derived from the name `"default"` (JS `store.default()`).
    pub async fn default_core(&self) -> Result<Core, Error> {
        self.get_named(DEFAULT_NAME).await
    }

    /// A namespace handle whose [`Namespace::default_core`] derives from `name` (JS
    /// `store.namespace(name)`); it shares this store's cores.
    pub fn namespace(&self, name: &str) -> Namespace {
        Namespace {
            store: self.clone(),
            name: name.to_string(),
        }
    }

    /// A namespace named by the lowercase hex of `name` (JS `store.namespace(buffer)`).
    pub fn namespace_bytes(&self, name: &[u8]) -> Namespace {
        self.namespace(&hypercore::crypto::to_hex(name))
    }

    /// A new writable core derived from a random 32-byte name (JS `store.get()`).
    pub async fn create(&self) -> Result<Core, Error> {
        use rand::RngCore;
        let mut name = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut name);
        self.get_named(&name).await
    }

    /// The core with this explicit key pair (JS `store.get({ keyPair })`); its secret key
    /// is stored in `secret_key` (mode 0600).
    pub async fn get_with_key_pair(&self, key_pair: KeyPair) -> Result<Core, Error> {
        let dk = key_pair.public.discovery_key();
        self.expect_core(dk, Wanted::KeyPair(key_pair)).await
    }

    /// The core with this public key, as stored, or a new empty read-only clone. It is
    /// writable if its directory holds its name (re-derived and checked against the
    /// discovery key: [`Error::IncorrectName`] otherwise) or its secret key.
    pub async fn get_by_key(&self, key: PublicKey) -> Result<Core, Error> {
        self.expect_core(key.discovery_key(), Wanted::Key(key))
            .await
    }

    /// The open core with this discovery key, or the one stored under it
    /// (`<dk path>/key`); `None` if the store has no such core.
    pub async fn get_by_discovery_key(
        &self,
        discovery_key: &DiscoveryKey,
    ) -> Result<Option<Core>, Error> {
        self.load(*discovery_key, Wanted::Stored).await
    }

    /// The stored core with this key (opened if needed); `None` if the store has none.
    pub async fn get_stored(&self, key: &PublicKey) -> Result<Option<Core>, Error> {
        Ok(self
            .get_by_discovery_key(&key.discovery_key())
            .await?
            .filter(|core| core.feed().key() == *key))
    }

    /// The core with this key if it is open now (nothing is opened).
    pub fn get_open(&self, key: &PublicKey) -> Option<Core> {
        let mut state = self.state();
        let dk = key.discovery_key();
        let open = state.open.get_mut(&dk)?;
        Some(self.pin(dk, open))
    }

    /// Every open core, sorted by key.
    pub fn open_cores(&self) -> Vec<Core> {
        let mut state = self.state();
        let mut cores: Vec<Core> = Vec::with_capacity(state.open.len());
        for (dk, open) in state.open.iter_mut() {
            cores.push(self.pin(*dk, open));
        }
        cores.sort_by_key(|c| c.feed().key());
        cores
    }

    /// How many cores are open.
    pub fn open_count(&self) -> usize {
        self.state().open.len()
    }

    /// A new handle on an open core (called with the state locked).
    fn pin(&self, dk: DiscoveryKey, open: &mut Open) -> Core {
        open.pins += 1;
        open.last_used = Instant::now();
        Core {
            pin: Arc::new(Pin {
                replicator: open.core.clone(),
                name: open.name.clone(),
                store: Arc::downgrade(&self.inner),
                dk,
                generation: open.generation,
            }),
        }
    }

    /// Every core stored in the directory, sorted by discovery key. Entries that are
    /// damaged (no `key` file, a key that does not match its directory, …) are skipped
    /// with a warning naming the path. The directory is walked on a blocking thread the
    /// first time; later calls answer from memory.
    pub async fn stored(&self) -> Result<Vec<StoredCore>, Error> {
        if let Some(catalog) = &self.state().catalog {
            return Ok(catalog.values().cloned().collect());
        }
        let dir = self.inner.dir.clone();
        let master = self.inner.master.clone();
        let walked = blocking("listing cores", move || layout::stored_cores(&dir, &master)).await?;
        let mut state = self.state();
        // Cores opened (or removed) during the walk are in (or out of) `open` by now.
        let mut catalog: BTreeMap<DiscoveryKey, StoredCore> =
            walked.into_iter().map(|c| (c.discovery_key, c)).collect();
        for (dk, open) in &state.open {
            let feed = open.core.feed();
            catalog.entry(*dk).or_insert_with(|| StoredCore {
                key: feed.key(),
                discovery_key: *dk,
                name: open.name.as_deref().map(<[u8]>::to_vec),
                writable: feed.writable(),
            });
        }
        let cores = catalog.values().cloned().collect();
        state.catalog = Some(catalog);
        Ok(cores)
    }

    /// How many cores are stored.
    pub async fn count(&self) -> Result<usize, Error> {
        if let Some(catalog) = &self.state().catalog {
            return Ok(catalog.len());
        }
        Ok(self.stored().await?.len())
    }

    /// A summary of every stored core, sorted by key. Open cores report their current
    /// state; closed ones what they were when last closed, or are opened briefly (a few
    /// at a time, outside the cache) to find out.
    pub async fn list(&self) -> Result<Vec<CoreSummary>, Error> {
        use futures::StreamExt;
        let stored = self.stored().await?;
        let summaries: Vec<Result<Option<CoreSummary>, Error>> =
            futures::stream::iter(stored.into_iter().map(|c| self.summarise(c)))
                .buffer_unordered(LIST_CONCURRENCY)
                .collect()
                .await;
        let mut out = Vec::with_capacity(summaries.len());
        for summary in summaries {
            if let Some(summary) = summary? {
                out.push(summary);
            }
        }
        out.sort_by_key(|s| s.key);
        Ok(out)
    }

    /// What `core` looks like now; `None` if it was removed meanwhile.
    async fn summarise(&self, core: StoredCore) -> Result<Option<CoreSummary>, Error> {
        let dk = core.discovery_key;
        if let Some(summary) = self.known_summary(&dk) {
            return Ok(Some(summary));
        }
        let store = self.clone();
        detached(format!("summarising core {}", core.key), async move {
            let slot = store.slot(dk)?;
            let guard = slot.core.lock().await;
            let result = match store.known_summary(&dk) {
                Some(summary) => Ok(Some(summary)),
                None => match store.open_core(dk, Wanted::Stored).await {
                    Ok(Some((replicator, name))) => {
                        let open = Open {
                            core: replicator,
                            name: name.map(Arc::from),
                            pins: 0,
                            generation: 0,
                            last_used: Instant::now(),
                            traffic: 0,
                        };
                        let mut summary = open.summary();
                        summary.open = false;
                        let closed = open.core.feed().close().await;
                        store.state().summaries.insert(dk, summary.clone());
                        closed.map_err(|source| Error::CloseCore {
                            key: core.key,
                            source: Box::new(source),
                        })?;
                        Ok(Some(summary))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
            };
            drop(guard);
            store.release(dk, slot);
            result
        })
        .await
    }

    fn known_summary(&self, dk: &DiscoveryKey) -> Option<CoreSummary> {
        let state = self.state();
        match state.open.get(dk) {
            Some(open) => Some(open.summary()),
            None => state.summaries.get(dk).cloned(),
        }
    }

    /// The tombstone of a removed core with this key, if any.
    pub fn tombstone(&self, key: &PublicKey) -> Option<Tombstone> {
        self.state().tombstones.get(key)
    }

    /// Every tombstone.
    pub fn tombstones(&self) -> Vec<Tombstone> {
        self.state().tombstones.all()
    }

    /// Sets (with a length) or clears the tombstone of `key`, saving the file first.
    async fn set_tombstone(&self, key: PublicKey, length: Option<u64>) -> Result<(), Error> {
        let updated = self.state().tombstones.with(key, length);
        let saved = blocking("saving tombstones", move || {
            updated.save()?;
            Ok(updated)
        })
        .await?;
        self.state().tombstones = saved;
        Ok(())
    }

    fn is_banned(&self, remote: &PeerKey, dk: &DiscoveryKey) -> bool {
        let mut state = self.state();
        match state.bans.get(&(*remote, *dk)) {
            Some(since) if since.elapsed() < BAN => true,
            Some(_) => {
                state.bans.remove(&(*remote, *dk));
                false
            }
            None => false,
        }
    }

    /// Stops replicating `dk` with `remote` for a while.
    fn ban(&self, remote: PeerKey, dk: DiscoveryKey) {
        let mut state = self.state();
        if state.bans.len() >= MAX_BANS {
            if let Some(oldest) = state
                .bans
                .iter()
                .min_by_key(|(_, since)| **since)
                .map(|(k, _)| *k)
            {
                state.bans.remove(&oldest);
            }
        }
        state.bans.insert((remote, dk), Instant::now());
    }

    async fn expect_core(&self, dk: DiscoveryKey, wanted: Wanted) -> Result<Core, Error> {
        match self.load(dk, wanted).await? {
            Some(core) => Ok(core),
            // Only a lookup by discovery key can find nothing.
            None => Err(Error::Internal {
                what: format!("opening core {dk}"),
                reason: "no core was opened".into(),
            }),
        }
    }

    /// Gets the slot of `dk`, creating it.
    fn slot(&self, dk: DiscoveryKey) -> Result<Arc<Slot>, Error> {
        let mut state = self.state();
        if state.closed {
            return Err(self.closed_error());
        }
        Ok(state.slots.entry(dk).or_default().clone())
    }

    /// Forgets `slot` if nobody else holds it and it holds no core.
    fn release(&self, dk: DiscoveryKey, slot: Arc<Slot>) {
        let mut state = self.state();
        // Slots are only cloned under the state lock: the map's reference and ours.
        if Arc::strong_count(&slot) == 2
            && state.slots.get(&dk).is_some_and(|s| Arc::ptr_eq(s, &slot))
            && !state.open.contains_key(&dk)
        {
            state.slots.remove(&dk);
        }
    }

    async fn load(&self, dk: DiscoveryKey, wanted: Wanted) -> Result<Option<Core>, Error> {
        {
            let mut state = self.state();
            if state.closed {
                return Err(self.closed_error());
            }
            if let Some(open) = state.open.get_mut(&dk) {
                return Ok(Some(self.pin(dk, open)));
            }
        }
        let store = self.clone();
        detached(format!("opening core {dk}"), async move {
            store.load_slot(dk, wanted).await
        })
        .await
    }

    /// Opens the core of `dk` under its slot's lock. Runs as its own task, so a caller
    /// that gives up never leaves a feed half opened.
    async fn load_slot(&self, dk: DiscoveryKey, wanted: Wanted) -> Result<Option<Core>, Error> {
        let slot = self.slot(dk)?;
        let mut guard = slot.core.lock().await;
        if guard.is_some() {
            let mut state = self.state();
            if let Some(open) = state.open.get_mut(&dk) {
                return Ok(Some(self.pin(dk, open)));
            }
        }
        if let Err(e) = self.check_tombstone(dk, &wanted).await {
            drop(guard);
            self.release(dk, slot);
            return Err(e);
        }
        let mut attempts = 0;
        let (replicator, name) = loop {
            match self.open_core(dk, wanted.clone_plan()).await {
                Ok(Some(opened)) => break opened,
                Ok(None) => {
                    drop(guard);
                    self.release(dk, slot);
                    return Ok(None);
                }
                // Out of descriptors: close an unused core and try again.
                Err(e) if e.is_out_of_descriptors() && attempts < EMFILE_RETRIES => {
                    attempts += 1;
                    let victim = {
                        let mut state = self.state();
                        let open = state.open.len();
                        state.over_budget(open.saturating_sub(1))
                    };
                    match victim.first() {
                        Some(&(victim, generation)) => {
                            tracing::warn!(%dk, "out of file descriptors opening a core; closing an unused one");
                            self.evict(victim, generation).await;
                        }
                        None => {
                            drop(guard);
                            self.release(dk, slot);
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    drop(guard);
                    self.release(dk, slot);
                    return Err(e);
                }
            }
        };
        let name: Option<Arc<[u8]>> = name.map(Arc::from);
        let (core, streams) = {
            let mut state = self.state();
            if state.closed {
                (None, Vec::new())
            } else {
                let generation = state.next_id();
                let feed = replicator.feed();
                if let Some(catalog) = &mut state.catalog {
                    catalog.entry(dk).or_insert_with(|| StoredCore {
                        key: feed.key(),
                        discovery_key: dk,
                        name: name.as_deref().map(<[u8]>::to_vec),
                        writable: feed.writable(),
                    });
                }
                state.summaries.remove(&dk);
                let mut open = Open {
                    core: replicator.clone(),
                    name: name.clone(),
                    pins: 0,
                    generation,
                    last_used: Instant::now(),
                    traffic: 0,
                };
                let core = self.pin(dk, &mut open);
                state.open.insert(dk, open);
                let streams: Vec<Arc<Stream>> = state.streams.values().cloned().collect();
                (Some(core), streams)
            }
        };
        let Some(core) = core else {
            // The store was closed while we opened it.
            let _ = replicator.feed().close().await;
            drop(guard);
            self.release(dk, slot);
            return Err(self.closed_error());
        };
        *guard = Some(replicator.clone());
        for stream in streams {
            stream.attach(self, &replicator);
        }
        drop(guard);
        self.trim();
        Ok(Some(core))
    }

    /// Refuses to sign under the key of a removed core (see [`Tombstone`]) unless the
    /// store holds its whole history again (followed back from peers): then appending
    /// continues that history, and the tombstone goes. Called with the slot locked.
    async fn check_tombstone(&self, dk: DiscoveryKey, wanted: &Wanted) -> Result<(), Error> {
        let Some(tombstone) = wanted
            .signs()
            .then(|| wanted.creates())
            .flatten()
            .and_then(|key| self.tombstone(&key))
        else {
            return Ok(());
        };
        let removed = Error::Removed {
            key: tombstone.key,
            length: tombstone.length,
        };
        let Some((stored, _)) = self.open_core(dk, Wanted::Stored).await? else {
            return Err(removed);
        };
        let length = stored.feed().len();
        let closed = stored.feed().close().await;
        closed.map_err(|source| Error::CloseCore {
            key: tombstone.key,
            source: Box::new(source),
        })?;
        if length < tombstone.length {
            return Err(removed);
        }
        self.set_tombstone(tombstone.key, None).await
    }

    /// Starts closing unused cores while more than `max_open` are open.
    fn trim(&self) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        let victims = state.over_budget(self.inner.options.max_open);
        for (dk, generation) in victims {
            let store = self.clone();
            state
                .evictions
                .spawn(async move { store.evict(dk, generation).await });
        }
        while state.evictions.try_join_next().is_some() {}
    }

    /// Closes the core of `dk` if it is still the same opening (`generation`) and nobody
    /// holds it.
    async fn evict(&self, dk: DiscoveryKey, generation: u64) {
        let Some(slot) = self.state().slots.get(&dk).cloned() else {
            return;
        };
        let mut guard = slot.core.lock().await;
        let summary = {
            let mut state = self.state();
            match state.open.get(&dk) {
                Some(open) if open.generation == generation && open.pins == 0 => {}
                _ => {
                    drop(state);
                    drop(guard);
                    self.release(dk, slot);
                    return;
                }
            }
            let open = state.open.remove(&dk);
            open.map(|o| {
                let mut summary = o.summary();
                summary.open = false;
                summary
            })
        };
        let core = guard.take();
        if let Err(error) = self.unload(dk, core).await {
            tracing::warn!(%dk, %error, "closing an unused core");
        }
        if let Some(summary) = summary {
            self.state().summaries.insert(dk, summary);
        }
        drop(guard);
        self.release(dk, slot);
        tracing::debug!(%dk, "closed an unused core");
    }

    /// Opens the feed of `dk` from disk (creating it as `wanted` says). A core directory
    /// this call created is removed again if the open fails, so a failed create leaves
    /// nothing behind.
    async fn open_core(
        &self,
        dk: DiscoveryKey,
        wanted: Wanted,
    ) -> Result<Option<(Replicator, Option<Vec<u8>>)>, Error> {
        let dir = self.core_dir(&dk);
        let master = self.inner.master.clone();
        let at = dir.clone();
        let root = self.inner.dir.clone();
        let (plan, created) = blocking("reading a core's keys", move || {
            let existed = at.exists();
            match plan(&at, &dk, &master, wanted) {
                Ok(plan) => Ok((plan, !existed)),
                Err(e) => {
                    if !existed {
                        let _ = layout::remove_core_dir(&root, &dk);
                    }
                    Err(e)
                }
            }
        })
        .await?;
        let Some(plan) = plan else { return Ok(None) };
        let options = FeedOptions {
            key: Some(plan.key),
            secret_key: plan.secret,
            create_if_missing: true,
            sparse: self.inner.options.sparse,
            store_secret_key: plan.store_secret_key,
            durability: self.inner.options.durability,
            ..FeedOptions::default()
        };
        let storage = CoreStorage::new(dir.clone(), plan.store_secret_key);
        let feed = match Feed::open(storage, options).await {
            Ok(feed) => feed,
            Err(source) => {
                if created {
                    let root = self.inner.dir.clone();
                    let _ = blocking("removing a core that failed to open", move || {
                        layout::remove_core_dir(&root, &dk)
                    })
                    .await;
                }
                return Err(Error::Open {
                    key: plan.key,
                    path: dir,
                    source: Box::new(source),
                });
            }
        };
        tracing::debug!(key = %feed.key(), writable = feed.writable(), "opened core");
        let replicator = Replicator::new(feed, self.inner.options.replicator.clone());
        Ok(Some((replicator, plan.name)))
    }

    /// Closes the core now (it is reopened when asked for again): stops replicating it on
    /// every connection (its channels are closed) and closes its feed, even while handles
    /// to it live. Nothing happens if it is not open.
    pub async fn close_core(&self, key: &PublicKey) -> Result<(), Error> {
        let dk = key.discovery_key();
        let Some(slot) = self.state().slots.get(&dk).cloned() else {
            return Ok(());
        };
        // Take the slot before going detached, and unlist the core at once: a get that
        // comes after this call (even one that gave up waiting) must not find the core
        // that is about to be closed.
        let mut guard = slot.core.clone().lock_owned().await;
        let summary = self.unlist(&dk);
        let store = self.clone();
        detached(format!("closing core {key}"), async move {
            let result = store.unload(dk, guard.take()).await;
            if let Some(summary) = summary {
                store.state().summaries.insert(dk, summary);
            }
            drop(guard);
            store.release(dk, slot);
            result
        })
        .await
    }

    /// Takes `dk` out of the open cores (its slot is locked); returns its summary.
    fn unlist(&self, dk: &DiscoveryKey) -> Option<CoreSummary> {
        self.state().open.remove(dk).map(|o| {
            let mut summary = o.summary();
            summary.open = false;
            summary
        })
    }

    async fn unload(&self, dk: DiscoveryKey, core: Option<Replicator>) -> Result<(), Error> {
        // Callers have unlisted the core already (under its slot's lock).
        let streams: Vec<Arc<Stream>> = self.state().streams.values().cloned().collect();
        let Some(core) = core else { return Ok(()) };
        let key = core.feed().key();
        let peers: Vec<oneshot::Receiver<()>> =
            streams.iter().filter_map(|s| s.detach(dk)).collect();
        // Let each peer finish what it is doing with the feed before closing it: a peer
        // that fails on a closed feed would take its whole connection down.
        let stopped = tokio::time::timeout(PEER_STOP_TIMEOUT, async {
            for peer in peers {
                let _ = peer.await;
            }
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(%key, "a peer did not stop within {PEER_STOP_TIMEOUT:?}; closing the core anyway");
        }
        core.feed()
            .close()
            .await
            .map_err(|source| Error::CloseCore {
                key,
                source: Box::new(source),
            })
    }

    /// Closes the core and deletes its directory, then its parent directories if no other
    /// core is left in them. Removing a writable core that has blocks leaves a
    /// [`Tombstone`] (written before anything is deleted). Removing a core that is not
    /// stored does nothing.
    pub async fn remove(&self, key: &PublicKey) -> Result<(), Error> {
        let dk = key.discovery_key();
        let slot = self.slot(dk)?;
        // As in close_core: the slot is ours before this call can be given up on.
        let mut guard = slot.core.clone().lock_owned().await;
        self.unlist(&dk);
        let store = self.clone();
        let key = *key;
        detached(format!("removing core {key}"), async move {
            let result = store.remove_locked(dk, guard.take()).await;
            drop(guard);
            store.release(dk, slot);
            result
        })
        .await
    }

    async fn remove_locked(&self, dk: DiscoveryKey, core: Option<Replicator>) -> Result<(), Error> {
        // What it was, to know whether it needs a tombstone: the open core, or the stored
        // one opened for a moment.
        let core = match core {
            Some(core) => Some(core),
            None => match self.open_core(dk, Wanted::Stored).await {
                Ok(core) => core.map(|(r, _)| r),
                // A damaged core cannot tell; it goes without a tombstone.
                Err(e) if e.is_damage() => {
                    tracing::warn!(%dk, error = %e, "removing a damaged core");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let mut result = Ok(());
        if let Some(core) = core {
            let feed = core.feed().clone();
            if feed.writable() && !feed.is_empty() {
                let (key, length) = (feed.key(), feed.len());
                if let Err(e) = self.set_tombstone(key, Some(length)).await {
                    // Keep the core rather than lose track of a history peers may hold.
                    let _ = self.unload(dk, Some(core)).await;
                    return Err(e);
                }
            }
            result = self.unload(dk, Some(core)).await;
        }
        let root = self.inner.dir.clone();
        let removed = blocking("removing a core", move || {
            layout::remove_core_dir(&root, &dk)
        })
        .await;
        if let Err(e) = removed {
            result = result.and(Err(e));
        }
        let mut state = self.state();
        state.summaries.remove(&dk);
        if let Some(catalog) = &mut state.catalog {
            catalog.remove(&dk);
        }
        result
    }

    /// Registers a replication stream; returns its id and the cores open now.
    fn register_stream(&self, stream: Arc<Stream>) -> Option<(u64, Vec<DiscoveryKey>)> {
        let mut state = self.state();
        if state.closed {
            return None;
        }
        let id = state.next_id();
        state.streams.insert(id, stream);
        Some((id, state.open.keys().copied().collect()))
    }

    fn unregister_stream(&self, id: u64) {
        self.state().streams.remove(&id);
    }

    /// Attaches the open core of `dk` to `stream`, with its slot locked; false if it is
    /// not open (any more).
    async fn attach_open(&self, stream: &Arc<Stream>, dk: DiscoveryKey) -> bool {
        let Some(slot) = self.state().slots.get(&dk).cloned() else {
            return false;
        };
        let guard = slot.core.lock().await;
        let attached = match &*guard {
            Some(core) => {
                stream.attach(self, core);
                true
            }
            None => false,
        };
        drop(guard);
        self.release(dk, slot);
        attached
    }

    /// Closes every core and destroys every replication connection; the store cannot be
    /// used afterwards. Returns the first error of closing a core (all are closed).
    pub async fn close(&self) -> Result<(), Error> {
        let store = self.clone();
        detached("closing the corestore".into(), async move {
            store.close_all().await
        })
        .await
    }

    async fn close_all(&self) -> Result<(), Error> {
        let (slots, streams, mut evictions) = {
            let mut state = self.state();
            state.closed = true;
            let slots: Vec<(DiscoveryKey, Arc<Slot>)> =
                state.slots.iter().map(|(k, v)| (*k, v.clone())).collect();
            let streams: Vec<Arc<Stream>> = state.streams.values().cloned().collect();
            (slots, streams, std::mem::take(&mut state.evictions))
        };
        if let Some(sweeper) = lock(&self.inner.sweeper).take() {
            sweeper.abort();
        }
        for stream in streams {
            stream.protocol.destroy("the corestore was closed");
        }
        while evictions.join_next().await.is_some() {}
        let mut result = Ok(());
        for (dk, slot) in slots {
            let mut guard = slot.core.lock().await;
            let core = guard.take();
            self.state().open.remove(&dk);
            if let Some(core) = core {
                let key = core.feed().key();
                if let Err(source) = core.feed().close().await {
                    result = result.and(Err(Error::CloseCore {
                        key,
                        source: Box::new(source),
                    }));
                }
            }
            drop(guard);
            self.release(dk, slot);
        }
        result
    }
}

impl Wanted {
    /// The same request again (an open is retried after closing an unused core).
    fn clone_plan(&self) -> Wanted {
        match self {
            Wanted::Named { name, key_pair } => Wanted::Named {
                name: name.clone(),
                key_pair: key_pair.clone(),
            },
            Wanted::KeyPair(key_pair) => Wanted::KeyPair(key_pair.clone()),
            Wanted::Key(key) => Wanted::Key(*key),
            Wanted::Stored => Wanted::Stored,
        }
    }
}

/// Closes cores nobody holds and no peer replicates once they have been idle for
/// `idle_timeout`, and trims the cache to `max_open` when handles that kept it over are
/// gone. Runs until the store is closed or dropped.
async fn sweep(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => (inner.options.idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(10)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let store = Corestore { inner };
        let idle_timeout = store.inner.options.idle_timeout;
        let now = Instant::now();
        let mut state = store.state();
        if state.closed {
            return;
        }
        let mut idle = Vec::new();
        for (dk, open) in state.open.iter_mut() {
            open.note_traffic(now);
            if open.pins == 0
                && now.duration_since(open.last_used) >= idle_timeout
                && open.core.peer_count() == 0
            {
                idle.push((*dk, open.generation));
            }
        }
        for (dk, generation) in idle {
            let evicting = store.clone();
            state
                .evictions
                .spawn(async move { evicting.evict(dk, generation).await });
        }
        drop(state);
        store.trim();
    }
}

/// A namespace of a [`Corestore`] (JS `store.namespace(name)`): it only changes what
/// [`Namespace::default_core`] derives from; every other core is shared with the store,
/// and `get_named` derives exactly as the store does.
#[derive(Clone, Debug)]
pub struct Namespace {
    store: Corestore,
    name: String,
}

impl Namespace {
    /// The store.
    pub fn store(&self) -> &Corestore {
        &self.store
    }

    /// A nested namespace: `"<this name>:<name>"`.
    pub fn namespace(&self, name: &str) -> Namespace {
        Namespace {
            store: self.store.clone(),
            name: format!("{}:{name}", self.name),
        }
    }

    /// The core derived from this namespace's name (JS `namespace.default()`).
    pub async fn default_core(&self) -> Result<Core, Error> {
        self.store.get_named(self.name.as_bytes()).await
    }
}

/// Decides which keys open the core in `dir` (`derived-key-storage` rules, spec §4), and
/// writes its `name` file for a new named core. `None`: nothing is stored under `dk` and
/// only its discovery key is known.
fn plan(
    dir: &Path,
    dk: &DiscoveryKey,
    master: &MasterKey,
    wanted: Wanted,
) -> Result<Option<Plan>, Error> {
    let stored = layout::read_stored_keys(dir)?;
    if let Some(key) = stored.key {
        if key.discovery_key() != *dk {
            return Err(Error::MisplacedKey {
                path: dir.join(hypercore::storage::FileKind::Key.name()),
                key,
                expected: *dk,
            });
        }
    }
    let key = match &wanted {
        Wanted::Named { key_pair, .. } | Wanted::KeyPair(key_pair) => key_pair.public,
        Wanted::Key(key) => *key,
        Wanted::Stored => match stored.key {
            Some(key) => key,
            None => return Ok(None),
        },
    };
    let plan = match (&stored.name, wanted) {
        // A stored name wins, whoever asks (JS re-derives from it on every open).
        (Some(name), _) => Plan {
            key,
            secret: Some(layout::key_pair_of_stored_name(master, dir, name, dk)?.secret),
            store_secret_key: false,
            name: Some(name.clone()),
        },
        (None, Wanted::Named { name, key_pair }) => {
            layout::write_name(dir, &name)?;
            Plan {
                key,
                secret: Some(key_pair.secret),
                store_secret_key: false,
                name: Some(name),
            }
        }
        (None, Wanted::KeyPair(key_pair)) => Plan {
            key,
            secret: Some(key_pair.secret),
            store_secret_key: true,
            name: None,
        },
        // hypercore reads a stored `secret_key` itself; otherwise the core is read-only.
        (None, Wanted::Key(_) | Wanted::Stored) => Plan {
            key,
            secret: None,
            store_secret_key: false,
            name: None,
        },
    };
    Ok(Some(plan))
}
