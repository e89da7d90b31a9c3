//! Reading files (spec drive.md §5, roadmap items 1–2): a [`FileReader`] is a byte cursor
//! over a file's run of blocks that seeks anywhere without reading from the start (the
//! feed's merkle tree says which block holds a byte), fetching only the blocks it touches.
//! Read as a stream of a range, it also asks peers for that range's blocks in order, ahead
//! of the reader.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use corestore::Core;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use hypercore::{Feed, PublicKey, StoredFile};
use hypercore_replication::{Download, DownloadRange};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use crate::{Drive, Error, Stat};

/// Stored blocks read with one call when reading on sequentially, unless the reader is
/// told otherwise ([`FileReader::with_read_ahead`]).
const RUN_BYTES: u64 = 1 << 20;
/// Most bytes [`Drive::read_file`] allocates before reading them.
const PREALLOCATE: u64 = 16 << 20;
/// How long a reader of a remote drive waits for the content feed to reach the blocks a
/// Stat names before calling the Stat bad.
const CONTENT_WAIT: Duration = Duration::from_secs(30);

/// Where a file's bytes are: blocks `[offset, offset + blocks)` of a feed, from its byte
/// `byte_offset` on, `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    offset: u64,
    blocks: u64,
    byte_offset: u64,
    size: u64,
}

impl Extent {
    fn end_block(&self) -> u64 {
        self.offset + self.blocks
    }
}

/// Whose feed a reader reads, to name it in errors.
#[derive(Clone, Debug)]
enum Origin {
    /// A drive's content feed.
    Content { drive: PublicKey },
    /// A hypercore mounted at `path`.
    Core { key: PublicKey, path: String },
}

impl Origin {
    fn error(&self, source: hypercore::Error) -> Error {
        match self {
            Origin::Content { drive } => Error::Content {
                drive: *drive,
                source,
            },
            Origin::Core { key, path } => Error::MountedCore {
                key: *key,
                path: path.clone(),
                source: Box::new(source),
            },
        }
    }
}

/// Blocks fetched from `index` on; the first holds file position `pos`.
struct Fetched {
    index: u64,
    pos: u64,
    blocks: Vec<Bytes>,
    /// The block after the one holding the range's last byte, once known.
    end_block: Option<u64>,
    /// The download of the range it started, from its first block.
    prefetch: Option<(u64, Download)>,
}

type Fetch = BoxFuture<'static, Result<Fetched, Error>>;

/// A file opened for reading: an [`AsyncRead`] + [`AsyncSeek`] cursor, and a [`Stream`]
/// of the file's bytes (block slices) from the position to the end of its range.
pub struct FileReader {
    /// The path it was opened by, for errors.
    pub(crate) path: String,
    core: Core,
    origin: Origin,
    stat: Stat,
    extent: Extent,
    /// Where reading stops: a file position, at most the size.
    end: u64,
    pos: u64,
    /// Consecutive blocks read ahead, each with the file position of its first byte.
    blocks: VecDeque<(u64, Bytes)>,
    /// The block after them: its index and file position.
    next: Option<(u64, u64)>,
    /// A fetch under way, with the file position it fetches.
    fetch: Option<(u64, Fetch)>,
    /// Whether the last fetch continued the one before (so reading ahead pays).
    sequential: bool,
    /// Read streams ask peers for their range in order: the download, from its block.
    linear: bool,
    prefetch: Option<(u64, Download)>,
    /// The block after the range's last byte, once known.
    end_block: Option<u64>,
    /// Most bytes of stored blocks read with one call.
    run_bytes: u64,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("extent", &self.extent)
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}

impl Drive {
    /// A cursor over the file at `path` (through symlinks), at byte 0: reads fetch only
    /// the blocks they touch.
    pub async fn reader(&self, path: &str) -> Result<FileReader, Error> {
        self.open_reader(path, 0, None, false).await
    }

    /// `length` bytes (all, with `None`) of the file at `path` from byte `start`, as a
    /// reader whose range is requested from peers in order up front (a JS read stream
    /// with `start`/`end`). The first block is found by seeking; no earlier block is
    /// read.
    pub async fn read_range(
        &self,
        path: &str,
        start: u64,
        length: Option<u64>,
    ) -> Result<FileReader, Error> {
        self.open_reader(path, start, length, true).await
    }

