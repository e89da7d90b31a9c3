//! Downloads (spec drive.md §10): fetching the content blocks of a file or a tree from
//! peers with progress, withdrawing them, clearing local copies, per-file download figures
//! read from the content feed's bitfield and tree, and mirroring a whole drive with the
//! drives mounted in it, live.
//!
//! A remote drive is first brought up to the length its peers have (JS reads with
//! `alwaysUpdate`), so a walk lists the writer's current version; only the metadata blocks
//! the listing walks through are fetched.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use corestore::Core;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use hypercore::{Event, PublicKey};
use hypercore_replication::DownloadRange;
use hypertrie::MountListOptions;
use tokio::sync::{broadcast, watch};

use crate::dir::decode_stat;
use crate::path::key_of;
use crate::{trie_at, Drive, Error, Stat};

/// Files whose blocks one download requests at a time (JS `maxConcurrent`).
pub const MAX_CONCURRENT: usize = 50;
/// Drives mounted inside each other that a walk enters at most.
const MAX_MOUNT_DEPTH: usize = 16;

/// Which files under a path a download, clear or stats call covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkOptions {
    /// Every file below a directory (default), or only its direct children.
    pub recursive: bool,
    /// Also enter the drives mounted below the path (default not, as JS's `noMounts`).
    /// Mounted hypercores are never files of a walk.
    pub mounts: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            recursive: true,
            mounts: false,
        }
    }
}

/// How far a download is: files, blocks and bytes stored out of those it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Files whose blocks are all stored.
    pub files_done: u64,
    /// Files the download covers.
    pub files_total: u64,
    /// Their blocks stored locally.
    pub blocks_done: u64,
    /// Their blocks.
    pub blocks_total: u64,
    /// Bytes of their stored blocks.
    pub bytes_done: u64,
    /// Their sizes.
    pub bytes_total: u64,
}

/// Download figures of one file (JS `drive.stats`, plus the bytes JS could not count),
/// from the content feed's bitfield and tree: no content is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStats {
    /// The file's path, through mounts.
    pub path: String,
    /// Its content blocks.
    pub blocks: u64,
    /// Those stored locally.
    pub downloaded_blocks: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes of its stored blocks.
    pub downloaded_bytes: u64,
}

/// What [`Drive::clear`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Files whose blocks were cleared.
    pub files: u64,
    /// Blocks that were stored and are not any more (a block shared by files counts once).
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A running [`Drive::download`]: resolves to the final [`Progress`] once every block is
/// stored. Dropping it withdraws the ranges still wanted (blocks already requested still
/// arrive), as JS's `destroy()` undownloads.
#[must_use = "a download runs while it is polled and is withdrawn when dropped"]
pub struct Downloading {
    progress: watch::Receiver<Progress>,
    work: BoxFuture<'static, Result<Progress, Error>>,
}

impl std::fmt::Debug for Downloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloading")
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

impl Downloading {
    /// The progress, updated as blocks arrive (wrap it in a `WatchStream` to forward it).
    /// Blocks stored before the download are counted once it is first polled.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }
}

impl Future for Downloading {
    type Output = Result<Progress, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.work.as_mut().poll(cx)
    }
}

/// A running [`Drive::mirror`]; dropping it stops the mirror and withdraws its ranges.
#[derive(Debug)]
pub struct Mirror {
    status: watch::Receiver<MirrorStatus>,
    task: tokio::task::JoinHandle<()>,
}

/// What a mirror covers.
#[derive(Clone, Debug, Default)]
pub struct MirrorStatus {
    /// The feeds mirrored so far: metadata and content of the drive and of every drive
    /// mounted in it.
    pub feeds: Vec<PublicKey>,
    /// What the last look for mounts could not open or read (the mirror goes on with the
    /// rest, and looks again when the drive changes).
    pub error: Option<Arc<Error>>,
}

