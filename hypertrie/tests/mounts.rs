//! Mount records and mount nodes as mountable-hypertrie 2.8 writes them: the records and
//! flags of `testkit/vectors/drive.json` (a JS hyperdrive with a latest and a pinned mount).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use hypercore::Feed;
use hypertrie::{GetOptions, Hypertrie, MountRecord, Node, OpenOptions};
use prost::Message;
use serde_json::Value;

fn js_block(seq: u64) -> Node {
    let v: Value = serde_json::from_str(hyperd_testkit::DRIVE_VECTORS).unwrap();
    let block = &v["metadataFeed"]["blocks"][seq as usize];
    assert_eq!(block["seq"], seq);
    Node::decode(seq, &hex::decode(block["hex"].as_str().unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn mounts_write_the_records_and_flags_js_writes() {
    let trie = Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap();
    let (latest, pinned) = (js_block(10), js_block(12));
    let sub_key = MountRecord::decode(latest.value.clone().unwrap())
        .unwrap()
        .key;
    for (path, version, js_record) in [("/sub", None, &latest), ("sub-v2/", Some(2), &pinned)] {
        let record = MountRecord {
            key: sub_key.clone(),
            local_path: String::new(),
            version,
            remote_path: None,
            hash: None,
        };
        let stat = Bytes::from_static(b"the mount's stat");
        let nodes = trie.mount(path, record, stat.clone()).await.unwrap();
        let (hidden, visible) = (&nodes[0], &nodes[1]);
        assert_eq!(hidden.key(), js_record.key());
        assert_eq!(hidden.value, js_record.value, "the record of {path}");
        assert_eq!(hidden.raw_flags(), 257);
        assert_eq!(visible.key(), js_record.key().trim_start_matches("mounts/"));
        assert_eq!(
            (visible.raw_flags(), visible.value.clone()),
            (256, Some(stat))
        );
        assert!(hidden.is_mount() && visible.is_mount());
    }
    let mounts = trie.mounts().await.unwrap();
    let mut points: Vec<(String, Option<u64>)> = mounts
        .iter()
        .map(|m| (m.local_path.clone(), m.version))
        .collect();
    points.sort();
    assert_eq!(points, [("sub".into(), None), ("sub-v2".into(), Some(2))]);

    trie.unmount("sub").await.unwrap();
    assert!(trie
        .get("sub", GetOptions::default())
        .await
        .unwrap()
        .is_none());
    assert_eq!(trie.mounts().await.unwrap().len(), 1);

    // Bad mount points and keys are refused with the path named.
    let record = |key: Vec<u8>| MountRecord {
        key,
        local_path: String::new(),
        version: None,
        remote_path: None,
        hash: None,
    };
    for (path, key) in [
        ("/", sub_key.clone()),
        ("a/../b", sub_key.clone()),
        ("x", vec![1; 31]),
    ] {
        let err = trie
            .mount(path, record(key), Bytes::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, hypertrie::Error::InvalidKey { .. }),
            "{path}: {err}"
        );
    }
}
