#![allow(clippy::unwrap_used)]
//! Replication with real JS peers (hypercore 9.12.0, hypercore-protocol 8.0.7) over TCP on
//! 127.0.0.1, using the JS harness (`interop/seed.js`, `clone.js`, `peer.js`) and its Rust
//! twins (`rust-seed`, `rust-clone`), which take the same flags and print the same lines:
//!
//! * feed shapes (`feed_*`): 0 blocks, 1 block, one empty block, a mix of odd sizes (0 to
//!   100,003 bytes), 100,000 small blocks, 4 MiB blocks. Each is served by a JS and a Rust
//!   seeder built from the same key and Noise seeds (their `ready` lines must be
//!   identical) and cloned JS<-Rust, Rust<-JS and Rust<-Rust at once; the two clone tools
//!   must report the same fields and values;
//! * sparse ranges (first and last block, the 8192-block bitfield page edge, a range
//!   ending at the length) and live clones (full and sparse) following appends made while
//!   they sync, in both directions;
//! * meshes: a Rust clone (in this process: one `Replicator`, `replicate()` per
//!   connection, dialing and accepting) and a JS clone (`peer.js`, dialing and accepting)
//!   fetching from a seeder and from each other at once, each having first fetched a
//!   different half so each needs the other; and the same two clones completing each
//!   other's halves without a seeder in a one-shot session that must end by itself;
//! * one-shot sessions between a writer and a clone ending by themselves, either side JS.
//!
//! Every clone's content hash is checked against the seeder's (or against the blocks
//! recomputed here), its audit must find no bad block, its latest signature must verify,
//! and every process must exit with the expected code (seeders and `peer.js` on the end of
//! their stdin, without having logged a connection error before).
//!
//! Limits of the JS side, checked as such: `clone.js` waits for a length of at least 1, so
//! it times out on an empty feed (from a JS seeder too; so does `rust-clone`, which mirrors
//! it, while a Rust replication of the empty feed completes); and it fails on a feed made
//! of one empty block ("Block not downloaded", from a JS seeder too).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypercore::storage::DiskStorage;
use hypercore::{Feed, FeedOptions, PublicKey};
use hypercore_protocol::{NoiseKeyPair, PeerKey, ProtocolOptions};
use hypercore_replication::{replicate, ReplicateOptions, Replicator};
use hyperd_testkit::init_tracing;
use hyperd_tests::cli::hash_range;
use hyperd_tests::{blake2b_concat, make_block};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Seed of the feed key pair every seeder here uses.
const FEED_SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A 32-byte hex seed made of one repeated byte (Noise keys of the various peers).
fn seed_of(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// Seeders' Noise key seed (JS and Rust seeders share it, so clones see the same key).
const SEEDER_NOISE: u8 = 0x5e;
const JS_PEER_NOISE: u8 = 0x4a;
const RUST_PEER_NOISE: u8 = 0x52;

fn noise_key(byte: u8) -> PeerKey {
    NoiseKeyPair::from_seed(&[byte; 32]).public
}

/// The Ed25519 public key of `FEED_SEED`.
fn feed_key() -> PublicKey {
    let seed = hypercore::crypto::from_hex(FEED_SEED).unwrap();
    hypercore::KeyPair::from_seed(&seed.try_into().unwrap()).public
}

/// BLAKE2b-256 of the deterministic blocks `range`, all of `size` bytes.
fn expected_hash(range: std::ops::Range<u64>, size: usize) -> String {
    let blocks: Vec<Vec<u8>> = range.map(|i| make_block(i, size)).collect();
    blake2b_concat(blocks.iter().map(|b| &b[..]))
}

// ---------------------------------------------------------------------------------------
// Processes.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Js,
    Rust,
}

impl Side {
    /// `seed`, `clone` or (JS only) `peer`, with piped output and killed if dropped.
    fn command(self, tool: &str) -> Command {
        let cmd = match (self, tool) {
            (Side::Js, _) => hyperd_tests::node(&format!("{tool}.js")).unwrap(),
            (Side::Rust, "seed") => std::process::Command::new(env!("CARGO_BIN_EXE_rust-seed")),
            (Side::Rust, "clone") => std::process::Command::new(env!("CARGO_BIN_EXE_rust-clone")),
            (Side::Rust, other) => panic!("no Rust {other}"),
        };
        let mut cmd = Command::from(cmd);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// Collects a child's stderr in the background.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    text
}

/// Reads the next JSON line of a child's stdout, within `limit`.
async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>, limit: Duration) -> Option<Value> {
    let line = tokio::time::timeout(limit, lines.next_line())
        .await
        .ok()?
        .ok()??;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
}

/// A running `seed.js` or `rust-seed`.
struct Seeder {
    side: Side,
    child: Child,
    ready: Value,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Seeder {
    async fn start(side: Side, dir: &Path, args: &[&str]) -> Seeder {
        let mut cmd = side.command("seed");
        cmd.arg("--dir").arg(dir).args(args).stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = match next_json(&mut stdout, Duration::from_secs(60)).await {
            Some(ready) if ready["event"] == "ready" => ready,
            other => panic!(
                "{side:?} seeder did not start: {other:?}\n{}",
                stderr.lock().unwrap()
            ),
        };
        Seeder {
            side,
            child,
            ready,
            stdout,
            stderr,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.ready["port"])
    }

    fn key(&self) -> String {
        self.ready["key"].as_str().unwrap().to_string()
    }

    fn blake2b(&self) -> String {
        self.ready["blake2b"].as_str().unwrap().to_string()
    }

    fn length(&self) -> u64 {
        self.ready["length"].as_u64().unwrap()
    }

    /// The next stdout line (an `append` event).
    async fn next_line(&mut self, limit: Duration) -> Value {
        let side = self.side;
        next_json(&mut self.stdout, limit)
            .await
            .unwrap_or_else(|| panic!("{side:?} seeder printed nothing more"))
    }

    /// Closes stdin, which must make it exit 0 promptly; returns what it logged before
    /// (stopping destroys the connections still open, which `seed.js` logs as errors).
    async fn stop(mut self) -> String {
        let logs = self.stderr.lock().unwrap().clone();
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{:?} seeder ignored the end of stdin", self.side))
            .unwrap();
        let all = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "{:?} seeder: {status}\n{all}", self.side);
        logs
    }

