#![allow(clippy::unwrap_used)]
//! Compatibility with JS corestore 5.8.2 (on hypercore 9.12.0 and hypercore-protocol 8.0.7),
//! using the real JS code (`tests/interop/store-tool.js`):
//!
//! * a store directory written by JS opens in Rust: same master key, same keys for the same
//!   names, named cores and an explicit key pair core writable, data readable; Rust
//!   appends, and JS reads the appends and appends again;
//! * the reverse: a directory written by Rust (named, default, random-name and key pair
//!   cores) opens in JS, every core writable, and JS's appends are read back by Rust;
//! * with the same master key, names and appends, both write byte-identical files;
//! * one TCP connection replicating several cores between a Rust and a JS store, in both
//!   directions: cores loaded before the connection, loaded after it started, stored on
//!   the serving side but not loaded (opened from disk when the remote asks), and cores
//!   only one side has (refused with a Close, without any error).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use corestore::{Corestore, CorestoreOptions, MasterKey, Replicator};
use hypercore::crypto::{from_hex, to_hex};
use hypercore::{KeyPair, PublicKey};
use hyperd_testkit::init_tracing;
use hyperd_tests::js_peer::{connect_store, serve_store};
use hyperd_tests::{node, run_node_json};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const LIMIT: Duration = Duration::from_secs(30);

fn tool(args: &[&str]) -> Value {
    let out = run_node_json("store-tool.js", args).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    out
}

/// What the tool writes as block `i` of the core named `name`.
fn block(name: &str, i: usize) -> String {
    format!("{name} block {i}")
}

fn blocks(name: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| block(name, i)).collect()
}

