//! Peer connections: the TCP listener, dialing, the table of live connections, and
//! redialing remembered addresses with backoff. Every connection, however it was made,
//! goes through one handshake and one replication path: the corestore's.
//!
//! Connection slots are budgeted so that nobody can take them all: incoming connections
//! have a budget (`max_peers`) with a cap per remote IP, dialed ones their own
//! (`max_outbound_peers`), handshakes time out after 5 s, and when the incoming budget is
//! full a new connection takes the place of one still handshaking, or of one that has
//! replicated nothing for a while.
//!
//! It is the daemon's peer subsystem: it starts (listens), restores the remembered
//! addresses of the state file (`peers`), which it redials, and shuts down; every task
//! it runs (accepting, handshakes, replication, redialing) stops with its token, and a
//! connection closes its protocol as it does. The operations on peers are in `peers`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corestore::Corestore;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use hypercore_protocol::{FrameBudget, NoiseKeyPair, Outcome, PeerKey, Protocol, ProtocolOptions};
use hyperd_config::Config;
use hyperswarm::utp::{Endpoint, UtpStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};

use crate::state::State;
use crate::tasks::Tasks;

/// How long a dial plus handshake may take by default.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an incoming connection may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// An incoming connection with no channel open for this long may make room for a new one.
pub const IDLE_GRACE: Duration = Duration::from_secs(5);
/// Memory all connections together may hold in partly received large frames (a peer may
/// send frames of up to 8 MiB; most are blocks of 64 KiB, which need none of it).
pub const FRAME_BUDGET: usize = 64 << 20;
/// Redial backoff bounds; a connection that lasted `STABLE` resets the backoff.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const STABLE: Duration = Duration::from_secs(30);

/// How many connections of each kind the network allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkLimits {
    /// Incoming connections, handshaking or open.
    pub max_incoming: usize,
    /// Incoming connections from one IP address.
    pub max_per_ip: usize,
    /// Dialed connections.
    pub max_outbound: usize,
}

/// How a connection came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The peer dialed us.
    Incoming,
    /// `peer connect`, or a remembered address redialed.
    Manual,
    /// Found on the DHT under a joined topic.
    Dht,
    /// Found on the local network by mDNS under a joined topic.
    Mdns,
}

impl Origin {
    /// As the API and `hyperctl` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Incoming => "incoming",
            Origin::Manual => "manual",
            Origin::Dht => "dht",
            Origin::Mdns => "mdns",
        }
    }
}

/// How a connection's bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// uTP on the DHT's UDP socket.
    Utp,
    /// uTP dialed after a hole punch through the DHT node that named the peer.
    Holepunched,
}

impl Transport {
    /// As the API and `hyperctl` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
            Transport::Holepunched => "holepunched",
        }
    }
}

/// One live connection, as the API reports it.
#[derive(Clone, Debug)]
pub struct PeerSnapshot {
    /// Connection id, unique for the daemon's lifetime.
    pub id: u64,
    /// Remote address.
    pub address: SocketAddr,
    /// The remote's static Noise key.
    pub remote_key: PeerKey,
    /// We dialed.
    pub initiator: bool,
    /// How it came about.
    pub origin: Origin,
    /// How its bytes travel.
    pub transport: Transport,
    /// Bytes sent.
    pub bytes_up: u64,
    /// Bytes received.
    pub bytes_down: u64,
    /// How long it has been connected.
    pub connected: Duration,
}

