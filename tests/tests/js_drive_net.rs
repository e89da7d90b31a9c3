//! Drives replicated between Rust and real JS hyperdrive 10.21 over TCP on 127.0.0.1
//! (`tests/interop/drive-peer.js`), both ways: a drive with every kind of entry (a mount
//! of a second drive of the same store included) is read in full by the other side and
//! must look the same there, Stat by Stat and byte by byte; a sparse reader of a large
//! drive fetches one file's blocks and only its lookup's metadata; appends on a live
//! connection show up on the other side; and a JS drive with mounts on disk is read and
//! written by Rust, through the mount, and read back by JS.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use hypercore::PublicKey;
use hyperd_testkit::init_tracing;
use hyperd_tests::js_peer::{connect_store, serve_store, JsPeer};
use hyperd_tests::pattern;
use hyperdrive::{Drive, DriveOptions, MountOptions, Stat, WriteOptions};
use serde_json::{json, Map, Value};

/// How long a replicated change may take to show up.
const LIMIT: Duration = Duration::from_secs(30);
/// Metadata blocks a lookup of one file in a 200-file drive may fetch: the header and the
/// trie nodes on its way (4 in all, both ways, when measured).
const MAX_LOOKUP_BLOCKS: usize = 8;
/// The generated file a sparse test reads: 700000 bytes, two blocks (see `large_size`).
const SPARSE_FILE: u64 = 27;

/// Size of file `n` of a large drive, as `drive-peer.js --populate large` makes it.
fn large_size(n: u64) -> usize {
    if n % 20 == 7 {
        700_000
    } else {
        ((n * 37) % 16 + 1) as usize * 1024
    }
}

fn large_path(n: u64) -> String {
    format!("/d{}/f{n}.bin", n % 10)
}

async fn open_store(dir: &Path) -> Corestore {
    Corestore::open(dir, CorestoreOptions::default())
        .await
        .unwrap()
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A Stat as `drive-peer.js` reports it.
fn stat_json(stat: &Stat) -> Value {
    let metadata: Map<String, Value> = stat
        .metadata
        .iter()
        .map(|e| (e.key.clone(), e.value.as_ref().map(hex::encode).into()))
        .collect();
    let mut out = json!({
        "mode": stat.mode, "uid": stat.uid, "gid": stat.gid, "size": stat.size,
        "blocks": stat.blocks, "offset": stat.offset, "byteOffset": stat.byte_offset,
        "mtime": stat.mtime, "ctime": stat.ctime, "metadata": metadata,
    });
    if let Some(link) = stat.linkname.as_ref().filter(|l| !l.is_empty()) {
        out["linkname"] = link.clone().into();
    }
    if let Some(mount) = &stat.mount {
        out["mount"] = json!({
            "key": hex::encode(&mount.key),
            "version": mount.version.unwrap_or(0),
            "hypercore": mount.hypercore.unwrap_or(false),
        });
    }
    out
}

/// The entry at `name` as Rust sees it, in `drive-peer.js list`'s shape: the lstat; a
/// link's target's stat (and bytes); a file's bytes.
async fn rust_entry(drive: &Drive, name: &str) -> Value {
    let path = format!("/{name}");
    let stat = drive.lstat(&path).await.unwrap();
    let mut entry = stat_json(&stat);
    if stat.is_symlink() {
        let target = drive.stat(&path).await.unwrap();
        entry["target"] = stat_json(&target);
        if target.is_file() {
            entry["targetHex"] = hex::encode(drive.read_file(&path).await.unwrap()).into();
        }
    } else if stat.is_file() {
        entry["hex"] = hex::encode(drive.read_file(&path).await.unwrap()).into();
    }
    entry
}

fn sorted_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Asserts that Rust sees `drive` exactly as JS listed it: the same names from a recursive
/// readdir (into mounts), and for each the same Stat fields, link targets and bytes.
async fn assert_same_view(drive: &Drive, js: &Value) {
    let mut names = drive.readdir("/", true).await.unwrap();
    names.sort();
    assert_eq!(names, sorted_names(js), "recursive readdir of /");
    for name in &names {
        let mut mine = rust_entry(drive, name).await;
        let mut theirs = js["entries"][name].clone();
        for field in ["hex", "targetHex"] {
            let (a, b) = (mine[field].take(), theirs[field].take());
            let len = |v: &Value| v.as_str().map(|s| s.len() / 2);
            assert!(
                a == b,
                "/{name}: {field}: {:?} bytes here, {:?} in JS",
                len(&a),
                len(&b)
            );
        }
        assert_eq!(mine, theirs, "/{name}: Rust's view, then JS's");
    }
}

/// The bytes JS listed for `name` (`field`: "hex" for a file, "targetHex" for a link).
fn js_bytes(list: &Value, name: &str, field: &str) -> Vec<u8> {
    let value = &list["entries"][name][field];
    hex::decode(
        value
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no {field}")),
    )
    .unwrap()
}

/// The five writes of `/streamed.txt`, one block each (as `drive-peer.js` writes it).
const STREAMED: [&[u8]; 5] = [
    b"chunk 0\n",
    b"chunk 1\n",
    b"chunk 2\n",
    b"chunk 3\n",
    b"last\n",
];

/// What the Rust side of [`rust_writes_every_kind_of_entry`] writes, by name.
fn rust_files() -> BTreeMap<&'static str, Vec<u8>> {
    BTreeMap::from([
        ("hello.txt", b"hello from rust".to_vec()),
        ("empty", Vec::new()),
        ("big.bin", pattern(1, 1_300_000)),
        ("streamed.txt", STREAMED.concat()),
        ("a/b/c/deep.txt", b"deep in implicit directories".to_vec()),
        ("ünïcödé/文件.txt", "ünïcode ✓".as_bytes().to_vec()),
        ("meta.txt", b"m".to_vec()),
        ("sub/inner.txt", b"inside the mounted drive".to_vec()),
        ("sub/deeper/two-blocks.bin", pattern(2, 600_000)),
        ("sub/through.txt", b"written through the mount".to_vec()),
    ])
}

