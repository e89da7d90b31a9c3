//! Tags (spec drive.md §7): named versions, stored as hidden trie keys.

use bytes::Bytes;
use hypertrie::{GetOptions, ListOptions, PutOptions};

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

    /// Every tag with its version (JS `getAllTags`), in trie order.
    pub async fn tags(&self) -> Result<Vec<(String, u64)>, Error> {
        let hidden = ListOptions {
            hidden: true,
            ..ListOptions::default()
        };
        let nodes = self.trie.trie().list(TAGS, hidden).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let name = n.key().strip_prefix(TAGS)?.strip_prefix('/')?.to_string();
                let (version, _) = varint::decode(n.value.as_deref()?).ok()?;
                Some((name, version))
            })
            .collect())
    }

    /// Removes the tag `name`; false if there was none.
    pub async fn delete_tag(&self, name: &str) -> Result<bool, Error> {
        let deleted = self
            .trie
            .trie()
            .del(&format!("{TAGS}/{name}"), true)
            .await?;
        Ok(deleted.is_some())
    }
}