impl Mirror {
    /// What the mirror covers, updated as mounts are found.
    pub fn status(&self) -> watch::Receiver<MirrorStatus> {
        self.status.clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One file's content blocks `[start, end)`, found by a walk.
struct FileRange {
    path: String,
    /// The drive whose content feed holds them.
    drive: PublicKey,
    content: Core,
    start: u64,
    end: u64,
    size: u64,
}

impl FileRange {
    fn feed_error(&self, source: hypercore::Error) -> Error {
        Error::Content {
            drive: self.drive,
            source,
        }
    }

    /// Blocks and bytes of the file stored now.
    async fn stored(&self) -> Result<(u64, u64), Error> {
        let feed = self.content.feed();
        let blocks = feed.downloaded(self.start, Some(self.end));
        let bytes = feed
            .downloaded_bytes(self.start, Some(self.end))
            .await
            .map_err(|e| self.feed_error(e))?;
        Ok((blocks, bytes))
    }
}

impl Drive {
    /// Downloads the content of the file at `path`, or of every file under the directory
    /// at `path` (JS `drive.download`): one range per file, at most [`MAX_CONCURRENT`]
    /// requested at a time; directories, symlinks, empty files and mounted hypercores are
    /// skipped. The listing is read first (fetching only the metadata it walks through),
    /// so the totals are known from the start. Await the result to run it.
    pub async fn download(&self, path: &str, options: WalkOptions) -> Result<Downloading, Error> {
        let files = self.walk(path, options, false).await?;
        let progress = Progress {
            files_total: files.len() as u64,
            blocks_total: files.iter().map(|f| f.end - f.start).sum(),
            bytes_total: files.iter().map(|f| f.size).sum(),
            ..Progress::default()
        };
        let (tx, rx) = watch::channel(progress);
        let tracker = Tracker::new(files, progress);
        Ok(Downloading {
            progress: rx,
            work: Box::pin(tracker.run(tx)),
        })
    }

    /// Removes the local copies of the content blocks of the file at `path` or of the
    /// files under it (JS `drive.clear`); reads fetch them again from peers. On a drive
    /// we write, this deletes the only copy peers have not fetched, as in JS.
    pub async fn clear(&self, path: &str, options: WalkOptions) -> Result<Cleared, Error> {
        let files = self.walk(path, options, false).await?;
        let mut cleared = Cleared {
            files: files.len() as u64,
            ..Cleared::default()
        };
        // Per content feed, the files' ranges merged: a block two files share counts once.
        let mut by_feed: HashMap<PublicKey, Vec<&FileRange>> = HashMap::new();
        for file in &files {
            by_feed
                .entry(file.content.feed().key())
                .or_default()
                .push(file);
        }
        for mut ranges in by_feed.into_values() {
            ranges.sort_by_key(|f| f.start);
            // Each merged run, with a file of it (its feed, and the drive for errors).
            let mut merged: Vec<(u64, u64, &FileRange)> = Vec::new();
            for f in ranges {
                match merged.last_mut() {
                    Some((_, end, _)) if f.start <= *end => *end = (*end).max(f.end),
                    _ => merged.push((f.start, f.end, f)),
                }
            }
            for (start, end, file) in merged {
                let feed = file.content.feed();
                cleared.blocks += feed.downloaded(start, Some(end));
                cleared.bytes += feed
                    .downloaded_bytes(start, Some(end))
                    .await
                    .map_err(|e| file.feed_error(e))?;
                feed.clear(start, end)
                    .await
                    .map_err(|e| file.feed_error(e))?;
            }
        }
        Ok(cleared)
    }

    /// Download figures of the file at `path`, or of every file under it (JS
    /// `drive.stats`), in listing order: from the content feeds' bitfields and trees,
    /// never reading content.
    pub async fn file_stats(
        &self,
        path: &str,
        options: WalkOptions,
    ) -> Result<Vec<FileStats>, Error> {
        let files = self.walk(path, options, true).await?;
        let mut out = Vec::with_capacity(files.len());
        for file in files {
            let (downloaded_blocks, downloaded_bytes) = file.stored().await?;
            out.push(FileStats {
                blocks: file.end - file.start,
                downloaded_blocks,
                size: file.size,
                downloaded_bytes,
                path: file.path,
            });
        }
        Ok(out)
    }

    /// Mirrors the whole drive, live, until the returned handle is dropped (JS
    /// `drive.mirror()`): every block of its metadata and content feeds, including blocks
    /// appended later, and the same for every drive mounted in it, mounts added later
    /// included.
    pub fn mirror(&self) -> Mirror {
        let (tx, rx) = watch::channel(MirrorStatus::default());
        let task = tokio::spawn(mirror(self.clone(), tx));
        Mirror { status: rx, task }
    }

    /// Brings a remote drive's metadata up to the length its peers have.
    async fn refresh(&self) {
        if !self.writable() {
            self.metadata_core()
                .update_if_available(hypertrie::CATCH_UP_LIMIT)
                .await;
        }
    }

    /// The files at or under `path` (`empty`: files without blocks too).
    async fn walk(
        &self,
        path: &str,
        options: WalkOptions,
        empty: bool,
    ) -> Result<Vec<FileRange>, Error> {
        self.refresh().await;
        // A path inside a mount lives in the mounted drive: bring that one up to date too.
        let (owner, _, _) = self.owner_of(path).await?;
        if owner.key() != self.key() {
            owner.refresh().await;
        }
        let (stat, trie) = self.stat_located(path).await?;
        let mut walk = Walk {
            options,
            empty,
            mounts_entered: 0,
            lengths: HashMap::new(),
            files: Vec::new(),
        };
        let shown = format!("/{}", key_of(path));
        if stat.is_dir() {
            let mut chain = vec![self.key()];
            walk.dir(self, key_of(path), String::new(), &mut chain)
                .await?;
        } else if stat.mount.is_some() {
            return Err(Error::WrongType {
                path: shown,
                reason: "is a mounted hypercore, not a file of the drive",
            });
        } else {
            let owner = self.drive_of(&trie).await?;
            walk.file(&owner, shown, &stat).await?;
        }
        Ok(walk.files)
    }
}

/// A walk under way: the files found so far.
struct Walk {
    options: WalkOptions,
    empty: bool,
    /// Mount points entered so far (see [`hypertrie::MAX_MOUNTS_ENTERED`]).
    mounts_entered: usize,
    /// Content feed lengths brought up to date, by feed.
    lengths: HashMap<PublicKey, u64>,
    files: Vec<FileRange>,
}

impl Walk {
    /// The files under `prefix` of `drive` (`outer`: where `drive` is mounted, as seen from
    /// the walk's drive; `chain`: the drives mounted into each other down to here).
    fn dir<'a>(
        &'a mut self,
        drive: &'a Drive,
        prefix: String,
        outer: String,
        chain: &'a mut Vec<PublicKey>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let list = MountListOptions {
                recursive: self.options.recursive,
                no_mounts: true,
                gt: true,
            };
            let listed = drive
                .trie
                .list(&prefix, list)
                .await
                .map_err(trie_at(&format!("{outer}/{prefix}")))?;
            for entry in listed {
                let key = entry.node.key();
                let relative = match prefix.as_str() {
                    "" => Some(key),
                    p => key.strip_prefix(p).and_then(|r| r.strip_prefix('/')),
                };
                // A one-level listing stands for a deeper child by one of its nodes.
                let Some(relative) = relative.filter(|r| !r.is_empty()) else {
                    continue;
                };
                if !self.options.recursive && relative.contains('/') {
                    continue;
                }
                let stat = decode_stat(key, entry.node.value.as_deref())?;
                let shown = format!("{outer}/{key}");
                match &stat.mount {
                    Some(m) if m.hypercore != Some(true) => {
                        if !(self.options.mounts && self.options.recursive) {
                            continue;
                        }
                        let key = PublicKey::from_slice(&m.key).map_err(|_| Error::BadStat {
                            path: shown.clone(),
                            reason: "its mount's key is not a public key".into(),
                        })?;
                        // A drive mounted inside itself: its files are listed already.
                        if chain.contains(&key) {
                            continue;
                        }
                        self.mounts_entered += 1;
                        if self.mounts_entered > hypertrie::MAX_MOUNTS_ENTERED {
                            let limit = hypertrie::MAX_MOUNTS_ENTERED;
                            let source = hypertrie::Error::TooManyMounts {
                                path: shown.clone(),
                                limit,
                            };
                            return Err(trie_at(&shown)(source));
                        }
                        if chain.len() > MAX_MOUNT_DEPTH {
                            return Err(Error::Trie(hypertrie::Error::MountLoop {
                                path: shown,
                                depth: MAX_MOUNT_DEPTH,
                            }));
                        }
                        let mounted = Drive::open_key(&drive.store, key, drive.options).await?;
                        mounted.refresh().await;
                        let mounted = match m.version.filter(|&v| v != 0) {
                            Some(version) => mounted.checkout(version),
                            None => mounted,
                        };
                        chain.push(key);
                        let inside = self.dir(&mounted, String::new(), shown, chain).await;
                        chain.pop();
                        inside?;
                    }
                    Some(_) => {}
                    None if stat.is_file() => {
                        let owner = drive.drive_of(&entry.trie).await?;
                        self.file(&owner, shown, &stat).await?;
                    }
                    None => {}
                }
            }
            Ok(())
        })
    }

    /// Adds the file `stat` describes, whose blocks are in `owner`'s content feed.
    async fn file(&mut self, owner: &Drive, path: String, stat: &Stat) -> Result<(), Error> {
        // An empty file (no block, or one empty block as JS writes it) has nothing to fetch.
        if (stat.blocks == 0 || stat.size == 0) && !self.empty {
            return Ok(());
        }
        let content = owner.content().await?.clone();
        let key = content.feed().key();
        let end = stat.offset.checked_add(stat.blocks);
        let mut length = match self.lengths.get(&key) {
            Some(&length) => length,
            None => content.update_if_available(hypertrie::CATCH_UP_LIMIT).await,
        };
        // The writer may have appended since this feed was brought up to date.
        if end.is_some_and(|e| e > length) {
            length = content.update_if_available(hypertrie::CATCH_UP_LIMIT).await;
        }
        self.lengths.insert(key, length);
        let Some(end) = end.filter(|&e| e <= length) else {
            return Err(Error::BadStat {
                path,
                reason: format!(
                    "blocks {}..+{} are past the content feed's {length} blocks",
                    stat.offset, stat.blocks
                ),
            });
        };
        // Its blocks are within the feed's length, so their bytes within its byte length.
        let bytes = content.feed().byte_len();
        if stat
            .byte_offset
            .checked_add(stat.size)
            .is_none_or(|last| last > bytes)
        {
            return Err(Error::BadStat {
                path,
                reason: format!(
                    "bytes {}..+{} are past the content feed's {bytes} bytes",
                    stat.byte_offset, stat.size
                ),
            });
        }
        self.files.push(FileRange {
            path,
            drive: owner.key(),
            content,
            start: stat.offset,
            end,
            size: stat.size,
        });
        Ok(())
    }
}

