//! Hyperdrive 10 (spec drive.md): a POSIX-like filesystem over a hypertrie of Stats (the
//! metadata feed) and a content feed holding file bytes, byte-compatible with JS
//! hyperdrive 10.21. A file is one contiguous run of content blocks its Stat points to.
//!
//! Drives live in a corestore ([`Drive`]); files are written whole or as streams and read
//! whole, as byte ranges or through a seekable cursor; directories, symlinks, per-file
//! metadata, mounts of drives and raw cores, and tags work as in JS.

mod dir;
mod drive;
mod file;
mod mount;
mod path;
mod stat;
mod tags;
mod versions;

use hypercore::PublicKey;

pub use drive::{Drive, DriveOptions};
pub use file::WriteOptions;
pub use mount::MountOptions;
pub use path::key_of;
pub use stat::{MetadataEntry, Stat, StatMount, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
pub use versions::{DriveChange, HistoryEntry, HistoryOptions};

/// Largest content block: bigger buffers are cut (JS `hypercore-byte-stream`'s limit).
pub const MAX_BLOCK: usize = 512 << 10;
/// Header subtype of a drive's metadata trie.
pub const SUBTYPE: &str = "hyperdrive";
/// What failed in a drive operation, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing at the path.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path.
        path: String,
    },
    /// Writing to a drive we cannot sign, or to a checkout.
    #[error("{path}: the drive is not writable here (not ours, or a checkout)")]
    NotWritable {
        /// The path.
        path: String,
    },
    /// Something is already at the path.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A file operation on a directory, or the reverse.
    #[error("{path}: {reason}")]
    WrongType {
        /// The path.
        path: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A Stat that does not decode, or points outside the content feed.
    #[error("{path}: bad metadata: {reason}")]
    BadStat {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Symlinks that lead round in circles.
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path.
        path: String,
    },
    /// The metadata trie failed.
    #[error(transparent)]
    Trie(#[from] hypertrie::Error),
    /// The content feed failed.
    #[error("the content feed of drive {drive}: {source}")]
    Content {
        /// The drive.
        drive: PublicKey,
        /// Why.
        #[source]
        source: hypercore::Error,
    },
    /// A hypercore mounted in the drive failed.
    #[error("the core {key} mounted at {path}: {source}")]
    MountedCore {
        /// The mounted core.
        key: PublicKey,
        /// Its mount point.
        path: String,
        /// Why (boxed: the variant would be large).
        #[source]
        source: Box<hypercore::Error>,
    },
    /// The corestore could not open a feed of the drive.
    #[error("opening {what}: {source}")]
    Store {
        /// Which feed.
        what: String,
        /// Why.
        #[source]
        source: Box<corestore::Error>,
    },
}
