//! Import and export through the Drives API of a real `hyperd` process: a folder tree
//! (nested, empty files and directories, symlinks, unicode and spaces in names, a 100 MiB
//! file, exec bits, mtimes) goes in and comes back out the same by `diff -r` and by mode
//! and mtime; importing it again writes nothing, a changed folder writes only its changes
//! (and with `delete` removes what is gone), identical contents are stored once; dry runs
//! report exactly what the real runs then do, and change nothing; progress names the
//! entry being transferred; Info counts the files. And an import cut off by `kill -9` of
//! the daemon leaves only whole files, and completes when run again.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use futures::StreamExt;
use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::{
    CreateDriveRequest, DriveInfo, DriveInfoRequest, ExportRequest, ImportRequest, Location,
    ReadFileRequest, ReaddirRequest, TransferSummary, TransferUpdate,
};
use hyperd_tests::daemon::Daemon;
use hyperd_tests::tree::{chmod, diff_r, set_mtime, snapshot};
use tonic::transport::Channel;

/// Content blocks are cut at 512 KiB.
const BLOCK: u64 = 512 << 10;
const SIGKILL: i32 = 9;

fn root(key: &str) -> Location {
    Location {
        url: format!("hyper://{key}/"),
        ..Location::default()
    }
}

/// `len` bytes that differ from file to file (`seed`) and from block to block.
fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 11) as u8)
        .collect()
}

/// 100 MiB: one MiB of [`data`] over and over, each copy stamped with its number so no
/// two blocks are equal (made fast: an unoptimised byte loop over 100 MiB is not).
fn big_file(path: &Path) {
    let mib = data(1 << 20, 99);
    let mut all = Vec::with_capacity(100 << 20);
    for n in 0..100u64 {
        all.extend_from_slice(&n.to_le_bytes());
        all.extend_from_slice(&mib[8..]);
    }
    fs::write(path, all).unwrap();
}

fn file(root: &Path, name: &str, bytes: &[u8], mode: u32) {
    fs::write(root.join(name), bytes).unwrap();
    chmod(&root.join(name), mode).unwrap();
}

