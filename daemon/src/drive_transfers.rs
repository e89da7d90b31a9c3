//! Local folders into drives and back: import and export at a [`DriveLocation`], read and
//! written with the rights of the daemon's user (the one who owns the API socket). Each
//! runs while its stream is read and reports progress, then its summary; dropped, it
//! stops between two batches, every file written whole.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use hyperdrive::{
    Drive, ExportOptions, ImportOptions, Transfer, TransferProgress, TransferSummary,
};

use crate::daemon::Daemon;
use crate::drive_files::READ_TIMEOUT;
use crate::drives::DriveLocation;
use crate::error::{shorten, DaemonError, ErrorKind, Result};

/// How often a transfer reports progress at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What a transfer stream yields: progress, then once its summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferUpdate {
    /// How far it is.
    Progress(TransferProgress),
    /// It is done.
    Done {
        /// Its last progress: everything done.
        progress: TransferProgress,
        /// What it did (or, a dry run, would do).
        summary: TransferSummary,
        /// The drive's version after an import; the version an export wrote out.
        version: u64,
    },
}

impl Daemon {
    /// Writes the local directory `local` into the drive at `at` (see
    /// [`hyperdrive::Drive::import`]), or with a dry run reports what that would do.
    pub fn drive_import(
        &self,
        local: &str,
        at: &DriveLocation,
        options: ImportOptions,
    ) -> Result<BoxStream<'static, Result<TransferUpdate>>> {
        let local = local_dir(local, true)?;
        if at.version.is_some() {
            return Err(DaemonError::precondition(format!(
                "{at}: a checkout is read-only; import into the latest version"
            )));
        }
        let drive = self.drive(&at.key)?;
        let transfer = drive.import(&local, &at.path, options);
        Ok(self.transfer(transfer, drive, None))
    }

    /// Writes the drive's tree at `at` into the local directory `local` (created if
    /// missing; see [`hyperdrive::Drive::export`]), or with a dry run reports what that
    /// would do. Blocks come from peers: an export that does not move for `timeout`
    /// (default [`READ_TIMEOUT`]) fails with DEADLINE_EXCEEDED, as a read does.
    pub fn drive_export(
        &self,
        at: &DriveLocation,
        local: &str,
        options: ExportOptions,
        timeout: Option<Duration>,
    ) -> Result<BoxStream<'static, Result<TransferUpdate>>> {
        let local = local_dir(local, false)?;
        let drive = self.drive_at(at)?;
        let transfer = drive.export(&at.path, &local, options);
        let stall = (at.to_string(), timeout.unwrap_or(READ_TIMEOUT));
        Ok(self.transfer(transfer, drive, Some(stall)))
    }

    /// The updates of `transfer` on `drive`: its progress at most every
    /// [`PROGRESS_EVERY`], then its summary. With `stall` (what, limit), a transfer
    /// that does not move for `limit` fails with DEADLINE_EXCEEDED.
    fn transfer(
        &self,
        transfer: Transfer,
        drive: Drive,
        stall: Option<(String, Duration)>,
    ) -> BoxStream<'static, Result<TransferUpdate>> {
        let progress = transfer.progress();
        let start = (Box::pin(transfer), progress, Instant::now());
        let updates = futures::stream::unfold(Some(start), move |state| {
            let (drive, stall) = (drive.clone(), stall.clone());
            async move {
                let (mut transfer, mut progress, mut moved) = state?;
                if let Some((what, limit)) = stall.filter(|(_, limit)| moved.elapsed() >= *limit) {
                    let current = progress.borrow().current.clone();
                    let at = current.map_or(String::new(), |c| format!(" at {c}"));
                    let error = DaemonError::new(
                        ErrorKind::DeadlineExceeded,
                        format!("{what}: no progress{at} for {limit:?}: no peer served the blocks it needs"),
                    );
                    return Some((Err(error), None));
                }
                tokio::select! {
                    done = &mut transfer => {
                        let done = done.map_err(DaemonError::drive).map(|summary| {
                            TransferUpdate::Done {
                                progress: progress.borrow().clone(),
                                summary,
                                version: drive.version(),
                            }
                        });
                        Some((done, None))
                    }
                    _ = tokio::time::sleep(PROGRESS_EVERY) => {
                        // Seen now, so the next check sees only later movement.
                        if progress.has_changed().unwrap_or(false) {
                            moved = Instant::now();
                        }
                        let now = progress.borrow_and_update().clone();
                        Some((
                            Ok(TransferUpdate::Progress(now)),
                            Some((transfer, progress, moved)),
                        ))
                    }
                }
            }
        });
        self.until_stopped(updates.boxed())
    }
}

/// `local` as a transfer takes it: absolute (the daemon's working directory is not the
/// caller's), and for an import an existing directory.
fn local_dir(local: &str, must_exist: bool) -> Result<PathBuf> {
    let path = Path::new(local);
    if !path.is_absolute() {
        return Err(DaemonError::invalid(format!(
            "local path {:?} is not absolute: the daemon does not share the caller's \
             working directory",
            shorten(local)
        )));
    }
    if must_exist {
        let what = format!("local directory {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DaemonError::not_found(format!("{what}: {e}")),
            std::io::ErrorKind::PermissionDenied => {
                DaemonError::precondition(format!("{what}: {e}"))
            }
            _ => DaemonError::io(&what, &e),
        })?;
        if !meta.is_dir() {
            return Err(DaemonError::invalid(format!(
                "local path {} is not a directory",
                path.display()
            )));
        }
    }
    Ok(path.to_path_buf())
}
