//! Local folders in and out of a drive: [`Drive::import`] writes a folder's files,
//! directories and symlinks into the drive, and [`Drive::export`] writes a drive's tree
//! back to disk. Both skip what is already equal, comparing a local file with a drive file
//! by the merkle leaf hashes of the drive file's blocks against the local file cut the
//! same way (the drive's content is not read), and stream big files in batches of blocks
//! on the blocking pool, never a whole file in memory.
//!
//! Import keeps mode and mtime (ms) of every entry and symlink targets as given; a
//! changed file's content is found in the content feed when already there (dedup.rs),
//! else appended as one contiguous run under the feed's writer lock, its Stat put after.
//! Small files, directories and symlinks go in groups (group.rs): many files' contents in
//! one append, their Stats in one trie batch, the next group read while one is written.
//! A dry run goes through the same comparisons and lookups and leaves out every write.
//! Export never writes outside the target: names with NUL, empty, `.` or `..` components
//! are refused, symlinks are written as links (never followed), and nothing is written
//! below a path that is not a directory it made or found. Files are written to a
//! temporary name and renamed, so a symlink already at the path is replaced, not
//! followed; modes lose setuid, setgid and sticky bits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use hypercore::crypto::{leaf_hash, leaf_hashes, Hash};
use hypercore::Node;
use hypertrie::{GetOptions, Hypertrie, MountListOptions, PutOptions};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;

use crate::dedup::{blocking, Run};
use group::Groups;

mod group;
use crate::dir::decode_stat;
use crate::path::key_of;
use crate::{trie_at, Drive, Error, FileReader, Stat, MAX_BLOCK};

/// Blocks read, hashed, appended or written at a time (8 MiB of 512 KiB blocks).
const BATCH_BLOCKS: usize = 16;
/// Bytes an export writes to a local file per hop to the blocking pool.
const BATCH_BYTES: usize = 8 << 20;

/// Options of [`Drive::import`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Remove the drive entries below the target that the local folder does not have
    /// (never a mount point, nor anything inside a mounted drive).
    pub remove_missing: bool,
    /// Write nothing: report the progress and summary the import would have, from the
    /// same comparisons and content lookups (a file whose content an earlier file of the
    /// same import would bring counts as deduplicated, as it would be).
    pub dry_run: bool,
}

/// Options of [`Drive::export`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions {
    /// Write nothing locally: report the progress and summary the export would have, from
    /// the same comparisons with the local files.
    pub dry_run: bool,
}

/// A running [`Drive::import`] or [`Drive::export`]: resolves to its summary. It runs
/// while it is polled; dropped, it stops between two batches (what was written stays,
/// every file written whole).
#[must_use = "an import or export runs while it is polled"]
pub struct Transfer {
    progress: watch::Receiver<TransferProgress>,
    work: BoxFuture<'static, Result<TransferSummary, Error>>,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

impl Transfer {
    /// The progress, updated after each entry and each batch of a big file (wrap it in a
    /// `WatchStream` to forward it).
    pub fn progress(&self) -> watch::Receiver<TransferProgress> {
        self.progress.clone()
    }
}

impl Future for Transfer {
    type Output = Result<TransferSummary, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.work.as_mut().poll(cx)
    }
}

/// How far an import or export is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferProgress {
    /// Entries (files, directories, symlinks) done.
    pub entries_done: u64,
    /// Entries to do.
    pub entries_total: u64,
    /// Bytes of regular files done: compared, found in the content feed or copied.
    pub bytes_done: u64,
    /// Bytes of regular files to do.
    pub bytes_total: u64,
    /// The drive path (absolute) of the entry being transferred, or removed; `None`
    /// before the first. Shared with the transfer, which builds each path once.
    pub current: Option<Arc<str>>,
}

/// What an import or export did, entry by entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferSummary {
    /// Entries that were not at the destination.
    pub added: u64,
    /// Entries rewritten (content, attributes, link target or type).
    pub changed: u64,
    /// Entries already equal, left alone.
    pub unchanged: u64,
    /// Drive entries removed (import with `remove_missing`).
    pub removed: u64,
    /// Files whose content was found in the content feed instead of appended (import).
    pub deduplicated: u64,
    /// Bytes appended to the content feed (import) or written to local files (export).
    pub bytes_written: u64,
    /// Entries left out, and why.
    pub skipped: Vec<Skipped>,
}

/// An entry an import or export left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The local path (import) or drive path (export).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// What happened to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Added,
    Changed,
    Unchanged,
}

impl TransferSummary {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Added => self.added += 1,
            Outcome::Changed => self.changed += 1,
            Outcome::Unchanged => self.unchanged += 1,
        }
    }
}

/// TransferProgress kept and sent.
struct Tracker {
    progress: TransferProgress,
    sender: watch::Sender<TransferProgress>,
}

impl Tracker {
    fn new(sender: watch::Sender<TransferProgress>, entries: u64, bytes: u64) -> Tracker {
        let tracker = Tracker {
            progress: TransferProgress {
                entries_total: entries,
                bytes_total: bytes,
                ..TransferProgress::default()
            },
            sender,
        };
        tracker.send();
        tracker
    }

