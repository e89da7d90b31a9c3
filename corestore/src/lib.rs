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
//! * **Replication** (§5): [`Corestore::replicate`] runs every loaded core over one
//!   hypercore-protocol connection, adds cores loaded later, opens cores the remote asks
//!   for from disk, and refuses the others with a `Close`, as JS does.

mod error;
mod keys;
mod layout;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hypercore::{DiscoveryKey, Durability, Feed, FeedOptions, KeyPair, PublicKey, SecretKey};
use hypercore_protocol::{Events, Outcome, Protocol};
use hypercore_replication::ReplicatorOptions;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub use crate::error::Error;
pub use crate::keys::{derive_key_pair, derive_seed, encode_name, MasterKey, CORESTORE_NAMESPACE};
pub use crate::layout::{core_path, StoredCore};
pub use hypercore_replication::Replicator;

use crate::layout::CoreStorage;

/// How long unloading a core waits for its peers to stop using it.
const PEER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl Default for CorestoreOptions {
    fn default() -> Self {
        CorestoreOptions {
            durability: Durability::default(),
            sparse: true,
            replicator: ReplicatorOptions::default(),
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

/// Which keys to open a core's feed with.
struct Plan {
    key: PublicKey,
    secret: Option<SecretKey>,
    store_secret_key: bool,
}

/// The lifecycle lock of one discovery key: opening, closing and removing a core hold it,
/// so a feed is never opened twice (its bitfield is `flock`ed) nor reopened while closing.
#[derive(Default)]
struct Slot {
    core: Arc<tokio::sync::Mutex<Option<Replicator>>>,
}

type PeerResult = (PublicKey, Result<(), hypercore_replication::Error>);

/// A replication connection the store serves.
struct Stream {
    protocol: Protocol,
    live: bool,
    peers: Mutex<JoinSet<PeerResult>>,
    /// Cores attached here, each with a receiver that completes when its peer ends.
    attached: Mutex<HashMap<DiscoveryKey, oneshot::Receiver<()>>>,
    /// The first error of a peer that ended early.
    failed: Mutex<Option<Error>>,
}

impl Stream {
    fn peers(&self) -> MutexGuard<'_, JoinSet<PeerResult>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, result: Result<PeerResult, tokio::task::JoinError>) {
        let error = match result {
            Ok((_, Ok(()))) => return,
            Ok((key, Err(source))) => {
                tracing::debug!(%key, remote = %self.protocol.remote_key(), error = %source, "core stopped replicating with peer");
                Error::Replication {
                    key,
                    remote: self.protocol.remote_key(),
                    source: Box::new(source),
                }
            }
            Err(e) if e.is_cancelled() => return,
            Err(e) => Error::Internal {
                what: "replicating a core".into(),
                reason: e.to_string(),
            },
        };
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(error);
    }

    /// Stops running the core of `dk` here, if it runs here: closes our side of its
    /// channel (the remote is told), which ends the peer once it has handled what it
    /// already received. The returned receiver completes when the peer has ended.
    fn detach(&self, dk: DiscoveryKey) -> Option<oneshot::Receiver<()>> {
        let done = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dk)?;
        self.protocol.close(dk);
        Some(done)
    }

    /// Runs `core` over this connection, unless it already runs here. Called with the
    /// core's slot locked, so it never races with unloading the core.
    fn attach(&self, core: &Replicator) {
        let key = core.feed().key();
        if core.feed().is_closed() {
            return;
        }
        match self.protocol.open(key) {
            Ok(channel) => {
                let (done_tx, done_rx) = oneshot::channel();
                self.attached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.discovery_key(), done_rx);
                let task = core.attach(channel, self.live);
                let finished: Vec<_> = {
                    let mut peers = self.peers();
                    peers.spawn(async move {
                        let result = task.await.unwrap_or_else(|e| {
                            Err(hypercore_replication::Error::Protocol(
                                hypercore_protocol::Error::Closed(format!(
                                    "the peer task failed: {e}"
                                )),
                            ))
                        });
                        drop(done_tx);
                        (key, result)
                    });
                    std::iter::from_fn(|| peers.try_join_next()).collect()
                };
                for result in finished {
                    self.record(result);
                }
            }
            Err(hypercore_protocol::Error::AlreadyOpen(_)) => {}
            Err(e) => {
                tracing::debug!(%key, remote = %self.protocol.remote_key(), error = %e, "not replicating core on this connection")
            }
        }
    }
}

struct State {
    closed: bool,
    slots: HashMap<DiscoveryKey, Arc<Slot>>,
    /// Cores open and ready, by discovery key (always the value of their slot).
    loaded: HashMap<DiscoveryKey, Replicator>,
    streams: HashMap<u64, Arc<Stream>>,
    next_stream: u64,
}

