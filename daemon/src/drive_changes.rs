//! What changed in drives and what is stored of them: versions, diffs, the history of
//! changes, watches, and downloads, local clears and per-file block counts, at a
//! [`DriveLocation`]. Streams end with ABORTED when the daemon stops.

use std::time::Duration;

use corestore::Corestore;
use futures::stream::{BoxStream, StreamExt};
use hypercore::PublicKey;
use hyperdrive::{
    Cleared, Drive, DriveChange, DriveOptions, FileStats, HistoryEntry, HistoryOptions, Progress,
    WalkOptions,
};

use crate::daemon::Daemon;
use crate::drives::DriveLocation;
use crate::error::{DaemonError, Result};

/// How often a download reports progress at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Daemon {
    /// What changed under the path of `at` between version `from` and `at`'s version
    /// (or the latest), each change with that newer version.
    pub fn drive_diff(
        &self,
        at: &DriveLocation,
        from: u64,
    ) -> Result<BoxStream<'static, Result<HistoryEntry>>> {
        let drive = self.drive_at(at)?;
        if from > drive.version() {
            return Err(DaemonError::invalid(format!(
                "{at}: version {from} is past the drive's version {}",
                drive.version()
            )));
        }
        let version = drive.version();
        let changes = drive.diff(from, &at.path).map(move |change| {
            change
                .map(|change| HistoryEntry { version, change })
                .map_err(DaemonError::drive)
        });
        Ok(self.until_stopped(changes.boxed()))
    }

    /// The drive's changes from `since` (to `until`, or with `live` on as new ones come),
    /// each with the version it made; at a checkout, up to its version. Versions past the
    /// drive's are refused, except an `until` that a live history waits for.
    pub fn drive_history(
        &self,
        at: &DriveLocation,
        since: u64,
        until: Option<u64>,
        live: bool,
    ) -> Result<BoxStream<'static, Result<HistoryEntry>>> {
        let drive = self.drive_at(at)?;
        if live && at.version.is_some() {
            return Err(DaemonError::invalid(format!(
                "{at}: a checkout never changes; follow the history of the latest version"
            )));
        }
        let version = drive.version();
        let past = |what: &str, v: u64| {
            DaemonError::invalid(format!(
                "{at}: {what} {v} is past the drive's version {version}"
            ))
        };
        if since > version {
            return Err(past("since", since));
        }
        let until = until.or(at.version);
        if let Some(until) = until {
            if until < since {
                return Err(DaemonError::invalid(format!(
                    "{at}: until {until} is before since {since}"
                )));
            }
            if until > version && !live {
                return Err(past("until", until));
            }
        }
        let options = HistoryOptions { since, until, live };
        let entries = drive
            .history(options)
            .map(|entry| entry.map_err(DaemonError::drive));
        Ok(self.until_stopped(entries.boxed()))
    }

    /// The changes under the path of `at` as they happen (written here or replicated),
    /// each batch as the diff from the version seen before; inside mounted drives too
    /// (the drive holding the path, and those mounted at or below it), with paths from
    /// the root of the drive watched. Changes in a drive mounted after the watch started
    /// count from when the watch first saw the mount. Each change comes with the watched
    /// drive's version when it was seen.
    pub async fn drive_watch(
        &self,
        at: &DriveLocation,
    ) -> Result<BoxStream<'static, Result<HistoryEntry>>> {
        if at.version.is_some() {
            return Err(DaemonError::invalid(format!(
                "{at}: a checkout never changes; watch the latest version"
            )));
        }
        let drive = self.drive(&at.key)?;
        let ticks = drive.watch(&at.path).boxed();
        // The watch starts when first polled: what was written from now on is reported
        // from the versions, not from the ticks.
        let mut watching = Watching {
            store: self.store().clone(),
            seen: drive.version(),
            drive,
            path: at.path.clone(),
            mounted: Vec::new(),
        };
        watching.find_mounted().await?;
        let changes = futures::stream::unfold(Some((watching, ticks)), |state| async move {
            let (mut watching, mut ticks) = state?;
            loop {
                match watching.changes().await {
                    Ok(Some(changes)) => return Some((changes, Some((watching, ticks)))),
                    Ok(None) => {}
                    Err(e) => return Some((futures::stream::iter([Err(e)]).boxed(), None)),
                }
                if let Err(e) = ticks.next().await? {
                    let error = futures::stream::iter([Err(DaemonError::drive(e))]);
                    return Some((error.boxed(), None));
                }
            }
        })
        .flatten();
        Ok(self.until_stopped(changes.boxed()))
    }

    /// Downloads the file at `at`, or every file under the directory at `at` (into
    /// mounted drives too), reporting progress until every block is stored; dropping the
    /// stream withdraws what is still wanted.
    pub async fn drive_download(
        &self,
        at: &DriveLocation,
    ) -> Result<BoxStream<'static, Result<Progress>>> {
        let drive = self.drive_at(at)?;
        let options = WalkOptions {
            mounts: true,
            ..WalkOptions::default()
        };
        let downloading = drive
            .download(&at.path, options)
            .await
            .map_err(DaemonError::drive)?;
        let progress = downloading.progress();
        let updates = futures::stream::unfold(
            Some((Box::pin(downloading), progress, false)),
            |state| async move {
                let (mut downloading, mut progress, mut sent_first) = state?;
                if !sent_first {
                    sent_first = true;
                    let now = *progress.borrow_and_update();
                    return Some((Ok(now), Some((downloading, progress, sent_first))));
                }
                tokio::select! {
                    done = &mut downloading => Some((done.map_err(DaemonError::drive), None)),
                    _ = tokio::time::sleep(PROGRESS_EVERY) => {
                        let now = *progress.borrow_and_update();
                        Some((Ok(now), Some((downloading, progress, sent_first))))
                    }
                }
            },
        );
        Ok(self.until_stopped(updates.boxed()))
    }

    /// Deletes the local copy of the content of the file at `at`, or of every file under
    /// the directory at `at`.
    pub async fn drive_clear(&self, at: &DriveLocation) -> Result<Cleared> {
        let drive = self.drive_at(at)?;
        drive
            .clear(&at.path, WalkOptions::default())
            .await
            .map_err(DaemonError::drive)
    }

    /// Content blocks stored of each file at or under `at`.
    pub async fn drive_file_stats(&self, at: &DriveLocation) -> Result<Vec<FileStats>> {
        let drive = self.drive_at(at)?;
        drive
            .file_stats(&at.path, WalkOptions::default())
            .await
            .map_err(DaemonError::drive)
    }
}

