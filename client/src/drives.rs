//! `hyperctl drive …`: creating, following, browsing, writing, importing and exporting
//! hyperdrives through the daemon's `Drives` service.
//!
//! Drives, versions and paths are given as `hyper://KEY[+VERSION]/path` URLs, checked
//! here before anything is sent. Streamed listings and changes print one line per entry
//! (with `--json`, one JSON object per line); everything else prints one text block or
//! one JSON object.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hyperd_proto::v1::drive_change::Kind;
use hyperd_proto::v1::write_file_request::Part;
use hyperd_proto::v1::{
    CreateDriveRequest, DeleteMetadataRequest, DiffRequest, DirEntry, DriveChange,
    DriveClearRequest, DriveDownloadRequest, DriveInfo, DriveInfoRequest, ExportRequest,
    FileAttributes, FileStatsRequest, FollowDriveRequest, HistoryRequest, ImportRequest,
    ListDrivesRequest, LocateFileRequest, LocateFileResponse, Location, MkdirRequest, MountRequest,
    MountTarget, MountsRequest, ReadFileRequest, ReaddirRequest, RemoveDriveRequest, RenameRequest,
    RmRequest, Seeding, SetMetadataRequest, Stat, StatRequest, StorageClearsRequest,
    SymlinkRequest, TransferSummary, TransferUpdate, TruncateRequest, UnmountRequest,
    WatchDriveRequest, WriteFileRequest, WriteFileStart,
};
use hyperd_proto::DriveUrl;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use crate::connect::Client;
use crate::key::Key;
use crate::output;

/// File bytes are sent in messages of this size.
const CHUNK: usize = 1 << 20;

/// POSIX file type bits.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// A `hyper://KEY[+VERSION]/path` argument, checked before connecting.
#[derive(Clone, Debug)]
pub struct Url(DriveUrl);

impl Url {
    /// Parses a drive URL as typed (the `hyper://` may be left out).
    pub fn parse(text: &str) -> anyhow::Result<Url> {
        DriveUrl::parse(text).map(Url).map_err(anyhow::Error::new)
    }

    /// The drive's key in hex.
    pub fn key_hex(&self) -> String {
        hex::encode(self.0.key)
    }

    /// The path in the drive.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// The checked-out version, if the URL names one.
    pub fn version(&self) -> Option<u64> {
        self.0.version
    }

    /// The same drive and version at another path.
    pub fn with_path(&self, path: String) -> Url {
        Url(DriveUrl {
            path,
            ..self.0.clone()
        })
    }

    /// The same drive and path at another version.
    pub fn with_version(&self, version: Option<u64>) -> Url {
        Url(DriveUrl {
            version,
            ..self.0.clone()
        })
    }

    /// The drive alone: its latest version at `/`.
    pub fn drive(&self) -> Url {
        Url(DriveUrl {
            key: self.0.key,
            version: None,
            path: "/".into(),
        })
    }

    /// The location the API takes.
    pub fn location(&self) -> Option<Location> {
        Some(Location {
            url: self.0.to_string(),
            ..Location::default()
        })
    }