fn key_of(v: &Value) -> PublicKey {
    v["key"].as_str().unwrap().parse().unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

async fn read_all(core: &Replicator) -> Vec<String> {
    let feed = core.feed();
    let mut out = Vec::new();
    for i in 0..feed.len() {
        let b = tokio::time::timeout(LIMIT, feed.get(i))
            .await
            .unwrap()
            .unwrap();
        out.push(String::from_utf8(b.to_vec()).unwrap());
    }
    out
}

async fn append_blocks(core: &Replicator, name: &str, n: usize) {
    for i in core.feed().len() as usize..n {
        core.feed().append(block(name, i)).await.unwrap();
    }
}

fn seed(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn key_pair(byte: u8) -> KeyPair {
    KeyPair::from_seed(&[byte; 32])
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_written_store_opens_in_rust() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let kp_seed = seed(0x11);
    let written = tool(&[
        "write",
        "--dir",
        dir_str(&dir),
        "--cores",
        "alpha:3,beta:0,default:2",
        "--key-pair-seed",
        &kp_seed,
        "--key-pair-count",
        "2",
    ]);
    let cores = written["cores"].as_array().unwrap();
    assert_eq!(cores.len(), 4);

    let store = Corestore::open(&dir, CorestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        to_hex(store.master_key().as_bytes()),
        written["masterKey"].as_str().unwrap()
    );
    for (name, n, js) in [("alpha", 3, &cores[0]), ("beta", 0, &cores[1])] {
        let core = store.get_named(name.as_bytes()).await.unwrap();
        assert_eq!(core.feed().key(), key_of(js), "{name}");
        assert!(core.feed().writable(), "{name}");
        assert_eq!(read_all(&core).await, blocks(name, n), "{name}");
    }
    let default = store.default_core().await.unwrap();
    assert_eq!(default.feed().key(), key_of(&cores[2]));
    assert_eq!(read_all(&default).await, blocks("default", 2));
    // The key pair core, by key: writable through its stored secret key.
    let kp = key_pair(0x11);
    assert_eq!(key_of(&cores[3]), kp.public);
    let pair = store.get_by_key(kp.public).await.unwrap();
    assert!(pair.feed().writable());
    assert_eq!(read_all(&pair).await, blocks("key pair", 2));

    let stored = store.stored().await.unwrap();
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|c| c.writable));
    let mut names: Vec<Option<String>> = stored
        .iter()
        .map(|c| c.name.clone().map(|n| String::from_utf8(n).unwrap()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            None,
            Some("alpha".into()),
            Some("beta".into()),
            Some("default".into())
        ]
    );

    // Rust appends to a named core (opened by key, as after a restart) and the pair.
    let alpha_key = key_of(&cores[0]);
    store.close().await.unwrap();
    let store = Corestore::open(&dir, CorestoreOptions::default())
        .await
        .unwrap();
    let alpha = store.get_by_key(alpha_key).await.unwrap();
    assert!(alpha.feed().writable());
    alpha.feed().append("rust was here").await.unwrap();
    store
        .get_by_key(kp.public)
        .await
        .unwrap()
        .feed()
        .append("rust pair")
        .await
        .unwrap();
    store.close().await.unwrap();
    // No secret key was written for the named cores.
    let alpha_dir = dir.join(corestore::core_path(&alpha_key.discovery_key()));
    assert!(!alpha_dir.join("secret_key").exists());

    // JS reads Rust's appends and is still the writer.
    let read = tool(&[
        "read",
        "--dir",
        dir_str(&dir),
        "--names",
        "alpha",
        "--keys",
        &kp.public.to_hex(),
        "--append",
        "js again",
    ]);
    let rc = read["cores"].as_array().unwrap();
    let mut expected = blocks("alpha", 3);
    expected.push("rust was here".into());
    assert_eq!(strings(&rc[0]["blocks"]), expected);
    assert_eq!(rc[0]["writable"], true);
    assert_eq!(rc[0]["appendedLength"], 5);
    let mut expected_pair = blocks("key pair", 2);
    expected_pair.push("rust pair".into());
    assert_eq!(strings(&rc[1]["blocks"]), expected_pair);
    assert_eq!(rc[1]["appendedLength"], 4);

    // And Rust reads JS's.
    let store = Corestore::open(&dir, CorestoreOptions::default())
        .await
        .unwrap();
    let alpha = store.get_named(b"alpha").await.unwrap();
    assert_eq!(alpha.feed().len(), 5);
    assert_eq!(&alpha.feed().get(4).await.unwrap()[..], b"js again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_written_store_opens_in_js() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (alpha, default, random, pair) = {
        let store = Corestore::open(&dir, CorestoreOptions::default())
            .await
            .unwrap();
        let alpha = store.get_named(b"alpha").await.unwrap();
        append_blocks(&alpha, "alpha", 3).await;
        let default = store.default_core().await.unwrap();
        append_blocks(&default, "default", 1).await;
        let random = store.create().await.unwrap();
        append_blocks(&random, "random", 2).await;
        let pair = store.get_with_key_pair(key_pair(0x22)).await.unwrap();
        append_blocks(&pair, "pair", 1).await;
        store.close().await.unwrap();
        (
            alpha.feed().key(),
            default.feed().key(),
            random.feed().key(),
            pair.feed().key(),
        )
    };
    let keys = [random, pair].map(|k| k.to_hex()).join(",");
    let read = tool(&[
        "read",
        "--dir",
        dir_str(&dir),
        "--names",
        "alpha,default",
        "--keys",
        &keys,
        "--append",
        "from js",
    ]);
    let rc = read["cores"].as_array().unwrap();
    for (js, key, name, n) in [
        (&rc[0], alpha, "alpha", 3),
        (&rc[1], default, "default", 1),
        (&rc[2], random, "random", 2),
        (&rc[3], pair, "pair", 1),
    ] {
        assert_eq!(key_of(js), key, "{name}");
        assert_eq!(js["writable"], true, "{name}: {js}");
        assert_eq!(strings(&js["blocks"]), blocks(name, n), "{name}");
        assert_eq!(js["appendedLength"], n + 1, "{name}");
    }

    // Rust reads what JS appended, and still writes.
    let store = Corestore::open(&dir, CorestoreOptions::default())
        .await
        .unwrap();
    for key in [alpha, default, random, pair] {
        let core = store.get_by_key(key).await.unwrap();
        assert!(core.feed().writable());
        let len = core.feed().len();
        assert_eq!(&core.feed().get(len - 1).await.unwrap()[..], b"from js");
        core.feed().append("rust again").await.unwrap();
    }
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                walk(root, &r, out);
            } else {
                out.insert(
                    r.to_str().unwrap().to_string(),
                    std::fs::read(root.join(&r)).unwrap(),
                );
            }
        }
    }
    walk(dir, Path::new(""), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_names_and_appends_give_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let master = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let js_dir = tmp.path().join("js");
    tool(&[
        "write",
        "--dir",
        dir_str(&js_dir),
        "--master-key",
        master,
        "--cores",
        "hello:2,world:0,default:5",
        "--key-pair-seed",
        &seed(0x33),
        "--key-pair-count",
        "3",
    ]);
    let rust_dir = tmp.path().join("rust");
    let store = Corestore::open_with_master_key(
        &rust_dir,
        MasterKey::from_slice(&from_hex(master).unwrap()).unwrap(),
        CorestoreOptions::default(),
    )
    .await
    .unwrap();
    for (name, n) in [("hello", 2), ("world", 0), ("default", 5)] {
        append_blocks(&store.get_named(name.as_bytes()).await.unwrap(), name, n).await;
    }
    let pair = store.get_with_key_pair(key_pair(0x33)).await.unwrap();
    append_blocks(&pair, "key pair", 3).await;
    store.close().await.unwrap();

    let js = files_of(&js_dir);
    let rust = files_of(&rust_dir);
    assert!(!js.contains_key("master_key") && !rust.contains_key("master_key"));
    assert!(js.keys().any(|k| k.ends_with("/name")));
    for (path, bytes) in &js {
        assert_eq!(
            rust.get(path).map(|b| to_hex(b)),
            Some(to_hex(bytes)),
            "{path}"
        );
    }
    // JS creates `data` on the first append; Rust's hypercore creates it empty at once.
    for (path, bytes) in &rust {
        if !js.contains_key(path) {
            assert!(path.ends_with("/data") && bytes.is_empty(), "{path}");
        }
    }
}

