//! A daemon's shutdown with everything running — a follow mirroring, a peer connected, a
//! redial waiting in its backoff, an open live Read stream — ends every task it started,
//! promptly. Real daemons (in this process) on real homes, real TCP on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hyperd::{BlockRange, Daemon, ErrorKind, StartOptions};
use hyperd_config::{Config, Home};

/// A daemon and the lock on its home.
async fn start(home: &Path) -> (Daemon, impl Sized) {
    let config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    let options = StartOptions { file_limit: 1024 };
    Daemon::start(Home::at(home), &config, options)
        .await
        .unwrap()
}

async fn listen_address(daemon: &Daemon) -> String {
    let status = daemon.status().await.unwrap();
    status.listen_address.unwrap().to_string()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn running(daemon: &Daemon, name: &str) -> bool {
    daemon.running_tasks().iter().any(|(n, _)| *n == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_everything_running_ends_every_task_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a) = start(&dir.path().join("a")).await;
    let (b, _b) = start(&dir.path().join("b")).await;
    let (c, _c) = start(&dir.path().join("c")).await;

    let info = a.create("shared", false, None).await.unwrap();
    let core = a.writable_core(&info.key).await.unwrap();
    let blocks = vec![Bytes::from("zero"), Bytes::from("one"), Bytes::from("two")];
    a.append(&core, blocks).await.unwrap();

    // B: connected to A, following its core in full, reading it live.
    b.dial(&listen_address(&a).await, None, false)
        .await
        .unwrap();
    b.follow(info.key, true, None).await.unwrap();
    let mut read = b
        .read(
            &info.key,
            BlockRange {
                start: 0,
                end: None,
            },
            true,
            true,
        )
        .await
        .unwrap();
    for expected in 0..3 {
        let (index, _) = read.next().await.unwrap().unwrap();
        assert_eq!(index, expected);
    }
    // ... and remembering C, which goes away: B redials it after a backoff.
    b.dial(&listen_address(&c).await, None, false)
        .await
        .unwrap();
    c.shutdown().await;
    eventually("B to see C leave", || b.peers().0.len() == 1).await;

    for name in [
        "mirroring a followed core",
        "replicating with a peer",
        "redialing a remembered peer",
        "accepting peer connections",
    ] {
        assert!(running(&b, name), "{name}: {:?}", b.running_tasks());
    }

    let started = Instant::now();
    b.shutdown().await;
    let took = started.elapsed();
    assert!(
        b.running_tasks().is_empty(),
        "still running: {:?}",
        b.running_tasks()
    );
    // Nothing waited for a timeout: well under the 5 s the shutdown allows.
    assert!(took < Duration::from_secs(2), "the shutdown took {took:?}");
    // The open stream was told why it ended.
    let end = read.next().await.unwrap().unwrap_err();
    assert_eq!(end.kind, ErrorKind::Aborted, "{end}");
    assert!(read.next().await.is_none());

    // A saw B leave and goes on.
    eventually("A to see B leave", || a.peers().0.is_empty()).await;
    a.shutdown().await;
    assert!(a.running_tasks().is_empty(), "{:?}", a.running_tasks());
}