    /// The last component of the path, if it has one.
    fn file_name(&self) -> Option<&str> {
        self.0.path.rsplit('/').find(|c| !c.is_empty())
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A drive as camelCase JSON (the core commands' keys where they mean the same).
pub fn drive_json(drive: &DriveInfo) -> Value {
    json!({
        "url": format!("hyper://{}", drive.key),
        "key": drive.key,
        "discoveryKey": drive.discovery_key,
        "contentKey": drive.content_key,
        "version": drive.version,
        "writable": drive.writable,
        "name": drive.name,
        "files": drive.files,
        "bytes": drive.bytes,
        "metadataBlocks": drive.metadata_blocks,
        "metadataBlocksStored": drive.metadata_blocks_stored,
        "contentBlocks": drive.content_blocks,
        "contentBlocksStored": drive.content_blocks_stored,
        "peers": drive.peers,
        "all": drive.all,
    })
}

/// A drive for humans: its URL and aligned details.
pub fn drive_text(drive: &DriveInfo) -> String {
    let details = output::fields(&[
        ("discovery key", drive.discovery_key.clone()),
        (
            "content key",
            if drive.content_key.is_empty() {
                "(not known yet)".into()
            } else {
                drive.content_key.clone()
            },
        ),
        ("name", output::name_or_dash(&drive.name)),
        ("writable", output::yes_no(drive.writable)),
        ("version", drive.version.to_string()),
        (
            "files",
            format!("{} ({})", drive.files, output::bytes(drive.bytes)),
        ),
        (
            "metadata",
            format!(
                "{} of {} blocks stored",
                drive.metadata_blocks_stored, drive.metadata_blocks
            ),
        ),
        (
            "content",
            format!(
                "{} of {} blocks stored",
                drive.content_blocks_stored, drive.content_blocks
            ),
        ),
        ("peers", drive.peers.to_string()),
        (
            "mirrored",
            if drive.all {
                "yes (every version of every file)".into()
            } else {
                "no (sparse: what is read or downloaded)".into()
            },
        ),
    ]);
    format!("hyper://{}\n{details}", drive.key)
}

fn print_drive(drive: &DriveInfo, json: bool) -> anyhow::Result<()> {
    if json {
        output::print_json(&drive_json(drive))
    } else {
        output::print(drive_text(drive))
    }
}

/// `drive create [--name N]`.
pub async fn create(
    client: &Client,
    name: Option<String>,
    seeding: Option<Seeding>,
    json: bool,
) -> anyhow::Result<()> {
    let request = CreateDriveRequest {
        name: name.unwrap_or_default(),
        seeding,
    };
    let drive = client
        .unary(client.drives().create(client.request(request)))
        .await?;
    print_drive(&drive, json)
}

/// `drive follow URL [--all]`.
pub async fn follow(
    client: &Client,
    url: Url,
    all: bool,
    seeding: Option<Seeding>,
    json: bool,
) -> anyhow::Result<()> {
    let request = FollowDriveRequest {
        drive: url.drive().location(),
        all,
        seeding,
    };
    let drive = client
        .unary(client.drives().follow(client.request(request)))
        .await?;
    print_drive(&drive, json)
}

/// `drive info URL`.
pub async fn info(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = DriveInfoRequest {
        drive: url.drive().location(),
    };
    let drive = client
        .unary(client.drives().info(client.request(request)))
        .await?;
    print_drive(&drive, json)
}

/// `drive list`.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let drives = client
        .unary(client.drives().list(client.request(ListDrivesRequest {})))
        .await?
        .drives;
    if json {
        return output::print_json(&Value::Array(drives.iter().map(drive_json).collect()));
    }
    if drives.is_empty() {
        return output::print("no drives (create one with `hyperctl drive create`)");
    }
    let rows: Vec<Vec<String>> = drives
        .iter()
        .map(|d| {
            vec![
                d.key.clone(),
                output::name_or_dash(&d.name),
                d.version.to_string(),
                d.files.to_string(),
                output::bytes(d.bytes),
                d.peers.to_string(),
                output::yes_no(d.writable),
            ]
        })
        .collect();
    output::print(output::table(
        &[
            "KEY", "NAME", "VERSION", "FILES", "SIZE", "PEERS", "WRITABLE",
        ],
        &rows,
    ))
}

/// `drive rm-drive URL`.
pub async fn remove(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = RemoveDriveRequest {
        drive: url.drive().location(),
    };
    client
        .unary(client.drives().remove(client.request(request)))
        .await?;
    if json {
        output::print_json(&json!({ "removed": url.key_hex() }))
    } else {
        output::print(format!("removed {}", url.drive()))
    }
}

/// A mode as `ls -l` shows it: `drwxr-xr-x`.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & S_IFMT {
        S_IFDIR => 'd',
        S_IFLNK => 'l',
        _ => '-',
    };
    let mut text = String::with_capacity(10);
    text.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// Milliseconds since the epoch as `2026-12-07 03:10` (UTC).
pub fn time_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (hour, minute) = (secs / 3600 % 24, secs / 60 % 60);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

fn target_json(target: &MountTarget) -> Value {
    json!({ "key": target.key, "version": target.version, "hypercore": target.hypercore })
}

fn target_text(target: &MountTarget) -> String {
    let mut text = format!("hyper://{}", target.key);
    if let Some(version) = target.version {
        text.push_str(&format!("+{version}"));
    }
    if target.hypercore {
        text.push_str(" (hypercore)");
    }
    text
}

/// A Stat as camelCase JSON; metadata values in hex (they are bytes).
pub fn stat_json(stat: &Stat) -> Value {
    let metadata: serde_json::Map<String, Value> = stat
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(hex::encode(v))))
        .collect();
    json!({
        "type": kind_name(stat.mode),
        "mode": stat.mode,
        "uid": stat.uid,
        "gid": stat.gid,
        "size": stat.size,
        "blocks": stat.blocks,
        "offset": stat.offset,
        "byteOffset": stat.byte_offset,
        "mtime": stat.mtime,
        "ctime": stat.ctime,
        "linkname": stat.linkname,
        "mount": stat.mount.as_ref().map(target_json),
        "metadata": metadata,
    })
}

fn kind_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        S_IFDIR => "directory",
        S_IFLNK => "symlink",
        _ => "file",
    }
}

fn stat_text(url: &Url, stat: &Stat) -> String {
    let mut rows = vec![
        ("type", kind_name(stat.mode).to_string()),
        (
            "mode",
            format!("{} ({:o})", mode_string(stat.mode), stat.mode & 0o7777),
        ),
        (
            "size",
            format!("{} ({} bytes)", output::bytes(stat.size), stat.size),
        ),
        ("uid/gid", format!("{}/{}", stat.uid, stat.gid)),
        ("modified", format!("{} UTC", time_text(stat.mtime))),
        ("changed", format!("{} UTC", time_text(stat.ctime))),
        (
            "content",
            format!(
                "{} blocks from block {} (byte {})",
                stat.blocks, stat.offset, stat.byte_offset
            ),
        ),
    ];
    if !stat.linkname.is_empty() {
        rows.push(("target", stat.linkname.clone()));
    }
    if let Some(target) = &stat.mount {
        rows.push(("mount", target_text(target)));
    }
    let mut keys: Vec<&String> = stat.metadata.keys().collect();
    keys.sort();
    let metadata: Vec<(String, String)> = keys
        .into_iter()
        .map(|k| {
            (
                k.clone(),
                String::from_utf8_lossy(&stat.metadata[k]).into_owned(),
            )
        })
        .collect();
    for (k, v) in &metadata {
        rows.push(("metadata", format!("{k}={v}")));
    }
    format!("{url}\n{}", output::fields(&rows))
}

