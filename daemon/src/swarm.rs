//! The swarm subsystem: with DHT bootstrap nodes configured, every drive held and core
//! followed is joined under its discovery key: announced on the DHT (which also looks
//! it up) when joined and again every 5 to 10 minutes, as hyperswarm does, and every
//! peer found is dialed through the network, the same path as `peer connect`. The DHT
//! socket is bound to the peer listener's address, port included, so the port the DHT
//! stores for us is the one peers connect to. Like every subsystem it starts, restores
//! (the other subsystems join what they restore) and shuts down (see `daemon`).

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypercore::PublicKey;
use hyperd_config::Config;
use hyperswarm::{Dht, Id};
use rand::Rng;

use crate::network::{lock, Network};
use crate::tasks::Tasks;

/// The pause between two walks of a topic: uniform in this range, as hyperswarm.
const REWALK: std::ops::Range<Duration> = Duration::from_secs(300)..Duration::from_secs(600);
/// Walks under way at once: joining hundreds of drives (a start with many) queues their
/// first walks instead of sending thousands of requests in one burst.
const CONCURRENT_WALKS: usize = 4;
/// How long dialing a found peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The DHT (when configured) and the topics joined. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Swarm {
    inner: Arc<Inner>,
}

struct Inner {
    dht: Option<Arc<Dht>>,
    bootstrap: Vec<SocketAddrV4>,
    network: Network,
    tasks: Tasks,
    /// Per joined core key, the tasks of its walks and what they found.
    joined: Mutex<HashMap<PublicKey, Joined>>,
    /// Permits to walk ([`CONCURRENT_WALKS`]).
    walking: Arc<tokio::sync::Semaphore>,
}

struct Joined {
    tasks: Tasks,
    walks: Arc<Mutex<Walks>>,
}

/// What a topic's walks did so far.
#[derive(Clone, Debug, Default)]
pub struct Walks {
    /// Walks finished.
    pub count: u64,
    /// Peers the last one found.
    pub peers_found: usize,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

/// The swarm as `hyperctl swarm status` shows it.
#[derive(Clone, Debug)]
pub struct SwarmStatus {
    /// Where the DHT listens, if it runs.
    pub dht_address: Option<SocketAddrV4>,
    /// Its bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Each core joined (sorted by key) and its walks.
    pub topics: Vec<(PublicKey, Walks)>,
}

impl Swarm {
    /// Binds the DHT next to the peer listener, unless no bootstrap node is configured
    /// or nothing listens; its tasks run under `tasks`.
    pub async fn start(config: &Config, network: Network, tasks: Tasks) -> anyhow::Result<Swarm> {
        let bootstrap = resolve(&config.bootstrap_hosts()).await;
        let dht = match (config.bootstrap.is_empty(), network.local_addr()) {
            (true, _) => {
                tracing::info!("no DHT bootstrap nodes configured: peers come from `peer connect`");
                None
            }
            (false, Some(SocketAddr::V4(addr))) => {
                let dht = Dht::bind(addr, bootstrap.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("starting the DHT on {addr}: {e}"))?;
                tracing::info!(
                    "DHT on {}, bootstrapping from {}",
                    dht.local_addr(),
                    list(&bootstrap)
                );
                Some(Arc::new(dht))
            }
            (false, other) => {
                tracing::warn!(
                    "the DHT needs an IPv4 peer listener (listen = {:?}): not started",
                    other.map(|a| a.to_string()).unwrap_or_default()
                );
                None
            }
        };
        Ok(Swarm {
            inner: Arc::new(Inner {
                dht,
                bootstrap,
                network,
                tasks,
                joined: Mutex::new(HashMap::new()),
                walking: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_WALKS)),
            }),
        })
    }

    /// The DHT and every core joined, with its walks.
    pub fn status(&self) -> SwarmStatus {
        let mut topics: Vec<(PublicKey, Walks)> = lock(&self.inner.joined)
            .iter()
            .map(|(key, joined)| (*key, lock(&joined.walks).clone()))
            .collect();
        topics.sort_by_key(|(key, _)| key.to_hex());
        SwarmStatus {
            dht_address: self.dht_address(),
            bootstrap: self.inner.bootstrap.clone(),
            topics,
        }
    }

    /// Where the DHT listens, if it runs.
    pub fn dht_address(&self) -> Option<SocketAddrV4> {
        self.inner.dht.as_ref().map(|dht| dht.local_addr())
    }

    /// The DHT's bootstrap nodes.
    pub fn bootstrap(&self) -> &[SocketAddrV4] {
        &self.inner.bootstrap
    }

    /// How many cores are joined.
    pub fn topics(&self) -> usize {
        lock(&self.inner.joined).len()
    }

    /// Stops every walk.
    pub fn shutdown(&self) {
        self.inner.tasks.cancel();
        lock(&self.inner.joined).clear();
    }

    /// Joins the core `key` (a drive's metadata core, or a core) under its discovery
    /// key; joining again changes nothing.
    pub fn join(&self, key: PublicKey) {
        let Some(dht) = self.inner.dht.clone() else {
            return;
        };
        let mut joined = lock(&self.inner.joined);
        if joined.contains_key(&key) {
            return;
        }
        let tasks = self.inner.tasks.child();
        let cancelled = tasks.cancelled();
        let network = self.inner.network.clone();
        let topic = Id(key.discovery_key().0);
        let stats = Arc::new(Mutex::new(Walks::default()));
        let recorded = stats.clone();
        let walking = self.inner.walking.clone();
        tasks.spawn("announcing and looking up a topic", async move {
            tokio::select! {
                () = cancelled => {}
                () = walks(dht, network, topic, walking, recorded) => {}
            }
        });
        joined.insert(
            key,
            Joined {
                tasks,
                walks: stats,
            },
        );
    }

    /// Leaves the core `key`: its walks stop and its announcement is withdrawn.
    pub fn leave(&self, key: &PublicKey) {
        let Some(joined) = lock(&self.inner.joined).remove(key) else {
            return;
        };
        joined.tasks.cancel();
        if let Some(dht) = self.inner.dht.clone() {
            let topic = Id(key.discovery_key().0);
            self.inner
                .tasks
                .spawn("withdrawing an announcement", async move {
                    if let Err(e) = dht.unannounce(topic).await {
                        tracing::debug!("swarm: withdrawing {topic:?}: {e}");
                    }
                });
        }
    }
}

