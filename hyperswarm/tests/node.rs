//! The node's answers, datagram in, datagrams out, as JS peers exchange them with a JS
//! node: pings, announce then lookup with tokens, hole punches relayed, closer nodes.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::Bytes;
use hyperswarm::compact::{self, NodeInfo};
use hyperswarm::node::{Node, NodeEvent, Outgoing};
use hyperswarm::{Holepunch, Id, Message, MessageType, PeersInput, PeersOutput};
use prost::Message as _;

const TOPIC: [u8; 32] = [0xa1; 32];

fn addr(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), port)
}

fn request(kind: MessageType, rid: u64, command: &str) -> Message {
    Message {
        rid,
        ..Message::request(kind, command)
    }
}

fn one(out: (Vec<Outgoing>, Option<NodeEvent>)) -> (SocketAddrV4, Message, Option<NodeEvent>) {
    let (mut sent, event) = out;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = sent.remove(0);
    (sent.to, Message::decode(&sent.datagram).unwrap(), event)
}

#[test]
fn pings_are_answered_with_the_address_seen_unless_another_node_was_meant() {
    let mut node = Node::new(Some(Id([0x22; 32])), [7; 32]);
    let a = addr(1, 40001);
    let mut ping = request(MessageType::Query, 4660, "_ping");
    ping.value = Some(Bytes::from_static(&[0x22; 32]));
    let (to, answer, _) = one(node.receive(&ping.encode(), a));
    assert_eq!(to, a);
    assert_eq!((answer.kind, answer.rid), (MessageType::Response, 4660));
    assert_eq!(compact::decode_peer(answer.value.as_ref().unwrap()), Ok(a));
    assert_eq!(answer.to, answer.value);
    assert_eq!(answer.id.as_deref(), Some(&[0x22; 32][..]));
    assert_eq!(answer.roundtrip_token.unwrap().len(), 32);
    ping.value = Some(Bytes::from_static(&[0x33; 32]));
    assert!(
        node.receive(&ping.encode(), a).0.is_empty(),
        "meant for another id"
    );
    assert!(node.receive(b"\x58\x01 not protobuf", a).0.is_empty());
    assert!(
        node.receive(&ping.encode(), addr(1, 0)).0.is_empty(),
        "port 0"
    );
}

#[test]
fn an_announcement_needs_the_token_and_is_found_by_lookups() {
    let mut node = Node::new(None, [7; 32]);
    let (a, b) = (addr(1, 40001), addr(1, 40002));
    let mut announce = request(MessageType::Query, 9, "peers");
    announce.target = Some(Bytes::from_static(&TOPIC));
    announce.value = Some(
        PeersInput {
            port: Some(0),
            ..Default::default()
        }
        .encode_to_vec()
        .into(),
    );
    let (_, answer, _) = one(node.receive(&announce.encode(), a));
    let token = answer.roundtrip_token.clone().unwrap();
    assert_eq!(answer.closer_nodes.as_deref(), Some(&[][..]));
    assert_eq!(
        answer.value.as_deref(),
        Some(&[][..]),
        "nothing stored yet: 4a 00"
    );

    let mut update = Message {
        kind: MessageType::Update,
        rid: 10,
        ..announce.clone()
    };
    update.roundtrip_token = Some(Bytes::from_static(&[0; 32]));
    assert!(
        node.receive(&update.encode(), a).0.is_empty(),
        "a wrong token is dropped"
    );
    assert_eq!(node.records(), 0);
    update.roundtrip_token = Some(token.clone());
    let (_, _, event) = one(node.receive(&update.encode(), a));
    assert_eq!(
        event,
        Some(NodeEvent::Announce {
            topic: Bytes::from_static(&TOPIC),
            peer: a
        })
    );
    // The token is bound to the IP: another port of the same host may use it.
    update.value = Some(
        PeersInput {
            port: Some(49737),
            ..Default::default()
        }
        .encode_to_vec()
        .into(),
    );
    one(node.receive(&update.encode(), addr(1, 40003)));

    let mut lookup = request(MessageType::Query, 8, "peers");
    lookup.target = Some(Bytes::from_static(&TOPIC));
    lookup.value = Some(Bytes::new());
    let (to, answer, _) = one(node.receive(&lookup.encode(), b));
    assert_eq!(to, b);
    let output = PeersOutput::decode(answer.value.unwrap()).unwrap();
    let mut found = compact::decode_peers(&output.peers.unwrap()).unwrap();
    found.sort();
    assert_eq!(found, [a, addr(1, 49737)]);
    // The announcer is not told about itself.
    let (_, answer, _) = one(node.receive(&lookup.encode(), a));
    let output = PeersOutput::decode(answer.value.unwrap()).unwrap();
    assert_eq!(
        compact::decode_peers(&output.peers.unwrap()).unwrap(),
        [addr(1, 49737)]
    );

    // Unannounced, and after two generations anything not announced again is gone.
    let mut gone = update.clone();
    gone.value = Some(
        PeersInput {
            port: Some(0),
            unannounce: Some(true),
            ..Default::default()
        }
        .encode_to_vec()
        .into(),
    );
    one(node.receive(&gone.encode(), a));
    node.turn_records();
    node.turn_records();
    assert_eq!(node.records(), 0);

    let mut bad = announce.clone();
    bad.value = Some(
        PeersInput {
            port: Some(70_000),
            ..Default::default()
        }
        .encode_to_vec()
        .into(),
    );
    let (_, answer, _) = one(node.receive(&bad.encode(), a));
    assert_eq!(answer.error.as_deref(), Some("Invalid port"));
    assert_eq!(answer.roundtrip_token, None);
    let mut other = announce.clone();
    other.command = Some("mutable-store".into());
    let (_, answer, _) = one(node.receive(&other.encode(), a));
    assert_eq!(answer.error.as_deref(), Some("Unsupported command"));
}

