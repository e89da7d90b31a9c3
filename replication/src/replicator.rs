//! The replication state of one feed, shared by all its peers: what to download (ranges
//! with priorities, plus whatever local callers wait for), which blocks are already
//! requested from which peer, counters, and the feed's extensions.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hypercore::Feed;
use hypercore_protocol::{Channel, ChannelSender, PeerKey};
use tokio::sync::{mpsc, oneshot, watch};

use crate::peer::{self, PeerId};

/// Most requests in flight per peer for download ranges.
pub const DEFAULT_MAX_REQUESTS: usize = 64;
/// Fewest requests in flight per peer for ranges (JS's fixed `maxRequests`), unless
/// `max_requests` is lower.
pub const MIN_WINDOW: usize = 16;
/// Bytes in flight per peer the request window aims for: on loopback, 16 requests of
/// 64 KiB (JS's window) leave the link idle between answers.
pub const WINDOW_BYTES: u64 = 4 << 20;

/// Options for replicating a feed.
#[derive(Clone, Debug)]
pub struct ReplicatorOptions {
    /// Serve requests (default true).
    pub upload: bool,
    /// Download; default: unless the feed is writable, like JS.
    pub download: Option<bool>,
    /// Most requests in flight per peer for download ranges. The window holds about
    /// [`WINDOW_BYTES`] of blocks (judged by the feed's average block size), at least
    /// [`MIN_WINDOW`] requests and at most this many. Explicit waits (`get`, `update`,
    /// `seek`) may use 16 more.
    pub max_requests: usize,
    /// Ask peers to acknowledge every block we upload.
    pub ack: bool,
    /// Drop a peer that answers none of our requests for this long.
    pub request_timeout: Duration,
    /// When a peer announces a longer feed, fetch the signed proof of its last block (no
    /// data), so a sparse copy knows the length peers have without downloading. JS does
    /// this only when asked (`update`); default false.
    pub follow_length: bool,
}

impl Default for ReplicatorOptions {
    fn default() -> Self {
        ReplicatorOptions {
            upload: true,
            download: None,
            max_requests: DEFAULT_MAX_REQUESTS,
            ack: false,
            request_timeout: hypercore_protocol::DEFAULT_TIMEOUT,
            follow_length: false,
        }
    }
}

/// A range of blocks to download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadRange {
    /// First block.
    pub start: u64,
    /// End (exclusive); `None` means up to the longest length any peer announced.
    pub end: Option<u64>,
    /// Fetch in order instead of randomly.
    pub linear: bool,
    /// Higher numbers are fetched first.
    pub priority: i32,
}

impl DownloadRange {
    /// Blocks `[start, end)`, random order, priority 0.
    pub fn new(start: u64, end: u64) -> Self {
        DownloadRange {
            start,
            end: Some(end),
            linear: false,
            priority: 0,
        }
    }
}

/// Uploaded and downloaded blocks and bytes.
#[derive(Debug, Default)]
pub struct Counters {
    uploaded_blocks: AtomicU64,
    uploaded_bytes: AtomicU64,
    downloaded_blocks: AtomicU64,
    downloaded_bytes: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Blocks sent.
    pub uploaded_blocks: u64,
    /// Bytes of blocks sent.
    pub uploaded_bytes: u64,
    /// Blocks received and stored.
    pub downloaded_blocks: u64,
    /// Bytes of blocks received and stored.
    pub downloaded_bytes: u64,
}

