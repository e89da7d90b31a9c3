//! Drives in the daemon: created and followed, described, listed, mirrored, removed, and
//! all of it kept across restarts. Real daemons (in this process) on real homes, real TCP
//! on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use hyperd::{
    Daemon, DaemonError, DriveInfo, DriveLocation, ErrorKind, StartOptions, TransferUpdate,
};
use hyperd_config::{Config, Home};
use hyperdrive::{
    DriveChange, ExportOptions, HistoryEntry, ImportOptions, MountOptions, ReaddirOptions, Totals,
    WriteOptions,
};

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

    let docs = a.create_drive("docs", None).await.unwrap();
    assert!(docs.writable);
    assert_eq!(docs.name.as_deref(), Some("docs"));
    assert_eq!(docs.version, 1, "a new drive holds its header");
    assert!(docs.content_key.is_some());
    // The same name is the same drive; no name is a new one; a core of that name is
    // another thing.
    assert_eq!(a.create_drive("docs", None).await.unwrap().key, docs.key);
    let unnamed = a.create_drive("", None).await.unwrap();
    assert_ne!(unnamed.key, docs.key);
    assert_eq!(unnamed.name, None);
    assert_ne!(a.create("docs", false, None).await.unwrap().key, docs.key);
    let long = a.create_drive(&"n".repeat(300), None).await.unwrap_err();
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
    let followed = b.follow_drive(docs.key, false, None).await.unwrap();
    assert!(!followed.writable && !followed.all);
    eventually(&b, &followed, "the announced version", |i| i.version == 3).await;
    // Files are counted from the metadata stored here, which B does not have yet: Info
    // says so, and fetches nothing to count them.
    let files = Totals {
        version: 3,
        files: 2,
        bytes: 12 + (3 << 20),
    };
    assert_eq!(written.totals, Some(files));
    let sparse = b.drive_info(&docs.key).await.unwrap();
    assert!(
        sparse.metadata_blocks_stored < sparse.metadata_blocks,
        "{sparse:?}"
    );
    assert_eq!(sparse.totals, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = b.drive_info(&docs.key).await.unwrap();
    assert_eq!(later.metadata_blocks_stored, sparse.metadata_blocks_stored);
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

    // A location inside the drive does not remove it.
    for inside in [at(&docs, None, "/readme.md"), at(&docs, Some(2), "/")] {
        let err = b.remove_drive(&inside).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains(&inside.to_string()), "{err}");
    }
    assert_eq!(b.list_drives().await.unwrap().len(), 1);

    // Removed, it is gone, and stays gone after a restart.
    b.remove_drive(&at(&docs, None, "/")).await.unwrap();
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
        b.remove_drive(&at(&docs, None, "/"))
            .await
            .unwrap_err()
            .kind,
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
    let site = a.create_drive("site", None).await.unwrap();
    for n in 0..3 {
        write(&a, &site, &format!("/page{n}.html"), &vec![n; 100_000]).await;
    }
    b.dial(&listen_address(&a).await, None, false)
        .await
        .unwrap();
    let followed = b.follow_drive(site.key, true, None).await.unwrap();
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
    let totals = b.drive_info(&site.key).await.unwrap().totals;
    assert_eq!(
        totals,
        Some(Totals {
            version: 4,
            files: 3,
            bytes: 300_000
        })
    );
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

fn at(info: &DriveInfo, version: Option<u64>, path: &str) -> DriveLocation {
    DriveLocation {
        key: info.key,
        version,
        path: path.to_string(),
    }
}

fn chunks(
    parts: Vec<Result<Bytes, DaemonError>>,
) -> BoxStream<'static, Result<Bytes, DaemonError>> {
    futures::stream::iter(parts).boxed()
}