#[test]
fn hole_punches_are_relayed_and_answered_to_the_asker() {
    let mut relay = Node::new(Some(Id([0x66; 32])), [7; 32]);
    let mut b_node = Node::new(None, [8; 32]);
    let (a, b, r) = (addr(1, 40001), addr(2, 40002), addr(3, 49737));
    let mut ask = request(MessageType::Query, 13, "_holepunch");
    ask.to = Some(Bytes::copy_from_slice(&compact::encode_peer(r)));
    ask.value = Some(
        Holepunch {
            from: None,
            to: Some(Bytes::copy_from_slice(&compact::encode_peer(b))),
        }
        .encode_to_vec()
        .into(),
    );
    let (to, relayed, event) = one(relay.receive(&ask.encode(), a));
    assert_eq!(to, b);
    assert_eq!(event, Some(NodeEvent::Holepunch { from: a, to: b }));
    assert_eq!((relayed.kind, relayed.rid), (MessageType::Query, 13));
    assert_eq!(relayed.id.as_deref(), Some(&[0x66; 32][..]));
    let punch = Holepunch::decode(relayed.value.clone().unwrap()).unwrap();
    assert_eq!(compact::decode_peer(punch.from.as_ref().unwrap()), Ok(a));
    // B answers A directly, with A's rid.
    let (to, answer, _) = one(b_node.receive(&relayed.encode(), r));
    assert_eq!(to, a);
    assert_eq!((answer.kind, answer.rid), (MessageType::Response, 13));
    // A punch to the asker itself, and the bare direct packet, are ignored.
    let mut own = ask.clone();
    own.value = Some(
        Holepunch {
            from: None,
            to: Some(Bytes::copy_from_slice(&compact::encode_peer(a))),
        }
        .encode_to_vec()
        .into(),
    );
    assert!(relay.receive(&own.encode(), a).0.is_empty());
    let mut direct = ask.clone();
    direct.value = None;
    assert!(relay.receive(&direct.encode(), a).0.is_empty());
}

#[test]
fn find_node_lists_the_closest_persistent_nodes_and_never_ephemeral_ones() {
    let mut node = Node::new(Some(Id([0; 32])), [7; 32]);
    for i in 1..=30u8 {
        let mut ping = request(MessageType::Query, u64::from(i), "_ping");
        ping.id = Some(Bytes::copy_from_slice(&[i; 32]));
        node.receive(&ping.encode(), addr(i, 1000 + u16::from(i)));
    }
    let ephemeral = request(MessageType::Query, 99, "_ping");
    node.receive(&ephemeral.encode(), addr(99, 9999));
    assert_eq!(node.contacts(), 30);
    let mut find = request(MessageType::Query, 5, "_find_node");
    find.target = Some(Bytes::copy_from_slice(&[1; 32]));
    let (_, answer, _) = one(node.receive(&find.encode(), addr(1, 1001)));
    let nodes = compact::decode_nodes(&answer.closer_nodes.unwrap()).unwrap();
    assert_eq!(nodes.len(), 20);
    assert_eq!(
        nodes[0],
        NodeInfo {
            id: Id([1; 32]),
            addr: addr(1, 1001)
        }
    );
    assert!(nodes.iter().all(|n| n.addr != addr(99, 9999)));
    find.target = Some(Bytes::from_static(b"short"));
    assert!(node.receive(&find.encode(), addr(1, 1001)).0.is_empty());
}

/// A `_ping` from persistent node `id` at `from`.
fn hello(node: &mut Node, id: Id, from: SocketAddrV4) {
    let mut ping = request(MessageType::Query, 1, "_ping");
    ping.id = Some(Bytes::copy_from_slice(&id.0));
    node.receive(&ping.encode(), from);
}

