//! Hypertrie against real JS hypertrie 5.1.3: random workloads (puts, deletes, batches,
//! mounts and unmounts as mountable-hypertrie 2.8 writes them, hidden keys, flags, empty
//! values, unicode and long names, odd slashes) run through both, which must write
//! byte-identical feeds and answer every list, get, diff and history alike.
#![allow(clippy::unwrap_used)]

use std::ops::Bound;

use bytes::Bytes;
use futures::TryStreamExt;
use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypertrie::{GetOptions, HistoryOptions, Hypertrie, ListOptions, Op, OpenOptions, PutOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const STEPS: usize = 1200;

/// Components keys are made of: short ones collide on prefixes of each other, and a few
/// are unicode, long, or empty (a `//` in the middle of a key).
fn component(rng: &mut StdRng) -> String {
    const NAMES: &[&str] = &[
        "a",
        "b",
        "c",
        "ab",
        "abc",
        "docs",
        "file.txt",
        "é",
        "日本語",
        "with space",
        "",
    ];
    match rng.gen_range(0..20) {
        0 => "x".repeat(rng.gen_range(100..300)),
        _ => NAMES[rng.gen_range(0..NAMES.len())].to_string(),
    }
}

/// A key the trie accepts: not empty once one leading `/` is dropped, and not starting
/// with `//` (JS readers would read either back as another key).
fn key(rng: &mut StdRng) -> String {
    loop {
        let depth = rng.gen_range(1..=4);
        let mut key = (0..depth)
            .map(|_| component(rng))
            .collect::<Vec<_>>()
            .join("/");
        if rng.gen_bool(0.1) {
            key.insert(0, '/');
        }
        let stored = key.strip_prefix('/').unwrap_or(&key);
        if !stored.is_empty() && !stored.starts_with('/') {
            return key;
        }
    }
}

/// A put, or a delete of a visible key. One visible key always stays and hidden keys are
/// never deleted, so no delete writes a reset node: JS hypertrie fails (a TypeError in its
/// iterator) when a listing meets one that a batch linked to, where the Rust trie skips it
/// (`hypertrie/tests/trie.rs`).
fn write(rng: &mut StdRng, known: &mut Vec<(String, bool)>, tag: &str) -> Value {
    let deletable: Vec<&(String, bool)> = known.iter().filter(|(_, hidden)| !hidden).collect();
    if !deletable.is_empty() && rng.gen_bool(0.3) {
        let (key, _) = deletable[rng.gen_range(0..deletable.len())].clone();
        return json!({ tag: "del", "key": key, "hidden": false });
    }
    let key = key(rng);
    let hidden = rng.gen_bool(0.1);
    let len = if rng.gen_bool(0.1) {
        0
    } else {
        rng.gen_range(1..40)
    };
    let value: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    known.push((key.clone(), hidden));
    json!({
        tag: "put",
        "key": key,
        "value": hex::encode(value),
        "hidden": hidden,
        "flags": if rng.gen_bool(0.2) { rng.gen_range(1..4) } else { 0 },
    })
}

/// The feed's length after `steps`, counting only what surely appended: the header and
/// every put (deletes of absent keys append nothing).
fn puts(steps: &[Value]) -> u64 {
    let put = |v: &Value, tag: &str| u64::from(v[tag] == "put");
    1 + steps
        .iter()
        .map(|s| match s["op"].as_str() {
            Some("batch") => s["ops"]
                .as_array()
                .map_or(0, |ops| ops.iter().map(|o| put(o, "type")).sum()),
            Some("mount") => 2,
            _ => put(s, "op"),
        })
        .sum::<u64>()
}

fn workload(seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known = Vec::new();
    let keep = json!({ "op": "put", "key": "keep", "value": "", "hidden": false, "flags": 0 });
    let mut steps = vec![keep];
    let mut mounts: Vec<String> = Vec::new();
    for _ in 0..STEPS {
        let step = match rng.gen_range(0..24) {
            22 => {
                let path = key(&mut rng);
                mounts.push(path.clone());
                let value: Vec<u8> = (0..rng.gen_range(0..20)).map(|_| rng.gen()).collect();
                let mut step = json!({
                    "op": "mount",
                    "path": path,
                    "key": hex::encode(rng.gen::<[u8; 32]>()),
                    "value": hex::encode(value),
                });
                if rng.gen_bool(0.3) {
                    step["version"] = json!(rng.gen_range(1..100));
                }
                step
            }
            23 => {
                // Mostly a mount made before, sometimes a path never mounted.
                let path = match mounts.is_empty() || rng.gen_bool(0.2) {
                    true => key(&mut rng),
                    false => mounts.swap_remove(rng.gen_range(0..mounts.len())),
                };
                json!({ "op": "unmount", "path": path })
            }
            0..=11 => write(&mut rng, &mut known, "op"),
            12 => {
                let n = rng.gen_range(1..6);
                let ops: Vec<Value> = (0..n)
                    .map(|_| write(&mut rng, &mut known, "type"))
                    .collect();
                json!({ "op": "batch", "ops": ops })
            }
            13 => json!({
                "op": "diff",
                // At most the length so far (a checkout past it waits for blocks).
                "version": rng.gen_range(0..=puts(&steps)),
                "prefix": if rng.gen_bool(0.5) { String::new() } else { component(&mut rng) },
                "hidden": rng.gen_bool(0.1),
            }),
            21 => json!({
                "op": "diffResume",
                "version": rng.gen_range(0..=puts(&steps)),
                "prefix": if rng.gen_bool(0.7) { String::new() } else { component(&mut rng) },
                "hidden": rng.gen_bool(0.1),
                "after": rng.gen_range(0..6),
            }),
            20 => {
                // JS reads `gte: 0` as "nothing" and `lt: 0` as "no bound" (spec
                // history quirks); the Rust trie starts at 1 and ends before 0.
                let len = puts(&steps);
                let mut step = json!({ "op": "history", "reverse": rng.gen_bool(0.3) });
                match rng.gen_range(0..3) {
                    0 => step["gte"] = json!(rng.gen_range(1..=len + 1)),
                    1 => step["gt"] = json!(rng.gen_range(0..=len)),
                    _ => {}
                }
                match rng.gen_range(0..3) {
                    0 => step["lte"] = json!(rng.gen_range(0..=len + 1)),
                    1 => step["lt"] = json!(rng.gen_range(1..=len + 1)),
                    _ => {}
                }
                step
            }
            14..=16 => {
                let prefix = if rng.gen_bool(0.3) {
                    String::new()
                } else {
                    key(&mut rng)
                };
                json!({
                    "op": "list",
                    "prefix": prefix,
                    "recursive": rng.gen_bool(0.7),
                    "reverse": rng.gen_bool(0.3),
                    "gt": rng.gen_bool(0.3),
                    "hidden": rng.gen_bool(0.1),
                })
            }
            _ => {
                let (key, hidden) = match known.is_empty() || rng.gen_bool(0.2) {
                    true => (key(&mut rng), false),
                    false => known[rng.gen_range(0..known.len())].clone(),
                };
                json!({ "op": "get", "key": key, "hidden": hidden })
            }
        };
        steps.push(step);
    }
    steps
}

fn op(step: &Value, tag: &str) -> Op {
    let key = step["key"].as_str().unwrap().to_string();
    let hidden = step["hidden"].as_bool().unwrap();
    if step[tag] == "del" {
        return Op::Del { key, hidden };
    }
    Op::Put {
        key,
        value: Bytes::from(hex::decode(step["value"].as_str().unwrap()).unwrap()),
        options: PutOptions {
            hidden,
            flags: step["flags"].as_u64().unwrap(),
        },
    }
}

/// A diff entry as `trie-tool.js` prints it: key, left seq, right seq (0 for none).
fn entry(e: &hypertrie::DiffEntry) -> Value {
    let seq = |n: &Option<hypertrie::Node>| n.as_ref().map_or(0, |n| n.seq);
    json!([e.key, seq(&e.left), seq(&e.right)])
}

fn seqs(nodes: &[hypertrie::Node]) -> Value {
    json!(nodes.iter().map(|n| n.seq).collect::<Vec<_>>())
}

/// Runs the workload through the Rust trie: its blocks (hex) and a result per step, in
/// the shape `trie-tool.js` prints.
async fn run_rust(steps: &[Value]) -> (Vec<String>, Vec<Value>) {
    let feed = Feed::open(MemoryStorage::new(), FeedOptions::default())
        .await
        .unwrap();
    let trie = Hypertrie::open(feed, OpenOptions::default()).await.unwrap();
    let mut results = Vec::new();
    for step in steps {
        let result = match step["op"].as_str().unwrap() {
            "put" | "del" => {
                let nodes = trie.batch(vec![op(step, "op")]).await.unwrap();
                seqs(&nodes)
            }
            "batch" => {
                let ops = step["ops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| op(o, "type"));
                seqs(&trie.batch(ops.collect()).await.unwrap())
            }
            "mount" => {
                let record = hypertrie::MountRecord {
                    key: hex::decode(step["key"].as_str().unwrap()).unwrap(),
                    local_path: String::new(),
                    version: step["version"].as_u64(),
                    remote_path: None,
                    hash: None,
                };
                let value = Bytes::from(hex::decode(step["value"].as_str().unwrap()).unwrap());
                let path = step["path"].as_str().unwrap();
                seqs(&trie.mount(path, record, value).await.unwrap())
            }
            "unmount" => seqs(&trie.unmount(step["path"].as_str().unwrap()).await.unwrap()),
            "list" => {
                let options = ListOptions {
                    recursive: step["recursive"].as_bool().unwrap(),
                    reverse: step["reverse"].as_bool().unwrap(),
                    gt: step["gt"].as_bool().unwrap(),
                    hidden: step["hidden"].as_bool().unwrap(),
                };
                let nodes = trie
                    .list(step["prefix"].as_str().unwrap(), options)
                    .await
                    .unwrap();
                json!(nodes.iter().map(|n| n.key()).collect::<Vec<_>>())
            }
            "diffResume" => {
                let options = hypertrie::DiffOptions {
                    hidden: step["hidden"].as_bool().unwrap(),
                    ..hypertrie::DiffOptions::default()
                };
                let prefix = step["prefix"].as_str().unwrap();
                let mut diff = trie.diff(step["version"].as_u64().unwrap(), prefix, options);
                let mut first = Vec::new();
                while first.len() < step["after"].as_u64().unwrap() as usize {
                    match diff.next().await.unwrap() {
                        Some(e) => first.push(entry(&e)),
                        None => break,
                    }
                }
                let checkpoint = diff.checkpoint();
                let rest: Vec<Value> = trie
                    .diff_from_checkpoint(checkpoint.clone(), options)
                    .collect()
                    .await
                    .unwrap()
                    .iter()
                    .map(entry)
                    .collect();
                json!([hex::encode(checkpoint.as_bytes()), first, rest])
            }
            "diff" => {
                let options = hypertrie::DiffOptions {
                    hidden: step["hidden"].as_bool().unwrap(),
                    ..hypertrie::DiffOptions::default()
                };
                let entries = trie
                    .diff(
                        step["version"].as_u64().unwrap(),
                        step["prefix"].as_str().unwrap(),
                        options,
                    )
                    .collect()
                    .await
                    .unwrap();
                json!(entries.iter().map(entry).collect::<Vec<_>>())
            }
            "history" => {
                let bound = |included: &str, excluded: &str| match (
                    step[included].as_u64(),
                    step[excluded].as_u64(),
                ) {
                    (Some(n), _) => Bound::Included(n),
                    (_, Some(n)) => Bound::Excluded(n),
                    _ => Bound::Unbounded,
                };
                let options = HistoryOptions {
                    start: bound("gte", "gt"),
                    end: bound("lte", "lt"),
                    reverse: step["reverse"].as_bool().unwrap(),
                    live: false,
                };
                let seqs: Vec<u64> = trie
                    .history(options)
                    .map_ok(|n| n.seq)
                    .try_collect()
                    .await
                    .unwrap();
                json!(seqs)
            }
            "get" => {
                let options = GetOptions {
                    hidden: step["hidden"].as_bool().unwrap(),
                    ..GetOptions::default()
                };
                let node = trie
                    .get(step["key"].as_str().unwrap(), options)
                    .await
                    .unwrap();
                json!(node.map(|n| n.seq))
            }
            other => panic!("unknown step {other}"),
        };
        results.push(result);
    }
    let mut blocks = Vec::new();
    for i in 0..trie.feed().len() {
        blocks.push(hex::encode(trie.feed().get(i).await.unwrap()));
    }
    (blocks, results)
}

async fn same_as_js(seed: u64) {
    let steps = workload(seed);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workload.json");
    std::fs::write(&file, serde_json::to_vec(&steps).unwrap()).unwrap();
    let js = hyperd_tests::run_node_json("trie-tool.js", &[file.to_str().unwrap()]).unwrap();
    let (blocks, results) = run_rust(&steps).await;
    let js_blocks: Vec<String> = js["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    let js_results = js["results"].as_array().unwrap();
    assert!(
        blocks.len() > STEPS / 2,
        "only {} blocks written",
        blocks.len()
    );
    for (i, (ours, theirs)) in blocks.iter().zip(&js_blocks).enumerate() {
        assert_eq!(ours, theirs, "seed {seed}: block {i} differs from JS");
    }
    assert_eq!(blocks.len(), js_blocks.len(), "seed {seed}: feed lengths");
    for (i, (ours, theirs)) in results.iter().zip(js_results).enumerate() {
        assert_eq!(
            ours, theirs,
            "seed {seed}: step {i} {} answered differently",
            steps[i]
        );
    }
    assert_eq!(results.len(), js_results.len());
    // The comparison covered real diffs and listings, not only empty ones.
    let nonempty = |op: &str| {
        steps
            .iter()
            .zip(&results)
            .filter(|(s, r)| s["op"] == op && r.as_array().is_some_and(|a| !a.is_empty()))
            .count()
    };
    assert!(
        nonempty("diff") >= 5,
        "seed {seed}: {} non-empty diffs",
        nonempty("diff")
    );
    // Checkpoints taken mid-diff, with entries left to resume.
    let resumed = steps
        .iter()
        .zip(&results)
        .filter(|(s, r)| {
            s["op"] == "diffResume"
                && r[0].as_str().is_some_and(|c| !c.is_empty())
                && r[2].as_array().is_some_and(|a| !a.is_empty())
        })
        .count();
    assert!(resumed >= 3, "seed {seed}: {resumed} resumed diffs");
    assert!(
        nonempty("history") >= 5,
        "seed {seed}: {} non-empty histories",
        nonempty("history")
    );
    assert!(
        nonempty("list") >= 20,
        "seed {seed}: {} non-empty lists",
        nonempty("list")
    );
    // Mounts written, and unmounts that removed one.
    assert!(
        nonempty("mount") >= 10,
        "seed {seed}: {} mounts",
        nonempty("mount")
    );
    assert!(
        nonempty("unmount") >= 3,
        "seed {seed}: {} unmounts",
        nonempty("unmount")
    );
}

#[tokio::test]
async fn random_workloads_write_the_same_feed_as_js() {
    for seed in [1, 2, 3] {
        same_as_js(seed).await;
    }
}
