//! The values of @hyperswarm/dht's `peers` command, as JS encodes them (prost writes
//! present optional fields in field order, which is JS's order here, zeros included).

use bytes::Bytes;

/// A `peers` request's value: lookup (query), announce (query, then update) or
/// unannounce (update).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeersInput {
    /// The port to store; 0 or absent: the sender's UDP source port.
    #[prost(uint32, optional, tag = "1")]
    pub port: Option<u32>,
    /// The announcer's or looker's LAN address (a compact peer).
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub local_address: Option<Bytes>,
    /// Remove the announcement instead of adding it.
    #[prost(bool, optional, tag = "3")]
    pub unannounce: Option<bool>,
}

/// A `peers` response's value.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeersOutput {
    /// Compact peers announced under the target.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub peers: Option<Bytes>,
    /// Local peers announced under the target from the looker's LAN.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub local_peers: Option<Bytes>,
}