    fn send(&self) {
        self.sender.send_replace(self.progress.clone());
    }

    /// The entry at drive path `path` is next.
    fn start(&mut self, path: &Arc<str>) {
        self.progress.current = Some(path.clone());
        self.send();
    }

    fn bytes(&mut self, n: u64) {
        self.progress.bytes_done += n;
        self.send();
    }

    fn entry(&mut self) {
        self.progress.entries_done += 1;
        self.send();
    }
}

/// Where an import's writes go.
enum Writes {
    /// Into the drive.
    Drive,
    /// Nowhere: a dry run, noting the contents it would have appended.
    DryRun(WouldAppend),
}

/// The local files whose contents a dry run would have appended, by size: a real import
/// would find them in the content feed for a later file with the same content.
#[derive(Default)]
struct WouldAppend {
    by_size: HashMap<u64, Vec<Noted>>,
}

/// A file [`WouldAppend`] noted, with the leaf hashes of its content once a file of the
/// same size needed them.
struct Noted {
    path: PathBuf,
    hashes: Option<Vec<Hash>>,
}

impl WouldAppend {
    /// Whether the content of the local file at `path` (`size` bytes) is that of a file
    /// noted before; if not, notes it. Files are hashed only when sizes are equal.
    async fn note(&mut self, path: &Path, size: u64) -> Result<bool, Error> {
        let path = path.to_path_buf();
        let Some(earlier) = self.by_size.remove(&size) else {
            let noted = Noted { path, hashes: None };
            self.by_size.insert(size, vec![noted]);
            return Ok(false);
        };
        let (earlier, found) = blocking(move || {
            let mut earlier = earlier;
            let hashes = hash_file(&path)?;
            let mut found = false;
            for noted in &mut earlier {
                let theirs = match &mut noted.hashes {
                    Some(theirs) => theirs,
                    none => none.insert(hash_file(&noted.path)?),
                };
                if *theirs == hashes {
                    found = true;
                    break;
                }
            }
            if !found {
                earlier.push(Noted {
                    path,
                    hashes: Some(hashes),
                });
            }
            Ok::<_, Error>((earlier, found))
        })
        .await??;
        self.by_size.insert(size, earlier);
        Ok(found)
    }
}

/// What an import does with one entry, compared with the drive ([`Drive::decide`]).
enum Decision {
    /// Nothing: it is unchanged or cannot be imported (counted in the summary).
    Done,
    /// Put this Stat (a directory or symlink).
    Put(Place, Stat),
    /// Put the file's content, then its Stat; unless the content is that of the Stat
    /// given, which has the file's size and attributes.
    File(Place, Option<Stat>),
}

/// Where an entry goes: the drive owning its path (this one or one mounted in it), that
/// drive's trie and the key there.
struct Place {
    owner: Drive,
    trie: Hypertrie,
    key: String,
    /// Whether the key had an entry.
    existed: bool,
}

impl Place {
    /// How a write here counts.
    fn outcome(&self) -> Outcome {
        match self.existed {
            false => Outcome::Added,
            true => Outcome::Changed,
        }
    }
}

/// One entry of a local folder.
#[derive(Clone, Debug)]
struct LocalEntry {
    /// Its path below the folder, `/`-separated ("" for the folder itself).
    rel: String,
    path: PathBuf,
    kind: LocalKind,
    /// Permission bits (with setuid, setgid, sticky).
    mode: u32,
    /// Modified, ms since the epoch.
    mtime: u64,
}

impl LocalEntry {
    /// Whether `stat` has this entry's mode and mtime.
    fn same_attrs(&self, stat: &Stat) -> bool {
        stat.mode & 0o7777 == self.mode && stat.mtime == self.mtime
    }
}

#[derive(Clone, Debug)]
enum LocalKind {
    Dir,
    File { size: u64 },
    Symlink { target: String },
}

impl Drive {
    /// Writes the local folder `local_dir` into the drive at `drive_path`: regular files
    /// (content, mode, mtime), directories (empty ones too, with mode and mtime) and
    /// symlinks (targets as given). An entry whose kind, mode, mtime and content (or
    /// target) are unchanged is left alone; other file types and names a drive cannot
    /// hold (not UTF-8, with `\`) are skipped and listed in the summary.
    pub fn import(&self, local_dir: &Path, drive_path: &str, options: ImportOptions) -> Transfer {
        let (sender, progress) = watch::channel(TransferProgress::default());
        let (drive, local_dir, drive_path) = (
            self.clone(),
            local_dir.to_path_buf(),
            drive_path.to_string(),
        );
        let work = async move {
            drive
                .run_import(&local_dir, &drive_path, options, sender)
                .await
        };
        Transfer {
            progress,
            work: Box::pin(work),
        }
    }

