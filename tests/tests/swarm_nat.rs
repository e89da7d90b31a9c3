//! Hole punching through NATs, in private network namespaces the test builds: a
//! "public" LAN with a DHT node (`hyperd bootstrap`), and two home LANs, each behind
//! its own Linux NAT router (iptables MASQUERADE: nothing from outside gets in unless it
//! answers a mapping made from inside). Two `hyperd`s, one behind each NAT, share only
//! the DHT node: one creates a drive, the other follows it. TCP cannot get through
//! either NAT, so the drive is read only if the follower punched a hole through the DHT
//! node (which relays the punch) and connected over uTP on the DHT's socket; the
//! connection says so (`holepunched`), from the NAT's outside address. Then the same
//! with a real JS hyperswarm 2 peer (hyperdrive 10) behind one of the NATs, both ways.
//! Needs root, iproute2 and iptables (scripts/setup installs them); without them the
//! test fails, saying why.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::eventually;
use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::netns::{Host, Lan, Nat};
use hyperd_tests::swarm::{
    cat_eventually, daemon_on_host_with_bootstrap, write_config, BootstrapNode,
};
use serde_json::Value;

/// The public LAN with its DHT node, and two home LANs behind NATs.
struct Internet {
    node: BootstrapNode,
    homes: Vec<(Lan, Nat)>,
    // Dropped last: the LAN the others' routers hang off.
    _public: (Lan, Host),
}

impl Internet {
    fn new() -> Internet {
        let public = Lan::with_subnet([10, 202, 0]).unwrap();
        let (dht, dht_addr) = public.add_host("dht").unwrap();
        let node = BootstrapNode::start_on_host(&dht, dht_addr).unwrap();
        let homes = [[10, 211, 0], [10, 212, 0]]
            .into_iter()
            .enumerate()
            .map(|(i, subnet)| {
                let lan = Lan::with_subnet(subnet).unwrap();
                let nat = Nat::new(&format!("nat{i}"), &lan, &public).unwrap();
                (lan, nat)
            })
            .collect();
        Internet {
            node,
            homes,
            _public: (public, dht),
        }
    }

    /// A new host in home `i`, behind its NAT.
    fn host(&self, i: usize, name: &str) -> Host {
        let (lan, nat) = &self.homes[i];
        lan.add_host_behind(name, nat.inside).unwrap().0
    }

    /// The address hosts of home `i` have on the public LAN.
    fn outside(&self, i: usize) -> String {
        self.homes[i].1.outside.to_string()
    }
}

/// The one connection `daemon` has, once it has one.
fn only_peer(daemon: &Daemon) -> Value {
    eventually(Duration::from_secs(30), "a connection", || {
        let listed = daemon.ctl_json(&["peer", "ls"]).unwrap();
        let peers = listed["peers"].as_array().unwrap().clone();
        (peers.len() == 1).then(|| peers[0].clone())
    })
}

#[test]
fn two_daemons_behind_separate_nats_connect_by_hole_punching() {
    let net = Internet::new();
    let (host_a, host_b) = (net.host(0, "a"), net.host(1, "b"));
    let tmp = tempfile::tempdir().unwrap();
    let a = daemon_on_host_with_bootstrap(&tmp.path().join("a"), &host_a, &net.node.addr, false)
        .unwrap();
    let b = daemon_on_host_with_bootstrap(&tmp.path().join("b"), &host_b, &net.node.addr, false)
        .unwrap();

    let created = a.ctl_json(&["drive", "create"]).unwrap();
    let url = created["url"].as_str().unwrap().to_string();
    let file = tmp.path().join("hello.txt");
    std::fs::write(&file, "through two NATs\n").unwrap();
    a.ctl_ok(&[
        "drive",
        "put",
        file.to_str().unwrap(),
        &format!("{url}/hello.txt"),
    ])
    .unwrap();

    b.ctl_ok(&["drive", "follow", &url]).unwrap();
    let text = cat_eventually(&b, &format!("{url}/hello.txt"));
    assert_eq!(text, b"through two NATs\n");

    // B dialed A's NAT and got through over uTP after the punch; A saw it come in from
    // B's NAT.
    let on_b = only_peer(&b);
    assert_eq!(on_b["transport"], "holepunched", "{on_b}");
    assert_eq!(on_b["foundBy"], "dht", "{on_b}");
    let address = on_b["address"].as_str().unwrap();
    assert!(
        address.starts_with(&format!("{}:", net.outside(0))),
        "{on_b}"
    );
    let on_a = only_peer(&a);
    assert_eq!(on_a["transport"], "utp", "{on_a}");
    assert_eq!(on_a["foundBy"], "incoming", "{on_a}");
    let address = on_a["address"].as_str().unwrap();
    assert!(
        address.starts_with(&format!("{}:", net.outside(1))),
        "{on_a}"
    );
}

