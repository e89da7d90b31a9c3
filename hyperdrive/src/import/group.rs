//! Imports of many small entries in groups: the files of a group are read and hashed
//! together on the blocking pool (SIMD hashing runs across files) while the group before
//! is written, then appended to the content feed as one batch (one signature) and their
//! Stats put in one trie batch (one more). Per file, that leaves no hop to the blocking
//! pool and no signature of its own, which is what bounded an import of many small
//! files; and reading and hashing use the second core.
//!
//! What goes in a group is decided entry by entry as before (`Drive::decide`): new and
//! changed files up to [`GROUP_FILE`] whose size no stored run has (so dedup has nothing
//! to find), directories and symlinks. Files of equal content within a group are stored
//! once. Everything else is imported alone, after the groups before it are written.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hypercore::crypto::Hash;
use hypercore::HashedBlocks;
use hypertrie::{Op, PutOptions};
use prost::Message;
use tokio::task::JoinHandle;

use super::{
    local, open_regular, Decision, LocalEntry, LocalKind, Place, Tracker, TransferSummary, Writes,
};
use crate::dedup::Run;
use crate::{trie_at, Drive, Error, Stat, MAX_BLOCK};

/// Files up to this size may go in a group (larger ones are streamed alone).
pub(super) const GROUP_FILE: u64 = 4 << 20;
/// A group is written once its files hold this many bytes...
const GROUP_BYTES: u64 = 8 << 20;
/// ... or it has this many entries.
const GROUP_ENTRIES: usize = 256;
/// Bytes a group's read takes at most, whatever the files grew to since the walk: the
/// files past it are imported alone.
const GROUP_READ_LIMIT: u64 = 2 * GROUP_BYTES;

/// An entry in a group.
struct Member {
    /// Its drive path.
    path: Arc<str>,
    entry: LocalEntry,
    place: Place,
    /// For a directory or symlink, its Stat; `None` for a file.
    stat: Option<Stat>,
}

/// Entries gathered for one drive's trie and content feed.
struct Group {
    members: Vec<Member>,
    /// Bytes of its files, as listed.
    bytes: u64,
}

/// Where a file's blocks are in a group's batch as read: blocks `[first, first + count)`,
/// `bytes` long.
#[derive(Clone, Copy)]
struct Span {
    first: usize,
    count: usize,
    bytes: u64,
}

/// The blocks of a group's files, hashed, and where each file's are: `None` for a file
/// larger than [`GROUP_FILE`] by now, to import alone.
struct GroupRead {
    batch: HashedBlocks,
    files: Vec<Option<Span>>,
}

/// Where a file of a group finds its content.
enum Source {
    /// Blocks of the batch as appended.
    Batch(Span),
    /// The content feed already has it (dedup.rs).
    Stored(Run),
    /// The content of the group's file of this index.
    SameAs(usize),
    /// Imported alone.
    Alone,
}

/// A group whose files are being read.
struct Reading {
    group: Group,
    read: JoinHandle<Result<GroupRead, Error>>,
}

/// The groups of one import: the one gathering entries and the one being read.
#[derive(Default)]
pub(super) struct Groups {
    gathering: Option<Group>,
    reading: Option<Reading>,
}

impl Groups {
    /// Takes the entry at `path` into a group if `decision` lets it (see the module doc);
    /// otherwise hands the decision back, to import the entry alone. A full group is
    /// written meanwhile.
    pub(super) async fn take(
        &mut self,
        path: &Arc<str>,
        entry: &LocalEntry,
        decision: Decision,
        writes: &Writes,
        summary: &mut TransferSummary,
        tracker: &mut Tracker,
    ) -> Result<Option<Decision>, Error> {
        if !matches!(writes, Writes::Drive) {
            return Ok(Some(decision));
        }
        let (place, stat, size) = match decision {
            Decision::Put(place, stat) => (place, Some(stat), 0),
            Decision::File(place, None) => {
                let LocalKind::File { size } = entry.kind else {
                    return Ok(Some(Decision::File(place, None)));
                };
                if size > GROUP_FILE {
                    return Ok(Some(Decision::File(place, None)));
                }
                (place, None, size)
            }
            other => return Ok(Some(other)),
        };
        if let Some(group) = &self.gathering {
            let ours = group.members[0].place.trie.feed().key();
            if place.trie.feed().key() != ours {
                self.launch(summary, tracker).await?;
            }
        }
        let group = self.gathering.get_or_insert_with(|| Group {
            members: Vec::new(),
            bytes: 0,
        });
        group.bytes += size;
        group.members.push(Member {
            path: path.clone(),
            entry: entry.clone(),
            place,
            stat,
        });
        if group.bytes >= GROUP_BYTES || group.members.len() >= GROUP_ENTRIES {
            self.launch(summary, tracker).await?;
        }
        Ok(None)
    }

