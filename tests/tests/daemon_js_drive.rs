//! Drives between a real `hyperd` and real JS hyperdrive 10 peers
//! (`tests/interop/drive-peer.js`) over TCP, both ways, through the daemon's Drives gRPC
//! API: a drive written through the API (a second daemon drive mounted in it, symlinks,
//! files of many content blocks) is read in full by a JS clone; and a drive a JS peer
//! writes is followed by the daemon and read through the API, the mounted drive's cores
//! fetched from the JS peer too. Both sides must see the same entries, Stat for Stat and
//! byte for byte.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hyperd_proto::v1 as pb;
use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::peers_client::PeersClient;
use hyperd_proto::v1::write_file_request::Part;
use hyperd_tests::daemon::Daemon;
use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::pattern;
use serde_json::{json, Map, Value};
use tonic::transport::Channel;

type Drives = DrivesClient<Channel>;

/// How long a replicated drive may take to reach a version.
const LIMIT: Duration = Duration::from_secs(30);

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

fn at(key: &str, path: &str) -> Option<pb::Location> {
    Some(pb::Location {
        url: format!("hyper://{key}{path}"),
        ..pb::Location::default()
    })
}

async fn create(drives: &mut Drives, name: &str) -> String {
    let request = pb::CreateDriveRequest {
        name: name.into(),
        seeding: None,
    };
    drives.create(request).await.unwrap().into_inner().key
}

/// Writes a file from `chunks` (each becomes a content block) and returns its Stat.
async fn write(
    drives: &mut Drives,
    key: &str,
    path: &str,
    attributes: Option<pb::FileAttributes>,
    chunks: &[&[u8]],
) -> pb::Stat {
    let start = pb::WriteFileRequest {
        part: Some(Part::Start(pb::WriteFileStart {
            location: at(key, path),
            attributes,
        })),
    };
    let messages: Vec<pb::WriteFileRequest> = std::iter::once(start)
        .chain(chunks.iter().map(|c| pb::WriteFileRequest {
            part: Some(Part::Data(Bytes::copy_from_slice(c))),
        }))
        .collect();
    let written = drives
        .write_file(futures::stream::iter(messages))
        .await
        .unwrap_or_else(|e| panic!("writing {path}: {e}"))
        .into_inner();
    written.stat.unwrap()
}

async fn symlink(drives: &mut Drives, key: &str, path: &str, target: &str) {
    let request = pb::SymlinkRequest {
        location: at(key, path),
        target: target.into(),
    };
    drives.symlink(request).await.unwrap();
}

/// The bytes of the file at `path` from `start` on.
async fn read(drives: &mut Drives, key: &str, path: &str, start: u64) -> Vec<u8> {
    let request = pb::ReadFileRequest {
        location: at(key, path),
        start,
        ..pb::ReadFileRequest::default()
    };
    let mut stream = drives
        .read_file(request)
        .await
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("reading {path}: {e}")).data);
    }
    out
}

async fn stat(drives: &mut Drives, key: &str, path: &str, lstat: bool) -> pb::Stat {
    let request = pb::StatRequest {
        location: at(key, path),
        lstat,
    };
    let response = drives
        .stat(request)
        .await
        .unwrap_or_else(|e| panic!("stat {path} (lstat: {lstat}): {e}"));
    response.into_inner().stat.unwrap()
}

/// A Stat in `drive-peer.js`'s shape.
fn stat_json(stat: &pb::Stat) -> Value {
    let metadata: Map<String, Value> = stat
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), hex::encode(v).into()))
        .collect();
    let mut out = json!({
        "mode": stat.mode, "uid": stat.uid, "gid": stat.gid, "size": stat.size,
        "blocks": stat.blocks, "offset": stat.offset, "byteOffset": stat.byte_offset,
        "mtime": stat.mtime, "ctime": stat.ctime, "metadata": metadata,
    });
    if !stat.linkname.is_empty() {
        out["linkname"] = stat.linkname.clone().into();
    }
    if let Some(mount) = &stat.mount {
        out["mount"] = json!({
            "key": mount.key,
            "version": mount.version.unwrap_or(0),
            "hypercore": mount.hypercore,
        });
    }
    out
}

