//! `hyperd` and real JS `hypercore@9` peers (`tests/interop/`): a JS clone downloads a
//! core the daemon serves, and the daemon follows and reads a core a JS peer serves.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use hyperd_tests::daemon::Daemon;
use hyperd_tests::{blake2b_concat, make_block, node};

#[test]
fn js_clone_downloads_a_core_served_by_hyperd() {
    let daemon = Daemon::start().unwrap();
    let created = daemon.ctl_json(&["core", "create"]).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let blocks: Vec<Vec<u8>> = (0..40).map(|i| make_block(i, 3000 + i as usize)).collect();
    let file = daemon.home.join("blocks");
    // Binary blocks of different sizes go through `--file`: a file no larger than the
    // block size becomes one block.
    for block in &blocks {
        std::fs::write(&file, block).unwrap();
        daemon
            .ctl_json(&[
                "core",
                "append",
                &key,
                "--file",
                file.to_str().unwrap(),
                "--block-size",
                "1048576",
            ])
            .unwrap();
    }
    let expected = blake2b_concat(blocks.iter().map(Vec::as_slice));

    let dir = tempfile::tempdir().unwrap();
    let out = node("clone.js")
        .unwrap()
        .args(["--key", &key, "--connect", &daemon.listen, "--dir"])
        .arg(dir.path())
        .args([
            "--mode",
            "full",
            "--expect-length",
            "40",
            "--timeout",
            "30000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "JS clone failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["length"], 40);
    assert_eq!(result["blake2b"], expected.as_str(), "{result}");
    let peer_key = daemon.ctl_json(&["status"]).unwrap()["peerKey"].clone();
    assert_eq!(result["remotePublicKey"], peer_key);
}

#[test]
fn hyperd_follows_and_reads_a_core_served_by_js() {
    let seed_dir = tempfile::tempdir().unwrap();
    let mut seed = node("seed.js")
        .unwrap()
        .arg("--dir")
        .arg(seed_dir.path())
        .args(["--blocks", "25", "--size", "5000"])
        .args(["--append-interval", "300", "--append-count", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(seed.stdout.take().unwrap()).lines();
    let ready: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ready["event"], "ready", "{ready}");
    let key = ready["key"].as_str().unwrap().to_string();
    let address = format!("127.0.0.1:{}", ready["port"]);

    let daemon = Daemon::start().unwrap();
    let followed = daemon
        .ctl_json(&["core", "follow", &format!("hyper://{key}")])
        .unwrap();
    assert_eq!(followed["writable"], false);
    let out = daemon.ctl(&["peer", "connect", &address]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A range download, then an open-ended one (up to the length the seeder announced),
    // then read what arrived.
    let progress = daemon
        .ctl_json(&["core", "download", &key, "--start", "0", "--end", "20"])
        .unwrap();
    assert_eq!(progress["downloaded"], 20, "{progress}");
    assert_eq!(progress["done"], true, "{progress}");
    let progress = daemon.ctl_json(&["core", "download", &key]).unwrap();
    assert_eq!(progress["done"], true, "{progress}");
    assert!(progress["total"].as_u64().unwrap() >= 25, "{progress}");
    assert_eq!(progress["downloaded"], progress["total"], "{progress}");
    let out = daemon
        .ctl(&["core", "cat", &key, "--start", "0", "--end", "25"])
        .unwrap();
    let expected: Vec<u8> = (0..25).flat_map(|i| make_block(i, 5000)).collect();
    assert!(
        out.stdout == expected,
        "the blocks read match the JS seeder's"
    );

    // The seeder's live appends arrive too.
    let out = daemon
        .ctl(&["core", "get", &key, "27", "--timeout-ms", "15000"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert_eq!(out.stdout, make_block(27, 5000));
    let info = daemon.ctl_json(&["core", "info", &key]).unwrap();
    assert!(info["length"].as_u64().unwrap() >= 28, "{info}");
    assert_eq!(info["peers"], 1, "{info}");

    drop(seed.stdin.take());
    let _ = wait(&mut seed, Duration::from_secs(10));
}

fn wait(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}