    /// Writes every group: call it before importing an entry alone, and at the end.
    pub(super) async fn finish(
        &mut self,
        summary: &mut TransferSummary,
        tracker: &mut Tracker,
    ) -> Result<(), Error> {
        self.launch(summary, tracker).await?;
        if let Some(reading) = self.reading.take() {
            reading.write(summary, tracker).await?;
        }
        Ok(())
    }

    /// Starts reading the gathering group's files, then writes the group read before.
    async fn launch(
        &mut self,
        summary: &mut TransferSummary,
        tracker: &mut Tracker,
    ) -> Result<(), Error> {
        let Some(group) = self.gathering.take() else {
            return Ok(());
        };
        let files: Vec<(PathBuf, u64)> = group
            .members
            .iter()
            .filter_map(|m| match (&m.stat, &m.entry.kind) {
                (None, LocalKind::File { size }) => Some((m.entry.path.clone(), *size)),
                _ => None,
            })
            .collect();
        let read = tokio::task::spawn_blocking(move || read_group(&files));
        if let Some(before) = self.reading.replace(Reading { group, read }) {
            before.write(summary, tracker).await?;
        }
        Ok(())
    }
}

impl Reading {
    /// Appends the group's content in one batch and puts its Stats in one trie batch;
    /// then imports alone the files that grew past [`GROUP_FILE`].
    async fn write(
        self,
        summary: &mut TransferSummary,
        tracker: &mut Tracker,
    ) -> Result<(), Error> {
        let Reading { group, read } = self;
        let GroupRead { mut batch, files } = read.await.map_err(|e| Error::Task {
            reason: e.to_string(),
        })??;
        let first = &group.members[0];
        let (owner, trie) = (first.place.owner.clone(), first.place.trie.clone());
        let sources = owner.find_sources(&batch, &files).await?;
        // The blocks found elsewhere leave the batch; what is left is appended.
        for source in sources.iter().rev() {
            if let (Source::Stored(_) | Source::SameAs(_), Some(span)) = source {
                batch.remove(span.first..span.first + span.count);
            }
        }
        let (start, start_byte) = match batch.is_empty() {
            true => (0, 0),
            false => {
                let feed = owner.content_feed().await?.clone();
                // Nothing else appends between preparing and committing the batch.
                let _writer = feed.lock_writer().await;
                let appended = tokio::task::spawn_blocking(move || {
                    let prepared = feed.prepare_hashed(batch)?;
                    feed.commit_append(prepared)
                })
                .await
                .map_err(|e| Error::Task {
                    reason: e.to_string(),
                })?
                .map_err(|source| owner.content_error(source))?;
                (appended.start, appended.start_byte)
            }
        };
        // Each file's run and size, in order, and whether its content was there before.
        let mut runs: Vec<(Run, u64, bool)> = Vec::with_capacity(sources.len());
        let (mut offset, mut byte_offset) = (start, start_byte);
        for (source, span) in &sources {
            let size = span.map_or(0, |s| s.bytes);
            runs.push(match *source {
                Source::Batch(span) => {
                    let run = Run {
                        offset,
                        byte_offset,
                        blocks: span.count as u64,
                    };
                    offset += run.blocks;
                    byte_offset += span.bytes;
                    (run, size, false)
                }
                Source::Stored(run) => (run, size, true),
                Source::SameAs(i) => (runs[i].0, size, true),
                Source::Alone => (Run::default(), 0, false),
            });
        }
        let now = owner.now();
        let mut files = sources.iter().zip(runs);
        let mut ops = Vec::with_capacity(group.members.len());
        let mut alone = Vec::new();
        let mut written = Vec::with_capacity(group.members.len());
        for member in group.members {
            let (stat, bytes) = match member.stat {
                Some(stat) => (stat, None),
                None => {
                    let Some(((source, _), (run, size, deduplicated))) = files.next() else {
                        unreachable!("a file member has a source");
                    };
                    if let Source::Alone = source {
                        alone.push(member);
                        continue;
                    }
                    let stat = Stat {
                        size,
                        blocks: run.blocks,
                        offset: run.offset,
                        byte_offset: run.byte_offset,
                        mtime: member.entry.mtime,
                        ..Stat::file(member.entry.mode, now)
                    };
                    (stat, Some((size, deduplicated)))
                }
            };
            ops.push(Op::Put {
                key: member.place.key.clone(),
                value: Bytes::from(stat.encode_to_vec()),
                options: PutOptions::default(),
            });
            written.push((member.path, member.place.outcome(), bytes));
        }
        if !ops.is_empty() {
            trie.batch(ops).await.map_err(trie_at(&written[0].0))?;
        }
        for (path, outcome, bytes) in written {
            tracker.start(&path);
            if let Some((size, deduplicated)) = bytes {
                tracker.bytes(size);
                match deduplicated {
                    true => summary.deduplicated += 1,
                    false => summary.bytes_written += size,
                }
            }
            summary.count(outcome);
            tracker.entry();
        }
        for member in alone {
            tracker.start(&member.path);
            let decision = Decision::File(member.place, None);
            owner
                .import_decided(
                    &member.path,
                    &member.entry,
                    decision,
                    &mut Writes::Drive,
                    summary,
                    tracker,
                )
                .await?;
            tracker.entry();
        }
        Ok(())
    }
}

