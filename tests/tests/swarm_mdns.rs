//! Local discovery by mDNS alone (no DHT: no bootstrap node anywhere), between real
//! processes in private network namespaces made by the test (`hyperd_tests::netns`):
//! hosts on one LAN (a bridge), each with its own address, as on a real LAN, so JS sees
//! `hyperd` at its LAN address (Dat2 networkers ignore 127.0.0.1, spec §8) and the
//! multicast crosses interfaces. `hyperd` and a JS hyperswarm 2 peer with real mDNS
//! (`tests/interop/swarm-drive.js --mdns`) find each other by drive key both ways and
//! replicate the drive; two `hyperd`s do the same, on a LAN and inside one namespace
//! with only `lo`.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::netns::{Host, Lan};
use hyperd_tests::swarm::cat_eventually;
use serde_json::Value;

/// `hyperd` on `host`, listening on all its addresses (the address mDNS answers come
/// from is the one peers dial), with the default configuration: no bootstrap node,
/// mDNS on.
fn daemon(host: &Host, home: &Path) -> Daemon {
    let d = Daemon::start_on_host(home, "0.0.0.0:0", host).unwrap();
    let status = d.ctl_json(&["swarm", "status"]).unwrap();
    assert_eq!(status["dhtAddress"], "", "no DHT: {status}");
    assert_eq!(status["mdns"], true, "{status}");
    d
}

/// A new drive on `d` holding `name` = `text`; its key and URL.
fn drive_with(d: &Daemon, dir: &Path, name: &str, text: &str) -> (String, String) {
    let created = d.ctl_json(&["drive", "create"]).unwrap();
    let (key, url) = (
        created["key"].as_str().unwrap().to_string(),
        created["url"].as_str().unwrap().to_string(),
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    d.ctl_ok(&[
        "drive",
        "put",
        file.to_str().unwrap(),
        &format!("{url}/{name}"),
    ])
    .unwrap();
    (key, url)
}

/// The peers `d`'s swarm found by mDNS under the drive or core `key`.
fn local_peers(d: &Daemon, key: &str) -> Vec<String> {
    let status = d.ctl_json(&["swarm", "status"]).unwrap();
    let topic = status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("{key} is not joined: {status}"));
    topic["localPeers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// Waits until `d` found by mDNS, under `key`, a peer at `ip`.
fn found_at(d: &Daemon, key: &str, ip: Ipv4Addr) -> String {
    hyperd_tests::eventually(
        Duration::from_secs(20),
        &format!("mDNS to find a peer at {ip}"),
        || {
            local_peers(d, key)
                .into_iter()
                .find(|p| p.starts_with(&format!("{ip}:")))
        },
    )
}

/// `d`'s peer connections (`peer ls`).
fn peers(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["peer", "ls"]).unwrap()["peers"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_peer_finds_a_drive_hyperd_announces_by_mdns_and_reads_it() {
    let lan = Lan::new().unwrap();
    let (hd, hd_addr) = lan.add_host("hd").unwrap();
    let (js_host, js_addr) = lan.add_host("js").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&hd, &tmp.path().join("home"));
    let (key, _) = drive_with(&d, tmp.path(), "f.txt", "from hyperd");

    let dir = tmp.path().join("js");
    let args = [
        "--dir",
        dir.to_str().unwrap(),
        "--mdns",
        "--key",
        &key,
        "--read",
        "f.txt",
    ];
    let (mut js, ready) = JsPeer::spawn_on(&js_host, "swarm-drive.js", &args)
        .await
        .unwrap();
    assert_eq!(ready["key"], key.as_str());
    // JS found hyperd by mDNS at its LAN address and the listener's port, and dialed it.
    let (mut found, mut dialed) = (false, false);
    let read = loop {
        let line = js.line().await.unwrap();
        match line["event"].as_str() {
            Some("peer") => {
                assert_eq!(line["local"], true, "{line}");
                if line["host"] == hd_addr.to_string() {
                    let port = d.listen.rsplit(':').next().unwrap();
                    assert_eq!(line["port"].to_string(), port, "{line}");
                    found = true;
                }
            }
            Some("connection") if line["client"] == true => dialed = true,
            Some("read") => break line,
            _ => {}
        }
    };
    assert_eq!(read["text"], "from hyperd");
    assert!(found && dialed, "JS read without finding or dialing hyperd");
    // hyperd looks the drive up too and found the JS peer.
    found_at(&d, &key, js_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperd_finds_a_drive_a_js_peer_announces_by_mdns_and_reads_it() {
    let lan = Lan::new().unwrap();
    let (hd, _) = lan.add_host("hd").unwrap();
    let (js_host, js_addr) = lan.add_host("js").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("js");
    // The JS peer only announces: the connection can only be hyperd's dial.
    let args = [
        "--dir",
        dir.to_str().unwrap(),
        "--mdns",
        "--no-lookup",
        "--write",
        "g.txt=from js",
    ];
    let (_js, ready) = JsPeer::spawn_on(&js_host, "swarm-drive.js", &args)
        .await
        .unwrap();
    let key = ready["key"].as_str().unwrap().to_string();

    let d = daemon(&hd, &tmp.path().join("home"));
    let url = format!("hyper://{key}");
    d.ctl_ok(&["drive", "follow", &url]).unwrap();
    let text = tokio::task::block_in_place(|| cat_eventually(&d, &format!("{url}/g.txt")));
    assert_eq!(text, b"from js");
    let js_peer = found_at(&d, &key, js_addr);
    let connected = peers(&d);
    assert!(
        connected.iter().any(|p| p["address"] == js_peer.as_str()
            && p["initiator"] == true
            && p["foundBy"] == "mdns"),
        "hyperd did not dial {js_peer}: {connected:?}"
    );
}

#[test]
fn two_daemons_on_a_lan_find_each_other_by_mdns_and_one_reads_the_others_drive() {
    let lan = Lan::new().unwrap();
    let (a_host, a_addr) = lan.add_host("a").unwrap();
    let (b_host, _) = lan.add_host("b").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = daemon(&a_host, &tmp.path().join("a"));
    let b = daemon(&b_host, &tmp.path().join("b"));
    let (key, url) = drive_with(&a, tmp.path(), "h.txt", "from a");
    b.ctl_ok(&["drive", "follow", &url]).unwrap();
    assert_eq!(cat_eventually(&b, &format!("{url}/h.txt")), b"from a");
    let port = a.listen.rsplit(':').next().unwrap();
    assert_eq!(found_at(&b, &key, a_addr), format!("{a_addr}:{port}"));
}

#[test]
fn two_daemons_in_one_namespace_with_only_loopback_find_each_other_by_mdns() {
    // Both share 0.0.0.0:5353 and multicast through 127.0.0.1, as JS does without
    // another interface (spec §5, §10.2).
    let host = Host::new("lo").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = daemon(&host, &tmp.path().join("a"));
    let b = daemon(&host, &tmp.path().join("b"));
    let (key, url) = drive_with(&a, tmp.path(), "i.txt", "from a over lo");
    b.ctl_ok(&["drive", "follow", &url]).unwrap();
    assert_eq!(
        cat_eventually(&b, &format!("{url}/i.txt")),
        b"from a over lo"
    );
    let port = a.listen.rsplit(':').next().unwrap();
    assert_eq!(
        found_at(&b, &key, Ipv4Addr::LOCALHOST),
        format!("127.0.0.1:{port}")
    );
}
