//! Appends to a feed forever, for `tests/crash.rs` to kill with SIGKILL at random moments.
//!
//! ```text
//! crash-writer <dir> <seed> [--durability process|sync] [--io-delay-us N]
//! ```
//!
//! Opens (or reopens) the feed in `<dir>` with a fixed key pair, prints `opened <length>`,
//! then loops: picks a batch of 1..=300 blocks with an RNG seeded from `<seed>`, prints
//! `append <from> <count>`, appends block `i` = `make_block(i, crash_block_size(i))` for
//! each `i` in the batch, and prints `acked <new_length>` once the append has returned.
//! Every line is flushed before the next step, so the last `acked` line a reader sees is a
//! length the feed promised to keep, and a trailing `append` line means the kill landed
//! while that append was under way.
//!
//! `--io-delay-us N` wraps the disk storage so that every write and sync first sleeps a
//! random 0..=N microseconds: a slow disk, which makes a kill far more likely to land
//! between the data, tree, signature and bitfield writes of one append. The writer also
//! pauses like that between an append's return and its `acked` line, so that kills also
//! land after a commit but before its acknowledgement.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hypercore::storage::{DiskStorage, FileKind, RandomAccess, Storage};
use hypercore::{Durability, Feed, FeedOptions, KeyPair};
use hyperd_tests::{crash_block_size, make_block, CRASH_KEY_SEED};
use rand::{Rng, SeedableRng};

struct Args {
    dir: PathBuf,
    seed: u64,
    durability: Durability,
    io_delay_us: u64,
}

fn parse_args() -> Result<Args> {
    let usage = "usage: crash-writer <dir> <seed> [--durability process|sync] [--io-delay-us N]";
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().context(usage)?);
    let seed = it.next().context(usage)?.parse().context("seed")?;
    let mut args = Args {
        dir,
        seed,
        durability: Durability::Process,
        io_delay_us: 0,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--durability" => {
                args.durability = match value.as_str() {
                    "process" => Durability::Process,
                    "sync" => Durability::Sync,
                    other => bail!("unknown durability {other:?}"),
                }
            }
            "--io-delay-us" => args.io_delay_us = value.parse().context("--io-delay-us")?,
            other => bail!("unknown option {other:?}\n{usage}"),
        }
    }
    Ok(args)
}

/// Sleeps a random 0..=`max_us` microseconds per call.
#[derive(Clone, Debug)]
struct Pause {
    max_us: u64,
    /// Calls so far, starting from the seed (shared by all files).
    counter: Arc<AtomicU64>,
}

impl Pause {
    fn pause(&self) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let z = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        let us = z % (self.max_us + 1);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

/// Disk storage whose writes and syncs each pause first.
#[derive(Debug)]
struct SlowStorage {
    inner: DiskStorage,
    pause: Pause,
}

#[derive(Debug)]
struct SlowFile {
    inner: Box<dyn RandomAccess>,
    pause: Pause,
}

impl SlowFile {
    fn pause(&self) {
        self.pause.pause();
    }
}

impl RandomAccess for SlowFile {
    fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.pause();
        self.inner.write(offset, data)
    }
    fn write_vectored(&self, offset: u64, bufs: &[&[u8]]) -> std::io::Result<()> {
        self.pause();
        self.inner.write_vectored(offset, bufs)
    }
    fn delete(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.pause();
        self.inner.delete(offset, len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.pause();
        self.inner.truncate(len)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.pause();
        self.inner.sync()
    }
}

impl Storage for SlowStorage {
    fn open(&self, kind: FileKind) -> std::io::Result<Box<dyn RandomAccess>> {
        Ok(Box::new(SlowFile {
            inner: self.inner.open(kind)?,
            pause: self.pause.clone(),
        }))
    }
    fn open_locked_bitfield(&self) -> std::io::Result<Option<Box<dyn RandomAccess>>> {
        Ok(self.inner.open_locked_bitfield()?.map(|inner| {
            Box::new(SlowFile {
                inner,
                pause: self.pause.clone(),
            }) as Box<dyn RandomAccess>
        }))
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// Prints one line with a single write, so a kill cannot leave half of it in the pipe.
fn say(out: &mut impl Write, line: std::fmt::Arguments<'_>) -> Result<()> {
    out.write_all(format!("{line}\n").as_bytes())?;
    out.flush().context("flushing stdout")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let keys = KeyPair::from_seed(&CRASH_KEY_SEED);
    let options = FeedOptions {
        secret_key: Some(keys.secret),
        durability: args.durability,
        ..FeedOptions::default()
    };
    let disk = DiskStorage::new(&args.dir);
    let counter = Arc::new(AtomicU64::new(args.seed));
    let pause = (args.io_delay_us > 0).then(|| Pause {
        max_us: args.io_delay_us,
        counter: counter.clone(),
    });
    let feed = if let Some(pause) = &pause {
        let storage = SlowStorage {
            inner: disk,
            pause: pause.clone(),
        };
        Feed::open(storage, options).await
    } else {
        Feed::open(disk, options).await
    }
    .with_context(|| format!("opening the feed in {}", args.dir.display()))?;
    if feed.key() != keys.public {
        bail!("the feed in {} has another key", args.dir.display());
    }

    let mut out = std::io::stdout().lock();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    say(&mut out, format_args!("opened {}", feed.len()))?;
    loop {
        let from = feed.len();
        let count: u64 = rng.gen_range(1..=300);
        let batch: Vec<Vec<u8>> = (from..from + count)
            .map(|i| make_block(i, crash_block_size(i)))
            .collect();
        say(&mut out, format_args!("append {from} {count}"))?;
        let length = feed
            .append_batch(batch)
            .await
            .with_context(|| format!("appending blocks {from}..{}", from + count))?;
        if length != from + count {
            bail!("append of {count} blocks at {from} returned length {length}");
        }
        if let Some(pause) = &pause {
            pause.pause();
        }
        say(&mut out, format_args!("acked {length}"))?;
    }
}
