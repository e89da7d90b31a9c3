//! `hyperd` and a real JS hyperdrive 10 peer that uses hyperswarm 2
//! (`tests/interop/swarm-drive.js`) find each other by drive key over a DHT whose only
//! bootstrap node is a `hyperd bootstrap`, with no address given by hand, and replicate
//! a drive both ways: JS reads a file of a drive `hyperd` created; `hyperd` follows a
//! drive JS created and reads its file.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::swarm::{cat_eventually, daemon_with_bootstrap, BootstrapNode};

/// A daemon on 127.0.0.3 (a JS peer on 127.0.0.1 then dials another address than its
/// own) whose only DHT bootstrap node is `bootstrap`.
fn daemon(home: &Path, bootstrap: &str) -> Daemon {
    daemon_with_bootstrap(home, bootstrap, "127.0.0.3:0").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_swarm_peer_reads_a_drive_hyperd_announced() {
    let node = BootstrapNode::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp.path().join("home"), &node.addr);
    let created = d.ctl_json(&["drive", "create"]).unwrap();
    let (key, url) = (
        created["key"].as_str().unwrap().to_string(),
        created["url"].as_str().unwrap().to_string(),
    );
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "from hyperd").unwrap();
    let out = d
        .ctl(&[
            "drive",
            "put",
            file.to_str().unwrap(),
            &format!("{url}/f.txt"),
        ])
        .unwrap();
    assert!(out.status.success());

    let dir = tmp.path().join("js");
    let args = [
        "--dir",
        dir.to_str().unwrap(),
        "--bootstrap",
        &node.addr,
        "--key",
        &key,
        "--read",
        "f.txt",
    ];
    let (mut js, ready) = JsPeer::spawn("swarm-drive.js", &args).await.unwrap();
    assert_eq!(ready["key"], key.as_str());
    let read = js.until("read").await.unwrap();
    assert_eq!(read["text"], "from hyperd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperd_follows_and_reads_a_drive_a_js_swarm_peer_announced() {
    let node = BootstrapNode::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("js");
    let args = [
        "--dir",
        dir.to_str().unwrap(),
        "--bootstrap",
        &node.addr,
        "--write",
        "g.txt=from js",
    ];
    let (_js, ready) = JsPeer::spawn("swarm-drive.js", &args).await.unwrap();
    let key = ready["key"].as_str().unwrap().to_string();

    let d = daemon(&tmp.path().join("home"), &node.addr);
    let url = format!("hyper://{key}");
    assert!(d.ctl(&["drive", "follow", &url]).unwrap().status.success());
    let g = format!("{url}/g.txt");
    let text = tokio::task::block_in_place(|| cat_eventually(&d, &g));
    assert_eq!(text, b"from js");
}
