//! Errors of the wire protocol.

use std::time::Duration;

use hypercore::DiscoveryKey;

/// Why a connection or a channel failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the underlying stream failed.
    #[error("connection {op} failed: {source}")]
    Io {
        /// "reading" or "writing".
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Noise handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The authentication hook refused the remote's static key.
    #[error("peer {0} was refused by the authentication hook")]
    Refused(crate::PeerKey),
    /// Nothing arrived for too long.
    #[error("no data received for {0:?}")]
    Timeout(Duration),
    /// A frame over the size limit.
    #[error("incoming message of {size} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// Its claimed size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A frame or message that cannot be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The remote opened a channel with a capability that does not prove it knows the key.
    #[error("invalid remote channel capability for discovery key {0}")]
    BadCapability(DiscoveryKey),
    /// The channel for this feed is already open on this connection.
    #[error("a channel for discovery key {0} is already open")]
    AlreadyOpen(DiscoveryKey),
    /// The channel was closed.
    #[error("channel for discovery key {0} is closed")]
    ChannelClosed(DiscoveryKey),
    /// The connection was closed or destroyed.
    #[error("connection closed: {0}")]
    Closed(String),
}
