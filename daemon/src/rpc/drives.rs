//! The `Drives` service: converts between the proto messages and the daemon's drive
//! operations (`crate::drives`, `drive_files`, `drive_changes`, `drive_transfers`).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hyperd_proto::v1 as pb;
use hyperd_proto::v1::drives_server;
use tonic::{Request, Response, Status, Streaming};

use super::{error, parse_key, seeding, server_stream, status};
use crate::daemon::Daemon;
use crate::drive_transfers::TransferUpdate;
use crate::drives::{DriveInfo, DriveLocation};
use crate::error::DaemonError;

/// Entries per Readdir message when the client does not say.
const PAGE: usize = 1_000;

pub struct DrivesService {
    daemon: Daemon,
}

impl DrivesService {
    pub fn new(daemon: Daemon) -> Self {
        DrivesService { daemon }
    }
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// The location a request names (`field` names it in errors).
fn location(field: &str, location: Option<pb::Location>) -> Result<DriveLocation, Status> {
    let l = location.ok_or_else(|| {
        Status::invalid_argument(format!("{field} is required: a hyper:// URL or a key"))
    })?;
    DriveLocation::from_parts(&l.url, &l.key, l.version, &l.path).map_err(status)
}

fn drive_info(info: DriveInfo) -> pb::DriveInfo {
    pb::DriveInfo {
        key: info.key.to_hex(),
        discovery_key: info.discovery_key.to_hex(),
        content_key: info.content_key.map(|k| k.to_hex()).unwrap_or_default(),
        version: info.version,
        writable: info.writable,
        name: info.name.unwrap_or_default(),
        files: info.totals.map_or(0, |t| t.files),
        bytes: info.totals.map_or(0, |t| t.bytes),
        metadata_blocks_stored: info.metadata_blocks_stored,
        metadata_blocks: info.metadata_blocks,
        content_blocks_stored: info.content_blocks_stored,
        content_blocks: info.content_blocks,
        peers: info.peers,
        all: info.all,
    }
}

fn mount_target(
    key: &hypercore::PublicKey,
    version: Option<u64>,
    hypercore: bool,
) -> pb::MountTarget {
    pb::MountTarget {
        key: key.to_hex(),
        version,
        hypercore,
    }
}

fn stat(stat: hyperdrive::Stat) -> pb::Stat {
    let mount = stat.mount.as_ref().and_then(|m| {
        let key = hypercore::PublicKey::from_slice(&m.key).ok()?;
        Some(mount_target(&key, m.version, m.hypercore == Some(true)))
    });
    let metadata = stat
        .metadata
        .iter()
        .filter_map(|e| Some((e.key.clone(), Bytes::from(e.value.clone()?))))
        .collect();
    pb::Stat {
        mode: stat.mode,
        uid: stat.uid,
        gid: stat.gid,
        size: stat.size,
        blocks: stat.blocks,
        offset: stat.offset,
        byte_offset: stat.byte_offset,
        mtime: stat.mtime,
        ctime: stat.ctime,
        linkname: stat.linkname.clone().unwrap_or_default(),
        mount,
        metadata,
    }
}

fn change(version: u64, change: hyperdrive::DriveChange) -> pb::DriveChange {
    use hyperdrive::DriveChange as C;
    use pb::drive_change::Kind;
    let absolute = |path: &str| format!("/{path}");
    match change {
        C::Put { path, stat: s, .. } => pb::DriveChange {
            kind: Kind::Put as i32,
            path: absolute(&path),
            version,
            stat: Some(stat(s)),
            target: None,
        },
        C::Del { path, .. } => pb::DriveChange {
            kind: Kind::Del as i32,
            path: absolute(&path),
            version,
            stat: None,
            target: None,
        },
        C::Mount {
            path,
            key,
            version: pinned,
            ..
        } => pb::DriveChange {
            kind: Kind::Mount as i32,
            path: absolute(&path),
            version,
            stat: None,
            target: Some(mount_target(&key, pinned, false)),
        },
        C::Unmount { path, key, .. } => pb::DriveChange {
            kind: Kind::Unmount as i32,
            path: absolute(&path),
            version,
            stat: None,
            target: key.map(|k| mount_target(&k, None, false)),
        },
    }
}

fn transfer_update(update: TransferUpdate) -> pb::TransferUpdate {
    match update {
        TransferUpdate::Progress(p) => pb::TransferUpdate {
            entries_done: p.entries_done,
            entries_total: p.entries_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            current: p.current.as_deref().unwrap_or_default().to_string(),
            summary: None,
        },
        TransferUpdate::Done {
            progress: p,
            summary: s,
            version,
        } => pb::TransferUpdate {
            entries_done: p.entries_done,
            entries_total: p.entries_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            current: String::new(),
            summary: Some(pb::TransferSummary {
                added: s.added,
                changed: s.changed,
                unchanged: s.unchanged,
                removed: s.removed,
                deduplicated: s.deduplicated,
                bytes_written: s.bytes_written,
                skipped: s
                    .skipped
                    .into_iter()
                    .map(|k| pb::SkippedEntry {
                        path: k.path,
                        reason: k.reason,
                    })
                    .collect(),
                version,
            }),
        },
    }
}

fn write_options(attributes: Option<pb::FileAttributes>) -> hyperdrive::WriteOptions {
    let a = attributes.unwrap_or_default();
    hyperdrive::WriteOptions {
        mode: a.mode,
        uid: a.uid.unwrap_or(0),
        gid: a.gid.unwrap_or(0),
        mtime: a.mtime,
        ctime: a.ctime,
        metadata: a
            .metadata
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect(),
    }
}

#[tonic::async_trait]
impl drives_server::Drives for DrivesService {
    async fn create(
        &self,
        request: Request<pb::CreateDriveRequest>,
    ) -> Result<Response<pb::DriveInfo>, Status> {
        let request = request.into_inner();
        let info = self
            .daemon
            .create_drive(&request.name, request.seeding.map(seeding))
            .await
            .map_err(status)?;
        Ok(Response::new(drive_info(info)))
    }

