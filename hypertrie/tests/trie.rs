//! Behaviour beyond the JS vectors: reset nodes inside a trie, refused keys, checkouts,
//! watches.
#![allow(clippy::unwrap_used)]

use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypertrie::{Error, GetOptions, Hypertrie, ListOptions, Op, OpenOptions, PutOptions};

async fn new_trie() -> Hypertrie {
    let feed = Feed::open(MemoryStorage::new(), FeedOptions::default())
        .await
        .unwrap();
    Hypertrie::open(feed, OpenOptions::default()).await.unwrap()
}

#[tokio::test]
async fn a_reset_node_in_the_middle_of_the_trie_is_skipped() {
    // Within a batch, the reset node a delete writes is the head the next put links to.
    // (JS hypertrie 5.1.3 fails with a TypeError listing such a trie.)
    let trie = new_trie().await;
    let put = |key: &str| Op::Put {
        key: key.into(),
        value: key.to_string().into(),
        options: PutOptions::default(),
    };
    let del = Op::Del {
        key: "only".into(),
        hidden: false,
    };
    let nodes = trie.batch(vec![put("only"), del, put("b")]).await.unwrap();
    assert!(nodes[1].is_reset());
    assert!(nodes[2]
        .buckets
        .slots(1)
        .any(|(_, seq)| seq == nodes[1].seq));
    trie.put("c/d", "c/d".into(), PutOptions::default())
        .await
        .unwrap();
    let mut keys: Vec<String> = trie
        .list("", ListOptions::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.key().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, ["b", "c/d"]);
    assert!(trie
        .get("only", GetOptions::default())
        .await
        .unwrap()
        .is_none());
    let b = trie.get("b", GetOptions::default()).await.unwrap().unwrap();
    assert_eq!(&b.value.unwrap()[..], b"b");
}

#[tokio::test]
async fn empty_keys_are_refused_and_checkouts_are_read_only() {
    let trie = new_trie().await;
    for key in ["", "/", "//", "//a"] {
        let err = trie
            .put(key, "x".into(), PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    }
    assert_eq!(trie.feed().len(), 1, "nothing was appended");
    trie.put("k", "v1".into(), PutOptions::default())
        .await
        .unwrap();
    trie.put("k", "v2".into(), PutOptions::default())
        .await
        .unwrap();
    let old = trie.checkout(2);
    let v = old.get("k", GetOptions::default()).await.unwrap().unwrap();
    assert_eq!(&v.value.unwrap()[..], b"v1");
    let err = old
        .put("k", "v3".into(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotWritable { checkout: true, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("checkout"), "{err}");
}

#[tokio::test]
async fn a_watch_sees_changes_made_between_polls() {
    use futures::StreamExt;
    let trie = new_trie().await;
    let mut changes = Box::pin(trie.watch("news", false));
    // The first poll takes its look and waits.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), changes.next())
            .await
            .is_err()
    );
    for key in ["news/a", "news/b", "news/c"] {
        // Written while nobody polls: the next poll still sees it.
        let put = trie
            .put(key, "x".into(), PutOptions::default())
            .await
            .unwrap();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), changes.next())
            .await
            .expect("a change went unseen")
            .unwrap()
            .unwrap();
        assert_eq!(seen.seq, put.seq);
    }
}