/// `drive stat URL [-L]`: without `-L` a symlink is shown itself, as `stat` does.
pub async fn stat(client: &Client, url: Url, follow: bool, json: bool) -> anyhow::Result<()> {
    let request = StatRequest {
        location: url.location(),
        lstat: !follow,
    };
    let response = client
        .unary(client.drives().stat(client.request(request)))
        .await?;
    let stat = response.stat.unwrap_or_default();
    if json {
        let mut value = stat_json(&stat);
        value["url"] = json!(url.to_string());
        output::print_json(&value)
    } else {
        output::print(stat_text(&url, &stat))
    }
}

/// Options of `drive ls`.
pub struct LsOptions {
    /// Every entry below, paths relative to the directory.
    pub recursive: bool,
    /// `ls -l` lines.
    pub long: bool,
    /// Leave mounted drives out.
    pub no_mounts: bool,
}

/// One `ls -l` line per entry, columns aligned.
fn long_lines(entries: &[DirEntry]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|entry| {
            let stat = entry.stat.clone().unwrap_or_default();
            let mut name = entry.name.clone();
            if !stat.linkname.is_empty() {
                name.push_str(&format!(" -> {}", stat.linkname));
            }
            if let Some(target) = &stat.mount {
                name.push_str(&format!(" (mount of {})", target_text(target)));
            }
            let mode = if stat.mount.is_some() {
                mode_string(S_IFDIR | (stat.mode & 0o7777))
            } else {
                mode_string(stat.mode)
            };
            [
                mode,
                stat.uid.to_string(),
                stat.gid.to_string(),
                stat.size.to_string(),
                format!("{} {name}", time_text(stat.mtime)),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (uid, gid, size) = (width(1), width(2), width(3));
    rows.iter()
        .map(|r| {
            format!(
                "{} {:>uid$} {:>gid$} {:>size$} {}",
                r[0], r[1], r[2], r[3], r[4]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `drive ls URL [-r] [-l]`: names, one per line, sorted like `ls` (with `--json`, one
/// object per entry, streamed in the drive's order).
pub async fn ls(client: &Client, url: Url, options: LsOptions, json: bool) -> anyhow::Result<()> {
    let request = ReaddirRequest {
        location: url.location(),
        recursive: options.recursive,
        stats: options.long || json,
        no_mounts: options.no_mounts,
        page_size: 0,
    };
    let mut pages = client.unary(client.drives().readdir(request)).await?;
    let mut entries = Vec::new();
    while let Some(page) = pages
        .message()
        .await
        .map_err(|status| client.status_error(status))?
    {
        if !json {
            entries.extend(page.entries);
            continue;
        }
        let mut text = String::new();
        for entry in &page.entries {
            let stat = entry.stat.as_ref().map(stat_json);
            text.push_str(&json!({ "name": entry.name, "stat": stat }).to_string());
            text.push('\n');
        }
        output::write_raw(text.as_bytes())?;
    }
    if json || entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if options.long {
        output::print(long_lines(&entries))
    } else {
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        output::print(names.join("\n"))
    }
}

/// `drive cat URL`: the file's bytes (or a range) on stdout.
pub async fn cat(
    client: &Client,
    url: Url,
    range: (u64, Option<u64>),
    timeout_ms: u32,
    via: Via,
) -> anyhow::Result<()> {
    read_into(client, &url, range, timeout_ms, via, &mut output::write_raw).await?;
    Ok(())
}

/// How a read gets a file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// From the daemon's storage when it can be read here, else through the API.
    Storage,
    /// Through the API (ReadFile) only.
    Api,
}

/// How many bytes a read takes from the daemon's storage between two checks that no
/// clear removed them meanwhile.
const STORAGE_CHUNK: u64 = 8 << 20;
const PAGE: usize = 4096;

/// Hands bytes `range` (start, end) of the file at `url` to `out` in order; returns how
/// many. When the daemon says where they lie in its storage and that file can be opened
/// here (LocateFile), they are read from there, each chunk used only once StorageClears
/// says no clear happened since (a clear punches the blocks out); whatever that did not
/// give is read through ReadFile. `Via::Api` always uses ReadFile.
async fn read_into(
    client: &Client,
    url: &Url,
    (start, end): (u64, Option<u64>),
    timeout_ms: u32,
    via: Via,
    out: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut done = 0;
    if via == Via::Storage {
        let request = LocateFileRequest {
            location: url.location(),
            start,
            end,
        };
        // Any refusal (blocks missing, an older daemon) leaves the read to ReadFile,
        // which also reports errors such as a missing file.
        let located = client
            .unary(client.drives().locate_file(client.request(request)))
            .await;
        if let Ok(located) = located {
            let (read, complete) = read_stored(client, &located, out).await?;
            if complete {
                return Ok(read);
            }
            done = read;
        }
    }
    let request = ReadFileRequest {
        location: url.location(),
        start: start + done,
        end,
        timeout_ms,
    };
    let mut chunks = client.unary(client.drives().read_file(request)).await?;
    while let Some(chunk) = chunks
        .message()
        .await
        .map_err(|status| client.status_error(status))?
    {
        out(&chunk.data)?;
        done += chunk.data.len() as u64;
    }
    Ok(done)
}

/// Reads what LocateFile `located` says from the daemon's storage into `out`: the bytes
/// handed over and whether that was all of them (not if the file cannot be opened here,
/// or a clear happened).
async fn read_stored(
    client: &Client,
    located: &LocateFileResponse,
    out: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, bool)> {
    use std::os::unix::fs::FileExt;
    let Ok(file) = File::open(&located.data_path) else {
        return Ok((0, false));
    };
    // Page-aligned: the kernel copies into a misaligned buffer at a fraction of the
    // speed on some CPUs (2.5 against 10 GB/s measured here).
    let size = located.length.min(STORAGE_CHUNK) as usize;
    let mut raw = vec![0; size + PAGE];
    let skip = raw.as_ptr().align_offset(PAGE).min(PAGE);
    let buf = &mut raw[skip..skip + size];
    let mut done = 0;
    while done < located.length {
        let n = (located.length - done).min(STORAGE_CHUNK) as usize;
        // A short read means a clear cut the file; the check below says so too.
        if file
            .read_exact_at(&mut buf[..n], located.offset + done)
            .is_err()
        {
            return Ok((done, false));
        }
        let clears = client
            .unary(client.drives().storage_clears(StorageClearsRequest {}))
            .await;
        if clears.map(|c| c.clears).ok() != Some(located.clears) {
            return Ok((done, false));
        }
        out(&buf[..n])?;
        done += n as u64;
    }
    Ok((done, true))
}

/// `drive put LOCAL|- URL`: writes a local file (or stdin) to a path; a URL ending in
/// `/` is a directory, the file keeps its name there. The file appears whole when all
/// its bytes have arrived.
pub async fn put(client: &Client, local: &Path, url: Url, json: bool) -> anyhow::Result<()> {
    let stdin = local == Path::new("-");
    let url = if url.path().ends_with('/') {
        let name = local
            .file_name()
            .filter(|_| !stdin)
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                anyhow::anyhow!("{url} is a directory: name the file (hyper://KEY/dir/name)")
            })?;
        url.with_path(format!("{}{name}", url.path()))
    } else {
        url
    };
    let name = if stdin {
        "stdin".to_string()
    } else {
        local.display().to_string()
    };
    let (reader, size, mode): (Box<dyn Read + Send>, Option<u64>, Option<u32>) = if stdin {
        (Box::new(io::stdin()), None, None)
    } else {
        let file = File::open(local).with_context(|| format!("cannot open {name}"))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read the attributes of {name}"))?;
        if meta.is_dir() {
            anyhow::bail!("{name} is a directory (use `hyperctl drive import`)");
        }
        let size = meta.is_file().then_some(meta.len());
        (
            Box::new(file),
            size,
            Some(meta.permissions().mode() & 0o7777),
        )
    };
    let bar = match size {
        Some(size) => output::progress_bar(size, true),
        None => ProgressBar::hidden(),
    };
    let start = WriteFileRequest {
        part: Some(Part::Start(WriteFileStart {
            location: url.location(),
            attributes: Some(FileAttributes {
                mode,
                ..FileAttributes::default()
            }),
        })),
    };
    let (messages, received) = mpsc::channel::<WriteFileRequest>(4);
    let (done, outcome) = oneshot::channel::<String>();
    let thread_bar = bar.clone();
    std::thread::spawn(move || {
        if let Err(e) = read_chunks(reader, &messages, &thread_bar) {
            let _ = done.send(e);
            // Ending the stream now would tell hyperd the file is complete. Keep it open
            // until hyperctl exits: a connection cut midway leaves the path as it was.
            loop {
                std::thread::park();
            }
        }
    });
    let stream =
        tokio_stream::once(start).chain(tokio_stream::wrappers::ReceiverStream::new(received));
    // No deadline: a large file takes as long as it takes.
    let mut drives = client.drives();
    let call = drives.write_file(stream);
    tokio::pin!(call);
    let result = tokio::select! {
        result = &mut call => result,
        Ok(e) = outcome => {
            bar.abandon();
            anyhow::bail!("reading {name}: {e}; {url} was not written");
        }
    };
    bar.finish_and_clear();
    let written = result
        .map_err(|status| client.status_error(status))?
        .into_inner();
    let stat = written.stat.unwrap_or_default();
    if json {
        output::print_json(&json!({
            "url": url.to_string(),
            "size": stat.size,
            "version": written.version,
        }))
    } else {
        output::print(format!(
            "wrote {} to {url} (version {})",
            output::bytes(stat.size),
            written.version
        ))
    }
}

/// Reads until EOF and sends chunks of [`CHUNK`] bytes; stops early, without error,
/// when the call has ended.
fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    messages: &mpsc::Sender<WriteFileRequest>,
    bar: &ProgressBar,
) -> Result<(), String> {
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        let limit = CHUNK as u64;
        let n = (&mut reader)
            .take(limit)
            .read_to_end(&mut chunk)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        bar.inc(n as u64);
        let message = WriteFileRequest {
            part: Some(Part::Data(chunk.into())),
        };
        if messages.blocking_send(message).is_err() {
            // The call ended (hyperd answered or failed): its result tells.
            return Ok(());
        }
    }
}

/// `drive get URL [LOCAL]`: copies a file out of the drive. LOCAL defaults to the file's
/// name in the current directory; a directory receives the file under its name; `-` is
/// stdout. The local file appears when complete (written aside, then renamed).
pub async fn get(
    client: &Client,
    url: Url,
    local: Option<PathBuf>,
    via: Via,
    json: bool,
) -> anyhow::Result<()> {
    if local.as_deref() == Some(Path::new("-")) {
        return cat(client, url, (0, None), 0, via).await;
    }
    let request = StatRequest {
        location: url.location(),
        lstat: false,
    };
    let stat = client
        .unary(client.drives().stat(client.request(request)))
        .await?
        .stat
        .unwrap_or_default();
    if stat.mode & S_IFMT == S_IFDIR || stat.mount.is_some() {
        anyhow::bail!("{url} is a directory (use `hyperctl drive export`)");
    }
    let file_name = url
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{url} names no file"))?
        .to_string();
    let target = match local {
        Some(path) if path.is_dir() => path.join(&file_name),
        Some(path) => path,
        None => PathBuf::from(&file_name),
    };
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = tempfile_in(&dir, &file_name)?;
    let result = fetch_into(client, &url, &partial.1, stat.size, via).await;
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial.0);
            return Err(e);
        }
    };
    let mode = if stat.mode & 0o7777 == 0 {
        0o644
    } else {
        stat.mode & 0o777
    };
    let finish = std::fs::set_permissions(&partial.0, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&partial.0, &target));
    if let Err(e) = finish {
        let _ = std::fs::remove_file(&partial.0);
        return Err(anyhow::anyhow!("writing {}: {e}", target.display()));
    }
    if json {
        output::print_json(&json!({
            "url": url.to_string(),
            "path": target.display().to_string(),
            "size": written,
        }))
    } else {
        output::print(format!(
            "saved {} as {}",
            output::bytes(written),
            target.display()
        ))
    }
}

