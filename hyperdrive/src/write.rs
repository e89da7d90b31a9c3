//! Write streams (spec drive.md §4): a file's bytes go straight into the content feed as
//! they are written, one block per write (cut at [`MAX_BLOCK`]), batched into signed
//! appends; its Stat is put when the stream finishes, so readers see the old file (or none)
//! until then. The content feed's writer lock is held meanwhile: a file is one contiguous
//! run of blocks.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::Sink;
use hypercore::WriteSink;
use hypertrie::{Hypertrie, PutOptions};
use prost::Message;
use tokio::io::AsyncWrite;
use tokio::sync::OwnedMutexGuard;

use crate::dedup::{Run, Stored};
use crate::{trie_at, Drive, Error, Stat, MAX_BLOCK};

/// The block size of bytes written through [`AsyncWrite`], gathered from small writes (a
/// JS file read stream's chunk size).
pub const WRITE_BLOCK: usize = 64 << 10;

/// Attributes of a file being written; unset ones take JS's defaults.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Permission bits (default 0o644).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modified, ms (default now).
    pub mtime: Option<u64>,
    /// Changed, ms (default now).
    pub ctime: Option<u64>,
    /// Per-file metadata.
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl WriteOptions {
    /// The attributes a new version of the file `stat` keeps: mode, owner, group and
    /// metadata (its times become now).
    pub fn keeping(stat: &Stat) -> WriteOptions {
        WriteOptions {
            mode: Some(stat.mode & !crate::S_IFMT),
            uid: stat.uid,
            gid: stat.gid,
            mtime: None,
            ctime: None,
            metadata: stat
                .metadata
                .iter()
                .filter_map(|e| e.value.clone().map(|v| (e.key.clone(), v)))
                .collect(),
        }
    }
}

/// A file being written: a [`Sink`] of byte chunks (one block each, as JS write streams
/// make them) and an [`AsyncWrite`] (writes gathered into blocks of [`WRITE_BLOCK`]
/// bytes). Finish it with
/// [`FileWriter::finish`] (or `shutdown`/`close`) to put its Stat; dropped unfinished, the
/// file is not written (its blocks stay in the content feed, unreferenced).
pub struct FileWriter {
    /// What the finished file's Stat needs.
    target: Target,
    sink: WriteSink,
    /// Bytes from [`AsyncWrite`] not yet a full block.
    gathered: BytesMut,
    /// Held from the first block to the last.
    lock: Option<OwnedMutexGuard<()>>,
    closing: Option<BoxFuture<'static, Result<Stat, Error>>>,
    finished: Option<Stat>,
}

/// Where a file being written goes, and what it has so far.
struct Target {
    /// The drive that owns the path (this one or a mounted one).
    drive: Drive,
    /// That drive's trie, and the path's key in it.
    trie: Hypertrie,
    key: String,
    options: WriteOptions,
    /// The first block and its byte position in the content feed.
    offset: u64,
    byte_offset: u64,
    blocks: u64,
    size: u64,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.target.key)
            .field("size", &self.target.size)
            .field("blocks", &self.target.blocks)
            .finish()
    }
}

impl Drive {
    /// Starts writing the file at `path` (into the drive that owns it, mounted or not),
    /// replacing what is there when it finishes. Waits for other writers of the same
    /// content feed to finish first.
    pub async fn write_stream(
        &self,
        path: &str,
        options: WriteOptions,
    ) -> Result<FileWriter, Error> {
        let (owner, trie, key) = self.file_owner(path).await?;
        let feed = owner.content_feed().await?.clone();
        let lock = feed.lock_writer().await;
        Ok(FileWriter::new(
            owner, trie, key, options, &feed, lock, None,
        ))
    }

    /// Writes `data` to `path` as one file (blocks of at most [`MAX_BLOCK`]; an empty file
    /// is one empty block, as in JS).
    pub async fn write_file(
        &self,
        path: &str,
        data: &[u8],
        options: WriteOptions,
    ) -> Result<Stat, Error> {
        self.write_chunks(path, [Bytes::copy_from_slice(data)], options)
            .await
    }

