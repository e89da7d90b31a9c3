//! Crash safety of drive writes: the `drive-writer` binary writes files into a drive
//! through write streams, file handles and `write_file`, and is killed with SIGKILL at a
//! random moment; the store is then reopened in this process, and:
//!
//! - every file the writer reported done reads back complete with its bytes (or a newer
//!   version of the same path that the writer had begun);
//! - no file is half visible: every Stat in the drive points inside the content feed and
//!   its file reads fully, as exactly one version some write made;
//! - the drive still writes: a new file reads back, and again after another reopen.
//!
//! The next writer continues the same store, so each round also checks that a drive that
//! recovered recovers again. The writer pauses between chunks and between its content
//! appends and its Stat put, so kills land in every phase of a write; each run prints where
//! its kills landed (`cargo test --test drive_crash -- --nocapture`) and its seed
//! (`DRIVE_CRASH_SEED=<seed>` repeats its choices; `DRIVE_CRASH_ROUNDS` sets the rounds).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use corestore::{Corestore, CorestoreOptions};
use hyperd_tests::{blake2b_concat, crash_file_tag};
use hyperdrive::{Drive, DriveOptions, ReaddirOptions, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WRITER: &str = env!("CARGO_BIN_EXE_drive-writer");
const SIGKILL: i32 = 9;
const ROUNDS: u32 = 30;

/// Where the kill found the file being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Between files (or before the first).
    Idle,
    /// Its content was being appended (`begin` or `appended` last).
    Appending,
    /// All its content was appended, its Stat not put yet (`flushed` last).
    BeforePut,
    /// In the call that puts its Stat (`putting` last).
    Putting,
}

/// What the writers said over all rounds.
#[derive(Default)]
struct Log {
    /// Per path, the tags of the writes begun there, in order.
    begun: HashMap<String, Vec<String>>,
    /// Per path, the tag of the last write reported done, with its length and hash.
    done: HashMap<String, (String, usize, String)>,
}

/// One round's writer output: the file in flight when it was killed, and its phase.
struct Round {
    in_flight: Option<(String, String)>,
    phase: Phase,
    files_done: u32,
}

fn parse(lines: &[String], log: &mut Log) -> Round {
    let mut round = Round {
        in_flight: None,
        phase: Phase::Idle,
        files_done: 0,
    };
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["opened", _] => {}
            ["begin", _way, path, tag] => {
                log.begun
                    .entry(path.to_string())
                    .or_default()
                    .push(tag.to_string());
                round.in_flight = Some((path.to_string(), tag.to_string()));
                round.phase = Phase::Appending;
            }
            ["appended", _, _] => round.phase = Phase::Appending,
            ["flushed", _] => round.phase = Phase::BeforePut,
            ["putting", _] => round.phase = Phase::Putting,
            ["done", path, tag, len, sum] => {
                let len = len.parse().unwrap();
                log.done
                    .insert(path.to_string(), (tag.to_string(), len, sum.to_string()));
                round.in_flight = None;
                round.phase = Phase::Idle;
                round.files_done += 1;
            }
            _ => panic!("bad line from drive-writer: {line:?}"),
        }
    }
    round
}

/// Spawns a writer on `dir`, waits for it to open the drive, lets it write for `delay`
/// and SIGKILLs it; returns what it printed.
fn run_writer(dir: &Path, seed: u64, delay: Duration) -> Vec<String> {
    let mut child = Command::new(WRITER)
        .arg(dir)
        .arg(seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning drive-writer");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.starts_with("opened ")) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "drive-writer did not open the drive ({e}); stderr:\n{}",
                    stderr.join().unwrap()
                );
            }
        }
    }
    std::thread::sleep(delay);
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "drive-writer was not killed but exited by itself ({status}); stderr:\n{stderr}"
    );
    seen.extend(lines.iter());
    seen
}

async fn open(dir: &Path) -> Result<(Corestore, Drive)> {
    let store = Corestore::open(dir, CorestoreOptions::default())
        .await
        .context("reopening the store")?;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .context("reopening the drive")?;
    Ok((store, drive))
}

/// The tag of the write whose bytes the file at `path` holds, checking every byte.
async fn tag_of(drive: &Drive, path: &str) -> Result<String> {
    let data = drive
        .read_file(path)
        .await
        .with_context(|| format!("reading {path}"))?;
    let tag = crash_file_tag(&data)
        .with_context(|| format!("{path}: {} bytes that no write made", data.len()))?;
    Ok(tag.to_string())
}

