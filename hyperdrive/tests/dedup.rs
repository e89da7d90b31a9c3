//! Content deduplication: a file whose bytes, cut into the same blocks, are already in the
//! content feed points at them instead of appending them again; anything else appends.
#![allow(clippy::unwrap_used)]

mod common;

use common::open;

use bytes::Bytes;
use futures::StreamExt;
use hyperdrive::{Drive, DriveOptions, Stat, WriteOptions};
use hypertrie::PutOptions;
use prost::Message;

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn w() -> WriteOptions {
    WriteOptions::default()
}

fn run(stat: &Stat) -> (u64, u64, u64, u64) {
    (stat.offset, stat.byte_offset, stat.blocks, stat.size)
}

async fn content_len(drive: &Drive) -> (u64, u64) {
    let feed = drive.content_feed().await.unwrap();
    (feed.len(), feed.byte_len())
}

#[tokio::test]
async fn equal_content_points_at_the_blocks_already_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, drive) = open(dir.path(), DriveOptions::default()).await;
    drive
        .write_file("/before", b"something first", w())
        .await
        .unwrap();
    let big = data(1_300_000, 1);
    let first = drive.write_file("/a.bin", &big, w()).await.unwrap();
    assert_eq!(first.blocks, 3);
    let after_first = content_len(&drive).await;

    let second = drive.write_file("/copy/b.bin", &big, w()).await.unwrap();
    assert_eq!(run(&second), run(&first));
    assert_eq!(content_len(&drive).await, after_first, "nothing appended");
    assert_eq!(drive.read_file("/copy/b.bin").await.unwrap(), big);
    // The byte offset is exact: a range read seeks by it.
    let chunks: Vec<Bytes> = drive
        .read_range("/copy/b.bin", 1_000_000, Some(1000))
        .await
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
        .await;
    let tail = chunks.concat();
    assert_eq!(tail, big[1_000_000..1_001_000]);

    // Small and empty files too.
    let small = drive.write_file("/s1", b"tiny", w()).await.unwrap();
    let empty = drive.write_file("/e1", b"", w()).await.unwrap();
    let len = content_len(&drive).await;
    assert_eq!(
        run(&drive.write_file("/s2", b"tiny", w()).await.unwrap()),
        run(&small)
    );
    assert_eq!(
        run(&drive.write_file("/e2", b"", w()).await.unwrap()),
        run(&empty)
    );
    assert_eq!(content_len(&drive).await, len);
    assert_eq!(drive.read_file("/e2").await.unwrap(), b"");
}

#[tokio::test]
async fn other_content_or_other_blocks_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, drive) = open(dir.path(), DriveOptions::default()).await;
    let big = data(1_100_000, 2);
    let first = drive.write_file("/a", &big, w()).await.unwrap();

    // Same size and same first block, another last byte.
    let mut other = big.clone();
    *other.last_mut().unwrap() ^= 1;
    let len = content_len(&drive).await;
    let stat = drive.write_file("/b", &other, w()).await.unwrap();
    assert_eq!(stat.offset, len.0, "appended at the end");
    assert_eq!(drive.read_file("/b").await.unwrap(), other);

    // Same bytes cut into other blocks (as a write stream's writes).
    let chunks = [
        Bytes::copy_from_slice(&big[..1000]),
        Bytes::copy_from_slice(&big[1000..]),
    ];
    let len = content_len(&drive).await;
    let stat = drive.write_chunks("/c", chunks, w()).await.unwrap();
    assert_eq!((stat.offset, stat.blocks), (len.0, 4));
    assert_eq!(drive.read_file("/c").await.unwrap(), big);

    // And the first file is still found.
    let again = drive.write_file("/d", &big, w()).await.unwrap();
    assert_eq!(run(&again), run(&first));
}

