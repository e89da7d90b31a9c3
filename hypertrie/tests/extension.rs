//! The `hypertrie` extension between two Rust peers over TCP on 127.0.0.1: a sparse
//! reader's lookup asks the writer, which answers with the blocks of the whole walk; the
//! reader fetches them in one go (the same blocks a lookup without the extension fetches,
//! in far fewer round trips: measured through a proxy that delays every packet), and a
//! peer without the extension changes nothing.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypercore_protocol::ProtocolOptions;
use hypercore_replication::{replicate, ReplicateOptions, Replicator, ReplicatorOptions};
use hypertrie::{GetOptions, Hypertrie, ListOptions, Op, OpenOptions, PutOptions};
use tokio::net::{TcpListener, TcpStream};

const KEYS: usize = 2000;
/// Delay each way through the proxy: a round trip costs twice this.
const DELAY: Duration = Duration::from_millis(40);

fn options(initiator: bool) -> ReplicateOptions {
    ReplicateOptions {
        protocol: ProtocolOptions {
            initiator,
            live: true,
            ..Default::default()
        },
    }
}

/// A writer trie of `keys` keys serving on 127.0.0.1; with the extension or without.
async fn writer(keys: usize, extension: bool) -> (Hypertrie, String) {
    let feed = Feed::memory().await.unwrap();
    let replicator = Replicator::new(feed.clone(), ReplicatorOptions::default());
    let trie = if extension {
        Hypertrie::open_replicated(&replicator, OpenOptions::default()).await
    } else {
        Hypertrie::open(feed, OpenOptions::default()).await
    }
    .unwrap();
    let keys: Vec<Op> = (0..keys)
        .map(|i| {
            let key = format!("dir-{}/key-{i}", i % 10);
            Op::Put {
                value: Bytes::from(format!("value of {key}")),
                key,
                options: PutOptions::default(),
            }
        })
        .collect();
    for chunk in keys.chunks(500) {
        trie.batch(chunk.to_vec()).await.unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let replicator = replicator.clone();
            tokio::spawn(async move { replicate(&replicator, tcp, options(false)).await });
        }
    });
    (trie, addr)
}

/// A sparse reader of `writer`'s feed connected to `addr`, with the extension or without.
async fn reader(writer: &Hypertrie, addr: &str, extension: bool) -> Hypertrie {
    let feed = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            key: Some(writer.feed().key()),
            sparse: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let replicator = Replicator::new(feed.clone(), ReplicatorOptions::default());
    let trie = if extension {
        Hypertrie::open_replicated(&replicator, OpenOptions::default()).await
    } else {
        Hypertrie::open(feed.clone(), OpenOptions::default()).await
    }
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tokio::spawn(async move { replicate(&replicator, tcp, options(true)).await });
    feed.update(Some(writer.version()), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    trie
}

const KEY: &str = "dir-4/key-1234";

async fn lookup(trie: &Hypertrie) -> Duration {
    let start = Instant::now();
    let node = tokio::time::timeout(
        Duration::from_secs(30),
        trie.get(KEY, GetOptions::default()),
    )
    .await
    .expect("the lookup hangs")
    .unwrap()
    .unwrap();
    assert_eq!(
        &node.value.unwrap()[..],
        format!("value of {KEY}").as_bytes()
    );
    start.elapsed()
}

#[tokio::test]
async fn a_lookup_fetches_its_whole_path_in_one_go() {
    let (writer, addr) = writer(5 * KEYS, true).await;
    let proxy = hyperd_testkit::delay_proxy(addr, DELAY).await.unwrap();
    let rtt = 2 * DELAY;

    // Without the extension: one round trip per node on the path.
    let plain = reader(&writer, &proxy, false).await;
    let alone = lookup(&plain).await;
    let path = plain.feed().downloaded(0, None);
    assert!(path >= 5, "a path of {path} blocks");
    assert!(plain.extension_stats().is_none());

    // With it: the writer names the whole path at once.
    let asking = reader(&writer, &proxy, true).await;
    let helped = lookup(&asking).await;
    let stats = asking.extension_stats().unwrap();
    assert_eq!(stats.gets_sent, 1, "{stats:?}");
    assert!(stats.caches_received >= 1, "{stats:?}");
    // Everything but the block the lookup was already fetching when it asked.
    assert!(
        stats.blocks_prefetched + 1 >= path,
        "{stats:?}, path {path}"
    );
    assert_eq!(
        asking.feed().downloaded(0, None),
        path,
        "the same blocks as without the extension, no more"
    );
    let served = writer.extension_stats().unwrap();
    assert_eq!(served.gets_answered, 1, "{served:?}");
    assert_eq!(served.seqs_sent, path, "{served:?}");

    let trips = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    eprintln!(
        "a lookup of a {path}-block path through a {rtt:?} round trip: {alone:?} ({:.1} round trips) \
         without the extension, {helped:?} ({:.1}) with it",
        trips(alone),
        trips(helped)
    );
    // A round trip for the head (the question goes out with its request), one for the
    // rest; without the extension, one per block. At least two saved, with room for a
    // busy machine.
    assert!(
        trips(helped) + 2.0 < trips(alone),
        "{helped:?} with the extension against {alone:?} without"
    );
}

#[tokio::test]
async fn a_listing_asks_with_an_iterator() {
    let (writer, addr) = writer(KEYS, true).await;
    let plain = reader(&writer, &addr, false).await;
    let asking = reader(&writer, &addr, true).await;
    let options = ListOptions::default();
    let want = plain.list("dir-3", options).await.unwrap();
    assert_eq!(want.len(), KEYS / 10);
    let got = asking.list("dir-3", options).await.unwrap();
    let keys = |nodes: &[hypertrie::Node]| -> Vec<String> {
        nodes.iter().map(|n| n.key().to_string()).collect()
    };
    assert_eq!(keys(&got), keys(&want));
    let stats = asking.extension_stats().unwrap();
    assert!(stats.iterators_sent >= 1, "{stats:?}");
    assert!(
        stats.caches_received >= 1 && stats.blocks_prefetched > 100,
        "{stats:?}"
    );
    assert_eq!(
        asking.feed().downloaded(0, None),
        plain.feed().downloaded(0, None),
        "the listing's blocks, no more"
    );
    let served = writer.extension_stats().unwrap();
    assert_eq!(
        served.iterators_answered, stats.iterators_sent,
        "{served:?}"
    );
}

#[tokio::test]
async fn peers_without_the_extension_change_nothing() {
    // A writer without it: the reader asks, nobody answers, the lookup goes on.
    let (writer, addr) = writer(KEYS, false).await;
    let asking = reader(&writer, &addr, true).await;
    lookup(&asking).await;
    let stats = asking.extension_stats().unwrap();
    assert_eq!(
        (stats.gets_sent, stats.caches_received),
        (1, 0),
        "{stats:?}"
    );

    // Tries opened on one replicated feed share its extension.
    let feed = Feed::memory().await.unwrap();
    let replicator = Replicator::new(feed, ReplicatorOptions::default());
    let a = Hypertrie::open_replicated(&replicator, OpenOptions::default())
        .await
        .unwrap();
    let b = Hypertrie::open_replicated(&replicator, OpenOptions::default())
        .await
        .unwrap();
    assert!(a.extension_stats().is_some() && b.extension_stats().is_some());
    assert!(replicator.register_extension(hypertrie::EXTENSION).is_err());
}
