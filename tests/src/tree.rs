//! Local folder trees for import and export tests: attributes set exactly, everything an
//! export must reproduce captured, and two trees compared with the real `diff -r`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub use hyperd_testkit::files::{chmod, set_mtime};

/// What an export must reproduce of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `d`, `f` or `l`.
    pub kind: char,
    /// Permission bits with setuid, setgid and sticky (0 for a symlink, whose mode means
    /// nothing).
    pub mode: u32,
    /// Modified, ms since the epoch.
    pub mtime: u64,
    /// A file's size, else 0.
    pub size: u64,
    /// BLAKE2b of a file's content, or a symlink's target.
    pub content: Vec<u8>,
}

/// Every entry below `root` (not `root` itself) by its `/`-separated relative path.
pub fn snapshot(root: &Path) -> Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for child in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = child?.path();
            let rel = path
                .strip_prefix(root)?
                .to_str()
                .context("a name that is not UTF-8")?
                .to_string();
            let meta = fs::symlink_metadata(&path)?;
            let mtime = (meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000) as u64;
            let mode = meta.mode() & 0o7777;
            let entry = if meta.is_symlink() {
                let target = fs::read_link(&path)?;
                Entry {
                    kind: 'l',
                    mode: 0,
                    mtime,
                    size: 0,
                    content: target.as_os_str().as_bytes().to_vec(),
                }
            } else if meta.is_dir() {
                stack.push(path.clone());
                Entry {
                    kind: 'd',
                    mode,
                    mtime,
                    size: 0,
                    content: Vec::new(),
                }
            } else {
                let hash = blake2b_simd::blake2b(&fs::read(&path)?);
                Entry {
                    kind: 'f',
                    mode,
                    mtime,
                    size: meta.len(),
                    content: hash.as_bytes().to_vec(),
                }
            };
            out.insert(rel, entry);
        }
    }
    Ok(out)
}

/// Runs `diff -r --no-dereference a b` (contents, names, symlink targets) and fails with
/// its output unless the trees are the same.
pub fn diff_r(a: &Path, b: &Path) -> Result<()> {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .context("running diff")?;
    if !out.status.success() {
        bail!(
            "diff -r {} {} ({}):\n{}{}",
            a.display(),
            b.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
