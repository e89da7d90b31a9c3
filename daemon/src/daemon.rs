//! The running daemon: its home, persisted state, corestore and subsystems, and how it
//! starts, restores and shuts down.
//!
//! A subsystem is a plain struct with the same three steps: `start` (open what it owns;
//! its tasks run under a child of the daemon's [`Tasks`]), `restore(&State)` (bring back
//! what its section of the state file says; it returns a few words for the log) and
//! `shutdown` (stop accepting, cancel its tasks, let go of what it holds). The daemon
//! keeps them in a fixed order: started and restored in that order, shut down in the
//! reverse one; then it waits for every task (bounded) and closes the corestore, which
//! they all use. Today: the peer network (`network`), the swarm (`swarm`), the cores
//! (`follows`) and the drives (`drive_set`). A new subsystem is a module with those three
//! steps, a field here and one line in each of [`Daemon::start`], `restore` and
//! [`Daemon::shutdown`]. The operations front ends call are methods on [`Daemon`], in the
//! domain modules (`cores`, `drives`, `peers`, `seeding`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corestore::{Corestore, CorestoreOptions};
use futures::stream::{BoxStream, StreamExt};
use hypercore_replication::ReplicatorOptions;
use hyperd_config::{Config, Home};

use crate::drive_set::DriveSet;
use crate::error::{DaemonError, Result};
use crate::follows::Follows;
use crate::lock::HomeLock;
use crate::network::Network;
use crate::state::StateFile;
use crate::swarm::Swarm;
use crate::tasks::Tasks;