/// Fills `drive` with every kind of entry, a second drive of `store` mounted at /sub
/// included (the counterpart of `drive-peer.js --populate full`). Returns the sub drive.
async fn rust_writes_every_kind_of_entry(store: &Corestore, drive: &Drive) -> Drive {
    let files = rust_files();
    let w = WriteOptions::default;
    for name in [
        "hello.txt",
        "empty",
        "big.bin",
        "a/b/c/deep.txt",
        "ünïcödé/文件.txt",
    ] {
        drive
            .write_file(&format!("/{name}"), &files[name], w())
            .await
            .unwrap();
    }
    drive.mkdir("/empty-dir", None).await.unwrap();
    let chunks = STREAMED.map(Bytes::from_static);
    drive
        .write_chunks("/streamed.txt", chunks, w())
        .await
        .unwrap();
    let meta = WriteOptions {
        metadata: vec![
            ("author".into(), b"rust".to_vec()),
            ("empty".into(), vec![]),
        ],
        mode: Some(0o600),
        uid: 1000,
        gid: 100,
        ..w()
    };
    drive.write_file("/meta.txt", b"m", meta).await.unwrap();
    drive.symlink("/hello.txt", "/abs-link").await.unwrap();
    drive.symlink("../hello.txt", "/a/rel-link").await.unwrap();

    let sub_core = store.get_named(b"sub").await.unwrap();
    let sub = Drive::open(store, sub_core, DriveOptions::default())
        .await
        .unwrap();
    for name in ["inner.txt", "deeper/two-blocks.bin"] {
        sub.write_file(&format!("/{name}"), &files[&*format!("sub/{name}")], w())
            .await
            .unwrap();
    }
    sub.mkdir("/sub-empty", None).await.unwrap();
    drive
        .mount("/sub", sub.key(), MountOptions::default())
        .await
        .unwrap();
    drive
        .write_file("/sub/through.txt", &files["sub/through.txt"], w())
        .await
        .unwrap();
    sub
}

/// The names of the full drive either side writes.
fn full_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "hello.txt",
        "empty",
        "empty-dir",
        "big.bin",
        "streamed.txt",
        "a/b/c/deep.txt",
        "ünïcödé/文件.txt",
        "meta.txt",
        "abs-link",
        "a/rel-link",
        "sub",
        "sub/inner.txt",
        "sub/deeper/two-blocks.bin",
        "sub/sub-empty",
        "sub/through.txt",
    ]
    .map(String::from)
    .to_vec();
    names.sort();
    names
}

/// Starts `drive-peer.js` with `args`.
async fn js_peer(args: &[&str]) -> (JsPeer, Value) {
    JsPeer::spawn("drive-peer.js", args).await.unwrap()
}

