//! The messages of hypercore-protocol 8 (`simple-hypercore-protocol` `schema.proto`, proto2).
//!
//! Fields JS writes whenever they are set are `Option`s here, so a message built with the
//! same fields encodes to the same bytes; required fields are always written.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;

use crate::error::Error;

/// type 0: opens a channel for a feed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Open {
    /// The feed's discovery key.
    #[prost(bytes = "vec", required, tag = "1")]
    pub discovery_key: Vec<u8>,
    /// Proof that the sender knows the feed key, bound to this connection.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub capability: Option<Vec<u8>>,
}

/// type 1: channel options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Options {
    /// Extension names, sorted.
    #[prost(string, repeated, tag = "1")]
    pub extensions: Vec<String>,
    /// Ask the remote to acknowledge every block.
    #[prost(bool, optional, tag = "2")]
    pub ack: Option<bool>,
}

/// type 2: whether the sender uploads and downloads (both default to true).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// Sender serves requests.
    #[prost(bool, optional, tag = "1")]
    pub uploading: Option<bool>,
    /// Sender wants data.
    #[prost(bool, optional, tag = "2")]
    pub downloading: Option<bool>,
}

/// type 3: blocks the sender has.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Have {
    /// First block.
    #[prost(uint64, required, tag = "1")]
    pub start: u64,
    /// Number of blocks (default 1).
    #[prost(uint64, optional, tag = "2", default = "1")]
    pub length: Option<u64>,
    /// RLE-compressed bitfield of `[start, ..)`.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub bitfield: Option<Bytes>,
    /// This Have acknowledges a received block.
    #[prost(bool, optional, tag = "4")]
    pub ack: Option<bool>,
}

/// type 4: blocks the sender no longer has.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unhave {
    /// First block.
    #[prost(uint64, required, tag = "1")]
    pub start: u64,
    /// Number of blocks (default 1).
    #[prost(uint64, optional, tag = "2", default = "1")]
    pub length: Option<u64>,
}

/// type 5: the sender wants Haves for this range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Want {
    /// First block.
    #[prost(uint64, required, tag = "1")]
    pub start: u64,
    /// Number of blocks (0 = everything).
    #[prost(uint64, optional, tag = "2")]
    pub length: Option<u64>,
}

/// type 6: the sender no longer wants this range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unwant {
    /// First block.
    #[prost(uint64, required, tag = "1")]
    pub start: u64,
    /// Number of blocks.
    #[prost(uint64, optional, tag = "2")]
    pub length: Option<u64>,
}

/// type 7: asks for a block (or the block at a byte offset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// The block.
    #[prost(uint64, required, tag = "1")]
    pub index: u64,
    /// A byte offset to resolve instead of `index`.
    #[prost(uint64, optional, tag = "2")]
    pub bytes: Option<u64>,
    /// Only the hash (proves a length).
    #[prost(bool, optional, tag = "3")]
    pub hash: Option<bool>,
    /// Digest of the nodes the requester has.
    #[prost(uint64, optional, tag = "4")]
    pub nodes: Option<u64>,
}

/// type 8: cancels a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cancel {
    /// The block.
    #[prost(uint64, required, tag = "1")]
    pub index: u64,
    /// A byte offset.
    #[prost(uint64, optional, tag = "2")]
    pub bytes: Option<u64>,
    /// Hash-only.
    #[prost(bool, optional, tag = "3")]
    pub hash: Option<bool>,
}

/// A merkle node inside [`Data`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataNode {
    /// Flat-tree index.
    #[prost(uint64, required, tag = "1")]
    pub index: u64,
    /// 32-byte hash.
    #[prost(bytes = "vec", required, tag = "2")]
    pub hash: Vec<u8>,
    /// Bytes under the node.
    #[prost(uint64, required, tag = "3")]
    pub size: u64,
}

/// type 9: a block with its proof.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Data {
    /// The block.
    #[prost(uint64, required, tag = "1")]
    pub index: u64,
    /// Its bytes (absent for a hash-only answer).
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub value: Option<Bytes>,
    /// Proof nodes.
    #[prost(message, repeated, tag = "3")]
    pub nodes: Vec<DataNode>,
    /// Signature of the proven length, when the proof reaches the roots.
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub signature: Option<Bytes>,
}

/// type 10: closes a channel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Close {
    /// Only set when the sender never opened the channel.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub discovery_key: Option<Vec<u8>>,
}

/// A decoded message of any type.
#[derive(Clone, PartialEq, Debug)]
pub enum Message {
    /// type 0.
    Open(Open),
    /// type 1.
    Options(Options),
    /// type 2.
    Status(Status),
    /// type 3.
    Have(Have),
    /// type 4.
    Unhave(Unhave),
    /// type 5.
    Want(Want),
    /// type 6.
    Unwant(Unwant),
    /// type 7.
    Request(Request),
    /// type 8.
    Cancel(Cancel),
    /// type 9.
    Data(Data),
    /// type 10.
    Close(Close),
    /// type 15: an extension message, `id` indexing the sender's extension names.
    Extension {
        /// Index into the sender's sorted extension names.
        id: u64,
        /// The payload.
        payload: Bytes,
    },
    /// types 11 to 14: passed through undecoded; receivers ignore them.
    Unknown {
        /// The type number.
        type_id: u8,
        /// The body.
        body: Bytes,
    },
}

