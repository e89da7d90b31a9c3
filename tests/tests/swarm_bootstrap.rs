//! `hyperd bootstrap` as the DHT bootstrap node of real JS hyperswarm 2 peers
//! (`tests/interop/swarm-peer.js`: hyperswarm 2.15.3, @hyperswarm/dht 4.0.1, dht-rpc
//! 4.9.6), on loopback only: one peer announces a topic, another looks it up through
//! the node alone, they connect (the node relays the hole punch for their uTP attempt)
//! and exchange a line. Garbage sent to the node does not stop it.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::Duration;

use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::swarm::BootstrapNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_peers_find_each_other_through_a_hyperd_bootstrap_node() {
    let mut node = BootstrapNode::start().unwrap();
    assert_eq!(node.id.len(), 64, "a persistent node");
    // Garbage first: datagrams that are not dht-rpc, and a truncated one.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in [
        &b""[..],
        b"\x58\x01\x08",
        b"GET / HTTP/1.1\r\n",
        &[0xff; 1400],
    ] {
        junk.send_to(datagram, &node.addr).unwrap();
    }
    let topic = hex::encode([0x5a; 32]);
    let peer = |announce: bool, message: &'static str| {
        let mut args = vec![
            "--topic",
            &topic,
            "--bootstrap",
            &node.addr,
            "--message",
            message,
        ];
        if announce {
            args.push("--announce");
        }
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            JsPeer::spawn("swarm-peer.js", &args).await.unwrap()
        }
    };
    let (mut announcer, ready) = peer(true, "from the announcer").await;
    assert_eq!(ready["event"], "listening");
    // Its announcement reaches the node before the lookup starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut looker, _) = peer(false, "from the looker").await;

    let found = looker.until("peer").await.unwrap();
    assert_eq!(found["port"], announcer_port(&ready));
    let node_port: u64 = node.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        found["referrer"], node_port,
        "found through the hyperd node"
    );
    let heard = looker.until("received").await.unwrap();
    assert_eq!(heard["text"], "from the announcer");
    let heard = announcer.until("received").await.unwrap();
    assert_eq!(heard["text"], "from the looker");
    assert!(node.is_running());
}

fn announcer_port(ready: &serde_json::Value) -> u64 {
    ready["port"].as_u64().unwrap()
}

/// Three `hyperd bootstrap` nodes, each bootstrapping from the ones before, form one
/// DHT: a JS dht-rpc node that bootstraps from the last alone finds all three in its
/// routing table, and its `_find_node` walk towards the first one's id ends there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperd_bootstrap_nodes_form_one_dht() {
    let first = BootstrapNode::start().unwrap();
    let second = BootstrapNode::start_joining("127.0.0.2", &[&first.addr]).unwrap();
    let third = BootstrapNode::start_joining("127.0.0.2", &[&first.addr, &second.addr]).unwrap();
    // Their bootstrap walks run right after start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut js, _) = JsPeer::spawn("dht-peer.js", &["--bootstrap", &third.addr])
        .await
        .unwrap();
    let table = js.call(serde_json::json!({"cmd": "table"})).await.unwrap();
    for node in [&first, &second, &third] {
        assert!(
            table["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == node.id.as_str()),
            "{} missing from {table}",
            node.id
        );
    }
    let found = js
        .call(serde_json::json!({"cmd": "find", "target": first.id}))
        .await
        .unwrap();
    assert_eq!(found["nodes"][0]["id"], first.id.as_str(), "{found}");
}
