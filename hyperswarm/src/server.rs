//! A [`Node`] on a UDP socket: answers every datagram as the node decides, mints tokens
//! with a secret rotated every 5 minutes and turns the stored announcements' generation
//! every 8, as JS dht-rpc and @hyperswarm/dht do, within a per-address budget
//! ([`RateLimit`]); runs until its shutdown future ends.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::RngCore;
use tokio::net::UdpSocket;

use crate::limit::RateLimit;
use crate::node::{Node, NodeEvent};
use crate::store::GENERATION;
use crate::Id;

/// How often the token secret changes.
pub const SECRET_ROTATION: Duration = Duration::from_secs(5 * 60);
/// The largest datagram read (JS's largest regular message is under 2 KB).
const MAX_DATAGRAM: usize = 64 << 10;

/// A DHT node serving others: a bootstrap node, or a storage node of a swarm.
#[derive(Debug)]
pub struct DhtServer {
    socket: UdpSocket,
    node: Node,
    addr: SocketAddrV4,
}

impl DhtServer {
    /// Binds `addr` (IPv4: the Dat2 DHT is IPv4 only; port 0 for any) as a node with a
    /// random id when `persistent` (others add it to their routing tables), none
    /// otherwise.
    pub async fn bind(addr: SocketAddrV4, persistent: bool) -> io::Result<DhtServer> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = match socket.local_addr()? {
            SocketAddr::V4(addr) => addr,
            SocketAddr::V6(addr) => {
                return Err(io::Error::other(format!(
                    "bound {addr}, not an IPv4 address"
                )))
            }
        };
        let mut rng = rand::thread_rng();
        let id = persistent.then(|| {
            let mut id = [0; 32];
            rng.fill_bytes(&mut id);
            Id(id)
        });
        let node = Node::new(id, random_secret());
        Ok(DhtServer { socket, node, addr })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Its id, if persistent.
    pub fn id(&self) -> Option<Id> {
        self.node.id()
    }

    /// Serves until `shutdown` completes. A datagram that cannot be sent is logged and
    /// dropped (the peer may be gone); only a failing receive ends it with an error.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        tokio::pin!(shutdown);
        let mut rotate = tokio::time::interval_at(
            tokio::time::Instant::now() + SECRET_ROTATION,
            SECRET_ROTATION,
        );
        let mut turn =
            tokio::time::interval_at(tokio::time::Instant::now() + GENERATION, GENERATION);
        let mut buf = vec![0; MAX_DATAGRAM];
        let mut limit = RateLimit::new(std::time::Instant::now());
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = rotate.tick() => self.node.rotate_secret(random_secret()),
                _ = turn.tick() => self.node.turn_records(),
                received = self.socket.recv_from(&mut buf) => {
                    let (len, from) = match received {
                        Ok(received) => received,
                        // ICMP unreachables of earlier sends surface here on Linux.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                        Err(e) => return Err(e),
                    };
                    let SocketAddr::V4(from) = from else { continue };
                    if !limit.allow(*from.ip(), std::time::Instant::now()) {
                        continue;
                    }
                    let (answers, event) = self.node.receive(&buf[..len], from);
                    if let Some(event) = event {
                        log(&event);
                    }
                    for answer in answers {
                        if let Err(e) = self.socket.send_to(&answer.datagram, answer.to).await {
                            tracing::debug!("dht: cannot answer {}: {e}", answer.to);
                        }
                    }
                }
            }
        }
    }
}

fn random_secret() -> [u8; 32] {
    let mut secret = [0; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

fn log(event: &NodeEvent) {
    let hex = |b: &[u8]| {
        b.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match event {
        NodeEvent::Announce { topic, peer } => {
            tracing::debug!("dht: {peer} announced {}…", hex(topic))
        }
        NodeEvent::Unannounce { topic, peer } => {
            tracing::debug!("dht: {peer} unannounced {}…", hex(topic))
        }
        NodeEvent::Lookup { topic, from } => {
            tracing::debug!("dht: {from} looked up {}…", hex(topic))
        }
        NodeEvent::Holepunch { from, to } => tracing::debug!("dht: hole punch {from} -> {to}"),
    }
}