/// A new hidden file beside where `name` goes: its path and an open handle.
fn tempfile_in(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, File)> {
    let path = dir.join(format!(".{name}.hyperctl-{}", std::process::id()));
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok((path, file))
}

/// Copies the file at `url` into `file` with a progress bar; returns the bytes written.
async fn fetch_into(
    client: &Client,
    url: &Url,
    file: &File,
    size: u64,
    via: Via,
) -> anyhow::Result<u64> {
    let bar = output::progress_bar(size, true);
    let mut out = io::BufWriter::with_capacity(CHUNK, file);
    let mut written = 0u64;
    let mut write = |chunk: &[u8]| -> anyhow::Result<()> {
        out.write_all(chunk).context("writing the local file")?;
        written += chunk.len() as u64;
        bar.set_position(written);
        Ok(())
    };
    let result = read_into(client, url, (0, None), 0, via, &mut write).await;
    let written = match result {
        Ok(written) => written,
        Err(e) => {
            bar.abandon();
            return Err(e);
        }
    };
    out.flush().context("writing the local file")?;
    bar.finish_and_clear();
    Ok(written)
}

/// `drive mkdir URL`.
pub async fn mkdir(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = MkdirRequest {
        location: url.location(),
        mode: None,
    };
    client
        .unary(client.drives().mkdir(client.request(request)))
        .await?;
    done(
        json,
        json!({ "created": url.to_string() }),
        format!("created {url}"),
    )
}

