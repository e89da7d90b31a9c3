//! Import of a local folder into a drive and export back to disk: a generated tree comes
//! back byte for byte and attribute for attribute; what is equal is left alone and appends
//! nothing; what changed is rewritten alone; names and links that would escape the target
//! are refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::open;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use bytes::Bytes;
use hyperd_testkit::files;
use hyperdrive::{
    Drive, DriveOptions, Error, ExportOptions, ImportOptions, TransferSummary, WriteOptions,
};
use hypertrie::PutOptions;

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 11) as u8)
        .collect()
}

fn set_mtime(path: &Path, ms: u64) {
    files::set_mtime(path, ms).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    files::chmod(path, mode).unwrap();
}

/// Entries of the tree `make_tree` makes.
const ENTRIES: u64 = 16;

/// Nested and empty directories, empty, small, multi-block and duplicate files, symlinks
/// absolute, relative and dangling, odd modes, unicode names, and distinct mtimes.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir(root.join("empty-dir")).unwrap();
    fs::create_dir(root.join("ünïcødé ✓")).unwrap();
    let files: [(&str, Vec<u8>, u32); 8] = [
        ("empty", Vec::new(), 0o644),
        ("small.txt", b"hello, drive".to_vec(), 0o600),
        ("a/big.bin", data(1_600_000, 1), 0o755),
        ("a/b/c/deep.txt", b"deep down".to_vec(), 0o640),
        (
            "ünïcødé ✓/файл.txt",
            "содержимое".as_bytes().to_vec(),
            0o644,
        ),
        ("dup1.bin", data(700_000, 2), 0o644),
        ("a/dup2.bin", data(700_000, 2), 0o444),
        ("exactly-one-block", data(512 * 1024, 3), 0o664),
    ];
    for (name, bytes, mode) in &files {
        fs::write(root.join(name), bytes).unwrap();
        chmod(&root.join(name), *mode);
    }
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
    symlink("../small.txt", root.join("a/rel-link")).unwrap();
    symlink("nowhere/at/all", root.join("dangling")).unwrap();
    chmod(&root.join("empty-dir"), 0o700);
    chmod(&root.join("a/b"), 0o750);
    // Children first: setting a child's time does not touch its directory's mtime, but
    // creating one does.
    let mut ms = 1_500_000_000_123;
    for name in [
        "empty",
        "small.txt",
        "a/big.bin",
        "a/b/c/deep.txt",
        "ünïcødé ✓/файл.txt",
        "dup1.bin",
        "a/dup2.bin",
        "exactly-one-block",
        "abs-link",
        "a/rel-link",
        "dangling",
        "a/b/c",
        "a/b",
        "a",
        "empty-dir",
        "ünïcødé ✓",
    ] {
        set_mtime(&root.join(name), ms);
        ms += 86_400_017;
    }
}

/// Everything about a tree that export must reproduce: per path, its kind, permission
/// bits (not for links), mtime in ms, and content or target.
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mtime = (meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000) as u64;
            let mode = meta.mode() & 0o7777;
            let value = if meta.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                ('l', 0, mtime, target.as_os_str().as_bytes().to_vec())
            } else if meta.is_dir() {
                stack.push(path.clone());
                ('d', mode, mtime, Vec::new())
            } else {
                ('f', mode, mtime, fs::read(&path).unwrap())
            };
            out.insert(rel, value);
        }
    }
    out
}

async fn feeds(drive: &Drive) -> (u64, u64) {
    (
        drive.metadata().len(),
        drive.content_feed().await.unwrap().len(),
    )
}

fn import_options() -> ImportOptions {
    ImportOptions::default()
}

