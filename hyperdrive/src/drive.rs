//! A drive's two feeds (spec drive.md §1): opening or creating them in a corestore, the
//! content feed found lazily for a remote drive, and the drive that owns a path (this one
//! or one mounted in it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use corestore::{Core, Corestore};
use hypercore::{DiscoveryKey, Feed, PublicKey};
use hypertrie::{Hypertrie, MountableTrie, OpenOptions};
use tokio::sync::OnceCell;

use crate::path::key_of;
use crate::{trie_at, Error, Stat, SUBTYPE};

/// Options of a drive.
#[derive(Clone, Copy, Debug, Default)]
pub struct DriveOptions {
    /// A frozen clock (ms since the epoch) for the times of new Stats; `None`: now.
    pub now: Option<u64>,
    /// Append a file's content even when the same blocks are already in the content
    /// feed, as JS does, instead of pointing its Stat at them (see `dedup`).
    pub no_dedup: bool,
}

/// A hyperdrive: its metadata trie and content feed, in a corestore. Cheap to clone.
#[derive(Clone)]
pub struct Drive {
    pub(crate) trie: MountableTrie,
    pub(crate) store: Corestore,
    /// The content feed, opened when first needed: a remote drive's header (which names
    /// it) may not have arrived when the drive is opened.
    content: Arc<OnceCell<Core>>,
    /// Keeps the metadata feed open.
    metadata: Core,
    pub(crate) options: DriveOptions,
    /// Drives mounted here, opened when a write reaches them.
    mounted: Arc<Mutex<HashMap<PublicKey, Drive>>>,
    /// Where the content feed's files are, to find content already written.
    pub(crate) dedup: Arc<crate::dedup::ContentIndex>,
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("key", &self.key())
            .field("version", &self.version())
            .finish()
    }
}

impl Drive {
    /// The store's default drive (metadata = its default core), created if new.
    pub async fn default_drive(store: &Corestore, options: DriveOptions) -> Result<Drive, Error> {
        let metadata = store.default_core().await.map_err(|e| Error::Store {
            what: "the store's default core".into(),
            source: Box::new(e),
        })?;
        Drive::open(store, metadata, options).await
    }

    /// The drive `key` of `store`: ours if the store holds its secret key, else a remote
    /// drive read from peers.
    pub async fn open_key(
        store: &Corestore,
        key: PublicKey,
        options: DriveOptions,
    ) -> Result<Drive, Error> {
        let metadata = store.get_by_key(key).await.map_err(|e| Error::Store {
            what: format!("the drive {key}"),
            source: Box::new(e),
        })?;
        Drive::open(store, metadata, options).await
    }

    /// The drive whose metadata feed is `metadata`. A writable empty one gets its content
    /// feed (the store's core named `<hex metadata key>-content`) and header now. Otherwise
    /// the content key is read from the header: now if block 0 is stored, else when the
    /// content is first needed (so opening a remote drive never waits for peers).
    pub async fn open(
        store: &Corestore,
        metadata: Core,
        options: DriveOptions,
    ) -> Result<Drive, Error> {
        let key = metadata.feed().key();
        let feed = metadata.feed().clone();
        let content = OnceCell::new();
        let trie = if feed.writable() && feed.is_empty() {
            let name = format!("{}-content", hypercore::crypto::to_hex(key.as_bytes()));
            let core = store
                .get_named(name.as_bytes())
                .await
                .map_err(|e| content_store_error(key, e))?;
            let header = OpenOptions {
                metadata: Some(core.feed().key().as_bytes().to_vec()),
                subtype: Some(SUBTYPE.to_string()),
            };
            let trie = Hypertrie::open_replicated(&metadata, header).await?;
            let _ = content.set(core);
            trie
        } else {
            Hypertrie::open_replicated(&metadata, OpenOptions::default()).await?
        };
        let drive = Drive {
            trie: MountableTrie::new(trie, store.clone()),
            store: store.clone(),
            content: Arc::new(content),
            metadata,
            options,
            mounted: Arc::default(),
            dedup: Arc::default(),
        };
        if drive.metadata().has(0) {
            drive.content().await?;
        }
        Ok(drive)
    }

    /// The drive's key (its metadata feed's).
    pub fn key(&self) -> PublicKey {
        self.metadata().key()
    }

