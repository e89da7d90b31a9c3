//! What a hostile test of the running daemon broke, each checked from outside with real
//! processes: a removed core re-created under its old key, streams on a removed core,
//! error codes that disagreed between calls, a sparse follow that showed length 0, a
//! home readable by other users, and an append cut off by the daemon dying.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::{
    AppendRequest, ClearRequest, CreateRequest, DownloadRequest, ReadRequest, RemoveRequest,
    WatchRequest,
};
use hyperd_tests::daemon::Daemon;
use hyperd_tests::eventually;
use serde_json::Value;
use tonic::Code;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_removed_core_is_not_forked_and_a_fork_spares_the_other_cores() {
    let a = Daemon::start().unwrap();
    let b = Daemon::start().unwrap();
    let x = a.ctl_json(&["core", "create", "--name", "x"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let y = a.ctl_json(&["core", "create", "--name", "y"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    a.ctl_json(&["core", "append", &x, "x0", "x1", "x2"])
        .unwrap();
    a.ctl_json(&["core", "append", &y, "y0"]).unwrap();

    let out = b.ctl(&["peer", "connect", &a.listen]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    b.ctl_json(&["core", "follow", &x, "--all"]).unwrap();
    b.ctl_json(&["core", "follow", &y, "--all"]).unwrap();
    let stored = |core: &str, n: u64| {
        let info = b.ctl_json(&["core", "info", core]).unwrap();
        (info["downloadedBlocks"] == n).then_some(())
    };
    eventually(Duration::from_secs(20), "B to mirror x", || stored(&x, 3));
    eventually(Duration::from_secs(20), "B to mirror y", || stored(&y, 1));

    // A removes x; creating the same name again would sign a second history: refused.
    a.ctl_json(&["core", "rm", &x]).unwrap();
    let out = a.ctl(&["core", "create", "--name", "x"]).unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("removed") && message.contains("--force") || message.contains("force"),
        "{message}"
    );
    assert!(message.contains(&x), "{message}");
    let listed = a.ctl_json(&["core", "list"]).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Asked for explicitly, with a warning, it is: and it is a fork.
    let out = a
        .ctl(&["core", "create", "--name", "x", "--force"])
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    a.ctl_json(&[
        "core", "append", &x, "other 0", "other 1", "other 2", "other 3",
    ])
    .unwrap();

    // B refuses the fork's blocks for x, keeps what it had, and y still syncs over the
    // same connection.
    a.ctl_json(&["core", "append", &y, "y1", "y2"]).unwrap();
    eventually(Duration::from_secs(20), "y's new blocks to reach B", || {
        stored(&y, 3)
    });
    let info = b.ctl_json(&["core", "info", &x]).unwrap();
    assert_eq!(info["downloadedBlocks"], 3, "{info}");
    let audit = b.ctl_json(&["core", "audit", &x]).unwrap();
    assert_eq!(
        (audit["valid"].as_u64(), audit["invalid"].as_u64()),
        (Some(3), Some(0))
    );
    let out = b.ctl(&["core", "get", &x, "1"]).unwrap();
    assert_eq!(out.stdout, b"x1");
    let peers = b.ctl_json(&["peer", "ls"]).unwrap();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1, "{peers}");
    // B did meet the fork, and dropped x's channel for it.
    assert!(
        b.log().contains("stopped replicating a core with a peer"),
        "{}",
        b.log()
    );
    assert!(
        !b.log().contains("left:"),
        "the connection was dropped\n{}",
        b.log()
    );
}

/// Reads a stream to its end: `Ok` if it ended cleanly, its error otherwise.
async fn last<T>(mut stream: tonic::Streaming<T>) -> Result<(), tonic::Status> {
    loop {
        if stream.message().await?.is_none() {
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_a_removed_core_end_with_not_found() {
    let daemon = Daemon::start().unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let key = cores
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key;
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![Bytes::from_static(b"a")],
        })
        .await
        .unwrap();
    let watch = cores
        .watch(WatchRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    let download = cores
        .download(DownloadRequest {
            key: key.clone(),
            start: 0,
            end: Some(100),
            linear: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut read = cores
        .read(ReadRequest {
            key: key.clone(),
            start: 0,
            end: None,
            live: true,
            wait: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.message().await.unwrap().unwrap().index, 0);
    cores
        .remove(RemoveRequest { key: key.clone() })
        .await
        .unwrap();

    fn ended(name: &str, result: Result<(), tonic::Status>) {
        let status = result.expect_err(name);
        assert_eq!(status.code(), Code::NotFound, "{name}: {status}");
        assert!(status.message().contains("removed"), "{name}: {status}");
    }
    let deadline = Duration::from_secs(5);
    ended(
        "watch",
        tokio::time::timeout(deadline, last(watch))
            .await
            .expect("watch did not end"),
    );
    ended(
        "download",
        tokio::time::timeout(deadline, last(download))
            .await
            .expect("download did not end"),
    );
    ended(
        "read",
        tokio::time::timeout(deadline, last(read))
            .await
            .expect("read did not end"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_get_the_same_codes_from_every_call() {
    let daemon = Daemon::start().unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let key = cores
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key;
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        })
        .await
        .unwrap();
    let huge = (1u64 << 53) + 1;
    let read = |start, end| ReadRequest {
        key: key.clone(),
        start,
        end,
        live: false,
        wait: false,
    };
    // Read past the end: OUT_OF_RANGE before anything is sent, with or without `end`, as
    // Get says.
    for (start, end) in [(0, Some(5)), (3, None), (2, Some(3))] {
        let status = cores.read(read(start, end)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::OutOfRange,
            "{start}..{end:?}: {status}"
        );
        assert!(status.message().contains("2 blocks"), "{status}");
    }
    // Reading from the end is an empty range, not an error.
    let empty: Vec<_> = cores
        .read(read(2, None))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(empty.is_empty());
    // Past 2^53: INVALID_ARGUMENT for every call, at once (a download used to hang).
    let start = Instant::now();
    let status = cores
        .download(DownloadRequest {
            key: key.clone(),
            start: 0,
            end: Some(huge),
            linear: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let status = cores
        .clear(ClearRequest {
            key: key.clone(),
            start: 0,
            end: Some(huge),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let status = cores.read(read(huge, None)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let status = cores
        .clear(ClearRequest {
            key: key.clone(),
            start: 0,
            end: Some(7),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
}

#[test]
fn a_refused_dial_is_not_reported_as_a_lost_daemon() {
    let daemon = Daemon::start().unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = daemon
        .ctl(&["peer", "connect", &format!("127.0.0.1:{port}"), "--once"])
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(!message.contains("lost the connection"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    // The daemon is fine.
    daemon.ctl_json(&["status"]).unwrap();
}

#[test]
fn a_sparse_follow_shows_the_length_peers_have() {
    let a = Daemon::start().unwrap();
    let b = Daemon::start().unwrap();
    let key = a.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let file = a.home.with_file_name("blocks");
    std::fs::write(&file, vec![7u8; 4096 * 16]).unwrap();
    let out = a
        .ctl(&[
            "core",
            "append",
            &key,
            "--file",
            file.to_str().unwrap(),
            "--block-size",
            "16",
        ])
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    b.ctl_json(&["peer", "connect", &a.listen]).unwrap();
    b.ctl_json(&["core", "follow", &key]).unwrap();
    let info: Value = eventually(Duration::from_secs(20), "B to learn the length", || {
        let info = b.ctl_json(&["core", "info", &key]).unwrap();
        (info["length"] == 4096).then_some(info)
    });
    assert_eq!(info["downloadedBlocks"], 0, "{info}");
    assert_eq!(info["peerLength"], 4096, "{info}");
    let text = String::from_utf8(b.ctl(&["core", "info", &key]).unwrap().stdout).unwrap();
    assert!(text.contains("0 of 4096 blocks"), "{text}");
    // And it follows appends.
    a.ctl_json(&["core", "append", &key, "one more"]).unwrap();
    eventually(Duration::from_secs(20), "B to learn the new length", || {
        let info = b.ctl_json(&["core", "info", &key]).unwrap();
        (info["length"] == 4097).then_some(())
    });
}

#[test]
fn a_home_readable_by_others_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start_in(&home, "127.0.0.1:0").unwrap();
    assert_eq!(mode(&home), 0o700);
    assert!(
        daemon.log().contains("readable by other users"),
        "{}",
        daemon.log()
    );
    let key = daemon.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.ctl_json(&["core", "append", &key, "x"]).unwrap();
    let other = Daemon::start().unwrap();
    let theirs = other.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.ctl_json(&["core", "follow", &theirs]).unwrap();
    // Every file hyperd made is private, whatever its umask was.
    for entry in walk(&home) {
        let m = mode(&entry);
        // The socket's mode is set on its own (0600 too, but it is not a file we made).
        if entry.extension().is_none_or(|e| e != "sock") {
            assert_eq!(m & 0o077, 0, "{} is {m:o}", entry.display());
        }
    }
    assert_eq!(mode(&home.join("state.json")), 0o600);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn an_append_cut_off_by_the_daemon_dying_says_what_was_committed() {
    let mut daemon = Daemon::start().unwrap();
    let key = daemon.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // An endless input: the append runs until the daemon is killed.
    let append = std::process::Command::new(hyperd_tests::daemon::bin("hyperctl").unwrap())
        .arg("--home")
        .arg(&daemon.home)
        .args([
            "core",
            "append",
            &key,
            "--file",
            "/dev/zero",
            "--block-size",
            "65536",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    daemon.signal_and_wait(9).unwrap();
    let out = append.wait_with_output().unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    let committed: u64 = message
        .split_whitespace()
        .zip(message.split_whitespace().skip(1))
        .find(|(_, next)| next.starts_with("block"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no committed count in {message:?}"));
    assert!(committed > 0, "{message}");
    eprintln!("hyperctl said: {message}");
    assert!(message.contains("committed"), "{message}");
    // Everything it reported committed is there after a restart.
    daemon.restart().unwrap();
    let info = daemon.ctl_json(&["core", "info", &key]).unwrap();
    assert!(
        info["length"].as_u64().unwrap() >= committed,
        "{info} vs {message}"
    );
}
