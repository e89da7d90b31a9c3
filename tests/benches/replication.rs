//! The `replication` benchmark: Rust replication (`rust-seed`, `rust-clone`) against JS
//! hypercore@9 / hypercore-protocol@8 (`interop/seed.js`, `interop/clone.js`), each
//! seeder and clone in its own process, over TCP on 127.0.0.1, on the same machine in the
//! same run, serving the same feed (same key, same block contents).
//!
//! ```text
//! cargo bench -p hyperd-tests --bench replication                 # everything, a table
//! cargo bench -p hyperd-tests --bench replication -- B            # one workload (A, B, C or its name)
//! cargo bench -p hyperd-tests --bench replication -- --json       # JSON on stdout, table on stderr
//! cargo bench -p hyperd-tests --bench replication -- --rust-only  # Rust -> Rust only (profiling)
//! cargo bench -p hyperd-tests --bench replication -- --no-mixed   # skip Rust <-> JS pairings
//! cargo bench -p hyperd-tests --bench replication -- --warm-only  # A: skip the cold rows
//! cargo bench -p hyperd-tests --bench replication -- --cold-only  # A: skip the warm rows
//! cargo bench -p hyperd-tests --bench replication -- --runs=5     # or HYPERD_BENCH_RUNS=5
//! ```
//!
//! The feed: 256 MiB as 4,096 blocks of 64 KiB, the shared deterministic content (byte `j`
//! of block `i` is `(7i + j) mod 251`), signed with a fixed key. Each seeder builds its own
//! copy once, untimed (`rust-seed` and `seed.js` with `--blocks`), and the two copies must
//! print the same key and BLAKE2b; every run then starts a fresh seeder process on its copy
//! (serving from a warm page cache) and a fresh clone process into a new directory.
//!
//! Workloads, for each pairing (seeder -> clone: Rust -> Rust, JS -> JS, Rust -> JS,
//! JS -> Rust), `runs` times each, the pairings alternating within each round; medians are
//! reported:
//!
//! * A `full`: a full clone downloads the whole feed (`clone.js` / `rust-clone` defaults:
//!   not live, `--expect-blake2b` checks the result), after one untimed warm-up run per
//!   pairing (the first runs after the setup come out slower and erratic, on both sides).
//!   MB/s = the clone's own `rangeBytes / (ms.done - ms.connected)`, as `clone.js`
//!   computes `mbPerSec` (MB = 10^6 bytes); wall time = clone process spawn to exit,
//!   including its start-up and its verification (audit + hashing the feed). Target:
//!   Rust -> Rust >= 3x JS -> JS.
//! * C `daemons`: one `hyperd` serves the same content (a core created and appended to
//!   through the API, untimed), and for each run a fresh `hyperd` in a new home connects to
//!   it (`peer connect`) and follows the core with `--all`, as a user would; timed from the
//!   `Follow` call to the end of a `Download` of the whole range (which only watches: the
//!   follow downloads). Alternating with JS -> JS full clones (A's method) in the same run,
//!   warm memory. The release binaries (`cargo build --release --bins`) are used. Target:
//!   hyperd -> hyperd >= 4x JS -> JS.
//! * B `sparse`: a sparse clone connected live to the seeder `get`s 1,000 distinct random
//!   blocks one at a time, each awaited before the next (`--gets 1000 --seed-rng S`; the
//!   same blocks for every pairing of a round), and reports each latency. Per run: the
//!   median and the p90 of its 1,000 latencies; reported: the median over runs. Target:
//!   Rust -> Rust median <= 1/3 of JS -> JS's.
//!
//! # CPU time
//!
//! Both clones take `--cpu` and report the process's CPU time (user + system, all threads:
//! `/proc/self/stat` in Rust, `process.cpuUsage()` in node) at each step; "clone CPU" is
//! the part from `connected` to `done` (the transfer; the total, with start-up and
//! verification, is in the JSON). "Seeder CPU" is the difference of the seeder's utime +
//! stime (`/proc/<pid>/stat`, 10 ms ticks) read by this harness right before it spawns the
//! clone and right after the clone exits: the seeder does nothing else meanwhile (its
//! start-up, which hashes the whole feed, is before). Both are per GiB of block data
//! (2^30 bytes; the feed is 0.25 GiB).
//!
//! # Memory state
//!
//! See [`Mem`]: on this VM, memory freed more than ~2 s ago faults slowly in the host on
//! first touch, and a clone writes 256 MiB of new page cache. A's runs are timed in both
//! states, the targets judged on the warm one:
//!
//! * warm: a 1 GiB ballast file is written before the seeder starts; right before the
//!   clone is spawned 384 MiB of it are freed, then 16 MiB every 100 ms until the clone
//!   exits ([`Ballast::drip`]), so freshly freed memory is at hand for the whole transfer,
//!   however long it takes (a single free would leave a slower clone with cold memory
//!   after 2 s);
//! * cold: the clone is spawned after 4 s with nothing freed.
//!
//! B writes only 64 MiB and runs warm (the ballast freed at once right before the clone
//! starts).
//!
//! Dirty page cache is kept out of the way too: the seeders' feeds are `sync`ed after the
//! setup (else the kernel writes them out 30 s later, during some run), and the ballast
//! stays small enough not to start background writeback; each progress line shows what
//! was dirty when the clone started.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hyperd_tests::bench::{
    loadavg, median, percentile, progress, table, Ballast, Figure, Machine, Mem, Row,
};
use hyperd_tests::daemon::Daemon;
use hyperd_tests::{
    blake2b_concat, distinct_random_indexes, make_block, node, process_cpu_seconds,
};
use serde_json::{json, Value};

