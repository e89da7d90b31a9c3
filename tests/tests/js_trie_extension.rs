//! The `hypertrie` feed extension against real JS hypertrie 5.1.3 over TCP on 127.0.0.1,
//! both ways: a sparse JS reader of a Rust writer gets its lookups answered by our `cache`
//! messages and fetches just the blocks they list; a sparse Rust reader of a JS writer uses
//! JS's answer to fetch its lookup's blocks in one go. Peers without the extension work
//! as before.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypercore_protocol::ProtocolOptions;
use hypercore_replication::{replicate, ReplicateOptions, Replicator, ReplicatorOptions};
use hypertrie::{GetOptions, Hypertrie, Op, OpenOptions, PutOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout};

const KEYS: usize = 2000;
const KEY: &str = "dir-4/key-1234";

fn options(initiator: bool) -> ReplicateOptions {
    ReplicateOptions {
        protocol: ProtocolOptions {
            initiator,
            live: true,
            ..Default::default()
        },
    }
}

fn value_of(key: &str) -> String {
    format!("value of {key}")
}

/// A Rust writer of the keys `trie-ext.js` writes, serving on 127.0.0.1.
async fn rust_writer() -> (Hypertrie, String) {
    let feed = Feed::memory().await.unwrap();
    let replicator = Replicator::new(feed, ReplicatorOptions::default());
    let trie = Hypertrie::open_replicated(&replicator, OpenOptions::default())
        .await
        .unwrap();
    let keys: Vec<Op> = (0..KEYS)
        .map(|i| {
            let key = format!("dir-{}/key-{i}", i % 10);
            Op::Put {
                value: Bytes::from(value_of(&key)),
                key,
                options: PutOptions::default(),
            }
        })
        .collect();
    for chunk in keys.chunks(100) {
        trie.batch(chunk.to_vec()).await.unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let replicator = replicator.clone();
            tokio::spawn(async move { replicate(&replicator, tcp, options(false)).await });
        }
    });
    (trie, addr)
}

/// `trie-ext.js read` against `addr`: its JSON result.
async fn js_read(writer: &Hypertrie, addr: &str, lookup: &[&str], extension: bool) -> Value {
    let key = writer.feed().key().to_hex();
    let length = writer.version().to_string();
    let mut args = vec![
        "read",
        "--connect",
        addr,
        "--key",
        &key,
        "--length",
        &length,
    ];
    args.extend_from_slice(lookup);
    if !extension {
        args.push("--no-extension");
    }
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        hyperd_tests::run_node_json("trie-ext.js", &args)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out["ok"], true, "{out}");
    out
}