/// Peers joining and leaving.
#[derive(Clone, Debug)]
pub enum PeerEvent {
    /// A connection finished its handshake.
    Joined(PeerSnapshot),
    /// A connection ended; the reason is empty when it ended normally.
    Left(PeerSnapshot, String),
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Not a usable address.
    #[error("invalid peer address {address:?}: {reason}")]
    BadAddress {
        /// What was given.
        address: String,
        /// Why it is unusable.
        reason: String,
    },
    /// TCP or the handshake failed.
    #[error("connecting to {address}: {reason}")]
    Failed {
        /// The address.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The address is this daemon.
    #[error("{address} is this daemon itself")]
    SelfConnection {
        /// The address.
        address: String,
    },
    /// `max_outbound_peers` dialed connections are open already.
    #[error("not dialing {address}: {max} dialed connections are open (max_outbound_peers)")]
    TooManyPeers {
        /// The address.
        address: String,
        /// The limit.
        max: usize,
    },
}

struct Conn {
    address: SocketAddr,
    initiator: bool,
    origin: Origin,
    transport: Transport,
    protocol: Protocol,
    since: Instant,
}

impl Conn {
    fn snapshot(&self, id: u64) -> PeerSnapshot {
        let (up, down) = self.protocol.byte_counts();
        PeerSnapshot {
            id,
            address: self.address,
            remote_key: self.protocol.remote_key(),
            initiator: self.initiator,
            origin: self.origin,
            transport: self.transport,
            bytes_up: up,
            bytes_down: down,
            connected: self.since.elapsed(),
        }
    }
}

/// Slots in use, by kind.
#[derive(Default)]
struct Slots {
    incoming: usize,
    outbound: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Incoming connections still handshaking: when they started, and how to stop them.
    handshaking: HashMap<u64, (Instant, oneshot::Sender<()>)>,
    /// Connections ended to make room, whose incoming slot was handed on already.
    released: HashSet<u64>,
}

/// A connection's slot; freed when dropped.
struct Slot {
    network: std::sync::Weak<Inner>,
    ip: Option<IpAddr>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(inner) = self.network.upgrade() else {
            return;
        };
        let mut slots = lock(&inner.slots);
        slots.handshaking.remove(&self.id);
        match self.ip {
            Some(ip) => {
                if !slots.released.remove(&self.id) {
                    slots.incoming = slots.incoming.saturating_sub(1);
                }
                if let Some(n) = slots.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        slots.per_ip.remove(&ip);
                    }
                }
            }
            None => slots.outbound = slots.outbound.saturating_sub(1),
        }
    }
}

struct Inner {
    store: Corestore,
    keypair: NoiseKeyPair,
    local_addr: Option<SocketAddr>,
    /// uTP on the DHT's socket, when the DHT runs.
    utp: Option<Endpoint>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    events: broadcast::Sender<PeerEvent>,
    /// Redial loops of remembered addresses.
    redialers: Mutex<HashMap<String, Tasks>>,
    /// Every task of the network: accepting, handshakes, replication, redials.
    tasks: Tasks,
    limits: NetworkLimits,
    slots: Mutex<Slots>,
    frames: FrameBudget,
    /// When a refused incoming connection was last logged (floods log once a second).
    last_refusal_log: Mutex<Option<Instant>>,
}

