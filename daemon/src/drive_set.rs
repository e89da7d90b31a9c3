//! The drives subsystem: the drives the daemon created or follows, held open (their
//! metadata core, and their content core once known) so that every peer replicates them,
//! and mirrored (every block of every version, live, mounted drives included) when asked.
//! It owns the state file's `drives`. Like every subsystem it starts, restores what the
//! state file says, and shuts down (see `daemon`); the operations on drives are in
//! `drives`.

use std::collections::HashMap;
use std::sync::Mutex;

use corestore::Corestore;
use hypercore::PublicKey;
use hyperdrive::{Drive, DriveOptions, Totals};

use crate::network::lock;
use crate::state::State;
use crate::tasks::Tasks;

/// A drive held open, its mirror's tasks if it is mirrored, and its files as last
/// counted (a version is counted once, however often it is described).
struct Held {
    drive: Drive,
    mirror: Option<Tasks>,
    counted: Option<Totals>,
}

impl Held {
    fn stop(self) {
        if let Some(mirror) = self.mirror {
            mirror.cancel();
        }
    }
}

/// The drives held open.
pub(crate) struct DriveSet {
    store: Corestore,
    tasks: Tasks,
    held: Mutex<HashMap<PublicKey, Held>>,
}

impl DriveSet {
    /// Holds nothing yet; its tasks run under `tasks`.
    pub fn start(store: Corestore, tasks: Tasks) -> DriveSet {
        DriveSet {
            store,
            tasks,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Opens every drive of the state file and restarts the mirrors. Returns what it
    /// did, for the log.
    pub async fn restore(&self, state: &State) -> String {
        let mut opened = 0;
        for (hex, entry) in &state.drives {
            let Ok(key) = hex.parse::<PublicKey>() else {
                tracing::warn!("skipping a drive with a malformed key {hex:?} in the state file");
                continue;
            };
            match self.open(key).await {
                Ok(drive) => {
                    opened += 1;
                    self.hold(drive, entry.all);
                }
                Err(e) => tracing::error!("cannot open drive {key}: {e}"),
            }
        }
        format!("holding {opened} drives")
    }

    /// Ends every mirror and lets go of the drives (the daemon closes the store once
    /// every task has ended).
    pub fn shutdown(&self) {
        self.tasks.cancel();
        let held: Vec<Held> = lock(&self.held).drain().map(|(_, h)| h).collect();
        held.into_iter().for_each(Held::stop);
    }

    /// The drive `key` of the store (ours if the store holds its secret key), opened.
    pub async fn open(&self, key: PublicKey) -> Result<Drive, hyperdrive::Error> {
        Drive::open_key(&self.store, key, DriveOptions::default()).await
    }

    /// Keeps `drive` open and replicating; with `all`, mirrors it. Replaces how it was
    /// held before.
    pub fn hold(&self, drive: Drive, all: bool) {
        let mirror = all.then(|| {
            let tasks = self.tasks.child();
            let cancelled = tasks.cancelled();
            let mirrored = drive.clone();
            tasks.spawn("mirroring a drive", async move {
                // The mirror runs until its handle is dropped: when this task is.
                let _mirror = mirrored.mirror();
                cancelled.await;
            });
            tasks
        });
        let held = Held {
            drive,
            mirror,
            counted: None,
        };
        let before = lock(&self.held).insert(held.drive.key(), held);
        if let Some(before) = before {
            before.stop();
        }
    }

    /// The drive `key` if it is held.
    pub fn get(&self, key: &PublicKey) -> Option<Drive> {
        lock(&self.held).get(key).map(|h| h.drive.clone())
    }

    /// The files of the held drive `key` as counted at `version`, if they were.
    pub fn counted(&self, key: &PublicKey, version: u64) -> Option<Totals> {
        let held = lock(&self.held);
        held.get(key)?.counted.filter(|t| t.version == version)
    }

    /// Remembers the files of the held drive `key` as counted, unless a later version was.
    pub fn remember_counted(&self, key: &PublicKey, totals: Totals) {
        if let Some(held) = lock(&self.held).get_mut(key) {
            if held.counted.is_none_or(|t| t.version <= totals.version) {
                held.counted = Some(totals);
            }
        }
    }

    /// Whether `key` is mirrored.
    pub fn mirrored(&self, key: &PublicKey) -> bool {
        lock(&self.held)
            .get(key)
            .is_some_and(|h| h.mirror.is_some())
    }

    /// Lets go of `key` (its cores may then be closed when unused).
    pub fn release(&self, key: &PublicKey) {
        let held = lock(&self.held).remove(key);
        if let Some(held) = held {
            held.stop();
        }
    }
}
