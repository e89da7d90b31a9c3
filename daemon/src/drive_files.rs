//! What the daemon does inside drives: stat, list, read and write files, make
//! directories and links, remove, move and truncate entries, set their metadata, mount
//! other drives and cores, at a [`DriveLocation`] (a version of it is a read-only
//! checkout). Reads wait for peers at most a timeout per chunk; a write becomes
//! visible whole when its data ends, never if the data fails first.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use hypercore::PublicKey;
use hyperdrive::{DirEntry, Drive, MountInfo, MountOptions, ReaddirOptions, Stat, WriteOptions};

use crate::daemon::Daemon;
use crate::drives::DriveLocation;
use crate::error::{DaemonError, ErrorKind, Result};

/// How long a read waits for a peer to serve a block when the caller gives no timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How many bytes of stored blocks a read stream reads at once. An open stream holds about
/// three such runs (one being sent, one read ahead, one kept by a chunk still queued for
/// the client): with the 1 MiB a lone reader uses, a thousand readers of 1 MiB files
/// took 320 MiB, with this 130 MiB, in the same time.
const STREAM_READ_AHEAD: u64 = 128 << 10;

impl Daemon {
    /// The drive `at` names, checked out at its version if it gives one.
    pub fn drive_at(&self, at: &DriveLocation) -> Result<Drive> {
        let drive = self.drive(&at.key)?;
        match at.version {
            None => Ok(drive),
            Some(version) => {
                let latest = drive.version();
                if version == 0 || version > latest {
                    return Err(DaemonError::invalid(format!(
                        "{at}: version {version} does not exist: drive {} has versions 1 to \
                         {latest} here",
                        at.key
                    )));
                }
                Ok(drive.checkout(version))
            }
        }
    }

    /// The entry at `at`: through a final symlink, or itself with `lstat`.
    pub async fn drive_stat(&self, at: &DriveLocation, lstat: bool) -> Result<Stat> {
        let drive = self.drive_at(at)?;
        let stat = if lstat {
            drive.lstat(&at.path).await
        } else {
            drive.stat(&at.path).await
        };
        stat.map_err(|e| unknown_drive(&drive, at, DaemonError::drive(e)))
    }

    /// The entries of the directory at `at` (with their Stats when `stats`).
    pub async fn drive_readdir(
        &self,
        at: &DriveLocation,
        options: ReaddirOptions,
        stats: bool,
    ) -> Result<Vec<DirEntry>> {
        let drive = self.drive_at(at)?;
        let stat = drive
            .stat(&at.path)
            .await
            .map_err(|e| unknown_drive(&drive, at, DaemonError::drive(e)))?;
        if !stat.is_dir() {
            return Err(DaemonError::precondition(format!("{at}: not a directory")));
        }
        let entries = if stats {
            drive
                .readdir_stats(&at.path, options)
                .await
                .map_err(DaemonError::drive)?
        } else {
            let names = drive
                .readdir_names(&at.path, options)
                .await
                .map_err(DaemonError::drive)?;
            names
                .into_iter()
                .map(|name| DirEntry {
                    name,
                    stat: Stat::default(),
                })
                .collect()
        };
        if entries.is_empty() && nothing_known(&drive) {
            let empty = DaemonError::not_found(format!("{at}: no entries"));
            return Err(unknown_drive(&drive, at, empty));
        }
        Ok(entries)
    }