#[tokio::test]
async fn a_tree_goes_in_and_comes_back_out_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    make_tree(&src);
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    let expected = TransferSummary {
        added: ENTRIES,
        deduplicated: 1,
        // Every file's bytes once, but dup1's, which dup2 brings first.
        bytes_written: 12 + 1_600_000 + 9 + 20 + 700_000 + 512 * 1024,
        ..TransferSummary::default()
    };

    // A dry run tells it all, and writes nothing.
    let dry_run = ImportOptions {
        dry_run: true,
        ..ImportOptions::default()
    };
    let empty = feeds(&drive).await;
    let dry = drive.import(&src, "/", dry_run).await.unwrap();
    assert_eq!(dry, expected);
    assert_eq!(feeds(&drive).await, empty);

    let import = drive.import(&src, "/", ImportOptions::default());
    let progress = import.progress();
    let summary = import.await.unwrap();
    assert_eq!(summary, expected);
    let done = progress.borrow().clone();
    assert_eq!(done.entries_done, done.entries_total);
    assert_eq!(done.entries_total, ENTRIES + 1, "the folder itself counts");
    assert_eq!(done.bytes_done, done.bytes_total);
    assert_eq!(done.bytes_total, expected.bytes_written + 700_000);
    assert_eq!(
        done.current.as_deref(),
        Some("/ünïcødé ✓/файл.txt"),
        "the last"
    );

    // What JS sees: Stats with the local modes, mtimes and targets.
    let big = drive.stat("/a/big.bin").await.unwrap();
    assert_eq!((big.mode, big.size, big.blocks), (0o100755, 1_600_000, 4));
    assert_eq!(drive.lstat("/empty-dir").await.unwrap().mode, 0o40700);
    assert_eq!(drive.readlink("/a/rel-link").await.unwrap(), "../small.txt");
    assert_eq!(
        drive.read_file("/a/rel-link").await.unwrap(),
        b"hello, drive"
    );
    assert_eq!(drive.read_file("/empty").await.unwrap(), b"");
    let (dup1, dup2) = (
        drive.stat("/dup1.bin").await.unwrap(),
        drive.stat("/a/dup2.bin").await.unwrap(),
    );
    assert_eq!((dup1.offset, dup1.blocks), (dup2.offset, dup2.blocks));
    assert_eq!(dup2.mode, 0o100444);

    let dry = drive
        .export("/", &out, ExportOptions { dry_run: true })
        .await
        .unwrap();
    assert!(!out.exists(), "a dry run makes nothing");
    let summary = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(dry, summary);
    assert_eq!(summary.added, ENTRIES);
    assert_eq!(summary.bytes_written, expected.bytes_written + 700_000);
    assert_eq!(snapshot(&out), snapshot(&src));
    assert_eq!(snapshot(&src).len() as u64, ENTRIES);

    // Again: nothing to do either way, and nothing appended.
    let before = feeds(&drive).await;
    let again = drive.import(&src, "/", import_options()).await.unwrap();
    assert_eq!(
        again,
        TransferSummary {
            unchanged: ENTRIES,
            ..TransferSummary::default()
        }
    );
    assert_eq!(feeds(&drive).await, before);
    let again = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        again,
        TransferSummary {
            unchanged: ENTRIES,
            ..TransferSummary::default()
        }
    );
    // The exported tree is as good a source as the original.
    let from_out = drive.import(&out, "/", import_options()).await.unwrap();
    assert_eq!(from_out.unchanged, ENTRIES);
    assert_eq!(feeds(&drive).await, before);
}

