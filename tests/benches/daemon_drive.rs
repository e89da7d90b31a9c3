//! The `daemon_drive` benchmark: drives through a real `hyperd` (release build, temp
//! home) and `hyperctl`, against the `hyperdrive` library in-process and against
//! hyperdrive-daemon 1.14.5, the JS daemon, on the same machine in the same run.
//!
//! ```text
//! scripts/bench-setup       # once: hyperdrive-daemon's npm modules (tests/bench-js/)
//! cargo build --release --bins && cargo bench -p hyperd-tests --bench daemon_drive
//! cargo bench -p hyperd-tests --bench daemon_drive -- --only put      # put and cat
//! cargo bench -p hyperd-tests --bench daemon_drive -- --only import   # import and ls
//! ... -- --runs=5 --js-runs=2 --rust-only --json
//! HYPERD_BENCH_TREE_FILES=1000 cargo bench ...   # a smaller tree, for a quick run
//! ```
//!
//! * put: `hyperctl drive put` of a 256 MiB file into a new drive, against writing the
//!   same bytes in-process into the default drive of a new corestore in a temp dir
//!   (`Drive::write_stream`, 1 MiB writes as hyperctl sends them, so both content feeds
//!   get the same blocks); MB/s, target ≥ 60 % of in-process.
//! * cat: `hyperctl drive cat` of that file into /dev/null, against draining
//!   `Drive::read_range` in-process; target ≥ 60 %. hyperctl reads the bytes from the
//!   daemon's storage where the daemon says they lie (LocateFile, checked against clears
//!   with StorageClears); `cat --stream`, through the ReadFile stream, is timed too, for
//!   information. The uncounted first run goes through a pipe and checks every byte both
//!   ways; a drained pipe is timed too, for information.
//! * import: `hyperctl drive import` of a tree of 10,000 files (1 KiB to 1 MiB,
//!   log-uniform, about 1.5 GB, in 10 x 10 directories; made from a seeded RNG), each
//!   run a fresh `hyperd` and a new drive, against hyperdrive-daemon's `hyperdrive import`
//!   of the same tree (its daemon run as `node index.js --bootstrap false` with its
//!   storage, ports and HOME its own, its CLI with `--no-seed`); files/s and MB/s,
//!   target ≥ 20x. JS's import keeps watching the folder: it is timed until its progress
//!   bar counts every file and directory (the bar draws only on a terminal, so the CLI
//!   runs under `script`), then stopped. Its bar counts a file when its copy starts,
//!   so the bench then waits for the content feed to hold every byte, untimed. Peak RSS
//!   is VmHWM of each daemon process (for JS the node process running the daemon, not
//!   its CLI) at the end of the import.
//! * ls: `hyperctl drive ls -r -l` of the last imported drive, median of 5; target
//!   ≤ 0.5 s.
//!
//! Timed writes start in the warm memory state of `tests/src/bench.rs` (`Mem`), the same
//! for both sides: written-back page cache (`sync`), then a ballast freed right before
//! the clock (dripped during an import). MB = 10^6 bytes.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use futures::TryStreamExt;
use hyperd_tests::bench::{
    median, progress, table, warn_if_binaries_stale, Ballast, Figure, Machine, Mem, Row,
};
use hyperd_tests::daemon::{bin, peak_rss_of, Daemon};
use hyperd_tests::hyperdrive_daemon::{self, HyperdriveDaemon, Options};
use hyperdrive::{Drive, DriveOptions, WriteOptions};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};

const FILE_BYTES: usize = 256 << 20;
/// hyperctl's message size: the in-process side writes the same chunks.
const CHUNK: usize = 1 << 20;
const FILE_SEED: u64 = 0x6879_7065_7264;
/// Memory freed right before a timed 256 MiB write.
const WRITE_BALLAST: u64 = 2 * FILE_BYTES as u64 + (128 << 20);
const TREE_SEED: u64 = 0x7472_6565;
const TREE_FILES: u64 = 10_000;
const FILES_PER_DIR: u64 = 100;
const MIN_FILE: f64 = 1024.0;
const MAX_FILE: f64 = 1_048_576.0;
const LS_RUNS: usize = 5;
const LS_TARGET_SECS: f64 = 0.5;
/// hyperdrive-daemon's CLI writes its drive's key into the imported folder.
const JS_KEY_FILE: &str = ".hyperdrive-import-key";
/// How long one JS import may take before the bench gives up.
const JS_LIMIT: Duration = Duration::from_secs(30 * 60);
const MIB: f64 = (1 << 20) as f64;

