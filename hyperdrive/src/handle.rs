//! File handles with positional reads and writes, as a filesystem layer needs them. A
//! file is one contiguous run of content blocks, so: writes at the end go straight into
//! the content feed, extending the run while nothing else has been appended after it; a
//! write anywhere else, a truncate, or an append once the run is no longer at the feed's
//! end keeps the changed bytes in a spill file beside the store and makes a new version of
//! the whole file when the handle is flushed or closed. Either way the file's Stat changes
//! only then: readers never see a half-written file. A handle holds the content feed's
//! writer lock only within a call, so an idle open file never stalls other writers.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use hypertrie::Hypertrie;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::path::key_of;
use crate::write::put_file;
use crate::{Drive, Error, FileReader, FileWriter, Stat, WriteOptions, WRITE_BLOCK};

/// The largest file a handle makes (a drive stores holes as zeros).
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// How to open a file (POSIX `open` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Open for writing too.
    pub write: bool,
    /// Create the file if it does not exist (with writing).
    pub create: bool,
    /// Fail if it exists (with `create`).
    pub exclusive: bool,
    /// Start from an empty file (with writing).
    pub truncate: bool,
}

/// An open file. Reads see the handle's own writes; the drive sees them when the handle
/// is flushed ([`FileHandle::flush`]) or closed. Dropped without either, the writes since
/// the last flush are lost.
pub struct FileHandle {
    path: String,
    /// The drive that owns the path, its trie, and the path's key there.
    owner: Drive,
    trie: Hypertrie,
    key: String,
    writable: bool,
    state: State,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Clean { .. } => "clean",
            State::Appending { .. } => "appending",
            State::Patched(_) => "patched",
        };
        f.debug_struct("FileHandle")
            .field("path", &self.path)
            .field("state", &state)
            .field("size", &self.size())
            .finish()
    }
}

enum State {
    /// As the drive has it (`None`: created by this handle, nothing written yet).
    Clean {
        stat: Option<Stat>,
        reader: Option<FileReader>,
    },
    /// Written at the end, straight into the content feed: `run` is the file so far
    /// (offset, blocks, byte offset, size), not put yet.
    Appending {
        run: Stat,
        /// The attributes the file keeps.
        options: WriteOptions,
    },
    /// Changed elsewhere: a new version is made on flush.
    Patched(Patch),
}

/// Changes over a base version, kept in a spill file.
struct Patch {
    /// What unchanged bytes are read from (none: zeros), and its attributes.
    base: Option<Stat>,
    reader: Option<FileReader>,
    options: WriteOptions,
    /// Base bytes from here on were truncated away.
    base_len: u64,
    size: u64,
    spill: Arc<std::fs::File>,
    /// Written ranges of the spill file: start → end, disjoint, not touching.
    extents: BTreeMap<u64, u64>,
}

impl Drive {
    /// Opens the file at `path`, through mounts and symlinks (a write goes to the link's
    /// target, as POSIX `open` does).
    pub async fn open_file(&self, path: &str, flags: OpenFlags) -> Result<FileHandle, Error> {
        let path = &self.follow_links(path).await?;
        let (owner, trie, key) = if flags.write {
            self.writable_owner(path).await?
        } else {
            self.owner_of(path).await?
        };
        let existing = match self.node_stat(&key_of(path)).await? {
            Some(stat) if stat.is_dir() => {
                return Err(Error::WrongType {
                    path: path.to_string(),
                    reason: "is a directory",
                })
            }
            Some(stat) if stat.mount.is_some() => {
                return Err(Error::WrongType {
                    path: path.to_string(),
                    reason: "is a mount",
                })
            }
            other => other,
        };
        let stat = match existing {
            Some(_) if flags.create && flags.exclusive => {
                return Err(Error::AlreadyExists {
                    path: path.to_string(),
                })
            }
            Some(stat) => Some(stat),
            None if flags.write && flags.create => None,
            None => {
                return Err(Error::NotFound {
                    path: path.to_string(),
                })
            }
        };
        let mut handle = FileHandle {
            path: path.to_string(),
            owner,
            trie,
            key,
            writable: flags.write,
            state: State::Clean { stat, reader: None },
        };
        if flags.write && flags.truncate {
            handle.truncate(0).await?;
        }
        Ok(handle)
    }
}