#[tokio::test]
async fn only_what_changed_is_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    make_tree(&src);
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    drive.import(&src, "/", import_options()).await.unwrap();
    drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();

    // Touched: a new Stat, its content found in the feed.
    set_mtime(&src.join("a/big.bin"), 1_700_000_000_000);
    let (metadata, content) = feeds(&drive).await;
    let summary = drive.import(&src, "/", import_options()).await.unwrap();
    let touched = TransferSummary {
        changed: 1,
        unchanged: ENTRIES - 1,
        deduplicated: 1,
        ..TransferSummary::default()
    };
    assert_eq!(summary, touched);
    assert_eq!(feeds(&drive).await, (metadata + 1, content));
    assert_eq!(
        drive.stat("/a/big.bin").await.unwrap().mtime,
        1_700_000_000_000
    );

    // Same size, one byte different: its blocks are appended.
    let small = src.join("small.txt");
    let mtime = fs::metadata(&small).unwrap().mtime() as u64 * 1000 + 123;
    let mut bytes = fs::read(&small).unwrap();
    bytes[0] = b'J';
    fs::write(&small, &bytes).unwrap();
    set_mtime(&small, mtime);
    let summary = drive.import(&src, "/", import_options()).await.unwrap();
    assert_eq!((summary.changed, summary.bytes_written), (1, 12));
    assert_eq!(drive.read_file("/small.txt").await.unwrap(), bytes);
    // A mode alone.
    chmod(&src.join("a/b/c/deep.txt"), 0o600);
    let summary = drive.import(&src, "/", import_options()).await.unwrap();
    assert_eq!((summary.changed, summary.unchanged), (1, ENTRIES - 1));
    assert_eq!(drive.stat("/a/b/c/deep.txt").await.unwrap().mode, 0o100600);

    // Export rewrites those three: two contents, one by its attributes only.
    let summary = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (summary.changed, summary.unchanged, summary.bytes_written),
        (3, ENTRIES - 3, 12)
    );
    assert_eq!(snapshot(&out), snapshot(&src));

    // A local file changed behind the export's back is put back; one only touched too.
    fs::write(out.join("a/big.bin"), b"scribbled over").unwrap();
    set_mtime(&out.join("dup1.bin"), 1_000);
    let summary = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (summary.changed, summary.bytes_written),
        (2, 1_600_000),
        "{summary:?}"
    );
    assert_eq!(snapshot(&out), snapshot(&src));
}

#[tokio::test]
async fn removal_of_what_is_gone_locally_is_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    drive.import(&src, "/", import_options()).await.unwrap();
    drive
        .write_file("/outside-the-import", b"x", WriteOptions::default())
        .await
        .unwrap();
    fs::remove_dir_all(src.join("a/b")).unwrap();
    fs::remove_file(src.join("empty")).unwrap();

    let kept = drive.import(&src, "/", import_options()).await.unwrap();
    // /a changed: its mtime, with a/b gone.
    assert_eq!((kept.removed, kept.changed), (0, 1));
    assert!(drive.stat("/a/b/c/deep.txt").await.is_ok());
    let options = ImportOptions {
        remove_missing: true,
        ..ImportOptions::default()
    };
    let before = feeds(&drive).await;
    let dry_run = ImportOptions {
        dry_run: true,
        ..options
    };
    let dry = drive.import(&src, "/", dry_run).await.unwrap();
    assert_eq!(feeds(&drive).await, before);
    assert!(drive.stat("/a/b/c/deep.txt").await.is_ok());
    let summary = drive.import(&src, "/", options).await.unwrap();
    assert_eq!(dry, summary);
    // a/b, a/b/c, a/b/c/deep.txt, empty, outside-the-import.
    assert_eq!((summary.removed, summary.changed), (5, 0), "{summary:?}");
    assert!(matches!(
        drive.stat("/a/b/c/deep.txt").await,
        Err(Error::NotFound { .. })
    ));
    assert!(drive.stat("/empty").await.is_err());
    assert!(drive.stat("/outside-the-import").await.is_err());
    assert_eq!(
        drive.read_file("/a/dup2.bin").await.unwrap(),
        data(700_000, 2)
    );
}

