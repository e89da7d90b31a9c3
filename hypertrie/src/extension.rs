//! The `hypertrie` feed extension (spec trie.md §8, JS `lib/extension.js`): when a lookup
//! on a sparse trie has to wait for a block from the network, it asks every peer to replay
//! the lookup (`get` or `iterator`, with the head it runs against); a peer that has the
//! blocks answers with a `cache` listing every seq the replay touched, and the asker
//! downloads those blocks at once instead of one round trip per step of the walk.
//!
//! One service per replicated feed answers peers and receives their `cache` answers; the
//! tries opened on that feed ([`Hypertrie::open_replicated`]) share it. Messages are
//! encoded exactly as JS encodes them. A peer without the extension ignores our
//! broadcasts (JS broadcasts to every peer too), and lookups never wait for answers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hypercore_protocol::PeerKey;
use hypercore_replication::{ExtensionSender, FeedExtension, Replicator};
use prost::Message;

use crate::{Entry, Error, GetOptions, Hypertrie, ListOptions, OpenOptions, View, Walk};

/// The extension's name on the wire.
pub const EXTENSION: &str = "hypertrie";
/// Lookups answered at once per feed; more are ignored (JS `MAX_ACTIVE`).
const MAX_ACTIVE: usize = 32;
/// Seqs per `cache` message (JS `FLUSH_BATCH`).
const FLUSH_BATCH: usize = 128;
/// Blocks pushed by a listing before it asks again (JS `MAX_PASSIVE_BATCH`).
const MAX_PASSIVE_BATCH: usize = 2048;
/// Seqs an answered listing sends at most, and blocks a received `cache` downloads at
/// most (JS `MAX_ACTIVE_BATCH`).
const MAX_ACTIVE_BATCH: usize = MAX_PASSIVE_BATCH + FLUSH_BATCH;
/// Entries of a peer's iterator checkpoint we replay at most (JS has no limit; a real
/// listing's stack is far smaller).
const MAX_CHECKPOINT_ENTRIES: usize = 4 * MAX_ACTIVE_BATCH;
/// Downloads asked for by `cache` answers at a time; later answers are dropped.
const MAX_PREFETCHES: usize = 64;
/// How long a `cache` answer's download may take before it is given up.
const PREFETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// `Extension { Cache cache = 1; Iterator iterator = 2; Get get = 3; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct Wire {
    #[prost(message, optional, tag = "1")]
    cache: Option<CacheMessage>,
    #[prost(message, optional, tag = "2")]
    iterator: Option<IteratorMessage>,
    #[prost(message, optional, tag = "3")]
    get: Option<GetMessage>,
}

/// `Get { uint64 head = 1; string key = 2; }`: JS always writes both.
#[derive(Clone, PartialEq, prost::Message)]
struct GetMessage {
    #[prost(uint64, optional, tag = "1")]
    head: Option<u64>,
    #[prost(string, optional, tag = "2")]
    key: Option<String>,
}

/// `Iterator { uint64 head = 1; string key = 2; uint64 flags = 3; bytes checkpoint = 4; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct IteratorMessage {
    #[prost(uint64, optional, tag = "1")]
    head: Option<u64>,
    #[prost(string, optional, tag = "2")]
    key: Option<String>,
    /// 1 recursive, 2 reverse, 4 gt, 8 hidden (JS's answer ignores them).
    #[prost(uint64, optional, tag = "3")]
    flags: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    checkpoint: Option<Vec<u8>>,
}

/// `Cache { required uint64 start = 1; required uint64 end = 2; repeated uint64 blocks =
/// 3 [packed]; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct CacheMessage {
    #[prost(uint64, required, tag = "1")]
    start: u64,
    #[prost(uint64, required, tag = "2")]
    end: u64,
    #[prost(uint64, repeated, packed = "true", tag = "3")]
    blocks: Vec<u64>,
}