/// A JS clone of the drive `key`, connected to `port`, once it has `version` blocks.
async fn js_clone(dir: &Path, key: PublicKey, port: u16, version: u64) -> JsPeer {
    let (key, port) = (key.to_hex(), port.to_string());
    let args = ["--dir", dir_str(dir), "--key", &key, "--connect", &port];
    let (mut js, ready) = js_peer(&args).await;
    assert_eq!(ready["key"], key.as_str());
    js.call(json!({"cmd": "sync", "version": version}))
        .await
        .unwrap();
    js
}

/// The remote drive `key` in `store`, connected to a JS peer on `port`, once its
/// metadata feed has `version` blocks.
async fn rust_clone(store: &Corestore, key: &str, port: u16, version: u64) -> Drive {
    let key: PublicKey = key.parse().unwrap();
    let drive = Drive::open_key(store, key, DriveOptions::default())
        .await
        .unwrap();
    assert!(!drive.writable());
    connect_store(store.clone(), port).await.unwrap();
    tokio::time::timeout(LIMIT, drive.metadata().update(Some(version), None))
        .await
        .unwrap_or_else(|_| panic!("the drive never reached version {version}"))
        .unwrap();
    drive
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_drive_is_cloned_over_tcp_and_read_in_full_by_js() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&tmp.path().join("rust")).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    let sub = rust_writes_every_kind_of_entry(&store, &drive).await;
    let (port, _ended) = serve_store(store.clone()).await.unwrap();

    let mut js = js_clone(&tmp.path().join("js"), drive.key(), port, drive.version()).await;
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    assert_eq!(list["version"], drive.version());
    assert_eq!(
        list["contentKey"],
        drive.content_key().unwrap().to_hex().as_str()
    );
    assert_eq!(sorted_names(&list), full_names());
    for (name, bytes) in rust_files() {
        assert!(
            js_bytes(&list, name, "hex") == bytes,
            "/{name} as JS read it"
        );
    }
    let entries = &list["entries"];
    assert_eq!(js_bytes(&list, "abs-link", "targetHex"), b"hello from rust");
    assert_eq!(
        js_bytes(&list, "a/rel-link", "targetHex"),
        b"hello from rust"
    );
    assert_eq!(entries["abs-link"]["linkname"], "/hello.txt");
    assert_eq!(entries["a/rel-link"]["linkname"], "../hello.txt");
    assert_eq!(
        entries["meta.txt"]["metadata"]["author"],
        hex::encode("rust")
    );
    assert_eq!(entries["meta.txt"]["metadata"]["empty"], "");
    assert_eq!(entries["meta.txt"]["mode"], 0o100600);
    assert_eq!(
        (
            entries["meta.txt"]["uid"].clone(),
            entries["meta.txt"]["gid"].clone()
        ),
        (json!(1000), json!(100))
    );
    assert_eq!(entries["big.bin"]["blocks"], 3);
    assert_eq!(entries["streamed.txt"]["blocks"], 5);
    assert_eq!(entries["empty-dir"]["mode"], 0o40755);
    assert_eq!(entries["sub"]["mount"]["key"], sub.key().to_hex().as_str());
    // Every entry, Stat for Stat, as Rust sees its own drive.
    assert_same_view(&drive, &list).await;
    js.finish().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_drive_is_cloned_over_tcp_and_read_in_full_by_rust() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let args = ["--dir", dir_str(&js_dir), "--populate", "full", "--listen"];
    let (mut js, ready) = js_peer(&args).await;
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    assert_eq!(sorted_names(&list), full_names());

    let store = open_store(&tmp.path().join("rust")).await;
    let port = ready["port"].as_u64().unwrap() as u16;
    let version = ready["version"].as_u64().unwrap();
    let drive = rust_clone(&store, ready["key"].as_str().unwrap(), port, version).await;
    assert_same_view(&drive, &list).await;
    assert_eq!(
        drive.content_key().unwrap().to_hex(),
        list["contentKey"].as_str().unwrap()
    );
    // What JS wrote, as Rust reads it.
    assert_eq!(
        drive.read_file("/hello.txt").await.unwrap(),
        b"hello from js"
    );
    assert_eq!(
        drive.read_file("/big.bin").await.unwrap(),
        pattern(1, 1_200_000)
    );
    assert_eq!(drive.stat("/big.bin").await.unwrap().blocks, 3);
    assert_eq!(drive.stat("/streamed.txt").await.unwrap().blocks, 5);
    assert_eq!(drive.read_file("/empty").await.unwrap(), b"");
    assert!(drive.stat("/empty-dir").await.unwrap().is_dir());
    assert_eq!(drive.readlink("/a/rel-link").await.unwrap(), "../hello.txt");
    assert_eq!(
        drive.read_file("/a/rel-link").await.unwrap(),
        b"hello from js"
    );
    assert_eq!(
        drive.read_file("/abs-link").await.unwrap(),
        b"hello from js"
    );
    let meta = drive.stat("/meta.txt").await.unwrap();
    assert_eq!(meta.metadata("author"), Some(&b"js"[..]));
    assert_eq!(meta.metadata("empty"), Some(&b""[..]));
    assert!(drive.lstat("/sub").await.unwrap().mount.is_some());
    assert_eq!(
        drive.read_file("/sub/deeper/two-blocks.bin").await.unwrap(),
        pattern(2, 600_000)
    );
    assert_eq!(
        drive.read_file("/sub/through.txt").await.unwrap(),
        b"written through the mount"
    );
    assert_eq!(
        drive.readdir("/sub", false).await.unwrap().len(),
        4,
        "inner.txt, deeper, sub-empty, through.txt"
    );
    js.finish().await.unwrap();
    store.close().await.unwrap();
}

