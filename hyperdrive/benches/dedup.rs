//! What deduplication costs and saves, on a drive in a temp dir (warm page cache).
//!
//! ```text
//! cargo bench -p hyperdrive --bench dedup
//! ```
//!
//! * `write_file` of new content, 64 MiB as 16 files of 4 MiB, each a new size (the dedup
//!   check is one map lookup), or each the size of a file already there (it hashes the
//!   first 512 KiB block and reads one leaf), against `DriveOptions::no_dedup`; MB/s.
//! * `write_file` of a 64 MiB file already in the drive (hashes it, reads 128 leaves)
//!   against appending it again; ms.
//! * `import` of a folder with one 64 MiB file: new, then unchanged (hashed against the
//!   drive's leaves), then touched (found in the content feed); ms.
//! * The first write of a process on a drive of 20,000 files, which builds the index by
//!   scanning the metadata feed; ms.
//!
//! Each figure is the median (and fastest) of 5 runs, the two sides of a comparison
//! alternating. MB = 10^6 bytes. On a machine shared with other work, compare the fastest.

use std::time::{Duration, Instant, UNIX_EPOCH};

use corestore::{Corestore, CorestoreOptions};
use hyperdrive::{Drive, DriveOptions, ImportOptions, WriteOptions};

const MIB: usize = 1 << 20;
const RUNS: usize = 5;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn open(dir: &std::path::Path, no_dedup: bool) -> (Corestore, Drive) {
    let store = Corestore::open(dir, CorestoreOptions::default())
        .await
        .expect("open the store");
    let options = DriveOptions {
        no_dedup,
        ..DriveOptions::default()
    };
    let drive = Drive::default_drive(&store, options)
        .await
        .expect("open the drive");
    (store, drive)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// 16 new files of about 4 MiB; with `same_sizes`, their sizes are those of files the
/// drive already holds (other content).
async fn new_content(no_dedup: bool, same_sizes: bool) -> Duration {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_store, drive) = open(tmp.path(), no_dedup).await;
    let sizes: Vec<usize> = (0..16).map(|i| 4 * MIB + i).collect();
    if same_sizes {
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("/old/{i}");
            let old = data(size, 1000 + i as u64);
            drive
                .write_file(&name, &old, WriteOptions::default())
                .await
                .expect("write");
        }
    } else {
        drive
            .write_file("/x", b"x", WriteOptions::default())
            .await
            .expect("write");
    }
    let files: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| data(s, i as u64))
        .collect();
    let start = Instant::now();
    for (i, file) in files.iter().enumerate() {
        drive
            .write_file(&format!("/new/{i}"), file, WriteOptions::default())
            .await
            .expect("write");
    }
    start.elapsed()
}

async fn present_64(no_dedup: bool) -> Duration {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_store, drive) = open(tmp.path(), no_dedup).await;
    let file = data(64 * MIB, 7);
    drive
        .write_file("/a", &file, WriteOptions::default())
        .await
        .expect("write");
    let start = Instant::now();
    drive
        .write_file("/b", &file, WriteOptions::default())
        .await
        .expect("write");
    start.elapsed()
}

async fn import_64() -> [Duration; 3] {
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let path = src.join("big");
    std::fs::write(&path, data(64 * MIB, 9)).expect("write");
    let (_store, drive) = open(&tmp.path().join("store"), false).await;
    let mut times = [Duration::ZERO; 3];
    for (i, time) in times.iter_mut().enumerate() {
        if i == 2 {
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            file.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
                .expect("touch");
        }
        let start = Instant::now();
        let summary = drive
            .import(&src, "/", ImportOptions::default())
            .await
            .expect("import");
        *time = start.elapsed();
        let expected = [(1, 0, 0), (0, 1, 0), (0, 0, 1)][i];
        assert_eq!(
            (summary.added, summary.unchanged, summary.changed),
            expected,
            "{summary:?}"
        );
    }
    times
}

