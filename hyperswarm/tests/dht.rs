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
    serving.await.unwrap().unwrap();
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
