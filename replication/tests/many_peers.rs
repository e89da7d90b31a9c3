//! One Rust seeder, 100 clones dialing it at once over loopback TCP: every clone completes
//! and verifies, and the process's memory stays bounded.
//!
//! The clones store their feeds on disk (in a temporary directory), so the resident memory
//! measured is not 100 copies of the feed. Most of what remains is per open feed rather
//! than per connection: each `Feed` has a tree-node cache of 65536 entries (`lru`
//! preallocates its table, ~2 MiB, resident once a few thousand nodes are spread over
//! it), so 100 open clones hold ~200 MiB until they are dropped, which the test also
//! prints. This file holds a single test so the process-wide figures are its own.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercore::storage::DiskStorage;
use hypercore::{Feed, FeedOptions, PublicKey};
use hypercore_protocol::ProtocolOptions;
use hypercore_replication::{replicate, ReplicateOptions, Replicator, ReplicatorOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};

const PEERS: usize = 100;
/// Sized for debug builds, where the XSalsa20 stream (unoptimised SIMD) dominates: about
/// 70 CPU seconds in all.
const BLOCKS: u64 = 1500;
const BLOCK_SIZE: usize = 1024;
/// Peak resident memory allowed for the whole process, seeder and 100 clones included.
const MAX_PEAK: u64 = 512 << 20;

/// `VmHWM` (peak) and `VmRSS` (current) of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn block(i: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(i);
    let mut b = vec![0u8; BLOCK_SIZE];
    rng.fill(&mut b[..]);
    Bytes::from(b)
}

async fn clone_on_disk(dir: PathBuf, key: PublicKey) -> Feed {
    Feed::open(
        DiskStorage::new(dir),
        FeedOptions {
            key: Some(key),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_peers_clone_one_seeder_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();

    let writer = Feed::memory().await.unwrap();
    let all: Vec<Bytes> = (0..BLOCKS).map(block).collect();
    for chunk in all.chunks(500) {
        writer.append_batch(chunk.to_vec()).await.unwrap();
    }
    drop(all);
    let seeder = Replicator::new(writer.clone(), ReplicatorOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let mut clones = Vec::new();
    for p in 0..PEERS {
        clones.push(clone_on_disk(tmp.path().join(format!("clone-{p}")), writer.key()).await);
    }
    // Start the peak measurement here: reset the high-water mark when the kernel allows.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (peak_before, rss_before) = memory();
    let started = Instant::now();

    let server = tokio::spawn(async move {
        let mut sessions = Vec::new();
        for _ in 0..PEERS {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let rep = seeder.clone();
            sessions.push(tokio::spawn(async move {
                replicate(&rep, s, ReplicateOptions::default()).await
            }));
        }
        for (i, s) in sessions.into_iter().enumerate() {
            s.await
                .unwrap()
                .unwrap_or_else(|e| panic!("seeder session {i}: {e}"));
        }
        seeder
    });
    let mut tasks = Vec::new();
    for feed in &clones {
        let rep = Replicator::new(feed.clone(), ReplicatorOptions::default());
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let options = ReplicateOptions {
                protocol: ProtocolOptions {
                    initiator: true,
                    ..Default::default()
                },
            };
            replicate(&rep, s, options).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap_or_else(|_| panic!("clone {i} did not finish"))
            .unwrap()
            .unwrap_or_else(|e| panic!("clone {i}: {e}"));
    }
    let seeder = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    let (peak_after, rss_after) = memory();

    for (i, c) in clones.iter().enumerate() {
        assert_eq!(c.len(), BLOCKS, "clone {i}");
        assert_eq!(c.downloaded(0, None), BLOCKS, "clone {i}");
        assert_eq!(c.byte_len(), writer.byte_len(), "clone {i}");
    }
    // Full verification of every clone: each block re-hashed against the signed tree.
    for (i, c) in clones.iter().enumerate() {
        let audit = c.audit().await.unwrap();
        assert_eq!((audit.valid, audit.invalid), (BLOCKS, 0), "clone {i}");
        for b in [0, BLOCKS / 3, BLOCKS - 1] {
            assert_eq!(c.get(b).await.unwrap(), block(b), "clone {i} block {b}");
        }
    }
    let totals = seeder.stats().totals;
    let data = BLOCKS * BLOCK_SIZE as u64;
    println!(
        "{PEERS} peers x {} blocks of {} bytes ({} each, {} in all) in {elapsed:?}; \
         seeder uploaded {} blocks / {}",
        BLOCKS,
        BLOCK_SIZE,
        mib(data),
        mib(data * PEERS as u64),
        totals.uploaded_blocks,
        mib(totals.uploaded_bytes),
    );
    println!(
        "memory: RSS {} before, {} after; peak {} before, {} during (growth {}, {} per peer)",
        mib(rss_before),
        mib(rss_after),
        mib(peak_before),
        mib(peak_after),
        mib(peak_after.saturating_sub(rss_before)),
        mib(peak_after.saturating_sub(rss_before) / PEERS as u64),
    );
    assert_eq!(totals.uploaded_blocks, BLOCKS * PEERS as u64);
    assert!(
        peak_after < MAX_PEAK,
        "peak RSS {} is over the {} bound",
        mib(peak_after),
        mib(MAX_PEAK)
    );
    drop(clones);
    drop(writer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "after dropping the feeds: RSS {}; process CPU time {:.1} s",
        mib(memory().1),
        cpu_seconds()
    );
}

/// User + system CPU time of this process (from /proc, in the usual 100 Hz ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Skip the command name (in parentheses, may contain spaces): utime and stime are then
    // the 12th and 13th fields.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}