fn seqs(value: &Value) -> BTreeSet<u64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Every block the `cache` messages JS received listed.
fn cached(out: &Value) -> BTreeSet<u64> {
    out["caches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| seqs(&c["blocks"]))
        .collect()
}

#[tokio::test]
async fn a_js_reader_is_answered_by_a_rust_writer() {
    let (writer, addr) = rust_writer().await;

    // Without the extension: the blocks of the lookup's path, one request each.
    let plain = js_read(&writer, &addr, &["--get", KEY], false).await;
    assert_eq!(plain["value"], value_of(KEY));
    let path = seqs(&plain["downloaded"]);
    assert!(path.len() >= 4, "{plain}");

    // With it: our `cache` names that path, and JS fetches just those blocks.
    let helped = js_read(&writer, &addr, &["--get", KEY], true).await;
    assert_eq!(helped["value"], value_of(KEY));
    assert_eq!(cached(&helped), path, "the cache we sent: {helped}");
    assert_eq!(seqs(&helped["downloaded"]), path);
    let stats = writer.extension_stats().unwrap();
    assert_eq!(stats.gets_answered, 1, "{stats:?}");
    assert_eq!(stats.seqs_sent, path.len() as u64, "{stats:?}");

    // A listing: JS asks with an iterator, we answer with its blocks.
    let plain = js_read(&writer, &addr, &["--list", "dir-3"], false).await;
    let helped = js_read(&writer, &addr, &["--list", "dir-3"], true).await;
    assert_eq!(helped["keys"].as_array().unwrap().len(), KEYS / 10);
    assert_eq!(helped["keys"], plain["keys"]);
    let listing = seqs(&plain["downloaded"]);
    assert_eq!(seqs(&helped["downloaded"]), listing);
    assert!(
        cached(&helped).len() + 2 >= listing.len(),
        "cached {} of the {} blocks of the listing",
        cached(&helped).len(),
        listing.len()
    );
    assert!(cached(&helped).is_subset(&listing));
    assert!(writer.extension_stats().unwrap().iterators_answered >= 1);
}

/// `trie-ext.js serve`: the child, its stdout, and its trie's key, length and address.
async fn js_writer(extension: bool) -> (Child, Lines<BufReader<ChildStdout>>, Value) {
    let mut cmd = tokio::process::Command::from(hyperd_tests::node("trie-ext.js").unwrap());
    // A longer path than the Rust writer's: more round trips to save.
    let keys = (5 * KEYS).to_string();
    cmd.args(["serve", "--keys", &keys]);
    if !extension {
        cmd.arg("--no-extension");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the JS writer did not start")
        .unwrap()
        .unwrap();
    let listening: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(listening["event"], "listening", "{listening}");
    (child, lines, listening)
}

/// Delay each way through the testkit's `delay_proxy`: a round trip costs twice this.
const DELAY: Duration = Duration::from_millis(40);

/// A sparse Rust reader of the JS writer at `addr`, with the extension or without.
async fn rust_reader(listening: &Value, addr: &str, extension: bool) -> Hypertrie {
    let key = hex::decode(listening["key"].as_str().unwrap()).unwrap();
    let key = hypercore::PublicKey::from_slice(&key).unwrap();
    let feed = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            key: Some(key),
            sparse: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let replicator = Replicator::new(feed.clone(), ReplicatorOptions::default());
    let trie = if extension {
        Hypertrie::open_replicated(&replicator, OpenOptions::default()).await
    } else {
        Hypertrie::open(feed.clone(), OpenOptions::default()).await
    }
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tokio::spawn(async move { replicate(&replicator, tcp, options(true)).await });
    let length = listening["length"].as_u64().unwrap();
    feed.update(Some(length), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    trie
}

/// Runs the lookup of [`KEY`]; returns how long it took.
async fn lookup(trie: &Hypertrie) -> Duration {
    let start = Instant::now();
    let node = tokio::time::timeout(
        Duration::from_secs(30),
        trie.get(KEY, GetOptions::default()),
    )
    .await
    .expect("the lookup hangs")
    .unwrap()
    .unwrap();
    assert_eq!(&node.value.unwrap()[..], value_of(KEY).as_bytes());
    start.elapsed()
}

/// The JS writer's address.
fn js_addr(listening: &Value) -> String {
    format!("127.0.0.1:{}", listening["port"])
}

/// The stored blocks of `trie`'s feed.
fn stored(trie: &Hypertrie) -> BTreeSet<u64> {
    (0..trie.feed().len())
        .filter(|&i| trie.feed().has(i))
        .collect()
}

#[tokio::test]
async fn a_rust_reader_uses_a_js_writers_answer() {
    let (_child, mut lines, listening) = js_writer(true).await;
    // Through a link with latency, so that round trips show in the time a lookup takes.
    let proxy = hyperd_testkit::delay_proxy(js_addr(&listening), DELAY)
        .await
        .unwrap();
    let plain = rust_reader(&listening, &proxy, false).await;
    let alone = lookup(&plain).await;
    let path = stored(&plain);

    let reader = rust_reader(&listening, &proxy, true).await;
    let helped = lookup(&reader).await;
    // JS answered our get...
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            let event: Value = serde_json::from_str(&line).unwrap();
            if event["event"] == "extension-get" {
                return event;
            }
        }
    })
    .await
    .expect("JS never answered a get");
    assert_eq!(answered["key"], KEY);
    // ...with the whole path, which we fetched as one download, not step by step.
    let stats = reader.extension_stats().unwrap();
    assert_eq!(
        (stats.gets_sent, stats.caches_received),
        (1, 1),
        "{stats:?}"
    );
    assert!(
        stats.blocks_prefetched + 1 >= path.len() as u64,
        "{stats:?} for a path of {}",
        path.len()
    );
    assert_eq!(stored(&reader), path, "the lookup's blocks, no others");
    // One round trip for the head (the question goes out with its request), one for the
    // rest, where each block of the path costs one without the extension.
    let trips = |d: Duration| d.as_secs_f64() / (2 * DELAY).as_secs_f64();
    eprintln!(
        "a lookup of a {}-block path from JS through a {:?} round trip: {alone:?} ({:.1} \
         round trips) without the extension, {helped:?} ({:.1}) with it",
        path.len(),
        2 * DELAY,
        trips(alone),
        trips(helped)
    );
    assert!(
        trips(helped) + 2.0 < trips(alone),
        "{helped:?} with the extension against {alone:?} without"
    );
}

#[tokio::test]
async fn peers_without_the_extension_still_work() {
    // A JS writer without the extension ignores our question.
    let (_child, _lines, listening) = js_writer(false).await;
    let reader = rust_reader(&listening, &js_addr(&listening), true).await;
    lookup(&reader).await;
    let stats = reader.extension_stats().unwrap();
    assert_eq!(
        (stats.gets_sent, stats.caches_received),
        (1, 0),
        "{stats:?}"
    );

    // A JS reader without it reads a Rust writer as always, and asks nothing.
    let (writer, addr) = rust_writer().await;
    let plain = js_read(&writer, &addr, &["--get", KEY], false).await;
    assert_eq!(plain["value"], value_of(KEY));
    assert!(plain["caches"].as_array().unwrap().is_empty());
    assert_eq!(writer.extension_stats().unwrap().gets_answered, 0);
}
