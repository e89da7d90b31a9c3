//! Versions across mounts, with tries in a real corestore on disk: diffs typed
//! put/del/mount/unmount (also for a prefix inside a mount), history with mount entries,
//! recursive mount listings, and watches that see changes inside mounted tries, including
//! mounts added after the watch started. Mount loops are errors, never hangs.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use corestore::{Corestore, CorestoreOptions};
use futures::{Stream, StreamExt, TryStreamExt};
use hypertrie::{
    ChangeKind, DiffOptions, Error, HistoryOptions, Hypertrie, MountHistoryEntry, MountRecord,
    MountableTrie, OpenOptions, PutOptions,
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

async fn put(trie: &Hypertrie, key: &str) {
    trie.put(key, Bytes::from(key.to_string()), PutOptions::default())
        .await
        .unwrap();
}

async fn store() -> (tempfile::TempDir, Corestore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Corestore::open(dir.path(), CorestoreOptions::default())
        .await
        .unwrap();
    (dir, store)
}

/// `(kind, key, left seq, right seq, mounted key of either side)`, sorted by key.
async fn diff(
    drive: &MountableTrie,
    version: u64,
    prefix: &str,
) -> Vec<(ChangeKind, String, u64, u64, Option<Vec<u8>>)> {
    let seq = |n: &Option<hypertrie::Node>| n.as_ref().map_or(0, |n| n.seq);
    let mut out: Vec<_> = drive
        .diff(version, prefix, DiffOptions::default())
        .map_ok(|e| {
            let mounted = e.left_mount.or(e.right_mount).map(|r| r.key);
            (e.kind, e.key, seq(&e.left), seq(&e.right), mounted)
        })
        .try_collect()
        .await
        .unwrap();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

#[tokio::test]
async fn diffs_type_mounts_and_resolve_the_trie_holding_the_prefix() {
    let (_dir, store) = store().await;
    let (root, sub, other) = (
        trie(&store, "root").await,
        trie(&store, "sub").await,
        trie(&store, "other").await,
    );
    put(&sub, "inner/a").await;
    put(&sub, "inner/b").await;
    let drive = MountableTrie::new(root.clone(), store.clone());
    put(&root, "keep").await;
    put(&root, "gone").await;
    drive
        .mount("old", record(&other, None), Bytes::new())
        .await
        .unwrap();
    let before = root.version();
    drive
        .mount("sub", record(&sub, None), Bytes::from_static(b"stat"))
        .await
        .unwrap();
    put(&root, "new").await;
    root.del("gone", false).await.unwrap();
    root.unmount("old").await.unwrap();

    let got = diff(&drive, before, "/").await;
    let kinds: Vec<(ChangeKind, &str)> = got.iter().map(|e| (e.0, e.1.as_str())).collect();
    // The delete of `gone` and the unmount rewrote neighbours: those show as puts (or,
    // for a mount node, as a mount), as in JS.
    assert!(kinds.contains(&(ChangeKind::Mount, "sub")), "{kinds:?}");
    assert!(kinds.contains(&(ChangeKind::Put, "new")), "{kinds:?}");
    assert!(kinds.contains(&(ChangeKind::Del, "gone")), "{kinds:?}");
    assert!(kinds.contains(&(ChangeKind::Unmount, "old")), "{kinds:?}");
    let mount = got.iter().find(|e| e.1 == "sub").unwrap();
    assert_eq!(mount.4.as_deref(), Some(&sub.feed().key().as_bytes()[..]));
    let unmount = got.iter().find(|e| e.1 == "old").unwrap();
    assert_eq!(
        unmount.4.as_deref(),
        Some(&other.feed().key().as_bytes()[..])
    );
    assert_eq!((unmount.2, unmount.3 > 0), (0, true));
    // Hidden mount records are not reported; the plain trie diff has the same keys.
    let plain: Vec<String> = root
        .diff(before, "", DiffOptions::default())
        .collect()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let mut plain_sorted = plain.clone();
    plain_sorted.sort();
    let keys: Vec<String> = got.iter().map(|e| e.1.clone()).collect();
    assert_eq!(keys, plain_sorted);

    // A prefix inside a mount diffs the mounted trie; keys are seen from the root. From
    // before the mount, all of it is new.
    let inside = diff(&drive, before, "/sub").await;
    let keys: Vec<(ChangeKind, &str)> = inside.iter().map(|e| (e.0, e.1.as_str())).collect();
    assert_eq!(
        keys,
        [
            (ChangeKind::Put, "sub/inner/a"),
            (ChangeKind::Put, "sub/inner/b")
        ]
    );
    // Since the mount, the (unpinned) mounted trie follows its latest version: no change
    // as seen from an older version of the root.
    assert!(diff(&drive, root.version() - 1, "sub/inner")
        .await
        .is_empty());

    // A pinned mount moved to a newer pin: the diff between the pins.
    let pinned = sub.version();
    drive
        .mount("pin", record(&sub, Some(pinned)), Bytes::new())
        .await
        .unwrap();
    let pinned_at = root.version();
    put(&sub, "inner/c").await;
    root.unmount("pin").await.unwrap();
    drive
        .mount("pin", record(&sub, Some(sub.version())), Bytes::new())
        .await
        .unwrap();
    let moved = diff(&drive, pinned_at, "pin").await;
    let keys: Vec<(ChangeKind, &str)> = moved.iter().map(|e| (e.0, e.1.as_str())).collect();
    assert_eq!(keys, [(ChangeKind::Put, "pin/inner/c")]);
}

#[tokio::test]
async fn history_types_mount_nodes_with_their_records() {
    let (_dir, store) = store().await;
    let (root, sub) = (trie(&store, "root").await, trie(&store, "sub").await);
    let drive = MountableTrie::new(root.clone(), store.clone());
    put(&root, "a").await;
    drive
        .mount("m", record(&sub, Some(3)), Bytes::new())
        .await
        .unwrap();
    put(&root, "b").await;
    let entries: Vec<MountHistoryEntry> = drive
        .history(HistoryOptions::default())
        .try_collect()
        .await
        .unwrap();
    let described: Vec<(bool, String, bool, Option<u64>)> = entries
        .iter()
        .map(|e| match e {
            MountHistoryEntry::Put(node) => (false, node.key().to_string(), node.hidden(), None),
            MountHistoryEntry::Mount { node, record } => (
                true,
                node.key().to_string(),
                node.hidden(),
                record.as_ref().unwrap().version,
            ),
        })
        .collect();
    assert_eq!(
        described,
        [
            (false, "a".to_string(), false, None),
            (true, "mounts/m".to_string(), true, Some(3)),
            (true, "m".to_string(), false, Some(3)),
            (false, "b".to_string(), false, None),
        ]
    );
}

#[tokio::test]
async fn mounts_are_listed_depth_first_and_loops_are_errors() {
    let (_dir, store) = store().await;
    let (root, s, t, u) = (
        trie(&store, "root").await,
        trie(&store, "s").await,
        trie(&store, "t").await,
        trie(&store, "u").await,
    );
    let drive = MountableTrie::new(root.clone(), store.clone());
    drive
        .mount("s", record(&s, None), Bytes::new())
        .await
        .unwrap();
    drive
        .mount("dir/t", record(&t, None), Bytes::new())
        .await
        .unwrap();
    // Written through the root: lands in s as `u`.
    drive
        .mount("s/u", record(&u, None), Bytes::new())
        .await
        .unwrap();
    let paths = |mounts: Vec<hypertrie::MountPoint>| -> Vec<String> {
        mounts.into_iter().map(|m| m.path).collect()
    };
    let mut top = paths(drive.list_mounts(false).await.unwrap());
    top.sort();
    assert_eq!(top, ["dir/t", "s"]);
    let all = drive.list_mounts(true).await.unwrap();
    let u_trie = all.iter().find(|m| m.path == "s/u").unwrap().trie.clone();
    assert_eq!(u_trie.feed().key(), u.feed().key());
    let all = paths(all);
    assert_eq!(all.len(), 3, "{all:?}");
    let at = all.iter().position(|p| p == "s").unwrap();
    assert_eq!(
        all[at + 1],
        "s/u",
        "a mount's own mounts follow it: {all:?}"
    );

    // u mounts the root: listing recursively, watching and deep lookups stop.
    MountableTrie::new(u.clone(), store.clone())
        .mount("back", record(&root, None), Bytes::new())
        .await
        .unwrap();
    assert!(matches!(
        drive.list_mounts(true).await,
        Err(Error::MountLoop { .. })
    ));
    let mut watch = Box::pin(drive.watch(""));
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch over a mount loop hangs")
        .unwrap();
    assert!(matches!(first, Err(Error::MountLoop { .. })), "{first:?}");
    assert!(
        watch.next().await.is_none(),
        "the watch ends after its error"
    );
    let deep = "s/u/back/s/u/back/s/u/back/s/u/back/s/u/back/s/u/back/x";
    let far = drive.diff(1, deep, DiffOptions::default());
    let result: Result<Vec<_>, Error> = far.try_collect().await;
    assert!(matches!(result, Err(Error::MountLoop { .. })));
}

/// Waits for the next change (failing after 10 s).
async fn changed(watch: &mut (impl Stream<Item = Result<(), Error>> + Unpin)) {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no change seen within 10 s")
        .unwrap()
        .unwrap();
}

/// Fails if the watch reports a change within 300 ms.
async fn quiet(watch: &mut (impl Stream<Item = Result<(), Error>> + Unpin)) {
    let next = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(next.is_err(), "unexpected change: {next:?}");
}

#[tokio::test]
async fn watches_see_changes_inside_mounts_and_mounts_added_later() {
    let (_dir, store) = store().await;
    let (root, sub, later) = (
        trie(&store, "root").await,
        trie(&store, "sub").await,
        trie(&store, "later").await,
    );
    let drive = MountableTrie::new(root.clone(), store.clone());
    drive
        .mount("docs/sub", record(&sub, None), Bytes::new())
        .await
        .unwrap();
    let mut docs = Box::pin(drive.watch("docs"));
    let mut inside = Box::pin(drive.watch("/docs/sub/deep"));
    // Let both take their first look before anything changes.
    quiet(&mut docs).await;
    quiet(&mut inside).await;

    put(&root, "elsewhere").await;
    quiet(&mut docs).await;
    put(&sub, "deep/file").await;
    changed(&mut docs).await;
    changed(&mut inside).await;
    put(&sub, "shallow").await;
    changed(&mut docs).await;
    quiet(&mut inside).await;

    // A mount added under the prefix is a change, and so is what is written in it then.
    drive
        .mount("docs/later", record(&later, None), Bytes::new())
        .await
        .unwrap();
    changed(&mut docs).await;
    quiet(&mut docs).await;
    put(&later, "x").await;
    changed(&mut docs).await;

    // Through a checkout, the watch follows the latest version.
    let mut old = Box::pin(drive.checkout(2).watch("docs"));
    quiet(&mut old).await;
    put(&later, "y").await;
    changed(&mut old).await;
}
