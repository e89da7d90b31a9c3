//! Attributes of local files set exactly, for tests of imports and exports.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Sets the mtime of `path` (a symlink itself, not its target) to `ms` since the epoch.
pub fn set_mtime(path: &Path, ms: u64) -> Result<()> {
    let time = TimeSpec::new((ms / 1000) as i64, ((ms % 1000) * 1_000_000) as i64);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("setting the mtime of {}", path.display()))
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
