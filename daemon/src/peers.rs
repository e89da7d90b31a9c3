//! What the daemon does with peers: dial (and remember), list, disconnect, watch.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use hypercore::PublicKey;
use hypercore_protocol::PeerKey;
use tokio::sync::broadcast::error::RecvError;

use crate::daemon::Daemon;
use crate::error::{DaemonError, ErrorKind, Result};
use crate::network::{DialError, DIAL_TIMEOUT};
pub use crate::network::{Origin, PeerEvent, PeerSnapshot};

/// A connected peer and the cores it replicates with us.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The connection.
    pub connection: PeerSnapshot,
    /// Open cores replicating with it, sorted.
    pub cores: Vec<PublicKey>,
}

/// What a disconnect did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnected {
    /// Connections closed.
    pub closed: usize,
    /// The address was remembered and is now forgotten.
    pub forgotten: bool,
}

impl DialError {
    fn into_daemon_error(self) -> DaemonError {
        let kind = match self {
            DialError::BadAddress { .. } => ErrorKind::InvalidArgument,
            DialError::SelfConnection { .. } => ErrorKind::FailedPrecondition,
            DialError::Failed { .. } => ErrorKind::Unavailable,
            DialError::TooManyPeers { .. } => ErrorKind::ResourceExhausted,
        };
        DaemonError::new(kind, self.to_string())
    }
}

impl Daemon {
    /// Dials `address` and returns once the handshake is done, within `timeout` (default
    /// 10 s). Unless `once`, the address is remembered and redialled (also after
    /// restarts) until disconnected.
    pub async fn dial(
        &self,
        address: &str,
        timeout: Option<Duration>,
        once: bool,
    ) -> Result<PeerSnapshot> {
        let address = address.trim().to_string();
        if address.is_empty() {
            return Err(DaemonError::invalid("address is required (HOST:PORT)"));
        }
        let timeout = timeout.unwrap_or(DIAL_TIMEOUT);
        let (snapshot, protocol) = self
            .unless_stopping(async {
                self.network()
                    .dial(&address, Origin::Manual, timeout)
                    .await
                    .map_err(DialError::into_daemon_error)
            })
            .await?;
        if !once {
            let remembered = address.clone();
            self.update_state(move |s| {
                s.peers.insert(remembered);
            })
            .await?;
            self.network().remember(address, Some(protocol));
        }
        Ok(snapshot)
    }

    /// Connected peers with the cores each replicates, and the remembered addresses.
    pub fn peers(&self) -> (Vec<Peer>, Vec<String>) {
        let mut shared: HashMap<PeerKey, Vec<PublicKey>> = HashMap::new();
        for core in self.store().open_cores() {
            let key = core.feed().key();
            for peer in core.stats().peers {
                shared.entry(peer.remote_key).or_default().push(key);
            }
        }
        let peers = self
            .network()
            .peers()
            .into_iter()
            .map(|connection| {
                let mut cores = shared.remove(&connection.remote_key).unwrap_or_default();
                cores.sort();
                Peer { connection, cores }
            })
            .collect();
        let remembered = self.state().get().peers.into_iter().collect();
        (peers, remembered)
    }

    /// Closes connections to `peer` (an address or a remote key) and forgets the address.
    pub async fn disconnect(&self, peer: &str) -> Result<Disconnected> {
        let peer = peer.trim().to_string();
        if peer.is_empty() {
            return Err(DaemonError::invalid(
                "peer is required (an address or a remote key)",
            ));
        }
        let remembered = self.state().get().peers.contains(&peer);
        if remembered {
            let forgotten = peer.clone();
            self.update_state(move |s| {
                s.peers.remove(&forgotten);
            })
            .await?;
        }
        self.network().forget(&peer);
        let closed = self.network().disconnect(&peer).await;
        if closed == 0 && !remembered {
            return Err(DaemonError::not_found(format!(
                "no connected or remembered peer {:?}",
                crate::error::shorten(&peer)
            )));
        }
        Ok(Disconnected {
            closed,
            forgotten: remembered,
        })
    }

    /// Peers joining and leaving from now on, until the daemon stops. A watcher too slow
    /// to keep up misses events rather than holding them up.
    pub fn watch_peers(&self) -> BoxStream<'static, Result<PeerEvent>> {
        let events = self.network().subscribe();
        let stream = futures::stream::unfold(events, |mut events| async move {
            loop {
                match events.recv().await {
                    Ok(event) => return Some((Ok(event), events)),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!("a peer watcher missed {n} events");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        self.until_stopped(stream.boxed())
    }
}