/// The files of a download and what is counted of each.
struct Tracker {
    files: Vec<FileRange>,
    /// Blocks and bytes counted per file.
    counted: Vec<(u64, u64)>,
    done: Vec<bool>,
    progress: Progress,
    /// Per content feed, its files sorted by first block: (start, end, the largest end so
    /// far, file), to find the files a block belongs to (files may share blocks).
    by_feed: HashMap<PublicKey, Vec<(u64, u64, u64, usize)>>,
}

impl Tracker {
    fn new(files: Vec<FileRange>, progress: Progress) -> Tracker {
        let mut by_feed: HashMap<PublicKey, Vec<(u64, u64, u64, usize)>> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let entries = by_feed.entry(f.content.feed().key()).or_default();
            entries.push((f.start, f.end, 0, i));
        }
        for entries in by_feed.values_mut() {
            entries.sort_unstable();
            let mut max_end = 0;
            for e in entries.iter_mut() {
                max_end = max_end.max(e.1);
                e.2 = max_end;
            }
        }
        Tracker {
            counted: vec![(0, 0); files.len()],
            done: vec![false; files.len()],
            files,
            progress,
            by_feed,
        }
    }

    /// Counts file `i` as holding `blocks` blocks and `bytes` bytes.
    fn set(&mut self, i: usize, blocks: u64, bytes: u64) {
        let (old_blocks, old_bytes) = self.counted[i];
        self.counted[i] = (blocks, bytes);
        let p = &mut self.progress;
        p.blocks_done = p.blocks_done - old_blocks + blocks;
        p.bytes_done = p.bytes_done - old_bytes + bytes;
    }

    /// Counts file `i` from the bitfield.
    async fn recount(&mut self, i: usize) -> Result<(), Error> {
        let (blocks, bytes) = self.files[i].stored().await?;
        self.set(i, blocks, bytes);
        Ok(())
    }

    /// Block `index` of feed `key` arrived.
    fn downloaded(&mut self, key: &PublicKey, index: u64, bytes: u64) {
        let Some(entries) = self.by_feed.get(key) else {
            return;
        };
        let mut hits = Vec::new();
        let below = entries.partition_point(|e| e.0 <= index);
        for &(_, end, max_end, i) in entries[..below].iter().rev() {
            if max_end <= index {
                break;
            }
            if end > index && !self.done[i] {
                hits.push(i);
            }
        }
        for i in hits {
            let f = &self.files[i];
            let (blocks, counted_bytes) = self.counted[i];
            let blocks = (blocks + 1).min(f.end - f.start);
            let counted_bytes = (counted_bytes + bytes).min(f.size);
            self.set(i, blocks, counted_bytes);
        }
    }

    /// Runs the download, publishing the progress on `tx`.
    async fn run(mut self, tx: watch::Sender<Progress>) -> Result<Progress, Error> {
        // Subscribed before counting, so no block arriving meanwhile goes unseen.
        let mut events = SelectAll::new();
        let mut seen = HashSet::new();
        for f in &self.files {
            let feed = f.content.feed();
            if seen.insert(feed.key()) {
                events.push(feed_events(feed));
            }
        }
        for i in 0..self.files.len() {
            self.recount(i).await?;
        }
        tx.send_replace(self.progress);
        let mut next = 0;
        let mut active = FuturesUnordered::new();
        loop {
            while active.len() < MAX_CONCURRENT && next < self.files.len() {
                let f = &self.files[next];
                let range = DownloadRange::new(f.start, f.end);
                let i = next;
                active.push(f.content.download(range).map(move |r| (i, r)));
                next += 1;
            }
            if active.is_empty() {
                break;
            }
            tokio::select! {
                Some((i, result)) = active.next() => {
                    result.map_err(|source| Error::Download {
                        path: self.files[i].path.clone(),
                        source,
                    })?;
                    // Exact, whatever events are still on their way.
                    self.recount(i).await?;
                    self.done[i] = true;
                    self.progress.files_done += 1;
                }
                Some((key, event)) = events.next() => match event {
                    Ok(Event::Download { index, bytes, .. }) => {
                        self.downloaded(&key, index, bytes);
                    }
                    // Missed events, or blocks gone: count again.
                    Ok(Event::Clear { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        for i in 0..self.files.len() {
                            if !self.done[i] {
                                self.recount(i).await?;
                            }
                        }
                    }
                    _ => {}
                },
            }
            tx.send_if_modified(|p| std::mem::replace(p, self.progress) != self.progress);
        }
        Ok(self.progress)
    }
}