/// Checks the reopened drive against what the writers said; returns whether the file in
/// flight (if any) is visible as the version that was being written.
async fn check(dir: &Path, log: &Log, round: &Round, check_files: &[String]) -> Result<bool> {
    let (store, drive) = open(dir).await?;
    ensure!(
        drive.writable(),
        "the drive is not writable after reopening"
    );
    let content = drive.content_feed().await?.clone();
    let (blocks, bytes) = (content.len(), content.byte_len());

    // Every Stat points inside the content feed, and every file reads as one whole
    // version begun at its path.
    let all = ReaddirOptions {
        recursive: true,
        no_mounts: false,
    };
    let mut files = 0;
    for entry in drive.readdir_stats("/", all).await? {
        let path = format!("/{}", entry.name);
        let stat = &entry.stat;
        if !stat.is_file() || stat.is_symlink() {
            continue;
        }
        files += 1;
        let end = stat.offset.checked_add(stat.blocks);
        ensure!(
            end.is_some_and(|e| e <= blocks),
            "{path}: blocks {}..+{} past the content feed's {blocks}",
            stat.offset,
            stat.blocks
        );
        ensure!(
            stat.byte_offset
                .checked_add(stat.size)
                .is_some_and(|e| e <= bytes),
            "{path}: bytes {}..+{} past the content feed's {bytes}",
            stat.byte_offset,
            stat.size
        );
        if check_files.contains(&path) {
            continue;
        }
        let tag = tag_of(&drive, &path).await?;
        let begun = log.begun.get(&path).map(Vec::as_slice).unwrap_or_default();
        ensure!(
            begun.contains(&tag),
            "{path} holds the bytes of write {tag}, never begun there"
        );
    }
    // Every file reported done is there, as that write or a later one at its path.
    for (path, (tag, len, sum)) in &log.done {
        let found = tag_of(&drive, path).await?;
        let begun = &log.begun[path];
        let position = |t: &str| begun.iter().rposition(|b| b == t);
        ensure!(
            position(&found) >= position(tag),
            "{path}: holds write {found}, older than {tag} which was reported done"
        );
        if found == *tag {
            let data = drive.read_file(path).await?;
            ensure!(
                data.len() == *len && blake2b_concat([&data[..]]) == *sum,
                "{path}: not the {len} bytes reported done"
            );
        }
    }
    for path in check_files {
        let data = drive.read_file(path).await?;
        ensure!(data == path.as_bytes(), "{path}: the check file differs");
    }
    ensure!(
        files >= log.done.len() + check_files.len(),
        "{files} files, fewer than those reported"
    );
    let visible = match &round.in_flight {
        Some((path, tag)) => match drive.stat(path).await {
            Ok(_) => tag_of(&drive, path).await? == *tag,
            Err(hyperdrive::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        },
        None => false,
    };
    drop(drive);
    store.close().await?;
    Ok(visible)
}

/// The drive still writes: a new file reads back, and again after reopening.
async fn writes_again(dir: &Path, path: &str) -> Result<()> {
    let (store, drive) = open(dir).await?;
    drive
        .write_file(path, path.as_bytes(), WriteOptions::default())
        .await
        .with_context(|| format!("writing {path}"))?;
    ensure!(drive.read_file(path).await? == path.as_bytes());
    drop(drive);
    store.close().await?;
    let (store, drive) = open(dir).await?;
    ensure!(
        drive.read_file(path).await? == path.as_bytes(),
        "{path} after reopening"
    );
    drop(drive);
    store.close().await?;
    Ok(())
}

#[test]
fn kill_9_during_drive_writes_leaves_whole_files_only() {
    let seed = match std::env::var("DRIVE_CRASH_SEED") {
        Ok(s) => s.parse().expect("DRIVE_CRASH_SEED must be a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let rounds = std::env::var("DRIVE_CRASH_ROUNDS")
        .map(|r| r.parse().expect("DRIVE_CRASH_ROUNDS must be a number"))
        .unwrap_or(ROUNDS);
    println!("drive_crash: seed {seed} (DRIVE_CRASH_SEED={seed} repeats its choices)");
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut log = Log::default();
    let mut check_files = Vec::new();
    let mut phases: BTreeMap<(Phase, bool), u32> = BTreeMap::new();
    let mut files_done = 0;
    let started = Instant::now();
    for i in 0..rounds {
        let writer_seed = rng.gen_range(0..1_000_000);
        // Mostly early in a run, some late: kills land within a file's first chunks as
        // well as after several files.
        let delay = Duration::from_millis(match rng.gen_range(0..4) {
            0 => rng.gen_range(0..100),
            1 | 2 => rng.gen_range(100..800),
            _ => rng.gen_range(800..2500),
        });
        let lines = run_writer(&dir, writer_seed, delay);
        let round = parse(&lines, &mut log);
        files_done += round.files_done;
        let context = format!(
            "round {i}: writer seed {writer_seed}, killed {delay:?} after it opened, in \
             phase {:?} of {:?}",
            round.phase, round.in_flight
        );
        let visible = rt
            .block_on(check(&dir, &log, &round, &check_files))
            .unwrap_or_else(|e| panic!("{context}: {e:#}"));
        let check_file = format!("/check/{i}");
        rt.block_on(writes_again(&dir, &check_file))
            .unwrap_or_else(|e| panic!("{context}: writing after the kill: {e:#}"));
        check_files.push(check_file);
        *phases.entry((round.phase, visible)).or_default() += 1;
    }
    println!(
        "drive_crash: {rounds} rounds in {:?}, {files_done} files reported done, {} paths",
        started.elapsed(),
        log.begun.len()
    );
    println!("drive_crash: where the kills landed (phase, the file in flight visible after):");
    for ((phase, visible), n) in &phases {
        println!("drive_crash:   {n:3} x {phase:?}, visible: {visible}");
    }
    let in_flight: u32 = phases
        .iter()
        .filter(|((p, _), _)| *p != Phase::Idle)
        .map(|(_, n)| n)
        .sum();
    assert!(
        in_flight * 2 >= rounds,
        "only {in_flight} of {rounds} kills landed during a write"
    );
}
