//! Tags (spec drive.md §7): named versions, stored as hidden trie keys.

use bytes::Bytes;
use hypertrie::{GetOptions, PutOptions};

use crate::{Drive, Error};

/// Hidden keys of tags: `hyperdrive-tags/<name>` = varint(version).
const TAGS: &str = "hyperdrive-tags";

impl Drive {
    /// Tags `version` (default: the current one) as `name`.
    pub async fn create_tag(&self, name: &str, version: Option<u64>) -> Result<(), Error> {
        let version = version.unwrap_or_else(|| self.version());
        let hidden = PutOptions {
            hidden: true,
            flags: 0,
        };
        let value = Bytes::copy_from_slice(&varint::encode(version));
        self.trie
            .trie()
            .put(&format!("{TAGS}/{name}"), value, hidden)
            .await?;
        Ok(())
    }

    /// The version tagged `name`, if any.
    pub async fn tagged_version(&self, name: &str) -> Result<Option<u64>, Error> {
        let hidden = GetOptions {
            hidden: true,
            ..GetOptions::default()
        };
        let node = self
            .trie
            .trie()
            .get(&format!("{TAGS}/{name}"), hidden)
            .await?;
        let value = node.and_then(|n| n.value);
        Ok(value.and_then(|v| varint::decode(&v).ok().map(|(version, _)| version)))
    }
}