/// The drive `key` as the daemon's API shows it, in the shape of `drive-peer.js list`'s
/// `entries`: every name of a recursive Readdir (into mounts) with its Lstat (which must
/// be the Stat the listing gave), a link's target's Stat and bytes, a file's bytes.
async fn api_view(drives: &mut Drives, key: &str) -> BTreeMap<String, Value> {
    let request = pb::ReaddirRequest {
        location: at(key, "/"),
        recursive: true,
        stats: true,
        ..pb::ReaddirRequest::default()
    };
    let mut pages = drives.readdir(request).await.unwrap().into_inner();
    let mut listed = Vec::new();
    while let Some(page) = pages.next().await {
        listed.extend(page.unwrap().entries);
    }
    let mut view = BTreeMap::new();
    for entry in listed {
        let path = format!("/{}", entry.name);
        let lstat = stat(drives, key, &path, true).await;
        assert_eq!(
            entry.stat.as_ref(),
            Some(&lstat),
            "{path}: Readdir's Stat is Lstat's"
        );
        let mut json = stat_json(&lstat);
        match lstat.mode & S_IFMT {
            S_IFLNK => {
                let target = stat(drives, key, &path, false).await;
                json["target"] = stat_json(&target);
                if target.mode & S_IFMT == S_IFREG {
                    json["targetHex"] = hex::encode(read(drives, key, &path, 0).await).into();
                }
            }
            S_IFREG => json["hex"] = hex::encode(read(drives, key, &path, 0).await).into(),
            _ => {}
        }
        view.insert(entry.name, json);
    }
    view
}

/// Asserts that the API shows the drive as JS listed it (`drive-peer.js list`).
fn assert_same_view(api: &BTreeMap<String, Value>, js: &Value) {
    let js: BTreeMap<String, Value> = js["entries"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let names = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(api),
        names(&js),
        "recursive readdir: the API's, then JS's"
    );
    for (name, mine) in api {
        let (mut mine, mut theirs) = (mine.clone(), js[name].clone());
        for field in ["hex", "targetHex"] {
            let (a, b) = (mine[field].take(), theirs[field].take());
            let len = |v: &Value| v.as_str().map(|s| s.len() / 2);
            assert!(
                a == b,
                "/{name}: {field}: {:?} bytes from the API, {:?} in JS",
                len(&a),
                len(&b)
            );
        }
        assert_eq!(mine, theirs, "/{name}: the API's Stat, then JS's");
    }
}

/// The bytes JS read at `name` (`field`: "hex" for a file, "targetHex" for a link).
fn js_bytes(list: &Value, name: &str, field: &str) -> Vec<u8> {
    let value = list["entries"][name][field].as_str();
    hex::decode(value.unwrap_or_else(|| panic!("{name}: no {field}"))).unwrap()
}

