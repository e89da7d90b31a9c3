//! Test-only: 64-bit SipHash collisions, forced with the `#collide:<group>:<name>`
//! components of test builds (`path::collide`). Seeded random workloads of keys made of
//! many colliding components run against a plain model (a `BTreeMap`): every get, delete,
//! listing and diff must agree with it. The same puts and lookups run through real JS
//! hypertrie (`trie-tool.js --collide`, the same forced hash) must write the same nodes and
//! answer alike.
//!
//! Where JS is wrong with collisions, the Rust trie is right instead and says so where it
//! departs: a delete (JS ignores collision chains: a no-op, or both keys gone), a diff (JS
//! never splits a pair of colliding strings, and may loop forever), and the order of a
//! collision chain in a node (JS's depends on its read cache; ours is the head, then the
//! copied chain in slot order, which is JS's whenever those reads finish in order).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use hypercore::Feed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{DiffOptions, GetOptions, Hypertrie, ListOptions, Op, OpenOptions, PutOptions};

/// Components: two groups of mutually colliding names, and two ordinary ones.
const COMPONENTS: &[&str] = &[
    "#collide:a:1",
    "#collide:a:2",
    "#collide:a:3",
    "#collide:a:4",
    "#collide:b:1",
    "#collide:b:2",
    "x",
    "y",
];

fn key(rng: &mut StdRng) -> String {
    let depth = rng.gen_range(1..=3);
    (0..depth)
        .map(|_| COMPONENTS[rng.gen_range(0..COMPONENTS.len())])
        .collect::<Vec<_>>()
        .join("/")
}

/// A prefix of whole components (or the root).
fn prefix(rng: &mut StdRng) -> String {
    match rng.gen_range(0..3) {
        0 => String::new(),
        n => (0..n)
            .map(|_| COMPONENTS[rng.gen_range(0..COMPONENTS.len())])
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// Whether `key` is `prefix` or below it.
fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The model: key → (seq of its node, value).
type Model = BTreeMap<String, (u64, Bytes)>;

async fn check_get(trie: &Hypertrie, model: &Model, key: &str) {
    let node = trie.get(key, GetOptions::default()).await.unwrap();
    let got = node.map(|n| (n.key().to_string(), n.seq, n.value.unwrap_or_default()));
    let want = model
        .get(key)
        .map(|(s, v)| (key.to_string(), *s, v.clone()));
    assert_eq!(got, want, "get({key:?})");
}

async fn check_list(trie: &Hypertrie, model: &Model, prefix: &str, recursive: bool) {
    let options = ListOptions {
        recursive,
        ..ListOptions::default()
    };
    let nodes = trie.list(prefix, options).await.unwrap();
    let depth = if prefix.is_empty() {
        0
    } else {
        prefix.split('/').count()
    };
    // Recursive: every key below; one level: one key per direct child (or the prefix).
    let child =
        |key: &str| -> String { key.split('/').take(depth + 1).collect::<Vec<_>>().join("/") };
    let want: BTreeSet<String> = model
        .keys()
        .filter(|k| under(k, prefix))
        .map(|k| if recursive { k.clone() } else { child(k) })
        .collect();
    let got: Vec<String> = nodes
        .iter()
        .map(|n| {
            if recursive {
                n.key().to_string()
            } else {
                child(n.key())
            }
        })
        .collect();
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got_set, want, "list({prefix:?}, recursive {recursive})");
    assert_eq!(
        got.len(),
        want.len(),
        "duplicates in list({prefix:?}): {got:?}"
    );
    for node in &nodes {
        assert_eq!(
            model.get(node.key()).map(|e| e.0),
            Some(node.seq),
            "list({prefix:?}) returned an old node"
        );
    }
}

async fn check_diff(trie: &Hypertrie, model: &Model, old: &Model, version: u64, prefix: &str) {
    let entries = trie
        .diff(version, prefix, DiffOptions::default())
        .collect()
        .await
        .unwrap();
    let seq = |n: &Option<crate::Node>| n.as_ref().map(|n| n.seq);
    let mut got: Vec<(String, Option<u64>, Option<u64>)> = entries
        .iter()
        .map(|e| (e.key.clone(), seq(&e.left), seq(&e.right)))
        .collect();
    got.sort();
    let keys: BTreeSet<&String> = model.keys().chain(old.keys()).collect();
    let want: Vec<(String, Option<u64>, Option<u64>)> = keys
        .into_iter()
        .filter(|k| under(k, prefix))
        .map(|k| {
            (
                k.clone(),
                model.get(k).map(|e| e.0),
                old.get(k).map(|e| e.0),
            )
        })
        .filter(|(_, l, r)| l != r)
        .collect();
    assert_eq!(got, want, "diff({version}, {prefix:?})");
}

async fn workload(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let trie = Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap();
    let mut model = Model::new();
    // The model at each version (index = version; versions 0 and 1 are empty).
    let mut versions: Vec<Model> = vec![Model::new(), Model::new()];
    for step in 0..steps {
        match rng.gen_range(0..10) {
            0..=3 => {
                let key = key(&mut rng);
                let value = Bytes::from(format!("{step}"));
                let node = trie
                    .put(&key, value.clone(), PutOptions::default())
                    .await
                    .unwrap();
                model.insert(key, (node.seq, value));
                versions.push(model.clone());
            }
            4 => {
                let ops: Vec<(String, Bytes)> = (0..rng.gen_range(2..5))
                    .map(|i| (key(&mut rng), Bytes::from(format!("{step}.{i}"))))
                    .collect();
                let batch = ops
                    .iter()
                    .map(|(key, value)| Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                        options: PutOptions::default(),
                    })
                    .collect();
                let nodes = trie.batch(batch).await.unwrap();
                for (node, (key, value)) in nodes.iter().zip(ops) {
                    model.insert(key, (node.seq, value));
                    versions.push(model.clone());
                }
            }
            5 | 6 => {
                // Mostly keys that exist.
                let key = match model.keys().nth(rng.gen_range(0..model.len().max(1))) {
                    Some(k) if rng.gen_bool(0.8) => k.clone(),
                    _ => key(&mut rng),
                };
                let node = trie.del(&key, false).await.unwrap();
                match model.remove(&key) {
                    None => assert!(node.is_none(), "step {step}: deleted absent {key:?}"),
                    Some(_) => {
                        let node =
                            node.unwrap_or_else(|| panic!("step {step}: {key:?} not deleted"));
                        if node.is_reset() {
                            assert!(model.is_empty(), "step {step}: reset with keys left");
                        } else {
                            // A neighbour rewritten with its value as it was.
                            let entry = model.get_mut(node.key()).unwrap_or_else(|| {
                                panic!("step {step}: del rewrote {:?}, not a key", node.key())
                            });
                            assert_eq!(node.value.as_ref(), Some(&entry.1));
                            entry.0 = node.seq;
                        }
                        versions.push(model.clone());
                    }
                }
            }
            7 => check_get(&trie, &model, &key(&mut rng)).await,
            8 => check_list(&trie, &model, &prefix(&mut rng), rng.gen_bool(0.6)).await,
            _ => {
                let version = rng.gen_range(1..versions.len() as u64);
                let old = versions[version as usize].clone();
                check_diff(&trie, &model, &old, version, &prefix(&mut rng)).await;
            }
        }
        assert_eq!(versions.len() as u64, trie.version() + 1);
        // Every key the model holds reads back.
        if step % 25 == 0 {
            for key in model.keys() {
                check_get(&trie, &model, key).await;
            }
            check_list(&trie, &model, "", true).await;
        }
    }
}

