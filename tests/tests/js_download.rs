#![allow(clippy::unwrap_used)]
//! Downloads from a real JS hyperdrive 10.21 peer (`tests/interop/drive-serve.js`) over TCP
//! on 127.0.0.1: a Rust reader opens the JS drive by key in a sparse store, reads per-file
//! figures that match JS `drive.stats`, downloads a directory (the mount left out unless
//! asked) with exactly its files' blocks stored, and clears a file, which a read then
//! fetches again from JS.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use corestore::{Corestore, CorestoreOptions};
use hypercore::crypto::from_hex;
use hypercore::PublicKey;
use hypercore_protocol::{Protocol, ProtocolOptions};
use hyperd_tests::node;
use hyperdrive::{Drive, DriveOptions, FileStats, Progress, WalkOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const LIMIT: Duration = Duration::from_secs(30);

fn key(v: &Value) -> PublicKey {
    PublicKey::from_slice(&from_hex(v.as_str().unwrap()).unwrap()).unwrap()
}

/// A file as JS stats it: (offset, blocks, size).
fn files_of(ready: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    ready["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, f)| {
            let n = |k: &str| f[k].as_u64().unwrap();
            (path.clone(), (n("offset"), n("blocks"), n("size")))
        })
        .collect()
}

fn by_path(stats: Vec<FileStats>) -> BTreeMap<String, FileStats> {
    stats.into_iter().map(|s| (s.path.clone(), s)).collect()
}

/// The bytes JS wrote for a file of `n` bytes from `seed`.
fn js_bytes(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i + seed) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_reader_downloads_a_directory_from_js() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::from(node("drive-serve.js").unwrap());
    cmd.args(["--dir"])
        .arg(tmp.path().join("js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(LIMIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("drive-serve.js printed nothing");
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["event"], "ready", "{ready}");
    let files = files_of(&ready);

    let store = Corestore::open(tmp.path().join("rust"), CorestoreOptions::default())
        .await
        .unwrap();
    let port = ready["port"].as_u64().unwrap() as u16;
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    socket.set_nodelay(true).unwrap();
    let options = ProtocolOptions {
        initiator: true,
        live: true,
        ..ProtocolOptions::default()
    };
    let (protocol, events) = Protocol::connect(socket, options).await.unwrap();
    tokio::spawn({
        let (store, protocol) = (store.clone(), protocol.clone());
        async move { store.replicate(protocol, events, true).await }
    });
    let reader = Drive::open_key(&store, key(&ready["key"]), DriveOptions::default())
        .await
        .unwrap();
    let with_mounts = WalkOptions {
        mounts: true,
        ..WalkOptions::default()
    };

    // Before any download: every file of /docs as JS stats it, nothing stored.
    let before = tokio::time::timeout(LIMIT, reader.file_stats("/docs", with_mounts))
        .await
        .unwrap()
        .unwrap();
    let before = by_path(before);
    let docs: BTreeMap<&String, &(u64, u64, u64)> = files
        .iter()
        .filter(|(p, _)| p.starts_with("/docs/"))
        .collect();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        docs.keys().copied().collect::<Vec<_>>()
    );
    for (path, &&(_, blocks, size)) in &docs {
        let s = &before[*path];
        assert_eq!((s.blocks, s.size), (blocks, size), "{path}");
        assert_eq!((s.downloaded_blocks, s.downloaded_bytes), (0, 0), "{path}");
    }
    let content = reader.content_feed().await.unwrap().clone();
    assert_eq!(content.key(), key(&ready["contentKey"]));
    assert_eq!(content.downloaded(0, None), 0);

    // /docs without the mount: a.txt (1 block), big.bin (2), sub/c.bin (3); the empty
    // file, the symlink and the directory have nothing to fetch.
    let download = reader
        .download("/docs", WalkOptions::default())
        .await
        .unwrap();
    let progress = download.progress();
    let result = tokio::time::timeout(LIMIT, download)
        .await
        .expect("the download never finished")
        .unwrap();
    let own = ["/docs/a.txt", "/docs/big.bin", "/docs/sub/c.bin"];
    let blocks: u64 = own.iter().map(|p| files[*p].1).sum();
    let bytes: u64 = own.iter().map(|p| files[*p].2).sum();
    let totals = Progress {
        files_done: 3,
        files_total: 3,
        blocks_done: blocks,
        blocks_total: blocks,
        bytes_done: bytes,
        bytes_total: bytes,
    };
    assert_eq!(result, totals);
    assert_eq!(*progress.borrow(), totals);
    assert_eq!(blocks, 6);
    for path in own {
        let (offset, blocks, _) = files[path];
        assert!(content.has_range(offset, offset + blocks), "{path}");
    }
    assert_eq!(
        content.downloaded(0, None),
        6,
        "only the three files' blocks"
    );
    let mounted = store
        .get_by_key(key(&ready["mountContentKey"]))
        .await
        .unwrap();
    assert_eq!(
        mounted.feed().downloaded(0, None),
        0,
        "the mount was skipped"
    );

    // With the mount: its two files too.
    let result = tokio::time::timeout(LIMIT, reader.download("/docs", with_mounts).await.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((result.files_done, result.blocks_done), (5, 9));
    assert_eq!(result.bytes_done, result.bytes_total);
    assert_eq!(mounted.feed().downloaded(0, None), 3);

    // Our figures now equal JS's own, which holds everything; the empty file's one empty
    // block was not fetched (nothing to download).
    let after = by_path(reader.file_stats("/docs", with_mounts).await.unwrap());
    assert_eq!(after.len(), 6);
    let js_stats = ready["stats"].as_object().unwrap();
    for (path, s) in &after {
        let js = &js_stats[path];
        let n = |k: &str| js[k].as_u64().unwrap();
        assert_eq!((s.blocks, s.size), (n("blocks"), n("size")), "{path}");
        if path == "/docs/empty" {
            assert_eq!((s.downloaded_blocks, s.downloaded_bytes), (0, 0));
        } else {
            assert_eq!(s.downloaded_blocks, n("downloadedBlocks"), "{path}");
            assert_eq!(s.downloaded_bytes, s.size, "{path}");
        }
    }
    assert_eq!(
        reader.read_file("/docs/big.bin").await.unwrap(),
        js_bytes(600_000, 1)
    );

    // Cleared, then read again from JS.
    let cleared = reader
        .clear("/docs/big.bin", WalkOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (cleared.files, cleared.blocks, cleared.bytes),
        (1, 2, 600_000)
    );
    let (offset, blocks, _) = files["/docs/big.bin"];
    assert_eq!(content.downloaded(offset, Some(offset + blocks)), 0);
    assert_eq!(
        reader.read_file("/docs/big.bin").await.unwrap(),
        js_bytes(600_000, 1)
    );
    assert!(content.has_range(offset, offset + blocks));

    drop(child.stdin.take());
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("stream-error"),
        "JS logged errors:\n{stderr}"
    );
    protocol.destroy("done");
}
