//! The `daemon` benchmark: what using `hyperd` through `hyperctl` costs.
//!
//! ```text
//! cargo build --release --bins && cargo bench -p hyperd-tests --bench daemon [-- --json]
//! ```
//!
//! * idle resident memory of a fresh `hyperd` (VmRSS after it has settled), and with 100
//!   cores loaded, for information; target ≤ 20 MiB idle;
//! * `hyperctl status` round trip, process start included: median of 100 runs; target
//!   ≤ 10 ms;
//! * appending a 256 MiB file as 64 KiB blocks with `hyperctl core append --file`, against
//!   appending the same blocks in-process (`Feed::append_batch`, 1 MiB batches, the size
//!   of hyperctl's stream messages); target ≥ 50 % of in-process. Both are timed in the
//!   warm memory state of `tests/src/bench.rs` (memory freed right before the clock).
//!
//! The binaries are the release builds next to this benchmark (`target/release`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hypercore::{Feed, FeedOptions};
use hyperd_tests::bench::{
    median, percentile, progress, table, Ballast, Figure, Machine, Mem, Row,
};
use hyperd_tests::daemon::{bin, Daemon};
use serde_json::json;

const FILE_BYTES: usize = 256 << 20;
const BLOCK: usize = 64 << 10;
const RUNS: usize = 3;
const STATUS_RUNS: usize = 100;

fn main() -> Result<()> {
    let json_out = std::env::args().any(|a| a == "--json");
    for name in ["hyperd", "hyperctl"] {
        let path = bin(name)?;
        let bench_exe = std::env::current_exe()?;
        if path.metadata()?.modified()?
            < bench_exe.metadata()?.modified()? - Duration::from_secs(3600)
        {
            eprintln!("warning: {} is over an hour older than this benchmark; run `cargo build --release --bins`", path.display());
        }
    }
    let machine = Machine::get();
    eprintln!("{}", machine.line());
    let work = tempfile::Builder::new().prefix("hyperd-bench").tempdir()?;

    // 1. Idle memory.
    let daemon = Daemon::start()?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_mib(daemon.pid().context("no pid")?)?;
    progress(&format!("idle RSS {idle_rss:.1} MiB"));

    // 2. hyperctl status, process start included.
    let mut status_ms = Vec::new();
    for _ in 0..STATUS_RUNS {
        let start = Instant::now();
        let out = daemon.ctl(&["status"])?;
        status_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!(
                "hyperctl status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    progress(&format!(
        "hyperctl status: median {:.2} ms, p90 {:.2} ms",
        median(&status_ms),
        percentile(&status_ms, 90.0)
    ));

    // 3. Appending a 256 MiB file, through hyperctl and in-process.
    let file = work.path().join("input.bin");
    let data: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data)?;
    let mut ballast = Ballast::new(work.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut via_ctl = Figure::new("MB/s");
    let mut in_process = Figure::new("MB/s");
    // Run 0 is a warm-up (the daemon's first large buffers), not counted.
    for run in 0..=RUNS {
        let key = daemon.ctl_json(&["core", "create"])?["key"]
            .as_str()
            .context("no key")?
            .to_string();
        ballast.arm(Mem::Warm, 2 * FILE_BYTES as u64)?;
        ballast.fire(Mem::Warm);
        let start = Instant::now();
        let out = daemon.ctl_json(&[
            "core",
            "append",
            &key,
            "--file",
            file.to_str().context("path")?,
            "--block-size",
            &BLOCK.to_string(),
        ])?;
        let ctl_secs = start.elapsed().as_secs_f64();
        if out["length"] != (FILE_BYTES / BLOCK) as u64 {
            bail!("hyperctl appended {out}");
        }

        let dir = work.path().join(format!("feed-{run}"));
        ballast.arm(Mem::Warm, 2 * FILE_BYTES as u64)?;
        let secs = runtime.block_on(append_in_process(&dir, &data, || ballast.fire(Mem::Warm)))?;
        let _ = std::fs::remove_dir_all(&dir);
        let (ctl_rate, own_rate) = (
            FILE_BYTES as f64 / 1e6 / ctl_secs,
            FILE_BYTES as f64 / 1e6 / secs,
        );
        let what = if run == 0 { "warm-up" } else { "run" };
        progress(&format!(
            "{what} {run}: hyperctl {ctl_rate:.0} MB/s, in-process {own_rate:.0} MB/s"
        ));
        if run > 0 {
            via_ctl.runs.push(ctl_rate);
            in_process.runs.push(own_rate);
        }
        daemon.ctl(&["core", "rm", &key])?;
    }

    // 4. Memory with 100 cores loaded, for information.
    for _ in 0..100 {
        daemon.ctl_json(&["core", "create"])?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_100 = rss_mib(daemon.pid().context("no pid")?)?;

    let append_row = Row::new(
        "append-256mib",
        "append 256 MiB file via hyperctl vs in-process [warm]",
        via_ctl,
        ("in-process", in_process),
        Some((0.5, ">= 50%")),
    )
    .as_percent();
    let idle_pass = idle_rss <= 20.0;
    let status_median = median(&status_ms);
    let status_pass = status_median <= 10.0;
    let verdict = |pass: bool| if pass { "PASS" } else { "MISS" };
    let mut report = String::new();
    report.push_str(&format!(
        "idle hyperd RSS                          {idle_rss:>8.1} MiB    target <= 20 MiB   {}\n",
        verdict(idle_pass)
    ));
    report.push_str(&format!(
        "hyperctl status round trip, median       {status_median:>8.2} ms     target <= 10 ms    {}\n",
        verdict(status_pass)
    ));
    report.push_str(&format!(
        "  p90                                    {:>8.2} ms\n",
        percentile(&status_ms, 90.0)
    ));
    report.push_str(&format!(
        "hyperd RSS with 100 cores loaded         {rss_100:>8.1} MiB    info\n\n"
    ));
    report.push_str(&table(std::slice::from_ref(&append_row), "in-process"));
    if json_out {
        eprint!("{report}");
        println!(
            "{}",
            json!({
                "machine": machine.json(),
                "idleRssMiB": idle_rss,
                "rss100CoresMiB": rss_100,
                "statusMs": { "median": status_median, "p90": percentile(&status_ms, 90.0), "runs": status_ms.len() },
                "append": append_row.json(),
            })
        );
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Appends `data` as 64 KiB blocks in 1 MiB batches to a new feed in `dir`; seconds.
async fn append_in_process(dir: &Path, data: &[u8], before: impl FnOnce()) -> Result<f64> {
    let feed = Feed::open(
        hypercore::storage::DiskStorage::new(dir),
        FeedOptions::default(),
    )
    .await?;
    let blocks: Vec<bytes::Bytes> = data
        .chunks(BLOCK)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    before();
    let start = Instant::now();
    for batch in blocks.chunks(16) {
        feed.append_batch(batch.iter().cloned()).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    feed.close().await?;
    Ok(secs)
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}
