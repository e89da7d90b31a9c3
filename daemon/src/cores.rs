//! What the daemon does with cores: create, follow, read, write, download and remove them.
//! Every operation validates its input and fails with a [`DaemonError`] of the kind that
//! fits; the front ends only convert. Streams are pulled (a block is read when the client
//! can take it), so what a slow client costs is bounded; they end when their core is
//! removed (NOT_FOUND) and when the daemon stops (ABORTED).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use corestore::{Core, CoreSummary};
use futures::stream::{BoxStream, StreamExt};
use hypercore::{GetOptions, PublicKey, ReadStreamOptions, MAX_BLOCKS};
use hypercore_protocol::PeerKey;
use hypercore_replication::DownloadRange;
use tokio::sync::broadcast::error::RecvError;

use crate::daemon::Daemon;
use crate::error::{DaemonError, ErrorKind, Result};
use crate::state::Seeding;

/// Longest corestore name accepted.
pub const MAX_NAME: usize = 256;
/// Most bytes appended in one signed batch by [`Daemon::append_stream`].
const APPEND_BATCH: usize = 4 << 20;
/// How often a download reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How often a watch compares the core's peers.
const PEER_POLL: Duration = Duration::from_millis(500);

/// A core as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreInfo {
    /// Its public key.
    pub key: PublicKey,
    /// The name its key is derived from, if it is UTF-8 (random names are not shown).
    pub name: Option<String>,
    /// This daemon can append to it.
    pub writable: bool,
    /// Blocks in the log, as far as this daemon knows.
    pub length: u64,
    /// Bytes in the log.
    pub byte_length: u64,
    /// Blocks stored here.
    pub downloaded: u64,
    /// Peers replicating it now.
    pub peers: u32,
    /// The longest length a connected peer announced.
    pub peer_length: u64,
    /// Bytes sent to peers since it was opened.
    pub uploaded_bytes: u64,
    /// Bytes received from peers since it was opened.
    pub downloaded_bytes: u64,
}

impl CoreInfo {
    fn of(core: &Core) -> CoreInfo {
        let feed = core.feed();
        let stats = core.stats();
        CoreInfo {
            key: feed.key(),
            name: shown_name(core.name()),
            writable: feed.writable(),
            length: feed.len(),
            byte_length: feed.byte_len(),
            downloaded: feed.downloaded(0, None),
            peers: stats.peers.len() as u32,
            peer_length: stats
                .peers
                .iter()
                .map(|p| p.remote_length)
                .max()
                .unwrap_or(0),
            uploaded_bytes: stats.totals.uploaded_bytes,
            downloaded_bytes: stats.totals.downloaded_bytes,
        }
    }

    fn of_summary(summary: &CoreSummary) -> CoreInfo {
        CoreInfo {
            key: summary.key,
            name: shown_name(summary.name.as_deref()),
            writable: summary.writable,
            length: summary.length,
            byte_length: summary.byte_length,
            downloaded: summary.downloaded,
            peers: 0,
            peer_length: 0,
            uploaded_bytes: 0,
            downloaded_bytes: 0,
        }
    }
}

/// A core's name for people: only names given as text (unnamed cores have 32 random
/// bytes, which are not shown).
fn shown_name(name: Option<&[u8]>) -> Option<String> {
    name.and_then(|n| String::from_utf8(n.to_vec()).ok())
}

/// What an append committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Index of the first block appended.
    pub first_index: u64,
    /// Blocks appended.
    pub appended: u64,
    /// The length afterwards.
    pub length: u64,
    /// The byte length afterwards.
    pub byte_length: u64,
}

/// Progress of a download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadProgress {
    /// Blocks of the range stored.
    pub downloaded: u64,
    /// Blocks in the range.
    pub total: u64,
    /// Bytes received by this download.
    pub bytes: u64,
    /// The range is complete.
    pub done: bool,
}

