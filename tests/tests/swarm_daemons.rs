//! Two `hyperd`s that share only a DHT bootstrap node (`hyperd bootstrap`) find each
//! other by drive key: one creates a drive and writes a file, the other follows the key,
//! with no `peer connect`, and reads the file; both came to the DHT through their
//! configuration file. After both restart they find each other again.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::eventually;
use hyperd_tests::swarm::{cat_eventually, daemon_with_bootstrap, BootstrapNode};
use serde_json::Value;

/// A daemon on 127.0.0.1 bootstrapping from `bootstrap` alone.
fn daemon(home: &Path, bootstrap: &str) -> Daemon {
    daemon_with_bootstrap(home, bootstrap, "127.0.0.1:0").unwrap()
}

fn ok(daemon: &Daemon, args: &[&str]) -> String {
    String::from_utf8(daemon.ctl_ok(args).unwrap()).unwrap()
}

/// `swarm status` once the first joined core has been walked.
fn first_walk(daemon: &Daemon) -> Value {
    eventually(Duration::from_secs(20), "a walk", || {
        let swarm = daemon.ctl_json(&["swarm", "status"]).unwrap();
        (swarm["topics"][0]["walks"].as_u64() >= Some(1)).then_some(swarm)
    })
}

#[test]
fn a_followed_drive_is_found_over_the_dht_and_read() {
    let mut node = BootstrapNode::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut a = daemon(&tmp.path().join("a"), &node.addr);
    let mut b = daemon(&tmp.path().join("b"), &node.addr);
    assert!(
        a.log()
            .contains(&format!("bootstrapping from {}", node.addr)),
        "{}",
        a.log()
    );

    let created = a.ctl_json(&["drive", "create"]).unwrap();
    let status = a.ctl_json(&["status"]).unwrap();
    assert_eq!(status["dhtAddress"], a.listen.as_str(), "{status}");
    assert_eq!(status["dhtBootstrap"][0], node.addr.as_str(), "{status}");
    assert_eq!(status["swarmTopics"], 1, "{status}");
    let human = ok(&a, &["status"]);
    assert!(
        human.contains(&format!("on {}, bootstrapping from", a.listen)),
        "{human}"
    );
    let url = created["url"].as_str().unwrap().to_string();
    let file = tmp.path().join("hello.txt");
    std::fs::write(&file, "found over the DHT\n").unwrap();
    ok(
        &a,
        &[
            "drive",
            "put",
            file.to_str().unwrap(),
            &format!("{url}/hello.txt"),
        ],
    );

    ok(&b, &["drive", "follow", &url]);
    // No `peer connect`: the file is there once the DHT walk has found and dialed A
    // and the drive's first blocks came (a read before that finds nothing yet).
    let text = cat_eventually(&b, &format!("{url}/hello.txt"));
    assert_eq!(text, b"found over the DHT\n");
    // B's walk found A: `swarm status` says so.
    let key = created["key"].as_str().unwrap();
    let swarm = b.ctl_json(&["swarm", "status"]).unwrap();
    assert_eq!(swarm["dhtAddress"], b.listen.as_str(), "{swarm}");
    let topic = &swarm["topics"][0];
    assert_eq!(topic["key"], key, "{swarm}");
    assert!(topic["walks"].as_u64().unwrap() >= 1, "{swarm}");
    assert_eq!(topic["peersFound"], 1, "{swarm}");
    assert_eq!(topic["lastError"], "", "{swarm}");
    let human = ok(&b, &["swarm", "status"]);
    assert!(human.contains("PEERS FOUND"), "{human}");
    let peers = b.ctl_json(&["peer", "ls"]).unwrap();
    assert!(
        peers.to_string().contains(&a.listen),
        "B is connected to A ({}): {peers}",
        a.listen
    );

    // Both restart: they join again what they hold, and find each other again.
    for d in [&mut a, &mut b] {
        assert!(d.ctl(&["stop"]).unwrap().status.success());
        d.wait_exit().unwrap();
        d.restart().unwrap();
    }
    std::fs::write(&file, "after a restart\n").unwrap();
    ok(
        &a,
        &[
            "drive",
            "put",
            file.to_str().unwrap(),
            &format!("{url}/later.txt"),
        ],
    );
    let later = cat_eventually(&b, &format!("{url}/later.txt"));
    assert_eq!(later, b"after a restart\n");
    assert!(node.is_running());
}