    /// Where bytes `[start, end)` of the file at `path` (through symlinks; `end` at most
    /// its size, `None` for its end) lie on this machine's disk, for a process here to
    /// read them itself: `None` unless every block of the file is stored and its Stat
    /// agrees with the content feed's tree about its bytes (a mounted hypercore, a
    /// sparse copy or a feed kept in memory is read through [`Self::read_range`]). See
    /// [`hypercore::Feed::stored_file`] for how long they stay there.
    pub async fn locate(
        &self,
        path: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Option<StoredFile>, Error> {
        let (stat, trie) = self.stat_located(path).await?;
        if stat.is_dir() {
            return Err(Error::WrongType {
                path: path.to_string(),
                reason: "is a directory",
            });
        }
        if stat.mount.is_some() {
            return Ok(None);
        }
        let owner = self.drive_of(&trie).await?;
        let feed = owner.content_feed().await?;
        let Some(end_block) = stat.offset.checked_add(stat.blocks) else {
            return Ok(None);
        };
        let stored = match feed.stored_file(stat.offset, end_block) {
            Some(stored) if stored.length == stat.size && stored.offset == stat.byte_offset => {
                stored
            }
            _ => return Ok(None),
        };
        let start = start.min(stat.size);
        let end = end.map_or(stat.size, |end| end.clamp(start, stat.size));
        Ok(Some(StoredFile {
            offset: stored.offset + start,
            length: end - start,
            ..stored
        }))
    }

    /// The bytes of the file at `path` (through symlinks).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        use futures::TryStreamExt;
        let reader = self.read_range(path, 0, None).await?;
        // The size comes from a Stat: allocate by it only up to a bound.
        let mut out = Vec::with_capacity(reader.len().min(PREALLOCATE) as usize);
        let mut chunks = reader;
        while let Some(chunk) = chunks.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn open_reader(
        &self,
        path: &str,
        start: u64,
        length: Option<u64>,
        linear: bool,
    ) -> Result<FileReader, Error> {
        let (stat, trie) = self.stat_located(path).await?;
        let reader = self.reader_of(path, stat, &trie, linear).await?;
        Ok(reader.range(start, length))
    }

    /// A cursor over the file `stat` at `path`, held by `trie` (this drive's or a mounted
    /// one's): its content blocks, or a mounted hypercore's.
    pub(crate) async fn reader_of(
        &self,
        path: &str,
        stat: Stat,
        trie: &hypertrie::Hypertrie,
        linear: bool,
    ) -> Result<FileReader, Error> {
        if stat.is_dir() {
            return Err(Error::WrongType {
                path: path.to_string(),
                reason: "is a directory",
            });
        }
        match stat.mount.as_ref().filter(|m| m.hypercore == Some(true)) {
            Some(mount) => {
                let (core, origin, extent) =
                    self.mounted_core(path, &mount.key, mount.version).await?;
                Ok(FileReader::new(path, core, origin, stat, extent, linear))
            }
            None => {
                let owner = self.drive_of(trie).await?;
                owner.content_reader(path, stat, linear).await
            }
        }
    }

    /// A cursor over the bytes `stat` points to in this drive's content feed (`path`
    /// names it in errors).
    pub(crate) async fn content_reader(
        &self,
        path: &str,
        stat: Stat,
        linear: bool,
    ) -> Result<FileReader, Error> {
        let core = self.content().await?.clone();
        let extent = Extent {
            offset: stat.offset,
            blocks: stat.blocks,
            byte_offset: stat.byte_offset,
            size: stat.size,
        };
        let origin = Origin::Content { drive: self.key() };
        check_extent(path, core.feed(), &extent, &origin).await?;
        Ok(FileReader::new(path, core, origin, stat, extent, linear))
    }

    /// The core mounted at `path` as a file: all its blocks (up to `version` when
    /// pinned), as JS reads a hypercore mount.
    async fn mounted_core(
        &self,
        path: &str,
        key: &[u8],
        version: Option<u64>,
    ) -> Result<(Core, Origin, Extent), Error> {
        let key = PublicKey::from_slice(key).map_err(|_| Error::BadStat {
            path: path.to_string(),
            reason: "its mount's key is not a public key".into(),
        })?;
        let core = self.store.get_by_key(key).await.map_err(|e| Error::Store {
            what: format!("the core mounted at {path}"),
            source: Box::new(e),
        })?;
        let origin = Origin::Core {
            key,
            path: path.to_string(),
        };
        let feed = core.feed();
        let blocks = match version.filter(|&v| v != 0) {
            Some(v) => v.min(feed.len()),
            None => feed.len(),
        };
        let size = if blocks == feed.len() {
            feed.byte_len()
        } else if blocks == 0 {
            0
        } else {
            let roots = feed.root_hashes(blocks - 1).map_err(|e| origin.error(e))?;
            roots.iter().map(|n| n.size).sum()
        };
        let extent = Extent {
            offset: 0,
            blocks,
            byte_offset: 0,
            size,
        };
        Ok((core, origin, extent))
    }
}

/// Refuses a Stat that points past the content feed (waiting a while for a remote feed
/// to grow that long first), or whose bytes do not fit in it.
async fn check_extent(
    path: &str,
    feed: &Feed,
    extent: &Extent,
    origin: &Origin,
) -> Result<(), Error> {
    let bad = |have: u64| Error::BadStat {
        path: path.to_string(),
        reason: format!(
            "blocks {}..{} are past the content feed's {have} blocks",
            extent.offset,
            extent.offset.saturating_add(extent.blocks)
        ),
    };
    let Some(end) = extent.offset.checked_add(extent.blocks) else {
        return Err(bad(feed.len()));
    };
    if end > feed.len() {
        if feed.writable() {
            return Err(bad(feed.len()));
        }
        match feed.update(Some(end), Some(CONTENT_WAIT)).await {
            Ok(_) => {}
            Err(hypercore::Error::Timeout { .. }) => return Err(bad(feed.len())),
            Err(e) => return Err(origin.error(e)),
        }
    }
    // The feed's byte length counts at least its first `end` blocks now.
    let bytes = feed.byte_len();
    if extent
        .byte_offset
        .checked_add(extent.size)
        .is_none_or(|last| last > bytes)
    {
        return Err(Error::BadStat {
            path: path.to_string(),
            reason: format!(
                "bytes {}..+{} are past the content feed's {bytes} bytes",
                extent.byte_offset, extent.size
            ),
        });
    }
    Ok(())
}

impl FileReader {
    fn new(
        path: &str,
        core: Core,
        origin: Origin,
        stat: Stat,
        extent: Extent,
        linear: bool,
    ) -> FileReader {
        FileReader {
            path: path.to_string(),
            core,
            origin,
            stat,
            extent,
            end: extent.size,
            pos: 0,
            blocks: VecDeque::new(),
            next: Some((extent.offset, 0)),
            fetch: None,
            sequential: false,
            linear,
            prefetch: None,
            end_block: Some(extent.end_block()),
            run_bytes: RUN_BYTES,
        }
    }

