//! Downloads between two corestores over TCP on 127.0.0.1: a reader opens the writer's drive
//! by key (sparse, as a real reader does) and downloads a file or a tree, cancels, clears,
//! reads per-file figures and mirrors the drive live, mounts included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use hypercore::{Feed, PublicKey};
use hypercore_protocol::{Protocol, ProtocolOptions};
use hyperdrive::{
    Cleared, Drive, DriveOptions, FileStats, MountOptions, Progress, WalkOptions, WriteOptions,
};

const LIMIT: Duration = Duration::from_secs(20);

/// A writer's and a reader's store, connected live over TCP.
struct Peers {
    _tmp: tempfile::TempDir,
    writer_store: Corestore,
    reader_store: Corestore,
    /// Keeps the connection up.
    _protocols: (Protocol, Protocol),
}

async fn peers() -> Peers {
    let tmp = tempfile::tempdir().unwrap();
    let writer_store = Corestore::open(tmp.path().join("writer"), CorestoreOptions::default())
        .await
        .unwrap();
    let reader_store = Corestore::open(tmp.path().join("reader"), CorestoreOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), async {
        listener.accept().await.unwrap().0
    });
    let options = |initiator| ProtocolOptions {
        initiator,
        live: true,
        ..ProtocolOptions::default()
    };
    let (a, b) = tokio::join!(
        Protocol::connect(dialed.unwrap(), options(true)),
        Protocol::connect(accepted, options(false))
    );
    let ((pa, ea), (pb, eb)) = (a.unwrap(), b.unwrap());
    for (store, protocol, events) in [
        (reader_store.clone(), pa.clone(), ea),
        (writer_store.clone(), pb.clone(), eb),
    ] {
        tokio::spawn(async move { store.replicate(protocol, events, true).await });
    }
    Peers {
        _tmp: tmp,
        writer_store,
        reader_store,
        _protocols: (pa, pb),
    }
}

/// `n` chunks of distinct sizes (`base`, `base + 1000`, ...), each its own block.
fn chunks(n: usize, base: usize, fill: u8) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(vec![fill.wrapping_add(i as u8); base + 1000 * i]))
        .collect()
}

fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// The writer's drive: a tree under /docs (files of 5, 1 and 2 blocks, an empty file, a
/// symlink, an empty directory and a mounted drive of 2 files) and a file outside it.
struct Fixture {
    writer: Drive,
    mounted: Drive,
    a: Vec<Bytes>,
    c: Vec<Bytes>,
}

const B: &[u8] = b"a small file";

async fn fixture(store: &Corestore) -> Fixture {
    let writer = Drive::default_drive(store, DriveOptions::default())
        .await
        .unwrap();
    let a = chunks(5, 10_000, 1);
    let c = chunks(2, 3_000, 50);
    let w = WriteOptions::default;
    writer
        .write_chunks("/docs/a.bin", a.clone(), w())
        .await
        .unwrap();
    writer.write_file("/docs/b.txt", B, w()).await.unwrap();
    writer.write_file("/docs/empty", b"", w()).await.unwrap();
    writer
        .write_chunks("/docs/sub/c.bin", c.clone(), w())
        .await
        .unwrap();
    writer.symlink("/docs/b.txt", "/docs/link").await.unwrap();
    writer.mkdir("/docs/dir", None).await.unwrap();
    writer
        .write_chunks("/other.bin", chunks(3, 500, 99), w())
        .await
        .unwrap();
    let mounted = Drive::open(
        store,
        store.get_named(b"mounted").await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    mounted
        .write_chunks("/m1.bin", chunks(2, 7_000, 7), w())
        .await
        .unwrap();
    mounted.write_file("/m2.txt", b"m2", w()).await.unwrap();
    writer
        .mount("/docs/mnt", mounted.key(), MountOptions::default())
        .await
        .unwrap();
    Fixture {
        writer,
        mounted,
        a,
        c,
    }
}

/// The writer's drive as a reader opens it: by key, in its own store.
async fn reader_of(store: &Corestore, key: PublicKey) -> Drive {
    Drive::open_key(store, key, DriveOptions::default())
        .await
        .unwrap()
}

/// The reader's copy of a feed of the writer's.
async fn copy(store: &Corestore, key: PublicKey) -> Feed {
    store.get_by_key(key).await.unwrap().feed().clone()
}

/// The content blocks `[offset, offset + blocks)` of `path` in `drive`.
async fn blocks_of(drive: &Drive, path: &str) -> (u64, u64) {
    let stat = drive.stat(path).await.unwrap();
    (stat.offset, stat.offset + stat.blocks)
}

/// Waits (on `feed`'s events) until `done` holds.
async fn until(feed: &Feed, what: &str, done: impl Fn() -> bool) {
    let mut events = feed.events();
    let wait = async {
        while !done() {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                panic!("the feed closed while waiting until {what}");
            }
        }
    };
    tokio::time::timeout(LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("never: {what}"));
}

