//! What `hyperd` announces and looks up, checked from outside: a DHT client in the test
//! asks the bootstrap node who announced a core. A created core is announced (a second
//! daemon that follows it finds it and reads it); a followed core is only looked up
//! until `core seed`; `core unseed` withdraws the announcement; all of it is persisted
//! and holds after both daemons restart. The flags of create, follow and seed pick the
//! halves, and the swarm commands refuse unknown or malformed keys. `swarm peers` tells
//! how each connection came about.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use hypercore::PublicKey;
use hyperd_tests::daemon::Daemon;
use hyperd_tests::eventually;
use hyperd_tests::swarm::{daemon_with_bootstrap, BootstrapNode};
use hyperswarm::{Dht, Id};
use serde_json::Value;

fn daemon(home: &Path, bootstrap: &str) -> Daemon {
    daemon_with_bootstrap(home, bootstrap, "127.0.0.1:0").unwrap()
}

/// Asks the DHT who announced cores, as any peer would.
struct Observer {
    runtime: tokio::runtime::Runtime,
    dht: Dht,
}

impl Observer {
    fn new(bootstrap: &str) -> Observer {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let bootstrap: SocketAddrV4 = bootstrap.parse().unwrap();
        let dht = runtime
            .block_on(Dht::bind("127.0.0.1:0".parse().unwrap(), vec![bootstrap]))
            .unwrap();
        Observer { runtime, dht }
    }

    /// The addresses announced under the core `key`.
    fn announced(&self, key: &str) -> BTreeSet<String> {
        let key: PublicKey = key.parse().unwrap();
        let topic = Id(key.discovery_key().0);
        let found = self.runtime.block_on(self.dht.lookup(topic)).unwrap();
        found.iter().map(|p| p.addr.to_string()).collect()
    }

    /// Waits until exactly `want` are announced under `key`.
    fn expect(&self, key: &str, want: &[&str], what: &str) {
        let want: BTreeSet<String> = want.iter().map(|a| a.to_string()).collect();
        eventually(Duration::from_secs(30), what, || {
            (self.announced(key) == want).then_some(())
        });
    }
}

/// The topic `key` of `swarm ls`, once its first walk (since the daemon started) is done.
fn walked(daemon: &Daemon, key: &str) -> Value {
    eventually(Duration::from_secs(30), "a walk", || {
        let listed = daemon.ctl_json(&["swarm", "ls"]).unwrap();
        let topics = listed["topics"].as_array().unwrap().clone();
        let topic = topics.into_iter().find(|t| t["key"] == key)?;
        (topic["walks"].as_u64() >= Some(1)).then_some(topic)
    })
}

fn joined(daemon: &Daemon) -> Vec<(String, bool, bool)> {
    let listed = daemon.ctl_json(&["swarm", "ls"]).unwrap();
    listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["announce"].as_bool().unwrap(),
                t["lookup"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn created_cores_are_announced_followed_ones_looked_up_and_seeding_persists() {
    let node = BootstrapNode::start().unwrap();
    let observer = Observer::new(&node.addr);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = daemon(&tmp.path().join("a"), &node.addr);
    let mut b = daemon(&tmp.path().join("b"), &node.addr);

    // A created core is announced and looked up.
    let key = a.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    a.ctl_ok(&["core", "append", &key, "found by key"]).unwrap();
    assert_eq!(joined(&a), vec![(key.clone(), true, true)]);
    observer.expect(&key, &[&a.listen], "A to announce the core it created");

    // B follows it, looked up only, finds A and reads the block, without `peer connect`.
    b.ctl_ok(&["core", "follow", &key]).unwrap();
    assert_eq!(joined(&b), vec![(key.clone(), false, true)]);
    let block = b
        .ctl_ok(&["core", "get", &key, "0", "--timeout-ms", "30000"])
        .unwrap();
    assert_eq!(block, b"found by key");
    // Its walk is done and announced nothing.
    let topic = walked(&b, &key);
    assert_eq!(topic["found"], serde_json::json!([a.listen]), "{topic}");
    assert_eq!(observer.announced(&key), BTreeSet::from([a.listen.clone()]));

    // Seeded, B is announced too; unseeded, A withdraws its announcement.
    let seeded = b.ctl_json(&["core", "seed", &key]).unwrap();
    assert_eq!(seeded["announce"], true, "{seeded}");
    observer.expect(&key, &[&a.listen, &b.listen], "B to announce once seeded");
    a.ctl_ok(&["core", "unseed", &key]).unwrap();
    assert!(joined(&a).is_empty());
    observer.expect(&key, &[&b.listen], "A to withdraw its announcement");

    // Both restart: B announces again (it was seeded), A stays out of the swarm.
    for d in [&mut a, &mut b] {
        assert!(d.ctl(&["stop"]).unwrap().status.success());
        d.wait_exit().unwrap();
        d.restart().unwrap();
    }
    assert!(joined(&a).is_empty(), "{:?}", joined(&a));
    assert_eq!(joined(&b), vec![(key.clone(), true, true)]);
    walked(&b, &key);
    assert_eq!(observer.announced(&key), BTreeSet::from([b.listen.clone()]));
    // Seeded again, A's announce walk finds B and dials it: B gets the new block.
    a.ctl_ok(&["core", "append", &key, "second"]).unwrap();
    a.ctl_ok(&["core", "seed", &key]).unwrap();
    let second = b
        .ctl_ok(&["core", "get", &key, "1", "--timeout-ms", "30000"])
        .unwrap();
    assert_eq!(second, b"second");
}

#[test]
fn flags_pick_what_is_announced_and_looked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(&tmp.path().join("a"), "127.0.0.1:0").unwrap();

    // Without a DHT the choices are still kept (and shown), ready for one.
    let drive = daemon
        .ctl_json(&["drive", "create", "--no-announce"])
        .unwrap();
    let drive_key = drive["key"].as_str().unwrap().to_string();
    let core = daemon.ctl_json(&["core", "create", "--no-lookup"]).unwrap();
    let core_key = core["key"].as_str().unwrap().to_string();
    let mut want = vec![
        (drive_key.clone(), false, true),
        (core_key.clone(), true, false),
    ];
    want.sort();
    assert_eq!(joined(&daemon), want);

    let seeded = daemon
        .ctl_json(&[
            "drive",
            "seed",
            &format!("hyper://{drive_key}/"),
            "--no-lookup",
        ])
        .unwrap();
    assert_eq!(
        (seeded["announce"].clone(), seeded["lookup"].clone()),
        (true.into(), false.into())
    );
    daemon
        .ctl_ok(&["swarm", "join", &format!("hyper://{core_key}")])
        .unwrap();
    daemon.ctl_ok(&["drive", "unseed", &drive_key]).unwrap();
    assert_eq!(joined(&daemon), vec![(core_key.clone(), true, true)]);
    let human = String::from_utf8(daemon.ctl_ok(&["swarm", "ls"]).unwrap()).unwrap();
    assert!(human.contains("announce+lookup"), "{human}");
    daemon.ctl_ok(&["swarm", "leave", &core_key]).unwrap();
    assert!(joined(&daemon).is_empty());

    // Unknown and malformed keys are refused with what was wrong.
    let unknown = "ab".repeat(32);
    let out = daemon.ctl(&["swarm", "join", &unknown]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no core {unknown}")), "{err}");
    let out = daemon.ctl(&["core", "seed", "1234"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid key"));
    // Removing a core takes it out of the swarm.
    daemon.ctl_ok(&["core", "seed", &core_key]).unwrap();
    daemon.ctl_ok(&["core", "rm", &core_key]).unwrap();
    assert!(joined(&daemon).is_empty());
}