/// Something that happened to a core, for watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreEvent {
    /// It grew.
    Appended {
        /// New length.
        length: u64,
        /// New byte length.
        byte_length: u64,
    },
    /// A block arrived from a peer and was stored.
    Downloaded {
        /// The block.
        index: u64,
        /// Its size.
        bytes: u64,
    },
    /// A block was served to a peer.
    Uploaded {
        /// The block.
        index: u64,
        /// Its size.
        bytes: u64,
    },
    /// Blocks were cleared.
    Cleared {
        /// First block.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// A peer started replicating it.
    PeerAdded(PeerKey),
    /// A peer stopped replicating it.
    PeerRemoved(PeerKey),
}

/// A block range as given: `start`, and an exclusive `end` if given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    /// First block.
    pub start: u64,
    /// End (exclusive), if given.
    pub end: Option<u64>,
}

impl BlockRange {
    /// Checks what holds whatever the core's state: within hypercore's 2^53 blocks, and
    /// `end` not before `start`.
    fn validate(&self) -> Result<()> {
        for (name, value) in [("start", Some(self.start)), ("end", self.end)] {
            if let Some(v) = value.filter(|&v| v > MAX_BLOCKS) {
                return Err(DaemonError::invalid(format!(
                    "{name} {v} is past 2^53, the most blocks a core can have"
                )));
            }
        }
        if let Some(end) = self.end.filter(|&e| e < self.start) {
            return Err(DaemonError::invalid(format!(
                "end {end} is before start {}",
                self.start
            )));
        }
        Ok(())
    }

    /// The range must exist in a core of `length` blocks (when not waiting for more).
    fn within(&self, key: &PublicKey, length: u64) -> Result<()> {
        let end = self.end.unwrap_or(self.start);
        if self.start > length || end > length {
            return Err(DaemonError::out_of_range(format!(
                "core {key} has {length} blocks; blocks {}..{end} are past its end",
                self.start
            )));
        }
        Ok(())
    }
}

impl Daemon {
    /// A stored core (opened if needed).
    pub async fn core(&self, key: &PublicKey) -> Result<Core> {
        match self.store().get_stored(key).await {
            Ok(Some(core)) => Ok(core),
            Ok(None) => Err(DaemonError::not_found(format!(
                "no core {key} in this daemon: create it, or follow it to replicate it"
            ))),
            Err(e) => Err(DaemonError::store(e)),
        }
    }