    /// Writes `chunks` to `path` as one file, each chunk its own content block (cut at
    /// [`MAX_BLOCK`]), as a JS write stream does with each `write()`. Content the feed
    /// already holds, cut into the same blocks, is pointed at rather than appended again.
    pub async fn write_chunks(
        &self,
        path: &str,
        chunks: impl IntoIterator<Item = Bytes>,
        options: WriteOptions,
    ) -> Result<Stat, Error> {
        let (owner, trie, key) = self.writable_owner(path).await?;
        let mut blocks = Vec::new();
        for chunk in chunks {
            let mut at = 0;
            while at < chunk.len() {
                let end = (at + MAX_BLOCK).min(chunk.len());
                blocks.push(chunk.slice(at..end));
                at = end;
            }
        }
        if blocks.is_empty() {
            blocks.push(Bytes::new());
        }
        let size = blocks.iter().map(|b| b.len() as u64).sum();
        let mut stored = owner.find_content(&blocks).await?;
        if stored.run.is_none() && size <= SMALL_FILE {
            return owner
                .write_small(path, &trie, &key, blocks, size, options, stored)
                .await;
        }
        self.refuse_directory(path).await?;
        let run = owner.store_content(path, blocks, &mut stored).await?;
        let (stat, seq) = put_file(&owner, &trie, &key, options, &run_stat(size, run)).await?;
        owner.note_written(seq, size, &stored).await;
        Ok(stat)
    }

    /// [`Self::write_chunks`] of a small file whose content is not in the content feed,
    /// with one trie walk: its Stat's node is built first (the content's place is known
    /// under the feed's writer lock, and the trie's lock keeps the node's), which finds
    /// a directory at the path, refused before anything is written; then the content is
    /// appended and the Stat after it, as ever.
    #[allow(clippy::too_many_arguments)]
    async fn write_small(
        &self,
        path: &str,
        trie: &Hypertrie,
        key: &str,
        blocks: Vec<Bytes>,
        size: u64,
        options: WriteOptions,
        mut stored: Stored,
    ) -> Result<Stat, Error> {
        let feed = self.content_feed().await?.clone();
        let _writer = feed.lock_writer().await;
        let run = Run {
            offset: feed.len(),
            byte_offset: feed.byte_len(),
            blocks: blocks.len() as u64,
        };
        let stat = file_stat(self, options, &run_stat(size, run));
        let put = trie
            .prepare_put(
                key,
                Bytes::from(stat.encode_to_vec()),
                PutOptions::default(),
            )
            .await
            .map_err(trie_at(path))?;
        let over = put
            .existing()
            .map(|n| crate::dir::decode_stat(n.key(), n.value.as_deref()));
        if let Some(Ok(existing)) = over {
            if existing.is_dir() {
                return Err(is_a_directory(path));
            }
        }
        let (appended, signed) =
            crate::parallel::join(|| feed.append_batch_blocking(blocks), put.signer());
        let appended = appended.map_err(|source| self.content_write_error(path, source))?;
        if appended.start != run.offset {
            // Nothing is written for the Stat: no entry points at the wrong blocks.
            return Err(self.content_write_error(
                path,
                hypercore::Error::Internal {
                    reason: format!(
                        "the content landed at block {}, not {}: something appended \
                         without the writer lock",
                        appended.start, run.offset
                    ),
                },
            ));
        }
        let node = put
            .commit_signed(signed.map_err(trie_at(path))?)
            .map_err(trie_at(path))?;
        stored.run = Some(run);
        self.note_written(node.seq, size, &stored).await;
        Ok(stat)
    }

