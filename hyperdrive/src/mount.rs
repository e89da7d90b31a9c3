//! Mounts of other drives and raw hypercores (spec drive.md §9).

use bytes::Bytes;
use hypercore::PublicKey;
use hypertrie::{MountRecord, PutOptions};
use prost::Message;

use crate::path::key_of;
use crate::{Drive, Error, Stat, StatMount};

/// What to mount, and how (JS `mount(path, key, opts)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MountOptions {
    /// Pin the mounted drive (or core) at this version; `None` follows the latest.
    pub version: Option<u64>,
    /// Mount a raw hypercore (read as one file) rather than a drive.
    pub hypercore: bool,
    /// Owner of the mount point.
    pub uid: u32,
    /// Group of the mount point.
    pub gid: u32,
}

impl Drive {
    /// Mounts the drive (or with `options.hypercore`, the raw core) `key` at `path`. A
    /// drive mount is a directory whose Stat names it, stored as mountable-hypertrie
    /// mounts; a core mount is a file of the core's blocks.
    pub async fn mount(
        &self,
        path: &str,
        key: PublicKey,
        options: MountOptions,
    ) -> Result<Stat, Error> {
        let at = key_of(path);
        if self.node_stat(&at).await?.is_some() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        let content = self.content_feed().await?;
        let mount = StatMount {
            key: key.as_bytes().to_vec(),
            version: options.version,
            hash: None,
            hypercore: Some(options.hypercore),
        };
        let now = self.now();
        if options.hypercore {
            let core = self.store.get_by_key(key).await.map_err(|e| Error::Store {
                what: format!("the core {key} to mount at {path}"),
                source: Box::new(e),
            })?;
            let stat = Stat {
                uid: options.uid,
                gid: options.gid,
                size: core.feed().byte_len(),
                blocks: core.feed().len(),
                offset: content.len(),
                byte_offset: content.byte_len(),
                mount: Some(mount),
                ..Stat::file(0o644, now)
            };
            let (_, trie, key) = self.owner_of(path).await?;
            let value = Bytes::from(stat.encode_to_vec());
            trie.put(&key, value, PutOptions::default()).await?;
            return Ok(stat);
        }
        let stat = Stat {
            uid: options.uid,
            gid: options.gid,
            offset: content.len(),
            byte_offset: content.byte_len(),
            mount: Some(mount),
            ..Stat::directory(0o755, now)
        };
        let record = MountRecord {
            key: key.as_bytes().to_vec(),
            local_path: String::new(),
            version: options.version,
            remote_path: None,
            hash: None,
        };
        self.trie
            .mount(&at, record, Bytes::from(stat.encode_to_vec()))
            .await?;
        Ok(stat)
    }
}
