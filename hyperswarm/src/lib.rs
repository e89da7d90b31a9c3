//! Hyperswarm 2, the Dat2 generation's discovery layer, wire-compatible with the JS
//! packages (dht-rpc 4.9, @hyperswarm/dht 4.0): the compact address encodings, the
//! dht-rpc message and its `_holepunch` value, the `peers` command's values and the
//! roundtrip tokens, and the mDNS packets of local discovery. Encoders write what JS
//! writes, byte for byte; decoders take what JS takes and refuse the rest with an error
//! naming what is wrong. No I/O here: the sockets and timers that drive these come next.

pub mod compact;
pub mod mdns;
pub mod message;
pub mod peers;
pub mod token;

pub use compact::{CompactError, Id, LocalPeer, NodeInfo};
pub use message::{DecodeError, Holepunch, Message, MessageType};
pub use peers::{PeersInput, PeersOutput};
