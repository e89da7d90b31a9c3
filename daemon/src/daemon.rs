//! The running daemon: its home, corestore, peer network and persisted state; how it
//! starts (restoring follows and peers), runs and shuts down. The domain operations live
//! in `cores` and `peers`; the gRPC front end in `rpc`.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use corestore::{Core, Corestore, CorestoreOptions};
use hypercore::PublicKey;
use hypercore_protocol::NoiseKeyPair;
use hypercore_replication::{DownloadRange, ReplicatorOptions};
use hyperd_config::{Config, Home};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{DaemonError, Result};
use crate::lock::HomeLock;
use crate::network::{lock, Network, NetworkLimits};
use crate::state::StateFile;

/// How long unused cores stay open without peers.
const CORE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A followed core: held open (so it replicates with every peer), and its full download
/// if it mirrors everything.
struct Followed {
    _core: Core,
    mirror: Option<JoinHandle<()>>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        if let Some(task) = self.mirror.take() {
            task.abort();
        }
    }
}

struct Inner {
    home: Home,
    storage: PathBuf,
    store: Corestore,
    network: Network,
    state: StateFile,
    started: Instant,
    shutdown: watch::Sender<bool>,
    follows: Mutex<HashMap<PublicKey, Followed>>,
    /// Cores removed while this daemon runs (streams on them end with NOT_FOUND).
    removed: Mutex<HashSet<PublicKey>>,
    file_limit: u64,
}

/// The daemon: everything the front ends call. Cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

/// The daemon as `status` reports it.
#[derive(Clone, Debug)]
pub struct DaemonStatus {
    /// hyperd's version.
    pub version: &'static str,
    /// The replication protocol it speaks.
    pub protocol_version: &'static str,
    /// How long it has run.
    pub uptime: Duration,
    /// Its process id.
    pub pid: u32,
    /// Its home directory.
    pub home: PathBuf,
    /// Where the corestore lives.
    pub storage: PathBuf,
    /// The bound peer address, if it listens.
    pub listen_address: Option<std::net::SocketAddr>,
    /// Its static Noise key: its identity to peers.
    pub peer_key: hypercore_protocol::PeerKey,
    /// Live peer connections.
    pub peers: usize,
    /// Cores stored.
    pub cores: usize,
    /// Cores open now.
    pub open_cores: usize,
    /// The most cores kept open at once.
    pub max_open_cores: usize,
    /// The soft file limit in force.
    pub file_limit: u64,
}

/// Options the daemon starts with beyond its configuration.
#[derive(Clone, Copy, Debug)]
pub struct StartOptions {
    /// The soft file limit in force (after raising it).
    pub file_limit: u64,
}

impl Daemon {
    /// Opens the home (locked, private to the user), the corestore and the peer network,
    /// and restores what was followed and which peers are redialled.
    pub async fn start(
        home: Home,
        config: &Config,
        options: StartOptions,
    ) -> anyhow::Result<(Daemon, HomeLock)> {
        let storage = config.storage_dir(&home);
        make_private(home.root(), true)?;
        let lock = HomeLock::acquire(&home.lock_file())?;
        if storage.exists() {
            make_private(&storage, false)?;
        }
        let state = StateFile::load(&home.state_file())?;

        let max_open = crate::limits::open_core_budget(options.file_limit, config);
        if max_open < config.max_open_cores {
            tracing::warn!(
                "keeping at most {max_open} cores open (max_open_cores = {}): the file limit is {}",
                config.max_open_cores,
                options.file_limit
            );
        }
        let store_options = CorestoreOptions {
            durability: match config.durability {
                hyperd_config::Durability::Process => hypercore::Durability::Process,
                hyperd_config::Durability::Sync => hypercore::Durability::Sync,
            },
            replicator: ReplicatorOptions {
                // A followed core shows the length its peers have, not 0.
                follow_length: true,
                ..ReplicatorOptions::default()
            },
            max_open,
            idle_timeout: CORE_IDLE_TIMEOUT,
            ..CorestoreOptions::default()
        };
        let store = Corestore::open(&storage, store_options)
            .await
            .with_context(|| format!("opening the corestore at {}", storage.display()))?;

        // The replication identity is derived from the master key like hyperdrive-daemon's,
        // so it is stable across restarts.
        let seed = corestore::derive_seed(
            store.master_key(),
            "hyperdrive-daemon",
            b"replication-keypair",
        );
        let keypair = NoiseKeyPair::from_seed(&seed);
        let limits = NetworkLimits {
            max_incoming: config.max_peers,
            max_per_ip: config.max_peers_per_ip,
            max_outbound: config.max_outbound_peers,
        };
        let network = Network::start(store.clone(), keypair, &config.listen, limits).await?;

        let daemon = Daemon {
            inner: Arc::new(Inner {
                home,
                storage,
                store,
                network,
                state,
                started: Instant::now(),
                shutdown: watch::Sender::new(false),
                follows: Mutex::new(HashMap::new()),
                removed: Mutex::new(HashSet::new()),
                file_limit: options.file_limit,
            }),
        };
        daemon.restore().await;
        Ok((daemon, lock))
    }

