//! The `log` benchmark: the Rust hypercore log against JS hypercore@9, on the same machine
//! in the same run, on the same block contents, in temp dirs on the same filesystem.
//!
//! ```text
//! cargo bench -p hyperd-tests --bench log                    # everything, a table
//! cargo bench -p hyperd-tests --bench log -- C               # one workload (A..E or its name)
//! cargo bench -p hyperd-tests --bench log -- --json          # JSON on stdout, table on stderr
//! cargo bench -p hyperd-tests --bench log -- B --rust-only   # no node (for profiling)
//! cargo bench -p hyperd-tests --bench log -- --warm-only     # skip the cold-memory rows
//! cargo bench -p hyperd-tests --bench log -- --cold-only     # skip the warm-memory rows
//! HYPERD_BENCH_JSON=1 HYPERD_BENCH_RUNS=5 cargo bench -p hyperd-tests --bench log
//! ```
//!
//! Workloads (each side runs `runs` times, alternating Rust and JS; the median is reported):
//!
//! * A `append-small`: 200,000 blocks of 64 bytes, 1,000 per append; blocks/s.
//! * B `append-large`: 256 MiB as 64 KiB blocks, 16 per append (1 MiB); MB/s. Also compared
//!   with single-stream BLAKE2b-256 (`blake2b_simd`) over the same 64 KiB blocks.
//! * C `get`: 20,000 random gets on A's feed, each awaited before the next; mean µs.
//! * D `read`: a read stream over B's feed (default options); MB/s.
//! * E `sync`: A and B in Rust with `Durability::Sync` (fdatasync per batch); informational.
//!
//! The Rust side runs in-process on a multi-thread tokio runtime; the JS side is
//! `tests/interop/bench-core.js` under `node`, which times itself the same way (feed open
//! and close outside the clock, block contents generated before it). MB = 10^6 bytes.
//! Everything runs on a warm page cache: feeds are read right after being written.
//!
//! # Memory state
//!
//! An append's cost includes the kernel handing out fresh page-cache pages. On a VM whose
//! host reclaims the guest's free memory (on the Firecracker VM this was written on, most
//! likely virtio-balloon free page reporting: the ~2 s delay matches), a page that has been
//! free for a couple of seconds faults in the *host* on first touch, and writing new data
//! then runs at a few hundred MB/s instead of several GB/s, whatever the program. (Measured
//! there with `dd` of 256 MiB: 0.05-0.07 s right after deleting a file, 0.45-1.4 s when the
//! freed memory had sat for 2 s or more, nearly all of it system CPU time.) Left alone, each run lands
//! in whichever state the previous run left behind, so the appends are timed in two
//! controlled states, the same for both sides:
//!
//! * warm: the harness writes a ballast file and deletes it right before the clock
//!   starts, so the pages the run allocates were in use a moment ago;
//! * cold: the clock starts after 4 s with nothing freed, so every new page is cold.
//!
//! Both are reported, with the raw page-cache write speed in each state ("write floor":
//! 256 MiB of 1 MiB `pwrite`s into a new file) so the floor is visible. The targets are
//! judged on the warm figures; the cold ones are informational, since a cold 256 MiB write
//! alone varies between ~0.4 and ~2 GB/s from one second to the next on such a host. On
//! bare metal both states give the same figures.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use hypercore::storage::DiskStorage;
use hypercore::{Durability, Feed, FeedOptions, ReadStreamOptions};
use hyperd_tests::bench::{loadavg, progress, table, Ballast, Figure, Machine, Mem, Row, SETTLE};
use hyperd_tests::{make_block, node, random_indexes, run_node_json};
use serde_json::{json, Value};

const SMALL_COUNT: u64 = 200_000;
const SMALL_SIZE: usize = 64;
const SMALL_BATCH: usize = 1_000;
const LARGE_BYTES: u64 = 256 << 20;
const LARGE_SIZE: usize = 64 << 10;
const LARGE_BATCH: usize = 16;
const GETS: u64 = 20_000;
const GET_SEED: u32 = 0x9e37_79b9;

// ---------------------------------------------------------------------------------------
// Command line

