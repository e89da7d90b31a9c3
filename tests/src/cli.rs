//! What `rust-seed` and `rust-clone` share with each other, mirroring `interop/common.js`:
//! argument parsing, JSON lines on stdout and stderr, hashing a range of a feed, and
//! whether stdin is a pipe.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use hypercore::Feed;

/// Parsed `--flag value`, `--flag=value` and boolean `--flag` arguments, like
/// `common.js` `parseArgs`: unknown flags are kept (and ignored by the caller), anything
/// not starting with `--` is positional.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    /// Positional arguments.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `argv`; the flags in `booleans` take no value.
    pub fn parse(argv: impl IntoIterator<Item = String>, booleans: &[&str]) -> Result<Args> {
        let mut args = Args::default();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                args.positional.push(a);
                continue;
            };
            if let Some((name, value)) = flag.split_once('=') {
                args.values.insert(name.into(), value.into());
            } else if booleans.contains(&flag) {
                args.values.insert(flag.into(), "true".into());
            } else {
                let value = it
                    .next()
                    .with_context(|| format!("missing value for {a}"))?;
                args.values.insert(flag.into(), value);
            }
        }
        Ok(args)
    }

    /// The value of `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether the boolean `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// `--name` parsed as a number (or anything else `FromStr`), if given.
    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.get(name)
            .map(|v| v.parse().with_context(|| format!("--{name} {v:?}")))
            .transpose()
    }

    /// `--name` as a 32-byte hex seed, if given.
    pub fn seed(&self, name: &str) -> Result<Option<[u8; 32]>> {
        let Some(hex) = self.get(name) else {
            return Ok(None);
        };
        match hypercore::crypto::from_hex(hex).map(<[u8; 32]>::try_from) {
            Some(Ok(seed)) => Ok(Some(seed)),
            _ => bail!("--{name} must be 32 bytes of hex"),
        }
    }
}

/// Prints one JSON line on stdout (and flushes, so a parent sees it at once).
pub fn emit(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    // Nothing sensible to do if stdout is gone.
    let _ = serde_json::to_writer(&mut out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// A JSON object whose fields keep the order they are given in, as JS prints them (a
/// `serde_json::Value` sorts them). Made with [`json_line!`](crate::json_line).
#[derive(Debug, Default)]
pub struct Line(pub Vec<(&'static str, serde_json::Value)>);

impl serde::Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `json_line!{ "event": "close", "remote": remote }`: a [`Line`] with these fields in order;
/// values are anything `serde_json::json!` takes.
#[macro_export]
macro_rules! json_line {
    ($($key:literal : $value:expr),* $(,)?) => {
        $crate::cli::Line(vec![$(($key, serde_json::json!($value))),*])
    };
}

/// Prints one JSON log line on stderr, with a `t` field (ms since the epoch) first.
pub fn log(line: Line) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut fields = vec![("t", t.into())];
    fields.extend(line.0);
    eprintln!(
        "{}",
        serde_json::to_string(&Line(fields)).unwrap_or_default()
    );
}

/// Logs of the replication crates on stderr, filtered by `RUST_LOG` (off by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Unkeyed BLAKE2b-256 over blocks `[start, end)` and their total size, like `common.js`
/// `hashRange`. Every block must be stored.
pub async fn hash_range(feed: &Feed, start: u64, end: u64) -> Result<(String, u64)> {
    let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
    let mut bytes = 0u64;
    let mut at = start;
    while at < end {
        let to = end.min(at + 4096);
        if !feed.has_range(at, to) {
            bail!("blocks {at}..{to} are not all stored");
        }
        for block in feed.get_batch(at, to).await? {
            state.update(&block);
            bytes += block.len() as u64;
        }
        at = to;
    }
    Ok((
        hypercore::crypto::to_hex(state.finalize().as_bytes()),
        bytes,
    ))
}

/// True when stdin is a pipe or a socket (so its end means "stop").
pub fn stdin_is_pipe() -> bool {
    use std::os::fd::AsFd;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

/// A number as JS's `JSON.stringify` writes it: integral values without a fraction
/// (`14`, not `14.0`), non-finite ones as `null`.
pub fn js_number(x: f64) -> serde_json::Value {
    if !x.is_finite() {
        serde_json::Value::Null
    } else if x.fract() == 0.0 && x.abs() < 9e15 {
        (x as i64).into()
    } else {
        x.into()
    }
}