    /// Refuses to write a file over the directory at `path`. A Stat that does not decode
    /// is replaced like any other file: a broken entry must not stay forever.
    async fn refuse_directory(&self, path: &str) -> Result<(), Error> {
        match self.node_stat(&crate::key_of(path)).await {
            Ok(Some(stat)) if stat.is_dir() => Err(is_a_directory(path)),
            Ok(_) | Err(Error::BadStat { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Files up to this size are written by [`Drive::write_small`], whose locks are held
/// while the content is appended: a moment for a small file.
const SMALL_FILE: u64 = 16 << 10;

fn is_a_directory(path: &str) -> Error {
    Error::WrongType {
        path: path.to_string(),
        reason: "is a directory",
    }
}

impl Drive {
    /// [`Self::writable_owner`] of a file to write: refuses a directory at `path`.
    async fn file_owner(&self, path: &str) -> Result<(Drive, Hypertrie, String), Error> {
        let owner = self.writable_owner(path).await?;
        self.refuse_directory(path).await?;
        Ok(owner)
    }
}

impl FileWriter {
    /// A writer of the file at `key` of `owner`'s `trie`, holding `lock`, the writer lock of
    /// `owner`'s content feed `feed`. Continuing `stat`, a file whose blocks end the feed,
    /// it writes on after them.
    pub(crate) fn new(
        owner: Drive,
        trie: Hypertrie,
        key: String,
        options: WriteOptions,
        feed: &hypercore::Feed,
        lock: OwnedMutexGuard<()>,
        continuing: Option<&Stat>,
    ) -> FileWriter {
        let (offset, byte_offset, blocks, size) = match continuing {
            Some(s) => (s.offset, s.byte_offset, s.blocks, s.size),
            None => (feed.len(), feed.byte_len(), 0, 0),
        };
        let target = Target {
            drive: owner,
            trie,
            key,
            options,
            offset,
            byte_offset,
            blocks,
            size,
        };
        FileWriter {
            target,
            sink: feed.write_sink(),
            gathered: BytesMut::new(),
            lock: Some(lock),
            closing: None,
            finished: None,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.target.size + self.gathered.len() as u64
    }

    /// Appends what is buffered to the content feed (the file stays unseen until it
    /// finishes).
    pub async fn flush(&mut self) -> Result<(), Error> {
        futures::future::poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// The file as written so far (what is flushed is readable through it), as a Stat put
    /// nowhere.
    pub(crate) fn written(&self) -> Stat {
        let t = &self.target;
        Stat {
            size: t.size,
            blocks: t.blocks,
            offset: t.offset,
            byte_offset: t.byte_offset,
            ..Stat::file(t.options.mode.unwrap_or(0o644), 0)
        }
    }

    /// Writes `chunk` (one content block, cut at [`MAX_BLOCK`]).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        futures::SinkExt::feed(self, chunk).await
    }

    /// Appends what is buffered, puts the file's Stat and returns it.
    pub async fn finish(mut self) -> Result<Stat, Error> {
        futures::future::poll_fn(|cx| self.poll_finish(cx)).await
    }

    fn finished_error(&self) -> Error {
        Error::WrongType {
            path: format!("/{}", self.target.key),
            reason: "the write stream is finished (or failed)",
        }
    }

    /// A failed append ends the stream: the writer lock goes (other writers need not wait
    /// for this one to be dropped), and the file is not written.
    fn fail(&mut self, source: hypercore::Error) -> Error {
        self.lock = None;
        Error::ContentWrite {
            path: format!("/{}", self.target.key),
            drive: self.target.drive.key(),
            source: Box::new(source),
        }
    }

    fn poll_ready_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.lock.is_none() {
            return Poll::Ready(Err(self.finished_error()));
        }
        match Pin::new(&mut self.sink).poll_ready(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail(e))),
            other => other.map_err(|_| self.finished_error()),
        }
    }

    fn send(&mut self, chunk: Bytes) -> Result<(), Error> {
        let mut at = 0;
        while at < chunk.len() {
            let end = (at + MAX_BLOCK).min(chunk.len());
            self.push(chunk.slice(at..end))?;
            at = end;
        }
        Ok(())
    }

    fn push(&mut self, block: Bytes) -> Result<(), Error> {
        self.target.blocks += 1;
        self.target.size += block.len() as u64;
        Pin::new(&mut self.sink)
            .start_send(block)
            .map_err(|e| self.fail(e))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.gathered.is_empty() {
            ready!(self.poll_ready_inner(cx))?;
            let block = self.gathered.split().freeze();
            self.push(block)?;
        }
        match Pin::new(&mut self.sink).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail(e))),
            other => other.map_err(|_| self.finished_error()),
        }
    }