#[test]
fn the_hook_forces_collisions_only_on_demand() {
    let path = |k: &str| crate::Path::new(k, false);
    let (a, b) = (path("#collide:g:one"), path("#collide:g:two"));
    assert_ne!(a.key(), b.key());
    assert!((0..a.len()).all(|i| a.symbol(i) == b.symbol(i)));
    assert!(a.differs(&b, 32));
    let (x, y) = (path("#collide:g"), path("plain"));
    assert!((0..x.len()).all(|i| x.symbol(i) == a.symbol(i)));
    assert!((1..33).any(|i| y.symbol(i) != a.symbol(i)));
}

#[tokio::test]
async fn colliding_keys_agree_with_a_model() {
    for seed in 0..8 {
        workload(seed, 400).await;
    }
}

/// A workload of puts and lookups in the shape `tests/interop/trie-tool.js` reads: what
/// JS does right with colliding keys (its deletes and diffs are wrong there: see
/// `View::del` and `diff::untangle`).
fn js_workload(seed: u64, steps: usize) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut rng = StdRng::seed_from_u64(seed);
    let put = |rng: &mut StdRng, tag: &str, step: usize| {
        let value = hex::encode(format!("{step}"));
        json!({ tag: "put", "key": key(rng), "value": value, "hidden": false, "flags": 0 })
    };
    (0..steps)
        .map(|step| match rng.gen_range(0..10) {
            0..=4 => put(&mut rng, "op", step),
            5 => {
                let ops: Vec<_> = (0..rng.gen_range(2..5))
                    .map(|_| put(&mut rng, "type", step))
                    .collect();
                json!({ "op": "batch", "ops": ops })
            }
            6 | 7 => json!({ "op": "get", "key": key(&mut rng), "hidden": false }),
            _ => json!({
                "op": "list",
                "prefix": prefix(&mut rng),
                "recursive": rng.gen_bool(0.6),
                "reverse": rng.gen_bool(0.3),
                "gt": rng.gen_bool(0.2),
                "hidden": false,
            }),
        })
        .collect()
}