async fn read_all(daemon: &Daemon, at: &DriveLocation, start: u64, end: Option<u64>) -> Vec<u8> {
    let mut stream = daemon.drive_read(at, start, end, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_directories_at_locations_with_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;
    let docs = a.create_drive("docs", None).await.unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let parts = data
        .chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (stat, version) = a
        .drive_write(
            &at(&docs, None, "/dir/data.bin"),
            WriteOptions::default(),
            chunks(parts),
        )
        .await
        .unwrap();
    assert_eq!((stat.size, version), (200_000, 2));
    a.drive_mkdir(&at(&docs, None, "/empty"), Some(0o700))
        .await
        .unwrap();
    a.drive_symlink(&at(&docs, None, "/link"), "/dir/data.bin")
        .await
        .unwrap();

    // Reads: whole, ranges, through the link.
    assert_eq!(
        read_all(&a, &at(&docs, None, "/dir/data.bin"), 0, None).await,
        data
    );
    assert_eq!(
        read_all(&a, &at(&docs, None, "/link"), 70_000, Some(70_010)).await,
        data[70_000..70_010]
    );
    assert!(
        read_all(&a, &at(&docs, None, "/dir/data.bin"), 300_000, None)
            .await
            .is_empty()
    );
    let stat = a
        .drive_stat(&at(&docs, None, "/link"), false)
        .await
        .unwrap();
    assert_eq!(stat.size, 200_000);
    let link = a.drive_stat(&at(&docs, None, "/link"), true).await.unwrap();
    assert!(link.is_symlink());
    assert_eq!(
        a.drive_readlink(&at(&docs, None, "/link")).await.unwrap(),
        "/dir/data.bin"
    );
    let empty = a
        .drive_stat(&at(&docs, None, "/empty"), false)
        .await
        .unwrap();
    assert!(empty.is_dir() && empty.mode & 0o777 == 0o700);

    // Listings.
    let root = at(&docs, None, "/");
    let options = |recursive| ReaddirOptions {
        recursive,
        no_mounts: false,
    };
    let mut names: Vec<_> = a
        .drive_readdir(&root, options(false), false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "empty", "link"]);
    let deep = a.drive_readdir(&root, options(true), true).await.unwrap();
    let file = deep.iter().find(|e| e.name == "dir/data.bin").unwrap();
    assert_eq!(file.stat.size, 200_000);

    // Versions: a checkout sees the drive as it was, and cannot be written.
    let before = at(&docs, Some(1), "/dir/data.bin");
    let err = a.drive_stat(&before, false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(a
        .drive_stat(&at(&docs, Some(2), "/dir/data.bin"), false)
        .await
        .is_ok());
    for version in [0, 99] {
        let err = a
            .drive_stat(&at(&docs, Some(version), "/"), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains(&format!("version {version}")), "{err}");
    }
    let err = a
        .drive_write(&before, WriteOptions::default(), chunks(vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");

    // Errors name what failed.
    let missing = a
        .drive_stat(&at(&docs, None, "/nope"), false)
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert!(missing.message.contains("/nope"), "{missing}");
    let err = a
        .drive_read(&at(&docs, None, "/dir"), 0, None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    let err = a
        .drive_read(&at(&docs, None, "/dir/data.bin"), 10, Some(5), None)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    let err = a
        .drive_readdir(&at(&docs, None, "/link"), options(false), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    let bad = a
        .drive_write(
            &at(&docs, None, "/a/../b"),
            WriteOptions::default(),
            chunks(vec![]),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind, ErrorKind::InvalidArgument, "{bad}");

    // An upload that fails midway leaves nothing, and the next write goes through.
    let vanished = chunks(vec![
        Ok(Bytes::from(vec![1u8; 100_000])),
        Err(DaemonError::new(ErrorKind::Aborted, "the client went away")),
    ]);
    let err = a
        .drive_write(
            &at(&docs, None, "/upload"),
            WriteOptions::default(),
            vanished,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Aborted);
    let err = a
        .drive_stat(&at(&docs, None, "/upload"), false)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::NotFound,
        "nothing half-written is visible"
    );
    a.drive_write(
        &at(&docs, None, "/upload"),
        WriteOptions::default(),
        chunks(vec![Ok(Bytes::from_static(b"whole"))]),
    )
    .await
    .unwrap();
    assert_eq!(
        read_all(&a, &at(&docs, None, "/upload"), 0, None).await,
        b"whole"
    );

    // Removing: a file, an empty directory; not a full one.
    let err = a
        .drive_rm(&at(&docs, None, "/dir"), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    a.drive_rm(&at(&docs, None, "/link"), false).await.unwrap();
    a.drive_rm(&at(&docs, None, "/empty"), false).await.unwrap();
    assert!(a
        .drive_stat(&at(&docs, None, "/empty"), true)
        .await
        .is_err());
    assert!(a
        .drive_stat(&at(&docs, None, "/dir/data.bin"), true)
        .await
        .is_ok());

    // A follower cannot write, and a read of what no peer serves times out.
    let (b, _b_lock) = start(&dir.path().join("b")).await;
    b.dial(&listen_address(&a).await, None, false)
        .await
        .unwrap();
    let followed = b.follow_drive(docs.key, false, None).await.unwrap();
    let latest = a.drive_info(&docs.key).await.unwrap().version;
    eventually(&b, &followed, "the announced version", |i| {
        i.version == latest
    })
    .await;
    let err = b
        .drive_write(
            &at(&docs, None, "/mine"),
            WriteOptions::default(),
            chunks(vec![Ok(Bytes::from_static(b"x"))]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    let stat = b
        .drive_stat(&at(&docs, None, "/dir/data.bin"), false)
        .await
        .unwrap();
    assert_eq!(stat.size, 200_000);
    a.shutdown().await;
    // The reader needs the content's tree to seek, or then the blocks: either waits.
    let read = b
        .drive_read(
            &at(&docs, None, "/dir/data.bin"),
            0,
            None,
            Some(Duration::from_millis(300)),
        )
        .await;
    let err = match read {
        Ok(mut chunks) => chunks.next().await.unwrap().unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::DeadlineExceeded, "{err}");
    assert!(err.message.contains("/dir/data.bin"), "{err}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_truncates_metadata_and_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;
    let home = a.create_drive("home", None).await.unwrap();
    let photos = a.create_drive("photos", None).await.unwrap();
    let write = |path: &'static str, data: &'static [u8]| {
        let a = a.clone();
        let loc = at(&home, None, path);
        async move {
            a.drive_write(
                &loc,
                WriteOptions::default(),
                chunks(vec![Ok(Bytes::from_static(data))]),
            )
            .await
            .unwrap();
        }
    };
    write("/notes/a.txt", b"0123456789").await;

    // Not to a checkout, nor to another drive.
    for (to, kind) in [
        (
            at(&home, Some(2), "/archive"),
            ErrorKind::FailedPrecondition,
        ),
        (at(&photos, None, "/archive"), ErrorKind::InvalidArgument),
    ] {
        let err = a
            .drive_rename(&at(&home, None, "/notes"), &to)
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(&to.to_string()), "{err}");
    }
    a.drive_rename(&at(&home, None, "/notes"), &at(&home, None, "/archive"))
        .await
        .unwrap();
    assert_eq!(
        read_all(&a, &at(&home, None, "/archive/a.txt"), 0, None).await,
        b"0123456789"
    );
    let gone = a
        .drive_stat(&at(&home, None, "/notes/a.txt"), false)
        .await
        .unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);

    a.drive_truncate(&at(&home, None, "/archive/a.txt"), 4)
        .await
        .unwrap();
    assert_eq!(
        read_all(&a, &at(&home, None, "/archive/a.txt"), 0, None).await,
        b"0123"
    );
    a.drive_truncate(&at(&home, None, "/archive/a.txt"), 6)
        .await
        .unwrap();
    assert_eq!(
        read_all(&a, &at(&home, None, "/archive/a.txt"), 0, None).await,
        b"0123\0\0"
    );

    a.drive_set_metadata(
        &at(&home, None, "/archive/a.txt"),
        vec![
            ("user.tag".into(), Some(b"red".to_vec())),
            ("user.x".into(), Some(vec![1])),
        ],
    )
    .await
    .unwrap();
    a.drive_set_metadata(
        &at(&home, None, "/archive/a.txt"),
        vec![("user.x".into(), None)],
    )
    .await
    .unwrap();
    let stat = a
        .drive_stat(&at(&home, None, "/archive/a.txt"), false)
        .await
        .unwrap();
    assert_eq!(stat.metadata("user.tag"), Some(&b"red"[..]));
    assert_eq!(stat.metadata("user.x"), None);

    // A drive mounted in another: written through, listed, moved within, not across.
    a.drive_mount(
        &at(&home, None, "/photos"),
        photos.key,
        MountOptions::default(),
    )
    .await
    .unwrap();
    write("/photos/cat.jpg", b"meow").await;
    let inside = a.drive(&photos.key).unwrap();
    assert_eq!(inside.read_file("/cat.jpg").await.unwrap(), b"meow");
    let mounts = a.drive_mounts(&at(&home, None, "/")).await.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].path.as_str(), mounts[0].key),
        ("/photos", photos.key)
    );
    let across = a
        .drive_rename(
            &at(&home, None, "/archive/a.txt"),
            &at(&home, None, "/photos/a.txt"),
        )
        .await
        .unwrap_err();
    assert_eq!(across.kind, ErrorKind::InvalidArgument, "{across}");
    let taken = a
        .drive_mount(
            &at(&home, None, "/archive"),
            photos.key,
            MountOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(taken.kind, ErrorKind::AlreadyExists, "{taken}");
    a.drive_unmount(&at(&home, None, "/photos")).await.unwrap();
    assert!(a
        .drive_mounts(&at(&home, None, "/"))
        .await
        .unwrap()
        .is_empty());
    let err = a
        .drive_stat(&at(&home, None, "/photos/cat.jpg"), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_changes_downloads_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;
    let docs = a.create_drive("docs", None).await.unwrap();
    let put = |path: &'static str, data: Vec<u8>| {
        let a = a.clone();
        let loc = at(&docs, None, path);
        async move {
            a.drive_write(
                &loc,
                WriteOptions::default(),
                chunks(vec![Ok(Bytes::from(data))]),
            )
            .await
            .unwrap();
        }
    };
    put("/one.txt", vec![1; 10]).await;
    put("/two.bin", vec![2; 300_000]).await;
    a.drive_rm(&at(&docs, None, "/one.txt"), false)
        .await
        .unwrap();
    assert_eq!(a.drive_info(&docs.key).await.unwrap().version, 4);

    let diff: Vec<DriveChange> = a
        .drive_diff(&at(&docs, None, "/"), 2)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(e.version, 4, "a diff's changes carry the newer version");
            e.change
        })
        .collect()
        .await;
    assert!(
        diff.iter()
            .any(|c| matches!(c, DriveChange::Put { path, .. } if path == "two.bin")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|c| matches!(c, DriveChange::Del { path, .. } if path == "one.txt")),
        "{diff:?}"
    );
    let err = a.drive_diff(&at(&docs, None, "/"), 9).err().unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");

    let history: Vec<(u64, String)> = a
        .drive_history(&at(&docs, None, "/"), 0, None, false)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.version, e.change.path().to_string())
        })
        .collect()
        .await;
    assert_eq!(
        history,
        [
            (2, "one.txt".into()),
            (3, "two.bin".into()),
            (4, "one.txt".into())
        ]
    );
    // At a checkout, up to its version; versions past the drive's are refused.
    let history: Vec<u64> = a
        .drive_history(&at(&docs, Some(3), "/"), 0, None, false)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect()
        .await;
    assert_eq!(history, [2, 3]);
    for (at, since, until, live, names) in [
        (at(&docs, None, "/"), 9, None, false, "since 9"),
        (at(&docs, None, "/"), 0, Some(9), false, "until 9"),
        (at(&docs, Some(9), "/"), 0, None, false, "version 9"),
        (at(&docs, Some(3), "/"), 0, None, true, "checkout"),
    ] {
        let err = a.drive_history(&at, since, until, live).err().unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains(names), "{err}");
    }
    // A live history may wait for a version to come.
    assert!(a
        .drive_history(&at(&docs, None, "/"), 0, Some(9), true)
        .is_ok());

    // A watch reports what is written after it started.
    let mut watch = a.drive_watch(&at(&docs, None, "/")).await.unwrap();
    put("/three.txt", b"3".to_vec()).await;
    let change = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(change.change.path(), "three.txt");
    assert_eq!(change.version, 5);
    drop(watch);

    // A follower downloads a tree with progress, counts what it stores, clears it.
    let (b, _b_lock) = start(&dir.path().join("b")).await;
    b.dial(&listen_address(&a).await, None, false)
        .await
        .unwrap();
    let followed = b.follow_drive(docs.key, false, None).await.unwrap();
    let latest = a.drive_info(&docs.key).await.unwrap().version;
    eventually(&b, &followed, "the announced version", |i| {
        i.version == latest
    })
    .await;
    let stored = |stats: &[hyperdrive::FileStats]| -> u64 {
        stats.iter().map(|f| f.downloaded_blocks).sum()
    };
    let before = b.drive_file_stats(&at(&docs, None, "/")).await.unwrap();
    assert_eq!(stored(&before), 0);
    let updates: Vec<_> = b
        .drive_download(&at(&docs, None, "/"))
        .await
        .unwrap()
        .map(|p| p.unwrap())
        .collect()
        .await;
    let last = updates.last().unwrap();
    assert_eq!((last.files_done, last.files_total), (2, 2), "{updates:?}");
    assert_eq!(last.bytes_done, 300_001);
    let after = b.drive_file_stats(&at(&docs, None, "/")).await.unwrap();
    let total: u64 = after.iter().map(|f| f.blocks).sum();
    assert_eq!(stored(&after), total);
    let cleared = b.drive_clear(&at(&docs, None, "/two.bin")).await.unwrap();
    assert_eq!((cleared.files, cleared.bytes), (1, 300_000));
    let cleared_stats = b
        .drive_file_stats(&at(&docs, None, "/two.bin"))
        .await
        .unwrap();
    assert_eq!(stored(&cleared_stats), 0);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_are_imported_and_exported_with_progress_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;
    let site = a.create_drive("site", None).await.unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(local.join("sub dir/empty")).unwrap();
    std::fs::write(local.join("index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::write(local.join("sub dir/big.bin"), vec![9u8; 2 << 20]).unwrap();
    std::os::unix::fs::symlink("index.html", local.join("link")).unwrap();

    let run = |stream: BoxStream<'static, Result<TransferUpdate, DaemonError>>| async move {
        let updates: Vec<_> = stream.map(|u| u.unwrap()).collect().await;
        match updates.last() {
            Some(TransferUpdate::Done { summary, .. }) => summary.clone(),
            other => panic!("no summary at the end: {other:?}"),
        }
    };
    let into = at(&site, None, "/www");
    let summary = run(a
        .drive_import(local.to_str().unwrap(), &into, ImportOptions::default())
        .unwrap())
    .await;
    // The five entries and /www itself.
    assert_eq!(summary.added, 6, "{summary:?}");
    let version = a.drive_info(&site.key).await.unwrap().version;
    // Again, unchanged: nothing written.
    let again = run(a
        .drive_import(local.to_str().unwrap(), &into, ImportOptions::default())
        .unwrap())
    .await;
    assert_eq!(
        (again.added, again.changed, again.unchanged),
        (0, 0, 6),
        "{again:?}"
    );
    assert_eq!(a.drive_info(&site.key).await.unwrap().version, version);

    let out = dir.path().join("out");
    let exported = run(a
        .drive_export(&into, out.to_str().unwrap(), ExportOptions::default(), None)
        .unwrap())
    .await;
    assert_eq!(exported.added, 5, "{exported:?}");
    assert_eq!(
        std::fs::read(out.join("sub dir/big.bin")).unwrap(),
        vec![9u8; 2 << 20]
    );
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        Path::new("index.html")
    );
    assert!(out.join("sub dir/empty").is_dir());

    // Bad local paths.
    let relative = a
        .drive_import("local", &into, ImportOptions::default())
        .err()
        .unwrap();
    assert_eq!(relative.kind, ErrorKind::InvalidArgument, "{relative}");
    let missing = dir.path().join("missing");
    let err = a
        .drive_import(missing.to_str().unwrap(), &into, ImportOptions::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("missing"), "{err}");
    let err = a
        .drive_import(
            local.to_str().unwrap(),
            &at(&site, Some(1), "/"),
            ImportOptions::default(),
        )
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    a.shutdown().await;
}