/// Runs a download to its end, returning every progress it published and the result.
async fn run(download: hyperdrive::Downloading) -> (Vec<Progress>, Progress) {
    let mut rx = download.progress();
    let mut seen = vec![*rx.borrow_and_update()];
    let watch = async {
        while rx.changed().await.is_ok() {
            seen.push(*rx.borrow_and_update());
        }
        std::future::pending::<()>().await;
    };
    let result = tokio::time::timeout(LIMIT, async {
        tokio::select! {
            result = download => result,
            _ = watch => unreachable!(),
        }
    })
    .await
    .expect("the download never finished")
    .unwrap();
    if *rx.borrow() != *seen.last().unwrap() {
        seen.push(*rx.borrow());
    }
    (seen, result)
}

#[tokio::test]
async fn a_directory_download_reaches_its_totals_and_skips_mounts_unless_asked() {
    let peers = peers().await;
    let f = fixture(&peers.writer_store).await;
    let reader = reader_of(&peers.reader_store, f.writer.key()).await;

    let download = reader
        .download("/docs", WalkOptions::default())
        .await
        .unwrap();
    let (seen, result) = run(download).await;
    let sizes = |c: &[Bytes]| c.iter().map(|b| b.len() as u64).sum::<u64>();
    let totals = Progress {
        files_done: 3,
        files_total: 3,
        blocks_done: 8,
        blocks_total: 8,
        bytes_done: sizes(&f.a) + B.len() as u64 + sizes(&f.c),
        bytes_total: sizes(&f.a) + B.len() as u64 + sizes(&f.c),
    };
    assert_eq!(result, totals);
    assert_eq!(*seen.last().unwrap(), totals, "the last progress published");
    assert_eq!(seen[0].blocks_done, 0, "nothing was stored before");
    for pair in seen.windows(2) {
        assert!(
            pair[1].blocks_done >= pair[0].blocks_done && pair[1].files_done >= pair[0].files_done,
            "progress went back: {pair:?}"
        );
    }
    // Exactly the three files' blocks: not the empty file's, not /other.bin's.
    let content = reader.content_feed().await.unwrap();
    for path in ["/docs/a.bin", "/docs/b.txt", "/docs/sub/c.bin"] {
        let (start, end) = blocks_of(&f.writer, path).await;
        assert!(content.has_range(start, end), "{path}");
    }
    assert_eq!(content.downloaded(0, None), 8);
    // The mounted drive was not entered.
    let mounted_content = copy(&peers.reader_store, f.mounted.content_key().unwrap()).await;
    assert_eq!(mounted_content.downloaded(0, None), 0);

    // Asked to: its files too (the others are stored already).
    let with_mounts = WalkOptions {
        mounts: true,
        ..WalkOptions::default()
    };
    let download = reader.download("/docs", with_mounts).await.unwrap();
    assert_eq!(
        download.progress().borrow().files_total,
        5,
        "a.bin, b.txt, c.bin, mnt/m1.bin, mnt/m2.txt"
    );
    let (seen, result) = run(download).await;
    assert_eq!(seen[0].blocks_done, 0, "counted once the download runs");
    assert_eq!((result.files_done, result.blocks_done), (5, 11));
    assert_eq!(result.bytes_done, result.bytes_total);
    assert_eq!(
        result.bytes_total,
        totals.bytes_total + 7_000 + 8_000 + 2,
        "m1.bin (2 blocks) and m2.txt"
    );
    assert!(mounted_content.has_range(0, mounted_content.len()));
    assert_eq!(mounted_content.len(), 3);
    assert_eq!(content.downloaded(0, None), 8, "nothing else of the drive");
}