/// Asserts that `reader`, having read `path` of a drive of `version` metadata blocks,
/// holds the header and the blocks of one lookup's way only (`stored`), and reports them.
fn assert_one_lookup(reader: &str, path: &str, stored: &[u64], version: u64) {
    eprintln!("{reader} read {path}: metadata blocks {stored:?} of {version}");
    assert!(stored.contains(&0), "the header names the content feed");
    assert!(
        stored.len() <= MAX_LOOKUP_BLOCKS,
        "{reader} fetched {} metadata blocks for one lookup",
        stored.len()
    );
}

/// The blocks of `feed` stored here.
fn stored(feed: &hypercore::Feed) -> Vec<u64> {
    (0..feed.len()).filter(|&i| feed.has(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_reading_one_file_of_a_large_js_drive_fetches_only_its_blocks() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let args = ["--dir", dir_str(&js_dir), "--populate", "large", "--listen"];
    let (js, ready) = js_peer(&args).await;
    let version = ready["version"].as_u64().unwrap();
    assert_eq!(version, 201, "a header and 200 files");

    let store = open_store(&tmp.path().join("rust")).await;
    let port = ready["port"].as_u64().unwrap() as u16;
    let drive = rust_clone(&store, ready["key"].as_str().unwrap(), port, version).await;
    let path = large_path(SPARSE_FILE);
    let data = drive.read_file(&path).await.unwrap();
    assert!(
        data == pattern(SPARSE_FILE, large_size(SPARSE_FILE)),
        "{path}"
    );
    let stat = drive.stat(&path).await.unwrap();
    assert_eq!(stat.blocks, 2);

    let content = drive.content_feed().await.unwrap();
    let total: usize = (0..200).map(large_size).sum();
    assert!(content.byte_len() >= total as u64, "the length is known");
    let wanted: Vec<u64> = (stat.offset..stat.offset + stat.blocks).collect();
    assert_eq!(stored(content), wanted, "content blocks stored");
    assert_eq!(content.downloaded(0, None), 2);
    assert_one_lookup("Rust", &path, &stored(drive.metadata()), version);
    js.finish().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_reading_one_file_of_a_large_rust_drive_fetches_only_its_blocks() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&tmp.path().join("rust")).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    for n in 0..200 {
        let data = pattern(n, large_size(n));
        drive
            .write_file(&large_path(n), &data, WriteOptions::default())
            .await
            .unwrap();
    }
    let (port, _ended) = serve_store(store.clone()).await.unwrap();
    let mut js = js_clone(&tmp.path().join("js"), drive.key(), port, drive.version()).await;
    let path = large_path(SPARSE_FILE);
    let read = js
        .call(json!({"cmd": "read", "path": &path}))
        .await
        .unwrap();
    let bytes = hex::decode(read["hex"].as_str().unwrap()).unwrap();
    assert!(
        bytes == pattern(SPARSE_FILE, large_size(SPARSE_FILE)),
        "{path}"
    );
    let stat = drive.stat(&path).await.unwrap();
    let wanted: Vec<u64> = (stat.offset..stat.offset + stat.blocks).collect();
    assert_eq!(
        read["content"]["length"],
        drive.content_feed().await.unwrap().len()
    );
    assert_eq!(
        read["content"]["stored"],
        json!(wanted),
        "content blocks JS stored"
    );
    let metadata: Vec<u64> = serde_json::from_value(read["metadata"]["stored"].clone()).unwrap();
    assert_one_lookup("JS", &path, &metadata, drive.version());
    js.finish().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_appends_on_a_live_connection_reach_rust() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let (mut js, ready) = js_peer(&["--dir", dir_str(&js_dir), "--listen"]).await;
    let first = hex::encode("before connecting");
    let written = js
        .call(json!({"cmd": "write", "path": "/first.txt", "hex": first}))
        .await
        .unwrap();
    let store = open_store(&tmp.path().join("rust")).await;
    let port = ready["port"].as_u64().unwrap() as u16;
    let version = written["version"].as_u64().unwrap();
    let drive = rust_clone(&store, ready["key"].as_str().unwrap(), port, version).await;
    assert_eq!(drive.readdir("/", false).await.unwrap(), ["first.txt"]);

    // JS appends while connected; Rust's lookups catch up with what the peer announced.
    for (i, name) in ["live-1.txt", "dir/live-2.txt"].into_iter().enumerate() {
        let text = format!("appended live {i}");
        js.call(json!({"cmd": "write", "path": format!("/{name}"), "hex": hex::encode(&text)}))
            .await
            .unwrap();
        let found = poll(|| async {
            let names = drive.readdir("/", true).await.unwrap();
            names.iter().any(|n| n == name).then_some(names)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "/{name} never showed up in Rust (version {})",
                drive.version()
            )
        });
        assert_eq!(found.len(), 2 + i);
        assert_eq!(
            drive.read_file(&format!("/{name}")).await.unwrap(),
            text.as_bytes()
        );
    }
    js.finish().await.unwrap();
    store.close().await.unwrap();
}

