//! Drives in the daemon: created and followed, described, listed, mirrored, removed, and
//! all of it kept across restarts. Real daemons (in this process) on real homes, real TCP
//! on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use hyperd::{Daemon, DriveInfo, ErrorKind, StartOptions};
use hyperd_config::{Config, Home};
use hyperdrive::WriteOptions;

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

/// Waits until `check` of the drive's info holds.
async fn eventually(
    daemon: &Daemon,
    info: &DriveInfo,
    what: &str,
    check: impl Fn(&DriveInfo) -> bool,
) {
    let start = Instant::now();
    loop {
        let now = daemon.drive_info(&info.key).await.unwrap();
        if check(&now) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(daemon: &Daemon, info: &DriveInfo, path: &str, data: &[u8]) {
    let drive = daemon.drive(&info.key).unwrap();
    drive
        .write_file(path, data, WriteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_are_created_followed_listed_removed_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;

    let docs = a.create_drive("docs").await.unwrap();
    assert!(docs.writable);
    assert_eq!(docs.name.as_deref(), Some("docs"));
    assert_eq!(docs.version, 1, "a new drive holds its header");
    assert!(docs.content_key.is_some());
    // The same name is the same drive; no name is a new one; a core of that name is
    // another thing.
    assert_eq!(a.create_drive("docs").await.unwrap().key, docs.key);
    let unnamed = a.create_drive("").await.unwrap();
    assert_ne!(unnamed.key, docs.key);
    assert_eq!(unnamed.name, None);
    assert_ne!(a.create("docs", false).await.unwrap().key, docs.key);
    let long = a.create_drive(&"n".repeat(300)).await.unwrap_err();
    assert_eq!(long.kind, ErrorKind::InvalidArgument, "{long}");

    write(&a, &docs, "/readme.md", b"hello drives").await;
    write(&a, &docs, "/big.bin", &vec![7u8; 3 << 20]).await;
    let written = a.drive_info(&docs.key).await.unwrap();
    assert_eq!(written.version, 3);
    assert_eq!(written.content_blocks, written.content_blocks_stored);

    // B follows it sparsely: it learns the version peers announce before reading
    // anything, and fetches only what it reads.
    let b_home = dir.path().join("b");
    let (b, b_lock) = start(&b_home).await;
    b.dial(&listen_address(&a).await, None, false)
        .await
        .unwrap();
    let followed = b.follow_drive(docs.key, false).await.unwrap();
    assert!(!followed.writable && !followed.all);
    eventually(&b, &followed, "the announced version", |i| i.version == 3).await;
    let drive = b.drive(&docs.key).unwrap();
    assert_eq!(
        drive.read_file("/readme.md").await.unwrap(),
        b"hello drives"
    );
    let info = b.drive_info(&docs.key).await.unwrap();
    assert!(info.content_key.is_some());
    assert!(
        info.content_blocks_stored < info.content_blocks,
        "sparse: the big file was not fetched: {info:?}"
    );
    let listed: Vec<_> = b
        .list_drives()
        .await
        .unwrap()
        .iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(listed, [docs.key]);

    // Restarted, B holds it again and reads what it stored without A.
    b.shutdown().await;
    drop(b_lock);
    drop(b);
    let (b, b_lock) = start(&b_home).await;
    let listed: Vec<_> = b
        .list_drives()
        .await
        .unwrap()
        .iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(listed, [docs.key]);
    let drive = b.drive(&docs.key).unwrap();
    assert_eq!(
        drive.read_file("/readme.md").await.unwrap(),
        b"hello drives"
    );

    // Removed, it is gone, and stays gone after a restart.
    b.remove_drive(&docs.key).await.unwrap();
    let gone = b.drive_info(&docs.key).await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound, "{gone}");
    assert!(gone.message.contains(&docs.key.to_string()), "{gone}");
    assert!(b.list_drives().await.unwrap().is_empty());
    b.shutdown().await;
    drop(b_lock);
    drop(b);
    let (b, _b_lock) = start(&b_home).await;
    assert!(b.list_drives().await.unwrap().is_empty());
    assert_eq!(
        b.remove_drive(&docs.key).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_followed_with_all_is_mirrored_live() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;
    let (b, _b_lock) = start(&dir.path().join("b")).await;
    let site = a.create_drive("site").await.unwrap();
    for n in 0..3 {
        write(&a, &site, &format!("/page{n}.html"), &vec![n; 100_000]).await;
    }
    b.dial(&listen_address(&a).await, None, false)
        .await
        .unwrap();
    let followed = b.follow_drive(site.key, true).await.unwrap();
    assert!(followed.all);
    let complete = |i: &DriveInfo| {
        i.metadata_blocks_stored == i.metadata_blocks
            && i.content_blocks > 0
            && i.content_blocks_stored == i.content_blocks
    };
    eventually(&b, &followed, "every block, without a read", |i| {
        i.version == 4 && complete(i)
    })
    .await;
    // Live: what A writes next arrives too.
    write(&a, &site, "/later.html", b"later").await;
    eventually(&b, &followed, "the new file's blocks", |i| {
        i.version == 5 && complete(i)
    })
    .await;
    let drive = b.drive(&site.key).unwrap();
    a.shutdown().await;
    assert_eq!(drive.read_file("/later.html").await.unwrap(), b"later");
    b.shutdown().await;
}