    /// The drive's discovery key.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.metadata().discovery_key()
    }

    /// The content feed's key, once known (see [`Self::content`]).
    pub fn content_key(&self) -> Option<PublicKey> {
        self.content.get().map(|c| c.feed().key())
    }

    /// A read-only view of the drive at `version` (its metadata blocks before it; content
    /// is reached through those Stats).
    pub fn checkout(&self, version: u64) -> Drive {
        Drive {
            trie: self.trie.checkout(version),
            ..self.clone()
        }
    }

    /// The version: the metadata feed's length (1 for an empty drive).
    pub fn version(&self) -> u64 {
        self.trie.trie().version()
    }

    /// Whether this drive can be written.
    pub fn writable(&self) -> bool {
        self.trie.trie().writable()
    }

    /// The metadata feed.
    pub fn metadata(&self) -> &Feed {
        self.trie.trie().feed()
    }

    /// The metadata core (its replicator: downloads, peers, extensions).
    pub fn metadata_core(&self) -> &Core {
        &self.metadata
    }

    /// The content core, opened on first use: for a remote drive this waits for the
    /// metadata header from a peer.
    pub async fn content(&self) -> Result<&Core, Error> {
        self.content
            .get_or_try_init(|| async {
                let key = self.key();
                let header = self.trie.trie().header().await.map_err(|e| match e {
                    hypertrie::Error::Decode { reason, .. } => Error::BadStat {
                        path: "/".into(),
                        reason: format!("the header of drive {key} does not decode: {reason}"),
                    },
                    e => trie_at("/")(e),
                })?;
                let content_key = header
                    .metadata
                    .as_deref()
                    .and_then(|k| PublicKey::from_slice(k).ok())
                    .ok_or_else(|| Error::BadStat {
                        path: "/".into(),
                        reason: format!("the header of drive {key} names no content feed"),
                    })?;
                self.store
                    .get_by_key(content_key)
                    .await
                    .map_err(|e| content_store_error(key, e))
            })
            .await
    }

    /// The content core if it is open already: never waits (see [`Self::content`]).
    pub fn content_if_open(&self) -> Option<&Core> {
        self.content.get()
    }

    /// The content feed (see [`Self::content`]).
    pub async fn content_feed(&self) -> Result<&Feed, Error> {
        Ok(self.content().await?.feed())
    }

    pub(crate) fn now(&self) -> u64 {
        self.options.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    /// The drive whose metadata trie is `trie`: this one, or one mounted here.
    pub(crate) async fn drive_of(&self, trie: &Hypertrie) -> Result<Drive, Error> {
        self.drive_of_key(trie.feed().key()).await
    }

    /// The drive `key`: this one, or one mounted here (opened once).
    pub(crate) async fn drive_of_key(&self, key: PublicKey) -> Result<Drive, Error> {
        if key == self.key() {
            return Ok(self.clone());
        }
        let cached = self
            .mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(drive) = cached {
            return Ok(drive);
        }
        let drive = Drive::open_key(&self.store, key, self.options).await?;
        let mut mounted = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        Ok(mounted.entry(key).or_insert(drive).clone())
    }

    /// The drive that owns `path` (this one, or one mounted here), its trie (a checkout's
    /// when this is one) and the path's key there.
    pub(crate) async fn owner_of(&self, path: &str) -> Result<(Drive, Hypertrie, String), Error> {
        let (trie, key) = self
            .trie
            .owner(&key_of(path))
            .await
            .map_err(trie_at(path))?;
        Ok((self.drive_of(&trie).await?, trie, key))
    }

    /// [`Self::owner_of`] for a write: the path must be one a write accepts and the
    /// owning trie writable.
    pub(crate) async fn writable_owner(
        &self,
        path: &str,
    ) -> Result<(Drive, Hypertrie, String), Error> {
        crate::path::write_key(path)?;
        let owner = self.owner_of(path).await?;
        if !owner.1.writable() {
            return Err(Error::NotWritable {
                path: path.to_string(),
            });
        }
        Ok(owner)
    }

    /// The Stat of the node at `key`, through mounts.
    pub(crate) async fn node_stat(&self, key: &str) -> Result<Option<Stat>, Error> {
        let found = self
            .trie
            .get(key)
            .await
            .map_err(trie_at(&format!("/{key}")))?;
        found
            .map(|f| crate::dir::decode_stat(key, f.node.value.as_deref()))
            .transpose()
    }

    /// The Stat at `key` of `trie` (one of this drive's tries), not through mounts.
    pub(crate) async fn node_stat_in(
        &self,
        trie: &Hypertrie,
        key: &str,
    ) -> Result<Option<Stat>, Error> {
        let node = trie
            .get(key, hypertrie::GetOptions::default())
            .await
            .map_err(trie_at(&format!("/{key}")))?;
        node.map(|n| crate::dir::decode_stat(key, n.value.as_deref()))
            .transpose()
    }

    pub(crate) fn content_error(&self, source: hypercore::Error) -> Error {
        Error::Content {
            drive: self.key(),
            source,
        }
    }
}

fn content_store_error(drive: PublicKey, e: corestore::Error) -> Error {
    Error::Store {
        what: format!("the content feed of drive {drive}"),
        source: Box::new(e),
    }
}