    /// Creates a writable core; with a name, its key is derived from the master key and
    /// the name, so creating the same name again returns the same core. A named core
    /// removed after it had blocks is only created again with `force`.
    /// It joins the swarm as `seeding` says, by default announced and looked up.
    pub async fn create(
        &self,
        name: &str,
        force: bool,
        seeding: Option<Seeding>,
    ) -> Result<CoreInfo> {
        if name.len() > MAX_NAME {
            return Err(DaemonError::invalid(format!(
                "name is {} bytes; names must be at most {MAX_NAME}",
                name.len()
            )));
        }
        // A core without a name gets 32 random bytes as its name, as in corestore, so
        // its key can be re-derived from the master key after a restart.
        let name = if name.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            name.as_bytes().to_vec()
        };
        let store = self.store();
        let core = if force {
            store.recreate_named(&name).await
        } else {
            store.get_named(&name).await
        }
        .map_err(DaemonError::store)?;
        let key = core.feed().key();
        self.follows().forget_removed(&key);
        let seeding = self.seeding_or_default(&key, seeding, true);
        self.set_seeding(key, seeding).await?;
        tracing::info!("created core {key}");
        Ok(CoreInfo::of(&core))
    }

    /// Follows (replicates) a core by key: it stays open and is kept up to date with
    /// peers, across restarts, until removed. `download_all` also downloads every block.
    /// It joins the swarm as `seeding` says, by default looked up (announced too if we
    /// can write it).
    pub async fn follow(
        &self,
        key: PublicKey,
        download_all: bool,
        seeding: Option<Seeding>,
    ) -> Result<CoreInfo> {
        let core = self
            .store()
            .get_by_key(key)
            .await
            .map_err(DaemonError::store)?;
        let seeding = self.seeding_or_default(&key, seeding, core.feed().writable());
        self.update_state(move |s| {
            s.follows
                .insert(key.to_hex(), crate::state::Follow { download_all });
            s.set_seeding(key.to_hex(), seeding);
        })
        .await?;
        self.follows().forget_removed(&key);
        self.follows().keep(core.clone(), download_all);
        self.swarm().join(key, seeding);
        tracing::info!("following core {key}");
        Ok(CoreInfo::of(&core))
    }

    /// A core's details.
    pub async fn info(&self, key: &PublicKey) -> Result<CoreInfo> {
        Ok(CoreInfo::of(&self.core(key).await?))
    }

    /// Every core, sorted by key. Cores that are not open are reported as they were when
    /// last open, without keeping them open.
    pub async fn list(&self) -> Result<Vec<CoreInfo>> {
        let summaries = self.store().list().await.map_err(DaemonError::store)?;
        Ok(summaries
            .iter()
            .map(|s| match self.store().get_open(&s.key) {
                Some(core) => CoreInfo::of(&core),
                None => CoreInfo::of_summary(s),
            })
            .collect())
    }

    /// A core that can be appended to.
    pub async fn writable_core(&self, key: &PublicKey) -> Result<Core> {
        let core = self.core(key).await?;
        if !core.feed().writable() {
            return Err(DaemonError::precondition(format!(
                "core {key} is not writable here: this daemon follows it but has no secret key"
            )));
        }
        Ok(core)
    }

    /// Appends `blocks` to `core` in one signed batch.
    pub async fn append(&self, core: &Core, blocks: Vec<Bytes>) -> Result<Appended> {
        let key = core.feed().key();
        if blocks.is_empty() {
            return Err(DaemonError::invalid("no blocks: nothing to append"));
        }
        let appended = blocks.len() as u64;
        let feed = core.feed();
        let length = feed
            .append_batch(blocks)
            .await
            .map_err(|e| self.feed_error(&key, e))?;
        Ok(Appended {
            first_index: length - appended,
            appended,
            length,
            byte_length: feed.byte_len(),
        })
    }

    /// Appends the blocks of `incoming` as they arrive, in signed batches of whatever
    /// has arrived (up to 4 MiB), and acknowledges each committed batch with the totals
    /// of the stream so far. Messages are received while the previous batch is hashed
    /// and written. When `incoming` ends, what was committed stays, and a stream that
    /// appended nothing is answered with the core's length; an error of `incoming`, a
    /// failed append or the daemon stopping (after the batch being written) ends it with
    /// an error that says how many blocks were committed.
    pub fn append_stream(
        &self,
        core: Core,
        incoming: BoxStream<'static, Result<Vec<Bytes>>>,
    ) -> BoxStream<'static, Result<Appended>> {
        let (blocks_tx, mut blocks_rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(8);
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        self.spawn("receiving an append stream", async move {
            let mut incoming = incoming;
            let ended = loop {
                match incoming.next().await {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(blocks)) if blocks.is_empty() => {}
                    Some(Ok(blocks)) => {
                        if blocks_tx.send(blocks).await.is_err() {
                            break Ok(());
                        }
                    }
                }
            };
            // Sent before `blocks_tx` drops, so it is there when the appender sees the end.
            let _ = ended_tx.send(ended);
        });
        let (acks, acks_rx) = tokio::sync::mpsc::channel(4);
        let daemon = self.handle();
        self.spawn_with_stop("appending a stream", move |stop| async move {
            let feed = core.feed().clone();
            let mut total: Option<Appended> = None;
            let committed = |e: DaemonError, total: Option<Appended>| {
                let committed = total.map_or(0, |t| t.appended);
                DaemonError::new(
                    e.kind,
                    format!(
                        "{} (after committing {committed} blocks of this stream; the core has {} blocks)",
                        e.message,
                        feed.len()
                    ),
                )
            };
            loop {
                // A batch being written is finished; the next is not started.
                let next = tokio::select! {
                    next = blocks_rx.recv() => next,
                    _ = stop.cancelled() => {
                        let _ = acks.send(Err(committed(crate::daemon::stopping_error(), total))).await;
                        return;
                    }
                };
                let Some(mut batch) = next else { break };
                let mut bytes: usize = batch.iter().map(Bytes::len).sum();
                while bytes < APPEND_BATCH {
                    match blocks_rx.try_recv() {
                        Ok(more) => {
                            bytes += more.iter().map(Bytes::len).sum::<usize>();
                            batch.extend(more);
                        }
                        Err(_) => break,
                    }
                }
                match daemon.append(&core, batch).await {
                    Ok(done) => {
                        let sum = match total {
                            Some(t) => Appended {
                                first_index: t.first_index,
                                appended: t.appended + done.appended,
                                ..done
                            },
                            None => done,
                        };
                        total = Some(sum);
                        if acks.send(Ok(sum)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = acks.send(Err(committed(e, total))).await;
                        return;
                    }
                }
            }
            // A client that goes away mid-stream keeps what was committed so far.
            let ended = match ended_rx.await {
                Ok(ended) => ended,
                // The receiver was stopped: the daemon is stopping.
                Err(_) if stop.is_cancelled() => Err(crate::daemon::stopping_error()),
                Err(_) => Err(DaemonError::internal("receiving the append stream failed")),
            };
            if let Err(e) = ended {
                let _ = acks.send(Err(committed(e, total))).await;
                return;
            }
            // Nothing was appended: still answer with the length.
            if total.is_none() {
                let empty = Appended {
                    first_index: feed.len(),
                    appended: 0,
                    length: feed.len(),
                    byte_length: feed.byte_len(),
                };
                let _ = acks.send(Ok(empty)).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(acks_rx).boxed()
    }

    /// Block `index`; waits up to `timeout` for peers when it is not stored (`None`: does
    /// not wait).
    pub async fn get(
        &self,
        key: &PublicKey,
        index: u64,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        let core = self.core(key).await?;
        let feed = core.feed();
        let range = BlockRange {
            start: index,
            end: index.checked_add(1),
        };
        range.validate()?;
        let options = match timeout {
            None => {
                if index >= feed.len() {
                    return Err(DaemonError::out_of_range(format!(
                        "core {key} has {} blocks; there is no block {index}",
                        feed.len()
                    )));
                }
                GetOptions::no_wait()
            }
            Some(t) => GetOptions::timeout(t),
        };
        // Waiting for peers ends when the daemon stops.
        self.unless_stopping(async {
            feed.get_with(index, options)
                .await
                .map_err(|e| self.feed_error(key, e))
        })
        .await
    }

    /// Blocks of `range` in order, as `(index, data)`. Without `wait` (or `live`), the
    /// range must exist now and a block not stored ends the stream with NOT_FOUND;
    /// `live` keeps streaming appended blocks.
    pub async fn read(
        &self,
        key: &PublicKey,
        range: BlockRange,
        live: bool,
        wait: bool,
    ) -> Result<BoxStream<'static, Result<(u64, Bytes)>>> {
        range.validate()?;
        let core = self.core(key).await?;
        let feed = core.feed().clone();
        let waits = wait || live;
        if !waits {
            range.within(key, feed.len())?;
        }
        let options = ReadStreamOptions {
            start: range.start,
            end: range.end,
            snapshot: !live,
            live: live && range.end.is_none(),
            wait: waits,
            ..ReadStreamOptions::default()
        };
        let daemon = self.handle();
        let key = *key;
        let blocks = feed.read_stream(options).boxed();
        let stream = futures::stream::unfold(
            (blocks, range.start, Some(core)),
            move |(mut blocks, index, core)| {
                let daemon = daemon.clone();
                async move {
                    // `core` keeps the core open while the stream lives.
                    let held = core?;
                    let next = tokio::select! {
                        next = blocks.next() => next,
                        _ = held.feed().closed() => Some(Err(hypercore::Error::Closed { key })),
                    };
                    match next {
                        None => None,
                        Some(Ok(data)) => {
                            Some((Ok((index, data)), (blocks, index + 1, Some(held))))
                        }
                        Some(Err(e)) => {
                            Some((Err(daemon.feed_error(&key, e)), (blocks, index, None)))
                        }
                    }
                }
            },
        );
        Ok(self.until_stopped(stream.boxed()))
    }

    /// Downloads `range` from peers (an open end: up to the longest length known now),
    /// reporting progress every 200 ms and when done. Dropping the stream cancels it.
    pub async fn download(
        &self,
        key: &PublicKey,
        range: BlockRange,
        linear: bool,
    ) -> Result<BoxStream<'static, Result<DownloadProgress>>> {
        range.validate()?;
        let core = self.core(key).await?;
        // Open-ended: up to the longest length known now, ours or a peer's, so the
        // download has an end to report.
        let known = CoreInfo::of(&core).peer_length.max(core.feed().len());
        let end = range.end.unwrap_or(known.max(range.start));
        let selection = DownloadRange {
            start: range.start,
            end: Some(end),
            linear,
            priority: 1,
        };
        let daemon = self.handle();
        let key = *key;
        let before = core.stats().totals.downloaded_bytes;
        let progress = move |core: &Core, done: bool| DownloadProgress {
            downloaded: core.feed().downloaded(selection.start, Some(end)),
            total: end - selection.start,
            bytes: core.stats().totals.downloaded_bytes.saturating_sub(before),
            done,
        };
        let download = Box::pin(core.download(selection));
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = futures::stream::unfold(Some((core, download, tick)), move |state| {
            let daemon = daemon.clone();
            async move {
                let (core, mut download, mut tick) = state?;
                tokio::select! {
                    result = &mut download => {
                        let item = match result {
                            Ok(()) => Ok(progress(&core, true)),
                            Err(e) => Err(DaemonError::aborted(format!("download of core {key} stopped: {e}"))),
                        };
                        Some((item, None))
                    }
                    _ = core.feed().closed() => Some((Err(daemon.closed_error(&key)), None)),
                    _ = tick.tick() => {
                        let item = Ok(progress(&core, false));
                        Some((item, Some((core, download, tick))))
                    }
                }
            }
        });
        Ok(self.until_stopped(stream.boxed()))
    }

    /// Deletes the local copies of blocks in `range` (default end: the length).
    pub async fn clear(&self, key: &PublicKey, range: BlockRange) -> Result<()> {
        range.validate()?;
        let core = self.core(key).await?;
        let feed = core.feed();
        let range = BlockRange {
            start: range.start,
            end: Some(range.end.unwrap_or(feed.len().max(range.start))),
        };
        range.within(key, feed.len())?;
        feed.clear(range.start, range.end.unwrap_or(range.start))
            .await
            .map_err(|e| self.feed_error(key, e))
    }

    /// Checks every stored block; bad ones are cleared. Returns (valid, invalid).
    pub async fn audit(&self, key: &PublicKey) -> Result<(u64, u64)> {
        let core = self.core(key).await?;
        let report = core
            .feed()
            .audit()
            .await
            .map_err(|e| self.feed_error(key, e))?;
        Ok((report.valid, report.invalid))
    }

    /// Events of a core as they happen, until it is removed.
    pub async fn watch(&self, key: &PublicKey) -> Result<BoxStream<'static, Result<CoreEvent>>> {
        let core = self.core(key).await?;
        let events = core.feed().events();
        let daemon = self.handle();
        let key = *key;
        let mut poll = tokio::time::interval(PEER_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        struct Watching {
            core: Core,
            events: tokio::sync::broadcast::Receiver<hypercore::Event>,
            peers: BTreeSet<PeerKey>,
            poll: tokio::time::Interval,
            pending: Vec<CoreEvent>,
        }
        let start = Watching {
            core,
            events,
            peers: BTreeSet::new(),
            poll,
            pending: Vec::new(),
        };
        let stream = futures::stream::unfold(Some(start), move |state| {
            let daemon = daemon.clone();
            async move {
                let mut w = state?;
                loop {
                    if !w.pending.is_empty() {
                        let event = w.pending.remove(0);
                        return Some((Ok(event), Some(w)));
                    }
                    tokio::select! {
                        event = w.events.recv() => match event {
                            Ok(hypercore::Event::Close) | Err(RecvError::Closed) => {
                                return Some((Err(daemon.closed_error(&key)), None));
                            }
                            Ok(event) => w.pending.extend(core_event(event)),
                            Err(RecvError::Lagged(_)) => {}
                        },
                        // Peers come and go on connections, not as feed events: compare.
                        _ = w.poll.tick() => {
                            let now: BTreeSet<PeerKey> =
                                w.core.stats().peers.iter().map(|p| p.remote_key).collect();
                            w.pending.extend(now.difference(&w.peers).map(|p| CoreEvent::PeerAdded(*p)));
                            w.pending.extend(w.peers.difference(&now).map(|p| CoreEvent::PeerRemoved(*p)));
                            w.peers = now;
                        }
                    }
                }
            }
        });
        Ok(self.until_stopped(stream.boxed()))
    }

    /// Stops following or serving a core and deletes its local data. Streams on it end
    /// with NOT_FOUND.
    pub async fn remove(&self, key: &PublicKey) -> Result<()> {
        // Only what is stored can be removed; this also opens it, which the store needs
        // to decide whether a tombstone is due.
        drop(self.core(key).await?);
        self.follows().stop(key);
        self.swarm().leave(key);
        let hex = key.to_hex();
        self.update_state(move |s| {
            s.follows.remove(&hex);
            s.swarm.remove(&hex);
        })
        .await?;
        self.follows().mark_removed(*key);
        self.store().remove(key).await.map_err(DaemonError::store)?;
        tracing::info!("removed core {key}");
        Ok(())
    }

    /// The error for a failed feed operation on `key`; a core closed under a caller is
    /// NOT_FOUND if it was removed.
    pub(crate) fn feed_error(&self, key: &PublicKey, e: hypercore::Error) -> DaemonError {
        let error = DaemonError::feed(key, e);
        if error.kind == ErrorKind::Aborted {
            return self.closed_error(key);
        }
        error
    }

    /// Why a core closed under a stream: it was removed, or the daemon is stopping.
    pub(crate) fn closed_error(&self, key: &PublicKey) -> DaemonError {
        if self.follows().was_removed(key) {
            DaemonError::not_found(format!("core {key} was removed"))
        } else if self.is_stopping() {
            crate::daemon::stopping_error()
        } else {
            DaemonError::aborted(format!("core {key} was closed"))
        }
    }
}

