//! hypercore-protocol 8: replication streams between hypercore peers.
//!
//! A [`Protocol`] runs over any reliable byte stream: a Noise XX handshake ([`noise`]),
//! then an XSalsa20-encrypted stream ([`cipher`]) of varint-framed protobuf messages
//! ([`frame`], [`message`]) multiplexed into one [`Channel`] per feed, opened by discovery
//! key and guarded by a capability. What peers *do* with a channel (want, have, request,
//! data) is the replication crate's job.

pub mod cipher;
mod connection;
mod error;
pub mod extension;
pub mod frame;
pub mod message;
pub mod noise;

pub use connection::{
    Authenticate, Channel, ChannelEvent, ChannelReceiver, ChannelSender, Event, Events,
    FrameBudget, Outcome, Protocol, ProtocolOptions, StreamExtension, DEFAULT_TIMEOUT,
    FREE_FRAME_BYTES, MAX_CHANNELS,
};
pub use error::Error;
pub use noise::{NoiseKeyPair, PeerKey};
