//! The swarm's peer queue, as hyperswarm keeps it: a peer the DHT named that cannot be
//! reached yet is dialed again (after 1, 5 and 15 s), and a connection that ends is
//! redialed while the topic still looks up — both without another walk (the follower's
//! walk found its peer, so its next one is 5 to 10 minutes away).
//!
//! The seeder, A, has no DHT at all: it is found only through an announcement the test
//! makes for its address with a DHT client of its own, while A is down.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddrV4;
use std::time::Duration;

use hypercore::PublicKey;
use hyperd_tests::daemon::Daemon;
use hyperd_tests::eventually;
use hyperd_tests::swarm::{cat_eventually, daemon_with_bootstrap, BootstrapNode};
use hyperswarm::{Dht, Id};

#[test]
fn unreachable_peers_are_retried_and_ended_connections_redialed() {
    let node = BootstrapNode::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // A: a drive with a file, on a port of its own; then down.
    let mut a = Daemon::start_in(&tmp.path().join("a"), "127.0.0.2:0").unwrap();
    let created = a.ctl_json(&["drive", "create"]).unwrap();
    let url = created["url"].as_str().unwrap().to_string();
    let key: PublicKey = created["key"].as_str().unwrap().parse().unwrap();
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "first").unwrap();
    a.ctl_ok(&[
        "drive",
        "put",
        file.to_str().unwrap(),
        &format!("{url}/f.txt"),
    ])
    .unwrap();
    a.ctl_ok(&["stop"]).unwrap();
    a.wait_exit().unwrap();
    let a_addr: SocketAddrV4 = a.listen.parse().unwrap();

    // The DHT is told A's address serves the drive (a DHT client on A's port number
    // announces it, then goes).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dht = Dht::bind(a_addr, vec![node.addr.parse().unwrap()])
            .await
            .unwrap();
        dht.announce(Id(key.discovery_key().0)).await.unwrap();
    });

    // B follows: its walk finds A's address, where nothing answers yet.
    let b = daemon_with_bootstrap(&tmp.path().join("b"), &node.addr, "127.0.0.1:0").unwrap();
    b.ctl_ok(&["drive", "follow", &url]).unwrap();
    eventually(Duration::from_secs(20), "B's walk to find A", || {
        let listed = b.ctl_json(&["swarm", "ls"]).unwrap();
        (listed["topics"][0]["found"][0] == a.listen.as_str()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let peers = b.ctl_json(&["peer", "ls"]).unwrap();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 0, "{peers}");

    // A comes back on its port: a retry reaches it (each failed try lasts as long as
    // its hole punch, 7.5 s, and retries come 1 then 5 s later: allow for three).
    a.restart().unwrap();
    assert_eq!(a.listen, a_addr.to_string());
    let text = eventually(Duration::from_secs(60), "B to read f.txt from A", || {
        b.ctl_ok(&["drive", "cat", &format!("{url}/f.txt")]).ok()
    });
    assert_eq!(text, b"first");
    let peers = b.ctl_json(&["peer", "ls"]).unwrap();
    assert_eq!(peers["peers"][0]["foundBy"], "dht", "{peers}");
    assert_eq!(peers["peers"][0]["address"], a.listen.as_str(), "{peers}");

    // A restarts: B redials it, and sees what A wrote meanwhile.
    a.ctl_ok(&["stop"]).unwrap();
    a.wait_exit().unwrap();
    a.restart().unwrap();
    std::fs::write(&file, "second").unwrap();
    a.ctl_ok(&[
        "drive",
        "put",
        file.to_str().unwrap(),
        &format!("{url}/g.txt"),
    ])
    .unwrap();
    let text = cat_eventually(&b, &format!("{url}/g.txt"));
    assert_eq!(text, b"second");
    // Still one walk: the retries and the redial did it.
    let listed = b.ctl_json(&["swarm", "ls"]).unwrap();
    assert_eq!(listed["topics"][0]["walks"], 1, "{listed}");
}
