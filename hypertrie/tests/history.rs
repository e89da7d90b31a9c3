//! History as JS has it: bounds (gte/gt/lte/lt), reverse, checkouts, snapshots, and live
//! histories that follow local appends and a writer replicated to a sparse copy, which
//! fetches only the blocks the history reads.
#![allow(clippy::unwrap_used)]

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypercore_protocol::ProtocolOptions;
use hypercore_replication::{replicate, ReplicateOptions, Replicator, ReplicatorOptions};
use hypertrie::{GetOptions, HistoryOptions, Hypertrie, Node, OpenOptions, PutOptions};

async fn new_trie() -> Hypertrie {
    Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap()
}

async fn put(trie: &Hypertrie, key: &str) -> Node {
    trie.put(key, Bytes::from(format!("v-{key}")), PutOptions::default())
        .await
        .unwrap()
}

async fn seqs(trie: &Hypertrie, options: HistoryOptions) -> Vec<u64> {
    trie.history(options)
        .map_ok(|n| n.seq)
        .try_collect()
        .await
        .unwrap()
}

async fn next(stream: &mut (impl Stream<Item = Result<Node, hypertrie::Error>> + Unpin)) -> Node {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no node within 10 s")
        .expect("the stream ended")
        .unwrap()
}

#[tokio::test]
async fn bounds_and_direction_select_seqs_as_js_does() {
    let trie = new_trie().await;
    assert!(seqs(&trie, HistoryOptions::default()).await.is_empty());
    for i in 0..10 {
        put(&trie, &format!("k{i}")).await;
    }
    let h = |start, end, reverse| HistoryOptions {
        start,
        end,
        reverse,
        live: false,
    };
    use Bound::{Excluded as Ex, Included as In, Unbounded as Un};
    let cases: Vec<(HistoryOptions, Vec<u64>)> = vec![
        (h(Un, Un, false), (1..=10).collect()),
        (h(Un, Un, true), (1..=10).rev().collect()),
        (h(In(3), In(6), false), vec![3, 4, 5, 6]),
        (h(Ex(3), Ex(6), false), vec![4, 5]),
        (h(In(3), Ex(6), true), vec![5, 4, 3]),
        // Below 1 is the header; past the head there is nothing.
        (h(In(0), In(2), false), vec![1, 2]),
        (h(In(8), In(100), false), vec![8, 9, 10]),
        (h(Ex(0), Ex(1), false), vec![]),
        (h(In(7), In(6), false), vec![]),
        (h(Ex(10), Un, false), vec![]),
    ];
    for (options, expected) in cases {
        assert_eq!(seqs(&trie, options).await, expected, "{options:?}");
    }
    // A checkout's history ends at its head; a snapshot's does even after more writes.
    assert_eq!(
        seqs(&trie.checkout(5), HistoryOptions::default()).await,
        vec![1, 2, 3, 4]
    );
    let snapshot = trie.snapshot();
    put(&trie, "later").await;
    assert_eq!(snapshot.version(), 11);
    assert_eq!(seqs(&snapshot, HistoryOptions::default()).await.len(), 10);
    assert!(snapshot
        .get("later", GetOptions::default())
        .await
        .unwrap()
        .is_none());
    assert!(!snapshot.writable());
    assert_eq!(seqs(&trie, HistoryOptions::default()).await.len(), 11);
}

#[tokio::test]
async fn reset_nodes_are_part_of_the_history() {
    let trie = new_trie().await;
    put(&trie, "only").await;
    let reset = trie.del("only", false).await.unwrap().unwrap();
    assert!(reset.is_reset());
    put(&trie, "again").await;
    let nodes: Vec<Node> = trie
        .history(HistoryOptions::default())
        .try_collect()
        .await
        .unwrap();
    let keys: Vec<&str> = nodes.iter().map(Node::key).collect();
    assert_eq!(keys, ["only", "", "again"]);
    assert!(nodes[1].is_reset());
}

#[tokio::test]
async fn a_live_history_follows_local_appends() {
    let trie = new_trie().await;
    put(&trie, "before").await;
    let live = HistoryOptions {
        live: true,
        ..Default::default()
    };
    let mut history = Box::pin(trie.history(live));
    assert_eq!(next(&mut history).await.key(), "before");
    // Nothing more yet: the stream waits.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), history.next())
            .await
            .is_err(),
        "a live history ended or yielded with nothing appended"
    );
    put(&trie, "one").await;
    trie.batch(vec![
        hypertrie::Op::Put {
            key: "two".into(),
            value: Bytes::new(),
            options: PutOptions::default(),
        },
        hypertrie::Op::Put {
            key: "three".into(),
            value: Bytes::new(),
            options: PutOptions::default(),
        },
    ])
    .await
    .unwrap();
    for key in ["one", "two", "three"] {
        assert_eq!(next(&mut history).await.key(), key);
    }
    // A live history with an end stops there, even from a checkout.
    let bounded = HistoryOptions {
        start: Bound::Included(3),
        end: Bound::Included(5),
        live: true,
        reverse: false,
    };
    let checkout = trie.checkout(2);
    let pending = tokio::spawn(async move { seqs(&checkout, bounded).await });
    put(&trie, "four").await;
    let got = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, vec![3, 4, 5]);
}

#[tokio::test]
async fn a_live_history_on_a_sparse_replica_fetches_only_what_it_reads() {
    let writer = new_trie().await;
    for i in 0..200 {
        put(&writer, &format!("old/{i}")).await;
    }
    let clone = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            key: Some(writer.feed().key()),
            sparse: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (a, b) = (
        Replicator::new(writer.feed().clone(), ReplicatorOptions::default()),
        Replicator::new(clone.clone(), ReplicatorOptions::default()),
    );
    let (x, y) = tokio::io::duplex(1 << 20);
    let options = |initiator| ReplicateOptions {
        protocol: ProtocolOptions {
            initiator,
            live: true,
            ..Default::default()
        },
    };
    tokio::spawn(async move { replicate(&a, x, options(true)).await });
    tokio::spawn(async move { replicate(&b, y, options(false)).await });
    clone
        .update(Some(writer.feed().len()), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let replica = Hypertrie::open(clone.clone(), OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(replica.version(), 201);

    // A bounded history reads its blocks and nothing else.
    let range = HistoryOptions {
        start: Bound::Included(100),
        end: Bound::Excluded(110),
        ..Default::default()
    };
    let got = seqs(&replica, range).await;
    assert_eq!(got, (100..110).collect::<Vec<_>>());
    assert_eq!(clone.downloaded(0, None), 10);
    assert!(clone.has_range(100, 110));

    // A live one from the head on sees the writer's new blocks as they replicate.
    let live = HistoryOptions {
        start: Bound::Included(replica.version()),
        live: true,
        ..Default::default()
    };
    let mut history = Box::pin(replica.history(live));
    let written = [put(&writer, "new/a").await, put(&writer, "new/b").await];
    for node in &written {
        let seen = next(&mut history).await;
        assert_eq!((seen.seq, seen.key()), (node.seq, node.key()));
        assert_eq!(seen.value, node.value);
    }
    assert_eq!(clone.downloaded(0, None), 12, "only the blocks read");
}