    /// The bytes of the file at `at` from `start` to `end` (exclusive; `None`: its end),
    /// in chunks; each waits at most `timeout` for a peer (DEADLINE_EXCEEDED after), and
    /// the stream ends with ABORTED when the daemon stops.
    pub async fn drive_read(
        &self,
        at: &DriveLocation,
        start: u64,
        end: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        if let Some(end) = end.filter(|&end| end < start) {
            return Err(DaemonError::invalid(format!(
                "{at}: end {end} is before start {start}"
            )));
        }
        let drive = self.drive_at(at)?;
        let stat = drive
            .stat(&at.path)
            .await
            .map_err(|e| unknown_drive(&drive, at, DaemonError::drive(e)))?;
        if stat.is_dir() {
            return Err(DaemonError::precondition(format!("{at}: is a directory")));
        }
        let start = start.min(stat.size);
        let length = end.map(|end| end.min(stat.size) - start);
        let timeout = timeout.unwrap_or(READ_TIMEOUT);
        let no_peer = move |at: &DriveLocation| {
            DaemonError::new(
                ErrorKind::DeadlineExceeded,
                format!("{at}: no peer served the next block within {timeout:?}"),
            )
        };
        // Opening seeks to `start`, which may need the content tree from peers.
        let reader = tokio::time::timeout(timeout, drive.read_range(&at.path, start, length))
            .await
            .map_err(|_| no_peer(at))?
            .map_err(DaemonError::drive)?
            .with_read_ahead(STREAM_READ_AHEAD);
        let at = at.clone();
        let chunks = futures::stream::unfold(Some(reader), move |reader| {
            let at = at.clone();
            async move {
                let mut reader = reader?;
                match tokio::time::timeout(timeout, reader.next()).await {
                    Ok(None) => None,
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(reader))),
                    Ok(Some(Err(e))) => Some((Err(DaemonError::drive(e)), None)),
                    Err(_) => Some((Err(no_peer(&at)), None)),
                }
            }
        });
        Ok(self.until_stopped(chunks.boxed()))
    }

    /// Where bytes `[start, end)` of the file at `at` lie in this daemon's storage, for a
    /// client on this machine to read them itself (see [`Drive::locate`]); valid while
    /// [`Self::storage_clears`] says the same number of clears as the answer.
    pub async fn drive_locate(
        &self,
        at: &DriveLocation,
        start: u64,
        end: Option<u64>,
    ) -> Result<hypercore::StoredFile> {
        if let Some(end) = end.filter(|&end| end < start) {
            return Err(DaemonError::invalid(format!(
                "{at}: end {end} is before start {start}"
            )));
        }
        let drive = self.drive_at(at)?;
        drive
            .locate(&at.path, start, end)
            .await
            .map_err(|e| unknown_drive(&drive, at, DaemonError::drive(e)))?
            .ok_or_else(|| {
                DaemonError::precondition(format!(
                    "{at}: not every block of the file is stored here; read it instead"
                ))
            })
    }

    /// How many clears removed stored blocks in this daemon so far.
    pub fn storage_clears(&self) -> u64 {
        hypercore::Feed::clears()
    }

    /// Writes the file at `at` from `data`: it appears, whole, once `data` ends; if
    /// `data` fails first (the client went away), the path is left as it was. Returns
    /// its Stat and the drive's version after.
    pub async fn drive_write(
        &self,
        at: &DriveLocation,
        options: WriteOptions,
        mut data: BoxStream<'static, Result<Bytes>>,
    ) -> Result<(Stat, u64)> {
        let drive = self.writable_drive_at(at)?;
        let mut writer = drive
            .write_stream(&at.path, options)
            .await
            .map_err(DaemonError::drive)?;
        while let Some(chunk) = data.next().await {
            // A failed upload drops the writer unfinished: no Stat is put.
            let chunk = chunk?;
            if !chunk.is_empty() {
                writer.write(chunk).await.map_err(DaemonError::drive)?;
            }
        }
        let stat = writer.finish().await.map_err(DaemonError::drive)?;
        Ok((stat, drive.version()))
    }

    /// Makes the directory at `at` (mode 0755 unless given).
    pub async fn drive_mkdir(&self, at: &DriveLocation, mode: Option<u32>) -> Result<()> {
        let drive = self.writable_drive_at(at)?;
        drive
            .mkdir(&at.path, mode)
            .await
            .map(drop)
            .map_err(DaemonError::drive)
    }

    /// Removes the file, symlink or empty directory at `at`, or with `recursive` the
    /// directory and everything below it (files first, then directories from the
    /// deepest; drives mounted below are unmounted, not emptied). Returns the entries
    /// removed.
    pub async fn drive_rm(&self, at: &DriveLocation, recursive: bool) -> Result<u64> {
        let drive = self.writable_drive_at(at)?;
        let stat = drive.lstat(&at.path).await.map_err(DaemonError::drive)?;
        if !stat.is_dir() || stat.is_symlink() {
            drive.unlink(&at.path).await.map_err(DaemonError::drive)?;
            return Ok(1);
        }
        if !recursive || stat.mount.is_some() {
            drive.rmdir(&at.path).await.map_err(DaemonError::drive)?;
            return Ok(1);
        }
        let options = ReaddirOptions {
            recursive: true,
            no_mounts: true,
        };
        let entries = drive
            .readdir_stats(&at.path, options)
            .await
            .map_err(DaemonError::drive)?;
        let base = at.path.trim_end_matches('/');
        let mut dirs = Vec::new();
        let mut removed = 0;
        for entry in entries {
            let path = format!("{base}/{}", entry.name);
            let done = if entry.stat.mount.is_some() {
                drive.unmount(&path).await
            } else if entry.stat.is_dir() && !entry.stat.is_symlink() {
                dirs.push(path);
                continue;
            } else {
                drive.unlink(&path).await
            };
            done.map_err(DaemonError::drive)?;
            removed += 1;
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.push(at.path.clone());
        for dir in dirs {
            // A directory known only by what was below it is gone with it.
            match drive.rmdir(&dir).await {
                Ok(()) => removed += 1,
                Err(hyperdrive::Error::NotFound { .. }) => {}
                Err(e) => return Err(DaemonError::drive(e)),
            }
        }
        Ok(removed)
    }

    /// Makes a symlink at `at` pointing to `target`.
    pub async fn drive_symlink(&self, at: &DriveLocation, target: &str) -> Result<()> {
        let drive = self.writable_drive_at(at)?;
        drive
            .symlink(target, &at.path)
            .await
            .map(drop)
            .map_err(DaemonError::drive)
    }

    /// The target of the symlink at `at`.
    pub async fn drive_readlink(&self, at: &DriveLocation) -> Result<String> {
        let drive = self.drive_at(at)?;
        drive.readlink(&at.path).await.map_err(DaemonError::drive)
    }

    /// Moves the entry at `from` (a whole tree for a directory) to `to`, in the same
    /// drive (a file's blocks live in its drive's content core), and both at its latest
    /// version.
    pub async fn drive_rename(&self, from: &DriveLocation, to: &DriveLocation) -> Result<()> {
        if to.key != from.key {
            return Err(DaemonError::invalid(format!(
                "cannot move {from} to another drive ({to})"
            )));
        }
        self.writable_drive_at(to)?;
        let drive = self.writable_drive_at(from)?;
        drive
            .rename(&from.path, &to.path)
            .await
            .map_err(DaemonError::drive)
    }

    /// Cuts or extends (with zeros) the file at `at` to `size` bytes.
    pub async fn drive_truncate(&self, at: &DriveLocation, size: u64) -> Result<()> {
        let drive = self.writable_drive_at(at)?;
        drive
            .truncate(&at.path, size)
            .await
            .map(drop)
            .map_err(DaemonError::drive)
    }

    /// Sets (a value) or deletes (`None`) per-file metadata entries of the entry at `at`.
    pub async fn drive_set_metadata(
        &self,
        at: &DriveLocation,
        entries: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let drive = self.writable_drive_at(at)?;
        for (name, value) in entries {
            drive
                .set_metadata(&at.path, &name, value)
                .await
                .map_err(DaemonError::drive)?;
        }
        Ok(())
    }

    /// Mounts the drive (or, with `options.hypercore`, the raw core) `key` at `at`.
    pub async fn drive_mount(
        &self,
        at: &DriveLocation,
        key: PublicKey,
        options: MountOptions,
    ) -> Result<()> {
        let drive = self.writable_drive_at(at)?;
        drive
            .mount(&at.path, key, options)
            .await
            .map(drop)
            .map_err(DaemonError::drive)
    }

    /// Removes the mount at `at`.
    pub async fn drive_unmount(&self, at: &DriveLocation) -> Result<()> {
        let drive = self.writable_drive_at(at)?;
        drive.unmount(&at.path).await.map_err(DaemonError::drive)
    }

    /// The drives mounted in the drive `at` names, depth first, paths from its root.
    pub async fn drive_mounts(&self, at: &DriveLocation) -> Result<Vec<MountInfo>> {
        let drive = self.drive_at(at)?;
        drive.mounts(true).await.map_err(DaemonError::drive)
    }

    /// The drive `at` names, refusing a checkout. Whether the path can be written (the
    /// drive, or the one mounted there, is ours) the drive decides.
    fn writable_drive_at(&self, at: &DriveLocation) -> Result<Drive> {
        if let Some(version) = at.version {
            return Err(DaemonError::precondition(format!(
                "{at}: version {version} is a read-only checkout; write to the latest \
                 (hyper://{}{})",
                at.key, at.path
            )));
        }
        self.drive(&at.key)
    }
}

/// A followed drive of which nothing is known yet: no peer has served its first block.
fn nothing_known(drive: &Drive) -> bool {
    !drive.writable() && drive.version() == 0
}

/// `error`, which says so when it is NOT_FOUND in a drive [`nothing_known`] of: the path
/// may well exist.
fn unknown_drive(drive: &Drive, at: &DriveLocation, error: DaemonError) -> DaemonError {
    if error.kind != ErrorKind::NotFound || !nothing_known(drive) {
        return error;
    }
    DaemonError::not_found(format!(
        "{}: nothing of drive {} is known here yet: no peer has served it (see `hyperctl \
         peer ls`)",
        error.message, at.key
    ))
}