/// Whether a replication connection ended by a reset (how a hang-up may arrive).
fn is_reset(e: &anyhow::Error) -> bool {
    e.downcast_ref::<corestore::Error>().is_some_and(|e| {
        matches!(e, corestore::Error::Connection { .. }) && e.to_string().contains("reset")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_serves_several_cores_to_a_js_store() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let store = Corestore::open(tmp.path().join("rust"), CorestoreOptions::default())
        .await
        .unwrap();
    let mut keys = Vec::new();
    for (name, n) in [("c0", 3), ("c1", 2), ("c2", 4), ("c3", 1)] {
        let core = store.get_named(name.as_bytes()).await.unwrap();
        append_blocks(&core, name, n).await;
        keys.push(core.feed().key());
    }
    // c2: stored, not loaded (opened from disk when JS asks); c3: JS never asks (JS
    // refuses it).
    store.close_core(&keys[2]).await.unwrap();
    let missing = KeyPair::generate().public;
    let (port, mut ended) = serve_store(store.clone()).await.unwrap();

    let clone_dir = tmp.path().join("js");
    let (port, cores, late) = (
        port.to_string(),
        format!("{}:3,{}:2", keys[0], keys[1]),
        format!("{}:4", keys[2]),
    );
    let args = [
        "clone",
        "--dir",
        dir_str(&clone_dir),
        "--port",
        &port,
        "--cores",
        &cores,
        "--late",
        &late,
        "--missing",
        &missing.to_hex(),
    ]
    .map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool(&args)
    })
    .await
    .unwrap();
    let cores = out["cores"].as_array().unwrap();
    for (js, key, name, n) in [
        (&cores[0], keys[0], "c0", 3),
        (&cores[1], keys[1], "c1", 2),
        (&cores[2], keys[2], "c2", 4),
    ] {
        assert_eq!(key_of(js), key, "{name}");
        assert_eq!(js["writable"], false, "{name}");
        assert_eq!(strings(&js["blocks"]), blocks(name, n), "{name}");
    }
    // The core JS asked for and Rust does not have was refused, not created.
    assert!(store.get_open(&missing).is_none());
    assert!(!store.core_dir(&missing.discovery_key()).exists());
    assert!(store.get_open(&keys[2]).is_some());
    // JS hung up: the connection ended on the Rust side too.
    let result = tokio::time::timeout(LIMIT, ended.recv())
        .await
        .unwrap()
        .unwrap();
    if let Err(e) = &result {
        // A hang-up may arrive as a reset; nothing else is acceptable.
        assert!(is_reset(e), "{e:#}");
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_serves_several_cores_to_a_rust_store() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::from(node("store-tool.js").unwrap());
    cmd.args(["serve", "--dir"])
        .arg(tmp.path().join("js"))
        .args(["--cores", "a:3,b:2,c:5,d:1", "--unload", "c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(LIMIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["event"], "ready", "{ready}");
    let js: Vec<(String, PublicKey, u64)> = ready["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                key_of(c),
                c["length"].as_u64().unwrap(),
            )
        })
        .collect();

    // While JS holds its cores, a Rust store on the same directory cannot open them (both
    // lock the bitfield file), and says which core.
    let same_dir = Corestore::open(tmp.path().join("js"), CorestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        to_hex(same_dir.master_key().as_bytes()),
        ready["masterKey"].as_str().unwrap()
    );
    let err = same_dir.get_named(b"a").await.unwrap_err();
    assert!(
        matches!(err, corestore::Error::Open { key, .. } if key == js[0].1)
            && err.to_string().contains("in use"),
        "{err}"
    );
    same_dir.close().await.unwrap();

    let store = Corestore::open(tmp.path().join("rust"), CorestoreOptions::default())
        .await
        .unwrap();
    // a, b: loaded before connecting; c: after (JS opens it from disk); d: never (Rust
    // refuses it). A core only Rust has: JS refuses it.
    let a = store.get_by_key(js[0].1).await.unwrap();
    let b = store.get_by_key(js[1].1).await.unwrap();
    let mine = store.get_named(b"rust only").await.unwrap();
    mine.feed().append("private").await.unwrap();

    let port = ready["port"].as_u64().unwrap() as u16;
    let task = connect_store(store.clone(), port).await.unwrap();
    let c = store.get_by_key(js[2].1).await.unwrap();
    for (core, (name, _, len)) in [(&a, &js[0]), (&b, &js[1]), (&c, &js[2])] {
        tokio::time::timeout(LIMIT, core.feed().update(Some(*len), None))
            .await
            .unwrap_or_else(|_| panic!("{name} never reached length {len}"))
            .unwrap();
        assert_eq!(read_all(core).await, blocks(name, *len as usize), "{name}");
        assert!(!core.feed().writable());
    }
    // d was refused: not loaded, not stored.
    assert!(store.get_open(&js[3].1).is_none());
    assert!(!store.core_dir(&js[3].1.discovery_key()).exists());
    assert!(
        !task.is_finished(),
        "the connection ended early: {:?}",
        task.await
    );

    // JS shuts down: the connection ends, and nothing went wrong on the way.
    drop(child.stdin.take());
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("stream-error") && !stderr.contains("socket-error"),
        "JS logged errors:\n{stderr}"
    );
    let result = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    if let Err(e) = &result {
        assert!(is_reset(e), "{e:#}");
    }
    store.close().await.unwrap();
}