    async fn follow(
        &self,
        request: Request<pb::FollowDriveRequest>,
    ) -> Result<Response<pb::DriveInfo>, Status> {
        let request = request.into_inner();
        let at = location("drive", request.drive)?;
        let info = self
            .daemon
            .follow_drive(at.key, request.all, request.seeding.map(seeding))
            .await
            .map_err(status)?;
        Ok(Response::new(drive_info(info)))
    }

    async fn info(
        &self,
        request: Request<pb::DriveInfoRequest>,
    ) -> Result<Response<pb::DriveInfo>, Status> {
        let at = location("drive", request.into_inner().drive)?;
        let info = self.daemon.drive_info(&at.key).await.map_err(status)?;
        Ok(Response::new(drive_info(info)))
    }

    async fn list(
        &self,
        _request: Request<pb::ListDrivesRequest>,
    ) -> Result<Response<pb::ListDrivesResponse>, Status> {
        let drives = self.daemon.list_drives().await.map_err(status)?;
        Ok(Response::new(pb::ListDrivesResponse {
            drives: drives.into_iter().map(drive_info).collect(),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveDriveRequest>,
    ) -> Result<Response<pb::RemoveDriveResponse>, Status> {
        let at = location("drive", request.into_inner().drive)?;
        self.daemon.remove_drive(&at).await.map_err(status)?;
        Ok(Response::new(pb::RemoveDriveResponse {}))
    }

    async fn stat(
        &self,
        request: Request<pb::StatRequest>,
    ) -> Result<Response<pb::StatResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let s = self
            .daemon
            .drive_stat(&at, request.lstat)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StatResponse {
            stat: Some(stat(s)),
        }))
    }

    type ReaddirStream = Stream<pb::ReaddirResponse>;

    async fn readdir(
        &self,
        request: Request<pb::ReaddirRequest>,
    ) -> Result<Response<Self::ReaddirStream>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let options = hyperdrive::ReaddirOptions {
            recursive: request.recursive,
            no_mounts: request.no_mounts,
        };
        let entries = self
            .daemon
            .drive_readdir(&at, options, request.stats)
            .await
            .map_err(status)?;
        let page = match request.page_size {
            0 => PAGE,
            n => n as usize,
        };
        let with_stats = request.stats;
        let pages: Vec<pb::ReaddirResponse> = entries
            .chunks(page)
            .map(|chunk| pb::ReaddirResponse {
                entries: chunk
                    .iter()
                    .map(|e| pb::DirEntry {
                        name: e.name.clone(),
                        stat: with_stats.then(|| stat(e.stat.clone())),
                    })
                    .collect(),
            })
            .collect();
        let pages = futures::stream::iter(pages.into_iter().map(Ok)).boxed();
        Ok(Response::new(server_stream(pages, |p| p)))
    }