#[tokio::test]
async fn among_many_files_of_one_size_the_equal_one_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, drive) = open(dir.path(), DriveOptions::default()).await;
    let file = |n: u32| vec![n as u8; 1000];
    // Indexed as written, one new run per lookup, and then many at once (written through
    // a second handle on the trie the index does not see until the next write).
    let mut stats = Vec::new();
    for n in 0..20 {
        stats.push(
            drive
                .write_file(&format!("/f{n}"), &file(n), w())
                .await
                .unwrap(),
        );
    }
    let trie = hypertrie::Hypertrie::open(drive.metadata().clone(), Default::default())
        .await
        .unwrap();
    let content = drive.content_feed().await.unwrap().clone();
    for n in 20..40 {
        let appended = content.append_batch_at([file(n)]).await.unwrap();
        let stat = Stat {
            size: 1000,
            blocks: 1,
            offset: appended.start,
            byte_offset: appended.start_byte,
            ..Stat::file(0o644, 0)
        };
        let value = Bytes::from(stat.encode_to_vec());
        trie.put(&format!("f{n}"), value, PutOptions::default())
            .await
            .unwrap();
        stats.push(stat);
    }
    let len = content_len(&drive).await;
    for n in [39, 0, 25, 7] {
        let copy = drive
            .write_file(&format!("/copy{n}"), &file(n), w())
            .await
            .unwrap();
        assert_eq!(run(&copy), run(&stats[n as usize]), "file {n}");
    }
    assert_eq!(content_len(&drive).await, len, "nothing appended");
    // Same size, new content: appended.
    let new = drive.write_file("/new", &file(99), w()).await.unwrap();
    assert_eq!(new.offset, len.0);
}

#[tokio::test]
async fn content_of_older_versions_and_earlier_sessions_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let big = data(700_000, 3);
    let old = {
        let (store, drive) = open(dir.path(), DriveOptions::default()).await;
        let old = drive.write_file("/f", &big, w()).await.unwrap();
        // Overwritten, then removed: the blocks are reachable only from old versions.
        drive.write_file("/f", b"newer", w()).await.unwrap();
        drive.unlink("/f").await.unwrap();
        drop(drive);
        store.close().await.unwrap();
        old
    };
    // A new process: the index is built from the metadata feed on the first write.
    let (_store, drive) = open(dir.path(), DriveOptions::default()).await;
    let len = content_len(&drive).await;
    let stat = drive.write_file("/g", &big, w()).await.unwrap();
    assert_eq!(run(&stat), run(&old));
    assert_eq!(content_len(&drive).await, len);
    assert_eq!(drive.read_file("/g").await.unwrap(), big);
}

#[tokio::test]
async fn no_dedup_appends_as_js_does() {
    let dir = tempfile::tempdir().unwrap();
    let options = DriveOptions {
        no_dedup: true,
        ..DriveOptions::default()
    };
    let (_store, drive) = open(dir.path(), options).await;
    let first = drive.write_file("/a", b"same", w()).await.unwrap();
    let second = drive.write_file("/b", b"same", w()).await.unwrap();
    assert_eq!(second.offset, first.offset + 1);
}

#[tokio::test]
async fn stats_pointing_nowhere_are_not_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, drive) = open(dir.path(), DriveOptions::default()).await;
    drive.write_file("/real", b"0123456789", w()).await.unwrap();
    // Written by a broken or hostile writer: past the content feed, and a bad byte
    // offset over real blocks of the same size.
    let trie = hypertrie::Hypertrie::open(drive.metadata().clone(), Default::default())
        .await
        .unwrap();
    let past = Stat {
        size: 10,
        blocks: 1,
        offset: 1_000_000,
        byte_offset: 5,
        ..Stat::file(0o644, 0)
    };
    trie.put(
        "bogus",
        Bytes::from(past.encode_to_vec()),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let lying = Stat {
        byte_offset: 999,
        ..drive.stat("/real").await.unwrap()
    };
    trie.put(
        "lying",
        Bytes::from(lying.encode_to_vec()),
        PutOptions::default(),
    )
    .await
    .unwrap();

    let other = drive
        .write_file("/other", b"abcdefghij", w())
        .await
        .unwrap();
    assert_eq!(drive.read_file("/other").await.unwrap(), b"abcdefghij");
    let same = drive.write_file("/same", b"0123456789", w()).await.unwrap();
    let real = drive.stat("/real").await.unwrap();
    assert_eq!(
        run(&same),
        run(&real),
        "the byte offset is the tree's, not a Stat's"
    );
    assert_ne!(other.offset, 1_000_000);
}
