//! Decoders under arbitrary bytes: they never panic, and what they accept encodes back
//! to a message that decodes the same.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use hyperswarm::compact;
use hyperswarm::{Holepunch, Message, MessageType, PeersInput, PeersOutput};
use proptest::prelude::*;
use prost::Message as _;

fn field() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80).prop_map(Bytes::from))
}

fn message() -> impl Strategy<Value = Message> {
    (
        (proptest::option::of(any::<u64>()), 1u8..4, any::<u64>()),
        (field(), field(), field(), field(), field(), field()),
        (
            proptest::option::of(".{0,20}"),
            proptest::option::of(".{0,20}"),
        ),
    )
        .prop_map(
            |((version, kind, rid), (to, id, target, closer, token, value), (command, error))| {
                Message {
                    version,
                    kind: match kind {
                        1 => MessageType::Query,
                        2 => MessageType::Update,
                        _ => MessageType::Response,
                    },
                    rid,
                    to,
                    id,
                    target,
                    closer_nodes: closer,
                    roundtrip_token: token,
                    command,
                    error,
                    value,
                }
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(message) = Message::decode(&bytes) {
            prop_assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
        let _ = Holepunch::decode(&bytes[..]);
        let _ = PeersInput::decode(&bytes[..]);
        let _ = PeersOutput::decode(&bytes[..]);
        let _ = compact::decode_peer(&bytes);
        let _ = compact::decode_peers(&bytes);
        let _ = compact::decode_nodes(&bytes);
        let _ = compact::decode_local_peers(&bytes);
        let _ = hyperswarm::mdns::decode(&bytes);
    }

    #[test]
    fn messages_survive_a_round_trip(message in message()) {
        prop_assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }
}

#[test]
fn a_datagram_without_type_or_rid_is_refused() {
    use hyperswarm::DecodeError;
    // version 1, rid 5: no type.
    assert_eq!(
        Message::decode(&[0x58, 1, 0x10, 5]),
        Err(DecodeError::MissingType)
    );
    // type query: no rid.
    assert_eq!(Message::decode(&[0x08, 1]), Err(DecodeError::MissingRid));
    assert_eq!(
        Message::decode(&[0x08, 9, 0x10, 0]),
        Err(DecodeError::UnknownType(9))
    );
    // Unknown fields are skipped (field 15, varint and bytes).
    let skipped = Message::decode(&[0x78, 1, 0x7a, 1, 0xff, 0x08, 3, 0x10, 0]).unwrap();
    assert_eq!((skipped.kind, skipped.rid), (MessageType::Response, 0));
}