    async fn run_import(
        &self,
        local_dir: &Path,
        drive_path: &str,
        options: ImportOptions,
        sender: watch::Sender<TransferProgress>,
    ) -> Result<TransferSummary, Error> {
        // Checked before the walk: a bad base would otherwise fail only at the first write.
        let base = crate::check_path(drive_path)?;
        let root = local_dir.to_path_buf();
        let (entries, skipped) = blocking(move || walk(&root)).await??;
        let bytes = entries
            .iter()
            .map(|e| match e.kind {
                LocalKind::File { size } => size,
                _ => 0,
            })
            .sum();
        let mut tracker = Tracker::new(sender, entries.len() as u64, bytes);
        let mut summary = TransferSummary {
            skipped,
            ..TransferSummary::default()
        };
        let mut writes = match options.dry_run {
            true => Writes::DryRun(WouldAppend::default()),
            false => Writes::Drive,
        };
        let mut keys = HashSet::new();
        let mut groups = Groups::default();
        for entry in &entries {
            let key = join_key(&base, &entry.rel);
            let path: Arc<str> = format!("/{key}").into();
            tracker.start(&path);
            // The drive's root has no Stat of its own.
            if !key.is_empty() {
                let decision = self.decide(&path, entry, &mut summary).await?;
                let Some(decision) = groups
                    .take(&path, entry, decision, &writes, &mut summary, &mut tracker)
                    .await?
                else {
                    keys.insert(key);
                    continue;
                };
                if !matches!(decision, Decision::Done) {
                    groups.finish(&mut summary, &mut tracker).await?;
                }
                self.import_decided(
                    &path,
                    entry,
                    decision,
                    &mut writes,
                    &mut summary,
                    &mut tracker,
                )
                .await?;
            }
            keys.insert(key);
            tracker.entry();
        }
        groups.finish(&mut summary, &mut tracker).await?;
        if options.remove_missing {
            let all = MountListOptions {
                recursive: true,
                no_mounts: true,
                gt: true,
            };
            let listed = self
                .trie
                .list(&base, all)
                .await
                .map_err(trie_at(drive_path))?;
            for found in listed {
                let key = found.node.key();
                if found.node.is_mount() || keys.contains(key) {
                    continue;
                }
                let path: Arc<str> = format!("/{key}").into();
                tracker.start(&path);
                if !options.dry_run {
                    self.trie.del(key).await.map_err(trie_at(&path))?;
                }
                summary.removed += 1;
            }
        }
        Ok(summary)
    }

    /// Compares the entry at drive path `path` with what the drive holds there: counts
    /// it in `summary` when nothing is to be written, else says what is.
    async fn decide(
        &self,
        path: &str,
        entry: &LocalEntry,
        summary: &mut TransferSummary,
    ) -> Result<Decision, Error> {
        let (owner, trie, key) = self.owner_of(path).await?;
        if !trie.writable() {
            return Err(Error::NotWritable {
                path: path.to_string(),
            });
        }
        // A Stat that does not decode is replaced like any other.
        let existing = trie
            .get(&key, GetOptions::default())
            .await
            .map_err(trie_at(path))?
            .and_then(|node| decode_stat(&key, node.value.as_deref()).ok());
        if let Some(mount) = existing.as_ref().filter(|s| s.mount.is_some()) {
            // A local directory's entries go into the drive mounted there; nothing else
            // replaces a mount.
            if mount.is_dir() && matches!(entry.kind, LocalKind::Dir) {
                summary.count(Outcome::Unchanged);
            } else {
                summary.skipped.push(Skipped {
                    path: entry.path.display().to_string(),
                    reason: format!("{path} is a mount in the drive"),
                });
            }
            return Ok(Decision::Done);
        }
        let place = Place {
            owner,
            trie,
            key,
            existed: existing.is_some(),
        };
        let now = self.now();
        let stat = match &entry.kind {
            LocalKind::Dir => {
                if existing
                    .as_ref()
                    .is_some_and(|s| s.is_dir() && entry.same_attrs(s))
                {
                    summary.count(Outcome::Unchanged);
                    return Ok(Decision::Done);
                }
                let content = place.owner.content_feed().await?;
                Stat {
                    offset: content.len(),
                    byte_offset: content.byte_len(),
                    mtime: entry.mtime,
                    ..Stat::directory(entry.mode, now)
                }
            }
            LocalKind::Symlink { target } => {
                let same = |s: &Stat| {
                    s.is_symlink()
                        && s.linkname.as_deref() == Some(target)
                        && s.mtime == entry.mtime
                };
                if existing.as_ref().is_some_and(same) {
                    summary.count(Outcome::Unchanged);
                    return Ok(Decision::Done);
                }
                // Symlinks keep JS's mode: a local link's mode means nothing.
                Stat {
                    mtime: entry.mtime,
                    ..Stat::symlink(target, now)
                }
            }
            LocalKind::File { size } => {
                // Same size and attributes: maybe the same content, which only reading
                // the file can tell.
                let maybe_same = existing
                    .filter(|s| s.is_file() && s.size == *size && s.blocks > 0)
                    .filter(|s| entry.same_attrs(s));
                return Ok(Decision::File(place, maybe_same));
            }
        };
        Ok(Decision::Put(place, stat))
    }

