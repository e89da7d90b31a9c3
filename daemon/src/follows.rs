//! The cores subsystem: the cores the daemon follows, held open so that every peer
//! replicates them and, when asked, downloaded in full as they grow ("mirrored"), and the
//! cores removed while the daemon runs (streams on them end with NOT_FOUND). It owns the
//! state file's `follows`. Like every subsystem it starts, restores what the state file
//! says, and shuts down (see `daemon`); the operations on cores are in `cores`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use corestore::{Core, Corestore};
use hypercore::PublicKey;
use hypercore_replication::DownloadRange;

use crate::network::lock;
use crate::state::State;
use crate::tasks::Tasks;

/// A followed core: held open, and its mirror's tasks if it downloads everything.
struct Followed {
    _core: Core,
    mirror: Option<Tasks>,
}

impl Followed {
    fn stop(self) {
        if let Some(mirror) = self.mirror {
            mirror.cancel();
        }
    }
}

/// Followed and removed cores.
pub(crate) struct Follows {
    store: Corestore,
    tasks: Tasks,
    followed: Mutex<HashMap<PublicKey, Followed>>,
    removed: Mutex<HashSet<PublicKey>>,
}

impl Follows {
    /// Follows nothing yet; its tasks run under `tasks`.
    pub fn start(store: Corestore, tasks: Tasks) -> Follows {
        Follows {
            store,
            tasks,
            followed: Mutex::new(HashMap::new()),
            removed: Mutex::new(HashSet::new()),
        }
    }

    /// Opens every followed core (so peers replicate it) and restarts the mirrors; other
    /// cores stay closed until something needs them. Returns what it did, for the log.
    pub async fn restore(&self, state: &State) -> String {
        let mut followed = 0;
        for (hex, follow) in &state.follows {
            let Ok(key) = hex.parse::<PublicKey>() else {
                tracing::warn!(
                    "skipping a followed core with a malformed key {hex:?} in the state file"
                );
                continue;
            };
            match self.store.get_by_key(key).await {
                Ok(core) => {
                    followed += 1;
                    self.keep(core, follow.download_all);
                }
                Err(e) => tracing::error!("cannot open followed core {key}: {e}"),
            }
        }
        // Learn what is stored in the background, for listings and the status count.
        let store = self.store.clone();
        self.tasks.spawn("counting stored cores", async move {
            match store.count().await {
                Ok(n) => tracing::info!("{n} cores stored"),
                Err(e) => tracing::error!("listing stored cores: {e}"),
            }
        });
        format!("following {followed} cores")
    }

    /// Ends every mirror and lets go of the followed cores (the daemon closes the store
    /// once every task has ended).
    pub fn shutdown(&self) {
        self.tasks.cancel();
        let followed: Vec<Followed> = lock(&self.followed).drain().map(|(_, f)| f).collect();
        followed.into_iter().for_each(Followed::stop);
    }

    /// Keeps `core` open and replicating; with `download_all`, downloads every block
    /// peers have, following appends. Replaces how it was followed before.
    pub fn keep(&self, core: Core, download_all: bool) {
        let key = core.feed().key();
        let mirror = download_all.then(|| {
            let tasks = self.tasks.child();
            tasks.spawn("mirroring a followed core", mirror(core.clone()));
            tasks
        });
        let before = lock(&self.followed).insert(
            key,
            Followed {
                _core: core,
                mirror,
            },
        );
        if let Some(before) = before {
            before.stop();
        }
    }

    /// Stops following `key` (its core may then be closed when unused).
    pub fn stop(&self, key: &PublicKey) {
        let followed = lock(&self.followed).remove(key);
        if let Some(followed) = followed {
            followed.stop();
        }
    }

    /// Notes that `key` was removed.
    pub fn mark_removed(&self, key: PublicKey) {
        lock(&self.removed).insert(key);
    }

    /// Notes that `key` exists again (created or followed).
    pub fn forget_removed(&self, key: &PublicKey) {
        lock(&self.removed).remove(key);
    }

    /// True if `key` was removed while the daemon runs.
    pub fn was_removed(&self, key: &PublicKey) -> bool {
        lock(&self.removed).contains(key)
    }
}

/// Downloads every block of `core` that peers have, following appends, until the core
/// closes or the task is cancelled.
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