#[test]
fn a_js_peer_behind_a_nat_and_hyperd_behind_another_connect_by_hole_punching() {
    let net = Internet::new();
    let (host_d, host_js) = (net.host(0, "d"), net.host(1, "js"));
    let tmp = tempfile::tempdir().unwrap();
    let daemon =
        daemon_on_host_with_bootstrap(&tmp.path().join("d"), &host_d, &net.node.addr, false)
            .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // JS writes a drive and announces it; hyperd follows it and reads it.
    let dir = tmp.path().join("js-writer");
    let (writer, ready) = runtime
        .block_on(JsPeer::spawn_on(
            &host_js,
            "swarm-drive.js",
            &[
                "--dir",
                dir.to_str().unwrap(),
                "--test-net",
                "--bootstrap",
                &net.node.addr,
                "--write",
                "from-js.txt=JS behind a NAT",
            ],
        ))
        .unwrap();
    assert_eq!(ready["event"], "ready", "{ready}");
    let key = ready["key"].as_str().unwrap().to_string();
    daemon
        .ctl_ok(&["drive", "follow", &format!("hyper://{key}")])
        .unwrap();
    let text = cat_eventually(&daemon, &format!("hyper://{key}/from-js.txt"));
    assert_eq!(text, b"JS behind a NAT");
    let peer = only_peer(&daemon);
    assert!(
        ["holepunched", "utp"].contains(&peer["transport"].as_str().unwrap()),
        "{peer}"
    );
    let address = peer["address"].as_str().unwrap();
    assert!(
        address.starts_with(&format!("{}:", net.outside(1))),
        "{peer}"
    );
    drop(writer);

    // hyperd writes a drive (announced); a JS reader behind the other NAT reads it.
    let created = daemon.ctl_json(&["drive", "create"]).unwrap();
    let url = created["url"].as_str().unwrap().to_string();
    let file = tmp.path().join("from-hyperd.txt");
    std::fs::write(&file, "hyperd behind a NAT").unwrap();
    daemon
        .ctl_ok(&[
            "drive",
            "put",
            file.to_str().unwrap(),
            &format!("{url}/from-hyperd.txt"),
        ])
        .unwrap();
    let dir = tmp.path().join("js-reader");
    let key = created["key"].as_str().unwrap();
    let (mut reader, _) = runtime
        .block_on(JsPeer::spawn_on(
            &host_js,
            "swarm-drive.js",
            &[
                "--dir",
                dir.to_str().unwrap(),
                "--test-net",
                "--bootstrap",
                &net.node.addr,
                "--key",
                key,
                "--read",
                "from-hyperd.txt",
            ],
        ))
        .unwrap();
    let read = runtime.block_on(reader.until("read")).unwrap();
    assert_eq!(read["text"], "hyperd behind a NAT", "{read}");
}

/// Two `hyperd`s behind the same NAT cannot reach each other through its outside
/// address (a Linux router does not loop it back); with `announce_local` each sends its
/// LAN address with its announcements and lookups, the DHT node hands it to lookers
/// from the same LAN, and they connect directly.
#[test]
fn daemons_behind_one_nat_find_each_other_by_their_lan_addresses() {
    let net = Internet::new();
    let (host_a, host_b) = (net.host(0, "a"), net.host(0, "b"));
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "bootstrap = [\"{}\"]\nmdns = false\nannounce_local = true\n",
        net.node.addr
    );
    let start = |name: &str, host: &Host| {
        let home = tmp.path().join(name);
        write_config(&home, &config).unwrap();
        Daemon::start_on_host(&home, "0.0.0.0:0", host).unwrap()
    };
    let (a, b) = (start("a", &host_a), start("b", &host_b));
    assert!(
        a.log().contains("announcing our LAN address 10.211.0."),
        "{}",
        a.log()
    );

    let created = a.ctl_json(&["drive", "create"]).unwrap();
    let url = created["url"].as_str().unwrap().to_string();
    let file = tmp.path().join("lan.txt");
    std::fs::write(&file, "next door").unwrap();
    a.ctl_ok(&[
        "drive",
        "put",
        file.to_str().unwrap(),
        &format!("{url}/lan.txt"),
    ])
    .unwrap();
    b.ctl_ok(&["drive", "follow", &url]).unwrap();
    let text = cat_eventually(&b, &format!("{url}/lan.txt"));
    assert_eq!(text, b"next door");
    let peer = only_peer(&b);
    assert!(
        peer["address"].as_str().unwrap().starts_with("10.211.0."),
        "dialed on the LAN: {peer}"
    );
    assert_eq!(peer["transport"], "tcp", "{peer}");
    assert_eq!(peer["foundBy"], "dht", "{peer}");
}
