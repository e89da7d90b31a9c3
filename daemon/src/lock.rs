//! One daemon per home: an exclusive `flock` on `hyperd.lock`, which holds the pid.
//! The kernel drops the lock when the process dies, so `kill -9` leaves nothing that
//! blocks a restart.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

/// Held for the daemon's lifetime.
pub struct HomeLock {
    _lock: Flock<File>,
}

impl HomeLock {
    /// Takes the lock or explains who holds it.
    pub fn acquire(path: &Path) -> anyhow::Result<HomeLock> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                bail!(
                    "another hyperd{who} is already running with home {}",
                    path.parent().unwrap_or(path).display()
                );
            }
        };
        lock.set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| writeln!(lock, "{}", std::process::id()))
            .with_context(|| format!("writing pid to {}", path.display()))?;
        Ok(HomeLock { _lock: lock })
    }
}
