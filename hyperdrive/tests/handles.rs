//! File handles: positional reads and writes that see their own writes, appends that
//! stream into the content feed, other writes that make a new version on flush, and a
//! drive that never shows a half-written file.
#![allow(clippy::unwrap_used)]

mod common;

use common::{another_drive, new_drive};

use hyperdrive::{Error, MountOptions, OpenFlags, WriteOptions, MAX_FILE_SIZE};
use rand::{Rng, SeedableRng};

const CREATE: OpenFlags = OpenFlags {
    write: true,
    create: true,
    exclusive: false,
    truncate: false,
};
const WRITE: OpenFlags = OpenFlags {
    write: true,
    create: false,
    exclusive: false,
    truncate: false,
};

#[tokio::test]
async fn appends_stream_into_the_content_feed_and_show_on_close() {
    let (_dir, _store, drive) = new_drive().await;
    let content = drive.content_feed().await.unwrap().clone();
    let before = content.len();
    let mut handle = drive.open_file("/new.bin", CREATE).await.unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    for (i, piece) in data.chunks(100_000).enumerate() {
        handle.write_at(i as u64 * 100_000, piece).await.unwrap();
    }
    assert!(matches!(
        drive.stat("/new.bin").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(handle.size(), 300_000);
    assert_eq!(
        &handle.read_at(99_990, 20).await.unwrap()[..],
        &data[99_990..100_010]
    );
    let stat = handle.close().await.unwrap().unwrap();
    assert_eq!(drive.read_file("/new.bin").await.unwrap(), data);
    // Streamed: the file's blocks are all the feed gained, nothing copied.
    assert_eq!(content.len() - before, stat.blocks);
    assert_eq!(stat.offset, before);
}

#[tokio::test]
async fn a_write_in_the_middle_makes_a_new_version_on_flush() {
    let (_dir, _store, drive) = new_drive().await;
    drive
        .write_file(
            "/f.txt",
            b"hello world",
            WriteOptions {
                mode: Some(0o600),
                metadata: vec![("k".into(), b"v".to_vec())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut handle = drive.open_file("/f.txt", WRITE).await.unwrap();
    handle.write_at(6, b"WORLD").await.unwrap();
    assert_eq!(drive.read_file("/f.txt").await.unwrap(), b"hello world");
    assert_eq!(&handle.read_at(0, 100).await.unwrap()[..], b"hello WORLD");
    let stat = handle.flush().await.unwrap().unwrap();
    assert_eq!(drive.read_file("/f.txt").await.unwrap(), b"hello WORLD");
    assert_eq!(stat.mode, 0o100600, "the mode is kept");
    assert_eq!(stat.metadata("k"), Some(&b"v"[..]), "metadata is kept");
    // The handle goes on after a flush.
    handle.write_at(0, b"J").await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/f.txt").await.unwrap(), b"Jello WORLD");
}

#[tokio::test]
async fn holes_and_truncation() {
    let (_dir, _store, drive) = new_drive().await;
    let mut handle = drive.open_file("/holes", CREATE).await.unwrap();
    handle.write_at(5, b"x").await.unwrap();
    assert_eq!(&handle.read_at(0, 10).await.unwrap()[..], b"\0\0\0\0\0x");
    handle.truncate(3).await.unwrap();
    handle.truncate(8).await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/holes").await.unwrap(), vec![0u8; 8]);

    drive
        .write_file("/t", b"0123456789", Default::default())
        .await
        .unwrap();
    let mut handle = drive.open_file("/t", WRITE).await.unwrap();
    handle.truncate(4).await.unwrap();
    handle.write_at(4, b"ab").await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/t").await.unwrap(), b"0123ab");

    let truncating = OpenFlags {
        truncate: true,
        ..WRITE
    };
    let handle = drive.open_file("/t", truncating).await.unwrap();
    assert_eq!(handle.size(), 0);
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/t").await.unwrap(), b"");
}

#[tokio::test]
async fn appending_to_the_last_file_continues_its_blocks() {
    let (_dir, _store, drive) = new_drive().await;
    let first = drive
        .write_file("/log", b"line 1\n", Default::default())
        .await
        .unwrap();
    let mut handle = drive.open_file("/log", WRITE).await.unwrap();
    handle.write_at(7, b"line 2\n").await.unwrap();
    let stat = handle.close().await.unwrap().unwrap();
    assert_eq!(stat.offset, first.offset, "no copy: the same run, longer");
    assert_eq!(stat.blocks, 2);
    assert_eq!(drive.read_file("/log").await.unwrap(), b"line 1\nline 2\n");

    // Another file written since: appending now copies into a new run.
    drive
        .write_file("/other", b"o", Default::default())
        .await
        .unwrap();
    let mut handle = drive.open_file("/log", WRITE).await.unwrap();
    handle.write_at(14, b"line 3\n").await.unwrap();
    let stat = handle.close().await.unwrap().unwrap();
    assert_ne!(stat.offset, first.offset);
    assert_eq!(
        drive.read_file("/log").await.unwrap(),
        b"line 1\nline 2\nline 3\n"
    );
}

#[tokio::test]
async fn open_handles_never_wait_for_each_other_or_a_stream() {
    let (_dir, _store, drive) = new_drive().await;
    let content = drive.content_feed().await.unwrap().clone();
    let mut a = drive.open_file("/a", CREATE).await.unwrap();
    a.write_at(0, b"first ").await.unwrap();
    let mut b = drive.open_file("/b", CREATE).await.unwrap();
    b.write_at(0, b"spilled").await.unwrap();
    // b's blocks now follow a's run: a's next append goes to its spill file.
    a.write_at(6, b"second").await.unwrap();
    b.close().await.unwrap();
    a.close().await.unwrap();
    assert_eq!(drive.read_file("/a").await.unwrap(), b"first second");
    assert_eq!(drive.read_file("/b").await.unwrap(), b"spilled");

    // A write stream holds the feed until it finishes; a handle writes on meanwhile.
    let mut stream = drive.write_stream("/s", Default::default()).await.unwrap();
    stream
        .write(bytes::Bytes::from_static(b"streamed"))
        .await
        .unwrap();
    let mut c = drive.open_file("/c", CREATE).await.unwrap();
    let before = content.len();
    c.write_at(0, b"beside").await.unwrap();
    assert_eq!(&c.read_at(0, 6).await.unwrap()[..], b"beside");
    stream.finish().await.unwrap();
    assert!(content.len() > before, "the stream's blocks");
    c.close().await.unwrap();
    assert_eq!(drive.read_file("/c").await.unwrap(), b"beside");
    assert_eq!(drive.read_file("/s").await.unwrap(), b"streamed");
}

#[tokio::test]
async fn open_flags_and_refusals() {
    let (_dir, _store, drive) = new_drive().await;
    assert!(matches!(
        drive.open_file("/missing", WRITE).await,
        Err(Error::NotFound { .. })
    ));
    drive
        .write_file("/f", b"x", Default::default())
        .await
        .unwrap();
    let exclusive = OpenFlags {
        exclusive: true,
        ..CREATE
    };
    assert!(matches!(
        drive.open_file("/f", exclusive).await,
        Err(Error::AlreadyExists { .. })
    ));
    drive.mkdir("/d", None).await.unwrap();
    assert!(matches!(
        drive.open_file("/d", OpenFlags::default()).await,
        Err(Error::WrongType { .. })
    ));
    let mut read_only = drive.open_file("/f", OpenFlags::default()).await.unwrap();
    assert!(matches!(
        read_only.write_at(0, b"y").await,
        Err(Error::NotWritable { .. })
    ));
    assert_eq!(&read_only.read_at(0, 10).await.unwrap()[..], b"x");
    // A created file never written is an empty file once closed.
    drive
        .open_file("/touched", CREATE)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    assert_eq!(drive.stat("/touched").await.unwrap().size, 0);
    let old = drive.checkout(drive.version());
    assert!(matches!(
        old.open_file("/f", WRITE).await,
        Err(Error::NotWritable { .. })
    ));
}

#[tokio::test]
async fn handles_write_through_mounts() {
    let (_dir, store, drive) = new_drive().await;
    let sub = another_drive(&store).await;
    drive
        .mount("/sub", sub.key(), MountOptions::default())
        .await
        .unwrap();
    let mut handle = drive.open_file("/sub/inner.txt", CREATE).await.unwrap();
    handle.write_at(0, b"through").await.unwrap();
    handle.write_at(3, b"OUGH").await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(sub.read_file("/inner.txt").await.unwrap(), b"thrOUGH");
    assert_eq!(drive.read_file("/sub/inner.txt").await.unwrap(), b"thrOUGH");
}

/// Random writes, truncates, reads and flushes against a plain byte vector.
#[tokio::test]
async fn random_handle_work_matches_a_model() {
    let (_dir, _store, drive) = new_drive().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for round in 0..6 {
        let path = format!("/m{round}");
        let mut model: Vec<u8> = Vec::new();
        if round % 2 == 1 {
            model = (0..rng.gen_range(0..200_000)).map(|_| rng.gen()).collect();
            drive
                .write_file(&path, &model, Default::default())
                .await
                .unwrap();
        }
        let mut handle = drive.open_file(&path, CREATE).await.unwrap();
        let mut committed = model.clone();
        for _ in 0..60 {
            match rng.gen_range(0..10) {
                0..=3 => {
                    // Mostly appends, as programs write.
                    let at = if rng.gen_bool(0.7) {
                        model.len()
                    } else {
                        rng.gen_range(0..model.len() + 1000)
                    };
                    let data: Vec<u8> = (0..rng.gen_range(1..70_000)).map(|_| rng.gen()).collect();
                    handle.write_at(at as u64, &data).await.unwrap();
                    if model.len() < at + data.len() {
                        model.resize(at + data.len(), 0);
                    }
                    model[at..at + data.len()].copy_from_slice(&data);
                }
                4 => {
                    let size = rng.gen_range(0..model.len() + 5000);
                    handle.truncate(size as u64).await.unwrap();
                    model.resize(size, 0);
                }
                5 => {
                    handle.flush().await.unwrap();
                    committed = model.clone();
                }
                _ => {
                    let at = rng.gen_range(0..model.len() + 10);
                    let len = rng.gen_range(0..100_000);
                    let got = handle.read_at(at as u64, len).await.unwrap();
                    let from = at.min(model.len());
                    let to = (at + len).min(model.len());
                    assert_eq!(&got[..], &model[from..to], "round {round}: read {at}+{len}");
                }
            }
            assert_eq!(handle.size(), model.len() as u64);
            assert_eq!(drive.read_file(&path).await.unwrap_or_default(), committed);
        }
        handle.close().await.unwrap();
        assert_eq!(
            drive.read_file(&path).await.unwrap(),
            model,
            "round {round}"
        );
    }
}

/// A daemon runs each request on a task of its own: a handle's work must be `Send`.
#[tokio::test]
async fn a_handle_works_on_a_spawned_task() {
    let (_dir, _store, drive) = new_drive().await;
    let task = tokio::spawn({
        let drive = drive.clone();
        async move {
            let mut handle = drive.open_file("/spawned", CREATE).await.unwrap();
            handle.write_at(0, b"written on a task").await.unwrap();
            handle.write_at(0, b"WRITTEN").await.unwrap();
            assert_eq!(&handle.read_at(0, 7).await.unwrap()[..], b"WRITTEN");
            handle.flush().await.unwrap();
            handle.close().await.unwrap()
        }
    });
    task.await.unwrap();
    assert_eq!(
        drive.read_file("/spawned").await.unwrap(),
        b"WRITTEN on a task"
    );
}

#[tokio::test]
async fn files_larger_than_a_drive_takes_are_refused() {
    let (_dir, _store, drive) = new_drive().await;
    let mut handle = drive.open_file("/huge", CREATE).await.unwrap();
    let err = handle.truncate(MAX_FILE_SIZE + 1).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let err = handle.write_at(u64::MAX - 1, b"xy").await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("/huge"), "{err}");
    // The handle is still usable.
    handle.write_at(0, b"ok").await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/huge").await.unwrap(), b"ok");
}

#[tokio::test]
async fn a_handle_opens_what_a_symlink_names() {
    let (_dir, _store, drive) = new_drive().await;
    drive
        .write_file("/dir/target.txt", b"before", WriteOptions::default())
        .await
        .unwrap();
    drive.symlink("target.txt", "/dir/link").await.unwrap();
    drive.symlink("/dir/new.txt", "/dangling").await.unwrap();
    let mut handle = drive.open_file("/dir/link", WRITE).await.unwrap();
    assert_eq!(&handle.read_at(0, 100).await.unwrap()[..], b"before");
    handle.write_at(0, b"AFTER!").await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/dir/target.txt").await.unwrap(), b"AFTER!");
    assert!(
        drive.lstat("/dir/link").await.unwrap().is_symlink(),
        "the link stays"
    );
    // Creating through a dangling link makes its target.
    let mut handle = drive.open_file("/dangling", CREATE).await.unwrap();
    handle.write_at(0, b"made").await.unwrap();
    handle.close().await.unwrap();
    assert_eq!(drive.read_file("/dir/new.txt").await.unwrap(), b"made");
}