/// `drive rm URL [-r]`.
pub async fn rm(client: &Client, url: Url, recursive: bool, json: bool) -> anyhow::Result<()> {
    let request = RmRequest {
        location: url.location(),
        recursive,
    };
    let removed = client
        .unary(client.drives().rm(client.request(request)))
        .await
        .map_err(|e| {
            if !recursive && e.to_string().contains("not empty") {
                anyhow::anyhow!("{e} (use -r to remove it and everything below)")
            } else {
                e
            }
        })?
        .removed;
    done(
        json,
        json!({ "url": url.to_string(), "removed": removed }),
        format!(
            "removed {url} ({removed} entr{})",
            if removed == 1 { "y" } else { "ies" }
        ),
    )
}

/// `drive mv FROM TO`: TO is a URL of the same drive or a path in it.
pub async fn mv(client: &Client, from: Url, to: &str, json: bool) -> anyhow::Result<()> {
    let to = if to.starts_with('/') {
        from.with_path(to.to_string())
    } else {
        Url::parse(to)?
    };
    let request = RenameRequest {
        from: from.location(),
        to: to.location(),
    };
    client
        .unary(client.drives().rename(client.request(request)))
        .await?;
    done(
        json,
        json!({ "from": from.to_string(), "to": to.to_string() }),
        format!("moved {from} to {}", to.path()),
    )
}

/// `drive ln -s TARGET URL`.
pub async fn symlink(client: &Client, target: String, url: Url, json: bool) -> anyhow::Result<()> {
    let request = SymlinkRequest {
        location: url.location(),
        target: target.clone(),
    };
    client
        .unary(client.drives().symlink(client.request(request)))
        .await?;
    done(
        json,
        json!({ "url": url.to_string(), "target": target }),
        format!("linked {url} -> {target}"),
    )
}

/// `drive truncate URL SIZE`.
pub async fn truncate(client: &Client, url: Url, size: u64, json: bool) -> anyhow::Result<()> {
    let request = TruncateRequest {
        location: url.location(),
        size,
    };
    client
        .unary(client.drives().truncate(client.request(request)))
        .await?;
    done(
        json,
        json!({ "url": url.to_string(), "size": size }),
        format!("truncated {url} to {}", output::bytes(size)),
    )
}

