//! Rust DHT nodes and JS dht-rpc 4.9.6 / @hyperswarm/dht 4.0.1 nodes in one DHT on
//! loopback, bootstrapped from a JS node (`tests/interop/dht-node.js`, with JS peers of
//! `dht-peer.js`): the JS nodes keep our persistent nodes in their routing tables and a
//! JS `_find_node` walk towards a Rust node's id ends at it, our tables hold the JS
//! nodes, and announcements made on either side are stored at Rust and JS nodes close to
//! the topic and found from the other side. A `hyperd` with `dht_mode = "persistent"`
//! enters a JS node's routing table, one in the default adaptive mode does not (yet).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::swarm::{daemon_with_bootstrap, write_config, BootstrapNode};
use hyperswarm::{Dht, DhtServer, Id};
use serde_json::{json, Value};

const RUST_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn ids(nodes: &Value) -> HashSet<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_js_nodes_form_one_dht() {
    let (_bootstrap, ready) = JsPeer::spawn("dht-node.js", &["--host", "127.0.0.1"])
        .await
        .unwrap();
    let port = ready["port"].as_u64().unwrap() as u16;
    let bootstrap = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let bootstrap_arg = bootstrap.to_string();

    let mut rust = Vec::new();
    for _ in 0..10 {
        let node = DhtServer::bind_with(SocketAddrV4::new(RUST_HOST, 0), true, vec![bootstrap])
            .await
            .unwrap();
        rust.push(node);
    }
    let mut js = Vec::new();
    for _ in 0..4 {
        let (peer, ready) = JsPeer::spawn("dht-peer.js", &["--bootstrap", &bootstrap_arg])
            .await
            .unwrap();
        let id = ready["id"].as_str().unwrap().to_string();
        js.push((peer, id, ready["port"].as_u64().unwrap() as u16));
    }
    let rust_ids: HashSet<String> = rust
        .iter()
        .map(|n| hex::encode(n.id().unwrap().0))
        .collect();
    // Late walks let everyone hear of everyone: a Rust node bootstraps again.
    let late = DhtServer::bind_with(SocketAddrV4::new(RUST_HOST, 0), true, vec![bootstrap])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if late.dht().contacts().await >= 14 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late node's table stays small"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rust.push(late);

    // JS tables hold our persistent nodes; JS walks end at them.
    for (peer, _, _) in &mut js {
        let table = peer.call(json!({"cmd": "table"})).await.unwrap();
        let known = ids(&table["nodes"]);
        let ours = known.intersection(&rust_ids).count();
        assert!(ours >= 5, "a JS node knows {ours} of our nodes: {table}");
        let target = rust[4].id().unwrap();
        let found = peer
            .call(json!({"cmd": "find", "target": hex::encode(target.0)}))
            .await
            .unwrap();
        assert_eq!(found["nodes"][0]["id"], hex::encode(target.0), "{found}");
        assert_eq!(found["nodes"][0]["host"], RUST_HOST.to_string());
    }
    // Our tables hold the JS nodes.
    let js_ids: HashSet<String> = js.iter().map(|(_, id, _)| id.clone()).collect();
    for node in &rust {
        let known: HashSet<String> = node
            .dht()
            .routing_table()
            .await
            .iter()
            .map(|n| hex::encode(n.id.0))
            .collect();
        assert!(known.intersection(&js_ids).count() >= 2, "{known:?}");
    }

    // A JS announcement: stored at Rust nodes too, found by a Rust lookup.
    let topic = Id([0x6d; 32]);
    js[0]
        .0
        .call(json!({"cmd": "announce", "topic": hex::encode(topic.0)}))
        .await
        .unwrap();
    let mut storing = 0;
    for node in &rust {
        storing += usize::from(node.dht().records().await > 0);
    }
    assert!(
        storing >= 5,
        "{storing} Rust nodes store the JS announcement"
    );
    let looker = Dht::bind(SocketAddrV4::new(RUST_HOST, 0), vec![bootstrap])
        .await
        .unwrap();
    let found = looker.lookup(topic).await.unwrap();
    let js_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, js[0].2);
    assert!(found.iter().any(|p| p.addr == js_addr), "{found:?}");

    // A Rust announcement, found by a JS lookup.
    let topic = Id([0x6e; 32]);
    let announcer = Dht::bind(SocketAddrV4::new(RUST_HOST, 0), vec![bootstrap])
        .await
        .unwrap();
    announcer.announce(topic).await.unwrap();
    let peers = js[3]
        .0
        .call(json!({"cmd": "lookup", "topic": hex::encode(topic.0)}))
        .await
        .unwrap();
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .contains(&json!(announcer.local_addr().to_string())),
        "{peers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_hyperd_enters_js_routing_tables_and_an_adaptive_one_not_yet() {
    let node = BootstrapNode::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("persistent");
    let config = format!(
        "bootstrap = [\"{}\"]\ndht_mode = \"persistent\"\n",
        node.addr
    );
    write_config(&home, &config).unwrap();
    let persistent = Daemon::start_in(&home, "127.0.0.1:0").unwrap();
    let adaptive =
        daemon_with_bootstrap(&tmp.path().join("adaptive"), &node.addr, "127.0.0.1:0").unwrap();
    let status = |daemon: &Daemon| daemon.ctl_json(&["swarm", "status"]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let persistent_status = loop {
        let s = status(&persistent);
        if s["dhtNodes"].as_u64() >= Some(1) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(persistent_status["dhtMode"], "persistent");
    assert_eq!(persistent_status["dhtPersistent"], true);
    let adaptive_status = status(&adaptive);
    assert_eq!(adaptive_status["dhtMode"], "adaptive", "the default");
    assert_eq!(adaptive_status["dhtPersistent"], false);
    let human = String::from_utf8(persistent.ctl_ok(&["swarm", "status"]).unwrap()).unwrap();
    assert!(human.contains("persistent node (sends its id"), "{human}");

    let (mut js, _) = JsPeer::spawn("dht-peer.js", &["--bootstrap", &node.addr])
        .await
        .unwrap();
    let table = js.call(json!({"cmd": "table"})).await.unwrap();
    let addrs: Vec<String> = table["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{}:{}", n["host"].as_str().unwrap(), n["port"]))
        .collect();
    assert!(addrs.contains(&persistent.listen), "{table}");
    assert!(!addrs.contains(&adaptive.listen), "{table}");
}