#[tokio::test]
async fn a_big_file_streams_in_as_one_run_and_out_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    fs::create_dir(&src).unwrap();
    // 20 MiB + 1: three batches of blocks, the last one short.
    let big = data(20 * 1024 * 1024 + 1, 7);
    fs::write(src.join("big"), &big).unwrap();
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    drive
        .write_file("/first", b"one block before", WriteOptions::default())
        .await
        .unwrap();

    let summary = drive
        .import(&src, "/backup", import_options())
        .await
        .unwrap();
    assert_eq!(
        (summary.added, summary.bytes_written),
        (2, big.len() as u64)
    );
    let stat = drive.stat("/backup/big").await.unwrap();
    assert_eq!((stat.offset, stat.byte_offset), (1, 16));
    assert_eq!((stat.blocks, stat.size), (41, big.len() as u64));
    assert_eq!(drive.content_feed().await.unwrap().len(), 42);
    assert_eq!(drive.read_file("/backup/big").await.unwrap(), big);

    drive
        .export("/backup", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(out.join("big")).unwrap(), big);
    assert_eq!(
        fs::metadata(&out).unwrap().mode() & 0o777,
        fs::metadata(&src).unwrap().mode() & 0o777
    );
    assert!(matches!(
        drive
            .export("/backup/big", &out, ExportOptions::default())
            .await,
        Err(Error::WrongType { .. })
    ));
}

#[tokio::test]
async fn what_a_drive_cannot_hold_is_skipped_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("fine"), b"fine").unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9")), b"x").unwrap();
    fs::write(src.join("back\\slash"), b"x").unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;

    let summary = drive.import(&src, "/", import_options()).await.unwrap();
    assert_eq!(summary.added, 1);
    let mut skipped: Vec<String> = summary
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.rsplit('/').next().unwrap(), s.reason))
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "back\\slash: a drive reads '\\' in a name as a separator",
            "fifo: not a regular file, directory or symlink",
            "latin1-\u{fffd}: its name is not UTF-8",
        ]
    );

    let missing = tmp.path().join("missing");
    let err = drive
        .import(&missing, "/", import_options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Local { .. }), "{err}");
    assert!(
        err.to_string().starts_with(missing.to_str().unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn export_never_writes_outside_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let trie = hypertrie::Hypertrie::open(drive.metadata().clone(), Default::default())
        .await
        .unwrap();
    let file = drive
        .write_file("/ok", b"fine", WriteOptions::default())
        .await
        .unwrap();
    let value = Bytes::from(prost::Message::encode_to_vec(&file));

    // Links pointing out are written as links, never followed.
    drive
        .symlink(outside.to_str().unwrap(), "/abs")
        .await
        .unwrap();
    drive.symlink("../../outside", "/rel").await.unwrap();
    let out = tmp.path().join("out");
    let summary = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.added, 3);
    assert_eq!(fs::read_link(out.join("abs")).unwrap(), outside);
    assert_eq!(
        fs::read_link(out.join("rel")).unwrap(),
        Path::new("../../outside")
    );

    // A file below a link: refused, nothing lands where the link points.
    trie.put("abs/evil", value.clone(), PutOptions::default())
        .await
        .unwrap();
    let err = drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { path, .. } if path == "/abs/evil"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    trie.del("abs/evil", false).await.unwrap();

    // Keys a hostile writer could put in a trie.
    for key in ["up/../../../outside/evil", "nul\0byte", "dot/./x"] {
        trie.put(key, value.clone(), PutOptions::default())
            .await
            .unwrap();
        let err = drive
            .export("/", &tmp.path().join("out2"), ExportOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Refused { path, .. } if path == &format!("/{key}")),
            "{key}: {err}"
        );
        trie.del(key, false).await.unwrap();
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!tmp.path().join("out2").exists(), "refused before writing");
}

#[tokio::test]
async fn an_import_into_a_path_no_drive_could_hold_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let (_store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    let before = drive.version();
    for bad in ["/a/../b", "/x\0y", &format!("/{}", "n".repeat(256))] {
        let err = drive.import(&src, bad, import_options()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err}");
    }
    assert_eq!(drive.version(), before);
}

