//! The store's directory (spec `corestore.md` §1 and §4): the `master_key` file, one
//! directory per core at `<dk[0..2]>/<dk[2..4]>/<dk hex>/`, and what a core's key files say
//! about it. Everything here is synchronous file work; the store runs it on blocking
//! threads.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hypercore::storage::{DiskStorage, FileKind, RandomAccess, Storage};
use hypercore::{DiscoveryKey, KeyPair, PublicKey, SecretKey};

use crate::error::Error;
use crate::keys::{decode_name, derive_key_pair, encode_name, MasterKey};

/// The master key's file name at the root of the store.
pub(crate) const MASTER_KEY_FILE: &str = "master_key";
/// The name file of a derived core.
pub(crate) const NAME_FILE: &str = "name";

/// Where a core lives, relative to the store's directory: `aa/cb/aacb…` (lowercase hex).
pub fn core_path(discovery_key: &DiscoveryKey) -> PathBuf {
    let hex = discovery_key.to_hex();
    [&hex[0..2], &hex[2..4], &hex[..]].iter().collect()
}

/// Reads `master_key`, or creates it (32 random bytes, mode 0600, fsync'd with its
/// directory) when it is missing or shorter than 32 bytes, as JS does.
pub(crate) fn load_or_create_master_key(dir: &Path) -> Result<MasterKey, Error> {
    fs::create_dir_all(dir).map_err(Error::io("creating the corestore directory", dir))?;
    let path = dir.join(MASTER_KEY_FILE);
    match File::open(&path) {
        Ok(mut file) => {
            let mut bytes = Vec::with_capacity(32);
            (&mut file)
                .take(32)
                .read_to_end(&mut bytes)
                .map_err(Error::io("reading the master key", &path))?;
            if bytes.len() == 32 {
                return MasterKey::from_slice(&bytes);
            }
            tracing::warn!(path = %path.display(), len = bytes.len(), "master key file is too short; generating a new master key");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading the master key", &path)(e)),
    }
    let key = MasterKey::generate();
    // Written beside and renamed over, so a crash never leaves a torn key.
    hypercore::storage::write_private_file(&path, key.as_bytes())
        .map_err(Error::io("writing the master key", &path))?;
    Ok(key)
}

/// Reads a whole small file; `None` if it does not exist.
fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    match File::open(path) {
        Ok(file) => {
            let mut bytes = Vec::new();
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(Error::io("reading", path))?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// What a core's directory says about its keys, read the way `derived-key-storage@2` does.
#[derive(Clone)]
pub(crate) struct StoredKeys {
    /// The `key` file, if it holds at least 32 bytes (its first 32).
    pub key: Option<PublicKey>,
    /// The `name` file, if well-formed.
    pub name: Option<Vec<u8>>,
}

impl fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKeys")
            .field("key", &self.key)
            .field("name", &self.name.as_ref().map(|n| n.len()))
            .finish()
    }
}

/// Largest `name` file read (names are 32-byte random names or short strings).
const NAME_LIMIT: u64 = 64 * 1024;

pub(crate) fn read_stored_keys(core_dir: &Path) -> Result<StoredKeys, Error> {
    let key = read_optional(&core_dir.join(FileKind::Key.name()), 32)?
        .filter(|b| b.len() == 32)
        .and_then(|b| PublicKey::from_slice(&b).ok());
    let name =
        read_optional(&core_dir.join(NAME_FILE), NAME_LIMIT + 1)?.and_then(|b| decode_name(&b));
    Ok(StoredKeys { key, name })
}

/// The key pair a stored name derives, checked against the directory's discovery key
/// (JS: "Stored an incorrect name.").
pub(crate) fn key_pair_of_stored_name(
    master: &MasterKey,
    core_dir: &Path,
    name: &[u8],
    discovery_key: &DiscoveryKey,
) -> Result<KeyPair, Error> {
    let key_pair = derive_key_pair(master, name);
    let derived = key_pair.public.discovery_key();
    if derived != *discovery_key {
        return Err(Error::IncorrectName {
            path: core_dir.join(NAME_FILE),
            expected: *discovery_key,
            derived,
        });
    }
    Ok(key_pair)
}

/// Writes a core's `name` file (fsync'd with its directory, so that a `key` file written
/// afterwards never survives a crash without it).
pub(crate) fn write_name(core_dir: &Path, name: &[u8]) -> Result<(), Error> {
    fs::create_dir_all(core_dir).map_err(Error::io("creating", core_dir))?;
    let path = core_dir.join(NAME_FILE);
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(&encode_name(name))?;
        file.sync_all()?;
        File::open(core_dir)?.sync_all()
    };
    write().map_err(Error::io("writing", &path))
}

/// A core's storage: hypercore's flat files, except that `secret_key` is only created
/// when a secret key is to be stored. JS corestore never creates it for named cores (their
/// secret is derived from `name`) nor for read-only ones, so neither do we.
#[derive(Debug, Clone)]
pub(crate) struct CoreStorage {
    disk: DiskStorage,
    store_secret_key: bool,
}