/// The next change of `watch`, within 20 s.
async fn next_change(
    watch: &mut BoxStream<'static, Result<HistoryEntry, DaemonError>>,
) -> DriveChange {
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("no change within 20 s")
        .unwrap()
        .unwrap()
        .change
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reports_changes_inside_mounted_drives() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _a_lock) = start(&dir.path().join("a")).await;
    let docs = a.create_drive("docs", None).await.unwrap();
    let sub = a.create_drive("sub", None).await.unwrap();
    a.drive_mount(&at(&docs, None, "/sub"), sub.key, MountOptions::default())
        .await
        .unwrap();
    let mut above = a.drive_watch(&at(&docs, None, "/")).await.unwrap();
    let mut inside = a.drive_watch(&at(&docs, None, "/sub/d")).await.unwrap();
    let mut elsewhere = a.drive_watch(&at(&docs, None, "/other")).await.unwrap();
    // Written in the mounted drive itself, then through the mount: the watched drive's
    // own version does not change.
    write(&a, &sub, "/d/one.txt", b"1").await;
    write(&a, &docs, "/sub/d/two.txt", b"2").await;
    for watch in [&mut above, &mut inside] {
        let mut paths = vec![
            next_change(watch).await.path().to_string(),
            next_change(watch).await.path().to_string(),
        ];
        paths.sort();
        assert_eq!(paths, ["sub/d/one.txt", "sub/d/two.txt"]);
    }
    // A drive mounted below the watched path, then written: a mount, then a put.
    let deep = a.create_drive("deep", None).await.unwrap();
    a.drive_mount(
        &at(&sub, None, "/d/deep"),
        deep.key,
        MountOptions::default(),
    )
    .await
    .unwrap();
    for watch in [&mut above, &mut inside] {
        let mounted = next_change(watch).await;
        assert!(
            matches!(&mounted, DriveChange::Mount { path, key, .. }
                if path == "sub/d/deep" && *key == deep.key),
            "{mounted:?}"
        );
    }
    write(&a, &deep, "/three.txt", b"3").await;
    for watch in [&mut above, &mut inside] {
        assert_eq!(next_change(watch).await.path(), "sub/d/deep/three.txt");
    }
    // Nothing of it is under /other.
    write(&a, &docs, "/other/four.txt", b"4").await;
    assert_eq!(next_change(&mut elsewhere).await.path(), "other/four.txt");
    a.shutdown().await;
}