#[tokio::test]
async fn a_file_download_fetches_only_its_blocks_and_the_metadata_of_its_lookup() {
    let peers = peers().await;
    let f = fixture(&peers.writer_store).await;
    // Many more entries, so a lookup is a small part of the metadata feed.
    for i in 0..200 {
        f.writer
            .write_file(&format!("/bulk/{i}.txt"), b"x", WriteOptions::default())
            .await
            .unwrap();
    }
    let reader = reader_of(&peers.reader_store, f.writer.key()).await;
    let (seen, result) = run(reader
        .download("/docs/sub/c.bin", WalkOptions::default())
        .await
        .unwrap())
    .await;
    assert_eq!((result.files_total, result.blocks_total), (1, 2));
    assert_eq!(result.bytes_done, concat(&f.c).len() as u64);
    assert!(seen.len() >= 2, "progress was published: {seen:?}");
    let content = reader.content_feed().await.unwrap();
    let (start, end) = blocks_of(&f.writer, "/docs/sub/c.bin").await;
    assert!(content.has_range(start, end));
    assert_eq!(content.downloaded(0, None), 2, "no other file's blocks");
    let metadata = reader.metadata();
    assert_eq!(metadata.len(), f.writer.version());
    let fetched = metadata.downloaded(0, None);
    eprintln!(
        "one file's download fetched {fetched} of {} metadata blocks",
        metadata.len()
    );
    assert!(fetched <= 20, "{fetched} metadata blocks for one lookup");
    // What it read is what the writer wrote.
    assert_eq!(
        reader.read_file("/docs/sub/c.bin").await.unwrap(),
        concat(&f.c)
    );
}

#[tokio::test]
async fn cancelling_a_download_stops_its_requests() {
    let peers = peers().await;
    let writer = Drive::default_drive(&peers.writer_store, DriveOptions::default())
        .await
        .unwrap();
    const BLOCKS: u64 = 20_000;
    let big: Vec<Bytes> = (0..BLOCKS)
        .map(|i| Bytes::from(format!("block {i:>58}")))
        .collect();
    let w = WriteOptions::default;
    writer.write_chunks("/big", big, w()).await.unwrap();
    writer.write_file("/barrier-1", b"one", w()).await.unwrap();
    writer.write_file("/barrier-2", b"two", w()).await.unwrap();
    let reader = reader_of(&peers.reader_store, writer.key()).await;
    let (start, end) = blocks_of(&writer, "/big").await;

    let mut download = reader
        .download("/big", WalkOptions::default())
        .await
        .unwrap();
    let mut progress = download.progress();
    tokio::time::timeout(LIMIT, async {
        tokio::select! {
            _ = &mut download => panic!("finished before it was cancelled"),
            seen = progress.wait_for(|p| p.blocks_done >= 500) => { seen.unwrap(); }
        }
    })
    .await
    .expect("the download never got going");
    drop(download);

    // Each barrier is a block asked for after the cancel: the writer answers in order, so
    // once it is here every block requested before it is here too.
    let content = reader.content_feed().await.unwrap();
    let uploads = || {
        peers
            .writer_store
            .get_open(&writer.content_key().unwrap())
            .unwrap()
            .stats()
            .totals
            .uploaded_blocks
    };
    reader.read_file("/barrier-1").await.unwrap();
    let (stored, uploaded) = (content.downloaded(start, Some(end)), uploads());
    reader.read_file("/barrier-2").await.unwrap();
    assert_eq!(
        content.downloaded(start, Some(end)),
        stored,
        "blocks of the cancelled file kept coming"
    );
    assert_eq!(
        uploads(),
        uploaded + 1,
        "the writer served only the barrier"
    );
    eprintln!("cancelled after {stored} of {BLOCKS} blocks");
    assert!((500..BLOCKS).contains(&stored), "{stored} blocks stored");
}

