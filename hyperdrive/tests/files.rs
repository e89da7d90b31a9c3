//! Write streams and read cursors: blocks as JS makes them, files that appear only when
//! finished, writers that wait for each other, and cursors that seek anywhere and, on a
//! sparse replica, fetch only the blocks they read.
#![allow(clippy::unwrap_used)]

mod common;

use common::{connect, new_drive, store};

use std::io::SeekFrom;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use hyperdrive::{Drive, DriveOptions, Error, WriteOptions, WRITE_BLOCK};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_write_stream_makes_a_block_per_write_and_the_file_appears_when_it_finishes() {
    let (_dir, _store, drive) = new_drive().await;
    drive
        .write_file("/f", b"old", WriteOptions::default())
        .await
        .unwrap();
    let mut writer = drive
        .write_stream("/f", WriteOptions::default())
        .await
        .unwrap();
    for chunk in ["abc", "defg", "hi"] {
        writer
            .send(Bytes::from_static(chunk.as_bytes()))
            .await
            .unwrap();
    }
    // Flushed into the content feed, but the file is still the old one.
    assert_eq!(drive.read_file("/f").await.unwrap(), b"old");
    let stat = writer.finish().await.unwrap();
    assert_eq!((stat.size, stat.blocks), (9, 3));
    assert_eq!(drive.read_file("/f").await.unwrap(), b"abcdefghi");
    let content = drive.content_feed().await.unwrap();
    assert_eq!(content.get(stat.offset + 1).await.unwrap(), &b"defg"[..]);
}

