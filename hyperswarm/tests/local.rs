//! Local discovery: hostile packets never panic it and cost bounded output, and two
//! services on real multicast sockets find each other, each inside a private network
//! namespace created for the test (so nothing reaches a real network).
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use hyperswarm::local::LocalTopics;
use hyperswarm::mdns::{encode_query, encode_response, topic_name, Announcement, MDNS_ADDR};
use hyperswarm::{Id, Mdns, MdnsPeer};
use proptest::prelude::*;

fn topic(n: u8) -> Id {
    Id([n; 32])
}

/// Topics 0..4 joined in every combination of announce and lookup.
fn joined(now: Instant) -> LocalTopics {
    let mut topics = LocalTopics::new(4000, now);
    topics.join(topic(0), true, false, now).unwrap();
    topics.join(topic(1), false, true, now).unwrap();
    topics.join(topic(2), true, true, now).unwrap();
    topics
}

/// A packet that names our topics (or not) in questions and answers, with any port,
/// target and id, then possibly cut or with bytes flipped.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    let announcement = (
        0u8..5,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(t, port, instance)| Announcement {
            name: topic_name(&topic(t)),
            port,
            instance,
        });
    let made = prop_oneof![
        (0u8..5).prop_map(|t| encode_query(&topic_name(&topic(t))).unwrap()),
        (
            proptest::collection::vec(announcement, 0..6),
            proptest::option::of(any::<[u8; 4]>())
        )
            .prop_map(|(a, referrer)| encode_response(&a, referrer.map(Ipv4Addr::from)).unwrap()),
    ];
    (
        made,
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(mut bytes, cut, flips)| {
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] ^= b;
            }
            if cut % 3 == 0 {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            bytes
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_get_no_answer(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        from in any::<[u8; 4]>(),
    ) {
        let now = Instant::now();
        let mut topics = joined(now);
        if let Ok(received) = topics.receive(&bytes, Ipv4Addr::from(from), now) {
            // Whatever they name gets at most one answer packet.
            prop_assert!(received.send.len() <= 1);
        }
        prop_assert_eq!(topics.len(), 3);
    }

    #[test]
    fn hostile_variations_of_real_packets_cost_bounded_output(
        packets in proptest::collection::vec(packet(), 1..20),
        from in any::<[u8; 4]>(),
    ) {
        let now = Instant::now();
        let mut topics = joined(now);
        for bytes in packets {
            let Ok(received) = topics.receive(&bytes, Ipv4Addr::from(from), now) else {
                continue;
            };
            // Answers only for announcing topics (0 and 2), in one packet.
            prop_assert!(received.send.len() <= 1);
            // Peers only for lookup topics (1 and 2), each distinct, never port 0.
            for peer in &received.found {
                prop_assert!(peer.topic == topic(1) || peer.topic == topic(2));
                prop_assert!(peer.addr.port() != 0);
            }
            let distinct: std::collections::HashSet<_> = received.found.iter().collect();
            prop_assert_eq!(distinct.len(), received.found.len());
            prop_assert!(received.found.len() <= 2 * 6);
        }
    }
}

/// Runs `test` on a thread of its own inside a new network namespace whose only
/// interface is `lo`, brought up (root or CAP_SYS_ADMIN needed: without it the test
/// fails, saying so).
fn in_private_netns(test: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // A network namespace belongs to a thread: only this one moves.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
            panic!("cannot create a network namespace for the mDNS test ({e}): run as root")
        });
        // Spawned from this thread, `ip` runs in its namespace.
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("running `ip link set lo up` (iproute2)");
        assert!(up.success(), "ip link set lo up failed");
        test();
    })
    .join()
    .unwrap();
}

/// Waits for `expected` to be found; the service that found it must never find
/// itself (port `own`) meanwhile. A peer may be found more than once: by its answer to
/// our query and by its announcement, when both arrive after our join.
async fn found(peers: &mut tokio::sync::mpsc::Receiver<MdnsPeer>, expected: MdnsPeer, own: u16) {
    let wait = async {
        loop {
            let peer = peers.recv().await.expect("the service stopped");
            assert_ne!(peer.addr.port(), own, "found itself: {peer:?}");
            if peer == expected {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{expected:?} not found within 10 s"));
}

#[test]
fn two_services_find_each_other_on_a_real_multicast_socket() {
    in_private_netns(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Both on 0.0.0.0:5353 in one namespace: the socket is shared.
            let (announcer, mut announcer_found) = Mdns::bind(1111).unwrap();
            let (looker, mut looker_found) = Mdns::bind(2222).unwrap();
            let (t, other) = (topic(7), topic(8));
            let at = |topic, port| MdnsPeer {
                topic,
                // With only `lo`, packets come from 127.0.0.1.
                addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            };
            looker.join(t, false, true).unwrap();
            // A flood first: garbage, and more made-up answers for `t` than the found
            // queue holds. The queue drops the excess and the service goes on. (Real
            // answers lost meanwhile, to a full socket buffer or queue, are made up for
            // by the next query, 30 to 60 s later, as in JS.)
            let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = std::net::SocketAddr::V4(MDNS_ADDR);
            for i in 0..3000u16 {
                let garbage: Vec<u8> = (0..(i % 300)).map(|_| rand::random()).collect();
                flood.send_to(&garbage, to).unwrap();
                let fake = Announcement {
                    name: topic_name(&t),
                    port: 10_000 + i,
                    instance: b"id=fake".to_vec(),
                };
                flood
                    .send_to(&encode_response(&[fake], None).unwrap(), to)
                    .unwrap();
            }
            // Taken until quiet: made-up peers only, each a peer at the flood's address.
            while let Ok(Some(peer)) =
                tokio::time::timeout(Duration::from_millis(500), looker_found.recv()).await
            {
                assert_eq!(peer.topic, t);
                assert!(peer.addr.port() >= 10_000, "{peer:?}");
            }
            announcer.join(t, true, false).unwrap();
            announcer.join(other, true, true).unwrap();
            found(&mut looker_found, at(t, 1111), 2222).await;
            // An announcing looker is found when it joins (its unsolicited announcement)
            // and finds the announcer by its query.
            looker.join(other, true, true).unwrap();
            found(&mut announcer_found, at(other, 2222), 1111).await;
            found(&mut looker_found, at(other, 1111), 2222).await;
            // The announcer looks up only `other`: it found nobody under `t`.
            while let Ok(peer) = announcer_found.try_recv() {
                assert_eq!(peer, at(other, 2222));
            }
            // After leaving, a topic is no longer answered: a new looker hears nothing.
            announcer.leave(&t);
            let (late, mut late_found) = Mdns::bind(3333).unwrap();
            late.join(t, false, true).unwrap();
            let heard = tokio::time::timeout(Duration::from_secs(2), late_found.recv()).await;
            assert!(heard.is_err(), "a left topic was answered: {heard:?}");
        });
    });
}
