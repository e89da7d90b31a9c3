//! What changed in drives and what is stored of them: versions, diffs, the history of
//! changes, watches, and downloads, local clears and per-file block counts, at a
//! [`DriveLocation`]. Streams end with ABORTED when the daemon stops.

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use hyperdrive::{
    Cleared, DriveChange, FileStats, HistoryEntry, HistoryOptions, Progress, WalkOptions,
};

use crate::daemon::Daemon;
use crate::drives::DriveLocation;
use crate::error::{DaemonError, Result};

/// How often a download reports progress at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Daemon {
    /// What changed under the path of `at` between version `from` and `at`'s version
    /// (or the latest).
    pub fn drive_diff(
        &self,
        at: &DriveLocation,
        from: u64,
    ) -> Result<BoxStream<'static, Result<DriveChange>>> {
        let drive = self.drive_at(at)?;
        if from > drive.version() {
            return Err(DaemonError::invalid(format!(
                "{at}: version {from} is past the drive's version {}",
                drive.version()
            )));
        }
        let changes = drive
            .diff(from, &at.path)
            .map(|change| change.map_err(DaemonError::drive));
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
    /// each batch as the diff from the version seen before; mounts below it included.
    pub fn drive_watch(
        &self,
        at: &DriveLocation,
    ) -> Result<BoxStream<'static, Result<DriveChange>>> {
        if at.version.is_some() {
            return Err(DaemonError::invalid(format!(
                "{at}: a checkout never changes; watch the latest version"
            )));
        }
        let drive = self.drive(&at.key)?;
        let ticks = drive.watch(&at.path).boxed();
        let path = at.path.clone();
        let seen = drive.version();
        // The watch starts when first polled: what was written since `seen` is reported
        // from the versions, not from the ticks.
        let changes =
            futures::stream::unfold((drive, ticks, seen), move |(drive, mut ticks, seen)| {
                let path = path.clone();
                async move {
                    if drive.version() == seen {
                        if let Err(e) = ticks.next().await? {
                            let error = futures::stream::iter([Err(DaemonError::drive(e))]);
                            return Some((error.boxed(), (drive, ticks, seen)));
                        }
                    }
                    let now = drive.version();
                    let diff = drive
                        .diff(seen, &path)
                        .map(|c| c.map_err(DaemonError::drive))
                        .boxed();
                    Some((diff, (drive, ticks, now)))
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
