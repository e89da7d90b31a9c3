//! Replicating hypercore feeds between peers, compatible with JS hypercore 9.
//!
//! A [`Replicator`] holds what one feed should download and shares the work between all
//! of its peers; [`Replicator::attach`] runs the feed over a protocol [`Channel`] with one
//! peer (wants, haves, requests, verified data, JS's rules for ending). [`replicate`] does
//! the whole thing for one feed over one byte stream.
//!
//! [`Channel`]: hypercore_protocol::Channel

mod peer;
pub use peer::PeerEnd;
mod remote_bitfield;
mod replicator;

use std::time::Duration;

use hypercore_protocol::{Event, Outcome, PeerKey, Protocol, ProtocolOptions};
use tokio::io::{AsyncRead, AsyncWrite};

use remote_bitfield::RemoteBitfield;
pub use replicator::{
    Download, DownloadRange, ExtensionSender, FeedExtension, PeerStats, Replicator,
    ReplicatorOptions, Stats, Traffic, DEFAULT_MAX_REQUESTS, MIN_WINDOW, WINDOW_BYTES,
};

/// Why replication with a peer stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed.
    #[error(transparent)]
    Protocol(#[from] hypercore_protocol::Error),
    /// Reading or writing the feed failed.
    #[error("feed error: {0}")]
    Feed(#[from] hypercore::Error),
    /// The peer broke the protocol or sent data that does not verify; it was dropped.
    #[error("peer {peer} misbehaved: {reason}")]
    PeerMisbehaved {
        /// The peer.
        peer: PeerKey,
        /// What it did.
        reason: String,
    },
    /// The peer answered none of our requests for too long; it was dropped.
    #[error("peer {peer} answered none of {outstanding} requests for {after:?}")]
    RequestTimeout {
        /// The peer.
        peer: PeerKey,
        /// How long we waited.
        after: Duration,
        /// Requests it left unanswered.
        outstanding: usize,
    },
    /// A download was cancelled.
    #[error("download cancelled")]
    Cancelled,
    /// An extension could not be registered.
    #[error("extension: {0}")]
    Extension(String),
}

/// Options for [`replicate`].
#[derive(Clone, Debug, Default)]
pub struct ReplicateOptions {
    /// Connection options (initiator, keys, timeout, ...). `live` here is also the
    /// replication mode.
    pub protocol: ProtocolOptions,
}

/// Replicates the replicator's feed with the peer at the other end of `io` until both
/// sides are done (one-shot) or the connection ends (live).
pub async fn replicate<IO>(
    replicator: &Replicator,
    io: IO,
    options: ReplicateOptions,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let live = options.protocol.live;
    let (protocol, mut events) = Protocol::connect(io, options.protocol).await?;
    let channel = protocol.open(replicator.feed().key())?;
    let peer = replicator.attach(channel, live);
    // A plain feed answers nothing to channels for other feeds, as JS does.
    let drain =
        tokio::spawn(
            async move { while let Some(Event::DiscoveryKey(_)) = events.recv().await {} },
        );
    // The connection carries this one feed: a peer that fails takes it down.
    let peer_result = peer.await.unwrap_or_else(|e| {
        Err(Error::Protocol(hypercore_protocol::Error::Closed(
            e.to_string(),
        )))
    });
    if let Err(e) = &peer_result {
        protocol.destroy(&e.to_string());
    }
    let outcome = protocol.closed().await;
    drain.abort();
    peer_result?;
    match outcome {
        Outcome::Finished => Ok(()),
        Outcome::Failed(e) => Err(Error::Protocol(hypercore_protocol::Error::Closed(
            e.to_string(),
        ))),
    }
}
