#![allow(clippy::unwrap_used)]
//! On-disk compatibility with JS hypercore 9.12.0, in both directions, using the real JS
//! code (`tests/interop/core-tool.js`):
//!
//! * JS writes, Rust reads (content, signatures, audit, writability) and the reverse;
//! * appends alternating between the two implementations on the same directory;
//! * byte identity of all six files for the same key, blocks and batch pattern, for
//!   writers and for a sparse clone driven through the same digest/proof/put sequence;
//! * the bitfield `flock` excluding a JS opener from a Rust one and vice versa;
//! * `gen-core.js` still reproducing the vector file the Rust vector tests use.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use hypercore::crypto::to_hex;
use hypercore::storage::{DiskStorage, FileKind};
use hypercore::{
    Error, Feed, FeedOptions, KeyPair, Origin, ProofRequest, PublicKey, RemoteTree, Signature,
    SignatureAt,
};
use hyperd_tests::{blake2b_concat, make_block, node, run_node_json};
use serde::Deserialize;

// ---------------------------------------------------------------------------------------
// Shapes of feeds: how many blocks, their sizes (cycled) and the append batches (cycled).

#[derive(Clone, Copy, Debug)]
struct Shape<'a> {
    blocks: u64,
    sizes: &'a [usize],
    batches: &'a [u64],
}

/// One block.
const ONE: Shape<'static> = Shape {
    blocks: 1,
    sizes: &[11],
    batches: &[1],
};
/// Seven single-block appends with the sizes of the classic vector blocks.
const SEVEN: Shape<'static> = Shape {
    blocks: 7,
    sizes: &[5, 5, 4, 2, 1, 9, 1],
    batches: &[1],
};
/// Zero-size blocks mixed with others, including batches made only of empty blocks and a
/// feed whose first and last blocks are empty.
const ZEROS: Shape<'static> = Shape {
    blocks: 41,
    sizes: &[0, 5, 0, 0, 13, 1, 0, 0, 0, 2],
    batches: &[1, 3, 2, 7, 1, 4],
};
/// 20,000 blocks: three bitfield pages (8192 blocks each), uneven batches, some of which
/// straddle page boundaries.
const BIG: Shape<'static> = Shape {
    blocks: 20_000,
    sizes: &[1, 17, 0, 100, 33],
    batches: &[1, 7, 300, 2, 1000, 13, 4096, 1, 1, 3],
};
/// A few 1 MiB blocks (and two neighbours).
const MIB: Shape<'static> = Shape {
    blocks: 4,
    sizes: &[1 << 20, (1 << 20) + 1, 1 << 20, (1 << 20) - 1],
    batches: &[1, 2, 1],
};
/// Single appends across the first page boundary: the bitfield's index summary and a
/// second page are written by one-block batches.
const PAGE_EDGE: Shape<'static> = Shape {
    blocks: 8200,
    sizes: &[3, 0, 8],
    batches: &[8190, 1],
};
/// Exactly two full pages, then one more block.
const FULL_PAGES: Shape<'static> = Shape {
    blocks: 16_385,
    sizes: &[2],
    batches: &[8192, 8192, 1],
};