    /// Flushes the blocks (one empty block for an empty file, as JS), releases the writer
    /// lock, then puts the Stat.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stat, Error>> {
        if let Some(stat) = &self.finished {
            return Poll::Ready(Ok(stat.clone()));
        }
        if self.closing.is_none() && self.lock.is_none() {
            return Poll::Ready(Err(self.finished_error()));
        }
        if self.closing.is_none() {
            if self.target.blocks == 0 && self.gathered.is_empty() {
                ready!(self.poll_ready_inner(cx))?;
                self.push(Bytes::new())?;
            }
            ready!(self.poll_flush_inner(cx))?;
            self.lock = None;
            self.closing = Some(Box::pin(put_stat(self.target.snapshot())));
        }
        let closing = self.closing.as_mut().map(|c| c.as_mut().poll(cx));
        let stat = ready!(closing.unwrap_or(Poll::Ready(Err(Error::NotWritable {
            path: format!("/{}", self.target.key),
        }))));
        self.closing = None;
        let stat = stat?;
        self.finished = Some(stat.clone());
        Poll::Ready(Ok(stat))
    }
}

impl Target {
    fn snapshot(&self) -> Target {
        Target {
            drive: self.drive.clone(),
            trie: self.trie.clone(),
            key: self.key.clone(),
            options: self.options.clone(),
            ..*self
        }
    }
}

/// Puts the Stat of the finished file `target`.
async fn put_stat(target: Target) -> Result<Stat, Error> {
    let run = Stat {
        size: target.size,
        blocks: target.blocks,
        offset: target.offset,
        byte_offset: target.byte_offset,
        ..Stat::default()
    };
    put_file(
        &target.drive,
        &target.trie,
        &target.key,
        target.options,
        &run,
    )
    .await
    .map(|(stat, _)| stat)
}

/// Puts at `key` of `trie` (of `drive`) the Stat of a file whose bytes are the run of
/// content blocks `run` names (offset, blocks, byte offset, size), with the attributes of
/// `options`; returns it with the seq of its node.
pub(crate) async fn put_file(
    drive: &Drive,
    trie: &Hypertrie,
    key: &str,
    options: WriteOptions,
    run: &Stat,
) -> Result<(Stat, u64), Error> {
    let stat = file_stat(drive, options, run);
    let value = Bytes::from(stat.encode_to_vec());
    let node = trie
        .put(key, value, PutOptions::default())
        .await
        .map_err(trie_at(&format!("/{key}")))?;
    Ok((stat, node.seq))
}

/// The Stat of a file of `drive` in the content blocks `run` names (offset, blocks, byte
/// offset, size), with the attributes of `options`.
fn file_stat(drive: &Drive, options: WriteOptions, run: &Stat) -> Stat {
    let now = drive.now();
    let mut stat = Stat {
        size: run.size,
        blocks: run.blocks,
        offset: run.offset,
        byte_offset: run.byte_offset,
        uid: options.uid,
        gid: options.gid,
        mtime: options.mtime.unwrap_or(now),
        ctime: options.ctime.unwrap_or(now),
        ..Stat::file(options.mode.unwrap_or(0o644), now)
    };
    for (k, v) in options.metadata {
        stat.set_metadata(&k, Some(v));
    }
    stat
}

/// A Stat naming the run of content blocks `run` of a file of `size` bytes, as
/// [`put_file`] takes it.
fn run_stat(size: u64, run: Run) -> Stat {
    Stat {
        size,
        blocks: run.blocks,
        offset: run.offset,
        byte_offset: run.byte_offset,
        ..Stat::default()
    }
}

impl Sink<Bytes> for FileWriter {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready_inner(cx)
    }

    fn start_send(self: Pin<&mut Self>, chunk: Bytes) -> Result<(), Error> {
        self.get_mut().send(chunk)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_finish(cx).map_ok(|_| ())
    }
}

impl AsyncWrite for FileWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.lock.is_none() {
            return Poll::Ready(Err(std::io::Error::other(this.finished_error())));
        }
        if this.gathered.len() == WRITE_BLOCK {
            ready!(this.poll_ready_inner(cx)).map_err(std::io::Error::other)?;
            let block = this.gathered.split().freeze();
            this.push(block).map_err(std::io::Error::other)?;
        }
        if this.gathered.capacity() < WRITE_BLOCK {
            this.gathered.reserve(WRITE_BLOCK - this.gathered.len());
        }
        let n = buf.len().min(WRITE_BLOCK - this.gathered.len());
        this.gathered.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut()
            .poll_flush_inner(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut()
            .poll_finish(cx)
            .map(|r| r.map(|_| ()).map_err(std::io::Error::other))
    }
}