/// `drive meta URL [KEY=VALUE…] [--delete KEY…]`: sets and deletes per-file metadata,
/// then shows what the file has.
pub async fn meta(
    client: &Client,
    url: Url,
    set: Vec<String>,
    delete: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let mut metadata = HashMap::new();
    for pair in set {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("expected KEY=VALUE, got '{pair}'"))?;
        metadata.insert(k.to_string(), v.as_bytes().to_vec().into());
    }
    if !metadata.is_empty() {
        let request = SetMetadataRequest {
            location: url.location(),
            metadata: metadata.into_iter().collect(),
        };
        client
            .unary(client.drives().set_metadata(client.request(request)))
            .await?;
    }
    if !delete.is_empty() {
        let request = DeleteMetadataRequest {
            location: url.location(),
            keys: delete,
        };
        client
            .unary(client.drives().delete_metadata(client.request(request)))
            .await?;
    }
    let request = StatRequest {
        location: url.location(),
        lstat: true,
    };
    let stat = client
        .unary(client.drives().stat(client.request(request)))
        .await?
        .stat
        .unwrap_or_default();
    if json {
        return output::print_json(&stat_json(&stat)["metadata"]);
    }
    let mut pairs: Vec<(&String, String)> = stat
        .metadata
        .iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned()))
        .collect();
    pairs.sort();
    let lines: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if lines.is_empty() {
        output::print(format!("{url} has no metadata"))
    } else {
        output::print(lines.join("\n"))
    }
}

/// `drive mount URL KEY [--version N] [--hypercore]`.
pub async fn mount(
    client: &Client,
    url: Url,
    key: Key,
    version: Option<u64>,
    hypercore: bool,
    json: bool,
) -> anyhow::Result<()> {
    let target = MountTarget {
        key: key.hex(),
        version,
        hypercore,
    };
    let text = format!("mounted {} at {url}", target_text(&target));
    let request = MountRequest {
        location: url.location(),
        target: Some(target.clone()),
    };
    client
        .unary(client.drives().mount(client.request(request)))
        .await?;
    done(
        json,
        json!({ "url": url.to_string(), "mount": target_json(&target) }),
        text,
    )
}

/// `drive unmount URL`.
pub async fn unmount(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = UnmountRequest {
        location: url.location(),
    };
    client
        .unary(client.drives().unmount(client.request(request)))
        .await?;
    done(
        json,
        json!({ "unmounted": url.to_string() }),
        format!("unmounted {url}"),
    )
}

/// `drive mounts URL`.
pub async fn mounts(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = MountsRequest {
        location: url.location(),
    };
    let mounts = client
        .unary(client.drives().mounts(client.request(request)))
        .await?
        .mounts;
    if json {
        let array = mounts
            .iter()
            .map(|m| {
                json!({
                    "path": m.path,
                    "mount": m.target.as_ref().map(target_json),
                })
            })
            .collect();
        return output::print_json(&Value::Array(array));
    }
    if mounts.is_empty() {
        return output::print(format!("no mounts under {url}"));
    }
    let rows: Vec<Vec<String>> = mounts
        .iter()
        .map(|m| {
            vec![
                m.path.clone(),
                m.target.as_ref().map(target_text).unwrap_or_default(),
            ]
        })
        .collect();
    output::print(output::table(&["PATH", "MOUNT"], &rows))
}

/// Prints the result of a command that only reports success.
fn done(json: bool, value: Value, text: String) -> anyhow::Result<()> {
    if json {
        output::print_json(&value)
    } else {
        output::print(text)
    }
}

fn change_kind(kind: i32) -> &'static str {
    match Kind::try_from(kind) {
        Ok(Kind::Put) => "put",
        Ok(Kind::Del) => "del",
        Ok(Kind::Mount) => "mount",
        Ok(Kind::Unmount) => "unmount",
        _ => "unknown",
    }
}

/// A change as camelCase JSON.
pub fn change_json(change: &DriveChange) -> Value {
    json!({
        "type": change_kind(change.kind),
        "path": change.path,
        "version": change.version,
        "stat": change.stat.as_ref().map(stat_json),
        "mount": change.target.as_ref().map(target_json),
    })
}

/// A change on one line: version, kind, path and what it is now.
pub fn change_text(change: &DriveChange) -> String {
    let mut text = format!(
        "{:>6}  {:<7} {}",
        change.version,
        change_kind(change.kind),
        change.path
    );
    if let Some(stat) = &change.stat {
        if !stat.linkname.is_empty() {
            text.push_str(&format!(" -> {}", stat.linkname));
        } else if stat.mode & S_IFMT == S_IFDIR {
            text.push('/');
        } else if stat.mount.is_none() {
            text.push_str(&format!(" ({})", output::bytes(stat.size)));
        }
    }
    if let Some(target) = &change.target {
        text.push_str(&format!(" ({})", target_text(target)));
    }
    text
}

/// Prints a stream of changes, one line each, until it ends.
async fn print_changes(
    client: &Client,
    mut changes: tonic::Streaming<DriveChange>,
    json: bool,
) -> anyhow::Result<()> {
    while let Some(change) = changes
        .message()
        .await
        .map_err(|status| client.status_error(status))?
    {
        if json {
            output::print_json(&change_json(&change))?;
        } else {
            output::print(change_text(&change))?;
        }
    }
    Ok(())
}