    /// Like `stop`, and no connection may have ended in an error.
    async fn stop_clean(self) {
        let side = self.side;
        let logs = self.stop().await;
        assert!(
            !logs.contains("stream-error") && !logs.contains("socket-error"),
            "{side:?} seeder logged errors:\n{logs}"
        );
    }
}

/// Starts a seeder and tops it up segment by segment: for each `(blocks, size)` a run
/// appends blocks of `size` bytes until the feed has `blocks`, then (but for the last
/// run, which keeps serving) exits. This makes feeds of mixed block sizes with the
/// harness's own flags.
async fn build_seeder(
    side: Side,
    dir: PathBuf,
    segments: &[(u64, usize)],
    extra: &[&str],
) -> Seeder {
    let noise = seed_of(SEEDER_NOISE);
    for (i, (blocks, size)) in segments.iter().enumerate() {
        let (blocks, size) = (blocks.to_string(), size.to_string());
        let mut args = vec!["--seed", FEED_SEED, "--noise-seed", &noise];
        args.extend(["--blocks", &blocks, "--size", &size, "--quiet"]);
        if i + 1 == segments.len() {
            args.pop(); // the serving run logs its connections
            args.extend(extra);
            return Seeder::start(side, &dir, &args).await;
        }
        Seeder::start(side, &dir, &args).await.stop().await;
    }
    unreachable!("no segments")
}

/// A finished `clone.js` or `rust-clone`.
struct CloneRun {
    side: Side,
    what: String,
    out: Value,
    code: Option<i32>,
    stderr: String,
    wall: Duration,
}

impl fmt::Display for CloneRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} clone {} exited {:?} after {:?}\nstdout: {}\nstderr: {}",
            self.side, self.what, self.code, self.wall, self.out, self.stderr
        )
    }
}

impl CloneRun {
    fn u64(&self, field: &str) -> u64 {
        self.out[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field}: {self}"))
    }

    /// Exit 0, `ok`, the expected length, range and hash, a clean audit of exactly the
    /// blocks downloaded, and a verified signature for the latest length.
    fn assert_verified(&self, length: u64, range: (u64, u64), blake2b: &str) {
        assert_eq!(self.code, Some(0), "{self}");
        assert_eq!(self.out["ok"], true, "{self}");
        assert_eq!(self.out["blake2b"], blake2b, "{self}");
        assert_eq!(self.u64("length"), length, "{self}");
        assert_eq!((self.u64("start"), self.u64("end")), range, "{self}");
        assert_eq!(self.out["audit"]["invalid"], 0, "{self}");
        assert_eq!(
            self.out["audit"]["valid"], self.out["downloadedBlocks"],
            "{self}"
        );
        assert!(self.u64("downloadedBlocks") >= range.1 - range.0, "{self}");
        assert_eq!(self.u64("signatureIndex"), length - 1, "{self}");
        println!(
            "{:?} clone {}: {} blocks, {} bytes in {:?} (ms {}, {} MB/s)",
            self.side,
            self.what,
            self.out["downloadedBlocks"],
            self.out["rangeBytes"],
            self.wall,
            self.out["ms"],
            self.out["mbPerSec"]
        );
    }
}

/// Runs a clone of `seeder`'s feed into `dir` to completion (bounded by its `--timeout`
/// plus 20 s).
async fn run_clone(side: Side, seeder: &Seeder, dir: PathBuf, extra: &[&str]) -> CloneRun {
    run_clone_to(side, &seeder.key(), &seeder.addr(), dir, extra).await
}

async fn run_clone_to(side: Side, key: &str, addr: &str, dir: PathBuf, extra: &[&str]) -> CloneRun {
    let timeout_ms: u64 = extra
        .iter()
        .position(|a| *a == "--timeout")
        .map_or(30_000, |i| extra[i + 1].parse().unwrap());
    let mut cmd = side.command("clone");
    cmd.args(["--key", key, "--connect", addr, "--dir"])
        .arg(&dir)
        .args(extra)
        .stdin(Stdio::null());
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let limit = Duration::from_millis(timeout_ms) + Duration::from_secs(20);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{side:?} clone {extra:?} did not exit within {limit:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{side:?} clone must print exactly one line: {stdout}\n{stderr}"
    );
    CloneRun {
        side,
        what: format!(
            "into {} {}",
            dir.file_name().unwrap().to_string_lossy(),
            extra.join(" ")
        ),
        out: serde_json::from_str(lines[0]).unwrap(),
        code: output.status.code(),
        stderr,
        wall: started.elapsed(),
    }
}