// ---------------------------------------------------------------------------------------
// Command line

struct Args {
    json: bool,
    runs: usize,
    js_runs: usize,
    rust_only: bool,
    only: Option<String>,
    tree_files: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        json: false,
        runs: 3,
        js_runs: 1,
        rust_only: false,
        only: None,
        tree_files: match std::env::var("HYPERD_BENCH_TREE_FILES") {
            Ok(v) => v.parse().context("HYPERD_BENCH_TREE_FILES")?,
            Err(_) => TREE_FILES,
        },
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => args.json = true,
            "--rust-only" => args.rust_only = true,
            "--only" => args.only = Some(it.next().context("--only needs a part")?.clone()),
            _ => {
                if let Some(n) = a.strip_prefix("--runs=") {
                    args.runs = n.parse().context("--runs")?;
                } else if let Some(n) = a.strip_prefix("--js-runs=") {
                    args.js_runs = n.parse().context("--js-runs")?;
                } else if let Some(p) = a.strip_prefix("--only=") {
                    args.only = Some(p.to_string());
                }
                // Anything else (`cargo bench` passes `--bench`) is ignored.
            }
        }
    }
    ensure!(args.runs > 0 && args.js_runs > 0, "runs must be at least 1");
    ensure!(args.tree_files > 0, "the tree needs at least one file");
    if let Some(only) = &args.only {
        ensure!(
            only == "put" || only == "import",
            "--only takes `put` (put and cat) or `import` (import and ls), not {only:?}"
        );
    }
    Ok(args)
}