/// A watch between two wake-ups: the versions it reported changes up to.
struct Watching {
    store: Corestore,
    drive: Drive,
    path: String,
    /// The watched drive's version.
    seen: u64,
    /// The unpinned drives mounted in it whose entries show under the path.
    mounted: Vec<Mounted>,
}

/// A drive mounted in a watched drive, and the version of it changes were reported up to.
struct Mounted {
    /// Its mount point, from the root of the watched drive.
    at: String,
    key: PublicKey,
    /// The path in it that shows as the watched path (`/` for a drive mounted below it).
    path: String,
    drive: Drive,
    seen: u64,
}

impl Watching {
    /// Brings `mounted` up to the mounts now: the drive holding the path when it is a
    /// mounted one, and every drive mounted at or below the path. One seen before keeps
    /// its version; a new one starts at its version now (the watched drive's diff reports
    /// the mount itself).
    async fn find_mounted(&mut self) -> Result<()> {
        let mounts = self.drive.mounts(true).await.map_err(DaemonError::drive)?;
        let holder = self
            .drive
            .info(&self.path)
            .await
            .map_err(DaemonError::drive)?;
        let pinned = |at: &str| mounts.iter().any(|m| m.path == at && m.version.is_some());
        let mut wanted = Vec::new();
        if holder.drive != self.drive.key() && !pinned(&holder.mount_path) {
            wanted.push((holder.mount_path, holder.drive, holder.inner_path));
        }
        let base = self.path.trim_end_matches('/');
        for mount in mounts {
            let below = base.is_empty()
                || mount.path == base
                || mount.path.starts_with(&format!("{base}/"));
            if below && mount.version.is_none() {
                wanted.push((mount.path, mount.key, "/".to_string()));
            }
        }
        let mut before = std::mem::take(&mut self.mounted);
        for (at, key, path) in wanted {
            let known = before.iter().position(|m| m.at == at && m.key == key);
            let mounted = match known {
                Some(i) => before.swap_remove(i),
                None => {
                    let drive = Drive::open_key(&self.store, key, DriveOptions::default())
                        .await
                        .map_err(DaemonError::drive)?;
                    Mounted {
                        seen: drive.version(),
                        at,
                        key,
                        path,
                        drive,
                    }
                }
            };
            self.mounted.push(mounted);
        }
        Ok(())
    }

    /// What changed under the path since the versions seen, if anything did.
    async fn changes(&mut self) -> Result<Option<BoxStream<'static, Result<HistoryEntry>>>> {
        self.find_mounted().await?;
        let mut diffs = Vec::new();
        let now = self.drive.version();
        let version = now;
        if now != self.seen {
            let diff = self.drive.diff(self.seen, &self.path);
            diffs.push(diff.map(|c| c.map_err(DaemonError::drive)).boxed());
            self.seen = now;
        }
        for mounted in &mut self.mounted {
            let now = mounted.drive.version();
            if now != mounted.seen {
                let at = mounted.at.clone();
                let diff = mounted.drive.diff(mounted.seen, &mounted.path);
                let rebased =
                    diff.map(move |c| c.map(|c| under(&at, c)).map_err(DaemonError::drive));
                diffs.push(rebased.boxed());
                mounted.seen = now;
            }
        }
        let entries = move |change: Result<DriveChange>| {
            change.map(|change| HistoryEntry { version, change })
        };
        Ok(
            (!diffs.is_empty())
                .then(|| futures::stream::iter(diffs).flatten().map(entries).boxed()),
        )
    }
}

/// `change`, of a drive mounted at `at`, with its path from the root of the drive it is
/// mounted in.
fn under(at: &str, mut change: DriveChange) -> DriveChange {
    let (DriveChange::Put { path, .. }
    | DriveChange::Del { path, .. }
    | DriveChange::Mount { path, .. }
    | DriveChange::Unmount { path, .. }) = &mut change;
    *path = format!("{}/{path}", at.trim_matches('/'));
    change
}