/// The events of `feed`, tagged with its key; lagging is reported, the end of the feed ends
/// the stream.
fn feed_events(
    feed: &hypercore::Feed,
) -> BoxStream<'static, (PublicKey, Result<Event, broadcast::error::RecvError>)> {
    let key = feed.key();
    futures::stream::unfold(feed.events(), move |mut rx| async move {
        match rx.recv().await {
            Err(broadcast::error::RecvError::Closed) => None,
            event => Some(((key, event), rx)),
        }
    })
    .boxed()
}

/// The mirror's task: keeps an open-ended range on every feed of `root` and of the drives
/// mounted in it, and looks for mounts again whenever a drive's metadata grows.
async fn mirror(root: Drive, status: watch::Sender<MirrorStatus>) {
    let mut ranges: HashMap<PublicKey, hypercore_replication::Download> = HashMap::new();
    let mut drives: HashMap<PublicKey, Drive> = HashMap::new();
    drives.insert(root.key(), root);
    loop {
        // Subscribed before scanning, so a change during the scan wakes the next one.
        let mut changes = SelectAll::new();
        for drive in drives.values() {
            changes.push(feed_events(drive.metadata()));
        }
        let known = drives.len();
        let error = scan(&mut drives, &mut ranges).await.err();
        status.send_modify(|s| {
            s.feeds = ranges.keys().copied().collect();
            s.feeds.sort();
            s.error = error.map(Arc::new);
        });
        // Drives found by this scan were not watched during it: look again.
        if drives.len() > known {
            continue;
        }
        loop {
            match changes.next().await {
                // A new version (maybe a new mount), or the header naming a content feed.
                Some((_, Ok(Event::Append { .. }) | Err(_)))
                | Some((_, Ok(Event::Download { index: 0, .. }))) => break,
                Some(_) => {}
                None => return,
            }
        }
    }
}