/// The two clone tools print the same fields with the same values (timings aside).
fn assert_same_report(js: &CloneRun, rust: &CloneRun) {
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        if let Some(ms) = v["ms"].as_object() {
            k.extend(ms.keys().map(|m| format!("ms.{m}")));
        }
        k.sort();
        k
    };
    assert_eq!(keys(&js.out), keys(&rust.out), "{js}\n{rust}");
    for field in [
        "ok",
        "key",
        "discoveryKey",
        "remotePublicKey",
        "mode",
        "live",
        "length",
        "byteLength",
        "start",
        "end",
        "rangeBytes",
        "blake2b",
        "audit",
        "signatureIndex",
        "downloadedBlocks",
        "error",
        "downloaded",
        "remoteLength",
    ] {
        assert_eq!(js.out[field], rust.out[field], "{field}: {js}\n{rust}");
    }
}

/// The JS and Rust seeders hold the same feed: identical `ready` lines but for the port.
fn assert_same_feed(js: &Seeder, rust: &Seeder) {
    let mut a = js.ready.clone();
    let mut b = rust.ready.clone();
    a["port"] = Value::Null;
    b["port"] = Value::Null;
    assert_eq!(a, b, "ready lines differ");
    assert_eq!(
        a["noisePublicKey"].as_str().unwrap(),
        noise_key(SEEDER_NOISE).to_hex()
    );
}

// ---------------------------------------------------------------------------------------
// A Rust peer in this process: one replicator, any number of connections, dialing and
// accepting.

struct RustPeer {
    feed: Feed,
    replicator: Replicator,
    noise: NoiseKeyPair,
    live: bool,
    /// How the connections this peer accepted ended.
    accepted: Arc<Mutex<Vec<Result<(), String>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RustPeer {
    async fn open(dir: &Path, sparse: bool, live: bool, noise: u8) -> RustPeer {
        let feed = Feed::open(
            DiskStorage::new(dir),
            FeedOptions {
                key: Some(feed_key()),
                sparse,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        RustPeer {
            replicator: Replicator::new(feed.clone(), Default::default()),
            feed,
            noise: NoiseKeyPair::from_seed(&[noise; 32]),
            live,
            accepted: Arc::default(),
            tasks: Vec::new(),
        }
    }

    fn options(&self, initiator: bool) -> ReplicateOptions {
        ReplicateOptions {
            protocol: ProtocolOptions {
                initiator,
                live: self.live,
                keypair: Some(self.noise.clone()),
                ..Default::default()
            },
        }
    }

    /// Accepts connections on a free port (as the Noise responder); returns the address.
    async fn listen(&mut self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (replicator, options, accepted) = (
            self.replicator.clone(),
            self.options(false),
            self.accepted.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let (replicator, options, accepted) =
                    (replicator.clone(), options.clone(), accepted.clone());
                tokio::spawn(async move {
                    let result = replicate(&replicator, tcp, options).await;
                    accepted
                        .lock()
                        .unwrap()
                        .push(result.map_err(|e| e.to_string()));
                });
            }
        }));
        addr
    }

    /// Dials `addr` (as the Noise initiator) and replicates with it.
    fn dial(&self, addr: &str) -> JoinHandle<Result<(), hypercore_replication::Error>> {
        let (replicator, options, addr) = (
            self.replicator.clone(),
            self.options(true),
            addr.to_string(),
        );
        tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            replicate(&replicator, tcp, options).await
        })
    }

    /// Waits until blocks `[0, length)` are all stored.
    async fn wait_complete(&self, length: u64, limit: Duration) {
        let feed = &self.feed;
        let done = || feed.len() >= length && feed.has_range(0, length);
        tokio::time::timeout(limit, async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "Rust peer incomplete after {limit:?}: length {}, {} blocks stored, {:?}",
                feed.len(),
                feed.downloaded(0, None),
                self.replicator.stats()
            )
        });
    }

    /// Audit and hash of the whole feed.
    async fn verify(&self, blake2b: &str) {
        let audit = self.feed.audit().await.unwrap();
        assert_eq!(audit.invalid, 0);
        assert_eq!(audit.valid, self.feed.len());
        let (hash, _) = hash_range(&self.feed, 0, self.feed.len()).await.unwrap();
        assert_eq!(hash, blake2b);
        let sig = self.feed.signature(self.feed.len() - 1).unwrap();
        assert!(self.feed.verify(sig.index, &sig.signature).unwrap());
    }

    /// Blocks downloaded from the peer with this Noise key (while it is connected).
    fn downloaded_from(&self, peer: PeerKey) -> u64 {
        let stats = self.replicator.stats();
        let entry = stats.peers.iter().find(|p| p.remote_key == peer);
        entry.map_or(0, |p| p.traffic.downloaded_blocks)
    }

    fn uploaded_to(&self, peer: PeerKey) -> u64 {
        let stats = self.replicator.stats();
        let entry = stats.peers.iter().find(|p| p.remote_key == peer);
        entry.map_or(0, |p| p.traffic.uploaded_blocks)
    }

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
        let accepted = self.accepted.lock().unwrap();
        assert!(
            accepted.iter().all(Result::is_ok),
            "accepted connections failed: {accepted:?}"
        );
    }
}

