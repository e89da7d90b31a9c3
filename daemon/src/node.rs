//! The running daemon: its home, corestore, network and persisted state, how it starts
//! (restoring cores and peers), and how it shuts down.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use corestore::{Corestore, CorestoreOptions};
use hypercore::PublicKey;
use hypercore_protocol::NoiseKeyPair;
use hypercore_replication::{DownloadRange, Replicator};
use hyperd_config::{Config, Home};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lock::HomeLock;
use crate::network::{lock, Network};
use crate::state::StateFile;

/// Everything the RPC services share.
pub struct Node {
    /// The home directory.
    pub home: Home,
    /// Where the corestore lives.
    pub storage: std::path::PathBuf,
    /// The cores.
    pub store: Corestore,
    /// The peers.
    pub network: Network,
    /// Follows and remembered peers.
    pub state: StateFile,
    /// When the daemon started.
    pub started: Instant,
    /// Set to true to shut down.
    pub shutdown: watch::Sender<bool>,
    /// Corestore names of named cores (hex key → name), for `CoreInfo.name`.
    names: Mutex<HashMap<PublicKey, Vec<u8>>>,
    /// Tasks that download followed cores in full.
    full_downloads: Mutex<HashMap<PublicKey, JoinHandle<()>>>,
}

impl Node {
    /// The corestore name of a core, if it has one.
    pub fn name_of(&self, key: &PublicKey) -> Option<Vec<u8>> {
        lock(&self.names).get(key).cloned()
    }

    /// Records the name of a core created here.
    pub fn set_name(&self, key: PublicKey, name: Vec<u8>) {
        lock(&self.names).insert(key, name);
    }

    /// Changes the persisted state; the file is written and fsync'ed off the async
    /// workers.
    pub fn update_state(
        &self,
        change: impl FnOnce(&mut crate::state::State),
    ) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.state.update(change))
    }

    /// Keeps downloading every block of `core` that peers have, following appends.
    pub fn download_all(&self, core: &Replicator) {
        let key = core.feed().key();
        let core = core.clone();
        let task = tokio::spawn(async move {
            let mut events = core.feed().events();
            loop {
                let range = DownloadRange {
                    start: 0,
                    end: None,
                    linear: false,
                    priority: 0,
                };
                let _ = core.download(range).await;
                // Wait for the feed to grow (a peer proved a longer feed) or a new peer.
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
        });
        if let Some(old) = lock(&self.full_downloads).insert(key, task) {
            old.abort();
        }
    }

    /// Stops a full download started by [`Node::download_all`].
    pub fn stop_download_all(&self, key: &PublicKey) {
        if let Some(task) = lock(&self.full_downloads).remove(key) {
            task.abort();
        }
    }
}

/// Starts the daemon and runs it until a signal or a `Stop` request.
pub async fn run(home: Home, config: Config) -> anyhow::Result<()> {
    create_home(&home)?;
    let _lock = HomeLock::acquire(&home.lock_file())?;
    let storage = config.storage_dir(&home);
    let state = StateFile::load(&home.state_file())?;

    let options = CorestoreOptions {
        durability: match config.durability {
            hyperd_config::Durability::Process => hypercore::Durability::Process,
            hyperd_config::Durability::Sync => hypercore::Durability::Sync,
        },
        ..CorestoreOptions::default()
    };
    let store = Corestore::open(&storage, options)
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
    let network = Network::start(store.clone(), keypair, &config.listen, config.max_peers).await?;

    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let node = Arc::new(Node {
        home: home.clone(),
        storage,
        store,
        network,
        state,
        started: Instant::now(),
        shutdown,
        names: Mutex::new(HashMap::new()),
        full_downloads: Mutex::new(HashMap::new()),
    });
    restore(&node).await;

    let rpc = crate::rpc::serve(node.clone(), &config).await?;
    crate::notify::notify("READY=1");
    tracing::info!(
        "hyperd {} ready: home {}, socket {}",
        env!("CARGO_PKG_VERSION"),
        home.root().display(),
        home.socket().display()
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = shutdown_rx.wait_for(|stop| *stop) => tracing::info!("stop requested: shutting down"),
    }
    crate::notify::notify("STOPPING=1");
    let _ = node.shutdown.send(true);

    node.network.shutdown();
    // Give the RPC servers a moment to finish answering (the Stop reply among them).
    if tokio::time::timeout(Duration::from_secs(5), rpc.stopped())
        .await
        .is_err()
    {
        tracing::warn!("RPC calls still running after 5 s; closing anyway");
    }
    for task in lock(&node.full_downloads).drain() {
        task.1.abort();
    }
    if let Err(e) = node.store.close().await {
        tracing::error!("closing the corestore: {e}");
    }
    let _ = std::fs::remove_file(home.socket());
    tracing::info!("stopped");
    Ok(())
}

/// Opens every stored core (so peers can replicate them), restarts full downloads and
/// redials remembered peers.
async fn restore(node: &Node) {
    let stored = match node.store.stored().await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!("listing stored cores: {e}");
            Vec::new()
        }
    };
    let state = node.state.get();
    let mut opened = 0;
    for core in stored {
        if let Some(name) = core.name {
            node.set_name(core.key, name);
        }
        match node.store.get_by_key(core.key).await {
            Ok(replicator) => {
                opened += 1;
                let follow = state.follows.get(&core.key.to_hex());
                if follow.is_some_and(|f| f.download_all) {
                    node.download_all(&replicator);
                }
            }
            Err(e) => tracing::error!("cannot open stored core {}: {e}", core.key.to_hex()),
        }
    }
    for address in &state.peers {
        node.network.remember(address.clone(), None);
    }
    tracing::info!(
        "restored {opened} cores and {} remembered peers",
        state.peers.len()
    );
}

/// Creates the home (private to the user) if needed.
fn create_home(home: &Home) -> anyhow::Result<()> {
    let root = home.root();
    if !root.exists() {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating home directory {}", root.display()))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", root.display()))?;
    }
    Ok(())
}