/// Runs `check` every 50 ms until it gives `Some`, for at most [`LIMIT`].
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > LIMIT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_appends_on_a_live_connection_reach_js() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&tmp.path().join("rust")).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    drive
        .write_file("/first.txt", b"before connecting", WriteOptions::default())
        .await
        .unwrap();
    let (port, _ended) = serve_store(store.clone()).await.unwrap();
    let mut js = js_clone(&tmp.path().join("js"), drive.key(), port, drive.version()).await;
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    assert_eq!(sorted_names(&list), ["first.txt"]);

    for (i, name) in ["live-1.txt", "dir/live-2.txt"].into_iter().enumerate() {
        let path = format!("/{name}");
        let text = format!("appended live {i}");
        drive
            .write_file(&path, text.as_bytes(), WriteOptions::default())
            .await
            .unwrap();
        let seen = js
            .call(json!({"cmd": "wait", "path": &path}))
            .await
            .unwrap();
        assert_eq!(seen["stat"]["size"], text.len());
        let read = js
            .call(json!({"cmd": "read", "path": &path}))
            .await
            .unwrap();
        assert_eq!(read["hex"], hex::encode(&text));
    }
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    assert_eq!(list["version"], drive.version());
    js.finish().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_drive_with_mounts_on_disk_is_read_and_written_through_the_mount_by_rust() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (mut js, _) = js_peer(&["--dir", dir_str(&dir), "--populate", "full"]).await;
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    js.finish().await.unwrap();
    assert_eq!(sorted_names(&list), full_names());

    let store = open_store(&dir).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    assert_same_view(&drive, &list).await;
    let sub_key: PublicKey = list["entries"]["sub"]["mount"]["key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sub = Drive::open_key(&store, sub_key, DriveOptions::default())
        .await
        .unwrap();
    assert!(
        sub.writable(),
        "the store re-derives the mounted drive's key"
    );
    let (top_version, sub_version) = (drive.version(), sub.version());
    drive
        .write_file(
            "/sub/from-rust.txt",
            b"rust, through the mount",
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (drive.version(), sub.version()),
        (top_version, sub_version + 1),
        "the write went to the mounted drive"
    );
    drive
        .write_file(
            "/top-from-rust.txt",
            b"rust, at the top",
            WriteOptions::default(),
        )
        .await
        .unwrap();
    drop((drive, sub));
    store.close().await.unwrap();

    let (mut js, _) = js_peer(&["--dir", dir_str(&dir)]).await;
    let again = js.call(json!({"cmd": "list"})).await.unwrap();
    js.finish().await.unwrap();
    assert_eq!(
        js_bytes(&again, "sub/from-rust.txt", "hex"),
        b"rust, through the mount"
    );
    assert_eq!(
        js_bytes(&again, "top-from-rust.txt", "hex"),
        b"rust, at the top"
    );
    assert_eq!(sorted_names(&again).len(), full_names().len() + 2);
    let store = open_store(&dir).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    assert_same_view(&drive, &again).await;
    drop(drive);
    store.close().await.unwrap();
}