/// `drive log URL [--since V] [--until V] [--live]`: the drive's history, one change per
/// line with the version it made.
pub async fn log(
    client: &Client,
    url: Url,
    since: u64,
    until: Option<u64>,
    live: bool,
    json: bool,
) -> anyhow::Result<()> {
    let request = HistoryRequest {
        location: url.location(),
        since,
        until,
        live,
    };
    let changes = client.unary(client.drives().history(request)).await?;
    print_changes(client, changes, json).await
}

/// `drive diff URL --from V [--to V]`: what changed under the URL's path.
pub async fn diff(
    client: &Client,
    url: Url,
    from: u64,
    to: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let url = match (url.version(), to) {
        (Some(v), Some(t)) if v != t => {
            anyhow::bail!("{url} names version {v} but --to says {t}: give one")
        }
        (_, Some(t)) => url.with_version(Some(t)),
        _ => url,
    };
    let request = DiffRequest {
        location: url.location(),
        from,
    };
    let changes = client.unary(client.drives().diff(request)).await?;
    print_changes(client, changes, json).await
}

/// `drive watch URL`: changes under the path as they happen, until interrupted.
pub async fn watch(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = WatchDriveRequest {
        location: url.location(),
    };
    let changes = client.unary(client.drives().watch(request)).await?;
    print_changes(client, changes, json).await
}

/// `drive download URL`: fetches a file or a tree from peers, with progress.
pub async fn download(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = DriveDownloadRequest {
        location: url.location(),
    };
    let mut updates = client.unary(client.drives().download(request)).await?;
    let bar = output::progress_bar(0, true);
    let mut last = None;
    loop {
        let progress = match updates.message().await {
            Ok(Some(progress)) => progress,
            Ok(None) => break,
            Err(status) => {
                bar.abandon();
                return Err(client.status_error(status));
            }
        };
        if bar.length() != Some(progress.bytes_total) {
            bar.set_length(progress.bytes_total);
        }
        bar.set_position(progress.bytes_done);
        let done = progress.done;
        last = Some(progress);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    let Some(p) = last else {
        anyhow::bail!("hyperd ended the download without reporting any progress");
    };
    if !p.done {
        anyhow::bail!(
            "the download of {url} ended before it was complete ({} of {} blocks)",
            p.blocks_done,
            p.blocks_total
        );
    }
    done(
        json,
        json!({
            "url": url.to_string(),
            "filesDone": p.files_done,
            "filesTotal": p.files_total,
            "blocksDone": p.blocks_done,
            "blocksTotal": p.blocks_total,
            "bytesDone": p.bytes_done,
            "bytesTotal": p.bytes_total,
            "done": p.done,
        }),
        format!(
            "downloaded {url}: {} file{}, {} blocks, {} stored",
            p.files_total,
            if p.files_total == 1 { "" } else { "s" },
            p.blocks_total,
            output::bytes(p.bytes_total)
        ),
    )
}

/// `drive clear URL`: deletes the local copy of a file's or a tree's content.
pub async fn clear(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = DriveClearRequest {
        location: url.location(),
    };
    let cleared = client
        .unary(client.drives().clear(client.request(request)))
        .await?;
    done(
        json,
        json!({ "url": url.to_string(), "blocks": cleared.blocks, "bytes": cleared.bytes }),
        format!(
            "cleared {url}: {} blocks ({}) deleted locally",
            cleared.blocks,
            output::bytes(cleared.bytes)
        ),
    )
}

/// `drive stats URL`: content blocks stored per file.
pub async fn stats(client: &Client, url: Url, json: bool) -> anyhow::Result<()> {
    let request = FileStatsRequest {
        location: url.location(),
    };
    let files = client
        .unary(client.drives().file_stats(client.request(request)))
        .await?
        .files;
    if json {
        let array = files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path,
                    "size": f.size,
                    "blocks": f.blocks,
                    "downloadedBlocks": f.downloaded_blocks,
                    "downloadedBytes": f.downloaded_bytes,
                })
            })
            .collect();
        return output::print_json(&Value::Array(array));
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![
                f.path.clone(),
                output::bytes(f.size),
                format!("{}/{}", f.downloaded_blocks, f.blocks),
            ]
        })
        .collect();
    output::print(output::table(&["PATH", "SIZE", "STORED"], &rows))
}

/// `LOCAL` as hyperd needs it: absolute (it does not share our working directory).
fn absolute(local: &Path) -> anyhow::Result<String> {
    let path = if local.is_absolute() {
        local.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(local)
    };
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} is not valid UTF-8", path.display()))
}

/// Which way a transfer goes.
#[derive(Clone, Copy)]
pub enum Direction {
    /// Local folder into the drive.
    Import,
    /// Drive into a local folder.
    Export,
}

/// `drive import DIR URL [--delete] [--dry-run]`.
pub async fn import(
    client: &Client,
    local: &Path,
    url: Url,
    delete: bool,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let local = absolute(local)?;
    if !Path::new(&local).is_dir() {
        anyhow::bail!("{local} is not a directory");
    }
    let request = ImportRequest {
        local_path: local.clone(),
        location: url.location(),
        delete,
        dry_run,
    };
    let updates = client.unary(client.drives().import(request)).await?;
    transfer(
        client,
        updates,
        Direction::Import,
        &local,
        &url,
        dry_run,
        json,
    )
    .await
}