fn port_of(address: &str) -> &str {
    address.rsplit_once(':').unwrap().1
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Follows the drive a JS peer announced in `ready` (every block of it with `all`), dials
/// the peer, and waits until the drive reaches the peer's version.
async fn follow(
    daemon: &Daemon,
    drives: &mut Drives,
    peers: &mut PeersClient<Channel>,
    ready: &Value,
    all: bool,
) {
    let key = ready["key"].as_str().unwrap();
    let version = ready["version"].as_u64().unwrap();
    let follow = pb::FollowDriveRequest {
        drive: at(key, ""),
        all,
        seeding: None,
    };
    let followed = drives.follow(follow).await.unwrap().into_inner();
    assert!(!followed.writable);
    let dial = pb::DialRequest {
        address: format!("127.0.0.1:{}", ready["port"]),
        ..pb::DialRequest::default()
    };
    peers.dial(dial).await.unwrap();
    let started = Instant::now();
    loop {
        let info = pb::DriveInfoRequest { drive: at(key, "") };
        let info = drives.info(info).await.unwrap().into_inner();
        if info.version >= version {
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the followed drive is at version {} of {version} after {LIMIT:?}:\n{}",
            info.version,
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_written_through_the_api_is_read_in_full_by_a_js_peer() {
    let daemon = Daemon::start().unwrap();
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let (main, sub) = (
        create(&mut drives, "interop-main").await,
        create(&mut drives, "interop-sub").await,
    );
    let big = pattern(1, 700_000);
    let two = pattern(2, 200_000);
    let w = &mut drives;
    write(w, &main, "/hello.txt", None, &[b"hello from hyperd"]).await;
    let chunks: Vec<&[u8]> = big.chunks(64 << 10).collect();
    let written = write(w, &main, "/big.bin", None, &chunks).await;
    assert_eq!((written.size, written.blocks), (700_000, 11));
    write(w, &main, "/empty", None, &[]).await;
    let mkdir = pb::MkdirRequest {
        location: at(&main, "/empty-dir"),
        mode: None,
    };
    w.mkdir(mkdir).await.unwrap();
    let attributes = pb::FileAttributes {
        mode: Some(0o600),
        uid: Some(1000),
        gid: Some(100),
        metadata: [("author".to_string(), Bytes::from_static(b"hyperd"))].into(),
        ..pb::FileAttributes::default()
    };
    write(w, &main, "/meta.txt", Some(attributes), &[b"m"]).await;
    symlink(w, &main, "/abs-link", "/hello.txt").await;
    symlink(w, &main, "/a/rel-link", "../hello.txt").await;
    write(w, &sub, "/inner.txt", None, &[b"inside the mounted drive"]).await;
    let chunks: Vec<&[u8]> = two.chunks(100_000).collect();
    write(w, &sub, "/deeper/two-blocks.bin", None, &chunks).await;
    symlink(w, &sub, "/inner-link", "inner.txt").await;
    let mount = pb::MountRequest {
        location: at(&main, "/sub"),
        target: Some(pb::MountTarget {
            key: sub.clone(),
            version: None,
            hypercore: false,
        }),
    };
    w.mount(mount).await.unwrap();
    // Written and linked through the mount: both land in the mounted drive.
    write(w, &main, "/sub/through.txt", None, &[b"through the mount"]).await;
    symlink(w, &main, "/into-mount", "/sub/inner.txt").await;
    // An imported folder: its small files go in as grouped appends (one content batch
    // and one metadata batch for many files), which JS must verify and read as well.
    let folder = tempfile::tempdir().unwrap();
    let imported: Vec<(String, Vec<u8>)> = (0..40u32)
        .map(|i| {
            let name = format!("imported/d{}/f{i:02}", i % 3);
            let len = [0, 1, 5_000, 600_000][i as usize % 4] + i as usize;
            (name, pattern(100 + u64::from(i % 37), len))
        })
        .collect();
    for (name, bytes) in &imported {
        let path = folder.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let request = pb::ImportRequest {
        local_path: dir_str(folder.path()).into(),
        location: at(&main, "/"),
        delete: false,
        dry_run: false,
    };
    let mut updates = w.import(request).await.unwrap().into_inner();
    let mut summary = None;
    while let Some(update) = updates.next().await {
        summary = update.unwrap().summary.or(summary);
    }
    assert_eq!(summary.expect("an import summary").added, 44);
    let version = w
        .version(pb::VersionRequest {
            drive: at(&main, ""),
        })
        .await
        .unwrap()
        .into_inner()
        .version;

    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--dir",
        dir_str(tmp.path()),
        "--key",
        &main,
        "--connect",
        port_of(&daemon.listen),
    ];
    let (mut js, ready) = JsPeer::spawn("drive-peer.js", &args).await.unwrap();
    assert_eq!(ready["key"], main.as_str());
    js.call(json!({"cmd": "sync", "version": version}))
        .await
        .unwrap();
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    assert_eq!(list["version"], version);

    // What JS read is what was written.
    let expected: [(&str, &[u8]); 7] = [
        ("hello.txt", b"hello from hyperd"),
        ("big.bin", &big),
        ("empty", b""),
        ("meta.txt", b"m"),
        ("sub/inner.txt", b"inside the mounted drive"),
        ("sub/deeper/two-blocks.bin", &two),
        ("sub/through.txt", b"through the mount"),
    ];
    for (name, bytes) in expected {
        assert!(
            js_bytes(&list, name, "hex") == bytes,
            "/{name} as JS read it"
        );
    }
    for (name, bytes) in &imported {
        assert!(
            js_bytes(&list, name, "hex") == *bytes,
            "/{name} as JS read it"
        );
    }
    for (name, bytes) in [
        ("abs-link", &b"hello from hyperd"[..]),
        ("a/rel-link", b"hello from hyperd"),
        ("into-mount", b"inside the mounted drive"),
        ("sub/inner-link", b"inside the mounted drive"),
    ] {
        assert_eq!(js_bytes(&list, name, "targetHex"), bytes, "/{name} in JS");
    }
    let entries = &list["entries"];
    assert_eq!(entries["a/rel-link"]["linkname"], "../hello.txt");
    assert_eq!(entries["into-mount"]["linkname"], "/sub/inner.txt");
    assert_eq!(entries["sub/inner-link"]["linkname"], "inner.txt");
    assert_eq!(entries["big.bin"]["blocks"], 11);
    assert_eq!(entries["sub/deeper/two-blocks.bin"]["blocks"], 2);
    assert_eq!(entries["meta.txt"]["mode"], 0o100600);
    assert_eq!(
        entries["meta.txt"]["metadata"]["author"],
        hex::encode("hyperd")
    );
    assert_eq!(entries["empty-dir"]["mode"], 0o40755);
    assert_eq!(entries["sub"]["mount"]["key"], sub.as_str());
    // Every entry, Stat for Stat, as the daemon shows its own drive.
    assert_same_view(&api_view(&mut drives, &main).await, &list);

    // A write through the mount on the live connection reaches JS.
    let late = pattern(3, 100_000);
    let chunks: Vec<&[u8]> = late.chunks(50_000).collect();
    write(&mut drives, &main, "/sub/late.bin", None, &chunks).await;
    js.call(json!({"cmd": "wait", "path": "/sub/late.bin"}))
        .await
        .unwrap();
    let read = js
        .call(json!({"cmd": "read", "path": "/sub/late.bin"}))
        .await
        .unwrap();
    assert!(
        read["hex"] == hex::encode(&late),
        "/sub/late.bin as JS read it"
    );
    assert_eq!(read["stat"]["blocks"], 2);
    js.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_follows_and_reads_a_drive_a_js_peer_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--dir",
        dir_str(tmp.path()),
        "--populate",
        "full",
        "--listen",
    ];
    let (mut js, ready) = JsPeer::spawn("drive-peer.js", &args).await.unwrap();
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    let key = ready["key"].as_str().unwrap().to_string();
    let sub = list["entries"]["sub"]["mount"]["key"]
        .as_str()
        .unwrap()
        .to_string();

    let daemon = Daemon::start().unwrap();
    let channel = daemon.channel().await.unwrap();
    let mut drives = DrivesClient::new(channel.clone());
    let mut peers = PeersClient::new(channel);
    follow(&daemon, &mut drives, &mut peers, &ready, false).await;

    // Every entry, Stat for Stat and byte for byte, as JS lists its own drive.
    assert_same_view(&api_view(&mut drives, &key).await, &list);
    let d = &mut drives;
    assert_eq!(read(d, &key, "/hello.txt", 0).await, b"hello from js");
    let big = stat(d, &key, "/big.bin", false).await;
    assert_eq!((big.size, big.blocks), (1_200_000, 3));
    assert_eq!(
        read(d, &key, "/big.bin", 700_000).await,
        pattern(1, 1_200_000)[700_000..],
        "a read from the middle of a multi-block file"
    );
    let link = stat(d, &key, "/a/rel-link", true).await;
    assert_eq!(link.mode & S_IFMT, S_IFLNK);
    assert_eq!(link.linkname, "../hello.txt");
    let readlink = pb::ReadlinkRequest {
        location: at(&key, "/abs-link"),
    };
    let target = d.readlink(readlink).await.unwrap().into_inner().target;
    assert_eq!(target, "/hello.txt");
    assert_eq!(read(d, &key, "/abs-link", 0).await, b"hello from js");
    // Through the mount: the mounted drive's cores come from the JS peer too.
    let mount = stat(d, &key, "/sub", true).await.mount.unwrap();
    assert_eq!(mount.key, sub);
    let two = stat(d, &key, "/sub/deeper/two-blocks.bin", false).await;
    assert_eq!((two.size, two.blocks), (600_000, 2));
    assert_eq!(
        read(d, &key, "/sub/deeper/two-blocks.bin", 100).await,
        pattern(2, 600_000)[100..]
    );
    assert_eq!(
        read(d, &key, "/sub/through.txt", 0).await,
        b"written through the mount"
    );
    let connected = peers
        .list(pb::ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert_eq!(connected.len(), 1, "{connected:?}");
    assert!(
        connected[0].cores.contains(&key) && connected[0].cores.contains(&sub),
        "the drive's and the mounted drive's metadata replicate with the JS peer: {:?}",
        connected[0].cores
    );
    let info = pb::DriveInfoRequest {
        drive: at(&key, ""),
    };
    let info = drives.info(info).await.unwrap().into_inner();
    assert_eq!(info.content_key, list["contentKey"].as_str().unwrap());

    // A file JS writes on the live connection: watched, then read.
    let request = pb::WatchDriveRequest {
        location: at(&key, "/"),
    };
    let mut changes = drives.watch(request).await.unwrap().into_inner();
    let late = pattern(4, 100_000);
    let write = json!({"cmd": "write", "path": "/late.bin", "hex": hex::encode(&late)});
    js.call(write).await.unwrap();
    let change = tokio::time::timeout(LIMIT, changes.next())
        .await
        .expect("no change watched")
        .unwrap()
        .unwrap();
    assert_eq!(
        (change.kind(), change.path.as_str()),
        (pb::drive_change::Kind::Put, "/late.bin")
    );
    assert_eq!(read(&mut drives, &key, "/late.bin", 0).await, late);

    // And one it writes in the mounted drive.
    let late = pattern(5, 100_000);
    let write = json!({"cmd": "write", "path": "/sub/late.bin", "hex": hex::encode(&late)});
    js.call(write).await.unwrap();
    let change = tokio::time::timeout(LIMIT, changes.next())
        .await
        .expect("no change watched in the mount")
        .unwrap()
        .unwrap();
    assert_eq!(
        (change.kind(), change.path.as_str()),
        (pb::drive_change::Kind::Put, "/sub/late.bin")
    );
    assert_eq!(read(&mut drives, &key, "/sub/late.bin", 0).await, late);
    js.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_js_drive_is_read_after_its_peer_left_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--dir",
        dir_str(tmp.path()),
        "--populate",
        "full",
        "--listen",
    ];
    let (mut js, ready) = JsPeer::spawn("drive-peer.js", &args).await.unwrap();
    let list = js.call(json!({"cmd": "list"})).await.unwrap();
    let key = ready["key"].as_str().unwrap().to_string();

    let mut daemon = Daemon::start().unwrap();
    let channel = daemon.channel().await.unwrap();
    let mut drives = DrivesClient::new(channel.clone());
    let mut peers = PeersClient::new(channel);
    follow(&daemon, &mut drives, &mut peers, &ready, true).await;
    // The mirror fetches every block, the mounted drive's included, with no read asking.
    let started = Instant::now();
    for path in ["/", "/sub"] {
        loop {
            let request = pb::FileStatsRequest {
                location: at(&key, path),
            };
            let files = drives.file_stats(request).await.unwrap().into_inner().files;
            let missing: Vec<_> = files
                .iter()
                .filter(|f| f.downloaded_blocks < f.blocks)
                .collect();
            if !files.is_empty() && missing.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < LIMIT,
                "not mirrored after {LIMIT:?}: {missing:?}\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    js.finish().await.unwrap();
    daemon.signal_and_wait(15).unwrap();
    daemon.restart().unwrap();

    // From this daemon's disk alone: there is no peer left.
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    assert_same_view(&api_view(&mut drives, &key).await, &list);
    let info = pb::DriveInfoRequest {
        drive: at(&key, ""),
    };
    let info = drives.info(info).await.unwrap().into_inner();
    assert!(info.all, "{info:?}");
    assert_eq!(info.peers, 0, "{info:?}");
    assert_eq!(
        (info.content_blocks_stored, info.metadata_blocks_stored),
        (info.content_blocks, info.metadata_blocks),
        "{info:?}"
    );
}
