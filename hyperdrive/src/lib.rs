//! Hyperdrive 10 (spec drive.md): a POSIX-like filesystem over a hypertrie of Stats (the
//! metadata feed) and a content feed holding file bytes, byte-compatible with JS
//! hyperdrive 10.21. A file is one contiguous run of content blocks its Stat points to.
//!
//! Drives live in a corestore ([`Drive`]); files are written whole or as streams and read
//! whole, as byte ranges or through a seekable cursor; directories, symlinks, per-file
//! metadata, mounts of drives and raw cores, and tags work as in JS. Files and trees are
//! downloaded, cleared and mirrored from peers as JS does. Beyond JS, a file whose blocks
//! are already in the content feed points at them instead of appending them again, and
//! local folders are imported into and exported from a drive.

mod dedup;
mod dir;
mod download;
mod drive;
mod handle;
mod import;
mod mount;
mod parallel;
mod path;
mod read;
mod rename;
mod stat;
mod tags;
mod versions;
mod write;

use hypercore::PublicKey;

pub use dir::{DirEntry, ReaddirOptions, Totals};
pub use download::{
    Cleared, Downloading, FileStats, Mirror, MirrorStatus, Progress, WalkOptions, MAX_CONCURRENT,
};
pub use drive::{Drive, DriveOptions};
pub use handle::{FileHandle, OpenFlags, MAX_FILE_SIZE};
pub use import::{
    ExportOptions, ImportOptions, Skipped, Transfer, TransferProgress, TransferSummary,
};
pub use mount::{MountInfo, MountOptions, PathInfo};
pub use path::{check_path, key_of};
pub use read::FileReader;
pub use stat::{MetadataEntry, Stat, StatMount, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
pub use versions::{DriveChange, HistoryEntry, HistoryOptions};
pub use write::{FileWriter, WriteOptions, WRITE_BLOCK};

/// Largest content block: bigger buffers are cut (JS `hypercore-byte-stream`'s limit).
pub const MAX_BLOCK: usize = 512 << 10;
/// Header subtype of a drive's metadata trie.
pub const SUBTYPE: &str = "hyperdrive";

/// A path as errors show it: whole up to 200 bytes, longer ones cut (a peer may send
/// paths of any length).
fn short(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= 200 {
        return path.into();
    }
    let mut end = 100;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &path[..end], path.len()).into()
}

/// Names `path` in an error of the metadata trie, which names only blocks and keys.
fn trie_at(path: &str) -> impl FnOnce(hypertrie::Error) -> Error + '_ {
    move |source| Error::Metadata {
        path: path.to_string(),
        source: Box::new(source),
    }
}

/// What failed in a drive operation, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing at the path.
    #[error("{}: no such file or directory", short(path))]
    NotFound {
        /// The path.
        path: String,
    },
    /// Writing to a drive we cannot sign, or to a checkout.
    #[error(
        "{}: the drive is not writable here (not ours, or a checkout)",
        short(path)
    )]
    NotWritable {
        /// The path.
        path: String,
    },
    /// Something is already at the path.
    #[error("{}: already exists", short(path))]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A file operation on a directory, or the reverse.
    #[error("{}: {reason}", short(path))]
    WrongType {
        /// The path.
        path: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A Stat that does not decode, or points outside the content feed.
    #[error("{}: bad metadata: {reason}", short(path))]
    BadStat {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A path no write accepts.
    #[error("{}: {reason}", short(path))]
    InvalidPath {
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A directory that is not empty where an empty one is needed.
    #[error("{}: directory not empty", short(path))]
    NotEmpty {
        /// The path.
        path: String,
    },
    /// A rename from one drive to another (a file's blocks live in its drive's content
    /// feed).
    #[error("{}: cannot move to {} in another drive", short(from), short(to))]
    CrossDrive {
        /// The source.
        from: String,
        /// The destination.
        to: String,
    },
    /// A file larger than a drive takes from a handle.
    #[error("{}: {size} bytes is larger than the {limit} a file may have (a drive stores holes as zeros)", short(path))]
    TooLarge {
        /// The file.
        path: String,
        /// The size asked for.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Symlinks that lead round in circles.
    #[error("{}: too many levels of symbolic links", short(path))]
    SymlinkLoop {
        /// The path.
        path: String,
    },
    /// The metadata trie failed.
    #[error(transparent)]
    Trie(#[from] hypertrie::Error),
    /// The metadata trie failed on the way to a path: a block that does not decode, a
    /// mount loop, a feed that failed.
    #[error("{}: {source}", short(path))]
    Metadata {
        /// The path.
        path: String,
        /// Why (boxed: the variant would be large).
        #[source]
        source: Box<hypertrie::Error>,
    },
    /// The content feed failed.
    #[error("the content feed of drive {drive}: {source}")]
    Content {
        /// The drive.
        drive: PublicKey,
        /// Why.
        #[source]
        source: hypercore::Error,
    },
    /// Appending a file's bytes to the content feed failed (a full disk, say); the file
    /// keeps its previous version.
    #[error(
        "{}: appending to the content feed of drive {drive}: {source}",
        short(path)
    )]
    ContentWrite {
        /// The file.
        path: String,
        /// The drive.
        drive: PublicKey,
        /// Why (boxed: the variant would be large).
        #[source]
        source: Box<hypercore::Error>,
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
    /// Reading or writing a file's bytes failed.
    #[error("{}: {source}", short(path))]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A local file or directory could not be read or written (import, export).
    #[error("{}: {source}", path.display())]
    Local {
        /// The local path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spill file that holds a file handle's changes failed (a full disk, say).
    #[error("{}: the spill file of its changes: {source}", short(path))]
    Spill {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Downloading a file's blocks stopped before they were all stored.
    #[error("downloading {}: {source}", short(path))]
    Download {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: hypercore_replication::Error,
    },
    /// A drive entry export will not write: it would land outside the target directory or
    /// through a symlink, or cannot be a local name.
    #[error("{}: refusing to export: {reason}", short(path))]
    Refused {
        /// The drive path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A task on the blocking pool panicked (a bug).
    #[error("a blocking task failed: {reason}")]
    Task {
        /// Why.
        reason: String,
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
