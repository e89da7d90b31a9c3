//! The swarm subsystem: the cores and drives joined under their discovery keys, each
//! announced and/or looked up as the state file's swarm section says (the domain
//! operations that create, follow, seed and remove decide it). With DHT bootstrap nodes
//! configured, each is announced (which also looks it up) or looked up when joined and
//! again every 5 to 10 minutes, as hyperswarm does, and the peers found by a topic that
//! looks up are dialed through the network, the same path as `peer connect`, with
//! hyperswarm's retries (`dial_queue`). The DHT
//! socket is bound to the peer listener's address, port included, so the port the DHT
//! stores for us is the one peers connect to. With `mdns` on (the default, as JS), each
//! topic is also announced and/or looked up on the local network by mDNS, and the peers
//! found by a topic that looks up are dialed the same way. Like every subsystem it starts, restores
//! (its section of the state file) and shuts down (see `daemon`).

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypercore::PublicKey;
use hyperd_config::{Config, DhtMode};
use hyperswarm::{Dht, Endpoint, Id, Mdns, MdnsPeer, Mode, Options};
use rand::Rng;

use crate::dial_queue::{DialQueue, Found, Wanted};
use crate::network::{lock, Network, Origin};
use crate::state::{Seeding, State};
use crate::tasks::Tasks;

/// The pause between two walks of a topic: uniform in this range, as hyperswarm.
const REWALK: std::ops::Range<Duration> = Duration::from_secs(300)..Duration::from_secs(600);
/// The first pause after a walk of a topic that only looks up found no peer (or
/// failed), doubled after each such walk up to [`REWALK`]: a follow started just before
/// its seeder announced finds it in seconds, not in 5 to 10 minutes (hyperswarm waits
/// that long; a user who just typed `follow` would not).
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Walks under way at once: joining hundreds of drives (a start with many) queues their
/// first walks instead of sending thousands of requests in one burst.
const CONCURRENT_WALKS: usize = 4;

/// The DHT (when configured) and the topics joined. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Swarm {
    inner: Arc<Inner>,
}

struct Inner {
    dht: Option<Arc<Dht>>,
    /// Local discovery, when on and its socket could be bound.
    mdns: Option<Mdns>,
    bootstrap: Vec<SocketAddrV4>,
    /// Dials what topics find, with hyperswarm's retries.
    queue: DialQueue,
    tasks: Tasks,
    /// Per joined core key: how, the tasks of its walks and what they found.
    joined: Mutex<HashMap<PublicKey, Joined>>,
    /// Permits to walk ([`CONCURRENT_WALKS`]).
    walking: Arc<tokio::sync::Semaphore>,
}

struct Joined {
    seeding: Seeding,
    /// The discovery key, as mDNS names the topic.
    topic: Id,
    tasks: Tasks,
    walks: Arc<Mutex<Walks>>,
    /// Peers mDNS found, most recent last ([`MAX_FOUND_SHOWN`] at most).
    local: Vec<SocketAddrV4>,
}

