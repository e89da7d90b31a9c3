//! App messages: hypercore-protocol extension messages on a core's channel, to and from
//! its peers (hyperdrive-daemon's "peersockets"). A session registers one extension on
//! one core, which it keeps open; it sends what its caller gives and yields what peers
//! send, until the caller ends it or the daemon stops. Front ends only convert.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use hypercore::PublicKey;
use hypercore_protocol::PeerKey;
use hypercore_replication::FeedExtension;

use crate::daemon::Daemon;
use crate::error::{DaemonError, ErrorKind, Result};

/// Longest extension name.
pub const MAX_NAME: usize = 128;
/// Largest payload sent.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// A message to send: to one peer, or to every peer of the core.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The peer, by its remote Noise key; `None`: every peer.
    pub to: Option<PeerKey>,
    /// What to send.
    pub payload: Bytes,
}

/// What a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionEvent {
    /// Registered; the peers replicating the core now.
    Opened(Vec<PeerKey>),
    /// A peer sent a message.
    Received(PeerKey, Bytes),
    /// A message went to this many peers.
    Sent(usize),
}

impl Daemon {
    /// Registers the extension `name` on the core `key` and runs a session: each item of
    /// `outgoing` is sent, and answered with [`ExtensionEvent::Sent`]; messages from
    /// peers come as [`ExtensionEvent::Received`]. The first event is
    /// [`ExtensionEvent::Opened`]. Ends when `outgoing` ends or fails, or the daemon
    /// stops; the extension is then unregistered.
    pub async fn extension(
        &self,
        key: &PublicKey,
        name: &str,
        outgoing: BoxStream<'static, Result<Outgoing>>,
    ) -> Result<BoxStream<'static, Result<ExtensionEvent>>> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(DaemonError::invalid(format!(
                "extension name {name:?} is {} bytes; it must be 1 to {MAX_NAME}",
                name.len()
            )));
        }
        let core = self.core(key).await?;
        let extension = core.register_extension(name).map_err(|e| {
            DaemonError::new(
                ErrorKind::AlreadyExists,
                format!("extension {name:?} on core {key} is open in another session: {e}"),
            )
        })?;
        let peers: Vec<PeerKey> = core.stats().peers.iter().map(|p| p.remote_key).collect();
        let opened = futures::stream::once(async move { Ok(ExtensionEvent::Opened(peers)) });
        let session = futures::stream::unfold(
            Some(Session {
                _core: core,
                extension,
                outgoing,
                key: *key,
            }),
            |session| async move {
                let mut session = session?;
                let event = session.next().await?;
                let go_on = event.is_ok();
                Some((event, go_on.then_some(session)))
            },
        );
        Ok(self.until_stopped(opened.chain(session).boxed()))
    }
}

struct Session {
    /// Keeps the core open while the session runs.
    _core: corestore::Core,
    extension: FeedExtension,
    outgoing: BoxStream<'static, Result<Outgoing>>,
    key: PublicKey,
}

impl Session {
    /// The next event; `None` once the caller ended its side.
    async fn next(&mut self) -> Option<Result<ExtensionEvent>> {
        tokio::select! {
            received = self.extension.recv() => {
                let (peer, payload) = received?;
                Some(Ok(ExtensionEvent::Received(peer, payload)))
            }
            sent = self.outgoing.next() => Some(sent?.and_then(|out| self.send(out))),
        }
    }

    fn send(&self, out: Outgoing) -> Result<ExtensionEvent> {
        if out.payload.len() > MAX_PAYLOAD {
            return Err(DaemonError::invalid(format!(
                "payload of {} bytes on core {}; at most {MAX_PAYLOAD}",
                out.payload.len(),
                self.key
            )));
        }
        let count = match out.to {
            Some(peer) => usize::from(self.extension.send(&peer, out.payload)),
            None => self.extension.broadcast(out.payload),
        };
        Ok(ExtensionEvent::Sent(count))
    }
}
