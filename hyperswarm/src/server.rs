//! A DHT node that serves others (a bootstrap node, or a storage node of a swarm): a
//! [`Dht`] on a socket of its own, persistent unless asked otherwise, bootstrapping from
//! other nodes if given, so that several form one DHT; runs until its shutdown future
//! ends. Everything a [`Dht`] does it does: tokens with a secret rotated every 5
//! minutes, announcements' generations turned every 8, routing-table upkeep, each
//! address's requests within a budget ([`crate::limit::RateLimit`]).

use std::future::Future;
use std::net::SocketAddrV4;

use crate::dht::{Dht, DhtError, Mode, Options};
use crate::utp::Endpoint;
use crate::Id;

/// A DHT node serving others.
#[derive(Debug)]
pub struct DhtServer {
    dht: Dht,
}

impl DhtServer {
    /// Binds `addr` (IPv4: the Dat2 DHT is IPv4 only; port 0 for any) as a node with a
    /// random id, sent when `persistent` (others add it to their routing tables), and
    /// no bootstrap nodes: others bootstrap from it.
    pub async fn bind(addr: SocketAddrV4, persistent: bool) -> Result<DhtServer, DhtError> {
        DhtServer::bind_with(addr, persistent, Vec::new()).await
    }

    /// [`Self::bind`], bootstrapping from `bootstrap` (other nodes of the DHT).
    pub async fn bind_with(
        addr: SocketAddrV4,
        persistent: bool,
        bootstrap: Vec<SocketAddrV4>,
    ) -> Result<DhtServer, DhtError> {
        let mode = match persistent {
            true => Mode::Persistent,
            false => Mode::Ephemeral,
        };
        let endpoint = Endpoint::bind(addr).await?;
        let dht = Dht::with_options(endpoint, Options::new(bootstrap, mode))?;
        Ok(DhtServer { dht })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.dht.local_addr()
    }

    /// Its id, if persistent.
    pub fn id(&self) -> Option<Id> {
        (self.dht.mode() == Mode::Persistent).then(|| self.dht.own_id())
    }

    /// The node, to ask it what it knows or walk from it.
    pub fn dht(&self) -> &Dht {
        &self.dht
    }

    /// Serves until `shutdown` completes, then stops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
    }
}