struct Args {
    filter: Vec<String>,
    json: bool,
    runs: usize,
    /// Skip the JS side (to profile the Rust side alone).
    rust_only: bool,
    /// Skip the cold-memory appends.
    warm_only: bool,
    /// Skip the warm-memory appends (the read workloads still use warm-built feeds).
    cold_only: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        filter: Vec::new(),
        json: std::env::var("HYPERD_BENCH_JSON").is_ok_and(|v| !v.is_empty() && v != "0"),
        runs: match std::env::var("HYPERD_BENCH_RUNS") {
            Ok(v) => v.parse().context("HYPERD_BENCH_RUNS")?,
            Err(_) => 3,
        },
        rust_only: false,
        warm_only: false,
        cold_only: false,
    };
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--json" => args.json = true,
            "--rust-only" => args.rust_only = true,
            "--warm-only" => args.warm_only = true,
            "--cold-only" => args.cold_only = true,
            _ => {
                if let Some(n) = a.strip_prefix("--runs=") {
                    args.runs = n.parse().context("--runs")?;
                } else if !a.starts_with('-') {
                    args.filter.push(a.to_ascii_lowercase());
                }
                // Anything else (`cargo bench` passes `--bench`) is ignored.
            }
        }
    }
    ensure!(args.runs > 0, "runs must be at least 1");
    Ok(args)
}

const WORKLOADS: [(&str, &str); 5] = [
    ("a", "append-small"),
    ("b", "append-large"),
    ("c", "get"),
    ("d", "read"),
    ("e", "sync"),
];

impl Args {
    fn wants(&self, id: &str) -> bool {
        let name = WORKLOADS
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("", |(_, n)| *n);
        self.filter.is_empty() || self.filter.iter().any(|f| f == id || f == name)
    }

    fn states(&self) -> &'static [Mem] {
        if self.warm_only {
            &[Mem::Warm]
        } else if self.cold_only {
            &[Mem::Cold]
        } else {
            &[Mem::Warm, Mem::Cold]
        }
    }
}

// ---------------------------------------------------------------------------------------
// Memory state (see `Mem`)

/// Ballast for an append of `data` bytes: room for the page cache of the data and tree
/// files and for what the JS side allocates while it runs (it concatenates each batch).
fn ballast_for(data: u64) -> u64 {
    3 * data + (128 << 20)
}

// ---------------------------------------------------------------------------------------
// The Rust side

fn blocks(count: u64, size: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| Bytes::from(make_block(i, size)))
        .collect()
}

struct Appended {
    seconds: f64,
    blocks: u64,
    bytes: u64,
    tree_hash: String,
}