async fn index_build(files: usize) -> (Duration, Duration) {
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let (store, drive) = open(tmp.path(), true).await;
        for i in 0..files {
            let body = format!("file {i}");
            drive
                .write_file(
                    &format!("/d{}/f{i}", i % 100),
                    body.as_bytes(),
                    WriteOptions::default(),
                )
                .await
                .expect("write");
        }
        drop(drive);
        store.close().await.expect("close");
    }
    let (_store, drive) = open(tmp.path(), false).await;
    let start = Instant::now();
    drive
        .write_file("/first", b"file 0", WriteOptions::default())
        .await
        .expect("write");
    let first = start.elapsed();
    let start = Instant::now();
    drive
        .write_file("/second", b"file 1", WriteOptions::default())
        .await
        .expect("write");
    (first, start.elapsed())
}

/// `(label, a, b)` timed `RUNS` times each, a and b alternating so both see the same
/// machine; median and fastest of each.
fn report(label: &str, times: &[(Duration, Duration)], names: [&str; 2], bytes: usize) {
    for (i, name) in names.iter().enumerate() {
        let t: Vec<Duration> = times
            .iter()
            .map(|p| if i == 0 { p.0 } else { p.1 })
            .collect();
        let (med, min) = (
            median(t.clone()),
            t.iter().min().copied().unwrap_or_default(),
        );
        println!(
            "{label}, {name}: median {:.1} ms ({:.0} MB/s), fastest {:.1} ms ({:.0} MB/s)",
            med.as_secs_f64() * 1e3,
            mbps(bytes, med),
            min.as_secs_f64() * 1e3,
            mbps(bytes, min)
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bytes: usize = (0..16).map(|i| 4 * MIB + i).sum();
        let mut times = Vec::new();
        let mut matching = Vec::new();
        for _ in 0..RUNS {
            times.push((new_content(true, false).await, new_content(false, false).await));
            matching.push((new_content(true, true).await, new_content(false, true).await));
        }
        let names = ["no_dedup (as JS)", "dedup"];
        report("write_file 16 x 4 MiB new, new sizes", &times, names, bytes);
        report("write_file 16 x 4 MiB new, sizes of files there", &matching, names, bytes);

        let mut present = Vec::new();
        for _ in 0..RUNS {
            present.push((present_64(true).await, present_64(false).await));
        }
        let names = ["appended again (no_dedup)", "found (dedup)"];
        report("write_file of a 64 MiB file already there", &present, names, 64 * MIB);
        // The floor of finding it: hashing it as the feed cuts it, on one thread.
        let blocks: Vec<Vec<u8>> = data(64 * MIB, 7).chunks(512 << 10).map(<[u8]>::to_vec).collect();
        let start = Instant::now();
        let mut hashes = Vec::new();
        hypercore::crypto::leaf_hashes(&blocks, &mut hashes);
        let t = start.elapsed();
        println!(
            "leaf hashes of 64 MiB in 512 KiB blocks: {:.1} ms ({:.0} MB/s)",
            t.as_secs_f64() * 1e3,
            mbps(64 * MIB, t)
        );

        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(import_64().await);
        }
        for (i, label) in ["new", "unchanged", "touched (dedup)"].iter().enumerate() {
            let t = median(runs.iter().map(|r| r[i]).collect());
            println!(
                "import of one 64 MiB file, {label}: median {:.1} ms",
                t.as_secs_f64() * 1e3
            );
        }
        let mut firsts = Vec::new();
        let mut seconds = Vec::new();
        for _ in 0..RUNS {
            let (first, second) = index_build(20_000).await;
            firsts.push(first);
            seconds.push(second);
        }
        println!(
            "first write on a drive of 20,000 files (index built): median {:.1} ms; the next: {:.2} ms",
            median(firsts).as_secs_f64() * 1e3,
            median(seconds).as_secs_f64() * 1e3
        );
    });
}