/// Announces `topic` now (once a walk permit is free) and every 5 to 10 minutes, dialing
/// the peers each walk finds; records each walk in `stats`.
async fn walks(
    dht: Arc<Dht>,
    network: Network,
    topic: Id,
    walking: Arc<tokio::sync::Semaphore>,
    stats: Arc<Mutex<Walks>>,
) {
    loop {
        let walked = {
            let _permit = walking.acquire().await;
            dht.announce(topic).await
        };
        match walked {
            Ok(found) => {
                {
                    let mut stats = lock(&stats);
                    stats.count += 1;
                    stats.peers_found = found.len();
                    stats.last_error = None;
                }
                let dials = found.into_iter().map(|peer| dial(&network, peer.addr));
                futures::future::join_all(dials).await;
            }
            Err(e) => {
                tracing::debug!("swarm: walk for {topic:?}: {e}");
                let mut stats = lock(&stats);
                stats.count += 1;
                stats.peers_found = 0;
                stats.last_error = Some(e.to_string());
            }
        }
        let pause = rand::thread_rng().gen_range(REWALK);
        tokio::time::sleep(pause).await;
    }
}

/// Dials `addr` unless it is our own listener or a connection to it is open (a node
/// may name us to ourselves; the handshake would refuse it anyway, after a connection).
async fn dial(network: &Network, addr: SocketAddrV4) {
    let ours = network.local_addr();
    let own = ours.is_some_and(|ours| {
        ours.port() == addr.port()
            && (ours.ip() == std::net::IpAddr::V4(*addr.ip())
                || (ours.ip().is_unspecified() && addr.ip().is_loopback()))
    });
    let addr = SocketAddr::V4(addr);
    if own || network.peers().iter().any(|p| p.address == addr) {
        return;
    }
    match network.dial(&addr.to_string(), DIAL_TIMEOUT).await {
        Ok((peer, _)) => tracing::info!("swarm: connected to {addr} ({})", peer.address),
        Err(e) => tracing::debug!("swarm: dialing {addr}: {e}"),
    }
}

/// The IPv4 addresses of the bootstrap entries (the Dat2 DHT is IPv4 only); an entry
/// that does not resolve is logged and left out.
async fn resolve(hosts: &[(String, u16)]) -> Vec<SocketAddrV4> {
    let mut addrs: Vec<SocketAddrV4> = Vec::new();
    for (host, port) in hosts {
        match tokio::net::lookup_host((host.as_str(), *port)).await {
            Ok(found) => {
                let before = addrs.len();
                for addr in found {
                    if let SocketAddr::V4(addr) = addr {
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                }
                if addrs.len() == before {
                    tracing::warn!("DHT bootstrap node {host}:{port} has no IPv4 address");
                }
            }
            Err(e) => tracing::warn!("DHT bootstrap node {host}:{port} does not resolve: {e}"),
        }
    }
    addrs
}

fn list(addrs: &[SocketAddrV4]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
