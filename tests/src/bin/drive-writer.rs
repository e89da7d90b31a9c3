//! Writes files into a drive forever, for `tests/drive_crash.rs` to kill with SIGKILL at
//! random moments.
//!
//! ```text
//! drive-writer <store dir> <seed> [--pause-ms N]
//! ```
//!
//! Opens (or reopens) the corestore in `<store dir>` and its default drive, prints
//! `opened <version>`, then loops: picks a path (a new one, or one this process wrote
//! before), a size and a way to write, and writes [`crash_file`]`(tag, size)` there, the
//! tag being `<seed>-<n>`. The ways: a write stream of chunks (`stream`), a file handle
//! appending chunk after chunk and sometimes rewriting a range in the middle (`handle`),
//! and one `write_file` (`whole`). Each step is printed, and flushed, before or after it
//! happens:
//!
//! ```text
//! begin <way> <path> <tag>      before anything of the file is written
//! appended <tag> <bytes>        after a chunk reached the content feed (stream, handle)
//! flushed <tag>                 after the last content append, before the Stat is put
//! putting <tag>                 right before the call that puts the Stat
//! done <path> <tag> <len> <blake2b of the file's bytes>   once that call returned
//! ```
//!
//! Between chunks, after `flushed`, between the put and `done`, and between files it
//! pauses a random 0..=N ms (default 20), so that kills land in every phase of a write.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use hyperd_tests::{blake2b_concat, crash_file};
use hyperdrive::{Drive, DriveOptions, OpenFlags, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Args {
    dir: PathBuf,
    seed: u64,
    pause_ms: u64,
}

fn parse_args() -> Result<Args> {
    let usage = "usage: drive-writer <store dir> <seed> [--pause-ms N]";
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().context(usage)?);
    let seed = it.next().context(usage)?.parse().context("seed")?;
    let mut args = Args {
        dir,
        seed,
        pause_ms: 20,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pause-ms" => args.pause_ms = value.parse().context("--pause-ms")?,
            other => bail!("unknown option {other:?}\n{usage}"),
        }
    }
    Ok(args)
}

/// Prints one line with a single write, so a kill cannot leave half of it in the pipe.
fn say(line: std::fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())?;
    out.flush().context("flushing stdout")
}

struct Writer {
    drive: Drive,
    rng: StdRng,
    pause_ms: u64,
}

impl Writer {
    async fn pause(&mut self) {
        let ms = self.rng.gen_range(0..=self.pause_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Cuts `data` into chunks of 1 byte to 150 KB.
    fn chunks(&mut self, data: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let end = (at + self.rng.gen_range(1..=150_000)).min(data.len());
            out.push(Bytes::copy_from_slice(&data[at..end]));
            at = end;
        }
        out
    }

    async fn stream(&mut self, path: &str, tag: &str, data: &[u8]) -> Result<()> {
        let mut writer = self
            .drive
            .write_stream(path, WriteOptions::default())
            .await?;
        let mut written = 0;
        for chunk in self.chunks(data) {
            written += chunk.len();
            writer.write(chunk).await?;
            writer.flush().await?;
            say(format_args!("appended {tag} {written}"))?;
            self.pause().await;
        }
        writer.flush().await?;
        say(format_args!("flushed {tag}"))?;
        self.pause().await;
        say(format_args!("putting {tag}"))?;
        writer.finish().await?;
        Ok(())
    }

    async fn handle(&mut self, path: &str, tag: &str, data: &[u8]) -> Result<()> {
        let flags = OpenFlags {
            write: true,
            create: true,
            exclusive: false,
            truncate: true,
        };
        let mut handle = self.drive.open_file(path, flags).await?;
        let mut at = 0;
        for chunk in self.chunks(data) {
            handle.write_at(at, &chunk).await?;
            at += chunk.len() as u64;
            say(format_args!("appended {tag} {at}"))?;
            self.pause().await;
        }
        // Rewriting a range with the same bytes keeps the content and sends the handle
        // through its spill file: the new version is written whole when it closes.
        if data.len() > 2 && self.rng.gen_bool(0.3) {
            let start = self.rng.gen_range(0..data.len() / 2);
            let end = self.rng.gen_range(start + 1..=data.len());
            handle.write_at(start as u64, &data[start..end]).await?;
        }
        say(format_args!("flushed {tag}"))?;
        self.pause().await;
        say(format_args!("putting {tag}"))?;
        handle.close().await?;
        Ok(())
    }

    async fn whole(&mut self, path: &str, tag: &str, data: &[u8]) -> Result<()> {
        say(format_args!("putting {tag}"))?;
        self.drive
            .write_file(path, data, WriteOptions::default())
            .await?;
        Ok(())
    }

    /// A size: mostly small, some of several blocks, a few of megabytes; now and then 0.
    fn size(&mut self) -> usize {
        match self.rng.gen_range(0..20) {
            0 => 0,
            1..=10 => self.rng.gen_range(1..4_000),
            11..=17 => self.rng.gen_range(4_000..300_000),
            _ => self.rng.gen_range(300_000..1_500_000),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let store = Corestore::open(&args.dir, CorestoreOptions::default())
        .await
        .with_context(|| format!("opening the corestore in {}", args.dir.display()))?;
    let drive = Drive::default_drive(&store, DriveOptions::default()).await?;
    say(format_args!("opened {}", drive.version()))?;
    let mut w = Writer {
        drive,
        rng: StdRng::seed_from_u64(args.seed),
        pause_ms: args.pause_ms,
    };
    let mut paths: Vec<String> = Vec::new();
    for n in 0u64.. {
        let path = match paths.len() {
            k if k > 0 && w.rng.gen_bool(0.25) => paths[w.rng.gen_range(0..k)].clone(),
            _ => format!("/d{}/f-{}-{n}", n % 4, args.seed),
        };
        let tag = format!("{}-{n}", args.seed);
        let size = w.size();
        let data = crash_file(&tag, size);
        let way = ["stream", "handle", "whole"][w.rng.gen_range(0..3)];
        say(format_args!("begin {way} {path} {tag}"))?;
        match way {
            "stream" => w.stream(&path, &tag, &data).await,
            "handle" => w.handle(&path, &tag, &data).await,
            _ => w.whole(&path, &tag, &data).await,
        }
        .with_context(|| format!("writing {path} ({way})"))?;
        // Kills land after the Stat is put and before it is reported, too.
        w.pause().await;
        let sum = blake2b_concat([&data[..]]);
        say(format_args!("done {path} {tag} {} {sum}", data.len()))?;
        if !paths.contains(&path) {
            paths.push(path);
        }
        w.pause().await;
    }
    Ok(())
}