    /// A new handle on the same daemon.
    pub fn handle(&self) -> Daemon {
        self.clone()
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// Where the corestore lives.
    pub fn storage(&self) -> &Path {
        &self.inner.storage
    }

    /// Versions, identity, counts and limits.
    pub async fn status(&self) -> Result<DaemonStatus> {
        let store = self.store();
        let cores = store.count().await.map_err(DaemonError::store)?;
        let network = self.network();
        Ok(DaemonStatus {
            version: env!("CARGO_PKG_VERSION"),
            protocol_version: "hypercore-protocol/8",
            uptime: self.uptime(),
            pid: std::process::id(),
            home: self.home().root().to_owned(),
            storage: self.storage().to_owned(),
            listen_address: network.local_addr(),
            peer_key: network.peer_key(),
            peers: network.peers().len(),
            cores,
            open_cores: store.open_count(),
            max_open_cores: store.options().max_open,
            file_limit: self.file_limit(),
        })
    }

    /// The cores.
    pub fn store(&self) -> &Corestore {
        &self.inner.store
    }

    /// The peer connections.
    pub fn network(&self) -> &Network {
        &self.inner.network
    }

    /// Follows and remembered peers, as persisted.
    pub fn state(&self) -> &StateFile {
        &self.inner.state
    }

    /// How long the daemon has run.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The soft file limit in force.
    pub fn file_limit(&self) -> u64 {
        self.inner.file_limit
    }

    /// Asks the daemon to shut down (what SIGTERM does).
    pub fn request_stop(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    /// True once a shutdown was asked for.
    pub fn is_stopping(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Resolves when a shutdown is asked for.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Changes the persisted state; the file is written and fsync'ed on a blocking
    /// thread.
    pub async fn update_state(
        &self,
        change: impl FnOnce(&mut crate::state::State) + Send + 'static,
    ) -> Result<()> {
        let daemon = self.clone();
        tokio::task::spawn_blocking(move || daemon.inner.state.update(change))
            .await
            .map_err(|e| DaemonError::internal(format!("saving the state: {e}")))?
    }

    /// Keeps `core` open and replicating; with `download_all`, downloads every block
    /// peers have, following appends.
    pub(crate) fn keep_following(&self, core: Core, download_all: bool) {
        let key = core.feed().key();
        let mirror = download_all.then(|| tokio::spawn(mirror(core.clone())));
        lock(&self.inner.follows).insert(
            key,
            Followed {
                _core: core,
                mirror,
            },
        );
    }

    /// Stops following `key` (its core may then be closed when unused).
    pub(crate) fn stop_following(&self, key: &PublicKey) {
        let followed = lock(&self.inner.follows).remove(key);
        drop(followed);
    }

    pub(crate) fn mark_removed(&self, key: PublicKey) {
        lock(&self.inner.removed).insert(key);
    }

    pub(crate) fn forget_removed(&self, key: &PublicKey) {
        lock(&self.inner.removed).remove(key);
    }

    pub(crate) fn was_removed(&self, key: &PublicKey) -> bool {
        lock(&self.inner.removed).contains(key)
    }

    /// Opens every followed core (so peers replicate it), restarts full downloads and
    /// redials remembered peers. Other cores stay closed until something needs them.
    async fn restore(&self) {
        let state = self.inner.state.get();
        let mut followed = 0;
        for (hex, follow) in &state.follows {
            let Ok(key) = hex.parse::<PublicKey>() else {
                tracing::warn!(
                    "skipping a followed core with a malformed key {hex:?} in the state file"
                );
                continue;
            };
            match self.inner.store.get_by_key(key).await {
                Ok(core) => {
                    followed += 1;
                    self.keep_following(core, follow.download_all);
                }
                Err(e) => tracing::error!("cannot open followed core {key}: {e}"),
            }
        }
        for address in &state.peers {
            self.inner.network.remember(address.clone(), None);
        }
        // Learn what is stored in the background, for listings and the status count.
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            match store.count().await {
                Ok(n) => tracing::info!("{n} cores stored"),
                Err(e) => tracing::error!("listing stored cores: {e}"),
            }
        });
        tracing::info!(
            "following {followed} cores; redialing {} remembered peers",
            state.peers.len()
        );
    }

    /// Stops the network, ends follows and closes the corestore.
    pub async fn shutdown(&self) {
        self.request_stop();
        self.inner.network.shutdown();
        let follows: Vec<Followed> = lock(&self.inner.follows).drain().map(|(_, f)| f).collect();
        drop(follows);
        if let Err(e) = self.inner.store.close().await {
            tracing::error!("closing the corestore: {e}");
        }
    }
}

/// Downloads every block of `core` that peers have, following appends, until the core
/// closes or the task is aborted.
async fn mirror(core: Core) {
    let mut events = core.feed().events();
    loop {
        let range = DownloadRange {
            start: 0,
            end: None,
            linear: false,
            priority: 0,
        };
        tokio::select! {
            _ = core.download(range) => {}
            _ = core.feed().closed() => return,
        }
        // Wait for the feed to grow (a peer proved a longer feed).
        loop {
            match events.recv().await {
                Ok(hypercore::Event::Append { .. }) => break,
                Ok(hypercore::Event::Close) => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(_) => return,
            }
        }
    }
}

/// Makes `dir` private to the user (mode 0700), creating it if `create`. A directory that
/// is readable by others is tightened, with a warning: it holds block data, secret-key
/// material and the list of followed keys.
fn make_private(dir: &Path, create: bool) -> anyhow::Result<()> {
    if create && !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating home directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
        return Ok(());
    }
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| {
                format!(
                    "{} is readable by other users (mode {mode:o}) and could not be made private; run chmod 700 on it",
                    dir.display()
                )
            })?;
        tracing::warn!(
            "{} was readable by other users (mode {mode:o}); it is now {:o}",
            dir.display(),
            mode & 0o700
        );
    }
    Ok(())
}