/// `drive export URL DIR [--dry-run] [--timeout-ms MS]`.
pub async fn export(
    client: &Client,
    url: Url,
    local: &Path,
    dry_run: bool,
    timeout_ms: u32,
    json: bool,
) -> anyhow::Result<()> {
    let local = absolute(local)?;
    let request = ExportRequest {
        location: url.location(),
        local_path: local.clone(),
        dry_run,
        timeout_ms,
    };
    let updates = client.unary(client.drives().export(request)).await?;
    transfer(
        client,
        updates,
        Direction::Export,
        &local,
        &url,
        dry_run,
        json,
    )
    .await
}

/// Follows a transfer's progress with a bar (entries, bytes, the current entry), then
/// prints its summary.
async fn transfer(
    client: &Client,
    mut updates: tonic::Streaming<TransferUpdate>,
    direction: Direction,
    local: &str,
    url: &Url,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let bar = output::transfer_bar();
    let summary = loop {
        let update = match updates.message().await {
            Ok(Some(update)) => update,
            Ok(None) => break None,
            Err(status) => {
                bar.abandon();
                return Err(client.status_error(status));
            }
        };
        if let Some(summary) = update.summary {
            break Some(summary);
        }
        if bar.length() != Some(update.entries_total) {
            bar.set_length(update.entries_total);
        }
        bar.set_position(update.entries_done);
        bar.set_message(format!(
            "{}/{} {}",
            output::bytes(update.bytes_done),
            output::bytes(update.bytes_total),
            update.current
        ));
    };
    bar.finish_and_clear();
    let summary =
        summary.ok_or_else(|| anyhow::anyhow!("hyperd ended the transfer without a summary"))?;
    for skipped in &summary.skipped {
        output::note(format!("skipped {}: {}", skipped.path, skipped.reason));
    }
    if json {
        return output::print_json(&summary_json(&summary, direction, local, url, dry_run));
    }
    output::print(summary_text(&summary, direction, local, url, dry_run))
}

fn summary_json(
    s: &TransferSummary,
    direction: Direction,
    local: &str,
    url: &Url,
    dry_run: bool,
) -> Value {
    let skipped: Vec<Value> = s
        .skipped
        .iter()
        .map(|e| json!({ "path": e.path, "reason": e.reason }))
        .collect();
    let mut value = json!({
        "url": url.to_string(),
        "path": local,
        "dryRun": dry_run,
        "added": s.added,
        "changed": s.changed,
        "unchanged": s.unchanged,
        "removed": s.removed,
        "deduplicated": s.deduplicated,
        "bytesWritten": s.bytes_written,
        "skipped": skipped,
    });
    if let Direction::Import = direction {
        value["version"] = json!(s.version);
    }
    value
}

fn summary_text(
    s: &TransferSummary,
    direction: Direction,
    local: &str,
    url: &Url,
    dry_run: bool,
) -> String {
    let (verb, from, to) = match (direction, dry_run) {
        (Direction::Import, false) => ("imported", local.to_string(), url.to_string()),
        (Direction::Import, true) => ("would import", local.to_string(), url.to_string()),
        (Direction::Export, false) => ("exported", url.to_string(), local.to_string()),
        (Direction::Export, true) => ("would export", url.to_string(), local.to_string()),
    };
    let mut text = format!(
        "{verb} {from} to {to}: {} added, {} changed, {} unchanged, {} removed; {} written",
        s.added,
        s.changed,
        s.unchanged,
        s.removed,
        output::bytes(s.bytes_written)
    );
    if s.deduplicated > 0 {
        text.push_str(&format!(
            " ({} file{} already stored)",
            s.deduplicated,
            if s.deduplicated == 1 { "" } else { "s" }
        ));
    }
    if !s.skipped.is_empty() {
        text.push_str(&format!("; {} skipped", s.skipped.len()));
    }
    if let (Direction::Import, false) = (direction, dry_run) {
        text.push_str(&format!(" (version {})", s.version));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_like_ls() {
        assert_eq!(mode_string(S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100_644), "-rw-r--r--");
        assert_eq!(mode_string(S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o100_750), "-rwxr-x---");
    }

    #[test]
    fn utc_times() {
        assert_eq!(time_text(0), "1970-01-01 00:00");
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(time_text(951_827_696_000), "2000-02-29 12:34");
        // 2026-12-07 03:10:00 UTC.
        assert_eq!(time_text(1_796_613_000_000), "2026-12-07 03:10");
    }

    #[test]
    fn urls_keep_the_drive_and_version() {
        let key = "ab".repeat(32);
        let url = Url::parse(&format!("hyper://{key}+3/docs/a b.txt")).unwrap();
        assert_eq!(url.path(), "/docs/a b.txt");
        assert_eq!(url.version(), Some(3));
        assert_eq!(url.file_name(), Some("a b.txt"));
        assert_eq!(url.drive().to_string(), format!("hyper://{key}/"));
        assert_eq!(
            url.with_path("/x".into()).to_string(),
            format!("hyper://{key}+3/x")
        );
        assert_eq!(Url::parse(&key).unwrap().path(), "/");
        assert!(Url::parse("hyper://abc/x").is_err());
    }
}
