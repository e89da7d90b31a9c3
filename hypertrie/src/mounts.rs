//! Mount points as mountable-hypertrie 2.8 stores them (spec trie.md §9.1): a mount at
//! `p` is a hidden node `mounts/<p>` holding a [`MountRecord`] and a visible node `p`
//! holding the caller's value (hyperdrive: the mount's Stat), both with user flag 1,
//! written in one batch. Resolving paths across mounts comes with the drive layer.

use bytes::Bytes;
use prost::Message;

use crate::{Error, Hypertrie, ListOptions, Node, Op, PutOptions};

/// The user flag of both nodes of a mount.
pub const MOUNT_FLAG: u64 = 1;
/// Where mount records live among the hidden keys.
pub(crate) const MOUNTS: &str = "mounts";

/// What a mount points to (mountable-hypertrie's `Mount` message).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MountRecord {
    /// The mounted trie's (or core's) public key, 32 bytes.
    #[prost(bytes = "vec", required, tag = "1")]
    pub key: Vec<u8>,
    /// The mount point, normalized.
    #[prost(string, required, tag = "2")]
    pub local_path: String,
    /// A pinned version; absent (or 0) follows the latest.
    #[prost(uint64, optional, tag = "3")]
    pub version: Option<u64>,
    /// A path inside the mounted trie (JS joins it oddly: best left unset).
    #[prost(string, optional, tag = "4")]
    pub remote_path: Option<String>,
    /// Never set by JS.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub hash: Option<Vec<u8>>,
}

/// A path as mountable-hypertrie normalizes it (npm `unixify`, then one leading `/`
/// dropped): runs of `/` and `\` become one `/`, a trailing `/` goes when the path has at
/// least 3 characters, and a leading `X:` or `./` goes.
pub fn normalize_path(path: &str) -> String {
    if is_normal_path(path) {
        return path.strip_prefix('/').unwrap_or(path).to_string();
    }
    normalize_slowly(path)
}

/// [`normalize_path`] step by step.
fn normalize_slowly(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        let c = if c == '\\' { '/' } else { c };
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    if out.chars().count() >= 3 && out.ends_with('/') {
        out.pop();
    }
    let letters = out.chars().take_while(char::is_ascii_alphabetic).count();
    if letters > 0 && out[letters..].starts_with(':') {
        out.drain(..=letters);
    } else if out.starts_with("./") {
        out.drain(..2);
    }
    match out.strip_prefix('/') {
        Some(rest) => rest.to_string(),
        None => out,
    }
}

/// Whether [`normalize_path`] only drops `path`'s leading `/` (nearly every path: it
/// is called on each lookup).
pub fn is_normal_path(path: &str) -> bool {
    let b = path.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let changed = b.contains(&b'\\')
        || b.windows(2).any(|w| w == b"//")
        || (b.len() >= 3 && b.ends_with(b"/"))
        || b.starts_with(b"./")
        || (letters > 0 && b.get(letters) == Some(&b':'));
    !changed
}

impl Node {
    /// Whether this is one of a mount's two nodes.
    pub fn is_mount(&self) -> bool {
        self.flags == MOUNT_FLAG
    }
}

impl Hypertrie {
    /// Mounts `record.key` at `path` in this trie (one batch: the hidden record, then the
    /// visible node with `value`); returns the two nodes. `record.local_path` is set to
    /// the normalized path.
    pub async fn mount(
        &self,
        path: &str,
        mut record: MountRecord,
        value: Bytes,
    ) -> Result<Vec<Node>, Error> {
        let path = mount_path(path)?;
        if record.key.len() != 32 {
            return Err(Error::InvalidKey {
                key: path,
                reason: "a mount's key must be 32 bytes",
            });
        }
        record.local_path = path.clone();
        let flags = |hidden| PutOptions {
            hidden,
            flags: MOUNT_FLAG,
        };
        self.batch(vec![
            Op::Put {
                key: format!("{MOUNTS}/{path}"),
                value: record.encode_to_vec().into(),
                options: flags(true),
            },
            Op::Put {
                key: path,
                value,
                options: flags(false),
            },
        ])
        .await
    }

    /// Removes the mount at `path` (both nodes, in one batch).
    pub async fn unmount(&self, path: &str) -> Result<Vec<Node>, Error> {
        let path = mount_path(path)?;
        self.batch(vec![
            Op::Del {
                key: format!("{MOUNTS}/{path}"),
                hidden: true,
            },
            Op::Del {
                key: path,
                hidden: false,
            },
        ])
        .await
    }

    /// The mounts of this trie (not of the tries mounted in it).
    pub async fn mounts(&self) -> Result<Vec<MountRecord>, Error> {
        let options = ListOptions {
            hidden: true,
            ..ListOptions::default()
        };
        let mut out = Vec::new();
        for node in self.list(MOUNTS, options).await? {
            if node.is_mount() {
                out.push(record_of(&node)?);
            }
        }
        Ok(out)
    }
}

/// The record a hidden mount node holds.
pub(crate) fn record_of(node: &Node) -> Result<MountRecord, Error> {
    let value = node.value.as_deref().unwrap_or_default();
    MountRecord::decode(value).map_err(|e| Error::Decode {
        seq: node.seq,
        reason: format!("the mount record of {:?}: {e}", node.key()),
    })
}

/// A normalized mount point, refusing the root and `.`/`..` components (JS joins them
/// away, to another path than the one asked for).
fn mount_path(path: &str) -> Result<String, Error> {
    let normalized = normalize_path(path);
    let reason = if normalized.is_empty() {
        "the root cannot be a mount point"
    } else if normalized.split('/').any(|c| c == "." || c == "..") {
        "a mount point cannot have . or .. components"
    } else {
        return Ok(normalized);
    };
    Err(Error::InvalidKey {
        key: path.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_unixify_does() {
        for (path, normalized) in [
            ("/docs/file.txt", "docs/file.txt"),
            ("//a\\\\b//", "a/b"),
            ("a/", "a/"),
            ("ab/", "ab"),
            ("/", ""),
            ("C:\\dir\\f", "dir/f"),
            ("./x/y", "x/y"),
            ("sub", "sub"),
        ] {
            assert_eq!(normalize_path(path), normalized, "{path:?}");
        }
    }

    /// Every string of up to 5 characters from those that matter.
    fn short_paths() -> Vec<String> {
        let alphabet = ['a', 'C', ':', '/', '\\', '.', 'é'];
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn the_quick_path_normalizes_as_the_slow_one() {
        for path in short_paths() {
            assert_eq!(normalize_path(&path), normalize_slowly(&path), "{path:?}");
        }
    }
}
