//! The Rust twin of `interop/clone.js`: dials a peer as the Noise initiator, downloads a
//! feed (or a range of it), verifies it and prints one JSON line. Same flags, same output,
//! same exit codes (0 verified, 1 failed, 2 usage).
//!
//! ```text
//! rust-clone --key HEX --connect HOST:PORT --dir DIR [--start S] [--end E]
//!            [--mode full|sparse] [--live] [--expect-length N] [--expect-blake2b HEX]
//!            [--noise-seed HEX32] [--timeout MS] [--verbose]
//!            [--gets N [--seed-rng X]] [--cpu]
//! ```
//!
//! `full` opens an ordinary feed, which downloads everything it learns of; `sparse` opens
//! a sparse one, learns the length with `update` and downloads only the range. Both wait
//! for a length of at least `max(1, --expect-length, --end)`, so an empty remote feed
//! times out, as with `clone.js`.
//!
//! For the benchmarks (`tests/benches/replication.rs`), like `clone.js`:
//!
//! * `--gets N` (sparse only): instead of downloading the range, `get`s N distinct random
//!   blocks of it one at a time, each awaited before the next (xorshift32 from
//!   `--seed-rng`, default 1, repeats skipped: [`distinct_random_indexes`]), and reports
//!   each latency in `gets`; `blake2b` and `rangeBytes` then cover the blocks got, in
//!   that order.
//! * `--cpu`: adds `cpuMs`, the process's CPU time (user + system, all threads) at each
//!   step of `ms`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hypercore::storage::DiskStorage;
use hypercore::{AuditReport, Feed, FeedOptions, GetOptions, PublicKey};
use hypercore_protocol::{Authenticate, NoiseKeyPair, PeerKey, ProtocolOptions};
use hypercore_replication::{replicate, DownloadRange, ReplicateOptions, Replicator};
use hyperd_tests::bench::{median, percentile};
use hyperd_tests::cli::{emit, hash_range, js_number, log, Args};
use hyperd_tests::{distinct_random_indexes, json_line, process_cpu_seconds};
use tokio::net::TcpStream;

const USAGE: &str =
    "usage: rust-clone --key HEX --connect HOST:PORT --dir DIR [--start S] [--end E]\n\
    \x20        [--mode full|sparse] [--live] [--expect-length N] [--expect-blake2b HEX]\n\
    \x20        [--noise-seed HEX32] [--timeout MS] [--verbose]\n\
    \x20        [--gets N [--seed-rng X]] [--cpu]";

struct Options {
    key: PublicKey,
    host: String,
    port: u16,
    dir: String,
    sparse: bool,
    live: bool,
    verbose: bool,
    timeout: Duration,
    start: u64,
    end: Option<u64>,
    expect_length: Option<u64>,
    expect_blake2b: Option<String>,
    noise: Option<NoiseKeyPair>,
    gets: Option<u64>,
    seed_rng: u32,
    cpu: bool,
}

/// Milliseconds since start of each step; -1 = not reached.
#[derive(Clone, Copy, serde::Serialize)]
struct Times {
    connected: i64,
    handshake: i64,
    length: i64,
    done: i64,
    total: i64,
    /// Reported as `cpuMs` with `--cpu`.
    #[serde(skip)]
    cpu: CpuMs,
}

/// `--cpu`: CPU milliseconds the process had used at each step; -1 = not reached.
#[derive(Clone, Copy, serde::Serialize)]
struct CpuMs {
    connected: i64,
    length: i64,
    done: i64,
    total: i64,
}

/// What `--gets` got. (The blocks are not kept: holding on to them would make every
/// block arrive into fresh memory and slow the gets down.)
struct Gets {
    seed: u32,
    indexes: Vec<u64>,
    latencies: Vec<Duration>,
}

/// `gets` in the report: milliseconds, rounded to the microsecond.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GetsReport {
    count: usize,
    seed_rng: u32,
    median_ms: serde_json::Value,
    p90_ms: serde_json::Value,
    mean_ms: serde_json::Value,
    max_ms: serde_json::Value,
    latencies_ms: Vec<serde_json::Value>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    ok: bool,
    key: String,
    discovery_key: String,
    remote_public_key: Option<String>,
    mode: &'static str,
    live: bool,
    length: u64,
    byte_length: u64,
    start: u64,
    end: u64,
    range_bytes: u64,
    blake2b: String,
    audit: AuditReport,
    signature_index: u64,
    downloaded_blocks: u64,
    ms: Times,
    mb_per_sec: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    gets: Option<GetsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_ms: Option<CpuMs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What a failure after the feed is open prints.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    ok: bool,
    error: String,
    key: String,
    length: u64,
    byte_length: u64,
    downloaded: u64,
    remote_length: u64,
    ms: i64,
}

