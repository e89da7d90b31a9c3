//! The daemon's one error type. Every operation fails with a [`DaemonError`]: a kind and a
//! message naming what failed and with which input. The kinds are decided here, once, from
//! the libraries' errors; each front end (gRPC, later FUSE and HTTP) maps a kind to its own
//! code and nothing else.

use std::fmt;
use std::io;

use hypercore::PublicKey;

/// What kind of failure an error is, independent of any front end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed whatever the state: a bad key, address, range or size.
    InvalidArgument,
    /// The thing asked for does not exist here (a core, a block not stored).
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// Not possible in the current state (not writable, removed, in use).
    FailedPrecondition,
    /// Past the end of what exists now (a block index past the length).
    OutOfRange,
    /// A peer could not be reached or refused.
    Unavailable,
    /// Something did not happen in time (no peer served a block).
    DeadlineExceeded,
    /// Out of disk space, file descriptors, memory or connection slots.
    ResourceExhausted,
    /// An operation was ended by something else (the core was closed, the daemon stops).
    Aborted,
    /// A bug or an unexpected system failure.
    Internal,
}

/// A failed daemon operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What failed, naming the input.
    pub message: String,
}

/// A daemon operation's result.
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

impl DaemonError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DaemonError {
        DaemonError {
            kind,
            message: message.into(),
        }
    }

    /// [`ErrorKind::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> DaemonError {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> DaemonError {
        Self::new(ErrorKind::NotFound, message)
    }

    /// [`ErrorKind::FailedPrecondition`].
    pub fn precondition(message: impl Into<String>) -> DaemonError {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// [`ErrorKind::OutOfRange`].
    pub fn out_of_range(message: impl Into<String>) -> DaemonError {
        Self::new(ErrorKind::OutOfRange, message)
    }

    /// [`ErrorKind::Aborted`].
    pub fn aborted(message: impl Into<String>) -> DaemonError {
        Self::new(ErrorKind::Aborted, message)
    }

    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> DaemonError {
        Self::new(ErrorKind::Internal, message)
    }

    /// A failed file operation: `what` says which, with its path.
    pub fn io(what: impl fmt::Display, error: &io::Error) -> DaemonError {
        Self::new(io_kind(error), format!("{what}: {error}"))
    }

    /// A failed operation on the feed of core `key`.
    pub fn feed(key: &PublicKey, error: hypercore::Error) -> DaemonError {
        Self::new(feed_kind(&error), format!("core {key}: {error}"))
    }

    /// A failed drive operation (its message names the path or the drive).
    pub fn drive(error: hyperdrive::Error) -> DaemonError {
        Self::new(drive_kind(&error), error.to_string())
    }

    /// A failed corestore operation.
    pub fn store(error: corestore::Error) -> DaemonError {
        let kind = store_kind(&error);
        let mut message = error.to_string();
        if let corestore::Error::Removed { .. } = error {
            message.push_str(" (set `force`, `hyperctl core create --force`, to create it anyway)");
        }
        Self::new(kind, message)
    }
}

/// The kind of a corestore's error.
fn store_kind(error: &corestore::Error) -> ErrorKind {
    use corestore::Error as E;
    match error {
        E::EmptyName => ErrorKind::InvalidArgument,
        E::Removed { .. } => ErrorKind::FailedPrecondition,
        E::Closed { .. } => ErrorKind::Aborted,
        E::Open { source, .. } => match &**source {
            hypercore::Error::Locked { .. } | hypercore::Error::KeyMismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            _ => error.io_error().map_or(ErrorKind::Internal, io_kind),
        },
        _ => error.io_error().map_or(ErrorKind::Internal, io_kind),
    }
}

/// The kind of a feed's error.
fn feed_kind(error: &hypercore::Error) -> ErrorKind {
    use hypercore::Error as E;
    match error {
        E::NotWritable { .. } | E::Locked { .. } | E::SecretKeyMismatch { .. } => {
            ErrorKind::FailedPrecondition
        }
        E::OutOfRange { .. } => ErrorKind::OutOfRange,
        E::NotAvailable { .. } | E::NotFound { .. } => ErrorKind::NotFound,
        E::Timeout { .. } => ErrorKind::DeadlineExceeded,
        E::BlockTooLarge { .. } | E::Encoding { .. } => ErrorKind::InvalidArgument,
        E::Closed { .. } => ErrorKind::Aborted,
        E::Io { source, .. } => io_kind(source),
        _ => ErrorKind::Internal,
    }
}

/// The kind of a trie's error.
fn trie_kind(error: &hypertrie::Error) -> ErrorKind {
    use hypertrie::Error as E;
    match error {
        E::Feed { source, .. } => feed_kind(source),
        E::Store { source, .. } => store_kind(source),
        E::NotWritable { .. } | E::MountLoop { .. } => ErrorKind::FailedPrecondition,
        E::InvalidKey { .. } | E::Checkpoint { .. } => ErrorKind::InvalidArgument,
        E::TooManyMounts { .. } => ErrorKind::ResourceExhausted,
        // A block from a peer or from storage that is not what it should be.
        E::Decode { .. } => ErrorKind::Internal,
    }
}

