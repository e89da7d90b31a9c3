//! A full disk under a drive: a file handle's spill file and the content feed's appends
//! fail with errors naming the file, nothing the drive had is lost, and writes work again
//! once there is room. Needs root to mount a small tmpfs.
#![allow(clippy::unwrap_used)]

mod common;

use common::open;

use std::path::{Path, PathBuf};

use hyperd_testkit::SmallDisk;
use hyperdrive::{DriveOptions, Error, OpenFlags, WriteOptions};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Fills the disk at `dir` with a ballast file, leaving about `room` bytes.
fn fill(dir: &Path, room: u64) -> PathBuf {
    let ballast = dir.join("ballast");
    let stat = nix::sys::statvfs::statvfs(dir).unwrap();
    let free = stat.blocks_available() * stat.fragment_size();
    std::fs::write(&ballast, vec![0u8; free.saturating_sub(room) as usize]).unwrap();
    ballast
}

const WRITE: OpenFlags = OpenFlags {
    write: true,
    create: false,
    exclusive: false,
    truncate: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_naming_the_file_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(tmp.path().join("disk"), "8m") else {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root) to fill a disk");
        return;
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), fill_and_free(&disk))
        .await
        .expect("a write on a full disk hung");
}

async fn fill_and_free(disk: &SmallDisk) {
    let dir = disk.path.join("store");
    let big = data(1 << 20, 1);
    {
        let (store, drive) = open(&dir, DriveOptions::default()).await;
        drive
            .write_file("/big", &big, WriteOptions::default())
            .await
            .unwrap();
        let ballast = fill(&disk.path, 256 << 10);

        // A write in the middle goes to the spill file, which cannot hold it.
        let mut handle = drive.open_file("/big", WRITE).await.unwrap();
        let err = handle.write_at(10, &data(2 << 20, 2)).await.unwrap_err();
        assert!(matches!(err, Error::Spill { .. }), "{err}");
        assert!(err.to_string().contains("/big"), "{err}");
        // What did fit is written as a new version: that fails too, and the drive keeps
        // the old one.
        handle.write_at(10, b"small").await.unwrap();
        let err = handle.close().await.unwrap_err();
        assert!(err.to_string().contains("/big"), "{err}");
        assert_eq!(drive.read_file("/big").await.unwrap(), big);

        // Whole files and streams fail the same way.
        let err = drive
            .write_file("/new", &data(1 << 20, 3), WriteOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/new"), "{err}");
        let mut stream = drive
            .write_stream("/streamed", WriteOptions::default())
            .await
            .unwrap();
        let mut failed = None;
        for _ in 0..16 {
            if let Err(e) = stream.write(data(128 << 10, 4).into()).await {
                failed = Some(e);
                break;
            }
            if let Err(e) = stream.flush().await {
                failed = Some(e);
                break;
            }
        }
        // Failed, the stream lets other writers of the content feed go on at once (it
        // is kept alive below, and a later write waits for no one).
        let (err, failed_stream) = match failed {
            Some(e) => (e, Some(stream)),
            None => (stream.finish().await.unwrap_err(), None),
        };
        assert!(err.to_string().contains("/streamed"), "{err}");
        assert!(matches!(
            drive.stat("/streamed").await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(drive.read_file("/big").await.unwrap(), big);

        // With room again, writes work.
        std::fs::remove_file(ballast).unwrap();
        let new = data(1 << 20, 5);
        drive
            .write_file("/new", &new, WriteOptions::default())
            .await
            .unwrap();
        let mut handle = drive.open_file("/big", WRITE).await.unwrap();
        handle.write_at(10, b"patched").await.unwrap();
        handle.close().await.unwrap();
        drop(failed_stream);
        drop(drive);
        store.close().await.unwrap();
    }
    let (_store, drive) = open(&dir, DriveOptions::default()).await;
    let mut patched = big.clone();
    patched[10..17].copy_from_slice(b"patched");
    assert_eq!(drive.read_file("/big").await.unwrap(), patched);
    assert_eq!(drive.read_file("/new").await.unwrap(), data(1 << 20, 5));
}