impl Args {
    fn wants(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    warn_if_binaries_stale()?;
    if args.wants("import") && !args.rust_only {
        hyperdrive_daemon::module()?;
    }
    let machine = Machine::get();
    eprintln!("{}", machine.line());
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("hyperd-bench-drive")
        .tempdir()?;
    let mut ballast = Ballast::new(work.path());
    let mut report = String::new();
    let mut out = json!({ "machine": Value::Null });

    if args.wants("put") {
        let rows = put_and_cat(&runtime, work.path(), &mut ballast, args.runs)?;
        report.push_str(&table(&rows, "in-process"));
        report.push('\n');
        out["put"] = Value::Array(rows.iter().map(Row::json).collect());
    }
    if args.wants("import") {
        let (text, value) = import_and_ls(work.path(), &mut ballast, &args)?;
        report.push_str(&text);
        out["import"] = value;
    }
    let elapsed = started.elapsed().as_secs_f64();
    report.push_str(&format!(
        "\n{}\nload at start {}, at end {}; the benchmark took {elapsed:.0} s\n",
        machine.line(),
        machine.load_start,
        hyperd_tests::bench::loadavg()
    ));
    out["machine"] = machine.json();
    out["seconds"] = json!(elapsed);
    if args.json {
        eprint!("{report}");
        println!("{out}");
    } else {
        print!("{report}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// put and cat

/// `len` bytes from a seeded RNG: incompressible, and no block repeats another.
fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Writes back what is dirty, then frees `bytes` of page cache right away (see
/// `tests/src/bench.rs` `Mem::Warm`).
fn warm_now(ballast: &mut Ballast, bytes: u64) -> Result<()> {
    sync()?;
    ballast.arm(Mem::Warm, bytes)?;
    ballast.fire(Mem::Warm);
    Ok(())
}

/// Writes back every dirty page (so no writeback runs during the next timed write, and a
/// ballast written next never reaches the disk).
fn sync() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn put_and_cat(
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    ballast: &mut Ballast,
    runs: usize,
) -> Result<Vec<Row>> {
    let data = Bytes::from(seeded_bytes(FILE_SEED, FILE_BYTES));
    let file = work.join("input.bin");
    std::fs::write(&file, &data)?;
    let file = file.to_str().context("temp path is not UTF-8")?;
    let daemon = Daemon::start()?;
    let (mut put, mut write) = (Figure::new("MB/s"), Figure::new("MB/s"));
    let (mut cat, mut cat_stream, mut cat_pipe, mut read, mut floor) = (
        Figure::new("MB/s"),
        Figure::new("MB/s"),
        Figure::new("MB/s"),
        Figure::new("MB/s"),
        Figure::new("MB/s"),
    );
    let bytes = FILE_BYTES as u64;
    // Run 0 is a warm-up, not counted; its cat goes through a pipe and checks every byte.
    for run in 0..=runs {
        let key = daemon.ctl_json(&["drive", "create"])?["key"]
            .as_str()
            .context("drive create printed no key")?
            .to_string();
        let url = format!("hyper://{key}/big.bin");
        warm_now(ballast, WRITE_BALLAST)?;
        let start = Instant::now();
        let written = daemon.ctl_json(&["drive", "put", file, &url])?;
        let put_rate = mb_per_s(bytes, start.elapsed().as_secs_f64());
        ensure!(
            written["size"] == bytes,
            "hyperctl drive put wrote {written}"
        );
        let (cat_rate, stream_rate, pipe_rate) = if run == 0 {
            let stream = cat_through_pipe(&daemon, &url, &["--stream"], Some(&data))?;
            (
                mb_per_s(bytes, cat_through_pipe(&daemon, &url, &[], Some(&data))?),
                mb_per_s(bytes, stream),
                None,
            )
        } else {
            let null = mb_per_s(bytes, cat_to_null(&daemon, &url, &[])?);
            let stream = mb_per_s(bytes, cat_to_null(&daemon, &url, &["--stream"])?);
            let pipe = mb_per_s(bytes, cat_through_pipe(&daemon, &url, &[], None)?);
            (null, stream, Some(pipe))
        };
        daemon.ctl_json(&["drive", "rm-drive", &url])?;

        let floor_rate = mb_per_s(bytes, socket_floor(Path::new(file))?);

        let dir = work.join(format!("drive-{run}"));
        let (write_secs, read_secs) =
            runtime.block_on(in_process(&dir, &data, || warm_now(ballast, WRITE_BALLAST)))?;
        std::fs::remove_dir_all(&dir)?;
        let (write_rate, read_rate) = (mb_per_s(bytes, write_secs), mb_per_s(bytes, read_secs));
        progress(&format!(
            "{} {run}: put {put_rate:.0} MB/s, in-process write {write_rate:.0} MB/s; \
             cat {cat_rate:.0} MB/s{}, cat --stream {stream_rate:.0} MB/s, \
             in-process read {read_rate:.0} MB/s; \
             pread + Unix socket {floor_rate:.0} MB/s",
            if run == 0 { "warm-up" } else { "run" },
            pipe_rate.map_or_else(
                || " (through a pipe, every byte checked)".into(),
                |p| format!(" (through a pipe {p:.0} MB/s)")
            ),
        ));
        if run > 0 {
            put.runs.push(put_rate);
            write.runs.push(write_rate);
            cat.runs.push(cat_rate);
            cat_stream.runs.push(stream_rate);
            cat_pipe.runs.push(pipe_rate.unwrap_or(f64::NAN));
            read.runs.push(read_rate);
            floor.runs.push(floor_rate);
        }
    }
    Ok(vec![
        Row::new(
            "put",
            "hyperctl drive put, 256 MiB file [warm]",
            put,
            ("in-process", write),
            Some((0.6, ">= 60%")),
        )
        .as_percent(),
        Row::new(
            "cat",
            "hyperctl drive cat > /dev/null",
            cat,
            ("in-process", read.clone()),
            Some((0.6, ">= 60%")),
        )
        .as_percent(),
        Row::new(
            "cat-stream",
            "hyperctl drive cat --stream > /dev/null",
            cat_stream,
            ("in-process", read.clone()),
            None,
        )
        .as_percent(),
        Row::new(
            "cat-pipe",
            "hyperctl drive cat | (drained pipe)",
            cat_pipe,
            ("in-process", read.clone()),
            None,
        )
        .as_percent(),
        Row::new(
            "socket-floor",
            "... bound: pread + Unix socket, no hyperd",
            floor,
            ("in-process", read),
            None,
        )
        .as_percent(),
    ])
}

/// What any reader in another process costs at least: one thread reads `file` (in the
/// page cache) in 1 MiB `pread`s, as hyperd reads a file's blocks, and writes them to a
/// Unix socket; another reads them into a 1 MiB buffer. Seconds.
fn socket_floor(file: &Path) -> Result<f64> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let (mut tx, mut rx) = std::os::unix::net::UnixStream::pair()?;
    let source = std::fs::File::open(file)?;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0;
        loop {
            let n = source.read_at(&mut buf, at)?;
            if n == 0 {
                return Ok(());
            }
            tx.write_all(&buf[..n])?;
            at += n as u64;
        }
    });
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0;
    loop {
        let n = rx.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let secs = start.elapsed().as_secs_f64();
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    ensure!(read == FILE_BYTES, "the socket carried {read} bytes");
    Ok(secs)
}

/// Writes `data` as `/big.bin` into the default drive of a new corestore in `dir`, in
/// [`CHUNK`] writes, then reads it back; the seconds of each. `before` runs right before
/// the write's clock starts.
async fn in_process(
    dir: &Path,
    data: &Bytes,
    before: impl FnOnce() -> Result<()>,
) -> Result<(f64, f64)> {
    let store = Corestore::open(dir, CorestoreOptions::default()).await?;
    let drive = Drive::default_drive(&store, DriveOptions::default()).await?;
    before()?;
    let start = Instant::now();
    let mut writer = drive
        .write_stream("/big.bin", WriteOptions::default())
        .await?;
    for at in (0..data.len()).step_by(CHUNK) {
        writer
            .write(data.slice(at..(at + CHUNK).min(data.len())))
            .await?;
    }
    let stat = writer.finish().await?;
    let write_secs = start.elapsed().as_secs_f64();
    ensure!(stat.size == data.len() as u64, "wrote {} bytes", stat.size);

    let start = Instant::now();
    let mut chunks = drive.read_range("/big.bin", 0, None).await?;
    let mut read = 0;
    while let Some(chunk) = chunks.try_next().await? {
        read += chunk.len();
    }
    let read_secs = start.elapsed().as_secs_f64();
    ensure!(read == data.len(), "read {read} of {} bytes", data.len());
    drop(drive);
    store.close().await?;
    Ok((write_secs, read_secs))
}

/// `hyperctl drive cat URL [extra…] > /dev/null`; seconds.
fn cat_to_null(daemon: &Daemon, url: &str, extra: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new(bin("hyperctl")?)
        .arg("--home")
        .arg(&daemon.home)
        .args(["drive", "cat", url])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        status.success(),
        "hyperctl drive cat {url} failed: {status}"
    );
    Ok(secs)
}

/// `hyperctl drive cat URL [extra…] | (this process)`, counting the bytes and, given
/// `expect`, checking them; seconds until hyperctl exited and every byte was read.
fn cat_through_pipe(
    daemon: &Daemon,
    url: &str,
    extra: &[&str],
    expect: Option<&[u8]>,
) -> Result<f64> {
    let start = Instant::now();
    let mut child = Command::new(bin("hyperctl")?)
        .arg("--home")
        .arg(&daemon.home)
        .args(["drive", "cat", url])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0usize;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(expect) = expect {
            ensure!(
                expect.get(read..read + n) == Some(&buf[..n]),
                "hyperctl drive cat {url}: bytes {read}..{} differ from the file put",
                read + n
            );
        }
        read += n;
    }
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        status.success(),
        "hyperctl drive cat {url} failed: {status}"
    );
    ensure!(
        read == FILE_BYTES,
        "hyperctl drive cat {url} gave {read} bytes"
    );
    Ok(secs)
}

