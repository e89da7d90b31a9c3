//! The encoders against what JS dht-rpc 4.9.6 and @hyperswarm/dht 4.0.1 wrote
//! (`vectors/swarm.json`, from the spec's `vectors.js` run on the real packages): every
//! message and value encodes to JS's bytes and decodes back to its fields.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::Bytes;
use hyperswarm::compact::{self, LocalPeer, NodeInfo};
use hyperswarm::token::token;
use hyperswarm::{Holepunch, Id, Message, MessageType, PeersInput, PeersOutput};
use prost::Message as _;
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/swarm.json")).unwrap()
}

fn bytes(v: &Value) -> Option<Bytes> {
    v.as_str().map(|s| Bytes::from(hex::decode(s).unwrap()))
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[test]
fn dht_rpc_messages_are_byte_identical_to_js() {
    let vectors = vectors();
    let messages = vectors["dhtRpcMessages"].as_array().unwrap();
    assert_eq!(messages.len(), 15);
    for vector in messages {
        let (name, f) = (vector["name"].as_str().unwrap(), &vector["fields"]);
        let message = Message {
            version: f["version"].as_u64(),
            kind: match f["type"].as_u64().unwrap() {
                1 => MessageType::Query,
                2 => MessageType::Update,
                _ => MessageType::Response,
            },
            rid: f["rid"].as_u64().unwrap(),
            to: bytes(&f["to"]),
            id: bytes(&f["id"]),
            target: bytes(&f["target"]),
            closer_nodes: bytes(&f["closerNodes"]),
            roundtrip_token: bytes(&f["roundtripToken"]),
            command: text(&f["command"]),
            error: text(&f["error"]),
            value: bytes(&f["value"]),
        };
        let wire = hex::decode(vector["hex"].as_str().unwrap()).unwrap();
        assert_eq!(hex::encode(message.encode()), hex::encode(&wire), "{name}");
        assert_eq!(Message::decode(&wire).unwrap(), message, "{name}");
    }
}

#[test]
fn compact_addresses_and_values_inside_messages_are_js_s() {
    let vectors = vectors();
    let messages = vectors["dhtRpcMessages"].as_array().unwrap();
    let by_name = |start: &str| {
        let vector = messages
            .iter()
            .find(|m| m["name"].as_str().unwrap().starts_with(start))
            .unwrap();
        Message::decode(&hex::decode(vector["hex"].as_str().unwrap()).unwrap()).unwrap()
    };
    let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40001);
    let b = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 40002);

    let ping = by_name("ping response");
    assert_eq!(compact::decode_peer(ping.to.as_ref().unwrap()), Ok(a));
    assert_eq!(compact::decode_peer(ping.value.as_ref().unwrap()), Ok(a));

    let found = by_name("find_node response");
    let nodes = compact::decode_nodes(found.closer_nodes.as_ref().unwrap()).unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].id, Id([0x44; 32]));
    assert_eq!(
        nodes[0].addr,
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737)
    );
    assert_eq!(
        compact::encode_nodes(&nodes),
        &found.closer_nodes.unwrap()[..]
    );

    let relay = by_name("holepunch: R -> B relay");
    let punch = Holepunch::decode(relay.value.unwrap()).unwrap();
    assert_eq!(compact::decode_peer(punch.from.as_ref().unwrap()), Ok(a));
    assert_eq!(punch.to, None);
    let ask = by_name("holepunch: A -> referrer");
    let punch = Holepunch::decode(ask.value.clone().unwrap()).unwrap();
    assert_eq!(compact::decode_peer(punch.to.as_ref().unwrap()), Ok(b));
    assert_eq!(punch.encode_to_vec(), &ask.value.unwrap()[..]);

    let answer = by_name("peers response with one remote peer");
    let output = PeersOutput::decode(answer.value.unwrap()).unwrap();
    let peers = compact::decode_peers(output.peers.as_ref().unwrap()).unwrap();
    assert_eq!(
        peers,
        [SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 40009)]
    );
}

#[test]
fn peers_values_are_byte_identical_to_js() {
    let vectors = vectors();
    let local = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 20), 49737);
    let input = |port, local_address: Option<SocketAddrV4>, unannounce| PeersInput {
        port,
        local_address: local_address.map(|a| Bytes::copy_from_slice(&compact::encode_peer(a))),
        unannounce,
    };
    let peers = [
        SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49737),
    ];
    let local_peer = LocalPeer {
        octets: [1, 21],
        port: 49737,
    };
    let expected: [(&str, Vec<u8>); 8] = [
        ("PeersInput {}", input(None, None, None).encode_to_vec()),
        (
            "PeersInput {port: 0}",
            input(Some(0), None, None).encode_to_vec(),
        ),
        (
            "PeersInput {port: 49737}",
            input(Some(49737), None, None).encode_to_vec(),
        ),
        (
            "PeersInput {port: 0, localAddress",
            input(Some(0), Some(local), None).encode_to_vec(),
        ),
        (
            "PeersInput {port: 0, unannounce",
            input(Some(0), None, Some(true)).encode_to_vec(),
        ),
        (
            "PeersOutput {peers",
            PeersOutput {
                peers: Some(compact::encode_peers(&peers).into()),
                local_peers: None,
            }
            .encode_to_vec(),
        ),
        (
            "PeersOutput {localPeers",
            PeersOutput {
                peers: None,
                local_peers: Some(Bytes::copy_from_slice(&local_peer.encode())),
            }
            .encode_to_vec(),
        ),
        ("PeersOutput {}", PeersOutput::default().encode_to_vec()),
    ];
    let values = vectors["hyperswarmDhtValues"].as_array().unwrap();
    assert_eq!(values.len(), expected.len());
    for (vector, (name, ours)) in values.iter().zip(expected) {
        assert!(vector["name"].as_str().unwrap().starts_with(name), "{name}");
        assert_eq!(hex::encode(ours), vector["hex"].as_str().unwrap(), "{name}");
    }
    let output = PeersOutput::decode(&hex::decode("12040115c249").unwrap()[..]).unwrap();
    let locals = compact::decode_local_peers(&output.local_peers.unwrap()).unwrap();
    assert_eq!(locals, [local_peer]);
    assert_eq!(
        locals[0].address_with([192, 168]),
        SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 21), 49737)
    );
}

