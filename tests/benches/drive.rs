//! The `drive` benchmark: the Rust hyperdrive against JS hyperdrive@10.21, on the same
//! machine in the same run, with the same file contents, each drive the default drive of a
//! corestore in a temp dir on the same filesystem.
//!
//! ```text
//! cargo bench -p hyperd-tests --bench drive                  # everything, a table
//! cargo bench -p hyperd-tests --bench drive -- S             # one workload (W R S L X)
//! cargo bench -p hyperd-tests --bench drive -- --json        # JSON on stdout, table on stderr
//! cargo bench -p hyperd-tests --bench drive -- --rust-only   # no node
//! cargo bench -p hyperd-tests --bench drive -- --runs=5      # or HYPERD_BENCH_RUNS=5
//! ```
//!
//! Workloads (each side runs `runs` times, alternating Rust and JS; the median is reported):
//!
//! * W `write`: one 256 MiB file through a write stream, 64 KiB per write; MB/s.
//! * R `read`: W's file through a read stream (`read_range` / `createReadStream`); MB/s.
//! * S `small`: 5,000 files of 1 KiB written one at a time (`write_file` / `writeFile`)
//!   in 10 x 10 directories; files/s.
//! * L `list`: recursive `readdir` of S's drive, then `stat` of every name; files/s.
//! * X `random`: 4 KiB reads at random offsets of W's file: Rust seeks one cursor
//!   (`Drive::reader`), JS opens a `createReadStream({start, end})` per read (JS has no
//!   cursor); reads/s. Rust does 20,000 reads, JS the first 2,000 of the same offsets.
//!
//! Every run of either side is its own process, so each reports its own peak resident
//! memory (VmHWM / getrusage maxrss), shown per workload below the throughputs: the Rust
//! side is this binary run again with `--child` (`drive --child write --dir D ...`, usable
//! alone for profiling), the JS side `tests/interop/bench-drive.js`. Each opens its drive,
//! makes its data, prints READY and starts the clock on `go` from stdin, so opening the
//! drive and making the data are outside the clock, and the parent sets up the memory
//! state right before it (below). The content feeds of W and S end with the same tree hash
//! on both sides; the bench checks it. MB = 10^6 bytes.
//!
//! # Memory and disk state
//!
//! As in the `log` bench (see `tests/src/bench.rs` `Mem`): on this VM, a page the kernel
//! hands out may fault in the host on first touch, and writing new data then runs at a
//! few hundred MB/s whatever the program (most of the time in the kernel). Freeing a
//! ballast file right before the clock starts was not enough here: a Rust child writing
//! its 256 MiB still took 0.4-0.8 s instead of 0.15 s in most runs, unless the file of the
//! run before had just been deleted. So each writing workload (W, S) runs once uncounted
//! on each side, and every counted run starts the same way on both sides: the side's
//! previous drive deleted, everything written back (`sync`, so no writeback runs during
//! the clock), a ballast file written and deleted right before the clock starts. The
//! warm-up rows in the progress output show the cold case. W's "write floor" row is the raw
//! page-cache write speed in that state. Reads run on a warm page cache (the files were
//! written moments before).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use futures::TryStreamExt;
use hyperd_tests::bench::{loadavg, progress, table, Ballast, Figure, Machine, Mem, Row};
use hyperd_tests::{make_block, node, random_indexes};
use hyperdrive::{Drive, DriveOptions, WriteOptions};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

const FILE_PATH: &str = "/big.bin";
const FILE_BYTES: u64 = 256 << 20;
const CHUNK: usize = 64 << 10;
const SMALL_COUNT: u64 = 5_000;
const SMALL_SIZE: usize = 1 << 10;
const RANDOM_SIZE: usize = 4 << 10;
const RANDOM_RUST: u64 = 20_000;
const RANDOM_JS: u64 = 2_000;
const RANDOM_SEED: u32 = 0x2545_f491;
/// Memory freed right before a timed write of the file: room for its page cache and what
/// either side allocates meanwhile (as the `log` bench).
const BALLAST: u64 = 3 * FILE_BYTES + (128 << 20);

const WORKLOADS: [(&str, &str); 5] = [
    ("w", "write"),
    ("r", "read"),
    ("s", "small"),
    ("l", "list"),
    ("x", "random"),
];

