//! Directory entries: listings with Stats, rmdir, rename (files, directories with mounts
//! below them), truncate, mounts and path info, tags, and paths a write refuses.
#![allow(clippy::unwrap_used)]

mod common;

use common::{another_drive, new_drive};

use std::collections::BTreeMap;

use hyperdrive::{Drive, Error, MountInfo, MountOptions, ReaddirOptions, WriteOptions};

async fn write(drive: &Drive, path: &str, data: &str) {
    drive
        .write_file(path, data.as_bytes(), WriteOptions::default())
        .await
        .unwrap();
}

/// Every file below `/` with its content, sorted.
async fn tree(drive: &Drive) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in drive.readdir("/", true).await.unwrap() {
        let path = format!("/{name}");
        let stat = drive.lstat(&path).await.unwrap();
        if stat.is_file() && !stat.is_symlink() {
            let data = drive.read_file(&path).await.unwrap();
            out.insert(name, String::from_utf8(data).unwrap());
        } else {
            out.insert(name, format!("<{:o}>", stat.mode));
        }
    }
    out
}

#[tokio::test]
async fn listings_carry_stats_and_implicit_directories() {
    let (_dir, _store, drive) = new_drive().await;
    drive.mkdir("/explicit", Some(0o700)).await.unwrap();
    write(&drive, "/explicit/newer.txt", "n").await;
    write(&drive, "/implicit/deep/file.txt", "f").await;
    write(&drive, "/top.txt", "top").await;
    let mut entries = drive
        .readdir_stats("/", ReaddirOptions::default())
        .await
        .unwrap();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["explicit", "implicit", "top.txt"]);
    // The explicit directory keeps its own Stat although a newer key below it is what the
    // trie reaches first.
    assert_eq!(entries[0].stat.mode, 0o40700);
    assert_eq!(entries[1].stat.mode, 0o40755);
    assert_eq!(entries[2].stat.size, 3);

    let recursive = ReaddirOptions {
        recursive: true,
        ..Default::default()
    };
    let mut all: Vec<String> = drive
        .readdir_stats("/", recursive)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            "explicit",
            "explicit/newer.txt",
            "implicit/deep/file.txt",
            "top.txt"
        ]
    );
}

#[tokio::test]
async fn rmdir_removes_only_empty_directories() {
    let (_dir, _store, drive) = new_drive().await;
    drive.mkdir("/empty", None).await.unwrap();
    drive.mkdir("/full", None).await.unwrap();
    write(&drive, "/full/f", "x").await;
    write(&drive, "/file", "x").await;
    assert!(matches!(
        drive.rmdir("/full").await,
        Err(Error::NotEmpty { .. })
    ));
    assert!(matches!(
        drive.rmdir("/file").await,
        Err(Error::WrongType { .. })
    ));
    assert!(matches!(
        drive.rmdir("/none").await,
        Err(Error::NotFound { .. })
    ));
    drive.rmdir("/empty").await.unwrap();
    assert!(matches!(
        drive.lstat("/empty").await,
        Err(Error::NotFound { .. })
    ));
    assert!(drive.lstat("/full/f").await.is_ok());
}

