//! What the daemon restores after a restart beyond the cores on disk: which cores it
//! downloads in full, which peer addresses it redials and what it announces and looks
//! up in the swarm. Kept in `state.json`, replaced atomically (write, fsync, rename) so
//! a crash leaves the old or the new file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// The persisted state: one section per subsystem, which restores it at start. A
/// section missing from an older file is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Followed cores (hex key) and whether to download all of each (the cores
    /// subsystem, `follows`).
    pub follows: BTreeMap<String, Follow>,
    /// Peer addresses to keep connected (the peer subsystem, `network`).
    pub peers: BTreeSet<String>,
    /// Drives created or followed (hex key) and how (the drives subsystem,
    /// `drive_set`). Left out of the file while empty, as files before drives were.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drives: BTreeMap<String, DriveEntry>,
    /// Cores and drives (hex key; a drive by its metadata core) joined in the swarm, and
    /// how (the swarm subsystem, `swarm`). Files written before the swarm had no such
    /// section: their follows and drives are joined as they were then, announced. Always
    /// written, empty too, so that a file without it is one of those.
    pub swarm: BTreeMap<String, Seeding>,
}

/// How a core or drive takes part in the swarm, under its discovery key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeding {
    /// Tell the DHT and the LAN that we have it, so that peers find us.
    pub announce: bool,
    /// Ask for peers that have it, and connect to them.
    pub lookup: bool,
}

impl Seeding {
    /// Announced and looked up: what we serve.
    pub const SEED: Seeding = Seeding {
        announce: true,
        lookup: true,
    };
    /// Looked up only: what we follow.
    pub const LOOKUP: Seeding = Seeding {
        announce: false,
        lookup: true,
    };

    /// Neither announced nor looked up: not in the swarm.
    pub const OFF: Seeding = Seeding {
        announce: false,
        lookup: false,
    };

    /// Neither announced nor looked up: not in the swarm.
    pub fn is_off(self) -> bool {
        !self.announce && !self.lookup
    }
}

impl State {
    /// Records how the core `hex` is joined in the swarm (off: not at all).
    pub fn set_seeding(&mut self, hex: String, seeding: Seeding) {
        if seeding.is_off() {
            self.swarm.remove(&hex);
        } else {
            self.swarm.insert(hex, seeding);
        }
    }
}

/// How a drive is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriveEntry {
    /// Mirror it: every block of every version, live, mounted drives included.
    pub all: bool,
}

/// How a core is followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Follow {
    /// Download every block peers have, not only what is read.
    pub download_all: bool,
}

/// The state file and its current contents.
pub struct StateFile {
    path: PathBuf,
    state: Mutex<State>,
}

impl StateFile {
    /// Reads the file, or starts empty when there is none.
    pub fn load(path: &Path) -> anyhow::Result<StateFile> {
        let state = match std::fs::read(path) {
            Ok(bytes) => parse(&bytes)
                .with_context(|| format!("{} is not valid state JSON", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(StateFile {
            path: path.to_owned(),
            state: Mutex::new(state),
        })
    }

    /// A copy of the current state.
    pub fn get(&self) -> State {
        self.lock().clone()
    }

    /// Changes the state and saves it if it changed (blocking: call it off the async
    /// workers). If saving fails, the state is left as it was.
    pub fn update(&self, change: impl FnOnce(&mut State)) -> Result<(), DaemonError> {
        let mut state = self.lock();
        let before = state.clone();
        change(&mut state);
        if *state == before {
            return Ok(());
        }
        if let Err(e) = self.save(&state) {
            *state = before;
            return Err(e);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, state: &State) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| DaemonError::internal(format!("encoding the state: {e}")))?;
        // It lists followed keys (read capabilities): private to the user.
        hypercore::storage::write_private_file(&self.path, &bytes)
            .map_err(|e| DaemonError::io(format!("saving {}", self.path.display()), &e))
    }
}

/// The state in `bytes`, brought up to date: a file from before the swarm section joins
/// its follows and drives as that hyperd did, announced (and looked up).
fn parse(bytes: &[u8]) -> serde_json::Result<State> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    let before_swarm = value.get("swarm").is_none();
    let mut state: State = serde_json::from_value(value)?;
    if before_swarm {
        let joined = state.follows.keys().chain(state.drives.keys());
        state.swarm = joined.map(|hex| (hex.clone(), Seeding::SEED)).collect();
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str = "2f3c4c1e9d7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";

    #[test]
    fn state_files_of_earlier_versions_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // As hyperd has written it since it persisted follows and peers.
        let written = format!(
            r#"{{
  "follows": {{
    "{KEY}": {{
      "download_all": true
    }}
  }},
  "peers": [
    "127.0.0.1:3282"
  ]
}}"#
        );
        std::fs::write(&path, &written).unwrap();
        let state = StateFile::load(&path).unwrap().get();
        assert!(state.follows[KEY].download_all);
        assert!(state.peers.contains("127.0.0.1:3282"));
        // Its follows stay in the swarm, announced, as they were.
        assert_eq!(state.swarm.len(), 1);
        assert_eq!(state.swarm[KEY], Seeding::SEED);

        // Once saved, the swarm section is written and read back as it is.
        let file = StateFile::load(&path).unwrap();
        file.update(|s| {
            s.swarm.insert(KEY.into(), Seeding::LOOKUP);
        })
        .unwrap();
        let state = StateFile::load(&path).unwrap().get();
        assert_eq!(state.swarm[KEY], Seeding::LOOKUP);
        // Left, a core stays out of the swarm after a restart, also when nothing else
        // is joined.
        file.update(|s| {
            s.swarm.clear();
        })
        .unwrap();
        assert!(StateFile::load(&path).unwrap().get().swarm.is_empty());

        // A section missing is empty.
        std::fs::write(&path, r#"{"follows": {}}"#).unwrap();
        assert_eq!(StateFile::load(&path).unwrap().get(), State::default());
    }
}
