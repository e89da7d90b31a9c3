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
        use hypercore::Error as E;
        let kind = match &error {
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
        };
        Self::new(kind, format!("core {key}: {error}"))
    }

    /// A failed corestore operation.
    pub fn store(error: corestore::Error) -> DaemonError {
        use corestore::Error as E;
        let kind = match &error {
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
        };
        let mut message = error.to_string();
        if let E::Removed { .. } = error {
            message.push_str(" (set `force`, `hyperctl core create --force`, to create it anyway)");
        }
        Self::new(kind, message)
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
