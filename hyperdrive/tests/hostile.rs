//! Hostile input from a peer or from storage: trie blocks that do not decode, Stats that
//! do not decode or point outside the content feed, mount records with bad keys, headers
//! naming no content feed, mount loops, symlink loops and absurd paths. A hostile drive is
//! built as a malicious writer would build it: raw blocks appended to a feed we own (so
//! they are validly signed), or crafted values put through a second handle on the drive's
//! trie. Every operation must answer with an error naming the path (or succeed), never
//! panic, never hang; and writes of other files must still work.
#![allow(clippy::unwrap_used)]

mod common;

use common::connect;

use std::future::Future;
use std::path::Path as LocalPath;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use hypercore::KeyPair;
use hyperdrive::{
    Drive, DriveOptions, Error, ExportOptions, MountOptions, OpenFlags, ReaddirOptions, Stat,
    StatMount, WalkOptions, WriteOptions, S_IFDIR, S_IFLNK, S_IFREG,
};
use hypertrie::{Buckets, Hypertrie, MountRecord, Node, PutOptions};
use prost::Message;

/// Longer than any operation here takes: reaching it means a hang.
const LIMIT: Duration = Duration::from_secs(30);

const READ: OpenFlags = OpenFlags {
    write: false,
    create: false,
    exclusive: false,
    truncate: false,
};
const WRITE: OpenFlags = OpenFlags {
    write: true,
    create: false,
    exclusive: false,
    truncate: false,
};
const WITH_MOUNTS: WalkOptions = WalkOptions {
    recursive: true,
    mounts: true,
};

fn w() -> WriteOptions {
    WriteOptions::default()
}

async fn open_store(dir: &LocalPath) -> Corestore {
    Corestore::open(dir, CorestoreOptions::default())
        .await
        .unwrap()
}

async fn new_drive() -> (tempfile::TempDir, Corestore, Drive) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("store")).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    (dir, store, drive)
}

/// A second handle on the drive's metadata trie: puts through it are what a writer that
/// ignores hyperdrive's rules would put.
async fn raw_trie(drive: &Drive) -> Hypertrie {
    Hypertrie::open(drive.metadata().clone(), Default::default())
        .await
        .unwrap()
}

async fn put_value(trie: &Hypertrie, key: &str, value: impl Into<Bytes>) {
    trie.put(key, value.into(), PutOptions::default())
        .await
        .unwrap();
}

fn encoded(stat: &Stat) -> Bytes {
    Bytes::from(stat.encode_to_vec())
}

/// Runs `op`, failing the test if it has not answered within [`LIMIT`].
async fn bounded<T>(what: &str, op: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, op)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Runs `op` on a thread of its own, failing the test if it has not answered within
/// `limit`: unlike [`bounded`], this catches a loop that never yields to the runtime.
fn on_own_thread<T: Send + 'static>(
    what: &str,
    limit: Duration,
    op: impl Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(op));
        rt.shutdown_timeout(Duration::from_secs(5));
    });
    match rx.recv_timeout(limit) {
        Ok(answer) => answer,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung"),
        // The thread panicked: its message is above.
        Err(e) => panic!("{what} panicked ({e})"),
    }
}

/// What each operation on a path answered.
struct Answers {
    path: String,
    /// Whether the path is a symlink: the operations that follow it name where it leads.
    link: bool,
    answers: Vec<(&'static str, Result<(), Error>)>,
}

/// The operations that follow a symlink at the path (handles open what a link names).
const FOLLOWING: [&str; 10] = [
    "stat",
    "read_file",
    "read_range",
    "reader",
    "download",
    "file_stats",
    "read_at",
    "append",
    "write_at",
    "truncate",
];

impl Answers {
    fn of(&self, op: &str) -> &Result<(), Error> {
        &self
            .answers
            .iter()
            .find(|(name, _)| *name == op)
            .unwrap_or_else(|| panic!("no operation {op}"))
            .1
    }

    /// `ops` failed, each with an error that names the path.
    fn failed_naming_the_path(&self, ops: &[&str]) {
        for op in ops {
            match self.of(op) {
                Ok(()) => panic!("{op} {:?} succeeded", self.path),
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        text.contains(&self.path),
                        "{op} {:?}: the error does not name the path: {text}",
                        self.path
                    );
                }
            }
        }
    }

    /// Every operation that failed names the path (or, following a symlink, a path; or
    /// writing an export, the local path).
    fn errors_name_the_path(&self) {
        for (op, answer) in &self.answers {
            if self.link && FOLLOWING.contains(op) {
                continue;
            }
            if let ("export", Err(Error::Local { .. })) = (*op, answer) {
                continue;
            }
            if let Err(e) = answer {
                let text = e.to_string();
                assert!(
                    text.contains(&self.path),
                    "{op} {:?}: the error does not name the path: {text}",
                    self.path
                );
            }
        }
    }
}

