//! Drive versions against real JS hyperdrive 10.21 on the same corestore directory: JS
//! writes a drive (files, deletes, mounts, an unmount, a pinned mount, a symlink, metadata,
//! a tag); our `Drive::diff` against every version must report what JS's
//! `createDiffStream` reports, in the same order, and our `Drive::history` must report,
//! version by version, what JS's diff of each version against the one before reports
//! (without the neighbour a delete rewrites).
#![allow(clippy::unwrap_used)]

use corestore::{Corestore, CorestoreOptions};
use futures::TryStreamExt;
use hyperdrive::{Drive, DriveChange, DriveOptions, HistoryEntry, HistoryOptions};
use serde_json::{json, Value};

fn js(args: &[&str]) -> Value {
    let out = hyperd_tests::run_node_json("drive-versions.js", args).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    out
}

/// A change in the shape `drive-versions.js` prints JS's diff entries.
fn as_js(change: &DriveChange) -> Value {
    match change {
        DriveChange::Put {
            path,
            stat,
            seq,
            previous,
        } => {
            let mut entry = json!({
                "type": "put",
                "name": path,
                "seq": seq,
                "stat": {
                    "mode": stat.mode,
                    "size": stat.size,
                    "blocks": stat.blocks,
                    "offset": stat.offset,
                    "byteOffset": stat.byte_offset,
                    "mtime": stat.mtime,
                    "ctime": stat.ctime,
                },
            });
            if let Some(link) = &stat.linkname {
                entry["stat"]["linkname"] = json!(link);
            }
            if let Some(previous) = previous {
                entry["previousSeq"] = json!(previous);
            }
            entry
        }
        DriveChange::Del { path, previous } => {
            json!({ "type": "del", "name": path, "previousSeq": previous })
        }
        // JS replaces a mount node by its record: no seq, no previous seq.
        DriveChange::Mount { path, key, .. } => {
            json!({ "type": "mount", "name": path, "mountKey": key.to_hex() })
        }
        DriveChange::Unmount { path, .. } => json!({ "type": "unmount", "name": path }),
    }
}

async fn diff(drive: &Drive, version: u64, prefix: &str) -> Vec<Value> {
    let changes: Vec<DriveChange> = drive.diff(version, prefix).try_collect().await.unwrap();
    changes.iter().map(as_js).collect()
}

#[tokio::test]
async fn diffs_and_history_match_js_on_a_js_written_drive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let written = js(&["populate", "--dir", path]);
    let root = js(&["diff", "--dir", path]);
    let docs = js(&["diff", "--dir", path, "--prefix", "/docs"]);

    let store = Corestore::open(dir.path(), CorestoreOptions::default())
        .await
        .unwrap();
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    assert_eq!(drive.key().to_hex(), written["key"].as_str().unwrap());
    let version = drive.version();
    assert_eq!(version, written["version"].as_u64().unwrap());

    let (mut kinds, mut entries) = (std::collections::BTreeSet::new(), 0);
    for v in 0..=version {
        let ours = diff(&drive, v, "/").await;
        assert_eq!(
            Value::Array(ours.clone()),
            root["diffs"][v as usize],
            "diff({v}, '/')"
        );
        let ours_docs = diff(&drive, v, "/docs").await;
        assert_eq!(
            Value::Array(ours_docs),
            docs["diffs"][v as usize],
            "diff({v}, '/docs')"
        );
        for e in ours {
            kinds.insert(e["type"].as_str().unwrap().to_string());
            entries += 1;
        }
    }
    assert_eq!(
        kinds.len(),
        4,
        "puts, dels, mounts and unmounts compared: {kinds:?}"
    );
    assert!(entries > 50, "{entries} entries compared");

    // History: per version, JS's diff against the version before, less the neighbour a
    // delete rewrites (the entry whose node is that version's block).
    let history: Vec<HistoryEntry> = drive
        .history(HistoryOptions::default())
        .try_collect()
        .await
        .unwrap();
    for v in 2..=version {
        let step = root["steps"][v as usize].as_array().unwrap();
        let deletes = step
            .iter()
            .any(|e| e["type"] == "del" || e["type"] == "unmount");
        let expected: Vec<&Value> = step
            .iter()
            .filter(|e| !(deletes && e["seq"].as_u64() == Some(v - 1)))
            .collect();
        let ours: Vec<Value> = history
            .iter()
            .filter(|h| h.version == v)
            .map(|h| as_js(&h.change))
            .collect();
        let ours: Vec<&Value> = ours.iter().collect();
        assert_eq!(ours, expected, "history at version {v}");
    }
    assert!(history.len() >= 12, "{} changes", history.len());
    drop(drive);
    store.close().await.unwrap();
}
