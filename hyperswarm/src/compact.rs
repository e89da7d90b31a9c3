//! Addresses as dht-rpc and @hyperswarm/dht write them: a compact peer is an IPv4
//! address's 4 bytes then its port, big-endian (6 bytes); a compact node is a 32-byte id
//! then a compact peer (38 bytes); a local peer is the last two bytes of a LAN address
//! then its port (4 bytes), the first two implied by the reader's own. Lists are plain
//! concatenations. As in JS, one bad entry rejects the whole list it came in.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Bytes of a compact peer.
pub const PEER_LEN: usize = 6;
/// Bytes of a compact node.
pub const NODE_LEN: usize = 32 + PEER_LEN;
/// Bytes of a local peer.
pub const LOCAL_PEER_LEN: usize = 4;

/// A 32-byte DHT node id, topic or target. Closeness is XOR distance, compared as a
/// big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The id in `bytes`, if they are 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Id> {
        bytes.try_into().ok().map(Id)
    }

    /// The XOR distance to `other` (compare two of them to tell which id is closer).
    pub fn distance(&self, other: &Id) -> [u8; 32] {
        std::array::from_fn(|i| self.0[i] ^ other.0[i])
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Why bytes are not the compact addresses they should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// A single compact peer of another length.
    #[error("a compact peer is 6 bytes, not {0}")]
    PeerLength(usize),
    /// A list whose length is not a multiple of its entries'.
    #[error("a list of {entry}-byte entries cannot be {len} bytes long")]
    ListLength {
        /// Bytes per entry.
        entry: usize,
        /// The list's length.
        len: usize,
    },
    /// Port 0, which no peer listens on.
    #[error("port 0 in compact peer {0}")]
    PortZero(Ipv4Addr),
    /// Host 0.0.0.0 in a `peers` list.
    #[error("host 0.0.0.0 in a peers list")]
    Unspecified,
}

/// The compact form of `addr`.
pub fn encode_peer(addr: SocketAddrV4) -> [u8; PEER_LEN] {
    let mut out = [0; PEER_LEN];
    out[..4].copy_from_slice(&addr.ip().octets());
    out[4..].copy_from_slice(&addr.port().to_be_bytes());
    out
}

/// The address in `bytes`, exactly one compact peer (port 0 refused, as dht-rpc does).
pub fn decode_peer(bytes: &[u8]) -> Result<SocketAddrV4, CompactError> {
    let bytes: &[u8; PEER_LEN] = bytes
        .try_into()
        .map_err(|_| CompactError::PeerLength(bytes.len()))?;
    peer(bytes)
}

fn peer(bytes: &[u8; PEER_LEN]) -> Result<SocketAddrV4, CompactError> {
    let ip = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
    match u16::from_be_bytes([bytes[4], bytes[5]]) {
        0 => Err(CompactError::PortZero(ip)),
        port => Ok(SocketAddrV4::new(ip, port)),
    }
}

/// A DHT node as `closerNodes` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub id: Id,
    /// Where it was reached.
    pub addr: SocketAddrV4,
}

/// `nodes` as a `closerNodes` value.
pub fn encode_nodes(nodes: &[NodeInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * NODE_LEN);
    for node in nodes {
        out.extend_from_slice(&node.id.0);
        out.extend_from_slice(&encode_peer(node.addr));
    }
    out
}

/// The nodes of a `closerNodes` value; a trailing partial entry is ignored, as dht-rpc
/// ignores it, and an entry with port 0 rejects the list.
pub fn decode_nodes(bytes: &[u8]) -> Result<Vec<NodeInfo>, CompactError> {
    bytes
        .chunks_exact(NODE_LEN)
        .map(|entry| {
            let (id, addr) = entry.split_at(32);
            Ok(NodeInfo {
                id: Id(id.try_into().expect("32 bytes")),
                addr: peer(addr.try_into().expect("6 bytes"))?,
            })
        })
        .collect()
}

/// `peers` as a `PeersOutput.peers` value.
pub fn encode_peers(peers: &[SocketAddrV4]) -> Vec<u8> {
    peers.iter().flat_map(|&p| encode_peer(p)).collect()
}

/// The addresses of a `PeersOutput.peers` value: as @hyperswarm/dht, a length that is
/// not a multiple of 6, a port 0 or a host 0.0.0.0 rejects the list.
pub fn decode_peers(bytes: &[u8]) -> Result<Vec<SocketAddrV4>, CompactError> {
    if !bytes.len().is_multiple_of(PEER_LEN) {
        return Err(CompactError::ListLength {
            entry: PEER_LEN,
            len: bytes.len(),
        });
    }
    bytes
        .chunks_exact(PEER_LEN)
        .map(|entry| {
            let addr = peer(entry.try_into().expect("6 bytes"))?;
            match addr.ip().is_unspecified() {
                true => Err(CompactError::Unspecified),
                false => Ok(addr),
            }
        })
        .collect()
}

/// A peer on the LAN as `PeersOutput.localPeers` gives it: the last two bytes of its
/// address and its port; the first two are the reader's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalPeer {
    /// The address's last two bytes.
    pub octets: [u8; 2],
    /// Its port.
    pub port: u16,
}

impl LocalPeer {
    /// The local peer of `addr`.
    pub fn of(addr: SocketAddrV4) -> LocalPeer {
        let [_, _, c, d] = addr.ip().octets();
        LocalPeer {
            octets: [c, d],
            port: addr.port(),
        }
    }

    /// Its full address, for a reader whose own address starts with `prefix`.
    pub fn address_with(&self, prefix: [u8; 2]) -> SocketAddrV4 {
        let [a, b] = prefix;
        let [c, d] = self.octets;
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), self.port)
    }

    /// Its 4 bytes.
    pub fn encode(&self) -> [u8; LOCAL_PEER_LEN] {
        let [c, d] = self.octets;
        let [p, q] = self.port.to_be_bytes();
        [c, d, p, q]
    }
}

/// The local peers of a `PeersOutput.localPeers` value (a length that is not a
/// multiple of 4, or a port 0, rejects the list).
pub fn decode_local_peers(bytes: &[u8]) -> Result<Vec<LocalPeer>, CompactError> {
    if !bytes.len().is_multiple_of(LOCAL_PEER_LEN) {
        return Err(CompactError::ListLength {
            entry: LOCAL_PEER_LEN,
            len: bytes.len(),
        });
    }
    bytes
        .chunks_exact(LOCAL_PEER_LEN)
        .map(|e| {
            let peer = LocalPeer {
                octets: [e[0], e[1]],
                port: u16::from_be_bytes([e[2], e[3]]),
            };
            match peer.port {
                0 => Err(CompactError::PortZero(*peer.address_with([0, 0]).ip())),
                _ => Ok(peer),
            }
        })
        .collect()
}