async fn read_to_end(reader: &mut hyperdrive::FileReader) -> Result<Vec<u8>, Error> {
    use futures::TryStreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = reader.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Every read of `path`: Stats, listings, the file's bytes (whole, as a range, through a
/// cursor and through a handle), downloads, per-file figures and an export into `out`.
async fn reads(drive: &Drive, path: &str, out: &LocalPath) -> Answers {
    let mut answers: Vec<(&'static str, Result<(), Error>)> = Vec::new();
    macro_rules! op {
        ($name:expr, $body:expr) => {{
            let what = format!("{} {:?}", $name, short(path));
            let answer = bounded(&what, async { $body.map(|_| ()) }).await;
            answers.push(($name, answer));
        }};
    }
    op!("stat", drive.stat(path).await);
    op!("lstat", drive.lstat(path).await);
    op!("readlink", drive.readlink(path).await);
    op!("info", drive.info(path).await);
    op!("readdir", drive.readdir(path, false).await);
    op!("readdir recursive", drive.readdir(path, true).await);
    let recursive = ReaddirOptions {
        recursive: true,
        no_mounts: false,
    };
    op!("readdir_stats", drive.readdir_stats(path, recursive).await);
    op!("read_file", drive.read_file(path).await);
    op!(
        "read_range",
        async {
            let mut reader = drive.read_range(path, 3, Some(100)).await?;
            read_to_end(&mut reader).await
        }
        .await
    );
    op!(
        "reader",
        async {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut reader = drive.reader(path).await?;
            let middle = reader.len() / 2;
            reader
                .seek(std::io::SeekFrom::Start(middle))
                .await
                .map_err(|e| Error::Io {
                    path: path.to_string(),
                    source: e,
                })?;
            let mut buf = vec![0; 64];
            reader.read(&mut buf).await.map_err(|e| Error::Io {
                path: path.to_string(),
                source: e,
            })
        }
        .await
    );
    op!(
        "read_at",
        async {
            let mut handle = drive.open_file(path, READ).await?;
            handle.read_at(1, 1 << 16).await
        }
        .await
    );
    op!(
        "download",
        async { drive.download(path, WITH_MOUNTS).await?.await }.await
    );
    op!("file_stats", drive.file_stats(path, WITH_MOUNTS).await);
    op!(
        "export",
        drive.export(path, out, ExportOptions::default()).await
    );
    let link = matches!(drive.lstat(path).await, Ok(stat) if stat.is_symlink());
    Answers {
        path: path.to_string(),
        link,
        answers,
    }
}

/// Every write to `path` (done in this order, each on what the one before left):
/// an append through a handle, a write in the middle, a truncate, metadata, and a whole
/// new file, which must then read back.
async fn writes(drive: &Drive, path: &str) -> Answers {
    let link = matches!(drive.lstat(path).await, Ok(stat) if stat.is_symlink());
    let mut answers: Vec<(&'static str, Result<(), Error>)> = Vec::new();
    macro_rules! op {
        ($name:expr, $body:expr) => {{
            let what = format!("{} {:?}", $name, short(path));
            let answer = bounded(&what, async { $body.map(|_| ()) }).await;
            answers.push(($name, answer));
        }};
    }
    op!(
        "append",
        async {
            let mut handle = drive.open_file(path, WRITE).await?;
            let size = handle.size();
            handle.write_at(size, b"appended").await?;
            handle.close().await
        }
        .await
    );
    op!(
        "write_at",
        async {
            let mut handle = drive.open_file(path, WRITE).await?;
            handle.write_at(1, b"patched").await?;
            handle.close().await
        }
        .await
    );
    op!("truncate", drive.truncate(path, 4).await);
    op!(
        "set_metadata",
        drive.set_metadata(path, "k", Some(b"v".to_vec())).await
    );
    op!("write_file", drive.write_file(path, b"replaced", w()).await);
    if answers.last().is_some_and(|(_, a)| a.is_ok()) {
        match bounded("read back", drive.read_file(path)).await {
            Ok(data) => assert_eq!(data, b"replaced", "{path:?} after write_file"),
            // A hostile mount record with no mount node: writes go into the drive it
            // names, lookups stay here (as in mountable-hypertrie).
            Err(Error::NotFound { .. }) if drive.info(path).await.unwrap().mount_path != "/" => {}
            Err(e) => panic!("{path:?} after write_file: {e}"),
        }
    }
    Answers {
        path: path.to_string(),
        link,
        answers,
    }
}

fn short(path: &str) -> String {
    path.chars().take(60).collect()
}

/// The drive still takes and serves new files.
async fn still_writes(drive: &Drive, path: &str) {
    let data = format!("written after the hostile input at {path}");
    bounded("a write after hostile input", async {
        drive.write_file(path, data.as_bytes(), w()).await.unwrap();
        assert_eq!(drive.read_file(path).await.unwrap(), data.as_bytes());
    })
    .await;
}

#[tokio::test]
async fn a_trie_block_that_does_not_decode_gives_errors_naming_the_path() {
    let (tmp, _store, drive) = new_drive().await;
    drive.write_file("/a", b"aaa", w()).await.unwrap();
    drive.write_file("/dir/b", b"bbb", w()).await.unwrap();
    // A validly signed block of garbage at the head: every lookup starts there.
    let garbage = drive.metadata().len();
    drive
        .metadata()
        .append(Bytes::from_static(b"\xff\xff\xff\xff not a trie node"))
        .await
        .unwrap();
    for path in ["/a", "/dir/b", "/dir", "/missing"] {
        let answers = reads(&drive, path, &tmp.path().join("out")).await;
        answers.failed_naming_the_path(&[
            "stat",
            "lstat",
            "read_file",
            "read_range",
            "read_at",
            "download",
            "file_stats",
            "export",
        ]);
        answers.errors_name_the_path();
        let err = drive.stat(path).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("block {garbage}")),
            "{err}"
        );
        let written = writes(&drive, path).await;
        written.failed_naming_the_path(&["append", "write_file"]);
        written.errors_name_the_path();
    }
    let err = drive.mounts(true).await.unwrap_err();
    assert!(err.to_string().contains("does not decode"), "{err}");

    // A valid head whose pointers lead to the garbage: the paths whose lookups pass
    // through it fail, the head's own key reads.
    let content = drive.content_feed().await.unwrap().clone();
    let stat = Stat {
        size: 3,
        blocks: 1,
        offset: content.len(),
        byte_offset: content.byte_len(),
        ..Stat::file(0o644, 0)
    };
    content.append(Bytes::from_static(b"ccc")).await.unwrap();
    let path = hypertrie::Path::new("c", false);
    let mut buckets = Buckets::default();
    for i in 1..path.len() {
        for s in 0..4 {
            if s != path.symbol(i) as usize {
                buckets.push(i, s, garbage);
            }
        }
    }
    let head = Node {
        seq: drive.metadata().len(),
        path,
        value: Some(encoded(&stat)),
        flags: 0,
        buckets,
    };
    drive.metadata().append(head.encode()).await.unwrap();
    assert_eq!(drive.read_file("/c").await.unwrap(), b"ccc");
    for path in ["/a", "/dir/b"] {
        let answers = reads(&drive, path, &tmp.path().join("out")).await;
        answers.failed_naming_the_path(&["stat", "read_file", "download", "file_stats"]);
        answers.errors_name_the_path();
    }
}

#[test]
fn pointers_that_lead_round_in_circles_are_listed_once() {
    on_own_thread("listing a trie of circular pointers", LIMIT, async {
        let (tmp, _store, drive) = new_drive().await;
        drive.write_file("/a", b"aaa", w()).await.unwrap();
        let content = drive.content_feed().await.unwrap().clone();
        let stat = Stat {
            size: 1,
            blocks: 1,
            offset: content.len(),
            byte_offset: content.byte_len(),
            ..Stat::file(0o644, 0)
        };
        content.append(Bytes::from_static(b"x")).await.unwrap();
        // Two nodes whose every position points at both of them: a listing that pushed
        // every pointer it met would visit 3^34 entries.
        let first = drive.metadata().len();
        for (seq, key) in [(first, "x"), (first + 1, "y/z")] {
            let path = hypertrie::Path::new(key, false);
            let mut buckets = Buckets::default();
            for i in 0..path.len() {
                for (s, target) in [(1, first), (2, first + 1)] {
                    buckets.push(i, (path.symbol(i) as usize + s) % 4, target);
                }
            }
            let node = Node {
                seq,
                path,
                value: Some(encoded(&stat)),
                flags: 0,
                buckets,
            };
            drive.metadata().append(node.encode()).await.unwrap();
        }
        let mut names = drive.readdir("/", true).await.unwrap();
        names.sort();
        assert_eq!(names, ["x", "y/z"]);
        assert_eq!(drive.read_file("/y/z").await.unwrap(), b"x");
        for path in ["/", "/y", "/x"] {
            reads(&drive, path, &tmp.path().join("out"))
                .await
                .errors_name_the_path();
        }
        still_writes(&drive, "/after").await;
    });
}

#[tokio::test]
async fn versions_past_the_end_of_our_own_drive_answer() {
    let (tmp, store, drive) = new_drive().await;
    drive.write_file("/a", b"aaa", w()).await.unwrap();
    let other = Drive::open(
        &store,
        store.get_named(b"other").await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    other.write_file("/b", b"bbb", w()).await.unwrap();
    let pinned = MountOptions {
        version: Some(other.version() + 10),
        ..MountOptions::default()
    };
    drive.mount("/pinned", other.key(), pinned).await.unwrap();
    let future = drive.checkout(drive.version() + 10);
    let out = tmp.path().join("out");
    for (drive, path) in [(&future, "/a"), (&future, "/"), (&drive, "/pinned/b")] {
        let answers = reads(drive, path, &out).await;
        answers.errors_name_the_path();
        answers.failed_naming_the_path(&["stat", "read_file"]);
    }
    assert_eq!(drive.read_file("/a").await.unwrap(), b"aaa");
}

#[tokio::test]
async fn hidden_keys_are_never_read_as_files() {
    let (_tmp, _store, drive) = new_drive().await;
    // A tag is a hidden key; with no visible key the lookup of its name as a path ends at
    // it.
    drive.create_tag("t", Some(1)).await.unwrap();
    for path in ["/hyperdrive-tags/t", "/hyperdrive-tags"] {
        match drive.stat(path).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("{path}: {other:?}"),
        }
    }
    assert_eq!(
        drive.readdir("/", true).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_block_corrupted_on_disk_gives_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (key, block) = {
        let store = open_store(&dir).await;
        let drive = Drive::default_drive(&store, DriveOptions::default())
            .await
            .unwrap();
        drive.write_file("/a", b"aaa", w()).await.unwrap();
        drive.write_file("/b", b"bbb", w()).await.unwrap();
        drive.write_file("/c", b"ccc", w()).await.unwrap();
        let block = drive.metadata().get(1).await.unwrap();
        let key = drive.key();
        drop(drive);
        store.close().await.unwrap();
        (key, block)
    };
    // The node of /a, overwritten in the metadata feed's data file.
    let store = open_store(&dir).await;
    let data_file = store.core_dir(&key.discovery_key()).join("data");
    store.close().await.unwrap();
    let mut data = std::fs::read(&data_file).unwrap();
    let at = data
        .windows(block.len())
        .position(|w| w == &block[..])
        .expect("the node of /a in the data file");
    data[at..at + block.len()].fill(0xff);
    std::fs::write(&data_file, &data).unwrap();

    let store = open_store(&dir).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    assert_eq!(drive.key(), key);
    let answers = reads(&drive, "/a", &tmp.path().join("out")).await;
    answers.failed_naming_the_path(&["stat", "read_file", "download"]);
    answers.errors_name_the_path();
    assert_eq!(drive.read_file("/c").await.unwrap(), b"ccc");
}

/// Stats a broken or hostile writer could put, each at its own path.
fn lying_stats(content_blocks: u64, other: &[u8]) -> Vec<(&'static str, Bytes)> {
    let file = |size, blocks, offset, byte_offset| Stat {
        size,
        blocks,
        offset,
        byte_offset,
        ..Stat::file(0o644, 0)
    };
    let core_mount = |key: &[u8]| Stat {
        mount: Some(StatMount {
            key: key.to_vec(),
            version: None,
            hash: None,
            hypercore: Some(true),
        }),
        ..file(0, 0, 0, 0)
    };
    vec![
        ("/huge", encoded(&file(u64::MAX, 1, 0, 0))),
        ("/terabyte", encoded(&file(1 << 40, 1, 0, 0))),
        ("/past", encoded(&file(10, 5, content_blocks + 1000, 0))),
        ("/wrapping", encoded(&file(10, 1, u64::MAX, 0))),
        ("/wrapping2", encoded(&file(10, 2, u64::MAX - 1, 0))),
        ("/far-bytes", encoded(&file(10, 1, 0, u64::MAX))),
        ("/no-blocks", encoded(&file(10, 0, 0, 0))),
        (
            "/not-a-stat",
            Bytes::from_static(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
        ),
        ("/short-core-key", encoded(&core_mount(b"short"))),
        (
            "/core-at-max",
            encoded(&Stat {
                mount: Some(StatMount {
                    key: other.to_vec(),
                    version: Some(u64::MAX),
                    hash: None,
                    hypercore: Some(true),
                }),
                ..file(0, 0, 0, 0)
            }),
        ),
        (
            "/short-drive-key",
            encoded(&Stat {
                mount: Some(StatMount {
                    key: b"short".to_vec(),
                    version: None,
                    hash: None,
                    hypercore: Some(false),
                }),
                ..Stat::directory(0o755, 0)
            }),
        ),
        (
            "/weird-mode",
            encoded(&Stat {
                mode: 0o170777,
                ..file(u64::MAX, u64::MAX, u64::MAX, u64::MAX)
            }),
        ),
    ]
}

/// Paths whose Stat says nothing readable: reading their bytes must fail.
const UNREADABLE: [&str; 8] = [
    "/huge",
    "/terabyte",
    "/past",
    "/wrapping",
    "/wrapping2",
    "/far-bytes",
    "/no-blocks",
    "/not-a-stat",
];

#[tokio::test]
async fn stats_that_lie_give_errors_naming_the_path_and_writes_go_on() {
    let (tmp, store, drive) = new_drive().await;
    drive.write_file("/real", b"0123456789", w()).await.unwrap();
    let other = store.get_named(b"a core").await.unwrap();
    other
        .feed()
        .append(Bytes::from_static(b"core"))
        .await
        .unwrap();
    let content_blocks = drive.content_feed().await.unwrap().len();
    let trie = raw_trie(&drive).await;
    let stats = lying_stats(content_blocks, other.feed().key().as_bytes());
    for (path, value) in &stats {
        put_value(&trie, path, value.clone()).await;
    }
    for (path, _) in &stats {
        let out = tmp.path().join("out").join(&path[1..]);
        let answers = reads(&drive, path, &out).await;
        answers.errors_name_the_path();
        if UNREADABLE.contains(path) {
            answers.failed_naming_the_path(&["read_file", "read_range", "reader"]);
        }
        if *path != "/not-a-stat" && !path.contains("mount") && !path.contains("key") {
            assert!(answers.of("stat").is_ok(), "{path}: a Stat that decodes");
        }
    }
    // A tree holding them: walks and exports fail naming one of them.
    for op in ["download", "file_stats", "export"] {
        let answers = reads(&drive, "/", &tmp.path().join("tree")).await;
        let err = answers.of(op).as_ref().unwrap_err().to_string();
        assert!(
            stats.iter().any(|(p, _)| err.contains(p)),
            "{op} /: the error names no path: {err}"
        );
    }
    // A tree of files whose sizes add up past u64::MAX.
    for name in ["/sizes/one", "/sizes/two"] {
        let huge = Stat {
            size: u64::MAX,
            blocks: 1,
            ..Stat::file(0o644, 0)
        };
        put_value(&trie, name, encoded(&huge)).await;
    }
    let answers = reads(&drive, "/sizes", &tmp.path().join("sizes")).await;
    answers.errors_name_the_path();
    for op in ["download", "file_stats", "export"] {
        let err = answers.of(op).as_ref().unwrap_err().to_string();
        assert!(err.contains("/sizes/"), "{op}: {err}");
    }
    // Content of the same sizes as the lying Stats is written and read back: a lying
    // Stat is no candidate for sharing blocks.
    for (i, chunks) in [vec!["0123456789"], vec!["01234", "56789"], vec!["x"; 3]]
        .into_iter()
        .enumerate()
    {
        let path = format!("/same-size-{i}");
        let chunks: Vec<Bytes> = chunks
            .into_iter()
            .map(|c| Bytes::from_static(c.as_bytes()))
            .collect();
        let expected: Vec<u8> = chunks.concat();
        bounded("a write after lying Stats", async {
            drive.write_chunks(&path, chunks, w()).await.unwrap();
            assert_eq!(drive.read_file(&path).await.unwrap(), expected);
        })
        .await;
    }
    // Writes over each lying Stat answer, and a whole new file replaces it.
    for (path, _) in &stats {
        let answers = writes(&drive, path).await;
        answers.errors_name_the_path();
        match (*path, answers.of("write_file")) {
            // A directory (a mount point) is not replaced by a file.
            ("/short-drive-key", Err(Error::WrongType { .. })) => {}
            (_, Ok(())) => {}
            (_, Err(e)) => panic!("{path}: write_file: {e}"),
        }
    }
    still_writes(&drive, "/after").await;
}

#[tokio::test]
async fn a_remote_reader_of_lying_stats_gets_errors_naming_the_path() {
    let (tmp, store, drive) = new_drive().await;
    drive.write_file("/real", b"0123456789", w()).await.unwrap();
    let content_blocks = drive.content_feed().await.unwrap().len();
    let trie = raw_trie(&drive).await;
    let stats = lying_stats(content_blocks, drive.key().as_bytes());
    for (path, value) in &stats {
        put_value(&trie, path, value.clone()).await;
    }
    let reader_store = open_store(&tmp.path().join("reader")).await;
    connect(&store, &reader_store).await;
    let reader = Drive::open_key(&reader_store, drive.key(), DriveOptions::default())
        .await
        .unwrap();
    assert_eq!(reader.read_file("/real").await.unwrap(), b"0123456789");
    // "/past" is left out: a reader waits for the content feed to grow that long.
    for path in UNREADABLE.iter().filter(|p| **p != "/past") {
        let started = Instant::now();
        let answers = reads(&reader, path, &tmp.path().join("out")).await;
        answers.errors_name_the_path();
        answers.failed_naming_the_path(&["read_file", "read_range", "reader", "read_at"]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: a lie that the feed's length already shows is not waited on"
        );
    }
    // Past the content feed: the reader waits a while for it to grow that long (its
    // peers may not have told all yet), then calls the Stat bad.
    let read = tokio::time::timeout(2 * LIMIT, reader.read_file("/past")).await;
    let err = read.expect("reading /past hung").unwrap_err();
    assert!(
        matches!(&err, Error::BadStat { path, .. } if path == "/past"),
        "{err}"
    );
}

#[tokio::test]
async fn a_remote_reader_of_a_garbage_block_gets_errors_naming_the_path() {
    let (tmp, store, drive) = new_drive().await;
    drive.write_file("/a", b"aaa", w()).await.unwrap();
    drive
        .metadata()
        .append(Bytes::from_static(
            b"\xff\xff\xff\xff sent by a malicious writer",
        ))
        .await
        .unwrap();
    let reader_store = open_store(&tmp.path().join("reader")).await;
    connect(&store, &reader_store).await;
    let reader = Drive::open_key(&reader_store, drive.key(), DriveOptions::default())
        .await
        .unwrap();
    for path in ["/a", "/", "/missing"] {
        let answers = reads(&reader, path, &tmp.path().join("out")).await;
        answers.errors_name_the_path();
        answers.failed_naming_the_path(&["read_file", "readdir recursive", "download"]);
    }
}

#[tokio::test]
async fn mount_records_with_bad_keys_give_errors_naming_the_path() {
    let (tmp, _store, drive) = new_drive().await;
    drive.write_file("/real", b"real", w()).await.unwrap();
    let trie = raw_trie(&drive).await;
    // The two nodes of a mount, as mountable-hypertrie writes them, with a key of 5 bytes.
    let record = MountRecord {
        key: b"short".to_vec(),
        local_path: "m".into(),
        version: None,
        remote_path: None,
        hash: None,
    };
    let mount = |hidden| PutOptions {
        hidden,
        flags: hypertrie::MOUNT_FLAG,
    };
    trie.put("mounts/m", record.encode_to_vec().into(), mount(true))
        .await
        .unwrap();
    trie.put("m", encoded(&Stat::directory(0o755, 0)), mount(false))
        .await
        .unwrap();
    // And a record that does not decode.
    trie.put("mounts/g", Bytes::from_static(b"\xff\xff"), mount(true))
        .await
        .unwrap();
    trie.put("g", encoded(&Stat::directory(0o755, 0)), mount(false))
        .await
        .unwrap();
    let err = drive.stat("/m/file").await.unwrap_err().to_string();
    assert!(err.contains("a key of 5 bytes"), "{err}");
    for path in ["/m/file", "/g/file"] {
        let answers = reads(&drive, path, &tmp.path().join("out")).await;
        answers.failed_naming_the_path(&["stat", "read_file"]);
        answers.errors_name_the_path();
        let written = writes(&drive, path).await;
        written.failed_naming_the_path(&["write_file"]);
        written.errors_name_the_path();
    }
    for path in ["/m", "/g", "/"] {
        let answers = reads(&drive, path, &tmp.path().join("out")).await;
        answers.failed_naming_the_path(&["readdir recursive"]);
    }
    let err = drive.mounts(true).await.unwrap_err().to_string();
    assert!(err.contains("/m") || err.contains("mounts/g"), "{err}");
    still_writes(&drive, "/after").await;
}

#[tokio::test]
async fn a_header_naming_no_content_feed_is_an_error_naming_the_drive() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&tmp.path().join("store")).await;
    let headers: [(&str, Bytes); 4] = [
        (
            "no metadata",
            hypertrie::Header {
                r#type: hypertrie::HEADER_TYPE.into(),
                metadata: None,
                subtype: Some("hyperdrive".into()),
            }
            .encode_to_vec()
            .into(),
        ),
        (
            "a short key",
            hypertrie::Header {
                r#type: hypertrie::HEADER_TYPE.into(),
                metadata: Some(b"short".to_vec()),
                subtype: Some("hyperdrive".into()),
            }
            .encode_to_vec()
            .into(),
        ),
        (
            "another type",
            hypertrie::Header {
                r#type: "hypercore".into(),
                metadata: Some(vec![7; 32]),
                subtype: None,
            }
            .encode_to_vec()
            .into(),
        ),
        ("garbage", Bytes::from_static(b"\xff\xff\xff\xff\xff")),
    ];
    for (what, header) in headers {
        let core = store.get_named(what.as_bytes()).await.unwrap();
        core.feed().append(header).await.unwrap();
        let key = core.feed().key();
        let err = bounded(what, Drive::open(&store, core, DriveOptions::default()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&key.to_string()), "{what}: {err}");
    }
}

#[tokio::test]
async fn mount_loops_give_errors_naming_the_path_never_hang() {
    let (tmp, store, a) = new_drive().await;
    let b = Drive::open(
        &store,
        store.get_named(b"b").await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    a.write_file("/fa", b"in a", w()).await.unwrap();
    b.write_file("/fb", b"in b", w()).await.unwrap();
    // A drive mounted in itself (three times: a listing that followed every mount would
    // grow 3^depth), and two drives mounted in each other.
    for point in ["/self", "/again", "/third"] {
        a.mount(point, a.key(), MountOptions::default())
            .await
            .unwrap();
    }
    a.mount("/b", b.key(), MountOptions::default())
        .await
        .unwrap();
    b.mount("/a", a.key(), MountOptions::default())
        .await
        .unwrap();
    assert_eq!(a.read_file("/self/fa").await.unwrap(), b"in a");
    assert_eq!(a.read_file("/b/a/b/fb").await.unwrap(), b"in b");
    let deep_self = format!("{}/fa", "/self".repeat(30));
    let deep_pair = format!("{}/fa", "/b/a".repeat(20));
    let out = tmp.path().join("out");
    for path in [deep_self.as_str(), deep_pair.as_str()] {
        let answers = reads(&a, path, &out).await;
        answers.failed_naming_the_path(&["stat", "lstat", "read_file", "download"]);
        answers.errors_name_the_path();
        let err = a.stat(path).await.unwrap_err();
        assert!(err.to_string().contains("mount loop"), "{err}");
        let written = writes(&a, path).await;
        written.failed_naming_the_path(&["write_file"]);
        written.errors_name_the_path();
    }
    // Walks over the whole tree answer: each drive's files once, or a mount loop error.
    for path in ["/", "/self", "/b", "/b/a"] {
        let answers = reads(&a, path, &out).await;
        answers.errors_name_the_path();
        let stats = a.file_stats(path, WITH_MOUNTS).await.unwrap();
        let mut files: Vec<&str> = stats.iter().map(|s| s.path.as_str()).collect();
        files.sort();
        assert!(files.len() <= 2, "{path}: {files:?}");
    }
    let mounts = bounded("mounts", a.mounts(true)).await;
    if let Err(e) = &mounts {
        assert!(e.to_string().contains("mount loop"), "{e}");
    }
    still_writes(&a, "/b/a/written-through-two-mounts").await;
    assert!(a.stat("/written-through-two-mounts").await.is_ok());
}

#[tokio::test]
async fn drives_mounted_in_each_other_many_times_over_are_not_walked_for_ever() {
    let (tmp, store, first) = new_drive().await;
    // 16 drives, each mounting the next at 3 points: no loop, but 3^15 mount points below
    // the first, which a walk entering each would take days to list.
    let mut drives = vec![first];
    for i in 1..16u8 {
        let drive = Drive::open(
            &store,
            store.get_named(&[i]).await.unwrap(),
            DriveOptions::default(),
        )
        .await
        .unwrap();
        drive.write_file("/f", &[i], w()).await.unwrap();
        drives.push(drive);
    }
    for pair in drives.windows(2) {
        for point in ["/m1", "/m2", "/m3"] {
            pair[0]
                .mount(point, pair[1].key(), MountOptions::default())
                .await
                .unwrap();
        }
    }
    let first = &drives[0];
    let too_many = |e: &Error| e.to_string().contains("too many mounts");
    let err = bounded("readdir", first.readdir("/", true))
        .await
        .unwrap_err();
    assert!(too_many(&err), "{err}");
    let err = bounded("mounts", first.mounts(true)).await.unwrap_err();
    assert!(too_many(&err), "{err}");
    let err = bounded("file_stats", first.file_stats("/", WITH_MOUNTS))
        .await
        .unwrap_err();
    assert!(too_many(&err), "{err}");
    let out = tmp.path().join("out");
    let err = bounded("export", first.export("/", &out, ExportOptions::default()))
        .await
        .unwrap_err();
    assert!(too_many(&err), "{err}");
    // A path through the mounts is found as ever.
    let deep = format!("{}/f", "/m2".repeat(15));
    assert_eq!(first.read_file(&deep).await.unwrap(), [15]);
}

#[tokio::test]
async fn symlink_loops_give_errors_naming_the_path() {
    let (tmp, _store, drive) = new_drive().await;
    drive.write_file("/file", b"data", w()).await.unwrap();
    drive.symlink("/l2", "/l1").await.unwrap();
    drive.symlink("/l1", "/l2").await.unwrap();
    drive.symlink("me", "/me").await.unwrap();
    drive.symlink("../../up", "/up").await.unwrap();
    drive.symlink("/dirlink/x", "/dirlink").await.unwrap();
    for i in 0..60 {
        drive
            .symlink(&format!("/chain{}", i + 1), &format!("/chain{i}"))
            .await
            .unwrap();
    }
    drive.symlink("/file", "/chain60").await.unwrap();
    drive.symlink("", "/to-nothing").await.unwrap();
    assert_eq!(drive.read_file("/chain30").await.unwrap(), b"data");
    let out = tmp.path().join("out");
    for path in ["/l1", "/me", "/up", "/chain0"] {
        let answers = reads(&drive, path, &out).await;
        answers.failed_naming_the_path(&["stat", "read_file", "read_range", "download"]);
        answers.errors_name_the_path();
        let err = drive.stat(path).await.unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{path}: {err}");
        assert!(answers.of("lstat").is_ok(), "{path}: lstat reads the link");
        assert!(answers.of("readdir").is_ok(), "{path}: readdir");
    }
    let answers = reads(&drive, "/dirlink", &out).await;
    answers.errors_name_the_path();
    // The whole tree is exported with the links as links.
    let summary = drive
        .export("/", &out.join("all"), ExportOptions::default())
        .await
        .unwrap();
    assert!(summary.added >= 65, "{summary:?}");
    // A link to nothing cannot be a local link: it is left out, and named.
    assert_eq!(summary.skipped.len(), 1, "{summary:?}");
    assert_eq!(summary.skipped[0].path, "/to-nothing");
    still_writes(&drive, "/after").await;
}

#[tokio::test]
async fn paths_of_100000_characters_are_not_found_quickly_and_refused_for_writes() {
    let (tmp, _store, drive) = new_drive().await;
    drive.write_file("/x", b"x", w()).await.unwrap();
    drive.write_file("/a/a/a", b"a", w()).await.unwrap();
    let many = format!("/{}", "a/".repeat(50_000));
    let one = format!("/{}", "x".repeat(100_000));
    let out = tmp.path().join("out");
    for path in [&many, &one] {
        let started = Instant::now();
        let answers = reads(&drive, path, &out).await;
        for op in [
            "stat",
            "lstat",
            "read_file",
            "read_at",
            "download",
            "file_stats",
        ] {
            match answers.of(op) {
                Err(Error::NotFound { .. }) => {}
                other => panic!("{op}: {other:?}"),
            }
        }
        for (op, answer) in &answers.answers {
            if let Err(e) = answer {
                let len = e.to_string().len();
                assert!(len < 400, "{op}: a message of {len} bytes");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "reads of a long path took {:?}",
            started.elapsed()
        );
        let refused = |r: Result<(), Error>, op: &str| match r {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("{op}: {other:?}"),
        };
        refused(drive.write_file(path, b"x", w()).await.map(|_| ()), "write");
        refused(drive.write_stream(path, w()).await.map(|_| ()), "stream");
        refused(drive.mkdir(path, None).await.map(|_| ()), "mkdir");
        refused(drive.symlink("/x", path).await.map(|_| ()), "symlink");
        refused(drive.rename("/x", path).await, "rename");
        let create = OpenFlags {
            write: true,
            create: true,
            ..OpenFlags::default()
        };
        refused(drive.open_file(path, create).await.map(|_| ()), "open");
        refused(
            drive
                .mount(path, drive.key(), MountOptions::default())
                .await
                .map(|_| ()),
            "mount",
        );
    }
    // A link to such a path is followed to nothing.
    drive.symlink(&many, "/long-link").await.unwrap();
    assert!(matches!(
        drive.read_file("/long-link").await,
        Err(Error::NotFound { .. })
    ));
    still_writes(&drive, "/after").await;
}

#[tokio::test]
async fn names_with_nul_or_dot_dot_are_refused_for_writes() {
    let (_tmp, _store, drive) = new_drive().await;
    drive.write_file("/x", b"x", w()).await.unwrap();
    for path in ["/a\0b", "/..", "/a/../b", "/a/./b", "/../../etc/passwd"] {
        let refused = |r: Result<(), Error>, op: &str| match r {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("{op} {path:?}: {other:?}"),
        };
        refused(drive.write_file(path, b"x", w()).await.map(|_| ()), "write");
        refused(drive.write_stream(path, w()).await.map(|_| ()), "stream");
        refused(drive.mkdir(path, None).await.map(|_| ()), "mkdir");
        refused(drive.symlink("/x", path).await.map(|_| ()), "symlink");
        refused(drive.rename("/x", path).await, "rename");
        let create = OpenFlags {
            write: true,
            create: true,
            ..OpenFlags::default()
        };
        refused(drive.open_file(path, create).await.map(|_| ()), "open");
    }
}

/// A node as a hostile writer may append it: any key, value, flags and pointers.
#[derive(Clone, Debug)]
enum Block {
    Garbage(Vec<u8>),
    Node {
        key: &'static str,
        hidden: bool,
        flags: u64,
        value: Box<Value>,
        pointers: Vec<(usize, usize, u64)>,
    },
}

#[derive(Clone, Debug)]
enum Value {
    None,
    Garbage(Vec<u8>),
    Stat(Stat),
    Record(MountRecord),
}

mod strategies {
    use super::*;
    use proptest::prelude::*;

    pub const KEYS: [&str; 10] = [
        "a",
        "a/b",
        "a/b/c",
        "b",
        "c/d",
        "mounts/a",
        "mounts/c",
        "mounts/c/d",
        "hyperdrive-tags/t",
        "",
    ];

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(2),
            Just(10),
            Just(1 << 20),
            Just(1 << 40),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            any::<u64>(),
        ]
    }

    /// 32 bytes of the drive itself, of another drive, of nothing stored, or too short.
    fn key(own: [u8; 32], other: [u8; 32]) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(own.to_vec()),
            Just(other.to_vec()),
            Just(vec![9; 32]),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    fn stat(own: [u8; 32], other: [u8; 32]) -> impl Strategy<Value = Stat> {
        let mode = prop_oneof![
            Just(S_IFREG | 0o644),
            Just(S_IFDIR | 0o755),
            Just(S_IFLNK | 0o644),
            any::<u32>(),
        ];
        let link = proptest::option::of(prop_oneof![
            Just("/a".to_string()),
            Just("a/b".to_string()),
            Just("..".to_string()),
            Just("/c/d/../../a".to_string()),
            Just(String::new()),
        ]);
        let mount = proptest::option::of(
            (
                key(own, other),
                proptest::option::of(number()),
                any::<bool>(),
            )
                .prop_map(|(key, version, hypercore)| StatMount {
                    key,
                    version,
                    hash: None,
                    hypercore: Some(hypercore),
                }),
        );
        (mode, (number(), number(), number(), number()), link, mount).prop_map(
            |(mode, (size, blocks, offset, byte_offset), linkname, mount)| Stat {
                mode,
                size,
                blocks,
                offset,
                byte_offset,
                linkname,
                mount,
                ..Stat::default()
            },
        )
    }

    fn value(own: [u8; 32], other: [u8; 32]) -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            proptest::collection::vec(any::<u8>(), 0..30).prop_map(Value::Garbage),
            stat(own, other).prop_map(Value::Stat),
            (
                key(own, other),
                proptest::sample::select(&KEYS[..]),
                proptest::option::of(number())
            )
                .prop_map(|(key, local_path, version)| Value::Record(MountRecord {
                    key,
                    local_path: local_path.into(),
                    version,
                    remote_path: None,
                    hash: None,
                })),
        ]
    }

    pub fn blocks(own: [u8; 32], other: [u8; 32]) -> impl Strategy<Value = Vec<Block>> {
        let node = (
            proptest::sample::select(&KEYS[..]),
            any::<bool>(),
            prop_oneof![Just(0u64), Just(1), any::<u64>()],
            value(own, other),
            proptest::collection::vec((0usize..100, 0usize..70, 0u64..16), 0..24),
        )
            .prop_map(|(key, hidden, flags, value, pointers)| Block::Node {
                key,
                hidden,
                flags,
                value: Box::new(value),
                pointers,
            });
        let block = prop_oneof![
            1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Block::Garbage),
            6 => node,
        ];
        proptest::collection::vec(block, 1..12)
    }
}