#[tokio::test]
async fn rename_moves_files_and_whole_trees_in_one_batch() {
    let (_dir, store, drive) = new_drive().await;
    write(&drive, "/a.txt", "a").await;
    write(&drive, "/dir/one", "1").await;
    write(&drive, "/dir/sub/two", "2").await;
    drive.symlink("one", "/dir/link").await.unwrap();
    let sub = another_drive(&store).await;
    write(&sub, "/inside", "mounted").await;
    drive
        .mount("/dir/m", sub.key(), MountOptions::default())
        .await
        .unwrap();
    let content_len = drive.content_feed().await.unwrap().len();

    drive.rename("/a.txt", "/b.txt").await.unwrap();
    let version = drive.version();
    drive.rename("/dir", "/moved/dir").await.unwrap();
    assert_eq!(
        drive.version() - version,
        2 * 5,
        "one batch: a put and a del per key"
    );

    let expected: BTreeMap<String, String> = [
        ("b.txt", "a"),
        ("moved/dir/one", "1"),
        ("moved/dir/sub/two", "2"),
        ("moved/dir/link", "<120644>"),
        ("moved/dir/m", "<40755>"),
        ("moved/dir/m/inside", "mounted"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(tree(&drive).await, expected);
    assert_eq!(drive.readlink("/moved/dir/link").await.unwrap(), "one");
    assert_eq!(drive.read_file("/moved/dir/link").await.unwrap(), b"1");
    assert_eq!(
        drive.mounts(false).await.unwrap(),
        [MountInfo {
            path: "/moved/dir/m".into(),
            key: sub.key(),
            version: None
        }]
    );
    // No content was copied.
    assert_eq!(drive.content_feed().await.unwrap().len(), content_len);
    // The old version still reads the old tree.
    let old = drive.checkout(version);
    assert_eq!(old.read_file("/dir/sub/two").await.unwrap(), b"2");
}

#[tokio::test]
async fn rename_follows_posix_rules() {
    let (_dir, store, drive) = new_drive().await;
    write(&drive, "/f", "f").await;
    write(&drive, "/g", "g").await;
    drive.mkdir("/d", None).await.unwrap();
    drive.mkdir("/e", None).await.unwrap();
    write(&drive, "/full/x", "x").await;
    // A file replaces a file.
    drive.rename("/f", "/g").await.unwrap();
    assert_eq!(drive.read_file("/g").await.unwrap(), b"f");
    assert!(matches!(
        drive.rename("/g", "/d").await,
        Err(Error::WrongType { .. })
    ));
    assert!(matches!(
        drive.rename("/d", "/g").await,
        Err(Error::WrongType { .. })
    ));
    assert!(matches!(
        drive.rename("/d", "/full").await,
        Err(Error::NotEmpty { .. })
    ));
    assert!(matches!(
        drive.rename("/full", "/full/inner").await,
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        drive.rename("/nothing", "/x").await,
        Err(Error::NotFound { .. })
    ));
    // A directory replaces an empty one.
    drive.rename("/full", "/e").await.unwrap();
    assert_eq!(drive.read_file("/e/x").await.unwrap(), b"x");
    // Into a mounted drive is another drive.
    let sub = another_drive(&store).await;
    drive
        .mount("/m", sub.key(), MountOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        drive.rename("/g", "/m/g").await,
        Err(Error::CrossDrive { .. })
    ));
}

#[tokio::test]
async fn truncate_makes_a_new_version_of_the_file() {
    let (_dir, _store, drive) = new_drive().await;
    write(&drive, "/t", "0123456789").await;
    let before = drive.version();
    drive.truncate("/t", 4).await.unwrap();
    assert_eq!(drive.read_file("/t").await.unwrap(), b"0123");
    drive.truncate("/t", 6).await.unwrap();
    assert_eq!(drive.read_file("/t").await.unwrap(), b"0123\0\0");
    drive.truncate("/t", 0).await.unwrap();
    assert_eq!(drive.read_file("/t").await.unwrap(), b"");
    assert_eq!(
        drive.checkout(before).read_file("/t").await.unwrap(),
        b"0123456789"
    );
    assert!(matches!(
        drive.truncate("/none", 1).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn mounts_info_and_unmount() {
    let (_dir, store, drive) = new_drive().await;
    let sub = another_drive(&store).await;
    let deeper = another_drive(&store).await;
    let core = store.create().await.unwrap();
    core.feed().append(&b"raw"[..]).await.unwrap();
    drive
        .mount("/sub", sub.key(), MountOptions::default())
        .await
        .unwrap();
    drive
        .mount(
            "/sub/deeper",
            deeper.key(),
            MountOptions {
                version: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let hypercore = MountOptions {
        hypercore: true,
        ..Default::default()
    };
    drive
        .mount("/raw", core.feed().key(), hypercore)
        .await
        .unwrap();
    assert!(matches!(
        drive
            .mount("/sub", sub.key(), MountOptions::default())
            .await,
        Err(Error::AlreadyExists { .. })
    ));

    let mut all = drive.mounts(true).await.unwrap();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        all,
        [
            MountInfo {
                path: "/sub".into(),
                key: sub.key(),
                version: None
            },
            MountInfo {
                path: "/sub/deeper".into(),
                key: deeper.key(),
                version: Some(1)
            }
        ]
    );
    assert_eq!(drive.mounts(false).await.unwrap().len(), 1);

    let info = drive.info("/sub/deeper/x.txt").await.unwrap();
    assert_eq!(info.drive, deeper.key());
    assert_eq!(info.mount_path, "/sub/deeper");
    assert_eq!(info.inner_path, "/x.txt");
    assert!(!info.writable, "pinned at a version");
    let info = drive.info("/sub").await.unwrap();
    assert_eq!((info.drive, info.mount_path.as_str()), (drive.key(), "/"));

    assert_eq!(drive.read_file("/raw").await.unwrap(), b"raw");
    drive.unmount("/raw").await.unwrap();
    drive.unmount("/sub").await.unwrap();
    assert!(drive.mounts(true).await.unwrap().is_empty());
    assert!(matches!(
        drive.lstat("/sub").await,
        Err(Error::NotFound { .. })
    ));
    write(&drive, "/plain", "p").await;
    assert!(matches!(
        drive.unmount("/plain").await,
        Err(Error::WrongType { .. })
    ));
}

#[tokio::test]
async fn tags_list_and_delete() {
    let (_dir, _store, drive) = new_drive().await;
    write(&drive, "/a", "1").await;
    drive.create_tag("v1", None).await.unwrap();
    let v1 = drive.version() - 1;
    write(&drive, "/a", "2").await;
    drive.create_tag("v2", Some(7)).await.unwrap();
    let mut tags = drive.tags().await.unwrap();
    tags.sort();
    assert_eq!(tags, [("v1".to_string(), v1), ("v2".to_string(), 7)]);
    assert!(drive.delete_tag("v1").await.unwrap());
    assert!(!drive.delete_tag("v1").await.unwrap());
    assert_eq!(drive.tags().await.unwrap(), [("v2".to_string(), 7)]);
}

#[tokio::test]
async fn writes_refuse_paths_that_would_not_read_back() {
    let (_dir, _store, drive) = new_drive().await;
    let huge = format!("/{}", "x/".repeat(50_000));
    for path in ["/a/../b", "/a\0b", "/./c", huge.as_str()] {
        let err = drive
            .write_file(path, b"x", WriteOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{path:?}: {err}");
        assert!(err.to_string().len() < 300, "the message stays short");
        assert!(matches!(
            drive.mkdir(path, None).await,
            Err(Error::InvalidPath { .. })
        ));
    }
    // Reading such a path is simply not found.
    assert!(matches!(
        drive.stat(&huge).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        drive.unlink("/").await,
        Err(Error::InvalidPath { .. })
    ));
}

#[tokio::test]
async fn a_file_is_never_written_over_a_directory() {
    let (_dir, store, drive) = new_drive().await;
    let sub = another_drive(&store).await;
    drive
        .mount("/m", sub.key(), MountOptions::default())
        .await
        .unwrap();
    drive.mkdir("/d", None).await.unwrap();
    drive.mkdir("/m/d", None).await.unwrap();
    let content_lengths = || async {
        let own = drive.content_feed().await.unwrap().len();
        let mounted = sub.content_feed().await.unwrap().len();
        (own, mounted)
    };
    let before = content_lengths().await;
    // Small files (one walk builds the Stat and finds the directory) and large ones.
    for size in [0, 10, 16 << 10, (16 << 10) + 1, 3 << 20] {
        for path in ["/d", "/m/d"] {
            let data = vec![7u8; size];
            let err = drive
                .write_file(path, &data, WriteOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::WrongType { .. }), "{path}: {err}");
            assert!(err.to_string().contains(path), "{err}");
            assert!(drive.stat(path).await.unwrap().is_dir(), "{path}");
        }
    }
    assert_eq!(content_lengths().await, before, "no content appended");
    // A file beside them is written as ever, and through the mount into the sub drive.
    write(&drive, "/m/d/f", "x").await;
    assert_eq!(sub.read_file("/d/f").await.unwrap(), b"x");
}
