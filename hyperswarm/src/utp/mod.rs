//! uTP (BEP 29) as utp-native 2.5 / libutp speaks it, on the UDP socket the DHT uses:
//! JS hyperswarm 2 peers dial every peer over TCP and uTP at once, and a hole punch ends
//! in a uTP connection. [`packet`] is the wire format and libutp's rule for which
//! datagrams are uTP's; [`conn`] one connection's state machine without I/O; [`endpoint`]
//! the shared socket on tokio, with [`UtpStream`] as an `AsyncRead + AsyncWrite` stream.
//!
//! To share the port with the DHT, bind an [`Endpoint`] and run the DHT on it
//! ([`crate::Dht::on`]), or let [`crate::Dht::bind`] bind one and reach it through
//! [`crate::Dht::endpoint`].

pub mod conn;
pub mod endpoint;
pub mod packet;

pub use conn::{Connection, ConnectionError};
pub use endpoint::{Datagram, Endpoint, UtpError, UtpStream};
pub use packet::{is_utp, Packet, PacketError, PacketType};