    type ReadFileStream = Stream<pb::ReadFileResponse>;

    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let timeout = millis(request.timeout_ms);
        let chunks = self
            .daemon
            .drive_read(&at, request.start, request.end, timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(server_stream(chunks, |data| {
            pb::ReadFileResponse { data }
        })))
    }

    async fn locate_file(
        &self,
        request: Request<pb::LocateFileRequest>,
    ) -> Result<Response<pb::LocateFileResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let stored = self
            .daemon
            .drive_locate(&at, request.start, request.end)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LocateFileResponse {
            data_path: stored.path.display().to_string(),
            offset: stored.offset,
            length: stored.length,
            clears: stored.clears,
        }))
    }

    async fn storage_clears(
        &self,
        _request: Request<pb::StorageClearsRequest>,
    ) -> Result<Response<pb::StorageClearsResponse>, Status> {
        Ok(Response::new(pb::StorageClearsResponse {
            clears: self.daemon.storage_clears(),
        }))
    }

    async fn write_file(
        &self,
        request: Request<Streaming<pb::WriteFileRequest>>,
    ) -> Result<Response<pb::WriteFileResponse>, Status> {
        use pb::write_file_request::Part;
        let mut incoming = request.into_inner();
        let start = match incoming.message().await?.and_then(|m| m.part) {
            Some(Part::Start(start)) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be `start`: the location and the attributes",
                ))
            }
        };
        let at = location("location", start.location)?;
        let data = incoming
            .map(|message| match message.map_err(error)?.part {
                Some(Part::Data(data)) => Ok(data),
                _ => Err(DaemonError::invalid(
                    "after `start`, every message must be `data`",
                )),
            })
            .boxed();
        let (s, version) = self
            .daemon
            .drive_write(&at, write_options(start.attributes), data)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::WriteFileResponse {
            stat: Some(stat(s)),
            version,
        }))
    }

    async fn mkdir(
        &self,
        request: Request<pb::MkdirRequest>,
    ) -> Result<Response<pb::MkdirResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        self.daemon
            .drive_mkdir(&at, request.mode)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MkdirResponse {}))
    }

    async fn rm(
        &self,
        request: Request<pb::RmRequest>,
    ) -> Result<Response<pb::RmResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let removed = self
            .daemon
            .drive_rm(&at, request.recursive)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RmResponse { removed }))
    }

    async fn rename(
        &self,
        request: Request<pb::RenameRequest>,
    ) -> Result<Response<pb::RenameResponse>, Status> {
        let request = request.into_inner();
        let from = location("from", request.from)?;
        let to = request
            .to
            .ok_or_else(|| Status::invalid_argument("to is required"))?;
        // A bare path is in the same drive.
        let to = if to.url.is_empty() && to.key.is_empty() {
            DriveLocation::from_parts("", &from.key.to_hex(), to.version, &to.path)
        } else {
            DriveLocation::from_parts(&to.url, &to.key, to.version, &to.path)
        }
        .map_err(status)?;
        self.daemon.drive_rename(&from, &to).await.map_err(status)?;
        Ok(Response::new(pb::RenameResponse {}))
    }

    async fn symlink(
        &self,
        request: Request<pb::SymlinkRequest>,
    ) -> Result<Response<pb::SymlinkResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        self.daemon
            .drive_symlink(&at, &request.target)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SymlinkResponse {}))
    }

    async fn readlink(
        &self,
        request: Request<pb::ReadlinkRequest>,
    ) -> Result<Response<pb::ReadlinkResponse>, Status> {
        let at = location("location", request.into_inner().location)?;
        let target = self.daemon.drive_readlink(&at).await.map_err(status)?;
        Ok(Response::new(pb::ReadlinkResponse { target }))
    }

    async fn truncate(
        &self,
        request: Request<pb::TruncateRequest>,
    ) -> Result<Response<pb::TruncateResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        self.daemon
            .drive_truncate(&at, request.size)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::TruncateResponse {}))
    }

    async fn set_metadata(
        &self,
        request: Request<pb::SetMetadataRequest>,
    ) -> Result<Response<pb::SetMetadataResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let entries = request
            .metadata
            .into_iter()
            .map(|(k, v)| (k, Some(v.to_vec())))
            .collect();
        self.daemon
            .drive_set_metadata(&at, entries)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetMetadataResponse {}))
    }

    async fn delete_metadata(
        &self,
        request: Request<pb::DeleteMetadataRequest>,
    ) -> Result<Response<pb::DeleteMetadataResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let entries = request.keys.into_iter().map(|k| (k, None)).collect();
        self.daemon
            .drive_set_metadata(&at, entries)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteMetadataResponse {}))
    }

    async fn mount(
        &self,
        request: Request<pb::MountRequest>,
    ) -> Result<Response<pb::MountResponse>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let target = request
            .target
            .ok_or_else(|| Status::invalid_argument("target is required: what to mount"))?;
        let key = parse_key("target.key", &target.key)?;
        let options = hyperdrive::MountOptions {
            version: target.version,
            hypercore: target.hypercore,
            ..hyperdrive::MountOptions::default()
        };
        self.daemon
            .drive_mount(&at, key, options)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MountResponse {}))
    }

    async fn unmount(
        &self,
        request: Request<pb::UnmountRequest>,
    ) -> Result<Response<pb::UnmountResponse>, Status> {
        let at = location("location", request.into_inner().location)?;
        self.daemon.drive_unmount(&at).await.map_err(status)?;
        Ok(Response::new(pb::UnmountResponse {}))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let at = location("location", request.into_inner().location)?;
        let mounts = self.daemon.drive_mounts(&at).await.map_err(status)?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts
                .into_iter()
                .map(|m| pb::MountEntry {
                    path: m.path,
                    target: Some(mount_target(&m.key, m.version, false)),
                })
                .collect(),
        }))
    }

    async fn version(
        &self,
        request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        let at = location("drive", request.into_inner().drive)?;
        let drive = self.daemon.drive(&at.key).map_err(status)?;
        Ok(Response::new(pb::VersionResponse {
            version: drive.version(),
        }))
    }

    type DiffStream = Stream<pb::DriveChange>;

    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<Self::DiffStream>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let changes = self.daemon.drive_diff(&at, request.from).map_err(status)?;
        Ok(Response::new(server_stream(changes, |e| {
            change(e.version, e.change)
        })))
    }

    type HistoryStream = Stream<pb::DriveChange>;

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let entries = self
            .daemon
            .drive_history(&at, request.since, request.until, request.live)
            .map_err(status)?;
        Ok(Response::new(server_stream(entries, |e| {
            change(e.version, e.change)
        })))
    }

    type WatchStream = Stream<pb::DriveChange>;

    async fn watch(
        &self,
        request: Request<pb::WatchDriveRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let at = location("location", request.into_inner().location)?;
        let changes = self.daemon.drive_watch(&at).await.map_err(status)?;
        Ok(Response::new(server_stream(changes, |e| {
            change(e.version, e.change)
        })))
    }

    type DownloadStream = Stream<pb::DriveDownloadProgress>;

    async fn download(
        &self,
        request: Request<pb::DriveDownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let at = location("location", request.into_inner().location)?;
        let progress = self.daemon.drive_download(&at).await.map_err(status)?;
        Ok(Response::new(server_stream(progress, |p| {
            pb::DriveDownloadProgress {
                files_done: p.files_done,
                files_total: p.files_total,
                blocks_done: p.blocks_done,
                blocks_total: p.blocks_total,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                done: p.blocks_done == p.blocks_total,
            }
        })))
    }

    async fn clear(
        &self,
        request: Request<pb::DriveClearRequest>,
    ) -> Result<Response<pb::DriveClearResponse>, Status> {
        let at = location("location", request.into_inner().location)?;
        let cleared = self.daemon.drive_clear(&at).await.map_err(status)?;
        Ok(Response::new(pb::DriveClearResponse {
            blocks: cleared.blocks,
            bytes: cleared.bytes,
        }))
    }

    async fn file_stats(
        &self,
        request: Request<pb::FileStatsRequest>,
    ) -> Result<Response<pb::FileStatsResponse>, Status> {
        let at = location("location", request.into_inner().location)?;
        let files = self.daemon.drive_file_stats(&at).await.map_err(status)?;
        Ok(Response::new(pb::FileStatsResponse {
            files: files
                .into_iter()
                .map(|f| pb::FileStat {
                    path: f.path,
                    size: f.size,
                    blocks: f.blocks,
                    downloaded_blocks: f.downloaded_blocks,
                    downloaded_bytes: f.downloaded_bytes,
                })
                .collect(),
        }))
    }

    type ImportStream = Stream<pb::TransferUpdate>;

    async fn import(
        &self,
        request: Request<pb::ImportRequest>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let options = hyperdrive::ImportOptions {
            remove_missing: request.delete,
            dry_run: request.dry_run,
        };
        let updates = self
            .daemon
            .drive_import(&request.local_path, &at, options)
            .map_err(status)?;
        Ok(Response::new(server_stream(updates, transfer_update)))
    }

    type ExportStream = Stream<pb::TransferUpdate>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let request = request.into_inner();
        let at = location("location", request.location)?;
        let options = hyperdrive::ExportOptions {
            dry_run: request.dry_run,
        };
        let updates = self
            .daemon
            .drive_export(
                &at,
                &request.local_path,
                options,
                millis(request.timeout_ms),
            )
            .map_err(status)?;
        Ok(Response::new(server_stream(updates, transfer_update)))
    }
}

/// A request's `timeout_ms`: `None` for 0 (the daemon's default).
fn millis(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into()))
}