/// The daemon's peer connections. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl Network {
    /// Starts accepting on `listener` (none: not listening) and on `utp` (the DHT's
    /// socket, if it runs), with the limits of `config`; its tasks run under `tasks`.
    /// The replication identity is derived from the store's master key like
    /// hyperdrive-daemon's, so it is stable across restarts.
    pub fn start(
        store: Corestore,
        config: &Config,
        listener: Option<TcpListener>,
        utp: Option<Endpoint>,
        tasks: Tasks,
    ) -> Network {
        let seed = corestore::derive_seed(
            store.master_key(),
            "hyperdrive-daemon",
            b"replication-keypair",
        );
        let keypair = NoiseKeyPair::from_seed(&seed);
        let limits = NetworkLimits {
            max_incoming: config.max_peers,
            max_per_ip: config.max_peers_per_ip,
            max_outbound: config.max_outbound_peers,
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let network = Network {
            inner: Arc::new(Inner {
                store,
                keypair,
                local_addr,
                utp: utp.clone(),
                conns: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                events: broadcast::channel(1024).0,
                redialers: Mutex::new(HashMap::new()),
                tasks,
                limits,
                slots: Mutex::new(Slots::default()),
                frames: FrameBudget::new(FRAME_BUDGET),
                last_refusal_log: Mutex::new(None),
            }),
        };
        if let Some(listener) = listener {
            tracing::info!("listening for peers on {}", display_opt(local_addr));
            let accept = network.clone().accept_loop(listener);
            network
                .inner
                .tasks
                .spawn("accepting peer connections", accept);
        }
        if let Some(utp) = utp {
            let accept = network.clone().accept_utp(utp);
            network
                .inner
                .tasks
                .spawn("accepting uTP peer connections", accept);
        }
        network
    }

    /// Redials the addresses the state file remembers. Returns what it did, for the log.
    pub fn restore(&self, state: &State) -> String {
        for address in &state.peers {
            self.remember(address.clone(), None);
        }
        format!("redialing {} remembered peers", state.peers.len())
    }

    /// Stops listening and redialing and closes every connection: each of its tasks
    /// ends with the token (a connection destroys its protocol as it goes).
    pub fn shutdown(&self) {
        self.inner.tasks.cancel();
        lock(&self.inner.redialers).clear();
    }

    /// The bound peer address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Our static Noise key.
    pub fn peer_key(&self) -> PeerKey {
        self.inner.keypair.public
    }

    /// Live connections.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let conns = lock(&self.inner.conns);
        let mut peers: Vec<_> = conns.iter().map(|(id, c)| c.snapshot(*id)).collect();
        peers.sort_by_key(|p| p.id);
        peers
    }

    /// Joins and leaves from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    self.incoming(stream, address, Transport::Tcp);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn accept_utp(self, utp: Endpoint) {
        utp.set_accepting(true);
        loop {
            let (stream, address) = utp.accept().await;
            self.incoming(stream, SocketAddr::V4(address), Transport::Utp);
        }
    }

    /// Takes an accepted connection within the incoming limits and handshakes it.
    fn incoming<S>(&self, stream: S, address: SocketAddr, transport: Transport)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.next_id();
        let (slot, evicted) = match self.incoming_slot(id, address.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                self.log_refusal(address, &why);
                return;
            }
        };
        let network = self.clone();
        self.inner
            .tasks
            .spawn("handshaking an incoming connection", async move {
                let link = Link {
                    address,
                    origin: Origin::Incoming,
                    transport,
                };
                let handshake = network.handshake(stream, link, slot, id);
                let result = tokio::select! {
                    result = handshake => result.map(|_| ()).map_err(|e| e.to_string()),
                    _ = evicted => Err("closed to make room for a new connection".into()),
                };
                if let Err(e) = result {
                    tracing::info!("incoming connection from {address} failed: {e}");
                }
            });
    }

    /// A slot for an incoming connection from `ip`: within the per-IP cap, and within the
    /// incoming budget, making room if it is full. Until its handshake is done, the
    /// connection may be ended to make room: the receiver completes then.
    fn incoming_slot(&self, id: u64, ip: IpAddr) -> Result<(Slot, oneshot::Receiver<()>), String> {
        let limits = self.inner.limits;
        let mut slots = lock(&self.inner.slots);
        let from_ip = slots.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.max_per_ip {
            return Err(format!(
                "{from_ip} connections from {ip} are open (max_peers_per_ip)"
            ));
        }
        if slots.incoming >= limits.max_incoming && !self.make_room(&mut slots) {
            return Err(format!(
                "{} incoming peer connections are open (max_peers)",
                limits.max_incoming
            ));
        }
        slots.incoming += 1;
        *slots.per_ip.entry(ip).or_default() += 1;
        let (evict, evicted) = oneshot::channel();
        slots.handshaking.insert(id, (Instant::now(), evict));
        let slot = Slot {
            network: Arc::downgrade(&self.inner),
            ip: Some(ip),
            id,
        };
        Ok((slot, evicted))
    }

    /// Ends one incoming connection that is still handshaking (the oldest) or, failing
    /// that, one that has had no channel open for a while (the quietest); true if one
    /// was ended. Its slot frees itself as it goes.
    fn make_room(&self, slots: &mut Slots) -> bool {
        let oldest = slots
            .handshaking
            .iter()
            .min_by_key(|(_, (since, _))| *since)
            .map(|(id, _)| *id);
        if let Some((id, (_, evict))) = oldest.and_then(|id| slots.handshaking.remove_entry(&id)) {
            let _ = evict.send(());
            // Its task gives the slot back when it stops; the new connection takes its
            // place now.
            slots.released.insert(id);
            slots.incoming = slots.incoming.saturating_sub(1);
            tracing::info!("closed a connection still handshaking to make room for a new one");
            return true;
        }
        let conns = lock(&self.inner.conns);
        let idle = conns
            .iter()
            .filter(|(_, c)| {
                !c.initiator && c.since.elapsed() >= IDLE_GRACE && c.protocol.channel_count() == 0
            })
            .min_by_key(|(_, c)| {
                let (up, down) = c.protocol.byte_counts();
                up + down
            });
        match idle {
            Some((&id, conn)) => {
                slots.released.insert(id);
                slots.incoming = slots.incoming.saturating_sub(1);
                tracing::info!(
                    "closing the connection from {} (it replicates nothing) to make room for a new one",
                    conn.address
                );
                conn.protocol
                    .destroy("closed to make room: it replicated nothing");
                true
            }
            None => false,
        }
    }

    fn log_refusal(&self, address: SocketAddr, why: &str) {
        let mut last = lock(&self.inner.last_refusal_log);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!("refusing the connection from {address}: {why}");
        }
    }

    fn outbound_slot(&self, id: u64, address: &str) -> Result<Slot, DialError> {
        let max = self.inner.limits.max_outbound;
        let mut slots = lock(&self.inner.slots);
        if slots.outbound >= max {
            return Err(DialError::TooManyPeers {
                address: address.to_string(),
                max,
            });
        }
        slots.outbound += 1;
        Ok(Slot {
            network: Arc::downgrade(&self.inner),
            ip: None,
            id,
        })
    }

    /// Dials `address` over TCP, found as `origin` says, and returns once the handshake
    /// is done; replication goes on in the background.
    pub async fn dial(
        &self,
        address: &str,
        origin: Origin,
        timeout: Duration,
    ) -> Result<(PeerSnapshot, Protocol), DialError> {
        self.dial_with(address, origin, None, timeout).await
    }

    /// [`Self::dial`], and with a `punch` (a hole punch through the DHT node that named
    /// the peer) also over uTP once the punch has opened the way, at the same time: the
    /// first transport to connect is kept, the other dropped, as @hyperswarm/network
    /// dials.
    pub async fn dial_with(
        &self,
        address: &str,
        origin: Origin,
        punch: Option<Punch>,
        timeout: Duration,
    ) -> Result<(PeerSnapshot, Protocol), DialError> {
        let target = resolve(address).await?;
        let id = self.next_id();
        let slot = self.outbound_slot(id, address)?;
        let failed = |reason: String| DialError::Failed {
            address: address.to_string(),
            reason,
        };
        let connect = async {
            let link = |transport| Link {
                address: target,
                origin,
                transport,
            };
            let handshake = match self.connect(target, punch).await.map_err(failed)? {
                Connected::Tcp(stream) => {
                    self.handshake(stream, link(Transport::Tcp), slot, id).await
                }
                Connected::Utp(stream) => {
                    self.handshake(stream, link(Transport::Holepunched), slot, id)
                        .await
                }
            };
            handshake.map_err(|e| match e {
                HandshakeError::SelfConnection => DialError::SelfConnection {
                    address: address.to_string(),
                },
                HandshakeError::Protocol(e) => failed(e.to_string()),
            })
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| failed(format!("no answer within {timeout:?}")))?
    }

    /// A connection to `target`: TCP, raced against uTP after `punch` when there is one;
    /// the first to connect. Fails with every transport's reason.
    async fn connect(&self, target: SocketAddr, punch: Option<Punch>) -> Result<Connected, String> {
        let tcp = async move {
            let stream = TcpStream::connect(target)
                .await
                .map_err(|e| format!("tcp: {e}"))?;
            let _ = stream.set_nodelay(true);
            Ok(Connected::Tcp(stream))
        };
        let mut attempts: FuturesUnordered<BoxFuture<'static, Result<Connected, String>>> =
            FuturesUnordered::new();
        attempts.push(Box::pin(tcp));
        if let (Some(punch), Some(utp), SocketAddr::V4(v4)) =
            (punch, self.inner.utp.clone(), target)
        {
            attempts.push(Box::pin(async move {
                punch.await.map_err(|e| format!("hole punch: {e}"))?;
                let stream = utp.connect(v4).await.map_err(|e| format!("utp: {e}"))?;
                Ok(Connected::Utp(stream))
            }));
        }
        let mut reasons = Vec::new();
        while let Some(attempt) = attempts.next().await {
            match attempt {
                // The others are dropped, which ends them.
                Ok(connected) => return Ok(connected),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(reasons.join("; "))
    }

    async fn handshake<S>(
        &self,
        stream: S,
        link: Link,
        slot: Slot,
        id: u64,
    ) -> Result<(PeerSnapshot, Protocol), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Link {
            address,
            origin,
            transport,
        } = link;
        let initiator = origin != Origin::Incoming;
        let options = ProtocolOptions {
            initiator,
            keypair: Some(self.inner.keypair.clone()),
            live: true,
            frame_budget: Some(self.inner.frames.clone()),
            ..ProtocolOptions::default()
        };
        let connect = Protocol::connect(stream, options);
        let (protocol, events) = if initiator {
            connect.await?
        } else {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    hypercore_protocol::Error::Handshake(format!(
                        "no handshake within {HANDSHAKE_TIMEOUT:?}"
                    ))
                })??
        };
        // Authenticated: no longer evicted as a handshake.
        lock(&self.inner.slots).handshaking.remove(&id);
        if protocol.remote_key() == self.inner.keypair.public {
            protocol.destroy("connected to ourselves");
            return Err(HandshakeError::SelfConnection);
        }
        let conn = Conn {
            address,
            initiator,
            origin,
            transport,
            protocol: protocol.clone(),
            since: Instant::now(),
        };
        let snapshot = conn.snapshot(id);
        {
            let mut conns = lock(&self.inner.conns);
            match self.duplicate_of(&conns, &conn) {
                Some(Duplicate::ThisOne(kept)) => {
                    drop(conns);
                    protocol.destroy("a duplicate of another connection to this peer");
                    return Ok(kept);
                }
                Some(Duplicate::Other(closed)) => closed.destroy("a duplicate connection"),
                None => {}
            }
            conns.insert(id, conn);
        }
        tracing::info!(
            "peer {} joined ({}, {})",
            short(&snapshot.remote_key),
            address,
            if initiator { "dialed" } else { "incoming" }
        );
        let _ = self.inner.events.send(PeerEvent::Joined(snapshot.clone()));

        let network = self.clone();
        let replicating = protocol.clone();
        self.inner
            .tasks
            .spawn_with_stop("replicating with a peer", |stop| async move {
                // The connection's slot is free again when this task ends.
                let _slot = slot;
                let replicate = network
                    .inner
                    .store
                    .replicate(replicating.clone(), events, true);
                tokio::pin!(replicate);
                let result = tokio::select! {
                    result = &mut replicate => result,
                    _ = stop.cancelled() => {
                        // Dropping `replicate` would leave the connection open.
                        replicating.destroy("the daemon is shutting down");
                        replicate.await
                    }
                };
                let reason = match (result, replicating.closed().await) {
                    (Err(e), _) => e.to_string(),
                    (Ok(()), Outcome::Failed(e)) => e.to_string(),
                    (Ok(()), Outcome::Finished) => String::new(),
                };
                let conn = lock(&network.inner.conns).remove(&id);
                if let Some(conn) = conn {
                    let snapshot = conn.snapshot(id);
                    if reason.is_empty() {
                        tracing::info!("peer {} left", short(&snapshot.remote_key));
                    } else {
                        tracing::info!("peer {} left: {reason}", short(&snapshot.remote_key));
                    }
                    let _ = network.inner.events.send(PeerEvent::Left(snapshot, reason));
                }
            });
        Ok((snapshot, protocol))
    }

    /// Whether `new` duplicates an open connection to the same peer (by its Noise key),
    /// and which of the two goes: two daemons that find each other both ways dial each
    /// other, and both keep the TCP one if the other is uTP, else the connection the
    /// side with the smaller key dialed, as hyperswarm's `deduplicate` decides (each end
    /// alone, the same way). Two connections dialed by the same side are both kept (a
    /// redial while the old one winds down).
    fn duplicate_of(&self, conns: &HashMap<u64, Conn>, new: &Conn) -> Option<Duplicate> {
        let ours = self.inner.keypair.public;
        let remote = new.protocol.remote_key();
        let dialer = |conn: &Conn| if conn.initiator { ours } else { remote };
        let (id, old) = conns
            .iter()
            .find(|(_, c)| c.protocol.remote_key() == remote && dialer(c) != dialer(new))?;
        // Over different transports TCP survives, else the smaller key's dial: the same
        // answer on both ends, which see the same transport and keys.
        let tcp = |conn: &Conn| conn.transport == Transport::Tcp;
        let keep_new = match tcp(new) == tcp(old) {
            true => dialer(new).0 < dialer(old).0,
            false => tcp(new),
        };
        Some(match keep_new {
            true => Duplicate::Other(old.protocol.clone()),
            false => Duplicate::ThisOne((old.snapshot(*id), old.protocol.clone())),
        })
    }

    /// Keeps `address` connected: redials whenever the connection (`first`, if already
    /// made) ends, with exponential backoff.
    pub fn remember(&self, address: String, first: Option<Protocol>) {
        let network = self.clone();
        let key = address.clone();
        let redial = self.inner.tasks.child();
        redial.spawn("redialing a remembered peer", async move {
            let mut current = first;
            let mut backoff = BACKOFF_MIN;
            loop {
                if let Some(protocol) = current.take() {
                    let since = Instant::now();
                    protocol.closed().await;
                    if since.elapsed() >= STABLE {
                        backoff = BACKOFF_MIN;
                    }
                    tokio::time::sleep(backoff).await;
                }
                match network.dial(&address, Origin::Manual, DIAL_TIMEOUT).await {
                    Ok((_, protocol)) => current = Some(protocol),
                    Err(DialError::SelfConnection { .. }) => {
                        tracing::warn!("not redialing {address}: it is this daemon");
                        return;
                    }
                    Err(e) => {
                        tracing::info!("redial failed, next try in {backoff:?}: {e}");
                        tokio::time::sleep(backoff).await;
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
        if let Some(old) = lock(&self.inner.redialers).insert(key, redial) {
            old.cancel();
        }
    }

    /// Stops redialing `address`; true if it was remembered.
    pub fn forget(&self, address: &str) -> bool {
        match lock(&self.inner.redialers).remove(address) {
            Some(redial) => {
                redial.cancel();
                true
            }
            None => false,
        }
    }

    /// Closes connections whose address (as given or resolved) or remote key matches
    /// `peer`; returns how many.
    pub async fn disconnect(&self, peer: &str) -> usize {
        let resolved = resolve(peer).await.ok();
        let key: Option<PeerKey> = peer.parse().ok();
        let conns = lock(&self.inner.conns);
        let mut closed = 0;
        for conn in conns.values() {
            let matches = Some(conn.address) == resolved
                || Some(conn.protocol.remote_key()) == key
                || conn.address.to_string() == peer;
            if matches {
                conn.protocol.destroy("disconnected by request");
                closed += 1;
            }
        }
        closed
    }
}

/// Which of two connections to one peer goes.
enum Duplicate {
    /// The new one: the open one, kept, instead.
    ThisOne((PeerSnapshot, Protocol)),
    /// The open one (to be closed).
    Other(Protocol),
}

/// Where a connection goes and how it came about.
struct Link {
    address: SocketAddr,
    origin: Origin,
    transport: Transport,
}

/// A connected stream, before the handshake.
enum Connected {
    Tcp(TcpStream),
    Utp(UtpStream),
}

/// What opens the way for uTP to a peer: a hole punch, failing with why.
pub type Punch = BoxFuture<'static, Result<(), String>>;

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("connected to ourselves")]
    SelfConnection,
    #[error(transparent)]
    Protocol(#[from] hypercore_protocol::Error),
}

/// Parses `host:port`, resolving names.
async fn resolve(address: &str) -> Result<SocketAddr, DialError> {
    let bad = |reason: String| DialError::BadAddress {
        address: address.to_string(),
        reason,
    };
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return check_port(addr).map_err(bad);
    }
    if !address.contains(':') {
        return Err(bad("expected HOST:PORT".into()));
    }
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| bad(e.to_string()))?;
    match addrs.next() {
        Some(addr) => check_port(addr).map_err(bad),
        None => Err(bad("the name resolves to no address".into())),
    }
}

fn check_port(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() == 0 {
        return Err("port 0 cannot be dialed".into());
    }
    Ok(addr)
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn display_opt(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

/// The first 8 hex characters of a key, for log lines.
pub fn short(key: &PeerKey) -> String {
    key.to_hex()[..8].to_string()
}