#[tokio::main]
async fn main() {
    hyperd_tests::cli::init_tracing();
    let t0 = Instant::now();
    let code = match parse_args() {
        Ok(options) => match clone(&options, t0).await {
            Ok(code) => code,
            Err(e) => fail_early(e),
        },
        Err(e) => fail_early(e),
    };
    std::process::exit(code);
}

/// Failures before the feed is open print just `ok` and `error`.
fn fail_early(e: anyhow::Error) -> i32 {
    emit(&json_line! { "ok": false, "error": format!("{e:#}") });
    1
}

fn parse_args() -> Result<Options> {
    let args = Args::parse(
        std::env::args().skip(1),
        &["live", "verbose", "cpu", "help"],
    )?;
    let (Some(key), Some(connect), Some(dir), false) = (
        args.get("key"),
        args.get("connect"),
        args.get("dir"),
        args.flag("help"),
    ) else {
        eprintln!("{USAGE}");
        std::process::exit(if args.flag("help") { 0 } else { 2 });
    };
    let key: PublicKey = key.parse().ok().context("--key must be 32 bytes of hex")?;
    let (host, port) = connect.rsplit_once(':').unwrap_or(("127.0.0.1", connect));
    let sparse = match args.get("mode").unwrap_or("full") {
        "full" => false,
        "sparse" => true,
        _ => bail!("--mode must be full or sparse"),
    };
    let gets = args.parsed("gets")?;
    if gets.is_some() && !sparse {
        bail!("--gets needs --mode sparse");
    }
    Ok(Options {
        key,
        host: host.to_string(),
        port: port.parse().with_context(|| format!("port {port:?}"))?,
        dir: dir.to_string(),
        sparse,
        live: args.flag("live"),
        verbose: args.flag("verbose"),
        timeout: Duration::from_millis(args.parsed("timeout")?.unwrap_or(30_000)),
        start: args.parsed("start")?.unwrap_or(0),
        end: args.parsed("end")?,
        expect_length: args.parsed("expect-length")?,
        expect_blake2b: args.get("expect-blake2b").map(str::to_string),
        noise: args
            .seed("noise-seed")?
            .map(|s| NoiseKeyPair::from_seed(&s)),
        gets,
        seed_rng: args.parsed("seed-rng")?.unwrap_or(1),
        cpu: args.flag("cpu"),
    })
}

/// Opens the feed, runs the download under the deadline and reports; returns the exit
/// code.
async fn clone(o: &Options, t0: Instant) -> Result<i32> {
    let feed = Feed::open(
        DiskStorage::new(&o.dir),
        FeedOptions {
            key: Some(o.key),
            sparse: o.sparse,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("opening the feed in {}", o.dir))?;
    let initial_downloaded = feed.downloaded(0, None);
    let replicator = Replicator::new(feed.clone(), Default::default());
    let mut times = Times {
        connected: -1,
        handshake: -1,
        length: -1,
        done: -1,
        total: -1,
        cpu: CpuMs {
            connected: -1,
            length: -1,
            done: -1,
            total: -1,
        },
    };
    let remote_key = Arc::new(Mutex::new(None));
    let mut socket = None;
    let work = download(o, &replicator, t0, &mut times, &remote_key, &mut socket);
    let result = match tokio::time::timeout(o.timeout, work).await {
        Ok(Ok((end, gets))) => {
            verify(
                o,
                &feed,
                (end, gets),
                t0,
                times,
                &remote_key,
                initial_downloaded,
            )
            .await
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!(
            "timeout after {} ms",
            o.timeout.as_millis()
        )),
    };
    let code = match result {
        Ok(report) => {
            emit(&report);
            if report.ok {
                0
            } else {
                1
            }
        }
        Err(e) => {
            let remote_length = replicator
                .stats()
                .peers
                .iter()
                .map(|p| p.remote_length)
                .max();
            emit(&Failure {
                ok: false,
                error: format!("{e:#}"),
                key: feed.key().to_hex(),
                length: feed.len(),
                byte_length: feed.byte_len(),
                downloaded: feed.downloaded(0, None),
                remote_length: remote_length.unwrap_or(0),
                ms: ms(t0),
            });
            1
        }
    };
    // Like `clone.js`: end the connection, then close the feed. (Closing the feed first
    // would send Close on the channel, and a reply arriving after exit would reset the
    // connection.)
    if let Some(socket) = socket {
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), feed.close()).await;
    Ok(code)
}

