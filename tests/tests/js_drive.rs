//! Drives on disk shared with real JS hyperdrive 10.21, both ways: a drive one side
//! writes into a corestore directory (files, empty and multi-block files, multi-write
//! streams, a symlink, metadata, directories) is read entry by entry by the other, which
//! then writes to it, and the first reads that back.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use hyperdrive::WriteOptions;
use serde_json::Value;

fn js(args: &[&str]) -> Value {
    let out = hyperd_tests::run_node_json("drive-tool.js", args).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    out
}

#[tokio::test]
async fn a_drive_written_by_rust_is_read_and_written_by_js() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let (key, content_key) = {
        let (store, drive) = hyperd_tests::open_default_drive(dir.path()).await.unwrap();
        let w = WriteOptions::default;
        drive
            .write_file("/hello.txt", b"hello from rust", w())
            .await
            .unwrap();
        drive.write_file("/empty", b"", w()).await.unwrap();
        drive.write_file("/big.bin", &big, w()).await.unwrap();
        drive.mkdir("/docs", None).await.unwrap();
        let chunks = [&b"one "[..], b"two ", b"three"].map(Bytes::from_static);
        drive
            .write_chunks("/docs/list.txt", chunks, w())
            .await
            .unwrap();
        drive
            .write_file("/a/b/deep.txt", "ünïcode ✓".as_bytes(), w())
            .await
            .unwrap();
        drive.symlink("/hello.txt", "/link").await.unwrap();
        let meta = WriteOptions {
            metadata: vec![("author".into(), b"rust".to_vec())],
            ..w()
        };
        drive.write_file("/meta.txt", b"m", meta).await.unwrap();
        let keys = (drive.key().to_hex(), drive.content_key().unwrap().to_hex());
        drop(drive);
        store.close().await.unwrap();
        keys
    };

    let read = js(&["read", "--dir", &path]);
    assert_eq!(read["key"], key.as_str());
    assert_eq!(read["contentKey"], content_key.as_str());
    let entries = &read["entries"];
    let file = |name: &str| hex::decode(entries[name]["hex"].as_str().unwrap()).unwrap();
    assert_eq!(file("hello.txt"), b"hello from rust");
    assert_eq!(file("empty"), b"");
    assert_eq!(file("big.bin"), big);
    assert_eq!(file("docs/list.txt"), b"one two three");
    assert_eq!(file("a/b/deep.txt"), "ünïcode ✓".as_bytes());
    assert_eq!(entries["link"]["linkname"], "/hello.txt");
    assert_eq!(
        entries["meta.txt"]["metadata"]["author"],
        hex::encode("rust")
    );
    assert_eq!(entries["docs"]["mode"], 0o40755);
    assert_eq!(entries["hello.txt"]["mode"], 0o100644);
    assert_eq!(entries.as_object().unwrap().len(), 8, "{entries}");

    // JS appends to the Rust drive; Rust reads it back, and all that was there.
    let written = js(&[
        "write",
        "--dir",
        &path,
        "--path",
        "/from-js.txt",
        "--text",
        "hello from js",
    ]);
    assert_eq!(written["entries"].as_object().unwrap().len(), 9);
    let (store, drive) = hyperd_tests::open_default_drive(dir.path()).await.unwrap();
    assert_eq!(
        drive.read_file("/from-js.txt").await.unwrap(),
        b"hello from js"
    );
    assert_eq!(drive.read_file("/big.bin").await.unwrap(), big);
    assert_eq!(drive.version(), written["version"].as_u64().unwrap());
    // And Rust keeps writing after JS.
    drive
        .write_file("/after.txt", b"rust again", WriteOptions::default())
        .await
        .unwrap();
    drop(drive);
    store.close().await.unwrap();
    let again = js(&["read", "--dir", &path]);
    assert_eq!(
        hex::decode(again["entries"]["after.txt"]["hex"].as_str().unwrap()).unwrap(),
        b"rust again"
    );
}

#[tokio::test]
async fn a_drive_written_by_js_is_read_and_written_by_rust() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let populated = js(&["populate", "--dir", &path]);
    let (store, drive) = hyperd_tests::open_default_drive(dir.path()).await.unwrap();
    assert_eq!(drive.key().to_hex(), populated["key"].as_str().unwrap());
    assert_eq!(
        drive.content_key().unwrap().to_hex(),
        populated["contentKey"].as_str().unwrap()
    );
    assert!(
        drive.writable(),
        "the store re-derives the drive's secret key from its name"
    );
    assert_eq!(drive.read_file("/a.txt").await.unwrap(), b"written by js");
    assert_eq!(drive.read_file("/dir/b.txt").await.unwrap(), b"x1 x2 x3");
    let stream = drive.stat("/dir/b.txt").await.unwrap();
    assert_eq!((stream.blocks, stream.size), (3, 8), "one block per write");
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(drive.read_file("/big.bin").await.unwrap(), big);
    assert_eq!(drive.read_file("/empty").await.unwrap(), b"");
    assert!(drive.stat("/empty-dir").await.unwrap().is_dir());
    assert_eq!(drive.readlink("/ln").await.unwrap(), "/a.txt");
    assert_eq!(drive.read_file("/ln").await.unwrap(), b"written by js");
    let meta = drive.stat("/m.txt").await.unwrap();
    assert_eq!(meta.metadata("k"), Some(&b"v"[..]));
    let mut names = drive.readdir("/", true).await.unwrap();
    names.sort();
    let mut theirs: Vec<String> = populated["entries"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    theirs.sort();
    assert_eq!(names, theirs);

    // Rust writes to the JS drive; JS reads it with the rest.
    drive
        .write_file("/from-rust.txt", b"rust was here", WriteOptions::default())
        .await
        .unwrap();
    drop(drive);
    store.close().await.unwrap();
    let read = js(&["read", "--dir", &path]);
    let entries = &read["entries"];
    assert_eq!(
        hex::decode(entries["from-rust.txt"]["hex"].as_str().unwrap()).unwrap(),
        b"rust was here"
    );
    assert_eq!(
        hex::decode(entries["a.txt"]["hex"].as_str().unwrap()).unwrap(),
        b"written by js"
    );
}
