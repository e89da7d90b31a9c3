//! Resumable diffs: a checkpoint taken after any number of entries resumes with exactly
//! the entries not yet seen (byte compatibility with JS checkpoints is checked in
//! `tests/tests/js_trie.rs`), and checkpoints that do not decode, or point past the
//! trie, are errors rather than panics.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::TryStreamExt;
use hypercore::Feed;
use hypertrie::{
    DiffCheckpoint, DiffEntry, DiffOptions, Error, Hypertrie, OpenOptions, PutOptions,
};

fn seqs(entries: &[DiffEntry]) -> Vec<(String, Option<u64>, Option<u64>)> {
    entries
        .iter()
        .map(|e| {
            let seq = |n: &Option<hypertrie::Node>| n.as_ref().map(|n| n.seq);
            (e.key.clone(), seq(&e.left), seq(&e.right))
        })
        .collect()
}

#[tokio::test]
async fn a_diff_resumes_from_a_checkpoint_after_any_entry() {
    let trie = Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap();
    for i in 0..60 {
        let key = format!("d{}/k{i}", i % 7);
        trie.put(&key, Bytes::from(key.clone()), PutOptions::default())
            .await
            .unwrap();
    }
    let old = trie.version();
    for i in (0..60).step_by(3) {
        let key = format!("d{}/k{i}", i % 7);
        trie.put(&key, Bytes::from_static(b"new"), PutOptions::default())
            .await
            .unwrap();
    }
    for i in (1..60).step_by(5) {
        trie.del(&format!("d{}/k{i}", i % 7), false).await.unwrap();
    }
    let options = DiffOptions::default();
    let full = trie.diff(old, "", options).collect().await.unwrap();
    assert!(full.len() > 20, "{} entries", full.len());
    for after in 0..=full.len() {
        let mut diff = trie.diff(old, "", options);
        let mut seen = Vec::new();
        for _ in 0..after {
            seen.push(diff.next().await.unwrap().unwrap());
        }
        let checkpoint = DiffCheckpoint::from_bytes(diff.checkpoint().as_bytes().to_vec());
        let rest: Vec<DiffEntry> = trie
            .diff_from_checkpoint(checkpoint, options)
            .into_stream()
            .try_collect()
            .await
            .unwrap();
        if after == 0 {
            // Nothing walked yet: nothing to resume (JS alike).
            assert!(rest.is_empty());
            continue;
        }
        seen.extend(rest);
        assert_eq!(seqs(&seen), seqs(&full), "resumed after {after} entries");
    }
}

#[tokio::test]
async fn bad_checkpoints_are_errors() {
    let trie = Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap();
    trie.put("a", Bytes::new(), PutOptions::default())
        .await
        .unwrap();
    let options = DiffOptions::default();
    for (bytes, expect_checkpoint_error) in [
        (vec![0x80], true), // a varint cut short
        (vec![1, 1], true), // a pair without its right seq
        (vec![1, 1, 0xff, 0xff, 0xff], true),
        (vec![1, 99, 0], false), // a seq past the trie
        (vec![0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0], false),
    ] {
        let checkpoint = DiffCheckpoint::from_bytes(bytes.clone());
        let result = trie
            .diff_from_checkpoint(checkpoint, options)
            .collect()
            .await;
        match result {
            Err(Error::Checkpoint { .. }) if expect_checkpoint_error => {}
            Err(Error::Decode { seq: 99, .. }) if !expect_checkpoint_error => {}
            // A huge path position is past every node: the pair just ends.
            Ok(entries) if bytes[0] == 0xff => assert_eq!(entries.len(), 1),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}
