//! hyperswarm's DHT client with real JS peers over a JS DHT node, both ways, on loopback
//! only (`tests/interop/dht-node.js`: @hyperswarm/dht 4.0.1; `swarm-peer.js`: hyperswarm
//! 2.15.3): a Rust announcement is found by a JS hyperswarm peer, which connects to the
//! announced port; a JS announcement is found by a Rust lookup, which connects to it.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use hyperd_tests::js_peer::JsPeer;
use hyperswarm::{Dht, Id};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The JS DHT node and its address.
async fn js_node() -> (JsPeer, SocketAddrV4) {
    let (node, ready) = JsPeer::spawn("dht-node.js", &["--host", "127.0.0.1"])
        .await
        .unwrap();
    assert_eq!(ready["event"], "listening", "{ready}");
    let port = ready["port"].as_u64().unwrap() as u16;
    (node, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

async fn js_peer(topic: &str, node: SocketAddrV4, announce: bool) -> JsPeer {
    let bootstrap = node.to_string();
    let mut args = vec![
        "--topic",
        topic,
        "--bootstrap",
        &bootstrap,
        "--message",
        "from js",
    ];
    if announce {
        args.push("--announce");
    }
    JsPeer::spawn("swarm-peer.js", &args).await.unwrap().0
}

// The Rust side is on 127.0.0.2: JS peers then see a peer address other than their own.
const RUST_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_peer_finds_and_connects_to_what_rust_announced() {
    let (_node, node_addr) = js_node().await;
    let dht = Dht::bind(SocketAddrV4::new(RUST_HOST, 0), vec![node_addr])
        .await
        .unwrap();
    // Announcements carry port 0: the node stores the UDP source port, so connections
    // come to the same port number over TCP.
    let listener = TcpListener::bind(dht.local_addr()).await.unwrap();
    let topic = Id([0x3c; 32]);
    dht.announce(topic).await.unwrap();

    let mut js = js_peer(&hex::encode(topic.0), node_addr, false).await;
    let found = js.until("peer").await.unwrap();
    assert_eq!(found["host"], RUST_HOST.to_string());
    assert_eq!(found["port"], dht.local_addr().port());
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(b"from rust\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.unwrap();
    assert_eq!(line, "from js\n");
    assert_eq!(js.until("received").await.unwrap()["text"], "from rust");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_finds_and_connects_to_what_a_js_peer_announced() {
    let (mut node, node_addr) = js_node().await;
    let topic = Id([0x3d; 32]);
    let mut js = js_peer(&hex::encode(topic.0), node_addr, true).await;
    let announced = node.until("announce").await.unwrap();
    assert_eq!(announced["topic"], hex::encode(topic.0));

    let dht = Dht::bind(SocketAddrV4::new(RUST_HOST, 0), vec![node_addr])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = dht.lookup(topic).await.unwrap();
        if let Some(peer) = found.first() {
            break *peer;
        }
        assert!(
            Instant::now() < deadline,
            "the JS announcement was never found"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found.referrer, node_addr);
    let stream = TcpStream::connect(found.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(b"from rust\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.unwrap();
    assert_eq!(line, "from js\n");
    assert_eq!(js.until("received").await.unwrap()["text"], "from rust");
}
