//! Peer connections: the TCP listener, dialing, the table of live connections, and
//! redialing remembered addresses with backoff. Every connection replicates every loaded
//! core of the corestore.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corestore::Corestore;
use hypercore_protocol::{NoiseKeyPair, Outcome, PeerKey, Protocol, ProtocolOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// How long a dial plus handshake may take by default.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Redial backoff bounds; a connection that lasted `STABLE` resets the backoff.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const STABLE: Duration = Duration::from_secs(30);

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
    /// Bytes sent and received.
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
    /// `max_peers` connections are open already.
    #[error("not dialing {address}: {max} peer connections are open (max_peers)")]
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
            bytes_up: up,
            bytes_down: down,
            connected: self.since.elapsed(),
        }
    }
}

struct Inner {
    store: Corestore,
    keypair: NoiseKeyPair,
    local_addr: Option<SocketAddr>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    events: broadcast::Sender<PeerEvent>,
    /// Redial loops of remembered addresses.
    redialers: Mutex<HashMap<String, JoinHandle<()>>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// One permit per connection, handshaking or open.
    slots: Arc<Semaphore>,
    max_peers: usize,
    /// When a refused incoming connection was last logged (floods log once a second).
    last_refusal_log: Mutex<Option<Instant>>,
}

/// The daemon's peer connections. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl Network {
    /// Starts listening on `listen` (unless empty), allowing `max_peers` connections.
    pub async fn start(
        store: Corestore,
        keypair: NoiseKeyPair,
        listen: &str,
        max_peers: usize,
    ) -> anyhow::Result<Network> {
        let listener = if listen.is_empty() {
            None
        } else {
            let listener = TcpListener::bind(listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen for peers on {listen}: {e} (set `listen` in the config or pass --listen)")
            })?;
            Some(listener)
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let network = Network {
            inner: Arc::new(Inner {
                store,
                keypair,
                local_addr,
                conns: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                events: broadcast::channel(1024).0,
                redialers: Mutex::new(HashMap::new()),
                listener: Mutex::new(None),
                slots: Arc::new(Semaphore::new(max_peers)),
                max_peers,
                last_refusal_log: Mutex::new(None),
            }),
        };
        if let Some(listener) = listener {
            tracing::info!("listening for peers on {}", display_opt(local_addr));
            let accept = tokio::spawn(network.clone().accept_loop(listener));
            *lock(&network.inner.listener) = Some(accept);
        }
        Ok(network)
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

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, address)) => {
                    let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
                        self.log_refusal(address);
                        drop(stream);
                        continue;
                    };
                    let network = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = network.handshake(stream, address, false, slot).await {
                            tracing::info!("incoming connection from {address} failed: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn log_refusal(&self, address: SocketAddr) {
        let mut last = lock(&self.inner.last_refusal_log);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(
                "refusing the connection from {address}: {} peer connections are open (max_peers)",
                self.inner.max_peers
            );
        }
    }

    /// Dials `address` and returns once the handshake is done; replication goes on in
    /// the background.
    pub async fn dial(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<(PeerSnapshot, Protocol), DialError> {
        let target = resolve(address).await?;
        let slot =
            self.inner
                .slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| DialError::TooManyPeers {
                    address: address.to_string(),
                    max: self.inner.max_peers,
                })?;
        let failed = |reason: String| DialError::Failed {
            address: address.to_string(),
            reason,
        };
        let connect = async {
            let stream = TcpStream::connect(target)
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.handshake(stream, target, true, slot)
                .await
                .map_err(|e| match e {
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

    async fn handshake(
        &self,
        stream: TcpStream,
        address: SocketAddr,
        initiator: bool,
        slot: OwnedSemaphorePermit,
    ) -> Result<(PeerSnapshot, Protocol), HandshakeError> {
        let _ = stream.set_nodelay(true);
        let options = ProtocolOptions {
            initiator,
            keypair: Some(self.inner.keypair.clone()),
            live: true,
            ..ProtocolOptions::default()
        };
        let connect = Protocol::connect(stream, options);
        let (protocol, events) = if initiator {
            connect.await?
        } else {
            tokio::time::timeout(DIAL_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    hypercore_protocol::Error::Handshake("no handshake within 10 s".into())
                })??
        };
        if protocol.remote_key() == self.inner.keypair.public {
            protocol.destroy("connected to ourselves");
            return Err(HandshakeError::SelfConnection);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            address,
            initiator,
            protocol: protocol.clone(),
            since: Instant::now(),
        };
        let snapshot = conn.snapshot(id);
        lock(&self.inner.conns).insert(id, conn);
        tracing::info!(
            "peer {} joined ({}, {})",
            short(&snapshot.remote_key),
            address,
            if initiator { "dialed" } else { "incoming" }
        );
        let _ = self.inner.events.send(PeerEvent::Joined(snapshot.clone()));

        let network = self.clone();
        let replicating = protocol.clone();
        tokio::spawn(async move {
            // The connection's slot is free again when this task ends.
            let _slot = slot;
            let result = network
                .inner
                .store
                .replicate(replicating.clone(), events, true)
                .await;
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

    /// Keeps `address` connected: redials whenever the connection (`first`, if already
    /// made) ends, with exponential backoff.
    pub fn remember(&self, address: String, first: Option<Protocol>) {
        let network = self.clone();
        let key = address.clone();
        let task = tokio::spawn(async move {
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
                match network.dial(&address, DIAL_TIMEOUT).await {
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
        if let Some(old) = lock(&self.inner.redialers).insert(key, task) {
            old.abort();
        }
    }

    /// Stops redialing `address`; true if it was remembered.
    pub fn forget(&self, address: &str) -> bool {
        match lock(&self.inner.redialers).remove(address) {
            Some(task) => {
                task.abort();
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

    /// Stops listening and redialing and closes every connection.
    pub fn shutdown(&self) {
        if let Some(task) = lock(&self.inner.listener).take() {
            task.abort();
        }
        for (_, task) in lock(&self.inner.redialers).drain() {
            task.abort();
        }
        for conn in lock(&self.inner.conns).values() {
            conn.protocol.destroy("the daemon is shutting down");
        }
    }
}

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