impl FileHandle {
    /// The file's size as this handle sees it.
    pub fn size(&self) -> u64 {
        match &self.state {
            State::Clean { stat, .. } => stat.as_ref().map_or(0, |s| s.size),
            State::Appending { run, .. } => run.size,
            State::Patched(patch) => patch.size,
        }
    }

    /// Whether writes since the last flush are waiting.
    pub fn is_dirty(&self) -> bool {
        !matches!(self.state, State::Clean { .. })
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    pub async fn read_at(&mut self, offset: u64, len: usize) -> Result<Bytes, Error> {
        let end = offset.saturating_add(len as u64).min(self.size());
        if offset >= end {
            return Ok(Bytes::new());
        }
        let path = self.path.clone();
        match &mut self.state {
            State::Clean { stat, reader } => {
                let Some(stat) = stat else {
                    return Ok(Bytes::new());
                };
                let reader = match reader {
                    Some(r) => r,
                    None => reader.insert(
                        self.owner
                            .content_reader(&path, stat.clone(), false)
                            .await?,
                    ),
                };
                read_exact_at(reader, offset, end).await.map(Bytes::from)
            }
            State::Appending { run, .. } => {
                let mut reader = self.owner.content_reader(&path, run.clone(), false).await?;
                read_exact_at(&mut reader, offset, end)
                    .await
                    .map(Bytes::from)
            }
            State::Patched(patch) => patch
                .compose(&self.owner, &path, offset, end)
                .await
                .map(Bytes::from),
        }
    }

    /// Writes `data` at `offset` (past the end leaves a hole of zeros).
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_writable()?;
        if data.is_empty() {
            return Ok(());
        }
        self.check_size(offset.saturating_add(data.len() as u64))?;
        if offset == self.size()
            && !matches!(self.state, State::Patched(_))
            && self.append(data).await?
        {
            return Ok(());
        }
        self.patch().await?;
        let State::Patched(patch) = &mut self.state else {
            return Ok(());
        };
        patch.write(&self.path, offset, data).await
    }

    /// Appends `data` straight to the content feed if the file's run can grow there: it
    /// is empty, or nothing was appended after it, and no writer holds the feed (never
    /// wait here: that writer may stream for long). False if not.
    async fn append(&mut self, data: &[u8]) -> Result<bool, Error> {
        let (run, options) = match &self.state {
            State::Clean { stat, .. } => (
                stat.clone().filter(|s| s.size > 0),
                stat.as_ref().map(WriteOptions::keeping).unwrap_or_default(),
            ),
            State::Appending { run, options } => (Some(run.clone()), options.clone()),
            State::Patched(_) => return Ok(false),
        };
        let feed = self.owner.content_feed().await?.clone();
        let Some(lock) = feed.try_lock_writer() else {
            return Ok(false);
        };
        if run
            .as_ref()
            .is_some_and(|r| r.offset.checked_add(r.blocks) != Some(feed.len()))
        {
            return Ok(false);
        }
        let mut writer = FileWriter::new(
            self.owner.clone(),
            self.trie.clone(),
            self.key.clone(),
            options.clone(),
            &feed,
            lock,
            run.as_ref(),
        );
        let written = writer.write_all(data).await;
        let flushed = match written {
            Ok(()) => writer.flush().await,
            Err(e) => Err(io_error(&self.path, e)),
        };
        // A failed append leaves blocks after the run, so the next one goes through the
        // spill file.
        flushed?;
        self.state = State::Appending {
            run: writer.written(),
            options,
        };
        Ok(true)
    }

    /// Cuts or extends (with zeros) the file to `size` bytes.
    pub async fn truncate(&mut self, size: u64) -> Result<(), Error> {
        self.check_writable()?;
        self.check_size(size)?;
        if size == self.size() && !matches!(self.state, State::Clean { stat: None, .. }) {
            return Ok(());
        }
        if size == 0 {
            // Nothing of the old bytes is kept: a fresh file.
            let options = self.options();
            let patch = Patch::new(&self.owner, &self.path, None, options)?;
            self.state = State::Patched(patch);
            return Ok(());
        }
        self.patch().await?;
        if let State::Patched(patch) = &mut self.state {
            patch.truncate(size);
        }
        Ok(())
    }