#[test]
fn roundtrip_tokens_are_js_s() {
    let vectors = vectors();
    let v = &vectors["roundtripToken"];
    let secret: [u8; 32] = hex::decode(v["secret"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let host: Ipv4Addr = v["host"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        hex::encode(token(&secret, host)),
        v["blake2b256_of_secret_concat_host"].as_str().unwrap()
    );
}

#[test]
fn bad_compact_lists_are_refused_whole() {
    let good = compact::encode_peer(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80));
    let zero_port = [10, 0, 0, 2, 0, 0];
    let unspecified = [0, 0, 0, 0, 0, 80];
    assert!(compact::decode_peers(&[good, zero_port].concat()).is_err());
    assert!(compact::decode_peers(&[good, unspecified].concat()).is_err());
    assert!(compact::decode_peers(&good[..5]).is_err());
    assert_eq!(compact::decode_peers(&[]), Ok(vec![]));
    let node = |port: u16| {
        compact::encode_nodes(&[NodeInfo {
            id: Id([7; 32]),
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), port.max(1)),
        }])
    };
    let mut nodes = [node(1), node(2)].concat();
    // A trailing partial node is ignored, as dht-rpc ignores it.
    nodes.extend_from_slice(&[1, 2, 3]);
    assert_eq!(compact::decode_nodes(&nodes).unwrap().len(), 2);
    // The second node's port: its 32-byte id and 4-byte host come first.
    let second = compact::NODE_LEN;
    nodes[second + 36..second + 38].copy_from_slice(&[0, 0]);
    assert!(
        compact::decode_nodes(&nodes).is_err(),
        "port 0 in the second node"
    );
}

#[test]
fn mdns_packets_are_byte_identical_to_js() {
    use hyperswarm::mdns::{self, Announcement, RecordData};
    let vectors = vectors();
    let v = &vectors["mdns"];
    let topic = Id(hex::decode(v["topic"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap());
    let name = mdns::topic_name(&topic);
    assert_eq!(name, v["name"].as_str().unwrap());
    let query = mdns::encode_query(&name).unwrap();
    assert_eq!(hex::encode(&query), v["query"].as_str().unwrap());
    let mut instance = b"id=".to_vec();
    instance.extend_from_slice(&[0x88; 32]);
    let announcement = Announcement {
        name: name.clone(),
        port: 49737,
        instance: instance.clone(),
    };
    let referrer = Ipv4Addr::new(192, 168, 1, 20);
    let response = mdns::encode_response(&[announcement], Some(referrer)).unwrap();
    assert_eq!(
        hex::encode(&response),
        v["responseWithReferrer"].as_str().unwrap()
    );

    let asked = mdns::decode(&query).unwrap();
    assert!(!asked.response);
    assert_eq!(asked.questions, [(name.clone(), 33)]);
    let answered = mdns::decode(&response).unwrap();
    assert!(answered.response);
    let data: Vec<_> = answered.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(
        data,
        [
            RecordData::Srv {
                port: 49737,
                target: "0.0.0.0".into()
            },
            RecordData::Txt(vec![instance]),
            RecordData::A(referrer),
        ]
    );
    assert_eq!(answered.answers[0].name, name);
    assert_eq!(answered.answers[2].name, mdns::REFERRER);
}

#[test]
fn mdns_names_from_other_responders_may_be_compressed() {
    use hyperswarm::mdns::{self, RecordData};
    // One answer whose name points back at the question's name (offset 12).
    let mut packet = vec![0, 0, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    packet.extend_from_slice(b"\x03abc\x05local\x00\x00\x21\x00\x01");
    packet.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 80]);
    packet.extend_from_slice(&[0xc0, 16]);
    let decoded = mdns::decode(&packet).unwrap();
    assert_eq!(decoded.answers[0].name, "abc.local");
    assert_eq!(
        decoded.answers[0].data,
        RecordData::Srv {
            port: 80,
            target: "local".into()
        }
    );
    // A pointer to itself is refused, not followed forever.
    let mut looping = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    looping.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1]);
    assert!(mdns::decode(&looping).is_err());
}
