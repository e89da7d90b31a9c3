//! The DHT client against a DHT node on real UDP sockets: an announcement is found by a
//! lookup through the node, through the node alone (referrer), and is gone once
//! withdrawn; a DHT with no node that answers says so.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};

use hyperswarm::{Dht, DhtError, DhtServer, Id};

fn loopback(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), 0)
}

#[tokio::test]
async fn an_announcement_is_found_through_the_node_until_withdrawn() {
    let server = DhtServer::bind(loopback(2), true).await.unwrap();
    let node = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let topic = Id([0x77; 32]);
    let announcer = Dht::bind(loopback(1), vec![node]).await.unwrap();
    let looker = Dht::bind(loopback(1), vec![node]).await.unwrap();
    assert!(looker.lookup(topic).await.unwrap().is_empty());

    let found_meanwhile = announcer.announce(topic).await.unwrap();
    assert!(found_meanwhile.is_empty(), "nobody else announced");
    let found = looker.lookup(topic).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].addr, announcer.local_addr());
    assert_eq!(found[0].referrer, node);
    // The announcer is not told about itself.
    let own = announcer.lookup(topic).await.unwrap();
    assert!(own.is_empty(), "{own:?}");
    assert!(looker.lookup(Id([0x78; 32])).await.unwrap().is_empty());

    announcer.unannounce(topic).await.unwrap();
    assert!(looker.lookup(topic).await.unwrap().is_empty());
    stop.send(()).unwrap();
    serving.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_walk_no_node_answers_fails_with_no_nodes() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind(loopback(1)).unwrap();
    let std::net::SocketAddr::V4(silent_addr) = silent.local_addr().unwrap() else {
        unreachable!()
    };
    let dht = Dht::bind(loopback(1), vec![silent_addr]).await.unwrap();
    let error = dht.lookup(Id([1; 32])).await.unwrap_err();
    assert!(matches!(error, DhtError::NoNodes { .. }), "{error}");
    assert!(error.to_string().contains("peers"), "{error}");
}

/// A flood of requests from one address is answered only within its budget, and a
/// node at another address is still answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_capped_and_others_are_still_answered() {
    use hyperswarm::limit::PER_SECOND;
    use hyperswarm::{Message, MessageType};
    let server = DhtServer::bind(loopback(2), true).await.unwrap();
    let node = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let ping = Message {
        rid: 1,
        ..Message::request(MessageType::Query, "_ping")
    }
    .encode();
    let flooder = tokio::net::UdpSocket::bind(loopback(1)).await.unwrap();
    let flood = PER_SECOND as usize * 3;
    let counting = {
        let flooder = std::sync::Arc::new(flooder);
        let receiver = flooder.clone();
        let counter = tokio::spawn(async move {
            let mut answers = 0;
            let mut buf = [0; 2048];
            while let Ok(Ok(_)) = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                receiver.recv_from(&mut buf),
            )
            .await
            {
                answers += 1;
            }
            answers
        });
        // Paced so that socket buffers drop little: without the budget nearly all of
        // it would be answered.
        for _ in 0..flood / 50 {
            for _ in 0..50 {
                flooder.send_to(&ping, node).await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        counter
    };
    // Another address is answered during the flood.
    let other = Dht::bind(loopback(3), vec![node]).await.unwrap();
    let mut question = Message::decode(&ping).unwrap();
    question.value = None;
    let reply = other.request(node, question).await.unwrap();
    assert_eq!(reply.message.kind, MessageType::Response);

    let answers = counting.await.unwrap();
    // The flood took well under two seconds: at most two budgets.
    assert!(
        answers <= 2 * PER_SECOND as usize,
        "{answers} of {flood} answered"
    );
    assert!(answers > 0);
    stop.send(()).unwrap();
    serving.await.unwrap();
}

/// A hole punch reaches the peer only through the referrer's relay (the peer ignores
/// the direct `_holepunch`, which carries no value), and its answer completes it; a
/// referrer that does not relay leaves it to time out.
#[tokio::test]
async fn a_hole_punch_is_relayed_by_the_referrer_and_answered_by_the_peer() {
    let server = DhtServer::bind(loopback(2), true).await.unwrap();
    let referrer = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let puncher = Dht::bind(loopback(1), vec![referrer]).await.unwrap();
    let peer = Dht::bind(loopback(3), vec![referrer]).await.unwrap();
    let reply = puncher
        .holepunch(peer.local_addr(), referrer)
        .await
        .unwrap();
    assert_eq!(reply.from, peer.local_addr());

    // Through something that is not a DHT node: no relay, no answer.
    let silent = std::net::UdpSocket::bind(loopback(4)).unwrap();
    let std::net::SocketAddr::V4(silent) = silent.local_addr().unwrap() else {
        unreachable!()
    };
    tokio::time::pause();
    let failed = puncher.holepunch(peer.local_addr(), silent).await;
    assert!(
        matches!(failed, Err(DhtError::Timeout { .. })),
        "{failed:?}"
    );
    tokio::time::resume();
    stop.send(()).unwrap();
    serving.await.unwrap();
}

/// Backpressure, as dht-rpc: requests go out at once until 250 were sent in 5 s (50 a
/// second) with 16 or more unanswered; the rest wait for answers or timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_fifty_requests_a_second_with_sixteen_unanswered_requests_wait() {
    use hyperswarm::MessageType;
    let silent = tokio::net::UdpSocket::bind(loopback(5)).await.unwrap();
    let std::net::SocketAddr::V4(to) = silent.local_addr().unwrap() else {
        unreachable!()
    };
    let dht = std::sync::Arc::new(Dht::bind(loopback(1), vec![]).await.unwrap());
    for _ in 0..300 {
        let dht = dht.clone();
        tokio::spawn(async move {
            let ping = hyperswarm::Message::request(MessageType::Query, "_ping");
            let _ = dht.request(to, ping).await;
        });
    }
    // Well before the first resend (1.5 s): only the first 250 went out.
    let mut buf = [0; 2048];
    let mut received = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        silent.recv_from(&mut buf),
    )
    .await
    {
        received += 1;
    }
    assert_eq!(received, 250);
}