/// Connects, learns the length and downloads the range (or gets `--gets` blocks of it);
/// returns the range's end (and what the gets got) and leaves a handle on the connection in
/// `socket`. Fails as soon as the connection does; a
/// connection that ends cleanly before the range is complete leaves it to the deadline, as
/// with `clone.js`.
async fn download(
    o: &Options,
    replicator: &Replicator,
    t0: Instant,
    times: &mut Times,
    remote_key: &Arc<Mutex<Option<(i64, PeerKey)>>>,
    socket: &mut Option<std::net::TcpStream>,
) -> Result<(u64, Option<Gets>)> {
    let feed = replicator.feed().clone();
    let tcp = TcpStream::connect((o.host.as_str(), o.port)).await?;
    tcp.set_nodelay(true)?;
    // A second handle on the socket, to end the connection when done.
    let tcp = tcp.into_std()?;
    *socket = Some(tcp.try_clone()?);
    let tcp = TcpStream::from_std(tcp)?;
    times.connected = ms(t0);
    times.cpu.connected = cpu_ms();
    let authenticate: Authenticate = {
        let remote_key = remote_key.clone();
        Arc::new(move |key: &PeerKey| {
            *remote_key.lock().unwrap_or_else(|e| e.into_inner()) = Some((ms(t0), *key));
            true
        })
    };
    let options = ReplicateOptions {
        protocol: ProtocolOptions {
            initiator: true,
            live: o.live,
            keypair: o.noise.clone(),
            authenticate: Some(authenticate),
            ..Default::default()
        },
    };
    if o.verbose {
        tokio::spawn(log_events(feed.clone()));
    }
    let mut session = tokio::spawn({
        let replicator = replicator.clone();
        async move { replicate(&replicator, tcp, options).await }
    });
    let failed = async {
        match (&mut session).await {
            Ok(Ok(())) => std::future::pending().await,
            Ok(Err(e)) => anyhow::Error::new(e).context("replication failed"),
            Err(e) => anyhow::Error::new(e).context("replication task"),
        }
    };
    let steps = async {
        // 1. Learn the remote length (at least --expect-length / --end).
        let min_length = 1.max(o.expect_length.unwrap_or(0)).max(o.end.unwrap_or(0));
        if o.sparse {
            while feed.len() < min_length {
                feed.update(Some(min_length), None).await?;
            }
        } else {
            wait_for(&feed, || feed.len() >= min_length).await;
        }
        times.length = ms(t0);
        times.cpu.length = cpu_ms();
        // 2. Download the range and wait until every block of it is stored (or get
        //    --gets blocks of it).
        let end = o.end.unwrap_or(feed.len());
        let gets = match o.gets {
            Some(count) => Some(get_blocks(&feed, o.start, end, count, o.seed_rng).await?),
            None => {
                if o.start < end {
                    replicator
                        .download(DownloadRange::new(o.start, end))
                        .await?;
                }
                None
            }
        };
        times.done = ms(t0);
        times.cpu.done = cpu_ms();
        anyhow::Ok((end, gets))
    };
    // The connection stays up (until the process exits) while the result is verified.
    tokio::select! {
        r = steps => r,
        e = failed => Err(e),
    }
}

/// `--gets`: gets `count` distinct random blocks of `[start, end)`, one at a time.
async fn get_blocks(feed: &Feed, start: u64, end: u64, count: u64, seed: u32) -> Result<Gets> {
    let indexes = distinct_random_indexes(seed, count, start, end)?;
    let mut latencies = Vec::with_capacity(indexes.len());
    for &i in &indexes {
        let t = Instant::now();
        feed.get(i).await?;
        latencies.push(t.elapsed());
    }
    Ok(Gets {
        seed,
        indexes,
        latencies,
    })
}