impl Drive {
    /// Where each file of a group read as `files` into `batch` finds its content: an
    /// earlier file of the group with the same blocks, or a run of the content feed
    /// (unless [`crate::DriveOptions::no_dedup`]), else the batch.
    async fn find_sources(
        &self,
        batch: &HashedBlocks,
        files: &[Option<Span>],
    ) -> Result<Vec<(Source, Option<Span>)>, Error> {
        let dedup = !self.options.no_dedup;
        let mut seen: HashMap<&[Hash], usize> = HashMap::new();
        let mut sources = Vec::with_capacity(files.len());
        for (i, span) in files.iter().enumerate() {
            let Some(span) = *span else {
                sources.push((Source::Alone, None));
                continue;
            };
            let hashes = &batch.hashes()[span.first..span.first + span.count];
            let source = if !dedup {
                Source::Batch(span)
            } else if let Some(&earlier) = seen.get(hashes) {
                Source::SameAs(earlier)
            } else {
                seen.insert(hashes, i);
                let count = span.count as u64;
                let mut found = None;
                if self.may_hold(span.bytes, count).await? {
                    let candidates = self.candidates(span.bytes, count, &hashes[0]).await?;
                    found = self.confirm(candidates, hashes.to_vec()).await?;
                }
                found.map_or(Source::Batch(span), Source::Stored)
            };
            sources.push((source, Some(span)));
        }
        Ok(sources)
    }
}

/// Reads the files at `paths` (with the sizes the walk listed) into blocks as a write
/// cuts them, each file's blocks together (an empty file is one empty block, as in JS),
/// and hashes them all at once.
fn read_group(paths: &[(PathBuf, u64)]) -> Result<GroupRead, Error> {
    let mut blocks = Vec::new();
    let mut files = Vec::with_capacity(paths.len());
    let mut total = 0u64;
    for (path, listed) in paths {
        if total > GROUP_READ_LIMIT {
            files.push(None);
            continue;
        }
        let file = open_regular(path)?;
        // One allocation of the file's size, cut into blocks without copying.
        let mut data = Vec::with_capacity((*listed).min(GROUP_FILE) as usize + 1);
        file.take(GROUP_FILE + 1)
            .read_to_end(&mut data)
            .map_err(local(path))?;
        let bytes = data.len() as u64;
        if bytes > GROUP_FILE {
            files.push(None);
            continue;
        }
        let first = blocks.len();
        let data = Bytes::from(data);
        let mut at = 0;
        while at < data.len() {
            let end = (at + MAX_BLOCK).min(data.len());
            blocks.push(data.slice(at..end));
            at = end;
        }
        if blocks.len() == first {
            blocks.push(Bytes::new());
        }
        total += bytes;
        files.push(Some(Span {
            first,
            count: blocks.len() - first,
            bytes,
        }));
    }
    Ok(GroupRead {
        batch: HashedBlocks::new(blocks),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files are cut as a write cuts them, an empty one is one empty block, and one that
    /// grew past [`GROUP_FILE`] is left to be imported alone.
    #[test]
    fn a_group_read_cuts_files_into_blocks_and_leaves_out_grown_ones() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sizes = [MAX_BLOCK * 2 + 7, 0, GROUP_FILE as usize + 1, 10];
        let paths: Vec<(PathBuf, u64)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let path = dir.path().join(i.to_string());
                std::fs::write(&path, vec![i as u8 + 1; size]).expect("a file");
                (path, size as u64)
            })
            .collect();
        let read = read_group(&paths).expect("read");
        let spans: Vec<_> = read
            .files
            .iter()
            .map(|f| f.map(|s| (s.first, s.count, s.bytes)))
            .collect();
        let big = (MAX_BLOCK * 2 + 7) as u64;
        assert_eq!(
            spans,
            [Some((0, 3, big)), Some((3, 1, 0)), None, Some((4, 1, 10))]
        );
        let lens: Vec<usize> = read.batch.blocks().iter().map(Bytes::len).collect();
        assert_eq!(lens, [MAX_BLOCK, MAX_BLOCK, 7, 0, 10]);
        let expected: Vec<Hash> = read
            .batch
            .blocks()
            .iter()
            .map(|b| hypercore::crypto::leaf_hash(b))
            .collect();
        assert_eq!(read.batch.hashes(), &expected[..]);
    }
}