    /// Imports one entry at drive path `path`, as [`Self::decide`] decided.
    async fn import_decided(
        &self,
        path: &str,
        entry: &LocalEntry,
        decision: Decision,
        writes: &mut Writes,
        summary: &mut TransferSummary,
        tracker: &mut Tracker,
    ) -> Result<(), Error> {
        let (place, stat) = match decision {
            Decision::Done => return Ok(()),
            Decision::Put(place, stat) => (place, stat),
            Decision::File(place, maybe_same) => {
                let LocalKind::File { size } = entry.kind else {
                    unreachable!("a file decision is made for files only");
                };
                if let Some(s) = maybe_same {
                    if place.owner.same_content(&entry.path, &s).await? {
                        tracker.bytes(size);
                        summary.count(Outcome::Unchanged);
                        return Ok(());
                    }
                }
                let (run, size, appended) = place
                    .owner
                    .import_content(&entry.path, size, writes, tracker)
                    .await?;
                if appended {
                    summary.bytes_written += size;
                } else {
                    summary.deduplicated += 1;
                }
                let stat = Stat {
                    size,
                    blocks: run.blocks,
                    offset: run.offset,
                    byte_offset: run.byte_offset,
                    mtime: entry.mtime,
                    ..Stat::file(entry.mode, self.now())
                };
                (place, stat)
            }
        };
        if let Writes::Drive = writes {
            let value = Bytes::from(stat.encode_to_vec());
            place
                .trie
                .put(&place.key, value, PutOptions::default())
                .await
                .map_err(trie_at(path))?;
        }
        summary.count(place.outcome());
        Ok(())
    }

    /// Whether the local file at `path` holds the blocks `stat` points to in this drive's
    /// content feed (by their leaf hashes; false if they are not stored here).
    async fn same_content(&self, path: &Path, stat: &Stat) -> Result<bool, Error> {
        let feed = self.content_feed().await?.clone();
        let (start, blocks) = (stat.offset, stat.blocks);
        let path = path.to_path_buf();
        blocking(move || {
            let Some(end) = start.checked_add(blocks) else {
                return Ok(false);
            };
            match feed.leaves(start, end) {
                Ok(leaves) => same_as_leaves(&path, &leaves),
                Err(_) => Ok(false),
            }
        })
        .await?
    }

    /// Puts the content of the local file at `path` (`size` bytes when listed) in this
    /// drive's content feed: where it already is, or appended in batches as one run (a
    /// dry run only notes it, with the run it would start now). Returns the run, the
    /// bytes it holds and whether they were (or would be) appended.
    async fn import_content(
        &self,
        path: &Path,
        size: u64,
        writes: &mut Writes,
        tracker: &mut Tracker,
    ) -> Result<(Run, u64, bool), Error> {
        if !self.options.no_dedup {
            let blocks = size.div_ceil(MAX_BLOCK as u64).max(1);
            if self.may_hold(size, blocks).await? {
                let p = path.to_path_buf();
                let first = blocking(move || hash_first(&p)).await??;
                let candidates = self.candidates(size, blocks, &first).await?;
                if !candidates.is_empty() {
                    let p = path.to_path_buf();
                    let hashes = blocking(move || hash_file(&p)).await??;
                    if let Some(run) = self.confirm(candidates, hashes).await? {
                        tracker.bytes(size);
                        return Ok((run, size, false));
                    }
                }
            }
        }
        let feed = self.content_feed().await?.clone();
        if let Writes::DryRun(would_append) = writes {
            let appended = self.options.no_dedup || !would_append.note(path, size).await?;
            tracker.bytes(size);
            let run = Run {
                offset: feed.len(),
                byte_offset: feed.byte_len(),
                blocks: size.div_ceil(MAX_BLOCK as u64).max(1),
            };
            return Ok((run, size, appended));
        }
        // Nothing else appends between this file's batches (every writer of several
        // batches takes the lock, and so does every file write).
        let _writer = feed.lock_writer().await;
        let mut file = None;
        let mut run: Option<Run> = None;
        let mut total = 0;
        loop {
            // Opening, reading a batch and appending it are one hop to the blocking pool:
            // a file of one batch (nearly every file) costs one hop, not three.
            let (p, f, first) = (path.to_path_buf(), feed.clone(), run.is_none());
            let (opened, batch, eof) = blocking(move || {
                let opened = match file {
                    Some(opened) => opened,
                    None => open_regular(&p)?,
                };
                let (opened, mut blocks, eof) = read_batch(opened, &p)?;
                if blocks.is_empty() {
                    if !first {
                        return Ok((opened, None, true));
                    }
                    // An empty file is one empty block, as in JS.
                    blocks.push(Bytes::new());
                }
                let count = blocks.len() as u64;
                let bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
                let appended = f.append_batch_blocking(blocks);
                Ok::<_, Error>((opened, Some((appended, count, bytes)), eof))
            })
            .await??;
            file = Some(opened);
            let Some((appended, count, bytes)) = batch else {
                break;
            };
            let appended = appended.map_err(|source| self.content_error(source))?;
            match &mut run {
                None => {
                    run = Some(Run {
                        offset: appended.start,
                        byte_offset: appended.start_byte,
                        blocks: count,
                    })
                }
                Some(run) if appended.start == run.offset + run.blocks => run.blocks += count,
                Some(run) => {
                    let reason = format!(
                        "a batch of {} landed at block {}, not right after {}..{}: something \
                         appended without the writer lock",
                        path.display(),
                        appended.start,
                        run.offset,
                        run.offset + run.blocks
                    );
                    return Err(self.content_error(hypercore::Error::Internal { reason }));
                }
            }
            total += bytes;
            tracker.bytes(bytes);
            if eof {
                break;
            }
        }
        let run = run.ok_or_else(|| Error::Task {
            reason: format!("importing {} appended nothing", path.display()),
        })?;
        Ok((run, total, true))
    }