    /// Makes the handle's writes the file's new version (puts its Stat); returns the
    /// Stat, or `None` for a read-only handle of a file created by none.
    pub async fn flush(&mut self) -> Result<Option<Stat>, Error> {
        let state = std::mem::replace(
            &mut self.state,
            State::Clean {
                stat: None,
                reader: None,
            },
        );
        let result = match state {
            State::Clean {
                stat: Some(stat),
                reader,
            } => Ok(State::Clean {
                stat: Some(stat),
                reader,
            }),
            State::Clean { stat: None, .. } if self.writable => {
                // A created file that was never written is an empty file.
                let writer = self.writer(WriteOptions::default()).await?;
                writer.finish().await.map(|stat| State::Clean {
                    stat: Some(stat),
                    reader: None,
                })
            }
            clean @ State::Clean { .. } => Ok(clean),
            State::Appending { run, options } => {
                put_file(&self.owner, &self.trie, &self.key, options, &run)
                    .await
                    .map(|(stat, _)| State::Clean {
                        stat: Some(stat),
                        reader: None,
                    })
            }
            State::Patched(mut patch) => {
                let options = patch.options.clone();
                let mut writer = self.writer(options).await?;
                let mut at = 0;
                while at < patch.size {
                    let end = (at + WRITE_BLOCK as u64).min(patch.size);
                    let chunk = patch.compose(&self.owner, &self.path, at, end).await?;
                    writer.write(Bytes::from(chunk)).await?;
                    at = end;
                }
                writer.finish().await.map(|stat| State::Clean {
                    stat: Some(stat),
                    reader: None,
                })
            }
        };
        match result {
            Ok(state) => {
                self.state = state;
                Ok(match &self.state {
                    State::Clean { stat, .. } => stat.clone(),
                    _ => None,
                })
            }
            // What was not committed is lost; the handle reads the drive's version again.
            Err(e) => {
                let stat = self
                    .owner
                    .node_stat_in(&self.trie, &self.key)
                    .await
                    .ok()
                    .flatten();
                self.state = State::Clean { stat, reader: None };
                Err(e)
            }
        }
    }

    /// Flushes and closes the handle.
    pub async fn close(mut self) -> Result<Option<Stat>, Error> {
        self.flush().await
    }

    /// Refuses a file of `size` bytes: a drive stores every byte of a file, holes too,
    /// so a truncate to a terabyte would write a terabyte of zeros.
    fn check_size(&self, size: u64) -> Result<(), Error> {
        if size <= MAX_FILE_SIZE {
            return Ok(());
        }
        Err(Error::TooLarge {
            path: self.path.clone(),
            size,
            limit: MAX_FILE_SIZE,
        })
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::NotWritable {
                path: format!("{} (opened read-only)", self.path),
            })
        }
    }

    /// The attributes the file keeps across versions.
    fn options(&self) -> WriteOptions {
        match &self.state {
            State::Clean { stat, .. } => {
                stat.as_ref().map(WriteOptions::keeping).unwrap_or_default()
            }
            State::Appending { options, .. } => options.clone(),
            State::Patched(patch) => patch.options.clone(),
        }
    }

    /// A writer of a new version, waiting for the content feed's writer lock (held by
    /// other handles only within a call, by write streams until they finish). The future
    /// holds no borrow of the handle, which is not `Sync` (its reader is not), so that
    /// flushing a handle is a `Send` future.
    fn writer(
        &self,
        options: WriteOptions,
    ) -> impl std::future::Future<Output = Result<FileWriter, Error>> + Send + 'static {
        let (owner, trie, key) = (self.owner.clone(), self.trie.clone(), self.key.clone());
        async move {
            let feed = owner.content_feed().await?.clone();
            let lock = feed.lock_writer().await;
            Ok(FileWriter::new(
                owner, trie, key, options, &feed, lock, None,
            ))
        }
    }

    /// Turns the state into a patch over what the handle has (appended blocks become the
    /// base).
    async fn patch(&mut self) -> Result<(), Error> {
        let state = std::mem::replace(
            &mut self.state,
            State::Clean {
                stat: None,
                reader: None,
            },
        );
        let (base, options) = match state {
            State::Patched(patch) => {
                self.state = State::Patched(patch);
                return Ok(());
            }
            State::Clean { stat, .. } => {
                let options = stat.as_ref().map(WriteOptions::keeping).unwrap_or_default();
                (stat, options)
            }
            State::Appending { run, options } => (Some(run), options),
        };
        self.state = State::Patched(Patch::new(&self.owner, &self.path, base, options)?);
        Ok(())
    }
}

