//! Keys and their paths (spec trie.md §4): a key is split into components, each hashed
//! with SipHash-2-4 into 32 symbols of 2 bits; position 0 tells hidden keys apart and a
//! final symbol 4 ends the key.

use std::sync::Arc;

/// The symbol that ends every path.
pub const END: u8 = 4;
/// Symbols per component.
const PER_COMPONENT: usize = 32;

/// A normalized key with its hashed path. Cheap to clone (listings and lookups hand out
/// copies of cached nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(Arc<Hashed>);

#[derive(Debug, PartialEq, Eq)]
struct Hashed {
    key: String,
    hidden: bool,
    /// 8 bytes of SipHash per component.
    hash: Vec<u8>,
}

impl Path {
    /// The path of `key` (one leading `/` dropped) in the visible or hidden half.
    pub fn new(key: &str, hidden: bool) -> Path {
        Path::from_key(key.to_string(), hidden)
    }

    /// [`Path::new`] taking the key's string (nodes decode keys into their own).
    pub(crate) fn from_key(mut key: String, hidden: bool) -> Path {
        if key.starts_with('/') {
            key.remove(0);
        }
        let mut hash = Vec::with_capacity(8 * components(&key).count());
        for component in components(&key) {
            hash.extend_from_slice(&siphash(component.as_bytes()));
        }
        Path(Arc::new(Hashed { key, hidden, hash }))
    }

    /// The normalized key.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// Whether the key is hidden.
    pub fn hidden(&self) -> bool {
        self.0.hidden
    }

    /// Positions in the path: 32 per component, one for hidden, one for the end.
    pub fn len(&self) -> usize {
        PER_COMPONENT * (self.0.hash.len() / 8) + 2
    }

    /// Never: every path has at least the hidden and end positions.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The symbol at position `i` (0–3 from the hash, 4 past it: `END`).
    pub fn symbol(&self, i: usize) -> u8 {
        if i == 0 {
            return u8::from(self.0.hidden);
        }
        let i = i - 1;
        match self.0.hash.get(i >> 2) {
            Some(b) => (b >> (2 * (i & 3))) & 3,
            None => END,
        }
    }

    /// Component `c` of the key.
    fn component(&self, c: usize) -> Option<&str> {
        components(&self.0.key).nth(c)
    }

    /// Whether `self` and `other`, equal in hash up to `i`, differ in their strings at
    /// checkpoint `i` (a 64-bit hash collision): the whole keys at the end position, else
    /// the component that ends at `i`.
    pub fn differs(&self, other: &Path, i: usize) -> bool {
        if i == 0 {
            return false;
        }
        if i == self.len() - 1 {
            return self.0.key != other.0.key;
        }
        let c = (i - 1) / PER_COMPONENT;
        self.component(c) != other.component(c)
    }

    /// About how much memory the path holds beyond its own struct.
    pub(crate) fn heap_size(&self) -> usize {
        self.0.key.capacity() + self.0.hash.capacity() + std::mem::size_of::<Hashed>()
    }
}

/// A key as stored: one leading `/` dropped.
pub(crate) fn normalize_key(key: &str) -> &str {
    key.strip_prefix('/').unwrap_or(key)
}

/// The components of a stored key: split at every `/`, where a leading and a trailing
/// empty component are dropped, as JS does (so `/` has none, and `//` one empty one).
fn components(key: &str) -> impl Iterator<Item = &str> {
    let rest = match key.strip_prefix('/') {
        Some(rest) => rest,
        None if key.is_empty() => "",
        None => key,
    };
    let rest = (!rest.is_empty()).then(|| rest.strip_suffix('/').unwrap_or(rest));
    rest.into_iter().flat_map(|r| r.split('/'))
}

/// Whether position `i` ends a component, where strings are compared too.
pub fn is_checkpoint(i: usize) -> bool {
    i > 0 && i.is_multiple_of(PER_COMPONENT)
}

/// SipHash-2-4 with an all-zero key, in the reference byte order (libsodium's
/// `crypto_shorthash`).
fn siphash(data: &[u8]) -> [u8; 8] {
    #[cfg(test)]
    let data = collide(data);
    #[allow(deprecated)]
    // std's SipHasher is exactly SipHash-2-4; only its use as a default hasher is deprecated
    let mut hasher = std::hash::SipHasher::new_with_keys(0, 0);
    std::hash::Hasher::write(&mut hasher, data);
    std::hash::Hasher::finish(&hasher).to_le_bytes()
}

/// Test builds only: a component `#collide:<group>:<name>` hashes as `#collide:<group>`,
/// so every name of a group has the same SipHash (a 64-bit collision on demand).
#[cfg(test)]
pub(crate) fn collide(data: &[u8]) -> &[u8] {
    const PREFIX: &[u8] = b"#collide:";
    match data.strip_prefix(PREFIX) {
        Some(rest) => match rest.iter().position(|&b| b == b':') {
            Some(at) => &data[..PREFIX.len() + at],
            None => data,
        },
        None => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Components as JS's `split` then `shift`/`pop` of empty ends finds them.
    fn components_as_js(key: &str) -> Vec<&str> {
        let mut parts: Vec<&str> = key.split('/').collect();
        if parts.first() == Some(&"") {
            parts.remove(0);
        }
        if parts.last() == Some(&"") {
            parts.pop();
        }
        parts
    }

    proptest! {
        #[test]
        fn components_split_as_js_does(key in "[a/]{0,8}") {
            prop_assert_eq!(components(&key).collect::<Vec<_>>(), components_as_js(&key));
        }
    }

    #[test]
    fn edge_keys_have_the_components_js_gives_them() {
        for (key, expected) in [
            ("", vec![]),
            ("/", vec![]),
            ("//", vec![""]),
            ("a//", vec!["a", ""]),
            ("/a/", vec!["a"]),
            ("a/b", vec!["a", "b"]),
        ] {
            assert_eq!(components(key).collect::<Vec<_>>(), expected, "{key:?}");
        }
        // The stored key of `//x` is `/x`: one component.
        assert_eq!(Path::new("//x", false).len(), 34);
    }
}