// ---------------------------------------------------------------------------------------
// The tree

/// The imported folder.
struct Tree {
    root: PathBuf,
    files: u64,
    dirs: u64,
    bytes: u64,
}

impl Tree {
    /// Makes `files` files in `root`, 100 per directory, `dNN/eN/fNNNNN.bin`, each of a
    /// log-uniform size from 1 KiB to 1 MiB and random content, both from a seeded RNG.
    fn make(root: &Path, files: u64) -> Result<Tree> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(TREE_SEED);
        let mut dirs = BTreeSet::new();
        let mut buf = vec![0u8; MAX_FILE as usize];
        let mut bytes = 0u64;
        for i in 0..files {
            let group = i / FILES_PER_DIR;
            let top = format!("d{:02}", group / 10);
            let sub = format!("{top}/e{}", group % 10);
            let dir = root.join(&sub);
            if dirs.insert(sub) {
                dirs.insert(top);
                std::fs::create_dir_all(&dir)?;
            }
            let size = (MIN_FILE * (MAX_FILE / MIN_FILE).powf(rng.gen::<f64>())).round() as usize;
            rng.fill_bytes(&mut buf[..size]);
            std::fs::write(dir.join(format!("f{i:05}.bin")), &buf[..size])?;
            bytes += size as u64;
        }
        Ok(Tree {
            root: root.to_path_buf(),
            files,
            dirs: dirs.len() as u64,
            bytes,
        })
    }

    /// Files and directories, the root left out.
    fn entries(&self) -> u64 {
        self.files + self.dirs
    }

    fn path(&self) -> Result<&str> {
        self.root.to_str().context("temp path is not UTF-8")
    }

    /// The bytes freed while an import runs: room for its content twice over (the
    /// drip runs ahead of what the import allocates).
    fn ballast(&self) -> u64 {
        2 * self.bytes + (512 << 20)
    }
}