/// What a topic's walks did so far.
#[derive(Clone, Debug, Default)]
pub struct Walks {
    /// Walks finished.
    pub count: u64,
    /// Peers the last one found (at most [`MAX_FOUND_SHOWN`] are kept).
    pub found: Vec<SocketAddrV4>,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

/// Found peers kept per topic for `swarm ls`; walks may find up to 128 each.
pub const MAX_FOUND_SHOWN: usize = 32;

/// One joined core (a drive by its metadata core) as the status shows it.
#[derive(Clone, Debug)]
pub struct TopicStatus {
    /// The core.
    pub key: PublicKey,
    /// How it is joined.
    pub seeding: Seeding,
    /// What its walks did.
    pub walks: Walks,
    /// Peers mDNS found, most recent last ([`MAX_FOUND_SHOWN`] at most).
    pub local_peers: Vec<SocketAddrV4>,
}

/// The swarm as `hyperctl swarm status` shows it.
#[derive(Clone, Debug)]
pub struct SwarmStatus {
    /// Where the DHT listens, if it runs.
    pub dht_address: Option<SocketAddrV4>,
    /// Its bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Whether local discovery (mDNS) runs.
    pub mdns: bool,
    /// Our address as the DHT sees it, once enough nodes agree: peers behind other NATs
    /// can then punch through to us ("holepunchable").
    pub public_address: Option<SocketAddrV4>,
    /// The DHT's mode as configured, and whether it sends its id now (an adaptive one
    /// turns persistent once reachable).
    pub dht_mode: Option<(Mode, bool)>,
    /// Nodes in the DHT's routing table.
    pub dht_nodes: usize,
    /// Each core joined, sorted by key.
    pub topics: Vec<TopicStatus>,
}

impl Swarm {
    /// Runs the DHT on `udp` (the peer listener's address and port, shared with uTP),
    /// unless no bootstrap node is configured or nothing listens; its tasks run under
    /// `tasks`.
    pub async fn start(
        config: &Config,
        network: Network,
        udp: Option<Endpoint>,
        tasks: Tasks,
    ) -> anyhow::Result<Swarm> {
        let bootstrap = resolve(&config.bootstrap_hosts()).await;
        let dht = match (config.bootstrap.is_empty(), udp) {
            (true, _) => {
                tracing::info!("no DHT bootstrap nodes configured: peers come from `peer connect`");
                None
            }
            (false, Some(udp)) => {
                let mode = match config.dht_mode {
                    DhtMode::Adaptive => Mode::Adaptive,
                    DhtMode::Persistent => Mode::Persistent,
                    DhtMode::Ephemeral => Mode::Ephemeral,
                };
                let mut options = Options::new(bootstrap.clone(), mode);
                if config.announce_local {
                    options.local_address = lan_address(udp.local_addr());
                    match options.local_address {
                        Some(lan) => tracing::info!("announcing our LAN address {lan} too"),
                        None => tracing::warn!(
                            "announce_local: this host has no IPv4 address but loopback"
                        ),
                    }
                }
                let dht = Dht::with_options(udp, options)
                    .map_err(|e| anyhow::anyhow!("starting the DHT: {e}"))?;
                tracing::info!(
                    "DHT on {} ({mode:?}), bootstrapping from {}",
                    dht.local_addr(),
                    list(&bootstrap)
                );
                Some(Arc::new(dht))
            }
            (false, _) => {
                tracing::warn!(
                    "the DHT needs an IPv4 peer listener (listen = {:?}): not started",
                    config.listen
                );
                None
            }
        };
        let (mdns, found) = if config.mdns {
            // Announced: the port peers connect to (none without a listener: look up only).
            let port = network.local_addr().map_or(0, |a| a.port());
            match Mdns::bind(port) {
                Ok((mdns, found)) => {
                    tracing::info!("mDNS local discovery on, announcing port {port}");
                    (Some(mdns), Some(found))
                }
                Err(e) => {
                    tracing::warn!("mDNS local discovery is off: {e}");
                    (None, None)
                }
            }
        } else {
            tracing::info!("mDNS local discovery is off (mdns = false)");
            (None, None)
        };
        let swarm = Swarm {
            inner: Arc::new_cyclic(|inner: &std::sync::Weak<Inner>| {
                // The queue asks whether a peer's topics still look up.
                let inner = inner.clone();
                let wanted: Wanted = Arc::new(move |key: &PublicKey| {
                    inner.upgrade().is_some_and(|inner| {
                        lock(&inner.joined)
                            .get(key)
                            .is_some_and(|j| j.seeding.lookup)
                    })
                });
                let queue = DialQueue::start(network, dht.clone(), wanted, &tasks);
                Inner {
                    dht,
                    mdns,
                    bootstrap,
                    queue,
                    tasks,
                    joined: Mutex::new(HashMap::new()),
                    walking: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_WALKS)),
                }
            }),
        };
        if let Some(found) = found {
            let dialing = swarm.clone();
            swarm
                .inner
                .tasks
                .spawn("dialing peers found by mDNS", dialing.dial_local(found));
        }
        Ok(swarm)
    }

    /// Queues each peer mDNS finds under a topic that looks up, and records it.
    async fn dial_local(self, mut found: tokio::sync::mpsc::Receiver<MdnsPeer>) {
        while let Some(peer) = found.recv().await {
            if let Some(key) = self.record_local(peer) {
                self.inner.queue.push(Found {
                    addr: peer.addr,
                    origin: Origin::Mdns,
                    referrer: None,
                    topic: key,
                });
            }
        }
    }

    /// Records `peer` with its topic; the topic's core, unless it no longer looks up.
    fn record_local(&self, peer: MdnsPeer) -> Option<PublicKey> {
        let mut joined = lock(&self.inner.joined);
        let (key, topic) = joined
            .iter_mut()
            .find(|(_, j)| j.topic == peer.topic && j.seeding.lookup)?;
        topic.local.retain(|a| *a != peer.addr);
        if topic.local.len() == MAX_FOUND_SHOWN {
            topic.local.remove(0);
        }
        topic.local.push(peer.addr);
        Some(*key)
    }

    /// Joins every core and drive of the state file's swarm section, as it says.
    pub fn restore(&self, state: &State) -> String {
        let mut joined = 0;
        for (hex, seeding) in &state.swarm {
            let Ok(key) = hex.parse::<PublicKey>() else {
                tracing::warn!(
                    "skipping a swarm topic with a malformed key {hex:?} in the state file"
                );
                continue;
            };
            self.join(key, *seeding);
            joined += 1;
        }
        format!("{joined} topics joined in the swarm")
    }

    /// The DHT and every core joined, with its walks.
    pub async fn status(&self) -> SwarmStatus {
        let keys: Vec<PublicKey> = lock(&self.inner.joined).keys().copied().collect();
        let mut topics: Vec<TopicStatus> = keys.iter().filter_map(|k| self.topic(k)).collect();
        topics.sort_by_key(|t| t.key.to_hex());
        let (public_address, dht_mode, dht_nodes) = match &self.inner.dht {
            Some(dht) => (
                dht.public_address().await,
                Some((dht.mode(), dht.is_persistent().await)),
                dht.contacts().await,
            ),
            None => (None, None, 0),
        };
        SwarmStatus {
            dht_address: self.dht_address(),
            bootstrap: self.inner.bootstrap.clone(),
            mdns: self.inner.mdns.is_some(),
            public_address,
            dht_mode,
            dht_nodes,
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

    /// How `key` is joined, if it is.
    pub fn seeding(&self, key: &PublicKey) -> Option<Seeding> {
        lock(&self.inner.joined).get(key).map(|j| j.seeding)
    }

    /// `key` as the status shows it, if it is joined.
    pub fn topic(&self, key: &PublicKey) -> Option<TopicStatus> {
        lock(&self.inner.joined).get(key).map(|joined| TopicStatus {
            key: *key,
            seeding: joined.seeding,
            walks: lock(&joined.walks).clone(),
            local_peers: joined.local.clone(),
        })
    }

    /// Stops every walk.
    pub fn shutdown(&self) {
        self.inner.tasks.cancel();
        lock(&self.inner.joined).clear();
    }

    /// Joins the core `key` (a drive's metadata core, or a core) under its discovery
    /// key, announced and looked up as `seeding` says (off: leaves it). Joining as it
    /// is joined changes nothing; joining otherwise starts its walks over, and stopping
    /// to announce withdraws the announcement.
    pub fn join(&self, key: PublicKey, seeding: Seeding) {
        if seeding.is_off() {
            self.leave(&key);
            return;
        }
        let mut joined = lock(&self.inner.joined);
        let before = joined.get(&key).map(|j| j.seeding);
        if before == Some(seeding) {
            return;
        }
        if let Some(before) = joined.remove(&key) {
            before.tasks.cancel();
            if before.seeding.announce && !seeding.announce {
                self.unannounce(key);
            }
        }
        let tasks = self.inner.tasks.child();
        let walks = Arc::new(Mutex::new(Walks::default()));
        let id = Id(key.discovery_key().0);
        if let Some(dht) = self.inner.dht.clone() {
            let cancelled = tasks.cancelled();
            let topic = Topic {
                dht,
                queue: self.inner.queue.clone(),
                key,
                id,
                seeding,
                walking: self.inner.walking.clone(),
                walks: walks.clone(),
            };
            tasks.spawn("announcing and looking up a topic", async move {
                tokio::select! {
                    () = cancelled => {}
                    () = topic.walk() => {}
                }
            });
        }
        if let Some(mdns) = &self.inner.mdns {
            if let Err(e) = mdns.join(id, seeding.announce, seeding.lookup) {
                tracing::warn!("swarm: {e}");
            }
        }
        joined.insert(
            key,
            Joined {
                seeding,
                topic: id,
                tasks,
                walks,
                local: Vec::new(),
            },
        );
    }

    /// Leaves the core `key`: its walks stop and its announcement is withdrawn.
    pub fn leave(&self, key: &PublicKey) {
        let Some(joined) = lock(&self.inner.joined).remove(key) else {
            return;
        };
        joined.tasks.cancel();
        if let Some(mdns) = &self.inner.mdns {
            mdns.leave(&joined.topic);
        }
        if joined.seeding.announce {
            self.unannounce(*key);
        }
    }

    fn unannounce(&self, key: PublicKey) {
        let Some(dht) = self.inner.dht.clone() else {
            return;
        };
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

/// One joined topic's walks on the DHT.
struct Topic {
    dht: Arc<Dht>,
    queue: DialQueue,
    /// The core joined.
    key: PublicKey,
    id: Id,
    seeding: Seeding,
    walking: Arc<tokio::sync::Semaphore>,
    walks: Arc<Mutex<Walks>>,
}

impl Topic {
    /// Walks now (once a walk permit is free) and every 5 to 10 minutes: announcing if
    /// it announces (which also finds peers), else looking up; dials the peers found if
    /// it looks up (sooner again while it finds none: [`RETRY_FIRST`]). Records each
    /// walk.
    async fn walk(self) {
        let mut retry = RETRY_FIRST;
        loop {
            let walked = {
                let _permit = self.walking.acquire().await;
                if self.seeding.announce {
                    self.dht.announce(self.id).await
                } else {
                    self.dht.lookup(self.id).await
                }
            };
            match walked {
                Ok(found) => {
                    {
                        let mut walks = lock(&self.walks);
                        walks.count += 1;
                        walks.found = found.iter().take(MAX_FOUND_SHOWN).map(|p| p.addr).collect();
                        walks.last_error = None;
                    }
                    if self.seeding.lookup {
                        for peer in found {
                            self.queue.push(Found {
                                addr: peer.addr,
                                origin: Origin::Dht,
                                // LAN peers are dialed directly, over TCP.
                                referrer: (!peer.local).then_some(peer.referrer),
                                topic: self.key,
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("swarm: walk for {:?}: {e}", self.id);
                    let mut walks = lock(&self.walks);
                    walks.count += 1;
                    walks.found.clear();
                    walks.last_error = Some(e.to_string());
                }
            }
            let mut pause = rand::thread_rng().gen_range(REWALK);
            let found_none = lock(&self.walks).found.is_empty();
            // Only what follows retries soon: what we announce is found by its followers'
            // lookups (a thousand seeded cores nobody follows yet walk on the usual
            // schedule).
            let follows = self.seeding.lookup && !self.seeding.announce;
            if follows && found_none && retry < REWALK.start {
                pause = retry;
                retry *= 2;
            } else if !found_none {
                retry = RETRY_FIRST;
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// Our address on the LAN with the port of `bound`: its address if it is one, else the
/// host's first IPv4 address that is not loopback (as @hyperswarm/network picks it).
fn lan_address(bound: SocketAddrV4) -> Option<SocketAddrV4> {
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    let interfaces = nix::ifaddrs::getifaddrs().ok()?;
    interfaces
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .map(|ip| SocketAddrV4::new(ip, bound.port()))
}

/// The IPv4 addresses of the bootstrap entries (the Dat2 DHT is IPv4 only); an entry
/// that does not resolve is logged and left out.
pub async fn resolve(hosts: &[(String, u16)]) -> Vec<SocketAddrV4> {
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
