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
//! * memory given back: RSS once the daemon has settled after those appends and after 16
//!   concurrent reads of a 256 MiB core, against its idle RSS; target ≤ idle + 16 MiB;
//! * scale: 10,000 cores with a block each, then the daemon restarted under a limit of
//!   1024 open files (soft and hard, so it cannot raise it): start-up to ready ≤ 2 s, every
//!   core answers `Info` and `Get`, idle RSS ≤ 64 MiB, open descriptors ≤ 512 after
//!   touching them all, and a second daemon that follows 100 of them (1 MiB each) at once
//!   gets them all, though the seeder keeps only 96 cores open.
//!
//! `--only scale` runs just the scale part. The binaries are the release builds next to
//! this benchmark (`target/release`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hypercore::{Feed, FeedOptions};
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::daemon_client::DaemonClient;
use hyperd_proto::v1::peers_client::PeersClient;
use hyperd_proto::v1::{
    AppendRequest, CreateRequest, DialRequest, FollowRequest, GetRequest, InfoRequest, ReadRequest,
    Seeding, StatusRequest, StopRequest,
};
use hyperd_tests::bench::{
    median, percentile, progress, table, warn_if_binaries_stale, Ballast, Figure, Machine, Mem, Row,
};
use hyperd_tests::daemon::{rss_of, Daemon};
use serde_json::{json, Value};

const FILE_BYTES: usize = 256 << 20;
const BLOCK: usize = 64 << 10;
const RUNS: usize = 3;
const STATUS_RUNS: usize = 100;
const MIB: f64 = (1 << 20) as f64;
const SCALE_CORES: usize = 10_000;
const SCALE_NOFILE: u64 = 1024;
const SCALE_FOLLOWED: usize = 100;
/// 64 KiB blocks after the first in each core the peer follows: 1 MiB each, so that
/// downloads are still running while the seeder (room for 96 open cores) closes cores.
const FOLLOWED_EXTRA_BLOCKS: usize = 16;
/// Requests in flight at once when creating or touching the scale cores.
const IN_FLIGHT: usize = 16;

fn main() -> Result<()> {
    let json_out = std::env::args().any(|a| a == "--json");
    warn_if_binaries_stale()?;
    let machine = Machine::get();
    eprintln!("{}", machine.line());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let only_scale = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == "--only" && w[1] == "scale");
    if only_scale {
        let (report, scale) = runtime.block_on(scale())?;
        print_report(
            json_out,
            &report,
            json!({ "machine": machine.json(), "scale": scale }),
        );
        return Ok(());
    }
    let work = tempfile::Builder::new().prefix("hyperd-bench").tempdir()?;

    // 1. Idle memory.
    let daemon = Daemon::start()?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_of(daemon.pid().context("no pid")?)? as f64 / MIB;
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
    let mut via_ctl = Figure::new("MB/s");
    let mut in_process = Figure::new("MB/s");
    let mut last_key = String::new();
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
        if run < RUNS {
            daemon.ctl(&["core", "rm", &key])?;
        } else {
            last_key = key;
        }
    }

    // 4. Memory given back after the appends and 16 concurrent reads of the last core.
    runtime.block_on(read_concurrently(&daemon, &last_key, 16))?;
    let after_traffic = runtime.block_on(settled_rss(&daemon))?;
    progress(&format!(
        "RSS after the appends and reads {after_traffic:.1} MiB"
    ));

    // 5. Memory with 100 cores loaded, for information.
    for _ in 0..100 {
        daemon.ctl_json(&["core", "create"])?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_100 = rss_of(daemon.pid().context("no pid")?)? as f64 / MIB;
    drop(daemon);

    // 6. Scale.
    let (scale_report, scale) = runtime.block_on(scale())?;

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
        "RSS settled after appends and 16 reads   {after_traffic:>8.1} MiB    target <= {:.1} MiB {}\n",
        idle_rss + 16.0,
        verdict(after_traffic <= idle_rss + 16.0)
    ));
    report.push_str(&format!(
        "hyperd RSS with 100 cores loaded         {rss_100:>8.1} MiB    info\n\n"
    ));
    report.push_str(&table(std::slice::from_ref(&append_row), "in-process"));
    report.push('\n');
    report.push_str(&scale_report);
    let json = json!({
        "machine": machine.json(),
        "idleRssMiB": idle_rss,
        "rssAfterTrafficMiB": after_traffic,
        "rss100CoresMiB": rss_100,
        "statusMs": { "median": status_median, "p90": percentile(&status_ms, 90.0), "runs": status_ms.len() },
        "append": append_row.json(),
        "scale": scale,
    });
    print_report(json_out, &report, json);
    Ok(())
}

/// The report on stdout, or on stderr with `json` on stdout.
fn print_report(json_out: bool, report: &str, json: Value) {
    if json_out {
        eprint!("{report}");
        println!("{json}");
    } else {
        print!("{report}");
    }
}