/// The block `block` as appended at `seq`.
fn encode(block: &Block, seq: u64) -> Bytes {
    match block {
        Block::Garbage(bytes) => Bytes::from(bytes.clone()),
        Block::Node {
            key,
            hidden,
            flags,
            value,
            pointers,
        } => {
            let mut buckets = Buckets::default();
            for &(i, s, seq) in pointers {
                buckets.push(i, s, seq);
            }
            let value = match value.as_ref() {
                Value::None => None,
                Value::Garbage(bytes) => Some(Bytes::from(bytes.clone())),
                Value::Stat(stat) => Some(encoded(stat)),
                Value::Record(record) => Some(Bytes::from(record.encode_to_vec())),
            };
            let node = Node {
                seq,
                path: hypertrie::Path::new(key, *hidden),
                value,
                flags: *flags,
                buckets,
            };
            Bytes::from(node.encode())
        }
    }
}

/// Every operation on a drive whose metadata blocks after the header are `blocks`.
async fn every_operation_answers(blocks: Vec<Block>, keys: (KeyPair, KeyPair)) {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&tmp.path().join("store")).await;
    let (own, other_keys) = keys;
    let metadata = store.get_with_key_pair(own).await.unwrap();
    let drive = Drive::open(&store, metadata, DriveOptions::default())
        .await
        .unwrap();
    let other = Drive::open(
        &store,
        store.get_with_key_pair(other_keys).await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    other.write_file("/a", b"other", w()).await.unwrap();
    let content = drive.content_feed().await.unwrap().clone();
    content
        .append_batch([&b"0123456789"[..], b"abc", b""])
        .await
        .unwrap();
    for block in &blocks {
        let seq = drive.metadata().len();
        drive.metadata().append(encode(block, seq)).await.unwrap();
    }
    let out = tmp.path().join("out");
    for path in ["/", "/a", "/a/b", "/a/b/c", "/b", "/c", "/c/d", "/c/d/e"] {
        let answers = reads(&drive, path, &out).await;
        answers.errors_name_the_path();
    }
    bounded("mounts", drive.mounts(true)).await.ok();
    bounded("tags", drive.tags()).await.ok();
    bounded("checkout", drive.checkout(2).readdir("/", true))
        .await
        .ok();
    for path in ["/a/b", "/new"] {
        let answers = writes(&drive, path).await;
        answers.errors_name_the_path();
    }
    bounded("unlink", drive.unlink("/b")).await.ok();
    bounded("rename", drive.rename("/a", "/z")).await.ok();
    bounded("mkdir", drive.mkdir("/c/new", None)).await.ok();
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> (KeyPair, KeyPair) {
        (KeyPair::from_seed(&[1; 32]), KeyPair::from_seed(&[2; 32]))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever bytes a block or a Stat holds, decoding answers.
        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Stat::decode(&bytes[..]);
            let _ = StatMount::decode(&bytes[..]);
            let _ = MountRecord::decode(&bytes[..]);
            let _ = Node::decode(1, &bytes);
            let _ = hypertrie::Header::decode_block(&bytes);
        }

        /// A drive whose trie is any sequence of nodes and garbage: every operation answers.
        #[test]
        fn a_drive_of_any_blocks_answers_every_operation(
            blocks in strategies::blocks(
                *keys().0.public.as_bytes(),
                *keys().1.public.as_bytes(),
            )
        ) {
            let what = format!("operations on {blocks:?}");
            on_own_thread(&what, 4 * LIMIT, every_operation_answers(blocks, keys()));
        }
    }
}
