//! Hyperswarm 2, the Dat2 generation's discovery layer, wire-compatible with the JS
//! packages (dht-rpc 4.9, @hyperswarm/dht 4.0). The wire formats: compact addresses, the
//! dht-rpc message and its `_holepunch` value, the `peers` command's values, roundtrip
//! tokens and the mDNS packets of local discovery; encoders write what JS writes, byte
//! for byte, decoders take what JS takes and refuse the rest with an error naming what
//! is wrong. A DHT node's answers without I/O ([`node`]), the announcements it stores
//! ([`store`]), and the same node on a UDP socket ([`server`]): a bootstrap node for
//! JS and Rust peers. The client side of the DHT ([`dht`]), on the UDP socket it shares
//! with uTP connections ([`utp`]) as JS peers share it, and local discovery over mDNS
//! ([`local`]). Hole punching and the connection layer come next.

pub mod compact;
pub mod dht;
pub mod limit;
pub mod local;
pub mod mdns;
pub mod message;
pub mod node;
pub mod peers;
pub mod server;
pub mod store;
pub mod table;
pub mod token;
pub mod utp;

pub use compact::{CompactError, Id, LocalPeer, NodeInfo};
pub use dht::{Dht, DhtError, FoundPeer, Mode, Options};
pub use local::{LocalDiscoveryError, Mdns, MdnsPeer};
pub use message::{DecodeError, Holepunch, Message, MessageType};
pub use peers::{PeersInput, PeersOutput};
pub use server::DhtServer;
pub use utp::{Endpoint, UtpError, UtpStream};