impl Counters {
    pub(crate) fn upload(&self, bytes: usize) {
        self.uploaded_blocks.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn download(&self, bytes: usize) {
        self.downloaded_blocks.fetch_add(1, Ordering::Relaxed);
        self.downloaded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Traffic {
        Traffic {
            uploaded_blocks: self.uploaded_blocks.load(Ordering::Relaxed),
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
            downloaded_blocks: self.downloaded_blocks.load(Ordering::Relaxed),
            downloaded_bytes: self.downloaded_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One peer of this feed, as the stats report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's static Noise key.
    pub remote_key: PeerKey,
    /// The length the peer announced.
    pub remote_length: u64,
    /// Traffic with this peer.
    pub traffic: Traffic,
}

/// Replication statistics of a feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// All traffic of this feed since the replicator was created.
    pub totals: Traffic,
    /// Connected peers.
    pub peers: Vec<PeerStats>,
}

pub(crate) struct Selection {
    pub id: u64,
    pub range: DownloadRange,
    /// Only these blocks of the range (sorted, distinct), not all of it.
    pub blocks: Option<Vec<u64>>,
    /// The "download everything" selection of a non-sparse feed.
    pub is_default: bool,
    pub done: Vec<oneshot::Sender<()>>,
}

pub(crate) struct PeerEntry {
    pub remote_key: PeerKey,
    pub remote_length: Option<u64>,
    pub counters: Arc<Counters>,
    pub sender: ChannelSender,
    pub remote_extensions: Vec<String>,
}

pub(crate) struct State {
    pub selections: Vec<Selection>,
    /// Blocks requested from some peer, and from which.
    pub reserved: HashMap<u64, PeerId>,
    pub peers: HashMap<PeerId, PeerEntry>,
    next_id: u64,
    /// The default selection existed and completed (non-live replication may end).
    pub default_done: bool,
    pub extensions: Vec<(String, mpsc::Sender<(PeerKey, Bytes)>)>,
}

pub(crate) struct Shared {
    pub feed: Feed,
    pub options: ReplicatorOptions,
    state: Mutex<State>,
    /// Bumped when peers should look for work again (new ranges, released requests).
    pub wake: watch::Sender<u64>,
    /// Bumped when the extension names change.
    pub extensions_version: watch::Sender<u64>,
    pub totals: Counters,
}

/// Replicates one feed with any number of peers on any number of connections.
/// Cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("feed", &self.shared.feed.key())
            .finish_non_exhaustive()
    }
}

impl State {
    /// A fresh id for a selection or a peer.
    pub(crate) fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug; keep going with the data as it is
        // rather than taking every peer of the feed down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests in flight per peer for ranges: about [`WINDOW_BYTES`] of blocks.
    pub(crate) fn window(&self) -> usize {
        let (len, bytes) = (self.feed.len(), self.feed.byte_len());
        let average = bytes.checked_div(len).unwrap_or(0);
        let by_bytes = (WINDOW_BYTES / average.max(1))
            .clamp(MIN_WINDOW as u64, DEFAULT_MAX_REQUESTS as u64 * 4)
            as usize;
        by_bytes.min(self.options.max_requests)
    }

    pub(crate) fn wake_peers(&self) {
        self.wake.send_modify(|v| *v += 1);
    }

    /// The longest length any peer announced, if any did.
    pub(crate) fn max_remote_length(state: &State) -> Option<u64> {
        state.peers.values().filter_map(|p| p.remote_length).max()
    }

    /// The end of a selection right now (`None` while unknown).
    pub(crate) fn selection_end(&self, state: &State, sel: &Selection) -> Option<u64> {
        match sel.range.end {
            Some(e) => Some(e),
            None => Self::max_remote_length(state).map(|r| r.max(self.feed.len())),
        }
    }

    /// Resolves finished selections. `live` selections without an end never finish.
    pub(crate) fn check_selections(&self, state: &mut State, live: bool) {
        let mut finished_default = false;
        let mut i = 0;
        while i < state.selections.len() {
            let sel = &state.selections[i];
            let end = self.selection_end(state, sel);
            let done = match (&sel.blocks, end) {
                (Some(blocks), _) => blocks.iter().all(|&b| self.feed.has(b)),
                _ if live && sel.range.end.is_none() => false,
                (None, Some(end)) => {
                    self.feed.len() >= end && self.feed.has_range(sel.range.start, end)
                }
                (None, None) => false,
            };
            if done {
                let sel = state.selections.remove(i);
                finished_default |= sel.is_default;
                for tx in sel.done {
                    let _ = tx.send(());
                }
            } else {
                i += 1;
            }
        }
        if finished_default {
            state.default_done = true;
        }
    }

    fn add_selection(
        &self,
        range: DownloadRange,
        blocks: Option<Vec<u64>>,
        is_default: bool,
    ) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        let id = state.alloc_id();
        state.selections.push(Selection {
            id,
            range,
            blocks,
            is_default,
            done: vec![tx],
        });
        // Highest priority first; among equals, oldest first.
        state
            .selections
            .sort_by_key(|s| (std::cmp::Reverse(s.range.priority), s.id));
        if is_default {
            state.default_done = false;
        }
        // A range already stored is done now, peers or not. Open-ended ranges wait for a
        // peer to say how long the feed is.
        self.check_selections(&mut state, true);
        drop(state);
        self.wake_peers();
        (id, rx)
    }

    pub(crate) fn remove_selection(&self, id: u64) {
        self.lock().selections.retain(|s| s.id != id);
        self.wake_peers();
    }
}

impl Replicator {
    /// Prepares to replicate `feed`. A non-sparse feed that downloads wants everything.
    pub fn new(feed: Feed, options: ReplicatorOptions) -> Replicator {
        let shared = Arc::new(Shared {
            feed,
            options,
            state: Mutex::new(State {
                selections: Vec::new(),
                reserved: HashMap::new(),
                peers: HashMap::new(),
                next_id: 1,
                default_done: false,
                extensions: Vec::new(),
            }),
            wake: watch::Sender::new(0),
            extensions_version: watch::Sender::new(0),
            totals: Counters::default(),
        });
        let r = Replicator { shared };
        r.ensure_default_selection();
        r
    }

