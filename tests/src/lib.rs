//! Helpers shared by the project's cross-crate tests and benchmarks: running the real JS
//! peers in `tests/interop/` and generating the same deterministic block contents they do,
//! and local folder trees to import and export.

pub mod bench;
pub mod cli;
pub mod daemon;
pub mod hyperdrive_daemon;
pub mod js_peer;
pub mod netns;
pub mod raw_peer;
pub mod swarm;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The JS harness directory (`tests/interop`).
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// A `node` command running `script` from the JS harness. Fails loudly if the harness's
/// npm modules are not installed, so an interop test can never pass by not running.
pub fn node(script: &str) -> Result<Command> {
    let dir = interop_dir();
    if !dir.join("node_modules/hypercore").exists() {
        bail!(
            "the JS interop harness is not installed: run `npm ci --prefix {}` (scripts/test does this)",
            dir.display()
        );
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).current_dir(&dir);
    Ok(cmd)
}

/// Runs a harness script to completion and parses the last line of its stdout as JSON.
pub fn run_node_json(script: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = node(script)?
        .args(args)
        .output()
        .with_context(|| format!("running node {script}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "node {script} {} failed ({}):\nstdout: {stdout}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let last = stdout.lines().last().context("no output")?;
    serde_json::from_str(last).with_context(|| format!("parsing output of node {script}: {last}"))
}

/// Retries `check` every 100 ms until it returns `Some`, for at most `limit`; panics
/// naming `what` if it never does.
pub fn eventually<T>(
    limit: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Deterministic block content shared with the JS harness: byte `j` of block `i` is
/// `(7i + j) mod 251`.
pub fn make_block(index: u64, size: usize) -> Vec<u8> {
    // One period of the sequence, copied as often as needed: much faster than a byte at a
    // time in unoptimised test builds, where the crash test makes megabytes of blocks.
    let first = ((7 * index) % 251) as u8;
    let period: Vec<u8> = (first..251).chain(0..first).collect();
    let mut block = Vec::with_capacity(size);
    while block.len() < size {
        let n = (size - block.len()).min(period.len());
        block.extend_from_slice(&period[..n]);
    }
    block
}

/// Generated file `n` of the JS drive peer (`drive-peer.js`): byte `i` is
/// `(31 n + i) mod 251`.
pub fn pattern(n: u64, size: usize) -> Vec<u8> {
    let first = ((31 * n) % 251) as u8;
    (first..251).chain(0..first).cycle().take(size).collect()
}

/// Content of a file the drive crash test writes (`drive-writer`, `tests/drive_crash.rs`):
/// a first line `<tag> <len>`, then `len` bytes of [`make_block`] keyed by the tag, so a
/// reader tells from a file's bytes which write made it and checks every byte.
pub fn crash_file(tag: &str, len: usize) -> Vec<u8> {
    let mut data = format!("{tag} {len}\n").into_bytes();
    let key = blake2b_simd::blake2b(tag.as_bytes());
    let mut index = [0; 8];
    index.copy_from_slice(&key.as_bytes()[..8]);
    data.extend(make_block(u64::from_le_bytes(index) % 251, len));
    data
}

/// The tag of a file made by [`crash_file`], if `data` is exactly such a file.
pub fn crash_file_tag(data: &[u8]) -> Option<&str> {
    let end = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&data[..end]).ok()?;
    let (tag, len) = line.rsplit_once(' ')?;
    let len: usize = len.parse().ok()?;
    (data.len() - end - 1 == len && crash_file(tag, len) == data).then_some(tag)
}

/// Unkeyed BLAKE2b-256 over the concatenation of `blocks`, as the harness reports it.
pub fn blake2b_concat<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut st = blake2b_simd::Params::new().hash_length(32).to_state();
    for b in blocks {
        st.update(b);
    }
    hypercore::crypto::to_hex(st.finalize().as_bytes())
}

/// Seed of the key pair of the crash test's feed (`crash-writer` and `tests/crash.rs`).
pub const CRASH_KEY_SEED: [u8; 32] = *b"hyperd crash test fixed key seed";

/// Size of block `index` in the crash test's feed (`crash-writer` and `tests/crash.rs`), a
/// function of the index alone so a reader can check any block without knowing how the
/// writer batched it: about one block in eight is empty, one in twenty-four is ~100 KiB
/// (so a batch of a few hundred blocks can cross the 1 MiB mark above which an append
/// hashes and writes on two threads), and the rest hold 1 to 600 bytes.
pub fn crash_block_size(index: u64) -> usize {
    // splitmix64: a well-mixed hash of the index.
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    match z % 24 {
        0..=2 => 0,
        3 => 96 * 1024 + (z >> 32) as usize % 8192,
        _ => 1 + (z >> 16) as usize % 600,
    }
}

/// Block indexes drawn at random the way the JS harness draws them (`bench-core.js`,
/// `clone.js --gets`): xorshift32 from `seed` (0 counts as 1), each value modulo `n`.
pub fn random_indexes(seed: u32, count: u64, n: u64) -> Vec<u64> {
    let mut rng = XorShift32::new(seed);
    (0..count).map(|_| u64::from(rng.next()) % n).collect()
}

/// `count` distinct block indexes in `[start, end)`, in the order drawn: the same xorshift32
/// sequence as [`random_indexes`], each value modulo `end - start`, repeats skipped (as
/// `clone.js --gets` draws them). Fails if the range holds fewer than `count` blocks.
pub fn distinct_random_indexes(seed: u32, count: u64, start: u64, end: u64) -> Result<Vec<u64>> {
    let n = end.saturating_sub(start);
    if count > n {
        bail!("cannot draw {count} distinct blocks from {start}..{end}");
    }
    let mut rng = XorShift32::new(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count as usize);
    while (out.len() as u64) < count {
        let i = start + u64::from(rng.next()) % n;
        if seen.insert(i) {
            out.push(i);
        }
    }
    Ok(out)
}

/// xorshift32 (13, 17, 5): tiny, and trivially the same in JS.
struct XorShift32(u32);

impl XorShift32 {
    fn new(seed: u32) -> Self {
        XorShift32(if seed == 0 { 1 } else { seed })
    }

    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// CPU time (user + system, all threads) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (`None`: this process). Resolution: one clock tick (10 ms: Linux
/// reports these fields in USER_HZ = 100 units on every architecture it runs on).
pub fn process_cpu_seconds(pid: Option<u32>) -> Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after
    // its closing parenthesis, where field 3 (state) starts; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("parsing {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("parsing field {} of {path}", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The store in `dir` and its default drive (keep the store to close it after).
pub async fn open_default_drive(dir: &Path) -> Result<(corestore::Corestore, hyperdrive::Drive)> {
    let store = corestore::Corestore::open(dir, corestore::CorestoreOptions::default()).await?;
    let drive =
        hyperdrive::Drive::default_drive(&store, hyperdrive::DriveOptions::default()).await?;
    Ok((store, drive))
}
