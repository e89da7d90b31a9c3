//! Errors of the store. Each says what failed and with which input (a path or a key).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use hypercore::{DiscoveryKey, PublicKey};
use hypercore_protocol::PeerKey;

/// Everything that can go wrong with a corestore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory of the store could not be read, written or removed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing ("reading", "creating", …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A master key of the wrong length was given.
    #[error("a master key is 32 bytes, not {len}")]
    MasterKeyLength {
        /// The length given.
        len: usize,
    },
    /// An empty core name (JS would store it but could never read it back).
    #[error("a core name must not be empty")]
    EmptyName,
    /// The core's `name` file derives another core (JS: "Stored an incorrect name.").
    #[error("Stored an incorrect name: {} derives discovery key {derived}, but it is stored under {expected}", path.display())]
    IncorrectName {
        /// The `name` file.
        path: PathBuf,
        /// The discovery key the core is stored under.
        expected: DiscoveryKey,
        /// The discovery key the stored name derives.
        derived: DiscoveryKey,
    },
    /// A `key` file holds a key whose discovery key is not the one it is stored under.
    #[error("{} holds key {key}, whose discovery key is not {expected}", path.display())]
    MisplacedKey {
        /// The `key` file.
        path: PathBuf,
        /// The key found in it.
        key: PublicKey,
        /// The discovery key of the directory.
        expected: DiscoveryKey,
    },
    /// A hypercore could not be opened (damaged files, or in use by another process).
    #[error("opening core {key} in {}: {source}", path.display())]
    Open {
        /// The core's public key.
        key: PublicKey,
        /// Its directory.
        path: PathBuf,
        /// What hypercore reported.
        #[source]
        source: Box<hypercore::Error>,
    },
    /// A hypercore could not be closed cleanly.
    #[error("closing core {key}: {source}")]
    CloseCore {
        /// The core's public key.
        key: PublicKey,
        /// What hypercore reported.
        #[source]
        source: Box<hypercore::Error>,
    },
    /// The replication connection failed or was destroyed.
    #[error("replication connection with {remote} failed: {source}")]
    Connection {
        /// The remote peer's Noise key.
        remote: PeerKey,
        /// What ended it.
        #[source]
        source: Arc<hypercore_protocol::Error>,
    },
    /// Replicating one core with a peer failed (it was dropped).
    #[error("replicating core {key} with {remote}: {source}")]
    Replication {
        /// The core's public key.
        key: PublicKey,
        /// The remote peer's Noise key.
        remote: PeerKey,
        /// What the replicator reported.
        #[source]
        source: Box<hypercore_replication::Error>,
    },
    /// A writable core that had blocks was removed; creating it again would sign a second
    /// history under its key ([`crate::Corestore::recreate_named`] does it anyway).
    #[error("core {key} was removed after it had {length} blocks; creating it again would sign a second history that conflicts with the one peers may hold")]
    Removed {
        /// The core's public key.
        key: PublicKey,
        /// Its length when it was removed.
        length: u64,
    },
    /// The store was closed.
    #[error("the corestore in {} is closed", dir.display())]
    Closed {
        /// The store's directory.
        dir: PathBuf,
    },
    /// A bug: a background task panicked.
    #[error("internal error while {what}: {reason}")]
    Internal {
        /// What was being done.
        what: String,
        /// The panic.
        reason: String,
    },
}

impl Error {
    /// The first I/O error behind this one, if any (a full disk, too many open files, …).
    pub fn io_error(&self) -> Option<&io::Error> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return Some(io);
            }
            source = e.source();
        }
        None
    }

    /// The core's files are damaged (as opposed to unreachable: locked, out of space or
    /// descriptors, unreadable).
    pub fn is_damage(&self) -> bool {
        match self {
            Error::IncorrectName { .. } | Error::MisplacedKey { .. } => true,
            Error::Open { source, .. } => matches!(
                **source,
                hypercore::Error::Corrupt { .. } | hypercore::Error::KeyMismatch { .. }
            ),
            _ => false,
        }
    }

    /// The process (or the system) ran out of file descriptors.
    pub fn is_out_of_descriptors(&self) -> bool {
        self.io_error()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EMFILE || code == libc::ENFILE)
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