struct Inner {
    dir: PathBuf,
    master: MasterKey,
    options: CorestoreOptions,
    state: Mutex<State>,
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
            .field("loaded", &state.loaded.len())
            .field("streams", &state.streams.len())
            .field("closed", &state.closed)
            .finish()
    }
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
        let master = blocking("reading the master key", move || {
            layout::load_or_create_master_key(&at)
        })
        .await?;
        Ok(Self::new(dir, master, options))
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
        blocking("creating the corestore directory", move || {
            std::fs::create_dir_all(&at).map_err(Error::io("creating the corestore directory", &at))
        })
        .await?;
        Ok(Self::new(dir, master, options))
    }

    fn new(dir: PathBuf, master: MasterKey, options: CorestoreOptions) -> Corestore {
        Corestore {
            inner: Arc::new(Inner {
                dir,
                master,
                options,
                state: Mutex::new(State {
                    closed: false,
                    slots: HashMap::new(),
                    loaded: HashMap::new(),
                    streams: HashMap::new(),
                    next_stream: 0,
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; if something did, the maps are still
        // consistent (every update is a single insert or remove).
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            dir: self.inner.dir.clone(),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The master key.
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.master
    }

    /// The directory of the core with this discovery key (whether or not it exists).
    pub fn core_dir(&self, discovery_key: &DiscoveryKey) -> PathBuf {
        self.inner.dir.join(core_path(discovery_key))
    }

    /// The core derived from `name` (JS `store.get({ name })`), created if needed. Its
    /// `name` file makes it writable again after a restart, by name or by key.
    pub async fn get_named(&self, name: &[u8]) -> Result<Replicator, Error> {
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        let key_pair = derive_key_pair(&self.inner.master, name);
        let dk = key_pair.public.discovery_key();
        let wanted = Wanted::Named {
            name: name.to_vec(),
            key_pair,
        };
        self.expect_core(dk, wanted).await
    }

    /// The store's default core, derived from the name `"default"` (JS `store.default()`).
    pub async fn default_core(&self) -> Result<Replicator, Error> {
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
    pub async fn create(&self) -> Result<Replicator, Error> {
        use rand::RngCore;
        let mut name = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut name);
        self.get_named(&name).await
    }

    /// The core with this explicit key pair (JS `store.get({ keyPair })`); its secret key
    /// is stored in `secret_key` (mode 0600).
    pub async fn get_with_key_pair(&self, key_pair: KeyPair) -> Result<Replicator, Error> {
        let dk = key_pair.public.discovery_key();
        self.expect_core(dk, Wanted::KeyPair(key_pair)).await
    }

    /// The core with this public key, as stored, or a new empty read-only clone. It is
    /// writable if its directory holds its name (re-derived and checked against the
    /// discovery key: [`Error::IncorrectName`] otherwise) or its secret key.
    pub async fn get_by_key(&self, key: PublicKey) -> Result<Replicator, Error> {
        self.expect_core(key.discovery_key(), Wanted::Key(key))
            .await
    }

    /// The loaded core with this discovery key, or the one stored under it
    /// (`<dk path>/key`); `None` if the store has no such core.
    pub async fn get_by_discovery_key(
        &self,
        discovery_key: &DiscoveryKey,
    ) -> Result<Option<Replicator>, Error> {
        self.load(*discovery_key, Wanted::Stored).await
    }

    /// The loaded core with this key, if any.
    pub fn get_loaded(&self, key: &PublicKey) -> Option<Replicator> {
        self.state().loaded.get(&key.discovery_key()).cloned()
    }

    /// Every loaded core, sorted by key.
    pub fn loaded(&self) -> Vec<Replicator> {
        let mut cores: Vec<Replicator> = self.state().loaded.values().cloned().collect();
        cores.sort_by_key(|c| c.feed().key());
        cores
    }

    /// Every core stored in the directory, sorted by discovery key. Entries that are
    /// damaged (no `key` file, a key that does not match its directory, …) are skipped
    /// with a warning naming the path. The directory is walked on a blocking thread.
    pub async fn stored(&self) -> Result<Vec<StoredCore>, Error> {
        let dir = self.inner.dir.clone();
        let master = self.inner.master.clone();
        blocking("listing cores", move || layout::stored_cores(&dir, &master)).await
    }

    async fn expect_core(&self, dk: DiscoveryKey, wanted: Wanted) -> Result<Replicator, Error> {
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
            && !state.loaded.contains_key(&dk)
        {
            state.slots.remove(&dk);
        }
    }

    async fn load(&self, dk: DiscoveryKey, wanted: Wanted) -> Result<Option<Replicator>, Error> {
        {
            let state = self.state();
            if state.closed {
                return Err(self.closed_error());
            }
            if let Some(core) = state.loaded.get(&dk) {
                return Ok(Some(core.clone()));
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
    async fn load_slot(
        &self,
        dk: DiscoveryKey,
        wanted: Wanted,
    ) -> Result<Option<Replicator>, Error> {
        let slot = self.slot(dk)?;
        let mut guard = slot.core.lock().await;
        if let Some(core) = &*guard {
            return Ok(Some(core.clone()));
        }
        let opened = match self.open_core(dk, wanted).await {
            Ok(Some(core)) => core,
            other => {
                drop(guard);
                self.release(dk, slot);
                return other;
            }
        };
        let streams: Option<Vec<Arc<Stream>>> = {
            let mut state = self.state();
            if state.closed {
                None
            } else {
                state.loaded.insert(dk, opened.clone());
                Some(state.streams.values().cloned().collect())
            }
        };
        let Some(streams) = streams else {
            // The store was closed while we opened it.
            let _ = opened.feed().close().await;
            drop(guard);
            self.release(dk, slot);
            return Err(self.closed_error());
        };
        *guard = Some(opened.clone());
        for stream in streams {
            stream.attach(&opened);
        }
        drop(guard);
        Ok(Some(opened))
    }

    /// Opens the feed of `dk` from disk (creating it as `wanted` says).
    async fn open_core(
        &self,
        dk: DiscoveryKey,
        wanted: Wanted,
    ) -> Result<Option<Replicator>, Error> {
        let dir = self.core_dir(&dk);
        let master = self.inner.master.clone();
        let at = dir.clone();
        let plan = blocking("reading a core's keys", move || {
            plan(&at, &dk, &master, wanted)
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
        let feed = Feed::open(storage, options)
            .await
            .map_err(|source| Error::Open {
                key: plan.key,
                path: dir,
                source: Box::new(source),
            })?;
        tracing::debug!(key = %feed.key(), writable = feed.writable(), "opened core");
        Ok(Some(Replicator::new(
            feed,
            self.inner.options.replicator.clone(),
        )))
    }

    /// Unloads the core: stops replicating it on every connection (its channels are
    /// closed) and closes its feed. Nothing happens if it is not loaded.
    pub async fn close_core(&self, key: &PublicKey) -> Result<(), Error> {
        let dk = key.discovery_key();
        let Some(slot) = self.state().slots.get(&dk).cloned() else {
            return Ok(());
        };
        // Take the slot before going detached, and unlist the core at once: a get that
        // comes after this call (even one that gave up waiting) must not find the core
        // that is about to be closed.
        let mut guard = slot.core.clone().lock_owned().await;
        self.state().loaded.remove(&dk);
        let store = self.clone();
        detached(format!("closing core {key}"), async move {
            let result = store.unload(dk, guard.take()).await;
            drop(guard);
            store.release(dk, slot);
            result
        })
        .await
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

    /// Unloads the core and deletes its directory, then its parent directories if no other
    /// core is left in them. Removing a core that is not stored does nothing.
    pub async fn remove(&self, key: &PublicKey) -> Result<(), Error> {
        let dk = key.discovery_key();
        let slot = self.slot(dk)?;
        // As in close_core: the slot is ours before this call can be given up on.
        let mut guard = slot.core.clone().lock_owned().await;
        self.state().loaded.remove(&dk);
        let store = self.clone();
        detached(format!("removing core {key}"), async move {
            let mut result = store.unload(dk, guard.take()).await;
            let root = store.inner.dir.clone();
            let removed = blocking("removing a core", move || {
                layout::remove_core_dir(&root, &dk)
            })
            .await;
            if let Err(e) = removed {
                result = result.and(Err(e));
            }
            drop(guard);
            store.release(dk, slot);
            result
        })
        .await
    }

    /// Replicates over this connection every loaded core and every core loaded while it
    /// is open. When the remote opens a channel for a core not running here, the core is
    /// opened from the store (cache or disk) and attached; if the store does not have it,
    /// the channel is refused with a `Close` (JS behaviour, spec §5). Returns when the
    /// connection ends: an error if it failed or if a core's peer failed.
    ///
    /// `protocol` and `events` come from [`Protocol::connect`]; `live` is the replication
    /// mode of every core on it (normally the connection's own `live` option). Dropping
    /// this future stops adding cores to the connection but does not end it: destroy the
    /// protocol for that.
    pub async fn replicate(
        &self,
        protocol: Protocol,
        mut events: Events,
        live: bool,
    ) -> Result<(), Error> {
        let stream = Arc::new(Stream {
            protocol: protocol.clone(),
            live,
            peers: Mutex::new(JoinSet::new()),
            attached: Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
        });
        let (id, cores) = {
            let mut state = self.state();
            if state.closed {
                drop(state);
                protocol.destroy("the corestore is closed");
                return Err(self.closed_error());
            }
            let id = state.next_stream;
            state.next_stream += 1;
            state.streams.insert(id, stream.clone());
            let cores: Vec<DiscoveryKey> = state.loaded.keys().copied().collect();
            (id, cores)
        };
        // Forgets the stream however this returns, also if the future is dropped.
        let registration = Registration {
            store: self.clone(),
            id,
        };
        for dk in cores {
            self.attach_loaded(&stream, dk).await;
        }
        let mut requests = JoinSet::new();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(hypercore_protocol::Event::DiscoveryKey(dk)) => {
                        let store = self.clone();
                        let stream = stream.clone();
                        requests.spawn(async move { store.on_remote_open(&stream, dk).await });
                    }
                    None => break,
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
                _ = protocol.closed() => break,
            }
        }
        requests.abort_all();
        drop(registration);
        let store_closed = self.state().closed;
        let outcome = protocol.closed().await;
        tracing::debug!(remote = %protocol.remote_key(), ?outcome, "replication connection ended");
        // Every peer ends with the connection.
        let mut peers = std::mem::take(&mut *stream.peers());
        while let Some(result) = peers.join_next().await {
            stream.record(result);
        }
        match outcome {
            Outcome::Failed(_) if store_closed => Ok(()),
            Outcome::Failed(source) => Err(Error::Connection {
                remote: protocol.remote_key(),
                source,
            }),
            Outcome::Finished => {
                let failed = stream
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                failed.map_or(Ok(()), Err)
            }
        }
    }

    /// Attaches the loaded core of `dk` to `stream`, with its slot locked; false if it is
    /// not loaded (any more).
    async fn attach_loaded(&self, stream: &Stream, dk: DiscoveryKey) -> bool {
        let Some(slot) = self.state().slots.get(&dk).cloned() else {
            return false;
        };
        let guard = slot.core.lock().await;
        let attached = match &*guard {
            Some(core) => {
                stream.attach(core);
                true
            }
            None => false,
        };
        drop(guard);
        self.release(dk, slot);
        attached
    }

    /// The remote opened a channel for `dk`, which does not run on this connection yet.
    async fn on_remote_open(&self, stream: &Stream, dk: DiscoveryKey) {
        let refuse = |why: &str| {
            tracing::debug!(%dk, remote = %stream.protocol.remote_key(), "refusing a core: {why}");
            stream.protocol.close(dk);
        };
        match self.get_by_discovery_key(&dk).await {
            // Loading it attached it to every connection already; if it was loaded before
            // (or was created locally just now), attach it here.
            Ok(found) => {
                if !self.attach_loaded(stream, dk).await {
                    refuse(if found.is_some() {
                        "it was unloaded"
                    } else {
                        "the store does not have it"
                    });
                }
            }
            Err(error) => {
                tracing::warn!(%dk, remote = %stream.protocol.remote_key(), %error, "cannot open the core a peer asked for; refusing it");
                stream.protocol.close(dk);
            }
        }
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
        let (slots, streams) = {
            let mut state = self.state();
            state.closed = true;
            let slots: Vec<(DiscoveryKey, Arc<Slot>)> =
                state.slots.iter().map(|(k, v)| (*k, v.clone())).collect();
            let streams: Vec<Arc<Stream>> = state.streams.values().cloned().collect();
            (slots, streams)
        };
        for stream in streams {
            stream.protocol.destroy("the corestore was closed");
        }
        let mut result = Ok(());
        for (dk, slot) in slots {
            let mut guard = slot.core.lock().await;
            let core = guard.take();
            self.state().loaded.remove(&dk);
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

/// Removes a replication stream from the store when dropped.
struct Registration {
    store: Corestore,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.store.state().streams.remove(&self.id);
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
    pub async fn default_core(&self) -> Result<Replicator, Error> {
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
        },
        (None, Wanted::Named { name, key_pair }) => {
            layout::write_name(dir, &name)?;
            Plan {
                key,
                secret: Some(key_pair.secret),
                store_secret_key: false,
            }
        }
        (None, Wanted::KeyPair(key_pair)) => Plan {
            key,
            secret: Some(key_pair.secret),
            store_secret_key: true,
        },
        // hypercore reads a stored `secret_key` itself; otherwise the core is read-only.
        (None, Wanted::Key(_) | Wanted::Stored) => Plan {
            key,
            secret: None,
            store_secret_key: false,
        },
    };
    Ok(Some(plan))
}