#[tokio::test]
async fn async_write_gathers_small_writes_into_blocks() {
    let (_dir, _store, drive) = new_drive().await;
    let bytes = data(1_000_000, 7);
    let mut writer = drive
        .write_stream("/copy.bin", WriteOptions::default())
        .await
        .unwrap();
    for piece in bytes.chunks(8192) {
        writer.write_all(piece).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    let stat = drive.stat("/copy.bin").await.unwrap();
    assert_eq!(stat.size, bytes.len() as u64);
    assert_eq!(stat.blocks, bytes.len().div_ceil(WRITE_BLOCK) as u64);
    assert_eq!(drive.read_file("/copy.bin").await.unwrap(), bytes);
    // Writing after the end fails, naming the file.
    let err = writer.write_all(b"more").await.unwrap_err();
    assert!(err.to_string().contains("copy.bin"), "{err}");
}

#[tokio::test]
async fn an_empty_write_stream_is_one_empty_block() {
    let (_dir, _store, drive) = new_drive().await;
    let writer = drive
        .write_stream("/empty", WriteOptions::default())
        .await
        .unwrap();
    let stat = writer.finish().await.unwrap();
    assert_eq!((stat.size, stat.blocks), (0, 1));
    assert_eq!(drive.read_file("/empty").await.unwrap(), b"");
}

#[tokio::test]
async fn concurrent_writers_each_get_one_contiguous_run() {
    let (_dir, _store, drive) = new_drive().await;
    let mut tasks = Vec::new();
    for n in 0..4u8 {
        let drive = drive.clone();
        tasks.push(tokio::spawn(async move {
            let mut writer = drive
                .write_stream(&format!("/w{n}"), WriteOptions::default())
                .await
                .unwrap();
            for i in 0..20u8 {
                writer.write(Bytes::from(vec![n, i])).await.unwrap();
                tokio::task::yield_now().await;
            }
            writer.finish().await.unwrap()
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let stat = task.await.unwrap();
        assert_eq!(stat.blocks, 20);
        let expected: Vec<u8> = (0..20u8).flat_map(|i| [n as u8, i]).collect();
        assert_eq!(drive.read_file(&format!("/w{n}")).await.unwrap(), expected);
    }
}

#[tokio::test]
async fn a_dropped_write_stream_writes_no_file_and_frees_the_feed() {
    let (_dir, _store, drive) = new_drive().await;
    let mut writer = drive
        .write_stream("/gone", WriteOptions::default())
        .await
        .unwrap();
    writer.write(Bytes::from_static(b"lost")).await.unwrap();
    drop(writer);
    assert!(matches!(
        drive.stat("/gone").await,
        Err(Error::NotFound { .. })
    ));
    let next = tokio::time::timeout(LIMIT, drive.write_file("/next", b"ok", Default::default()))
        .await
        .unwrap();
    next.unwrap();
    assert_eq!(drive.read_file("/next").await.unwrap(), b"ok");
}

#[tokio::test]
async fn a_write_stream_refuses_a_directory_and_a_checkout() {
    let (_dir, _store, drive) = new_drive().await;
    drive.mkdir("/dir", None).await.unwrap();
    let err = drive
        .write_stream("/dir", WriteOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/dir"), "{err}");
    let old = drive.checkout(drive.version());
    assert!(matches!(
        old.write_stream("/x", WriteOptions::default()).await,
        Err(Error::NotWritable { .. })
    ));
}

#[tokio::test]
async fn the_cursor_reads_any_range_as_the_file_holds_it() {
    let (_dir, _store, drive) = new_drive().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    // Blocks of uneven sizes, one cut at the 512 KiB limit.
    let chunks: Vec<Bytes> = (0..40)
        .map(|i| {
            let len = if i == 7 {
                600_000
            } else {
                rng.gen_range(0..5000)
            };
            Bytes::from(data(len, i as u8))
        })
        .collect();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    drive
        .write_chunks("/uneven", chunks, WriteOptions::default())
        .await
        .unwrap();
    let size = whole.len() as u64;

    let mut cursor = drive.reader("/uneven").await.unwrap();
    assert_eq!(cursor.len(), size);
    for _ in 0..300 {
        let pos = match rng.gen_range(0..3) {
            0 => {
                cursor
                    .seek(SeekFrom::Start(rng.gen_range(0..size + 10)))
                    .await
            }
            1 => {
                cursor
                    .seek(SeekFrom::End(-rng.gen_range(0..size as i64)))
                    .await
            }
            _ => {
                let back = -(cursor.position().min(100) as i64);
                cursor
                    .seek(SeekFrom::Current(rng.gen_range(back..100)))
                    .await
            }
        }
        .unwrap();
        let mut buf = vec![0; rng.gen_range(0..70_000)];
        let n = read_up_to(&mut cursor, &mut buf).await;
        let from = (pos as usize).min(whole.len());
        let to = (from + buf.len()).min(whole.len());
        assert_eq!(&buf[..n], &whole[from..to], "at {pos}, {} bytes", buf.len());
    }
    assert!(cursor
        .seek(SeekFrom::Current(-(size as i64) - 1))
        .await
        .is_err());

    for (start, length) in [
        (0, None),
        (2, Some(4)),
        (524_000, Some(2000)),
        (size - 1, None),
    ] {
        let range: Vec<u8> = drive
            .read_range("/uneven", start, length)
            .await
            .unwrap()
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap()
            .to_vec();
        let end = length.map_or(size, |l| (start + l).min(size));
        assert_eq!(range, &whole[start as usize..end as usize]);
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
async fn read_up_to(reader: &mut hyperdrive::FileReader, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]).await.unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

#[tokio::test]
async fn a_sparse_reader_fetches_only_what_it_reads() {
    let (_dir, writer_store, drive) = new_drive().await;
    let block = 64 * 1024;
    let chunks: Vec<Bytes> = (0..100).map(|i| Bytes::from(data(block, i))).collect();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    drive
        .write_chunks("/big.bin", chunks, WriteOptions::default())
        .await
        .unwrap();
    drive
        .write_file("/before.txt", b"first", WriteOptions::default())
        .await
        .unwrap();

    let reader_dir = tempfile::tempdir().unwrap();
    let reader_store = store(reader_dir.path(), true).await;
    // Opening a remote drive does not wait for peers: its content feed is found later.
    let remote = tokio::time::timeout(
        LIMIT,
        Drive::open_key(&reader_store, drive.key(), DriveOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(remote.content_key(), None);
    connect(&writer_store, &reader_store).await;
    remote
        .metadata()
        .update(Some(drive.version()), None)
        .await
        .unwrap();
    let content = tokio::time::timeout(LIMIT, remote.content_feed())
        .await
        .unwrap()
        .unwrap()
        .clone();
    let base = drive.stat("/big.bin").await.unwrap().offset;

    // A cursor in the middle: one block.
    let mut cursor = remote.reader("/big.bin").await.unwrap();
    let at = 50 * block as u64 + 100;
    cursor.seek(SeekFrom::Start(at)).await.unwrap();
    let mut buf = vec![0; 4096];
    tokio::time::timeout(LIMIT, cursor.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, &whole[at as usize..at as usize + 4096]);
    assert_eq!(content.downloaded(0, None), 1);
    assert!(content.has(base + 50));

    // A range of five blocks: those five, fetched ahead in order.
    let start = 10 * block as u64;
    let range = tokio::time::timeout(
        LIMIT,
        remote
            .read_range("/big.bin", start, Some(5 * block as u64))
            .await
            .unwrap()
            .map_ok(|b| b.to_vec())
            .try_concat(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        &range[..],
        &whole[start as usize..start as usize + 5 * block]
    );
    assert_eq!(content.downloaded(0, None), 6);
    assert!(content.has_range(base + 10, base + 15));
}

#[tokio::test]
async fn an_implicit_directory_is_stated_without_listing_it() {
    let (_dir, writer_store, drive) = new_drive().await;
    for i in 0..300 {
        drive
            .write_file(&format!("/dir/f{i}"), b"x", WriteOptions::default())
            .await
            .unwrap();
    }
    let reader_dir = tempfile::tempdir().unwrap();
    let reader_store = store(reader_dir.path(), true).await;
    let remote = Drive::open_key(&reader_store, drive.key(), DriveOptions::default())
        .await
        .unwrap();
    connect(&writer_store, &reader_store).await;
    remote.metadata_core().wait_for_peers(1).await;
    let stat = tokio::time::timeout(LIMIT, remote.lstat("/dir"))
        .await
        .unwrap()
        .unwrap();
    assert!(stat.is_dir());
    // The header, the head and a few nodes on the way: not the 300 entries.
    let fetched = remote.metadata().downloaded(0, None);
    assert!(fetched < 10, "{fetched} metadata blocks fetched");
}