const BLOCKS: u64 = 4096;
const SIZE: usize = 64 << 10;
const FEED_BYTES: u64 = BLOCKS * SIZE as u64;
const GIB: f64 = (1u64 << 30) as f64;
/// Seed of the feed's signing key pair (`--seed`): "hyperd replication benchmark key".
const KEY_SEED: &[u8; 32] = b"hyperd replication benchmark key";
const GETS: u64 = 1000;
/// Round `r` of B draws its blocks with `--seed-rng GET_SEED + r`.
const GET_SEED: u32 = 0x9e37_79b9;
/// Clone processes fail after this long.
const CLONE_TIMEOUT_MS: u64 = 120_000;

/// A's warm ballast: 384 MiB freed at once, then 16 MiB per 100 ms (168 MB/s, more than a
/// JS clone writes), which lasts 4 s. It stays under a GiB so that, with what else is
/// dirty, it never reaches the kernel's background writeback threshold (10% of memory).
const A_BALLAST: u64 = 1 << 30;
const A_FIRST: u64 = 384 << 20;
const A_STEP: u64 = 16 << 20;
const A_EVERY: Duration = Duration::from_millis(100);
/// B's warm ballast, freed at once.
const B_BALLAST: u64 = 512 << 20;

// ---------------------------------------------------------------------------------------
// Command line

struct Args {
    filter: Vec<String>,
    json: bool,
    runs: usize,
    /// Only Rust -> Rust (to profile the Rust side alone).
    rust_only: bool,
    /// Skip Rust -> JS and JS -> Rust.
    no_mixed: bool,
    warm_only: bool,
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
        no_mixed: false,
        warm_only: false,
        cold_only: false,
    };
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--json" => args.json = true,
            "--rust-only" => args.rust_only = true,
            "--no-mixed" => args.no_mixed = true,
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

const WORKLOADS: [(&str, &str); 3] = [("a", "full"), ("b", "sparse"), ("c", "daemons")];

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

    fn pairs(&self) -> Vec<Pair> {
        if self.rust_only {
            vec![RR]
        } else if self.no_mixed {
            vec![RR, JJ]
        } else {
            vec![RR, JJ, RJ, JR]
        }
    }
}

// ---------------------------------------------------------------------------------------
// Peers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// `rust-seed` / `seed.js` or `rust-clone` / `clone.js`.
    fn command(self, tool: &str) -> Result<Command> {
        Ok(match (self, tool) {
            (Side::Rust, "seed") => Command::new(env!("CARGO_BIN_EXE_rust-seed")),
            (Side::Rust, _) => Command::new(env!("CARGO_BIN_EXE_rust-clone")),
            (Side::Js, "seed") => node("seed.js")?,
            (Side::Js, _) => node("clone.js")?,
        })
    }
}

/// Seeder -> clone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    seed: Side,
    clone: Side,
}

const RR: Pair = Pair {
    seed: Side::Rust,
    clone: Side::Rust,
};
const JJ: Pair = Pair {
    seed: Side::Js,
    clone: Side::Js,
};
const RJ: Pair = Pair {
    seed: Side::Rust,
    clone: Side::Js,
};
const JR: Pair = Pair {
    seed: Side::Js,
    clone: Side::Rust,
};

impl Pair {
    fn name(self) -> String {
        format!("{} -> {}", self.seed.name(), self.clone.name())
    }

    fn tag(self) -> String {
        format!("{}-{}", self.seed.name(), self.clone.name()).to_ascii_lowercase()
    }
}

/// A running `rust-seed` or `seed.js`; it stops when its stdin closes.
struct Seeder {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Value,
}