impl Message {
    /// The type number in the frame header.
    pub fn type_id(&self) -> u8 {
        match self {
            Message::Open(_) => 0,
            Message::Options(_) => 1,
            Message::Status(_) => 2,
            Message::Have(_) => 3,
            Message::Unhave(_) => 4,
            Message::Want(_) => 5,
            Message::Unwant(_) => 6,
            Message::Request(_) => 7,
            Message::Cancel(_) => 8,
            Message::Data(_) => 9,
            Message::Close(_) => 10,
            Message::Extension { .. } => 15,
            Message::Unknown { type_id, .. } => *type_id,
        }
    }

    /// Length of the encoded body.
    pub fn encoded_len(&self) -> usize {
        match self {
            Message::Open(m) => m.encoded_len(),
            Message::Options(m) => m.encoded_len(),
            Message::Status(m) => m.encoded_len(),
            Message::Have(m) => m.encoded_len(),
            Message::Unhave(m) => m.encoded_len(),
            Message::Want(m) => m.encoded_len(),
            Message::Unwant(m) => m.encoded_len(),
            Message::Request(m) => m.encoded_len(),
            Message::Cancel(m) => m.encoded_len(),
            Message::Data(m) => m.encoded_len(),
            Message::Close(m) => m.encoded_len(),
            Message::Extension { id, payload } => varint::encoded_len(*id) + payload.len(),
            Message::Unknown { body, .. } => body.len(),
        }
    }

    /// Appends the encoded body.
    pub fn encode_body(&self, out: &mut BytesMut) {
        // Encoding into a BytesMut only fails for lack of capacity, which it grows.
        let _ = match self {
            Message::Open(m) => m.encode(out),
            Message::Options(m) => m.encode(out),
            Message::Status(m) => m.encode(out),
            Message::Have(m) => m.encode(out),
            Message::Unhave(m) => m.encode(out),
            Message::Want(m) => m.encode(out),
            Message::Unwant(m) => m.encode(out),
            Message::Request(m) => m.encode(out),
            Message::Cancel(m) => m.encode(out),
            Message::Data(m) => m.encode(out),
            Message::Close(m) => m.encode(out),
            Message::Extension { id, payload } => {
                out.extend_from_slice(&varint::encode(*id));
                out.extend_from_slice(payload);
                Ok(())
            }
            Message::Unknown { body, .. } => {
                out.extend_from_slice(body);
                Ok(())
            }
        };
    }

    /// Decodes the body of a frame of type `type_id`.
    pub fn decode(type_id: u8, body: Bytes) -> Result<Message, Error> {
        fn d<M: prost::Message + Default>(what: &'static str, body: Bytes) -> Result<M, Error> {
            M::decode(body).map_err(|e| Error::Malformed {
                what,
                reason: e.to_string(),
            })
        }
        Ok(match type_id {
            0 => Message::Open(d("Open message", body)?),
            1 => Message::Options(d("Options message", body)?),
            2 => Message::Status(d("Status message", body)?),
            3 => Message::Have(d("Have message", body)?),
            4 => Message::Unhave(d("Unhave message", body)?),
            5 => Message::Want(d("Want message", body)?),
            6 => Message::Unwant(d("Unwant message", body)?),
            7 => Message::Request(d("Request message", body)?),
            8 => Message::Cancel(d("Cancel message", body)?),
            9 => Message::Data(d("Data message", body)?),
            10 => Message::Close(d("Close message", body)?),
            15 => {
                let mut buf = body;
                let (id, n) = varint::decode(&buf).map_err(|e| Error::Malformed {
                    what: "Extension message",
                    reason: e.to_string(),
                })?;
                buf.advance(n);
                Message::Extension { id, payload: buf }
            }
            t => Message::Unknown { type_id: t, body },
        })
    }
}

impl Data {
    /// The proof nodes as log nodes; `None` if a hash is not 32 bytes.
    pub fn proof_nodes(&self) -> Option<Vec<hypercore::Node>> {
        self.nodes
            .iter()
            .map(|n| {
                Some(hypercore::Node {
                    index: n.index,
                    hash: n.hash.as_slice().try_into().ok()?,
                    size: n.size,
                })
            })
            .collect()
    }
}

impl From<&hypercore::Node> for DataNode {
    fn from(n: &hypercore::Node) -> Self {
        DataNode {
            index: n.index,
            hash: n.hash.to_vec(),
            size: n.size,
        }
    }
}