/// An id far from `Id([0; 32])` (first bit set: all in one bucket that never splits).
fn far(n: u32) -> Id {
    let mut id = [0xee; 32];
    id[28..].copy_from_slice(&n.to_be_bytes());
    Id(id)
}

#[test]
fn a_routing_table_flooded_with_made_up_ids_keeps_its_live_contacts_and_goes_on_answering() {
    let mut node = Node::new(Some(Id([0; 32])), [7; 32]);
    node.set_bootstrapped();
    node.tick(0);
    let live: Vec<Id> = (0..20).map(far).collect();
    for (i, id) in live.iter().enumerate() {
        hello(&mut node, *id, addr(1, 1000 + i as u16));
    }
    node.tick(0);
    // 100,000 made-up ids, half for the full far bucket, half anywhere.
    for i in 0..100_000u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        id[4..8].copy_from_slice(&i.to_be_bytes());
        let id = if i % 2 == 0 {
            far(1_000_000 + i)
        } else {
            Id(id)
        };
        hello(&mut node, id, addr(9, 1 + (i % 60_000) as u16));
    }
    assert!(node.contacts() <= 256 * 20, "{}", node.contacts());
    assert!(live.iter().all(|id| node.table().get(id).is_some()));
    // The far bucket asked for one ping (its least recently seen contact), no more.
    let pings = node.take_pings();
    let far_pings: Vec<&NodeInfo> = pings.iter().filter(|n| n.id.0[0] == 0xee).collect();
    assert_eq!(far_pings.len(), 1, "{pings:?}");
    assert_eq!(far_pings[0].id, live[0]);
    // It answers, and so do the next two candidates: nobody is evicted.
    let mut next = *far_pings[0];
    for expected in &live[1..3] {
        node.pinged(next, true);
        let asked = node.take_pings();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].id, *expected);
        next = asked[0];
    }
    node.pinged(next, true);
    assert!(node.take_pings().is_empty(), "three candidates at most");
    assert!(live.iter().all(|id| node.table().get(id).is_some()));
    // The next newcomer starts another round; a failed ping lets it in.
    hello(&mut node, far(7_777_777), addr(8, 7777));
    let asked = node.take_pings();
    assert_eq!(asked.len(), 1);
    node.pinged(asked[0], false);
    assert!(node.table().get(&asked[0].id).is_none());
    assert!(node.table().get(&far(7_777_777)).is_some());

    let mut find = request(MessageType::Query, 5, "_find_node");
    find.target = Some(Bytes::copy_from_slice(&[0xee; 32]));
    let (_, answer, _) = one(node.receive(&find.encode(), addr(1, 1001)));
    let nodes = compact::decode_nodes(&answer.closer_nodes.unwrap()).unwrap();
    assert_eq!(nodes.len(), 20);
}

#[test]
fn a_full_bucket_keeps_candidates_heard_this_tick_and_drops_newcomers_before_bootstrap() {
    let mut node = Node::new(Some(Id([0; 32])), [7; 32]);
    for i in 0..20 {
        hello(&mut node, far(i), addr(1, 1000 + i as u16));
    }
    // Not bootstrapped: a newcomer is dropped, nobody pinged.
    hello(&mut node, far(100), addr(2, 100));
    assert!(node.take_pings().is_empty());
    assert!(node.table().get(&far(100)).is_none());
    node.set_bootstrapped();
    // All heard in this tick: kept, moved to the most recent end, nobody pinged.
    hello(&mut node, far(101), addr(2, 101));
    assert!(node.take_pings().is_empty());
    assert_eq!(node.table().buckets()[0].last().unwrap().id, far(2));
    // A tick later they are stale: the least recent (now far(3)) is pinged.
    node.tick(0);
    hello(&mut node, far(102), addr(2, 102));
    let asked = node.take_pings();
    assert_eq!(asked.iter().map(|n| n.id).collect::<Vec<_>>(), vec![far(3)]);
}