    /// The feed.
    pub fn feed(&self) -> &Feed {
        &self.shared.feed
    }

    pub(crate) fn downloading(&self) -> bool {
        self.shared
            .options
            .download
            .unwrap_or(!self.shared.feed.writable())
    }

    /// Non-sparse feeds always hold a "download everything" selection while replicating
    /// (JS re-adds it for every new replication stream).
    fn ensure_default_selection(&self) {
        if self.shared.feed.is_sparse() || !self.downloading() {
            return;
        }
        if self.shared.lock().selections.iter().any(|s| s.is_default) {
            return;
        }
        let range = DownloadRange {
            start: 0,
            end: None,
            linear: false,
            priority: 0,
        };
        let (_, rx) = self.shared.add_selection(range, None, true);
        drop(rx);
    }

    /// Replicates the feed with the peer on the other end of `channel` until the channel
    /// closes, and says how it ended. `live` keeps it open after both sides are done.
    pub fn attach(
        &self,
        channel: Channel,
        live: bool,
    ) -> tokio::task::JoinHandle<Result<crate::PeerEnd, crate::Error>> {
        self.ensure_default_selection();
        let shared = self.shared.clone();
        let downloading = self.downloading();
        let registered = peer::register(&shared, channel);
        tokio::spawn(peer::run(shared, registered, live, downloading))
    }

    /// Downloads a range; the returned future resolves when every block of it is stored.
    /// Dropping it cancels the range (blocks already requested still arrive).
    pub fn download(&self, range: DownloadRange) -> Download {
        let (id, rx) = self.shared.add_selection(range, None, false);
        Download {
            shared: self.shared.clone(),
            id,
            rx,
        }
    }

    /// Downloads just `blocks` (JS `feed.download({blocks})`), as a range of priority 0
    /// fetched in order; resolves when all are stored (at once if there are none).
    pub fn download_blocks(&self, mut blocks: Vec<u64>) -> Download {
        blocks.sort_unstable();
        blocks.dedup();
        let range = DownloadRange {
            start: blocks.first().copied().unwrap_or(0),
            end: Some(blocks.last().map_or(0, |&b| b.saturating_add(1))),
            linear: true,
            priority: 0,
        };
        let (id, rx) = self.shared.add_selection(range, Some(blocks), false);
        Download {
            shared: self.shared.clone(),
            id,
            rx,
        }
    }

    /// JS `update({ifAvailable: true})`, which readers of a trie run before each lookup:
    /// waits until the feed is as long as the longest length its connected peers
    /// announced (fetching the proof of the new last block, no data), and returns the
    /// length. Peers connected but not yet heard from are waited for; a peer that leaves
    /// is not, and nothing is waited for longer than `limit` in all. A writable feed
    /// returns at once.
    pub async fn update_if_available(&self, limit: Duration) -> u64 {
        let feed = &self.shared.feed;
        if feed.writable() {
            return feed.len();
        }
        let deadline = tokio::time::Instant::now() + limit;
        let mut wake = self.shared.wake.subscribe();
        loop {
            wake.borrow_and_update();
            let (silent, target) = {
                let state = self.shared.lock();
                let silent = state.peers.values().any(|p| p.remote_length.is_none());
                (silent, Shared::max_remote_length(&state).unwrap_or(0))
            };
            let len = feed.len();
            if !silent && target <= len {
                return len;
            }
            let grow = async {
                if target <= len {
                    return std::future::pending().await;
                }
                feed.update(Some(target), None).await.is_ok()
            };
            tokio::select! {
                grown = grow => if !grown {
                    return feed.len(); // closed
                },
                changed = wake.changed() => if changed.is_err() {
                    return feed.len();
                },
                _ = tokio::time::sleep_until(deadline) => return feed.len(),
            }
        }
    }

    /// Traffic totals and per-peer figures.
    pub fn stats(&self) -> Stats {
        let state = self.shared.lock();
        let mut peers: Vec<PeerStats> = state
            .peers
            .values()
            .map(|p| PeerStats {
                remote_key: p.remote_key,
                remote_length: p.remote_length.unwrap_or(0),
                traffic: p.counters.snapshot(),
            })
            .collect();
        peers.sort_by_key(|p| p.remote_key);
        Stats {
            totals: self.shared.totals.snapshot(),
            peers,
        }
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.shared.lock().peers.len()
    }

    /// Waits until at least `n` peers are connected.
    pub async fn wait_for_peers(&self, n: usize) {
        let mut wake = self.shared.wake.subscribe();
        while self.peer_count() < n {
            if wake.changed().await.is_err() {
                return;
            }
        }
    }

