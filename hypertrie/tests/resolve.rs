//! Paths across mounts, with tries in a real corestore on disk: writes through a mount
//! land in the mounted trie, pinned mounts read their version, sibling names that share a
//! prefix stay outside, and a mount loop is an error, not a hang.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use hypertrie::{
    Error, GetOptions, Hypertrie, MountListOptions, MountRecord, MountableTrie, OpenOptions,
    PutOptions,
};

async fn trie(store: &Corestore, name: &str) -> Hypertrie {
    let core = store.get_named(name.as_bytes()).await.unwrap();
    Hypertrie::open(core.feed().clone(), OpenOptions::default())
        .await
        .unwrap()
}

fn record(trie: &Hypertrie, version: Option<u64>) -> MountRecord {
    MountRecord {
        key: trie.feed().key().as_bytes().to_vec(),
        local_path: String::new(),
        version,
        remote_path: None,
        hash: None,
    }
}

fn value(resolved: &hypertrie::Resolved) -> Vec<u8> {
    resolved.node.value.as_deref().unwrap().to_vec()
}

#[tokio::test]
async fn paths_resolve_through_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Corestore::open(dir.path(), CorestoreOptions::default())
        .await
        .unwrap();
    let (root, sub) = (trie(&store, "root").await, trie(&store, "sub").await);
    sub.put("x", "x in sub".into(), PutOptions::default())
        .await
        .unwrap();
    let pinned = sub.version();
    let drive = MountableTrie::new(root.clone(), store.clone());
    drive
        .mount("/sub", record(&sub, None), Bytes::new())
        .await
        .unwrap();
    drive
        .mount("old", record(&sub, Some(pinned)), Bytes::new())
        .await
        .unwrap();

    // A write below the mount point lands in the mounted trie.
    let put = drive
        .put("/sub/y", "y through root".into(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!((put.node.key(), put.inner_key.as_str()), ("sub/y", "y"));
    assert_eq!(put.trie.feed().key(), sub.feed().key());
    let direct = sub.get("y", GetOptions::default()).await.unwrap().unwrap();
    assert_eq!(&direct.value.unwrap()[..], b"y through root");
    assert!(root
        .get("sub/y", GetOptions::default())
        .await
        .unwrap()
        .is_none());

    // Reads go through the mount, the pinned one at its version.
    let got = drive.get("sub/x").await.unwrap().unwrap();
    assert_eq!(
        (got.node.key(), value(&got)),
        ("sub/x", b"x in sub".to_vec())
    );
    assert!(drive.get("sub/y").await.unwrap().is_some());
    assert!(drive.get("old/x").await.unwrap().is_some());
    assert!(
        drive.get("old/y").await.unwrap().is_none(),
        "old is pinned before y"
    );
    // The mount point itself is the outer node.
    let point = drive.get("sub").await.unwrap().unwrap();
    assert!(point.node.is_mount());
    assert_eq!(point.trie.feed().key(), root.feed().key());

    // A sibling whose name starts like the mount point stays in the root.
    drive
        .put("subway", "outside".into(), PutOptions::default())
        .await
        .unwrap();
    let outside = drive.get("subway").await.unwrap().unwrap();
    assert_eq!(outside.trie.feed().key(), root.feed().key());
    assert!(sub
        .get("way", GetOptions::default())
        .await
        .unwrap()
        .is_none());
    assert!(drive.get("sub/nothing").await.unwrap().is_none());

    // Listings enter mounts: recursively, or at the mount point.
    let keys = |list: Vec<hypertrie::Resolved>| {
        let mut keys: Vec<String> = list.iter().map(|r| r.node.key().to_string()).collect();
        keys.sort();
        keys
    };
    let recursive = MountListOptions {
        recursive: true,
        ..MountListOptions::default()
    };
    assert_eq!(
        keys(drive.list("", recursive).await.unwrap()),
        ["old", "old/x", "sub", "sub/x", "sub/y", "subway"]
    );
    let shallow = MountListOptions::default();
    assert_eq!(
        keys(drive.list("", shallow).await.unwrap()),
        ["old", "sub", "subway"]
    );
    // Listing at a mount point lists the mounted trie (its node is the outer trie's).
    assert_eq!(
        keys(drive.list("sub", shallow).await.unwrap()),
        ["sub/x", "sub/y"]
    );
    assert_eq!(
        keys(drive.list("subway", shallow).await.unwrap()),
        ["subway"]
    );
    let gt = MountListOptions {
        gt: true,
        ..shallow
    };
    assert!(drive.list("subway", gt).await.unwrap().is_empty());
    let no_mounts = MountListOptions {
        no_mounts: true,
        ..recursive
    };
    assert_eq!(
        keys(drive.list("", no_mounts).await.unwrap()),
        ["old", "sub", "subway"]
    );

    // Deletes go through the mount too.
    drive.del("sub/y").await.unwrap().unwrap();
    assert!(sub.get("y", GetOptions::default()).await.unwrap().is_none());

    // The sub trie mounts the root back: a path that keeps going round is an error.
    MountableTrie::new(sub.clone(), store.clone())
        .mount("back", record(&root, None), Bytes::new())
        .await
        .unwrap();
    let round = "sub/back/".repeat(20) + "x";
    let err = drive.get(&round).await.unwrap_err();
    assert!(matches!(err, Error::MountLoop { .. }), "{err}");
    let err = drive.list("", recursive).await.unwrap_err();
    assert!(matches!(err, Error::MountLoop { .. }), "{err}");
    // A few times round is fine.
    let twice = drive.get("sub/back/sub/x").await.unwrap().unwrap();
    assert_eq!(twice.node.key(), "sub/back/sub/x");
}