#[test]
fn every_eighth_tick_pings_the_least_recently_seen_and_drops_the_silent() {
    use hyperswarm::node::{PING_BUSY, PING_EVERY, PING_ROUND};
    let mut node = Node::new(None, [7; 32]);
    for i in 0..10u8 {
        hello(&mut node, Id([i + 1; 32]), addr(i + 1, 49737));
    }
    for _ in 1..PING_EVERY {
        assert!(!node.tick(0));
        assert!(node.take_pings().is_empty());
    }
    // Node 1 speaks up in tick 7: the most recent now.
    hello(&mut node, Id([1; 32]), addr(1, 49737));
    assert!(!node.tick(0));
    let asked: Vec<u8> = node.take_pings().iter().map(|n| n.id.0[0]).collect();
    assert_eq!(asked.len(), PING_ROUND);
    assert_eq!(asked, vec![2, 3, 4, 5, 6], "least recently seen first");
    // Answers keep them, silence removes them.
    for i in [2u8, 3, 4] {
        node.pinged(
            NodeInfo {
                id: Id([i; 32]),
                addr: addr(i, 49737),
            },
            true,
        );
    }
    for i in [5u8, 6] {
        node.pinged(
            NodeInfo {
                id: Id([i; 32]),
                addr: addr(i, 49737),
            },
            false,
        );
    }
    assert_eq!(node.contacts(), 8);
    assert!(node.table().get(&Id([5; 32])).is_none());

    // Three walks running: three pings.
    for _ in 1..PING_EVERY {
        node.tick(0);
    }
    node.tick(3);
    assert_eq!(node.take_pings().len(), PING_BUSY);
}

#[test]
fn an_empty_table_bootstraps_at_each_ping_round_and_a_small_one_every_64th_tick() {
    use hyperswarm::node::{PING_EVERY, REBOOTSTRAP_EVERY};
    let mut node = Node::new(None, [7; 32]);
    let bootstraps: Vec<u64> = (1..=REBOOTSTRAP_EVERY).filter(|_| node.tick(0)).collect();
    assert_eq!(
        bootstraps,
        (1..=8).map(|n| n * PING_EVERY).collect::<Vec<_>>()
    );
    for i in 0..19u8 {
        hello(&mut node, Id([i + 1; 32]), addr(i + 1, 49737));
    }
    // 19 nodes: only the 64th tick bootstraps (and ping rounds just ping).
    let bootstraps: Vec<u64> = (1..=REBOOTSTRAP_EVERY)
        .filter(|_| {
            let again = node.tick(0);
            for ping in node.take_pings() {
                node.pinged(ping, true);
            }
            again
        })
        .collect();
    assert_eq!(bootstraps.len(), 1);
    hello(&mut node, Id([0xf0; 32]), addr(200, 49737));
    assert!(!(1..=REBOOTSTRAP_EVERY).any(|_| {
        let again = node.tick(0);
        for ping in node.take_pings() {
            node.pinged(ping, true);
        }
        again
    }));
}

/// A response from a persistent node `n` that saw us as `seen`.
fn saw_us(node: &mut Node, n: u8, seen: SocketAddrV4) {
    let mut answer = request(MessageType::Response, u64::from(n), "_ping");
    answer.command = None;
    answer.id = Some(Bytes::copy_from_slice(&[n; 32]));
    answer.to = Some(Bytes::copy_from_slice(&compact::encode_peer(seen)));
    node.receive(&answer.encode(), addr(n, 49737));
}

#[test]
fn our_public_address_is_what_three_of_the_last_ten_nodes_agree_on() {
    let mut node = Node::new(None, [7; 32]);
    let public = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40000);
    saw_us(&mut node, 1, public);
    saw_us(&mut node, 2, public);
    assert_eq!(node.public_address(), None, "two agree: not yet");
    saw_us(&mut node, 3, public);
    assert_eq!(node.public_address(), Some(public));
    // The same node saying it again is one vote.
    saw_us(&mut node, 3, public);
    assert_eq!(node.public_address(), Some(public));

    // Three disagree (a NAT that changes ports): not reachable.
    let other = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40001);
    for n in 4..=6 {
        saw_us(&mut node, n, other);
    }
    assert_eq!(node.public_address(), None);
    // Ten newer nodes that agree push the old votes out.
    for n in 10..20 {
        saw_us(&mut node, n, other);
    }
    assert_eq!(node.public_address(), Some(other));

    // Ephemeral responders (no id) and requests do not vote; a `to` that is not an
    // address is ignored.
    let mut fresh = Node::new(None, [7; 32]);
    for n in 1..=5 {
        let mut answer = request(MessageType::Response, 1, "_ping");
        answer.to = Some(Bytes::copy_from_slice(&compact::encode_peer(public)));
        fresh.receive(&answer.encode(), addr(n, 49737));
        let mut query = request(MessageType::Query, 1, "_ping");
        query.id = Some(Bytes::copy_from_slice(&[n; 32]));
        query.to = Some(Bytes::copy_from_slice(&compact::encode_peer(public)));
        fresh.receive(&query.encode(), addr(n, 49737));
        let mut odd = request(MessageType::Response, 1, "_ping");
        odd.id = Some(Bytes::copy_from_slice(&[n + 100; 32]));
        odd.to = Some(Bytes::from_static(b"bad"));
        fresh.receive(&odd.encode(), addr(n + 100, 49737));
    }
    assert_eq!(fresh.public_address(), None);
}
