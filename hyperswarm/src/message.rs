//! The dht-rpc 4 message: one per UDP datagram, protobuf (proto2) with `type` and `rid`
//! required. Encoded with its fields in the order JS writes them (version first, `to`
//! after `rid`), so the bytes are JS's; decoded in any order, unknown fields skipped.

use bytes::Bytes;
use prost::Message as _;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// A request answered with a response.
    Query = 1,
    /// A request that writes (it carries the token the receiver gave the sender).
    Update = 2,
    /// The answer to a query or update, with its `rid`.
    Response = 3,
}

/// A dht-rpc message. Fields hold what was on the wire: a field JS omitted is `None`,
/// one it wrote empty is `Some` of nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Protocol version; JS sends 1 and ignores the id of a message without it.
    pub version: Option<u64>,
    /// Query, update or response.
    pub kind: MessageType,
    /// Request id, echoed by the response.
    pub rid: u64,
    /// The receiver's address as the sender sees it (a compact peer).
    pub to: Option<Bytes>,
    /// The sender's node id (32 bytes); absent from ephemeral nodes.
    pub id: Option<Bytes>,
    /// What a query is about (32 bytes).
    pub target: Option<Bytes>,
    /// Compact nodes closer to the target.
    pub closer_nodes: Option<Bytes>,
    /// The token an update must echo.
    pub roundtrip_token: Option<Bytes>,
    /// The command.
    pub command: Option<String>,
    /// A response's error.
    pub error: Option<String>,
    /// The command's payload.
    pub value: Option<Bytes>,
}

/// Why a datagram is not a dht-rpc message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not protobuf of the message's shape.
    #[error("not a dht-rpc message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// No `type` field.
    #[error("a dht-rpc message without a type")]
    MissingType,
    /// No `rid` field.
    #[error("a dht-rpc message without a rid")]
    MissingRid,
    /// A `type` other than query, update, response.
    #[error("a dht-rpc message of unknown type {0}")]
    UnknownType(u64),
}

/// The message as prost reads it (strings as bytes: JS reads invalid UTF-8 lossily).
#[derive(Clone, PartialEq, prost::Message)]
struct Wire {
    #[prost(uint64, optional, tag = "11")]
    version: Option<u64>,
    #[prost(uint64, optional, tag = "1")]
    kind: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    rid: Option<u64>,
    #[prost(bytes = "bytes", optional, tag = "10")]
    to: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    id: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "4")]
    target: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "5")]
    closer_nodes: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "6")]
    roundtrip_token: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "7")]
    command: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "8")]
    error: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "9")]
    value: Option<Bytes>,
}

impl Message {
    /// A request (`kind` query or update) of `command`, version 1, with nothing else
    /// set: rid 0 until it is sent, no address, id, target or value.
    pub fn request(kind: MessageType, command: &str) -> Message {
        Message {
            version: Some(1),
            kind,
            rid: 0,
            to: None,
            id: None,
            target: None,
            closer_nodes: None,
            roundtrip_token: None,
            command: Some(command.to_string()),
            error: None,
            value: None,
        }
    }

    /// The datagram JS would send for this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let varint = |out: &mut Vec<u8>, key: u8, value: u64| {
            out.push(key);
            out.extend_from_slice(&varint::encode(value));
        };
        let bytes = |out: &mut Vec<u8>, key: u8, value: Option<&[u8]>| {
            if let Some(value) = value {
                out.push(key);
                out.extend_from_slice(&varint::encode(value.len() as u64));
                out.extend_from_slice(value);
            }
        };
        if let Some(version) = self.version {
            varint(&mut out, 0x58, version);
        }
        varint(&mut out, 0x08, self.kind as u64);
        varint(&mut out, 0x10, self.rid);
        bytes(&mut out, 0x52, self.to.as_deref());
        bytes(&mut out, 0x1a, self.id.as_deref());
        bytes(&mut out, 0x22, self.target.as_deref());
        bytes(&mut out, 0x2a, self.closer_nodes.as_deref());
        bytes(&mut out, 0x32, self.roundtrip_token.as_deref());
        bytes(&mut out, 0x3a, self.command.as_deref().map(str::as_bytes));
        bytes(&mut out, 0x42, self.error.as_deref().map(str::as_bytes));
        bytes(&mut out, 0x4a, self.value.as_deref());
        out
    }

    /// The message in `datagram`.
    pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
        let wire = Wire::decode(datagram)?;
        let kind = match wire.kind.ok_or(DecodeError::MissingType)? {
            1 => MessageType::Query,
            2 => MessageType::Update,
            3 => MessageType::Response,
            other => return Err(DecodeError::UnknownType(other)),
        };
        let text = |b: Option<Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(Message {
            version: wire.version,
            kind,
            rid: wire.rid.ok_or(DecodeError::MissingRid)?,
            to: wire.to,
            id: wire.id,
            target: wire.target,
            closer_nodes: wire.closer_nodes,
            roundtrip_token: wire.roundtrip_token,
            command: text(wire.command),
            error: text(wire.error),
            value: wire.value,
        })
    }
}

/// The value of a `_holepunch` query: `to` asks the receiver to relay to that peer,
/// `from` is set by the relay to the original sender (both compact peers).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Holepunch {
    /// The peer that asked for the punch (set by the relay).
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub from: Option<Bytes>,
    /// The peer to relay to.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub to: Option<Bytes>,
}