impl CoreStorage {
    pub fn new(dir: PathBuf, store_secret_key: bool) -> Self {
        CoreStorage {
            disk: DiskStorage::new(dir),
            store_secret_key,
        }
    }
}

impl Storage for CoreStorage {
    fn open(&self, kind: FileKind) -> io::Result<Box<dyn RandomAccess>> {
        if kind == FileKind::SecretKey
            && !self.store_secret_key
            && !self.disk.dir().join(kind.name()).exists()
        {
            return Ok(Box::new(NoSecretKey));
        }
        self.disk.open(kind)
    }

    fn open_locked_bitfield(&self) -> io::Result<Option<Box<dyn RandomAccess>>> {
        self.disk.open_locked_bitfield()
    }

    fn location(&self) -> String {
        self.disk.location()
    }
}

/// An absent `secret_key` file: always empty, refuses writes.
#[derive(Debug)]
struct NoSecretKey;

impl RandomAccess for NoSecretKey {
    fn read(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }

    fn write(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this core keeps no secret_key file",
        ))
    }

    fn delete(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn truncate(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// One core found in the store's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCore {
    /// Its public key.
    pub key: PublicKey,
    /// Its discovery key (the directory name).
    pub discovery_key: DiscoveryKey,
    /// The name it is derived from, if its `name` file holds one.
    pub name: Option<Vec<u8>>,
    /// Whether this store can append to it: its name derives its key with this store's
    /// master key, or its `secret_key` file holds a secret key that matches.
    pub writable: bool,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let is_dir = entry
            .file_type()
            .map_err(Error::io("listing", entry.path()))?
            .is_dir();
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path(), is_dir));
        }
    }
    out.sort();
    Ok(out)
}

/// Every core stored under `dir`, sorted by discovery key. Entries that look like cores
/// but are damaged are skipped with a warning naming the path.
pub(crate) fn stored_cores(dir: &Path, master: &MasterKey) -> Result<Vec<StoredCore>, Error> {
    let mut cores = Vec::new();
    for (a, a_path, a_dir) in sorted_entries(dir)? {
        if !a_dir || !is_hex(&a, 2) {
            continue;
        }
        for (b, b_path, b_dir) in sorted_entries(&a_path)? {
            if !b_dir || !is_hex(&b, 2) {
                tracing::warn!(path = %b_path.display(), "skipping an unexpected entry in the corestore");
                continue;
            }
            for (dk_hex, core_dir, is_dir) in sorted_entries(&b_path)? {
                let placed = is_dir && is_hex(&dk_hex, 64) && dk_hex[..2] == a && dk_hex[2..4] == b;
                let Some(dk) = placed
                    .then(|| dk_hex.parse::<DiscoveryKey>().ok())
                    .flatten()
                else {
                    tracing::warn!(path = %core_dir.display(), "skipping an unexpected entry in the corestore");
                    continue;
                };
                match stored_core(&core_dir, &dk, master) {
                    Ok(core) => cores.push(core),
                    Err(reason) => {
                        tracing::warn!(path = %core_dir.display(), %reason, "skipping a damaged core")
                    }
                }
            }
        }
    }
    Ok(cores)
}

fn stored_core(
    core_dir: &Path,
    dk: &DiscoveryKey,
    master: &MasterKey,
) -> Result<StoredCore, String> {
    let keys = read_stored_keys(core_dir).map_err(|e| e.to_string())?;
    let key = keys
        .key
        .ok_or_else(|| "its key file is missing or shorter than 32 bytes".to_string())?;
    if key.discovery_key() != *dk {
        return Err(format!(
            "its key file holds {key}, whose discovery key is not the directory's"
        ));
    }
    let writable = match &keys.name {
        Some(name) => derive_key_pair(master, name).public == key,
        None => secret_key_matches(core_dir, &key),
    };
    Ok(StoredCore {
        key,
        discovery_key: *dk,
        name: keys.name,
        writable,
    })
}

/// The `secret_key` file holds exactly the 64-byte secret key of `key`.
fn secret_key_matches(core_dir: &Path, key: &PublicKey) -> bool {
    let Ok(Some(bytes)) = read_optional(&core_dir.join(FileKind::SecretKey.name()), 65) else {
        return false;
    };
    bytes.len() == 64 && SecretKey::from_bytes(&bytes).is_ok_and(|s| s.public_key() == *key)
}

/// Deletes a core's directory and then its now-empty parents (never the store's root).
pub(crate) fn remove_core_dir(root: &Path, discovery_key: &DiscoveryKey) -> Result<(), Error> {
    let dir = root.join(core_path(discovery_key));
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing", &dir)(e)),
    }
    let mut parent = dir.parent();
    for _ in 0..2 {
        let Some(p) = parent else { break };
        match fs::remove_dir(p) {
            Ok(()) => {}
            // Other cores share it, or it is gone already.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound
                ) =>
            {
                break
            }
            Err(e) => return Err(Error::io("removing", p)(e)),
        }
        parent = p.parent();
    }
    Ok(())
}