impl Gets {
    /// BLAKE2b-256 of the blocks got, in order (read back from the feed), and their total
    /// size.
    async fn hash(&self, feed: &Feed) -> Result<(String, u64)> {
        let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
        let mut bytes = 0u64;
        for &i in &self.indexes {
            let block = feed.get_with(i, GetOptions::no_wait()).await?;
            state.update(&block);
            bytes += block.len() as u64;
        }
        Ok((
            hypercore::crypto::to_hex(state.finalize().as_bytes()),
            bytes,
        ))
    }

    fn report(&self) -> GetsReport {
        // Rounded to the microsecond first, as clone.js does, so both compute the same
        // statistics from the same printed values.
        let ms: Vec<f64> = self
            .latencies
            .iter()
            .map(|d| (d.as_nanos() as f64 / 1e3).round() / 1e3)
            .collect();
        let round = |x: f64| js_number((x * 1e3).round() / 1e3);
        let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        GetsReport {
            count: ms.len(),
            seed_rng: self.seed,
            median_ms: round(median(&ms)),
            p90_ms: round(percentile(&ms, 90.0)),
            mean_ms: round(mean),
            max_ms: round(ms.iter().copied().fold(f64::NAN, f64::max)),
            latencies_ms: ms.iter().map(|&x| js_number(x)).collect(),
        }
    }
}

/// Audits, checks the latest signature, hashes the range (or takes the hash of what
/// `--gets` got) and builds the report.
async fn verify(
    o: &Options,
    feed: &Feed,
    (end, gets): (u64, Option<Gets>),
    t0: Instant,
    mut times: Times,
    remote_key: &Mutex<Option<(i64, PeerKey)>>,
    initial_downloaded: u64,
) -> Result<Report> {
    let audit = feed.audit().await?;
    let signature = feed.signature(feed.len().saturating_sub(1))?;
    if !feed.verify(signature.index, &signature.signature)? {
        bail!(
            "the signature of length {} does not verify",
            signature.index + 1
        );
    }
    let (blake2b, range_bytes) = match &gets {
        Some(g) => g.hash(feed).await?,
        None => hash_range(feed, o.start, end).await?,
    };
    let handshake = *remote_key.lock().unwrap_or_else(|e| e.into_inner());
    times.handshake = handshake.map_or(-1, |(t, _)| t);
    times.total = ms(t0);
    times.cpu.total = cpu_ms();
    let secs = (times.done - times.connected.max(0)) as f64 / 1000.0;
    let mut report = Report {
        ok: audit.invalid == 0,
        key: feed.key().to_hex(),
        discovery_key: feed.discovery_key().to_hex(),
        remote_public_key: handshake.map(|(_, k)| k.to_hex()),
        mode: if o.sparse { "sparse" } else { "full" },
        live: o.live,
        length: feed.len(),
        byte_length: feed.byte_len(),
        start: o.start,
        end,
        range_bytes,
        blake2b,
        audit,
        signature_index: signature.index,
        downloaded_blocks: feed.downloaded(0, None) - initial_downloaded,
        ms: times,
        mb_per_sec: if times.done > 0 {
            js_number((range_bytes as f64 / 1e6 / secs * 100.0).round() / 100.0)
        } else {
            serde_json::Value::Null
        },
        gets: gets.as_ref().map(Gets::report),
        cpu_ms: o.cpu.then_some(times.cpu),
        error: None,
    };
    if o.expect_blake2b
        .as_ref()
        .is_some_and(|h| *h != report.blake2b)
    {
        report.ok = false;
        report.error = Some("blake2b mismatch".into());
    }
    Ok(report)
}

/// Waits until `check` holds, re-checking on every feed event and every 50 ms.
async fn wait_for(feed: &Feed, check: impl Fn() -> bool) {
    let mut events = feed.events();
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while !check() {
        tokio::select! {
            _ = events.recv() => {}
            _ = poll.tick() => {}
        }
    }
}

/// `--verbose`: a log line per downloaded block and per length change.
async fn log_events(feed: Feed) {
    use hypercore::Event;
    let mut events = feed.events();
    loop {
        match events.recv().await {
            Ok(Event::Download { index, bytes, .. }) => {
                log(json_line! { "event": "download", "index": index, "bytes": bytes })
            }
            Ok(Event::Append { length, .. }) => {
                log(json_line! { "event": "append", "length": length })
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

fn ms(t0: Instant) -> i64 {
    t0.elapsed().as_millis() as i64
}

/// CPU milliseconds used by this process so far (-1 if unknown).
fn cpu_ms() -> i64 {
    process_cpu_seconds(None).map_or(-1, |s| (s * 1e3).round() as i64)
}