/// The round-trip tree. Returns its entries' drive paths.
fn make_tree(src: &Path) -> BTreeSet<String> {
    for dir in ["nested/deeper/deepest", "empty dir", "ünïcødé ✓"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    big_file(&src.join("big.bin"));
    file(src, "empty", b"", 0o600);
    file(src, "with space.txt", b"spaces in the name\n", 0o644);
    file(src, "readonly.txt", b"read me, do not write me\n", 0o444);
    file(src, "nested/small.txt", b"small\n", 0o644);
    file(src, "nested/medium.bin", &data(1_500_000, 1), 0o644);
    file(src, "nested/copy-of-medium.bin", &data(1_500_000, 1), 0o640);
    file(src, "nested/deeper/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    file(
        src,
        "ünïcødé ✓/файл с пробелом.txt",
        "содержимое\n".as_bytes(),
        0o644,
    );
    std::os::unix::fs::symlink("small.txt", src.join("nested/link-to-small")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", src.join("dangling")).unwrap();
    chmod(&src.join("nested/deeper"), 0o750).unwrap();
    chmod(&src.join("nested/deeper/deepest"), 0o700).unwrap();
    // Children before their directories: setting a time does not touch the directory's.
    let mut ms = 1_600_000_000_123;
    let mut paths = BTreeSet::from(["/".to_string()]);
    for name in [
        "big.bin",
        "empty",
        "with space.txt",
        "readonly.txt",
        "nested/small.txt",
        "nested/medium.bin",
        "nested/copy-of-medium.bin",
        "nested/deeper/run.sh",
        "ünïcødé ✓/файл с пробелом.txt",
        "nested/link-to-small",
        "abs-link",
        "dangling",
        "nested/deeper/deepest",
        "nested/deeper",
        "nested",
        "empty dir",
        "ünïcødé ✓",
    ] {
        set_mtime(&src.join(name), ms).unwrap();
        ms += 86_400_017;
        paths.insert(format!("/{name}"));
    }
    paths
}

/// Runs a transfer to its end: its progress messages and its summary.
async fn run(
    updates: tonic::Streaming<TransferUpdate>,
) -> (Vec<TransferUpdate>, TransferUpdate, TransferSummary) {
    let mut all: Vec<TransferUpdate> = updates.map(|u| u.unwrap()).collect().await;
    let last = all.pop().expect("no messages");
    assert!(all.iter().all(|u| u.summary.is_none()), "{all:?}");
    let summary = last
        .summary
        .clone()
        .expect("no summary in the last message");
    (all, last, summary)
}

async fn import(
    drives: &mut DrivesClient<Channel>,
    key: &str,
    src: &Path,
    delete: bool,
    dry_run: bool,
) -> (Vec<TransferUpdate>, TransferUpdate, TransferSummary) {
    let request = ImportRequest {
        local_path: src.to_str().unwrap().into(),
        location: Some(root(key)),
        delete,
        dry_run,
    };
    run(drives.import(request).await.unwrap().into_inner()).await
}

async fn export(
    drives: &mut DrivesClient<Channel>,
    key: &str,
    out: &Path,
    dry_run: bool,
) -> (Vec<TransferUpdate>, TransferUpdate, TransferSummary) {
    let request = ExportRequest {
        location: Some(root(key)),
        local_path: out.to_str().unwrap().into(),
        dry_run,
        timeout_ms: 0,
    };
    run(drives.export(request).await.unwrap().into_inner()).await
}

async fn info(drives: &mut DrivesClient<Channel>, key: &str) -> DriveInfo {
    let request = DriveInfoRequest {
        drive: Some(root(key)),
    };
    drives.info(request).await.unwrap().into_inner()
}

/// The counts of a summary, and the bytes it wrote.
fn counts(s: &TransferSummary) -> [u64; 6] {
    [
        s.added,
        s.changed,
        s.unchanged,
        s.removed,
        s.deduplicated,
        s.bytes_written,
    ]
}

/// Progress names entries of the transfer (how many messages there are depends on how
/// fast it runs: one per 200 ms); the last message is complete.
fn check_progress(progress: &[TransferUpdate], last: &TransferUpdate, paths: &BTreeSet<String>) {
    for update in progress {
        let current = &update.current;
        assert!(
            paths.contains(current) || current.is_empty() && update.entries_done == 0,
            "{current:?} is not in the tree"
        );
    }
    assert_eq!(last.current, "");
    assert_eq!(last.entries_done, last.entries_total, "{last:?}");
    assert_eq!(last.bytes_done, last.bytes_total, "{last:?}");
}

/// Content blocks a set of files takes, each distinct content once (an empty file is one
/// empty block).
fn blocks_of<'a>(sizes: impl IntoIterator<Item = &'a u64>) -> u64 {
    sizes.into_iter().map(|s| s.div_ceil(BLOCK).max(1)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_round_trip_and_only_changes_are_written_or_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    let mut paths = make_tree(&src);
    let daemon = Daemon::start().unwrap();
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let key = drives
        .create(CreateDriveRequest {
            name: "transfers".into(),
            seeding: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key;

    // In: every entry added, the copy's content found in the feed, progress named.
    let (progress, last, summary) = import(&mut drives, &key, &src, false, false).await;
    check_progress(&progress, &last, &paths);
    let tree = snapshot(&src).unwrap();
    let files: Vec<u64> = tree
        .values()
        .filter(|e| e.kind == 'f')
        .map(|e| e.size)
        .collect();
    let distinct: std::collections::BTreeMap<&[u8], u64> = tree
        .values()
        .filter(|e| e.kind == 'f')
        .map(|e| (e.content.as_slice(), e.size))
        .collect();
    let unique_bytes: u64 = distinct.values().sum();
    assert_eq!(
        counts(&summary),
        [17, 0, 0, 0, 1, unique_bytes],
        "{summary:?}"
    );
    let after_import = info(&mut drives, &key).await;
    assert_eq!(summary.version, after_import.version);
    assert_eq!(
        after_import.content_blocks,
        blocks_of(distinct.values()),
        "identical contents are stored once"
    );
    assert_eq!(
        (after_import.files, after_import.bytes),
        (files.len() as u64, files.iter().sum())
    );

    // Out: bit-exact, with modes and mtimes.
    let (progress, last, summary) = export(&mut drives, &key, &out, false).await;
    check_progress(&progress, &last, &paths);
    assert_eq!(counts(&summary)[..4], [17, 0, 0, 0], "{summary:?}");
    diff_r(&src, &out).unwrap();
    assert_eq!(snapshot(&out).unwrap(), tree);

    // Again, unchanged: nothing written.
    let (_, _, again) = import(&mut drives, &key, &src, true, false).await;
    assert_eq!(counts(&again), [0, 0, 17, 0, 0, 0], "{again:?}");
    assert_eq!(again.version, after_import.version, "no new version");

    // A changed folder: content and mtime, a mode, a file gone, a new file, a new copy of
    // a content the drive holds. Directory times are put back: only the files changed.
    // The file whose mode changed gets a new Stat pointing at the content it had.
    let small = b"small, and changed\n";
    fs::write(src.join("nested/small.txt"), small).unwrap();
    set_mtime(&src.join("nested/small.txt"), 1_700_000_000_000).unwrap();
    chmod(&src.join("readonly.txt"), 0o644).unwrap();
    fs::remove_file(src.join("with space.txt")).unwrap();
    let new = b"a new file\n";
    file(&src, "new file.txt", new, 0o644);
    file(
        &src,
        "ünïcødé ✓/another copy.bin",
        &data(1_500_000, 1),
        0o644,
    );
    set_mtime(&src.join("ünïcødé ✓"), tree["ünïcødé ✓"].mtime).unwrap();
    paths.remove("/with space.txt");
    paths.extend(["/new file.txt".into(), "/ünïcødé ✓/another copy.bin".into()]);
    let expected = [2, 2, 14, 1, 2, (small.len() + new.len()) as u64];

    let local = snapshot(&src).unwrap();
    let (_, last, dry) = import(&mut drives, &key, &src, true, true).await;
    assert_eq!(counts(&dry), expected, "{dry:?}");
    assert_eq!(last.entries_done, 19, "the folder itself counts");
    let unchanged = info(&mut drives, &key).await;
    assert_eq!(dry.version, after_import.version);
    assert_eq!(
        unchanged, after_import,
        "a dry run writes nothing to the drive"
    );
    assert_eq!(snapshot(&src).unwrap(), local, "nor to the folder");

    let (_, _, real) = import(&mut drives, &key, &src, true, false).await;
    assert_eq!(counts(&real), expected, "{real:?}");
    let after_change = info(&mut drives, &key).await;
    assert_eq!(
        after_change.version,
        after_import.version + 5,
        "one metadata block per entry added, changed or removed"
    );
    assert_eq!(
        after_change.content_blocks,
        after_import.content_blocks + 2,
        "only the two new contents appended"
    );

    // Out again, into the earlier export (less what is gone): a dry run first.
    fs::remove_file(out.join("with space.txt")).unwrap();
    let before = snapshot(&out).unwrap();
    let expected = [2, 2, 14, 0, 0, (small.len() + new.len() + 1_500_000) as u64];
    let (_, _, dry) = export(&mut drives, &key, &out, true).await;
    assert_eq!(counts(&dry), expected, "{dry:?}");
    assert_eq!(
        snapshot(&out).unwrap(),
        before,
        "a dry run writes nothing locally"
    );
    let missing = tmp.path().join("not made");
    let (_, _, into_missing) = export(&mut drives, &key, &missing, true).await;
    assert_eq!(into_missing.added, 18, "{into_missing:?}");
    assert!(!missing.exists(), "a dry run makes no directory");
    assert_eq!(info(&mut drives, &key).await, after_change);

    let (progress, last, real) = export(&mut drives, &key, &out, false).await;
    assert_eq!(counts(&real), expected, "{real:?}");
    assert_eq!(last.entries_done, 18);
    for current in progress
        .iter()
        .map(|u| &u.current)
        .filter(|c| !c.is_empty())
    {
        assert!(paths.contains(current), "{current:?}");
    }
    diff_r(&src, &out).unwrap();
    assert_eq!(snapshot(&out).unwrap(), snapshot(&src).unwrap());
}

/// Files enough that an import takes seconds: four of 8 MiB first (by name: a kill after
/// the first progress may land in them), then 800 small ones in 16 directories. Returns
/// the count of files, and the drive paths of all entries.
fn make_many(src: &Path) -> (usize, BTreeSet<String>) {
    for d in 0..16 {
        fs::create_dir_all(src.join(format!("dir {d}"))).unwrap();
        for f in 0..50 {
            let seed = d * 50 + f;
            let bytes = data(4_000 + seed as usize * 37, seed);
            fs::write(src.join(format!("dir {d}/file {f}.bin")), bytes).unwrap();
        }
    }
    for n in 0..4 {
        fs::write(
            src.join(format!("a-large {n}.bin")),
            data(8 << 20, 1000 + n),
        )
        .unwrap();
    }
    let paths = snapshot(src).unwrap().into_keys().map(|k| format!("/{k}"));
    (804, paths.chain(["/".to_string()]).collect())
}

/// Every regular file the drive shows below `/`, read whole: path and bytes.
async fn visible_files(drives: &mut DrivesClient<Channel>, key: &str) -> Vec<(String, Vec<u8>)> {
    let request = ReaddirRequest {
        location: Some(root(key)),
        recursive: true,
        stats: true,
        ..ReaddirRequest::default()
    };
    let mut pages = drives.readdir(request).await.unwrap().into_inner();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        for entry in page.unwrap().entries {
            let stat = entry.stat.unwrap();
            if stat.mode & 0o170000 == 0o100000 {
                names.push((entry.name, stat.size));
            }
        }
    }
    let mut files = Vec::new();
    for (name, size) in names {
        let request = ReadFileRequest {
            location: Some(Location {
                key: key.into(),
                path: name.clone(),
                ..Location::default()
            }),
            ..ReadFileRequest::default()
        };
        let mut chunks = drives.read_file(request).await.unwrap().into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.next().await {
            bytes.extend_from_slice(&chunk.unwrap().data);
        }
        assert_eq!(
            bytes.len() as u64,
            size,
            "{name} reads as long as its Stat says"
        );
        files.push((name, bytes));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_leaves_whole_files_and_completes_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    let (total, paths) = make_many(&src);
    let mut daemon = Daemon::start().unwrap();
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let key = drives
        .create(CreateDriveRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key;

    let request = ImportRequest {
        local_path: src.to_str().unwrap().into(),
        location: Some(root(&key)),
        ..ImportRequest::default()
    };
    let mut updates = drives.import(request).await.unwrap().into_inner();
    loop {
        let update = updates.message().await.unwrap().expect("the import ended");
        assert!(update.summary.is_none(), "done before the kill: {update:?}");
        if update.entries_done > 0 {
            assert!(paths.contains(&update.current), "{update:?}");
            break;
        }
    }
    let status = daemon.signal_and_wait(SIGKILL).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(SIGKILL)
    );
    drop(updates);

    // Whatever shows is whole: each visible file has its source's bytes.
    daemon.restart().unwrap();
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let visible = visible_files(&mut drives, &key).await;
    assert!(
        visible.len() < total,
        "the kill landed midway: {} of {total} files visible",
        visible.len()
    );
    for (name, bytes) in &visible {
        let local = fs::read(src.join(name)).unwrap();
        assert!(local == *bytes, "{name} is not whole");
    }
    eprintln!(
        "killed with {} of {total} files in the drive",
        visible.len()
    );

    // Run again: the rest goes in, and the drive exports as the folder.
    let (_, _, summary) = import(&mut drives, &key, &src, false, false).await;
    assert_eq!(
        summary.added + summary.changed + summary.unchanged,
        total as u64 + 16,
        "{summary:?}"
    );
    assert!(summary.unchanged >= visible.len() as u64, "{summary:?}");
    export(&mut drives, &key, &out, false).await;
    diff_r(&src, &out).unwrap();
    assert_eq!(snapshot(&out).unwrap(), snapshot(&src).unwrap());
}