/// Writes back what is dirty, then frees page cache from right before the clock and
/// through an import, 640 MB/s (see [`Ballast::drip`]): the full tree's ballast lasts
/// about 5 s. The returned guard stops it.
fn warm_during(ballast: &mut Ballast, bytes: u64) -> Result<hyperd_tests::bench::Drip> {
    sync()?;
    ballast.arm(Mem::Warm, bytes)?;
    ballast.drip(Mem::Warm, 256 << 20, 64 << 20, Duration::from_millis(100))
}

// ---------------------------------------------------------------------------------------
// import and ls

/// One import's figures.
struct Imported {
    secs: f64,
    peak_rss: f64,
}

fn import_and_ls(work: &Path, ballast: &mut Ballast, args: &Args) -> Result<(String, Value)> {
    let start = Instant::now();
    let tree = Tree::make(&work.join("tree"), args.tree_files)?;
    progress(&format!(
        "made a tree of {} files in {} directories, {:.2} GB, in {:.1} s",
        tree.files,
        tree.dirs,
        tree.bytes as f64 / 1e9,
        start.elapsed().as_secs_f64()
    ));

    let (mut files, mut rate, mut rss) = (
        Figure::new("files/s"),
        Figure::new("MB/s"),
        Figure::new("MiB"),
    );
    let mut last = None;
    for run in 1..=args.runs {
        let (daemon, key, imported) = hyperd_import(&tree, ballast)?;
        progress(&format!(
            "hyperd run {run}: {:.2} s, {:.0} files/s, {:.0} MB/s, daemon peak RSS {:.1} MiB",
            imported.secs,
            tree.files as f64 / imported.secs,
            mb_per_s(tree.bytes, imported.secs),
            imported.peak_rss
        ));
        files.runs.push(tree.files as f64 / imported.secs);
        rate.runs.push(mb_per_s(tree.bytes, imported.secs));
        rss.runs.push(imported.peak_rss);
        last = Some((daemon, key));
    }
    let (daemon, key) = last.context("no run")?;
    let ls = ls_runs(&daemon, &key, &tree)?;
    drop(daemon);

    let (mut js_files, mut js_rate, mut js_rss) = (
        Figure::new("files/s"),
        Figure::new("MB/s"),
        Figure::new("MiB"),
    );
    if !args.rust_only {
        for run in 1..=args.js_runs {
            let imported = js_import(&tree, ballast)?;
            progress(&format!(
                "hyperdrive-daemon run {run}: {:.1} s, {:.0} files/s, {:.1} MB/s, daemon peak RSS {:.1} MiB",
                imported.secs,
                tree.files as f64 / imported.secs,
                mb_per_s(tree.bytes, imported.secs),
                imported.peak_rss
            ));
            js_files.runs.push(tree.files as f64 / imported.secs);
            js_rate.runs.push(mb_per_s(tree.bytes, imported.secs));
            js_rss.runs.push(imported.peak_rss);
        }
    }

    let what = format!("{} files, {:.2} GB", tree.files, tree.bytes as f64 / 1e9);
    let rows = vec![
        Row::new(
            "import-files",
            format!("drive import of {what}"),
            files,
            ("JS daemon", js_files),
            Some((20.0, ">= 20x")),
        ),
        Row::new(
            "import-bytes",
            "... bytes",
            rate,
            ("JS daemon", js_rate),
            None,
        ),
        Row::lower_is_better(
            "import-rss",
            "... daemon peak RSS (VmHWM)",
            rss,
            ("JS daemon", js_rss),
            None,
        ),
    ];
    let ls_median = median(&ls);
    let mut text = table(&rows, "JS daemon");
    text.push_str(&format!(
        "\nhyperctl drive ls -r -l of {} entries ({} files), median of {LS_RUNS}: {:.3} s   \
         target <= {LS_TARGET_SECS} s  {}\n",
        tree.entries(),
        tree.files,
        ls_median,
        if ls_median <= LS_TARGET_SECS {
            "PASS"
        } else {
            "MISS"
        }
    ));
    let value = json!({
        "tree": { "files": tree.files, "dirs": tree.dirs, "bytes": tree.bytes, "seed": TREE_SEED },
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "ls": { "entries": tree.entries(), "median": ls_median, "runs": ls, "target": LS_TARGET_SECS },
    });
    Ok((text, value))
}