/// How long unused cores stay open without peers.
const CORE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for the daemon's tasks (running calls among them) before it
/// closes the corestore anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Inner {
    home: Home,
    storage: PathBuf,
    state: StateFile,
    started: Instant,
    file_limit: u64,
    /// Every task of the daemon; cancelling it is the stop signal.
    tasks: Tasks,
    /// Used by every subsystem; closed after all of them.
    store: Corestore,
    // The subsystems, in start order.
    network: Network,
    swarm: Swarm,
    follows: Follows,
    drives: DriveSet,
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
    /// The DHT's address, if it runs.
    pub dht_address: Option<std::net::SocketAddrV4>,
    /// Its bootstrap nodes.
    pub dht_bootstrap: Vec<std::net::SocketAddrV4>,
    /// Discovery keys joined on it.
    pub swarm_topics: usize,
    /// Whether local discovery (mDNS) runs.
    pub mdns: bool,
    /// Our address as the DHT sees it, once known (we are holepunchable then).
    pub public_address: Option<std::net::SocketAddrV4>,
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
    /// Opens the home (locked, private to the user) and the corestore, starts the
    /// subsystems and restores what was followed and which peers are redialled.
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
        let store = open_store(&storage, config, options).await?;

        let tasks = Tasks::new();
        // The network first: the swarm dials through it.
        let started = async {
            let port = match config.listen.as_str() {
                "" => None,
                listen => {
                    let addr = listen
                        .parse()
                        .with_context(|| format!("listen = {listen:?}"))?;
                    let dht = !config.bootstrap.is_empty();
                    Some(crate::port::bind(addr, dht).await?)
                }
            };
            let (tcp, udp) = match port {
                Some(port) => (Some(port.tcp), port.udp),
                None => (None, None),
            };
            // uTP shares the DHT's socket.
            let utp = udp
                .map(hyperswarm::Endpoint::from_socket)
                .transpose()
                .context("starting uTP on the DHT's socket")?;
            let network = Network::start(store.clone(), config, tcp, utp.clone(), tasks.child());
            match Swarm::start(config, network.clone(), utp, tasks.child()).await {
                Ok(swarm) => Ok((network, swarm)),
                Err(e) => {
                    network.shutdown();
                    Err(e)
                }
            }
        };
        let (network, swarm) = match started.await {
            Ok(started) => started,
            Err(e) => {
                tasks.stop(SHUTDOWN_GRACE).await;
                let _ = store.close().await;
                return Err(e);
            }
        };
        let follows = Follows::start(store.clone(), tasks.child());
        let drives = DriveSet::start(store.clone(), tasks.child());

        let daemon = Daemon {
            inner: Arc::new(Inner {
                home,
                storage,
                state,
                started: Instant::now(),
                file_limit: options.file_limit,
                tasks,
                store,
                network,
                swarm,
                follows,
                drives,
            }),
        };
        daemon.restore().await;
        Ok((daemon, lock))
    }

    /// Each subsystem brings back its part of the state file, in order.
    async fn restore(&self) {
        let state = self.inner.state.get();
        let restored = [
            self.inner.follows.restore(&state).await,
            self.inner.drives.restore(&state).await,
            self.inner.network.restore(&state),
            self.inner.swarm.restore(&state),
        ];
        tracing::info!("{}", restored.join("; "));
    }

    /// Stops everything: the stop signal first (front ends stop accepting, streams end
    /// with ABORTED), then the subsystems in reverse order; waits for every task, at
    /// most a few seconds (naming those still running), and closes the corestore.
    pub async fn shutdown(&self) {
        self.request_stop();
        self.inner.drives.shutdown();
        self.inner.follows.shutdown();
        self.inner.swarm.shutdown();
        self.inner.network.shutdown();
        self.inner.tasks.stop(SHUTDOWN_GRACE).await;
        if let Err(e) = self.inner.store.close().await {
            tracing::error!("closing the corestore: {e}");
        }
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

    /// How long the daemon has run.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The soft file limit in force.
    pub fn file_limit(&self) -> u64 {
        self.inner.file_limit
    }

    /// Versions, identity, counts and limits.
    pub async fn status(&self) -> Result<DaemonStatus> {
        let store = self.store();
        let cores = store.count().await.map_err(DaemonError::store)?;
        let network = self.network();
        let swarm = self.inner.swarm.status().await;
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
            dht_address: self.inner.swarm.dht_address(),
            dht_bootstrap: self.inner.swarm.bootstrap().to_vec(),
            swarm_topics: self.inner.swarm.topics(),
            mdns: swarm.mdns,
            public_address: swarm.public_address,
        })
    }

    /// The DHT and the cores joined on it.
    pub async fn swarm_status(&self) -> crate::swarm::SwarmStatus {
        self.inner.swarm.status().await
    }

    /// The swarm subsystem: what is announced and looked up.
    pub(crate) fn swarm(&self) -> &Swarm {
        &self.inner.swarm
    }

    /// The cores.
    pub(crate) fn store(&self) -> &Corestore {
        &self.inner.store
    }

    /// The cores subsystem: what is followed and removed.
    pub(crate) fn follows(&self) -> &Follows {
        &self.inner.follows
    }

    /// The drives subsystem: the drives held open.
    pub(crate) fn drives(&self) -> &DriveSet {
        &self.inner.drives
    }

    /// The peer connections.
    pub(crate) fn network(&self) -> &Network {
        &self.inner.network
    }

    /// Follows and remembered peers, as persisted.
    pub(crate) fn state(&self) -> &StateFile {
        &self.inner.state
    }

    /// Asks the daemon to shut down (what SIGTERM does): every task and stream is told
    /// to stop; [`Daemon::shutdown`] then waits for them.
    pub fn request_stop(&self) {
        self.inner.tasks.cancel();
    }

    /// True once a shutdown was asked for.
    pub fn is_stopping(&self) -> bool {
        self.inner.tasks.is_cancelled()
    }

    /// Resolves when a shutdown is asked for.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.tasks.cancelled()
    }

    /// The daemon's tasks running now, by name, with how many of each: none once
    /// [`Daemon::shutdown`] has returned, unless it had to give up waiting.
    pub fn running_tasks(&self) -> Vec<(&'static str, usize)> {
        self.inner.tasks.running()
    }

    /// Runs `task` as one of the daemon's tasks, until it ends or the daemon stops.
    pub(crate) fn spawn(
        &self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.inner.tasks.spawn(name, task);
    }

    /// Runs the task `start` makes from the daemon's stop token, which the task must
    /// watch: for tasks that finish something (answer, close) when told to stop.
    pub(crate) fn spawn_with_stop<F>(
        &self,
        name: &'static str,
        start: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn_with_stop(name, start);
    }

    /// Runs blocking work on the runtime's blocking threads, as one of the daemon's
    /// tasks (a shutdown waits for it).
    pub(crate) fn spawn_blocking<R: Send + 'static>(
        &self,
        name: &'static str,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> tokio::task::JoinHandle<R> {
        self.inner.tasks.spawn_blocking(name, work)
    }

    /// `op`, unless the daemon stops first: then ABORTED.
    pub(crate) async fn unless_stopping<T>(
        &self,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.inner
            .tasks
            .unless_cancelled(op)
            .await
            .unwrap_or_else(|| Err(stopping_error()))
    }

    /// `stream` until the daemon stops, when it ends with ABORTED: no stream holds up a
    /// shutdown, and its client learns why it ended. It ends after its first error.
    pub(crate) fn until_stopped<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let stop = self.stopping();
        let stream = futures::stream::unfold(Some((stream, Box::pin(stop))), |state| async move {
            let (mut stream, mut stop) = state?;
            tokio::select! {
                // Once stopped, nothing more: not even an item that is ready.
                biased;
                _ = &mut stop => Some((Err(stopping_error()), None)),
                item = stream.next() => match item? {
                    Ok(item) => Some((Ok(item), Some((stream, stop)))),
                    Err(e) => Some((Err(e), None)),
                },
            }
        });
        stream.boxed()
    }

    /// Changes the persisted state; the file is written and fsync'ed on a blocking
    /// thread (which a shutdown waits for).
    pub(crate) async fn update_state(
        &self,
        change: impl FnOnce(&mut crate::state::State) + Send + 'static,
    ) -> Result<()> {
        let daemon = self.clone();
        self.spawn_blocking("saving the state file", move || {
            daemon.inner.state.update(change)
        })
        .await
        .map_err(|e| DaemonError::internal(format!("saving the state: {e}")))?
    }
}

/// What an operation cut short by a shutdown fails with.
pub(crate) fn stopping_error() -> DaemonError {
    DaemonError::aborted("hyperd is shutting down")
}

/// Opens the corestore at `storage` with the daemon's settings.
async fn open_store(
    storage: &Path,
    config: &Config,
    options: StartOptions,
) -> anyhow::Result<Corestore> {
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
    Corestore::open(storage, store_options)
        .await
        .with_context(|| format!("opening the corestore at {}", storage.display()))
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