const SHAPES: &[(&str, Shape<'static>)] = &[
    ("one", ONE),
    ("seven", SEVEN),
    ("zeros", ZEROS),
    ("big", BIG),
    ("mib", MIB),
];

fn seed(n: u8) -> [u8; 32] {
    std::array::from_fn(|i| n.wrapping_mul(31).wrapping_add(i as u8))
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn size_of(sizes: &[usize], i: u64) -> usize {
    sizes[(i % sizes.len() as u64) as usize]
}

/// Total bytes and BLAKE2b of blocks `[0, n)` as both implementations generate them.
fn expected(sizes: &[usize], n: u64) -> (u64, String) {
    let blocks: Vec<Vec<u8>> = (0..n).map(|i| make_block(i, size_of(sizes, i))).collect();
    let bytes = blocks.iter().map(|b| b.len() as u64).sum();
    (bytes, blake2b_concat(blocks.iter().map(|b| &b[..])))
}

/// Last block index of every batch when appending from `start` to `total`.
fn batch_ends(start: u64, total: u64, batches: &[u64]) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut at = start;
    let mut k = 0;
    while at < total {
        at = (at + batches[k % batches.len()]).min(total);
        k += 1;
        ends.push(at - 1);
    }
    ends
}

// ---------------------------------------------------------------------------------------
// The JS side.

#[derive(Debug, Deserialize)]
struct JsSig {
    index: u64,
    signature: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsWrite {
    ok: bool,
    key: String,
    writable: bool,
    length: u64,
    byte_length: u64,
    blake2b: String,
    signatures: Vec<JsSig>,
}

#[derive(Debug, Deserialize)]
struct JsAudit {
    valid: u64,
    invalid: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsCheckedSig {
    at: u64,
    index: u64,
    signature: String,
    verified: bool,
}

#[derive(Debug, Deserialize)]
struct JsNode {
    index: u64,
    size: u64,
    hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsRead {
    ok: bool,
    key: String,
    writable: bool,
    length: u64,
    byte_length: u64,
    blake2b: String,
    content_mismatches: u64,
    first_mismatch: i64,
    audit: JsAudit,
    length_after_audit: u64,
    downloaded: u64,
    signature: Option<JsSig>,
    verified: Option<bool>,
    root_hashes: Vec<JsNode>,
    signatures: Vec<JsCheckedSig>,
}

#[derive(Debug, Deserialize)]
struct JsStep {
    index: u64,
    digest: u64,
    nodes: Vec<u64>,
    signature: Option<String>,
    length: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsClone {
    ok: bool,
    key: String,
    writable: bool,
    length: u64,
    byte_length: u64,
    digests: Vec<u64>,
    downloaded: u64,
    steps: Vec<JsStep>,
}

fn tool<T: for<'de> Deserialize<'de>>(args: &[String]) -> T {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = run_node_json("core-tool.js", &args).unwrap();
    assert_eq!(v["ok"], true, "core-tool {args:?}: {v}");
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("core-tool {args:?} printed unexpected JSON ({e}): {v}"))
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn js_write(dir: &Path, seed: &[u8; 32], shape: Shape<'_>) -> JsWrite {
    let out: JsWrite = tool(&[
        "write".into(),
        "--dir".into(),
        s(dir),
        "--seed".into(),
        to_hex(seed),
        "--blocks".into(),
        shape.blocks.to_string(),
        "--sizes".into(),
        join(shape.sizes),
        "--batches".into(),
        join(shape.batches),
    ]);
    assert!(out.ok && out.writable);
    out
}

fn js_append(dir: &Path, total: u64, sizes: &[usize], batches: &[u64]) -> JsWrite {
    tool(&[
        "append".into(),
        "--dir".into(),
        s(dir),
        "--blocks".into(),
        total.to_string(),
        "--sizes".into(),
        join(sizes),
        "--batches".into(),
        join(batches),
    ])
}

fn js_read(dir: &Path, sizes: &[usize], check_signatures: &[u64]) -> JsRead {
    let out: JsRead = tool(&[
        "read".into(),
        "--dir".into(),
        s(dir),
        "--verify-sizes".into(),
        join(sizes),
        "--check-signatures".into(),
        join(check_signatures),
    ]);
    assert!(out.ok);
    out
}

/// Checks everything JS reports about a feed of `length` blocks of `sizes` against what
/// the Rust side knows: key, lengths, content, audit, and the signatures at `sigs`
/// (index, signature) returned by JS `signature()` and verified by JS `verify()`.
fn assert_js_reads(
    read: &JsRead,
    key: &PublicKey,
    length: u64,
    sizes: &[usize],
    sigs: &[(u64, Signature)],
) {
    let (bytes, hash) = expected(sizes, length);
    assert_eq!(read.key, key.to_hex(), "key");
    assert!(read.writable, "JS must find the stored secret key");
    assert_eq!(read.length, length, "length");
    assert_eq!(read.byte_length, bytes, "byteLength");
    assert_eq!(read.blake2b, hash, "blake2b of all blocks");
    assert_eq!(
        (read.content_mismatches, read.first_mismatch),
        (0, -1),
        "JS found blocks that differ from make_block"
    );
    assert_eq!((read.audit.valid, read.audit.invalid), (length, 0), "audit");
    assert_eq!(read.length_after_audit, length);
    assert_eq!(read.downloaded, length);
    if length > 0 {
        assert_eq!(
            read.verified,
            Some(true),
            "JS verify() of the last signature"
        );
        let last = read.signature.as_ref().unwrap();
        assert_eq!(last.index, length - 1);
        if let Some((_, sig)) = sigs.iter().find(|(i, _)| *i == length - 1) {
            assert_eq!(last.signature, sig.to_hex());
        }
    } else {
        assert!(read.signature.is_none());
    }
    assert_eq!(read.signatures.len(), sigs.len());
    for (js, (index, sig)) in read.signatures.iter().zip(sigs) {
        assert_eq!(js.at, *index);
        assert_eq!(
            js.index, *index,
            "JS signature({index}) found another index"
        );
        assert_eq!(js.signature, sig.to_hex(), "signature at {index}");
        assert!(js.verified, "JS verify({index}) failed");
    }
}

fn js_sigs(w: &JsWrite) -> Vec<(u64, Signature)> {
    w.signatures
        .iter()
        .map(|s| (s.index, s.signature.parse().unwrap()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The Rust side.

fn writer_options(seed: &[u8; 32]) -> FeedOptions {
    FeedOptions {
        secret_key: Some(KeyPair::from_seed(seed).secret),
        ..Default::default()
    }
}

async fn open(dir: &Path, options: FeedOptions) -> Feed {
    Feed::open(DiskStorage::new(dir), options).await.unwrap()
}

/// Appends blocks `[len, total)` in batches cycling through `batches`; returns the
/// signature Rust stored at the end of every batch.
async fn rust_append(
    feed: &Feed,
    total: u64,
    sizes: &[usize],
    batches: &[u64],
) -> Vec<(u64, Signature)> {
    let mut sigs = Vec::new();
    let mut k = 0;
    while feed.len() < total {
        let start = feed.len();
        let n = batches[k % batches.len()].min(total - start);
        k += 1;
        let blocks: Vec<Vec<u8>> = (start..start + n)
            .map(|i| make_block(i, size_of(sizes, i)))
            .collect();
        assert_eq!(feed.append_batch(blocks).await.unwrap(), start + n);
        let at = feed.signature(start + n - 1).unwrap();
        assert_eq!(at.index, start + n - 1);
        sigs.push((at.index, at.signature));
    }
    sigs
}

async fn rust_write(dir: &Path, seed: &[u8; 32], shape: Shape<'_>) -> Vec<(u64, Signature)> {
    let feed = open(dir, writer_options(seed)).await;
    assert_eq!(feed.key(), KeyPair::from_seed(seed).public);
    let sigs = rust_append(&feed, shape.blocks, shape.sizes, shape.batches).await;
    feed.close().await.unwrap();
    sigs
}

/// Opens `dir` with default options and checks key, lengths, writability, every block,
/// the given batch-end signatures (and the "next signature" rule for the other indexes),
/// and the audit. Every signature must be the one `signature()` returns at its index;
/// those at `verify_from` or later must also pass `verify()` (Ed25519 in a debug build
/// costs ~10 ms, so a history test verifies each signature once, not after every step).
/// Returns the open feed.
async fn assert_rust_reads(
    dir: &Path,
    key: &PublicKey,
    length: u64,
    sizes: &[usize],
    sigs: &[(u64, Signature)],
    verify_from: u64,
) -> Feed {
    let feed = open(dir, FeedOptions::default()).await;
    let (bytes, _) = expected(sizes, length);
    assert_eq!(&feed.key(), key, "key");
    assert!(
        feed.writable(),
        "the secret key stored by JS must make Rust writable"
    );
    assert_eq!(feed.len(), length, "length");
    assert_eq!(feed.byte_len(), bytes, "byte length");
    assert_eq!(feed.downloaded(0, None), length);
    for i in 0..length {
        let block = feed.get(i).await.unwrap();
        if block[..] != make_block(i, size_of(sizes, i))[..] {
            panic!("block {i} of {} bytes differs", block.len());
        }
    }
    if length > 0 {
        let all = feed.get_batch(0, length).await.unwrap();
        let got = blake2b_concat(all.iter().map(|b| &b[..]));
        assert_eq!(got, expected(sizes, length).1, "get_batch content");
    }
    // Every reported batch-end signature is what Rust returns there, and verifies.
    for (index, sig) in sigs {
        assert_eq!(
            feed.signature(*index).unwrap(),
            SignatureAt {
                index: *index,
                signature: *sig
            },
            "signature({index})"
        );
        if *index >= verify_from {
            assert!(feed.verify(*index, sig).unwrap(), "verify({index})");
        }
    }
    // Inside a batch, signature(i) is the next batch end's (JS nextSignature).
    let ends: Vec<u64> = sigs.iter().map(|(i, _)| *i).collect();
    for i in sample_indexes(length) {
        let next = ends.iter().copied().find(|&e| e >= i);
        match next {
            Some(e) => assert_eq!(feed.signature(i).unwrap().index, e, "signature({i})"),
            None => assert!(
                feed.signature(i).is_err(),
                "signature({i}) past the last end"
            ),
        }
    }
    if length > 0 {
        // The previous length's signature does not verify the current roots.
        let last = feed.signature(length - 1).unwrap();
        assert!(feed.verify(length - 1, &last.signature).unwrap());
        let roots = feed.root_hashes(length - 1).unwrap();
        assert_eq!(roots.iter().map(|r| r.size).sum::<u64>(), bytes);
    }
    let audit = feed.audit().await.unwrap();
    assert_eq!((audit.valid, audit.invalid), (length, 0), "audit");
    feed
}

/// A few indexes spread over `[0, length)`, including both ends and page edges.
fn sample_indexes(length: u64) -> Vec<u64> {
    let mut v: Vec<u64> = [0, 1, 2, 5, 8191, 8192, 8193, 16383, 16384, 16385]
        .into_iter()
        .chain((0..40).map(|k| k * length / 40))
        .chain(length.checked_sub(1))
        .chain(length.checked_sub(2))
        .filter(|&i| i < length)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------
// Comparing files byte for byte, with an explanation of every difference.

/// The six files of a feed.
fn files() -> [&'static str; 6] {
    FileKind::ALL.map(FileKind::name)
}

/// What byte `offset` of file `name` means in hypercore 9's layout.
fn explain(name: &str, offset: usize) -> String {
    if offset < 32 && matches!(name, "tree" | "signatures" | "bitfield") {
        return format!("header byte {offset}");
    }
    let o = offset.saturating_sub(32);
    match name {
        "tree" => format!(
            "node {} ({} byte {})",
            o / 40,
            if o % 40 < 32 { "hash" } else { "size" },
            o % 40
        ),
        "signatures" => format!("signature for block {} byte {}", o / 64, o % 64),
        "bitfield" => {
            let (page, b) = (o / 3584, o % 3584);
            if b < 1024 {
                let first = page * 8192 + 8 * b;
                format!("page {page} data bits, blocks {first}..{}", first + 8)
            } else if b < 3072 {
                let first = page * 16384 + 8 * (b - 1024);
                format!("page {page} tree bits, nodes {first}..{}", first + 8)
            } else {
                format!(
                    "page {page} index bits, index byte {}",
                    page * 512 + (b - 3072)
                )
            }
        }
        "data" => format!("data byte {offset}"),
        _ => format!("byte {offset}"),
    }
}

fn describe_diff(name: &str, js: Option<&[u8]>, rust: Option<&[u8]>) -> Option<String> {
    if js == rust {
        return None;
    }
    let (Some(a), Some(b)) = (js, rust) else {
        return Some(format!(
            "{name}: JS {} / Rust {}",
            js.map_or("absent".to_string(), |a| format!("{} bytes", a.len())),
            rust.map_or("absent".to_string(), |b| format!("{} bytes", b.len()))
        ));
    };
    let mut out = format!("{name}: JS {} bytes, Rust {} bytes", a.len(), b.len());
    let diffs: Vec<usize> = (0..a.len().max(b.len()))
        .filter(|&i| a.get(i) != b.get(i))
        .collect();
    out += &format!("; {} bytes differ", diffs.len());
    for &i in diffs.iter().take(24) {
        out += &format!(
            "\n    @{i} ({}): JS {} Rust {}",
            explain(name, i),
            a.get(i).map_or("--".into(), |x| format!("{x:02x}")),
            b.get(i).map_or("--".into(), |x| format!("{x:02x}"))
        );
    }
    Some(out)
}

fn read_file(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(name)).ok()
}

/// Asserts the named files are byte-identical (an absent file counts as empty only when
/// `absent_is_empty`), reporting every difference at once.
fn assert_same_files(what: &str, js: &Path, rust: &Path, names: &[&str], absent_is_empty: bool) {
    let mut report = Vec::new();
    for name in names {
        let mut a = read_file(js, name);
        let mut b = read_file(rust, name);
        if absent_is_empty {
            a.get_or_insert_with(Vec::new);
            b.get_or_insert_with(Vec::new);
        }
        if let Some(d) = describe_diff(name, a.as_deref(), b.as_deref()) {
            report.push(d);
        }
    }
    assert!(
        report.is_empty(),
        "{what}: files written by JS ({}) and Rust ({}) differ:\n  {}",
        js.display(),
        rust.display(),
        report.join("\n  ")
    );
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------
// a. JS writes, Rust reads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_writes_rust_reads() {
    for (n, (name, shape)) in SHAPES.iter().enumerate() {
        let t = tmp();
        let dir = t.path().join(name);
        let sd = seed(n as u8);
        let w = js_write(&dir, &sd, *shape);
        let key = KeyPair::from_seed(&sd).public;
        let (bytes, hash) = expected(shape.sizes, shape.blocks);
        assert_eq!(
            w.key,
            key.to_hex(),
            "{name}: JS keyPair(seed) = Rust from_seed"
        );
        assert_eq!((w.length, w.byte_length), (shape.blocks, bytes), "{name}");
        assert_eq!(w.blake2b, hash, "{name}: JS make_block = Rust make_block");
        let ends: Vec<u64> = w.signatures.iter().map(|s| s.index).collect();
        assert_eq!(ends, batch_ends(0, shape.blocks, shape.batches), "{name}");

        let feed = assert_rust_reads(&dir, &key, shape.blocks, shape.sizes, &js_sigs(&w), 0).await;
        feed.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// b. Rust writes, JS reads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_writes_js_reads() {
    for (n, (name, shape)) in SHAPES.iter().enumerate() {
        let t = tmp();
        let dir = t.path().join(name);
        let sd = seed(100 + n as u8);
        let sigs = rust_write(&dir, &sd, *shape).await;
        let ends: Vec<u64> = sigs.iter().map(|(i, _)| *i).collect();
        assert_eq!(ends, batch_ends(0, shape.blocks, shape.batches), "{name}");
        let key = KeyPair::from_seed(&sd).public;
        let read = js_read(&dir, shape.sizes, &ends);
        assert_js_reads(&read, &key, shape.blocks, shape.sizes, &sigs);
        // JS's view of the roots is the one Rust has.
        let feed = open(&dir, FeedOptions::default()).await;
        let roots = feed.root_hashes(shape.blocks - 1).unwrap();
        let js_roots: Vec<(u64, u64, String)> = read
            .root_hashes
            .iter()
            .map(|r| (r.index, r.size, r.hash.clone()))
            .collect();
        let rust_roots: Vec<(u64, u64, String)> = roots
            .iter()
            .map(|r| (r.index, r.size, to_hex(&r.hash)))
            .collect();
        assert_eq!(js_roots, rust_roots, "{name}: rootHashes");
        feed.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_feed_both_ways() {
    // A feed created but never appended to.
    let t = tmp();
    let sd = seed(7);
    let key = KeyPair::from_seed(&sd).public;
    let rust_dir = t.path().join("rust");
    let feed = open(&rust_dir, writer_options(&sd)).await;
    feed.close().await.unwrap();
    let read = js_read(&rust_dir, &[1], &[]);
    assert_js_reads(&read, &key, 0, &[1], &[]);

    let js_dir = t.path().join("js");
    let w = js_write(&js_dir, &sd, Shape { blocks: 0, ..ONE });
    assert_eq!(w.length, 0);
    let feed = assert_rust_reads(&js_dir, &key, 0, &[1], &[], 0).await;
    feed.close().await.unwrap();
    assert_same_files("empty feed", &js_dir, &rust_dir, &files(), false);
}

// ---------------------------------------------------------------------------------------
// c. Appends alternating between the implementations on one directory.

/// Runs `steps` of (target length, batch sizes) on one directory, alternating between the
/// implementations (JS first when `first_is_js`), checking after each step that the other
/// implementation reads and audits everything, then checks that the result is
/// byte-identical to JS writing the same sequence of batches in one go.
async fn mixed_history(seed_n: u8, first_is_js: bool, sizes: &[usize], steps: &[(u64, &[u64])]) {
    let t = tmp();
    let dir = t.path().join("mixed");
    let sd = seed(seed_n);
    let key = KeyPair::from_seed(&sd).public;
    let mut sigs: Vec<(u64, Signature)> = Vec::new();
    let mut all_batches: Vec<u64> = Vec::new();
    let mut len = 0;
    for (k, (total, batches)) in steps.iter().enumerate() {
        let js_turn = (k % 2 == 0) == first_is_js;
        let ends = batch_ends(len, *total, batches);
        let mut prev = len;
        for e in &ends {
            all_batches.push(e + 1 - prev);
            prev = e + 1;
        }
        let new_sigs = if js_turn {
            let w = if k == 0 {
                js_write(
                    &dir,
                    &sd,
                    Shape {
                        blocks: *total,
                        sizes,
                        batches,
                    },
                )
            } else {
                js_append(&dir, *total, sizes, batches)
            };
            assert_eq!(w.length, *total);
            assert_eq!(w.blake2b, expected(sizes, *total).1);
            js_sigs(&w)
        } else {
            let feed = if k == 0 {
                open(&dir, writer_options(&sd)).await
            } else {
                open(&dir, FeedOptions::default()).await
            };
            assert_eq!(feed.len(), len);
            let s = rust_append(&feed, *total, sizes, batches).await;
            feed.close().await.unwrap();
            s
        };
        assert_eq!(
            new_sigs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            ends,
            "step {k}"
        );
        sigs.extend(new_sigs);
        let before = len;
        len = *total;

        // The other implementation reads and audits the whole feed (and verifies every
        // signature; Rust verifies those JS just made).
        if js_turn {
            let feed = assert_rust_reads(&dir, &key, len, sizes, &sigs, before).await;
            feed.close().await.unwrap();
        } else {
            let ends: Vec<u64> = sigs.iter().map(|(i, _)| *i).collect();
            let read = js_read(&dir, sizes, &ends);
            assert_js_reads(&read, &key, len, sizes, &sigs);
        }
    }
    // The implementation that appended last reads everything back too.
    let last_was_js = (steps.len() % 2 == 1) == first_is_js;
    if last_was_js {
        let ends: Vec<u64> = sigs.iter().map(|(i, _)| *i).collect();
        assert_js_reads(&js_read(&dir, sizes, &ends), &key, len, sizes, &sigs);
    } else {
        let feed = assert_rust_reads(&dir, &key, len, sizes, &sigs, len).await;
        feed.close().await.unwrap();
    }

    // The mixed history left exactly the files of a single JS writer.
    let reference = t.path().join("reference");
    let w = js_write(
        &reference,
        &sd,
        Shape {
            blocks: len,
            sizes,
            batches: &all_batches,
        },
    );
    assert_eq!(js_sigs(&w), sigs);
    assert_same_files("mixed history", &reference, &dir, &files(), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_alternate_js_first() {
    // JS 8100 blocks, Rust across the first page edge, JS across the second, Rust again.
    mixed_history(
        20,
        true,
        &[4, 0, 9, 1],
        &[
            (8100, &[100, 3]),
            (8300, &[1, 50, 7]),
            (16_500, &[2000, 1, 77]),
            (16_510, &[1]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_alternate_rust_first() {
    mixed_history(
        21,
        false,
        &[0, 6, 1 << 16, 3],
        &[
            (5, &[2]),
            (9, &[1]),
            (40, &[3, 20]),
            (41, &[1]),
            (60, &[19]),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// d. Byte identity.

async fn assert_writer_identity(name: &str, seed_n: u8, shape: Shape<'_>) {
    let t = tmp();
    let js_dir = t.path().join("js");
    let rust_dir = t.path().join("rust");
    let sd = seed(seed_n);
    let w = js_write(&js_dir, &sd, shape);
    let sigs = rust_write(&rust_dir, &sd, shape).await;
    assert_eq!(js_sigs(&w), sigs, "{name}: signatures");
    assert_same_files(name, &js_dir, &rust_dir, &files(), false);
    // Opening and closing again (both rewrite headers on open) keeps them identical.
    let feed = open(&rust_dir, FeedOptions::default()).await;
    feed.close().await.unwrap();
    let read = js_read(&js_dir, shape.sizes, &[]);
    assert_eq!(read.length, shape.blocks);
    assert_same_files(
        &format!("{name} after reopen"),
        &js_dir,
        &rust_dir,
        &files(),
        false,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_identity_small() {
    assert_writer_identity("one", 30, ONE).await;
    assert_writer_identity("seven", 31, SEVEN).await;
    assert_writer_identity("zeros", 32, ZEROS).await;
    assert_writer_identity("mib", 33, MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_identity_big() {
    assert_writer_identity("big", 34, BIG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_identity_page_edges() {
    assert_writer_identity("page edge", 35, PAGE_EDGE).await;
    assert_writer_identity("full pages", 36, FULL_PAGES).await;
}

/// A deterministic generator (xorshift64*), so the clone order never changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A few hundred indexes of a feed of `length` blocks in a shuffled order, with page
/// edges, both ends, neighbours, repeats and descending runs.
fn clone_order(length: u64) -> Vec<u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut order: Vec<u64> = (0..300).map(|_| rng.below(length)).collect();
    order.extend([0, 1, 8191, 8192, 8193, 16383, 16384, length - 1, length - 2]);
    order.extend((0..20).map(|k| 12_000 - k));
    // Fisher-Yates.
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    // Repeats of indexes already stored, and the neighbours of some.
    let again: Vec<u64> = (0..25).map(|k| order[k * 7]).collect();
    order.extend(again.iter().copied());
    order.extend(again.iter().map(|i| (i + 1).min(length - 1)));
    order.insert(150, order[3]);
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_clone_byte_identity() {
    let t = tmp();
    let writer_dir = t.path().join("writer");
    let js_clone_dir = t.path().join("js-clone");
    let rust_clone_dir = t.path().join("rust-clone");
    let sd = seed(40);
    let shape = BIG;
    js_write(&writer_dir, &sd, shape);
    let order = clone_order(shape.blocks);

    let js: JsClone = tool(&[
        "clone".into(),
        "--dir".into(),
        s(&js_clone_dir),
        "--from".into(),
        s(&writer_dir),
        "--order".into(),
        join(&order),
    ]);
    let key = KeyPair::from_seed(&sd).public;
    assert!(js.ok && !js.writable);
    assert_eq!(js.key, key.to_hex());
    assert_eq!(js.steps.len(), order.len());

    // The same sequence in Rust, against the same writer.
    let writer = open(&writer_dir, FeedOptions::default()).await;
    let clone = open(
        &rust_clone_dir,
        FeedOptions {
            key: Some(key),
            sparse: true,
            ..Default::default()
        },
    )
    .await;
    assert!(!clone.writable());
    let mut digests = Vec::new();
    for (step, (&i, js_step)) in order.iter().zip(&js.steps).enumerate() {
        assert_eq!(js_step.index, i);
        let digest = clone.digest(i);
        digests.push(digest);
        assert_eq!(digest, js_step.digest, "step {step}: digest({i})");
        let proof = writer
            .proof(
                i,
                ProofRequest {
                    hash: false,
                    digest,
                },
                &mut RemoteTree::default(),
            )
            .unwrap();
        let nodes: Vec<u64> = proof.nodes.iter().map(|n| n.index).collect();
        assert_eq!(nodes, js_step.nodes, "step {step}: proof({i}) nodes");
        assert_eq!(
            proof.signature.map(|s| s.to_hex()),
            js_step.signature,
            "step {step}: proof({i}) signature"
        );
        let data = writer.get(i).await.unwrap();
        clone
            .put(i, Some(data), proof, Origin::Local)
            .await
            .unwrap();
        assert_eq!(clone.len(), js_step.length, "step {step}: length");
    }
    assert_eq!(digests, js.digests);
    assert_eq!(clone.len(), js.length);
    assert_eq!(clone.byte_len(), js.byte_length);
    let mut distinct = order.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(clone.downloaded(0, None), distinct.len() as u64);
    assert_eq!(js.downloaded, distinct.len() as u64);
    clone.close().await.unwrap();
    writer.close().await.unwrap();

    assert_same_files(
        "sparse clone",
        &js_clone_dir,
        &rust_clone_dir,
        &["key", "data", "tree", "signatures", "bitfield"],
        false,
    );
    // The clone spans all three bitfield pages (so the index summary crosses pages).
    assert_eq!(
        read_file(&js_clone_dir, "bitfield").unwrap().len(),
        32 + 3 * 3584
    );
    // JS never creates `secret_key` on a clone; Rust leaves it empty. Same meaning.
    assert!(read_file(&js_clone_dir, "secret_key").is_none());
    assert_eq!(
        read_file(&rust_clone_dir, "secret_key").unwrap_or_default(),
        b""
    );

    // Rust opens the JS clone: exactly the put blocks, with their content.
    let feed = open(&js_clone_dir, FeedOptions::default()).await;
    assert!(!feed.writable());
    assert_eq!(feed.len(), shape.blocks);
    assert_eq!(feed.downloaded(0, None), distinct.len() as u64);
    for &i in &distinct {
        assert!(feed.has(i));
        let b = feed
            .get_with(
                i,
                hypercore::GetOptions {
                    wait: false,
                    timeout: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            b[..],
            make_block(i, size_of(shape.sizes, i))[..],
            "block {i}"
        );
    }
    assert_eq!(feed.audit().await.unwrap().invalid, 0);
    feed.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// e. Locking.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitfield_lock_excludes_the_other_implementation() {
    let t = tmp();
    let dir = t.path().join("feed");
    let sd = seed(50);
    js_write(&dir, &sd, ZEROS);

    // JS holds the feed: Rust cannot open it.
    let mut child = node("core-tool.js")
        .unwrap()
        .args(["hold", "--dir", &s(&dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("hold printed {line:?}: {e}"));
    assert_eq!(held["event"], "holding", "{held}");
    for options in [
        FeedOptions::default(),
        FeedOptions {
            create_if_missing: false,
            ..Default::default()
        },
        writer_options(&sd),
    ] {
        match Feed::open(DiskStorage::new(&dir), options).await {
            Err(Error::Locked { location }) => assert!(location.contains("feed")),
            other => panic!("Rust opened a feed JS holds: {other:?}"),
        }
    }
    // Releasing the JS lock lets Rust in.
    let mut stdin = child.stdin.take().unwrap();
    stdin.flush().unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "hold exited with {status}");
    let feed = open(&dir, FeedOptions::default()).await;
    assert_eq!(feed.len(), ZEROS.blocks);

    // Rust holds the feed: JS cannot open it.
    let out = node("core-tool.js")
        .unwrap()
        .args(["read", "--dir", &s(&dir)])
        .output()
        .unwrap();
    assert!(!out.status.success(), "JS opened a feed Rust holds");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["code"], "ELOCKED", "{v}");
    feed.close().await.unwrap();

    // Closing releases it.
    let read = js_read(&dir, ZEROS.sizes, &[]);
    assert_eq!(read.length, ZEROS.blocks);
}

// ---------------------------------------------------------------------------------------
// The vector file.

#[test]
fn gen_core_reproduces_the_vector_file() {
    let out = node("gen-core.js").unwrap().output().unwrap();
    assert!(
        out.status.success(),
        "gen-core.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "hypercore",
        "tests",
        "data",
        "core.json",
    ]
    .iter()
    .collect();
    let stored = std::fs::read(&path).unwrap();
    assert!(
        out.stdout == stored,
        "node gen-core.js output differs from {}",
        path.display()
    );
}
