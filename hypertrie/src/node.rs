//! The feed's blocks (spec trie.md §2–3): block 0 is a [`Header`], every later block a
//! [`Node`], both protobuf as JS writes them (fields in tag order, required ones always).

use bytes::Bytes;
use prost::Message;

use crate::buckets::Buckets;
use crate::path::Path;
use crate::Error;

/// `type` of every hypertrie header.
pub const HEADER_TYPE: &str = "hypertrie";

/// Block 0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// Always [`HEADER_TYPE`].
    #[prost(string, required, tag = "1")]
    pub r#type: String,
    /// Opaque; hyperdrive puts its content feed's key here.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub metadata: Option<Vec<u8>>,
    /// What uses the trie ("hyperdrive", "mountable-hypertrie"); empty when unset.
    #[prost(string, optional, tag = "3")]
    pub subtype: Option<String>,
}

impl Header {
    /// Decodes block 0, refusing anything that is not a hypertrie header.
    pub fn decode_block(block: &[u8]) -> Result<Header, Error> {
        let header = Header::decode(block).map_err(|e| Error::Decode {
            seq: 0,
            reason: e.to_string(),
        })?;
        if header.r#type != HEADER_TYPE {
            return Err(Error::Decode {
                seq: 0,
                reason: format!(
                    "the header's type is {:?}, not {HEADER_TYPE:?}",
                    header.r#type
                ),
            });
        }
        Ok(header)
    }
}

/// A node as stored (spec §3).
#[derive(Clone, PartialEq, prost::Message)]
struct WireNode {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(bytes = "bytes", optional, tag = "2")]
    value: Option<Bytes>,
    #[prost(bytes = "vec", optional, tag = "3")]
    trie: Option<Vec<u8>>,
    #[prost(uint64, required, tag = "4")]
    seq: u64,
    #[prost(uint64, required, tag = "5")]
    flags: u64,
}

/// Bit 0 of the stored flags: the key lives in the hidden half of the trie.
const HIDDEN: u64 = 1;

/// One key's entry in one version of the trie: its value, flags, and the pointers that make
/// it the root of that version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The block this node is.
    pub seq: u64,
    /// The normalized key and its hashed path.
    pub path: Path,
    /// The value; `None` for a reset node.
    pub value: Option<Bytes>,
    /// User flags (JS `node.flags`; stored shifted left by 8).
    pub flags: u64,
    /// Pointers to other nodes, per path position.
    pub buckets: Buckets,
}

impl Node {
    /// The normalized key.
    pub fn key(&self) -> &str {
        self.path.key()
    }

    /// Whether it is a hidden key.
    pub fn hidden(&self) -> bool {
        self.path.hidden()
    }

    /// A node written when a delete removed the last key: it stands for "empty". JS reads
    /// every stored node with an empty key so, whatever its value.
    pub fn is_reset(&self) -> bool {
        self.path.key().is_empty()
    }

    /// The flags as stored: user flags shifted, bit 0 hidden.
    pub fn raw_flags(&self) -> u64 {
        self.flags << 8 | u64::from(self.hidden())
    }

    /// About how much memory the node holds beyond its own struct.
    pub(crate) fn heap_size(&self) -> usize {
        self.path.heap_size() + self.value.as_ref().map_or(0, Bytes::len) + self.buckets.heap_size()
    }

    /// The block's bytes.
    pub fn encode(&self) -> Vec<u8> {
        WireNode {
            key: self.path.key().to_string(),
            value: self.value.clone(),
            trie: Some(self.buckets.encode()),
            seq: self.seq,
            flags: self.raw_flags(),
        }
        .encode_to_vec()
    }

    /// Decodes block `seq` (its seq field is ignored, as JS does).
    pub fn decode(seq: u64, block: &[u8]) -> Result<Node, Error> {
        let bad = |reason: String| Error::Decode { seq, reason };
        let wire = WireNode::decode(block).map_err(|e| bad(e.to_string()))?;
        let buckets = Buckets::decode(wire.trie.as_deref().unwrap_or(&[]))
            .map_err(|e| bad(format!("its trie: {e}")))?;
        Ok(Node {
            seq,
            path: Path::from_key(wire.key, wire.flags & HIDDEN != 0),
            value: wire.value,
            flags: wire.flags >> 8,
            buckets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a peer or a damaged disk hands us, decoding answers, never panics.
        #[test]
        fn arbitrary_blocks_never_panic(block in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Node::decode(1, &block);
            let _ = Header::decode_block(&block);
        }

        /// Keys as stored are normalized (no leading `/`: JS, too, strips one on decoding).
        #[test]
        fn nodes_round_trip(key in "([a-z][a-z/]{0,20})?", value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)), flags in 0u64..1000, hidden: bool, seqs in proptest::collection::vec((0usize..70, 0usize..5, 1u64..1000), 0..20)) {
            let mut buckets = Buckets::default();
            for (i, s, seq) in seqs {
                buckets.push(i, s, seq);
            }
            let node = Node { seq: 7, path: Path::new(&key, hidden), value: value.map(Bytes::from), flags, buckets };
            prop_assert_eq!(Node::decode(7, &node.encode()).ok(), Some(node));
        }
    }
}
