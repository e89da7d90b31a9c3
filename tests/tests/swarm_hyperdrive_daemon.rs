//! Interop with hyperdrive-daemon 1.14.5, the JS daemon from npm, through the swarm:
//! real processes in private network namespaces (`hyperd_tests::netns`), one LAN with
//! three hosts, each at its own address (so the JS daemon, which ignores connections
//! from 127.0.0.1, spec §8, sees a LAN address): a `hyperd bootstrap` DHT node, `hyperd`
//! and hyperdrive-daemon, both bootstrapping from that node alone.
//!
//! `hyperd` runs with mDNS off: hyperdrive-daemon always runs mDNS (hyperswarm 2 has no
//! switch), so with ours off neither side can find the other but through the bootstrap
//! node's DHT, which is what these tests prove. Both ways: `hyperd` follows a drive the
//! JS daemon created and seeds, and reads its file; the JS daemon's own client library
//! (`hyperdrive-daemon-client`, via `tests/bench-js/hyperdrive-daemon/client.js`) reads
//! a file of a drive `hyperd` created (announced by default).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::eventually;
use hyperd_tests::hyperdrive_daemon::{HyperdriveDaemon, Options};
use hyperd_tests::netns::{Host, Lan};
use hyperd_tests::swarm::{cat_eventually, daemon_on_host_with_bootstrap, BootstrapNode};
use serde_json::Value;

/// The LAN and what runs on it: the bootstrap node, and the hosts for `hyperd` and the
/// JS daemon with their addresses. Dropped in reverse order: processes first.
struct Net {
    hd: Host,
    js: Host,
    js_addr: Ipv4Addr,
    hd_addr: Ipv4Addr,
    node: BootstrapNode,
    _boot: Host,
    _lan: Lan,
}

fn net() -> Net {
    let lan = Lan::new().unwrap();
    let (boot, boot_addr) = lan.add_host("boot").unwrap();
    let (hd, hd_addr) = lan.add_host("hd").unwrap();
    let (js, js_addr) = lan.add_host("js").unwrap();
    let node = BootstrapNode::start_on_host(&boot, boot_addr).unwrap();
    assert_eq!(node.addr, format!("{boot_addr}:49737"));
    Net {
        hd,
        js,
        js_addr,
        hd_addr,
        node,
        _boot: boot,
        _lan: lan,
    }
}

impl Net {
    /// hyperdrive-daemon on its host, bootstrapping from the node alone.
    fn js_daemon(&self) -> HyperdriveDaemon {
        HyperdriveDaemon::start(&Options {
            bootstrap: Some(self.node.addr.clone()),
            host: Some(&self.js),
        })
        .unwrap()
    }

    /// `hyperd` on its host, bootstrapping from the node alone, mDNS off.
    fn hyperd(&self, home: &Path) -> Daemon {
        let d = daemon_on_host_with_bootstrap(home, &self.hd, &self.node.addr, false).unwrap();
        let status = d.ctl_json(&["swarm", "status"]).unwrap();
        assert_eq!(status["mdns"], false, "{status}");
        d
    }
}

/// `d`'s joined topic for the drive or core `key`.
fn topic(d: &Daemon, key: &str) -> Value {
    let status = d.ctl_json(&["swarm", "status"]).unwrap();
    status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("{key} is not joined: {status}"))
        .clone()
}

/// `d`'s peer connections (`peer ls`).
fn peers(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["peer", "ls"]).unwrap()["peers"]
        .as_array()
        .unwrap()
        .clone()
}

/// Whether a process we may have left behind (the JS daemon runs as `hyperdrive`) is
/// still alive.
fn js_daemon_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn hyperd_finds_a_drive_hyperdrive_daemon_seeds_through_the_dht_and_reads_it() {
    let net = net();
    let tmp = tempfile::tempdir().unwrap();
    let js = net.js_daemon();
    let created = js
        .client(&["create", "f.txt", "from hyperdrive-daemon"])
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();

    let d = net.hyperd(&tmp.path().join("home"));
    let url = format!("hyper://{key}");
    d.ctl_ok(&["drive", "follow", &url]).unwrap();
    let text = cat_eventually(&d, &format!("{url}/f.txt"));
    assert_eq!(text, b"from hyperdrive-daemon");
    let ls = String::from_utf8(d.ctl_ok(&["drive", "ls", &url]).unwrap()).unwrap();
    assert!(ls.contains("f.txt"), "{ls}");

    // The DHT gave hyperd the JS daemon's swarm address (its announce used the port of
    // its DHT socket, which is its TCP port), and hyperd dialed it.
    let js_peer = format!("{}:{}", net.js_addr, js.swarm_port);
    let t = topic(&d, &key);
    assert_eq!(t["peersFound"], 1, "{t}");
    assert_eq!(t["lastError"], "", "{t}");
    let connected = peers(&d);
    assert!(
        connected.iter().any(|p| p["address"] == js_peer.as_str()
            && p["initiator"] == true
            && p["foundBy"] == "dht"),
        "hyperd did not dial {js_peer} found by the DHT: {connected:?}"
    );

    let pid = js.pid();
    js.stop().unwrap();
    assert!(js_daemon_gone(pid));
}

#[test]
fn hyperdrive_daemon_finds_a_drive_hyperd_announces_through_the_dht_and_reads_it() {
    let net = net();
    let tmp = tempfile::tempdir().unwrap();
    let d = net.hyperd(&tmp.path().join("home"));
    let created = d.ctl_json(&["drive", "create"]).unwrap();
    let (key, url) = (
        created["key"].as_str().unwrap().to_string(),
        created["url"].as_str().unwrap().to_string(),
    );
    let file = tmp.path().join("g.txt");
    std::fs::write(&file, "from hyperd").unwrap();
    d.ctl_ok(&[
        "drive",
        "put",
        file.to_str().unwrap(),
        &format!("{url}/g.txt"),
    ])
    .unwrap();
    // Announced by default; the JS daemon looks the key up once when the drive is
    // opened (the next walk is minutes later), so it comes after our announce walk.
    let t = eventually(Duration::from_secs(20), "hyperd's announce walk", || {
        let t = topic(&d, &key);
        (t["walks"].as_u64() >= Some(1)).then_some(t)
    });
    assert_eq!(t["announce"], true, "{t}");
    assert_eq!(t["lastError"], "", "{t}");

    let js = net.js_daemon();
    let read = js.client(&["read", &key, "g.txt"]).unwrap();
    assert_eq!(read["text"], "from hyperd", "{read}");
    assert_eq!(read["names"], serde_json::json!(["g.txt"]), "{read}");

    // The JS daemon dialed hyperd at its LAN address: only the DHT could tell it.
    let connected = peers(&d);
    let from_js = format!("{}:", net.js_addr);
    assert!(
        connected.iter().any(
            |p| p["address"].as_str().unwrap().starts_with(&from_js) && p["initiator"] == false
        ),
        "no connection from the JS daemon at {} to hyperd at {}: {connected:?}",
        net.js_addr,
        net.hd_addr
    );

    let pid = js.pid();
    js.stop().unwrap();
    assert!(js_daemon_gone(pid));
}