/// The kind of a drive's error: a missing path NOT_FOUND, writing where one cannot
/// FAILED_PRECONDITION, a bad path INVALID_ARGUMENT, a full disk RESOURCE_EXHAUSTED, no
/// peer in time DEADLINE_EXCEEDED.
fn drive_kind(error: &hyperdrive::Error) -> ErrorKind {
    use hyperdrive::Error as E;
    match error {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        E::NotWritable { .. }
        | E::WrongType { .. }
        | E::NotEmpty { .. }
        | E::SymlinkLoop { .. }
        | E::Refused { .. } => ErrorKind::FailedPrecondition,
        E::InvalidPath { .. } | E::CrossDrive { .. } | E::TooLarge { .. } => {
            ErrorKind::InvalidArgument
        }
        E::Trie(source) => trie_kind(source),
        E::Metadata { source, .. } => trie_kind(source),
        E::Content { source, .. } => feed_kind(source),
        E::ContentWrite { source, .. } | E::MountedCore { source, .. } => feed_kind(source),
        E::Io { source, .. } | E::Local { source, .. } | E::Spill { source, .. } => {
            match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => ErrorKind::FailedPrecondition,
                io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                _ => io_kind(source),
            }
        }
        E::Download { source, .. } => match source {
            hypercore_replication::Error::Feed(feed) => feed_kind(feed),
            hypercore_replication::Error::Cancelled => ErrorKind::Aborted,
            _ => ErrorKind::Unavailable,
        },
        E::Store { source, .. } => store_kind(source),
        E::BadStat { .. } | E::Task { .. } => ErrorKind::Internal,
    }
}

/// A value for an error message, cut short if it is long (inputs can be huge).
pub fn shorten(value: &str) -> String {
    if value.chars().count() > 80 {
        format!("{}…", value.chars().take(80).collect::<String>())
    } else {
        value.to_string()
    }
}

/// The kind of a failed system call: running out of something is `ResourceExhausted`
/// (a full disk, a quota, descriptors, memory), anything else `Internal`.
pub fn io_kind(error: &io::Error) -> ErrorKind {
    match error.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE | libc::ENOMEM) => {
            ErrorKind::ResourceExhausted
        }
        _ => match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::OutOfMemory => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Internal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_anything_is_resource_exhausted() {
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EMFILE, libc::ENFILE] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(io_kind(&e), ErrorKind::ResourceExhausted, "{e}");
        }
        assert_eq!(
            io_kind(&io::Error::from_raw_os_error(libc::EIO)),
            ErrorKind::Internal
        );
    }

    #[tokio::test]
    async fn drive_errors_get_the_kind_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let store = corestore::Corestore::open(dir.path(), Default::default())
            .await
            .unwrap();
        let drive = hyperdrive::Drive::default_drive(&store, Default::default())
            .await
            .unwrap();
        let w = hyperdrive::WriteOptions::default;
        drive.write_file("/f", b"x", w()).await.unwrap();
        drive.mkdir("/d", None).await.unwrap();
        let kind = |e: hyperdrive::Error| DaemonError::drive(e).kind;
        assert_eq!(
            kind(drive.read_file("/missing").await.unwrap_err()),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(drive.write_file("/a/../b", b"x", w()).await.unwrap_err()),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind(drive.write_file("/d", b"x", w()).await.unwrap_err()),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            kind(
                drive
                    .checkout(1)
                    .write_file("/g", b"x", w())
                    .await
                    .unwrap_err()
            ),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            kind(drive.symlink("/elsewhere", "/f").await.unwrap_err()),
            ErrorKind::AlreadyExists
        );
        let err = DaemonError::drive(drive.rmdir("/f").await.unwrap_err());
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("/f"), "{err}");
        // A full disk under a content append.
        let full = hyperdrive::Error::ContentWrite {
            path: "/big".into(),
            drive: drive.key(),
            source: Box::new(hypercore::Error::Io {
                op: "writing",
                file: hypercore::storage::FileKind::Data,
                location: "/x".into(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            }),
        };
        assert_eq!(kind(full), ErrorKind::ResourceExhausted);
        store.close().await.unwrap();
    }

    #[test]
    fn a_full_disk_inside_a_store_error_is_found() {
        let key = PublicKey([1; 32]);
        let error = corestore::Error::Open {
            key,
            path: "/x".into(),
            source: Box::new(hypercore::Error::Io {
                op: "writing",
                file: hypercore::storage::FileKind::Tree,
                location: "/x".into(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            }),
        };
        let e = DaemonError::store(error);
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
        assert!(e.message.contains("/x"), "{e}");
    }
}
