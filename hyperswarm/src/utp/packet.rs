//! uTP packets (BEP 29, version 1) as libutp writes and reads them: a 20-byte big-endian
//! header, then a chain of extensions (libutp sends only the selective ack, type 1),
//! then the payload.

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The extension type of a selective ack.
const SELECTIVE_ACK: u8 = 1;

/// What a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Payload.
    Data,
    /// The sender's last packet: it will send no more data.
    Fin,
    /// An acknowledgement without payload (takes no sequence number).
    State,
    /// Ends the connection at once.
    Reset,
    /// Opens a connection.
    Syn,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<PacketType> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }

    fn nibble(self) -> u8 {
        match self {
            PacketType::Data => 0,
            PacketType::Fin => 1,
            PacketType::State => 2,
            PacketType::Reset => 3,
            PacketType::Syn => 4,
        }
    }
}

/// Why a datagram is not a well-formed uTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the header.
    #[error("a uTP packet needs {HEADER_LEN} bytes, got {0}")]
    Short(usize),
    /// Not version 1 or not a known type.
    #[error("not a uTP version 1 packet (first byte {0:#04x})")]
    Header(u8),
    /// An extension runs past the end of the datagram.
    #[error("a uTP extension header runs past the end of the {0}-byte datagram")]
    Extension(usize),
}

/// Whether libutp claims `datagram` (spec §2.1): such datagrams are uTP's, every other
/// one belongs to the DHT on the same socket.
pub fn is_utp(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0x0f == 1
        && datagram[0] >> 4 < 5
        && datagram[1] < 3
}

/// A decoded packet, borrowing its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Its type.
    pub kind: PacketType,
    /// The connection id (a SYN carries the sender's receive id, everything else the
    /// receiver's receive id).
    pub conn_id: u16,
    /// The sender's clock when sending, in microseconds (wrapping).
    pub timestamp: u32,
    /// The sender's last measured one-way delay of our packets, in microseconds.
    pub timestamp_diff: u32,
    /// Bytes the sender can still receive.
    pub window: u32,
    /// Its sequence number (a STATE carries the next one the sender will use).
    pub seq: u16,
    /// The last sequence number the sender received in order.
    pub ack: u16,
    /// The selective ack bitmask, if any: bit `i` (byte `i / 8`, bit `i % 8`) says
    /// whether `ack + 2 + i` was received.
    pub selective_ack: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Decodes `datagram`; never panics, whatever the bytes.
    pub fn decode(datagram: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        if datagram.len() < HEADER_LEN {
            return Err(PacketError::Short(datagram.len()));
        }
        let first = datagram[0];
        let kind = PacketType::from_nibble(first >> 4)
            .filter(|_| first & 0x0f == 1)
            .ok_or(PacketError::Header(first))?;
        let u16_at = |i: usize| u16::from_be_bytes([datagram[i], datagram[i + 1]]);
        let u32_at = |i: usize| {
            u32::from_be_bytes([
                datagram[i],
                datagram[i + 1],
                datagram[i + 2],
                datagram[i + 3],
            ])
        };
        let mut extension = datagram[1];
        let mut at = HEADER_LEN;
        let mut selective_ack = None;
        // Each extension: next type, length, data; the chain ends at type 0.
        while extension != 0 {
            let (Some(&next), Some(&len)) = (datagram.get(at), datagram.get(at + 1)) else {
                return Err(PacketError::Extension(datagram.len()));
            };
            let data = datagram
                .get(at + 2..at + 2 + usize::from(len))
                .ok_or(PacketError::Extension(datagram.len()))?;
            if extension == SELECTIVE_ACK {
                selective_ack = Some(data);
            }
            extension = next;
            at += 2 + usize::from(len);
        }
        Ok(Packet {
            kind,
            conn_id: u16_at(2),
            timestamp: u32_at(4),
            timestamp_diff: u32_at(8),
            window: u32_at(12),
            seq: u16_at(16),
            ack: u16_at(18),
            selective_ack,
            payload: &datagram[at..],
        })
    }

    /// The datagram of this packet.
    pub fn encode(&self) -> Vec<u8> {
        let sack_len = self.selective_ack.map_or(0, |s| 2 + s.len());
        let mut out = Vec::with_capacity(HEADER_LEN + sack_len + self.payload.len());
        out.push(self.kind.nibble() << 4 | 1);
        out.push(if self.selective_ack.is_some() {
            SELECTIVE_ACK
        } else {
            0
        });
        out.extend_from_slice(&self.conn_id.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.timestamp_diff.to_be_bytes());
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        if let Some(mask) = self.selective_ack {
            out.push(0);
            // Masks are a few bytes (we send 4); a longer one would not fit the length byte.
            out.push(u8::try_from(mask.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&mask[..mask.len().min(255)]);
        }
        out.extend_from_slice(self.payload);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_state_with_a_selective_ack_round_trips_as_libutp_lays_it_out() {
        let mask = [0b101, 0, 0, 0x80];
        let packet = Packet {
            kind: PacketType::State,
            conn_id: 0x1234,
            timestamp: 0x0102_0304,
            timestamp_diff: 5,
            window: 1 << 20,
            seq: 7,
            ack: 0xfffe,
            selective_ack: Some(&mask),
            payload: &[],
        };
        let bytes = packet.encode();
        assert_eq!(
            bytes,
            [
                0x21, 1, 0x12, 0x34, 1, 2, 3, 4, 0, 0, 0, 5, 0, 0x10, 0, 0, 0, 7, 0xff, 0xfe, 0, 4,
                0b101, 0, 0, 0x80
            ]
        );
        assert!(is_utp(&bytes));
        assert_eq!(Packet::decode(&bytes).unwrap(), packet);
    }

    #[test]
    fn dht_messages_are_never_claimed() {
        // dht-rpc messages start with a protobuf tag: 0x08 (type) or 0x58 (version).
        let mut message = vec![0x58; 40];
        assert!(!is_utp(&message));
        message[0] = 0x08;
        assert!(!is_utp(&message));
        // Too short, version 2, type 5, extension 3: all the DHT's.
        assert!(!is_utp(&[0x41; 19]));
        assert!(!is_utp(&[0x42; 20]));
        assert!(!is_utp(&[0x51; 20]));
        let mut ext3 = [0x41; 20];
        ext3[1] = 3;
        assert!(!is_utp(&ext3));
    }

    #[test]
    fn truncated_extensions_are_refused() {
        let mut bytes = Packet {
            kind: PacketType::Data,
            conn_id: 1,
            timestamp: 0,
            timestamp_diff: 0,
            window: 0,
            seq: 1,
            ack: 0,
            selective_ack: Some(&[0xff; 8]),
            payload: &[],
        }
        .encode();
        bytes.truncate(bytes.len() - 1);
        assert_eq!(
            Packet::decode(&bytes),
            Err(PacketError::Extension(bytes.len()))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = Packet::decode(&bytes) {
                prop_assert!(packet.payload.len() <= bytes.len() - HEADER_LEN);
            }
        }
    }
}
