//! A trie read from a sparse replica fetches only the blocks a lookup walks through, and
//! a watch on the replica sees the writer's changes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hypercore::Feed;
use hypercore_replication::{replicate, ReplicateOptions, Replicator, ReplicatorOptions};
use hyperd_testkit::{memory_clone, protocol_options};
use hypertrie::{GetOptions, Hypertrie, ListOptions, Op, OpenOptions, PutOptions};

const KEYS: usize = 2000;

fn put(key: String) -> Op {
    Op::Put {
        value: Bytes::from(format!("value of {key}")),
        key,
        options: PutOptions::default(),
    }
}

/// A writer trie of `KEYS` keys and a sparse replica of its feed, replicating live.
async fn writer_and_replica() -> (Hypertrie, Hypertrie) {
    let writer = Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap();
    let keys: Vec<Op> = (0..KEYS)
        .map(|i| put(format!("dir-{}/key-{i}", i % 10)))
        .collect();
    for chunk in keys.chunks(100) {
        writer.batch(chunk.to_vec()).await.unwrap();
    }
    let clone = memory_clone(writer.feed().key(), true).await.unwrap();
    let (a, b) = (
        Replicator::new(writer.feed().clone(), ReplicatorOptions::default()),
        Replicator::new(clone.clone(), ReplicatorOptions::default()),
    );
    let (x, y) = tokio::io::duplex(1 << 20);
    let options = |initiator| ReplicateOptions {
        protocol: protocol_options(initiator, true),
    };
    tokio::spawn(async move { replicate(&a, x, options(true)).await });
    tokio::spawn(async move { replicate(&b, y, options(false)).await });
    clone
        .update(Some(writer.feed().len()), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let replica = Hypertrie::open(clone, OpenOptions::default())
        .await
        .unwrap();
    (writer, replica)
}

#[tokio::test]
async fn a_lookup_on_a_sparse_replica_fetches_only_its_path() {
    let (writer, replica) = writer_and_replica().await;
    assert_eq!(replica.version(), writer.version());
    assert!(!replica.writable());
    let node = replica
        .get("dir-4/key-1234", GetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&node.value.unwrap()[..], b"value of dir-4/key-1234");
    let fetched = replica.feed().downloaded(0, None);
    // The walk visits one node per branch it takes: a handful of 2,001 blocks.
    eprintln!(
        "one lookup fetched {fetched} of {} blocks",
        replica.version()
    );
    assert!(fetched <= 20, "{fetched} blocks fetched for one lookup");
    // A one-level listing of the root fetches what it walks, not the whole feed.
    let dirs = replica
        .list(
            "",
            ListOptions {
                recursive: false,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dirs.len(), 10);
    let fetched = replica.feed().downloaded(0, None);
    eprintln!("then a one-level listing: {fetched} blocks in all");
    assert!(
        fetched < 400,
        "{fetched} blocks fetched for a one-level listing"
    );
}

#[tokio::test]
async fn a_watch_on_a_replica_sees_the_writers_changes() {
    let (writer, replica) = writer_and_replica().await;
    let mut changes = Box::pin(replica.watch("news", false));
    // Changes elsewhere are not reported.
    writer
        .put("elsewhere", "x".into(), PutOptions::default())
        .await
        .unwrap();
    let put = writer
        .put("news/today", "rain".into(), PutOptions::default())
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("no change within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!((change.key(), change.seq), ("news/today", put.seq));
    let put = writer
        .put("news/tomorrow", "sun".into(), PutOptions::default())
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("no second change within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(change.seq, put.seq);
}