    /// Writes the drive's tree below `drive_path` (a directory) into the local directory
    /// `local_dir` (created if missing): files bit-exact with their mode and mtime,
    /// directories (empty ones too) with theirs, symlinks as links to their targets as
    /// stored. Local files already equal are left alone. Refuses (see the module doc)
    /// entries that would escape the target or be written through a symlink.
    pub fn export(&self, drive_path: &str, local_dir: &Path, options: ExportOptions) -> Transfer {
        let (sender, progress) = watch::channel(TransferProgress::default());
        let (drive, local_dir, drive_path) = (
            self.clone(),
            local_dir.to_path_buf(),
            drive_path.to_string(),
        );
        let work = async move {
            drive
                .run_export(&drive_path, &local_dir, options, sender)
                .await
        };
        Transfer {
            progress,
            work: Box::pin(work),
        }
    }

    async fn run_export(
        &self,
        drive_path: &str,
        local_dir: &Path,
        options: ExportOptions,
        sender: watch::Sender<TransferProgress>,
    ) -> Result<TransferSummary, Error> {
        let dry_run = options.dry_run;
        let base = key_of(drive_path);
        let root_stat = if base.is_empty() {
            None
        } else {
            let stat = self.lstat(drive_path).await?;
            if !stat.is_dir() {
                return Err(Error::WrongType {
                    path: drive_path.to_string(),
                    reason: "is not a directory",
                });
            }
            self.node_stat(&base).await?
        };
        let all = MountListOptions {
            recursive: true,
            ..MountListOptions::default()
        };
        let mut summary = TransferSummary::default();
        let mut items: BTreeMap<String, Item> = BTreeMap::new();
        let listed = self
            .trie
            .list(&base, all)
            .await
            .map_err(trie_at(drive_path))?;
        for found in listed {
            let key = found.node.key();
            let rel = match base.is_empty() {
                true => Some(key),
                false => key
                    .strip_prefix(base.as_str())
                    .and_then(|r| r.strip_prefix('/')),
            };
            let Some(rel) = rel else { continue };
            check_name(key, rel)?;
            let stat = decode_stat(key, found.node.value.as_deref())?;
            let item = if stat.is_symlink() {
                if stat.linkname.as_deref().unwrap_or_default().is_empty() {
                    // No filesystem holds a link to nothing.
                    summary.skipped.push(Skipped {
                        path: format!("/{key}"),
                        reason: "a symlink with no target".into(),
                    });
                    continue;
                }
                Item::Symlink(stat)
            } else if stat.is_dir() {
                Item::Dir(Some(stat))
            } else if stat.is_file() {
                Item::File(stat, found.trie)
            } else {
                summary.skipped.push(Skipped {
                    path: format!("/{key}"),
                    reason: format!("mode {:o} is not a file, directory or symlink", stat.mode),
                });
                continue;
            };
            items.entry(rel.to_string()).or_insert(item);
        }
        // Directories that exist only as the path of what is in them.
        let parents: Vec<String> = items
            .keys()
            .flat_map(|rel| rel.match_indices('/').map(|(i, _)| rel[..i].to_string()))
            .collect();
        for parent in parents {
            items.entry(parent).or_insert(Item::Dir(None));
        }
        // Sizes come from Stats, checked only when each file is exported.
        let bytes = items
            .values()
            .map(|i| match i {
                Item::File(stat, _) => stat.size,
                _ => 0,
            })
            .fold(0, u64::saturating_add);
        let mut tracker = Tracker::new(sender, items.len() as u64, bytes);

        let root = local_dir.to_path_buf();
        let made = root.clone();
        let root_made = blocking(move || make_root(&made, dry_run)).await??;
        // Directories whose attributes are set last, deepest first (writing into a
        // directory changes its mtime; a read-only one is written into first).
        let mut finish = vec![(root.clone(), root_stat)];
        let mut dirs: HashSet<String> = HashSet::from([String::new()]);
        // Directories that were not there as directories: nothing in them is looked at
        // (a dry run never makes them).
        let mut made: HashSet<String> = HashSet::new();
        if root_made {
            made.insert(String::new());
        }
        for (rel, item) in items {
            let path: Arc<str> = format!("/{}", join_key(&base, &rel)).into();
            tracker.start(&path);
            let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
            if !dirs.contains(parent) {
                return Err(Error::Refused {
                    path: path.to_string(),
                    reason: format!(
                        "/{} is not a directory in the drive",
                        join_key(&base, parent)
                    ),
                });
            }
            let at = Target {
                path: root.join(&rel),
                in_made_dir: made.contains(parent),
                dry_run,
            };
            let outcome = match item {
                Item::Dir(stat) => {
                    let (target, attrs) = (at.clone(), stat.clone());
                    let (outcome, new) =
                        blocking(move || make_dir(&target, attrs.as_ref())).await??;
                    if new {
                        made.insert(rel.clone());
                    }
                    dirs.insert(rel);
                    finish.push((at.path, stat));
                    outcome
                }
                Item::Symlink(stat) => {
                    let target = stat.linkname.clone().unwrap_or_default();
                    blocking(move || make_symlink(&at, &target, stat.mtime)).await??
                }
                Item::File(stat, trie) => {
                    let source = self.reader_of(&path, stat.clone(), &trie, true).await?;
                    let (outcome, written) = export_file(source, &at, &stat, &mut tracker)
                        .await
                        .inspect_err(|_| {
                            if !dry_run {
                                // Best effort: the temporary file is not the user's.
                                let _ = fs::remove_file(temporary(&at.path));
                            }
                        })?;
                    summary.bytes_written += written;
                    outcome
                }
            };
            summary.count(outcome);
            tracker.entry();
        }
        if dry_run {
            return Ok(summary);
        }
        blocking(move || {
            for (path, stat) in finish.iter().rev() {
                if let Some(stat) = stat {
                    set_attrs(path, stat.mode, stat.mtime)?;
                }
            }
            Ok::<_, Error>(())
        })
        .await??;
        Ok(summary)
    }
}