/// One pass of the mirror over `drives` and the drives mounted in them (added to
/// `drives`); the first error is returned after the rest is done.
async fn scan(
    drives: &mut HashMap<PublicKey, Drive>,
    ranges: &mut HashMap<PublicKey, hypercore_replication::Download>,
) -> Result<(), Error> {
    let mut first_error = None;
    let mut queue: Vec<Drive> = drives.values().cloned().collect();
    let mut seen = HashSet::new();
    let everything = DownloadRange {
        start: 0,
        end: None,
        linear: false,
        priority: 0,
    };
    while let Some(drive) = queue.pop() {
        if !seen.insert(drive.key()) {
            continue;
        }
        let metadata = drive.metadata_core();
        ranges
            .entry(metadata.feed().key())
            .or_insert_with(|| metadata.download(everything));
        // The header names the content feed: until it arrives (its download wakes the
        // next scan) there is nothing more to find here.
        if !drive.metadata().has(0) {
            continue;
        }
        match drive.content().await {
            Ok(content) => {
                ranges
                    .entry(content.feed().key())
                    .or_insert_with(|| content.download(everything));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        let records = match drive.trie.trie().mounts().await {
            Ok(records) => records,
            Err(e) => {
                first_error.get_or_insert(e.into());
                continue;
            }
        };
        for record in records {
            let Ok(key) = PublicKey::from_slice(&record.key) else {
                first_error.get_or_insert(Error::BadStat {
                    path: format!("/{}", record.local_path),
                    reason: format!("the mount in drive {} has no valid key", drive.key()),
                });
                continue;
            };
            let mounted = match drives.get(&key) {
                Some(d) => d.clone(),
                None => match Drive::open_key(&drive.store, key, drive.options).await {
                    Ok(d) => {
                        drives.insert(key, d.clone());
                        d
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                },
            };
            queue.push(mounted);
        }
    }
    first_error.map_or(Ok(()), Err)
}