/// The daemon's RSS in MiB once its periodic trim has run and it has stopped moving.
async fn settled_rss(daemon: &Daemon) -> Result<f64> {
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut last = daemon.rss()?;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = daemon.rss()?;
        if now.abs_diff(last) < 1 << 20 {
            return Ok(now as f64 / MIB);
        }
        last = now;
    }
    Ok(last as f64 / MIB)
}

/// Reads the whole of core `key` on `streams` API connections at once.
async fn read_concurrently(daemon: &Daemon, key: &str, streams: usize) -> Result<()> {
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let mut client = CoresClient::new(daemon.channel().await?);
        let key = key.to_string();
        reads.spawn(async move {
            let mut stream = client
                .read(ReadRequest {
                    key,
                    start: 0,
                    end: None,
                    live: false,
                    wait: false,
                })
                .await?
                .into_inner();
            let mut bytes = 0;
            while let Some(message) = stream.message().await? {
                bytes += message.data.len();
            }
            anyhow::ensure!(bytes == FILE_BYTES, "read {bytes} bytes");
            Ok(())
        });
    }
    while let Some(read) = reads.join_next().await {
        read??;
    }
    Ok(())
}

/// Runs `f` on every item with [`IN_FLIGHT`] at a time; the first error stops it.
async fn for_each_concurrently<T, F, Fut>(items: Vec<T>, f: F) -> Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        if tasks.len() >= IN_FLIGHT {
            tasks.join_next().await.context("no task")???;
        }
        tasks.spawn(f(item));
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    Ok(())
}