impl Patch {
    fn new(
        owner: &Drive,
        path: &str,
        base: Option<Stat>,
        options: WriteOptions,
    ) -> Result<Patch, Error> {
        let spill = tempfile::tempfile_in(owner.store.dir()).map_err(|e| Error::Spill {
            path: path.to_string(),
            source: e,
        })?;
        let size = base.as_ref().map_or(0, |s| s.size);
        Ok(Patch {
            base,
            reader: None,
            options,
            base_len: size,
            size,
            spill: Arc::new(spill),
            extents: BTreeMap::new(),
        })
    }

    async fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), Error> {
        // Checked against MAX_FILE_SIZE by the handle.
        let end = offset + data.len() as u64;
        let spill = self.spill.clone();
        let bytes = data.to_vec();
        tokio::task::spawn_blocking(move || spill.write_all_at(&bytes, offset))
            .await
            .map_err(|e| spill_error(path, std::io::Error::other(e)))?
            .map_err(|e| spill_error(path, e))?;
        self.insert(offset, end);
        self.size = self.size.max(end);
        Ok(())
    }

    /// Marks `start..end` as written, merging touching ranges.
    fn insert(&mut self, mut start: u64, mut end: u64) {
        let touching: Vec<(u64, u64)> = self
            .extents
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.extents.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.extents.insert(start, end);
    }

    fn truncate(&mut self, size: u64) {
        self.base_len = self.base_len.min(size);
        self.size = size;
        let cut: Vec<(u64, u64)> = self
            .extents
            .range(..)
            .filter(|&(_, &e)| e > size)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, _) in cut {
            self.extents.remove(&s);
            if s < size {
                self.extents.insert(s, size);
            }
        }
    }

    /// The bytes `start..end` as the handle sees them: base bytes, zeros past the base,
    /// written ranges over both.
    async fn compose(
        &mut self,
        owner: &Drive,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, Error> {
        let end = end.min(self.size);
        let mut out = vec![0; end.saturating_sub(start) as usize];
        let base_end = end.min(self.base_len);
        if let (Some(base), true) = (&self.base, start < base_end) {
            let reader = match &mut self.reader {
                Some(r) => r,
                None => self
                    .reader
                    .insert(owner.content_reader(path, base.clone(), false).await?),
            };
            let bytes = read_exact_at(reader, start, base_end).await?;
            out[..bytes.len()].copy_from_slice(&bytes);
        }
        let overlaps: Vec<(u64, u64)> = self
            .extents
            .range(..end)
            .filter(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s.max(start), e.min(end)))
            .collect();
        if overlaps.is_empty() {
            return Ok(out);
        }
        let spill = self.spill.clone();
        let out = tokio::task::spawn_blocking(move || {
            for (s, e) in overlaps {
                let at = (s - start) as usize;
                spill.read_exact_at(&mut out[at..(e - start) as usize], s)?;
            }
            Ok::<_, std::io::Error>(out)
        })
        .await
        .map_err(|e| spill_error(path, std::io::Error::other(e)))?
        .map_err(|e| spill_error(path, e))?;
        Ok(out)
    }
}

/// Bytes `start..end` through `reader` (which the file holds).
async fn read_exact_at(reader: &mut FileReader, start: u64, end: u64) -> Result<Vec<u8>, Error> {
    reader
        .seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| io_error(&reader.path, e))?;
    let mut out = vec![0; (end - start) as usize];
    reader
        .read_exact(&mut out)
        .await
        .map_err(|e| io_error(&reader.path, e))?;
    Ok(out)
}

/// A drive error that travelled through `std::io` (the reader's and writer's traits).
fn io_error(path: &str, e: std::io::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => e,
        Err(source) => Error::Io {
            path: path.to_string(),
            source,
        },
    }
}

fn spill_error(path: &str, source: std::io::Error) -> Error {
    Error::Spill {
        path: path.to_string(),
        source,
    }
}