// ---------------------------------------------------------------------------------------
// Command line

struct Args {
    filter: Vec<String>,
    json: bool,
    runs: usize,
    /// Skip the JS side.
    rust_only: bool,
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let mut args = Args {
        filter: Vec::new(),
        json: std::env::var("HYPERD_BENCH_JSON").is_ok_and(|v| !v.is_empty() && v != "0"),
        runs: match std::env::var("HYPERD_BENCH_RUNS") {
            Ok(v) => v.parse().context("HYPERD_BENCH_RUNS")?,
            Err(_) => 3,
        },
        rust_only: false,
    };
    for a in argv {
        match a.as_str() {
            "--json" => args.json = true,
            "--rust-only" => args.rust_only = true,
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

impl Args {
    fn wants(&self, id: &str) -> bool {
        let name = WORKLOADS
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("", |(_, n)| *n);
        self.filter.is_empty() || self.filter.iter().any(|f| f == id || f == name)
    }
}

// ---------------------------------------------------------------------------------------
// The Rust side: one workload in this process (`--child`)

/// `--name value` options of a child.
struct ChildArgs {
    workload: String,
    dir: PathBuf,
    path: String,
    bytes: u64,
    chunk: usize,
    count: u64,
    size: usize,
    seed: u32,
    wait_go: bool,
}

fn parse_child(argv: &[String]) -> Result<ChildArgs> {
    let mut c = ChildArgs {
        workload: argv.first().context("--child needs a workload")?.clone(),
        dir: PathBuf::new(),
        path: FILE_PATH.into(),
        bytes: FILE_BYTES,
        chunk: CHUNK,
        count: 0,
        size: 0,
        seed: 1,
        wait_go: false,
    };
    let mut it = argv[1..].iter();
    while let Some(flag) = it.next() {
        if flag == "--wait-go" {
            c.wait_go = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => c.dir = value.into(),
            "--path" => c.path = value.clone(),
            "--bytes" => c.bytes = value.parse().context("--bytes")?,
            "--chunk" => c.chunk = value.parse().context("--chunk")?,
            "--count" => c.count = value.parse().context("--count")?,
            "--size" => c.size = value.parse().context("--size")?,
            "--seed" => c.seed = value.parse().context("--seed")?,
            _ => bail!("unknown child option {flag}"),
        }
    }
    ensure!(!c.dir.as_os_str().is_empty(), "--dir is required");
    Ok(c)
}

/// Prints READY and waits for a line on stdin (with `--wait-go`).
async fn wait_go(on: bool) -> Result<()> {
    if !on {
        return Ok(());
    }
    tokio::task::spawn_blocking(|| -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(b"READY\n")?;
        out.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        ensure!(!line.is_empty(), "stdin closed before go");
        Ok(())
    })
    .await?
}

/// The expected byte at file position `pos` of a file made of blocks of `chunk` bytes.
fn expected(pos: u64, chunk: usize) -> u8 {
    let chunk = chunk as u64;
    ((7 * (pos / chunk) + pos % chunk) % 251) as u8
}

/// The path of small file `n`: 10 x 10 directories, files spread over them in turn.
fn small_path(n: u64) -> String {
    let d = n % 100;
    format!("/d{}/e{}/f{n}", d / 10, d % 10)
}

/// The content of small file `n`: block `n` of the shared pattern with `n` in its first
/// four bytes (little-endian), so no two files are the same (the pattern repeats every 251
/// blocks, and equal files would share content blocks here but not in JS).
fn small_file(n: u64, size: usize) -> Vec<u8> {
    let mut data = make_block(n, size);
    let tag = (n as u32).to_le_bytes();
    let k = size.min(4);
    data[..k].copy_from_slice(&tag[..k]);
    data
}

/// The peak resident memory of this process, KiB.
fn vm_hwm_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    line.split_whitespace()
        .nth(1)
        .context("VmHWM")?
        .parse()
        .context("VmHWM")
}

async fn content_tree_hash(drive: &Drive) -> Result<String> {
    let feed = drive.content_feed().await?;
    if feed.is_empty() {
        return Ok(String::new());
    }
    let roots = feed.root_hashes(feed.len() - 1)?;
    Ok(hypercore::crypto::to_hex(&hypercore::crypto::tree_hash(
        &roots,
    )))
}

async fn child_write(drive: &Drive, c: &ChildArgs) -> Result<Value> {
    let count = c.bytes.div_ceil(c.chunk as u64);
    // Block i's content depends on i mod 251 only: 251 distinct chunks, reused.
    let distinct: Vec<Bytes> = (0..count.min(251))
        .map(|i| Bytes::from(make_block(i, c.chunk)))
        .collect();
    wait_go(c.wait_go).await?;
    let t0 = Instant::now();
    let mut w = drive.write_stream(&c.path, WriteOptions::default()).await?;
    for i in 0..count {
        let len = (c.bytes - i * c.chunk as u64).min(c.chunk as u64) as usize;
        w.write(distinct[(i % 251) as usize].slice(..len)).await?;
    }
    let stat = w.finish().await?;
    let seconds = t0.elapsed().as_secs_f64();
    ensure!(
        stat.size == c.bytes,
        "wrote {} of {} bytes",
        stat.size,
        c.bytes
    );
    Ok(json!({
        "bytes": c.bytes,
        "seconds": seconds,
        "content_tree_hash": content_tree_hash(drive).await?,
    }))
}

async fn child_read(drive: &Drive, c: &ChildArgs) -> Result<Value> {
    wait_go(c.wait_go).await?;
    let t0 = Instant::now();
    let mut stream = drive.read_range(&c.path, 0, None).await?;
    let mut bytes = 0u64;
    while let Some(data) = stream.try_next().await? {
        if data.first().is_some_and(|&b| b != expected(bytes, c.chunk)) {
            bail!("byte {bytes} of {} is wrong", c.path);
        }
        bytes += data.len() as u64;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(json!({ "bytes": bytes, "seconds": seconds }))
}

async fn child_small(drive: &Drive, c: &ChildArgs) -> Result<Value> {
    let files: Vec<(String, Vec<u8>)> = (0..c.count)
        .map(|n| (small_path(n), small_file(n, c.size)))
        .collect();
    wait_go(c.wait_go).await?;
    let t0 = Instant::now();
    for (path, data) in &files {
        drive
            .write_file(path, data, WriteOptions::default())
            .await?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(json!({
        "files": c.count,
        "seconds": seconds,
        "content_tree_hash": content_tree_hash(drive).await?,
    }))
}

async fn child_list(drive: &Drive, c: &ChildArgs) -> Result<Value> {
    wait_go(c.wait_go).await?;
    let t0 = Instant::now();
    let names = drive.readdir("/", true).await?;
    let mut bytes = 0;
    for name in &names {
        bytes += drive.stat(&format!("/{name}")).await?.size;
    }
    let seconds = t0.elapsed().as_secs_f64();
    ensure!(
        names.len() as u64 == c.count,
        "listed {} of {} files",
        names.len(),
        c.count
    );
    Ok(json!({ "files": names.len(), "bytes": bytes, "seconds": seconds }))
}

async fn child_random(drive: &Drive, c: &ChildArgs) -> Result<Value> {
    let size = drive.stat(&c.path).await?.size;
    let offsets = random_indexes(c.seed, c.count, size - c.size as u64 + 1);
    let mut buf = vec![0u8; c.size];
    let mut reader = drive.reader(&c.path).await?;
    wait_go(c.wait_go).await?;
    let t0 = Instant::now();
    for &start in &offsets {
        reader.seek_to(start);
        reader.read_exact(&mut buf).await?;
        let last = start + c.size as u64 - 1;
        if buf[0] != expected(start, c.chunk) || buf[c.size - 1] != expected(last, c.chunk) {
            bail!("the read at {start} of {} is wrong", c.path);
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(json!({ "reads": c.count, "seconds": seconds }))
}

fn child_main(argv: &[String]) -> Result<()> {
    let c = parse_child(argv)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut result = rt.block_on(async {
        let store = Corestore::open(&c.dir, CorestoreOptions::default()).await?;
        let drive = Drive::default_drive(&store, DriveOptions::default()).await?;
        let result = match c.workload.as_str() {
            "write" => child_write(&drive, &c).await?,
            "read" => child_read(&drive, &c).await?,
            "small" => child_small(&drive, &c).await?,
            "list" => child_list(&drive, &c).await?,
            "random" => child_random(&drive, &c).await?,
            w => bail!("unknown workload {w}"),
        };
        drop(drive);
        store.close().await?;
        anyhow::Ok(result)
    })?;
    result["workload"] = json!(c.workload);
    result["max_rss_kib"] = json!(vm_hwm_kib()?);
    println!("{result}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What bounds S: the signatures

/// Ed25519 signatures of a feed's 40-byte signable per second, on one thread.
fn signs_per_s(count: u32) -> f64 {
    let pair = hypercore::crypto::KeyPair::generate();
    let mut message = [0u8; 40];
    let t0 = Instant::now();
    for i in 0..count {
        message[..4].copy_from_slice(&i.to_le_bytes());
        std::hint::black_box(pair.secret.sign(&message));
    }
    f64::from(count) / t0.elapsed().as_secs_f64()
}

/// Appends of one 1 KiB block each, awaited one by one, to a new feed in `dir`, per
/// second: what a signed append costs through the feed.
fn appends_per_s(dir: &Path, count: u64) -> Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let storage = hypercore::storage::DiskStorage::new(dir);
        let feed = hypercore::Feed::open(storage, hypercore::FeedOptions::default()).await?;
        let blocks: Vec<Bytes> = (0..count)
            .map(|i| Bytes::from(make_block(i, SMALL_SIZE)))
            .collect();
        let t0 = Instant::now();
        for b in blocks {
            feed.append(b).await?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        feed.close().await?;
        Ok(count as f64 / seconds)
    })
}

// ---------------------------------------------------------------------------------------
// What bounds W: the page cache

/// MB/s of writing `bytes` into a new file at `path` as 1 MiB `pwrite`s, `start` running
/// right before the clock: what any write of that much new data pays in the memory state
/// `start` sets up.
fn write_floor(path: &Path, bytes: u64, start: impl FnOnce()) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    const STEP: usize = 1 << 20;
    let file = std::fs::File::create(path)?;
    let buf = make_block(0, STEP);
    start();
    let t0 = Instant::now();
    for i in 0..bytes / STEP as u64 {
        file.write_all_at(&buf, i * STEP as u64)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(bytes as f64 / seconds / 1e6)
}

// ---------------------------------------------------------------------------------------
// Running both sides

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Rust,
    Js,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Rust => "Rust",
            Side::Js => "JS",
        }
    }
}

/// Writes back what earlier runs left in the page cache (`sync`), so that no writeback
/// runs during the next timed write and the ballast (written next, deleted right before
/// the clock starts) is never allocated on disk.
fn settle() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

/// The drive of `side`'s run `run` of `tag` under `root`.
fn run_dir(root: &Path, side: Side, tag: &str, run: usize) -> PathBuf {
    root.join(format!("{}-{tag}-{run}", side.name()))
}

/// A workload that writes a new drive each run (see [`Bench::both`]).
struct Writing {
    /// Names its runs' drives (see [`run_dir`]).
    tag: &'static str,
    /// Memory freed right before the clock starts.
    ballast: u64,
}

/// What one run of one side measured.
struct Run {
    seconds: f64,
    /// Peak resident memory, MiB.
    rss_mib: f64,
    out: Value,
}

/// Runs `workload` of `side` as its own process with `args` and `--wait-go`; `start` runs
/// after it is ready and right before its clock starts.
fn run_side(side: Side, workload: &str, args: &[String], start: impl FnOnce()) -> Result<Run> {
    let mut cmd = match side {
        Side::Rust => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("--child");
            cmd
        }
        Side::Js => node("bench-drive.js")?,
    };
    let mut child = cmd
        .arg(workload)
        .args(args)
        .arg("--wait-go")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawning the {} {workload}", side.name()))?;
    let mut stdout = BufReader::new(child.stdout.take().context("child stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim() != "READY" {
        let status = child.wait()?;
        bail!(
            "the {} {workload} did not get ready ({status}): {line}",
            side.name()
        );
    }
    start();
    let mut stdin = child.stdin.take().context("child stdin")?;
    stdin.write_all(b"go\n")?;
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let status = child.wait()?;
    ensure!(
        status.success(),
        "the {} {workload} failed ({status}): {rest}",
        side.name()
    );
    let last = rest.lines().last().context("no output")?;
    let out: Value = serde_json::from_str(last).with_context(|| format!("parsing {last}"))?;
    Ok(Run {
        seconds: out["seconds"].as_f64().context("seconds")?,
        rss_mib: out["max_rss_kib"].as_f64().context("max_rss_kib")? / 1024.0,
        out,
    })
}

/// One workload's figures on both sides.
struct Pair {
    rust: Figure,
    js: Figure,
    rust_rss: Figure,
    js_rss: Figure,
}

impl Pair {
    fn new(unit: &'static str) -> Pair {
        Pair {
            rust: Figure::new(unit),
            js: Figure::new(unit),
            rust_rss: Figure::new("MiB"),
            js_rss: Figure::new("MiB"),
        }
    }
}

struct Bench {
    args: Args,
    root: tempfile::TempDir,
    ballast: Ballast,
    rows: Vec<Row>,
    memory: Vec<Row>,
    notes: Vec<String>,
    /// Drives kept for the reading workloads: W's and S's (Rust dir, JS dir).
    file_drives: Option<(PathBuf, PathBuf)>,
    small_drives: Option<(PathBuf, PathBuf)>,
}

impl Bench {
    /// The drive of `side`'s run `run` of `tag`.
    fn run_dir(&self, side: Side, tag: &str, run: usize) -> PathBuf {
        run_dir(self.root.path(), side, tag, run)
    }

    /// The drives of `tag`'s run `run` on both sides.
    fn drives(&self, tag: &str, run: usize) -> (PathBuf, PathBuf) {
        (
            self.run_dir(Side::Rust, tag, run),
            self.run_dir(Side::Js, tag, run),
        )
    }

    fn sides(&self) -> &'static [Side] {
        if self.args.rust_only {
            &[Side::Rust]
        } else {
            &[Side::Rust, Side::Js]
        }
    }

    /// Runs `workload` `runs` times on each side, alternating; `args(side, run)` gives a
    /// run's arguments, `value(run)` its figure.
    ///
    /// A writing workload first runs once uncounted on each side (run 0), and each later
    /// run starts from the same state: the drive of the side's run before deleted, that
    /// written back ([`settle`]), then `ballast` bytes of memory freed right before the
    /// clock starts. Its last run's drives are kept.
    fn both(
        &mut self,
        workload: &str,
        runs: usize,
        writing: Option<Writing>,
        args: impl Fn(Side, usize) -> Vec<String>,
        value: impl Fn(Side, &Run) -> f64,
        pair: &mut Pair,
    ) -> Result<Vec<(Side, Run)>> {
        let mut all = Vec::new();
        let first = usize::from(writing.is_none());
        for run in first..=runs {
            for &side in self.sides() {
                let args = args(side, run);
                if let Some(w) = &writing {
                    if run > 0 {
                        let before = self.run_dir(side, w.tag, run - 1);
                        std::fs::remove_dir_all(&before)
                            .with_context(|| format!("deleting {}", before.display()))?;
                    }
                    settle()?;
                    self.ballast.arm(Mem::Warm, w.ballast)?;
                }
                let ballast_on = writing.is_some();
                let b = &mut self.ballast;
                let r = run_side(side, workload, &args, || {
                    if ballast_on {
                        b.fire(Mem::Warm);
                    }
                })?;
                let v = value(side, &r);
                let which = match run {
                    0 => "warm-up".to_string(),
                    n => format!("run {n}"),
                };
                progress(&format!(
                    "{workload} {which}: {} {:.3} s, {v:.0} {}, peak RSS {:.1} MiB",
                    side.name(),
                    r.seconds,
                    pair.rust.unit,
                    r.rss_mib
                ));
                if run == 0 {
                    continue;
                }
                let (fig, rss) = match side {
                    Side::Rust => (&mut pair.rust, &mut pair.rust_rss),
                    Side::Js => (&mut pair.js, &mut pair.js_rss),
                };
                fig.runs.push(v);
                rss.runs.push(r.rss_mib);
                all.push((side, r));
            }
        }
        Ok(all)
    }

    /// Checks that both sides' content feeds ended with the same tree hash.
    fn check_content(&mut self, what: &str, runs: &[(Side, Run)]) -> Result<()> {
        let hash = |side| {
            runs.iter()
                .find(|(s, _)| *s == side)
                .and_then(|(_, r)| r.out["content_tree_hash"].as_str().map(String::from))
        };
        if let (Some(r), Some(j)) = (hash(Side::Rust), hash(Side::Js)) {
            ensure!(
                r == j,
                "{what}: the Rust and JS content feeds differ: tree hash {r} vs {j}"
            );
            self.notes.push(format!(
                "content check: {what}: Rust and JS content feeds have the same tree hash {}..",
                &r[..16.min(r.len())]
            ));
        }
        Ok(())
    }

    fn memory_row(&mut self, id: &str, label: &str, pair: &Pair) {
        self.memory.push(Row::lower_is_better(
            format!("{id}-rss"),
            format!("peak RSS: {label}"),
            pair.rust_rss.clone(),
            ("JS", pair.js_rss.clone()),
            None,
        ));
    }

    fn write_args(&self, tag: &str) -> impl Fn(Side, usize) -> Vec<String> {
        let root = self.root.path().to_path_buf();
        let tag = tag.to_string();
        move |side, run| {
            let dir = run_dir(&root, side, &tag, run);
            vec![
                "--dir".into(),
                dir.display().to_string(),
                "--path".into(),
                FILE_PATH.into(),
                "--bytes".into(),
                FILE_BYTES.to_string(),
                "--chunk".into(),
                CHUNK.to_string(),
                "--count".into(),
                SMALL_COUNT.to_string(),
                "--size".into(),
                SMALL_SIZE.to_string(),
            ]
        }
    }

    /// Runs W (`runs` times) and keeps the first run's drives for R and X.
    fn write_file(&mut self, runs: usize) -> Result<Pair> {
        let mut pair = Pair::new("MB/s");
        let args = self.write_args("write");
        let all = self.both(
            "write",
            runs,
            Some(Writing {
                tag: "write",
                ballast: BALLAST,
            }),
            &args,
            |_, r| FILE_BYTES as f64 / r.seconds / 1e6,
            &mut pair,
        )?;
        self.check_content("the 256 MiB file", &all)?;
        self.file_drives = Some(self.drives("write", runs));
        Ok(pair)
    }

    fn run_w(&mut self) -> Result<()> {
        eprintln!(
            "W: write {} MiB through a write stream, {} KiB per write",
            FILE_BYTES >> 20,
            CHUNK >> 10
        );
        let pair = self.write_file(self.args.runs)?;
        self.rows.push(Row::new(
            "W",
            format!(
                "W write stream, {} MiB in {} KiB writes",
                FILE_BYTES >> 20,
                CHUNK >> 10
            ),
            pair.rust.clone(),
            ("JS", pair.js.clone()),
            Some((4.0, ">= 4x JS")),
        ));
        self.memory_row("W", "W write stream", &pair);

        // On this VM a new page faults in the host now and then even right after memory
        // was freed (the runs land in two groups, ~0.15 s and ~0.45 s for Rust, the slow
        // ones with most of their time in the kernel): the raw write speed in the same
        // state shows how often.
        let mut floor = Figure::new("MB/s");
        for run in 0..self.args.runs {
            settle()?;
            self.ballast.arm(Mem::Warm, BALLAST)?;
            let path = self.root.path().join("floor");
            let b = &mut self.ballast;
            let v = write_floor(&path, FILE_BYTES, || b.fire(Mem::Warm))?;
            progress(&format!("write floor run {run}: {v:.0} MB/s"));
            floor.runs.push(v);
        }
        self.rows.push(Row::new(
            "W-floor",
            "  write floor: 256 x 1 MiB pwrite, new file",
            floor,
            ("", Figure::new("MB/s")),
            None,
        ));
        Ok(())
    }

    fn ensure_file(&mut self) -> Result<(PathBuf, PathBuf)> {
        if self.file_drives.is_none() {
            eprintln!("(setup: writing W's file once)");
            self.write_file(1)?;
        }
        self.file_drives.clone().context("no file drives")
    }

    fn ensure_small(&mut self) -> Result<(PathBuf, PathBuf)> {
        if self.small_drives.is_none() {
            eprintln!("(setup: writing S's files once)");
            self.small_files(1)?;
        }
        self.small_drives.clone().context("no small-file drives")
    }

    /// Arguments naming the kept drive of `side` among `drives`.
    fn kept(drives: &(PathBuf, PathBuf), extra: &[String]) -> impl Fn(Side, usize) -> Vec<String> {
        let drives = drives.clone();
        let extra = extra.to_vec();
        move |side, _| {
            let dir = match side {
                Side::Rust => &drives.0,
                Side::Js => &drives.1,
            };
            let mut args = vec!["--dir".into(), dir.display().to_string()];
            args.extend(extra.iter().cloned());
            args
        }
    }

    fn run_r(&mut self) -> Result<()> {
        let drives = self.ensure_file()?;
        eprintln!("R: read W's file through a read stream");
        let mut pair = Pair::new("MB/s");
        let extra = ["--path".into(), FILE_PATH.into()];
        self.both(
            "read",
            self.args.runs,
            None,
            Self::kept(&drives, &extra),
            |_, r| r.out["bytes"].as_f64().unwrap_or(0.0) / r.seconds / 1e6,
            &mut pair,
        )?;
        self.rows.push(Row::new(
            "R",
            format!("R read stream, {} MiB", FILE_BYTES >> 20),
            pair.rust.clone(),
            ("JS", pair.js.clone()),
            Some((8.0, ">= 8x JS")),
        ));
        self.memory_row("R", "R read stream", &pair);
        Ok(())
    }

    /// Runs S (`runs` times) and keeps the first run's drives for L.
    fn small_files(&mut self, runs: usize) -> Result<Pair> {
        let mut pair = Pair::new("files/s");
        let args = self.write_args("small");
        let all = self.both(
            "small",
            runs,
            Some(Writing {
                tag: "small",
                ballast: 256 << 20,
            }),
            &args,
            |_, r| SMALL_COUNT as f64 / r.seconds,
            &mut pair,
        )?;
        self.check_content("the small files", &all)?;
        self.small_drives = Some(self.drives("small", runs));
        Ok(pair)
    }

    fn run_s(&mut self) -> Result<()> {
        eprintln!(
            "S: write {SMALL_COUNT} files of {SMALL_SIZE} B one at a time in 10 x 10 directories"
        );
        let pair = self.small_files(self.args.runs)?;
        self.rows.push(Row::new(
            "S",
            format!(
                "S write_file x {}k of {} KiB, 10 x 10 dirs",
                SMALL_COUNT / 1000,
                SMALL_SIZE >> 10
            ),
            pair.rust.clone(),
            ("JS", pair.js.clone()),
            Some((15.0, ">= 15x JS")),
        ));
        self.memory_row("S", "S small files", &pair);

        // Each file is two signed appends (its content, then its Stat): what they cost
        // alone bounds S.
        let (mut signs, mut appends) = (Figure::new("/s"), Figure::new("/s"));
        for run in 0..self.args.runs {
            signs.runs.push(signs_per_s(20_000));
            let dir = self.run_dir(Side::Rust, "appends", run);
            appends.runs.push(appends_per_s(&dir, 10_000)?);
            let _ = std::fs::remove_dir_all(&dir);
        }
        progress(&format!(
            "Ed25519 signs {:.0}/s, single 1 KiB appends {:.0}/s",
            signs.median(),
            appends.median()
        ));
        let half = |f: &Figure| Figure {
            runs: f.runs.iter().map(|v| v / 2.0).collect(),
            unit: "files/s",
        };
        self.rows.push(Row::new(
            "S-sign",
            "  bound: Ed25519 signs/s / 2 (one thread)",
            half(&signs),
            ("JS", pair.js.clone()),
            None,
        ));
        self.rows.push(Row::new(
            "S-append",
            "  bound: single 1 KiB Feed::append /s / 2",
            half(&appends),
            ("JS", pair.js),
            None,
        ));
        Ok(())
    }

    fn run_l(&mut self) -> Result<()> {
        let drives = self.ensure_small()?;
        eprintln!("L: recursive readdir of S's drive, then stat of each name");
        let mut pair = Pair::new("files/s");
        let extra = ["--count".into(), SMALL_COUNT.to_string()];
        self.both(
            "list",
            self.args.runs,
            None,
            Self::kept(&drives, &extra),
            |_, r| SMALL_COUNT as f64 / r.seconds,
            &mut pair,
        )?;
        self.rows.push(Row::new(
            "L",
            format!("L readdir -r + stat x {}k (S's drive)", SMALL_COUNT / 1000),
            pair.rust.clone(),
            ("JS", pair.js.clone()),
            Some((30.0, ">= 30x JS")),
        ));
        self.memory_row("L", "L readdir + stat", &pair);
        Ok(())
    }

    fn run_x(&mut self) -> Result<()> {
        let drives = self.ensure_file()?;
        eprintln!(
            "X: {} KiB reads at random offsets of W's file (Rust {RANDOM_RUST}, JS {RANDOM_JS})",
            RANDOM_SIZE >> 10
        );
        let mut pair = Pair::new("reads/s");
        let extra = |count: u64| {
            vec![
                "--path".into(),
                FILE_PATH.into(),
                "--count".into(),
                count.to_string(),
                "--size".into(),
                RANDOM_SIZE.to_string(),
                "--seed".into(),
                RANDOM_SEED.to_string(),
            ]
        };
        let rust = Self::kept(&drives, &extra(RANDOM_RUST));
        let js = Self::kept(&drives, &extra(RANDOM_JS));
        self.both(
            "random",
            self.args.runs,
            None,
            |side, run| match side {
                Side::Rust => rust(side, run),
                Side::Js => js(side, run),
            },
            |_, r| r.out["reads"].as_f64().unwrap_or(0.0) / r.seconds,
            &mut pair,
        )?;
        self.rows.push(Row::new(
            "X",
            format!(
                "X random {} KiB reads: cursor vs createReadStream",
                RANDOM_SIZE >> 10
            ),
            pair.rust.clone(),
            ("JS", pair.js.clone()),
            None,
        ));
        self.memory_row("X", "X random reads", &pair);
        Ok(())
    }
}

/// One workload of the bench.
type Step = fn(&mut Bench) -> Result<()>;

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--child") {
        return child_main(&argv[1..]);
    }
    let args = parse_args(&argv)?;
    let m = Machine::get();
    let root = tempfile::Builder::new()
        .prefix("hyperd-bench-drive-")
        .tempdir()?;
    eprintln!(
        "hyperd drive benchmark: {} ({} cores), node {}, runs {}, dir {}",
        m.cpu,
        m.cores,
        m.node,
        args.runs,
        root.path().display()
    );
    let ballast = Ballast::new(root.path());
    let mut b = Bench {
        args,
        root,
        ballast,
        rows: Vec::new(),
        memory: Vec::new(),
        notes: Vec::new(),
        file_drives: None,
        small_drives: None,
    };
    let started = Instant::now();
    let steps: [(&str, Step); 5] = [
        ("w", Bench::run_w),
        ("r", Bench::run_r),
        ("x", Bench::run_x),
        ("s", Bench::run_s),
        ("l", Bench::run_l),
    ];
    for (id, step) in steps {
        if b.args.wants(id) {
            step(&mut b)?;
        }
    }
    ensure!(
        !b.rows.is_empty(),
        "no workload matches {:?}; use W R S L X or {:?}",
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
            "workloads": b.rows.iter().chain(&b.memory).map(Row::json).collect::<Vec<_>>(),
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
        "hyperd drive benchmark: Rust hyperdrive vs JS hyperdrive@10.21.0 (same machine, same run)"
    );
    let _ = writeln!(s, "{}", m.line());
    let _ = writeln!(
        s,
        "median of {} runs per side (alternating), each run its own process; drives in {}; MB = 10^6 bytes",
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
        "writes: one uncounted run per side, then each run after deleting the previous drive, sync, memory freed just before the clock; reads on a warm page cache"
    );
    if b.args.rust_only {
        let _ = writeln!(s, "--rust-only: the JS side was not run");
    }
    for n in &b.notes {
        let _ = writeln!(s, "{n}");
    }
    let _ = writeln!(s);
    s.push_str(&table(&b.rows, "JS"));
    let _ = writeln!(s);
    s.push_str(&table(&b.memory, "JS"));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "ratio = Rust / JS for throughput, JS / Rust for peak RSS (how many times less memory)"
    );
    let _ = writeln!(s, "total bench time {elapsed:.0} s");
    s
}