/// Runs a [`js_workload`] here: the blocks (hex) and a result per step, as
/// `trie-tool.js` prints them.
async fn run_here(steps: &[serde_json::Value]) -> (Vec<String>, Vec<serde_json::Value>) {
    use serde_json::json;
    let trie = Hypertrie::open(Feed::memory().await.unwrap(), OpenOptions::default())
        .await
        .unwrap();
    let put = |s: &serde_json::Value| Op::Put {
        key: s["key"].as_str().unwrap().to_string(),
        value: hex::decode(s["value"].as_str().unwrap()).unwrap().into(),
        options: PutOptions::default(),
    };
    let mut results = Vec::new();
    for s in steps {
        let text = |f: &str| s[f].as_str().unwrap().to_string();
        let flag = |f: &str| s[f].as_bool().unwrap();
        let result = match s["op"].as_str().unwrap() {
            "put" | "batch" => {
                let ops = match s["ops"].as_array() {
                    Some(ops) => ops.iter().map(put).collect(),
                    None => vec![put(s)],
                };
                let nodes = trie.batch(ops).await.unwrap();
                json!(nodes.iter().map(|n| n.seq).collect::<Vec<_>>())
            }
            "get" => {
                let node = trie.get(&text("key"), GetOptions::default()).await.unwrap();
                json!(node.map(|n| n.seq))
            }
            _ => {
                let options = ListOptions {
                    recursive: flag("recursive"),
                    reverse: flag("reverse"),
                    gt: flag("gt"),
                    hidden: false,
                };
                let nodes = trie.list(&text("prefix"), options).await.unwrap();
                json!(nodes
                    .iter()
                    .map(|n| n.key().to_string())
                    .collect::<Vec<_>>())
            }
        };
        results.push(result);
    }
    let mut blocks = Vec::new();
    for i in 0..trie.feed().len() {
        blocks.push(hex::encode(trie.feed().get(i).await.unwrap()));
    }
    (blocks, results)
}

/// Real JS hypertrie on the same workload, with the same forced collisions.
fn run_js(steps: &[serde_json::Value]) -> serde_json::Value {
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop");
    assert!(
        interop.join("node_modules/hypertrie").exists(),
        "the JS interop harness is not installed: run `npm ci --prefix {}`",
        interop.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workload.json");
    std::fs::write(&file, serde_json::to_vec(steps).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg(interop.join("trie-tool.js"))
        .arg(&file)
        .arg("--collide")
        .current_dir(&interop)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed: {stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// A block's node with its buckets as sets: key, value, flags and the sorted
/// `(position, symbol, seq)` pointers.
type Pointers = (String, Option<Bytes>, u64, Vec<(usize, usize, u64)>);

fn pointers(block: &str, seq: usize) -> Pointers {
    let node = crate::Node::decode(seq as u64, &hex::decode(block).unwrap()).unwrap();
    let mut slots: Vec<(usize, usize, u64)> = (0..node.path.len())
        .flat_map(|i| node.buckets.slots(i).map(move |(s, seq)| (i, s % 5, seq)))
        .collect();
    slots.sort();
    (node.key().to_string(), node.value, node.flags, slots)
}

#[tokio::test]
async fn colliding_puts_and_lookups_agree_with_js() {
    for seed in 0..4 {
        let steps = js_workload(seed, 150);
        let js = run_js(&steps);
        let (blocks, results) = run_here(&steps).await;
        let js_blocks: Vec<String> = serde_json::from_value(js["blocks"].clone()).unwrap();
        assert_eq!(blocks.len(), js_blocks.len(), "seed {seed}: feed lengths");
        let mut reordered = 0;
        for (i, (ours, theirs)) in blocks.iter().zip(&js_blocks).enumerate().skip(1) {
            if ours != theirs {
                // Only the order within a collision chain may differ: JS pushes a
                // chain's nodes as their loads finish, which depends on its read cache.
                assert_eq!(
                    pointers(ours, i),
                    pointers(theirs, i),
                    "seed {seed}: block {i}"
                );
                reordered += 1;
            }
        }
        assert!(
            reordered * 10 < blocks.len(),
            "seed {seed}: {reordered} of {} blocks ordered differently",
            blocks.len()
        );
        let js_results = js["results"].as_array().unwrap();
        assert_eq!(results.len(), js_results.len());
        for (i, (ours, theirs)) in results.iter().zip(js_results).enumerate() {
            assert_eq!(ours, theirs, "seed {seed}: step {i} {}", steps[i]);
        }
    }
}