/// Appends `blocks` in batches into a new feed in `dir`; `start` runs right before the
/// clock starts.
async fn rust_append(
    dir: &Path,
    blocks: &[Bytes],
    batch: usize,
    durability: Durability,
    start: impl FnOnce(),
) -> Result<Appended> {
    let batches: Vec<Vec<Bytes>> = blocks.chunks(batch).map(<[Bytes]>::to_vec).collect();
    let options = FeedOptions {
        durability,
        ..FeedOptions::default()
    };
    let feed = Feed::open(DiskStorage::new(dir), options).await?;
    start();
    let t0 = Instant::now();
    for b in batches {
        feed.append_batch(b).await?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let roots = feed.root_hashes(feed.len() - 1)?;
    let out = Appended {
        seconds,
        blocks: feed.len(),
        bytes: feed.byte_len(),
        tree_hash: hypercore::crypto::to_hex(&hypercore::crypto::tree_hash(&roots)),
    };
    feed.close().await?;
    Ok(out)
}

/// Mean microseconds per `get`.
async fn rust_gets(dir: &Path, count: u64) -> Result<f64> {
    let feed = Feed::open(DiskStorage::new(dir), FeedOptions::default()).await?;
    let indexes = random_indexes(GET_SEED, count, feed.len());
    let t0 = Instant::now();
    for &i in &indexes {
        let block = feed.get(i).await?;
        ensure!(
            block.first() == Some(&((7 * i % 251) as u8)),
            "block {i} has the wrong content"
        );
    }
    let seconds = t0.elapsed().as_secs_f64();
    feed.close().await?;
    Ok(seconds / count as f64 * 1e6)
}

/// MB/s of a default read stream over the whole feed.
async fn rust_read(dir: &Path) -> Result<f64> {
    let feed = Feed::open(DiskStorage::new(dir), FeedOptions::default()).await?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let t0 = Instant::now();
    let mut stream = std::pin::pin!(feed.read_stream(ReadStreamOptions::default()));
    while let Some(block) = stream.next().await {
        let block = block?;
        ensure!(
            block.first() == Some(&((7 * n % 251) as u8)),
            "block {n} has the wrong content"
        );
        n += 1;
        bytes += block.len() as u64;
    }
    let seconds = t0.elapsed().as_secs_f64();
    ensure!(
        n == feed.len() && bytes == feed.byte_len(),
        "read {n} blocks"
    );
    feed.close().await?;
    Ok(bytes as f64 / seconds / 1e6)
}

fn blake2b_params() -> blake2b_simd::Params {
    let mut p = blake2b_simd::Params::new();
    p.hash_length(32);
    p
}

/// Single-stream BLAKE2b-256 over each block, MB/s.
fn blake2b_single(blocks: &[Bytes]) -> f64 {
    let params = blake2b_params();
    let mut sink = 0u8;
    let bytes: usize = blocks.iter().map(|b| b.len()).sum();
    let t0 = Instant::now();
    for b in blocks {
        sink ^= params.hash(b).as_bytes()[0];
    }
    let seconds = t0.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    bytes as f64 / seconds / 1e6
}

/// BLAKE2b-256 of the same blocks four at a time (`hash_many`, AVX2), MB/s: what an
/// append of many blocks can use; shown for reference.
fn blake2b_many(blocks: &[Bytes]) -> f64 {
    let params = blake2b_params();
    let mut sink = 0u8;
    let bytes: usize = blocks.iter().map(|b| b.len()).sum();
    let t0 = Instant::now();
    for chunk in blocks.chunks(4) {
        let mut jobs: Vec<_> = chunk
            .iter()
            .map(|b| blake2b_simd::many::HashManyJob::new(&params, b))
            .collect();
        blake2b_simd::many::hash_many(jobs.iter_mut());
        for j in &jobs {
            sink ^= j.to_hash().as_bytes()[0];
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    bytes as f64 / seconds / 1e6
}

/// MB/s of writing `bytes` into a new file as 1 MiB `pwrite`s: the page-cache floor any
/// append of that much data pays.
fn write_floor(path: &Path, bytes: u64, start: impl FnOnce()) -> Result<f64> {
    const CHUNK: usize = 1 << 20;
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    let buf = make_block(0, CHUNK);
    start();
    let t0 = Instant::now();
    for i in 0..bytes / CHUNK as u64 {
        file.write_all_at(&buf, i * CHUNK as u64)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(bytes as f64 / seconds / 1e6)
}

// ---------------------------------------------------------------------------------------
// The JS side

/// Runs `bench-core.js append` with `--wait-go`: `start` runs after node is ready and
/// right before it starts its clock. Returns the seconds and the tree hash.
fn js_append(
    dir: &Path,
    count: u64,
    size: usize,
    batch: usize,
    start: impl FnOnce(),
) -> Result<(f64, String)> {
    let mut child = node("bench-core.js")?
        .args(["append", "--dir", &dir.display().to_string()])
        .args(["--count", &count.to_string(), "--size", &size.to_string()])
        .args(["--batch", &batch.to_string(), "--wait-go"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning node bench-core.js")?;
    let mut stdout = BufReader::new(child.stdout.take().context("node stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim() != "READY" {
        let status = child.wait()?;
        bail!("node bench-core.js append did not get ready ({status}): {line}");
    }
    start();
    let mut stdin = child.stdin.take().context("node stdin")?;
    stdin.write_all(b"go\n")?;
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let status = child.wait()?;
    ensure!(
        status.success(),
        "node bench-core.js append failed ({status}): {rest}"
    );
    let last = rest.lines().last().context("no output from node")?;
    let v: Value = serde_json::from_str(last).with_context(|| format!("parsing {last}"))?;
    ensure!(
        v["blocks"].as_u64() == Some(count),
        "JS appended {} blocks",
        v["blocks"]
    );
    let seconds = v["seconds"].as_f64().context("JS seconds")?;
    let hash = v["tree_hash"].as_str().context("JS tree_hash")?.to_string();
    Ok((seconds, hash))
}

fn js_gets(dir: &Path, count: u64) -> Result<f64> {
    let v = run_node_json(
        "bench-core.js",
        &[
            "get",
            "--dir",
            &dir.display().to_string(),
            "--count",
            &count.to_string(),
            "--seed",
            &GET_SEED.to_string(),
        ],
    )?;
    v["mean_us"].as_f64().context("JS mean_us")
}

fn js_read(dir: &Path, bytes: u64) -> Result<f64> {
    let v = run_node_json(
        "bench-core.js",
        &["read", "--dir", &dir.display().to_string()],
    )?;
    ensure!(
        v["bytes"].as_u64() == Some(bytes),
        "JS read {} bytes",
        v["bytes"]
    );
    v["mb_per_s"].as_f64().context("JS mb_per_s")
}

// ---------------------------------------------------------------------------------------
// Running

struct Bench {
    args: Args,
    rt: tokio::runtime::Runtime,
    root: tempfile::TempDir,
    ballast: Ballast,
    rows: Vec<Row>,
    notes: Vec<String>,
    extra: serde_json::Map<String, Value>,
    /// Feeds kept for the read workloads: (Rust dir, JS dir).
    small_feeds: Option<(PathBuf, PathBuf)>,
    large_feeds: Option<(PathBuf, PathBuf)>,
    large_blocks: Option<Vec<Bytes>>,
    /// Rust's warm medians with the default durability, for E's comparison.
    process_medians: [Option<f64>; 2],
}

/// Rust and JS appends of one workload in one memory state, in blocks/s and MB/s.
struct AppendFigures {
    rust_blocks: Figure,
    rust_mb: Figure,
    js_blocks: Figure,
    js_mb: Figure,
}

impl Bench {
    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn large_blocks(&mut self) -> Vec<Bytes> {
        self.large_blocks
            .get_or_insert_with(|| blocks(LARGE_BYTES / LARGE_SIZE as u64, LARGE_SIZE))
            .clone()
    }

    /// Runs an append workload on both sides in memory state `mem`. Keeps the feeds of
    /// the first warm run for the read workloads.
    fn append_both(
        &mut self,
        tag: &str,
        blocks: &[Bytes],
        batch: usize,
        mem: Mem,
        runs: usize,
    ) -> Result<AppendFigures> {
        let count = blocks.len() as u64;
        let size = blocks.first().map_or(0, |b| b.len());
        let data = count * size as u64;
        let mut f = AppendFigures {
            rust_blocks: Figure::new("blocks/s"),
            rust_mb: Figure::new("MB/s"),
            js_blocks: Figure::new("blocks/s"),
            js_mb: Figure::new("MB/s"),
        };
        let mut hashes = Vec::new();
        for run in 0..runs {
            let name = format!("{tag}-{}-{run}", mem.name());
            let rdir = self.dir(&format!("rust-{name}"));
            self.ballast.arm(mem, ballast_for(data))?;
            let ballast = &mut self.ballast;
            let r = self.rt.block_on(rust_append(
                &rdir,
                blocks,
                batch,
                Durability::Process,
                || ballast.fire(mem),
            ))?;
            ensure!(r.blocks == count, "Rust appended {} blocks", r.blocks);
            f.rust_blocks.runs.push(r.blocks as f64 / r.seconds);
            f.rust_mb.runs.push(r.bytes as f64 / r.seconds / 1e6);
            progress(&format!("{name}: Rust {:.3} s", r.seconds));

            let jdir = self.dir(&format!("js-{name}"));
            if !self.args.rust_only {
                self.ballast.arm(mem, ballast_for(data))?;
                let ballast = &mut self.ballast;
                let (seconds, jhash) = js_append(&jdir, count, size, batch, || ballast.fire(mem))?;
                f.js_blocks.runs.push(count as f64 / seconds);
                f.js_mb.runs.push(data as f64 / seconds / 1e6);
                progress(&format!("{name}: JS {seconds:.3} s"));
                if r.tree_hash != jhash {
                    bail!(
                        "{tag}: Rust and JS feeds differ: tree hash {} vs {jhash}",
                        r.tree_hash
                    );
                }
                hashes.push(jhash);
            }
            let keep = run == 0 && mem == Mem::Warm;
            if keep && tag == "small" && self.small_feeds.is_none() {
                self.small_feeds = Some((rdir, jdir));
            } else if keep && tag == "large" && self.large_feeds.is_none() {
                self.large_feeds = Some((rdir, jdir));
            } else {
                let _ = std::fs::remove_dir_all(&rdir);
                let _ = std::fs::remove_dir_all(&jdir);
            }
        }
        if let Some(h) = hashes.first() {
            let key = format!("tree_hash_{tag}");
            if !self.extra.contains_key(&key) {
                self.extra.insert(key, Value::String(h.clone()));
                self.notes.push(format!(
                    "content check: Rust and JS {tag}-block feeds have the same tree hash {}..",
                    &h[..16]
                ));
            }
        }
        Ok(f)
    }

    fn small_blocks() -> Vec<Bytes> {
        blocks(SMALL_COUNT, SMALL_SIZE)
    }

    fn run_a(&mut self) -> Result<()> {
        eprintln!("A: append {SMALL_COUNT} x {SMALL_SIZE} B, {SMALL_BATCH} per batch");
        let blocks = Self::small_blocks();
        for &mem in self.args.states() {
            let f = self.append_both("small", &blocks, SMALL_BATCH, mem, self.args.runs)?;
            if mem == Mem::Warm {
                self.process_medians[0] = Some(f.rust_blocks.median());
            }
            self.rows.push(Row::new(
                format!("A-{}", mem.name()),
                format!(
                    "A append {}k x {SMALL_SIZE} B, {SMALL_BATCH}/batch [{}]",
                    SMALL_COUNT / 1000,
                    mem.name()
                ),
                f.rust_blocks,
                ("JS", f.js_blocks),
                mem.target(4.0, ">= 4x JS"),
            ));
        }
        Ok(())
    }

    fn run_blake(&mut self) -> Figure {
        eprintln!("BLAKE2b baseline over the B blocks");
        let blocks = self.large_blocks();
        let mut single = Figure::new("MB/s");
        let mut many = Figure::new("MB/s");
        for _ in 0..self.args.runs {
            single.runs.push(blake2b_single(&blocks));
            many.runs.push(blake2b_many(&blocks));
        }
        self.extra.insert("blake2b_single".into(), single.json());
        self.extra.insert("blake2b_many4".into(), many.json());
        self.notes.push(format!(
            "BLAKE2b-256 single stream (blake2b_simd, {} KiB buffers, 32-byte output): {}; 4-way hash_many: {}",
            LARGE_SIZE >> 10,
            single.show(),
            many.show()
        ));
        single
    }

    fn run_floor(&mut self, mem: Mem) -> Result<Figure> {
        let mut fig = Figure::new("MB/s");
        for run in 0..self.args.runs {
            let path = self.dir(&format!("floor-{}-{run}", mem.name()));
            self.ballast.arm(mem, ballast_for(LARGE_BYTES))?;
            let ballast = &mut self.ballast;
            let v = write_floor(&path, LARGE_BYTES, || ballast.fire(mem))?;
            progress(&format!(
                "write floor [{}] run {run}: {v:.0} MB/s",
                mem.name()
            ));
            fig.runs.push(v);
        }
        Ok(fig)
    }

    fn run_b(&mut self) -> Result<()> {
        let blake = self.run_blake();
        eprintln!(
            "B: append {} MiB as {} KiB blocks, {LARGE_BATCH} per batch ({} MiB)",
            LARGE_BYTES >> 20,
            LARGE_SIZE >> 10,
            (LARGE_BATCH * LARGE_SIZE) >> 20
        );
        let blocks = self.large_blocks();
        for &mem in self.args.states() {
            let floor = self.run_floor(mem)?;
            let f = self.append_both("large", &blocks, LARGE_BATCH, mem, self.args.runs)?;
            let m = mem.name();
            if mem == Mem::Warm {
                self.process_medians[1] = Some(f.rust_mb.median());
            }
            self.rows.push(Row::new(
                format!("B-{m}"),
                format!(
                    "B append {} MiB as {} KiB, {LARGE_BATCH}/batch (1 MiB) [{m}]",
                    LARGE_BYTES >> 20,
                    LARGE_SIZE >> 10,
                ),
                f.rust_mb.clone(),
                ("JS", f.js_mb),
                mem.target(2.0, ">= 2x JS"),
            ));
            self.rows.push(
                Row::new(
                    format!("B-{m}-blake2b"),
                    format!("B append vs BLAKE2b single stream [{m}]"),
                    f.rust_mb.clone(),
                    ("BLAKE2b", blake.clone()),
                    mem.target(0.7, ">= 70%"),
                )
                .as_percent(),
            );
            self.rows.push(Row::new(
                format!("B-{m}-floor"),
                format!("  write floor: 256 x 1 MiB pwrite, new file [{m}]"),
                floor,
                ("", Figure::new("MB/s")),
                None,
            ));
        }
        Ok(())
    }

    fn ensure_small_feeds(&mut self) -> Result<(PathBuf, PathBuf)> {
        if self.small_feeds.is_none() {
            eprintln!("(setup: building A's feeds, untimed)");
            let blocks = Self::small_blocks();
            self.append_both("small", &blocks, SMALL_BATCH, Mem::Warm, 1)?;
        }
        self.small_feeds.clone().context("no small feeds")
    }

    fn ensure_large_feeds(&mut self) -> Result<(PathBuf, PathBuf)> {
        if self.large_feeds.is_none() {
            eprintln!("(setup: building B's feeds, untimed)");
            let blocks = self.large_blocks();
            self.append_both("large", &blocks, LARGE_BATCH, Mem::Warm, 1)?;
        }
        self.large_feeds.clone().context("no large feeds")
    }

    fn run_c(&mut self) -> Result<()> {
        let (rdir, jdir) = self.ensure_small_feeds()?;
        eprintln!("C: {GETS} random gets, one at a time, on A's feed");
        let (mut rust, mut js) = (Figure::new("us"), Figure::new("us"));
        for run in 0..self.args.runs {
            let r = self.rt.block_on(rust_gets(&rdir, GETS))?;
            rust.runs.push(r);
            if self.args.rust_only {
                progress(&format!("C run {run}: Rust {r:.2} us"));
                continue;
            }
            let j = js_gets(&jdir, GETS)?;
            progress(&format!("C run {run}: Rust {r:.2} us, JS {j:.2} us"));
            js.runs.push(j);
        }
        self.rows.push(Row::lower_is_better(
            "C",
            format!("C random get x{}k on A's feed (mean)", GETS / 1000),
            rust,
            ("JS", js),
            Some((10.0, ">= 10x JS")),
        ));
        Ok(())
    }

    fn run_d(&mut self) -> Result<()> {
        let (rdir, jdir) = self.ensure_large_feeds()?;
        eprintln!("D: read stream over B's feed");
        let (mut rust, mut js) = (Figure::new("MB/s"), Figure::new("MB/s"));
        for run in 0..self.args.runs {
            let r = self.rt.block_on(rust_read(&rdir))?;
            rust.runs.push(r);
            if self.args.rust_only {
                progress(&format!("D run {run}: Rust {r:.0} MB/s"));
                continue;
            }
            let j = js_read(&jdir, LARGE_BYTES)?;
            progress(&format!("D run {run}: Rust {r:.0} MB/s, JS {j:.0} MB/s"));
            js.runs.push(j);
        }
        self.rows.push(Row::new(
            "D",
            format!("D read stream over B's feed ({} MiB)", LARGE_BYTES >> 20),
            rust,
            ("JS", js),
            Some((3.0, ">= 3x JS")),
        ));
        Ok(())
    }

    fn run_e(&mut self) -> Result<()> {
        eprintln!("E: A and B in Rust with Durability::Sync [warm]");
        let small = Self::small_blocks();
        let large = self.large_blocks();
        let cases: [(&str, &[Bytes], usize, &'static str); 2] = [
            ("A", &small, SMALL_BATCH, "blocks/s"),
            ("B", &large, LARGE_BATCH, "MB/s"),
        ];
        for (k, (name, blocks, batch, unit)) in cases.into_iter().enumerate() {
            let data = blocks.iter().map(|b| b.len() as u64).sum::<u64>();
            let mut fig = Figure::new(unit);
            let mut seconds = Vec::new();
            for run in 0..self.args.runs {
                let dir = self.dir(&format!("rust-sync-{name}-{run}"));
                self.ballast.arm(Mem::Warm, ballast_for(data))?;
                let ballast = &mut self.ballast;
                let r =
                    self.rt
                        .block_on(rust_append(&dir, blocks, batch, Durability::Sync, || {
                            ballast.fire(Mem::Warm)
                        }))?;
                fig.runs.push(if unit == "MB/s" {
                    r.bytes as f64 / r.seconds / 1e6
                } else {
                    r.blocks as f64 / r.seconds
                });
                seconds.push(r.seconds);
                progress(&format!("E {name} run {run}: {:.3} s", r.seconds));
                let _ = std::fs::remove_dir_all(&dir);
            }
            let batches = blocks.len().div_ceil(batch);
            seconds.sort_by(f64::total_cmp);
            let per_batch_ms = seconds[seconds.len() / 2] / batches as f64 * 1e3;
            self.extra
                .insert(format!("sync_{name}_ms_per_batch"), json!(per_batch_ms));
            let mut process = Figure::new(unit);
            process.runs.extend(self.process_medians[k]);
            self.rows.push(Row::new(
                format!("E-{name}"),
                format!(
                    "E {name} with Durability::Sync ({batches} batches, {per_batch_ms:.2} ms/batch)"
                ),
                fig,
                ("Rust Process", process),
                None,
            ));
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let m = Machine::get();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let root = tempfile::Builder::new()
        .prefix("hyperd-bench-log-")
        .tempdir()?;
    eprintln!(
        "hyperd log benchmark: {} ({} cores), node {}, runs {}, dir {}",
        m.cpu,
        m.cores,
        m.node,
        args.runs,
        root.path().display()
    );
    let ballast = Ballast::new(root.path());
    let mut b = Bench {
        args,
        rt,
        root,
        ballast,
        rows: Vec::new(),
        notes: Vec::new(),
        extra: serde_json::Map::new(),
        small_feeds: None,
        large_feeds: None,
        large_blocks: None,
        process_medians: [None, None],
    };
    let started = Instant::now();
    if b.args.wants("a") {
        b.run_a()?;
    }
    if b.args.wants("b") {
        b.run_b()?;
    }
    if b.args.wants("c") {
        b.run_c()?;
    }
    if b.args.wants("d") {
        b.run_d()?;
    }
    if b.args.wants("e") {
        b.run_e()?;
    }
    ensure!(
        !b.rows.is_empty(),
        "no workload matches {:?}; use A..E or {:?}",
        b.args.filter,
        WORKLOADS.map(|(_, n)| n)
    );

    let table = render(&b, &m, started.elapsed().as_secs_f64());
    if b.args.json {
        eprint!("{table}");
        let out = json!({
            "machine": m.json(),
            "runs": b.args.runs,
            "rust_only": b.args.rust_only,
            "batch_blocks": { "A": SMALL_BATCH, "B": LARGE_BATCH },
            "workloads": b.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "extra": b.extra,
        });
        println!("{out}");
    } else {
        print!("{table}");
    }
    Ok(())
}

fn render(b: &Bench, m: &Machine, elapsed: f64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "hyperd log benchmark: Rust hypercore vs JS hypercore@9.12.0 (same machine, same run)"
    );
    let _ = writeln!(s, "{}", m.line());
    let _ = writeln!(
        s,
        "median of {} runs per side (alternating), warm page cache, feeds in {}; MB = 10^6 bytes",
        b.args.runs,
        b.root.path().display()
    );
    let _ = writeln!(
        s,
        "load average at start {}, at end {} (other work on the machine skews the figures)",
        m.load_start,
        loadavg()
    );
    let _ = writeln!(
        s,
        "appends: [warm] = memory freed just before the clock starts, [cold] = nothing freed for {} s (host-reclaimed pages fault on first touch)",
        SETTLE.as_secs()
    );
    if b.args.rust_only {
        let _ = writeln!(s, "--rust-only: the JS side was not run");
    }
    for n in &b.notes {
        let _ = writeln!(s, "{n}");
    }
    let _ = writeln!(s);
    s.push_str(&table(&b.rows, "JS / baseline"));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "ratio = Rust / JS for throughput, JS / Rust for latency (C); E compares with Rust's default Durability::Process [warm]"
    );
    let _ = writeln!(s, "total bench time {elapsed:.0} s");
    s
}
