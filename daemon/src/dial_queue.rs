//! The swarm's peer queue, as hyperswarm 2 keeps it (spec §7.3): every peer a topic
//! found (on the DHT or by mDNS) is dialed, through the network like `peer connect`;
//! a dial that fails is tried again after 1, 5 and 15 s (each ×0.66–1.32), then the
//! peer is forgotten until found again; a connection that ends is redialed after 1 s
//! while a topic that found the peer still looks up. A peer found under several topics
//! is one entry (one connection replicates every core).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hypercore::PublicKey;
use hypercore_protocol::Protocol;
use hyperswarm::Dht;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::network::{Network, Origin, Punch};
use crate::tasks::Tasks;

/// Pauses before the retries of a failed dial (then the peer is dropped).
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
];
/// Pause before redialing a peer whose connection ended.
const RECONNECT: Duration = Duration::from_secs(1);
/// How long one dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Dials under way at once.
const CONCURRENT_DIALS: usize = 16;
/// Peers queued at most; more are dropped (found again by later walks).
const MAX_QUEUED: usize = 4096;

/// A peer a topic found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    /// Where it listens.
    pub addr: SocketAddrV4,
    /// How it was found.
    pub origin: Origin,
    /// The DHT node that named it, which can relay a hole punch (DHT peers only).
    pub referrer: Option<SocketAddrV4>,
    /// The core (a drive's metadata core) it was found under.
    pub topic: PublicKey,
}

/// Whether a topic still looks up peers.
pub(crate) type Wanted = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// Sends found peers to the queue's task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DialQueue {
    found: mpsc::Sender<Found>,
}

impl DialQueue {
    /// Starts the queue's task under `tasks`: it dials through `network`, punching
    /// holes with `dht` for DHT peers, while `wanted` says a topic of the peer looks up.
    pub fn start(network: Network, dht: Option<Arc<Dht>>, wanted: Wanted, tasks: &Tasks) -> Self {
        let (found, receiver) = mpsc::channel(1024);
        let queue = Queue {
            network,
            dht,
            wanted,
            peers: HashMap::new(),
            dialing: 0,
        };
        tasks.spawn("dialing the peers the swarm found", queue.run(receiver));
        DialQueue { found }
    }

    /// Queues `peer` (nothing if the queue is full: later walks find it again).
    pub fn push(&self, peer: Found) {
        let _ = self.found.try_send(peer);
    }
}

/// Where a queued peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// To be dialed at this time.
    Due(Instant),
    Dialing,
    Connected,
}

struct Entry {
    origin: Origin,
    referrer: Option<SocketAddrV4>,
    topics: HashSet<PublicKey>,
    /// Failed dials since it last connected.
    failures: usize,
    stage: Stage,
}

/// What happened to a peer.
enum Report {
    Dialed(SocketAddrV4, Dialed),
    Closed(SocketAddrV4),
}

enum Dialed {
    Connected(Protocol),
    /// Not dialed: it is us, or connected already by another way.
    Skipped,
    Failed,
}

struct Queue {
    network: Network,
    dht: Option<Arc<Dht>>,
    wanted: Wanted,
    peers: HashMap<SocketAddrV4, Entry>,
    dialing: usize,
}

