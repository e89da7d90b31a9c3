//! The vectors of `vectors/trie.json`, produced by running JS hypertrie 5.1.3 (the
//! generator is `gen-trie.js` beside the spec): the same operations give byte-identical
//! blocks, and the same queries the same answers.
#![allow(clippy::unwrap_used)]

use std::ops::Bound;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypertrie::{GetOptions, Hypertrie, ListOptions, Op, OpenOptions, Path, PutOptions};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/trie.json")).unwrap()
}

async fn new_trie() -> Hypertrie {
    let feed = Feed::open(MemoryStorage::new(), FeedOptions::default())
        .await
        .unwrap();
    Hypertrie::open(feed, OpenOptions::default()).await.unwrap()
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        options: PutOptions::default(),
    }
}

async fn blocks(trie: &Hypertrie) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..trie.feed().len() {
        out.push(hex::encode(trie.feed().get(i).await.unwrap()));
    }
    out
}

fn keys(nodes: &[hypertrie::Node]) -> Vec<String> {
    nodes.iter().map(|n| n.key().to_string()).collect()
}

fn expected_keys(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn paths_match_js() {
    for k in vectors()["keys"].as_array().unwrap() {
        let path = Path::new(k["key"].as_str().unwrap(), k["hidden"].as_bool().unwrap());
        let symbols: String = (0..path.len())
            .map(|i| char::from(b'0' + path.symbol(i)))
            .collect();
        assert_eq!(path.len() as u64, k["pathLength"].as_u64().unwrap(), "{k}");
        assert_eq!(symbols, k["path"].as_str().unwrap(), "{k}");
    }
}

#[tokio::test]
async fn the_js_operations_give_the_js_blocks() {
    let v = vectors();
    let trie = new_trie().await;
    assert_eq!(
        hex::encode(trie.feed().get(0).await.unwrap()),
        v["headerExamples"]["plain"]
    );

    let n = trie
        .put("hello", "world".into(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!((n.key(), n.seq), ("hello", 1));
    trie.put("a/b", "ab".into(), PutOptions::default())
        .await
        .unwrap();
    trie.put("a/c", "ac".into(), PutOptions::default())
        .await
        .unwrap();
    let n = trie
        .put("/a", "a-node".into(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(n.key(), "a");
    let hidden = PutOptions {
        hidden: true,
        flags: 0,
    };
    trie.put("secret", "s".into(), hidden).await.unwrap();
    let flagged = PutOptions {
        hidden: false,
        flags: 5,
    };
    let n = trie.put("x/y/z", "xyz".into(), flagged).await.unwrap();
    assert_eq!(n.raw_flags(), 5 << 8);
    let n = trie.del("a/b", false).await.unwrap().unwrap();
    assert_eq!((n.key(), n.seq), ("a/c", 7));
    trie.put("hello", "world2".into(), PutOptions::default())
        .await
        .unwrap();
    let batch = trie
        .batch(vec![
            put("b1", "1"),
            put("b2", "2"),
            Op::Del {
                key: "x/y/z".into(),
                hidden: false,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|n| (n.key(), n.seq)).collect::<Vec<_>>(),
        [("b1", 9), ("b2", 10), ("b1", 11)]
    );
    let if_not_exists =
        |existing: Option<&hypertrie::Node>, _: &hypertrie::Node| existing.is_none();
    let refused = trie
        .put_if("hello", "nope".into(), PutOptions::default(), if_not_exists)
        .await
        .unwrap();
    assert!(refused.is_none());
    let n = trie
        .put_if("new", "n".into(), PutOptions::default(), if_not_exists)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.seq, 12);

    let expected: Vec<String> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hex"].as_str().unwrap().to_string())
        .collect();
    let ours = blocks(&trie).await;
    for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "block {i}");
    }
    assert_eq!(ours.len(), expected.len());

    // Queries.
    let q = &v["queries"];
    let get = |key: &'static str, options: GetOptions| {
        let trie = trie.clone();
        async move { trie.get(key, options).await.unwrap() }
    };
    let check = |node: Option<hypertrie::Node>, expected: &Value| match node {
        None => assert!(expected.is_null(), "expected {expected}"),
        Some(n) => {
            assert_eq!(n.key(), expected["key"], "{expected}");
            assert_eq!(n.seq, expected["seq"].as_u64().unwrap(), "{expected}");
            let value = std::str::from_utf8(n.value.as_deref().unwrap()).unwrap();
            assert_eq!(value, expected["value"], "{expected}");
        }
    };
    for key in ["hello", "a", "a/b", "a/c", "x/y/z", "new", "secret"] {
        check(
            get(key, GetOptions::default()).await,
            &q[format!("get('{key}')")],
        );
    }
    let hidden_get = GetOptions {
        hidden: true,
        ..GetOptions::default()
    };
    check(
        get("secret", hidden_get).await,
        &q["get('secret', { hidden: true })"],
    );
    let closest = GetOptions {
        closest: true,
        ..GetOptions::default()
    };
    check(
        get("nothere", closest).await,
        &q["get('nothere', { closest: true })"],
    );

    let list = |prefix: &'static str, options: ListOptions| {
        let trie = trie.clone();
        async move { keys(&trie.list(prefix, options).await.unwrap()) }
    };
    let all = ListOptions::default();
    assert_eq!(list("", all).await, expected_keys(&q["list('')"]));
    let reverse = ListOptions {
        reverse: true,
        ..all
    };
    assert_eq!(
        list("", reverse).await,
        expected_keys(&q["list('', { reverse: true })"])
    );
    let shallow = ListOptions {
        recursive: false,
        ..all
    };
    assert_eq!(
        list("", shallow).await,
        expected_keys(&q["list('', { recursive: false })"])
    );
    assert_eq!(list("a", all).await, expected_keys(&q["list('a')"]));
    let gt = ListOptions { gt: true, ..all };
    assert_eq!(
        list("a", gt).await,
        expected_keys(&q["list('a', { gt: true })"])
    );
    let hidden = ListOptions {
        hidden: true,
        ..all
    };
    assert_eq!(
        list("", hidden).await,
        expected_keys(&q["list('', { hidden: true })"])
    );

    let old = trie.checkout(4);
    check(
        old.get("a/b", GetOptions::default()).await.unwrap(),
        &q["checkout(4).get('a/b')"],
    );
    assert_eq!(
        keys(&old.list("", all).await.unwrap()),
        expected_keys(&q["checkout(4).list('')"])
    );
    assert!(old
        .put("z", "z".into(), PutOptions::default())
        .await
        .is_err());

    let diff: Vec<Value> = trie
        .diff(5, "", hypertrie::DiffOptions::default())
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::json!({
                "key": e.key,
                "left": e.left.as_ref().map(|n| n.seq),
                "right": e.right.as_ref().map(|n| n.seq),
            })
        })
        .collect();
    assert_eq!(
        Value::Array(diff),
        q["diff(5)  (left = current, right = version 5)"]
    );

    let options = hypertrie::HistoryOptions {
        start: Bound::Included(6),
        end: Bound::Included(9),
        ..Default::default()
    };
    let history: Vec<(u64, String)> = trie
        .history(options)
        .map(|n| n.map(|n| (n.seq, n.key().to_string())))
        .try_collect()
        .await
        .unwrap();
    let expected: Vec<(u64, String)> = q["history({ gte: 6, lte: 9 })"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(history, expected);
}

#[tokio::test]
async fn deleting_the_last_key_writes_a_reset_node() {
    let v = &vectors()["resetExample"];
    let trie = new_trie().await;
    trie.put("only", "x".into(), PutOptions::default())
        .await
        .unwrap();
    trie.del("only", false).await.unwrap();
    let expected: Vec<String> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hex"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(blocks(&trie).await, expected);
    assert!(trie
        .get("only", GetOptions::default())
        .await
        .unwrap()
        .is_none());
    assert!(trie
        .list("", ListOptions::default())
        .await
        .unwrap()
        .is_empty());
    // Deleting what is not there appends nothing.
    assert!(trie.del("only", false).await.unwrap().is_none());
    assert_eq!(trie.feed().len(), 3);
}