/// A hundred drives joined at once (created one after another, then all rejoined at a
/// restart) are all announced, a few walks at a time, each without error.
#[test]
fn many_drives_joined_at_once_are_all_announced() {
    let node = BootstrapNode::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut d = daemon(&tmp.path().join("home"), &node.addr);
    for _ in 0..100 {
        ok(&d, &["drive", "create"]);
    }
    let all_walked = |d: &Daemon| {
        let swarm = eventually(Duration::from_secs(60), "100 drives walked", || {
            let swarm = d.ctl_json(&["swarm", "status"]).unwrap();
            let topics = swarm["topics"].as_array().unwrap();
            let walked = topics
                .iter()
                .filter(|t| t["walks"].as_u64() >= Some(1))
                .count();
            (topics.len() == 100 && walked == 100).then_some(swarm)
        });
        let topics = swarm["topics"].as_array().unwrap();
        assert!(topics.iter().all(|t| t["lastError"] == ""), "{swarm}");
    };
    all_walked(&d);
    assert!(d.ctl(&["stop"]).unwrap().status.success());
    d.wait_exit().unwrap();
    d.restart().unwrap();
    all_walked(&d);
}

/// A DHT node that lies: every `peers` answer names the daemon itself, a closed port and
/// addresses where nothing listens. The daemon records the walk, dials none of them
/// successfully, connects to nobody, and keeps serving.
#[test]
fn fake_peers_answers_are_survived() {
    use hyperswarm::compact::encode_peers;
    use hyperswarm::{Message, MessageType, PeersOutput};
    use prost::Message as _;
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

    let liar = UdpSocket::bind("127.0.0.2:0").unwrap();
    liar.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let liar_addr = liar.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp.path().join("home"), &liar_addr);
    let own: SocketAddrV4 = d.listen.parse().unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        addr
    };
    let nowhere = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 77), 9);
    let lies = PeersOutput {
        peers: Some(encode_peers(&[own, closed, nowhere]).into()),
        local_peers: None,
    }
    .encode_to_vec();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let answering = std::thread::spawn(move || {
        let mut answered = 0;
        let mut buf = [0; 2048];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((len, from)) = liar.recv_from(&mut buf) else {
                continue;
            };
            let Ok(request) = Message::decode(&buf[..len]) else {
                continue;
            };
            let answer = Message {
                version: Some(1),
                kind: MessageType::Response,
                rid: request.rid,
                to: None,
                id: Some(vec![0x42; 32].into()),
                target: None,
                closer_nodes: Some(vec![].into()),
                roundtrip_token: Some(vec![0x24; 32].into()),
                command: None,
                error: None,
                value: Some(lies.clone().into()),
            };
            liar.send_to(&answer.encode(), from).unwrap();
            answered += 1;
        }
        answered
    });
    ok(&d, &["drive", "create"]);
    let swarm = first_walk(&d);
    assert_eq!(swarm["topics"][0]["peersFound"], 3, "{swarm}");
    assert_eq!(swarm["topics"][0]["lastError"], "", "{swarm}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(answering.join().unwrap() >= 2, "the query and the update");
    let peers = d.ctl_json(&["peer", "ls"]).unwrap();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 0, "{peers}");
    assert!(!d.log().contains("connected to ourselves"), "{}", d.log());
    assert!(d.ctl(&["status"]).unwrap().status.success());
}

/// Bootstrap entries may be names, resolved at start (the Dat2 DHT takes their IPv4
/// addresses).
#[test]
fn a_bootstrap_node_given_by_name_is_resolved_and_used() {
    let node = BootstrapNode::start_on("127.0.0.1").unwrap();
    let port = node.addr.rsplit(':').next().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(&tmp.path().join("home"), &format!("localhost:{port}"));
    ok(&d, &["drive", "create"]);
    let swarm = first_walk(&d);
    assert_eq!(
        swarm["bootstrap"][0],
        format!("127.0.0.1:{port}"),
        "{swarm}"
    );
    assert_eq!(swarm["topics"][0]["lastError"], "", "{swarm}");
}