    /// Reads at most `bytes` of stored blocks at once, and reads ahead when less than
    /// half of that is left (1 MiB unless set; a run holds at least one block). What a
    /// reader holds while its consumer is slow is about twice this: a server with many
    /// readers sets it lower than a single reader wants for speed.
    pub fn with_read_ahead(mut self, bytes: u64) -> FileReader {
        self.run_bytes = bytes;
        self
    }

    /// Limits reading to `length` bytes (all, with `None`) from byte `start`.
    fn range(mut self, start: u64, length: Option<u64>) -> FileReader {
        let size = self.extent.size;
        self.pos = start.min(size);
        self.end = match length {
            Some(n) => self.pos.saturating_add(n).min(size),
            None => size,
        };
        if self.end < size {
            self.end_block = None;
        }
        self
    }

    /// The file's Stat.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.extent.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.extent.size == 0
    }

    /// The feed the file's bytes are in and its blocks there, `[start, end)`.
    pub(crate) fn blocks(&self) -> (&Feed, u64, u64) {
        (
            self.core.feed(),
            self.extent.offset,
            self.extent.end_block(),
        )
    }

    /// The byte the next read starts at.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves the cursor to byte `pos` (past the end reads nothing).
    pub fn seek_to(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// The next bytes from the position, at most `max`, without copying: a slice of a
    /// block. `None` at the end.
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            if self.pos >= self.end {
                return Poll::Ready(Ok(None));
            }
            while self
                .blocks
                .front()
                .is_some_and(|(p, b)| p + b.len() as u64 <= self.pos)
            {
                self.blocks.pop_front();
            }
            if let Some((p, block)) = self.blocks.front() {
                if *p <= self.pos {
                    let from = (self.pos - p) as usize;
                    let to = block
                        .len()
                        .min(from.saturating_add(max))
                        .min((self.end - p) as usize);
                    let chunk = block.slice(from..to);
                    self.pos += chunk.len() as u64;
                    self.read_ahead(cx);
                    return Poll::Ready(Ok(Some(chunk)));
                }
                // A seek back before what was read ahead.
                self.blocks.clear();
                self.next = None;
            }
            if self.fetch.as_ref().is_none_or(|(at, _)| *at != self.pos) {
                self.start_fetch(self.pos);
            }
            let Some((_, fetch)) = self.fetch.as_mut() else {
                continue;
            };
            let fetched = ready!(fetch.poll_unpin(cx));
            self.fetch = None;
            self.accept(fetched?);
        }
    }

    /// Starts fetching the block that holds file position `pos` (and, reading on
    /// sequentially, the stored blocks after it). A read stream first asks peers for its
    /// range from that block on, in order, unless it already does.
    fn start_fetch(&mut self, pos: u64) {
        let known = self.next.filter(|&(_, p)| p == pos);
        self.sequential = known.is_some() && (self.sequential || self.linear || pos > 0);
        let run = self.sequential || self.linear;
        let core = self.core.clone();
        let extent = self.extent;
        let origin = self.origin.clone();
        let path = self.path.clone();
        let linear = self.linear;
        let prefetching_from = self.prefetch.as_ref().map(|(from, _)| *from);
        let run_bytes = self.run_bytes;
        let mut end_block = self.end_block;
        let range_end = extent.byte_offset + self.end.saturating_sub(1);
        let fetch = async move {
            let feed = core.feed();
            let (index, at) = match known {
                Some(k) => k,
                None => {
                    let (index, offset) = feed
                        .seek(extent.byte_offset + pos, None)
                        .await
                        .map_err(|e| origin.error(e))?;
                    (index, pos - offset.min(pos))
                }
            };
            if !(extent.offset..extent.end_block()).contains(&index) {
                return Err(Error::BadStat {
                    path,
                    reason: format!(
                        "byte {pos} of the file is in block {index}, outside its blocks {}..{}",
                        extent.offset,
                        extent.end_block()
                    ),
                });
            }
            let mut prefetch = None;
            if linear && prefetching_from.is_none_or(|from| from > index) {
                if end_block.is_none() {
                    let (last, _) = feed
                        .seek(range_end, None)
                        .await
                        .map_err(|e| origin.error(e))?;
                    end_block = Some((last + 1).min(extent.end_block()));
                }
                let end = end_block.unwrap_or(extent.end_block());
                if index < end && !feed.has_range(index, end) {
                    let range = DownloadRange {
                        start: index,
                        end: Some(end),
                        linear: true,
                        priority: 1,
                    };
                    prefetch = Some((index, core.download(range)));
                }
            }
            let mut blocks = Vec::new();
            if run {
                blocks = feed
                    .read_run(index, extent.end_block(), run_bytes)
                    .await
                    .map_err(|e| origin.error(e))?;
            }
            if blocks.is_empty() {
                blocks.push(feed.get(index).await.map_err(|e| origin.error(e))?);
            }
            Ok(Fetched {
                index,
                pos: at,
                blocks,
                end_block,
                prefetch,
            })
        };
        self.fetch = Some((pos, Box::pin(fetch)));
    }

    /// Takes fetched blocks in, after the ones read ahead if they continue them.
    fn accept(&mut self, fetched: Fetched) {
        let continues = self
            .blocks
            .back()
            .is_some_and(|(p, b)| p + b.len() as u64 == fetched.pos);
        if !continues {
            self.blocks.clear();
        }
        let mut at = fetched.pos;
        let count = fetched.blocks.len() as u64;
        for block in fetched.blocks {
            let len = block.len() as u64;
            self.blocks.push_back((at, block));
            at += len;
        }
        self.next = Some((fetched.index + count, at));
        self.end_block = self.end_block.or(fetched.end_block);
        if fetched.prefetch.is_some() {
            self.prefetch = fetched.prefetch;
        }
    }

    /// Reading on sequentially: starts fetching the next blocks before they are needed.
    fn read_ahead(&mut self, cx: &mut Context<'_>) {
        if self.fetch.is_some() || !(self.sequential || self.linear) {
            return;
        }
        let Some((_, at)) = self.next else { return };
        let ahead = at.saturating_sub(self.pos);
        if at >= self.end || ahead > self.run_bytes / 2 {
            return;
        }
        self.start_fetch(at);
        // Polled once now, so its read runs while the caller uses what it has.
        if let Some((_, fetch)) = self.fetch.as_mut() {
            if let Poll::Ready(fetched) = fetch.poll_unpin(cx) {
                self.fetch = None;
                if let Ok(fetched) = fetched {
                    self.accept(fetched);
                }
            }
        }
    }
}

impl Stream for FileReader {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_chunk(cx, usize::MAX)
            .map(Result::transpose)
    }
}

impl AsyncRead for FileReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let chunk = ready!(self.get_mut().poll_chunk(cx, buf.remaining()));
        if let Some(chunk) = chunk.map_err(std::io::Error::other)? {
            buf.put_slice(&chunk);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for FileReader {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let this = self.get_mut();
        let target = match position {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => this.extent.size.checked_add_signed(d),
            SeekFrom::Current(d) => this.pos.checked_add_signed(d),
        };
        this.pos = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}