/// A drive entry to export.
enum Item {
    /// A directory; `None` for one that exists only as the path of what is in it.
    Dir(Option<Stat>),
    Symlink(Stat),
    File(Stat, Hypertrie),
}

/// A local path an export writes to.
#[derive(Clone, Debug)]
struct Target {
    path: PathBuf,
    /// The directory it is in was made by this export (or would be, in a dry run): there
    /// is nothing at the path yet.
    in_made_dir: bool,
    /// Decide, but write nothing.
    dry_run: bool,
}

impl Target {
    /// What is at the path now, not following a symlink.
    fn existing(&self) -> Result<Option<fs::Metadata>, Error> {
        if self.in_made_dir {
            return Ok(None);
        }
        match fs::symlink_metadata(&self.path) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(local(&self.path)(e)),
        }
    }
}

/// Makes the local directory `root` an export writes into, with its parents, unless it is
/// one (a dry run makes nothing). Returns whether it was not there.
fn make_root(root: &Path, dry_run: bool) -> Result<bool, Error> {
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(false),
        Ok(_) => Err(Error::Local {
            path: root.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !dry_run {
                fs::create_dir_all(root).map_err(local(root))?;
            }
            Ok(true)
        }
        Err(e) => Err(local(root)(e)),
    }
}

/// Writes one file: left alone if the local file's blocks hash to the drive file's leaves
/// (attributes fixed if they differ); else streamed to a temporary name beside it, given
/// its mode and mtime, and renamed over it. Returns the bytes written (or, in a dry run,
/// that would be).
async fn export_file(
    mut source: FileReader,
    at: &Target,
    stat: &Stat,
    tracker: &mut Tracker,
) -> Result<(Outcome, u64), Error> {
    let target = at.clone();
    let existing = blocking(move || target.existing()).await??;
    let (path, mode, mtime) = (&at.path, stat.mode & 0o777, stat.mtime);
    if let Some(meta) = &existing {
        if meta.is_dir() {
            return Err(is_a_directory(path));
        }
        if meta.is_file() && meta.len() == source.len() {
            let (feed, start, end) = source.blocks();
            let feed = feed.clone();
            let p = path.to_path_buf();
            let same = blocking(move || match feed.leaves(start, end) {
                Ok(leaves) => same_as_leaves(&p, &leaves),
                Err(_) => Ok(false),
            })
            .await??;
            if same {
                tracker.bytes(source.len());
                if meta.mode() & 0o777 == mode && mtime_ms(meta) == mtime {
                    return Ok((Outcome::Unchanged, 0));
                }
                if !at.dry_run {
                    let p = path.to_path_buf();
                    blocking(move || set_attrs(&p, mode, mtime)).await??;
                }
                return Ok((Outcome::Changed, 0));
            }
        }
    }
    let outcome = match existing {
        None => Outcome::Added,
        Some(_) => Outcome::Changed,
    };
    if at.dry_run {
        tracker.bytes(source.len());
        return Ok((outcome, source.len()));
    }
    let temp = temporary(path);
    let t = temp.clone();
    let mut file = blocking(move || {
        match fs::remove_file(&t) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(local(&t)(e)),
            _ => {}
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&t)
            .map_err(local(&t))
    })
    .await??;
    let mut written = 0;
    while let Some(chunk) = source.try_next().await? {
        // Gathered into batches, so the blocking pool is not hopped to for each block.
        let mut batch = vec![chunk];
        let mut size = batch[0].len();
        while size < BATCH_BYTES {
            match source.try_next().now_or_never() {
                Some(Ok(Some(chunk))) => {
                    size += chunk.len();
                    batch.push(chunk);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(None)) | None => break,
            }
        }
        let t = temp.clone();
        file = blocking(move || {
            for chunk in &batch {
                file.write_all(chunk).map_err(local(&t))?;
            }
            Ok::<_, Error>(file)
        })
        .await??;
        written += size as u64;
        tracker.bytes(size as u64);
    }
    let (t, p) = (temp.clone(), path.to_path_buf());
    blocking(move || {
        drop(file);
        set_attrs(&t, mode, mtime)?;
        fs::rename(&t, &p).map_err(local(&p))
    })
    .await??;
    Ok((outcome, written))
}

