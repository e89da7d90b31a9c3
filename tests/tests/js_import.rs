//! A drive Rust filled by importing a local folder, with deduplicated content (files
//! sharing one run of content blocks), is read by real JS hyperdrive 10.21 entry by entry,
//! whole and through ranged read streams; after JS writes to it, Rust exports it back to
//! disk as it was and a re-import finds nothing to do.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hyperdrive::{ExportOptions, ImportOptions, WriteOptions};
use serde_json::Value;

fn js(args: &[&str]) -> Value {
    let out = hyperd_tests::run_node_json("drive-tool.js", args).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    out
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 11) as u8)
        .collect()
}

/// Regular files of the tree: path, content, mode, mtime (ms).
fn files() -> Vec<(&'static str, Vec<u8>, u32, u64)> {
    let big = data(1_300_000, 1);
    vec![
        ("big-1.bin", big.clone(), 0o644, 1_600_000_000_001),
        ("copies/big-2.bin", big, 0o600, 1_600_000_000_002),
        (
            "small-a.txt",
            b"same small".to_vec(),
            0o644,
            1_600_000_000_003,
        ),
        (
            "copies/small-b.txt",
            b"same small".to_vec(),
            0o755,
            1_600_000_000_004,
        ),
        ("empty-1", Vec::new(), 0o644, 1_600_000_000_005),
        ("empty-2", Vec::new(), 0o640, 1_600_000_000_006),
        ("ünique ✓.txt", data(600_000, 2), 0o644, 1_600_000_000_007),
    ]
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("copies")).unwrap();
    fs::create_dir_all(root.join("sub/empty-dir")).unwrap();
    for (name, bytes, mode, mtime) in files() {
        let path = root.join(name);
        fs::write(&path, &bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_millis(mtime))
            .unwrap();
    }
    // Targets inside the drive: JS's recursive readdir leaves out links it cannot resolve.
    symlink("/small-a.txt", root.join("link-abs")).unwrap();
    symlink("../big-1.bin", root.join("copies/link-rel")).unwrap();
}

#[tokio::test]
async fn js_reads_an_imported_drive_whose_files_share_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store_dir, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_tree(&src);
    let dir = store_dir.to_str().unwrap().to_string();
    {
        let (store, drive) = hyperd_tests::open_default_drive(&store_dir).await.unwrap();
        let summary = drive
            .import(&src, "/", ImportOptions::default())
            .await
            .unwrap();
        // big-2.bin, small-b.txt and empty-2 point at their twins' blocks.
        assert_eq!(
            (summary.added, summary.deduplicated),
            (12, 3),
            "{summary:?}"
        );
        let written = drive
            .write_file("/written.bin", &data(1_300_000, 1), WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(
            written.offset,
            drive.stat("/big-1.bin").await.unwrap().offset
        );
        drop(drive);
        store.close().await.unwrap();
    }

    let read = js(&["read", "--dir", &dir]);
    let entries = &read["entries"];
    for (name, bytes, mode, mtime) in files() {
        let entry = &entries[name];
        assert_eq!(entry["hex"], hex::encode(&bytes), "{name}");
        if bytes.len() > 1 {
            assert_eq!(
                entry["tailHex"],
                hex::encode(&bytes[bytes.len() / 2..]),
                "{name}"
            );
        }
        assert_eq!(entry["mode"], 0o100000 | mode, "{name}");
        assert_eq!(entry["mtime"], mtime, "{name}");
    }
    let placement = |name: &str| {
        let e = &entries[name];
        (
            e["offset"].clone(),
            e["byteOffset"].clone(),
            e["blocks"].clone(),
        )
    };
    assert_eq!(placement("copies/big-2.bin"), placement("big-1.bin"));
    assert_eq!(placement("written.bin"), placement("big-1.bin"));
    assert_eq!(placement("copies/small-b.txt"), placement("small-a.txt"));
    assert_eq!(placement("empty-2"), placement("empty-1"));
    assert_ne!(placement("ünique ✓.txt"), placement("big-1.bin"));
    assert_eq!(entries["link-abs"]["linkname"], "/small-a.txt");
    assert_eq!(entries["copies/link-rel"]["linkname"], "../big-1.bin");
    assert_eq!(entries["sub/empty-dir"]["mode"], 0o40755);

    // JS writes to it; Rust exports the whole drive and finds the import unchanged.
    let args = [
        "write",
        "--dir",
        &dir,
        "--path",
        "/from-js.txt",
        "--text",
        "js",
    ];
    js(&args);
    let (store, drive) = hyperd_tests::open_default_drive(&store_dir).await.unwrap();
    drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    for (name, bytes, mode, mtime) in files() {
        let meta = fs::metadata(out.join(name)).unwrap();
        assert_eq!(fs::read(out.join(name)).unwrap(), bytes, "{name}");
        assert_eq!(meta.mode() & 0o777, mode, "{name}");
        assert_eq!(
            meta.mtime() as u64 * 1000 + meta.mtime_nsec() as u64 / 1_000_000,
            mtime
        );
    }
    assert_eq!(fs::read(out.join("from-js.txt")).unwrap(), b"js");
    assert_eq!(
        fs::read_link(out.join("copies/link-rel")).unwrap(),
        Path::new("../big-1.bin")
    );
    let (metadata, content) = (
        drive.metadata().len(),
        drive.content_feed().await.unwrap().len(),
    );
    let again = drive
        .import(&src, "/", ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((again.unchanged, again.added + again.changed), (12, 0));
    assert_eq!(drive.metadata().len(), metadata);
    assert_eq!(drive.content_feed().await.unwrap().len(), content);
    drop(drive);
    store.close().await.unwrap();
}