/// A running `peer.js`: a JS clone that dials `connect` and accepts connections.
struct JsPeer {
    child: Child,
    addr: String,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl JsPeer {
    async fn start(dir: &Path, connect: &[&str], extra: &[&str]) -> JsPeer {
        let mut cmd = Side::Js.command("peer");
        let noise = seed_of(JS_PEER_NOISE);
        cmd.args([
            "--key",
            &feed_key().to_hex(),
            "--noise-seed",
            &noise,
            "--dir",
        ])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped());
        if !connect.is_empty() {
            cmd.args(["--connect", &connect.join(",")]);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = match next_json(&mut stdout, Duration::from_secs(30)).await {
            Some(line) if line["event"] == "listening" => line,
            other => panic!(
                "peer.js did not start: {other:?}\n{}",
                stderr.lock().unwrap()
            ),
        };
        assert_eq!(
            listening["noisePublicKey"],
            noise_key(JS_PEER_NOISE).to_hex()
        );
        JsPeer {
            child,
            addr: format!("127.0.0.1:{}", listening["port"]),
            stdout,
            stderr,
        }
    }

    /// Its result line: the range is stored, audited and hashed.
    async fn result(&mut self, limit: Duration) -> Value {
        match next_json(&mut self.stdout, limit).await {
            Some(line) if line["ok"] == true => line,
            other => panic!("peer.js failed: {other:?}\n{}", self.stderr.lock().unwrap()),
        }
    }

    /// Closes stdin, which must make it exit 0.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("peer.js ignored the end of stdin")
            .unwrap();
        let logs = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "peer.js: {status}\n{logs}");
        assert!(!logs.contains("stream-error"), "peer.js errors:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------
// Feed shapes: the same feed from a JS and a Rust seeder, cloned every way.

/// Clones a feed built from `segments` JS<-Rust, Rust<-JS and (if `rust_to_rust`)
/// Rust<-Rust, all at once (full mode, non-live, against live seeders), and checks all of
/// it.
async fn clone_every_way(segments: &[(u64, usize)], timeout_ms: u64, rust_to_rust: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (js, rust) = tokio::join!(
        build_seeder(Side::Js, tmp.path().join("js-seed"), segments, &[]),
        build_seeder(Side::Rust, tmp.path().join("rust-seed"), segments, &[])
    );
    assert_same_feed(&js, &rust);
    let (length, blake2b) = (js.length(), js.blake2b());
    let timeout = timeout_ms.to_string();
    let args = ["--timeout", timeout.as_str()];
    let (js_from_rust, rust_from_js, rust_from_rust) = tokio::join!(
        run_clone(Side::Js, &rust, tmp.path().join("js-from-rust"), &args),
        run_clone(Side::Rust, &js, tmp.path().join("rust-from-js"), &args),
        async {
            if rust_to_rust {
                Some(run_clone(Side::Rust, &rust, tmp.path().join("rust-from-rust"), &args).await)
            } else {
                None
            }
        },
    );
    for run in [
        Some(&js_from_rust),
        Some(&rust_from_js),
        rust_from_rust.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        run.assert_verified(length, (0, length), &blake2b);
    }
    assert_same_report(&js_from_rust, &rust_from_js);
    assert_eq!(
        js_from_rust.out["remotePublicKey"],
        noise_key(SEEDER_NOISE).to_hex()
    );
    tokio::join!(js.stop_clean(), rust.stop_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_one_block() {
    clone_every_way(&[(1, 1000)], 30_000, true).await;
}

/// A feed of one empty block (byte length 0). `clone.js` cannot clone it even from a JS
/// seeder: the block arrives, then reading it back fails with "Block not downloaded". It
/// fails the same way from the Rust seeder, and both Rust clones succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_one_empty_block() {
    let tmp = tempfile::tempdir().unwrap();
    let (js, rust) = tokio::join!(
        build_seeder(Side::Js, tmp.path().join("js-seed"), &[(1, 0)], &[]),
        build_seeder(Side::Rust, tmp.path().join("rust-seed"), &[(1, 0)], &[])
    );
    assert_same_feed(&js, &rust);
    let (js_from_js, js_from_rust, rust_from_js, rust_from_rust) = tokio::join!(
        run_clone(Side::Js, &js, tmp.path().join("js-from-js"), &[]),
        run_clone(Side::Js, &rust, tmp.path().join("js-from-rust"), &[]),
        run_clone(Side::Rust, &js, tmp.path().join("rust-from-js"), &[]),
        run_clone(Side::Rust, &rust, tmp.path().join("rust-from-rust"), &[]),
    );
    assert_eq!(js_from_js.code, Some(1), "{js_from_js}");
    assert_eq!(
        js_from_js.out["error"], "Block not downloaded",
        "{js_from_js}"
    );
    assert_eq!(js_from_rust.code, Some(1), "{js_from_rust}");
    assert_eq!(js_from_rust.out, js_from_js.out, "{js_from_rust}");
    for run in [&rust_from_js, &rust_from_rust] {
        run.assert_verified(1, (0, 1), &blake2b_concat([&[][..]]));
        assert_eq!(run.u64("rangeBytes"), 0);
    }
    tokio::join!(js.stop_clean(), rust.stop_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_odd_sizes_mixed() {
    // Sizes that are not multiples of 64 (and empty blocks), mixed: each segment appends
    // up to the given total with its size.
    let segments = [
        (3, 1),
        (5, 63),
        (8, 0),
        (13, 65),
        (14, 100_003),
        (40, 127),
        (41, 0),
        (60, 4097),
        (300, 1000),
        (301, 7),
    ];
    clone_every_way(&segments, 30_000, true).await;
}

/// 100,000 blocks of 10 bytes. Per-block costs dominate: an unoptimised Rust clone needs
/// about 20 s of CPU, a JS clone about 15 s, so this runs JS<-Rust and Rust<-JS only
/// (Rust<-Rust is covered by the other shapes), and its name sorts first so it starts
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_100k_small_blocks() {
    clone_every_way(&[(100_000, 10)], 150_000, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_4mib_blocks() {
    // Three blocks of exactly 4 MiB and one of 4 MiB + 1 (a Data message of over 4 MiB;
    // the frame limit is 8 MiB on both sides).
    clone_every_way(&[(3, 4 << 20), (4, (4 << 20) + 1)], 60_000, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_empty() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    // Non-live seeders: a one-shot session ends by itself only if both sides are one-shot.
    let (js, rust) = tokio::join!(
        build_seeder(
            Side::Js,
            tmp.path().join("js-seed"),
            &[(0, 1024)],
            &["--no-live"]
        ),
        build_seeder(
            Side::Rust,
            tmp.path().join("rust-seed"),
            &[(0, 1024)],
            &["--no-live"]
        )
    );
    assert_same_feed(&js, &rust);
    assert_eq!(js.length(), 0);
    assert_eq!(js.blake2b(), blake2b_concat([]));

    // A non-live Rust replication of an empty feed completes and ends, JS seed or Rust
    // seed.
    for (seeder, name) in [(&js, "js"), (&rust, "rust")] {
        let peer = RustPeer::open(
            &tmp.path().join(format!("lib-from-{name}")),
            false,
            false,
            1,
        )
        .await;
        let result = tokio::time::timeout(Duration::from_secs(15), peer.dial(&seeder.addr()))
            .await
            .unwrap_or_else(|_| panic!("Rust replication of the empty {name} feed did not end"))
            .unwrap();
        result.unwrap_or_else(|e| panic!("replicating the empty {name} feed: {e}"));
        assert_eq!(peer.feed.len(), 0);
        let audit = peer.feed.audit().await.unwrap();
        assert_eq!((audit.valid, audit.invalid), (0, 0));
        peer.stop();
    }

    // Both clone tools wait for a length of at least 1, so they time out on an empty feed:
    // JS<-JS (the reference), JS<-Rust, Rust<-JS and Rust<-Rust all fail the same way.
    let args = ["--timeout", "1500"];
    let runs = tokio::join!(
        run_clone(Side::Js, &js, tmp.path().join("js-from-js"), &args),
        run_clone(Side::Js, &rust, tmp.path().join("js-from-rust"), &args),
        run_clone(Side::Rust, &js, tmp.path().join("rust-from-js"), &args),
        run_clone(Side::Rust, &rust, tmp.path().join("rust-from-rust"), &args),
    );
    let (reference, others) = (&runs.0, [&runs.1, &runs.2, &runs.3]);
    assert_eq!(reference.code, Some(1), "{reference}");
    assert_eq!(
        reference.out["error"], "timeout after 1500 ms",
        "{reference}"
    );
    assert_eq!(reference.out["length"], 0, "{reference}");
    for run in others {
        assert_eq!(run.code, Some(1), "{run}");
        assert_same_report(reference, run);
    }
    tokio::join!(js.stop_clean(), rust.stop_clean());
}

// ---------------------------------------------------------------------------------------
// Sparse ranges.

/// Sparse clones of ranges of a 20,000-block feed served by `seed_side`, cloned by
/// `clone_side`: only the range is downloaded, the length is learned with hash requests.
async fn sparse_ranges(seed_side: Side, clone_side: Side) {
    const N: u64 = 20_000;
    const SIZE: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    let seeder = build_seeder(seed_side, tmp.path().join("seed"), &[(N, SIZE)], &[]).await;
    assert_eq!(seeder.blake2b(), expected_hash(0..N, SIZE));
    // First block, around the first bitfield page edge (8192), a middle run, the last
    // block, and a range ending at the length; each clone is told the hash to expect.
    let ranges = [(0, 1), (8190, 8194), (1000, 1100), (N - 1, N), (17_000, N)];
    let runs = futures::future::join_all(ranges.iter().map(|&(start, end)| {
        let dir = tmp.path().join(format!("clone-{start}-{end}"));
        let seeder = &seeder;
        async move {
            let (s, e) = (start.to_string(), end.to_string());
            let hash = expected_hash(start..end, SIZE);
            let args = ["--mode", "sparse", "--start", &s, "--end", &e];
            run_clone(
                clone_side,
                seeder,
                dir,
                &[&args[..], &["--expect-blake2b", &hash]].concat(),
            )
            .await
        }
    }))
    .await;
    for (run, &(start, end)) in runs.iter().zip(&ranges) {
        run.assert_verified(N, (start, end), &expected_hash(start..end, SIZE));
        assert_eq!(run.u64("downloadedBlocks"), end - start, "{run}");
        assert_eq!(run.out["mode"], "sparse");
    }
    // A range whose hash is not the one expected: the full report, `ok: false`, exit 1.
    let wrong = expected_hash(0..1, SIZE);
    let args = [
        "--mode",
        "sparse",
        "--start",
        "5",
        "--end",
        "6",
        "--expect-blake2b",
        &wrong,
    ];
    let run = run_clone(clone_side, &seeder, tmp.path().join("wrong"), &args).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.out["ok"], false, "{run}");
    assert_eq!(run.out["error"], "blake2b mismatch", "{run}");
    assert_eq!(run.out["blake2b"], expected_hash(5..6, SIZE), "{run}");
    assert_eq!(run.out["audit"]["invalid"], 0, "{run}");
    seeder.stop_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_ranges_rust_seed_js_clones() {
    sparse_ranges(Side::Rust, Side::Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_ranges_js_seed_rust_clones() {
    sparse_ranges(Side::Js, Side::Rust).await;
}

// ---------------------------------------------------------------------------------------
// Live clones while the seeder appends.

/// `seed_side` starts with 4000 blocks and appends 10 more, one every 100 ms, while a
/// full and a sparse live `clone_side` clone sync; both wait for the final length.
async fn live_appends(seed_side: Side, clone_side: Side) {
    const N: u64 = 4000;
    const MORE: u64 = 10;
    const SIZE: usize = 1024;
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["--append-interval", "100", "--append-count", "10"];
    let mut seeder = build_seeder(seed_side, tmp.path().join("seed"), &[(N, SIZE)], &extra).await;
    let want = (N + MORE).to_string();
    let from = (N - 5).to_string();
    let full_args = ["--live", "--expect-length", &want];
    let sparse_args = [
        "--live",
        "--mode",
        "sparse",
        "--start",
        &from,
        "--expect-length",
        &want,
    ];
    let (key, addr) = (seeder.key(), seeder.addr());
    let started = Instant::now();
    let appends = async {
        let mut lines = Vec::new();
        for _ in 0..MORE {
            let line = seeder.next_line(Duration::from_secs(30)).await;
            lines.push((started.elapsed(), line));
        }
        lines
    };
    let (full, sparse, appends) = tokio::join!(
        run_clone_to(clone_side, &key, &addr, tmp.path().join("full"), &full_args),
        run_clone_to(
            clone_side,
            &key,
            &addr,
            tmp.path().join("sparse"),
            &sparse_args
        ),
        appends,
    );
    // One `append` line per append, with the hash of the whole feed. `seed.js` hashes
    // asynchronously and prints the length current when the hash is done, so under load a
    // line may carry a later length than its hash covers; `rust-seed` appends and hashes
    // one at a time, so its lines are exact.
    let prefixes: Vec<String> = (N + 1..=N + MORE)
        .map(|l| expected_hash(0..l, SIZE))
        .collect();
    for (k, (_, line)) in appends.iter().enumerate() {
        assert_eq!(line["event"], "append", "{line}");
        let hash = line["blake2b"].as_str().unwrap();
        assert!(prefixes.iter().any(|p| p == hash), "{line}");
        if seed_side == Side::Rust {
            let length = N + 1 + k as u64;
            assert_eq!(line["length"], length, "{line}");
            assert_eq!(line["byteLength"], length * SIZE as u64);
            assert_eq!(hash, prefixes[k]);
        }
    }
    assert_eq!(appends.last().unwrap().1["length"], N + MORE);
    // The clones were started before the first append and waited for the last one: the
    // appends happened while they synced.
    let first_append = appends[0].0;
    for run in [&full, &sparse] {
        assert!(
            run.wall > first_append,
            "{run} ended before the first append"
        );
    }
    full.assert_verified(N + MORE, (0, N + MORE), &expected_hash(0..N + MORE, SIZE));
    assert_eq!(full.out["live"], true);
    sparse.assert_verified(
        N + MORE,
        (N - 5, N + MORE),
        &expected_hash(N - 5..N + MORE, SIZE),
    );
    assert_eq!(sparse.u64("downloadedBlocks"), MORE + 5, "{sparse}");
    seeder.stop_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_appends_rust_seed_js_clones() {
    live_appends(Side::Rust, Side::Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_appends_js_seed_rust_clones() {
    live_appends(Side::Js, Side::Rust).await;
}

// ---------------------------------------------------------------------------------------
// Meshes: clones that fetch from a seeder and from each other at once.

const MESH_BLOCKS: u64 = 4000;
const MESH_SIZE: usize = 2048;

/// Gives the Rust clone (dir `rust`) the first half of the feed and the JS clone (dir
/// `js`) the second half, fetched with the sparse clone tools, so that each then needs
/// what the other has.
async fn prepare_halves(seeder: &Seeder, tmp: &Path) {
    let half = (MESH_BLOCKS / 2).to_string();
    let n = MESH_BLOCKS.to_string();
    let first = ["--mode", "sparse", "--start", "0", "--end", &half];
    let second = ["--mode", "sparse", "--start", &half, "--end", &n];
    let (r, j) = tokio::join!(
        run_clone(Side::Rust, seeder, tmp.join("rust"), &first),
        run_clone(Side::Js, seeder, tmp.join("js"), &second),
    );
    let h = MESH_BLOCKS / 2;
    r.assert_verified(MESH_BLOCKS, (0, h), &expected_hash(0..h, MESH_SIZE));
    j.assert_verified(
        MESH_BLOCKS,
        (h, MESH_BLOCKS),
        &expected_hash(h..MESH_BLOCKS, MESH_SIZE),
    );
}

/// Checks the mesh's outcome: both clones complete and verified, each fetched blocks from
/// the seeder and from the other.
async fn check_mesh(rust: &RustPeer, js: &mut JsPeer, blake2b: &str) {
    rust.wait_complete(MESH_BLOCKS, Duration::from_secs(60))
        .await;
    rust.verify(blake2b).await;
    let result = js.result(Duration::from_secs(60)).await;
    assert_eq!(result["blake2b"], blake2b, "{result}");
    assert_eq!(result["audit"]["invalid"], 0, "{result}");
    assert_eq!(result["audit"]["valid"], MESH_BLOCKS, "{result}");
    assert_eq!(result["downloadedBlocks"], MESH_BLOCKS / 2, "{result}");
    let (seeder_key, js_key, rust_key) = (
        noise_key(SEEDER_NOISE),
        noise_key(JS_PEER_NOISE),
        noise_key(RUST_PEER_NOISE),
    );
    let js_from = |k: PeerKey| {
        result["peers"][k.to_hex()]["downloadedBlocks"]
            .as_u64()
            .unwrap_or(0)
    };
    println!(
        "mesh: Rust clone got {} blocks from the seeder, {} from the JS clone and sent it {}; \
         the JS clone got {} from the seeder and {} from the Rust clone",
        rust.downloaded_from(seeder_key),
        rust.downloaded_from(js_key),
        rust.uploaded_to(js_key),
        js_from(seeder_key),
        js_from(rust_key),
    );
    assert_eq!(
        rust.replicator.stats().totals.downloaded_blocks,
        MESH_BLOCKS / 2
    );
    assert!(rust.downloaded_from(seeder_key) > 0);
    assert!(rust.downloaded_from(js_key) > 0);
    assert!(rust.uploaded_to(js_key) > 0);
    assert_eq!(
        js_from(seeder_key) + js_from(rust_key),
        MESH_BLOCKS / 2,
        "{result}"
    );
    assert!(js_from(seeder_key) > 0, "{result}");
    assert!(js_from(rust_key) > 0, "{result}");
}

/// A JS seeder; the JS clone (`peer.js`) listens and dials the seeder; the Rust clone
/// dials both. All connections live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_js_seed_rust_clone_dials_js_clone() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let seeder = build_seeder(
        Side::Js,
        tmp.path().join("seed"),
        &[(MESH_BLOCKS, MESH_SIZE)],
        &[],
    )
    .await;
    prepare_halves(&seeder, tmp.path()).await;
    let mut js = JsPeer::start(&tmp.path().join("js"), &[&seeder.addr()], &["--live"]).await;
    let mut rust = RustPeer::open(&tmp.path().join("rust"), false, true, RUST_PEER_NOISE).await;
    let to_seeder = rust.dial(&seeder.addr());
    let to_js = rust.dial(&js.addr);
    rust.listen().await;
    check_mesh(&rust, &mut js, &seeder.blake2b()).await;
    assert!(
        !to_seeder.is_finished() && !to_js.is_finished(),
        "live connections ended"
    );
    to_seeder.abort();
    to_js.abort();
    rust.stop();
    js.stop().await;
    seeder.stop_clean().await;
}

/// A Rust seeder; the Rust clone listens, the JS clone dials it and the seeder, and once
/// the JS clone is connected the Rust clone dials the seeder too. All connections live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_rust_seed_js_clone_dials_rust_clone() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let seeder = build_seeder(
        Side::Rust,
        tmp.path().join("seed"),
        &[(MESH_BLOCKS, MESH_SIZE)],
        &[],
    )
    .await;
    prepare_halves(&seeder, tmp.path()).await;
    let mut rust = RustPeer::open(&tmp.path().join("rust"), false, true, RUST_PEER_NOISE).await;
    let rust_addr = rust.listen().await;
    let mut js = JsPeer::start(
        &tmp.path().join("js"),
        &[&seeder.addr(), &rust_addr],
        &["--live"],
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), rust.replicator.wait_for_peers(1))
        .await
        .expect("the JS clone did not connect");
    let to_seeder = rust.dial(&seeder.addr());
    check_mesh(&rust, &mut js, &seeder.blake2b()).await;
    assert!(!to_seeder.is_finished(), "live connection ended");
    to_seeder.abort();
    rust.stop();
    js.stop().await;
    seeder.stop_clean().await;
}

/// Without a seeder and without live mode: the Rust and the JS clone hold complementary
/// halves, replicate with each other (both downloading and uploading), complete, and the
/// one-shot session ends on both sides. Run with the Rust clone as initiator, then as
/// responder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_exchanged_between_rust_and_js_clones_non_live() {
    init_tracing();
    for rust_dials in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let seeder = build_seeder(
            Side::Js,
            tmp.path().join("seed"),
            &[(MESH_BLOCKS, MESH_SIZE)],
            &[],
        )
        .await;
        let blake2b = seeder.blake2b();
        prepare_halves(&seeder, tmp.path()).await;
        seeder.stop_clean().await;

        let mut rust =
            RustPeer::open(&tmp.path().join("rust"), false, false, RUST_PEER_NOISE).await;
        let (mut js, dialed) = if rust_dials {
            let js = JsPeer::start(&tmp.path().join("js"), &[], &[]).await;
            let session = rust.dial(&js.addr);
            (js, Some(session))
        } else {
            let addr = rust.listen().await;
            (
                JsPeer::start(&tmp.path().join("js"), &[&addr], &[]).await,
                None,
            )
        };
        rust.wait_complete(MESH_BLOCKS, Duration::from_secs(60))
            .await;
        let result = js.result(Duration::from_secs(60)).await;
        assert_eq!(result["blake2b"], blake2b, "{result}");
        assert_eq!(result["downloadedBlocks"], MESH_BLOCKS / 2, "{result}");
        assert_eq!(
            result["peers"][noise_key(RUST_PEER_NOISE).to_hex()]["downloadedBlocks"],
            MESH_BLOCKS / 2,
            "{result}"
        );
        rust.verify(&blake2b).await;
        let totals = rust.replicator.stats().totals;
        assert_eq!(totals.downloaded_blocks, MESH_BLOCKS / 2);
        assert!(totals.uploaded_blocks >= MESH_BLOCKS / 2);
        // One-shot: the session ends by itself, without error, once both sides have
        // everything.
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            match dialed {
                Some(session) => session.await.unwrap().map_err(|e| e.to_string()),
                None => loop {
                    if let Some(r) = rust.accepted.lock().unwrap().first() {
                        break r.clone();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
            }
        })
        .await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "one-shot session (Rust dials: {rust_dials}): {ended:?}"
        );
        assert_eq!(rust.replicator.peer_count(), 0);
        rust.stop();
        js.stop().await;
    }
}

/// One-shot sessions between a writer and a clone end by themselves, whichever side is
/// JS: a Rust clone of a `--no-live` JS seeder (`replicate` returns `Ok`), and a JS clone
/// (`peer.js`, which does not hang up itself) of a `--no-live` Rust seeder (the seeder
/// logs the close while the JS clone is still running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_live_sessions_end_by_themselves() {
    init_tracing();
    const N: u64 = 1500;
    const SIZE: usize = 700;
    let tmp = tempfile::tempdir().unwrap();
    let (js, rust) = tokio::join!(
        build_seeder(
            Side::Js,
            tmp.path().join("js-seed"),
            &[(N, SIZE)],
            &["--no-live"]
        ),
        build_seeder(
            Side::Rust,
            tmp.path().join("rust-seed"),
            &[(N, SIZE)],
            &["--no-live"]
        )
    );
    assert_same_feed(&js, &rust);
    let blake2b = expected_hash(0..N, SIZE);
    assert_eq!(js.blake2b(), blake2b);

    let peer = RustPeer::open(
        &tmp.path().join("rust-clone"),
        false,
        false,
        RUST_PEER_NOISE,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), peer.dial(&js.addr()))
        .await
        .expect("the one-shot session with the JS seeder did not end")
        .unwrap()
        .unwrap();
    peer.wait_complete(N, Duration::from_secs(1)).await;
    peer.verify(&blake2b).await;
    assert_eq!(peer.replicator.stats().totals.downloaded_blocks, N);
    peer.stop();

    let mut clone = JsPeer::start(&tmp.path().join("js-clone"), &[&rust.addr()], &[]).await;
    let result = clone.result(Duration::from_secs(30)).await;
    assert_eq!(result["blake2b"], blake2b, "{result}");
    assert_eq!(result["audit"]["valid"], N, "{result}");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while !rust.stderr.lock().unwrap().contains(r#""event":"close""#) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the Rust seeder's one-shot session did not end:\n{}",
        rust.stderr.lock().unwrap()
    );
    clone.stop().await;
    tokio::join!(js.stop_clean(), rust.stop_clean());
}

// ---------------------------------------------------------------------------------------
// The Rust tools behave like the JS ones outside replication too.

/// Runs a tool to completion with stdin from /dev/null; returns (exit code, stdout, stderr).
async fn run_tool(side: Side, tool: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = side.command(tool);
    cmd.args(args).stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{side:?} {tool} {args:?} did not exit"))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Usage and help exit codes, error lines, and the seeder's lifetime rules, side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_share_exit_codes_errors_and_lifetime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    for side in [Side::Js, Side::Rust] {
        for tool in ["seed", "clone"] {
            // No arguments: usage on stderr, exit 2; --help: exit 0.
            let (code, out, err) = run_tool(side, tool, &[]).await;
            assert_eq!(
                (code, out.as_str()),
                (Some(2), ""),
                "{side:?} {tool}: {err}"
            );
            assert!(err.starts_with("usage: "), "{side:?} {tool}: {err}");
            assert_eq!(run_tool(side, tool, &["--help"]).await.0, Some(0));
        }
    }

    // Errors print one JSON line and exit 1, with the same message where it is ours.
    let bad_key = [
        "--key",
        "zz",
        "--connect",
        "127.0.0.1:1",
        "--dir",
        &dir("k"),
    ];
    let (js, rust) = tokio::join!(
        run_tool(Side::Js, "clone", &bad_key),
        run_tool(Side::Rust, "clone", &bad_key)
    );
    assert_eq!(js.0, Some(1));
    assert_eq!((js.0, &js.1), (rust.0, &rust.1));
    assert_eq!(
        js.1,
        "{\"ok\":false,\"error\":\"--key must be 32 bytes of hex\"}\n"
    );

    // Nobody listening: the failure line of an open feed (the errors are the platforms').
    let key = feed_key().to_hex();
    let (js_dir, rust_dir) = (dir("js-refused"), dir("rust-refused"));
    let refused = |d| {
        [
            "--key",
            key.as_str(),
            "--connect",
            "127.0.0.1:1",
            "--dir",
            d,
        ]
    };
    let (js_args, rust_args) = (refused(&js_dir), refused(&rust_dir));
    let (js, rust) = tokio::join!(
        run_tool(Side::Js, "clone", &js_args),
        run_tool(Side::Rust, "clone", &rust_args)
    );
    let (js_out, rust_out): (Value, Value) = (
        serde_json::from_str(&js.1).unwrap(),
        serde_json::from_str(&rust.1).unwrap(),
    );
    assert_eq!((js.0, rust.0), (Some(1), Some(1)), "{js:?} {rust:?}");
    for field in [
        "ok",
        "key",
        "length",
        "byteLength",
        "downloaded",
        "remoteLength",
    ] {
        assert_eq!(
            js_out[field], rust_out[field],
            "{field}: {js_out} {rust_out}"
        );
    }
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&js_out), keys(&rust_out));

    // A seeder on a feed it cannot write to.
    let read_only = dir("read-only");
    let feed = Feed::open(
        DiskStorage::new(&read_only),
        FeedOptions {
            key: Some(feed_key()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    feed.close().await.unwrap();
    for side in [Side::Js, Side::Rust] {
        let (code, out, _) = run_tool(side, "seed", &["--dir", &read_only]).await;
        assert_eq!(code, Some(1), "{side:?}");
        let line: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(line["event"], "error");
        assert_eq!(
            line["error"],
            format!("feed in {read_only} is not writable (no secret key stored)")
        );
    }

    // With stdin that is not a pipe, a seeder ignores it and runs until SIGTERM (exit 0).
    for side in [Side::Js, Side::Rust] {
        let mut cmd = side.command("seed");
        cmd.args(["--dir", &dir(&format!("{side:?}-term")), "--blocks", "3"])
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = next_json(&mut stdout, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(ready["length"], 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "{side:?} seeder quit early"
        );
        let pid = child.id().unwrap().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{side:?} seeder ignored SIGTERM"))
            .unwrap();
        assert_eq!(status.code(), Some(0), "{side:?}");
    }
}