/// What the `hypertrie` extension of a feed did ([`Hypertrie::extension_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtensionStats {
    /// `get` requests broadcast by our lookups.
    pub gets_sent: u64,
    /// `iterator` requests broadcast by our listings.
    pub iterators_sent: u64,
    /// `cache` answers received.
    pub caches_received: u64,
    /// Blocks those answers had us download (the ones not stored yet).
    pub blocks_prefetched: u64,
    /// Peers' `get` requests answered.
    pub gets_answered: u64,
    /// Peers' `iterator` requests answered.
    pub iterators_answered: u64,
    /// Seqs listed in the `cache` answers we sent.
    pub seqs_sent: u64,
}

#[derive(Default)]
struct Counters {
    gets_sent: AtomicU64,
    iterators_sent: AtomicU64,
    caches_received: AtomicU64,
    blocks_prefetched: AtomicU64,
    gets_answered: AtomicU64,
    iterators_answered: AtomicU64,
    seqs_sent: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The extension of one replicated feed, shared by the tries opened on it.
pub(crate) struct Service {
    sender: ExtensionSender,
    counters: Counters,
    /// Peers' lookups being answered.
    active: AtomicUsize,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

/// The services running, one per replicator that has the extension: a trie opened on a
/// feed whose replicator already has it joins that one (as JS tries share their feed's).
static SERVICES: Mutex<Vec<Weak<Service>>> = Mutex::new(Vec::new());

impl Service {
    fn broadcast(&self, wire: Wire) {
        self.sender.broadcast(wire.encode_to_vec().into());
    }

    fn stats(&self) -> ExtensionStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExtensionStats {
            gets_sent: load(&c.gets_sent),
            iterators_sent: load(&c.iterators_sent),
            caches_received: load(&c.caches_received),
            blocks_prefetched: load(&c.blocks_prefetched),
            gets_answered: load(&c.gets_answered),
            iterators_answered: load(&c.iterators_answered),
            seqs_sent: load(&c.seqs_sent),
        }
    }
}

/// The service of `replicator`'s feed, started if it has none; `None` if something else
/// registered an extension of this name there.
fn attach(replicator: &Replicator, trie: &Hypertrie) -> Option<Arc<Service>> {
    let mut services = SERVICES.lock().unwrap_or_else(|e| e.into_inner());
    services.retain(|s| s.strong_count() > 0);
    if let Some(sender) = replicator.extension_sender(EXTENSION) {
        return services
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.sender == sender);
    }
    let extension = replicator.register_extension(EXTENSION).ok()?;
    let service = Arc::new(Service {
        sender: extension.sender(),
        counters: Counters::default(),
        active: AtomicUsize::new(0),
    });
    services.push(Arc::downgrade(&service));
    // The service answers with a plain trie: its own lookups never ask peers.
    let plain = Hypertrie {
        extension: None,
        version: None,
        ..trie.clone()
    };
    tokio::spawn(run(service.clone(), extension, plain, replicator.clone()));
    Some(service)
}

/// Answers peers and takes their answers until the feed closes.
async fn run(
    service: Arc<Service>,
    mut extension: FeedExtension,
    trie: Hypertrie,
    replicator: Replicator,
) {
    let feed = trie.feed.clone();
    let closed = feed.closed();
    tokio::pin!(closed);
    let mut prefetches = FuturesUnordered::new();
    loop {
        tokio::select! {
            message = extension.recv() => {
                let Some((peer, payload)) = message else { break };
                // Like JS, a message that does not decode is ignored.
                let Ok(wire) = Wire::decode(payload) else { continue };
                if let Some(cache) = wire.cache {
                    let blocks = cache_blocks(&trie, cache);
                    if !blocks.is_empty() && prefetches.len() < MAX_PREFETCHES {
                        add(&service.counters.caches_received, 1);
                        add(&service.counters.blocks_prefetched, blocks.len() as u64);
                        let download = replicator.download_blocks(blocks);
                        prefetches.push(tokio::time::timeout(PREFETCH_TIMEOUT, download));
                    }
                }
                if let Some(iterator) = wire.iterator {
                    answer(&service, &trie, peer, Request::Iterator(iterator));
                }
                if let Some(get) = wire.get {
                    // JS ignores an empty key.
                    if get.key.as_ref().is_some_and(|k| !k.is_empty()) {
                        answer(&service, &trie, peer, Request::Get(get));
                    }
                }
            }
            Some(_) = prefetches.next(), if !prefetches.is_empty() => {}
            () = &mut closed => break,
        }
    }
}

