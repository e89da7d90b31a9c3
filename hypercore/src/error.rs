//! Errors of the log. Each says what failed and with which input.

use std::io;
use std::time::Duration;

use crate::crypto::PublicKey;
use crate::storage::FileKind;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a feed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A storage call failed.
    #[error("{op} {file} file of the feed at {location}: {source}")]
    Io {
        /// What we were doing ("reading", "writing", …).
        op: &'static str,
        /// Which file.
        file: FileKind,
        /// Where the feed lives.
        location: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A storage file holds something hypercore would never write.
    #[error("corrupt {file} file of the feed at {location}: {reason}")]
    Corrupt {
        /// Which file.
        file: FileKind,
        /// Where the feed lives.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process (Rust or JS) has this feed open.
    #[error("the feed at {location} is in use by another process (its bitfield file is locked)")]
    Locked {
        /// Where the feed lives.
        location: String,
    },
    /// Opened without `create_if_missing` and nothing is stored.
    #[error("no hypercore is stored at {location}")]
    NotFound {
        /// Where we looked.
        location: String,
    },
    /// The storage holds a different feed than the key asked for.
    #[error("another hypercore is stored at {location}: it has key {stored}, not {requested}")]
    KeyMismatch {
        /// Where the feed lives.
        location: String,
        /// The key on disk.
        stored: PublicKey,
        /// The key that was asked for.
        requested: PublicKey,
    },
    /// The secret key given or stored does not belong to the feed's public key.
    #[error("the secret key does not belong to feed {key}")]
    SecretKeyMismatch {
        /// The feed key.
        key: PublicKey,
    },
    /// Append or another write on a feed without its secret key.
    #[error("feed {key} is not writable: this copy has no secret key")]
    NotWritable {
        /// The feed key.
        key: PublicKey,
    },
    /// A block over the 8 MiB limit the wire protocol can carry.
    #[error("block {index} is {size} bytes; blocks must be at most {max} bytes")]
    BlockTooLarge {
        /// Index the block would get.
        index: u64,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A block index (or range) beyond what the feed can hold or has.
    #[error("block {index} is out of range: {reason}")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// Why it is out of range.
        reason: String,
    },
    /// The block is not stored locally and the caller asked not to wait.
    #[error("block {index} is not available locally")]
    NotAvailable {
        /// The block.
        index: u64,
    },
    /// Waiting for a block or a length took longer than allowed.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A block with its proof did not verify, so nothing was stored.
    #[error("rejected block {index}: {reason}")]
    InvalidProof {
        /// The block.
        index: u64,
        /// Why it failed.
        reason: String,
    },
    /// There is no stored signature at or after this index.
    #[error("no signature is stored for block {index} or later")]
    NoSignature {
        /// The block.
        index: u64,
    },
    /// The `on_write` hook refused a block.
    #[error("the on-write hook rejected block {index}: {reason}")]
    Rejected {
        /// The block.
        index: u64,
        /// The hook's reason.
        reason: String,
    },
    /// A value could not be encoded or decoded with the chosen value encoding.
    #[error("{encoding} value encoding failed for block {index}: {reason}")]
    Encoding {
        /// Which encoding.
        encoding: &'static str,
        /// The block (or the index it would get).
        index: u64,
        /// What went wrong.
        reason: String,
    },
    /// A bug in this crate (a task panicked). The feed may need to be reopened.
    #[error("internal error: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
    /// The feed was closed.
    #[error("feed {key} is closed")]
    Closed {
        /// The feed key.
        key: PublicKey,
    },
}