#[tokio::test]
async fn clear_frees_exactly_the_files_blocks_and_a_read_fetches_them_again() {
    let peers = peers().await;
    let f = fixture(&peers.writer_store).await;
    let reader = reader_of(&peers.reader_store, f.writer.key()).await;
    run(reader
        .download("/docs", WalkOptions::default())
        .await
        .unwrap())
    .await;
    let content = reader.content_feed().await.unwrap();
    assert_eq!(content.downloaded(0, None), 8);

    let cleared = reader
        .clear("/docs/a.bin", WalkOptions::default())
        .await
        .unwrap();
    assert_eq!(
        cleared,
        Cleared {
            files: 1,
            blocks: 5,
            bytes: concat(&f.a).len() as u64
        }
    );
    let (start, end) = blocks_of(&f.writer, "/docs/a.bin").await;
    assert_eq!(content.downloaded(start, Some(end)), 0);
    assert_eq!(content.downloaded(0, None), 3, "b.txt and c.bin are kept");
    // Nothing left to free there.
    let again = reader
        .clear("/docs/a.bin", WalkOptions::default())
        .await
        .unwrap();
    assert_eq!((again.blocks, again.bytes), (0, 0));
    // A read fetches the blocks again.
    assert_eq!(reader.read_file("/docs/a.bin").await.unwrap(), concat(&f.a));
    assert!(content.has_range(start, end));

    // A tree: every file under it, the mounted drive left alone.
    let cleared = reader.clear("/docs", WalkOptions::default()).await.unwrap();
    assert_eq!((cleared.files, cleared.blocks), (3, 8));
    assert_eq!(content.downloaded(0, None), 0);
}

#[tokio::test]
async fn file_stats_match_the_bitfield() {
    let peers = peers().await;
    let f = fixture(&peers.writer_store).await;
    let reader = reader_of(&peers.reader_store, f.writer.key()).await;
    // Listing fetches metadata only.
    let stats = reader
        .file_stats("/docs", WalkOptions::default())
        .await
        .unwrap();
    assert_eq!(stats.len(), 4);
    assert!(stats
        .iter()
        .all(|s| s.downloaded_blocks == 0 && s.downloaded_bytes == 0));
    assert!(reader.content_feed().await.unwrap().downloaded(0, None) == 0);
    // One block of a.bin (its second) and nothing else.
    let (a_start, _) = blocks_of(&f.writer, "/docs/a.bin").await;
    let content = reader.content_feed().await.unwrap();
    assert_eq!(content.get(a_start + 1).await.unwrap(), f.a[1]);

    let stats = reader
        .file_stats("/docs", WalkOptions::default())
        .await
        .unwrap();
    let mut paths: Vec<&str> = stats.iter().map(|s| s.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/docs/a.bin",
            "/docs/b.txt",
            "/docs/empty",
            "/docs/sub/c.bin"
        ]
    );
    for s in &stats {
        let stat = f.writer.stat(&s.path).await.unwrap();
        let (start, end) = (stat.offset, stat.offset + stat.blocks);
        assert_eq!((s.blocks, s.size), (stat.blocks, stat.size), "{}", s.path);
        assert_eq!(
            s.downloaded_blocks,
            content.downloaded(start, Some(end)),
            "{}",
            s.path
        );
        // The bytes of the stored blocks, read back to check.
        let mut bytes = 0;
        for i in start..end {
            if content.has(i) {
                bytes += content.get(i).await.unwrap().len() as u64;
            }
        }
        assert_eq!(s.downloaded_bytes, bytes, "{}", s.path);
    }
    let a = stats.iter().find(|s| s.path == "/docs/a.bin").unwrap();
    assert_eq!((a.downloaded_blocks, a.downloaded_bytes), (1, 11_000));

    // A file by itself, and the writer's copy, which holds everything.
    let one = reader
        .file_stats("/docs/sub/c.bin", WalkOptions::default())
        .await
        .unwrap();
    assert_eq!(
        one,
        [FileStats {
            path: "/docs/sub/c.bin".into(),
            blocks: 2,
            downloaded_blocks: 0,
            size: concat(&f.c).len() as u64,
            downloaded_bytes: 0,
        }]
    );
    let with_mounts = WalkOptions {
        mounts: true,
        ..WalkOptions::default()
    };
    let all = f.writer.file_stats("/", with_mounts).await.unwrap();
    assert_eq!(
        all.len(),
        7,
        "5 files of the drive, 2 of the mount: {all:?}"
    );
    assert!(all
        .iter()
        .all(|s| s.downloaded_blocks == s.blocks && s.downloaded_bytes == s.size));
    assert!(all.iter().any(|s| s.path == "/docs/mnt/m1.bin"));
    // A mount point named as the path is listed inside, mounts entered or not.
    let inside = f
        .writer
        .file_stats("/docs/mnt", WalkOptions::default())
        .await
        .unwrap();
    let mut names: Vec<&str> = inside.iter().map(|s| s.path.as_str()).collect();
    names.sort();
    assert_eq!(names, ["/docs/mnt/m1.bin", "/docs/mnt/m2.txt"]);
    // Only direct children.
    let top = WalkOptions {
        recursive: false,
        ..WalkOptions::default()
    };
    let children = f.writer.file_stats("/docs", top).await.unwrap();
    let mut names: Vec<&str> = children.iter().map(|s| s.path.as_str()).collect();
    names.sort();
    assert_eq!(names, ["/docs/a.bin", "/docs/b.txt", "/docs/empty"]);
}