/// The scale part: its report lines and JSON.
async fn scale() -> Result<(String, Value)> {
    let dir = tempfile::Builder::new().prefix("hyperd-scale").tempdir()?;
    let home = dir.path().join("home");
    let mut daemon = Daemon::start_in(&home, "127.0.0.1:0")?;
    let channel = daemon.channel().await?;
    let start = Instant::now();
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(SCALE_CORES)));
    for_each_concurrently((0..SCALE_CORES).collect(), |i| {
        let mut cores = CoresClient::new(channel.clone());
        let keys = keys.clone();
        async move {
            let key = cores
                .create(CreateRequest {
                    name: format!("scale-{i}"),
                    force: false,
                    // Storage at scale, not the swarm: joining each would rewrite the
                    // state file once per core.
                    seeding: Some(Seeding {
                        announce: false,
                        lookup: false,
                    }),
                })
                .await
                .with_context(|| format!("creating core {i}"))?
                .into_inner()
                .key;
            cores
                .append(AppendRequest {
                    key: key.clone(),
                    blocks: vec![bytes::Bytes::from(format!("core {i}"))],
                })
                .await?;
            if i % (SCALE_CORES / SCALE_FOLLOWED) == 0 {
                cores
                    .append(AppendRequest {
                        key: key.clone(),
                        blocks: vec![
                            bytes::Bytes::from(vec![i as u8; BLOCK]);
                            FOLLOWED_EXTRA_BLOCKS
                        ],
                    })
                    .await?;
            }
            keys.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((i, key));
            Ok(())
        }
    })
    .await?;
    let create_secs = start.elapsed().as_secs_f64();
    progress(&format!(
        "created {SCALE_CORES} cores in {create_secs:.1} s"
    ));
    let keys = std::mem::take(&mut *keys.lock().unwrap_or_else(|e| e.into_inner()));

    DaemonClient::new(channel).stop(StopRequest {}).await?;
    daemon.wait_exit()?;
    let start = Instant::now();
    daemon.restart_limited(Some(SCALE_NOFILE))?;
    let ready_secs = start.elapsed().as_secs_f64();
    let mut status = DaemonClient::new(daemon.channel().await?);
    let counted_secs = loop {
        let s = status.status(StatusRequest {}).await?.into_inner();
        if s.core_count as usize == SCALE_CORES {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "status counts {} cores a minute after the start",
                s.core_count
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let idle_rss = settled_rss(&daemon).await?;
    let idle_fds = daemon.open_fds()?;
    progress(&format!(
        "restarted under a limit of {SCALE_NOFILE} files: ready in {ready_secs:.2} s, \
         all counted in {counted_secs:.2} s, idle RSS {idle_rss:.1} MiB, {idle_fds} descriptors"
    ));

    // Every core through the API.
    let channel = daemon.channel().await?;
    let start = Instant::now();
    let max_fds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(idle_fds));
    let pid = daemon.pid().context("no pid")?;
    for_each_concurrently(keys.clone(), |(i, key)| {
        let mut cores = CoresClient::new(channel.clone());
        let max_fds = max_fds.clone();
        async move {
            let info = cores
                .info(InfoRequest { key: key.clone() })
                .await
                .with_context(|| format!("info of core {i}"))?
                .into_inner();
            let length = if i % (SCALE_CORES / SCALE_FOLLOWED) == 0 {
                1 + FOLLOWED_EXTRA_BLOCKS as u64
            } else {
                1
            };
            anyhow::ensure!(info.length == length, "core {i} has length {}", info.length);
            let block = cores
                .get(GetRequest {
                    key,
                    index: 0,
                    timeout_ms: 0,
                })
                .await
                .with_context(|| format!("block 0 of core {i}"))?
                .into_inner()
                .data;
            anyhow::ensure!(
                block == format!("core {i}").as_bytes(),
                "core {i}: wrong block"
            );
            if i % 100 == 0 {
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
                max_fds.fetch_max(fds, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await?;
    let touch_secs = start.elapsed().as_secs_f64();
    let max_fds = max_fds
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(daemon.open_fds()?);
    let touched_rss = settled_rss(&daemon).await?;
    progress(&format!(
        "Info + Get of every core in {touch_secs:.1} s, at most {max_fds} descriptors, \
         RSS then {touched_rss:.1} MiB"
    ));

    // A peer follows 100 of them at once.
    let follower = Daemon::start()?;
    PeersClient::new(follower.channel().await?)
        .dial(DialRequest {
            address: daemon.listen.clone(),
            once: false,
            timeout_ms: 5000,
        })
        .await?;
    let theirs = follower.channel().await?;
    let followed: Vec<_> = keys
        .iter()
        .filter(|(i, _)| i % (SCALE_CORES / SCALE_FOLLOWED) == 0)
        .cloned()
        .collect();
    anyhow::ensure!(
        followed.len() == SCALE_FOLLOWED,
        "{} to follow",
        followed.len()
    );
    let start = Instant::now();
    for_each_concurrently(followed.clone(), |(_, key)| {
        let mut cores = CoresClient::new(theirs.clone());
        async move {
            cores
                .follow(FollowRequest {
                    key,
                    download_all: true,
                    seeding: None,
                })
                .await?;
            Ok(())
        }
    })
    .await?;
    for_each_concurrently(followed, |(i, key)| {
        let mut cores = CoresClient::new(theirs.clone());
        async move {
            let start = Instant::now();
            loop {
                let info = cores
                    .info(InfoRequest { key: key.clone() })
                    .await?
                    .into_inner();
                if info.downloaded_blocks == 1 + FOLLOWED_EXTRA_BLOCKS as u64 {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    bail!(
                        "the follower has {} of {} blocks of core {i} after a minute",
                        info.downloaded_blocks,
                        1 + FOLLOWED_EXTRA_BLOCKS
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let block = cores
                .get(GetRequest {
                    key,
                    index: 0,
                    timeout_ms: 0,
                })
                .await?
                .into_inner()
                .data;
            anyhow::ensure!(
                block == format!("core {i}").as_bytes(),
                "core {i}: wrong block"
            );
            Ok(())
        }
    })
    .await?;
    let follow_secs = start.elapsed().as_secs_f64();
    let peak_fds = max_fds.max(daemon.open_fds()?);
    progress(&format!(
        "the follower got all {SCALE_FOLLOWED} followed cores (1 MiB each) in {follow_secs:.2} s"
    ));

    let verdict = |pass: bool| if pass { "PASS" } else { "MISS" };
    let mut report = format!(
        "scale: {SCALE_CORES} cores (created in {create_secs:.1} s), restarted under {SCALE_NOFILE} files\n"
    );
    report.push_str(&format!(
        "  start-up to ready                      {ready_secs:>8.2} s      target <= 2 s      {}\n",
        verdict(ready_secs <= 2.0)
    ));
    report.push_str(&format!(
        "  ... until status counts every core     {counted_secs:>8.2} s      info\n"
    ));
    report.push_str(&format!(
        "  idle RSS                               {idle_rss:>8.1} MiB    target <= 64 MiB   {}\n",
        verdict(idle_rss <= 64.0)
    ));
    report.push_str(&format!(
        "  Info + Get of all {SCALE_CORES}                {touch_secs:>8.1} s      all answered\n"
    ));
    report.push_str(&format!(
        "  ... RSS after that, settled            {touched_rss:>8.1} MiB    target <= 64 MiB   {}\n",
        verdict(touched_rss <= 64.0)
    ));
    report.push_str(&format!(
        "  open descriptors, at most              {peak_fds:>8}        target <= 512      {}\n",
        verdict(peak_fds <= 512)
    ));
    report.push_str(&format!(
        "  a peer following {SCALE_FOLLOWED} (1 MiB each) at once gets all {follow_secs:>5.2} s  all {SCALE_FOLLOWED}\n"
    ));
    let json = json!({
        "cores": SCALE_CORES,
        "fileLimit": SCALE_NOFILE,
        "createSecs": create_secs,
        "readySecs": ready_secs,
        "countedSecs": counted_secs,
        "idleRssMiB": idle_rss,
        "touchAllSecs": touch_secs,
        "touchedRssMiB": touched_rss,
        "maxDescriptors": peak_fds,
        "followed": SCALE_FOLLOWED,
        "followSecs": follow_secs,
    });
    Ok((report, json))
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