impl Seeder {
    fn start(side: Side, dir: &Path, extra: &[&str]) -> Result<Seeder> {
        let mut child = side
            .command("seed")?
            .arg("--dir")
            .arg(dir)
            .args(["--seed", &hypercore::crypto::to_hex(KEY_SEED), "--quiet"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning the {} seeder", side.name()))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("seeder stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let ready: Value = match serde_json::from_str(&line) {
            Ok(v @ Value::Object(_)) if v["event"] == "ready" => v,
            _ => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!(
                    "the {} seeder did not start ({status}): {line}",
                    side.name()
                );
            }
        };
        // Keep reading stdout so the seeder never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Ok(Seeder {
            child,
            stdin,
            ready,
        })
    }

    fn key(&self) -> &str {
        self.ready["key"].as_str().unwrap_or("")
    }

    fn port(&self) -> u64 {
        self.ready["port"].as_u64().unwrap_or(0)
    }

    /// CPU seconds the seeder has used so far.
    fn cpu(&self) -> Result<f64> {
        process_cpu_seconds(Some(self.child.id()))
    }

    /// Closes its stdin and waits for it to exit (kills it after 10 s).
    fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.child.wait()?;
                bail!("the seeder did not stop when its stdin closed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished clone: its JSON line and its wall time, spawn to exit.
struct CloneRun {
    out: Value,
    wall: f64,
}

fn run_clone(side: Side, seeder: &Seeder, dir: &Path, extra: &[&str]) -> Result<CloneRun> {
    let t0 = Instant::now();
    let mut child = side
        .command("clone")?
        .args(["--key", seeder.key()])
        .args(["--connect", &format!("127.0.0.1:{}", seeder.port())])
        .arg("--dir")
        .arg(dir)
        .args(["--timeout", &CLONE_TIMEOUT_MS.to_string(), "--cpu"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawning the {} clone", side.name()))?;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .context("clone stdout")?
        .read_to_string(&mut stdout)?;
    let status = child.wait()?;
    let wall = t0.elapsed().as_secs_f64();
    let last = stdout.lines().last().unwrap_or("");
    let out: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    if !status.success() || out["ok"] != true {
        bail!("the {} clone failed ({status}): {stdout}", side.name());
    }
    Ok(CloneRun { out, wall })
}

/// Dirty and under-writeback page cache, MiB (shown with each run: writeback during a run
/// costs CPU and skews it).
fn dirty_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .filter(|l| l.starts_with("Dirty:") || l.starts_with("Writeback:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        >> 10
}

fn ms_of(out: &Value, group: &str, step: &str) -> Result<f64> {
    out[group][step]
        .as_f64()
        .filter(|v| *v >= 0.0)
        .with_context(|| format!("no {group}.{step} in {out}"))
}

// ---------------------------------------------------------------------------------------
// Measurements

/// One run of A.
struct ARun {
    mb_per_s: f64,
    wall: f64,
    /// s/GiB
    seeder_cpu: f64,
    /// s/GiB, connected to done
    clone_cpu: f64,
    /// s/GiB, the whole process
    clone_process_cpu: f64,
    /// For the progress line.
    text: String,
}

/// One pairing's figures over the runs of one workload in one state.
struct PairFigures {
    pair: Pair,
    /// A: MB/s; B: median latency, ms.
    main: Figure,
    /// A: wall s; B: p90 latency, ms.
    second: Figure,
    /// A: seeder CPU s/GiB; B: seeder CPU us per get.
    seeder_cpu: Figure,
    /// A: clone CPU s/GiB, connected to done; B: clone CPU us per get.
    clone_cpu: Figure,
    /// A: clone CPU s/GiB, whole process; B: mean latency, ms.
    extra: Figure,
}

impl PairFigures {
    fn new(pair: Pair, units: [&'static str; 5]) -> Self {
        PairFigures {
            pair,
            main: Figure::new(units[0]),
            second: Figure::new(units[1]),
            seeder_cpu: Figure::new(units[2]),
            clone_cpu: Figure::new(units[3]),
            extra: Figure::new(units[4]),
        }
    }

    fn json(&self, names: [&str; 5]) -> Value {
        let figures = [
            &self.main,
            &self.second,
            &self.seeder_cpu,
            &self.clone_cpu,
            &self.extra,
        ];
        let mut m = serde_json::Map::new();
        m.insert("pair".into(), json!(self.pair.name()));
        for (name, f) in names.iter().zip(figures) {
            m.insert((*name).into(), f.json());
        }
        Value::Object(m)
    }
}

const A_NAMES: [&str; 5] = [
    "mb_per_s",
    "wall_s",
    "seeder_cpu_s_per_gib",
    "clone_cpu_s_per_gib",
    "clone_process_cpu_s_per_gib",
];
const B_NAMES: [&str; 5] = [
    "median_ms",
    "p90_ms",
    "seeder_cpu_us_per_get",
    "clone_cpu_us_per_get",
    "mean_ms",
];

struct Bench {
    args: Args,
    root: tempfile::TempDir,
    ballast: Ballast,
    /// The seeders' feed copies.
    feeds: Option<(PathBuf, PathBuf)>,
    rows: Vec<Row>,
    /// Per-pairing tables: (title, header, lines).
    details: Vec<(String, String, Vec<String>)>,
    notes: Vec<String>,
    extra: serde_json::Map<String, Value>,
}

impl Bench {
    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn feed_dir(&self, side: Side) -> Result<PathBuf> {
        let (r, j) = self.feeds.as_ref().context("feeds not built")?;
        Ok(match side {
            Side::Rust => r.clone(),
            Side::Js => j.clone(),
        })
    }

    /// Builds the Rust and the JS seeder's copy of the feed (untimed) and checks that they
    /// are the same feed.
    fn build_feeds(&mut self) -> Result<()> {
        eprintln!(
            "(setup: building the {} MiB feed with each seeder, untimed)",
            FEED_BYTES >> 20
        );
        let mut ready = Vec::new();
        for side in [Side::Rust, Side::Js] {
            let dir = self.dir(&format!("feed-{}", side.name().to_ascii_lowercase()));
            let t0 = Instant::now();
            let s = Seeder::start(
                side,
                &dir,
                &["--blocks", &BLOCKS.to_string(), "--size", &SIZE.to_string()],
            )?;
            progress(&format!(
                "{} seeder: built and hashed in {:.1} s",
                side.name(),
                t0.elapsed().as_secs_f64()
            ));
            let r = s.ready.clone();
            s.stop()?;
            ensure!(
                r["length"] == BLOCKS && r["byteLength"] == FEED_BYTES,
                "{} seeder built {r}",
                side.name()
            );
            ready.push((dir, r));
        }
        let (rust, js) = (&ready[0].1, &ready[1].1);
        ensure!(
            rust["key"] == js["key"] && rust["blake2b"] == js["blake2b"],
            "the Rust and JS seeders built different feeds: {rust} vs {js}"
        );
        let blake2b = rust["blake2b"].as_str().unwrap_or("");
        self.notes.push(format!(
            "feed: {BLOCKS} x {} KiB blocks, key {}.., content BLAKE2b {}.. (the same from both seeders)",
            SIZE >> 10,
            &rust["key"].as_str().unwrap_or("")[..16],
            &blake2b[..16.min(blake2b.len())],
        ));
        self.extra.insert("feed".into(), rust.clone());
        self.feeds = Some((ready[0].0.clone(), ready[1].0.clone()));
        // Write the new feeds out now rather than have the kernel do it 30 s later, in
        // the middle of a timed run.
        let status = Command::new("sync").status().context("running sync")?;
        ensure!(status.success(), "sync failed: {status}");
        Ok(())
    }

    fn run_a(&mut self) -> Result<()> {
        eprintln!(
            "A: full clone of {} MiB ({BLOCKS} x {} KiB)",
            FEED_BYTES >> 20,
            SIZE >> 10
        );
        let expect = self.extra["feed"]["blake2b"]
            .as_str()
            .context("feed hash")?
            .to_string();
        let pairs = self.args.pairs();
        // The first runs after the setup come out slower and more erratic, for both sides.
        for &pair in &pairs {
            let r = self.a_once(pair, Mem::Warm, "warm-up", &expect)?;
            progress(&format!("A warm-up {}: {}", pair.name(), r.text));
        }
        for &mem in self.args.states() {
            let units = ["MB/s", "s", "s/GiB", "s/GiB", "s/GiB"];
            let mut figs: Vec<PairFigures> =
                pairs.iter().map(|&p| PairFigures::new(p, units)).collect();
            for run in 0..self.args.runs {
                for f in &mut figs {
                    let r = self.a_once(f.pair, mem, &run.to_string(), &expect)?;
                    f.main.runs.push(r.mb_per_s);
                    f.second.runs.push(r.wall);
                    f.seeder_cpu.runs.push(r.seeder_cpu);
                    f.clone_cpu.runs.push(r.clone_cpu);
                    f.extra.runs.push(r.clone_process_cpu);
                    progress(&format!(
                        "A [{}] run {run} {}: {}",
                        mem.name(),
                        f.pair.name(),
                        r.text
                    ));
                }
            }
            self.a_rows(mem, &figs);
        }
        Ok(())
    }

    /// One full clone with `pair` in memory state `mem`.
    fn a_once(&mut self, pair: Pair, mem: Mem, run: &str, expect: &str) -> Result<ARun> {
        let dir = self.dir(&format!("a-{}-{}-{run}", mem.name(), pair.tag()));
        self.ballast.arm(mem, A_BALLAST)?;
        let seeder = Seeder::start(pair.seed, &self.feed_dir(pair.seed)?, &[])?;
        let drip = self.ballast.drip(mem, A_FIRST, A_STEP, A_EVERY)?;
        let dirty = dirty_mib();
        let cpu0 = seeder.cpu()?;
        let c = run_clone(pair.clone, &seeder, &dir, &["--expect-blake2b", expect])?;
        let cpu1 = seeder.cpu()?;
        drop(drip);
        seeder.stop()?;
        std::fs::remove_dir_all(&dir)?;

        let bytes = c.out["rangeBytes"].as_f64().context("rangeBytes")?;
        ensure!(bytes == FEED_BYTES as f64, "cloned {bytes} bytes");
        let secs = (ms_of(&c.out, "ms", "done")? - ms_of(&c.out, "ms", "connected")?) / 1e3;
        let cpu_transfer =
            (ms_of(&c.out, "cpuMs", "done")? - ms_of(&c.out, "cpuMs", "connected")?) / 1e3;
        let gib = bytes / GIB;
        let r = ARun {
            mb_per_s: bytes / 1e6 / secs,
            wall: c.wall,
            seeder_cpu: (cpu1 - cpu0) / gib,
            clone_cpu: cpu_transfer / gib,
            clone_process_cpu: ms_of(&c.out, "cpuMs", "total")? / 1e3 / gib,
            text: String::new(),
        };
        Ok(ARun {
            text: format!(
                "{:.0} MB/s, wall {:.2} s, CPU s/GiB seeder {:.2} clone {:.2}; dirty {dirty} MiB",
                r.mb_per_s, r.wall, r.seeder_cpu, r.clone_cpu
            ),
            ..r
        })
    }

    fn a_rows(&mut self, mem: Mem, figs: &[PairFigures]) {
        let m = mem.name();
        let get = |p: Pair| figs.iter().find(|f| f.pair == p);
        let none = |unit| ("JS", Figure::new(unit));
        let js = |f: Option<&PairFigures>, pick: fn(&PairFigures) -> &Figure, unit| {
            f.map_or_else(|| none(unit), |f| ("JS", pick(f).clone()))
        };
        let (rr, jj) = (get(RR), get(JJ));
        if let Some(rr) = rr {
            self.rows.push(Row::new(
                format!("A-{m}"),
                format!("A full clone 256 MiB, MB/s, Rust -> Rust vs JS -> JS [{m}]"),
                rr.main.clone(),
                js(jj, |f| &f.main, "MB/s"),
                mem.target(3.0, ">= 3x JS"),
            ));
        }
        for (p, what) in [(RJ, "Rust seed -> JS clone"), (JR, "JS seed -> Rust clone")] {
            if let Some(f) = get(p) {
                self.rows.push(Row::new(
                    format!("A-{m}-{}", p.tag()),
                    format!("  {what}, vs JS -> JS [{m}]"),
                    f.main.clone(),
                    js(jj, |f| &f.main, "MB/s"),
                    None,
                ));
            }
        }
        if let Some(rr) = rr {
            self.rows.push(Row::lower_is_better(
                format!("A-{m}-wall"),
                format!("  clone wall time, spawn to exit (with verify) [{m}]"),
                rr.second.clone(),
                js(jj, |f| &f.second, "s"),
                None,
            ));
            self.rows.push(Row::lower_is_better(
                format!("A-{m}-seeder-cpu"),
                format!("  seeder CPU per GiB sent [{m}]"),
                rr.seeder_cpu.clone(),
                js(jj, |f| &f.seeder_cpu, "s/GiB"),
                None,
            ));
            self.rows.push(Row::lower_is_better(
                format!("A-{m}-clone-cpu"),
                format!("  clone CPU per GiB received, connect to done [{m}]"),
                rr.clone_cpu.clone(),
                js(jj, |f| &f.clone_cpu, "s/GiB"),
                None,
            ));
        }
        let lines = figs
            .iter()
            .map(|f| {
                format!(
                    "{:<14}  {:>9}  {:>8}  {:>14}  {:>14}  {:>14}",
                    f.pair.name(),
                    f.main.show(),
                    f.second.show(),
                    f.seeder_cpu.show(),
                    f.clone_cpu.show(),
                    f.extra.show()
                )
            })
            .collect();
        self.details.push((
            format!("A full clone [{m}], per pairing (medians)"),
            format!(
                "{:<14}  {:>9}  {:>8}  {:>14}  {:>14}  {:>14}",
                "seed -> clone", "MB/s", "wall", "seeder CPU", "clone CPU", "clone process"
            ),
            lines,
        ));
        self.extra.insert(
            format!("A_{m}"),
            Value::Array(figs.iter().map(|f| f.json(A_NAMES)).collect()),
        );
    }

    fn run_b(&mut self) -> Result<()> {
        eprintln!("B: sparse live clone, {GETS} random single-block gets, one at a time [warm]");
        let pairs = self.args.pairs();
        let units = ["ms", "ms", "us", "us", "ms"];
        let mut figs: Vec<PairFigures> =
            pairs.iter().map(|&p| PairFigures::new(p, units)).collect();
        for run in 0..self.args.runs {
            let seed = GET_SEED.wrapping_add(run as u32);
            let indexes = distinct_random_indexes(seed, GETS, 0, BLOCKS)?;
            let blocks: Vec<Vec<u8>> = indexes.iter().map(|&i| make_block(i, SIZE)).collect();
            let expect = blake2b_concat(blocks.iter().map(Vec::as_slice));
            for f in &mut figs {
                let pair = f.pair;
                let dir = self.dir(&format!("b-{}-{run}", pair.tag()));
                self.ballast.arm(Mem::Warm, B_BALLAST)?;
                let seeder = Seeder::start(pair.seed, &self.feed_dir(pair.seed)?, &[])?;
                self.ballast.fire(Mem::Warm);
                let cpu0 = seeder.cpu()?;
                let c = run_clone(
                    pair.clone,
                    &seeder,
                    &dir,
                    &[
                        "--mode",
                        "sparse",
                        "--live",
                        "--gets",
                        &GETS.to_string(),
                        "--seed-rng",
                        &seed.to_string(),
                    ],
                )?;
                let cpu1 = seeder.cpu()?;
                seeder.stop()?;
                std::fs::remove_dir_all(&dir)?;

                ensure!(
                    c.out["blake2b"] == expect.as_str(),
                    "{}: the blocks got hash to {}, expected {expect}",
                    pair.name(),
                    c.out["blake2b"]
                );
                let lat: Vec<f64> = c.out["gets"]["latenciesMs"]
                    .as_array()
                    .context("gets.latenciesMs")?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect();
                ensure!(lat.len() as u64 == GETS, "{} latencies", lat.len());
                let (med, p90) = (median(&lat), percentile(&lat, 90.0));
                let mean = lat.iter().sum::<f64>() / lat.len() as f64;
                let clone_cpu = ms_of(&c.out, "cpuMs", "done")? - ms_of(&c.out, "cpuMs", "length")?;
                f.main.runs.push(med);
                f.second.runs.push(p90);
                f.seeder_cpu.runs.push((cpu1 - cpu0) * 1e6 / GETS as f64);
                f.clone_cpu.runs.push(clone_cpu * 1e3 / GETS as f64);
                f.extra.runs.push(mean);
                progress(&format!(
                    "B run {run} {}: median {med:.3} ms, p90 {p90:.3} ms, mean {mean:.3} ms",
                    pair.name()
                ));
            }
        }
        let get = |p: Pair| figs.iter().find(|f| f.pair == p);
        let js = |f: Option<&PairFigures>, pick: fn(&PairFigures) -> &Figure| {
            f.map_or_else(|| ("JS", Figure::new("ms")), |f| ("JS", pick(f).clone()))
        };
        let (rr, jj) = (get(RR), get(JJ));
        if let Some(rr) = rr {
            self.rows.push(Row::lower_is_better(
                "B",
                format!("B sparse get x{GETS}, median latency, Rust -> Rust vs JS -> JS"),
                rr.main.clone(),
                js(jj, |f| &f.main),
                Some((3.0, "<= 1/3 JS")),
            ));
            self.rows.push(Row::lower_is_better(
                "B-p90",
                "  p90 latency",
                rr.second.clone(),
                js(jj, |f| &f.second),
                None,
            ));
        }
        for (p, what) in [(RJ, "Rust seed -> JS clone"), (JR, "JS seed -> Rust clone")] {
            if let Some(f) = get(p) {
                self.rows.push(Row::lower_is_better(
                    format!("B-{}", p.tag()),
                    format!("  {what}, median, vs JS -> JS"),
                    f.main.clone(),
                    js(jj, |f| &f.main),
                    None,
                ));
            }
        }
        let lines = figs
            .iter()
            .map(|f| {
                format!(
                    "{:<14}  {:>9}  {:>9}  {:>9}  {:>14}  {:>14}",
                    f.pair.name(),
                    f.main.show(),
                    f.second.show(),
                    f.extra.show(),
                    f.seeder_cpu.show(),
                    f.clone_cpu.show(),
                )
            })
            .collect();
        self.details.push((
            "B sparse gets, per pairing (medians over runs of each run's figure)".into(),
            format!(
                "{:<14}  {:>9}  {:>9}  {:>9}  {:>14}  {:>14}",
                "seed -> clone", "median", "p90", "mean", "seeder CPU/get", "clone CPU/get"
            ),
            lines,
        ));
        self.extra.insert(
            "B".into(),
            Value::Array(figs.iter().map(|f| f.json(B_NAMES)).collect()),
        );
        Ok(())
    }
}

impl Bench {
    /// C: hyperd -> hyperd with `follow --all`, against JS -> JS full clones.
    fn run_c(&mut self) -> Result<()> {
        eprintln!(
            "C: hyperd -> hyperd, follow --all of {} MiB, against JS -> JS [warm]",
            FEED_BYTES >> 20
        );
        let expect = self.extra["feed"]["blake2b"]
            .as_str()
            .context("feed hash")?
            .to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let seeder = Daemon::start_in(&self.dir("c-seeder"), "127.0.0.1:0")?;
        let key = runtime.block_on(fill_daemon(&seeder))?;
        let mut daemons = PairFigures::new(RR, ["MB/s", "s", "s/GiB", "s/GiB", "s/GiB"]);
        let mut js = PairFigures::new(JJ, ["MB/s", "s", "s/GiB", "s/GiB", "s/GiB"]);
        for run in 0..=self.args.runs {
            // Run 0 warms both up, uncounted.
            let label = if run == 0 {
                "warm-up".to_string()
            } else {
                run.to_string()
            };
            let d = self.c_once(&runtime, &seeder, &key, &label)?;
            progress(&format!(
                "C run {label} hyperd -> hyperd: {:.0} MB/s, CPU s/GiB seeder {:.2} clone {:.2}",
                d.mb_per_s, d.seeder_cpu, d.clone_cpu
            ));
            let j = self.a_once(JJ, Mem::Warm, &format!("c-{label}"), &expect)?;
            progress(&format!("C run {label} JS -> JS: {}", j.text));
            if run > 0 {
                daemons.main.runs.push(d.mb_per_s);
                daemons.seeder_cpu.runs.push(d.seeder_cpu);
                daemons.clone_cpu.runs.push(d.clone_cpu);
                js.main.runs.push(j.mb_per_s);
                js.seeder_cpu.runs.push(j.seeder_cpu);
                js.clone_cpu.runs.push(j.clone_cpu);
            }
        }
        self.rows.push(Row::new(
            "C",
            "C hyperd -> hyperd, follow --all 256 MiB, MB/s vs JS -> JS [warm]",
            daemons.main.clone(),
            ("JS", js.main.clone()),
            Some((4.0, ">= 4x JS")),
        ));
        self.rows.push(Row::lower_is_better(
            "C-seeder-cpu",
            "  seeding hyperd CPU per GiB sent",
            daemons.seeder_cpu.clone(),
            ("JS", js.seeder_cpu.clone()),
            None,
        ));
        self.rows.push(Row::lower_is_better(
            "C-clone-cpu",
            "  following hyperd CPU per GiB received",
            daemons.clone_cpu.clone(),
            ("JS", js.clone_cpu.clone()),
            None,
        ));
        self.extra
            .insert("C".into(), json!([daemons.json(A_NAMES), js.json(A_NAMES)]));
        Ok(())
    }

    /// One run of C: a fresh following daemon, timed from Follow to the whole range stored.
    fn c_once(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        seeder: &Daemon,
        key: &str,
        run: &str,
    ) -> Result<ARun> {
        let home = self.dir(&format!("c-clone-{run}"));
        self.ballast.arm(Mem::Warm, A_BALLAST)?;
        let clone = Daemon::start_in(&home, "127.0.0.1:0")?;
        let seeder_pid = seeder.pid().context("seeder pid")?;
        let clone_pid = clone.pid().context("clone pid")?;
        let (secs, seeder_cpu, clone_cpu) = runtime.block_on(async {
            use hyperd_proto::v1::{cores_client::CoresClient, peers_client::PeersClient};
            PeersClient::new(clone.channel().await?)
                .dial(hyperd_proto::v1::DialRequest {
                    address: seeder.listen.clone(),
                    once: true,
                    timeout_ms: 10_000,
                })
                .await?;
            let mut cores = CoresClient::new(clone.channel().await?);
            let drip = self.ballast.drip(Mem::Warm, A_FIRST, A_STEP, A_EVERY)?;
            let (s0, c0) = (
                process_cpu_seconds(Some(seeder_pid))?,
                process_cpu_seconds(Some(clone_pid))?,
            );
            let start = Instant::now();
            cores
                .follow(hyperd_proto::v1::FollowRequest {
                    key: key.to_string(),
                    download_all: true,
                    seeding: None,
                })
                .await?;
            let mut progress = cores
                .download(hyperd_proto::v1::DownloadRequest {
                    key: key.to_string(),
                    start: 0,
                    end: Some(BLOCKS),
                    linear: false,
                })
                .await?
                .into_inner();
            let mut done = false;
            while let Some(p) = progress.message().await? {
                if p.done {
                    done = true;
                    break;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            ensure!(done, "the download ended before it was complete");
            let (s1, c1) = (
                process_cpu_seconds(Some(seeder_pid))?,
                process_cpu_seconds(Some(clone_pid))?,
            );
            drop(drip);
            Ok::<_, anyhow::Error>((secs, s1 - s0, c1 - c0))
        })?;
        drop(clone);
        std::fs::remove_dir_all(&home)?;
        let gib = FEED_BYTES as f64 / GIB;
        Ok(ARun {
            mb_per_s: FEED_BYTES as f64 / 1e6 / secs,
            wall: secs,
            seeder_cpu: seeder_cpu / gib,
            clone_cpu: clone_cpu / gib,
            clone_process_cpu: clone_cpu / gib,
            text: String::new(),
        })
    }
}

/// Creates a core on `daemon` holding the benchmark's blocks (the same content as the
/// feed of A and B, under another key); returns its key.
async fn fill_daemon(daemon: &Daemon) -> Result<String> {
    use hyperd_proto::v1::{cores_client::CoresClient, AppendStreamRequest, CreateRequest};
    let mut cores = CoresClient::new(daemon.channel().await?);
    let key = cores
        .create(CreateRequest::default())
        .await?
        .into_inner()
        .key;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let messages =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let appending = tokio::spawn({
        let mut cores = cores.clone();
        async move {
            let mut acks = cores.append_stream(messages).await?.into_inner();
            let mut last = None;
            while let Some(ack) = acks.message().await? {
                last = Some(ack);
            }
            Ok::<_, anyhow::Error>(last)
        }
    });
    for batch in 0..BLOCKS / 16 {
        let blocks = (batch * 16..(batch + 1) * 16)
            .map(|i| bytes::Bytes::from(make_block(i, SIZE)))
            .collect();
        let key = if batch == 0 {
            key.clone()
        } else {
            String::new()
        };
        tx.send(AppendStreamRequest { key, blocks }).await?;
    }
    drop(tx);
    let last = appending.await??.context("no acknowledgement")?;
    ensure!(
        last.length == BLOCKS,
        "the seeding daemon has {} blocks",
        last.length
    );
    Ok(key)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let m = Machine::get();
    let root = tempfile::Builder::new()
        .prefix("hyperd-bench-replication-")
        .tempdir()?;
    eprintln!(
        "hyperd replication benchmark: {} ({} cores), node {}, runs {}, load {}, dir {}",
        m.cpu,
        m.cores,
        m.node,
        args.runs,
        m.load_start,
        root.path().display()
    );
    let ballast = Ballast::new(root.path());
    let mut b = Bench {
        args,
        root,
        ballast,
        feeds: None,
        rows: Vec::new(),
        details: Vec::new(),
        notes: Vec::new(),
        extra: serde_json::Map::new(),
    };
    let (want_a, want_b, want_c) = (b.args.wants("a"), b.args.wants("b"), b.args.wants("c"));
    ensure!(
        want_a || want_b || want_c,
        "no workload matches {:?}; use A, B or {:?}",
        b.args.filter,
        WORKLOADS.map(|(_, n)| n)
    );
    let started = Instant::now();
    b.build_feeds()?;
    if want_a {
        b.run_a()?;
    }
    if want_b {
        b.run_b()?;
    }
    if want_c {
        b.run_c()?;
    }

    let table = render(&b, &m, started.elapsed().as_secs_f64());
    if b.args.json {
        eprint!("{table}");
        let out = json!({
            "machine": m.json(),
            "runs": b.args.runs,
            "pairs": b.args.pairs().iter().map(|p| p.name()).collect::<Vec<_>>(),
            "feed": { "blocks": BLOCKS, "block_size": SIZE, "bytes": FEED_BYTES },
            "gets": GETS,
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
        "hyperd replication benchmark: Rust vs JS hypercore@9.12.0 / hypercore-protocol@8 (separate processes, TCP 127.0.0.1)"
    );
    let _ = writeln!(s, "{}", m.line());
    let _ = writeln!(
        s,
        "median of {} runs per pairing (pairings alternating), seeders on a warm page cache, dirs in {}; MB = 10^6 bytes, GiB = 2^30",
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
        "A: [warm] = memory freed right before and all through the transfer, [cold] = nothing freed for 4 s (host-reclaimed pages fault on first touch); B runs warm"
    );
    if b.args.rust_only {
        let _ = writeln!(s, "--rust-only: only Rust -> Rust was run");
    }
    for n in &b.notes {
        let _ = writeln!(s, "{n}");
    }
    let _ = writeln!(s);
    s.push_str(&table(&b.rows, "JS"));
    for (title, header, lines) in &b.details {
        let _ = writeln!(s);
        let _ = writeln!(s, "{title}");
        let _ = writeln!(s, "{header}");
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "ratio = Rust / JS for throughput, JS / Rust for times and CPU; MB/s = rangeBytes / (ms.done - ms.connected) from the clone's JSON"
    );
    let _ = writeln!(
        s,
        "CPU = user + system, all threads: seeder from /proc/<pid>/stat around the clone's run; clone from its own --cpu report, connect to done (\"clone process\": its whole life, with start-up and verify)"
    );
    let _ = writeln!(s, "total bench time {elapsed:.0} s");
    s
}