/// `hyperctl drive import` of the tree into a new drive of a fresh `hyperd`: the
/// daemon (kept running), the drive's key and the figures.
fn hyperd_import(tree: &Tree, ballast: &mut Ballast) -> Result<(Daemon, String, Imported)> {
    let daemon = Daemon::start()?;
    let key = daemon.ctl_json(&["drive", "create"])?["key"]
        .as_str()
        .context("drive create printed no key")?
        .to_string();
    let url = format!("hyper://{key}/");
    let drip = warm_during(ballast, tree.ballast())?;
    let start = Instant::now();
    let summary = daemon.ctl_json(&["drive", "import", tree.path()?, &url])?;
    let secs = start.elapsed().as_secs_f64();
    drop(drip);
    ensure!(
        summary["added"] == tree.entries() && summary["bytesWritten"] == tree.bytes,
        "hyperctl drive import of {} entries, {} bytes printed {summary}",
        tree.entries(),
        tree.bytes
    );
    let peak_rss = peak_rss_of(daemon.pid().context("no pid")?)? as f64 / MIB;
    Ok((daemon, key, Imported { secs, peak_rss }))
}

/// `hyperctl drive ls -r -l` of the drive: one uncounted run, then [`LS_RUNS`] timed
/// runs; seconds each. Every run must list every entry of the tree.
fn ls_runs(daemon: &Daemon, key: &str, tree: &Tree) -> Result<Vec<f64>> {
    let url = format!("hyper://{key}/");
    let mut secs = Vec::new();
    for run in 0..=LS_RUNS {
        let start = Instant::now();
        let out = daemon.ctl(&["drive", "ls", "-r", "-l", &url])?;
        let took = start.elapsed().as_secs_f64();
        ensure!(
            out.status.success(),
            "hyperctl drive ls -r -l failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let listed = lines.count() as u64;
        ensure!(
            listed == tree.entries(),
            "hyperctl drive ls -r -l listed {listed} of {} entries",
            tree.entries()
        );
        if run > 0 {
            secs.push(took);
        }
    }
    progress(&format!(
        "ls -r -l of {} entries: {}",
        tree.entries(),
        secs.iter()
            .map(|s| format!("{s:.3} s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(secs)
}

// ---------------------------------------------------------------------------------------
// hyperdrive-daemon (JS)

/// `text` in single quotes for `sh`.
fn shell_quote(text: &str) -> Result<String> {
    ensure!(!text.contains('\''), "cannot quote {text:?}");
    Ok(format!("'{text}'"))
}

/// Sends `signal` to process `pid` (one we started).
fn kill(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Waits at most `limit` for `child` to exit, then kills it.
fn reap(child: &mut Child, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            child.wait()?;
            bail!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `hyperdrive ARGS…` (the CLI of `daemon`) under a pseudo-terminal made by `script`, as
/// its progress bar draws only on a terminal; the terminal's output on stdout.
fn js_cli(daemon: &HyperdriveDaemon, args: &[&str]) -> Result<Command> {
    let mut line = format!(
        "exec node {}",
        shell_quote(daemon.module.join("bin/run/run").to_str().context("path")?)?
    );
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a)?);
    }
    let mut command = Command::new("script");
    command
        .args(["-qfec", &line, "/dev/null"])
        .env("HOME", &daemon.home)
        .env("HYPERDRIVE_STORAGE", &daemon.root)
        .env_remove("HYPERDRIVE_ENDPOINT")
        .env_remove("HYPERDRIVE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Only script's own notes ("Session terminated…"): the CLI writes to the
        // terminal, read on stdout.
        .stderr(Stdio::null());
    Ok(command)
}

/// The size of the largest `data` file in `daemon`'s storage: the content feed's bytes
/// after an import.
fn largest_data_file(daemon: &HyperdriveDaemon) -> u64 {
    fn walk(dir: &Path, largest: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&entry.path(), largest);
            } else if entry.file_name() == "data" {
                *largest = (*largest).max(meta.len());
            }
        }
    }
    let mut largest = 0;
    walk(&daemon.root.join("storage/cores"), &mut largest);
    largest
}

/// The last `DONE/TOTAL Files` of a progress bar in `text`, and where it ends.
fn last_count(text: &str) -> Option<(u64, u64, usize)> {
    let mut found = None;
    for (at, _) in text.match_indices(" Files") {
        let head = &text[..at];
        let total_start = head
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        let Ok(total) = head[total_start..].parse::<u64>() else {
            continue;
        };
        let head = &head[..total_start];
        let Some(head) = head.strip_suffix('/') else {
            continue;
        };
        let done_start = head
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        if let Ok(done) = head[done_start..].parse::<u64>() {
            found = Some((done, total, at + " Files".len()));
        }
    }
    found
}

/// hyperdrive-daemon's `hyperdrive import DIR --no-seed` of the tree into a new drive of a
/// fresh daemon, timed from the CLI's start until its bar counts every entry.
fn js_import(tree: &Tree, ballast: &mut Ballast) -> Result<Imported> {
    let key_file = tree.root.join(JS_KEY_FILE);
    let _ = std::fs::remove_file(&key_file);
    let daemon = HyperdriveDaemon::start(&Options::default())?;
    let mut cli = js_cli(&daemon, &["import", tree.path()?, "--no-seed"])?;
    let drip = warm_during(ballast, tree.ballast())?;
    let start = Instant::now();
    let mut child = cli.spawn().context("spawning script (util-linux)")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let (done_tx, done_rx) = mpsc::channel();
    let expected = tree.entries();
    // Reads the terminal until the bar shows every entry, then keeps draining it.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut seen = (0, 0);
        let mut told = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some((done, total, end)) = last_count(&text) {
                seen = (done, total);
                text.drain(..end);
                if !told && done == expected && total == expected {
                    told = true;
                    let _ = done_tx.send(Instant::now());
                }
            }
            if text.len() > 4096 {
                text.drain(..text.len() - 256);
            }
        }
        seen
    });
    let finished = done_rx.recv_timeout(JS_LIMIT);
    drop(drip);
    let outcome = match finished {
        Ok(at) => Ok(at.duration_since(start).as_secs_f64()),
        Err(_) => Err(()),
    };
    // The bar counts a file when its copy starts: wait for the content feed to hold
    // every byte before looking at the peak and stopping the CLI.
    let mut complete = false;
    if outcome.is_ok() {
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_secs(60) {
            if largest_data_file(&daemon) >= tree.bytes {
                complete = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let peak_rss = peak_rss_of(daemon.pid())? as f64 / MIB;
    let _ = kill(child.id(), "TERM");
    reap(&mut child, Duration::from_secs(20))?;
    let seen = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let stored = largest_data_file(&daemon);
    daemon.stop()?;
    let _ = std::fs::remove_file(&key_file);
    let Ok(secs) = outcome else {
        bail!(
            "hyperdrive import showed {}/{} of {expected} entries after {JS_LIMIT:?}",
            seen.0,
            seen.1
        );
    };
    ensure!(
        complete,
        "hyperdrive import counted every entry, but its content feed holds {stored} of {} \
         bytes a minute later",
        tree.bytes
    );
    Ok(Imported { secs, peak_rss })
}