impl Queue {
    async fn run(mut self, mut found: mpsc::Receiver<Found>) {
        let (report, mut reports) = mpsc::unbounded_channel();
        loop {
            self.dial_due(&report);
            let next = self
                .peers
                .values()
                .filter_map(|e| match e.stage {
                    Stage::Due(at) => Some(at),
                    _ => None,
                })
                .min();
            let wake = async {
                match next {
                    Some(at) if self.dialing < CONCURRENT_DIALS => {
                        tokio::time::sleep_until(at).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                peer = found.recv() => match peer {
                    Some(peer) => self.add(peer),
                    None => return,
                },
                Some(happened) = reports.recv() => self.handle(happened, &report),
                () = wake => {}
            }
        }
    }

    /// Queues a found peer, or adds its topic to the entry it has.
    fn add(&mut self, peer: Found) {
        if let Some(entry) = self.peers.get_mut(&peer.addr) {
            entry.topics.insert(peer.topic);
            // A hole punch needs a referrer; a later walk may bring one.
            entry.referrer = entry.referrer.or(peer.referrer);
            return;
        }
        if self.peers.len() >= MAX_QUEUED {
            return;
        }
        self.peers.insert(
            peer.addr,
            Entry {
                origin: peer.origin,
                referrer: peer.referrer,
                topics: HashSet::from([peer.topic]),
                failures: 0,
                stage: Stage::Due(Instant::now()),
            },
        );
    }

    /// Starts the dials that are due, within [`CONCURRENT_DIALS`]; drops peers no
    /// topic wants any more.
    fn dial_due(&mut self, report: &mpsc::UnboundedSender<Report>) {
        let now = Instant::now();
        let wanted = &self.wanted;
        self.peers
            .retain(|_, e| !matches!(e.stage, Stage::Due(_)) || e.topics.iter().any(|t| wanted(t)));
        let mut due: Vec<SocketAddrV4> = self
            .peers
            .iter()
            .filter(|(_, e)| matches!(e.stage, Stage::Due(at) if at <= now))
            .map(|(addr, _)| *addr)
            .collect();
        due.truncate(CONCURRENT_DIALS.saturating_sub(self.dialing));
        for addr in due {
            let Some(entry) = self.peers.get_mut(&addr) else {
                continue;
            };
            entry.stage = Stage::Dialing;
            self.dialing += 1;
            let punch = match (&self.dht, entry.referrer) {
                (Some(dht), Some(referrer)) => {
                    let dht = dht.clone();
                    // Over uTP too, once a hole punch through the node that named the
                    // peer has opened both NATs, as JS dials.
                    let punch: Punch = Box::pin(async move {
                        dht.holepunch(addr, referrer)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    });
                    Some(punch)
                }
                _ => None,
            };
            let (network, origin, report) = (self.network.clone(), entry.origin, report.clone());
            tokio::spawn(async move {
                let dialed = dial(&network, addr, origin, punch).await;
                let _ = report.send(Report::Dialed(addr, dialed));
            });
        }
    }

    fn handle(&mut self, happened: Report, report: &mpsc::UnboundedSender<Report>) {
        match happened {
            Report::Dialed(addr, dialed) => {
                self.dialing = self.dialing.saturating_sub(1);
                let Some(entry) = self.peers.get_mut(&addr) else {
                    return;
                };
                match dialed {
                    Dialed::Connected(protocol) => {
                        entry.failures = 0;
                        entry.stage = Stage::Connected;
                        let report = report.clone();
                        tokio::spawn(async move {
                            protocol.closed().await;
                            let _ = report.send(Report::Closed(addr));
                        });
                    }
                    Dialed::Skipped => {
                        self.peers.remove(&addr);
                    }
                    Dialed::Failed => match RETRIES.get(entry.failures) {
                        Some(pause) => {
                            entry.failures += 1;
                            entry.stage = Stage::Due(Instant::now() + jitter(*pause));
                        }
                        None => {
                            self.peers.remove(&addr);
                        }
                    },
                }
            }
            Report::Closed(addr) => {
                let wanted = &self.wanted;
                let Some(entry) = self.peers.get_mut(&addr) else {
                    return;
                };
                if entry.topics.iter().any(|t| wanted(t)) {
                    entry.stage = Stage::Due(Instant::now() + jitter(RECONNECT));
                } else {
                    self.peers.remove(&addr);
                }
            }
        }
    }
}

/// `pause` ×0.66–1.32, as hyperswarm's batching timer spreads retries.
fn jitter(pause: Duration) -> Duration {
    pause.mul_f64(rand::thread_rng().gen_range(0.66..1.32))
}

/// Dials `addr`, found as `origin` says (with a `punch`, over uTP too), unless it is our
/// own listener or a connection to it is open (a node may name us to ourselves; the
/// handshake would refuse it anyway, after a connection).
async fn dial(
    network: &Network,
    addr: SocketAddrV4,
    origin: Origin,
    punch: Option<Punch>,
) -> Dialed {
    let ours = network.local_addr();
    let own = ours.is_some_and(|ours| {
        ours.port() == addr.port()
            && (ours.ip() == IpAddr::V4(*addr.ip())
                || (ours.ip().is_unspecified() && addr.ip().is_loopback()))
    });
    let target = SocketAddr::V4(addr);
    if own || network.peers().iter().any(|p| p.address == target) {
        return Dialed::Skipped;
    }
    match network
        .dial_with(&target.to_string(), origin, punch, DIAL_TIMEOUT)
        .await
    {
        Ok((peer, protocol)) => {
            tracing::info!("swarm: connected to {addr} ({})", peer.address);
            Dialed::Connected(protocol)
        }
        Err(e) => {
            tracing::debug!("swarm: dialing {addr}: {e}");
            Dialed::Failed
        }
    }
}
