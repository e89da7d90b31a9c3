//! Names a real JS hyperdrive 10.21 writes and hyperd refuses to write: a NUL byte, `.`
//! and `..` components (JS keeps them as given), a name of 100,000 characters. hyperd
//! reads such a drive without panicking, and an export of it never writes outside its
//! target directory.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use corestore::{Corestore, CorestoreOptions};
use hyperdrive::{Drive, DriveOptions, Error, ExportOptions, ReaddirOptions, WriteOptions};

const LIMIT: Duration = Duration::from_secs(30);

fn short(name: &str) -> String {
    name.chars().take(40).collect()
}

#[tokio::test]
async fn names_js_writes_and_hyperd_refuses_are_read_and_never_escape_on_export() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let written =
        hyperd_tests::run_node_json("drive-hostile.js", &["--dir", dir.to_str().unwrap()]).unwrap();
    assert_eq!(written["ok"], true, "{written}");
    let names: Vec<String> = written["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| String::from_utf8(hex::decode(n.as_str().unwrap()).unwrap()).unwrap())
        .collect();
    assert!(names.iter().any(|n| n.contains('\0')));
    assert!(names.iter().any(|n| n.len() > 100_000));

    let store = Corestore::open(&dir, CorestoreOptions::default())
        .await
        .unwrap();
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    assert_eq!(drive.key().to_hex(), written["key"].as_str().unwrap());

    // Every name reads back as JS wrote it: each file holds "content of <index>".
    for (i, name) in names.iter().enumerate() {
        let Ok(data) = tokio::time::timeout(LIMIT, drive.read_file(name)).await else {
            panic!("reading {:?} hung", short(name));
        };
        match data {
            Ok(data) => assert_eq!(data, format!("content of {i}").as_bytes(), "{name:?}"),
            // "/." and "/" are the same key: the root, no file.
            Err(Error::WrongType { .. }) if name == "/." => {}
            Err(e) => panic!("{:?}: {e}", short(name)),
        }
    }
    let listed = drive.readdir("/", true).await.unwrap();
    for name in [
        "nul\0byte",
        "up/../../../outside/evil",
        "..",
        "dir/./x",
        "safe/ok",
    ] {
        assert!(listed.iter().any(|l| l == name), "{name:?} in {listed:?}");
    }
    let stats = drive
        .readdir_stats(
            "/",
            ReaddirOptions {
                recursive: true,
                no_mounts: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(stats.len(), listed.len());

    // An export refuses the tree before writing anything; nothing lands outside it.
    let out = tmp.path().join("export").join("out");
    let outside = tmp.path().join("export").join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let err = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(!out.exists(), "refused before writing");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // What is safe exports.
    let summary = drive
        .export("/safe", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.added, 1);
    assert_eq!(std::fs::read(out.join("ok")).unwrap(), b"content of 8");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // The drive still takes writes, and refuses such names itself.
    drive
        .write_file("/after", b"after", WriteOptions::default())
        .await
        .unwrap();
    for name in &names[..names.len() - 1] {
        let refused = drive
            .write_file(name, b"x", WriteOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::InvalidPath { .. }),
            "{:?}: {refused}",
            short(name)
        );
    }
    drop(drive);
    store.close().await.unwrap();
}