fn core_event(event: hypercore::Event) -> Option<CoreEvent> {
    use hypercore::Event as E;
    Some(match event {
        E::Append {
            length,
            byte_length,
        } => CoreEvent::Appended {
            length,
            byte_length,
        },
        E::Download { index, bytes, .. } => CoreEvent::Downloaded { index, bytes },
        E::Upload { index, bytes } => CoreEvent::Uploaded { index, bytes },
        E::Clear { start, end } => CoreEvent::Cleared { start, end },
        E::Sync | E::Close => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_past_2_53_are_invalid_whatever_the_core() {
        for range in [
            BlockRange {
                start: MAX_BLOCKS + 1,
                end: None,
            },
            BlockRange {
                start: 0,
                end: Some(u64::MAX),
            },
        ] {
            assert_eq!(
                range.validate().unwrap_err().kind,
                ErrorKind::InvalidArgument
            );
        }
        let backwards = BlockRange {
            start: 5,
            end: Some(4),
        };
        assert_eq!(
            backwards.validate().unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert!(BlockRange {
            start: 0,
            end: Some(MAX_BLOCKS)
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn ranges_past_the_length_are_out_of_range() {
        let key = PublicKey([0; 32]);
        let past = BlockRange {
            start: 2,
            end: Some(11),
        };
        assert_eq!(
            past.within(&key, 10).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        let open = BlockRange {
            start: 11,
            end: None,
        };
        assert_eq!(
            open.within(&key, 10).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        assert!(BlockRange {
            start: 10,
            end: None
        }
        .within(&key, 10)
        .is_ok());
    }
}