    /// A sender for the extension `name`, if it is registered (by whoever holds its
    /// [`FeedExtension`]).
    pub fn extension_sender(&self, name: &str) -> Option<ExtensionSender> {
        let registered = self
            .shared
            .lock()
            .extensions
            .iter()
            .any(|(n, inbox)| n == name && !inbox.is_closed());
        registered.then(|| ExtensionSender {
            shared: self.shared.clone(),
            name: name.to_string(),
        })
    }

    /// Registers a feed extension: messages of this name from any peer arrive on the
    /// returned handle, which also sends them. A name is free again once its handle is
    /// dropped.
    pub fn register_extension(&self, name: &str) -> Result<FeedExtension, crate::Error> {
        let (tx, rx) = mpsc::channel(256);
        {
            let mut state = self.shared.lock();
            state
                .extensions
                .retain(|(n, inbox)| n != name || !inbox.is_closed());
            if state.extensions.iter().any(|(n, _)| n == name) {
                return Err(crate::Error::Extension(format!(
                    "{name} is already registered"
                )));
            }
            state.extensions.push((name.to_string(), tx));
            state.extensions.sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.shared.extensions_version.send_modify(|v| *v += 1);
        Ok(FeedExtension {
            sender: ExtensionSender {
                shared: self.shared.clone(),
                name: name.to_string(),
            },
            inbox: rx,
        })
    }
}

/// A pending [`Replicator::download`].
pub struct Download {
    shared: Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<()>,
}

impl Future for Download {
    type Output = Result<(), crate::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| crate::Error::Cancelled))
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.shared.remove_selection(self.id);
    }
}

/// A feed extension registered with [`Replicator::register_extension`].
pub struct FeedExtension {
    sender: ExtensionSender,
    inbox: mpsc::Receiver<(PeerKey, Bytes)>,
}

impl std::fmt::Debug for FeedExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedExtension")
            .field("name", &self.sender.name)
            .finish()
    }
}

/// Sends the messages of a registered feed extension; cheap to clone. Two senders are
/// equal when they send for the same extension of the same replicator.
#[derive(Clone)]
pub struct ExtensionSender {
    shared: Arc<Shared>,
    name: String,
}

impl std::fmt::Debug for ExtensionSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtensionSender")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for ExtensionSender {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared) && self.name == other.name
    }
}

impl Eq for ExtensionSender {}

impl ExtensionSender {
    fn id(&self, state: &State) -> Option<u64> {
        state
            .extensions
            .iter()
            .position(|(n, _)| *n == self.name)
            .map(|i| i as u64)
    }

    /// Sends a message to one peer; false if that peer is not connected.
    pub fn send(&self, peer: &PeerKey, payload: Bytes) -> bool {
        let state = self.shared.lock();
        let Some(id) = self.id(&state) else {
            return false;
        };
        state
            .peers
            .values()
            .filter(|p| p.remote_key == *peer)
            .any(|p| {
                p.sender
                    .send(hypercore_protocol::message::Message::Extension {
                        id,
                        payload: payload.clone(),
                    })
                    .is_ok()
            })
    }

    /// Sends a message to every connected peer; returns how many it went to.
    pub fn broadcast(&self, payload: Bytes) -> usize {
        let state = self.shared.lock();
        let Some(id) = self.id(&state) else { return 0 };
        state
            .peers
            .values()
            .filter(|p| {
                p.sender
                    .send(hypercore_protocol::message::Message::Extension {
                        id,
                        payload: payload.clone(),
                    })
                    .is_ok()
            })
            .count()
    }

    /// Whether `peer` announced this extension.
    pub fn remote_supports(&self, peer: &PeerKey) -> bool {
        self.shared
            .lock()
            .peers
            .values()
            .any(|p| p.remote_key == *peer && p.remote_extensions.contains(&self.name))
    }
}

impl FeedExtension {
    /// A sender for this extension, for other tasks.
    pub fn sender(&self) -> ExtensionSender {
        self.sender.clone()
    }

    /// Sends a message to one peer; false if that peer is not connected.
    pub fn send(&self, peer: &PeerKey, payload: Bytes) -> bool {
        self.sender.send(peer, payload)
    }

    /// Sends a message to every connected peer; returns how many it went to.
    pub fn broadcast(&self, payload: Bytes) -> usize {
        self.sender.broadcast(payload)
    }

    /// Whether `peer` announced this extension.
    pub fn remote_supports(&self, peer: &PeerKey) -> bool {
        self.sender.remote_supports(peer)
    }

    /// The next message: who sent it and its payload.
    pub async fn recv(&mut self) -> Option<(PeerKey, Bytes)> {
        self.inbox.recv().await
    }
}