/// Many small files are imported in groups (one content append and one trie batch per
/// group): a folder of several groups' worth, with a file too big for a group in the
/// middle, repeated contents within and across groups, and a directory that is a mount
/// in the drive, goes in and comes back out exactly, each content stored once per drive.
#[tokio::test]
async fn many_small_files_across_groups_a_big_file_and_a_mount_import_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    let mut distinct = 0u64;
    let mut repeats = 0u64;
    let mut entries = 0u64;
    let mut ms = 1_600_000_000_000;
    for d in 0..3 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        entries += 1;
        for i in 0..250u32 {
            let n = d * 250 + i;
            // Every 40th file repeats the first one's content (the first group's, or its
            // own group's); the rest are distinct, from 0 to 20 kB.
            let bytes = match n % 40 {
                0 => {
                    repeats += u64::from(n > 0);
                    data(3_000, 0)
                }
                _ => {
                    let bytes = data((n as usize * 7_919) % 20_000, n);
                    distinct += bytes.len() as u64;
                    bytes
                }
            };
            let path = dir.join(format!("f{i:03}"));
            fs::write(&path, &bytes).unwrap();
            chmod(&path, if n % 3 == 0 { 0o755 } else { 0o640 });
            set_mtime(&path, ms);
            ms += 1_001;
            entries += 1;
        }
    }
    // Between d1's files in walk order: imported alone, after the groups before it.
    let huge = data(4 * 1024 * 1024 + 1, 9);
    fs::write(src.join("d1/huge.bin"), &huge).unwrap();
    distinct += huge.len() as u64;
    entries += 1;
    fs::create_dir(src.join("mnt")).unwrap();
    let mut mounted_bytes = 0;
    for i in 0..30u32 {
        let bytes = data(1_000 + i as usize, 1_000 + i);
        mounted_bytes += bytes.len() as u64;
        fs::write(src.join(format!("mnt/m{i:02}")), bytes).unwrap();
        entries += 1;
    }

    let (store, drive) = open(&tmp.path().join("store"), DriveOptions::default()).await;
    let mounted = common::another_drive(&store).await;
    drive
        .mount("/mnt", mounted.key(), hyperdrive::MountOptions::default())
        .await
        .unwrap();
    let summary = drive.import(&src, "/", import_options()).await.unwrap();
    assert_eq!(
        summary,
        TransferSummary {
            // The local "mnt" is the mount: its files go into the mounted drive.
            added: entries,
            unchanged: 1,
            deduplicated: repeats,
            bytes_written: distinct + 3_000 + mounted_bytes,
            ..TransferSummary::default()
        }
    );
    assert_eq!(
        drive.content_feed().await.unwrap().byte_len(),
        distinct + 3_000,
        "each content once"
    );
    assert_eq!(
        mounted.content_feed().await.unwrap().byte_len(),
        mounted_bytes
    );
    assert_eq!(mounted.read_file("/m07").await.unwrap(), data(1_007, 1_007));
    assert_eq!(drive.read_file("/d1/huge.bin").await.unwrap(), huge);
    let (first, repeat) = (
        drive.stat("/d0/f000").await.unwrap(),
        drive.stat("/d2/f020").await.unwrap(),
    );
    assert_eq!((first.offset, first.size), (repeat.offset, repeat.size));

    drive
        .export("/", &out, ExportOptions::default())
        .await
        .unwrap();
    let (mut theirs, mut ours) = (snapshot(&src), snapshot(&out));
    // The mount point's own attributes are the mount's.
    theirs.remove("mnt");
    ours.remove("mnt");
    assert_eq!(ours, theirs);

    let before = (feeds(&drive).await, feeds(&mounted).await);
    let again = drive.import(&src, "/", import_options()).await.unwrap();
    assert_eq!(again.unchanged, entries + 1);
    assert_eq!((feeds(&drive).await, feeds(&mounted).await), before);
}
