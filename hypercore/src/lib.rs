//! The Hypercore log: a signed, sparse, append-only log of blocks, byte-compatible with
//! JS `hypercore@9` in its hashes, signatures, proofs and on-disk files.
//!
//! Open a [`Feed`] on a [`storage::Storage`] (a directory of flat files, or memory),
//! append blocks, read them back, and verify and insert blocks that arrive with a
//! [`Proof`] from a peer. The replication protocol builds on [`Feed::upload`],
//! [`Feed::put`] and [`Feed::digest`].
//!
//! ```no_run
//! # async fn demo() -> hypercore::Result<()> {
//! let feed = hypercore::Feed::open_dir("./my-feed").await?;
//! feed.append("hello").await?;
//! assert_eq!(&feed.get(0).await?[..], b"hello");
//! # Ok(()) }
//! ```

pub mod bitfield;
mod core;
pub mod crypto;
mod encoding;
mod error;
mod feed;
pub mod flat_tree;
mod node;
pub mod storage;
mod store;
mod stream;
pub mod tree;

pub use crate::core::{
    AuditReport, Durability, FeedOptions, OnWrite, Origin, Proof, ProofRequest, PutOutcome,
    SignatureAt, MAX_BLOCKS, MAX_BLOCK_SIZE,
};
pub use crate::crypto::{DiscoveryKey, KeyPair, PublicKey, SecretKey, Signature};
pub use crate::encoding::{Binary, Json, Typed, Utf8, ValueEncoding};
pub use crate::error::{Error, Result};
pub use crate::feed::{
    Appended, Demand, Event, Feed, GetOptions, HashedBlocks, PreparedAppend, StoredFile,
    EVENT_BACKLOG,
};
pub use crate::node::Node;
pub use crate::stream::{ReadStreamOptions, WriteSink};
pub use crate::tree::RemoteTree;