/// The blocks of a `cache` answer worth downloading: at most JS's limit, not stored yet.
fn cache_blocks(trie: &Hypertrie, cache: CacheMessage) -> Vec<u64> {
    let mut blocks = cache.blocks;
    blocks.truncate(MAX_ACTIVE_BATCH);
    blocks.retain(|&b| b < hypercore::MAX_BLOCKS && !trie.feed.has(b));
    blocks
}

enum Request {
    Get(GetMessage),
    Iterator(IteratorMessage),
}

/// Answers a peer's lookup in a task of its own, unless [`MAX_ACTIVE`] are running.
fn answer(service: &Arc<Service>, trie: &Hypertrie, peer: PeerKey, request: Request) {
    let active = &service.active;
    if active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_ACTIVE).then_some(n + 1)
        })
        .is_err()
    {
        return;
    }
    let (service, trie) = (service.clone(), trie.clone());
    tokio::spawn(async move {
        let mut batch = Batch::new(&service, peer);
        match request {
            Request::Get(get) => {
                replay_get(&trie, get, &mut batch).await;
                add(&service.counters.gets_answered, 1);
            }
            Request::Iterator(iterator) => {
                replay_iterator(&trie, iterator, &mut batch).await;
                add(&service.counters.iterators_answered, 1);
            }
        }
        batch.send();
        service.active.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Replays a peer's get on the version it ran against (JS `onget`). It stops at the
/// first block not stored here; the seqs touched up to there are the answer (the missing
/// one included, as in JS).
async fn replay_get(trie: &Hypertrie, get: GetMessage, batch: &mut Batch<'_>) {
    let checkout = trie.checkout(get.head.unwrap_or(0).saturating_add(1));
    let mut view = View::new(&checkout, checkout.version());
    view.touched = Some(Vec::new());
    let key = get.key.unwrap_or_default();
    let _ = view.get(&key, GetOptions::default()).await;
    for seq in view.touched.unwrap_or_default() {
        batch.push(seq);
    }
}

/// Replays a peer's listing (JS `oniterator`): a recursive listing of its prefix on the
/// version it ran against, or, for the root, a listing of our latest version resumed from
/// its checkpoint (JS ignores the flags either way). Seqs touched while resuming are not
/// sent; the answer stops after [`MAX_ACTIVE_BATCH`] seqs or at the first block not
/// stored here.
async fn replay_iterator(trie: &Hypertrie, iterator: IteratorMessage, batch: &mut Batch<'_>) {
    let key = iterator.key.unwrap_or_default();
    let (trie, checkpoint) = if key.is_empty() {
        (trie.clone(), iterator.checkpoint)
    } else {
        (
            trie.checkout(iterator.head.unwrap_or(0).saturating_add(1)),
            None,
        )
    };
    let entries = match checkpoint.as_deref().map(decode_checkpoint) {
        None => None,
        Some(Some(entries)) => Some(entries),
        // Not a checkpoint JS could have written: no answer.
        Some(None) => return,
    };
    let mut view = View::new(&trie, trie.version());
    view.touched = Some(Vec::new());
    let Ok(mut walk) =
        Walk::open(&mut view, &key, ListOptions::default(), entries.as_deref()).await
    else {
        return;
    };
    let mut total = 0;
    if entries.is_some() {
        view.touched = Some(Vec::new());
    }
    loop {
        for seq in view
            .touched
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            batch.push(seq);
            total += 1;
        }
        if total >= MAX_ACTIVE_BATCH {
            return;
        }
        match walk.next(&mut view).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    for seq in view.touched.unwrap_or_default() {
        batch.push(seq);
    }
}

/// The `(position, seq)` pairs of an iterator checkpoint; `None` if it does not decode
/// or is too long.
fn decode_checkpoint(bytes: &[u8]) -> Option<Vec<(u64, u64)>> {
    let next = |at: &mut usize| -> Option<u64> {
        let (v, n) = varint::decode(&bytes[*at..]).ok()?;
        *at += n;
        Some(v)
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if out.len() >= MAX_CHECKPOINT_ENTRIES {
            return None;
        }
        let i = next(&mut at)?;
        out.push((i, next(&mut at)?));
    }
    Some(out)
}

/// Seqs for one peer, sent in `cache` messages of [`FLUSH_BATCH`] (JS `Batch`).
struct Batch<'a> {
    service: &'a Service,
    peer: PeerKey,
    blocks: Vec<u64>,
    start: u64,
    end: u64,
}

impl<'a> Batch<'a> {
    fn new(service: &'a Service, peer: PeerKey) -> Batch<'a> {
        Batch {
            service,
            peer,
            blocks: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    fn push(&mut self, seq: u64) {
        if self.blocks.is_empty() || seq < self.start {
            self.start = seq;
        }
        if self.blocks.is_empty() || seq >= self.end {
            self.end = seq.saturating_add(1);
        }
        self.blocks.push(seq);
        if self.blocks.len() >= FLUSH_BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.blocks.is_empty() {
            return;
        }
        let blocks = std::mem::take(&mut self.blocks);
        add(&self.service.counters.seqs_sent, blocks.len() as u64);
        let cache = CacheMessage {
            start: self.start,
            end: self.end,
            blocks,
        };
        let wire = Wire {
            cache: Some(cache),
            ..Wire::default()
        };
        self.service
            .sender
            .send(&self.peer, wire.encode_to_vec().into());
        (self.start, self.end) = (0, 0);
    }
}

/// What a lookup asks peers for once it has to wait for a block (JS `onwait`).
#[derive(Debug)]
pub(crate) enum Asking {
    /// A get: asked once.
    Get {
        service: Arc<Service>,
        head: u64,
        key: String,
        sent: bool,
    },
    /// A listing: asked again after every [`MAX_PASSIVE_BATCH`] pushed nodes, with its
    /// checkpoint once it has opened.
    Iterator {
        service: Arc<Service>,
        head: u64,
        key: String,
        flags: u64,
        missing: usize,
        opened: bool,
    },
}

impl Asking {
    /// For a get of `key` against `version` (nothing to ask on an empty trie).
    pub(crate) fn get(trie: &Hypertrie, version: u64, key: &str) -> Option<Asking> {
        Some(Asking::Get {
            service: trie.extension.clone()?,
            head: version.checked_sub(1).filter(|&h| h > 0)?,
            key: crate::path::normalize_key(key).to_string(),
            sent: false,
        })
    }

    /// For a listing of `prefix` against `version`.
    pub(crate) fn iterator(
        trie: &Hypertrie,
        version: u64,
        prefix: &str,
        options: ListOptions,
    ) -> Option<Asking> {
        let flags = u64::from(options.recursive)
            | u64::from(options.reverse) << 1
            | u64::from(options.gt) << 2
            | u64::from(options.hidden) << 3;
        Some(Asking::Iterator {
            service: trie.extension.clone()?,
            head: version.checked_sub(1).filter(|&h| h > 0)?,
            key: crate::path::normalize_key(prefix).to_string(),
            flags,
            missing: 0,
            opened: false,
        })
    }
}

impl View<'_> {
    /// Asks peers for the lookup under way if `seq` has to come from the network.
    pub(crate) fn ask_before(&mut self, seq: u64, stack: Option<&[Entry]>) {
        let Some(asking) = &mut self.asking else {
            return;
        };
        if self.trie.feed.has(seq) || self.trie.cached(seq).is_some() {
            return;
        }
        match asking {
            Asking::Get {
                service,
                head,
                key,
                sent,
            } => {
                if !*sent {
                    *sent = true;
                    let get = GetMessage {
                        head: Some(*head),
                        key: Some(key.clone()),
                    };
                    service.broadcast(Wire {
                        get: Some(get),
                        ..Wire::default()
                    });
                    add(&service.counters.gets_sent, 1);
                }
            }
            Asking::Iterator {
                service,
                head,
                key,
                flags,
                missing,
                opened,
            } => {
                if *missing == 0 {
                    *missing = MAX_PASSIVE_BATCH;
                    let iterator = IteratorMessage {
                        head: Some(*head),
                        key: Some(key.clone()),
                        flags: Some(*flags),
                        checkpoint: opened
                            .then(|| crate::encode_checkpoint(stack.unwrap_or_default())),
                    };
                    service.broadcast(Wire {
                        iterator: Some(iterator),
                        ..Wire::default()
                    });
                    add(&service.counters.iterators_sent, 1);
                }
            }
        }
    }
}

impl Hypertrie {
    /// A trie on `replicator`'s feed (a corestore [`corestore::Core`] is one) that uses
    /// the `hypertrie` extension with its peers: it answers their lookups, and its own
    /// lookups that have to wait for blocks ask peers to name every block the lookup
    /// needs, fetching them in one go. Tries opened on the same replicator share one
    /// extension.
    pub async fn open_replicated(
        replicator: &Replicator,
        options: OpenOptions,
    ) -> Result<Hypertrie, Error> {
        let mut trie = Hypertrie::open(replicator.feed().clone(), options).await?;
        trie.extension = attach(replicator, &trie);
        Ok(trie)
    }

    /// What the feed's `hypertrie` extension did so far, if this trie uses one.
    pub fn extension_stats(&self) -> Option<ExtensionStats> {
        self.extension.as_ref().map(|s| s.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes JS's encoder writes (`hypertrie/lib/messages.js`, `Extension.encode`).
    #[test]
    fn messages_encode_as_js_encodes_them() {
        let get = |head, key: &str| GetMessage {
            head: Some(head),
            key: Some(key.to_string()),
        };
        let iterator = |head, key: &str, flags, checkpoint: Option<&[u8]>| IteratorMessage {
            head: Some(head),
            key: Some(key.to_string()),
            flags: Some(flags),
            checkpoint: checkpoint.map(<[u8]>::to_vec),
        };
        let cases = [
            (
                Wire {
                    get: Some(get(5, "a/b")),
                    ..Wire::default()
                },
                "1a0708051203612f62",
            ),
            (
                Wire {
                    iterator: Some(iterator(300, "docs", 1, None)),
                    ..Wire::default()
                },
                "120b08ac021204646f63731801",
            ),
            (
                Wire {
                    iterator: Some(iterator(7, "", 13, Some(&[1, 2, 33, 4]))),
                    ..Wire::default()
                },
                "120c08071200180d220401022104",
            ),
            (
                Wire {
                    iterator: Some(iterator(7, "", 0, Some(&[]))),
                    ..Wire::default()
                },
                "12080807120018002200",
            ),
            (
                Wire {
                    cache: Some(CacheMessage {
                        start: 3,
                        end: 201,
                        blocks: vec![200, 3, 9],
                    }),
                    ..Wire::default()
                },
                "0a0b080310c9011a04c8010309",
            ),
            (
                Wire {
                    cache: Some(CacheMessage {
                        start: 0,
                        end: 0,
                        blocks: vec![],
                    }),
                    ..Wire::default()
                },
                "0a0408001000",
            ),
        ];
        for (wire, js) in cases {
            assert_eq!(hex::encode(wire.encode_to_vec()), js, "{wire:?}");
            assert_eq!(Wire::decode(&hex::decode(js).unwrap()[..]).unwrap(), wire);
        }
        // Fields JS leaves at their defaults decode as such.
        let empty = Wire::decode(&[0x1a, 0x00][..]).unwrap();
        let get = empty.get.unwrap();
        assert_eq!(
            (get.head.unwrap_or(0), get.key.unwrap_or_default()),
            (0, String::new())
        );
    }

    #[test]
    fn peers_checkpoints_decode_or_are_refused() {
        assert_eq!(decode_checkpoint(&[]), Some(vec![]));
        assert_eq!(decode_checkpoint(&[33, 0x96, 0x01]), Some(vec![(33, 150)]));
        assert_eq!(decode_checkpoint(&[33]), None);
        assert_eq!(decode_checkpoint(&[0x80]), None);
        let long: Vec<u8> = std::iter::repeat_n([1u8, 1], MAX_CHECKPOINT_ENTRIES + 1)
            .flatten()
            .collect();
        assert_eq!(decode_checkpoint(&long), None);
    }
}
