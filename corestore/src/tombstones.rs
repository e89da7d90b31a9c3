//! Tombstones of removed writable cores: the keys this store signed a history for and then
//! deleted. Re-deriving such a key from its name would sign a second history that conflicts
//! with the one peers hold, so the store refuses unless asked explicitly. Kept in the
//! `tombstones` file at the store's root (ignored by JS corestore), one `<key hex> <length>`
//! line per key, replaced atomically.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hypercore::PublicKey;

use crate::error::Error;

/// The file's name at the store's root.
const FILE: &str = "tombstones";
/// Largest tombstones file read (about 100 bytes a key).
const LIMIT: u64 = 64 << 20;

/// A removed writable core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// Its public key.
    pub key: PublicKey,
    /// How many blocks it had when it was removed.
    pub length: u64,
}

/// Every tombstone of a store, and where they are kept.
#[derive(Debug)]
pub(crate) struct Tombstones {
    path: PathBuf,
    keys: BTreeMap<PublicKey, u64>,
}

impl Tombstones {
    /// Reads the store's tombstones (none when the file does not exist). Lines that do not
    /// parse are skipped with a warning, so a damaged file never blocks the store.
    pub fn load(dir: &Path) -> Result<Tombstones, Error> {
        let path = dir.join(FILE);
        let mut keys = BTreeMap::new();
        let text = match fs::metadata(&path) {
            Ok(meta) if meta.len() > LIMIT => {
                tracing::warn!(path = %path.display(), "tombstones file is too large; ignoring it");
                String::new()
            }
            Ok(_) => fs::read_to_string(&path).map_err(Error::io("reading", &path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split_whitespace();
            let key = parts.next().and_then(|k| k.parse::<PublicKey>().ok());
            let length = parts.next().and_then(|l| l.parse::<u64>().ok());
            match (key, length) {
                (Some(key), Some(length)) => {
                    keys.insert(key, length);
                }
                _ => tracing::warn!(path = %path.display(), line, "skipping a malformed tombstone"),
            }
        }
        Ok(Tombstones { path, keys })
    }

    /// The tombstone of `key`, if it has one.
    pub fn get(&self, key: &PublicKey) -> Option<Tombstone> {
        self.keys
            .get(key)
            .map(|&length| Tombstone { key: *key, length })
    }

    /// Every tombstone, by key.
    pub fn all(&self) -> Vec<Tombstone> {
        self.keys
            .iter()
            .map(|(&key, &length)| Tombstone { key, length })
            .collect()
    }

    /// The file contents with `key` set to `length` (or removed, for `None`).
    pub fn with(&self, key: PublicKey, length: Option<u64>) -> Tombstones {
        let mut keys = self.keys.clone();
        match length {
            Some(length) => {
                let kept = keys.entry(key).or_default();
                *kept = (*kept).max(length);
            }
            None => {
                keys.remove(&key);
            }
        }
        Tombstones {
            path: self.path.clone(),
            keys,
        }
    }

    /// Writes the file (to a temporary file, fsync'd, renamed over the old one).
    pub fn save(&self) -> Result<(), Error> {
        let mut text = String::new();
        for (key, length) in &self.keys {
            text.push_str(&format!("{key} {length}\n"));
        }
        hypercore::storage::write_private_file(&self.path, text.as_bytes())
            .map_err(Error::io("writing", &self.path))
    }
}