/// The temporary name a file is exported to before it is renamed to `path`.
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.hyperd-export"))
}

/// Refuses a drive key (`rel` below the exported directory) that is not a safe relative
/// local path.
fn check_name(key: &str, rel: &str) -> Result<(), Error> {
    let refuse = |reason: &str| Error::Refused {
        path: format!("/{key}"),
        reason: reason.to_string(),
    };
    if rel.contains('\0') {
        return Err(refuse("its name contains a NUL byte"));
    }
    if rel
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(refuse(
            "an empty, '.' or '..' component would leave the target directory",
        ));
    }
    Ok(())
}

/// The trie key of `rel` below the key `base`.
fn join_key(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => base.to_string(),
        (false, false) => format!("{base}/{rel}"),
    }
}

fn local(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Local {
        path: path.to_path_buf(),
        source,
    }
}

fn is_a_directory(path: &Path) -> Error {
    Error::Local {
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory, and the drive has something else here",
        ),
    }
}

/// Modified time in ms since the epoch (0 before it).
fn mtime_ms(meta: &fs::Metadata) -> u64 {
    let ms = meta.mtime().saturating_mul(1000) + meta.mtime_nsec() / 1_000_000;
    ms.max(0) as u64
}

/// Sets the permission bits (setuid, setgid, sticky dropped) and mtime of `path`, which
/// is not followed if a symlink (its mode is then left).
fn set_attrs(path: &Path, mode: u32, mtime: u64) -> Result<(), Error> {
    let meta = fs::symlink_metadata(path).map_err(local(path))?;
    if !meta.is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777)).map_err(local(path))?;
    }
    set_mtime(path, mtime)
}

/// Sets the mtime of `path` (not following a symlink) to `mtime` ms.
fn set_mtime(path: &Path, mtime: u64) -> Result<(), Error> {
    let secs = i64::try_from(mtime / 1000).unwrap_or(i64::MAX);
    let time = TimeSpec::new(secs, ((mtime % 1000) * 1_000_000) as _);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| local(path)(e.into()))
}

/// Makes the directory `at` (replacing a file or symlink there), writable by its owner
/// while the export writes into it; its attributes are set at the end. Returns whether it
/// was not there as a directory.
fn make_dir(at: &Target, stat: Option<&Stat>) -> Result<(Outcome, bool), Error> {
    let path = &at.path;
    let (outcome, replace) = match at.existing()? {
        Some(meta) if meta.is_dir() => {
            if meta.mode() & 0o700 != 0o700 && !at.dry_run {
                let mode = fs::Permissions::from_mode((meta.mode() | 0o700) & 0o7777);
                fs::set_permissions(path, mode).map_err(local(path))?;
            }
            let same = stat.is_none_or(|s| {
                meta.mode() & 0o777 == s.mode & 0o777 && mtime_ms(&meta) == s.mtime
            });
            let outcome = match same {
                true => Outcome::Unchanged,
                false => Outcome::Changed,
            };
            return Ok((outcome, false));
        }
        Some(_) => (Outcome::Changed, true),
        None => (Outcome::Added, false),
    };
    if !at.dry_run {
        if replace {
            fs::remove_file(path).map_err(local(path))?;
        }
        fs::create_dir(path).map_err(local(path))?;
    }
    Ok((outcome, true))
}

/// Makes `at` a symlink to `target` with mtime `mtime` (replacing a file or another
/// link there).
fn make_symlink(at: &Target, target: &str, mtime: u64) -> Result<Outcome, Error> {
    let path = &at.path;
    let (outcome, replace) = match at.existing()? {
        Some(meta) if meta.is_dir() => return Err(is_a_directory(path)),
        Some(meta) if meta.is_symlink() => {
            let current = fs::read_link(path).map_err(local(path))?;
            if current == Path::new(target) {
                if mtime_ms(&meta) == mtime {
                    return Ok(Outcome::Unchanged);
                }
                if !at.dry_run {
                    set_mtime(path, mtime)?;
                }
                return Ok(Outcome::Changed);
            }
            (Outcome::Changed, true)
        }
        Some(_) => (Outcome::Changed, true),
        None => (Outcome::Added, false),
    };
    if !at.dry_run {
        if replace {
            fs::remove_file(path).map_err(local(path))?;
        }
        std::os::unix::fs::symlink(target, path).map_err(local(path))?;
        set_mtime(path, mtime)?;
    }
    Ok(outcome)
}