#[tokio::test]
async fn a_reader_downloads_what_the_writer_wrote_after_it_opened_the_drive() {
    let peers = peers().await;
    let f = fixture(&peers.writer_store).await;
    let reader = reader_of(&peers.reader_store, f.writer.key()).await;
    run(reader
        .download("/docs/b.txt", WalkOptions::default())
        .await
        .unwrap())
    .await;
    let before = reader.metadata().len();
    f.writer
        .write_file("/docs/new.txt", b"new", WriteOptions::default())
        .await
        .unwrap();
    // The writer's announcement reaches the reader, which does not fetch on its own.
    let core = reader.metadata_core().clone();
    let announced = f.writer.version();
    tokio::time::timeout(LIMIT, async {
        while core
            .stats()
            .peers
            .iter()
            .all(|p| p.remote_length < announced)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the writer never announced its new version");
    assert_eq!(reader.metadata().len(), before, "nothing fetched unasked");
    let (_, result) = run(reader
        .download("/docs/new.txt", WalkOptions::default())
        .await
        .unwrap())
    .await;
    assert_eq!((result.files_done, result.bytes_done), (1, 3));
    assert_eq!(reader.metadata().len(), announced);
}

#[tokio::test]
async fn mirror_follows_new_files_and_mounts() {
    let peers = peers().await;
    let f = fixture(&peers.writer_store).await;
    let reader = reader_of(&peers.reader_store, f.writer.key()).await;
    let mirror = reader.mirror();
    let content = reader.content_feed().await.unwrap().clone();
    let writer_content = f.writer.content_feed().await.unwrap().clone();
    let all = |feed: &Feed, len: u64| feed.len() == len && feed.has_range(0, len);

    let len = writer_content.len();
    until(&content, "the content is mirrored", || all(&content, len)).await;
    let metadata = reader.metadata().clone();
    let version = f.writer.version();
    until(&metadata, "the metadata is mirrored", || {
        all(&metadata, version)
    })
    .await;
    // The drive mounted before the mirror started.
    let mounted = copy(&peers.reader_store, f.mounted.content_key().unwrap()).await;
    until(&mounted, "the mounted drive's content is mirrored", || {
        all(&mounted, 3)
    })
    .await;

    // A file written after the mirror started.
    f.writer
        .write_chunks("/late.bin", chunks(3, 2_000, 3), WriteOptions::default())
        .await
        .unwrap();
    let len = writer_content.len();
    until(&content, "the late file is mirrored", || all(&content, len)).await;

    // A drive mounted after the mirror started, and a file written there later still.
    let later = Drive::open(
        &peers.writer_store,
        peers.writer_store.get_named(b"later").await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    later
        .write_file("/first.txt", b"first", WriteOptions::default())
        .await
        .unwrap();
    f.writer
        .mount("/later", later.key(), MountOptions::default())
        .await
        .unwrap();
    let later_content_key = later.content_key().unwrap();
    let mut status = mirror.status();
    tokio::time::timeout(
        LIMIT,
        status.wait_for(|s| s.feeds.contains(&later_content_key)),
    )
    .await
    .expect("the new mount was never mirrored")
    .unwrap();
    let later_copy = copy(&peers.reader_store, later_content_key).await;
    until(&later_copy, "the new mount's content is mirrored", || {
        all(&later_copy, 1)
    })
    .await;
    later
        .write_file("/second.txt", b"second", WriteOptions::default())
        .await
        .unwrap();
    until(&later_copy, "the new mount's new file is mirrored", || {
        all(&later_copy, 2)
    })
    .await;
    assert!(mirror.status().borrow().error.is_none());
    // Six feeds: metadata and content of the drive and of both mounts.
    assert_eq!(mirror.status().borrow().feeds.len(), 6);
}

#[tokio::test]
async fn bad_stats_and_mount_cycles_give_errors_not_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Corestore::open(tmp.path(), CorestoreOptions::default())
        .await
        .unwrap();
    let f = fixture(&store).await;
    // A drive mounted inside itself, and inside the drive it mounts.
    f.writer
        .mount("/self", f.writer.key(), MountOptions::default())
        .await
        .unwrap();
    f.mounted
        .mount("/back", f.writer.key(), MountOptions::default())
        .await
        .unwrap();
    let with_mounts = WalkOptions {
        mounts: true,
        ..WalkOptions::default()
    };
    let all = tokio::time::timeout(LIMIT, f.writer.file_stats("/", with_mounts))
        .await
        .expect("a mount cycle hung the walk")
        .unwrap();
    let mut paths: Vec<&str> = all.iter().map(|s| s.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/docs/a.bin",
            "/docs/b.txt",
            "/docs/empty",
            "/docs/mnt/m1.bin",
            "/docs/mnt/m2.txt",
            "/docs/sub/c.bin",
            "/other.bin"
        ],
        "each drive's files once"
    );

    // A Stat pointing past the content feed, written straight into the metadata trie.
    let trie = hypertrie::Hypertrie::open(
        f.writer.metadata().clone(),
        hypertrie::OpenOptions::default(),
    )
    .await
    .unwrap();
    let bad = hyperdrive::Stat {
        size: 10,
        blocks: 5,
        offset: 1 << 40,
        ..hyperdrive::Stat::file(0o644, 0)
    };
    let value = Bytes::from(prost::Message::encode_to_vec(&bad));
    trie.put("docs/bad", value, hypertrie::PutOptions::default())
        .await
        .unwrap();
    for path in ["/docs/bad", "/docs"] {
        let err = f
            .writer
            .download(path, WalkOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, hyperdrive::Error::BadStat { path, .. } if path == "/docs/bad"),
            "{err}"
        );
        assert!(err.to_string().contains("past the content feed"), "{err}");
    }
    // A hypercore mount is not a file of the drive.
    let core = store.get_named(b"a core").await.unwrap();
    core.feed().append("block").await.unwrap();
    let core_mount = MountOptions {
        hypercore: true,
        ..MountOptions::default()
    };
    f.writer
        .mount("/core", core.feed().key(), core_mount)
        .await
        .unwrap();
    let err = f
        .writer
        .clear("/core", WalkOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/core"), "{err}");
}