/// The entries of the local folder `root`, itself first, each directory before what is in
/// it (sorted by name within a directory); and what was skipped.
fn walk(root: &Path) -> Result<(Vec<LocalEntry>, Vec<Skipped>), Error> {
    let meta = fs::metadata(root).map_err(local(root))?;
    if !meta.is_dir() {
        return Err(Error::Local {
            path: root.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf(), meta)];
    while let Some((rel, path, meta)) = stack.pop() {
        let mode = meta.mode() & 0o7777;
        let mtime = mtime_ms(&meta);
        let kind = if meta.is_dir() {
            let mut children = Vec::new();
            for child in fs::read_dir(&path).map_err(local(&path))? {
                let child = child.map_err(local(&path))?;
                let child_path = child.path();
                let skip = |reason: &str| Skipped {
                    path: child_path.display().to_string(),
                    reason: reason.to_string(),
                };
                let Some(name) = child.file_name().to_str().map(str::to_string) else {
                    skipped.push(skip("its name is not UTF-8"));
                    continue;
                };
                if name.contains('\\') {
                    skipped.push(skip("a drive reads '\\' in a name as a separator"));
                    continue;
                }
                match fs::symlink_metadata(&child_path) {
                    Ok(meta) => children.push((name, child_path, meta)),
                    // Gone since it was listed: nothing to import.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(local(&child_path)(e)),
                }
            }
            // Popped in name order.
            children.sort_by(|a, b| b.0.cmp(&a.0));
            for (name, child_path, meta) in children {
                stack.push((join_key(&rel, &name), child_path, meta));
            }
            LocalKind::Dir
        } else if meta.is_file() {
            LocalKind::File { size: meta.len() }
        } else if meta.is_symlink() {
            let target = fs::read_link(&path).map_err(local(&path))?;
            match target.to_str() {
                Some(target) => LocalKind::Symlink {
                    target: target.to_string(),
                },
                None => {
                    skipped.push(Skipped {
                        path: path.display().to_string(),
                        reason: "its target is not UTF-8".into(),
                    });
                    continue;
                }
            }
        } else {
            skipped.push(Skipped {
                path: path.display().to_string(),
                reason: "not a regular file, directory or symlink".into(),
            });
            continue;
        };
        entries.push(LocalEntry {
            rel,
            path,
            kind,
            mode,
            mtime,
        });
    }
    Ok((entries, skipped))
}

/// Opens `path` for reading if it is (still) a regular file, never through a symlink.
fn open_regular(path: &Path) -> Result<File, Error> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(local(path))?;
    let meta = file.metadata().map_err(local(path))?;
    if !meta.is_file() {
        return Err(Error::Local {
            path: path.to_path_buf(),
            source: io::Error::other("is no longer a regular file"),
        });
    }
    Ok(file)
}

/// Up to `size` bytes from `file` (fewer at its end).
fn read_block(file: &mut File, size: usize, path: &Path) -> Result<Vec<u8>, Error> {
    let mut block = Vec::with_capacity(size);
    file.take(size as u64)
        .read_to_end(&mut block)
        .map_err(local(path))?;
    Ok(block)
}

/// The next [`BATCH_BLOCKS`] blocks of [`MAX_BLOCK`] of `file` (fewer at its end), and
/// whether its end was reached.
fn read_batch(mut file: File, path: &Path) -> Result<(File, Vec<Bytes>, bool), Error> {
    let mut blocks = Vec::with_capacity(BATCH_BLOCKS);
    while blocks.len() < BATCH_BLOCKS {
        let block = read_block(&mut file, MAX_BLOCK, path)?;
        let full = block.len() == MAX_BLOCK;
        if !block.is_empty() {
            blocks.push(Bytes::from(block));
        }
        if !full {
            return Ok((file, blocks, true));
        }
    }
    Ok((file, blocks, false))
}

/// The leaf hash of the first block of the file at `path` as a write cuts it.
fn hash_first(path: &Path) -> Result<Hash, Error> {
    let mut file = open_regular(path)?;
    Ok(leaf_hash(&read_block(&mut file, MAX_BLOCK, path)?))
}

/// The leaf hashes of the file at `path` cut into blocks as a write cuts it.
fn hash_file(path: &Path) -> Result<Vec<Hash>, Error> {
    let mut file = open_regular(path)?;
    let mut hashes = Vec::new();
    loop {
        let (f, blocks, eof) = read_batch(file, path)?;
        file = f;
        leaf_hashes(&blocks, &mut hashes);
        if eof {
            break;
        }
    }
    if hashes.is_empty() {
        hashes.push(leaf_hash(&[]));
    }
    Ok(hashes)
}

/// Whether the file at `path`, cut into blocks of the sizes of `leaves`, hashes to them
/// and has nothing more.
fn same_as_leaves(path: &Path, leaves: &[Node]) -> Result<bool, Error> {
    let mut file = open_regular(path)?;
    let mut hashes = Vec::with_capacity(BATCH_BLOCKS);
    for group in leaves.chunks(BATCH_BLOCKS) {
        let mut blocks = Vec::with_capacity(group.len());
        for leaf in group {
            // A leaf's size comes from storage: never trust it with an allocation.
            if leaf.size > hypercore::MAX_BLOCK_SIZE as u64 {
                return Ok(false);
            }
            let block = read_block(&mut file, leaf.size as usize, path)?;
            if block.len() as u64 != leaf.size {
                return Ok(false);
            }
            blocks.push(block);
        }
        hashes.clear();
        leaf_hashes(&blocks, &mut hashes);
        if hashes.iter().zip(group).any(|(h, leaf)| *h != leaf.hash) {
            return Ok(false);
        }
    }
    Ok(read_block(&mut file, 1, path)?.is_empty())
}
